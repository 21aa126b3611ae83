//! `kafka-dedup-proxy` as a child process, run as operators run it: on
//! fixed ports (clients reconnect to the same addresses after a restart),
//! its log collected, its own `/metrics` read over HTTP (so a figure such
//! as "answered by the proxy" is that process's, never another test's).
//!
//! With `KDP_RELIABILITY_SABOTAGE=forwarder` the same ports are served by
//! the plain TCP forwarder (`examples/tcp_forwarder.rs`) instead: it
//! relays bytes and understands nothing, has no `/metrics`, and does not
//! rewrite broker addresses, so clients learn the real brokers. The
//! scenarios that claim deduplication must fail then.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::cluster_faults::signal;
use super::report::sabotage;
use super::{cluster, http_get, metric_sum, readings::vm_rss_kib};

pub const PROXY_BIN: &str = env!("CARGO_BIN_EXE_kafka-dedup-proxy");

/// `kdp_produce_batches_total` outcomes where the proxy answered a batch
/// itself (from the cache, or from an in-flight original's outcome).
pub const ANSWERED_OUTCOMES: [&str; 2] = ["outcome=\"duplicate\"", "outcome=\"coalesced\""];

/// The plain forwarder's binary (`cargo build --example tcp_forwarder`;
/// `cargo test` builds it, `cargo test --test X` does not, and a cargo run
/// from inside a test would wait on the build lock of the one running it).
fn forwarder_bin() -> std::path::PathBuf {
    let debug_dir = std::path::Path::new(PROXY_BIN).parent().unwrap();
    let bin = debug_dir.join("examples/tcp_forwarder");
    assert!(
        bin.exists(),
        "{} missing: run `cargo build --example tcp_forwarder` first",
        bin.display()
    );
    bin
}

/// A free block of 6 ports: bootstrap at `base`, node N at base+1+N (N =
/// 1..3), metrics at base+5.
pub fn free_port_block() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base < 60000
            && (0..6).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// The text without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `kafka-dedup-proxy` run as operators run it, on fixed ports so clients
/// reconnect to the same addresses after a restart. Its stderr (the log)
/// is collected; it is killed when dropped.
pub struct ProxyProcess {
    child: Option<Child>,
    pub base: u16,
    args: Vec<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub starts: usize,
    /// The plain forwarder stands in for the proxy (sabotage runs).
    pub forwarder: bool,
}

/// The forwarder's arguments for the proxy's port block: the bootstrap
/// port to the first upstream address, node N's port to node N (through
/// `--broker-address-map` when `extra` has one, so a fault relay stays in
/// the path of the raw clients that dial node ports).
fn forwarder_args(base: u16, upstream: &str, extra: &[&str]) -> Vec<String> {
    let map: Vec<(String, String)> = extra
        .iter()
        .position(|a| *a == "--broker-address-map")
        .and_then(|i| extra.get(i + 1))
        .map(|m| {
            m.split(',')
                .filter_map(|pair| pair.split_once('='))
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let first = upstream.split(',').next().unwrap_or(upstream).to_string();
    let mut args = vec![format!("127.0.0.1:{base}"), first];
    for (i, port) in cluster().broker_ports.iter().enumerate() {
        let real = format!("127.0.0.1:{port}");
        let to = map
            .iter()
            .find(|(r, _)| *r == real)
            .map_or(real.clone(), |(_, relay)| relay.clone());
        args.push(format!("127.0.0.1:{}", base as usize + 2 + i));
        args.push(to);
    }
    args
}

impl ProxyProcess {
    pub async fn start(upstream: &str, extra: &[&str]) -> ProxyProcess {
        let base = free_port_block();
        if sabotage() == "forwarder" {
            let mut p = ProxyProcess {
                child: None,
                base,
                args: forwarder_args(base, upstream, extra),
                log: Arc::default(),
                starts: 0,
                forwarder: true,
            };
            p.spawn().await;
            return p;
        }
        let mut args: Vec<String> = [
            "--upstream",
            upstream,
            "--listen",
            &format!("127.0.0.1:{base}"),
            "--advertised-host",
            "127.0.0.1",
            "--metrics-listen",
            &format!("127.0.0.1:{}", base + 5),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = ProxyProcess {
            child: None,
            base,
            args,
            log: Arc::default(),
            starts: 0,
            forwarder: false,
        };
        p.spawn().await;
        p
    }

    /// Starts the binary (again) with the same arguments and waits until
    /// it is ready (it answered its first cluster probe).
    pub async fn spawn(&mut self) {
        // A restart right after an exit may find the old sockets closing.
        let mut child = None;
        for _ in 0..50 {
            let program = if self.forwarder {
                forwarder_bin()
            } else {
                PROXY_BIN.into()
            };
            let mut c = Command::new(program)
                .args(&self.args)
                .env("KDP_LOG_LEVEL", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("proxy binary");
            let err = c.stderr.take().unwrap();
            let log = Arc::clone(&self.log);
            tokio::spawn(async move {
                let mut r = BufReader::new(err).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    log.lock().unwrap().push(strip_ansi(&line));
                }
            });
            if self.wait_ready(&mut c).await {
                child = Some(c);
                break;
            }
            let _ = c.start_kill();
            let _ = c.wait().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.child = Some(child.unwrap_or_else(|| {
            panic!(
                "the proxy binary did not become ready: {:?}",
                self.log_tail(20)
            )
        }));
        self.starts += 1;
    }

    async fn wait_ready(&self, c: &mut Child) -> bool {
        for _ in 0..150 {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return false;
            }
            if self.forwarder {
                if TcpStream::connect(("127.0.0.1", self.base)).await.is_ok() {
                    return true;
                }
            } else if TcpStream::connect(("127.0.0.1", self.base + 5))
                .await
                .is_ok()
                && http_get(&self.metrics_url("/readyz")).await.0 == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.base)
    }

    pub fn broker_addr(&self, node: i32) -> String {
        format!("127.0.0.1:{}", self.base as i32 + 1 + node)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.base + 5, path)
    }

    /// The process's own `/metrics` (empty for the forwarder, which has
    /// none).
    pub async fn metrics(&self) -> String {
        if self.forwarder {
            return String::new();
        }
        http_get(&self.metrics_url("/metrics")).await.1
    }

    /// Produce batches this process answered itself so far.
    pub async fn answered(&self) -> f64 {
        let m = self.metrics().await;
        ANSWERED_OUTCOMES
            .iter()
            .map(|o| metric_sum(&m, "kdp_produce_batches_total", o))
            .sum()
    }

    /// Produce batches this process forwarded to the brokers so far.
    pub async fn forwarded(&self) -> f64 {
        metric_sum(
            &self.metrics().await,
            "kdp_produce_batches_total",
            "outcome=\"forwarded\"",
        )
    }

    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        metric_sum(&self.metrics().await, name, label)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(|p| vm_rss_kib(&p.to_string()))
    }

    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.pid()?;
        Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then waits for the drain and the exit.
    pub async fn sigterm(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child.id()?.to_string(), "-TERM");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        }
    }

    /// SIGKILL: no drain at all.
    pub async fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until a log line contains every one of `needles`.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let l = self.log.lock().unwrap();
        l[l.len().saturating_sub(n)..].to_vec()
    }
}
