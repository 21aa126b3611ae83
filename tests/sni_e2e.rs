//! SNI routing against the shared 3-node cluster: one TLS port for the
//! whole cluster. A raw TLS client names a broker in its SNI and reaches
//! that broker; Metadata, FindCoordinator and DescribeCluster name only SNI
//! addresses on the one port; wrong
//! names and unknown node ids are refused and counted; the Java client
//! produces and consumes exactly once through the single port, resolving
//! the SNI names to 127.0.0.1 with `-Djdk.net.hosts.file`.
//!
//! librdkafka (kcat) does the same through the one port, with the names
//! resolved by an `/etc/hosts` of its own: kcat runs in a private mount
//! namespace (`unshare -m`, root) where a hosts file naming only the SNI
//! names is bind-mounted over /etc/hosts.
//!
//! The same through a proxy in front of the SASL_SSL listeners (SCRAM,
//! TLS to the brokers), and client certificates required after routing.

mod common;

use std::path::Path;
use std::time::Duration;

use common::child::ChildProxy;
use common::security::{TestCa, java_scram, start_sasl_proxy};
use common::sni::*;
use common::*;
use kafka_protocol::messages::{DescribeClusterRequest, FindCoordinatorRequest};
use kafka_protocol::protocol::StrBytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_names_the_broker_a_tls_client_reaches_through_the_one_port() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-raw");
    let p = sni_proxy(&ca).await;
    let port: i32 = p.bootstrap.rsplit_once(':').unwrap().1.parse().unwrap();
    let topic = unique("sni-raw");
    create_topic(&topic, 1).await;

    // Bootstrap by name: Metadata names every broker by its SNI name, on
    // the bootstrap port, and nothing else.
    let mut boot = TlsConn::connect(&p.bootstrap, BOOTSTRAP_NAME, &ca.cert())
        .await
        .expect("the bootstrap name is served");
    let md = metadata(&mut boot, &topic).await;
    assert_eq!(md.brokers.len(), 3, "{md:?}");
    for b in &md.brokers {
        assert_eq!(b.host.to_string(), broker_name(b.node_id.0), "{md:?}");
        assert_eq!(b.port, port, "every broker on the one port: {md:?}");
    }
    let leader = md.topics[0].partitions[0].leader_id.0;
    assert!(leader >= 0, "{md:?}");

    // FindCoordinator and DescribeCluster name SNI addresses too.
    let group = unique("sni-group");
    let mut coordinator = None;
    for _ in 0..30 {
        let req = FindCoordinatorRequest::default()
            .with_key_type(0)
            .with_coordinator_keys(vec![StrBytes::from_string(group.clone())]);
        let resp = boot.call(FIND_COORDINATOR_VERSION, &req).await;
        let c = resp.coordinators[0].clone();
        if c.error_code != COORDINATOR_NOT_AVAILABLE {
            coordinator = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let c = coordinator.expect("a group coordinator");
    assert_eq!(c.error_code, 0, "{c:?}");
    assert_eq!(
        (c.host.to_string(), c.port),
        (broker_name(c.node_id.0), port)
    );
    let dc = boot
        .call(DESCRIBE_CLUSTER_VERSION, &DescribeClusterRequest::default())
        .await;
    assert_eq!(dc.error_code, 0);
    assert_eq!(dc.brokers.len(), 3, "{dc:?}");
    for b in &dc.brokers {
        assert_eq!(
            (b.host.to_string(), b.port),
            (broker_name(b.broker_id.0), port)
        );
    }

    // The leader's name reaches the leader: a Produce is accepted there.
    let mut to_leader = TlsConn::connect(&p.bootstrap, &broker_name(leader), &ca.cert())
        .await
        .expect("the leader's name is served");
    let (err, offset) = produce_one(&mut to_leader, &topic, "via-leader").await;
    assert_eq!((err, offset), (0, 0), "the leader appends the first record");
    // Metadata on a broker connection names SNI addresses too.
    let md = metadata(&mut to_leader, &topic).await;
    assert!(
        md.brokers
            .iter()
            .all(|b| b.port == port && b.host.to_string() == broker_name(b.node_id.0))
    );

    // Another broker's name reaches that broker, not the leader: it
    // refuses the Produce as a follower would.
    let follower = md
        .brokers
        .iter()
        .map(|b| b.node_id.0)
        .find(|&id| id != leader)
        .unwrap();
    let mut to_follower = TlsConn::connect(&p.bootstrap, &broker_name(follower), &ca.cert())
        .await
        .expect("a follower's name is served");
    let (err, _) = produce_one(&mut to_follower, &topic, "via-follower").await;
    assert_eq!(
        err, NOT_LEADER_OR_FOLLOWER,
        "broker {follower} is not the leader"
    );

    // The per-broker ports keep accepting beside the one port, and
    // advertise the SNI addresses as well.
    let mut per_port = TlsConn::connect(&p.broker_addr(leader), "127.0.0.1", &ca.cert()).await;
    assert!(
        per_port.is_err(),
        "the wildcard certificate does not cover 127.0.0.1"
    );
    per_port = TlsConn::connect(&p.broker_addr(leader), &broker_name(leader), &ca.cert()).await;
    let (err, offset) = produce_one(per_port.as_mut().unwrap(), &topic, "per-port").await;
    assert_eq!((err, offset), (0, 1));
    assert_eq!(
        p.metric("kdp_frame_errors_total", "kind=\"sni\"").await,
        0.0
    );
}

/// Behind a load balancer, Ingress or Gateway passing TLS through on
/// another port (443), clients must be told that port, not the proxy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_port_replaces_the_listener_port_in_every_sni_address() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-port");
    let p = sni_proxy_with(&cluster().bootstrap, &ca, &["--sni-advertised-port", "443"]).await;
    let topic = unique("sni-port");
    create_topic(&topic, 1).await;
    let mut boot = TlsConn::connect(&p.bootstrap, BOOTSTRAP_NAME, &ca.cert())
        .await
        .expect("the bootstrap name is served on the proxy's own port");
    let md = metadata(&mut boot, &topic).await;
    assert_eq!(md.brokers.len(), 3, "{md:?}");
    for b in &md.brokers {
        assert_eq!(
            (b.host.to_string(), b.port),
            (broker_name(b.node_id.0), 443),
            "{md:?}"
        );
    }
    let dc = boot
        .call(DESCRIBE_CLUSTER_VERSION, &DescribeClusterRequest::default())
        .await;
    assert_eq!(dc.brokers.len(), 3, "{dc:?}");
    for b in &dc.brokers {
        assert_eq!(
            (b.host.to_string(), b.port),
            (broker_name(b.broker_id.0), 443)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_matches_nothing_or_an_unknown_node_is_refused_and_counted() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-wrong");
    let p = sni_proxy(&ca).await;

    for wrong in [
        "evil.kafka.test",
        "broker-x.kafka.test",
        "broker-1.other.test",
    ] {
        let r = TlsConn::connect(&p.bootstrap, wrong, &ca.cert()).await;
        let e = r.err().unwrap_or_else(|| panic!("{wrong} is refused"));
        assert!(
            e.contains("received fatal alert"),
            "{wrong}: a TLS alert, got {e}"
        );
    }
    assert!(
        p.wait_log("matches neither the bootstrap name", Duration::from_secs(5))
            .await,
        "{}",
        p.log()
    );
    // A node id the cluster does not have: refused after one refresh.
    let r = TlsConn::connect(&p.bootstrap, &broker_name(99), &ca.cert()).await;
    let e = r.err().expect("node 99 is refused");
    assert!(e.contains("received fatal alert"), "a TLS alert, got {e}");
    assert!(
        p.wait_log(
            "names broker 99, which the cluster does not have",
            Duration::from_secs(10)
        )
        .await,
        "{}",
        p.log()
    );
    let refused = p
        .wait_metric(
            "kdp_frame_errors_total",
            "kind=\"sni\"",
            Duration::from_secs(5),
            |v| v >= 4.0,
        )
        .await;
    assert_eq!(refused, 4.0, "every refusal is counted once");
    assert_eq!(
        p.metric("kdp_frame_errors_total", "side=\"client\",kind=\"sni\"")
            .await,
        4.0
    );
    // The port still serves the names it knows.
    let ok = TlsConn::connect(&p.bootstrap, BOOTSTRAP_NAME, &ca.cert()).await;
    assert!(ok.is_ok(), "{:?}", ok.err());
}

/// Runs kcat with `args` in a private mount namespace where `hosts` is
/// /etc/hosts (the rest of the machine keeps its own), feeding it `input`.
/// Returns (exit status success, stdout, stderr).
async fn kcat_with_hosts(hosts: &Path, args: &[&str], input: &str) -> (bool, String, String) {
    let mut child = tokio::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/hosts && exec kcat "$@""#)
        .arg(hosts)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("unshare (util-linux) runs kcat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .expect("kcat finishes within 120 s")
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_produces_and_consumes_exactly_once_through_one_sni_port() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-kcat");
    let p = sni_proxy(&ca).await;
    let port = p.bootstrap.rsplit_once(':').unwrap().1;
    let topic = unique("sni-kcat");
    create_topic(&topic, 3).await;
    let hosts = sni_hosts_file(&ca.dir);
    let bootstrap = format!("{BOOTSTRAP_NAME}:{port}");
    let ca_file = ca.cert();
    let ca_opt = format!("ssl.ca.location={}", ca_file.display());
    // librdkafka 2.x checks the broker's name against the certificate
    // (ssl.endpoint.identification.algorithm=https by default): said here
    // so an older default cannot weaken the test.
    let tls = [
        "-X",
        "security.protocol=ssl",
        "-X",
        &ca_opt,
        "-X",
        "ssl.endpoint.identification.algorithm=https",
    ];

    // The names resolve only inside kcat's namespace.
    assert!(
        tokio::net::lookup_host(format!("{BOOTSTRAP_NAME}:{port}"))
            .await
            .is_err(),
        "{BOOTSTRAP_NAME} must not resolve outside the test's namespace"
    );

    const RECORDS: usize = 1000;
    let values: Vec<String> = (0..RECORDS).map(|i| format!("sni-kcat-{i}")).collect();
    let mut args = vec![
        "-P",
        "-b",
        &bootstrap,
        "-t",
        &topic,
        "-X",
        "enable.idempotence=true",
        "-X",
        "acks=all",
        "-X",
        "linger.ms=5",
    ];
    args.extend_from_slice(&tls);
    let input: String = values.iter().map(|v| format!("{v}\n")).collect();
    let (ok, _, err) = kcat_with_hosts(&hosts, &args, &input).await;
    // kcat -P waits for every delivery report and exits non-zero when one
    // failed.
    assert!(ok, "kcat producer through one SNI port: {err}");

    // A balanced consumer: group coordinator, joins and Fetches at the
    // brokers' SNI names on the same port.
    let group = unique("sni-kcat-group");
    let mut args = vec![
        "-C",
        "-b",
        &bootstrap,
        "-G",
        &group,
        "-e",
        "-q",
        "-X",
        "auto.offset.reset=earliest",
    ];
    args.extend_from_slice(&tls);
    args.push(&topic);
    let (ok, out, err) = kcat_with_hosts(&hosts, &args, "").await;
    assert!(ok, "kcat consumer through one SNI port: {err}");
    let mut consumed: Vec<&str> = out.lines().collect();
    assert_eq!(consumed.len(), RECORDS, "records consumed; stderr: {err}");
    consumed.sort_unstable();
    let mut want: Vec<&str> = values.iter().map(String::as_str).collect();
    want.sort_unstable();
    assert_eq!(consumed, want, "every value read exactly once");

    // Every connection came through the one port, every SNI was routed.
    assert_eq!(
        p.metric("kdp_connections_total", "listener=\"broker\"")
            .await,
        0.0,
        "connections by listener: {}",
        p.metrics().await
    );
    assert!(
        p.metric("kdp_connections_total", "listener=\"bootstrap\"")
            .await
            >= 2.0
    );
    assert_eq!(
        p.metric("kdp_frame_errors_total", "kind=\"sni\"").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_produces_and_consumes_exactly_once_through_one_sni_port() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-java");
    let p = sni_proxy(&ca).await;
    let port = p.bootstrap.rsplit_once(':').unwrap().1;
    let topic = unique("sni-java");
    create_topic(&topic, 3).await;

    // Only the SNI names resolve, and only to the proxy's address.
    let hosts = sni_hosts_file(&ca.dir);
    let bootstrap = format!("{BOOTSTRAP_NAME}:{port}");
    let trust = format!("ssl.truststore.location={}", ca.cert().display());
    let tls = [
        "--extra",
        "security.protocol=SSL",
        "--extra",
        "ssl.truststore.type=PEM",
        "--extra",
        &trust,
    ];

    java_produce_and_consume_through_sni(&bootstrap, &topic, 500, &tls, &hosts, "TLS").await;

    // Every client connection came through the one port: the per-broker
    // listeners served none.
    assert_eq!(
        p.metric("kdp_connections_total", "listener=\"broker\"")
            .await,
        0.0,
        "connections by listener: {}",
        p.metrics().await
    );
    assert!(
        p.metric("kdp_connections_total", "listener=\"bootstrap\"")
            .await
            >= 2.0
    );
    assert_eq!(
        p.metric("kdp_frame_errors_total", "kind=\"sni\"").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_client_over_sasl_ssl_and_upstream_tls_through_one_sni_port() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-sasl");
    let (cert, key) = ca.issue("sni-sasl-proxy", "DNS:*.kafka.test");
    let p = start_sasl_proxy(
        Some((&cert, &key)),
        &["--sni-routing", PATTERN, "--sni-bootstrap", BOOTSTRAP_NAME],
    )
    .await;
    let port = p.bootstrap.rsplit_once(':').unwrap().1;
    let topic = unique("sni-sasl");
    create_topic(&topic, 3).await;
    let hosts = sni_hosts_file(&ca.dir);
    let bootstrap = format!("{BOOTSTRAP_NAME}:{port}");
    let scram = java_scram("SCRAM-SHA-512", "alice", "alice-secret", &ca.cert());
    let extra: Vec<&str> = scram.iter().flat_map(|p| ["--extra", p.as_str()]).collect();

    java_produce_and_consume_through_sni(&bootstrap, &topic, 200, &extra, &hosts, "SCRAM").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_required_on_the_one_port_after_routing() {
    let _g = cluster_lock().read().await;
    let ca = TestCa::new("sni-mtls");
    let (cert, key) = ca.issue("sni-mtls-proxy", "DNS:*.kafka.test");
    let (client_cert, client_key) = ca.issue("sni-client", "DNS:client.test");
    let ca_path = ca.cert();
    let p = ChildProxy::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-client-ca",
        ca_path.to_str().unwrap(),
        "--sni-routing",
        PATTERN,
        "--sni-bootstrap",
        BOOTSTRAP_NAME,
    ])
    .await;
    let topic = unique("sni-mtls");
    create_topic(&topic, 1).await;

    // With a certificate the client CA signed: routed and served.
    let mut conn = TlsConn::connect_as(
        &p.bootstrap,
        BOOTSTRAP_NAME,
        &ca_path,
        Some((&client_cert, &client_key)),
    )
    .await
    .expect("a client with a certificate is served");
    let md = metadata(&mut conn, &topic).await;
    let leader = md.topics[0].partitions[0].leader_id.0;
    let mut to_leader = TlsConn::connect_as(
        &p.bootstrap,
        &broker_name(leader),
        &ca_path,
        Some((&client_cert, &client_key)),
    )
    .await
    .expect("the leader's name is served");
    assert_eq!(produce_one(&mut to_leader, &topic, "mtls").await, (0, 0));

    // Without one: the handshake fails after routing, as a TLS failure,
    // not an SNI refusal. (With TLS 1.3 the client may finish its side
    // first and learn of the refusal on its first read.)
    let refused = match TlsConn::connect(&p.bootstrap, &broker_name(leader), &ca_path).await {
        Err(_) => true,
        Ok(mut c) => {
            let mut b = [0u8; 1];
            !matches!(c.stream.read(&mut b).await, Ok(n) if n > 0)
        }
    };
    assert!(refused, "a client without a certificate is not served");
    let failed = p
        .wait_metric(
            "kdp_frame_errors_total",
            "kind=\"tls_handshake\"",
            Duration::from_secs(5),
            |v| v >= 1.0,
        )
        .await;
    assert_eq!(failed, 1.0);
    assert_eq!(
        p.metric("kdp_frame_errors_total", "kind=\"sni\"").await,
        0.0
    );
}
