//! The Java transactional producer (through the client harness) and a
//! read_committed tally of what it wrote.

use std::collections::HashSet;

use super::harness;

/// The Java transactional producer writes `count` records "txn-<i>" in
/// one transaction and commits or aborts it.
pub async fn txn_produce(
    bootstrap: String,
    topic: String,
    tid: String,
    count: usize,
    abort: bool,
) -> serde_json::Value {
    let n = count.to_string();
    let mut args = vec![
        "produce",
        "--bootstrap",
        &bootstrap,
        "--topic",
        &topic,
        "--count",
        &n,
        "--transactional-id",
        &tid,
        "--value-prefix",
        "txn",
        "--linger-ms",
        "5",
        "--extra",
        "request.timeout.ms=5000",
    ];
    if abort {
        args.push("--abort");
    }
    harness(&args).await
}

/// Reads `topic` read_committed and tallies the values "txn-<i>" against
/// the `acked` records 0..acked: (consumed, lost, duplicated).
pub async fn read_committed_tally(
    bootstrap: &str,
    topic: &str,
    acked: usize,
) -> (usize, usize, usize) {
    let rc = harness(&[
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--from-beginning",
        "--isolation",
        "read_committed",
        "--expect",
        &acked.to_string(),
        "--timeout-ms",
        "30000",
    ])
    .await;
    let values: Vec<i64> = rc["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["v"].as_str())
                .filter_map(|v| v.trim_end_matches('.').rsplit('-').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let distinct: HashSet<i64> = values.iter().copied().collect();
    let lost = (0..acked as i64).filter(|i| !distinct.contains(i)).count();
    (values.len(), lost, values.len() - distinct.len())
}
