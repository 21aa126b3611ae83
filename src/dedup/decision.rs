//! The one dedup API of the Produce path.
//!
//! [`ProduceDedup::decide`] takes a parsed request and the connection's
//! scope and returns a [`Decision`]:
//!
//! * `Forward`: every partition goes to the broker; send the original bytes.
//! * `Answer`: every partition is a duplicate; this is the whole response.
//! * `Split`: send the cut-down request; the broker's answer is merged.
//! * `Wait`: some originals are at the broker right now; [`Waiting::resolve`]
//!   waits for them (bounded) and gives one of the others.
//! * `Disconnect`: an idempotent producer's batch cannot be answered in
//!   order (docs/idempotency-keys.md); close the client connection so that
//!   the client sends its batches again.
//!
//! The broker's answer goes back through [`Pending::complete`], which
//! commits what the broker acknowledged and builds the merged response.
//! Dropping a `Pending` unanswered (broker gone, response unreadable)
//! forgets its batches: nothing is remembered in doubt. Outcomes come back
//! as [`Outcomes`] values for the caller to publish.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use super::Mode;
use super::answer::{self, Answerer, Layout, MergeError};
use super::cache::{Committed, DedupCache, Scope, TopicKey};
use super::classify::{Action, Forward, PartitionBatch, Pause, classify_partition};
use super::keyed::{KeyRules, classify_keys};
use super::outcome::Outcomes;
use crate::codec::produce::{self, ProduceRequest, ProduceResponse, TopicRef};

/// Longest a retried batch waits for its in-flight original, whatever the
/// request's own timeout says.
pub const MAX_WAIT: Duration = Duration::from_secs(120);

/// Dedup of Produce requests over one shared cache, and by idempotency key
/// for the topics that opt in.
#[derive(Debug, Clone)]
pub struct ProduceDedup {
    cache: Arc<DedupCache>,
    keys: Option<Arc<KeyRules>>,
    mode: Mode,
}

/// What to do with one Produce request.
#[derive(Debug)]
pub enum Decision {
    /// Send the original request bytes untouched; its answer goes through
    /// the `Pending`.
    Forward(Pending),
    /// Answer with this response; nothing goes to the broker.
    Answer(ProduceResponse),
    /// Send `request` (the partitions the broker must see, at the original
    /// version) instead of the original; its answer goes through `pending`,
    /// which merges in the proxy's partitions.
    Split {
        request: ProduceRequest,
        pending: Pending,
    },
    /// Wait for in-flight originals first.
    Wait(Waiting),
    /// Close the client connection without an answer.
    Disconnect,
}

impl ProduceDedup {
    pub fn new(cache: Arc<DedupCache>, mode: Mode) -> Self {
        ProduceDedup {
            cache,
            keys: None,
            mode,
        }
    }

    /// Adds dedup by idempotency key (applied in mode `On` only).
    pub fn with_keys(mut self, rules: KeyRules) -> Self {
        self.keys = Some(Arc::new(rules));
        self
    }

    pub fn cache(&self) -> &Arc<DedupCache> {
        &self.cache
    }

    pub fn key_rules(&self) -> Option<&Arc<KeyRules>> {
        self.keys.as_ref()
    }

    /// Whether requests of this Produce version are worth parsing: dedup is
    /// on (or observing) and the version carries one v2 batch per partition.
    pub fn reads(&self, version: i16) -> bool {
        self.mode != Mode::Off && version >= produce::MIN_VERSION
    }

    /// Classifies every partition of `req` (docs/architecture.md, "Dedup rules" 1-5).
    /// `topic_key` names a topic as the cache keys it (ids mapped to names
    /// where known).
    pub fn decide(
        &self,
        req: ProduceRequest,
        scope: &Scope,
        topic_key: impl Fn(&TopicRef) -> TopicKey,
    ) -> (Decision, Outcomes) {
        let mut out = Outcomes::default();
        let keys: Vec<TopicKey> = req.topics.iter().map(|t| topic_key(&t.topic)).collect();
        let actions: Vec<Vec<Action>> = req
            .topics
            .iter()
            .zip(&keys)
            .map(|(t, key)| {
                t.partitions
                    .iter()
                    .map(|p| {
                        let batch = PartitionBatch {
                            acks: req.acks,
                            scope,
                            topic: key.clone(),
                            partition: p.index,
                            records: p.records.as_ref(),
                        };
                        classify_partition(
                            batch,
                            &self.cache,
                            self.keys.as_deref(),
                            self.mode,
                            true,
                            &mut out,
                        )
                    })
                    .collect()
            })
            .collect();
        let waits = actions
            .iter()
            .flatten()
            .any(|a| matches!(a, Action::Wait(_)));
        let decision = if waits {
            Decision::Wait(Waiting {
                dedup: self.clone(),
                req,
                actions,
                keys,
                scope: scope.clone(),
            })
        } else {
            settle(req, actions)
        };
        (decision, out)
    }
}

/// The decision for a request none of whose partitions waits any more.
fn settle(req: ProduceRequest, actions: Vec<Vec<Action>>) -> Decision {
    let flat = || actions.iter().flatten();
    if flat().any(|a| matches!(a, Action::Gap)) {
        // Everything else of the request is dropped: nothing was sent, so
        // nothing is remembered.
        return Decision::Disconnect;
    }
    let untouched = |a: &Action| matches!(a, Action::Forward(f) if f.replace.is_none());
    if flat().all(untouched) {
        Decision::Forward(Pending {
            layout: answer::layout(&req, actions),
            merge: false,
        })
    } else if !flat().any(Action::is_forward) {
        let layout = answer::layout(&req, actions);
        match answer::merge(&layout, None) {
            Ok(resp) => Decision::Answer(resp),
            // Unreachable: a layout without broker partitions always merges.
            Err(_) => Decision::Forward(Pending {
                layout,
                merge: false,
            }),
        }
    } else {
        let request = answer::forward_subset(&req, &actions);
        // Only batches re-encoded: the broker's answer is the client's.
        let merge = !flat().all(Action::is_forward);
        Decision::Split {
            request,
            pending: Pending {
                layout: answer::layout(&req, actions),
                merge,
            },
        }
    }
}

/// A request at the broker whose answer dedup must see.
#[derive(Debug)]
pub struct Pending {
    layout: Layout,
    /// The client's response is the broker's merged with the proxy's
    /// partitions (a split request).
    merge: bool,
}

impl Pending {
    /// Records the broker's answer: a batch and the keys it carried are
    /// committed only for error NONE with an offset (guards and key claims
    /// exist only for acks=all batches); anything else is forgotten.
    /// Returns the response for the client when it differs from the
    /// broker's (a split request), `None` when the broker's answer goes out
    /// as it is.
    pub fn complete(self, broker: &ProduceResponse) -> Result<Option<ProduceResponse>, MergeError> {
        let Pending { mut layout, merge } = self;
        for (topic, parts) in &mut layout.topics {
            for (index, who) in parts.iter_mut() {
                let Answerer::Broker { guard, keys, seq } = who else {
                    continue;
                };
                let (guard, keys, seq) = (guard.take(), keys.take(), seq.take());
                let acknowledged = answer::find_partition(broker, topic, *index)
                    .map(|(_, p)| p)
                    .filter(|p| p.error_code == 0 && p.base_offset >= 0);
                if let Some(p) = acknowledged {
                    if let Some(g) = guard {
                        g.commit(Committed {
                            base_offset: p.base_offset,
                            log_append_time_ms: p.log_append_time_ms,
                            log_start_offset: p.log_start_offset,
                        });
                    }
                    if let Some(k) = keys {
                        k.commit(*index, p.base_offset);
                    }
                    if let Some(t) = seq {
                        t.ack();
                    }
                }
            }
        }
        if merge {
            answer::merge(&layout, Some(broker)).map(Some)
        } else {
            Ok(None)
        }
    }
}

/// A request some of whose partitions wait for their in-flight originals.
#[derive(Debug)]
pub struct Waiting {
    dedup: ProduceDedup,
    req: ProduceRequest,
    actions: Vec<Vec<Action>>,
    keys: Vec<TopicKey>,
    scope: Scope,
}

impl Waiting {
    /// How long the wait may last: the request's own timeout, at most
    /// [`MAX_WAIT`].
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.req.timeout_ms.max(0) as u64).min(MAX_WAIT)
    }

    /// Whether the connection must wait with this request (an idempotent
    /// producer's batch: its later batches must not overtake it).
    pub fn in_order(&self) -> bool {
        self.actions
            .iter()
            .flatten()
            .any(|a| matches!(a, Action::Wait(p) if p.in_order()))
    }

    /// Waits for every in-flight original until `deadline` completes. A
    /// committed original gives a synthetic answer; a failed one makes this
    /// copy look again (it may now be the one the broker gets); past the
    /// deadline the copy goes to the broker. The result is never `Wait`.
    pub async fn resolve(self, deadline: impl Future<Output = ()>) -> (Decision, Outcomes) {
        let Waiting {
            dedup,
            req,
            mut actions,
            keys,
            scope,
        } = self;
        let mut deadline = std::pin::pin!(deadline);
        let mut expired = false;
        let mut out = Outcomes::default();
        for (ti, topic) in req.topics.iter().enumerate() {
            for (pi, p) in topic.partitions.iter().enumerate() {
                while let Action::Wait(pause) = &mut actions[ti][pi] {
                    let batch = PartitionBatch {
                        acks: req.acks,
                        scope: &scope,
                        topic: keys[ti].clone(),
                        partition: p.index,
                        records: p.records.as_ref(),
                    };
                    let classify = |batch, may_wait, out: &mut Outcomes| {
                        classify_partition(
                            batch,
                            &dedup.cache,
                            dedup.keys.as_deref(),
                            dedup.mode,
                            may_wait,
                            out,
                        )
                    };
                    if expired {
                        actions[ti][pi] = if pause.in_order() {
                            // An idempotent producer's batch goes out as key
                            // dedup sends it (its sequence shifted), never
                            // as the client wrote it.
                            classify(batch, false, &mut out)
                        } else {
                            // Past the deadline the copy goes to the broker
                            // as the client sent it, remembering nothing.
                            out.forwarded += 1;
                            Action::forward()
                        };
                        continue;
                    }
                    let woke = match pause {
                        Pause::Batch(rx) => match first(rx, deadline.as_mut()).await {
                            Some(Ok(Some(c))) => {
                                out.coalesced += 1;
                                out.bytes_saved += p.records.as_ref().map_or(0, |r| r.len() as u64);
                                actions[ti][pi] = Action::Synthetic(c);
                                continue;
                            }
                            // The original failed (or was evicted): look again.
                            Some(_) => true,
                            None => false,
                        },
                        Pause::Key(rx) => match first(rx, deadline.as_mut()).await {
                            // Committed or not, the keys are looked up again
                            // (the batch itself was already judged fresh).
                            Some(_) => {
                                actions[ti][pi] = match dedup.keys.as_deref() {
                                    Some(rules) => classify_keys(
                                        &batch,
                                        rules,
                                        Forward::default(),
                                        true,
                                        &mut out,
                                    ),
                                    None => Action::forward(),
                                };
                                continue;
                            }
                            None => false,
                        },
                        // An idempotent producer's batch is looked at from
                        // the start (its batch guard was let go).
                        Pause::OrderedKey(rx) => first(rx, deadline.as_mut()).await.is_some(),
                        Pause::Seq(rx) => first(rx, deadline.as_mut()).await.is_some(),
                    };
                    if woke {
                        actions[ti][pi] = classify(batch, true, &mut out);
                    } else {
                        expired = true;
                    }
                }
            }
        }
        (settle(req, actions), out)
    }
}

/// Polls `f` and `deadline` together: `Some` with `f`'s output, or `None`
/// once the deadline completes first.
async fn first<F: Future + Unpin, D: Future<Output = ()>>(
    f: &mut F,
    mut deadline: Pin<&mut D>,
) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        if let Poll::Ready(v) = Pin::new(&mut *f).poll(cx) {
            return Poll::Ready(Some(v));
        }
        if deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::primitives::TaggedFields;
    use crate::codec::produce::{
        PartitionProduceData, PartitionProduceResponse, TopicProduceData, TopicProduceResponse,
    };
    use crate::codec::record_batch::{SimpleRecord, encode_record_batch};
    use bytes::Bytes;

    fn batch(pid: i64, seq: i32, n: usize) -> Bytes {
        let recs: Vec<_> = (0..n)
            .map(|i| SimpleRecord {
                key: None,
                value: Some(Bytes::from(format!("v{seq}-{i}"))),
            })
            .collect();
        encode_record_batch(pid, 0, seq, 1, 0, &recs)
    }

    fn request(acks: i16, parts: &[(i32, Bytes)]) -> ProduceRequest {
        ProduceRequest {
            transactional_id: None,
            acks,
            timeout_ms: 30_000,
            topics: vec![TopicProduceData {
                topic: TopicRef::Name("t".into()),
                partitions: parts
                    .iter()
                    .map(|(i, b)| PartitionProduceData {
                        index: *i,
                        records: Some(b.clone()),
                        tagged_fields: TaggedFields::default(),
                    })
                    .collect(),
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: TaggedFields::default(),
        }
    }

    fn key(t: &TopicRef) -> TopicKey {
        match t {
            TopicRef::Name(n) => TopicKey::Name(Arc::from(n.as_str())),
            TopicRef::Id(id) => TopicKey::Id(*id),
        }
    }

    fn broker_ok(parts: &[(i32, i64)]) -> ProduceResponse {
        ProduceResponse {
            responses: vec![TopicProduceResponse {
                topic: TopicRef::Name("t".into()),
                partitions: parts
                    .iter()
                    .map(|(i, o)| PartitionProduceResponse::success(*i, *o, -1, 0))
                    .collect(),
                tagged_fields: TaggedFields::default(),
            }],
            throttle_time_ms: 3,
            tagged_fields: TaggedFields::default(),
        }
    }

    fn broker_error(index: i32, code: i16) -> ProduceResponse {
        let mut r = broker_ok(&[(index, -1)]);
        r.responses[0].partitions[0].error_code = code;
        r
    }

    fn dedup(mode: Mode) -> ProduceDedup {
        ProduceDedup::new(DedupCache::new(5, 1000, Duration::from_secs(60)), mode)
    }

    fn decide(d: &ProduceDedup, req: &ProduceRequest) -> (Decision, Outcomes) {
        d.decide(req.clone(), &Scope::Anonymous, key)
    }

    /// Sends `req` through as a fresh request the broker answers with `resp`.
    fn produce(d: &ProduceDedup, req: &ProduceRequest, resp: &ProduceResponse) {
        let (Decision::Forward(p), _) = decide(d, req) else {
            panic!("expected a forward");
        };
        assert_eq!(p.complete(resp).unwrap(), None);
    }

    /// Partitions `index[i]` each with a one-record batch of producer
    /// `pids[i]` (a second record for the first two: they differ in size).
    fn three_partitions(pids: [i64; 3], index: [i32; 3]) -> ProduceRequest {
        let parts: Vec<_> = (0..3)
            .map(|i| (index[i], batch(pids[i], 0, if i < 2 { 2 } else { 1 })))
            .collect();
        request(-1, &parts)
    }

    /// One batch on partition `index`, accepted by the broker at `offset`.
    fn commit_one(d: &ProduceDedup, index: i32, b: Bytes, offset: i64) {
        produce(
            d,
            &request(-1, &[(index, b)]),
            &broker_ok(&[(index, offset)]),
        );
    }

    fn offsets(r: &ProduceResponse) -> Vec<(i32, i16, i64)> {
        r.responses[0]
            .partitions
            .iter()
            .map(|p| (p.index, p.error_code, p.base_offset))
            .collect()
    }

    #[test]
    fn duplicate_batch_gets_original_offset() {
        let d = dedup(Mode::On);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        produce(&d, &req, &broker_ok(&[(0, 100)]));
        let (Decision::Answer(resp), out) = decide(&d, &req) else {
            panic!("expected an answer");
        };
        assert_eq!(offsets(&resp), vec![(0, 0, 100)]);
        assert_eq!(resp.throttle_time_ms, 0);
        assert_eq!((out.duplicate, out.forwarded), (1, 0));
        assert!(out.bytes_saved > 0);
    }

    #[test]
    fn acks_one_is_never_answered_by_the_proxy() {
        let d = dedup(Mode::On);
        let req = request(1, &[(0, batch(7, 0, 3))]);
        produce(&d, &req, &broker_ok(&[(0, 100)]));
        let (decision, out) = decide(&d, &req);
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.uncacheable, 1);
    }

    #[test]
    fn broker_error_forgets_the_batch() {
        let d = dedup(Mode::On);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        produce(&d, &req, &broker_error(0, 6));
        assert!(matches!(decide(&d, &req).0, Decision::Forward(_)));
    }

    #[test]
    fn an_unanswered_request_forgets_its_batches() {
        let d = dedup(Mode::On);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let (Decision::Forward(p), _) = decide(&d, &req) else {
            panic!("expected a forward");
        };
        drop(p);
        let (decision, out) = decide(&d, &req);
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.forwarded, 1);
    }

    #[test]
    fn mixed_request_forwards_only_fresh_partitions_and_merges_in_order() {
        let d = dedup(Mode::On);
        commit_one(&d, 1, batch(7, 0, 2), 50);
        let mixed = three_partitions([8, 7, 9], [0, 1, 2]);
        let (Decision::Split { request, pending }, out) = decide(&d, &mixed) else {
            panic!("expected a split");
        };
        assert_eq!((out.forwarded, out.duplicate), (2, 1));
        let idx: Vec<_> = request.topics[0]
            .partitions
            .iter()
            .map(|p| p.index)
            .collect();
        assert_eq!(idx, vec![0, 2]);
        // The broker may answer in any order.
        let merged = pending
            .complete(&broker_ok(&[(2, 70), (0, 60)]))
            .unwrap()
            .unwrap();
        assert_eq!(offsets(&merged), vec![(0, 0, 60), (1, 0, 50), (2, 0, 70)]);
        assert_eq!(merged.throttle_time_ms, 3);
        assert!(matches!(decide(&d, &mixed).0, Decision::Answer(_)));
    }

    #[test]
    fn observe_mode_counts_but_forwards() {
        let d = dedup(Mode::Observe);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        produce(&d, &req, &broker_ok(&[(0, 100)]));
        let (decision, out) = decide(&d, &req);
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.observed_duplicate, 1);
    }

    #[test]
    fn off_mode_reads_nothing() {
        let d = dedup(Mode::Off);
        assert!(!d.reads(9));
        assert!(!dedup(Mode::On).reads(2));
        assert!(dedup(Mode::On).reads(3));
    }

    #[test]
    fn merge_fails_when_the_broker_leaves_out_a_forwarded_partition() {
        let d = dedup(Mode::On);
        commit_one(&d, 5, batch(9, 0, 1), 9);
        let req = three_partitions([7, 8, 9], [0, 1, 5]);
        let (Decision::Split { pending, .. }, _) = decide(&d, &req) else {
            panic!("expected a split");
        };
        assert_eq!(
            pending.complete(&broker_ok(&[(0, 1)])),
            Err(MergeError::MissingPartition {
                topic: TopicRef::Name("t".into()),
                partition: 1
            })
        );
    }

    fn flip_last_byte(b: &Bytes) -> Bytes {
        let mut v = b.to_vec();
        let n = v.len() - 1;
        v[n] ^= 1;
        Bytes::from(v)
    }

    #[test]
    fn corrupt_fresh_batch_goes_to_the_broker_and_is_not_kept() {
        let d = dedup(Mode::On);
        let good = batch(7, 0, 3);
        // The broker checks the CRC and answers CORRUPT_MESSAGE (2).
        produce(
            &d,
            &request(-1, &[(0, flip_last_byte(&good))]),
            &broker_error(0, 2),
        );
        // Nothing of it was kept: the intact batch is fresh.
        let (decision, out) = decide(&d, &request(-1, &[(0, good)]));
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.forwarded, 1);
    }

    #[test]
    fn corrupt_retry_of_a_committed_batch_is_never_answered_from_the_cache() {
        let d = dedup(Mode::On);
        let good = batch(7, 0, 3);
        let req = request(-1, &[(0, good.clone())]);
        produce(&d, &req, &broker_ok(&[(0, 40)]));
        // Same header (declared CRC included), damaged records.
        let (decision, out) = decide(&d, &request(-1, &[(0, flip_last_byte(&good))]));
        assert!(matches!(decision, Decision::Forward(_)));
        assert_eq!(out.uncacheable, 1);
        // The intact retry still is.
        let (Decision::Answer(resp), _) = decide(&d, &req) else {
            panic!("expected an answer");
        };
        assert_eq!(offsets(&resp), vec![(0, 0, 40)]);
    }

    #[test]
    fn corrupt_retry_of_an_in_flight_batch_does_not_wait_for_it() {
        let d = dedup(Mode::On);
        let good = batch(7, 0, 3);
        let (first, _) = decide(&d, &request(-1, &[(0, good.clone())]));
        let (retry, out) = decide(&d, &request(-1, &[(0, flip_last_byte(&good))]));
        assert!(matches!(retry, Decision::Forward(_)));
        assert_eq!(out.uncacheable, 1);
        drop(first);
    }

    #[tokio::test]
    async fn a_wait_resolves_with_the_originals_offset_once_committed() {
        let d = dedup(Mode::On);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let (Decision::Forward(original), _) = decide(&d, &req) else {
            panic!("expected a forward");
        };
        let (Decision::Wait(w), out) = decide(&d, &req) else {
            panic!("expected a wait");
        };
        assert_eq!(out, Outcomes::default());
        assert_eq!(w.timeout(), Duration::from_secs(30));
        let waiting = tokio::spawn(w.resolve(std::future::pending()));
        original.complete(&broker_ok(&[(0, 77)])).unwrap();
        let (Decision::Answer(resp), out) = waiting.await.unwrap() else {
            panic!("expected an answer");
        };
        assert_eq!(offsets(&resp), vec![(0, 0, 77)]);
        assert_eq!(out.coalesced, 1);
    }

    #[tokio::test]
    async fn a_wait_whose_original_fails_sends_the_copy_to_the_broker() {
        let d = dedup(Mode::On);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let (Decision::Forward(original), _) = decide(&d, &req) else {
            panic!("expected a forward");
        };
        let (Decision::Wait(w), _) = decide(&d, &req) else {
            panic!("expected a wait");
        };
        let waiting = tokio::spawn(w.resolve(std::future::pending()));
        original.complete(&broker_error(0, 7)).unwrap();
        let (Decision::Forward(copy), out) = waiting.await.unwrap() else {
            panic!("expected a forward");
        };
        // The copy is now the batch the cache follows.
        assert_eq!(out.forwarded, 1);
        copy.complete(&broker_ok(&[(0, 12)])).unwrap();
        let (Decision::Answer(resp), _) = decide(&d, &req) else {
            panic!("expected an answer");
        };
        assert_eq!(offsets(&resp), vec![(0, 0, 12)]);
    }

    #[tokio::test]
    async fn a_wait_past_its_deadline_forwards_without_remembering() {
        let d = dedup(Mode::On);
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let (Decision::Forward(original), _) = decide(&d, &req) else {
            panic!("expected a forward");
        };
        let (Decision::Wait(w), _) = decide(&d, &req) else {
            panic!("expected a wait");
        };
        let (Decision::Forward(copy), out) = w.resolve(std::future::ready(())).await else {
            panic!("expected a forward");
        };
        assert_eq!(out.forwarded, 1);
        // The copy carries no guard: its answer commits nothing.
        copy.complete(&broker_ok(&[(0, 5)])).unwrap();
        original.complete(&broker_ok(&[(0, 4)])).unwrap();
        let (Decision::Answer(resp), _) = decide(&d, &req) else {
            panic!("expected an answer");
        };
        assert_eq!(offsets(&resp), vec![(0, 0, 4)]);
    }
}
