//! The shared cluster's topology and the broker faults: a broker killed
//! (SIGKILL, restarted when the guard drops) or paused (SIGSTOP, resumed
//! when the guard drops), so a failing test never leaves the cluster
//! broken for the next one. Tests that use them hold the write side of
//! `common::cluster_lock()`.

use std::process::Stdio;
use std::time::Duration;

use super::{cluster, harness, kafka, repo};

/// The current leader of `topic`-`partition` (waits up to 30 s for one).
pub async fn leader_of(topic: &str, partition: i32) -> i32 {
    let out = harness(&[
        "topic-leader",
        "--bootstrap",
        &cluster().bootstrap,
        "--topic",
        topic,
        "--partition",
        &partition.to_string(),
        "--wait-ms",
        "30000",
    ])
    .await;
    out["leader"]
        .as_i64()
        .unwrap_or_else(|| panic!("no leader for {topic}-{partition}: {out}")) as i32
}

/// Waits until every node runs and reports all brokers (after a restart).
pub async fn wait_cluster_whole() {
    let nodes = cluster().broker_ports.len().to_string();
    harness(&[
        "cluster",
        "--bootstrap",
        &cluster().bootstrap,
        "--expect-nodes",
        &nodes,
        "--nodes-only",
        "--wait-ms",
        "90000",
    ])
    .await;
}

/// Creates a topic whose partitions are replicated on every node.
pub async fn create_replicated_topic(topic: &str, partitions: u32) {
    super::create_topic(topic, partitions).await;
}

/// Sends `sig` ("-KILL", "-STOP", ...) to `pid` with kill(1).
pub fn signal(pid: &str, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success())
}

/// A broker killed with SIGKILL; restarted when dropped if the test did
/// not restart it itself.
pub struct KilledBroker {
    pub node: i32,
    /// The process was seen gone after the signal.
    pub gone: bool,
    restarted: bool,
}

impl KilledBroker {
    pub async fn kill(node: i32) -> KilledBroker {
        let pid = kafka(&["pid", &node.to_string()]).await.trim().to_string();
        assert!(signal(&pid, "-KILL"), "SIGKILL broker {node} (pid {pid})");
        // the pid file outlives the process: wait until it is gone (no
        // parent of ours waits on it, so /proc is what tells)
        let proc_dir = format!("/proc/{pid}");
        let mut gone = false;
        for _ in 0..100 {
            gone = !std::path::Path::new(&proc_dir).exists();
            if gone {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        KilledBroker {
            node,
            gone,
            restarted: false,
        }
    }

    pub async fn restart(mut self) {
        kafka(&["restart-node", &self.node.to_string()]).await;
        self.restarted = true;
    }
}

impl Drop for KilledBroker {
    fn drop(&mut self) {
        if !self.restarted {
            let _ = std::process::Command::new(repo().join("scripts/kafka"))
                .args(["restart-node", &self.node.to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// A broker paused with SIGSTOP; resumed when dropped, whatever happens.
pub struct PausedBroker(String);

impl PausedBroker {
    pub async fn pause(node: i32) -> PausedBroker {
        let pid = kafka(&["pid", &node.to_string()]).await.trim().to_string();
        assert!(signal(&pid, "-STOP"), "SIGSTOP broker {node}");
        PausedBroker(pid)
    }

    /// Waits until the process is in the stopped state (`T` in
    /// /proc/PID/stat; SIGSTOP reaches every thread of the JVM a moment
    /// after kill(1) returns). False if it is not within `within`.
    pub async fn wait_stopped(&self, within: Duration) -> bool {
        let stat = format!("/proc/{}/stat", self.0);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
                let (_, rest) = s.rsplit_once(')')?;
                rest.split_whitespace().next().map(str::to_string)
            });
            if state.as_deref() == Some("T") {
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for PausedBroker {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

/// Waits until `topic`-`partition` has a leader other than `not`: that
/// leader, or None when none came within `wait`.
pub async fn leader_other_than(
    topic: &str,
    partition: i32,
    not: i32,
    wait: Duration,
) -> Option<i32> {
    let out = tokio::process::Command::new(repo().join("scripts/kafka"))
        .args([
            "run",
            "ClientHarness",
            "topic-leader",
            "--bootstrap",
            &cluster().bootstrap,
            "--topic",
            topic,
            "--partition",
            &partition.to_string(),
            "--not",
            &not.to_string(),
            "--wait-ms",
            &wait.as_millis().to_string(),
        ])
        .output()
        .await
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().rev().find(|l| l.starts_with('{'))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let leader = v["leader"].as_i64()? as i32;
    (leader != not).then_some(leader)
}
