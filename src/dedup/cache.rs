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
use hashbrown::HashTable;
use tokio::sync::oneshot;

use sync::{AtomicU64, AtomicUsize, Clock, Mutex, MutexGuard, Ordering};

#[cfg(all(test, feature = "model-check"))]
mod model;
mod sync;

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

/// `None` means the original failed, timed out or was evicted.
pub type Outcome = Option<Committed>;

type Waiters = Vec<oneshot::Sender<Outcome>>;

/// One batch of a window. The sequence range and CRC sit in each variant
/// (not beside the enum) so they share the space after the tag: 40 B.
#[derive(Default)]
enum BatchEntry {
    /// A ring position not in use.
    #[default]
    Empty,
    InFlight {
        base_sequence: i32,
        last_sequence: i32,
        crc: u32,
        token: u64,
        /// Boxed: a duplicate arriving while the original is at the broker
        /// is rare, and an unboxed `Vec` would size every entry.
        waiters: Option<Box<Waiters>>,
    },
    Committed {
        base_sequence: i32,
        last_sequence: i32,
        crc: u32,
        committed: Committed,
    },
}

impl BatchEntry {
    /// Sequence range and CRC; `None` for `Empty`.
    fn id(&self) -> Option<(i32, i32, u32)> {
        match *self {
            BatchEntry::Empty => None,
            BatchEntry::InFlight {
                base_sequence,
                last_sequence,
                crc,
                ..
            }
            | BatchEntry::Committed {
                base_sequence,
                last_sequence,
                crc,
                ..
            } => Some((base_sequence, last_sequence, crc)),
        }
    }

    /// Fails any waiter: the original's outcome is unknown to us now.
    fn fail_waiters(&mut self) {
        if let BatchEntry::InFlight { waiters, .. } = self
            && let Some(ws) = waiters.take()
        {
            for w in *ws {
                let _ = w.send(None);
            }
        }
    }
}

/// No group: the slot is free.
const VACANT: u32 = u32::MAX;

/// One producer-partition. Its window is `batches[slot * window..]`.
#[derive(Clone, Copy)]
struct Slot {
    producer_id: i64,
    partition: i32,
    /// Index into `Shard::groups`, or `VACANT`.
    group: u32,
    /// Seconds since the cache was created, at the last lookup.
    last_access: u32,
    epoch: i16,
    /// Ring position of the oldest batch.
    head: u16,
    /// Batches held.
    len: u16,
    /// CLOCK reference bit.
    referenced: bool,
}

impl Slot {
    const FREE: Slot = Slot {
        producer_id: 0,
        partition: 0,
        group: VACANT,
        last_access: 0,
        epoch: 0,
        head: 0,
        len: 0,
        referenced: false,
    };

    fn is_vacant(&self) -> bool {
        self.group == VACANT
    }
}

/// A ⟨scope, topic⟩ pair, held once per shard for all its slots.
struct Group {
    scope: Scope,
    topic: TopicKey,
    /// `DedupCache::group_hash` of the pair.
    hash: u64,
    /// Slots using it.
    refs: u32,
}

/// The window of one slot: its ring of batches, oldest first.
struct Window<'a> {
    slot: &'a mut Slot,
    ring: &'a mut [BatchEntry],
}

impl Window<'_> {
    /// Ring position of the `i`-th oldest batch.
    fn pos(&self, i: usize) -> usize {
        let p = usize::from(self.slot.head) + i;
        if p >= self.ring.len() {
            p - self.ring.len()
        } else {
            p
        }
    }

    fn len(&self) -> usize {
        usize::from(self.slot.len)
    }

    fn get_mut(&mut self, i: usize) -> &mut BatchEntry {
        let p = self.pos(i);
        &mut self.ring[p]
    }

    /// Newest first: a retry is most often of the latest batches. No two
    /// batches of a window share a sequence range, so the order of the
    /// search does not change what it finds.
    fn find(&self, base_sequence: i32, last_sequence: i32) -> Option<usize> {
        (0..self.len()).rev().find(|&i| {
            self.ring[self.pos(i)]
                .id()
                .is_some_and(|(b, l, _)| b == base_sequence && l == last_sequence)
        })
    }

    /// Newest first, as `find`.
    fn find_token(&self, token: u64) -> Option<usize> {
        (0..self.len()).rev().find(|&i| {
            matches!(self.ring[self.pos(i)], BatchEntry::InFlight { token: t, .. } if t == token)
        })
    }

    /// Appends a batch; the window must not be full.
    fn push_back(&mut self, e: BatchEntry) {
        debug_assert!(self.len() < self.ring.len());
        let p = self.pos(self.len());
        self.ring[p] = e;
        self.slot.len += 1;
    }

    /// Removes the `i`-th oldest batch, failing its waiters; the younger
    /// ones move up, so the order is kept.
    fn remove(&mut self, i: usize) {
        let p = self.pos(i);
        let mut e = std::mem::take(&mut self.ring[p]);
        e.fail_waiters();
        if i == 0 {
            self.slot.head = u16::try_from(self.pos(1)).unwrap_or(0);
        } else {
            for j in i..self.len() - 1 {
                let (a, b) = (self.pos(j), self.pos(j + 1));
                self.ring.swap(a, b);
            }
        }
        self.slot.len -= 1;
        if self.slot.len == 0 {
            self.slot.head = 0;
        }
    }

    /// Drops every batch, failing waiters; returns how many there were.
    fn clear(&mut self) -> usize {
        let n = self.len();
        for i in 0..n {
            let p = self.pos(i);
            let mut e = std::mem::take(&mut self.ring[p]);
            e.fail_waiters();
        }
        self.slot.head = 0;
        self.slot.len = 0;
        n
    }
}

struct Shard {
    /// Slot numbers, keyed by `DedupCache::key_hash`.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    /// `window` entries per slot.
    batches: Vec<BatchEntry>,
    /// Vacant slot numbers.
    free: Vec<u32>,
    /// Occupied slots.
    live: usize,
    /// CLOCK hand: the next slot number to look at.
    hand: usize,
    /// ⟨scope, topic⟩ group numbers, keyed by `Group::hash`.
    group_index: HashTable<u32>,
    groups: Vec<Option<Group>>,
    free_groups: Vec<u32>,
}

impl Shard {
    fn new() -> Self {
        Shard {
            index: HashTable::new(),
            slots: Vec::new(),
            batches: Vec::new(),
            free: Vec::new(),
            live: 0,
            hand: 0,
            group_index: HashTable::new(),
            groups: Vec::new(),
            free_groups: Vec::new(),
        }
    }

    fn group(&self, g: u32) -> &Group {
        match &self.groups[g as usize] {
            Some(g) => g,
            None => unreachable!("a slot refers to a freed group"),
        }
    }

    fn window(&mut self, idx: usize, window: usize) -> Window<'_> {
        Window {
            slot: &mut self.slots[idx],
            ring: &mut self.batches[idx * window..(idx + 1) * window],
        }
    }

    /// The slot holding `key`, whose full hash is `hash`.
    fn find(&self, hash: u64, key: &ProducerPartition) -> Option<usize> {
        let Shard {
            index,
            slots,
            groups,
            ..
        } = self;
        index
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.producer_id == key.producer_id
                    && s.partition == key.partition
                    && groups[s.group as usize]
                        .as_ref()
                        .is_some_and(|g| g.scope == key.scope && g.topic == key.topic)
            })
            .map(|&i| i as usize)
    }

    /// The group of `key`'s ⟨scope, topic⟩, made if new, with one more ref.
    fn acquire_group(&mut self, group_hash: u64, key: &ProducerPartition) -> u32 {
        let Shard {
            group_index,
            groups,
            free_groups,
            ..
        } = self;
        let found = group_index.find(group_hash, |&g| {
            groups[g as usize]
                .as_ref()
                .is_some_and(|g| g.scope == key.scope && g.topic == key.topic)
        });
        if let Some(&g) = found {
            if let Some(group) = groups[g as usize].as_mut() {
                group.refs += 1;
            }
            return g;
        }
        let group = Group {
            scope: key.scope.clone(),
            topic: key.topic.clone(),
            hash: group_hash,
            refs: 1,
        };
        let g = match free_groups.pop() {
            Some(g) => {
                groups[g as usize] = Some(group);
                g
            }
            None => {
                groups.push(Some(group));
                u32::try_from(groups.len() - 1).expect("fewer groups than slots")
            }
        };
        group_index.insert_unique(group_hash, g, |&g| match &groups[g as usize] {
            Some(group) => group.hash,
            None => unreachable!("the group index holds a freed group"),
        });
        g
    }

    fn release_group(&mut self, g: u32) {
        let Shard {
            group_index,
            groups,
            free_groups,
            ..
        } = self;
        let Some(group) = groups[g as usize].as_mut() else {
            return;
        };
        group.refs -= 1;
        if group.refs > 0 {
            return;
        }
        if let Ok(e) = group_index.find_entry(group.hash, |&x| x == g) {
            e.remove();
        }
        groups[g as usize] = None;
        free_groups.push(g);
    }
}

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

#[cfg(test)]
impl DedupCache {
    /// Asserts the shards' internal consistency.
    fn check_invariants(&self) {
        let w = self.window;
        let mut total = 0;
        for (si, s) in self.shards.iter().enumerate() {
            let sh = s.lock().unwrap();
            assert_eq!(sh.batches.len(), sh.slots.len() * w);
            let mut live = 0;
            let mut refs = vec![0u32; sh.groups.len()];
            for (idx, slot) in sh.slots.iter().enumerate() {
                let ring = &sh.batches[idx * w..(idx + 1) * w];
                if slot.is_vacant() {
                    assert!(sh.free.contains(&(idx as u32)), "vacant slot not free");
                    assert!(
                        ring.iter().all(|e| e.id().is_none()),
                        "vacant slot holds batches"
                    );
                    continue;
                }
                live += 1;
                refs[slot.group as usize] += 1;
                let h = self.slot_hash(&sh, idx);
                assert_eq!(Self::shard_of(h), si, "slot in the wrong shard");
                assert!(
                    sh.index.find(h, |&i| i as usize == idx).is_some(),
                    "slot not indexed"
                );
                let (head, len) = (usize::from(slot.head), usize::from(slot.len));
                assert!(head < w && len <= w);
                for (p, e) in ring.iter().enumerate() {
                    let in_ring = (p + w - head) % w < len;
                    assert_eq!(
                        e.id().is_some(),
                        in_ring,
                        "ring position {p} of {head}+{len}"
                    );
                }
                // `Window::find` searches newest first: sound only because
                // no sequence range is held twice.
                let mut ranges: Vec<_> = ring
                    .iter()
                    .filter_map(|e| e.id())
                    .map(|(b, l, _)| (b, l))
                    .collect();
                ranges.sort_unstable();
                ranges.dedup();
                assert_eq!(ranges.len(), len, "a sequence range held twice");
            }
            assert_eq!(live, sh.live);
            assert!(live <= self.shard_capacity);
            assert_eq!(sh.index.len(), live);
            assert_eq!(sh.free.len(), sh.slots.len() - live);
            let mut groups = 0;
            for (g, group) in sh.groups.iter().enumerate() {
                match group {
                    Some(group) => {
                        groups += 1;
                        assert!(group.refs > 0);
                        assert_eq!(group.refs, refs[g], "group refs");
                        assert_eq!(group.hash, self.group_hash(&group.scope, &group.topic));
                        assert!(
                            sh.group_index
                                .find(group.hash, |&x| x as usize == g)
                                .is_some()
                        );
                    }
                    None => {
                        assert_eq!(refs[g], 0);
                        assert!(sh.free_groups.contains(&(g as u32)));
                    }
                }
            }
            assert_eq!(sh.group_index.len(), groups);
            assert_eq!(sh.free_groups.len(), sh.groups.len() - groups);
            total += live;
        }
        assert_eq!(total, self.len());
    }

    /// ⟨scope, topic⟩ groups held over all shards.
    fn groups(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().group_index.len())
            .sum()
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
    fn a_certificate_and_a_sasl_user_of_the_same_name_never_meet() {
        let c = cache();
        let name: Arc<str> = Arc::from("subject:3011");
        let mut by_cert = key(1, 0);
        by_cert.scope = Scope::Certificate(Arc::clone(&name));
        let Lookup::Fresh(g) = c.begin(by_cert.clone(), id(0, 0, 9, 7)) else {
            panic!()
        };
        g.commit(committed(42));
        let mut by_user = key(1, 0);
        by_user.scope = Scope::Principal(name);
        assert!(matches!(c.begin(by_user, id(0, 0, 9, 7)), Lookup::Fresh(_)));
        assert!(matches!(
            c.begin(by_cert, id(0, 0, 9, 7)),
            Lookup::Duplicate(_)
        ));
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

    #[test]
    fn entries_stay_compact() {
        // The memory per producer-partition (docs/performance.md) rests on
        // these sizes: 32 B per slot, 40 B per batch of the window.
        assert_eq!(std::mem::size_of::<Slot>(), 32);
        assert_eq!(std::mem::size_of::<BatchEntry>(), 40);
    }

    #[tokio::test]
    async fn a_waiter_survives_the_removal_of_an_older_batch() {
        let c = cache();
        let Lookup::Fresh(g1) = c.begin(key(1, 0), id(0, 0, 0, 1)) else {
            panic!()
        };
        let Lookup::Fresh(g2) = c.begin(key(1, 0), id(0, 1, 1, 1)) else {
            panic!()
        };
        let Lookup::Wait(rx) = c.begin(key(1, 0), id(0, 1, 1, 1)) else {
            panic!()
        };
        drop(g1);
        c.check_invariants();
        g2.commit(committed(7));
        assert_eq!(rx.await.unwrap(), Some(committed(7)));
        assert!(matches!(
            c.begin(key(1, 0), id(0, 1, 1, 1)),
            Lookup::Duplicate(x) if x.base_offset == 7
        ));
        c.check_invariants();
    }

    #[test]
    fn window_order_is_kept_when_a_middle_batch_is_removed() {
        let c = DedupCache::new(3, 1000, Duration::from_secs(60));
        let fresh = |s: i32| {
            let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, s, s, 1)) else {
                panic!("batch {s} must be fresh")
            };
            g
        };
        fresh(0).commit(committed(0));
        let g1 = fresh(1);
        fresh(2).commit(committed(2));
        drop(g1);
        fresh(3).commit(committed(3));
        // [0, 2, 3]: full; the next batch rolls out 0, the oldest.
        fresh(4).commit(committed(4));
        c.check_invariants();
        for s in [2, 3, 4] {
            assert!(
                matches!(c.begin(key(1, 0), id(0, s, s, 1)), Lookup::Duplicate(x) if x.base_offset == i64::from(s)),
                "batch {s}"
            );
        }
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 0, 1)),
            Lookup::Fresh(_)
        ));
        c.check_invariants();
    }

    #[tokio::test]
    async fn a_guard_never_resolves_a_batch_of_the_key_that_took_its_slot() {
        // One slot per shard: the first key landing in A's shard takes
        // A's slot.
        let c = DedupCache::new(5, 1, Duration::from_secs(60));
        let Lookup::Fresh(ga) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        let Lookup::Wait(mut rx) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        let mut guards = Vec::new();
        let mut last = 0;
        for pid in 2..10_000 {
            let Lookup::Fresh(g) = c.begin(key(pid, 0), id(0, 0, 9, 7)) else {
                panic!()
            };
            guards.push(g);
            if let Ok(outcome) = rx.try_recv() {
                assert_eq!(outcome, None, "eviction fails the waiter");
                last = pid;
                break;
            }
        }
        assert!(last > 0, "key 1 was never evicted");
        c.check_invariants();
        ga.commit(committed(999));
        assert!(
            matches!(c.begin(key(last, 0), id(0, 0, 9, 7)), Lookup::Wait(_)),
            "the new key's batch is still in flight"
        );
        assert!(matches!(
            c.begin(key(1, 0), id(0, 0, 9, 7)),
            Lookup::Fresh(_)
        ));
        c.check_invariants();
    }

    #[tokio::test]
    async fn sweep_fails_waiters_and_releases_names() {
        let c = DedupCache::new(5, 100, Duration::from_secs(0));
        let mut k = key(1, 0);
        k.scope = Scope::Principal(Arc::from("alice"));
        k.topic = TopicKey::Id([7; 16]);
        let Lookup::Fresh(g) = c.begin(k.clone(), id(0, 0, 0, 1)) else {
            panic!()
        };
        let Lookup::Wait(rx) = c.begin(k.clone(), id(0, 0, 0, 1)) else {
            panic!()
        };
        assert_eq!(c.groups(), 1);
        assert_eq!(c.sweep_idle(), 1);
        assert_eq!(rx.await.unwrap(), None);
        assert_eq!(c.groups(), 0);
        g.commit(committed(1));
        assert!(c.is_empty());
        c.check_invariants();
    }

    #[test]
    fn keys_sharing_a_scope_and_topic_share_one_group_per_shard() {
        let c = cache();
        for pid in 0..500 {
            if let Lookup::Fresh(g) = c.begin(key(pid, 0), id(0, 0, 0, 1)) {
                g.commit(committed(0));
            }
        }
        assert_eq!(c.len(), 500);
        assert!(c.groups() <= SHARDS);
        c.check_invariants();
    }

    #[test]
    fn mixed_operations_keep_the_shards_consistent() {
        // Small shards (2 slots each), window 3, keys over two scopes and
        // topics by name and id: insertion, eviction, epoch bumps, window
        // roll, waits, drops, commits, fences and sweeps.
        let c = DedupCache::new(3, 128, Duration::from_secs(60));
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut guards: Vec<InFlightGuard> = Vec::new();
        let mut waits = Vec::new();
        for step in 0..10_000 {
            let r = next();
            let mut k = key((r % 97) as i64, ((r >> 8) % 3) as i32);
            if r >> 12 & 1 == 1 {
                k.scope = Scope::Principal(Arc::from("p"));
            }
            if r >> 13 & 1 == 1 {
                k.topic = TopicKey::Id([1; 16]);
            }
            let epoch = ((r >> 16) % 3) as i16;
            let seq = ((r >> 20) % 6) as i32;
            match (r >> 32) % 10 {
                0..=5 => match c.begin(k, id(epoch, seq, seq, 1)) {
                    Lookup::Fresh(g) => guards.push(g),
                    Lookup::Wait(rx) => waits.push(rx),
                    Lookup::Duplicate(_) | Lookup::Forward => {}
                },
                6 | 7 if !guards.is_empty() => {
                    let g = guards.swap_remove((r >> 40) as usize % guards.len());
                    g.commit(committed(step));
                }
                8 if !guards.is_empty() => {
                    drop(guards.swap_remove((r >> 40) as usize % guards.len()));
                }
                9 if r >> 40 & 0xff == 0 => {
                    c.sweep_idle();
                }
                9 if r >> 40 & 0xff == 1 => c.fence(k.producer_id, epoch),
                _ => {}
            }
            c.check_invariants();
        }
        drop(guards);
        // Every waiter was answered: commit, failure, eviction or epoch.
        assert!(waits.len() > 10, "{} waits", waits.len());
        for mut rx in waits {
            assert!(rx.try_recv().is_ok());
        }
        c.check_invariants();
    }
}
