//! The `kafka-dedup-proxy` binary as an operator runs it: configured by
//! environment variables, refusing bad configuration with one clear line,
//! and draining in-flight requests on SIGTERM.

mod common;

use std::time::Duration;

use common::child::{BIN, ChildProxy};
use common::*;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{FetchRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::process::Command;

/// The binary configured by environment variables only, on a port block of
/// its own (bootstrap at base, brokers 1-3 at base+2.., metrics at base+5),
/// once it serves.
async fn spawn_proxy(grace: &str) -> ChildProxy {
    let base = next_port_base();
    let mut cmd = Command::new(BIN);
    cmd.env("KDP_UPSTREAM", &cluster().bootstrap)
        .env("KDP_LISTEN", format!("127.0.0.1:{base}"))
        .env("KDP_ADVERTISED_HOST", "127.0.0.1")
        .env("KDP_METRICS_LISTEN", format!("127.0.0.1:{}", base + 5))
        .env("KDP_SHUTDOWN_GRACE_SECONDS", grace);
    ChildProxy::spawn(cmd, base).await
}

/// Waits until the proxy has read a Fetch from its client: from then on the
/// request is in flight and a drain must wait for its answer.
async fn wait_fetch_in_flight(p: &ChildProxy) {
    let fetches = p
        .wait_metric(
            "kdp_requests_total",
            "api=\"fetch\"",
            Duration::from_secs(10),
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(fetches, 1.0, "the proxy read the Fetch");
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

async fn leader_addr(p: &ChildProxy, topic: &str) -> String {
    let out = harness(&[
        "topic-leader",
        "--bootstrap",
        &cluster().bootstrap,
        "--topic",
        topic,
    ])
    .await;
    p.broker_addr(out["leader"].as_i64().unwrap() as i32)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_cleanly() {
    let _g = cluster_lock().read().await;
    let topic = unique("drain");
    create_topic(&topic, 1).await;
    let mut p = spawn_proxy("20").await;
    let mut conn = RawConn::connect(&leader_addr(&p, &topic).await).await;
    assert_eq!(
        conn.call(4, &MetadataRequest::default().with_topics(None))
            .await
            .brokers
            .len(),
        3
    );

    let readyz = p.metrics_url("/readyz");
    assert_eq!(http_get(&readyz).await, (200, "ready\n".to_string()));

    let corr = conn.send(12, &long_poll(&topic, 3000)).await;
    wait_fetch_in_flight(&p).await;
    p.sigterm();
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
    let status = tokio::time::timeout(Duration::from_secs(20), p.wait())
        .await
        .expect("the proxy exits after the drain");
    assert!(status.success(), "clean exit after the drain: {status}");
    assert!(
        tokio::net::TcpStream::connect(&p.bootstrap).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_overrun_is_logged_and_ends_the_process() {
    let _g = cluster_lock().read().await;
    let topic = unique("overrun");
    create_topic(&topic, 1).await;
    let mut p = spawn_proxy("1").await;
    let mut conn = RawConn::connect(&leader_addr(&p, &topic).await).await;
    conn.send(12, &long_poll(&topic, 10_000)).await;
    wait_fetch_in_flight(&p).await;
    p.sigterm();
    let status = tokio::time::timeout(Duration::from_secs(8), p.wait())
        .await
        .expect("the proxy exits when the grace period is over");
    assert!(!status.success(), "an overrun drain exits non-zero");
    let stderr = p.log_to_end().await;
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
