//! The second level of dedup state: a store shared by proxy replicas
//! (docs/replicas.md), behind the one interface [`DedupStore`].
//!
//! The in-process caches ([`DedupCache`](super::DedupCache),
//! [`KeyCache`](super::KeyCache)) stay the first level and decide alone
//! whenever they know enough. The store is asked only what they cannot
//! know: the committed batches of a producer-partition this replica has not
//! seen (a retry that reconnected to another replica). What it answers is
//! seeded into the first level as `Committed` entries, so the rules of
//! `classify` (same range, epoch and CRC, CRC verified) decide as ever.
//!
//! What goes in: only batches the broker acknowledged for an acks=all
//! request with error NONE (`Pending::complete`), exactly as the first
//! level commits them. Writes are queued ([`DedupStore::save_batch`] never
//! waits): they leave the response path at once and the implementation
//! pipelines them.
//!
//! Store trouble is an error, never an answer: the caller then forwards
//! (the broker decides), so a store that is down, slow, full or failing
//! over costs efficiency, never a record. Implementations bound every call
//! by their own timeout; this module has no clock.
//!
//! Two implementations: [`MemoryStore`] (in-process, one map; the reference
//! the rules are tested against, and what one process would use) and the
//! Redis store in `crate::store`.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use super::cache::{BatchId, Committed, ProducerPartition, Scope, TopicKey};
use super::keys::{KeyId, KeyOrigin};

/// A committed batch as the store holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoredBatch {
    pub id: BatchId,
    pub committed: Committed,
}

/// The key space of one ⟨scope, topic⟩: the keys of one claim share it,
/// so a Redis Cluster keeps them in one slot (one script per space).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeySpace(pub u64);

impl KeySpace {
    pub fn new(scope: &Scope, topic: &TopicKey) -> KeySpace {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let (kind, name): (u8, std::borrow::Cow<'_, str>) = match scope {
            Scope::Anonymous => (0, "".into()),
            Scope::Principal(u) => (1, u.as_ref().into()),
            Scope::Certificate(c) => (2, c.as_ref().into()),
            Scope::Connection(id) => (3, id.to_string().into()),
        };
        h.update(&[kind]);
        h.update(&(name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        match topic {
            TopicKey::Name(n) => {
                h.update(&[0]);
                h.update(n.as_bytes());
            }
            TopicKey::Id(id) => {
                h.update(&[1]);
                h.update(id);
            }
        }
        KeySpace(h.digest())
    }
}

/// Who holds a key claim in the store: a replica's id and a number unique
/// in that replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimToken {
    pub replica: u64,
    pub n: u64,
}

/// A key as the store knows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredKey {
    /// Nobody held it: now this claim's token does (until its claim TTL).
    Claimed,
    /// Acknowledged by the broker through some replica.
    Committed(KeyOrigin),
    /// Another claim holds it: its batch is at the broker now.
    Held(ClaimToken),
}

/// Why a store call gave no answer. The caller falls back; the kinds only
/// label metrics and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// No answer within the per-call timeout.
    Timeout,
    /// No connection (down, reconnecting, failing over).
    Unavailable(String),
    /// The store answered with an error or something unreadable.
    Failed(String),
}

impl StoreError {
    /// A bounded label value for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            StoreError::Timeout => "timeout",
            StoreError::Unavailable(_) => "unavailable",
            StoreError::Failed(_) => "failed",
        }
    }
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::Timeout => f.write_str("store call timed out"),
            StoreError::Unavailable(why) => write!(f, "store unavailable: {why}"),
            StoreError::Failed(why) => write!(f, "store error: {why}"),
        }
    }
}

/// A store call in progress; `'static` so the caller may hold it across
/// awaits without borrowing the store.
pub type StoreFuture<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// What replicas share. Every method is bounded by the implementation's
/// per-call timeout (or never waits at all).
pub trait DedupStore: Send + Sync + std::fmt::Debug {
    /// The committed batches of each producer-partition in `keys`, in the
    /// same order, in one round trip for all of them. A producer-partition
    /// the store does not hold gives an empty list.
    fn load_windows(&self, keys: Vec<ProducerPartition>) -> StoreFuture<Vec<Vec<StoredBatch>>>;

    /// Records a batch the broker acknowledged (acks=all, NONE). Queued:
    /// never waits, never fails the caller; a write that cannot be made is
    /// counted by the implementation and costs only efficiency.
    fn save_batch(&self, key: ProducerPartition, batch: StoredBatch);

    /// Whether the last calls reached the store (for `/readyz` and logs).
    fn is_up(&self) -> bool;

    /// Claims every key of `keys` that nobody holds for `token`, atomically
    /// per key across replicas, and tells what it found for each (same
    /// order). One round trip for all of them, whatever their number.
    fn claim_keys(
        &self,
        keys: Vec<(KeySpace, KeyId)>,
        token: ClaimToken,
    ) -> StoreFuture<Vec<StoredKey>>;

    /// Records a key the broker acknowledged (acks=all, NONE), if `token`
    /// still holds it or nobody does, for the key window. Queued.
    fn commit_key(&self, space: KeySpace, id: KeyId, token: ClaimToken, origin: KeyOrigin);

    /// Lets go of a claim whose batch failed, if `token` still holds it.
    /// Queued.
    fn release_key(&self, space: KeySpace, id: KeyId, token: ClaimToken);
}

/// What key dedup does when the store cannot be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnStoreError {
    /// Decide with this replica's keys alone (a duplicate may pass).
    #[default]
    Forward,
    /// Answer the batch with a retriable error; the producer sends it again.
    Fail,
}

/// Whether a producer-partition of this scope may be shared across
/// replicas. A connection-scoped one (an authentication whose principal
/// the proxy cannot read) is numbered per process: another replica's
/// connection 7 is someone else.
pub fn shareable(scope: &Scope) -> bool {
    !matches!(scope, Scope::Connection(_))
}

/// The in-process store: one map of bounded windows. Holds what the Redis
/// store holds, without the network; replicas in one process (unit tests)
/// share it through an `Arc`.
#[derive(Debug)]
pub struct MemoryStore {
    window: usize,
    windows: Mutex<HashMap<ProducerPartition, VecDeque<StoredBatch>>>,
    /// Keys without expiry: a claim whose replica vanished stays held
    /// (the Redis store expires it after its claim TTL).
    keys: Mutex<HashMap<(KeySpace, KeyId), StoredKey>>,
}

impl MemoryStore {
    pub fn new(window: usize) -> MemoryStore {
        MemoryStore {
            window: window.max(1),
            windows: Mutex::default(),
            keys: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ProducerPartition, VecDeque<StoredBatch>>> {
        self.windows.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl DedupStore for MemoryStore {
    fn load_windows(&self, keys: Vec<ProducerPartition>) -> StoreFuture<Vec<Vec<StoredBatch>>> {
        let map = self.lock();
        let found = keys
            .iter()
            .map(|k| {
                map.get(k)
                    .map(|w| w.iter().copied().collect())
                    .unwrap_or_default()
            })
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn save_batch(&self, key: ProducerPartition, batch: StoredBatch) {
        if !shareable(&key.scope) {
            return;
        }
        let mut map = self.lock();
        let w = map.entry(key).or_default();
        w.push_back(batch);
        while w.len() > self.window {
            w.pop_front();
        }
    }

    fn is_up(&self) -> bool {
        true
    }

    fn claim_keys(
        &self,
        keys: Vec<(KeySpace, KeyId)>,
        token: ClaimToken,
    ) -> StoreFuture<Vec<StoredKey>> {
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let found = keys
            .into_iter()
            .map(|k| match map.get(&k) {
                Some(StoredKey::Held(t)) if *t == token => StoredKey::Claimed,
                Some(v) => *v,
                None => {
                    map.insert(k, StoredKey::Held(token));
                    StoredKey::Claimed
                }
            })
            .collect();
        Box::pin(std::future::ready(Ok(found)))
    }

    fn commit_key(&self, space: KeySpace, id: KeyId, token: ClaimToken, origin: KeyOrigin) {
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&(space, id)) {
            Some(StoredKey::Held(t)) if *t != token => {}
            _ => {
                map.insert((space, id), StoredKey::Committed(origin));
            }
        }
    }

    fn release_key(&self, space: KeySpace, id: KeyId, token: ClaimToken) {
        let mut map = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if map.get(&(space, id)) == Some(&StoredKey::Held(token)) {
            map.remove(&(space, id));
        }
    }
}

/// A store that always fails (unit tests of the fallbacks).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Down;

#[cfg(test)]
impl DedupStore for Down {
    fn load_windows(&self, _: Vec<ProducerPartition>) -> StoreFuture<Vec<Vec<StoredBatch>>> {
        Box::pin(std::future::ready(Err(StoreError::Timeout)))
    }
    fn save_batch(&self, _: ProducerPartition, _: StoredBatch) {}
    fn is_up(&self) -> bool {
        false
    }
    fn claim_keys(&self, _: Vec<(KeySpace, KeyId)>, _: ClaimToken) -> StoreFuture<Vec<StoredKey>> {
        Box::pin(std::future::ready(Err(StoreError::Unavailable(
            "down".into(),
        ))))
    }
    fn commit_key(&self, _: KeySpace, _: KeyId, _: ClaimToken, _: KeyOrigin) {}
    fn release_key(&self, _: KeySpace, _: KeyId, _: ClaimToken) {}
}

/// The batches of `stored` the first level may take: those of the newest
/// epoch among them (a higher epoch clears a window, as on the broker),
/// oldest first, one per sequence range.
pub fn newest_epoch(stored: &[StoredBatch]) -> Vec<StoredBatch> {
    let Some(epoch) = stored.iter().map(|b| b.id.epoch).max() else {
        return Vec::new();
    };
    let mut out: Vec<StoredBatch> = Vec::with_capacity(stored.len());
    for b in stored.iter().filter(|b| b.id.epoch == epoch) {
        let same_range = |o: &StoredBatch| {
            o.id.base_sequence == b.id.base_sequence && o.id.last_sequence == b.id.last_sequence
        };
        if !out.iter().any(same_range) {
            out.push(*b);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::dedup::cache::TopicKey;

    fn key(scope: Scope) -> ProducerPartition {
        ProducerPartition {
            scope,
            producer_id: 7,
            topic: TopicKey::Name(Arc::from("t")),
            partition: 0,
        }
    }

    fn stored(epoch: i16, seq: i32, offset: i64) -> StoredBatch {
        StoredBatch {
            id: BatchId {
                epoch,
                base_sequence: seq,
                last_sequence: seq + 1,
                crc: 9,
            },
            committed: Committed {
                base_offset: offset,
                log_append_time_ms: -1,
                log_start_offset: 0,
            },
        }
    }

    fn load(s: &MemoryStore, k: ProducerPartition) -> Vec<StoredBatch> {
        let fut = s.load_windows(vec![k]);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(fut).poll(&mut cx) {
            std::task::Poll::Ready(Ok(mut v)) => v.remove(0),
            other => panic!("memory store did not answer at once: {other:?}"),
        }
    }

    #[test]
    fn the_memory_store_keeps_the_last_window_of_batches() {
        let s = MemoryStore::new(2);
        for seq in 0..4 {
            s.save_batch(key(Scope::Anonymous), stored(0, seq * 2, seq as i64));
        }
        let w = load(&s, key(Scope::Anonymous));
        assert_eq!(w, vec![stored(0, 4, 2), stored(0, 6, 3)]);
    }

    #[test]
    fn connection_scoped_batches_are_never_shared() {
        let s = MemoryStore::new(5);
        s.save_batch(key(Scope::Connection(3)), stored(0, 0, 1));
        assert!(load(&s, key(Scope::Connection(3))).is_empty());
    }

    #[test]
    fn only_the_newest_epoch_of_a_window_counts() {
        let w = [
            stored(0, 0, 1),
            stored(1, 0, 5),
            stored(1, 0, 5),
            stored(1, 2, 6),
        ];
        assert_eq!(newest_epoch(&w), vec![stored(1, 0, 5), stored(1, 2, 6)]);
        assert!(newest_epoch(&[]).is_empty());
    }
}
