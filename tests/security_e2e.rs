//! TLS and SASL against the shared cluster's SASL_SSL listeners
//! (scripts/kafka with KDP_KAFKA_SECURITY=1: PLAIN and SCRAM users, the
//! StandardAuthorizer): real clients through a proxy that terminates TLS
//! and speaks TLS to the brokers, the broker's refusals reaching the
//! client, and a dedup cache that never answers one principal with
//! another one's batch.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::child::ChildProxy;
use common::security::*;
use common::verifiable::produce_request;
use common::*;
use kafka_protocol::messages::{
    ApiVersionsRequest, InitProducerIdRequest, MetadataRequest, ProduceResponse,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const PRODUCE_VERSION: i16 = 9;
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

fn first_partition(r: &ProduceResponse) -> (i16, i64) {
    let p = &r.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client handshake with the proxy, trusting only `ca`; the
/// certificate the proxy presented.
async fn proxy_certificate(addr: &str, ca: &Path) -> Result<CertificateDer<'static>, String> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    Ok(tls.get_ref().1.peer_certificates().unwrap()[0].clone())
}

fn pem_cert(path: &Path) -> CertificateDer<'static> {
    CertificateDer::from_pem_file(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_idempotent_producer_over_sasl_ssl_scram_through_a_tls_proxy_delivers_exactly_once() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("proxy-ca-java");
    let (cert, key) = ca.issue("proxy", "IP:127.0.0.1");
    let p = start_sasl_proxy(Some((&cert, &key)), &[]).await;
    let topic = unique("sec-java");
    create_topic(&topic, 3).await;

    let (ok, out, err) = harness_outcome(
        &[
            "produce",
            "--bootstrap",
            &p.bootstrap,
            "--topic",
            &topic,
            "--count",
            "300",
            "--idempotence",
            "true",
            "--linger-ms",
            "5",
        ],
        &java_scram("SCRAM-SHA-512", "alice", "alice-secret", &ca.cert()),
    )
    .await;
    assert!(ok, "SCRAM-SHA-512 producer through the proxy: {out} {err}");
    assert_eq!(out["acked"], 300, "{out}");

    // Read back with the other SCRAM mechanism, through the same proxy.
    let (ok, out, err) = harness_outcome(
        &[
            "consume",
            "--bootstrap",
            &p.bootstrap,
            "--topic",
            &topic,
            "--from-beginning",
            "--expect",
            "300",
            "--timeout-ms",
            "30000",
            "--no-records",
        ],
        &java_scram("SCRAM-SHA-256", "bob", "bob-secret", &ca.cert()),
    )
    .await;
    assert!(ok, "SCRAM-SHA-256 consumer through the proxy: {out} {err}");
    assert_eq!(out["count"], 300, "{out}");
    assert_eq!(out["duplicates"], 0, "{out}");
}

/// librdkafka over SASL_SSL through the TLS proxy. PLAIN: the kcat of the
/// test machines (librdkafka 2.0.2) fails SCRAM against the 4.x brokers
/// even without the proxy in between; SCRAM is covered by the Java client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kcat_over_sasl_ssl_through_a_tls_proxy_produces_and_consumes() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("proxy-ca-kcat");
    let (cert, key) = ca.issue("proxy", "IP:127.0.0.1");
    let p = start_sasl_proxy(Some((&cert, &key)), &[]).await;
    let topic = unique("sec-kcat");
    create_topic(&topic, 1).await;
    let ca_file = ca.cert().to_str().unwrap().to_string();
    let security = [
        "-X",
        "security.protocol=SASL_SSL",
        "-X",
        "sasl.mechanisms=PLAIN",
        "-X",
        "sasl.username=bob",
        "-X",
        "sasl.password=bob-secret",
        "-X",
        &format!("ssl.ca.location={ca_file}"),
    ];
    let mut producer = tokio::process::Command::new("kcat")
        .args(["-b", &p.bootstrap, "-P", "-t", &topic, "-X", "acks=all"])
        .args(security)
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat");
    let lines: String = (0..25).map(|i| format!("kcat-{i}\n")).collect();
    let mut stdin = producer.stdin.take().unwrap();
    stdin.write_all(lines.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), producer.wait_with_output())
        .await
        .expect("kcat producer finishes")
        .unwrap();
    assert!(
        out.status.success(),
        "kcat producer: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("kcat")
            .args([
                "-b",
                &p.bootstrap,
                "-C",
                "-t",
                &topic,
                "-o",
                "beginning",
                "-e",
                "-q",
            ])
            .args(security)
            .output(),
    )
    .await
    .expect("kcat consumer finishes")
    .unwrap();
    let got: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    let want: Vec<String> = (0..25).map(|i| format!("kcat-{i}")).collect();
    assert_eq!(got, want, "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_refused_by_the_broker_and_the_refusal_reaches_the_client() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("proxy-ca-wrong");
    let (cert, key) = ca.issue("proxy", "IP:127.0.0.1");

    // A raw client on a plain proxy listener: the broker's SaslAuthenticate
    // error comes back as the broker sent it.
    let plain = start_sasl_proxy(None, &[]).await;
    let mut conn = RawConn::connect(&plain.bootstrap).await;
    let (code, message) = sasl_plain(&mut conn, "alice", "not-her-password").await;
    assert_eq!(code, SASL_AUTHENTICATION_FAILED, "{message:?}");
    assert!(
        message
            .as_deref()
            .is_some_and(|m| m.contains("Authentication failed")),
        "{message:?}"
    );

    // The Java client with SCRAM-SHA-512 through the TLS listener.
    let p = start_sasl_proxy(Some((&cert, &key)), &[]).await;
    let (ok, out, err) = harness_outcome(
        &["cluster", "--bootstrap", &p.bootstrap, "--nodes-only"],
        &java_scram("SCRAM-SHA-512", "alice", "not-her-password", &ca.cert()),
    )
    .await;
    assert!(!ok, "a wrong password must not get in: {out}");
    let error = out["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("Authentication failed") || error.contains("SaslAuthentication"),
        "the client is told why: {out} {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_client_on_the_tls_listener_is_closed_and_other_connections_carry_on() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("proxy-ca-plain");
    let (cert, key) = ca.issue("proxy", "IP:127.0.0.1");
    // TLS for clients only; plaintext to the brokers.
    let cert_s = cert.to_str().unwrap();
    let key_s = key.to_str().unwrap();
    // A proxy process of its own: its counters move with this test only.
    let p = ChildProxy::start(&["--tls-cert", cert_s, "--tls-key", key_s]).await;
    let before = p
        .metric("kdp_frame_errors_total", "kind=\"tls_handshake\"")
        .await;

    // A TLS client opened first stays usable through what follows.
    let tls_first = proxy_certificate(&p.bootstrap, &ca.cert()).await;
    assert!(tls_first.is_ok(), "{tls_first:?}");

    let mut plain = RawConn::connect(&p.bootstrap).await;
    plain.send(2, &ApiVersionsRequest::default()).await;
    assert!(
        plain.closed_within(Duration::from_secs(15)).await,
        "a plaintext request on the TLS listener closes the connection"
    );
    // Garbage that looks like nothing at all.
    let mut garbage = RawConn::connect(&p.bootstrap).await;
    let _ = garbage
        .send_raw(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await;
    let _ = garbage.stream.shutdown().await;
    assert!(garbage.closed_within(Duration::from_secs(15)).await);

    let after = p
        .metric("kdp_frame_errors_total", "kind=\"tls_handshake\"")
        .await;
    assert_eq!(
        after - before,
        2.0,
        "both failed handshakes are counted ({before} -> {after})"
    );

    // Real TLS clients are unaffected: the Java client over SSL.
    let topic = unique("sec-after-plain");
    create_topic(&topic, 1).await;
    let trust = format!("ssl.truststore.location={}", ca.cert().display());
    let (ok, out, err) = harness_outcome(
        &[
            "produce",
            "--bootstrap",
            &p.bootstrap,
            "--topic",
            &topic,
            "--count",
            "20",
            "--extra",
            "security.protocol=SSL",
            "--extra",
            "ssl.truststore.type=PEM",
            "--extra",
            &trust,
        ],
        &[],
    )
    .await;
    assert!(ok, "{out} {err}");
    assert_eq!(out["acked"], 20, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_principal_replaying_a_batch_gets_the_brokers_refusal_not_a_synthetic_success() {
    // Pauses the leader at the end: no other test of this binary may run.
    let _g = cluster_lock().write().await;
    let topic = unique("sec-scope");
    create_topic(&topic, 1).await;
    let plain = &cluster().bootstrap;
    harness(&[
        "acl-allow",
        "--bootstrap",
        plain,
        "--topic",
        &topic,
        "--principal",
        "User:alice",
        "--operation",
        "WRITE",
    ])
    .await;
    let leader = verifiable::leader_of(&topic, 0).await;
    let p = start_sasl_proxy(None, &[]).await;

    // The SASL listener takes no Metadata from the proxy's own probe:
    // broker listeners open with the first client Metadata response.
    let mut boot = RawConn::connect(&p.bootstrap).await;
    assert_eq!(sasl_plain(&mut boot, "alice", "alice-secret").await.0, 0);
    boot.call(1, &MetadataRequest::default().with_topics(None))
        .await;

    let mut alice = RawConn::connect(&p.broker_addr(leader)).await;
    assert_eq!(sasl_plain(&mut alice, "alice", "alice-secret").await.0, 0);
    let mut bob = RawConn::connect(&p.broker_addr(leader)).await;
    assert_eq!(sasl_plain(&mut bob, "bob", "bob-secret").await.0, 0);

    // The ACL is in force once bob is refused a batch of his own.
    let mut refused = false;
    for i in 0..40 {
        let b = verifiable::batch(-1, -1, -1, 1, &format!("bob-own-{i}"), false);
        let r = bob
            .call(PRODUCE_VERSION, &produce_request(None, &topic, 0, b))
            .await;
        if first_partition(&r).0 == TOPIC_AUTHORIZATION_FAILED {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(refused, "the broker enforces alice's ACL");

    // Retriable while the cluster settles: COORDINATOR_LOAD_IN_PROGRESS,
    // NOT_COORDINATOR, timeouts.
    let mut init = None;
    for _ in 0..60 {
        let r = alice
            .call(
                1,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_transaction_timeout_ms(i32::MAX),
            )
            .await;
        match r.error_code {
            0 => {
                init = Some(r);
                break;
            }
            7 | 14 | 15 | 16 => tokio::time::sleep(Duration::from_millis(500)).await,
            e => panic!("InitProducerId failed with error {e}"),
        }
    }
    let init = init.expect("InitProducerId kept failing");
    let b = verifiable::batch(
        init.producer_id.0,
        init.producer_epoch,
        0,
        4,
        "alice",
        false,
    );
    let (code, offset) = first_partition(
        &alice
            .call(
                PRODUCE_VERSION,
                &produce_request(None, &topic, 0, b.clone()),
            )
            .await,
    );
    assert_eq!(code, 0, "alice may write");

    // Bob replays alice's batch byte for byte: the broker decides.
    let (code, _) = first_partition(
        &bob.call(
            PRODUCE_VERSION,
            &produce_request(None, &topic, 0, b.clone()),
        )
        .await,
    );
    assert_eq!(
        code, TOPIC_AUTHORIZATION_FAILED,
        "bob gets the broker's refusal, not alice's offset"
    );

    {
        let _paused = verifiable::PausedBroker::pause(leader).await;
        // Alice's own retry (on her authenticated connection: a new one
        // could not authenticate at a paused broker) is answered by the
        // proxy alone.
        let answered = tokio::time::timeout(
            Duration::from_secs(5),
            alice.call(
                PRODUCE_VERSION,
                &produce_request(None, &topic, 0, b.clone()),
            ),
        )
        .await
        .expect("the proxy answers alice's committed duplicate without the broker");
        assert_eq!(first_partition(&answered), (0, offset));

        // Bob's replay is not answered from alice's entry: it waits for
        // the (paused) broker.
        let bob_again = tokio::time::timeout(
            Duration::from_secs(3),
            bob.call(
                PRODUCE_VERSION,
                &produce_request(None, &topic, 0, b.clone()),
            ),
        )
        .await;
        assert!(
            bob_again.is_err(),
            "bob's replay must go to the broker, got {:?}",
            bob_again.map(|r| first_partition(&r))
        );
    }
}

/// How long the proxy may take to notice changed certificate files (it
/// polls them every second here).
const RELOAD_SEEN: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_served_to_new_connections() {
    let _g = cluster_lock().read().await;
    let old_ca = TestCa::new("proxy-ca-old");
    let new_ca = TestCa::new("proxy-ca-new");
    let (old_cert, old_key) = old_ca.issue("proxy", "IP:127.0.0.1");
    let (new_cert, new_key) = new_ca.issue("proxy", "IP:127.0.0.1");
    let dir = std::env::temp_dir().join(unique("kdp-reload"));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = dir.join("tls.crt");
    let key = dir.join("tls.key");
    std::fs::copy(&old_cert, &cert).unwrap();
    std::fs::copy(&old_key, &key).unwrap();
    // A proxy process of its own, whose log tells when it re-read the files.
    let p = ChildProxy::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-reload-interval-seconds",
        "1",
    ])
    .await;
    assert_eq!(
        proxy_certificate(&p.bootstrap, &old_ca.cert())
            .await
            .unwrap(),
        pem_cert(&old_cert)
    );

    // A half-written pair (new certificate, old key) does not load: the
    // old certificate stays.
    std::fs::copy(&new_cert, &cert).unwrap();
    assert!(
        p.wait_log(
            "do not load; still serving the previous certificate",
            RELOAD_SEEN
        )
        .await,
        "the proxy re-read the half-written pair and refused it:\n{}",
        p.log()
    );
    assert_eq!(
        proxy_certificate(&p.bootstrap, &old_ca.cert())
            .await
            .unwrap(),
        pem_cert(&old_cert),
        "a certificate without its key is not served"
    );

    std::fs::copy(&new_key, &key).unwrap();
    assert!(
        p.wait_log("TLS certificate reloaded", RELOAD_SEEN).await,
        "the proxy loaded the complete pair:\n{}",
        p.log()
    );
    assert_eq!(
        proxy_certificate(&p.bootstrap, &new_ca.cert())
            .await
            .expect("the renewed certificate is served"),
        pem_cert(&new_cert)
    );
    assert!(
        proxy_certificate(&p.bootstrap, &old_ca.cert())
            .await
            .is_err(),
        "the old certificate is no longer served"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A TLS server that records whether its handshakes succeed.
async fn tls_server(cert: &Path, key: &Path) -> (String, tokio::sync::mpsc::Receiver<bool>) {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let ok = acceptor.accept(s).await.is_ok();
            if tx.send(ok).await.is_err() {
                return;
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_certificate_for_another_name_is_refused_unless_the_name_is_given() {
    let ca = TestCa::new("upstream-ca");
    let (cert, key) = ca.issue("other", "DNS:kafka.other.example");
    let (addr, mut handshakes) = tls_server(&cert, &key).await;
    let ca_s = ca.cert().to_str().unwrap().to_string();

    // Host name verification is on by default: the proxy dials 127.0.0.1,
    // the certificate names kafka.other.example.
    let p = start_proxy_to(&addr, &["--upstream-tls", "--upstream-tls-ca", &ca_s]).await;
    assert_eq!(
        handshakes.recv().await,
        Some(false),
        "the start-up probe refuses the broker's certificate"
    );
    let mut conn = RawConn::connect(&p.bootstrap).await;
    conn.send(2, &ApiVersionsRequest::default()).await;
    assert!(
        conn.closed_within(Duration::from_secs(15)).await,
        "the client connection is closed when the upstream is refused"
    );
    assert_eq!(handshakes.recv().await, Some(false));

    // The same server passes when the expected name is configured.
    let _p2 = start_proxy_to(
        &addr,
        &[
            "--upstream-tls",
            "--upstream-tls-ca",
            &ca_s,
            "--upstream-tls-server-name",
            "kafka.other.example",
        ],
    )
    .await;
    assert_eq!(
        handshakes.recv().await,
        Some(true),
        "with the certificate's name the handshake completes"
    );
}

#[tokio::test]
async fn unreadable_certificate_files_stop_the_start_with_a_clear_error() {
    let ca = TestCa::new("bad-files");
    let (cert, key) = ca.issue("proxy", "IP:127.0.0.1");
    let missing = ca.dir.join("missing.pem");
    let config = |args: &[&str]| {
        let mut v = vec![
            "kafka-dedup-proxy",
            "--upstream",
            "127.0.0.1:9",
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ];
        v.extend_from_slice(args);
        <kafka_dedup_proxy::config::Config as clap::Parser>::parse_from(v)
    };
    let err = kafka_dedup_proxy::proxy::Proxy::start(
        config(&[
            "--tls-cert",
            missing.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ]),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("--tls-cert ") && err.contains("missing.pem"),
        "{err}"
    );

    // A key that is not the certificate's.
    let (_, other_key) = ca.issue("other", "IP:127.0.0.1");
    let err = kafka_dedup_proxy::proxy::Proxy::start(
        config(&[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            other_key.to_str().unwrap(),
        ]),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("--tls-key") || err.contains("pair"), "{err}");

    let err = kafka_dedup_proxy::proxy::Proxy::start(
        config(&["--upstream-tls", "--upstream-tls-ca", key.to_str().unwrap()]),
        None,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("--upstream-tls-ca "), "{err}");
}
