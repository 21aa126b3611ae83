//! Dedup by idempotency key against the real cluster, with real clients:
//! records sent again by an application (no idempotence) are written once,
//! under every compression codec the clients use, and a topic without key
//! dedup keeps every copy (the control that shows the feature did it).

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::keyed::{java_produce, java_read_all, keyed_produce_args};
use common::*;
use tokio::io::AsyncWriteExt;

fn key_dedup_args(topics: &str, source: &str) -> Vec<String> {
    vec![
        "--key-dedup-topics".into(),
        topics.into(),
        "--key-dedup-source".into(),
        source.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn application_retries_without_idempotence_are_written_once() {
    let _g = cluster_lock().read().await;
    let args = key_dedup_args("keyed-*", "key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_proxy(&args).await;
    let keyed = unique("keyed-app");
    let plain = unique("plain-app");
    for t in [&keyed, &plain] {
        create_topic(t, 3).await;
        // Keys 0..9999, then 7000..12999 again: 3,000 records sent twice,
        // in batches that mix them with new ones (re-encoded) and batches
        // of repeats only (answered by the proxy); lz4, then zstd.
        java_produce(&p.bootstrap, t, 0, 10_000, "lz4").await;
        java_produce(&p.bootstrap, t, 7_000, 6_000, "zstd").await;
    }
    let (count, distinct) = java_read_all(&p.bootstrap, &keyed).await;
    assert_eq!((count, distinct), (13_000, 13_000), "each key once");
    // The same traffic to a topic without key dedup keeps every copy.
    let (count, distinct) = java_read_all(&p.bootstrap, &plain).await;
    assert_eq!(
        (count, distinct),
        (16_000, 13_000),
        "the control keeps the repeats"
    );
}

async fn kcat_produce(bootstrap: &str, topic: &str, keys: std::ops::Range<u32>, codec: &str) {
    kcat_produce_keys(bootstrap, topic, keys, codec, false).await
}

/// librdkafka (kcat) producing keys in the order given, with or without
/// idempotence; fails on any delivery error.
async fn kcat_produce_keys(
    bootstrap: &str,
    topic: &str,
    keys: impl Iterator<Item = u32>,
    codec: &str,
    idempotence: bool,
) {
    let input: String = keys.map(|i| format!("id-{i}:rec-{i}\n")).collect();
    let idempotence = format!("enable.idempotence={idempotence}");
    let mut child = tokio::process::Command::new("kcat")
        .args([
            "-b",
            bootstrap,
            "-P",
            "-t",
            topic,
            "-K:",
            "-z",
            codec,
            "-X",
            &idempotence,
            "-X",
            "acks=all",
            "-X",
            "linger.ms=5",
        ])
        // Small batches: many of them per partition, so that records
        // removed from one shift the sequences of the next.
        .args(["-X", "batch.num.messages=100"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("kcat");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).await.unwrap();
    drop(stdin);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kcat producer failed: {stderr}");
    assert!(
        !stderr.contains("ERROR") && !stderr.contains("failed"),
        "kcat producer reported an error: {stderr}"
    );
}

/// How often each value occurs in the whole topic, read by librdkafka.
async fn kcat_read_all(bootstrap: &str, topic: &str) -> HashMap<String, usize> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new("kcat")
            .args([
                "-b",
                bootstrap,
                "-C",
                "-t",
                topic,
                "-o",
                "beginning",
                "-e",
                "-q",
            ])
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let mut seen = HashMap::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        *seen.entry(line.to_string()).or_insert(0) += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn librdkafka_repeats_are_removed_under_snappy_and_gzip() {
    let _g = cluster_lock().read().await;
    // Rules from a file this time: the record key for these topics (the
    // flags' default source, a header, would find no key in kcat's records).
    let rules = std::env::temp_dir().join(unique("kdp-key-rules"));
    std::fs::write(
        &rules,
        "[[rule]]\ntopics = [\"kcat-keyed-*\"]\nsource = \"key\"\n",
    )
    .unwrap();
    let p = start_proxy(&["--key-dedup-rules", rules.to_str().unwrap()]).await;
    let topic = unique("kcat-keyed");
    create_topic(&topic, 3).await;
    kcat_produce(&p.bootstrap, &topic, 0..1500, "snappy").await;
    kcat_produce(&p.bootstrap, &topic, 1000..2500, "gzip").await;
    let seen = kcat_read_all(&p.bootstrap, &topic).await;
    assert_eq!(seen.len(), 2500, "every key is there");
    assert!(seen.values().all(|n| *n == 1), "and only once");
    assert!((0..2500).all(|i| seen.contains_key(&format!("rec-{i}"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_librdkafka_idempotent_producer_writes_each_key_once() {
    let _g = cluster_lock().read().await;
    let args = key_dedup_args("kcat-idem-*", "key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_proxy(&args).await;
    let topic = unique("kcat-idem");
    create_topic(&topic, 3).await;
    kcat_produce_keys(&p.bootstrap, &topic, 0..3000, "lz4", true).await;
    // A second producer (another producer id): new keys, then the first
    // one's again, then new ones: records removed mid-sequence.
    let keys = (3000..4000).chain(0..3000).chain(4000..5000);
    kcat_produce_keys(&p.bootstrap, &topic, keys, "zstd", true).await;
    let seen = kcat_read_all(&p.bootstrap, &topic).await;
    assert_eq!(seen.len(), 5000, "every key is there");
    assert!(seen.values().all(|n| *n == 1), "and only once");
    let m = http_get(&p.metrics_url("/metrics")).await.1;
    let resequenced = metric_sum(&m, "kdp_key_dedup_batches_total", "outcome=\"resequenced\"");
    assert!(resequenced > 0.0, "batches resequenced: {resequenced}");
}

/// A non-idempotent batch of one record whose value (and so content key)
/// is `value`.
fn one_record(value: &str) -> bytes::Bytes {
    use kafka_dedup_proxy::codec::record_batch::{SimpleRecord, encode_record_batch};
    let record = SimpleRecord {
        key: None,
        value: Some(bytes::Bytes::from(value.to_string())),
    };
    encode_record_batch(-1, -1, -1, 1_700_000_000_000, 0, &[record])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_past_its_window_is_written_again_and_a_corrupt_batch_reaches_the_broker() {
    let _g = cluster_lock().read().await;
    let mut args = key_dedup_args("window-*", "content");
    args.extend(["--key-dedup-window-seconds".into(), "1".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_proxy(&args).await;
    let topic = unique("window-keys");
    create_topic(&topic, 1).await;
    let leader = p.broker_addr(common::cluster_faults::leader_of(&topic, 0).await);
    let (e1, first) = common::raw::produce_once(&leader, None, &topic, 0, one_record("same")).await;
    assert_eq!(e1, 0);
    // Inside the window: answered by the proxy with the first offset.
    let (e2, again) = common::raw::produce_once(&leader, None, &topic, 0, one_record("same")).await;
    assert_eq!((e2, again), (0, first), "a repeat inside the window");
    // Past the window the same content is written again, at a new offset.
    tokio::time::sleep(Duration::from_millis(2_100)).await;
    let (e3, later) = common::raw::produce_once(&leader, None, &topic, 0, one_record("same")).await;
    assert_eq!(e3, 0);
    assert!(
        later > first,
        "written again past the window: {later} after {first}"
    );
    // A batch whose CRC does not match goes to the broker untouched: the
    // broker, not the proxy, answers CORRUPT_MESSAGE (2).
    let mut corrupt = one_record("other").to_vec();
    let n = corrupt.len() - 1;
    corrupt[n] ^= 0x01;
    let (e4, _) = common::raw::produce_once(&leader, None, &topic, 0, corrupt.into()).await;
    assert_eq!(e4, 2, "the broker judged the corrupt batch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_sending_overlapping_keys_at_once_write_each_key_once() {
    let _g = cluster_lock().read().await;
    let args = key_dedup_args("twice-*", "key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_proxy(&args).await;
    let topic = unique("twice-keys");
    create_topic(&topic, 3).await;
    // Two producers (two processes, two connections) at the same time:
    // keys 0..5,999 and 3,000..8,999; the 3,000 shared keys race, and a
    // copy that meets its key in flight waits for the other's outcome.
    tokio::join!(
        java_produce(&p.bootstrap, &topic, 0, 6_000, "lz4"),
        java_produce(&p.bootstrap, &topic, 3_000, 6_000, "none"),
    );
    let (count, distinct) = java_read_all(&p.bootstrap, &topic).await;
    assert_eq!((count, distinct), (9_000, 9_000), "each key once");
}

/// The Java producer of keyed records `ranges` (start, count) one after
/// the other, idempotent, as a child process of its own group (so that
/// SIGKILL reaches the JVM).
fn java_idempotent_producer(
    bootstrap: &str,
    topic: &str,
    ranges: &[(u32, u32)],
) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(repo().join("scripts/kafka"));
    c.args(["run", "ClientHarness"])
        .args(keyed_produce_args(
            bootstrap, topic, ranges, 100, true, "lz4",
        ))
        .process_group(0)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_idempotent_producer_writes_each_key_once_and_sees_no_error() {
    let _g = cluster_lock().read().await;
    let args = key_dedup_args("restart-*", "key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_proxy(&args).await;
    let topic = unique("restart-keys");
    create_topic(&topic, 3).await;
    let metrics = || async { http_get(&p.metrics_url("/metrics")).await.1 };
    let records = "kdp_key_dedup_records_total";

    // The first producer is killed (SIGKILL, the whole JVM) mid-stream.
    const FIRST: u32 = 100_000;
    let mut first = java_idempotent_producer(&p.bootstrap, &topic, &[(0, FIRST)])
        .spawn()
        .expect("producer");
    let group = first.id().expect("running");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let fresh_at_kill = loop {
        let fresh = metric_sum(&metrics().await, records, "outcome=\"fresh\"");
        if fresh >= 20_000.0 {
            break fresh;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the producer never got going"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &format!("-{group}")])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = first.wait().await.expect("reaped");
    assert!(
        !status.success(),
        "the first producer was killed, not finished"
    );
    assert!(
        fresh_at_kill < f64::from(FIRST),
        "killed mid-stream ({fresh_at_kill} of {FIRST} records sent)"
    );

    // Its successor (a new producer id) first sends new records, then
    // everything again from the last checkpoint it trusts (the start): the
    // records the first one wrote are removed from the middle of its
    // sequence, and the broker must still see an unbroken one.
    const MORE: u32 = 20_000;
    const SECOND: u32 = FIRST + MORE;
    let out = java_idempotent_producer(&p.bootstrap, &topic, &[(FIRST, MORE), (0, FIRST)])
        .output()
        .await
        .expect("producer");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no JSON from the producer: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let report: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(report["acked"], SECOND, "{report}");
    assert!(
        report["errors"].as_array().unwrap().is_empty(),
        "no error: {report}"
    );
    // Not even a retried one: a sequence the broker did not expect would
    // have been refused (OUT_OF_ORDER_SEQUENCE_NUMBER) and retried by the
    // client after bumping its epoch.
    assert_eq!(report["retries"], 0, "no record retried: {report}");

    // Every key once: what the first producer wrote was removed from the
    // second's batches, whose sequences the proxy lowered to match.
    let (count, distinct) = java_read_all(&p.bootstrap, &topic).await;
    assert_eq!(
        (count, distinct),
        (u64::from(SECOND), u64::from(SECOND)),
        "each key once"
    );
    let m = metrics().await;
    let batches = "kdp_key_dedup_batches_total";
    let removed = metric_sum(&m, records, "outcome=\"duplicate\"");
    let resequenced = metric_sum(&m, batches, "outcome=\"resequenced\"");
    assert!(removed >= fresh_at_kill / 2.0, "records removed: {removed}");
    assert!(resequenced > 0.0, "batches resequenced: {resequenced}");
    eprintln!(
        "killed after {fresh_at_kill} records sent; removed {removed} duplicates, \
         {resequenced} batches resequenced, {} answered, {} re-encoded",
        metric_sum(&m, batches, "outcome=\"answered\""),
        metric_sum(&m, batches, "outcome=\"reencoded\"")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_cut_under_every_codec_read_back_in_the_java_client_and_librdkafka() {
    let _g = cluster_lock().read().await;
    let args = key_dedup_args("codecs-*", "key");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let p = start_proxy(&args).await;
    let topic = unique("codecs-keys");
    create_topic(&topic, 3).await;
    let reencoded = || async {
        let m = http_get(&p.metrics_url("/metrics")).await.1;
        metric_sum(&m, "kdp_key_dedup_batches_total", "outcome=\"reencoded\"")
    };
    // Phase n (codec n) sends keys 1000n..1000n+1999: its first half was
    // written by the phase before, so its batches are cut and re-encoded in
    // its own codec.
    let codecs = ["none", "gzip", "snappy", "lz4", "zstd"];
    java_produce(&p.bootstrap, &topic, 0, 1000, "none").await;
    for (n, codec) in codecs.iter().enumerate() {
        let before = reencoded().await;
        java_produce(&p.bootstrap, &topic, 1000 * n as u32, 2000, codec).await;
        let cut = reencoded().await - before;
        assert!(cut > 0.0, "{codec}: no batch was re-encoded");
    }
    let keys = 1000 * codecs.len() as u64 + 1000;
    let (count, distinct) = java_read_all(&p.bootstrap, &topic).await;
    assert_eq!(
        (count, distinct),
        (keys, keys),
        "the Java consumer: each key once"
    );
    let seen = kcat_read_all(&p.bootstrap, &topic).await;
    assert_eq!(seen.len() as u64, keys, "librdkafka: every key");
    assert!(seen.values().all(|n| *n == 1), "librdkafka: each once");
}

/// A non-idempotent lz4 batch of records keyed "a", "a", "b".
fn repeated_keys_batch() -> bytes::Bytes {
    use kafka_dedup_proxy::codec::record_batch::{encode_record_batch, parse_single_batch_header};
    use kafka_dedup_proxy::codec::records::{Compression, Record, encode_batch};
    let t = encode_record_batch(-1, -1, -1, 1_000, 0, &[]);
    let t = parse_single_batch_header(&t).unwrap();
    let records: Vec<Record> = ["a", "a", "b"]
        .iter()
        .enumerate()
        .map(|(n, k)| Record {
            attributes: 0,
            timestamp_delta: n as i64,
            offset_delta: n as i32,
            key: Some(bytes::Bytes::from(k.to_string())),
            value: Some(bytes::Bytes::from(format!("value-{n}"))),
            headers: Vec::new(),
        })
        .collect();
    encode_batch(&t, Compression::Lz4, -1, &records).unwrap()
}

/// The record batch stored at offset 0 of `topic`/0, fetched from the
/// leader itself (not through a proxy).
async fn stored_batch(topic: &str) -> bytes::Bytes {
    use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{FetchRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let node = common::cluster_faults::leader_of(topic, 0).await;
    let addr = format!("127.0.0.1:{}", cluster().broker_ports[node as usize - 1]);
    let mut conn = RawConn::connect(&addr).await;
    let req = FetchRequest::default()
        .with_max_wait_ms(100)
        .with_min_bytes(1)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![
                    FetchPartition::default()
                        .with_partition(0)
                        .with_partition_max_bytes(1 << 20),
                ]),
        ]);
    let resp = conn.call(12, &req).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0, "fetch from the leader");
    p.records.clone().expect("records at offset 0")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_key_dedup_off_produce_bytes_reach_the_broker_unchanged() {
    let _g = cluster_lock().read().await;
    let sent = repeated_keys_batch();
    // Bytes 17.. are the CRC and everything it covers; the broker sets the
    // base offset and leader epoch before them.
    let same =
        |stored: &bytes::Bytes| stored.len() >= sent.len() && stored[17..sent.len()] == sent[17..];
    let plain = start_proxy(&[]).await;
    let keyed = start_proxy(
        &key_dedup_args("sixon-*", "key")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    )
    .await;
    let cases = [
        (&plain, unique("sixoff-plain"), true),
        (&keyed, unique("sixoff-other"), true),
        // The control: key dedup on for the topic cuts the second "a".
        (&keyed, unique("sixon-keys"), false),
    ];
    for (p, topic, unchanged) in cases {
        create_topic(&topic, 1).await;
        let leader = p.broker_addr(common::cluster_faults::leader_of(&topic, 0).await);
        let (e, offset) = common::raw::produce_once(&leader, None, &topic, 0, sent.clone()).await;
        assert_eq!((e, offset), (0, 0), "{topic}");
        let stored = stored_batch(&topic).await;
        assert_eq!(
            same(&stored),
            unchanged,
            "{topic}: stored batch unchanged = {unchanged}"
        );
    }
}
