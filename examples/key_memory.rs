//! Memory per idempotency key held by the key cache.
//!
//!   cargo run --release --example key_memory [-- KEYS]
//!
//! Fills a `KeyCache` bounded at KEYS (default 10,000,000 = the default
//! --key-dedup-max-keys) with KEYS distinct keys, each claimed and then
//! committed as an acknowledged batch commits it, and reports the heap
//! bytes the cache holds (exact, counted by a global allocator wrapper) and
//! the growth of the resident set, each per key, as one JSON object on
//! stdout.

#[path = "support/memory.rs"]
mod memory;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use kafka_dedup_proxy::dedup::cache::Scope;
use kafka_dedup_proxy::dedup::keys::{KeyCache, KeyClaims, KeyId};
use memory::{LIVE, rss};

fn main() {
    let keys: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let heap0 = LIVE.load(Ordering::Relaxed);
    let rss0 = rss();
    let started = Instant::now();
    let cache = KeyCache::new(Duration::from_secs(3600), keys);
    let scope = Scope::Anonymous;
    for i in 0..keys {
        let mut claims = KeyClaims::new(&cache);
        let id = KeyId::new(&scope, "orders", format!("order-{i}").as_bytes());
        cache.claim(id, 0, &mut claims);
        claims.commit(0, i as i64);
    }
    let fill = started.elapsed();
    let held = cache.len();
    let heap = LIVE.load(Ordering::Relaxed) - heap0;
    let rss_delta = rss().saturating_sub(rss0);
    eprintln!(
        "{held} keys: heap {:.1} MiB ({:.0} B each), RSS +{:.1} MiB ({:.0} B each), filled in {:.2}s",
        heap as f64 / 1048576.0,
        heap as f64 / held as f64,
        rss_delta as f64 / 1048576.0,
        rss_delta as f64 / held as f64,
        fill.as_secs_f64()
    );
    println!(
        "{{\"keys\":{held},\"heap_bytes\":{heap},\"heap_bytes_per_key\":{:.1},\"rss_delta_bytes\":{rss_delta},\"rss_bytes_per_key\":{:.1},\"fill_seconds\":{:.3},\"evicted_capacity\":{}}}",
        heap as f64 / held as f64,
        rss_delta as f64 / held as f64,
        fill.as_secs_f64(),
        cache.evictions().capacity
    );
}
