//! The proxy: listeners, per-connection tasks, response ordering and
//! endpoint rewriting.
//!
//! * [`listener`]: accept loops with a connection limit.
//! * [`connection`]: one client connection ↔ one upstream connection,
//!   responses strictly in request order; a folder whose files are the
//!   stages a request passes.
//! * [`rewrite`]: broker endpoints → proxy endpoints, ApiVersions clamp.
//! * [`brokers`]: node id → upstream address; binds per-broker listeners,
//!   which this module serves (no file below imports upward).
//! * [`shared`]: the state every listener and connection shares.
//! * [`error`]: why a connection closes, by the side that caused it.
//! * [`io`]: frame reading and vectored writing on sockets.
//! * [`tls`]: TLS termination for clients, TLS origination to brokers.
//! * [`sni`]: SNI routing's names: the broker pattern, the bootstrap name.
//! * [`topics`]: topic id → name for Produce v13.
//! * [`probe`]: the proxy's own Metadata probe (readiness, listeners).
//! * [`http`]: `/metrics`, `/healthz`, `/readyz`.

pub mod brokers;
pub mod connection;
pub mod error;
pub mod http;
pub mod io;
pub mod listener;
pub mod probe;
pub mod rewrite;
pub mod shared;
pub mod sni;
pub mod tls;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::mpsc;

use crate::config::Config;
use brokers::{NewListener, bind_listener};
use connection::Target;
use listener::run_listener;
pub use shared::Shared;

/// A running proxy.
#[derive(Debug)]
pub struct Proxy {
    shared: Arc<Shared>,
    bootstrap_addr: SocketAddr,
    metrics_addr: SocketAddr,
    /// The metrics endpoint, which outlives the drain (see [`http`]).
    http: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Binds the bootstrap and metrics listeners, probes the cluster once
    /// (opening broker listeners), and starts serving.
    pub async fn start(
        mut config: Config,
        handle: Option<PrometheusHandle>,
    ) -> std::io::Result<Proxy> {
        let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
        let tls_server = tls::ServerTls::from_config(&config).map_err(invalid)?;
        let tls_upstream = tls::UpstreamTls::from_config(&config).map_err(invalid)?;
        let sni = match (&config.sni_routing, &config.sni_bootstrap) {
            (Some(pattern), Some(bootstrap)) => {
                Some(sni::SniRoutes::new(pattern, bootstrap).map_err(invalid)?)
            }
            _ => None,
        };
        if sni.is_some() && tls_server.is_none() {
            return Err(invalid(
                "--sni-routing needs --tls-cert and --tls-key".into(),
            ));
        }
        if config.upstream_tls_insecure_skip_verify {
            tracing::warn!(
                "--upstream-tls-insecure-skip-verify: broker certificates are NOT verified; \
                 anyone on the path to the brokers can read and change the traffic"
            );
        }
        let bootstrap = bind_listener(config.listen)?;
        let bootstrap_addr = bootstrap.local_addr()?;
        let metrics_listener = tokio::net::TcpListener::bind(config.metrics_listen).await?;
        let metrics_addr = metrics_listener.local_addr()?;
        if config.broker_port_base.is_none() {
            config.broker_port_base = Some(bootstrap_addr.port().wrapping_add(1));
        }
        let dedup = shared::dedup_for(&config).map_err(invalid)?;
        let (shared, new_listeners) =
            Shared::new(config, dedup, bootstrap_addr, tls_server, tls_upstream, sni);
        tokio::spawn(serve_new_listeners(new_listeners, Arc::clone(&shared)));
        tracing::info!(
            listen = %bootstrap_addr,
            advertised_host = %shared.config.advertised_host,
            broker_port_base = shared.config.broker_port_base(),
            metrics = %metrics_addr,
            dedup = ?shared.config.dedup_mode,
            client_tls = shared.tls_server.is_some(),
            client_certificates = shared.config.tls_client_ca.is_some(),
            upstream_tls = shared.tls_upstream.is_some(),
            sni_routing = shared.sni.as_ref().map(|s| s.pattern().to_string()),
            sni_bootstrap = shared.sni.as_ref().map(|s| s.bootstrap().to_string()),
            sni_advertised_port = shared.sni.as_ref().map(|_| shared.sni_port),
            "proxy starting"
        );
        probe::probe(&shared).await;
        let http = tokio::spawn(http::serve(metrics_listener, Arc::clone(&shared), handle));
        tokio::spawn(probe::run_probes(Arc::clone(&shared)));
        tokio::spawn(sweep_cache(Arc::clone(&shared)));
        if let Some(t) = &shared.tls_server {
            tokio::spawn(Arc::clone(t).watch(
                Duration::from_secs(shared.config.tls_reload_interval_seconds),
                shared.shutdown.clone(),
            ));
        }
        shared.tracker.spawn(run_listener(
            bootstrap,
            Target::Bootstrap,
            Arc::clone(&shared),
        ));
        Ok(Proxy {
            shared,
            bootstrap_addr,
            metrics_addr,
            http,
        })
    }

    pub fn bootstrap_addr(&self) -> SocketAddr {
        self.bootstrap_addr
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Port that serves broker `node_id`.
    pub fn broker_port(&self, node_id: i32) -> Option<u16> {
        self.shared.brokers.port_of(node_id)
    }

    /// Stops accepting, lets connections finish what they were sent for up
    /// to `grace`, and reports whether everything drained in time. `/readyz`
    /// answers 503 from the first moment; the metrics endpoint closes once
    /// the drain is over.
    pub async fn shutdown(self, grace: Duration) -> bool {
        self.shared.shutdown.cancel();
        self.shared.tracker.close();
        let drained = tokio::time::timeout(grace, self.shared.tracker.wait()).await;
        self.http.abort();
        match drained {
            Ok(()) => {
                tracing::info!("all connections drained");
                true
            }
            Err(_) => {
                tracing::warn!(
                    grace_seconds = grace.as_secs_f64(),
                    still_open = self.shared.tracker.len(),
                    "drain overran the grace period; closing remaining connections"
                );
                false
            }
        }
    }
}

/// Serves every broker listener the registry binds (for node ids seen in
/// responses after start-up too), until the proxy stops.
async fn serve_new_listeners(mut rx: mpsc::UnboundedReceiver<NewListener>, shared: Arc<Shared>) {
    loop {
        let next = tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            l = rx.recv() => l,
        };
        let Some(NewListener { node_id, listener }) = next else {
            return;
        };
        shared.tracker.spawn(run_listener(
            listener,
            Target::Broker(node_id),
            Arc::clone(&shared),
        ));
    }
}

/// Publishes the cache size and evictions every second and drops idle
/// producer-partitions every quarter TTL (at most every minute).
async fn sweep_cache(shared: Arc<Shared>) {
    let sweep_every = (shared.config.cache_idle_ttl_seconds / 4).clamp(1, 60);
    let cache = shared.dedup.cache();
    metrics::gauge!(crate::metrics::DEDUP_CACHE_CAPACITY).set(cache.capacity() as f64);
    let mut published = Default::default();
    let mut keys_published = Default::default();
    let mut lines_published = Default::default();
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = shared.shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        ticks += 1;
        if ticks.is_multiple_of(sweep_every) {
            cache.sweep_idle();
        }
        crate::metrics::record_cache(cache, &mut published);
        if let Some(rules) = shared.dedup.key_rules() {
            rules.sweep();
            crate::metrics::record_keys(rules.cache(), &mut keys_published);
            crate::metrics::record_sequences(rules.sequences(), &mut lines_published);
        }
    }
}
