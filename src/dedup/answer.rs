//! Where a duplicate gets answered.
//!
//! A partition the proxy answers itself gets exactly what the broker
//! answered its original, field for field as a broker answers a batch it
//! already holds (ProduceResponse.json; docs/architecture.md, "Dedup rules" 3):
//! error NONE, the original base offset, log-append time and log start
//! offset, no record errors, a null error message, no tagged fields. The
//! only source of those values is a [`Committed`] entry, which the cache
//! holds only for a batch the broker acknowledged with acks=all and NONE.
//!
//! A request is answered in one of three shapes: wholly by the proxy, wholly
//! by the broker, or split: the fresh partitions go to the broker in a
//! request cut down to them (at the request's own version), and the
//! broker's answer is merged with the proxy's partitions in the request's
//! topic/partition order.

use super::cache::{Committed, InFlightGuard};
use super::classify::Action;
use super::keys::KeyClaims;
use super::sequence::SeqTicket;
use crate::codec::produce::{
    PartitionProduceResponse, ProduceRequest, ProduceResponse, TopicProduceData,
    TopicProduceResponse, TopicRef,
};

/// Who answers one partition of a request.
#[derive(Debug)]
pub(crate) enum Answerer {
    /// The broker; its answer commits the batch (`guard`) and the keys it
    /// claimed (`keys`), when there are.
    Broker {
        guard: Option<InFlightGuard>,
        keys: Option<KeyClaims>,
        seq: Option<SeqTicket>,
    },
    /// The proxy, from the committed original.
    Proxy(Committed),
}

/// The request's topics and partitions in order, each with who answers it:
/// all a response needs (records are not kept).
#[derive(Debug)]
pub(crate) struct Layout {
    pub topics: Vec<(TopicRef, Vec<(i32, Answerer)>)>,
}

/// A partition answered by the proxy for a committed original.
pub(crate) fn synthetic_partition(index: i32, c: &Committed) -> PartitionProduceResponse {
    PartitionProduceResponse::success(
        index,
        c.base_offset,
        c.log_append_time_ms,
        c.log_start_offset,
    )
}

/// The layout of `req` with resolved `actions` (no wait left).
pub(crate) fn layout(req: &ProduceRequest, actions: Vec<Vec<Action>>) -> Layout {
    let topics = req
        .topics
        .iter()
        .zip(actions)
        .map(|(t, acts)| {
            let parts = t
                .partitions
                .iter()
                .zip(acts)
                .map(|(p, a)| {
                    let who = match a {
                        Action::Forward(f) => Answerer::Broker {
                            guard: f.guard,
                            keys: f.keys,
                            seq: f.seq,
                        },
                        Action::Synthetic(c) => Answerer::Proxy(c),
                        // Callers resolve every wait (and close on a gap)
                        // first; what is left over goes to the broker,
                        // never answered here.
                        Action::Wait(_) | Action::Gap => Answerer::Broker {
                            guard: None,
                            keys: None,
                            seq: None,
                        },
                    };
                    (p.index, who)
                })
                .collect();
            (t.topic.clone(), parts)
        })
        .collect();
    Layout { topics }
}

/// The request cut down to the partitions that go to the broker, at the
/// request's own version (never moved to another one), each with its batch
/// re-encoded without duplicate records where key dedup removed some.
/// Topics left with no partitions are dropped. Records are shared, not
/// copied.
pub(crate) fn forward_subset(req: &ProduceRequest, actions: &[Vec<Action>]) -> ProduceRequest {
    let topics = req
        .topics
        .iter()
        .zip(actions)
        .filter_map(|(t, acts)| {
            let partitions: Vec<_> = t
                .partitions
                .iter()
                .zip(acts)
                .filter_map(|(p, a)| match a {
                    Action::Forward(f) => {
                        let mut p = p.clone();
                        if let Some(r) = &f.replace {
                            p.records = Some(r.clone());
                        }
                        Some(p)
                    }
                    _ => None,
                })
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

/// A broker answer that cannot be merged into the client's response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    #[error("partition {partition} of {topic:?} missing from the broker's produce response")]
    MissingPartition { topic: TopicRef, partition: i32 },
}

pub(crate) fn find_partition<'a>(
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

/// The response the client sees: the proxy's partitions and the broker's in
/// the request's order, exactly the request's partitions. `broker` is
/// `None` when nothing was forwarded.
pub(crate) fn merge(
    layout: &Layout,
    broker: Option<&ProduceResponse>,
) -> Result<ProduceResponse, MergeError> {
    let mut responses = Vec::with_capacity(layout.topics.len());
    for (topic, parts) in &layout.topics {
        let mut partitions = Vec::with_capacity(parts.len());
        let mut topic_tagged = None;
        for (index, who) in parts {
            match who {
                Answerer::Proxy(c) => partitions.push(synthetic_partition(*index, c)),
                Answerer::Broker { .. } => {
                    let Some((bt, bp)) = broker.and_then(|r| find_partition(r, topic, *index))
                    else {
                        return Err(MergeError::MissingPartition {
                            topic: topic.clone(),
                            partition: *index,
                        });
                    };
                    topic_tagged.get_or_insert_with(|| bt.tagged_fields.clone());
                    partitions.push(bp.clone());
                }
            }
        }
        responses.push(TopicProduceResponse {
            topic: topic.clone(),
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
