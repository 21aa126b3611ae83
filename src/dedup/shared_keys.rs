//! The key part of the shared store (docs/replicas.md): before a request
//! is classified, the idempotency keys of its key-dedup batches that this
//! replica's cache cannot judge alone are claimed in the store, all in one
//! call (one script per key space, sent together), atomically per key
//! across replicas:
//!
//! * claimed: this replica forwards the record; the local claim that
//!   follows commits the key in the store once the broker acknowledged it
//!   (acks=all, NONE), or releases it on any other ending (keys/shared.rs);
//! * committed through another replica: seeded into the cache, so the
//!   rules remove the record as a duplicate;
//! * held by another replica (its batch is at the broker now): asked
//!   again every [`POLL`] until it is committed or released, for at most
//!   the request's timeout and [`KEY_WAIT_MAX`]; past that the record is
//!   forwarded (a duplicate may pass; never a lost record). Claims are
//!   ordered by token (wait-die): a request that meets a claim older than
//!   its own lets go of the keys it claimed in that round before waiting,
//!   so two requests never wait for each other's keys.
//!
//! A store that cannot be asked: `OnStoreError::Forward` decides with this
//! replica's keys alone; `Fail` answers every partition of the request with
//! NOT_ENOUGH_REPLICAS, which every client retries and which tells an
//! idempotent producer the batch was not written.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use super::cache::{Scope, TopicKey};
use super::decision::ProduceDedup;
use super::keys::KeyId;
use super::outcome::Outcomes;
use super::store::{KeySpace, OnStoreError, StoredKey, shareable};
use crate::codec::produce::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceResponse, TopicRef,
};
use crate::codec::record_batch::parse_single_batch_header;
use crate::codec::records::decode_batch;

/// How often a key held by another replica is asked about again.
pub const POLL: Duration = Duration::from_millis(20);
/// Longest a record waits for a key another replica holds.
pub const KEY_WAIT_MAX: Duration = Duration::from_secs(5);
/// NOT_ENOUGH_REPLICAS: retriable, and the batch was not appended.
pub const REFUSAL_ERROR: i16 = 19;

/// What the request does after the store was asked.
#[derive(Debug)]
pub enum KeyVerdict {
    /// Classify as usual; `claimed` are the keys this replica now holds in
    /// the store, to be let go of if the request does not claim them here
    /// ([`ProduceDedup::settle_store_claims`]).
    Proceed { claimed: Vec<KeyId> },
    /// `--key-dedup-on-store-error fail`: answer with this.
    Refuse(ProduceResponse),
}

impl ProduceDedup {
    /// The keys of `req` the cache cannot judge alone, with their spaces.
    fn unknown_keys(
        &self,
        req: &ProduceRequest,
        scope: &Scope,
        topic_key: &impl Fn(&TopicRef) -> TopicKey,
    ) -> Vec<(KeySpace, KeyId)> {
        let Some(rules) = self.key_rules() else {
            return Vec::new();
        };
        if req.acks != -1 || !shareable(scope) || rules.cache().store().is_none() {
            return Vec::new();
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for t in &req.topics {
            let topic = topic_key(&t.topic);
            let TopicKey::Name(name) = &topic else {
                continue;
            };
            let Some(source) = rules.source_for(name) else {
                continue;
            };
            let space = KeySpace::new(scope, &topic);
            for p in &t.partitions {
                let Some(records) = p.records.as_ref() else {
                    continue;
                };
                let Ok(header) = parse_single_batch_header(records) else {
                    continue;
                };
                if header.is_transactional() || header.is_control() {
                    continue;
                }
                let Ok(batch) = decode_batch(records) else {
                    continue;
                };
                for r in &batch.records {
                    let Some(key) = source.key_of(r) else {
                        continue;
                    };
                    let id = KeyId::new(scope, name, &key);
                    if seen.insert(id) && !rules.cache().knows(&id) {
                        out.push((space, id));
                    }
                }
            }
        }
        out
    }

    /// Claims the keys of `req` the cache cannot judge alone in the store
    /// (module doc). `sleep` waits between polls.
    pub async fn claim_shared_keys<S, F>(
        &self,
        req: &ProduceRequest,
        scope: &Scope,
        topic_key: impl Fn(&TopicRef) -> TopicKey,
        sleep: S,
    ) -> (KeyVerdict, Outcomes)
    where
        S: Fn(Duration) -> F,
        F: Future<Output = ()>,
    {
        let mut out = Outcomes::default();
        let mut pending = self.unknown_keys(req, scope, &topic_key);
        let mut claimed = Vec::new();
        let (Some(rules), false) = (self.key_rules(), pending.is_empty()) else {
            return (KeyVerdict::Proceed { claimed }, out);
        };
        let cache = rules.cache();
        let Some((store, policy)) = cache.store() else {
            return (KeyVerdict::Proceed { claimed }, out);
        };
        let mut token = cache.new_claim_token();
        let bound = Duration::from_millis(req.timeout_ms.max(0) as u64).min(KEY_WAIT_MAX);
        let started = Instant::now();
        loop {
            let found = match store.claim_keys(pending.clone(), token).await {
                Ok(f) if f.len() == pending.len() => f,
                Ok(_) | Err(_) => {
                    // The call may have claimed some keys before it failed
                    // (a timeout after the script ran): let go of them, so
                    // no other replica waits on a claim nobody follows.
                    for (space, id) in &pending {
                        store.release_key(*space, *id, token);
                    }
                    match policy {
                        OnStoreError::Forward => out.store_key_fallbacks_forward += 1,
                        OnStoreError::Fail => {
                            out.store_key_fallbacks_fail += 1;
                            cache.release_store_claims(&claimed);
                            return (KeyVerdict::Refuse(refusal(req)), out);
                        }
                    }
                    break;
                }
            };
            let mut won = Vec::new();
            let mut still = Vec::new();
            let mut yields = false;
            for ((space, id), state) in pending.into_iter().zip(found) {
                match state {
                    StoredKey::Claimed => won.push((space, id)),
                    StoredKey::Committed(origin) => {
                        cache.seed(id, origin);
                        out.store_keys_seeded += 1;
                    }
                    // This replica's own claim: its cache decides.
                    StoredKey::Held(t) if t.replica == token.replica => {}
                    StoredKey::Held(t) => {
                        yields |= (t.n, t.replica) < (token.n, token.replica);
                        still.push((space, id));
                    }
                }
            }
            if yields {
                // Wait-die: a request that meets an older claim lets go of
                // what it claimed this round and asks again under a new
                // token, so two requests never hold keys while waiting for
                // each other's.
                for (space, id) in &won {
                    store.release_key(*space, *id, token);
                }
                still.extend(won);
                token = cache.new_claim_token();
            } else {
                for (space, id) in won {
                    cache.claimed_in_store(id, space, token);
                    claimed.push(id);
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if started.elapsed() >= bound {
                out.store_key_waits_expired += pending.len() as u32;
                break;
            }
            sleep(POLL).await;
        }
        (KeyVerdict::Proceed { claimed }, out)
    }

    /// Lets go of the store claims of `claimed` that the request did not
    /// take up here (its batch answered, forwarded whole, or waiting).
    pub fn settle_store_claims(&self, claimed: &[KeyId]) {
        if let Some(rules) = self.key_rules()
            && !claimed.is_empty()
        {
            rules.cache().release_store_claims(claimed);
        }
    }
}

/// Every partition of `req` answered with [`REFUSAL_ERROR`].
pub fn refusal(req: &ProduceRequest) -> ProduceResponse {
    ProduceResponse {
        responses: req
            .topics
            .iter()
            .map(|t| TopicProduceResponse {
                topic: t.topic.clone(),
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| {
                        let mut r = PartitionProduceResponse::success(p.index, -1, -1, -1);
                        r.error_code = REFUSAL_ERROR;
                        r
                    })
                    .collect(),
                tagged_fields: Default::default(),
            })
            .collect(),
        throttle_time_ms: 0,
        tagged_fields: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::*;
    use crate::codec::record_batch::{encode_record_batch, parse_single_batch_header};
    use crate::codec::records::{Compression, Record, RecordHeader, encode_batch};
    use crate::dedup::keys::KeyCache;
    use crate::dedup::store::{DedupStore, MemoryStore};
    use crate::dedup::testing::{ok, topic_key};
    use crate::dedup::{Decision, DedupCache, KeyRules, Mode};

    fn replica(store: &Arc<dyn DedupStore>, policy: OnStoreError) -> ProduceDedup {
        let keys = KeyCache::new(Duration::from_secs(600), 1000);
        keys.share_through(Arc::clone(store), policy);
        let rules =
            KeyRules::new(&["orders".to_string()], "header:id".parse().unwrap(), keys).unwrap();
        ProduceDedup::new(DedupCache::new(5, 100, Duration::from_secs(60)), Mode::On)
            .with_store(Arc::clone(store))
            .with_keys(rules)
    }

    fn request(keys: &[&str]) -> ProduceRequest {
        let t = encode_record_batch(-1, -1, -1, 1_000, 0, &[]);
        let t = parse_single_batch_header(&t).unwrap();
        let records: Vec<Record> = keys
            .iter()
            .map(|k| Record {
                attributes: 0,
                timestamp_delta: 0,
                offset_delta: 0,
                key: None,
                value: Some(Bytes::from(format!("v-{k}"))),
                headers: vec![RecordHeader {
                    key: Bytes::from_static(b"id"),
                    value: Some(Bytes::from(k.to_string())),
                }],
            })
            .collect();
        let batch = encode_batch(&t, Compression::None, -1, &records).unwrap();
        crate::dedup::testing::request("orders", batch)
    }

    /// As the proxy's Produce stage: claim in the store, then decide.
    async fn decide(d: &ProduceDedup, req: &ProduceRequest) -> (Decision, Outcomes) {
        let (verdict, mut out) = d
            .claim_shared_keys(
                req,
                &Scope::Anonymous,
                topic_key,
                |_| std::future::ready(()),
            )
            .await;
        let KeyVerdict::Proceed { claimed } = verdict else {
            panic!("refused: {verdict:?}");
        };
        let (decision, o) = d.decide(req.clone(), &Scope::Anonymous, topic_key);
        d.settle_store_claims(&claimed);
        out.add(o);
        (decision, out)
    }

    #[tokio::test]
    async fn a_key_committed_through_one_replica_is_removed_by_another() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let a = replica(&store, OnStoreError::Forward);
        let b = replica(&store, OnStoreError::Forward);
        let (Decision::Forward(p), _) = decide(&a, &request(&["k1", "k2"])).await else {
            panic!("fresh on A");
        };
        p.complete(&ok("orders", 40)).unwrap();
        let (Decision::Answer(r), out) = decide(&b, &request(&["k2"])).await else {
            panic!("B answers a batch of duplicates");
        };
        assert_eq!(r.responses[0].partitions[0].base_offset, 41);
        assert_eq!(out.store_keys_seeded, 1);
    }

    #[tokio::test]
    async fn a_key_claimed_elsewhere_is_waited_for_then_forwarded() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let a = replica(&store, OnStoreError::Forward);
        let b = replica(&store, OnStoreError::Forward);
        let (Decision::Forward(held), _) = decide(&a, &request(&["k1"])).await else {
            panic!("fresh on A");
        };
        // A's batch is at the broker: B asks until its bound, then sends.
        let mut req = request(&["k1"]);
        req.timeout_ms = 0;
        let (decision, out) = decide(&b, &req).await;
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.store_key_waits_expired, 1);
        drop(held);
    }

    #[tokio::test]
    async fn a_key_whose_batch_failed_is_free_for_another_replica() {
        let store: Arc<dyn DedupStore> = Arc::new(MemoryStore::new(5));
        let a = replica(&store, OnStoreError::Forward);
        let b = replica(&store, OnStoreError::Forward);
        let (Decision::Forward(p), _) = decide(&a, &request(&["k1"])).await else {
            panic!("fresh on A");
        };
        let mut refused = ok("orders", -1);
        refused.responses[0].partitions[0].error_code = 19;
        p.complete(&refused).unwrap();
        let (decision, out) = decide(&b, &request(&["k1"])).await;
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!((out.key_records_fresh, out.store_key_waits_expired), (1, 0));
    }

    #[tokio::test]
    async fn a_store_that_fails_forwards_or_refuses_as_the_policy_says() {
        let store: Arc<dyn DedupStore> = Arc::new(crate::dedup::store::Down);
        let forward = replica(&store, OnStoreError::Forward);
        let (decision, out) = decide(&forward, &request(&["k1"])).await;
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.store_key_fallbacks_forward, 1);
        let fail = replica(&store, OnStoreError::Fail);
        let (verdict, out) = fail
            .claim_shared_keys(&request(&["k1"]), &Scope::Anonymous, topic_key, |_| {
                std::future::ready(())
            })
            .await;
        let KeyVerdict::Refuse(r) = verdict else {
            panic!("expected a refusal");
        };
        assert_eq!(r.responses[0].partitions[0].error_code, REFUSAL_ERROR);
        assert_eq!(out.store_key_fallbacks_fail, 1);
    }
}
