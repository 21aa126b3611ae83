//! Keyed records through the Java client harness, for the idempotency-key
//! tests: record i has key `k-i` and a 120-byte (or `size`) value `v-i`.

use std::collections::HashSet;

use super::harness;

/// The harness arguments of a producer of keyed records `ranges` (start,
/// count) one after the other, acks=all, `idempotence` on or off, in
/// `codec`, 5 ms linger.
pub fn keyed_produce_args(
    bootstrap: &str,
    topic: &str,
    ranges: &[(u32, u32)],
    size: u32,
    idempotence: bool,
    codec: &str,
) -> Vec<String> {
    let (start, count) = ranges[0];
    let mut args: Vec<String> = [
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--start",
        &start.to_string(),
        "--count",
        &count.to_string(),
        "--size",
        &size.to_string(),
        "--acks",
        "all",
        "--idempotence",
        &idempotence.to_string(),
        "--key-prefix",
        "k",
        "--linger-ms",
        "5",
        "--extra",
        &format!("compression.type={codec}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some((start, count)) = ranges.get(1) {
        args.extend([
            "--then-start".to_string(),
            start.to_string(),
            "--then-count".to_string(),
            count.to_string(),
        ]);
    }
    args
}

/// The Java client producing keyed records `start..start+count` without
/// idempotence, as an application instance: every record acknowledged.
pub async fn java_produce(bootstrap: &str, topic: &str, start: u32, count: u32, codec: &str) {
    let args = keyed_produce_args(bootstrap, topic, &[(start, count)], 120, false, codec);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = harness(&args).await;
    assert_eq!(out["acked"], count, "{out}");
    assert!(out["errors"].as_array().unwrap().is_empty(), "{out}");
}

/// (records, distinct values) of the whole topic, read through `bootstrap`.
pub async fn java_read_all(bootstrap: &str, topic: &str) -> (u64, u64) {
    let out = harness(&[
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--timeout-ms",
        "60000",
    ])
    .await;
    let count = out["count"].as_u64().unwrap();
    let dups = out["duplicates"].as_u64().unwrap();
    let records = out["records"].as_array().unwrap();
    let distinct: HashSet<_> = records.iter().map(|r| r["v"].to_string()).collect();
    assert_eq!(distinct.len() as u64, count - dups, "{out}");
    (count, distinct.len() as u64)
}
