//! Memory per cached producer-partition of the dedup cache.
//!
//!   cargo run --release --example cache_memory [-- ENTRIES [BATCHES]]
//!
//! Fills a `DedupCache` built as the proxy builds it (window 5, capacity
//! ENTRIES, default 1,000,000 = the default --cache-max-producer-partitions)
//! with ENTRIES distinct producer-partitions, each holding BATCHES committed
//! batches (default: one run, in its own process, with 1 and one with 5,
//! the full window). Keys
//! are made as the proxy makes them: 1,000 producers x 1,000 partitions of
//! one topic, each key with its own `Arc<str>` topic name (the proxy builds
//! one per Produce request).
//!
//! It reports the heap bytes the cache holds (counted by a global
//! allocator wrapper, exact) and the growth of the process's resident set
//! (what the kernel charges, with allocator overhead and fragmentation),
//! each per producer-partition, and prints one JSON object per run on
//! stdout.

#[path = "support/memory.rs"]
mod memory;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kafka_dedup_proxy::dedup::cache::{
    BatchId, Committed, DedupCache, Lookup, ProducerPartition, Scope, TopicKey,
};
use memory::{LIVE, rss};

const TOPIC: &str = "bench-orders-events";
const PARTITIONS: i64 = 1_000;

fn key(i: i64) -> ProducerPartition {
    ProducerPartition {
        scope: Scope::Anonymous,
        producer_id: 1_000_000 + i / PARTITIONS,
        topic: TopicKey::Name(Arc::from(TOPIC)),
        partition: (i % PARTITIONS) as i32,
    }
}

fn run(entries: usize, batches: i32) -> String {
    let heap0 = LIVE.load(Ordering::Relaxed);
    let rss0 = rss();
    let started = Instant::now();
    let cache = DedupCache::new(5, entries, Duration::from_secs(900));
    let mut i = 0i64;
    // Distinct keys until the cache holds `entries` (its bound is per
    // shard, so a few keys are evicted on the way when shards fill up
    // unevenly; the cache ends exactly full).
    while cache.len() < entries && i < entries as i64 * 2 {
        for s in 0..batches {
            let id = BatchId {
                epoch: 0,
                base_sequence: s * 10,
                last_sequence: s * 10 + 9,
                crc: 0x1234_5678 ^ s as u32,
            };
            if let Lookup::Fresh(g) = cache.begin(key(i), id) {
                g.commit(Committed {
                    base_offset: i * 10,
                    log_append_time_ms: -1,
                    log_start_offset: 0,
                });
            }
        }
        i += 1;
    }
    let fill = started.elapsed();
    let held = cache.len();
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let rss_delta = rss().saturating_sub(rss0);
    let per_heap = heap as f64 / held as f64;
    let per_rss = rss_delta as f64 / held as f64;
    eprintln!(
        "{held} producer-partitions x {batches} committed batch(es): heap {:.1} MiB ({per_heap:.0} B each), \
         RSS +{:.1} MiB ({per_rss:.0} B each), filled in {:.2}s ({i} keys offered)",
        heap as f64 / 1048576.0,
        rss_delta as f64 / 1048576.0,
        fill.as_secs_f64()
    );
    drop(cache);
    format!(
        "{{\"producer_partitions\":{held},\"batches_per_entry\":{batches},\"heap_bytes\":{heap},\
         \"heap_bytes_per_entry\":{per_heap:.1},\"rss_delta_bytes\":{rss_delta},\
         \"rss_bytes_per_entry\":{per_rss:.1},\"fill_seconds\":{:.3},\"keys_offered\":{i}}}",
        fill.as_secs_f64()
    )
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let entries = args
        .first()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000usize);
    if let Some(b) = args.get(1).and_then(|s| s.parse().ok()) {
        println!("{}", run(entries, b));
        return;
    }
    // One process per run: memory freed by a first run would stay in the
    // allocator and hide part of the second run's resident-set growth.
    let me = std::env::current_exe().expect("own executable");
    for b in [1, 5] {
        let out = std::process::Command::new(&me)
            .arg(entries.to_string())
            .arg(b.to_string())
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("run a measurement");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
