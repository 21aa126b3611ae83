//! Metric names, described once with their units. Labels stay bounded:
//! API names come from a fixed table, outcomes and kinds are enums.

use std::sync::OnceLock;

use metrics::{Counter, Histogram, Unit, describe_counter, describe_gauge, describe_histogram};

use crate::codec::api::api_name;

pub const CONNECTIONS_ACTIVE: &str = "kdp_connections_active";
pub const CONNECTIONS_TOTAL: &str = "kdp_connections_total";
pub const CONNECTIONS_REJECTED_TOTAL: &str = "kdp_connections_rejected_total";
pub const HTTP_CONNECTIONS_REJECTED_TOTAL: &str = "kdp_http_connections_rejected_total";
pub const REQUESTS_TOTAL: &str = "kdp_requests_total";
pub const UPSTREAM_REQUEST_DURATION_SECONDS: &str = "kdp_upstream_request_duration_seconds";
pub const PRODUCE_BATCHES_TOTAL: &str = "kdp_produce_batches_total";
pub const DEDUP_BYTES_SAVED_TOTAL: &str = "kdp_dedup_bytes_saved_total";
pub const DEDUP_CACHE_ENTRIES: &str = "kdp_dedup_cache_entries";
pub const DEDUP_CACHE_CAPACITY: &str = "kdp_dedup_cache_capacity";
pub const DEDUP_CACHE_EVICTIONS_TOTAL: &str = "kdp_dedup_cache_evictions_total";
pub const FRAME_ERRORS_TOTAL: &str = "kdp_frame_errors_total";
pub const BROKER_LISTENERS: &str = "kdp_broker_listeners";
pub const UPSTREAM_UP: &str = "kdp_upstream_up";
pub const KEY_DEDUP_RECORDS_TOTAL: &str = "kdp_key_dedup_records_total";
pub const KEY_DEDUP_BATCHES_TOTAL: &str = "kdp_key_dedup_batches_total";
pub const KEY_DEDUP_KEYS: &str = "kdp_key_dedup_keys";
pub const KEY_DEDUP_EVICTIONS_TOTAL: &str = "kdp_key_dedup_evictions_total";
pub const KEY_DEDUP_PRODUCER_LINES: &str = "kdp_key_dedup_producer_lines";
pub const KEY_DEDUP_PRODUCER_LINE_EVICTIONS_TOTAL: &str =
    "kdp_key_dedup_producer_line_evictions_total";

/// `outcome` label values of [`PRODUCE_BATCHES_TOTAL`].
pub mod outcome {
    /// Sent to the broker (fresh batch, or a retry that had to go there).
    pub const FORWARDED: &str = "forwarded";
    /// Answered by the proxy from a committed original.
    pub const DUPLICATE: &str = "duplicate";
    /// Waited for an in-flight original and answered from its outcome.
    pub const COALESCED: &str = "coalesced";
    /// Not eligible for dedup (no producer id, acks != -1, unparsable).
    pub const UNCACHEABLE: &str = "uncacheable";
    /// A duplicate seen in observe mode (forwarded anyway).
    pub const OBSERVED_DUPLICATE: &str = "observed_duplicate";

    pub const ALL: [&str; 5] = [
        FORWARDED,
        DUPLICATE,
        COALESCED,
        UNCACHEABLE,
        OBSERVED_DUPLICATE,
    ];
}

/// Registers descriptions (HELP lines) once at start-up.
pub fn describe() {
    describe_counter!(
        KEY_DEDUP_RECORDS_TOTAL,
        Unit::Count,
        "Records of key-dedup topics, by outcome: fresh (forwarded), duplicate (removed), unkeyed (kept)."
    );
    describe_counter!(
        KEY_DEDUP_BATCHES_TOTAL,
        Unit::Count,
        "Batches of key-dedup topics changed or answered by the proxy, or left untouched because they did not decode: reencoded, answered, undecodable; of idempotent producers: resequenced (base sequence lowered by records removed earlier), sequence_gap (a batch of duplicates only behind an unacknowledged one: connection closed)."
    );
    describe_gauge!(
        KEY_DEDUP_KEYS,
        Unit::Count,
        "Idempotency keys held (in flight or acknowledged)."
    );
    describe_counter!(
        KEY_DEDUP_EVICTIONS_TOTAL,
        Unit::Count,
        "Acknowledged idempotency keys dropped, by reason: expired (older than the window), capacity (the oldest beyond --key-dedup-max-keys)."
    );
    describe_gauge!(
        KEY_DEDUP_PRODUCER_LINES,
        Unit::Count,
        "Idempotent producer-partitions of key-dedup topics whose sequences the proxy follows."
    );
    describe_counter!(
        KEY_DEDUP_PRODUCER_LINE_EVICTIONS_TOTAL,
        Unit::Count,
        "Producer-partitions dropped, by reason: idle, capacity; shifted counts those that held a sequence shift (their producer, should it send again, gets one OUT_OF_ORDER_SEQUENCE_NUMBER)."
    );
    describe_gauge!(
        CONNECTIONS_ACTIVE,
        Unit::Count,
        "Client connections open now, by listener kind."
    );
    describe_counter!(
        CONNECTIONS_TOTAL,
        Unit::Count,
        "Client connections accepted, by listener kind."
    );
    describe_counter!(
        CONNECTIONS_REJECTED_TOTAL,
        Unit::Count,
        "Client connections closed on accept because --max-connections was reached."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REJECTED_TOTAL,
        Unit::Count,
        "Connections to the metrics endpoint closed on accept because it was answering its limit of requests at once."
    );
    describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "Client requests read, by Kafka API."
    );
    describe_histogram!(
        UPSTREAM_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Time from writing a request to the broker until its response was read, by Kafka API."
    );
    describe_counter!(
        PRODUCE_BATCHES_TOTAL,
        Unit::Count,
        "Produce batches (one per partition) by dedup outcome."
    );
    describe_counter!(
        DEDUP_BYTES_SAVED_TOTAL,
        Unit::Bytes,
        "Bytes of duplicate batches answered by the proxy instead of being sent to the brokers."
    );
    describe_gauge!(
        DEDUP_CACHE_ENTRIES,
        Unit::Count,
        "Producer-partitions held in the dedup cache."
    );
    describe_gauge!(
        DEDUP_CACHE_CAPACITY,
        Unit::Count,
        "Most producer-partitions the dedup cache holds (--cache-max-producer-partitions)."
    );
    describe_counter!(
        DEDUP_CACHE_EVICTIONS_TOTAL,
        Unit::Count,
        "Producer-partitions or batches dropped from the dedup cache, by reason."
    );
    describe_counter!(
        FRAME_ERRORS_TOTAL,
        Unit::Count,
        "Connections closed for bad input or I/O errors, by kind."
    );
    describe_gauge!(BROKER_LISTENERS, Unit::Count, "Per-broker listeners open.");
    describe_gauge!(
        UPSTREAM_UP,
        Unit::Count,
        "1 when the last probe of the upstream cluster succeeded."
    );
}

/// Upper bounds of the upstream latency histogram, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Installs the process-wide Prometheus recorder once and returns its
/// handle (later calls return the same handle).
pub fn install_recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
                .set_buckets_for_metric(
                    metrics_exporter_prometheus::Matcher::Full(
                        UPSTREAM_REQUEST_DURATION_SECONDS.to_string(),
                    ),
                    LATENCY_BUCKETS,
                )
                .expect("static bucket list is non-empty")
                .build_recorder();
            let handle = recorder.handle();
            // A second recorder (e.g. in tests embedding several proxies)
            // keeps the first: the handle still renders what is recorded.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            let _ = HOT.set(Hot::default());
            handle
        })
        .clone()
}

/// Handles of the series the request path touches per request or per
/// batch, registered once on first use instead of looked up by name and
/// labels every time. They exist only once a recorder is installed
/// ([`install_recorder`]): a handle taken earlier would stay a no-op.
struct Hot {
    requests: [OnceLock<Counter>; HOT_API_KEYS],
    upstream_duration: [OnceLock<Histogram>; HOT_API_KEYS],
    produce_batches: [OnceLock<Counter>; outcome::ALL.len()],
    bytes_saved: OnceLock<Counter>,
}

impl Default for Hot {
    fn default() -> Self {
        Hot {
            requests: std::array::from_fn(|_| OnceLock::new()),
            upstream_duration: std::array::from_fn(|_| OnceLock::new()),
            produce_batches: Default::default(),
            bytes_saved: OnceLock::new(),
        }
    }
}

/// API keys with cached handles (all Kafka APIs today are below).
const HOT_API_KEYS: usize = 128;

static HOT: OnceLock<Hot> = OnceLock::new();

fn hot_api<T: Clone>(
    cells: impl FnOnce(&Hot) -> &[OnceLock<T>; HOT_API_KEYS],
    api_key: i16,
    make: impl FnOnce() -> T,
) -> T {
    match (HOT.get(), usize::try_from(api_key)) {
        (Some(h), Ok(k)) if k < HOT_API_KEYS => cells(h)[k].get_or_init(make).clone(),
        _ => make(),
    }
}

/// `kdp_requests_total{api}` + 1.
pub fn count_request(api_key: i16) {
    hot_api(
        |h| &h.requests,
        api_key,
        || metrics::counter!(REQUESTS_TOTAL, "api" => api_name(api_key)),
    )
    .increment(1);
}

/// One `kdp_upstream_request_duration_seconds{api}` observation.
pub fn record_upstream_duration(api_key: i16, seconds: f64) {
    hot_api(
        |h| &h.upstream_duration,
        api_key,
        || metrics::histogram!(UPSTREAM_REQUEST_DURATION_SECONDS, "api" => api_name(api_key)),
    )
    .record(seconds);
}

/// `kdp_produce_batches_total{outcome}` + `n`; `outcome` is one of
/// [`outcome::ALL`].
pub fn count_batches(outcome_label: &'static str, n: u32) {
    if n == 0 {
        return;
    }
    let make = || metrics::counter!(PRODUCE_BATCHES_TOTAL, "outcome" => outcome_label);
    let idx = outcome::ALL.iter().position(|o| *o == outcome_label);
    match (HOT.get(), idx) {
        (Some(h), Some(i)) => h.produce_batches[i]
            .get_or_init(make)
            .increment(u64::from(n)),
        _ => make().increment(u64::from(n)),
    }
}

/// Publishes what dedup did with one request's batches.
pub fn record_outcomes(o: &crate::dedup::Outcomes) {
    count_batches(outcome::FORWARDED, o.forwarded);
    count_batches(outcome::DUPLICATE, o.duplicate);
    count_batches(outcome::COALESCED, o.coalesced);
    count_batches(outcome::UNCACHEABLE, o.uncacheable);
    count_batches(outcome::OBSERVED_DUPLICATE, o.observed_duplicate);
    if o.bytes_saved > 0 {
        count_bytes_saved(o.bytes_saved);
    }
    let keyed = [
        (KEY_DEDUP_RECORDS_TOTAL, "fresh", o.key_records_fresh),
        (
            KEY_DEDUP_RECORDS_TOTAL,
            "duplicate",
            o.key_records_duplicate,
        ),
        (KEY_DEDUP_RECORDS_TOTAL, "unkeyed", o.key_records_unkeyed),
        (
            KEY_DEDUP_BATCHES_TOTAL,
            "reencoded",
            o.key_batches_reencoded,
        ),
        (KEY_DEDUP_BATCHES_TOTAL, "answered", o.key_batches_answered),
        (
            KEY_DEDUP_BATCHES_TOTAL,
            "resequenced",
            o.key_batches_resequenced,
        ),
        (KEY_DEDUP_BATCHES_TOTAL, "sequence_gap", o.key_sequence_gaps),
        (
            KEY_DEDUP_BATCHES_TOTAL,
            "undecodable",
            o.key_batches_undecodable,
        ),
    ];
    for (name, label, n) in keyed {
        if n > 0 {
            metrics::counter!(name, "outcome" => label).increment(u64::from(n));
        }
    }
}

/// Publishes the producer lines held and their evictions since
/// `published` (updated here).
pub fn record_sequences(
    lines: &crate::dedup::sequence::Sequences,
    published: &mut crate::dedup::sequence::LineEvictions,
) {
    metrics::gauge!(KEY_DEDUP_PRODUCER_LINES).set(lines.len() as f64);
    let now = lines.evictions();
    publish_increases(
        KEY_DEDUP_PRODUCER_LINE_EVICTIONS_TOTAL,
        [
            ("idle", now.idle, published.idle),
            ("capacity", now.capacity, published.capacity),
            ("shifted", now.shifted, published.shifted),
        ],
    );
    *published = now;
}

/// Publishes the key cache's size and the evictions since `published`
/// (updated here).
pub fn record_keys(
    keys: &crate::dedup::KeyCache,
    published: &mut crate::dedup::keys::KeyEvictions,
) {
    metrics::gauge!(KEY_DEDUP_KEYS).set(keys.len() as f64);
    let now = keys.evictions();
    publish_increases(
        KEY_DEDUP_EVICTIONS_TOTAL,
        [
            ("expired", now.expired, published.expired),
            ("capacity", now.capacity, published.capacity),
        ],
    );
    *published = now;
}

/// Adds to counter `name{reason}` what each running total grew by since it
/// was last published.
fn publish_increases<const N: usize>(name: &'static str, totals: [(&'static str, u64, u64); N]) {
    for (reason, now, was) in totals {
        if now > was {
            metrics::counter!(name, "reason" => reason).increment(now - was);
        }
    }
}

/// Publishes the dedup cache's size and the evictions since `published`
/// (the totals this caller published last, updated here).
pub fn record_cache(
    cache: &crate::dedup::DedupCache,
    published: &mut crate::dedup::cache::Evictions,
) {
    metrics::gauge!(DEDUP_CACHE_ENTRIES).set(cache.len() as f64);
    let now = cache.evictions();
    publish_increases(
        DEDUP_CACHE_EVICTIONS_TOTAL,
        [
            ("epoch", now.epoch, published.epoch),
            ("capacity", now.capacity, published.capacity),
            ("ttl", now.ttl, published.ttl),
        ],
    );
    *published = now;
}

/// `kdp_dedup_bytes_saved_total` + `n`.
pub fn count_bytes_saved(n: u64) {
    let make = || metrics::counter!(DEDUP_BYTES_SAVED_TOTAL);
    match HOT.get() {
        Some(h) => h.bytes_saved.get_or_init(make).increment(n),
        None => make().increment(n),
    }
}
