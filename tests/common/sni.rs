//! SNI routing from the client's side: the names of the test pattern, a
//! proxy with SNI routing on, a raw TLS Kafka connection that names the
//! broker it wants, and the names resolved to 127.0.0.1 for real clients
//! (a hosts file for the JVM's `-Djdk.net.hosts.file` and for kcat's own
//! /etc/hosts).

use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use kafka_protocol::messages::{MetadataRequest, MetadataResponse, ProduceResponse};
use kafka_protocol::protocol::{Decodable, HeaderVersion, Request};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::child::ChildProxy;
use super::raw::batch;
use super::security::TestCa;
use super::verifiable::produce_request;
use super::{RawConn, repo};

pub const PATTERN: &str = "broker-$(nodeId).kafka.test";
pub const BOOTSTRAP_NAME: &str = "bootstrap.kafka.test";
pub const PRODUCE_VERSION: i16 = 9;
pub const METADATA_VERSION: i16 = 9;
pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// FindCoordinator v4 (batched keys) and DescribeCluster v0: both in
/// every 3.x/4.x broker.
pub const FIND_COORDINATOR_VERSION: i16 = 4;
pub const DESCRIBE_CLUSTER_VERSION: i16 = 0;

pub fn broker_name(node_id: i32) -> String {
    format!("broker-{node_id}.kafka.test")
}

/// A proxy of its own (exact counters) in front of the shared cluster with
/// SNI routing and a wildcard certificate for `*.kafka.test` from `ca`.
pub async fn sni_proxy(ca: &TestCa) -> ChildProxy {
    sni_proxy_to(&super::cluster().bootstrap, ca).await
}

/// The same in front of `upstream`.
pub async fn sni_proxy_to(upstream: &str, ca: &TestCa) -> ChildProxy {
    sni_proxy_with(upstream, ca, &[]).await
}

/// The same with `extra` flags.
pub async fn sni_proxy_with(upstream: &str, ca: &TestCa, extra: &[&str]) -> ChildProxy {
    let (cert, key) = ca.issue("sni-proxy", "DNS:*.kafka.test");
    let mut args = vec![
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--sni-routing",
        PATTERN,
        "--sni-bootstrap",
        BOOTSTRAP_NAME,
    ];
    args.extend_from_slice(extra);
    ChildProxy::start_to(upstream, &args).await
}

/// A Kafka connection over TLS to `addr` with `sni` as the server name,
/// trusting only `ca`.
pub struct TlsConn {
    pub stream: TlsStream<TcpStream>,
    next_corr: i32,
}

impl TlsConn {
    pub async fn connect(addr: &str, sni: &str, ca: &Path) -> Result<TlsConn, String> {
        Self::connect_as(addr, sni, ca, None).await
    }

    /// The same, presenting the client certificate `client` (chain, key).
    pub async fn connect_as(
        addr: &str,
        sni: &str,
        ca: &Path,
        client: Option<(&Path, &Path)>,
    ) -> Result<TlsConn, String> {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_file_iter(ca).unwrap() {
            roots.add(c.unwrap()).unwrap();
        }
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
        let config = match client {
            None => config.with_no_client_auth(),
            Some((chain, key)) => config
                .with_client_auth_cert(
                    CertificateDer::pem_file_iter(chain)
                        .unwrap()
                        .map(Result::unwrap)
                        .collect(),
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
        };
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        Ok(TlsConn {
            stream,
            next_corr: 1,
        })
    }

    pub async fn call<R: Request>(&mut self, version: i16, req: &R) -> R::Response {
        let corr = self.next_corr;
        self.next_corr += 1;
        self.stream
            .write_all(&RawConn::frame(corr, version, req))
            .await
            .unwrap();
        let len = self.stream.read_i32().await.expect("a response") as usize;
        let mut buf = vec![0u8; len];
        self.stream.read_exact(&mut buf).await.unwrap();
        let mut body = Bytes::from(buf);
        assert_eq!(body.get_i32(), corr, "correlation id");
        if <R::Response as HeaderVersion>::header_version(version) >= 1 {
            assert_eq!(body.get_u8(), 0, "no tagged fields in the response header");
        }
        R::Response::decode(&mut body, version).expect("decodable response")
    }
}

/// Metadata of `topic` (and every broker) through `conn`.
pub async fn metadata(conn: &mut TlsConn, topic: &str) -> MetadataResponse {
    let req = MetadataRequest::default().with_topics(Some(vec![
        kafka_protocol::messages::metadata_request::MetadataRequestTopic::default().with_name(
            Some(kafka_protocol::messages::TopicName(
                kafka_protocol::protocol::StrBytes::from_string(topic.to_string()),
            )),
        ),
    ]));
    conn.call(METADATA_VERSION, &req).await
}

pub async fn produce_one(conn: &mut TlsConn, topic: &str, tag: &str) -> (i16, i64) {
    let req = produce_request(None, topic, 0, batch(-1, -1, -1, 1, tag, false));
    let resp: ProduceResponse = conn.call(PRODUCE_VERSION, &req).await;
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

/// A hosts file in `dir` that resolves the bootstrap name and the names of
/// brokers 0..9 to 127.0.0.1, and nothing else.
pub fn sni_hosts_file(dir: &Path) -> std::path::PathBuf {
    let hosts = dir.join("hosts");
    let names: Vec<String> = (0..10).map(broker_name).collect();
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1 localhost\n127.0.0.1 {BOOTSTRAP_NAME} {}\n",
            names.join(" ")
        ),
    )
    .unwrap();
    hosts
}

/// KDP_JAVA_OPTS for a JVM that resolves names with `hosts` only.
pub fn java_opts_with_hosts(hosts: &Path) -> String {
    format!(
        "{} -Djdk.net.hosts.file={}",
        std::env::var("KDP_JAVA_OPTS").unwrap_or_default(),
        hosts.display()
    )
}

/// The client settings of a Java client that trusts `ca` (PEM) over TLS.
pub fn java_tls_settings(ca: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("security.protocol", "SSL".to_string()),
        ("ssl.truststore.type", "PEM".to_string()),
        ("ssl.truststore.location", ca.display().to_string()),
    ]
}

/// Runs the Java client harness with the SNI names resolved to 127.0.0.1.
pub async fn harness_with_hosts(args: &[&str], hosts: &Path) -> (bool, serde_json::Value, String) {
    let opts = java_opts_with_hosts(hosts);
    let out = tokio::process::Command::new(repo().join("scripts/kafka"))
        .args(["run", "ClientHarness"])
        .args(args)
        .env("KDP_JAVA_OPTS", opts)
        .output()
        .await
        .expect("scripts/kafka run ClientHarness");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(serde_json::Value::Null);
    (
        out.status.success(),
        json,
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The Java client through the SNI names of `hosts`: `count` idempotent
/// records produced to `topic`, then read back by a consumer, each once.
/// `extra` carries the client's TLS (and SASL) settings.
pub async fn java_produce_and_consume_through_sni(
    bootstrap: &str,
    topic: &str,
    count: u32,
    extra: &[&str],
    hosts: &Path,
    what: &str,
) {
    let n = count.to_string();
    let mut args = vec![
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--count",
        &n,
        "--idempotence",
        "true",
        "--linger-ms",
        "5",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = harness_with_hosts(&args, hosts).await;
    assert!(ok, "{what} producer through one SNI port: {out} {err}");
    assert_eq!(out["acked"], count, "{out}");

    let mut args = vec![
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--expect",
        &n,
        "--timeout-ms",
        "30000",
        "--no-records",
    ];
    args.extend_from_slice(extra);
    let (ok, out, err) = harness_with_hosts(&args, hosts).await;
    assert!(ok, "{what} consumer through one SNI port: {out} {err}");
    assert_eq!(out["count"], count, "{out}");
    assert_eq!(out["duplicates"], 0, "{out}");
}
