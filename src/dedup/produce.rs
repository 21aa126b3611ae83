//! The per-request dedup logic, without I/O: classify each partition of a
//! Produce request, cut the request down to the partitions that must go to
//! the broker, and merge the broker's answer with the synthetic ones.

use bytes::Bytes;

use super::cache::{
    BatchId, Committed, DedupCache, InFlightGuard, Lookup, Outcome, ProducerPartition, Scope,
    TopicKey,
};
use crate::codec::CodecError;
use crate::codec::produce::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceData,
    TopicProduceResponse, TopicRef,
};
use crate::codec::record_batch::{NO_PRODUCER_ID, parse_single_batch_header, verify_crc};
use crate::config::DedupMode;
use crate::metrics::{self as m, outcome};
use tokio::sync::oneshot;

/// What happens to one partition of a Produce request.
#[derive(Debug)]
pub enum Action {
    /// Send to the broker; with a guard when the answer is to be cached.
    Forward(Option<InFlightGuard>),
    /// Answer from the cache with the original's offsets.
    Synthetic(Committed),
    /// The same batch is at the broker now; wait for its outcome.
    Wait(oneshot::Receiver<Outcome>),
}

impl Action {
    pub fn is_forward(&self) -> bool {
        matches!(self, Action::Forward(_))
    }
}

/// Per-partition actions, in the request's topic/partition order.
pub type Plan = Vec<Vec<Action>>;

/// Classifies every partition (DESIGN.md "Dedup" steps 1-5). Counts
/// outcomes. In observe mode duplicates are counted and forwarded.
pub fn classify(
    req: &ProduceRequest,
    cache: &std::sync::Arc<DedupCache>,
    mode: DedupMode,
    scope: &Scope,
    topic_key: impl Fn(&TopicRef) -> TopicKey,
) -> Plan {
    req.topics
        .iter()
        .map(|t| {
            let tk = topic_key(&t.topic);
            t.partitions
                .iter()
                .map(|p| {
                    classify_partition(
                        req.acks,
                        scope,
                        tk.clone(),
                        p.index,
                        p.records.as_ref(),
                        cache,
                        mode,
                    )
                })
                .collect()
        })
        .collect()
}

/// Classifies one partition; also used again after a wait failed.
#[allow(clippy::too_many_arguments)]
pub fn classify_partition(
    acks: i16,
    scope: &Scope,
    topic: TopicKey,
    partition: i32,
    records: Option<&Bytes>,
    cache: &std::sync::Arc<DedupCache>,
    mode: DedupMode,
) -> Action {
    if mode == DedupMode::Off {
        return Action::Forward(None);
    }
    let uncacheable = || {
        m::count_batch(outcome::UNCACHEABLE);
        Action::Forward(None)
    };
    // acks=1 batches can be lost on leader failover, and the client's
    // retry is what saves them; acks=0 gets no answer at all.
    if acks != -1 {
        return uncacheable();
    }
    let Some(records) = records else {
        return uncacheable();
    };
    // The CRC is checked only when the proxy would answer or wait in the
    // broker's place (below): a batch that goes to the broker is checked
    // there, and only a batch the broker accepted is ever committed.
    let header = match parse_single_batch_header(records) {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, "produce batch not parsable for dedup; forwarding");
            return uncacheable();
        }
    };
    if header.producer_id == NO_PRODUCER_ID || header.base_sequence < 0 {
        return uncacheable();
    }
    let key = ProducerPartition {
        scope: scope.clone(),
        producer_id: header.producer_id,
        topic,
        partition,
    };
    let id = BatchId {
        epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
        last_sequence: header.last_sequence(),
        crc: header.crc,
    };
    let lookup = match cache.begin(key, id) {
        l @ (Lookup::Duplicate(_) | Lookup::Wait(_)) => match verify_crc(records, &header) {
            Ok(()) => l,
            Err(e) => {
                // Never answered from the cache: the broker tells the
                // client what is wrong with it (CORRUPT_MESSAGE).
                tracing::debug!(error = %e, "retried batch fails its CRC; forwarding");
                return uncacheable();
            }
        },
        l => l,
    };
    match (lookup, mode) {
        (Lookup::Fresh(g), _) => {
            m::count_batch(outcome::FORWARDED);
            Action::Forward(Some(g))
        }
        (Lookup::Forward, _) => {
            m::count_batch(outcome::FORWARDED);
            Action::Forward(None)
        }
        (Lookup::Duplicate(_) | Lookup::Wait(_), DedupMode::Observe) => {
            m::count_batch(outcome::OBSERVED_DUPLICATE);
            Action::Forward(None)
        }
        (Lookup::Duplicate(c), _) => {
            m::count_batch(outcome::DUPLICATE);
            m::count_bytes_saved(records.len() as u64);
            Action::Synthetic(c)
        }
        (Lookup::Wait(rx), _) => Action::Wait(rx),
    }
}

/// True when every partition goes to the broker: the original request
/// bytes can be forwarded untouched.
pub fn all_forward(plan: &Plan) -> bool {
    plan.iter().flatten().all(Action::is_forward)
}

/// True when no partition goes to the broker.
pub fn none_forward(plan: &Plan) -> bool {
    !plan.iter().flatten().any(Action::is_forward)
}

/// The request cut down to the partitions that go to the broker, at the
/// request's own version (never moved to another one). Topics left with no
/// partitions are dropped. Records are shared, not copied.
pub fn forward_subset(req: &ProduceRequest, plan: &Plan) -> ProduceRequest {
    let topics = req
        .topics
        .iter()
        .zip(plan)
        .filter_map(|(t, actions)| {
            let partitions: Vec<_> = t
                .partitions
                .iter()
                .zip(actions)
                .filter(|(_, a)| a.is_forward())
                .map(|(p, _)| p.clone())
                .collect();
            (!partitions.is_empty()).then(|| TopicProduceData {
                topic: t.topic.clone(),
                partitions,
                tagged_fields: t.tagged_fields.clone(),
            })
        })
        .collect();
    ProduceRequest {
        transactional_id: req.transactional_id.clone(),
        acks: req.acks,
        timeout_ms: req.timeout_ms,
        topics,
        tagged_fields: req.tagged_fields.clone(),
    }
}

fn find_partition<'a>(
    resp: &'a ProduceResponse,
    topic: &TopicRef,
    index: i32,
) -> Option<(&'a TopicProduceResponse, &'a PartitionProduceResponse)> {
    resp.responses
        .iter()
        .filter(|t| &t.topic == topic)
        .find_map(|t| {
            t.partitions
                .iter()
                .find(|p| p.index == index)
                .map(|p| (t, p))
        })
}

/// Records the broker's answer for every guarded partition: committed only
/// for acks=-1 with error NONE (the caller only creates guards for acks=-1);
/// every other guard is dropped, which forgets the batch.
pub fn resolve_guards(req: &ProduceRequest, plan: &mut Plan, resp: Option<&ProduceResponse>) {
    for (t, actions) in req.topics.iter().zip(plan.iter_mut()) {
        for (p, a) in t.partitions.iter().zip(actions.iter_mut()) {
            let Action::Forward(guard) = a else { continue };
            let Some(g) = guard.take() else { continue };
            let answer = resp.and_then(|r| find_partition(r, &t.topic, p.index));
            match answer {
                Some((_, pr)) if pr.error_code == 0 && pr.base_offset >= 0 => g.commit(Committed {
                    base_offset: pr.base_offset,
                    log_append_time_ms: pr.log_append_time_ms,
                    log_start_offset: pr.log_start_offset,
                }),
                _ => drop(g),
            }
        }
    }
}

/// Builds the response the client sees: synthetic partitions and the
/// broker's partitions in the request's order, exactly the request's
/// partitions. `broker` is `None` when nothing was forwarded.
pub fn merge_response(
    req: &ProduceRequest,
    plan: &Plan,
    broker: Option<&ProduceResponse>,
) -> Result<ProduceResponse, CodecError> {
    let mut responses = Vec::with_capacity(req.topics.len());
    for (t, actions) in req.topics.iter().zip(plan) {
        let mut partitions = Vec::with_capacity(t.partitions.len());
        let mut topic_tagged = None;
        for (p, a) in t.partitions.iter().zip(actions) {
            match a {
                Action::Synthetic(c) => partitions.push(PartitionProduceResponse::success(
                    p.index,
                    c.base_offset,
                    c.log_append_time_ms,
                    c.log_start_offset,
                )),
                Action::Forward(_) => {
                    let Some((bt, bp)) = broker.and_then(|r| find_partition(r, &t.topic, p.index))
                    else {
                        return Err(CodecError::UnexpectedNull(
                            "partition missing from the broker's produce response",
                        ));
                    };
                    topic_tagged.get_or_insert_with(|| bt.tagged_fields.clone());
                    partitions.push(bp.clone());
                }
                Action::Wait(_) => {
                    return Err(CodecError::UnexpectedNull(
                        "unresolved wait in produce plan",
                    ));
                }
            }
        }
        responses.push(TopicProduceResponse {
            topic: t.topic.clone(),
            partitions,
            tagged_fields: topic_tagged.unwrap_or_default(),
        });
    }
    Ok(ProduceResponse {
        responses,
        throttle_time_ms: broker.map_or(0, |b| b.throttle_time_ms),
        tagged_fields: broker.map(|b| b.tagged_fields.clone()).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::primitives::TaggedFields;
    use crate::codec::produce::PartitionProduceData;
    use crate::codec::record_batch::{SimpleRecord, encode_record_batch};
    use std::sync::Arc;
    use std::time::Duration;

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

    fn cache() -> Arc<DedupCache> {
        DedupCache::new(5, 1000, Duration::from_secs(60))
    }

    #[test]
    fn duplicate_batch_gets_original_offset() {
        let c = cache();
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let mut plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(all_forward(&plan));
        resolve_guards(&req, &mut plan, Some(&broker_ok(&[(0, 100)])));
        let plan2 = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(none_forward(&plan2));
        let resp = merge_response(&req, &plan2, None).unwrap();
        let p = &resp.responses[0].partitions[0];
        assert_eq!((p.error_code, p.base_offset), (0, 100));
        assert_eq!(resp.throttle_time_ms, 0);
    }

    #[test]
    fn acks_one_is_never_answered_by_the_proxy() {
        let c = cache();
        let req = request(1, &[(0, batch(7, 0, 3))]);
        let mut plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        resolve_guards(&req, &mut plan, Some(&broker_ok(&[(0, 100)])));
        assert!(all_forward(&classify(
            &req,
            &c,
            DedupMode::On,
            &Scope::Anonymous,
            key
        )));
    }

    #[test]
    fn broker_error_forgets_the_batch() {
        let c = cache();
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let mut plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        let mut err = broker_ok(&[(0, -1)]);
        err.responses[0].partitions[0].error_code = 6;
        resolve_guards(&req, &mut plan, Some(&err));
        assert!(all_forward(&classify(
            &req,
            &c,
            DedupMode::On,
            &Scope::Anonymous,
            key
        )));
    }

    #[test]
    fn mixed_request_forwards_only_fresh_partitions_and_merges_in_order() {
        let c = cache();
        let first = request(-1, &[(1, batch(7, 0, 2))]);
        let mut plan = classify(&first, &c, DedupMode::On, &Scope::Anonymous, key);
        resolve_guards(&first, &mut plan, Some(&broker_ok(&[(1, 50)])));

        let mixed = request(
            -1,
            &[
                (0, batch(8, 0, 2)),
                (1, batch(7, 0, 2)),
                (2, batch(9, 0, 1)),
            ],
        );
        let mut plan = classify(&mixed, &c, DedupMode::On, &Scope::Anonymous, key);
        let sub = forward_subset(&mixed, &plan);
        let idx: Vec<_> = sub.topics[0].partitions.iter().map(|p| p.index).collect();
        assert_eq!(idx, vec![0, 2]);
        // The broker may answer in any order.
        let broker = broker_ok(&[(2, 70), (0, 60)]);
        let merged = merge_response(&mixed, &plan, Some(&broker)).unwrap();
        let got: Vec<_> = merged.responses[0]
            .partitions
            .iter()
            .map(|p| (p.index, p.base_offset))
            .collect();
        assert_eq!(got, vec![(0, 60), (1, 50), (2, 70)]);
        assert_eq!(merged.throttle_time_ms, 3);
        resolve_guards(&mixed, &mut plan, Some(&broker));
        assert!(none_forward(&classify(
            &mixed,
            &c,
            DedupMode::On,
            &Scope::Anonymous,
            key
        )));
    }

    #[test]
    fn observe_mode_counts_but_forwards() {
        let c = cache();
        let req = request(-1, &[(0, batch(7, 0, 3))]);
        let mut plan = classify(&req, &c, DedupMode::Observe, &Scope::Anonymous, key);
        resolve_guards(&req, &mut plan, Some(&broker_ok(&[(0, 100)])));
        assert!(all_forward(&classify(
            &req,
            &c,
            DedupMode::Observe,
            &Scope::Anonymous,
            key
        )));
    }

    #[test]
    fn merge_fails_when_the_broker_leaves_out_a_forwarded_partition() {
        let c = cache();
        let req = request(-1, &[(0, batch(7, 0, 3)), (1, batch(8, 0, 1))]);
        let plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(merge_response(&req, &plan, Some(&broker_ok(&[(0, 1)]))).is_err());
    }

    fn flip_last_byte(b: &Bytes) -> Bytes {
        let mut v = b.to_vec();
        let n = v.len() - 1;
        v[n] ^= 1;
        Bytes::from(v)
    }

    #[test]
    fn corrupt_fresh_batch_goes_to_the_broker_and_is_not_kept() {
        let c = cache();
        let good = batch(7, 0, 3);
        let req = request(-1, &[(0, flip_last_byte(&good))]);
        let mut plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(matches!(plan[0][0], Action::Forward(Some(_))));
        // The broker checks the CRC and answers CORRUPT_MESSAGE (2).
        let mut resp = broker_ok(&[(0, -1)]);
        resp.responses[0].partitions[0].error_code = 2;
        resolve_guards(&req, &mut plan, Some(&resp));
        // Nothing of it was kept: the intact batch is fresh.
        let again = classify(
            &request(-1, &[(0, good)]),
            &c,
            DedupMode::On,
            &Scope::Anonymous,
            key,
        );
        assert!(matches!(again[0][0], Action::Forward(Some(_))));
    }

    #[test]
    fn corrupt_retry_of_a_committed_batch_is_never_answered_from_the_cache() {
        let c = cache();
        let good = batch(7, 0, 3);
        let req = request(-1, &[(0, good.clone())]);
        let mut plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        resolve_guards(&req, &mut plan, Some(&broker_ok(&[(0, 40)])));
        // Same header (declared CRC included), damaged records.
        let bad = request(-1, &[(0, flip_last_byte(&good))]);
        let plan = classify(&bad, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(matches!(plan[0][0], Action::Forward(None)));
        // The intact retry still is.
        let plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(matches!(
            plan[0][0],
            Action::Synthetic(Committed {
                base_offset: 40,
                ..
            })
        ));
    }

    #[test]
    fn corrupt_retry_of_an_in_flight_batch_does_not_wait_for_it() {
        let c = cache();
        let good = batch(7, 0, 3);
        let req = request(-1, &[(0, good.clone())]);
        let plan = classify(&req, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(matches!(plan[0][0], Action::Forward(Some(_))));
        let bad = request(-1, &[(0, flip_last_byte(&good))]);
        let retry = classify(&bad, &c, DedupMode::On, &Scope::Anonymous, key);
        assert!(matches!(retry[0][0], Action::Forward(None)));
        drop(plan);
    }
}
