//! Command-line flags, each with an environment-variable equivalent (what a
//! container and the Helm chart set), validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::codec::frame::DEFAULT_MAX_FRAME_BYTES;

/// What the proxy does with duplicate Produce batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DedupMode {
    /// Answer committed duplicates with their original offsets.
    On,
    /// Track and count duplicates, but forward everything to the brokers.
    Observe,
    /// Forward everything, track nothing.
    Off,
}

impl From<DedupMode> for crate::dedup::Mode {
    fn from(m: DedupMode) -> Self {
        match m {
            DedupMode::On => crate::dedup::Mode::On,
            DedupMode::Observe => crate::dedup::Mode::Observe,
            DedupMode::Off => crate::dedup::Mode::Off,
        }
    }
}

/// What key dedup does when the shared store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OnStoreError {
    /// Forward the records (availability first: a duplicate may pass).
    Forward,
    /// Answer the producer with a retriable error (NOT_ENOUGH_REPLICAS: not written, retried by every client).
    Fail,
}

impl From<OnStoreError> for crate::dedup::OnStoreError {
    fn from(p: OnStoreError) -> Self {
        match p {
            OnStoreError::Forward => crate::dedup::OnStoreError::Forward,
            OnStoreError::Fail => crate::dedup::OnStoreError::Fail,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// A transparent, deduplicating proxy for Apache Kafka.
///
/// Clients bootstrap to --listen; every broker of the cluster is served on
/// its own port (--broker-port-base + node id) at --advertised-host, so no
/// client ever learns a real broker address.
#[derive(Debug, Clone, Parser)]
#[command(name = "kafka-dedup-proxy", version, about, long_about = None)]
pub struct Config {
    /// Bootstrap servers of the real Kafka cluster, comma-separated host:port.
    #[arg(long, env = "KDP_UPSTREAM", value_delimiter = ',', required = true)]
    pub upstream: Vec<String>,

    /// Address of the bootstrap listener clients connect to first.
    #[arg(long, env = "KDP_LISTEN", default_value = "0.0.0.0:9092")]
    pub listen: SocketAddr,

    /// Host name clients are given for every broker (a Service DNS name, a
    /// load balancer, 127.0.0.1 ...).
    #[arg(long, env = "KDP_ADVERTISED_HOST", default_value = "127.0.0.1")]
    pub advertised_host: String,

    /// Broker node id N is served on port BASE+N, on the bootstrap
    /// listener's IP. Default: the bootstrap port + 1.
    #[arg(long, env = "KDP_BROKER_PORT_BASE")]
    pub broker_port_base: Option<u16>,

    /// Where to reach brokers whose advertised address the proxy cannot use
    /// directly: comma-separated advertised=actual host:port pairs.
    #[arg(long, env = "KDP_BROKER_ADDRESS_MAP", value_delimiter = ',')]
    pub broker_address_map: Vec<String>,

    /// Address of the HTTP server for /metrics, /healthz and /readyz.
    #[arg(long, env = "KDP_METRICS_LISTEN", default_value = "0.0.0.0:9400")]
    pub metrics_listen: SocketAddr,

    /// Largest request or response frame accepted, in bytes; a longer one
    /// closes the connection.
    #[arg(long, env = "KDP_MAX_FRAME_BYTES", default_value_t = DEFAULT_MAX_FRAME_BYTES)]
    pub max_frame_bytes: usize,

    /// Most client connections served at once; more are closed on accept.
    #[arg(long, env = "KDP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Threads that run connections (tokio workers). Default: the CPUs
    /// this process may use (a container's CPU limit included). Set it to
    /// the CPU limit when that is fractional or the default misjudges it.
    #[arg(long, env = "KDP_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// on: answer committed duplicates; observe: count them but forward
    /// everything; off: forward everything.
    #[arg(long, env = "KDP_DEDUP_MODE", value_enum, default_value_t = DedupMode::On)]
    pub dedup_mode: DedupMode,

    /// Batches remembered per producer-partition (the broker keeps 5).
    #[arg(long, env = "KDP_DEDUP_WINDOW", default_value_t = 5)]
    pub dedup_window: usize,

    /// Most producer-partitions the dedup cache holds before evicting.
    #[arg(
        long,
        env = "KDP_CACHE_MAX_PRODUCER_PARTITIONS",
        default_value_t = 1_000_000
    )]
    pub cache_max_producer_partitions: usize,

    /// A producer-partition unused for this long is dropped from the cache.
    #[arg(long, env = "KDP_CACHE_IDLE_TTL_SECONDS", default_value_t = 900)]
    pub cache_idle_ttl_seconds: u64,

    /// Topics whose records are deduplicated by idempotency key:
    /// comma-separated names or globs (`orders-*`). Empty: off.
    #[arg(long, env = "KDP_KEY_DEDUP_TOPICS", value_delimiter = ',')]
    pub key_dedup_topics: Vec<String>,

    /// Where a record's idempotency key comes from: `header:NAME` (a record
    /// header), `key` (the record key) or `content` (key, value and headers).
    #[arg(
        long,
        env = "KDP_KEY_DEDUP_SOURCE",
        default_value = "header:idempotency-key"
    )]
    pub key_dedup_source: String,

    /// A TOML file of per-topic key sources, applied before
    /// --key-dedup-topics: `[[rule]]` tables, each with `topics` (names or
    /// globs) and `source` (`header:NAME`, `key` or `content`); the first
    /// rule whose pattern matches a topic applies (docs/idempotency-keys.md).
    #[arg(long, env = "KDP_KEY_DEDUP_RULES")]
    pub key_dedup_rules: Option<std::path::PathBuf>,

    /// How long an acknowledged key is remembered, in seconds (best effort:
    /// also bounded by --key-dedup-max-keys).
    #[arg(long, env = "KDP_KEY_DEDUP_WINDOW_SECONDS", default_value_t = 600)]
    pub key_dedup_window_seconds: u64,

    /// Most keys remembered; the oldest are dropped beyond it.
    #[arg(long, env = "KDP_KEY_DEDUP_MAX_KEYS", default_value_t = 10_000_000)]
    pub key_dedup_max_keys: usize,

    /// Shared dedup store for several proxy replicas:
    /// `redis://[user:pass@]host:port[/db]`, `rediss://` (TLS),
    /// `redis+cluster://h1:p1,h2:p2,...` or `rediss+cluster://` (Redis
    /// Cluster seed nodes). Password: KDP_DEDUP_STORE_PASSWORD or
    /// --dedup-store-password-file. Default: none (this process only).
    #[arg(long, env = "KDP_DEDUP_STORE")]
    pub dedup_store: Option<String>,

    /// File holding the dedup store's password (one line; a Kubernetes
    /// Secret mounted as a file). Overrides a password in the URL;
    /// KDP_DEDUP_STORE_PASSWORD, when set, overrides the file.
    #[arg(long, env = "KDP_DEDUP_STORE_PASSWORD_FILE", requires = "dedup_store")]
    pub dedup_store_password_file: Option<PathBuf>,

    /// Longest a dedup store call may take, in milliseconds; past it the
    /// request goes on without the store (batches are forwarded).
    #[arg(long, env = "KDP_DEDUP_STORE_TIMEOUT_MS", default_value_t = 50)]
    pub dedup_store_timeout_ms: u64,

    /// Key dedup when the store cannot be asked: `forward` the records
    /// (a duplicate may pass) or `fail` the batch with a retriable error
    /// (NOT_ENOUGH_REPLICAS) so the producer retries.
    #[arg(long, env = "KDP_KEY_DEDUP_ON_STORE_ERROR", value_enum, default_value_t = OnStoreError::Forward)]
    pub key_dedup_on_store_error: OnStoreError,

    /// Time given to in-flight requests to finish on SIGTERM/SIGINT.
    #[arg(long, env = "KDP_SHUTDOWN_GRACE_SECONDS", default_value_t = 30)]
    pub shutdown_grace_seconds: u64,

    /// Timeout for connecting to a broker.
    #[arg(
        long,
        env = "KDP_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub upstream_connect_timeout_ms: u64,

    /// How often the proxy asks the cluster for its brokers (readiness and
    /// new broker listeners).
    #[arg(
        long,
        env = "KDP_UPSTREAM_PROBE_INTERVAL_SECONDS",
        default_value_t = 10
    )]
    pub upstream_probe_interval_seconds: u64,

    /// PEM certificate chain (leaf first) clients are served; turns on TLS
    /// on every client listener. Re-read when the file changes.
    #[arg(long, env = "KDP_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "KDP_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// PEM CA bundle: clients must present a certificate that chains to
    /// it. Its subject then scopes the dedup cache (until SASL names a user).
    #[arg(long, env = "KDP_TLS_CLIENT_CA", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,

    /// SNI routing: serve every broker on the bootstrap port, advertised as
    /// this host-name pattern with the node id in place of `$(nodeId)`
    /// (e.g. `broker-$(nodeId).kafka.example.com`). TLS clients name the
    /// broker they want in their SNI; the certificate must cover every
    /// name. Per-broker ports keep accepting. Needs --tls-cert and
    /// --sni-bootstrap.
    #[arg(
        long,
        env = "KDP_SNI_ROUTING",
        requires_all = ["tls_cert", "sni_bootstrap"]
    )]
    pub sni_routing: Option<String>,

    /// With --sni-routing: the host name (SNI) of the bootstrap servers on
    /// the bootstrap port (e.g. `bootstrap.kafka.example.com`).
    #[arg(long, env = "KDP_SNI_BOOTSTRAP", requires = "sni_routing")]
    pub sni_bootstrap: Option<String>,

    /// With --sni-routing: the port clients are told for every broker name,
    /// when they reach the proxy through a port of another number (a load
    /// balancer, Ingress or Gateway passing TLS through on 443, say).
    /// Default: the bootstrap listener's own port.
    #[arg(long, env = "KDP_SNI_ADVERTISED_PORT", requires = "sni_routing", value_parser = clap::value_parser!(u16).range(1..))]
    pub sni_advertised_port: Option<u16>,

    /// How often the certificate files are checked for changes.
    #[arg(long, env = "KDP_TLS_RELOAD_INTERVAL_SECONDS", default_value_t = 5)]
    pub tls_reload_interval_seconds: u64,

    /// Speak TLS to the brokers (and in the proxy's own Metadata probe).
    #[arg(long, env = "KDP_UPSTREAM_TLS", default_value_t = false)]
    pub upstream_tls: bool,

    /// PEM CA bundle broker certificates are verified against. Default:
    /// the system's CA certificates.
    #[arg(long, env = "KDP_UPSTREAM_TLS_CA", requires = "upstream_tls")]
    pub upstream_tls_ca: Option<PathBuf>,

    /// PEM client certificate chain the proxy presents to brokers.
    #[arg(
        long,
        env = "KDP_UPSTREAM_TLS_CERT",
        requires_all = ["upstream_tls", "upstream_tls_key"]
    )]
    pub upstream_tls_cert: Option<PathBuf>,

    /// PEM private key of --upstream-tls-cert.
    #[arg(long, env = "KDP_UPSTREAM_TLS_KEY", requires = "upstream_tls_cert")]
    pub upstream_tls_key: Option<PathBuf>,

    /// Name every broker certificate is checked against, instead of the
    /// host the proxy dials (e.g. a wildcard or shared name).
    #[arg(long, env = "KDP_UPSTREAM_TLS_SERVER_NAME", requires = "upstream_tls")]
    pub upstream_tls_server_name: Option<String>,

    /// INSECURE: accept any broker certificate (no CA or host name check).
    /// Anyone on the path to the brokers can read and change the traffic.
    #[arg(
        long,
        env = "KDP_UPSTREAM_TLS_INSECURE_SKIP_VERIFY",
        default_value_t = false,
        requires = "upstream_tls"
    )]
    pub upstream_tls_insecure_skip_verify: bool,

    /// Log filter (tracing syntax: info, debug, kafka_dedup_proxy=debug ...).
    #[arg(long, env = "KDP_LOG_LEVEL", default_value = "info")]
    pub log_level: String,

    /// Log line format.
    #[arg(long, env = "KDP_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

impl Config {
    /// Checks what clap cannot, with one clear message per problem.
    pub fn validate(&self) -> Result<(), String> {
        if self.upstream.iter().all(|s| s.trim().is_empty()) {
            return Err("--upstream needs at least one host:port".into());
        }
        for u in &self.upstream {
            let u = u.trim();
            if !is_host_port(u) {
                return Err(format!("--upstream entry '{u}' is not host:port"));
            }
        }
        for pair in &self.broker_address_map {
            let ok = pair
                .split_once('=')
                .is_some_and(|(a, b)| is_host_port(a.trim()) && is_host_port(b.trim()));
            if !ok {
                return Err(format!(
                    "--broker-address-map entry '{pair}' is not host:port=host:port"
                ));
            }
        }
        let key_rules = self.key_dedup_rules()?;
        if !key_rules.is_empty() && self.key_dedup_max_keys == 0 {
            return Err("--key-dedup-max-keys must be at least 1".into());
        }
        if self.advertised_host.trim().is_empty() {
            return Err("--advertised-host must not be empty".into());
        }
        if self.max_frame_bytes < 1024 || self.max_frame_bytes > i32::MAX as usize {
            return Err(format!(
                "--max-frame-bytes must be between 1024 and {}, got {}",
                i32::MAX,
                self.max_frame_bytes
            ));
        }
        if self.worker_threads.is_some_and(|n| n == 0 || n > 1024) {
            return Err("--worker-threads must be between 1 and 1024".into());
        }
        if self.max_connections == 0 {
            return Err("--max-connections must be at least 1".into());
        }
        if self.dedup_window == 0 || self.dedup_window > 64 {
            return Err(format!(
                "--dedup-window must be between 1 and 64, got {}",
                self.dedup_window
            ));
        }
        if self.cache_max_producer_partitions == 0 {
            return Err("--cache-max-producer-partitions must be at least 1".into());
        }
        if self.cache_idle_ttl_seconds == 0 {
            return Err("--cache-idle-ttl-seconds must be at least 1".into());
        }
        if self.tls_reload_interval_seconds == 0 {
            return Err("--tls-reload-interval-seconds must be at least 1".into());
        }
        if self.upstream_tls_insecure_skip_verify && self.upstream_tls_ca.is_some() {
            return Err(
                "--upstream-tls-insecure-skip-verify and --upstream-tls-ca exclude each other"
                    .into(),
            );
        }
        if let Some(url) = &self.dedup_store {
            crate::store::parse_store_url(url).map_err(|e| format!("--dedup-store {e}"))?;
        }
        if self.dedup_store_timeout_ms == 0 || self.dedup_store_timeout_ms > 60_000 {
            return Err(format!(
                "--dedup-store-timeout-ms must be between 1 and 60000, got {}",
                self.dedup_store_timeout_ms
            ));
        }
        if self.broker_port_base() == 0 {
            return Err("--broker-port-base must not be 0".into());
        }
        Ok(())
    }

    /// The address to dial for a broker that advertises `advertised`.
    pub fn map_broker_address(&self, advertised: &str) -> String {
        self.broker_address_map
            .iter()
            .filter_map(|p| p.split_once('='))
            .find(|(a, _)| a.trim() == advertised)
            .map_or_else(|| advertised.to_string(), |(_, b)| b.trim().to_string())
    }

    /// Upstream bootstrap servers, trimmed.
    pub fn upstream_servers(&self) -> Vec<String> {
        self.upstream
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// Every key-dedup rule, checked: the rules file's in its order, then
    /// --key-dedup-topics with --key-dedup-source. Empty: key dedup is off.
    pub fn key_dedup_rules(&self) -> Result<Vec<(String, crate::dedup::KeySource)>, String> {
        let mut rules = Vec::new();
        if let Some(path) = &self.key_dedup_rules {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("--key-dedup-rules {}: {e}", path.display()))?;
            rules = parse_key_rules(&text)
                .map_err(|e| format!("--key-dedup-rules {}: {e}", path.display()))?;
        }
        let source = self
            .key_dedup_source
            .parse::<crate::dedup::KeySource>()
            .map_err(|e| format!("--key-dedup-source {e}"))?;
        for t in self.key_dedup_topics() {
            glob::Pattern::new(&t).map_err(|e| format!("--key-dedup-topics '{t}': {e}"))?;
            rules.push((t, source.clone()));
        }
        Ok(rules)
    }

    /// The key-dedup topic patterns, blanks dropped.
    pub fn key_dedup_topics(&self) -> Vec<String> {
        self.key_dedup_topics
            .iter()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    }

    /// The dedup store's password: KDP_DEDUP_STORE_PASSWORD, else the
    /// first line of --dedup-store-password-file; `None` when neither is
    /// set (a password in the URL still applies).
    pub fn dedup_store_password(&self) -> Result<Option<String>, String> {
        if let Ok(p) = std::env::var("KDP_DEDUP_STORE_PASSWORD")
            && !p.is_empty()
        {
            return Ok(Some(p));
        }
        let Some(path) = &self.dedup_store_password_file else {
            return Ok(None);
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--dedup-store-password-file {}: {e}", path.display()))?;
        Ok(Some(text.lines().next().unwrap_or("").to_string()))
    }

    pub fn dedup_store_timeout(&self) -> Duration {
        Duration::from_millis(self.dedup_store_timeout_ms)
    }

    pub fn broker_port_base(&self) -> u16 {
        self.broker_port_base
            .unwrap_or_else(|| self.listen.port().wrapping_add(1))
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_seconds)
    }

    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
    }

    /// A configuration for tests and embedding: every default, the given
    /// upstream, listeners on ephemeral loopback ports unless set later.
    pub fn for_upstream(upstream: &str) -> Config {
        Config::parse_from([
            "kafka-dedup-proxy",
            "--upstream",
            upstream,
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
    }
}

fn is_host_port(s: &str) -> bool {
    s.rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
}

/// The rules file of `--key-dedup-rules`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRulesFile {
    #[serde(default)]
    rule: Vec<KeyRuleEntry>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyRuleEntry {
    topics: Vec<String>,
    source: String,
}

/// Parses a rules file: `[[rule]]` tables of `topics` and `source`, in order.
/// Errors name the rule (1-based) and what is wrong with it.
fn parse_key_rules(text: &str) -> Result<Vec<(String, crate::dedup::KeySource)>, String> {
    let file: KeyRulesFile = toml::from_str(text).map_err(|e| e.to_string())?;
    let mut rules = Vec::new();
    for (n, r) in file.rule.into_iter().enumerate() {
        let n = n + 1;
        let source = r
            .source
            .parse::<crate::dedup::KeySource>()
            .map_err(|e| format!("rule {n}: source {e}"))?;
        if r.topics.is_empty() {
            return Err(format!("rule {n}: no topics"));
        }
        for t in r.topics {
            let t = t.trim().to_string();
            glob::Pattern::new(&t).map_err(|e| format!("rule {n}: topic '{t}': {e}"))?;
            rules.push((t, source.clone()));
        }
    }
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, String> {
        let mut v = vec!["kafka-dedup-proxy"];
        v.extend_from_slice(args);
        let c = Config::try_parse_from(v).map_err(|e| e.to_string())?;
        c.validate()?;
        Ok(c)
    }

    #[test]
    fn four_flags_are_enough() {
        let c = parse(&[
            "--upstream",
            "kafka:9092",
            "--listen",
            "0.0.0.0:19092",
            "--advertised-host",
            "proxy.example",
            "--metrics-listen",
            "0.0.0.0:9400",
        ])
        .unwrap();
        assert_eq!(c.broker_port_base(), 19093);
        assert_eq!(c.dedup_mode, DedupMode::On);
        assert_eq!(c.dedup_window, 5);
    }

    #[test]
    fn bad_upstream_gets_one_clear_line() {
        let e = parse(&["--upstream", "kafka"]).unwrap_err();
        assert_eq!(e, "--upstream entry 'kafka' is not host:port");
        assert!(parse(&["--upstream", "a:1,b:notaport"]).is_err());
    }

    #[test]
    fn broker_address_map_redirects_only_named_brokers() {
        let c = parse(&[
            "--upstream",
            "a:1",
            "--broker-address-map",
            "k1:9092=10.0.0.1:9092, k2:9092=10.0.0.2:19092",
        ])
        .unwrap();
        assert_eq!(c.map_broker_address("k2:9092"), "10.0.0.2:19092");
        assert_eq!(c.map_broker_address("k3:9092"), "k3:9092");
        assert!(parse(&["--upstream", "a:1", "--broker-address-map", "k1:9092"]).is_err());
    }

    #[test]
    fn sni_routing_is_off_by_default_and_needs_tls_and_a_bootstrap_name() {
        let c = parse(&["--upstream", "a:1"]).unwrap();
        assert_eq!((c.sni_routing, c.sni_bootstrap), (None, None));
        let sni = [
            "--sni-routing",
            "b-$(nodeId).k.test",
            "--sni-bootstrap",
            "k.test",
        ];
        let mut no_tls = vec!["--upstream", "a:1"];
        no_tls.extend_from_slice(&sni);
        assert!(parse(&no_tls).unwrap_err().contains("--tls-cert"));
        let mut tls = vec!["--upstream", "a:1", "--tls-cert", "c", "--tls-key", "k"];
        tls.extend_from_slice(&sni[..2]);
        assert!(parse(&tls).unwrap_err().contains("--sni-bootstrap"));
        tls.extend_from_slice(&sni[2..]);
        let c = parse(&tls).unwrap();
        assert_eq!(c.sni_routing.as_deref(), Some("b-$(nodeId).k.test"));
        assert_eq!(c.sni_advertised_port, None);
        let mut port = tls.clone();
        port.extend_from_slice(&["--sni-advertised-port", "443"]);
        assert_eq!(parse(&port).unwrap().sni_advertised_port, Some(443));
        port.extend_from_slice(&["--sni-advertised-port", "0"]);
        assert!(parse(&port).is_err(), "port 0 is no port");
        let without_sni = ["--upstream", "a:1", "--sni-advertised-port", "443"];
        assert!(parse(&without_sni).unwrap_err().contains("--sni-routing"));
    }

    #[test]
    fn the_dedup_store_is_off_by_default_and_its_url_is_checked() {
        let c = parse(&["--upstream", "a:1"]).unwrap();
        assert_eq!(c.dedup_store, None);
        assert_eq!(c.dedup_store_timeout(), Duration::from_millis(50));
        assert_eq!(c.key_dedup_on_store_error, OnStoreError::Forward);
        let c = parse(&[
            "--upstream",
            "a:1",
            "--dedup-store",
            "redis+cluster://r1:7000,r2:7000",
            "--key-dedup-on-store-error",
            "fail",
        ])
        .unwrap();
        assert_eq!(c.key_dedup_on_store_error, OnStoreError::Fail);
        let e = parse(&["--upstream", "a:1", "--dedup-store", "redis://r1"]).unwrap_err();
        assert!(e.starts_with("--dedup-store "), "{e}");
        let e = parse(&["--upstream", "a:1", "--dedup-store-timeout-ms", "0"]).unwrap_err();
        assert!(e.contains("--dedup-store-timeout-ms"), "{e}");
    }

    #[test]
    fn the_store_password_comes_from_a_file() {
        let dir = std::env::temp_dir().join(format!("kdp-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        let c = parse(&[
            "--upstream",
            "a:1",
            "--dedup-store",
            "redis://r:1",
            "--dedup-store-password-file",
            f.to_str().unwrap(),
        ])
        .unwrap();
        if std::env::var("KDP_DEDUP_STORE_PASSWORD").is_err() {
            assert_eq!(c.dedup_store_password().unwrap().as_deref(), Some("s3cret"));
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn worker_threads_default_to_the_runtime_and_are_checked() {
        assert_eq!(parse(&["--upstream", "a:1"]).unwrap().worker_threads, None);
        let c = parse(&["--upstream", "a:1", "--worker-threads", "1"]).unwrap();
        assert_eq!(c.worker_threads, Some(1));
        let e = parse(&["--upstream", "a:1", "--worker-threads", "0"]).unwrap_err();
        assert_eq!(e, "--worker-threads must be between 1 and 1024");
    }

    #[test]
    fn zero_window_is_refused() {
        assert!(parse(&["--upstream", "a:1", "--dedup-window", "0"]).is_err());
    }

    #[test]
    fn key_dedup_is_off_by_default_and_its_flags_are_checked() {
        let c = parse(&["--upstream", "a:1"]).unwrap();
        assert!(c.key_dedup_topics().is_empty());
        assert_eq!(c.key_dedup_source, "header:idempotency-key");
        let c = parse(&["--upstream", "a:1", "--key-dedup-topics", "orders-*, ,pay"]).unwrap();
        assert_eq!(c.key_dedup_topics(), vec!["orders-*", "pay"]);
        let e = parse(&["--upstream", "a:1", "--key-dedup-source", "value"]).unwrap_err();
        assert_eq!(
            e,
            "--key-dedup-source 'value': expected header:NAME, key or content"
        );
        assert!(parse(&["--upstream", "a:1", "--key-dedup-topics", "["]).is_err());
        let zero = [
            "--upstream",
            "a:1",
            "--key-dedup-topics",
            "t",
            "--key-dedup-max-keys",
            "0",
        ];
        assert!(parse(&zero).is_err());
    }

    #[test]
    fn a_rules_file_names_a_source_per_topic_before_the_flags() {
        let rules = parse_key_rules(
            r#"
            [[rule]]
            topics = ["orders-eu", "payments"]
            source = "content"

            [[rule]]
            topics = ["orders-*"]
            source = "header:order-id"
            "#,
        )
        .unwrap();
        let names: Vec<_> = rules.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(names, ["orders-eu", "payments", "orders-*"]);
        assert_eq!(rules[2].1, "header:order-id".parse().unwrap());
        let dir = std::env::temp_dir().join(format!("kdp-rules-{}", std::process::id()));
        std::fs::write(&dir, "[[rule]]\ntopics = [\"a\"]\nsource = \"key\"\n").unwrap();
        let path = dir.to_str().unwrap();
        let c = parse(&[
            "--upstream",
            "a:1",
            "--key-dedup-rules",
            path,
            "--key-dedup-topics",
            "b",
        ])
        .unwrap();
        let rules = c.key_dedup_rules().unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!((rules[0].0.as_str(), rules[1].0.as_str()), ("a", "b"));
        std::fs::remove_file(&dir).unwrap();
        for bad in [
            "[[rule]]\ntopics = []\nsource = \"key\"",
            "[[rule]]\ntopics = [\"a\"]\nsource = \"value\"",
            "[[rule]]\ntopics = [\"[\"]\nsource = \"key\"",
            "[[rule]]\ntopic = [\"a\"]\nsource = \"key\"",
        ] {
            assert!(parse_key_rules(bad).is_err(), "{bad}");
        }
        assert!(
            parse(&[
                "--upstream",
                "a:1",
                "--key-dedup-rules",
                "/nonexistent/rules.toml"
            ])
            .unwrap_err()
            .contains("/nonexistent/rules.toml")
        );
    }
}
