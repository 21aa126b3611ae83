//! State shared by every listener and connection of one proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::brokers::{BrokerRegistry, NewListener};
use super::tls;
use super::topics::TopicNames;
use crate::config::Config;
use crate::dedup::{DedupCache, ProduceDedup};

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
    next_bootstrap: AtomicUsize,
}

impl Shared {
    /// The shared state for `config` (its broker port base already set),
    /// with listeners bound on `listen_ip`, and the receiving end of the
    /// broker listeners bound from then on.
    pub fn new(
        config: Config,
        listen_ip: std::net::IpAddr,
        tls_server: Option<Arc<tls::ServerTls>>,
        tls_upstream: Option<Arc<tls::UpstreamTls>>,
    ) -> (Arc<Shared>, mpsc::UnboundedReceiver<NewListener>) {
        let cache = DedupCache::new(
            config.dedup_window,
            config.cache_max_producer_partitions,
            Duration::from_secs(config.cache_idle_ttl_seconds),
        );
        let (brokers, new_listeners) = BrokerRegistry::new(
            config.advertised_host.clone(),
            config.broker_port_base(),
            listen_ip,
        );
        let shared = Arc::new(Shared {
            dedup: ProduceDedup::new(cache, config.dedup_mode.into()),
            brokers,
            conn_limit: Arc::new(Semaphore::new(config.max_connections)),
            tls_server,
            tls_upstream,
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

    /// (host, port) clients are told for a node.
    pub fn advertise(&self, node_id: i32) -> (String, i32) {
        self.brokers.advertise(node_id)
    }
}
