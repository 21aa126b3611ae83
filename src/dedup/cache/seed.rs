//! What the shared store adds to the cache (dedup/store.rs): whether a
//! batch needs the store at all, and seeding a window with the committed
//! batches another replica wrote.
//!
//! A producer-partition the cache follows needs no store round trip for a
//! batch that is in its window (a retry it can judge itself) or that comes
//! right after its newest batch (the next batch of a producer sending
//! through this replica). Anything else (a producer-partition it does not
//! hold, a higher epoch, a sequence it has no neighbour for) is looked up
//! once, and what the store answers is seeded here.

use super::shard::BatchEntry;
use super::{BatchId, DedupCache, ProducerPartition};
use crate::dedup::store::{StoredBatch, newest_epoch};

/// The sequence after `last` (sequences wrap past i32::MAX to 0).
fn next_sequence(last: i32) -> i32 {
    if last == i32::MAX { 0 } else { last + 1 }
}

impl DedupCache {
    /// Whether the cache cannot judge `batch` of `key` alone and the shared
    /// store should be asked first.
    pub fn needs_store(&self, key: &ProducerPartition, batch: &BatchId) -> bool {
        let group_hash = self.group_hash(&key.scope, &key.topic);
        let hash = self.key_hash(group_hash, key.producer_id, key.partition);
        let mut guard = self.lock_shard(Self::shard_of(hash));
        let shard = &mut *guard;
        let Some(idx) = shard.find(hash, key) else {
            return true;
        };
        let mut w = shard.window(idx, self.window);
        if batch.epoch != w.slot.epoch {
            // An older epoch is fenced by the broker; a newer one may have
            // been written through another replica.
            return batch.epoch > w.slot.epoch;
        }
        if w.find(batch.base_sequence, batch.last_sequence).is_some() {
            return false;
        }
        let follows = (0..w.len()).any(|i| {
            w.get_mut(i)
                .id()
                .is_some_and(|(_, last, _)| next_sequence(last) == batch.base_sequence)
        });
        !follows
    }

    /// Adds the committed batches another replica stored for `key`: the
    /// newest epoch's, unless the cache already follows a newer one, each
    /// sequence range the window does not hold yet. Entries of the cache
    /// itself (in flight or committed) are never replaced.
    pub fn seed(&self, key: &ProducerPartition, stored: &[StoredBatch]) {
        let batches = newest_epoch(stored);
        let Some(epoch) = batches.first().map(|b| b.id.epoch) else {
            return;
        };
        if self
            .fenced_shard(key.producer_id)
            .get(&key.producer_id)
            .is_some_and(|min| epoch < *min)
        {
            return;
        }
        let now = self.now();
        let group_hash = self.group_hash(&key.scope, &key.topic);
        let hash = self.key_hash(group_hash, key.producer_id, key.partition);
        let mut guard = self.lock_shard(Self::shard_of(hash));
        let shard = &mut *guard;
        let idx = match shard.find(hash, key) {
            Some(idx) => idx,
            None => {
                self.make_room(shard);
                self.insert(shard, hash, group_hash, key, epoch, now)
            }
        };
        let window = self.window;
        let mut w = shard.window(idx, window);
        w.slot.last_access = now;
        if epoch < w.slot.epoch {
            return;
        }
        if epoch > w.slot.epoch {
            let dropped = w.clear();
            w.slot.epoch = epoch;
            if dropped > 0 {
                self.evicted
                    .epoch
                    .fetch_add(dropped as u64, super::Ordering::Relaxed);
            }
        }
        for b in batches {
            if w.find(b.id.base_sequence, b.id.last_sequence).is_some() {
                continue;
            }
            if w.len() >= window {
                // The store's batches are older than what this replica
                // has in flight: never push out a batch of its own.
                if !matches!(w.get_mut(0), BatchEntry::Committed { .. }) {
                    continue;
                }
                w.remove(0);
            }
            w.push_back(BatchEntry::Committed {
                base_sequence: b.id.base_sequence,
                last_sequence: b.id.last_sequence,
                crc: b.id.crc,
                committed: b.committed,
            });
        }
    }
}
