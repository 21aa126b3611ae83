//! Reliability, the fast subset CI runs: hostile input against the proxy
//! binary, an idempotent producer's epoch bump, Kafka's VerifiableProducer
//! through connection resets and lost Produce responses, and the proxy
//! binary restarted with SIGTERM mid-stream. Every scenario prints one
//! `RELIABILITY {json}` line (records acked, consumed, faults, lost,
//! duplicated). The whole suite is `tests/reliability_full.rs`, run by
//! `scripts/reliability`; results are in docs/reliability.md.

mod common;

use common::verifiable::{self, NetworkFaults, Restart};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_closes_only_its_own_connection_while_a_producer_carries_on() {
    let _g = cluster_lock().write().await;
    verifiable::hostile_input(1000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_are_closed_counted_and_logged() {
    let _g = cluster_lock().write().await;
    verifiable::connection_limit(20, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_epoch_is_fenced_by_the_broker_never_answered_from_the_cache() {
    let _g = cluster_lock().write().await;
    verifiable::idempotent_epoch_bump().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifiable_producer_through_resets_and_lost_responses_loses_and_duplicates_nothing() {
    let _g = cluster_lock().write().await;
    let v = verifiable::network_faults(
        3000,
        400,
        NetworkFaults {
            resets: 2,
            lost_responses: 4,
            delay: None,
            black_hole: None,
        },
    )
    .await;
    assert!(v.is_clean(), "{v:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verifiable_producer_through_a_proxy_sigterm_restart_loses_and_duplicates_nothing() {
    let _g = cluster_lock().write().await;
    let v = verifiable::proxy_restarts(3000, 400, &[Restart::Term]).await;
    assert!(v.is_clean(), "{v:?}");
}

#[test]
fn dedup_cache_holds_its_bound_and_counts_evictions() {
    // in memory only: no cluster
    verifiable::cache_memory(50_000, 12_800);
}

/// Fixed (src/proxy/connection.rs, `upstream_reader`): a request the proxy
/// forwards without parsing it, and that the broker rejects by closing the
/// connection (an unknown API key, an unsupported version of a forwarded
/// API, a malformed body), closes the client's connection with nothing in
/// the proxy's log above debug ("broker closed the connection", without
/// the client's address). Every other malformed input gets a WARN line
/// naming the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_the_broker_rejects_by_closing_are_logged_with_the_client_address() {
    let _g = cluster_lock().read().await;
    let proxy = verifiable::ProxyProcess::start(&cluster().bootstrap, &[]).await;
    for (name, bytes, half_close, expect) in verifiable::hostile_inputs(100 << 20) {
        if expect != verifiable::Expect::BrokerCloses {
            continue;
        }
        let r =
            verifiable::send_hostile(&proxy, &proxy.bootstrap(), name, &bytes, half_close, expect)
                .await;
        assert!(r.closed, "{name}: closed");
        assert!(
            r.log_line.is_some(),
            "{name}: the connection was closed without a log line naming the client: {:?}",
            proxy.log_tail(5)
        );
    }
}

/// Fixed (src/dedup/cache.rs, src/proxy/connection.rs): the proxy learned a
/// producer's epoch only from the Produce batches it sees per partition.
/// After InitProducerId bumps a transactional producer's epoch (fencing
/// the old one and aborting its open transaction), a retry of the fenced
/// epoch's batch on a partition the new epoch has not written yet is
/// answered from the cache with error NONE and the original offset, while
/// the broker answers it with INVALID_PRODUCER_EPOCH (47). Reproduction:
/// InitProducerId(T) -> (P, e); AddPartitionsToTxn(T, P, e, t-0); Produce
/// batch X (P, e, seq 0); InitProducerId(T) -> (P, e+1); Produce X again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_transactional_epoch_is_never_answered_from_the_cache() {
    let _g = cluster_lock().write().await;
    let r = verifiable::transactional_epoch_bump().await;
    assert_ne!(
        r.broker_answer_to_zombie_retry.0, 0,
        "the broker fences the old epoch: {r:?}"
    );
    assert_eq!(
        r.zombie_retry_before_new_epoch.0, r.broker_answer_to_zombie_retry.0,
        "the proxy must give the broker's answer, not a cached success: {r:?}"
    );
}
