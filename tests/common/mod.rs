//! Shared support for the integration tests: one real Kafka cluster for
//! the whole run (started by `scripts/kafka`), in-process proxies on their
//! own ports (and the binary as a child process for tests that assert on a
//! proxy's own metrics or log: `child.rs`), the Java client harness and kcat as real clients, and a raw
//! Kafka connection that speaks through the independent `kafka-protocol`
//! crate (so the proxy is judged by code that is not its own codec).
#![allow(dead_code)]

pub mod child;
pub mod cluster_faults;
pub mod fault;
pub mod hostile;
pub mod keyed;
pub mod own_cluster;
pub mod proxy_process;
pub mod raw;
pub mod readings;
pub mod redis;
pub mod relay;
pub mod report;
pub mod security;
pub mod sni;
pub mod txn;
pub mod verifiable;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_dedup_proxy::config::Config;
use kafka_dedup_proxy::proxy::Proxy;
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Serialises tests that pause or kill brokers (write) against every other
/// test on the shared cluster (read).
pub fn cluster_lock() -> &'static tokio::sync::RwLock<()> {
    static LOCK: OnceLock<tokio::sync::RwLock<()>> = OnceLock::new();
    LOCK.get_or_init(|| tokio::sync::RwLock::new(()))
}

pub struct Cluster {
    pub bootstrap: String,
    pub broker_ports: Vec<u16>,
}

/// The shared 3-node cluster: started once (a running one is reused).
pub fn cluster() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        // SASL_SSL listeners and the authorizer unless the caller says
        // otherwise (tests/security_e2e.rs needs them).
        let security = std::env::var("KDP_KAFKA_SECURITY").unwrap_or_else(|_| "1".into());
        let status = std::process::Command::new(repo().join("scripts/kafka"))
            .args(["start", "--nodes", "3"])
            .env("KDP_KAFKA_SECURITY", security)
            .stdout(Stdio::null())
            .status()
            .expect("scripts/kafka start");
        assert!(
            status.success(),
            "the Kafka cluster did not start (see scripts/kafka logs)"
        );
        let out = std::process::Command::new(repo().join("scripts/kafka"))
            .arg("bootstrap")
            .output()
            .expect("scripts/kafka bootstrap");
        let bootstrap = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let broker_ports = bootstrap
            .split(',')
            .map(|a| a.rsplit_once(':').unwrap().1.parse().unwrap())
            .collect();
        Cluster {
            bootstrap,
            broker_ports,
        }
    })
}

/// Runs `scripts/kafka <args>` and returns stdout (panics with stderr on failure).
pub async fn kafka(args: &[&str]) -> String {
    let out = tokio::process::Command::new(repo().join("scripts/kafka"))
        .args(args)
        .output()
        .await
        .expect("scripts/kafka");
    assert!(
        out.status.success(),
        "scripts/kafka {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Runs the Java client harness and parses its one JSON line.
pub async fn harness(args: &[&str]) -> serde_json::Value {
    let mut full = vec!["run", "ClientHarness"];
    full.extend_from_slice(args);
    let out = kafka(&full).await;
    let line = out
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON from harness {args:?}: {out}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON from harness: {e}: {line}"))
}

pub async fn create_topic(topic: &str, partitions: u32) {
    let c = cluster();
    let p = partitions.to_string();
    harness(&[
        "create-topic",
        "--bootstrap",
        &c.bootstrap,
        "--topic",
        topic,
        "--partitions",
        &p,
        "--replication",
        "3",
    ])
    .await;
}

/// A port block per proxy: bootstrap at `base`, broker node N at base+N.
pub fn next_port_base() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    loop {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 41000 + (std::process::id() % 40) as u16 * 400 + (slot % 40) * 10;
        let free = (0..6).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok());
        if free {
            return base;
        }
    }
}

pub struct TestProxy {
    pub proxy: Proxy,
    pub bootstrap: String,
    pub port_base: u16,
}

impl TestProxy {
    pub fn broker_addr(&self, node_id: i32) -> String {
        format!("127.0.0.1:{}", self.port_base as i32 + 1 + node_id)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{}", self.proxy.metrics_addr(), path)
    }
}

/// Starts a proxy in this process in front of `upstream`, with `extra`
/// flags, and the process-wide metrics recorder.
pub async fn start_proxy_to(upstream: &str, extra: &[&str]) -> TestProxy {
    let base = next_port_base();
    let listen = format!("127.0.0.1:{base}");
    let broker_base = (base + 1).to_string();
    let mut args = vec![
        "kafka-dedup-proxy",
        "--upstream",
        upstream,
        "--listen",
        &listen,
        "--broker-port-base",
        &broker_base,
        "--metrics-listen",
        "127.0.0.1:0",
        "--advertised-host",
        "127.0.0.1",
    ];
    args.extend_from_slice(extra);
    let config = <Config as clap::Parser>::parse_from(args);
    config.validate().expect("valid test config");
    let handle = kafka_dedup_proxy::metrics::install_recorder();
    let proxy = Proxy::start(config, Some(handle))
        .await
        .unwrap_or_else(|e| panic!("proxy starts on port block {base}: {e}"));
    TestProxy {
        bootstrap: proxy.bootstrap_addr().to_string(),
        proxy,
        port_base: base,
    }
}

pub async fn start_proxy(extra: &[&str]) -> TestProxy {
    start_proxy_to(&cluster().bootstrap, extra).await
}

/// A raw Kafka connection; requests and responses are encoded and decoded
/// with the `kafka-protocol` crate.
pub struct RawConn {
    pub stream: TcpStream,
    next_corr: i32,
}

impl RawConn {
    pub async fn connect(addr: &str) -> RawConn {
        let stream = TcpStream::connect(addr)
            .await
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_nodelay(true).unwrap();
        RawConn {
            stream,
            next_corr: 1,
        }
    }

    /// Encodes a whole request frame.
    pub fn frame<R: Request>(corr: i32, version: i16, req: &R) -> Bytes {
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(corr)
            .with_client_id(Some(StrBytes::from_static_str("kdp-test")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .unwrap();
        req.encode(&mut body, version).unwrap();
        let mut out = BytesMut::with_capacity(body.len() + 4);
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        out.freeze()
    }

    /// Sends a request and returns its correlation id (for pipelining).
    pub async fn send<R: Request>(&mut self, version: i16, req: &R) -> i32 {
        let corr = self.next_corr;
        self.next_corr += 1;
        self.stream
            .write_all(&Self::frame(corr, version, req))
            .await
            .unwrap();
        corr
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Reads one response frame: (correlation id, body after the header).
    pub async fn recv_frame(&mut self, header_version: i16) -> std::io::Result<(i32, Bytes)> {
        let len = self.stream.read_i32().await? as usize;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await?;
        let mut b = Bytes::from(buf);
        let corr = b.get_i32();
        if header_version >= 1 {
            // Tagged fields: only empty ones are expected in responses here.
            let n = b.get_u8();
            assert_eq!(n, 0, "unexpected tagged fields in a response header");
        }
        Ok((corr, b))
    }

    pub async fn recv<R: Request>(&mut self, version: i16) -> (i32, R::Response) {
        let (corr, mut body) = self
            .recv_frame(<R::Response as HeaderVersion>::header_version(version))
            .await
            .expect("response");
        let resp = R::Response::decode(&mut body, version).expect("decodable response");
        (corr, resp)
    }

    pub async fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let corr = self.send(version, req).await;
        let (got, resp) = self.recv::<R>(version).await;
        assert_eq!(got, corr, "correlation id");
        resp
    }

    /// True when the peer closed the connection within `within`.
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut buf = [0u8; 1024];
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }
}

/// The max version the proxy advertises for `api_key` (ApiVersions v2
/// through `addr`), so tests only use versions the cluster speaks.
pub async fn advertised_max(addr: &str, api_key: i16) -> i16 {
    let mut conn = RawConn::connect(addr).await;
    let resp = conn
        .call(2, &kafka_protocol::messages::ApiVersionsRequest::default())
        .await;
    resp.api_keys
        .iter()
        .find(|a| a.api_key == api_key)
        .map_or(-1, |a| a.max_version)
}

/// Fetches a URL from the proxy's HTTP server: (status, body).
pub async fn http_get(url: &str) -> (u16, String) {
    try_http_get(url)
        .await
        .unwrap_or_else(|| panic!("GET {url}: no HTTP answer"))
}

/// GET `url` (http://host:port/path): (status, body), or None when the
/// server does not answer.
pub async fn try_http_get(url: &str) -> Option<(u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (addr, path) = rest.split_once('/').map(|(a, p)| (a, format!("/{p}")))?;
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let status = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out
        .split_once("\r\n\r\n")
        .map(|x| x.1.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// Sum of a counter's samples whose label set contains `label` ("" for all).
pub fn metric_sum(exposition: &str, name: &str, label: &str) -> f64 {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.starts_with(name)
                && (l[name.len()..].starts_with('{') || l[name.len()..].starts_with(' '))
        })
        .filter(|l| label.is_empty() || l.contains(label))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}
