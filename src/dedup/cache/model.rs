//! Model check of the cache's state machine (DESIGN.md "Dedup") under
//! shuttle: many schedules of a few producers and a housekeeper sharing
//! one cache, each schedule random but replayable from its seed.
//!
//! Run it with `cargo test --features model-check --lib dedup::cache::model`
//! (only these tests: with the feature, the cache's locks are shuttle's and
//! work inside a shuttle run only). `KDP_MODEL_ITERATIONS` sets the
//! schedules per check, `KDP_MODEL_SEED` the seed of the random half; a
//! failure prints its schedule, which `KDP_MODEL_REPLAY=<schedule>` runs
//! again, alone (name the one test to replay): the same assertion fails
//! at the same step, after which shuttle may add "schedule ended early".
//!
//! The world of one schedule: three producer ids whose ⟨id, topic,
//! partition⟩ land in one shard of two slots (so CLOCK eviction happens),
//! windows of two batches, sequences 0-2 with now and then another CRC or
//! a higher epoch, a broker, and:
//!
//! * producers: `begin`; on `Fresh` the batch goes to the model broker,
//!   which appends and acknowledges (acks=all, NONE), refuses, or appends
//!   and loses the answer; the guard is committed with the broker's answer
//!   or dropped (failure, lost answer, or the client gone before the
//!   answer was relayed). On `Wait` the producer awaits the original's
//!   outcome, or disconnects and drops the receiver.
//! * a housekeeper: moves the clock and sweeps idle entries (TTL), fences
//!   a producer's older epochs, and checks the capacity bound.
//!
//! Invariants:
//!
//! * a `Duplicate` answer, and a `Committed` outcome a waiter receives,
//!   carry the offset of an acknowledgement the proxy received from the
//!   broker for that exact batch (producer, epoch, sequence range, CRC);
//! * every waiter ends: it receives an outcome or its sender is dropped
//!   (a waiter left blocked is a deadlock, which shuttle reports);
//! * a shard never holds more producer-partitions than its share of the
//!   capacity, at any step;
//! * once `fence` returned, an older epoch is forwarded;
//! * when every producer is done, no batch is left in flight, the shards
//!   are consistent (`check_invariants`), and one sweep a TTL later leaves
//!   the cache empty.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use shuttle::future::block_on;
use shuttle::rand::{Rng, thread_rng};
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::Mutex as ModelMutex;
use shuttle::{Config, Runner, thread};

use super::{
    BatchEntry, BatchId, Committed, DedupCache, Lookup, ProducerPartition, Scope, TopicKey,
};

const WINDOW: usize = 2;
/// Two slots in each of the 64 shards.
const CAPACITY: usize = 128;
const TTL_SECS: u32 = 3;
const PRODUCERS: usize = 3;
const OPS_PER_PRODUCER: usize = 3;
const HOUSEKEEPING_OPS: usize = 3;
/// Schedules per check when `KDP_MODEL_ITERATIONS` is unset.
const DEFAULT_ITERATIONS: usize = 10_000;
const DEFAULT_SEED: u64 = 0x6b64_705f_6d6f_6465;

/// A bug the model may plant, to show that the checker catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plant {
    None,
    /// The cache records a batch as committed at `begin`.
    CommitAtBegin,
    /// The caller commits the guard before the broker answered.
    CommitBeforeBrokerAnswer,
}

/// How often each path was taken over a check: a model that never reaches
/// a path checks nothing about it.
#[derive(Default, Debug)]
struct Coverage {
    committed: AtomicUsize,
    failed: AtomicUsize,
    duplicate: AtomicUsize,
    waited_committed: AtomicUsize,
    waited_failed: AtomicUsize,
    wait_abandoned: AtomicUsize,
    forwarded: AtomicUsize,
    /// Schedules in which all three producer-partitions were begun, so
    /// the two-slot shard evicted.
    evicted: AtomicUsize,
    swept: AtomicUsize,
    fenced: AtomicUsize,
}

fn hit(c: &AtomicUsize) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// ⟨producer id, epoch, base sequence, last sequence⟩.
type Sequence = (i64, i16, i32, i32);

/// What the broker did with a batch, as the proxy sees it.
enum Answer {
    /// Appended (or found already appended) and acknowledged: acks=all,
    /// error NONE.
    Acked(Committed),
    /// Refused with an error (NOT_ENOUGH_REPLICAS, a sequence error, ...).
    Refused,
    /// Appended, but the answer never reached the proxy (timeout,
    /// connection reset).
    Lost,
}

/// One partition's log, with the broker's own duplicate check: a batch
/// already appended is acknowledged again with its first offset.
#[derive(Default)]
struct Broker {
    next_offset: i64,
    log: HashMap<Sequence, (u32, i64)>,
    /// Acknowledgements the proxy received: the only answers it may
    /// replay, keyed by sequence and CRC.
    acked: HashMap<(Sequence, u32), i64>,
}

impl Broker {
    fn produce(&mut self, seq: Sequence, crc: u32, roll: u32) -> Answer {
        if roll == 0 {
            return Answer::Refused;
        }
        let (logged_crc, offset) = *self.log.entry(seq).or_insert_with(|| {
            let offset = self.next_offset;
            self.next_offset += 1;
            (crc, offset)
        });
        if logged_crc != crc {
            return Answer::Refused;
        }
        if roll == 1 {
            return Answer::Lost;
        }
        self.acked.insert((seq, crc), offset);
        Answer::Acked(committed(offset))
    }

    /// The offset the next append would get (what a caller that commits
    /// before the answer might guess).
    fn guess(&self) -> i64 {
        self.next_offset
    }

    fn assert_acknowledged(&self, seq: Sequence, crc: u32, c: Committed, what: &str) {
        let acked = self.acked.get(&(seq, crc));
        assert_eq!(
            acked,
            Some(&c.base_offset),
            "{what} for batch {seq:?} crc {crc} carries offset {off}, \
             but the broker acknowledged {acked:?}",
            off = c.base_offset
        );
    }
}

fn committed(offset: i64) -> Committed {
    Committed {
        base_offset: offset,
        log_append_time_ms: -1,
        log_start_offset: 0,
    }
}

fn key(producer_id: i64) -> ProducerPartition {
    ProducerPartition {
        scope: Scope::Anonymous,
        producer_id,
        topic: TopicKey::Name(Arc::from("t")),
        partition: 0,
    }
}

/// `PRODUCERS` producer ids whose keys share one shard. The hasher's seeds
/// are fixed in the model build, so these are the same in every run.
fn producers_of_one_shard(cache: &DedupCache) -> Vec<i64> {
    let shard = |pid: i64| {
        let k = key(pid);
        let gh = cache.group_hash(&k.scope, &k.topic);
        DedupCache::shard_of(cache.key_hash(gh, k.producer_id, k.partition))
    };
    let first = shard(1);
    let pids: Vec<i64> = (1..10_000)
        .filter(|&p| shard(p) == first)
        .take(PRODUCERS)
        .collect();
    assert_eq!(pids.len(), PRODUCERS);
    pids
}

/// Runs a producer's operations; returns the producer ids it used.
fn producer(
    cache: Arc<DedupCache>,
    broker: Arc<ModelMutex<Broker>>,
    pids: Vec<i64>,
    plant: Plant,
    cov: Arc<Coverage>,
) -> Vec<i64> {
    let mut rng = thread_rng();
    let mut used = Vec::new();
    for _ in 0..OPS_PER_PRODUCER {
        let pid = pids[rng.gen_range(0..pids.len())];
        used.push(pid);
        let epoch: i16 = if rng.gen_ratio(1, 6) { 1 } else { 0 };
        let s = rng.gen_range(0..3);
        let crc = if rng.gen_ratio(1, 8) {
            900 + s as u32
        } else {
            100 + s as u32
        };
        let seq = (pid, epoch, s, s);
        let id = BatchId {
            epoch,
            base_sequence: s,
            last_sequence: s,
            crc,
        };
        match cache.begin(key(pid), id) {
            Lookup::Fresh(g) => {
                let mut guard = Some(g);
                if plant == Plant::CommitBeforeBrokerAnswer {
                    let guess = broker.lock().unwrap().guess();
                    if let Some(g) = guard.take() {
                        g.commit(committed(guess));
                    }
                }
                // The request is at the broker: others run meanwhile.
                thread::yield_now();
                let answer = broker
                    .lock()
                    .unwrap()
                    .produce(seq, crc, rng.gen_range(0..6));
                match (answer, guard) {
                    // The client may be gone before the answer is relayed.
                    (Answer::Acked(c), Some(g)) if rng.gen_ratio(5, 6) => {
                        hit(&cov.committed);
                        g.commit(c);
                    }
                    (_, g) => {
                        hit(&cov.failed);
                        drop(g);
                    }
                }
            }
            Lookup::Duplicate(c) => {
                hit(&cov.duplicate);
                broker
                    .lock()
                    .unwrap()
                    .assert_acknowledged(seq, crc, c, "a Duplicate answer");
            }
            Lookup::Wait(rx) => {
                if rng.gen_ratio(1, 4) {
                    // The waiting client disconnects.
                    hit(&cov.wait_abandoned);
                    drop(rx);
                } else if let Ok(Some(c)) = block_on(rx) {
                    hit(&cov.waited_committed);
                    broker
                        .lock()
                        .unwrap()
                        .assert_acknowledged(seq, crc, c, "a waiter's outcome");
                } else {
                    // `Ok(None)` (the original failed) and a dropped
                    // sender both end the wait: the copy is forwarded.
                    hit(&cov.waited_failed);
                }
            }
            Lookup::Forward => hit(&cov.forwarded),
        }
    }
    used
}

fn housekeeper(cache: Arc<DedupCache>, pids: Vec<i64>, cov: Arc<Coverage>) {
    let mut rng = thread_rng();
    for _ in 0..HOUSEKEEPING_OPS {
        match rng.gen_range(0..3) {
            0 => {
                cache.clock.advance(rng.gen_range(1..=TTL_SECS));
                if cache.sweep_idle() > 0 {
                    hit(&cov.swept);
                }
            }
            1 => {
                hit(&cov.fenced);
                let pid = pids[rng.gen_range(0..pids.len())];
                let epoch = rng.gen_range(1..=2);
                cache.fence(pid, epoch);
                let older = BatchId {
                    epoch: epoch - 1,
                    base_sequence: 0,
                    last_sequence: 0,
                    crc: 100,
                };
                assert!(
                    matches!(cache.begin(key(pid), older), Lookup::Forward),
                    "epoch {} of producer {pid} answered after fence({epoch})",
                    epoch - 1
                );
            }
            _ => {}
        }
        // All keys live in one shard: its bound is the cache's.
        let len = cache.len();
        assert!(
            len <= cache.shard_capacity,
            "{len} producer-partitions in a shard of {}",
            cache.shard_capacity
        );
    }
}

/// One schedule: the producers and the housekeeper run to the end, then
/// the quiescent checks.
fn one_schedule(plant: Plant, cov: &Arc<Coverage>) {
    let cache = DedupCache::new(WINDOW, CAPACITY, Duration::from_secs(u64::from(TTL_SECS)));
    cache.plant_commit_at_begin.store(
        plant == Plant::CommitAtBegin,
        std::sync::atomic::Ordering::Relaxed,
    );
    let pids = producers_of_one_shard(&cache);
    let broker = Arc::new(ModelMutex::new(Broker::default()));
    let mut threads = Vec::new();
    for _ in 0..PRODUCERS {
        let (c, b, p, v) = (
            Arc::clone(&cache),
            Arc::clone(&broker),
            pids.clone(),
            Arc::clone(cov),
        );
        threads.push(thread::spawn(move || producer(c, b, p, plant, v)));
    }
    let keeper = {
        let (c, p, v) = (Arc::clone(&cache), pids.clone(), Arc::clone(cov));
        thread::spawn(move || housekeeper(c, p, v))
    };
    let mut used = Vec::new();
    for t in threads {
        used.extend(t.join().expect("a model thread panicked"));
    }
    keeper.join().expect("the housekeeper panicked");
    used.sort_unstable();
    used.dedup();
    if used.len() == PRODUCERS {
        hit(&cov.evicted);
    }

    // Every guard was resolved: nothing may still be in flight.
    for shard in cache.shards.iter() {
        let sh = shard.lock().unwrap();
        assert!(
            !sh.batches
                .iter()
                .any(|e| matches!(e, BatchEntry::InFlight { .. })),
            "a batch is still in flight after its guard was resolved"
        );
    }
    cache.check_invariants();
    cache.clock.advance(TTL_SECS);
    cache.sweep_idle();
    assert!(cache.is_empty(), "{} entries outlived the TTL", cache.len());
    cache.check_invariants();
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Runs `iterations` schedules: half picked at random, half by PCT
/// (which favours schedules with few, well-placed preemptions).
fn check(plant: Plant, iterations: usize) -> Coverage {
    let seed = env_or("KDP_MODEL_SEED", DEFAULT_SEED);
    let cov = Arc::new(Coverage::default());
    if let Ok(schedule) = std::env::var("KDP_MODEL_REPLAY") {
        let c = Arc::clone(&cov);
        shuttle::replay(move || one_schedule(plant, &c), schedule.trim());
        return Arc::try_unwrap(cov).unwrap_or_default();
    }
    let c = Arc::clone(&cov);
    let random = Runner::new(
        RandomScheduler::new_from_seed(seed, iterations.div_ceil(2)),
        Config::new(),
    );
    random.run(move || one_schedule(plant, &c));
    let c = Arc::clone(&cov);
    let pct = Runner::new(PctScheduler::new(3, iterations / 2), Config::new());
    pct.run(move || one_schedule(plant, &c));
    Arc::try_unwrap(cov).unwrap_or_default()
}

fn iterations() -> usize {
    env_or("KDP_MODEL_ITERATIONS", DEFAULT_ITERATIONS)
}

/// The message a failed check panicked with.
fn failure_of(plant: Plant) -> String {
    let err = catch_unwind(AssertUnwindSafe(|| check(plant, iterations())))
        .expect_err("the checker passed a cache with a planted bug");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[test]
fn the_cache_state_machine_holds_its_invariants_under_every_explored_schedule() {
    let n = iterations();
    let started = std::time::Instant::now();
    let cov = check(Plant::None, n);
    eprintln!(
        "model check: {n} schedules in {:.1} s; paths taken: {cov:?}",
        started.elapsed().as_secs_f64()
    );
    for (path, count) in [
        ("commit", &cov.committed),
        ("failure", &cov.failed),
        ("duplicate", &cov.duplicate),
        ("waiter answered committed", &cov.waited_committed),
        ("waiter answered failed", &cov.waited_failed),
        ("waiter disconnected", &cov.wait_abandoned),
        ("forward", &cov.forwarded),
        ("capacity eviction", &cov.evicted),
        ("TTL sweep", &cov.swept),
        ("fence", &cov.fenced),
    ] {
        assert!(
            count.load(Ordering::Relaxed) > 0,
            "no schedule took the {path} path"
        );
    }
}

#[test]
fn the_checker_catches_a_cache_that_commits_at_begin() {
    let msg = failure_of(Plant::CommitAtBegin);
    assert!(
        msg.contains("the broker acknowledged"),
        "unexpected failure: {msg}"
    );
}

#[test]
fn the_checker_catches_a_caller_that_commits_before_the_broker_answers() {
    let msg = failure_of(Plant::CommitBeforeBrokerAnswer);
    assert!(
        msg.contains("the broker acknowledged"),
        "unexpected failure: {msg}"
    );
}
