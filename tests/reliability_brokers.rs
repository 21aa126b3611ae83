//! Reliability through broker failures: the leader of a partition killed
//! or paused mid-stream while Kafka's VerifiableProducer writes through
//! the proxy binary, judged with VerifiableConsumer (see
//! docs/reliability.md). Both hold the write side of the cluster lock: no
//! other test of this binary runs while a broker is down.
//!
//! These scenarios claim that the proxy keeps what the brokers guarantee
//! (no loss, no duplicate, acknowledged offsets hold their values) through
//! a leader change; they do not claim answers from the proxy's cache: the
//! retries here follow NOT_LEADER errors and broken connections, whose
//! originals the proxy never saw committed, and go to the broker.

mod common;

use std::time::{Duration, Instant};

use common::cluster_faults::{
    KilledBroker, PausedBroker, create_replicated_topic, leader_of, leader_other_than,
    wait_cluster_whole,
};
use common::proxy_process::ProxyProcess;
use common::report::{Checks, report, secs};
use common::verifiable::{VerifiableProducer, verify_delivery};
use common::*;
use serde_json::json;

const MESSAGES: usize = 6000;
const THROUGHPUT: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_stream_and_restarted_loses_and_duplicates_nothing() {
    let _g = cluster_lock().write().await;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-leader-kill");
    create_replicated_topic(&topic, 3).await;
    let proxy = ProxyProcess::start(&cluster().bootstrap, &[]).await;
    let (a0, f0) = (proxy.answered().await, proxy.forwarded().await);
    let mut producer =
        VerifiableProducer::start(&proxy.bootstrap(), &topic, MESSAGES, THROUGHPUT, &[]).await;
    c.check(
        producer
            .wait_acked(MESSAGES / 3, Duration::from_secs(60))
            .await,
        "a third of the stream acknowledged before the kill",
    );
    let leader = leader_of(&topic, 0).await;
    let acked_at_kill = producer.acked();
    let guard = KilledBroker::kill(leader).await;
    let down = Instant::now();
    let killed = usize::from(guard.gone);
    c.check(guard.gone, format!("broker {leader} gone after SIGKILL"));
    let new_leader = leader_other_than(&topic, 0, leader, Duration::from_secs(30)).await;
    c.check(
        new_leader.is_some(),
        format!("partition 0 moved off the killed broker {leader} ({new_leader:?})"),
    );
    let went_on = producer
        .wait_acked(acked_at_kill + THROUGHPUT * 3, Duration::from_secs(40))
        .await;
    c.check(went_on, "the stream went on while the broker was down");
    // restart-node returns once the node caught up and was unfenced
    guard.restart().await;
    let down_s = secs(down.elapsed());
    let out = producer.finish(Duration::from_secs(150)).await;
    let (a1, f1) = (proxy.answered().await, proxy.forwarded().await);
    let verdict = verify_delivery(&proxy.bootstrap(), &topic, &out.acked).await;
    verdict.check(&mut c, &out, MESSAGES);
    wait_cluster_whole().await;
    let mut r = verdict.json();
    r["faults"] = json!(format!(
        "{} leader SIGKILL (node {leader} at {acked_at_kill} acked, down {down_s} s), restarted",
        killed
    ));
    r["fault_count"] = json!(killed);
    r["new_leader"] = json!(new_leader);
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_proxy"] = json!(a1 - a0);
    r["forwarded"] = json!(f1 - f0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("leader-kill", r, c);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_paused_past_its_session_then_resumed_loses_and_duplicates_nothing() {
    let _g = cluster_lock().write().await;
    let t0 = Instant::now();
    let mut c = Checks::new();
    let topic = unique("rel-leader-pause");
    create_replicated_topic(&topic, 3).await;
    let proxy = ProxyProcess::start(&cluster().bootstrap, &[]).await;
    let (a0, f0) = (proxy.answered().await, proxy.forwarded().await);
    let mut producer =
        VerifiableProducer::start(&proxy.bootstrap(), &topic, MESSAGES, THROUGHPUT, &[]).await;
    c.check(
        producer
            .wait_acked(MESSAGES / 3, Duration::from_secs(60))
            .await,
        "a third of the stream acknowledged before the pause",
    );
    let leader = leader_of(&topic, 0).await;
    let acked_at_pause = producer.acked();
    // Past the brokers' 9 s session timeout: the controller fences the
    // paused node and moves its partitions; it comes back a zombie with
    // requests still in its socket buffers.
    // The pause lasts until the partition has moved (at least 12 s): when
    // the paused node is also the active KRaft controller, the quorum first
    // elects another one, whose session clock for the paused broker starts
    // only then, so the move can take well over 12 s (a CI run saw none
    // within 12 s of waiting).
    let pause = Duration::from_secs(12);
    let move_within = Duration::from_secs(45);
    let paused_at = Instant::now();
    let (stopped, new_leader) = {
        let paused = PausedBroker::pause(leader).await;
        let stopped = paused.wait_stopped(Duration::from_secs(2)).await;
        let new_leader = leader_other_than(&topic, 0, leader, move_within).await;
        tokio::time::sleep(pause.saturating_sub(paused_at.elapsed())).await;
        (stopped, new_leader)
    };
    let paused_s = secs(paused_at.elapsed());
    c.check(stopped, format!("broker {leader} stopped by SIGSTOP"));
    c.check(
        new_leader.is_some(),
        format!("partition 0 moved off the paused broker {leader} ({new_leader:?})"),
    );
    let acked_at_resume = producer.acked();
    let out = producer.finish(Duration::from_secs(150)).await;
    let (a1, f1) = (proxy.answered().await, proxy.forwarded().await);
    let verdict = verify_delivery(&proxy.bootstrap(), &topic, &out.acked).await;
    verdict.check(&mut c, &out, MESSAGES);
    wait_cluster_whole().await;
    let mut r = verdict.json();
    r["faults"] = json!(format!(
        "{} leader SIGSTOP (node {leader}) for {paused_s} s at {acked_at_pause} acked ({acked_at_resume} at SIGCONT)",
        usize::from(stopped)
    ));
    r["fault_count"] = json!(usize::from(stopped));
    r["new_leader"] = json!(new_leader);
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_proxy"] = json!(a1 - a0);
    r["forwarded"] = json!(f1 - f0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("leader-pause", r, c);
}
