//! The proxy's own look at the cluster: a Metadata request to a bootstrap
//! server at start-up and every probe interval. It opens listeners for
//! brokers before any client asks, and drives `/readyz` and
//! `kdp_upstream_up`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::Shared;
use super::io::{BrokerStream, FrameError, FrameReader, dial_broker};
use crate::codec::api::{API_VERSIONS, METADATA};
use crate::codec::frame::Frame;
use crate::codec::header::{RequestHeader, parse_response_header, put_request_header};
use crate::codec::metadata::{MetadataRequest, encode_metadata_request, parse_metadata_response};
use crate::codec::primitives::TaggedFields;
use crate::metrics as kdp_metrics;

/// Metadata v1: old enough for any 3.x/4.x broker, new enough that an
/// empty topic list means "no topics" (brokers only).
const PROBE_VERSION: i16 = 1;
const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Brokers the cluster reports, or `None` when the broker answered
/// ApiVersions but closed on Metadata: a SASL listener takes no other
/// request before authentication, and the proxy has no credentials of its
/// own (broker listeners then open as clients' Metadata responses name
/// the brokers).
async fn probe_once(addr: &str, shared: &Arc<Shared>) -> Result<Option<usize>, String> {
    match dial_broker(addr, shared.tls_upstream.as_deref(), PROBE_TIMEOUT).await? {
        BrokerStream::Plain(s) => metadata_of(s, shared).await,
        BrokerStream::Tls(s) => metadata_of(*s, shared).await,
    }
}

async fn metadata_of<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    shared: &Arc<Shared>,
) -> Result<Option<usize>, String> {
    // ApiVersions v0 first: every listener answers it, SASL or not.
    let mut buf = BytesMut::new();
    put_request_header(
        &mut buf,
        &RequestHeader {
            api_key: API_VERSIONS,
            api_version: 0,
            correlation_id: 0,
            client_id: Some("kafka-dedup-proxy".into()),
            tagged_fields: TaggedFields::default(),
        },
        1,
    );
    s.write_all(Frame::from_body(&buf).raw())
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(s, shared.config.max_frame_bytes);
    tokio::time::timeout(PROBE_TIMEOUT, reader.next())
        .await
        .map_err(|_| "no answer in time".to_string())?
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "connection closed".to_string())?;
    let mut s = reader.into_inner();

    let mut buf = BytesMut::new();
    put_request_header(
        &mut buf,
        &RequestHeader {
            api_key: METADATA,
            api_version: PROBE_VERSION,
            correlation_id: 1,
            client_id: Some("kafka-dedup-proxy".into()),
            tagged_fields: TaggedFields::default(),
        },
        1,
    );
    encode_metadata_request(
        &mut buf,
        &MetadataRequest {
            topics: Some(Vec::new()),
            allow_auto_topic_creation: false,
            include_cluster_authorized_operations: false,
            include_topic_authorized_operations: false,
            tagged_fields: TaggedFields::default(),
        },
        PROBE_VERSION,
    );
    s.write_all(Frame::from_body(&buf).raw())
        .await
        .map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(s, shared.config.max_frame_bytes);
    let frame = match tokio::time::timeout(PROBE_TIMEOUT, reader.next())
        .await
        .map_err(|_| "no answer in time".to_string())?
    {
        Ok(Some(f)) => f,
        Ok(None) | Err(FrameError::Io(_)) => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let body = frame.body();
    let (rest, _) = parse_response_header(&body, 0).map_err(|e| format!("{e:?}"))?;
    let r = parse_metadata_response(rest, PROBE_VERSION).map_err(|e| e.to_string())?;
    let n = r.brokers.len();
    shared.observe_brokers(r.brokers.into_iter().map(|b| (b.node_id, b.host, b.port)));
    Ok(Some(n))
}

/// Probes each bootstrap server in turn until one answers.
pub async fn probe(shared: &Arc<Shared>) -> bool {
    let mut last_err = String::new();
    for addr in shared.config.upstream_servers() {
        match probe_once(&addr, shared).await {
            Ok(n) => {
                let was = shared.upstream_up.swap(true, Ordering::Relaxed);
                match n {
                    Some(n) if !was => {
                        tracing::info!(upstream = %addr, brokers = n, "upstream cluster reachable")
                    }
                    None if !was => tracing::info!(
                        upstream = %addr,
                        "upstream cluster reachable; it wants SASL before Metadata, so broker \
                         listeners open as clients' Metadata responses name the brokers"
                    ),
                    _ => {}
                }
                metrics::gauge!(kdp_metrics::UPSTREAM_UP).set(1.0);
                return true;
            }
            Err(e) => last_err = format!("{addr}: {e}"),
        }
    }
    let was = shared.upstream_up.swap(false, Ordering::Relaxed);
    if was || shared.probes_failed.fetch_add(1, Ordering::Relaxed) == 0 {
        tracing::warn!(error = %last_err, "upstream cluster unreachable");
    }
    metrics::gauge!(kdp_metrics::UPSTREAM_UP).set(0.0);
    false
}

/// Shortest time between two on-demand refreshes: a client asking for node
/// ids the cluster does not have cannot make the proxy flood the cluster
/// with Metadata requests.
const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// Asks the cluster for its brokers once, on behalf of a connection that
/// names a node id the registry does not know (asked at `asked_at`).
/// Connections asking at once share one refresh: whoever waited behind a
/// refresh that ended after it asked takes that refresh's answer, and
/// refreshes are at least [`MIN_REFRESH_INTERVAL`] apart.
pub async fn refresh_brokers(shared: &Arc<Shared>, asked_at: tokio::time::Instant) {
    let mut last = shared.brokers_refreshed.lock().await;
    if let Some(t) = *last
        && (t >= asked_at || t.elapsed() < MIN_REFRESH_INTERVAL)
    {
        return;
    }
    probe(shared).await;
    *last = Some(tokio::time::Instant::now());
}

pub async fn run_probes(shared: Arc<Shared>) {
    let every = Duration::from_secs(shared.config.upstream_probe_interval_seconds.max(1));
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        probe(&shared).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use clap::Parser;

    #[tokio::test]
    async fn on_demand_refreshes_are_shared_and_spaced() {
        // Nothing listens on the discard port: every probe fails at once
        // and is counted in `probes_failed`.
        let config = Config::parse_from(["kafka-dedup-proxy", "--upstream", "127.0.0.1:9"]);
        let dedup = crate::proxy::shared::dedup_for(&config).unwrap();
        let (shared, _listeners) = Shared::new(
            config,
            dedup,
            "127.0.0.1:9092".parse().unwrap(),
            None,
            None,
            None,
        );
        let asked = tokio::time::Instant::now();
        refresh_brokers(&shared, asked).await;
        assert_eq!(shared.probes_failed.load(Ordering::Relaxed), 1);
        // Asked before the refresh ended: takes its answer.
        refresh_brokers(&shared, asked).await;
        // Asked after it, but within the interval: no new probe either.
        refresh_brokers(&shared, tokio::time::Instant::now()).await;
        assert_eq!(shared.probes_failed.load(Ordering::Relaxed), 1);
        tokio::time::sleep(MIN_REFRESH_INTERVAL).await;
        refresh_brokers(&shared, tokio::time::Instant::now()).await;
        assert_eq!(shared.probes_failed.load(Ordering::Relaxed), 2);
    }
}
