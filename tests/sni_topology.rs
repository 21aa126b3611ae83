//! SNI routing while the cluster changes behind the one port, on a 3-node
//! cluster of this test's own (`common::own_cluster`: a killed broker or
//! a fourth node must not disturb the tests on the shared cluster). One
//! proxy process, started once, serves throughout:
//!
//! 1. The leader of the test partition is killed (SIGKILL) while
//!    Kafka's VerifiableProducer (idempotent, acks=all) writes through the
//!    one port; the stream goes on at the new leader, reached by its SNI
//!    name on the same port, and every acknowledged record is read back
//!    exactly once at its acknowledged offset.
//! 2. A fourth broker joins the running cluster (`scripts/kafka
//!    add-node`). Before, its name is refused; after, without restarting
//!    the proxy or opening a port, a partition led by the new broker is
//!    written and read through the one port, and Metadata names it by its
//!    SNI name.
//!
//! The Java clients resolve the SNI names with `-Djdk.net.hosts.file`.

mod common;

use std::time::{Duration, Instant};

use common::own_cluster::OwnCluster;
use common::security::TestCa;
use common::sni::*;
use common::verifiable::{Consumed, VerifiableProducer, distinct_offsets, harness_records, judge};
use common::*;

/// The stream of part 1: about 10 s at 300 records a second.
const MESSAGES: usize = 3000;
const THROUGHPUT: usize = 300;
/// Records written by the Java client to the new broker's partition.
const ON_NEW_BROKER: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sni_port_follows_a_leader_kill_and_reaches_a_broker_added_at_runtime() {
    let t0 = Instant::now();
    let cluster = OwnCluster::start("sni-topology", 3).await;
    let ca = TestCa::new("sni-topology");
    let p = sni_proxy_to(&cluster.bootstrap, &ca).await;
    let port: i32 = p.bootstrap.rsplit_once(':').unwrap().1.parse().unwrap();
    let bootstrap = format!("{BOOTSTRAP_NAME}:{port}");
    let hosts = sni_hosts_file(&ca.dir);
    let java_opts = java_opts_with_hosts(&hosts);
    let tls = java_tls_settings(&ca.cert());
    let tls_pairs: Vec<(&str, &str)> = tls.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let tls_extra: Vec<String> = tls.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let tls_args: Vec<&str> = tls_extra
        .iter()
        .flat_map(|kv| ["--extra", kv.as_str()])
        .collect();

    // 1. The leader of the only partition killed mid-stream.
    let topic = unique("sni-kill");
    cluster
        .harness(&[
            "create-topic",
            "--bootstrap",
            &cluster.bootstrap,
            "--topic",
            &topic,
            "--partitions",
            "1",
            "--replication",
            "3",
        ])
        .await;
    // Asked before the stream starts (a JVM start takes seconds): nothing
    // moves a leader on a healthy cluster in between.
    let leader = cluster
        .leader(&topic, 0, None, Duration::from_secs(30))
        .await
        .expect("the partition has a leader");
    let mut producer = VerifiableProducer::start_with_env(
        &bootstrap,
        &topic,
        MESSAGES,
        THROUGHPUT,
        &tls_pairs,
        &[("KDP_JAVA_OPTS", &java_opts)],
    )
    .await;
    assert!(
        producer
            .wait_acked(MESSAGES / 3, Duration::from_secs(60))
            .await,
        "a third of the stream acknowledged through the one port before the kill"
    );
    let acked_at_kill = producer.acked();
    assert!(
        cluster.kill(leader).await,
        "broker {leader} gone after SIGKILL"
    );
    let new_leader = cluster
        .leader(&topic, 0, Some(leader), Duration::from_secs(30))
        .await;
    assert!(
        new_leader.is_some(),
        "the partition moved off the killed broker {leader}"
    );
    // With the old leader gone, only the new one can acknowledge these.
    assert!(
        producer
            .wait_acked(acked_at_kill + THROUGHPUT, Duration::from_secs(40))
            .await,
        "the stream went on at the new leader {new_leader:?} through the one port \
         ({} acked, {acked_at_kill} at the kill)",
        producer.acked()
    );
    cluster.run(&["restart-node", &leader.to_string()]).await;
    let out = producer.finish(Duration::from_secs(150)).await;
    assert!(
        out.exited_cleanly && out.errors.is_empty(),
        "producer: errors {:?}, stderr {:?}",
        out.errors,
        out.stderr_tail
    );
    assert_eq!(out.acked.len(), MESSAGES, "every record acknowledged");

    let expect = MESSAGES.to_string();
    let mut args = vec![
        "consume",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--from-beginning",
        "--expect",
        &expect,
        "--timeout-ms",
        "60000",
    ];
    args.extend_from_slice(&tls_args);
    let (ok, read, err) = harness_with_hosts(&args, &hosts).await;
    assert!(ok, "consumer through the one port: {err}");
    let consumed: Vec<Consumed> = harness_records(&read)
        .into_iter()
        .filter_map(|(partition, offset, v)| {
            Some(Consumed {
                partition,
                offset,
                value: v.parse().ok()?,
            })
        })
        .collect();
    let verdict = judge(&out.acked, &distinct_offsets(&consumed));
    assert!(verdict.is_clean(), "{verdict:?}");
    assert_eq!(
        (verdict.acked, verdict.consumed),
        (MESSAGES, MESSAGES),
        "{verdict:?}"
    );

    // 2. A fourth broker. Unknown to the cluster yet: refused.
    let before = TlsConn::connect(&p.bootstrap, &broker_name(4), &ca.cert()).await;
    assert!(before.is_err(), "broker 4 does not exist yet");
    let grown = cluster.run(&["add-node"]).await;
    assert_eq!(grown.trim().split(',').count(), 4, "{grown}");
    let topic = unique("sni-grown");
    cluster
        .harness(&[
            "create-topic",
            "--bootstrap",
            &cluster.bootstrap,
            "--topic",
            &topic,
            "--replicas",
            "4,1,2",
        ])
        .await;
    assert_eq!(
        cluster
            .leader(&topic, 0, None, Duration::from_secs(30))
            .await,
        Some(4),
        "the new broker leads the new partition"
    );

    // Its name now reaches it (the proxy refreshes its view of the
    // cluster for a node it does not know, before any client asked for
    // Metadata through it): the Produce is accepted there, by the leader.
    let mut to_new = TlsConn::connect(&p.bootstrap, &broker_name(4), &ca.cert())
        .await
        .expect("broker 4's name is served once it joined");
    assert_eq!(
        produce_one(&mut to_new, &topic, "on-broker-4").await,
        (0, 0),
        "broker 4 appends the first record"
    );
    let mut boot = TlsConn::connect(&p.bootstrap, BOOTSTRAP_NAME, &ca.cert())
        .await
        .expect("the bootstrap name is served");
    let md = metadata(&mut boot, &topic).await;
    assert_eq!(md.brokers.len(), 4, "{md:?}");
    for b in &md.brokers {
        assert_eq!(
            (b.host.to_string(), b.port),
            (broker_name(b.node_id.0), port),
            "only SNI addresses on the one port: {md:?}"
        );
    }
    assert_eq!(md.topics[0].partitions[0].leader_id.0, 4, "{md:?}");

    // The Java client writes and reads the new broker's partition through
    // the one port.
    let count = ON_NEW_BROKER.to_string();
    let mut args = vec![
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--count",
        &count,
        "--idempotence",
        "true",
    ];
    args.extend_from_slice(&tls_args);
    let (ok, produced, err) = harness_with_hosts(&args, &hosts).await;
    assert!(
        ok,
        "producer to broker 4 through the one port: {produced} {err}"
    );
    assert_eq!(produced["acked"], ON_NEW_BROKER, "{produced}");
    let expect = (ON_NEW_BROKER + 1).to_string();
    let mut args = vec![
        "consume",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--from-beginning",
        "--expect",
        &expect,
        "--timeout-ms",
        "30000",
        "--no-records",
    ];
    args.extend_from_slice(&tls_args);
    let (ok, read, err) = harness_with_hosts(&args, &hosts).await;
    assert!(
        ok,
        "consumer of broker 4 through the one port: {read} {err}"
    );
    assert_eq!(read["count"], ON_NEW_BROKER + 1, "{read}");
    assert_eq!(read["duplicates"], 0, "{read}");

    // One port throughout: the per-broker listeners served nobody, and the
    // only refusal was broker 4 before it existed.
    assert_eq!(
        p.metric("kdp_connections_total", "listener=\"broker\"")
            .await,
        0.0,
        "connections by listener: {}",
        p.metrics().await
    );
    assert_eq!(
        p.metric("kdp_frame_errors_total", "kind=\"sni\"").await,
        1.0
    );
    eprintln!(
        "leader {leader} killed at {acked_at_kill} acked, new leader {new_leader:?}; \
         broker 4 added; {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
