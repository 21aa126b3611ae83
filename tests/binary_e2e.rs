//! The `kafka-dedup-proxy` binary as an operator runs it: configured by
//! environment variables, refusing bad configuration with one clear line,
//! and draining in-flight requests on SIGTERM.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_kafka-dedup-proxy");

/// A port block of our own (bootstrap, brokers 1-3 at base+2.., metrics at base+5).
fn free_base() -> u16 {
    next_port_base()
}

async fn spawn_proxy(base: u16, grace: &str) -> Child {
    let child = Command::new(BIN)
        .env("KDP_UPSTREAM", &cluster().bootstrap)
        .env("KDP_LISTEN", format!("127.0.0.1:{base}"))
        .env("KDP_ADVERTISED_HOST", "127.0.0.1")
        .env("KDP_METRICS_LISTEN", format!("127.0.0.1:{}", base + 5))
        .env("KDP_SHUTDOWN_GRACE_SECONDS", grace)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy binary");
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", base))
            .await
            .is_ok()
        {
            return child;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy binary did not start listening");
}

fn sigterm(child: &Child) {
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
}

/// A Fetch that the broker holds for `wait_ms` (nothing to read yet).
fn long_poll(topic: &str, wait_ms: i32) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(wait_ms)
        .with_min_bytes(1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ])
}

async fn leader_addr(base: u16, topic: &str) -> String {
    let out = harness(&[
        "topic-leader",
        "--bootstrap",
        &cluster().bootstrap,
        "--topic",
        topic,
    ])
    .await;
    let leader = out["leader"].as_i64().unwrap() as u16;
    format!("127.0.0.1:{}", base + 1 + leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let _g = cluster_lock().read().await;
    let topic = unique("drain");
    create_topic(&topic, 1).await;
    let base = free_base();
    let mut child = spawn_proxy(base, "20").await;
    let mut conn = RawConn::connect(&leader_addr(base, &topic).await).await;
    assert_eq!(
        conn.call(4, &MetadataRequest::default().with_topics(None))
            .await
            .brokers
            .len(),
        3
    );

    let readyz = format!("http://127.0.0.1:{}/readyz", base + 5);
    assert_eq!(http_get(&readyz).await, (200, "ready\n".to_string()));

    let corr = conn.send(12, &long_poll(&topic, 3000)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    // Draining: not ready any more (a load balancer stops sending new
    // connections), while the in-flight Fetch is still at the broker.
    let mut status = http_get(&readyz).await;
    for _ in 0..50 {
        if status.0 == 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = http_get(&readyz).await;
    }
    assert_eq!(status, (503, "draining\n".to_string()));
    let (got, resp) = tokio::time::timeout(Duration::from_secs(15), conn.recv::<FetchRequest>(12))
        .await
        .expect("the in-flight Fetch is answered during the drain");
    assert_eq!(got, corr);
    assert_eq!(resp.error_code, 0);
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "clean exit after the drain: {status}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", base))
            .await
            .is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_overrun_is_logged_and_ends_the_process() {
    let _g = cluster_lock().read().await;
    let topic = unique("overrun");
    create_topic(&topic, 1).await;
    let base = free_base();
    let mut child = spawn_proxy(base, "1").await;
    let mut conn = RawConn::connect(&leader_addr(base, &topic).await).await;
    conn.send(12, &long_poll(&topic, 10_000)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigterm(&child);
    let status = tokio::time::timeout(Duration::from_secs(8), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "an overrun drain exits non-zero");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr)
        .await
        .unwrap();
    assert!(
        stderr.contains("drain overran the grace period"),
        "overrun logged: {stderr}"
    );
    // stderr is a pipe here, as under a log collector: no colour codes.
    assert!(
        !stderr.contains('\x1b'),
        "escape codes in piped logs: {stderr:?}"
    );
}

#[tokio::test]
async fn bad_configuration_is_refused_with_one_clear_line() {
    let out = Command::new(BIN)
        .env("KDP_UPSTREAM", "kafka-without-port")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        stderr.trim(),
        "kafka-dedup-proxy: --upstream entry 'kafka-without-port' is not host:port"
    );

    let out = Command::new(BIN).arg("--help").output().await.unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--upstream",
        "--listen",
        "--advertised-host",
        "--metrics-listen",
        "KDP_DEDUP_MODE",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
}
