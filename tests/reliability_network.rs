//! Reliability through network faults between the proxy and the brokers,
//! injected by the fault relay (tests/common/relay.rs): connections reset,
//! Produce responses lost after the broker wrote the batch, Produce
//! responses held past the client's request timeout, every frame delayed,
//! and a black hole. Judged with Kafka's VerifiableProducer and
//! VerifiableConsumer, and a transactional producer read_committed.
//!
//! The held responses are where the proxy must answer itself: the client
//! gives up on a request whose original is still at the broker and
//! retries; the proxy waits for the original's outcome (or finds it
//! committed) and answers the retry, so `answered_by_proxy > 0` is
//! asserted. A plain forwarder passes the retry to the broker and fails
//! that check (`KDP_RELIABILITY_SABOTAGE=forwarder`).

mod common;

use std::time::{Duration, Instant};

use common::cluster_faults::create_replicated_topic;
use common::proxy_process::ProxyProcess;
use common::relay::{Relay, RelayStats};
use common::report::{Checks, report, secs};
use common::txn::{read_committed_tally, txn_produce};
use common::verifiable::{VerifiableProducer, verify_delivery};
use common::*;
use serde_json::json;

/// The proxy binary with every broker connection (bootstrap included)
/// through `relay`.
async fn proxy_through(relay: &Relay) -> ProxyProcess {
    let upstream: Vec<String> = relay.routes.iter().map(|(_, r)| r.clone()).collect();
    ProxyProcess::start(
        &upstream.join(","),
        &["--broker-address-map", &relay.address_map()],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_lost_held_and_delayed_responses_and_a_black_hole_lose_and_duplicate_nothing() {
    let _g = cluster_lock().read().await;
    let (messages, throughput) = (8000, 400);
    let (resets, lose, hold_n) = (2, 6, 3);
    // past the producer's request.timeout.ms of 5 s
    let hold = Duration::from_secs(7);
    let (delay, delay_window) = (Duration::from_millis(1500), Duration::from_secs(3));
    let black_hole = Duration::from_secs(6);

    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-network");
    create_replicated_topic(&topic, 3).await;
    let relay = Relay::for_cluster().await;
    let proxy = proxy_through(&relay).await;
    let (a0, f0) = (proxy.answered().await, proxy.forwarded().await);
    let mut producer =
        VerifiableProducer::start(&proxy.bootstrap(), &topic, messages, throughput, &[]).await;
    let step = messages / 10;
    let progressed = |acked: usize| (acked + step).min(messages);
    c.check(
        producer.wait_acked(step, Duration::from_secs(60)).await,
        "progress before the faults",
    );

    for round in 0..resets {
        relay.reset_all();
        let want = progressed(producer.acked());
        let ok = producer.wait_acked(want, Duration::from_secs(30)).await;
        c.check(ok, format!("progress after reset round {round}"));
    }
    let reset_count = relay.count(|s: &RelayStats| &s.resets);
    c.positive(reset_count, "connections reset");

    relay.lose_produce_responses(lose);
    let want = progressed(producer.acked());
    let ok = producer.wait_acked(want, Duration::from_secs(30)).await;
    c.check(ok, "progress after the lost responses");
    let lost = relay.count(|s: &RelayStats| &s.lost_responses);
    c.eq(lost, lose, "Produce responses lost");

    let answered_before_hold = proxy.answered().await;
    relay.hold_produce_responses(hold_n, hold);
    let want = progressed(producer.acked());
    let ok = producer.wait_acked(want, Duration::from_secs(60)).await;
    c.check(ok, "progress after the held responses");
    let held = relay.count(|s: &RelayStats| &s.held_responses);
    c.eq(
        held,
        hold_n,
        "Produce responses held past the request timeout",
    );
    let answered_in_hold = proxy.answered().await - answered_before_hold;

    relay.set_delay(delay);
    tokio::time::sleep(delay_window).await;
    // The producer may be between connections then (backing off after the
    // held responses): a CI run once saw no frame in the whole window. The
    // delay stays until it has met traffic, bounded.
    let met_traffic_by = Instant::now() + Duration::from_secs(20);
    while relay.count(|s: &RelayStats| &s.delayed_frames) == 0 && Instant::now() < met_traffic_by {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    relay.set_delay(Duration::ZERO);
    let want = progressed(producer.acked());
    let ok = producer.wait_acked(want, Duration::from_secs(30)).await;
    c.check(ok, "progress after the delay");
    let delayed = relay.count(|s: &RelayStats| &s.delayed_frames);
    c.positive(delayed, "frames delayed");

    relay.black_hole(true);
    tokio::time::sleep(black_hole).await;
    relay.black_hole(false);
    let want = progressed(producer.acked());
    let ok = producer.wait_acked(want, Duration::from_secs(40)).await;
    c.check(ok, "progress after the black hole");
    let held_by_black_hole = relay.count(|s: &RelayStats| &s.held);
    let black_holes = relay.count(|s: &RelayStats| &s.blackholes);
    c.eq(black_holes, 1, "black holes");
    c.positive(
        held_by_black_hole,
        "frames and connections held by the black hole",
    );

    let out = producer.finish(Duration::from_secs(150)).await;
    let (a1, f1) = (proxy.answered().await, proxy.forwarded().await);
    c.positive(
        answered_in_hold,
        "retries of held requests answered by the proxy (its own /metrics)",
    );
    let verdict = verify_delivery(&proxy.bootstrap(), &topic, &out.acked).await;
    verdict.check(&mut c, &out, messages);
    let mut r = verdict.json();
    r["faults"] = json!(format!(
        "{reset_count} connections reset, {lost} Produce responses lost, {held} held {} s, \
         {delayed} frames delayed {} ms, {black_holes} black hole of {} s ({held_by_black_hole} held)",
        hold.as_secs(),
        delay.as_millis(),
        black_hole.as_secs()
    ));
    r["fault_count"] = json!(relay.fault_count());
    r["relay"] = relay.faults_json();
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_proxy"] = json!(a1 - a0);
    r["answered_during_hold"] = json!(answered_in_hold);
    r["forwarded"] = json!(f1 - f0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("network-faults", r, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactional_retry_through_lost_responses_is_read_committed_exactly_once() {
    let _g = cluster_lock().read().await;
    let count = 1000usize;
    let lose = 3;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-txn-lossy");
    create_replicated_topic(&topic, 3).await;
    let relay = Relay::for_cluster().await;
    let proxy = proxy_through(&relay).await;
    let tid = unique("rel-txn-id");
    let produce =
        |abort: bool| txn_produce(proxy.bootstrap(), topic.clone(), tid.clone(), count, abort);
    let aborted = produce(true).await;
    c.eq(
        aborted["transaction"].as_str(),
        Some("aborted"),
        "first transaction",
    );
    relay.lose_produce_responses(lose);
    let committed = produce(false).await;
    c.eq(
        committed["transaction"].as_str(),
        Some("committed"),
        "second transaction",
    );
    let lost_responses = relay.count(|s: &RelayStats| &s.lost_responses);
    c.eq(
        lost_responses,
        lose,
        "Produce responses lost in the committed transaction",
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
        "txn-abort-retry-lossy",
        json!({
            "acked": acked,
            "aborted_records": aborted["acked"],
            "consumed": consumed,
            "lost": lost,
            "duplicated": duplicated,
            "faults": format!("1 abort, {lost_responses} Produce responses lost"),
            "fault_count": 1 + lost_responses,
            "relay": relay.faults_json(),
            "duration_s": secs(t0.elapsed()),
        }),
        c,
    );
}
