//! Requests and answers the dedup unit tests build: one topic, one
//! partition (0), acks=all unless changed.

use std::sync::Arc;

use bytes::Bytes;

use super::cache::TopicKey;
use crate::codec::primitives::TaggedFields;
use crate::codec::produce::{
    PartitionProduceData, PartitionProduceResponse, ProduceRequest, ProduceResponse,
    TopicProduceData, TopicProduceResponse, TopicRef,
};

/// An acks=all Produce request of `records` to partition 0 of `topic`.
pub(crate) fn request(topic: &str, records: Bytes) -> ProduceRequest {
    ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topics: vec![TopicProduceData {
            topic: TopicRef::Name(topic.into()),
            partitions: vec![PartitionProduceData {
                index: 0,
                records: Some(records),
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: TaggedFields::default(),
        }],
        tagged_fields: TaggedFields::default(),
    }
}

/// The broker's NONE answer for partition 0 of `topic` at `offset`.
pub(crate) fn ok(topic: &str, offset: i64) -> ProduceResponse {
    ProduceResponse {
        responses: vec![TopicProduceResponse {
            topic: TopicRef::Name(topic.into()),
            partitions: vec![PartitionProduceResponse::success(0, offset, -1, 0)],
            tagged_fields: TaggedFields::default(),
        }],
        throttle_time_ms: 0,
        tagged_fields: TaggedFields::default(),
    }
}

/// A topic as the caches key it: by name, ids as they are.
pub(crate) fn topic_key(t: &TopicRef) -> TopicKey {
    match t {
        TopicRef::Name(n) => TopicKey::Name(Arc::from(n.as_str())),
        TopicRef::Id(id) => TopicKey::Id(*id),
    }
}
