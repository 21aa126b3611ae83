//! Producer epochs and transactions through the proxy binary, with raw
//! producers (tests/common/raw.rs) and the Java transactional producer.
//!
//! The proxy answers a retry of a committed batch of the current epoch
//! from its cache (each such retry is asserted to be answered by the
//! proxy, from the process's own /metrics), and must never answer a retry
//! of a fenced epoch: the broker's INVALID_PRODUCER_EPOCH comes through.
//! Lost and duplicated records are counted by reading the topic back and
//! comparing with what was acknowledged.

mod common;

use std::time::Instant;

use common::cluster_faults::{create_replicated_topic, leader_of};
use common::proxy_process::ProxyProcess;
use common::raw::{
    add_partition_to_txn, batch, end_txn, errors, init_producer_id, produce_once, txn_coordinator,
};
use common::report::{Checks, report, secs};
use common::txn::{read_committed_tally, txn_produce};
use common::verifiable::{Record, harness_records, judge_records};
use common::*;
use serde_json::json;

/// The records of a batch from `batch(.., seq, n, tag, ..)` acknowledged
/// at `base_offset`.
fn acked_batch(tag: &str, seq: usize, n: usize, base_offset: i64) -> Vec<Record> {
    (0..n)
        .map(|i| (0, base_offset + i as i64, format!("{tag}-{}", seq + i)))
        .collect()
}

/// Runs `f` and returns its result with the batches the proxy answered
/// itself meanwhile.
async fn answered_during<T>(
    proxy: &ProxyProcess,
    f: impl std::future::Future<Output = T>,
) -> (T, f64) {
    let before = proxy.answered().await;
    let out = f.await;
    (out, proxy.answered().await - before)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_idempotent_epoch_is_fenced_by_the_broker_and_current_retries_answered_by_the_proxy()
 {
    let _g = cluster_lock().read().await;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-epoch");
    create_replicated_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let proxy = ProxyProcess::start(&cluster().bootstrap, &[]).await;
    let addr = proxy.broker_addr(leader);
    let a0 = proxy.answered().await;
    let mut conn = RawConn::connect(&addr).await;
    let (pid, e0) = init_producer_id(&mut conn, None).await;
    let mut acked = Vec::new();

    let old = batch(pid, e0, 0, 3, "old", false);
    let (err, o_old) = produce_once(&addr, None, &topic, 0, old.clone()).await;
    c.eq(err, errors::NONE, "first batch of the first epoch");
    if err == errors::NONE {
        acked.extend(acked_batch("old", 0, 3, o_old));
    }
    let (retry, by_proxy) =
        answered_during(&proxy, produce_once(&addr, None, &topic, 0, old.clone())).await;
    c.eq(
        retry,
        (errors::NONE, o_old),
        "same-epoch retry: the original offset",
    );
    c.eq(by_proxy, 1.0, "same-epoch retry answered by the proxy");

    let new = batch(pid, e0 + 1, 0, 2, "new", false);
    let (err, o_new) = produce_once(&addr, None, &topic, 0, new.clone()).await;
    c.eq(err, errors::NONE, "the bumped epoch starts at sequence 0");
    if err == errors::NONE {
        acked.extend(acked_batch("new", 0, 2, o_new));
    }

    let (fenced_retry, by_proxy_fenced) =
        answered_during(&proxy, produce_once(&addr, None, &topic, 0, old.clone())).await;
    c.eq(
        fenced_retry.0,
        errors::INVALID_PRODUCER_EPOCH,
        "older epoch's retry fenced by the broker",
    );
    let (fenced_next, by_proxy_next) = answered_during(
        &proxy,
        produce_once(&addr, None, &topic, 0, batch(pid, e0, 3, 1, "old", false)),
    )
    .await;
    c.eq(
        fenced_next.0,
        errors::INVALID_PRODUCER_EPOCH,
        "older epoch's next batch fenced",
    );
    c.eq(
        by_proxy_fenced + by_proxy_next,
        0.0,
        "fenced sends answered by the proxy",
    );
    let (new_retry, by_proxy_new) =
        answered_during(&proxy, produce_once(&addr, None, &topic, 0, new.clone())).await;
    c.eq(
        new_retry,
        (errors::NONE, o_new),
        "new-epoch retry: the original offset",
    );
    c.eq(by_proxy_new, 1.0, "new-epoch retry answered by the proxy");
    let answered = proxy.answered().await - a0;

    let consumed = harness(&[
        "consume",
        "--bootstrap",
        &proxy.bootstrap(),
        "--topic",
        &topic,
        "--from-beginning",
        "--expect",
        &acked.len().to_string(),
        "--timeout-ms",
        "20000",
    ])
    .await;
    let records = harness_records(&consumed);
    let verdict = judge_records(&acked, &records);
    verdict.check_consumed(&mut c);
    let fenced =
        usize::from(fenced_retry.0 != errors::NONE) + usize::from(fenced_next.0 != errors::NONE);
    let mut r = verdict.json();
    r["epochs"] = json!([e0, e0 + 1]);
    r["old_epoch_retry"] = json!([fenced_retry.0, fenced_retry.1]);
    r["old_epoch_next"] = json!([fenced_next.0, fenced_next.1]);
    r["new_epoch_retry"] = json!([new_retry.0, new_retry.1]);
    r["answered_by_proxy"] = json!(answered);
    r["faults"] = json!(format!(
        "epoch bump, {fenced} of 2 old-epoch sends fenced by the broker"
    ));
    r["fault_count"] = json!(fenced);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("epoch-bump-idempotent", r, c);
}

/// InitProducerId twice for one transactional id (the second bumps the
/// epoch and aborts the open transaction), producing with both epochs.
/// Holds the fix of a bug this suite found: the proxy learned epochs only
/// from Produce batches, and answered the fenced epoch's retry on a
/// partition the new epoch had not written yet from its cache (NONE and
/// the original offset) where the broker answers INVALID_PRODUCER_EPOCH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_transactional_epoch_is_never_answered_from_the_cache() {
    let _g = cluster_lock().read().await;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-txn-epoch");
    create_replicated_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let proxy = ProxyProcess::start(&cluster().bootstrap, &[]).await;
    let addr = proxy.broker_addr(leader);
    let a0 = proxy.answered().await;
    let tid = unique("rel-txn");
    let mut boot = RawConn::connect(&proxy.bootstrap()).await;
    let coordinator = txn_coordinator(&mut boot, &tid).await;
    let mut coord = RawConn::connect(&proxy.broker_addr(coordinator)).await;

    let (pid, e1) = init_producer_id(&mut coord, Some(&tid)).await;
    let added = add_partition_to_txn(&mut coord, &tid, pid, e1, &topic, 0).await;
    c.eq(
        added,
        errors::NONE,
        "partition added to the first transaction",
    );
    let a = batch(pid, e1, 0, 3, "zombie", true);
    let first = produce_once(&addr, Some(&tid), &topic, 0, a.clone()).await;
    c.eq(
        first.0,
        errors::NONE,
        "transactional batch of the first epoch",
    );
    let (retry, by_proxy) = answered_during(
        &proxy,
        produce_once(&addr, Some(&tid), &topic, 0, a.clone()),
    )
    .await;
    c.eq(
        retry,
        first,
        "retry while its epoch is current: the original answer",
    );
    c.eq(by_proxy, 1.0, "that retry answered by the proxy");

    let (pid2, e2) = init_producer_id(&mut coord, Some(&tid)).await;
    c.eq(
        pid2,
        pid,
        "same producer id after the second InitProducerId",
    );
    c.check(e2 > e1, format!("epoch bumped: {e1} -> {e2}"));

    let (zombie_before, by_proxy_before) = answered_during(
        &proxy,
        produce_once(&addr, Some(&tid), &topic, 0, a.clone()),
    )
    .await;
    // the same retry sent to the broker itself, not through the proxy
    let real_leader = format!("127.0.0.1:{}", cluster().broker_ports[leader as usize - 1]);
    let broker_on_zombie = produce_once(&real_leader, Some(&tid), &topic, 0, a.clone()).await;
    c.check(
        broker_on_zombie.0 != errors::NONE,
        format!("the broker fences the old epoch ({broker_on_zombie:?})"),
    );
    c.eq(
        zombie_before.0,
        broker_on_zombie.0,
        "fenced retry before the new epoch wrote: the broker's answer",
    );

    let added = add_partition_to_txn(&mut coord, &tid, pid, e2, &topic, 0).await;
    c.eq(
        added,
        errors::NONE,
        "partition added to the new epoch's transaction",
    );
    let b = batch(pid, e2, 0, 2, "current", true);
    let new_epoch = produce_once(&addr, Some(&tid), &topic, 0, b).await;
    c.eq(new_epoch.0, errors::NONE, "new epoch's batch");
    let (zombie_after, by_proxy_after) = answered_during(
        &proxy,
        produce_once(&addr, Some(&tid), &topic, 0, a.clone()),
    )
    .await;
    c.check(
        zombie_after.0 != errors::NONE,
        format!("fenced retry after the new epoch wrote is refused ({zombie_after:?})"),
    );
    c.eq(
        by_proxy_before + by_proxy_after,
        0.0,
        "fenced retries answered by the proxy",
    );
    let end = end_txn(&mut coord, &tid, pid, e2, true).await;
    c.eq(end, errors::NONE, "commit of the new epoch's transaction");
    let answered = proxy.answered().await - a0;

    let acked = if new_epoch.0 == errors::NONE {
        acked_batch("current", 0, 2, new_epoch.1)
    } else {
        Vec::new()
    };
    let committed = harness(&[
        "consume",
        "--bootstrap",
        &proxy.bootstrap(),
        "--topic",
        &topic,
        "--from-beginning",
        "--isolation",
        "read_committed",
        "--expect",
        &acked.len().to_string(),
        "--timeout-ms",
        "20000",
    ])
    .await;
    let records = harness_records(&committed);
    let zombies_visible = records.iter().filter(|r| r.2.starts_with("zombie")).count();
    c.eq(
        zombies_visible,
        0,
        "records of the aborted epoch read_committed",
    );
    let verdict = judge_records(&acked, &records);
    verdict.check_consumed(&mut c);
    let fenced =
        usize::from(zombie_before.0 != errors::NONE) + usize::from(zombie_after.0 != errors::NONE);
    let mut r = verdict.json();
    r["epochs"] = json!([e1, e2]);
    r["zombie_retry_before_new_epoch"] = json!([zombie_before.0, zombie_before.1]);
    r["broker_answer_to_zombie_retry"] = json!([broker_on_zombie.0, broker_on_zombie.1]);
    r["zombie_retry_after_new_epoch"] = json!([zombie_after.0, zombie_after.1]);
    r["answered_by_proxy"] = json!(answered);
    r["faults"] = json!(format!(
        "InitProducerId twice (epoch bump, open transaction aborted), {fenced} of 2 zombie retries fenced"
    ));
    r["fault_count"] = json!(fenced);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("epoch-bump-transactional", r, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_abort_and_retry_is_read_committed_exactly_once() {
    let _g = cluster_lock().read().await;
    let count = 1000usize;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-txn-abort");
    create_replicated_topic(&topic, 3).await;
    let proxy = ProxyProcess::start(&cluster().bootstrap, &[]).await;
    let tid = unique("rel-txn-id");
    let aborted = txn_produce(proxy.bootstrap(), topic.clone(), tid.clone(), count, true).await;
    c.eq(
        aborted["transaction"].as_str(),
        Some("aborted"),
        "first transaction",
    );
    let aborted_n = aborted["acked"].as_u64().unwrap_or(0);
    c.eq(
        aborted_n,
        count as u64,
        "records written in the aborted transaction",
    );
    let committed = txn_produce(proxy.bootstrap(), topic.clone(), tid.clone(), count, false).await;
    c.eq(
        committed["transaction"].as_str(),
        Some("committed"),
        "second transaction",
    );
    let acked = committed["acked"].as_u64().unwrap_or(0) as usize;
    c.eq(
        acked,
        count,
        "records acknowledged in the committed transaction",
    );
    let (consumed, lost, duplicated) =
        read_committed_tally(&proxy.bootstrap(), &topic, acked).await;
    c.positive(consumed, "records read_committed");
    c.eq(lost, 0, "committed records lost");
    c.eq(duplicated, 0, "records duplicated (aborted copies visible)");
    report(
        "txn-abort-retry",
        json!({
            "acked": acked,
            "aborted_records": aborted_n,
            "consumed": consumed,
            "lost": lost,
            "duplicated": duplicated,
            "faults": format!("{} abort of {aborted_n} records, then the same records committed", usize::from(aborted["transaction"] == "aborted")),
            "fault_count": usize::from(aborted["transaction"] == "aborted"),
            "duration_s": secs(t0.elapsed()),
        }),
        c,
    );
}
