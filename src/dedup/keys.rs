//! The idempotency-key cache: which record keys the cluster already holds,
//! per dedup scope and topic, for a window of time and a bounded count.
//!
//! A key is identified by a 128-bit XXH3 hash of ⟨scope, topic, key bytes⟩
//! ([`KeyId`]). Two different keys share an id with probability about
//! n²/2¹²⁹ for n keys held: 10 million keys give ~1.5·10⁻²⁵, so a record is
//! never dropped for a collision in practice.
//!
//! A key is `InFlight` from the moment a batch carrying it is forwarded
//! until the broker answers: a second copy waits for that answer. It
//! becomes `Committed` only when the broker acknowledged the batch with
//! acks=all and NONE ([`KeyClaims::commit`]); any other ending removes it
//! (dropping the [`KeyClaims`]), so a record is never dropped on the
//! strength of a write that did not happen.
//!
//! Layout: 64 shards, each a hash table of 16-byte ids to 24-byte entries
//! and a FIFO of (commit second, id) that drives both bounds: entries
//! older than the window, and the oldest entries beyond the count, are
//! dropped from its front. About 70-95 B per key held (the FIFO grows by
//! doubling). Past its bounds the window is best effort: an evicted key
//! written again is written again.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::cache::Scope;

mod shared;

const SHARDS: usize = 64;

/// A key's identity: the 128-bit hash of ⟨scope, topic, key bytes⟩.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId([u64; 2]);

impl KeyId {
    /// The hash's two words (the store names keys by them).
    pub fn words(&self) -> [u64; 2] {
        self.0
    }
}

impl KeyId {
    /// The id of `key` in `topic` for `scope`. Each field is length-prefixed
    /// so that no two different triples hash the same bytes.
    pub fn new(scope: &Scope, topic: &str, key: &[u8]) -> KeyId {
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        let (kind, name): (u8, std::borrow::Cow<'_, str>) = match scope {
            Scope::Anonymous => (0, "".into()),
            Scope::Principal(u) => (1, u.as_ref().into()),
            Scope::Certificate(s) => (2, s.as_ref().into()),
            Scope::Connection(id) => (3, id.to_string().into()),
        };
        h.update(&[kind]);
        for field in [name.as_bytes(), topic.as_bytes(), key] {
            h.update(&(field.len() as u64).to_le_bytes());
            h.update(field);
        }
        let v = h.digest128();
        KeyId([v as u64, (v >> 64) as u64])
    }
}

/// Where the record that first carried a key was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyOrigin {
    pub partition: i32,
    pub offset: i64,
}

/// `None`: the first copy failed, timed out or its connection dropped.
pub type KeyOutcome = Option<KeyOrigin>;

enum Entry {
    // Boxed so an entry stays 24 B while nobody waits (a Vec is 24 B alone).
    #[allow(clippy::box_collection)]
    InFlight {
        token: u64,
        waiters: Option<Box<Vec<oneshot::Sender<KeyOutcome>>>>,
    },
    Committed {
        /// Second (since the cache started) the broker acknowledged it.
        at: u32,
        partition: i32,
        offset: i64,
    },
}

/// The id is already a hash: its first word indexes the table.
#[derive(Clone, Copy, Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `KeyId`'s derived Hash (array of u64
        // preceded by nothing: arrays hash their elements); keep a fold for
        // anything else.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 ^= v;
    }
}

#[derive(Clone, Copy, Default)]
struct IdBuild;

impl BuildHasher for IdBuild {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

#[derive(Default)]
struct Shard {
    map: std::collections::HashMap<KeyId, Entry, IdBuild>,
    /// Committed keys in commit order.
    order: VecDeque<(u32, KeyId)>,
}

/// What the cache knows of a key.
#[derive(Debug)]
pub enum Claim {
    /// Nobody holds it: this copy is the one that goes to the broker.
    Fresh,
    /// The cluster holds it.
    Duplicate(KeyOrigin),
    /// Another copy is at the broker now: wait for its outcome.
    InFlight(oneshot::Receiver<KeyOutcome>),
}

/// Keys removed from the cache, by reason, since it was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct KeyEvictions {
    /// Older than the window.
    pub expired: u64,
    /// The oldest keys beyond the count bound.
    pub capacity: u64,
}

pub struct KeyCache {
    shards: Box<[Mutex<Shard>]>,
    window: Duration,
    shard_capacity: usize,
    started: Instant,
    next_token: AtomicU64,
    len: AtomicUsize,
    expired: AtomicU64,
    capacity_evicted: AtomicU64,
    /// Claims shared with other replicas through the store (keys/shared.rs).
    shared: shared::SharedClaims,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyCache")
            .field("keys", &self.len())
            .field("window", &self.window)
            .finish()
    }
}

impl KeyCache {
    pub fn new(window: Duration, max_keys: usize) -> Arc<KeyCache> {
        Arc::new(KeyCache {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            window,
            shard_capacity: max_keys.div_ceil(SHARDS).max(1),
            started: Instant::now(),
            next_token: AtomicU64::new(1),
            len: AtomicUsize::new(0),
            expired: AtomicU64::new(0),
            capacity_evicted: AtomicU64::new(0),
            shared: shared::SharedClaims::default(),
        })
    }

    /// Keys held now (in flight or committed).
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn evictions(&self) -> KeyEvictions {
        KeyEvictions {
            expired: self.expired.load(Ordering::Relaxed),
            capacity: self.capacity_evicted.load(Ordering::Relaxed),
        }
    }

    fn now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    fn shard(&self, id: &KeyId) -> MutexGuard<'_, Shard> {
        let i = (id.0[1] as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Drops committed keys older than the window from the front of the
    /// shard's FIFO, and the oldest beyond the shard's share of the bound.
    fn trim(&self, s: &mut Shard, now: u32) {
        let window = self.window.as_secs().min(u64::from(u32::MAX)) as u32;
        while let Some(&(at, id)) = s.order.front() {
            let over = s.map.len() >= self.shard_capacity;
            let old = now.saturating_sub(at) >= window;
            if !old && !over {
                break;
            }
            s.order.pop_front();
            // The FIFO may name a key since removed or committed again.
            if let Some(Entry::Committed { at: a, .. }) = s.map.get(&id)
                && *a == at
            {
                s.map.remove(&id);
                self.len.fetch_sub(1, Ordering::Relaxed);
                let counter = if old {
                    &self.expired
                } else {
                    &self.capacity_evicted
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Looks a key up and, when nobody holds it, claims it for `claims`;
    /// `position` is the record's place in the batch as the broker will
    /// see it (its offset is the batch's base offset plus `position`).
    pub fn claim(self: &Arc<Self>, id: KeyId, position: u32, claims: &mut KeyClaims) -> Claim {
        let now = self.now();
        let mut s = self.shard(&id);
        self.trim(&mut s, now);
        let window = self.window.as_secs().min(u64::from(u32::MAX)) as u32;
        match s.map.get_mut(&id) {
            Some(Entry::Committed {
                at,
                partition,
                offset,
            }) if now.saturating_sub(*at) < window => {
                return Claim::Duplicate(KeyOrigin {
                    partition: *partition,
                    offset: *offset,
                });
            }
            Some(Entry::InFlight { waiters, .. }) => {
                let (tx, rx) = oneshot::channel();
                waiters.get_or_insert_with(Default::default).push(tx);
                return Claim::InFlight(rx);
            }
            Some(Entry::Committed { .. }) | None => {}
        }
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let fresh = Entry::InFlight {
            token,
            waiters: None,
        };
        if s.map.insert(id, fresh).is_none() {
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        claims.held.push((id, token, position));
        Claim::Fresh
    }

    /// Ends one claim: committed at `origin`, or removed (`None`).
    fn resolve(&self, id: KeyId, token: u64, origin: KeyOutcome) {
        let now = self.now();
        let mut s = self.shard(&id);
        let Some(Entry::InFlight { token: t, .. }) = s.map.get(&id) else {
            return;
        };
        if *t != token {
            return;
        }
        let waiters = match origin {
            Some(o) => {
                let old = s.map.insert(
                    id,
                    Entry::Committed {
                        at: now,
                        partition: o.partition,
                        offset: o.offset,
                    },
                );
                s.order.push_back((now, id));
                self.trim(&mut s, now);
                old
            }
            None => {
                self.len.fetch_sub(1, Ordering::Relaxed);
                s.map.remove(&id)
            }
        };
        drop(s);
        self.shared.resolved(id, origin);
        if let Some(Entry::InFlight {
            waiters: Some(ws), ..
        }) = waiters
        {
            for w in *ws {
                let _ = w.send(origin);
            }
        }
    }

    /// Drops expired keys from every shard (called periodically; each
    /// claim also trims its own shard).
    pub fn sweep(&self) {
        let now = self.now();
        for i in 0..SHARDS {
            let mut s = self.shards[i].lock().unwrap_or_else(|e| e.into_inner());
            self.trim(&mut s, now);
        }
    }
}

/// The keys one batch claimed. Committing records where each record
/// landed; dropping it unanswered removes every claim (and wakes the copies
/// waiting for them, which then go to the broker).
#[derive(Debug)]
pub struct KeyClaims {
    cache: Arc<KeyCache>,
    /// (key, claim token, record position in the batch sent).
    held: Vec<(KeyId, u64, u32)>,
}

impl KeyClaims {
    pub fn new(cache: &Arc<KeyCache>) -> Self {
        KeyClaims {
            cache: Arc::clone(cache),
            held: Vec::new(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Marks every claimed key committed: the broker wrote the batch to
    /// `partition` at `base_offset`.
    pub fn commit(mut self, partition: i32, base_offset: i64) {
        for (id, token, position) in std::mem::take(&mut self.held) {
            let origin = KeyOrigin {
                partition,
                offset: base_offset + i64::from(position),
            };
            self.cache.resolve(id, token, Some(origin));
        }
    }
}

impl Drop for KeyClaims {
    fn drop(&mut self) {
        for (id, token, _) in std::mem::take(&mut self.held) {
            self.cache.resolve(id, token, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(k: &str) -> KeyId {
        KeyId::new(&Scope::Anonymous, "t", k.as_bytes())
    }

    fn origin(offset: i64) -> KeyOrigin {
        KeyOrigin {
            partition: 0,
            offset,
        }
    }

    #[test]
    fn a_key_is_a_duplicate_only_once_committed() {
        let c = KeyCache::new(Duration::from_secs(60), 100);
        let mut first = KeyClaims::new(&c);
        assert!(matches!(c.claim(id("a"), 0, &mut first), Claim::Fresh));
        let mut second = KeyClaims::new(&c);
        assert!(matches!(
            c.claim(id("a"), 0, &mut second),
            Claim::InFlight(_)
        ));
        first.commit(0, 7);
        assert!(matches!(
            c.claim(id("a"), 0, &mut second),
            Claim::Duplicate(KeyOrigin { offset: 7, .. })
        ));
        assert!(second.is_empty());
    }

    /// A cache where one batch claimed "a" and another waits for it.
    fn claimed_and_awaited() -> (
        Arc<KeyCache>,
        KeyClaims,
        KeyClaims,
        oneshot::Receiver<KeyOutcome>,
    ) {
        let c = KeyCache::new(Duration::from_secs(60), 100);
        let mut first = KeyClaims::new(&c);
        c.claim(id("a"), 0, &mut first);
        let mut other = KeyClaims::new(&c);
        let Claim::InFlight(rx) = c.claim(id("a"), 0, &mut other) else {
            panic!("expected in flight");
        };
        (c, first, other, rx)
    }

    #[test]
    fn a_failed_claim_is_forgotten_and_its_waiters_told() {
        let (c, first, mut other, mut rx) = claimed_and_awaited();
        drop(first);
        assert_eq!(rx.try_recv().unwrap(), None);
        assert!(matches!(c.claim(id("a"), 0, &mut other), Claim::Fresh));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn waiters_learn_the_origin_of_a_committed_key() {
        let (_c, first, _other, mut rx) = claimed_and_awaited();
        first.commit(0, 3);
        assert_eq!(rx.try_recv().unwrap(), Some(origin(3)));
    }

    #[test]
    fn scope_and_topic_separate_key_spaces() {
        let a = KeyId::new(&Scope::Principal("alice".into()), "t", b"k");
        let b = KeyId::new(&Scope::Principal("bob".into()), "t", b"k");
        let t2 = KeyId::new(&Scope::Principal("alice".into()), "u", b"k");
        assert!(a != b && a != t2 && b != t2);
        // Length prefixes: ("ab", "c") and ("a", "bc") differ.
        assert_ne!(
            KeyId::new(&Scope::Anonymous, "ab", b"c"),
            KeyId::new(&Scope::Anonymous, "a", b"bc")
        );
    }

    #[test]
    fn the_count_bound_evicts_the_oldest_committed_keys() {
        let c = KeyCache::new(Duration::from_secs(600), SHARDS * 2);
        for n in 0..SHARDS * 20 {
            let mut claims = KeyClaims::new(&c);
            c.claim(id(&n.to_string()), 0, &mut claims);
            claims.commit(0, n as i64);
        }
        assert!(c.len() <= SHARDS * 2, "held {}", c.len());
        assert!(c.evictions().capacity >= (SHARDS * 18) as u64);
        // The newest key is still there.
        let mut claims = KeyClaims::new(&c);
        assert!(matches!(
            c.claim(id(&(SHARDS * 20 - 1).to_string()), 0, &mut claims),
            Claim::Duplicate(_)
        ));
    }

    #[test]
    fn a_key_past_the_window_is_fresh_again() {
        let c = KeyCache::new(Duration::from_secs(0), 100);
        let mut claims = KeyClaims::new(&c);
        c.claim(id("a"), 0, &mut claims);
        claims.commit(0, 1);
        let mut again = KeyClaims::new(&c);
        assert!(matches!(c.claim(id("a"), 0, &mut again), Claim::Fresh));
        assert_eq!(c.evictions().expired, 1);
    }

    #[test]
    fn entries_stay_small() {
        assert_eq!(std::mem::size_of::<KeyId>(), 16);
        assert!(std::mem::size_of::<Entry>() <= 24);
        assert_eq!(std::mem::size_of::<(u32, KeyId)>(), 24);
    }
}
