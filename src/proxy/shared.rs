//! State shared by every listener and connection of one proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::brokers::{BrokerRegistry, NewListener};
use super::sni::SniRoutes;
use super::tls;
use super::topics::TopicNames;
use crate::config::Config;
use crate::dedup::{DedupCache, KeyCache, KeyRules, ProduceDedup};

/// The Produce dedup `config` asks for: the batch cache, and key dedup
/// when topics are named. Errors name the flag.
pub fn dedup_for(config: &Config) -> Result<ProduceDedup, String> {
    let cache = DedupCache::new(
        config.dedup_window,
        config.cache_max_producer_partitions,
        Duration::from_secs(config.cache_idle_ttl_seconds),
    );
    let mut dedup = ProduceDedup::new(cache, config.dedup_mode.into());
    if let Some(url) = &config.dedup_store {
        // Must run inside the runtime: the store connects in the background.
        let target =
            crate::store::parse_store_url(url).map_err(|e| format!("--dedup-store {e}"))?;
        let store = crate::store::RedisStore::start(crate::store::StoreSettings {
            target,
            password: config.dedup_store_password()?,
            timeout: config.dedup_store_timeout(),
            window: config.dedup_window,
            window_ttl: Duration::from_secs(config.cache_idle_ttl_seconds),
            key_ttl: Duration::from_secs(config.key_dedup_window_seconds),
        });
        tracing::info!(
            store = store.target(),
            timeout_ms = config.dedup_store_timeout_ms,
            "dedup state shared through the store"
        );
        dedup = dedup.with_store(std::sync::Arc::new(store));
    }
    let rules = config.key_dedup_rules()?;
    if rules.is_empty() {
        return Ok(dedup);
    }
    let keys = KeyCache::new(
        Duration::from_secs(config.key_dedup_window_seconds),
        config.key_dedup_max_keys.max(1),
    );
    if let Some(store) = dedup.store() {
        keys.share_through(Arc::clone(store), config.key_dedup_on_store_error.into());
    }
    let rules = KeyRules::with_sources(rules, keys)?;
    Ok(dedup.with_keys(rules))
}

#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    /// Produce dedup over the process's one cache.
    pub dedup: ProduceDedup,
    pub brokers: BrokerRegistry,
    pub topics: TopicNames,
    pub upstream_up: AtomicBool,
    pub probes_failed: AtomicUsize,
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub conn_limit: Arc<Semaphore>,
    /// TLS on the client listeners, when configured.
    pub tls_server: Option<Arc<tls::ServerTls>>,
    /// TLS to the brokers, when configured.
    pub tls_upstream: Option<Arc<tls::UpstreamTls>>,
    /// SNI routing on the bootstrap listener, when configured: brokers are
    /// then advertised by name on the bootstrap port.
    pub sni: Option<SniRoutes>,
    /// The port advertised with every SNI name: --sni-advertised-port, else
    /// the bootstrap listener's own (the one port of SNI routing).
    pub sni_port: u16,
    /// When the last on-demand broker refresh ended (see
    /// `probe::refresh_brokers`); the lock also makes waiting connections
    /// share one refresh.
    pub brokers_refreshed: tokio::sync::Mutex<Option<tokio::time::Instant>>,
    next_bootstrap: AtomicUsize,
}

impl Shared {
    /// The shared state for `config` (its broker port base already set)
    /// and `dedup` (from [`dedup_for`]), with broker listeners bound on
    /// the IP of the `bootstrap` listener, and the receiving end of the
    /// broker listeners bound from then on.
    pub fn new(
        config: Config,
        dedup: ProduceDedup,
        bootstrap: std::net::SocketAddr,
        tls_server: Option<Arc<tls::ServerTls>>,
        tls_upstream: Option<Arc<tls::UpstreamTls>>,
        sni: Option<SniRoutes>,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<NewListener>) {
        let (brokers, new_listeners) = BrokerRegistry::new(
            config.advertised_host.clone(),
            config.broker_port_base(),
            bootstrap.ip(),
        );
        let shared = Arc::new(Shared {
            dedup,
            brokers,
            conn_limit: Arc::new(Semaphore::new(config.max_connections)),
            tls_server,
            tls_upstream,
            sni,
            sni_port: config.sni_advertised_port.unwrap_or(bootstrap.port()),
            brokers_refreshed: tokio::sync::Mutex::new(None),
            config,
            topics: TopicNames::default(),
            upstream_up: AtomicBool::new(false),
            probes_failed: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            next_bootstrap: AtomicUsize::new(0),
        });
        (shared, new_listeners)
    }

    /// Bootstrap servers, starting at a rotating position so new
    /// connections spread over them.
    pub fn bootstrap_rotation(&self) -> Vec<String> {
        let mut v = self.config.upstream_servers();
        if !v.is_empty() {
            let start = self.next_bootstrap.fetch_add(1, Ordering::Relaxed) % v.len();
            v.rotate_left(start);
        }
        v
    }

    /// Records the brokers a response names (see [`BrokerRegistry::observe`]).
    pub fn observe_brokers(&self, brokers: impl IntoIterator<Item = (i32, String, i32)>) {
        self.brokers.observe(
            brokers,
            |a| self.config.map_broker_address(a),
            !self.shutdown.is_cancelled(),
        );
    }

    /// (host, port) clients are told for a node: with SNI routing, the
    /// node's name on the SNI port (every client is told the SNI
    /// address, whichever listener it came in on; the per-broker ports
    /// still accept); otherwise the node's own port.
    pub fn advertise(&self, node_id: i32) -> (String, i32) {
        match &self.sni {
            Some(sni) => (sni.pattern().host_of(node_id), i32::from(self.sni_port)),
            None => self.brokers.advertise(node_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn shared(sni: Option<SniRoutes>) -> Arc<Shared> {
        shared_with(sni, &[])
    }

    fn shared_with(sni: Option<SniRoutes>, extra: &[&str]) -> Arc<Shared> {
        let mut args = vec![
            "kafka-dedup-proxy",
            "--upstream",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:19092",
        ];
        args.extend_from_slice(extra);
        let config = Config::parse_from(args);
        let dedup = dedup_for(&config).unwrap();
        let bootstrap = config.listen;
        Shared::new(config, dedup, bootstrap, None, None, sni).0
    }

    #[test]
    fn brokers_are_advertised_on_their_own_port_unless_sni_routes_them() {
        assert_eq!(shared(None).advertise(2), ("127.0.0.1".into(), 19095));
        let sni = SniRoutes::new("broker-$(nodeId).kafka.test", "bootstrap.kafka.test").unwrap();
        let s = shared(Some(sni));
        assert_eq!(s.advertise(2), ("broker-2.kafka.test".into(), 19092));
        assert_eq!(s.advertise(0), ("broker-0.kafka.test".into(), 19092));
    }

    #[test]
    fn sni_names_carry_the_advertised_port_when_one_is_given() {
        let sni = SniRoutes::new("broker-$(nodeId).kafka.test", "bootstrap.kafka.test").unwrap();
        let flags = [
            "--tls-cert",
            "c",
            "--tls-key",
            "k",
            "--sni-routing",
            "broker-$(nodeId).kafka.test",
            "--sni-bootstrap",
            "bootstrap.kafka.test",
            "--sni-advertised-port",
            "443",
        ];
        let s = shared_with(Some(sni), &flags);
        assert_eq!(s.advertise(3), ("broker-3.kafka.test".into(), 443));
        // without SNI routing the per-broker ports are untouched
        assert_eq!(shared(None).advertise(3), ("127.0.0.1".into(), 19096));
    }
}
