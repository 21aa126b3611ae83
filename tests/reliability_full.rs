//! Reliability, the whole suite: exactly-once through broker failures,
//! network faults, proxy restarts and hostile clients, judged with Kafka's
//! own VerifiableProducer and VerifiableConsumer as Kafka's system tests
//! judge delivery. Every test is ignored so that it only runs from
//!
//! ```sh
//! scripts/reliability
//! # which runs, on its own 3-node cluster:
//! cargo test --test reliability_full -- --ignored --test-threads=1
//! ```
//!
//! Each scenario is bounded (under 2 minutes), stops by itself, restarts
//! or resumes every broker it killed or paused (also on failure), and
//! prints one `RELIABILITY {json}` line. Results: docs/reliability.md.

mod common;

use common::verifiable::{self, NetworkFaults, Restart};
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn leader_killed_mid_stream_and_restarted() {
    let _g = cluster_lock().write().await;
    let v = verifiable::leader_kill(16_000, 400, 1).await;
    assert!(v.is_clean(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn leader_paused_mid_stream_then_resumed() {
    let _g = cluster_lock().write().await;
    let v = verifiable::leader_pause(16_000, 400, Duration::from_secs(15)).await;
    assert!(v.is_clean(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn connections_reset_responses_lost_delayed_and_black_holed() {
    let _g = cluster_lock().write().await;
    let v = verifiable::network_faults(
        20_000,
        400,
        NetworkFaults {
            resets: 4,
            lost_responses: 10,
            delay: Some((Duration::from_millis(1500), Duration::from_secs(4))),
            black_hole: Some(Duration::from_secs(8)),
        },
    )
    .await;
    assert!(v.is_clean(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn proxy_restarted_with_sigterm_and_sigkill_mid_stream() {
    let _g = cluster_lock().write().await;
    let v = verifiable::proxy_restarts(
        16_000,
        400,
        &[Restart::Term, Restart::Kill, Restart::Term, Restart::Kill],
    )
    .await;
    assert!(v.is_clean(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn idempotent_epoch_bump_fences_the_older_epoch() {
    let _g = cluster_lock().write().await;
    verifiable::idempotent_epoch_bump().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn transactional_epoch_bump_fences_the_older_epoch() {
    let _g = cluster_lock().write().await;
    let r = verifiable::transactional_epoch_bump().await;
    assert_eq!(r.new_epoch.0, 0, "{r:?}");
    assert_ne!(
        r.zombie_retry_before_new_epoch.0, 0,
        "the fenced epoch's retry is fenced before the new epoch wrote: {r:?}"
    );
    assert_ne!(r.zombie_retry_after_new_epoch.0, 0, "and after: {r:?}");
    assert_eq!(
        r.committed_records, 2,
        "only the new epoch's records: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn transactional_abort_and_retry_is_read_committed_exactly_once() {
    let _g = cluster_lock().write().await;
    verifiable::transactional_abort_retry(2000, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn transactional_retry_through_lost_responses_is_read_committed_exactly_once() {
    let _g = cluster_lock().write().await;
    verifiable::transactional_abort_retry(2000, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn hostile_input_and_3000_idle_connections_leave_the_proxy_serving() {
    let _g = cluster_lock().write().await;
    verifiable::hostile_input(3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability"]
async fn connection_limit_closes_and_counts_the_excess() {
    let _g = cluster_lock().write().await;
    verifiable::connection_limit(50, 25).await;
}

#[test]
#[ignore = "reliability suite: scripts/reliability"]
fn a_million_producer_partitions_stay_within_a_200k_cache() {
    verifiable::cache_memory(1_000_000, 200_000);
}
