//! The one store round trip of the batch rules (dedup/store.rs): before a
//! request is classified, the producer-partitions this replica cannot
//! judge alone are looked up in the shared store, all of them at once, and
//! what another replica committed is seeded into the cache. The rules then
//! run unchanged and find a retry of that batch `Committed`.
//!
//! A request whose producer-partitions the cache follows costs nothing
//! (no call at all). A store error costs one forward: nothing is seeded,
//! the batch goes to the broker, which decides.

use super::Mode;
use super::cache::{BatchId, ProducerPartition, Scope, TopicKey};
use super::decision::ProduceDedup;
use super::outcome::Outcomes;
use super::store::shareable;
use crate::codec::produce::{ProduceRequest, TopicRef};
use crate::codec::record_batch::{NO_PRODUCER_ID, parse_single_batch_header};

impl ProduceDedup {
    /// The producer-partitions of `req` the cache cannot judge alone, each
    /// once: only batches the rules could answer (acks=all, idempotent,
    /// parsable), of a scope shared across replicas.
    pub fn store_lookups(
        &self,
        req: &ProduceRequest,
        scope: &Scope,
        topic_key: impl Fn(&TopicRef) -> TopicKey,
    ) -> Vec<ProducerPartition> {
        if self.store.is_none() || self.mode == Mode::Off || req.acks != -1 || !shareable(scope) {
            return Vec::new();
        }
        let mut out: Vec<ProducerPartition> = Vec::new();
        for t in &req.topics {
            let topic = topic_key(&t.topic);
            for p in &t.partitions {
                let Some(header) = p
                    .records
                    .as_ref()
                    .and_then(|r| parse_single_batch_header(r).ok())
                else {
                    continue;
                };
                if header.producer_id == NO_PRODUCER_ID || header.base_sequence < 0 {
                    continue;
                }
                let key = ProducerPartition {
                    scope: scope.clone(),
                    producer_id: header.producer_id,
                    topic: topic.clone(),
                    partition: p.index,
                };
                let id = BatchId::of(&header);
                if !out.contains(&key) && self.cache().needs_store(&key, &id) {
                    out.push(key);
                }
            }
        }
        out
    }

    /// Looks `keys` up in the store (one call) and seeds the cache with
    /// what it holds. Returns the counts to publish: a failed call is one
    /// batch fallback (the request is forwarded as the cache alone decides).
    pub async fn prefetch(&self, keys: Vec<ProducerPartition>) -> Outcomes {
        let mut out = Outcomes::default();
        let Some(store) = self.store.as_ref() else {
            return out;
        };
        if keys.is_empty() {
            return out;
        }
        match store.load_windows(keys.clone()).await {
            Ok(windows) => {
                for (key, stored) in keys.iter().zip(&windows) {
                    if !stored.is_empty() {
                        self.cache().seed(key, stored);
                        out.store_batches_seeded += stored.len() as u32;
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "dedup store lookup failed; the broker decides");
                out.store_batch_fallbacks += 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::codec::record_batch::{SimpleRecord, encode_record_batch};
    use crate::dedup::store::{DedupStore, MemoryStore};
    use crate::dedup::testing::{self, ok, topic_key};
    use crate::dedup::{Decision, DedupCache};

    fn batch(pid: i64, seq: i32, n: usize) -> Bytes {
        let recs: Vec<_> = (0..n)
            .map(|i| SimpleRecord {
                key: None,
                value: Some(Bytes::from(format!("v{seq}-{i}"))),
            })
            .collect();
        encode_record_batch(pid, 0, seq, 1, 0, &recs)
    }

    fn request(b: Bytes) -> ProduceRequest {
        testing::request("t", b)
    }

    /// A replica: its own cache, the shared store.
    fn replica(store: &Arc<dyn DedupStore>) -> ProduceDedup {
        ProduceDedup::new(DedupCache::new(5, 100, Duration::from_secs(60)), Mode::On)
            .with_store(Arc::clone(store))
    }

    /// Prefetch, then decide, as the proxy's Produce stage does.
    async fn decide(d: &ProduceDedup, req: &ProduceRequest, scope: &Scope) -> (Decision, Outcomes) {
        let lookups = d.store_lookups(req, scope, topic_key);
        let mut out = d.prefetch(lookups).await;
        let (decision, o) = d.decide(req.clone(), scope, topic_key);
        out.add(o);
        (decision, out)
    }

    #[tokio::test]
    async fn a_batch_committed_through_one_replica_is_answered_by_another() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let (a, b) = (replica(&store), replica(&store));
        let req = request(batch(7, 0, 3));
        let (Decision::Forward(p), _) = decide(&a, &req, &Scope::Anonymous).await else {
            panic!("fresh on A");
        };
        p.complete(&ok("t", 41)).unwrap();
        let (Decision::Answer(resp), out) = decide(&b, &req, &Scope::Anonymous).await else {
            panic!("B answers the retry");
        };
        assert_eq!(resp.responses[0].partitions[0].base_offset, 41);
        assert_eq!((out.duplicate, out.store_batches_seeded), (1, 1));
    }

    #[tokio::test]
    async fn a_batch_the_broker_refused_is_never_shared() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let (a, b) = (replica(&store), replica(&store));
        let req = request(batch(7, 0, 3));
        let (Decision::Forward(p), _) = decide(&a, &req, &Scope::Anonymous).await else {
            panic!("fresh on A");
        };
        let mut refused = ok("t", -1);
        refused.responses[0].partitions[0].error_code = 19;
        p.complete(&refused).unwrap();
        assert!(matches!(
            decide(&b, &req, &Scope::Anonymous).await.0,
            Decision::Forward(_)
        ));
    }

    #[tokio::test]
    async fn a_known_producer_partition_costs_no_store_call() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let a = replica(&store);
        let first = request(batch(7, 0, 3));
        assert_eq!(
            a.store_lookups(&first, &Scope::Anonymous, topic_key).len(),
            1
        );
        let (Decision::Forward(p), _) = decide(&a, &first, &Scope::Anonymous).await else {
            panic!("fresh");
        };
        // Its retry and the next batch are judged by the cache alone.
        assert!(
            a.store_lookups(&first, &Scope::Anonymous, topic_key)
                .is_empty()
        );
        let next = request(batch(7, 3, 2));
        assert!(
            a.store_lookups(&next, &Scope::Anonymous, topic_key)
                .is_empty()
        );
        p.complete(&ok("t", 1)).unwrap();
        // A gap in the sequence is asked about.
        let gap = request(batch(7, 9, 1));
        assert_eq!(a.store_lookups(&gap, &Scope::Anonymous, topic_key).len(), 1);
    }

    #[tokio::test]
    async fn connection_scoped_and_acks_one_batches_never_reach_the_store() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let a = replica(&store);
        let req = request(batch(7, 0, 3));
        assert!(
            a.store_lookups(&req, &Scope::Connection(1), topic_key)
                .is_empty()
        );
        let mut acks1 = req.clone();
        acks1.acks = 1;
        assert!(
            a.store_lookups(&acks1, &Scope::Anonymous, topic_key)
                .is_empty()
        );
    }

    #[tokio::test]
    async fn a_store_that_fails_makes_the_batch_go_to_the_broker() {
        let store: Arc<dyn DedupStore> = Arc::new(crate::dedup::store::Down);
        let b = replica(&store);
        let (decision, out) = decide(&b, &request(batch(7, 0, 3)), &Scope::Anonymous).await;
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!((out.store_batch_fallbacks, out.forwarded), (1, 1));
    }
}
