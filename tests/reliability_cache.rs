//! The memory bound of the dedup cache, driven directly (no cluster):
//! distinct producer-partitions, each with a full window of committed
//! batches, into a cache bounded far below their number. The cache holds
//! at most its bound, every eviction is counted, and the process's RSS
//! grows by what the held entries cost (docs/reliability.md reports the
//! bytes per producer-partition).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::metric_sum;
use common::readings::vm_rss_kib;
use common::report::{Checks, report, secs};
use serde_json::json;

#[test]
fn a_million_producer_partitions_stay_within_a_200k_cache_and_every_eviction_is_counted() {
    let (keys, capacity) = (1_000_000usize, 200_000usize);
    use kafka_dedup_proxy::dedup::cache::{
        BatchId, Committed, DedupCache, Lookup, ProducerPartition, Scope, TopicKey,
    };
    let t0 = Instant::now();
    let handle = kafka_dedup_proxy::metrics::install_recorder();
    let evictions = |h: &metrics_exporter_prometheus::PrometheusHandle| {
        metric_sum(
            &h.render(),
            "kdp_dedup_cache_evictions_total",
            "reason=\"capacity\"",
        )
    };
    let evicted_before = evictions(&handle);
    let topics: Vec<Arc<str>> = (0..100).map(|t| Arc::from(format!("topic-{t}"))).collect();
    let rss_before = vm_rss_kib("self").unwrap_or(0);
    let cache = DedupCache::new(5, capacity, Duration::from_secs(900));
    let mut peak_len = 0;
    for k in 0..keys {
        let key = ProducerPartition {
            scope: Scope::Anonymous,
            producer_id: 1_000_000 + (k / 10) as i64,
            topic: TopicKey::Name(Arc::clone(&topics[k % topics.len()])),
            partition: (k % 10) as i32,
        };
        // a full window of 5 committed batches per producer-partition
        for s in 0..5 {
            let id = BatchId {
                epoch: 0,
                base_sequence: s * 10,
                last_sequence: s * 10 + 9,
                crc: k as u32 ^ s as u32,
            };
            if let Lookup::Fresh(g) = cache.begin(key.clone(), id) {
                g.commit(Committed {
                    base_offset: k as i64,
                    log_append_time_ms: -1,
                    log_start_offset: 0,
                });
            }
        }
        if k % 50_000 == 0 {
            peak_len = peak_len.max(cache.len());
        }
    }
    peak_len = peak_len.max(cache.len());
    let rss_full = vm_rss_kib("self").unwrap_or(0);
    let held = cache.len();
    // The cache counts its evictions; the proxy publishes them each second
    // as the sweep task does here.
    let mut published = Default::default();
    kafka_dedup_proxy::metrics::record_cache(&cache, &mut published);
    let evicted = evictions(&handle) - evicted_before;
    let c_counted = cache.evictions().capacity as f64;
    let growth_kib = rss_full.saturating_sub(rss_before);
    let bytes_per_entry = if held > 0 {
        growth_kib as f64 * 1024.0 / held as f64
    } else {
        0.0
    };
    drop(cache);
    let mut c = Checks::new();
    c.eq(
        evicted,
        c_counted,
        "evictions published as the cache counted them",
    );
    // The bound is split over 64 shards, each rounded up: the cache may
    // hold up to 63 more than configured when the bound is no multiple of 64.
    let shard_rounded = capacity.next_multiple_of(64);
    c.check(
        peak_len <= shard_rounded,
        format!("never above the bound {shard_rounded}: {peak_len}"),
    );
    c.check(held >= capacity, format!("full after {keys} keys: {held}"));
    c.eq(
        evicted,
        (keys - held) as f64,
        "evictions counted (reason=capacity)",
    );
    c.positive(growth_kib, "RSS growth (KiB) with the cache full");
    let r = json!({
        "keys": keys,
        "capacity": capacity,
        "held": held,
        "peak_len": peak_len,
        "evicted_capacity": evicted,
        "rss_kib": {"before": rss_before, "full": rss_full, "growth": growth_kib},
        "bytes_per_entry": bytes_per_entry.round(),
        "window": 5,
        "faults": format!("{keys} producer-partitions into a cache of {capacity}: {evicted} evicted"),
        "fault_count": evicted,
        "duration_s": secs(t0.elapsed()),
    });
    report("cache-memory", r, c);
}
