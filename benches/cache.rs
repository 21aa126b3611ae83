//! Dedup cache benchmarks: what the proxy does per produced batch.
//!
//! * `fresh/*`: `begin` of a batch never seen (the common case: every
//!   batch of a healthy producer) and `commit` of the broker's answer, two
//!   shard-lock acquisitions. Batches rotate over 1,000 producer-partitions
//!   per thread, each advancing its sequence, so windows fill and roll.
//! * `duplicate/*`: `begin` of a batch already committed (a retry the proxy
//!   answers itself).
//!
//! Each runs on 1 thread and on 2 threads at once (disjoint producers, the
//! shared cache), reporting operations per second over all threads. Every
//! operation builds its key with a fresh `Arc<str>` topic name, as the
//! proxy does per Produce request.
//!
//!   cargo bench --bench cache
//!   cargo bench --bench cache -- --quick

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_dedup_proxy::dedup::cache::{
    BatchId, Committed, DedupCache, Lookup, ProducerPartition, Scope, TopicKey,
};

const TOPIC: &str = "bench-orders-events";
/// Producer-partitions each thread rotates over.
const KEYS: u64 = 1_000;
const COMMITTED: Committed = Committed {
    base_offset: 42,
    log_append_time_ms: -1,
    log_start_offset: 0,
};

fn cache() -> Arc<DedupCache> {
    DedupCache::new(5, 1_000_000, Duration::from_secs(900))
}

fn key(thread: u64, n: u64) -> ProducerPartition {
    ProducerPartition {
        scope: Scope::Anonymous,
        producer_id: (thread * 1_000 + (n % KEYS) / 10) as i64,
        topic: TopicKey::Name(Arc::from(TOPIC)),
        partition: (n % 10) as i32,
    }
}

fn batch(seq: u64) -> BatchId {
    let s = (seq as i32).wrapping_mul(10) & 0x3fff_ffff;
    BatchId {
        epoch: 0,
        base_sequence: s,
        last_sequence: s + 9,
        crc: seq as u32,
    }
}

/// `iters` fresh batches on `thread`'s producers, starting at `start`.
fn fresh_ops(c: &Arc<DedupCache>, thread: u64, start: u64, iters: u64) {
    for n in start..start + iters {
        match c.begin(key(thread, n), batch(n / KEYS)) {
            Lookup::Fresh(g) => g.commit(COMMITTED),
            other => panic!("expected a fresh batch, got {other:?}"),
        }
    }
}

/// Commits the current batch of each of `thread`'s producer-partitions.
fn prefill(c: &Arc<DedupCache>, thread: u64) {
    fresh_ops(c, thread, 0, KEYS);
}

fn duplicate_ops(c: &Arc<DedupCache>, thread: u64, iters: u64) {
    for n in 0..iters {
        let k = n % KEYS;
        match c.begin(key(thread, k), batch(0)) {
            Lookup::Duplicate(x) => {
                black_box(x);
            }
            other => panic!("expected a duplicate, got {other:?}"),
        }
    }
}

/// Runs `op(thread, iters)` on `threads` threads at once; wall time.
fn parallel(threads: u64, iters: u64, op: impl Fn(u64, u64) + Sync) -> Duration {
    let barrier = std::sync::Barrier::new(threads as usize + 1);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (op, barrier) = (&op, &barrier);
            s.spawn(move || {
                barrier.wait();
                op(t, iters);
            });
        }
        barrier.wait();
        let t0 = Instant::now();
        // the scope joins every thread before returning
        t0
    })
    .elapsed()
}

fn bench(c: &mut Criterion) {
    for threads in [1u64, 2] {
        let mut g = c.benchmark_group("fresh");
        g.throughput(Throughput::Elements(threads));
        g.bench_function(format!("{threads}_thread"), |b| {
            let cache = cache();
            let mut next = vec![0u64; threads as usize];
            b.iter_custom(|iters| {
                let starts = next.clone();
                for n in next.iter_mut() {
                    *n += iters;
                }
                parallel(threads, iters, |t, iters| {
                    fresh_ops(&cache, t, starts[t as usize], iters)
                })
            });
        });
        g.finish();

        let mut g = c.benchmark_group("duplicate");
        g.throughput(Throughput::Elements(threads));
        g.bench_function(format!("{threads}_thread"), |b| {
            let cache = cache();
            for t in 0..threads {
                prefill(&cache, t);
            }
            b.iter_custom(|iters| {
                parallel(threads, iters, |t, iters| duplicate_ops(&cache, t, iters))
            });
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
