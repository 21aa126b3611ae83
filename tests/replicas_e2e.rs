//! Replicas sharing dedup state through Redis (docs/replicas.md), against
//! the real Kafka cluster and a real Redis (single node, and the Redis
//! Cluster `scripts/test` starts), with proxies as child processes so each
//! answer is counted in the `/metrics` of the replica that gave it.
//!
//! Needs `KDP_REDIS_URL` and `KDP_REDIS_CLUSTER_URL` (scripts/test starts
//! both through `scripts/redis`); the scenarios that kill Redis start a
//! redis-server of their own.

mod common;

use std::time::{Duration, Instant};

use common::cluster_faults::{PausedBroker, create_replicated_topic, leader_of};
use common::keyed::{java_produce, java_read_all};
use common::proxy_process::ProxyProcess;
use common::raw::{PRODUCE_VERSION, batch, first_partition, init_producer_id, produce_request};
use common::redis::{
    OwnRedis, SlowRelay, cluster_ports, failover, primaries, redis_cluster_lock, redis_cluster_url,
    redis_url,
};
use common::report::{Checks, report, secs};
use common::verifiable::{VerifiableProducer, verify_delivery};
use common::*;
use serde_json::json;

/// Produces `records` once on a new connection to `addr`; `None` when no
/// answer came within `within`.
async fn produce_within(
    addr: &str,
    topic: &str,
    records: bytes::Bytes,
    within: Duration,
) -> Option<(i16, i64)> {
    let mut conn = RawConn::connect(addr).await;
    let req = produce_request(None, topic, 0, records);
    let resp = tokio::time::timeout(within, conn.call(PRODUCE_VERSION, &req))
        .await
        .ok()?;
    let p = first_partition(&resp);
    Some((p.error_code, p.base_offset))
}

async fn store_calls(p: &ProxyProcess, op: &str) -> f64 {
    p.metric(
        "kdp_store_request_duration_seconds_count",
        &format!("op=\"{op}\""),
    )
    .await
}

/// Store write calls of `p` that succeeded (calls less errors).
async fn saved_ok(p: &ProxyProcess) -> f64 {
    store_calls(p, "save_batches").await
        - p.metric("kdp_store_errors_total", "op=\"save_batches\"")
            .await
}

/// Waits until `p` has written at least `n` batches' pipelines to the store.
async fn wait_saved(p: &ProxyProcess, n: f64) -> bool {
    for _ in 0..100 {
        if store_calls(p, "save_batches").await >= n {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn batch_committed_on_a_answered_by_b(store_url: &str, name: &str) {
    let _g = cluster_lock().write().await;
    let mut c = Checks::new();
    let topic = unique(name);
    create_replicated_topic(&topic, 1).await;
    let args = ["--dedup-store", store_url];
    let a = ProxyProcess::start(&cluster().bootstrap, &args).await;
    let b = ProxyProcess::start(&cluster().bootstrap, &args).await;
    let leader = leader_of(&topic, 0).await;
    let mut conn = RawConn::connect(&a.bootstrap()).await;
    let (pid, epoch) = init_producer_id(&mut conn, None).await;
    let records = batch(pid, epoch, 0, 3, "replica", false);
    let original = produce_within(
        &a.broker_addr(leader),
        &topic,
        records.clone(),
        Duration::from_secs(30),
    )
    .await;
    c.check(
        matches!(original, Some((0, o)) if o >= 0),
        format!("the original through A acknowledged ({original:?})"),
    );
    c.check(
        wait_saved(&a, 1.0).await,
        "A wrote the committed batch to the store",
    );
    let (b_answered, b_lookups) = (b.answered().await, store_calls(&b, "load_windows").await);
    // The leader cannot answer now: only B itself can.
    let paused = PausedBroker::pause(leader).await;
    c.check(
        paused.wait_stopped(Duration::from_secs(2)).await,
        format!("broker {leader} stopped by SIGSTOP"),
    );
    let t = Instant::now();
    let retry = produce_within(
        &b.broker_addr(leader),
        &topic,
        records,
        Duration::from_secs(10),
    )
    .await;
    let retry_ms = t.elapsed().as_secs_f64() * 1000.0;
    drop(paused);
    c.check(
        retry.is_some() && retry == original,
        format!("B answered the retry with the original's offset: {retry:?} vs {original:?}"),
    );
    let answered = b.answered().await - b_answered;
    c.eq(answered, 1.0, "batches B answered itself");
    let lookups = store_calls(&b, "load_windows").await - b_lookups;
    c.eq(lookups, 1.0, "store lookups by B for the retry");
    let seeded = b.metric("kdp_store_batches_seeded_total", "").await;
    c.positive(seeded, "batches B took from the store");
    report(
        name,
        json!({
            "store": store_url,
            "offset": original.map(|o| o.1),
            "retry_answer_ms": (retry_ms * 10.0).round() / 10.0,
            "answered_by_b": answered,
            "b_store_lookups": lookups,
        }),
        c,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_committed_through_replica_a_is_answered_by_replica_b_while_the_leader_is_paused() {
    batch_committed_on_a_answered_by_b(&redis_url(), "replica-batch-single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_through_a_redis_cluster() {
    let _r = redis_cluster_lock().read().await;
    batch_committed_on_a_answered_by_b(&redis_cluster_url(), "replica-batch-cluster").await;
}

async fn overlapping_keys_through_two_replicas(store_url: &str, name: &str) {
    let _g = cluster_lock().read().await;
    let mut c = Checks::new();
    let topic = unique(name);
    create_topic(&topic, 3).await;
    // A generous store timeout: this scenario is about claims racing
    // across replicas, not about a slow store (a call past its timeout is
    // a fallback, under which a duplicate may pass by design).
    let args = [
        "--dedup-store",
        store_url,
        "--dedup-store-timeout-ms",
        "2000",
        "--key-dedup-topics",
        &topic,
        "--key-dedup-source",
        "key",
    ];
    let a = ProxyProcess::start(&cluster().bootstrap, &args).await;
    let b = ProxyProcess::start(&cluster().bootstrap, &args).await;
    // Keys 0..5,999 through A and 3,000..8,999 through B at the same time:
    // the 3,000 shared keys race across the replicas.
    let t = Instant::now();
    let (ba, bb) = (a.bootstrap(), b.bootstrap());
    tokio::join!(
        java_produce(&ba, &topic, 0, 6_000, "lz4"),
        java_produce(&bb, &topic, 3_000, 6_000, "none"),
    );
    let produce_s = secs(t.elapsed());
    let (count, distinct) = java_read_all(&a.bootstrap(), &topic).await;
    c.eq(
        (count, distinct),
        (9_000, 9_000),
        "records and distinct keys in the topic",
    );
    let m = async |p: &ProxyProcess, name: &str, label: &str| p.metric(name, label).await;
    let dup = "outcome=\"duplicate\"";
    let ra = m(&a, "kdp_key_dedup_records_total", dup).await;
    let rb = m(&b, "kdp_key_dedup_records_total", dup).await;
    c.eq(
        ra + rb,
        3_000.0,
        "records removed by the two replicas together",
    );
    let claim = "op=\"claim_keys\"";
    let ca = m(&a, "kdp_store_request_duration_seconds_count", claim).await;
    let cb = m(&b, "kdp_store_request_duration_seconds_count", claim).await;
    let claim_s = m(&a, "kdp_store_request_duration_seconds_sum", claim).await
        + m(&b, "kdp_store_request_duration_seconds_sum", claim).await;
    let pa = m(&a, "kdp_requests_total", "api=\"produce\"").await;
    let pb = m(&b, "kdp_requests_total", "api=\"produce\"").await;
    c.positive(ca + cb, "key claims sent to the store");
    let waits = a.metric("kdp_store_key_waits_expired_total", "").await
        + b.metric("kdp_store_key_waits_expired_total", "").await;
    let errors =
        a.metric("kdp_store_errors_total", "").await + b.metric("kdp_store_errors_total", "").await;
    report(
        name,
        json!({
            "store": store_url,
            "records": count,
            "distinct": distinct,
            "removed_by_a": ra,
            "removed_by_b": rb,
            "produce_requests": pa + pb,
            "store_claim_calls_incl_polls": ca + cb,
            "claim_call_avg_ms": (claim_s / (ca + cb).max(1.0) * 10_000.0).round() / 10.0,
            "key_waits_expired": waits,
            "store_errors": errors,
            "produce_s": produce_s,
        }),
        c,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_producers_on_two_replicas_with_overlapping_keys_write_each_key_once() {
    overlapping_keys_through_two_replicas(&redis_url(), "replica-keys-single").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_keys_race_through_a_redis_cluster() {
    let _r = redis_cluster_lock().read().await;
    overlapping_keys_through_two_replicas(&redis_cluster_url(), "replica-keys-cluster").await;
}

const MESSAGES: usize = 3000;
const THROUGHPUT: usize = 300;

/// A producer through a replica whose store goes away mid-run: `fault`
/// breaks and repairs it. Nothing may be lost or fail, and the replica
/// must find its store again by itself.
async fn store_fault_mid_run<F, Fut>(store_url: &str, name: &str, policy: &str, fault: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = (String, Box<dyn std::any::Any + Send>)>,
{
    let _g = cluster_lock().read().await;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique(name);
    create_replicated_topic(&topic, 3).await;
    // Key dedup on the topic too (every record its own content key), with
    // `policy` for a store that cannot be asked.
    let proxy = ProxyProcess::start(
        &cluster().bootstrap,
        &[
            "--dedup-store",
            store_url,
            "--key-dedup-topics",
            &topic,
            "--key-dedup-source",
            "content",
            "--key-dedup-on-store-error",
            policy,
        ],
    )
    .await;
    let up_before = proxy.metric("kdp_store_up", "").await;
    let mut producer =
        VerifiableProducer::start(&proxy.bootstrap(), &topic, MESSAGES, THROUGHPUT, &[]).await;
    c.check(
        producer
            .wait_acked(MESSAGES / 3, Duration::from_secs(60))
            .await,
        "a third of the stream acknowledged before the fault",
    );
    let saves_before = saved_ok(&proxy).await;
    // What the fault returns is kept alive until the end (a restarted
    // redis-server is killed when dropped).
    let (what, _keep) = fault().await;
    let out = producer.finish(Duration::from_secs(120)).await;
    // Recovery without a restart: the store is up again and written to.
    let mut up_after = 0.0;
    for _ in 0..100 {
        up_after = proxy.metric("kdp_store_up", "").await;
        if up_after == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let errors = proxy.metric("kdp_store_errors_total", "").await;
    let fallbacks = proxy.metric("kdp_store_fallbacks_total", "").await;
    let key_fallbacks = proxy
        .metric(
            "kdp_store_fallbacks_total",
            &format!("what=\"key\",policy=\"{policy}\""),
        )
        .await;
    let claims = store_calls(&proxy, "claim_keys").await;
    let saves_after = saved_ok(&proxy).await;
    let verdict = verify_delivery(&proxy.bootstrap(), &topic, &out.acked).await;
    verdict.check(&mut c, &out, MESSAGES);
    c.eq(up_before, 1.0, "kdp_store_up before the fault");
    c.eq(
        up_after,
        1.0,
        "kdp_store_up after the fault, without a proxy restart",
    );
    c.check(
        saves_after > saves_before,
        "committed batches written after the fault",
    );
    c.eq(proxy.starts, 1, "proxy starts");
    c.positive(claims, "key claims sent to the store");
    if name.contains("kill") {
        c.positive(
            key_fallbacks,
            &format!("key fallbacks under policy {policy}"),
        );
    }
    let mut r = verdict.json();
    r["fault"] = json!(what);
    r["store_errors"] = json!(errors);
    r["store_fallbacks"] = json!(fallbacks);
    r["policy"] = json!(policy);
    r["key_fallbacks"] = json!(key_fallbacks);
    r["key_claim_calls"] = json!(claims);
    r["send_errors"] = json!(out.errors.len());
    r["duration_s"] = json!(secs(t0.elapsed()));
    report(name, r, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sigkilled_and_restarted_mid_run_loses_nothing_and_the_proxy_reconnects() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    store_fault_mid_run(&url, "replica-redis-kill", "forward", || async move {
        redis.kill().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let what = format!(
            "redis-server on {} SIGKILLed, restarted 3 s later",
            redis.port
        );
        (what, Box::new(redis) as Box<dyn std::any::Any + Send>)
    })
    .await;
}

/// The same kill under `--key-dedup-on-store-error fail`: while Redis is
/// gone the proxy refuses key-dedup batches with NOT_ENOUGH_REPLICAS, which
/// the idempotent Java producer retries; it completes once Redis is back,
/// with no send error and nothing lost or duplicated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_the_fail_policy_a_killed_redis_costs_retries_not_records() {
    let mut redis = OwnRedis::start().await;
    let url = redis.url();
    store_fault_mid_run(&url, "replica-redis-kill-fail", "fail", || async move {
        redis.kill().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        redis.restart().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let what = format!(
            "redis-server on {} SIGKILLed, restarted 3 s later",
            redis.port
        );
        (what, Box::new(redis) as Box<dyn std::any::Any + Send>)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_primary_failover_mid_run_loses_nothing() {
    let _w = redis_cluster_lock().write().await;
    let url = redis_cluster_url();
    let ports = cluster_ports(&url);
    store_fault_mid_run(&url, "replica-redis-failover", "forward", || async move {
        // Every primary in turn: whichever holds this producer's windows.
        let mut done = Vec::new();
        for port in primaries(ports[0]).await {
            let new = failover(port).await;
            done.push(format!("{port}->{new}"));
        }
        let what = format!("CLUSTER FAILOVER of primaries {}", done.join(", "));
        (what, Box::new(()) as Box<dyn std::any::Any + Send>)
    })
    .await;
}

/// 40 one-record batches through `p`, each of a new producer (a
/// producer-partition the replica does not know, so the store is asked):
/// the latencies in ms, sorted, and how many were acknowledged.
async fn produce_fresh_producers(p: &ProxyProcess, topic: &str, leader: i32) -> (Vec<f64>, usize) {
    let mut ms = Vec::new();
    let mut ok = 0;
    for _ in 0..40 {
        let mut conn = RawConn::connect(&p.bootstrap()).await;
        let (pid, epoch) = init_producer_id(&mut conn, None).await;
        let records = batch(pid, epoch, 0, 1, "slow", false);
        let t = Instant::now();
        let r = produce_within(
            &p.broker_addr(leader),
            topic,
            records,
            Duration::from_secs(30),
        )
        .await;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
        ok += usize::from(matches!(r, Some((0, _))));
    }
    ms.sort_by(f64::total_cmp);
    (ms, ok)
}

/// Produce latency with a slow store (every byte to and from Redis held
/// 200 ms) against the same proxy without a store: bounded by the store
/// timeout (50 ms) because the lookup gives up and the batch is forwarded.
/// Printed as measured; the assertions are on what happened, not on time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_costs_at_most_its_timeout_per_request() {
    let _g = cluster_lock().read().await;
    let mut c = Checks::new();
    let redis = OwnRedis::start().await;
    let relay = SlowRelay::start(redis.port, Duration::from_millis(200)).await;
    let topic = unique("replica-slow-store");
    create_replicated_topic(&topic, 1).await;
    let slow = ProxyProcess::start(
        &cluster().bootstrap,
        &[
            "--dedup-store",
            &relay.url(),
            "--dedup-store-timeout-ms",
            "50",
        ],
    )
    .await;
    let plain = ProxyProcess::start(&cluster().bootstrap, &[]).await;
    let leader = leader_of(&topic, 0).await;
    let (plain_ms, plain_ok) = produce_fresh_producers(&plain, &topic, leader).await;
    let (slow_ms, slow_ok) = produce_fresh_producers(&slow, &topic, leader).await;
    let pct = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    let timeouts = slow
        .metric("kdp_store_errors_total", "kind=\"timeout\"")
        .await;
    let fallbacks = slow
        .metric("kdp_store_fallbacks_total", "what=\"batch\"")
        .await;
    c.eq(plain_ok, 40, "produces acknowledged without a store");
    c.eq(slow_ok, 40, "produces acknowledged with the slow store");
    c.check(
        timeouts >= 40.0,
        format!("store lookups timed out ({timeouts})"),
    );
    c.check(
        fallbacks >= 40.0,
        format!("batch fallbacks counted ({fallbacks})"),
    );
    let r = json!({
        "store_delay_ms": 200,
        "store_timeout_ms": 50,
        "requests": 40,
        "no_store_p50_ms": pct(&plain_ms, 0.5),
        "no_store_p99_ms": pct(&plain_ms, 0.99),
        "slow_store_p50_ms": pct(&slow_ms, 0.5),
        "slow_store_p99_ms": pct(&slow_ms, 0.99),
        "added_p50_ms": pct(&slow_ms, 0.5) - pct(&plain_ms, 0.5),
        "store_timeouts": timeouts,
    });
    eprintln!("slow store latency: {r}");
    report("replica-slow-store", r, c);
}
