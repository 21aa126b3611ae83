//! The proxy binary run as a child process, for tests that assert on its
//! metrics or wait for its log.
//!
//! The in-process proxies of one test binary all record into the one
//! process-wide recorder (`kafka_dedup_proxy::metrics::install_recorder`):
//! a counter read from their `/metrics` also moves with whatever the tests
//! running beside them do. A child process has a recorder of its own, so
//! its `/metrics` shows this test's traffic and nothing else and exact
//! values can be asserted. Its stderr (the log) is collected as well, so a
//! test can wait for the line that reports an event instead of sleeping.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{cluster, metric_sum, next_port_base, try_http_get};

pub const BIN: &str = env!("CARGO_BIN_EXE_kafka-dedup-proxy");

/// How long a child may take to serve `/metrics` (it does once its first
/// probe of the cluster has opened the broker listeners).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Interval of every poll below.
const POLL: Duration = Duration::from_millis(50);

pub struct ChildProxy {
    child: Child,
    pub bootstrap: String,
    pub port_base: u16,
    metrics_addr: String,
    log: Arc<Mutex<String>>,
    log_reader: Option<JoinHandle<()>>,
}

impl ChildProxy {
    /// The binary in front of the shared cluster with `extra` flags.
    pub async fn start(extra: &[&str]) -> ChildProxy {
        Self::start_to(&cluster().bootstrap, extra).await
    }

    /// The binary in front of `upstream` with `extra` flags, on a port block
    /// of its own: bootstrap at base, broker N at base+1+N, metrics at base+5.
    pub async fn start_to(upstream: &str, extra: &[&str]) -> ChildProxy {
        let base = next_port_base();
        let mut cmd = Command::new(BIN);
        cmd.args([
            "--upstream",
            upstream,
            "--listen",
            &format!("127.0.0.1:{base}"),
            "--broker-port-base",
            &(base + 1).to_string(),
            "--metrics-listen",
            &format!("127.0.0.1:{}", base + 5),
            "--advertised-host",
            "127.0.0.1",
        ])
        .args(extra);
        Self::spawn(cmd, base).await
    }

    /// Spawns `cmd` (the binary, configured by the caller to listen at
    /// `base` with its metrics at base+5) and returns once `/metrics`
    /// answers: the proxy has probed the cluster and serves.
    pub async fn spawn(mut cmd: Command, base: u16) -> ChildProxy {
        let mut child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy binary starts");
        let log = Arc::new(Mutex::new(String::new()));
        let sink = Arc::clone(&log);
        let mut lines = BufReader::new(child.stderr.take().expect("stderr is piped")).lines();
        let log_reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut p = ChildProxy {
            child,
            bootstrap: format!("127.0.0.1:{base}"),
            port_base: base,
            metrics_addr: format!("127.0.0.1:{}", base + 5),
            log,
            log_reader: Some(log_reader),
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if try_http_get(&p.metrics_url("/metrics"))
                .await
                .is_some_and(|(status, _)| status == 200)
            {
                return p;
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                panic!("the proxy binary exited ({status}):\n{}", p.log());
            }
            assert!(
                Instant::now() < deadline,
                "the proxy binary did not serve /metrics within {START_TIMEOUT:?}:\n{}",
                p.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    pub fn broker_addr(&self, node_id: i32) -> String {
        format!("127.0.0.1:{}", self.port_base as i32 + 1 + node_id)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{}", self.metrics_addr, path)
    }

    /// The exposition of this proxy's `/metrics`.
    pub async fn metrics(&self) -> String {
        let (status, body) = try_http_get(&self.metrics_url("/metrics"))
            .await
            .unwrap_or_else(|| panic!("GET /metrics of the child proxy:\n{}", self.log()));
        assert_eq!(status, 200, "GET /metrics");
        body
    }

    /// Sum of the samples of `name` whose labels contain `label` ("" for all).
    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        metric_sum(&self.metrics().await, name, label)
    }

    /// Polls the metric until `want` holds or `within` has passed, and
    /// returns its last value (for the caller to assert on).
    pub async fn wait_metric(
        &self,
        name: &str,
        label: &str,
        within: Duration,
        want: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + within;
        loop {
            let v = self.metric(name, label).await;
            if want(v) || Instant::now() >= deadline {
                return v;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// What the proxy has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Whether a log line containing `needle` appears within `within`.
    pub async fn wait_log(&self, needle: &str, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The whole log once the process has closed its stderr (it exited).
    pub async fn log_to_end(&mut self) -> String {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.await;
        }
        self.log()
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("the proxy still runs").to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    pub async fn wait(&mut self) -> ExitStatus {
        self.child.wait().await.expect("wait for the proxy binary")
    }
}
