//! The shared dedup cache: ⟨producer id, topic, partition⟩ → the producer's
//! current epoch and a window of its last batches.
//!
//! One cache per process, shared by every connection and listener (a retry
//! often arrives on a new connection). It is split into shards, each behind
//! its own short-held mutex, so lookups of different producer-partitions do
//! not serialise. Bounded by a maximum number of producer-partitions (CLOCK
//! eviction per shard) and an idle TTL; eviction costs efficiency only,
//! never correctness, because anything the cache does not know is
//! forwarded to the broker.

use std::collections::VecDeque;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ahash::RandomState;
use tokio::sync::oneshot;

use crate::metrics as m;

/// A topic as the cache keys it: by name, or by id when Produce v13 named
/// an id whose name the proxy has not yet seen in a Metadata response.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicKey {
    Name(Arc<str>),
    Id([u8; 16]),
}

/// Whose batches may answer whose retries. A synthetic answer skips the
/// broker's authorization check, so one authenticated principal never gets
/// an answer built from another principal's batch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// No authentication on the connection (as the broker sees it, every
    /// such client is the same anonymous principal).
    Anonymous,
    /// The SASL user name the broker accepted for the connection.
    Principal(Arc<str>),
    /// Authenticated by a mechanism whose principal the proxy cannot read:
    /// the connection only ever meets its own batches.
    Connection(u64),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProducerPartition {
    pub scope: Scope,
    pub producer_id: i64,
    pub topic: TopicKey,
    pub partition: i32,
}

/// What the broker answered for a committed original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Committed {
    pub base_offset: i64,
    pub log_append_time_ms: i64,
    pub log_start_offset: i64,
}

/// The identity of one batch within a producer-partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchId {
    pub epoch: i16,
    pub base_sequence: i32,
    pub last_sequence: i32,
    pub crc: u32,
}

/// `None` means the original failed, timed out or was evicted.
pub type Outcome = Option<Committed>;

enum BatchState {
    InFlight {
        token: u64,
        waiters: Vec<oneshot::Sender<Outcome>>,
    },
    Committed(Committed),
}

struct BatchEntry {
    base_sequence: i32,
    last_sequence: i32,
    crc: u32,
    state: BatchState,
}

impl BatchEntry {
    /// Fails any waiter: the original's outcome is unknown to us now.
    fn fail_waiters(&mut self) {
        if let BatchState::InFlight { waiters, .. } = &mut self.state {
            for w in waiters.drain(..) {
                let _ = w.send(None);
            }
        }
    }
}

struct Slot {
    epoch: i16,
    /// Seconds since the cache was created, at the last lookup.
    last_access: u32,
    /// CLOCK reference bit.
    referenced: bool,
    batches: VecDeque<BatchEntry>,
}

struct Shard {
    map: std::collections::HashMap<ProducerPartition, Slot, RandomState>,
    /// CLOCK hand order; may hold keys already removed (skipped lazily).
    clock: VecDeque<ProducerPartition>,
}

/// The decision for one batch (DESIGN.md "Dedup", steps 2-5).
#[derive(Debug)]
pub enum Lookup {
    /// No entry with this sequence range: the caller forwards the batch
    /// and must resolve the guard with the broker's answer.
    Fresh(InFlightGuard),
    /// The same batch was committed: answer with these offsets.
    Duplicate(Committed),
    /// The same batch is at the broker right now: wait for its outcome.
    Wait(oneshot::Receiver<Outcome>),
    /// Forward and remember nothing (different CRC, older epoch).
    Forward,
}

pub struct DedupCache {
    shards: Box<[Mutex<Shard>]>,
    /// Lowest epoch still valid per producer id, from the epochs the
    /// transaction coordinator handed out (InitProducerId, EndTxn v5+):
    /// a batch of an older epoch is fenced even on partitions the new
    /// epoch has not written to yet, so it always goes to the broker.
    fenced: Box<[Mutex<std::collections::HashMap<i64, i16, RandomState>>]>,
    hasher: RandomState,
    window: usize,
    shard_capacity: usize,
    capacity: usize,
    idle_ttl: Duration,
    started: Instant,
    next_token: AtomicU64,
    entries: AtomicUsize,
}

const SHARDS: usize = 64;

impl std::fmt::Debug for DedupCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupCache")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl DedupCache {
    pub fn new(window: usize, max_producer_partitions: usize, idle_ttl: Duration) -> Arc<Self> {
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    map: std::collections::HashMap::with_hasher(RandomState::new()),
                    clock: VecDeque::new(),
                })
            })
            .collect();
        metrics::gauge!(m::DEDUP_CACHE_CAPACITY).set(max_producer_partitions as f64);
        let fenced = (0..SHARDS)
            .map(|_| Mutex::new(std::collections::HashMap::with_hasher(RandomState::new())))
            .collect();
        Arc::new(DedupCache {
            shards,
            fenced,
            hasher: RandomState::new(),
            window: window.max(1),
            shard_capacity: max_producer_partitions.div_ceil(SHARDS).max(1),
            capacity: max_producer_partitions,
            idle_ttl,
            started: Instant::now(),
            next_token: AtomicU64::new(1),
            entries: AtomicUsize::new(0),
        })
    }

    /// Producer-partitions held now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    fn shard(&self, key: &ProducerPartition) -> MutexGuard<'_, Shard> {
        let idx = (self.hasher.hash_one(key) as usize) % SHARDS;
        // A poisoned shard only means another thread panicked while holding
        // it; the data is still a valid cache (at worst stale), so go on.
        self.shards[idx].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn fenced_shard(
        &self,
        producer_id: i64,
    ) -> MutexGuard<'_, std::collections::HashMap<i64, i16, RandomState>> {
        let idx = (producer_id.unsigned_abs() as usize) % SHARDS;
        self.fenced[idx].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that the coordinator handed out `epoch` for `producer_id`:
    /// older epochs of that producer are never answered from the cache.
    /// Bounded like the cache itself; a full shard forgets its oldest
    /// knowledge wholesale (the broker still fences what we forget).
    pub fn fence(&self, producer_id: i64, epoch: i16) {
        let mut shard = self.fenced_shard(producer_id);
        if shard.len() >= self.shard_capacity && !shard.contains_key(&producer_id) {
            shard.clear();
        }
        let e = shard.entry(producer_id).or_insert(epoch);
        *e = (*e).max(epoch);
    }

    /// Looks a batch up and, when it is new, records it as in flight.
    pub fn begin(self: &Arc<Self>, key: ProducerPartition, batch: BatchId) -> Lookup {
        if self
            .fenced_shard(key.producer_id)
            .get(&key.producer_id)
            .is_some_and(|min| batch.epoch < *min)
        {
            return Lookup::Forward;
        }
        let now = self.now();
        let mut shard = self.shard(&key);
        if !shard.map.contains_key(&key) {
            self.make_room(&mut shard);
            shard.map.insert(
                key.clone(),
                Slot {
                    epoch: batch.epoch,
                    last_access: now,
                    referenced: false,
                    batches: VecDeque::with_capacity(self.window),
                },
            );
            shard.clock.push_back(key.clone());
            self.entries.fetch_add(1, Ordering::Relaxed);
        }
        let Some(slot) = shard.map.get_mut(&key) else {
            return Lookup::Forward;
        };
        slot.last_access = now;
        slot.referenced = true;
        if batch.epoch < slot.epoch {
            // The broker fences an older epoch; nothing to remember.
            return Lookup::Forward;
        }
        if batch.epoch > slot.epoch {
            // A higher epoch clears the window, as the broker's
            // ProducerStateEntry.maybeUpdateProducerEpoch does.
            let dropped = slot.batches.len();
            for mut b in slot.batches.drain(..) {
                b.fail_waiters();
            }
            slot.epoch = batch.epoch;
            if dropped > 0 {
                metrics::counter!(m::DEDUP_CACHE_EVICTIONS_TOTAL, "reason" => "epoch")
                    .increment(dropped as u64);
            }
        }
        if let Some(entry) = slot.batches.iter_mut().find(|b| {
            b.base_sequence == batch.base_sequence && b.last_sequence == batch.last_sequence
        }) {
            if entry.crc != batch.crc {
                return Lookup::Forward;
            }
            return match &mut entry.state {
                BatchState::Committed(c) => Lookup::Duplicate(*c),
                BatchState::InFlight { waiters, .. } => {
                    let (tx, rx) = oneshot::channel();
                    waiters.push(tx);
                    Lookup::Wait(rx)
                }
            };
        }
        if slot.batches.len() >= self.window
            && let Some(mut old) = slot.batches.pop_front()
        {
            old.fail_waiters();
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        slot.batches.push_back(BatchEntry {
            base_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence,
            crc: batch.crc,
            state: BatchState::InFlight {
                token,
                waiters: Vec::new(),
            },
        });
        Lookup::Fresh(InFlightGuard {
            cache: Arc::clone(self),
            key: Some(key),
            epoch: batch.epoch,
            token,
        })
    }

    /// CLOCK: evict one unreferenced slot when the shard is full.
    fn make_room(&self, shard: &mut Shard) {
        if shard.map.len() < self.shard_capacity {
            return;
        }
        let mut budget = shard.clock.len() * 2 + 1;
        while budget > 0 {
            budget -= 1;
            let Some(k) = shard.clock.pop_front() else {
                return;
            };
            match shard.map.get_mut(&k) {
                None => continue,
                Some(slot) if slot.referenced => {
                    slot.referenced = false;
                    shard.clock.push_back(k);
                }
                Some(_) => {
                    if let Some(mut slot) = shard.map.remove(&k) {
                        for b in slot.batches.iter_mut() {
                            b.fail_waiters();
                        }
                    }
                    self.entries.fetch_sub(1, Ordering::Relaxed);
                    metrics::counter!(m::DEDUP_CACHE_EVICTIONS_TOTAL, "reason" => "capacity")
                        .increment(1);
                    return;
                }
            }
        }
    }

    /// Resolves an in-flight batch. `Some` marks it committed and answers
    /// its waiters; `None` removes it (the broker said no, or we are unsure).
    fn resolve(&self, key: &ProducerPartition, epoch: i16, token: u64, outcome: Outcome) {
        let mut shard = self.shard(key);
        let Some(slot) = shard.map.get_mut(key) else {
            return;
        };
        if slot.epoch != epoch {
            return;
        }
        let Some(pos) = slot
            .batches
            .iter()
            .position(|b| matches!(b.state, BatchState::InFlight { token: t, .. } if t == token))
        else {
            return;
        };
        match outcome {
            Some(c) => {
                let entry = &mut slot.batches[pos];
                let old = std::mem::replace(&mut entry.state, BatchState::Committed(c));
                if let BatchState::InFlight { waiters, .. } = old {
                    for w in waiters {
                        let _ = w.send(Some(c));
                    }
                }
            }
            None => {
                if let Some(mut entry) = slot.batches.remove(pos) {
                    entry.fail_waiters();
                }
            }
        }
    }

    /// Drops producer-partitions idle for longer than the TTL. Called
    /// periodically; takes one shard lock at a time.
    pub fn sweep_idle(&self) -> usize {
        let ttl = self.idle_ttl.as_secs().min(u64::from(u32::MAX)) as u32;
        let now = self.now();
        let mut removed = 0;
        for s in self.shards.iter() {
            let mut shard = s.lock().unwrap_or_else(|e| e.into_inner());
            let before = shard.map.len();
            shard.map.retain(|_, slot| {
                let keep = now.saturating_sub(slot.last_access) < ttl;
                if !keep {
                    for b in slot.batches.iter_mut() {
                        b.fail_waiters();
                    }
                }
                keep
            });
            let n = before - shard.map.len();
            if n > 0 {
                let Shard { map, clock } = &mut *shard;
                clock.retain(|k| map.contains_key(k));
            }
            removed += n;
        }
        if removed > 0 {
            self.entries.fetch_sub(removed, Ordering::Relaxed);
            metrics::counter!(m::DEDUP_CACHE_EVICTIONS_TOTAL, "reason" => "ttl")
                .increment(removed as u64);
        }
        metrics::gauge!(m::DEDUP_CACHE_ENTRIES).set(self.len() as f64);
        removed
    }
}

/// Ownership of one in-flight batch entry. Committing it records the
/// broker's answer; dropping it unresolved removes the entry, so any error,
/// disconnect or early return leaves the cache forwarding, never answering.
pub struct InFlightGuard {
    cache: Arc<DedupCache>,
    key: Option<ProducerPartition>,
    epoch: i16,
    token: u64,
}

impl std::fmt::Debug for InFlightGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlightGuard")
            .field("key", &self.key)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl InFlightGuard {
    pub fn commit(mut self, c: Committed) {
        if let Some(key) = self.key.take() {
            self.cache.resolve(&key, self.epoch, self.token, Some(c));
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.resolve(&key, self.epoch, self.token, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pid: i64, p: i32) -> ProducerPartition {
        ProducerPartition {
            scope: Scope::Anonymous,
            producer_id: pid,
            topic: TopicKey::Name(Arc::from("t")),
            partition: p,
        }
    }

    fn id(epoch: i16, base: i32, last: i32, crc: u32) -> BatchId {
        BatchId {
            epoch,
            base_sequence: base,
            last_sequence: last,
            crc,
        }
    }

    fn committed(off: i64) -> Committed {
        Committed {
            base_offset: off,
            log_append_time_ms: -1,
            log_start_offset: 0,
        }
    }

    fn cache() -> Arc<DedupCache> {
        DedupCache::new(5, 1000, Duration::from_secs(60))
    }

    #[test]
    fn committed_batch_is_a_duplicate_with_its_original_offset() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!("first sight must be fresh")
        };
        g.commit(committed(42));
        assert!(
            matches!(c.begin(key(1, 0), id(0, 0, 9, 7)), Lookup::Duplicate(x) if x.base_offset == 42)
        );
    }

    #[test]
    fn another_principal_never_meets_the_batch() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        g.commit(committed(42));
        let mut other = key(1, 0);
        other.scope = Scope::Principal(Arc::from("mallory"));
        assert!(matches!(c.begin(other, id(0, 0, 9, 7)), Lookup::Fresh(_)));
    }

    #[test]
    fn a_fenced_epoch_is_never_answered_even_where_the_new_epoch_has_not_written() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        g.commit(committed(42));
        c.fence(1, 1);
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 9, 7)),
            Lookup::Forward
        ));
        assert!(matches!(
            c.begin(key(1, 1), id(1, 0, 0, 7)),
            Lookup::Fresh(_)
        ));
        c.fence(1, 0);
        assert!(
            matches!(c.begin(key(1, 0), id(0, 0, 9, 7)), Lookup::Forward),
            "fences only rise"
        );
    }

    #[test]
    fn dropped_guard_forgets_the_batch() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        drop(g);
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 9, 7)),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn split_batch_with_same_base_but_shorter_range_is_not_a_duplicate() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        g.commit(committed(1));
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 4, 8)),
            Lookup::Fresh(_)
        ));
    }

    #[test]
    fn different_crc_is_forwarded() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        g.commit(committed(1));
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 9, 8)),
            Lookup::Forward
        ));
    }

    #[test]
    fn higher_epoch_drops_older_entries_and_older_epoch_is_forwarded() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        g.commit(committed(1));
        let Lookup::Fresh(g2) = c.begin(key(1, 0), id(1, 0, 0, 5)) else {
            panic!()
        };
        g2.commit(committed(10));
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 9, 7)),
            Lookup::Forward
        ));
        assert!(matches!(
            c.begin(key(1, 0), id(1, 0, 0, 5)),
            Lookup::Duplicate(_)
        ));
    }

    #[tokio::test]
    async fn in_flight_duplicate_waits_for_the_original() {
        let c = cache();
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        let Lookup::Wait(rx) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!("in flight must wait")
        };
        g.commit(committed(5));
        assert_eq!(rx.await.unwrap(), Some(committed(5)));
        let Lookup::Fresh(g) = c.begin(key(2, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        let Lookup::Wait(rx) = c.begin(key(2, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        drop(g);
        assert_eq!(rx.await.unwrap(), None);
    }

    #[test]
    fn window_keeps_the_last_five_batches() {
        let c = cache();
        for s in 0..6 {
            let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, s, s, 1)) else {
                panic!()
            };
            g.commit(committed(i64::from(s)));
        }
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 0, 1)),
            Lookup::Fresh(_)
        ));
        assert!(matches!(
            c.begin(key(1, 0), id(0, 5, 5, 1)),
            Lookup::Duplicate(_)
        ));
    }

    #[test]
    fn capacity_bound_evicts_producer_partitions() {
        let c = DedupCache::new(5, 64, Duration::from_secs(60));
        for pid in 0..10_000 {
            if let Lookup::Fresh(g) = c.begin(key(pid, 0), id(0, 0, 0, 1)) {
                g.commit(committed(0));
            }
        }
        assert!(c.len() <= 64 + SHARDS, "len {}", c.len());
    }

    #[test]
    fn idle_entries_expire() {
        let c = DedupCache::new(5, 100, Duration::from_secs(0));
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 0, 1)) else {
            panic!()
        };
        g.commit(committed(0));
        assert_eq!(c.sweep_idle(), 1);
        assert!(c.is_empty());
    }
}
