//! A Kafka cluster of one test's own, for scenarios that change the
//! cluster itself (a broker added, a leader killed) and must not disturb
//! the shared cluster the other tests run against.
//!
//! It lives beside the shared one: its data in `$KDP_KAFKA_DIR-<name>`, its
//! broker ports at the shared port base + 10 (controllers at +110), no
//! SASL_SSL listeners. `scripts/kafka` does the work, told where by its
//! environment; the cluster is deleted (`scripts/kafka clean`) when the
//! value is dropped, also when the test fails.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use super::repo;

/// Offset of the own cluster's broker ports from the shared cluster's.
const PORT_OFFSET: u16 = 10;
/// A smaller heap than the shared cluster's nodes: these run beside them.
const HEAP_OPTS: &str = "-Xms128m -Xmx384m";

pub struct OwnCluster {
    pub dir: PathBuf,
    pub port_base: u16,
    pub bootstrap: String,
}

impl OwnCluster {
    /// Starts a fresh cluster of `nodes` nodes (a leftover of an earlier
    /// run of the same test is deleted first).
    pub async fn start(name: &str, nodes: u32) -> OwnCluster {
        let shared_dir =
            std::env::var("KDP_KAFKA_DIR").unwrap_or_else(|_| "/tmp/kdp-kafka".to_string());
        let shared_base: u16 = std::env::var("KDP_KAFKA_PORT_BASE")
            .ok()
            .and_then(|p| p.parse().ok())
            .unwrap_or(29092);
        let mut c = OwnCluster {
            dir: PathBuf::from(format!("{shared_dir}-{name}")),
            port_base: shared_base + PORT_OFFSET,
            bootstrap: String::new(),
        };
        c.run(&["clean"]).await;
        let out = c.run(&["start", "--nodes", &nodes.to_string()]).await;
        c.bootstrap = out.trim().to_string();
        c
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(repo().join("scripts/kafka"));
        cmd.args(args)
            .env("KDP_KAFKA_DIR", &self.dir)
            .env("KDP_KAFKA_PORT_BASE", self.port_base.to_string())
            .env("KDP_KAFKA_SECURITY", "0")
            .env("KDP_KAFKA_HEAP_OPTS", HEAP_OPTS);
        cmd
    }

    /// `scripts/kafka <args>` on this cluster: stdout (panics with stderr
    /// on failure).
    pub async fn run(&self, args: &[&str]) -> String {
        let out = self
            .command(args)
            .output()
            .await
            .expect("scripts/kafka runs");
        assert!(
            out.status.success(),
            "scripts/kafka {args:?} on {}: {}\n{}",
            self.dir.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// The Java harness against this cluster: its one JSON line.
    pub async fn harness(&self, args: &[&str]) -> serde_json::Value {
        let mut full = vec!["run", "ClientHarness"];
        full.extend_from_slice(args);
        let out = self.run(&full).await;
        let line = out
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or_else(|| panic!("no JSON from harness {args:?}: {out}"));
        serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from harness: {e}: {line}"))
    }

    /// The leader of `topic`-`partition`; with `not`, waits up to `wait`
    /// for a leader other than that node. None when there is none.
    pub async fn leader(
        &self,
        topic: &str,
        partition: i32,
        not: Option<i32>,
        wait: Duration,
    ) -> Option<i32> {
        let p = partition.to_string();
        let wait_ms = wait.as_millis().to_string();
        let not_s = not.map(|n| n.to_string());
        let mut args = vec![
            "run",
            "ClientHarness",
            "topic-leader",
            "--bootstrap",
            &self.bootstrap,
            "--topic",
            topic,
            "--partition",
            &p,
            "--wait-ms",
            &wait_ms,
        ];
        if let Some(n) = &not_s {
            args.extend_from_slice(&["--not", n]);
        }
        let out = self.command(&args).output().await.ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().rev().find(|l| l.starts_with('{'))?;
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        let leader = v["leader"].as_i64()? as i32;
        (leader >= 0 && Some(leader) != not).then_some(leader)
    }

    /// SIGKILLs node `node` and reports whether its process was seen gone.
    pub async fn kill(&self, node: i32) -> bool {
        let pid = self
            .run(&["pid", &node.to_string()])
            .await
            .trim()
            .to_string();
        assert!(
            super::cluster_faults::signal(&pid, "-KILL"),
            "SIGKILL node {node} (pid {pid})"
        );
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        for _ in 0..100 {
            if !proc_dir.exists() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }
}

impl Drop for OwnCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new(repo().join("scripts/kafka"))
            .arg("clean")
            .env("KDP_KAFKA_DIR", &self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
