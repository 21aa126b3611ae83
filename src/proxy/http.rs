//! A minimal HTTP/1.1 server for `/metrics` (Prometheus text exposition),
//! `/healthz` (the process is alive) and `/readyz` (the upstream cluster
//! answered the last probe, and the proxy is not draining).
//!
//! The server keeps answering while the proxy drains: `/readyz` turns 503
//! the moment shutdown starts, so a load balancer or Kubernetes stops
//! sending new connections before the Kafka listeners close, and scrapes
//! still see the drain. It stops when the drain is over.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::Shared;
use crate::metrics as m;

const MAX_REQUEST_HEAD: usize = 8 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Requests answered at once. Scrapers and probes need a handful; the cap
/// keeps a flood of idle connections (each held up to [`READ_TIMEOUT`])
/// from growing tasks and buffers without bound. Excess connections are
/// closed on accept and counted.
pub const MAX_HTTP_CONNECTIONS: usize = 32;
/// At most one warning per this interval while connections are refused.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

pub async fn serve(listener: TcpListener, shared: Arc<Shared>, handle: Option<PrometheusHandle>) {
    serve_with_limit(listener, shared, handle, MAX_HTTP_CONNECTIONS).await
}

/// [`serve`] with a connection cap of `limit`.
pub async fn serve_with_limit(
    listener: TcpListener,
    shared: Arc<Shared>,
    handle: Option<PrometheusHandle>,
    limit: usize,
) {
    let permits = Arc::new(Semaphore::new(limit));
    let mut last_warned: Option<Instant> = None;
    loop {
        let Ok((sock, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
            metrics::counter!(m::HTTP_CONNECTIONS_REJECTED_TOTAL).increment(1);
            if last_warned.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_INTERVAL) {
                last_warned = Some(Instant::now());
                tracing::warn!(%peer, limit, "metrics endpoint connection limit reached; closing new connections");
            }
            drop(sock);
            continue;
        };
        let shared = Arc::clone(&shared);
        let handle = handle.clone();
        tokio::spawn(async move {
            let _ =
                tokio::time::timeout(READ_TIMEOUT, answer(sock, &shared, handle.as_ref())).await;
            drop(permit);
        });
    }
}

async fn answer(
    mut sock: TcpStream,
    shared: &Shared,
    handle: Option<&PrometheusHandle>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    let (status, ctype, body) = match (method, path) {
        ("GET", "/metrics") => match handle {
            Some(h) => (
                "200 OK",
                "text/plain; version=0.0.4; charset=utf-8",
                h.render(),
            ),
            None => (
                "503 Service Unavailable",
                "text/plain",
                "metrics recorder not installed\n".into(),
            ),
        },
        ("GET", "/healthz") => ("200 OK", "text/plain", "ok\n".into()),
        ("GET", "/readyz") => match readiness(shared) {
            Ok(()) => (
                "200 OK",
                "text/plain",
                format!("ready\n{}", store_line(shared)),
            ),
            Err(why) => (
                "503 Service Unavailable",
                "text/plain",
                format!("{why}{}", store_line(shared)),
            ),
        },
        ("GET", _) => ("404 Not Found", "text/plain", "not found\n".into()),
        _ => (
            "405 Method Not Allowed",
            "text/plain",
            "method not allowed\n".into(),
        ),
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    sock.write_all(resp.as_bytes()).await?;
    sock.shutdown().await
}

/// The shared dedup store's state, as a line of the `/readyz` body. A
/// store that is down does not make the proxy unready: it still serves
/// every request (forwarding what it cannot judge), only with less dedup.
fn store_line(shared: &Shared) -> String {
    match shared.dedup.store() {
        None => String::new(),
        Some(s) if s.is_up() => "store: up\n".into(),
        Some(_) => "store: down (degraded: dedup across replicas off, forwarding)\n".into(),
    }
}

/// Ready when not draining and the upstream answered the last probe;
/// otherwise the reason, as the body of the 503.
fn readiness(shared: &Shared) -> Result<(), &'static str> {
    if shared.shutdown.is_cancelled() {
        Err("draining\n")
    } else if !shared.upstream_up.load(Ordering::Relaxed) {
        Err("upstream unreachable\n")
    } else {
        Ok(())
    }
}
