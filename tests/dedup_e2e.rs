//! Dedup against a real 3-node KRaft cluster: raw Produce requests built
//! and decoded with the independent `kafka-protocol` crate, and the Java
//! idempotent producer retrying through a fault layer.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::child::ChildProxy;
use common::*;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{InitProducerIdRequest, MetadataRequest, ProduceRequest, TopicName};
use kafka_protocol::protocol::StrBytes;

const PRODUCE_VERSION: i16 = 9;

async fn init_producer_id(conn: &mut RawConn) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX);
    // Retriable while the cluster settles (e.g. after another test paused
    // a broker): COORDINATOR_LOAD_IN_PROGRESS, NOT_COORDINATOR, timeouts.
    for _ in 0..60 {
        let resp = conn.call(1, &req).await;
        match resp.error_code {
            0 => return (resp.producer_id.0, resp.producer_epoch),
            7 | 14 | 15 | 16 => tokio::time::sleep(Duration::from_millis(500)).await,
            e => panic!("InitProducerId failed with error {e}"),
        }
    }
    panic!("InitProducerId kept failing")
}

fn batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str) -> Bytes {
    verifiable::batch(pid, epoch, seq, n, tag, false)
}

fn produce(acks: i16, topic: &str, parts: &[(i32, Bytes)]) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(
                    parts
                        .iter()
                        .map(|(i, b)| {
                            PartitionProduceData::default()
                                .with_index(*i)
                                .with_records(Some(b.clone()))
                        })
                        .collect(),
                ),
        ])
}

fn partitions(resp: &kafka_protocol::messages::ProduceResponse) -> Vec<&PartitionProduceResponse> {
    resp.responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .collect()
}

async fn leader_of(topic: &str, partition: i32) -> i32 {
    let out = harness(&[
        "topic-leader",
        "--bootstrap",
        &cluster().bootstrap,
        "--topic",
        topic,
        "--partition",
        &partition.to_string(),
    ])
    .await;
    out["leader"].as_i64().unwrap() as i32
}

/// Pauses a broker process (SIGSTOP) and resumes it when dropped, whatever
/// happens in between.
struct Paused(String);

impl Paused {
    async fn broker(node: i32) -> Paused {
        let pid = kafka(&["pid", &node.to_string()]).await.trim().to_string();
        assert!(
            std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap()
                .success()
        );
        Paused(pid)
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-CONT", &self.0])
            .status();
    }
}

async fn consume_all(bootstrap: &str, topic: &str, expect: usize) -> serde_json::Value {
    harness(&[
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--expect",
        &expect.to_string(),
        "--timeout-ms",
        "30000",
    ])
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_batch_gets_original_offset_even_with_the_leader_paused() {
    let _g = cluster_lock().write().await;
    let topic = unique("dedup-paused");
    create_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let p = start_proxy(&[]).await;
    let mut conn = RawConn::connect(&p.broker_addr(leader)).await;
    let (pid, epoch) = init_producer_id(&mut conn).await;

    let b = batch(pid, epoch, 0, 3, "once");
    let first = conn
        .call(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b.clone())]))
        .await;
    let first = partitions(&first)[0].clone();
    assert_eq!(first.error_code, 0);
    assert!(first.base_offset >= 0);

    // The retry arrives on a new connection, as a client's retry does.
    let mut retry = RawConn::connect(&p.broker_addr(leader)).await;
    let again = retry
        .call(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b.clone())]))
        .await;
    let again = partitions(&again)[0].clone();
    assert_eq!(
        (again.error_code, again.base_offset),
        (0, first.base_offset)
    );
    assert_eq!(again.log_start_offset, first.log_start_offset);

    {
        let _paused = Paused::broker(leader).await;
        // Proof the leader really is paused: it answers nothing now.
        let mut probe = RawConn::connect(&p.broker_addr(leader)).await;
        probe
            .send(1, &MetadataRequest::default().with_topics(None))
            .await;
        assert!(
            tokio::time::timeout(
                Duration::from_millis(1500),
                probe.recv::<MetadataRequest>(1)
            )
            .await
            .is_err(),
            "a paused broker must not answer"
        );
        let mut third = RawConn::connect(&p.broker_addr(leader)).await;
        let answered = tokio::time::timeout(
            Duration::from_secs(3),
            third.call(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b.clone())])),
        )
        .await
        .expect("the proxy answers a committed duplicate without the broker");
        let a = partitions(&answered)[0].clone();
        assert_eq!((a.error_code, a.base_offset), (0, first.base_offset));
    }

    let out = consume_all(&p.bootstrap, &topic, 3).await;
    assert_eq!(
        out["count"], 3,
        "the partition holds the batch exactly once: {out}"
    );
    assert_eq!(out["duplicates"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_one_duplicate_goes_to_the_broker_not_answered_by_the_proxy() {
    let _g = cluster_lock().write().await;
    let topic = unique("dedup-acks1");
    create_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let p = start_proxy(&[]).await;
    let mut conn = RawConn::connect(&p.broker_addr(leader)).await;
    let (pid, epoch) = init_producer_id(&mut conn).await;
    let b = batch(pid, epoch, 0, 2, "acks1");
    let first = conn
        .call(PRODUCE_VERSION, &produce(1, &topic, &[(0, b.clone())]))
        .await;
    let first = partitions(&first)[0].clone();
    assert_eq!(first.error_code, 0);

    let mut retry = RawConn::connect(&p.broker_addr(leader)).await;
    let paused = Paused::broker(leader).await;
    let corr = retry
        .send(PRODUCE_VERSION, &produce(1, &topic, &[(0, b.clone())]))
        .await;
    if let Ok((c, early)) = tokio::time::timeout(
        Duration::from_millis(2000),
        retry.recv::<ProduceRequest>(PRODUCE_VERSION),
    )
    .await
    {
        // Say what answered: tests/acks_one_retry.rs checks the same with
        // the broker's stop verified and the proxy's counters.
        let e = partitions(&early)[0].clone();
        panic!(
            "an acks=1 retry must wait for the broker, not be answered by the proxy: \
             answered while node {leader} (pid {}) was paused: correlation {c}, error {}, \
             base offset {} (first send: offset {})",
            paused.0, e.error_code, e.base_offset, first.base_offset
        );
    }
    drop(paused);
    let (got, resp) = tokio::time::timeout(
        Duration::from_secs(30),
        retry.recv::<ProduceRequest>(PRODUCE_VERSION),
    )
    .await
    .expect("the broker answers after it resumes");
    assert_eq!(got, corr);
    let r = partitions(&resp)[0].clone();
    assert_eq!(
        (r.error_code, r.base_offset),
        (0, first.base_offset),
        "the broker's own dedup answers"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_request_merges_the_synthetic_and_the_broker_answers_in_request_order() {
    let _g = cluster_lock().read().await;
    let topic = unique("dedup-mixed");
    create_topic(&topic, 4).await;
    // Two partitions with the same leader (4 partitions, 3 brokers).
    let mut leaders = Vec::new();
    for part in 0..4 {
        leaders.push(leader_of(&topic, part).await);
    }
    let (pa, pb) = (0..4)
        .flat_map(|a| (a + 1..4).map(move |b| (a, b)))
        .find(|(a, b)| leaders[*a as usize] == leaders[*b as usize])
        .expect("two partitions share a leader");
    let leader = leaders[pa as usize];
    // A proxy process of its own: its counters move with this test only.
    let p = ChildProxy::start(&[]).await;
    let before = p.metrics().await;
    let mut conn = RawConn::connect(&p.broker_addr(leader)).await;
    let (pid, epoch) = init_producer_id(&mut conn).await;

    let dup = batch(pid, epoch, 0, 3, "a");
    let first = conn
        .call(PRODUCE_VERSION, &produce(-1, &topic, &[(pa, dup.clone())]))
        .await;
    let first_offset = partitions(&first)[0].base_offset;

    let fresh = batch(pid, epoch, 0, 2, "b");
    let mixed = conn
        .call(
            PRODUCE_VERSION,
            &produce(-1, &topic, &[(pb, fresh), (pa, dup)]),
        )
        .await;
    let got: Vec<_> = partitions(&mixed)
        .iter()
        .map(|r| (r.index, r.error_code))
        .collect();
    assert_eq!(
        got,
        vec![(pb, 0), (pa, 0)],
        "exactly the request's partitions, in its order"
    );
    assert_eq!(
        partitions(&mixed)[1].base_offset,
        first_offset,
        "duplicate answered with its original offset"
    );
    assert!(partitions(&mixed)[0].base_offset >= 0);

    let after = p.metrics().await;
    let batches = |outcome: &str| {
        let label = format!("outcome=\"{outcome}\"");
        metric_sum(&after, "kdp_produce_batches_total", &label)
            - metric_sum(&before, "kdp_produce_batches_total", &label)
    };
    assert_eq!(
        batches("duplicate"),
        1.0,
        "the duplicate partition was answered by the proxy"
    );
    assert_eq!(
        batches("forwarded"),
        2.0,
        "the first batch and the fresh one went to the broker"
    );

    let out = consume_all(&p.bootstrap, &topic, 5).await;
    assert_eq!(out["count"], 5, "3 + 2 records, each once: {out}");
    assert_eq!(out["duplicates"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_with_a_duplicate_in_the_middle_stay_in_order() {
    let _g = cluster_lock().read().await;
    let topic = unique("dedup-pipe");
    create_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let p = start_proxy(&[]).await;
    let mut conn = RawConn::connect(&p.broker_addr(leader)).await;
    let (pid, epoch) = init_producer_id(&mut conn).await;
    let b0 = batch(pid, epoch, 0, 2, "p");
    let first = conn
        .call(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b0.clone())]))
        .await;
    let o0 = partitions(&first)[0].base_offset;

    let m1 = conn
        .send(9, &MetadataRequest::default().with_topics(None))
        .await;
    let d1 = conn
        .send(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b0.clone())]))
        .await;
    let f1 = conn
        .send(
            PRODUCE_VERSION,
            &produce(-1, &topic, &[(0, batch(pid, epoch, 2, 2, "p"))]),
        )
        .await;
    let d2 = conn
        .send(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b0.clone())]))
        .await;
    let m2 = conn
        .send(9, &MetadataRequest::default().with_topics(None))
        .await;

    assert_eq!(conn.recv::<MetadataRequest>(9).await.0, m1);
    let (c, r) = conn.recv::<ProduceRequest>(PRODUCE_VERSION).await;
    assert_eq!((c, partitions(&r)[0].base_offset), (d1, o0));
    let (c, r) = conn.recv::<ProduceRequest>(PRODUCE_VERSION).await;
    assert_eq!(c, f1);
    assert_eq!(partitions(&r)[0].error_code, 0);
    assert_eq!(partitions(&r)[0].base_offset, o0 + 2);
    let (c, r) = conn.recv::<ProduceRequest>(PRODUCE_VERSION).await;
    assert_eq!((c, partitions(&r)[0].base_offset), (d2, o0));
    assert_eq!(conn.recv::<MetadataRequest>(9).await.0, m2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn java_idempotent_producer_retrying_through_delayed_responses_loses_and_duplicates_nothing()
{
    let _g = cluster_lock().read().await;
    let topic = unique("dedup-retry");
    create_topic(&topic, 3).await;
    let brokers: Vec<String> = cluster()
        .broker_ports
        .iter()
        .map(|p| format!("127.0.0.1:{p}"))
        .collect();
    let faults = fault::start(&brokers, 7, Duration::from_millis(2500), 12).await;
    let map = faults.address_map();
    // A proxy process of its own: its counters move with this test only.
    let p = ChildProxy::start(&["--broker-address-map", &map]).await;
    let before = p.metrics().await;

    let n = 6000usize;
    let out = harness(&[
        "produce",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--count",
        &n.to_string(),
        "--size",
        "512",
        "--acks",
        "all",
        "--idempotence",
        "true",
        "--linger-ms",
        "2",
        "--extra",
        "request.timeout.ms=1000",
        "--extra",
        "delivery.timeout.ms=120000",
        "--extra",
        "batch.size=8192",
        "--extra",
        "retry.backoff.ms=50",
    ])
    .await;
    assert_eq!(out["acked"], n, "every record acknowledged: {out}");

    let after = p.metrics().await;
    let delta = |label: &str| {
        metric_sum(&after, "kdp_produce_batches_total", label)
            - metric_sum(&before, "kdp_produce_batches_total", label)
    };
    let answered = delta("outcome=\"duplicate\"") + delta("outcome=\"coalesced\"");

    let consumed = harness(&[
        "consume",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--from-beginning",
        "--expect",
        &n.to_string(),
        "--timeout-ms",
        "60000",
    ])
    .await;
    let records = consumed["records"].as_array().unwrap();
    let mut seen = std::collections::HashSet::new();
    let mut last_per_partition = std::collections::HashMap::new();
    let mut out_of_order = 0;
    for r in records {
        let v = r["v"].as_str().unwrap();
        let i: usize = v
            .trim_end_matches('.')
            .rsplit('-')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        seen.insert(i);
        let p = r["p"].as_i64().unwrap();
        if last_per_partition
            .insert(p, i)
            .is_some_and(|prev| prev >= i)
        {
            out_of_order += 1;
        }
    }
    let lost = (0..n).filter(|i| !seen.contains(i)).count();
    let duplicated = records.len() - seen.len();
    println!(
        "retry storm: records={n} delayed_responses={} answered_by_proxy={answered} consumed={} lost={lost} duplicated={duplicated} out_of_order={out_of_order}",
        faults.delayed.load(std::sync::atomic::Ordering::Relaxed),
        records.len()
    );
    assert_eq!(lost, 0);
    assert_eq!(duplicated, 0);
    assert_eq!(out_of_order, 0, "per-partition order kept");
    assert!(
        faults.delayed.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the fault layer injected delays"
    );
    assert!(answered > 0.0, "retries were answered by the proxy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_counts_duplicates_but_forwards_them() {
    let _g = cluster_lock().write().await;
    let topic = unique("dedup-observe");
    create_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    // A proxy process of its own: its counters move with this test only.
    let p = ChildProxy::start(&["--dedup-mode", "observe"]).await;
    let mut conn = RawConn::connect(&p.broker_addr(leader)).await;
    let (pid, epoch) = init_producer_id(&mut conn).await;
    let b = batch(pid, epoch, 0, 2, "observe");
    let first = conn
        .call(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b.clone())]))
        .await;
    let first = partitions(&first)[0].clone();
    assert_eq!(first.error_code, 0);

    let before = p.metrics().await;
    let mut retry = RawConn::connect(&p.broker_addr(leader)).await;
    let paused = Paused::broker(leader).await;
    retry
        .send(PRODUCE_VERSION, &produce(-1, &topic, &[(0, b)]))
        .await;
    assert!(
        tokio::time::timeout(
            Duration::from_millis(2000),
            retry.recv::<ProduceRequest>(PRODUCE_VERSION)
        )
        .await
        .is_err(),
        "observe mode forwards duplicates: nothing answers while the leader is paused"
    );
    drop(paused);
    let (_, resp) = tokio::time::timeout(
        Duration::from_secs(30),
        retry.recv::<ProduceRequest>(PRODUCE_VERSION),
    )
    .await
    .expect("the broker answers");
    assert_eq!(partitions(&resp)[0].base_offset, first.base_offset);
    let after = p.metrics().await;
    let batches = |outcome: &str| {
        let label = format!("outcome=\"{outcome}\"");
        metric_sum(&after, "kdp_produce_batches_total", &label)
            - metric_sum(&before, "kdp_produce_batches_total", &label)
    };
    assert_eq!(
        batches("observed_duplicate"),
        1.0,
        "the duplicate was counted"
    );
    assert_eq!(batches("duplicate"), 0.0, "and not answered by the proxy");
}
