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
//!
//! Layout of a shard (what one producer-partition costs, ~250 B at the
//! default window of 5):
//!
//! * `slots`: a dense slab of fixed-size [`Slot`]s (32 B): producer id,
//!   partition, the id of its ⟨scope, topic⟩ group, epoch, last access,
//!   CLOCK bit and the head/length of its window. Freed slots are reused
//!   from a free list; the CLOCK hand walks the slab by index.
//! * `batches`: `window` [`BatchEntry`]s (40 B each) per slot, at
//!   `slot * window`, used as a ring. Positions outside the ring are
//!   `Empty`. Waiters of an in-flight batch are boxed, so they cost 8 B
//!   while there are none.
//! * `index`: a hash table of slot numbers (4 B per bucket), keyed by the
//!   hash of the full key, which is computed once per operation.
//! * `groups`: ⟨scope, topic⟩ pairs, each held once per shard with a count
//!   of the slots that use it, so a key's `Arc<str>`s are not kept per
//!   producer-partition.
//!
//! An [`InFlightGuard`] remembers its slot number and a token unique to the
//! batch, so resolving it needs neither the key nor a hash; a slot reused
//! by another key never holds that token.

use std::sync::Arc;
use std::time::Duration;

use ahash::RandomState;
use tokio::sync::oneshot;

use shard::{BatchEntry, Shard, Slot, VACANT};
use sync::{AtomicU64, AtomicUsize, Clock, Mutex, MutexGuard, Ordering};

#[cfg(all(test, feature = "model-check"))]
mod model;
mod seed;
mod shard;
mod sync;
#[cfg(test)]
mod tests;

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
    /// The client certificate the proxy verified (`--tls-client-ca`), by
    /// its subject: never the same scope as a SASL user of any name.
    Certificate(Arc<str>),
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

impl BatchId {
    /// The identity of the batch whose header is `h`.
    pub fn of(h: &crate::codec::record_batch::RecordBatchHeader) -> BatchId {
        BatchId {
            epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            last_sequence: h.last_sequence(),
            crc: h.crc,
        }
    }
}

/// `None` means the original failed, timed out or was evicted.
pub type Outcome = Option<Committed>;

/// The decision for one batch (docs/architecture.md, "Dedup rules" 2-5).
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
    clock: Clock,
    next_token: AtomicU64,
    entries: AtomicUsize,
    evicted: EvictionCounts,
    /// The model check's planted bug: `begin` records a batch as committed
    /// before the broker answered. The checker must catch it.
    #[cfg(all(test, feature = "model-check"))]
    plant_commit_at_begin: std::sync::atomic::AtomicBool,
}

/// Producer-partitions (or, for `epoch`, batches) the cache let go, by
/// reason, since it was created. The cache only counts; whoever runs it
/// publishes the counts (the proxy as `kdp_dedup_cache_evictions_total`).
#[derive(Debug, Default)]
struct EvictionCounts {
    epoch: AtomicU64,
    capacity: AtomicU64,
    ttl: AtomicU64,
}

/// A reading of [`DedupCache::evictions`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evictions {
    /// Batches dropped because a higher producer epoch cleared their window.
    pub epoch: u64,
    /// Producer-partitions evicted to stay within the capacity.
    pub capacity: u64,
    /// Producer-partitions dropped after the idle TTL.
    pub ttl: u64,
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
    /// `window` is clamped to 1..=65,535 (the proxy's configuration allows
    /// up to 64).
    pub fn new(window: usize, max_producer_partitions: usize, idle_ttl: Duration) -> Arc<Self> {
        let shards = (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect();
        let fenced = (0..SHARDS)
            .map(|_| Mutex::new(std::collections::HashMap::with_hasher(sync::random_state())))
            .collect();
        Arc::new(DedupCache {
            shards,
            fenced,
            hasher: sync::random_state(),
            window: window.clamp(1, usize::from(u16::MAX)),
            // Slot numbers are u32.
            shard_capacity: max_producer_partitions
                .div_ceil(SHARDS)
                .clamp(1, VACANT as usize),
            capacity: max_producer_partitions,
            idle_ttl,
            clock: Clock::new(),
            next_token: AtomicU64::new(1),
            entries: AtomicUsize::new(0),
            evicted: EvictionCounts::default(),
            #[cfg(all(test, feature = "model-check"))]
            plant_commit_at_begin: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Producer-partitions held now.
    pub fn len(&self) -> usize {
        self.entries.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most producer-partitions it holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// What was evicted so far, by reason.
    pub fn evictions(&self) -> Evictions {
        Evictions {
            epoch: self.evicted.epoch.load(Ordering::Relaxed),
            capacity: self.evicted.capacity.load(Ordering::Relaxed),
            ttl: self.evicted.ttl.load(Ordering::Relaxed),
        }
    }

    fn now(&self) -> u32 {
        self.clock.secs()
    }

    /// Hash of a ⟨scope, topic⟩ pair.
    fn group_hash(&self, scope: &Scope, topic: &TopicKey) -> u64 {
        self.hasher.hash_one((scope, topic))
    }

    /// Hash of a full key, from its group's hash: stored slots are rehashed
    /// without touching the names.
    fn key_hash(&self, group_hash: u64, producer_id: i64, partition: i32) -> u64 {
        self.hasher.hash_one((group_hash, producer_id, partition))
    }

    fn slot_hash(&self, shard: &Shard, idx: usize) -> u64 {
        let s = &shard.slots[idx];
        self.key_hash(shard.group(s.group).hash, s.producer_id, s.partition)
    }

    /// Shard number of a key hash: bits the shard's own table does not use
    /// for its bucket index (low bits) or tags (top 7 bits).
    fn shard_of(hash: u64) -> usize {
        (hash >> 32) as usize % SHARDS
    }

    fn lock_shard(&self, idx: usize) -> MutexGuard<'_, Shard> {
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
        let group_hash = self.group_hash(&key.scope, &key.topic);
        let hash = self.key_hash(group_hash, key.producer_id, key.partition);
        let shard_idx = Self::shard_of(hash);
        let mut guard = self.lock_shard(shard_idx);
        let shard = &mut *guard;
        let idx = match shard.find(hash, &key) {
            Some(idx) => idx,
            None => {
                self.make_room(shard);
                self.insert(shard, hash, group_hash, &key, batch.epoch, now)
            }
        };
        let window = self.window;
        let mut w = shard.window(idx, window);
        w.slot.last_access = now;
        w.slot.referenced = true;
        if batch.epoch < w.slot.epoch {
            // The broker fences an older epoch; nothing to remember.
            return Lookup::Forward;
        }
        if batch.epoch > w.slot.epoch {
            // A higher epoch clears the window, as the broker's
            // ProducerStateEntry.maybeUpdateProducerEpoch does.
            let dropped = w.clear();
            w.slot.epoch = batch.epoch;
            if dropped > 0 {
                self.evicted
                    .epoch
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
        if let Some(i) = w.find(batch.base_sequence, batch.last_sequence) {
            return match w.get_mut(i) {
                BatchEntry::Committed { crc, .. } | BatchEntry::InFlight { crc, .. }
                    if *crc != batch.crc =>
                {
                    Lookup::Forward
                }
                BatchEntry::Committed { committed, .. } => Lookup::Duplicate(*committed),
                BatchEntry::InFlight { waiters, .. } => {
                    let (tx, rx) = oneshot::channel();
                    waiters.get_or_insert_default().push(tx);
                    Lookup::Wait(rx)
                }
                BatchEntry::Empty => unreachable!("found an empty ring position"),
            };
        }
        if w.len() >= window {
            w.remove(0);
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        #[cfg(all(test, feature = "model-check"))]
        if self
            .plant_commit_at_begin
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            w.push_back(BatchEntry::Committed {
                base_sequence: batch.base_sequence,
                last_sequence: batch.last_sequence,
                crc: batch.crc,
                committed: Committed {
                    base_offset: -1,
                    log_append_time_ms: -1,
                    log_start_offset: 0,
                },
            });
            drop(guard);
            return Lookup::Fresh(InFlightGuard {
                cache: Arc::clone(self),
                key: Some(key),
                shard: shard_idx as u32,
                slot: idx as u32,
                epoch: batch.epoch,
                token,
                batch,
            });
        }
        w.push_back(BatchEntry::InFlight {
            base_sequence: batch.base_sequence,
            last_sequence: batch.last_sequence,
            crc: batch.crc,
            token,
            waiters: None,
        });
        drop(guard);
        Lookup::Fresh(InFlightGuard {
            cache: Arc::clone(self),
            key: Some(key),
            shard: shard_idx as u32,
            slot: idx as u32,
            epoch: batch.epoch,
            token,
            batch,
        })
    }

    /// Takes a slot for `key` (not in the shard; room made) and indexes it.
    fn insert(
        &self,
        shard: &mut Shard,
        hash: u64,
        group_hash: u64,
        key: &ProducerPartition,
        epoch: i16,
        now: u32,
    ) -> usize {
        let group = shard.acquire_group(group_hash, key);
        let idx = match shard.free.pop() {
            Some(i) => i as usize,
            None => {
                if shard.slots.len() == shard.slots.capacity() {
                    // Grow geometrically but never past the shard's bound,
                    // so a full shard has no spare capacity.
                    let n = shard.slots.len();
                    let more = n.max(16).min(self.shard_capacity.saturating_sub(n)).max(1);
                    shard.slots.reserve_exact(more);
                    shard.batches.reserve_exact(more * self.window);
                }
                shard.slots.push(Slot::FREE);
                shard
                    .batches
                    .resize_with(shard.slots.len() * self.window, BatchEntry::default);
                shard.slots.len() - 1
            }
        };
        shard.slots[idx] = Slot {
            producer_id: key.producer_id,
            partition: key.partition,
            group,
            last_access: now,
            epoch,
            head: 0,
            len: 0,
            referenced: false,
        };
        shard.live += 1;
        let Shard {
            index,
            slots,
            groups,
            ..
        } = shard;
        index.insert_unique(hash, idx as u32, |&i| {
            let s = &slots[i as usize];
            let gh = match &groups[s.group as usize] {
                Some(g) => g.hash,
                None => unreachable!("an indexed slot refers to a freed group"),
            };
            self.key_hash(gh, s.producer_id, s.partition)
        });
        self.entries.fetch_add(1, Ordering::Relaxed);
        idx
    }

    /// Frees an occupied slot: unindexes it, fails its waiters.
    fn remove_slot(&self, shard: &mut Shard, idx: usize) {
        let hash = self.slot_hash(shard, idx);
        if let Ok(e) = shard.index.find_entry(hash, |&i| i as usize == idx) {
            e.remove();
        }
        shard.window(idx, self.window).clear();
        let group = shard.slots[idx].group;
        shard.release_group(group);
        shard.slots[idx] = Slot::FREE;
        shard.free.push(idx as u32);
        shard.live -= 1;
        self.entries.fetch_sub(1, Ordering::Relaxed);
    }

    /// CLOCK: evict one unreferenced slot when the shard is full.
    fn make_room(&self, shard: &mut Shard) {
        if shard.live < self.shard_capacity {
            return;
        }
        let n = shard.slots.len();
        for _ in 0..2 * n + 1 {
            let idx = shard.hand;
            shard.hand = if idx + 1 >= n { 0 } else { idx + 1 };
            let slot = &mut shard.slots[idx];
            if slot.is_vacant() {
                continue;
            }
            if slot.referenced {
                slot.referenced = false;
                continue;
            }
            self.remove_slot(shard, idx);
            self.evicted.capacity.fetch_add(1, Ordering::Relaxed);
            return;
        }
    }

    /// Resolves an in-flight batch. `Some` marks it committed and answers
    /// its waiters; `None` removes it (the broker said no, or we are unsure).
    fn resolve(&self, shard: u32, slot: u32, epoch: i16, token: u64, outcome: Outcome) {
        let mut guard = self.lock_shard(shard as usize);
        let idx = slot as usize;
        match guard.slots.get(idx) {
            Some(s) if !s.is_vacant() && s.epoch == epoch => {}
            _ => return,
        }
        let mut w = guard.window(idx, self.window);
        // Tokens are unique: a slot evicted and taken by another key, or
        // a window that rolled past the batch, does not hold it.
        let Some(i) = w.find_token(token) else {
            return;
        };
        match outcome {
            Some(c) => {
                let entry = w.get_mut(i);
                if let BatchEntry::InFlight {
                    base_sequence,
                    last_sequence,
                    crc,
                    waiters,
                    ..
                } = std::mem::take(entry)
                {
                    *entry = BatchEntry::Committed {
                        base_sequence,
                        last_sequence,
                        crc,
                        committed: c,
                    };
                    if let Some(ws) = waiters {
                        for w in *ws {
                            let _ = w.send(Some(c));
                        }
                    }
                }
            }
            None => w.remove(i),
        }
    }

    /// Drops producer-partitions idle for longer than the TTL. Called
    /// periodically; takes one shard lock at a time.
    pub fn sweep_idle(&self) -> usize {
        let ttl = self.idle_ttl.as_secs().min(u64::from(u32::MAX)) as u32;
        let now = self.now();
        let mut removed = 0;
        for i in 0..SHARDS {
            let mut guard = self.lock_shard(i);
            let shard = &mut *guard;
            for idx in 0..shard.slots.len() {
                let s = &shard.slots[idx];
                if !s.is_vacant() && now.saturating_sub(s.last_access) >= ttl {
                    self.remove_slot(shard, idx);
                    removed += 1;
                }
            }
        }
        self.evicted
            .ttl
            .fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }
}

/// Ownership of one in-flight batch entry. Committing it records the
/// broker's answer; dropping it unresolved removes the entry, so any error,
/// disconnect or early return leaves the cache forwarding, never answering.
pub struct InFlightGuard {
    cache: Arc<DedupCache>,
    /// `None` once resolved.
    key: Option<ProducerPartition>,
    shard: u32,
    slot: u32,
    epoch: i16,
    token: u64,
    /// The batch, as the shared store records it once committed.
    batch: BatchId,
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
    /// The producer-partition and batch this guard holds (what the shared
    /// store records once the broker acknowledged it); `None` once resolved.
    pub fn batch(&self) -> Option<(&ProducerPartition, BatchId)> {
        self.key.as_ref().map(|k| (k, self.batch))
    }

    pub fn commit(mut self, c: Committed) {
        if self.key.take().is_some() {
            self.cache
                .resolve(self.shard, self.slot, self.epoch, self.token, Some(c));
        }
    }
}

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.key.take().is_some() {
            self.cache
                .resolve(self.shard, self.slot, self.epoch, self.token, None);
        }
    }
}
