//! Operating the proxy: Prometheus metrics that move with real traffic and
//! pass `promtool check metrics`, and health endpoints that follow the
//! upstream cluster.

mod common;

use std::time::Duration;

use common::child::ChildProxy;
use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

/// The metrics are read from a proxy binary of its own (tests/common/child.rs):
/// the counters below move with this test's traffic only, so they can be
/// asserted exactly where the traffic is deterministic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_produce_traffic_and_pass_promtool() {
    let _g = cluster_lock().read().await;
    let p = ChildProxy::start(&[]).await;
    let topic = unique("ops-metrics");
    create_topic(&topic, 3).await;
    let before = p.metrics().await;

    let out = harness(&[
        "produce",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--count",
        "500",
        "--acks",
        "all",
        "--idempotence",
        "true",
    ])
    .await;
    assert_eq!(out["acked"], 500, "{out}");
    // One idempotent producer: one producer-partition per partition written.
    let partitions_written = out["offsets"]
        .as_object()
        .expect("offsets by partition")
        .len();
    assert!(partitions_written >= 1, "{out}");

    let after = p.metrics().await;
    let grew = |name: &str, label: &str| {
        metric_sum(&after, name, label) - metric_sum(&before, name, label)
    };
    let produce_requests = grew("kdp_requests_total", "api=\"produce\"");
    assert!(produce_requests >= 1.0, "produce requests counted");
    assert!(
        grew("kdp_requests_total", "api=\"metadata\"") >= 1.0,
        "metadata requests counted"
    );
    assert!(
        grew("kdp_produce_batches_total", "outcome=\"forwarded\"") >= partitions_written as f64,
        "at least one fresh batch counted per partition written"
    );
    assert!(
        grew("kdp_connections_total", "") >= 2.0,
        "connections counted (bootstrap and broker)"
    );
    let timed = grew(
        "kdp_upstream_request_duration_seconds_count",
        "api=\"produce\"",
    );
    assert!(
        timed >= 1.0 && timed <= produce_requests,
        "upstream latency observed for forwarded produce requests ({timed} of {produce_requests})"
    );
    assert_eq!(
        metric_sum(&after, "kdp_broker_listeners", ""),
        cluster().broker_ports.len() as f64,
        "one broker listener per broker of the cluster"
    );
    // The gauge is published every second.
    let entries = p
        .wait_metric(
            "kdp_dedup_cache_entries",
            "",
            Duration::from_secs(10),
            |v| v == partitions_written as f64,
        )
        .await;
    assert_eq!(
        entries, partitions_written as f64,
        "the cache holds the producer's partitions"
    );
    assert_eq!(http_get(&p.metrics_url("/healthz")).await.0, 200);
    assert_eq!(http_get(&p.metrics_url("/readyz")).await.0, 200);
    assert_eq!(http_get(&p.metrics_url("/nope")).await.0, 404);

    let mut promtool = tokio::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) is installed by scripts/install-deps");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .await
        .unwrap();
    let res = promtool.wait_with_output().await.unwrap();
    assert!(
        res.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}

/// A plain TCP relay that can be taken down and brought back on one port.
async fn relay(listen: &str, upstream: String) -> tokio::task::JoinHandle<()> {
    let listener = TcpListener::bind(listen).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            let up = upstream.clone();
            tokio::spawn(async move {
                if let Ok(mut u) = TcpStream::connect(&up).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut u).await;
                }
            });
        }
    })
}

async fn wait_status(url: &str, want: u16) -> bool {
    for _ in 0..40 {
        if http_get(url).await.0 == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_unready_when_the_upstream_is_down_and_ready_when_it_returns() {
    let _g = cluster_lock().read().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let relay_addr = format!("127.0.0.1:{port}");
    let broker = format!("127.0.0.1:{}", cluster().broker_ports[0]);
    let r = relay(&relay_addr, broker.clone()).await;
    let p = start_proxy_to(&relay_addr, &["--upstream-probe-interval-seconds", "1"]).await;
    let url = p.metrics_url("/readyz");
    assert!(
        wait_status(&url, 200).await,
        "ready while the upstream answers"
    );

    r.abort();
    let _ = r.await;
    assert!(
        wait_status(&url, 503).await,
        "unready once the upstream is gone"
    );
    assert_eq!(
        http_get(&p.metrics_url("/healthz")).await.0,
        200,
        "still alive"
    );

    let _r = relay(&relay_addr, broker).await;
    assert!(
        wait_status(&url, 200).await,
        "ready again when the upstream returns"
    );
}

/// GET `path` on `addr`: the raw answer, empty when the server closed the
/// connection without one.
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s
        .write_all(format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n").as_bytes())
        .await;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer).await;
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_closes_connections_past_its_limit_and_counts_them() {
    use kafka_dedup_proxy::proxy::http::MAX_HTTP_CONNECTIONS;

    // No cluster needed: an upstream where nothing listens.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let p = start_proxy_to(&dead, &[]).await;
    let addr = p.proxy.metrics_addr();

    // Connections that send nothing hold their slot (until the read
    // timeout); the server accepts in order, so all of them hold one
    // before the next connection is looked at.
    let mut idle = Vec::new();
    for _ in 0..MAX_HTTP_CONNECTIONS {
        idle.push(TcpStream::connect(addr).await.unwrap());
    }
    assert_eq!(
        raw_get(addr, "/healthz").await,
        "",
        "closed without an answer"
    );

    // Slots come back when the idle connections go.
    drop(idle);
    let mut metrics = String::new();
    for _ in 0..40 {
        metrics = raw_get(addr, "/metrics").await;
        if !metrics.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        metrics.starts_with("HTTP/1.1 200"),
        "answers again: {metrics}"
    );
    assert!(
        metric_sum(&metrics, "kdp_http_connections_rejected_total", "") >= 1.0,
        "the refusal is counted"
    );
}
