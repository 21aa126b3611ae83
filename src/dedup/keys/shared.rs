//! What the shared store adds to the key cache (dedup/store.rs): keys
//! another replica committed, seeded here as committed; and the store
//! claims this replica made for keys it then claimed here, resolved in the
//! store when the local claim resolves (committed after the broker's
//! acks=all answer, released on any other ending).

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::{Entry, KeyCache, KeyId, KeyOrigin, KeyOutcome};
use crate::dedup::store::{ClaimToken, DedupStore, KeySpace, OnStoreError};

/// Store claims older than this are forgotten here (the store expires
/// them on its own after its claim TTL).
const CLAIM_MEMORY: Duration = Duration::from_secs(300);

/// The store claims of this replica, by key.
pub(super) struct SharedClaims {
    store: OnceLock<(Arc<dyn DedupStore>, OnStoreError)>,
    claims: Mutex<HashMap<KeyId, (KeySpace, ClaimToken, Instant)>>,
    /// This replica's claims carry this id: a claim the store shows held
    /// by it is this replica's own (its cache decides).
    replica: u64,
    next: AtomicU64,
}

impl Default for SharedClaims {
    fn default() -> Self {
        SharedClaims {
            store: OnceLock::new(),
            claims: Mutex::default(),
            replica: std::collections::hash_map::RandomState::new().hash_one(std::process::id()),
            next: AtomicU64::new(1),
        }
    }
}

impl SharedClaims {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<KeyId, (KeySpace, ClaimToken, Instant)>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The local claim of `id` ended: the store claim follows it.
    pub(super) fn resolved(&self, id: KeyId, outcome: KeyOutcome) {
        let Some((store, _)) = self.store.get() else {
            return;
        };
        let Some((space, token, _)) = self.lock().remove(&id) else {
            return;
        };
        match outcome {
            Some(origin) => store.commit_key(space, id, token, origin),
            None => store.release_key(space, id, token),
        }
    }
}

impl KeyCache {
    /// Shares this cache's claims through `store` (set once); `policy`
    /// says what to do when it cannot be asked.
    pub fn share_through(&self, store: Arc<dyn DedupStore>, policy: OnStoreError) {
        let _ = self.shared.store.set((store, policy));
    }

    /// The store and its error policy, when keys are shared.
    pub fn store(&self) -> Option<&(Arc<dyn DedupStore>, OnStoreError)> {
        self.shared.store.get()
    }

    /// A claim token of this replica, new for each request.
    pub fn new_claim_token(&self) -> ClaimToken {
        ClaimToken {
            replica: self.shared.replica,
            n: self.shared.next.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// Whether the cache can judge `id` alone: it holds it, in flight or
    /// committed within the window.
    pub fn knows(&self, id: &KeyId) -> bool {
        let now = self.now();
        let window = self.window.as_secs().min(u64::from(u32::MAX)) as u32;
        match self.shard(id).map.get(id) {
            Some(Entry::InFlight { .. }) => true,
            Some(Entry::Committed { at, .. }) => now.saturating_sub(*at) < window,
            None => false,
        }
    }

    /// Records that the store claimed `id` for this replica: the local
    /// claim that follows commits or releases it there.
    pub fn claimed_in_store(&self, id: KeyId, space: KeySpace, token: ClaimToken) {
        let mut claims = self.shared.lock();
        if claims.len() > 100_000 {
            claims.retain(|_, (_, _, at)| at.elapsed() < CLAIM_MEMORY);
        }
        claims.insert(id, (space, token, Instant::now()));
    }

    /// Lets go of store claims made for a request that will not claim
    /// them here (a refused or abandoned request).
    pub fn release_store_claims(&self, ids: &[KeyId]) {
        for id in ids {
            let held = self
                .shard(id)
                .map
                .get(id)
                .is_some_and(|e| matches!(e, Entry::InFlight { .. }));
            if !held {
                self.shared.resolved(*id, None);
            }
        }
    }

    /// Adds a key another replica committed. A key this cache holds is
    /// left as it is.
    pub fn seed(&self, id: KeyId, origin: KeyOrigin) {
        let now = self.now();
        let mut s = self.shard(&id);
        if s.map.contains_key(&id) {
            return;
        }
        s.map.insert(
            id,
            Entry::Committed {
                at: now,
                partition: origin.partition,
                offset: origin.offset,
            },
        );
        s.order.push_back((now, id));
        self.len.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.trim(&mut s, now);
    }
}
