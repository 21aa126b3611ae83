//! ProduceRequest and ProduceResponse, versions 3-13
//! (`ProduceRequest.json`, `ProduceResponse.json`; flexible from v9).
//!
//! v13 (KIP-516) names topics by id instead of by name. Records are kept as
//! `Bytes` slices of the frame they came in, so splitting a request copies
//! no record data.

use bytes::{BufMut, Bytes, BytesMut};

use super::api::{PRODUCE_VERSIONS, check_parsed_version};
use super::error::CodecError;
use super::primitives::*;

pub const MIN_VERSION: i16 = PRODUCE_VERSIONS.min_parsed;
pub const MAX_VERSION: i16 = match PRODUCE_VERSIONS.max_version {
    Some(v) => v,
    None => i16::MAX,
};
const FIRST_FLEXIBLE: i16 = PRODUCE_VERSIONS.first_flexible;
const FIRST_TOPIC_ID: i16 = 13;

/// Least bytes a `TopicProduceData` takes (`ProduceRequest.json`): its
/// name (an int16 length, or a one-byte compact length from v9) or, from
/// v13, its 16-byte id; a partition count (int32, or one compact byte);
/// from v9 a tagged-field count.
fn min_topic_bytes(version: i16) -> usize {
    if version >= FIRST_TOPIC_ID {
        16 + 1 + 1
    } else if version >= FIRST_FLEXIBLE {
        1 + 1 + 1
    } else {
        2 + 4
    }
}

/// Least bytes a `PartitionProduceData` takes: its int32 index, a records
/// length (int32 -1, or one compact byte for null) and, from v9, a
/// tagged-field count.
fn min_partition_bytes(version: i16) -> usize {
    if version >= FIRST_FLEXIBLE {
        4 + 1 + 1
    } else {
        4 + 4
    }
}

fn check_version(version: i16) -> Result<(), CodecError> {
    check_parsed_version(&PRODUCE_VERSIONS, version)
}

/// A topic as Produce names it: by name up to v12, by id from v13.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TopicRef {
    Name(String),
    Id([u8; 16]),
}

fn parse_topic_ref(i: &[u8], version: i16) -> PResult<'_, TopicRef> {
    if version >= FIRST_TOPIC_ID {
        let (i, id) = parse_uuid(i)?;
        Ok((i, TopicRef::Id(id)))
    } else {
        let (i, n) = parse_string(i, version >= FIRST_FLEXIBLE)?;
        Ok((i, TopicRef::Name(n)))
    }
}

fn put_topic_ref(buf: &mut BytesMut, t: &TopicRef, version: i16) {
    match t {
        TopicRef::Id(id) if version >= FIRST_TOPIC_ID => buf.put_slice(id),
        TopicRef::Name(n) if version < FIRST_TOPIC_ID => {
            put_string(buf, n, version >= FIRST_FLEXIBLE)
        }
        // A topic of the wrong kind for the version cannot come from a
        // parse at that version; encode a placeholder the broker refuses.
        TopicRef::Id(_) => put_string(buf, "", version >= FIRST_FLEXIBLE),
        TopicRef::Name(_) => buf.put_slice(&[0u8; 16]),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProduceData {
    pub index: i32,
    /// One RecordBatch for v3+ (nullable on the wire).
    pub records: Option<Bytes>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProduceData {
    pub topic: TopicRef,
    pub partitions: Vec<PartitionProduceData>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceRequest {
    pub transactional_id: Option<String>,
    /// 0, 1 or -1 (all).
    pub acks: i16,
    pub timeout_ms: i32,
    pub topics: Vec<TopicProduceData>,
    pub tagged_fields: TaggedFields,
}

/// `acks` of a Produce request body (after the header), read even when the
/// rest would not parse: it decides whether a response is expected at all.
/// Works for every version (before v3 there is no transactional id).
pub fn parse_acks(body: &[u8], version: i16) -> Option<i16> {
    let body = if version >= 3 {
        parse_nullable_string(body, version >= FIRST_FLEXIBLE)
            .ok()?
            .0
    } else {
        body
    };
    parse_i16(body).ok().map(|(_, a)| a)
}

/// Parses a Produce request body. `body` is the frame slice that holds the
/// body, so records come back as zero-copy sub-slices of it.
pub fn parse_produce_request(body: &Bytes, version: i16) -> Result<ProduceRequest, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    let partition = |i| -> PResult<'_, PartitionProduceData> {
        let (i, index) = parse_i32(i)?;
        let (i, records) = parse_nullable_bytes(i, flex)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            PartitionProduceData {
                index,
                records: records.map(|r| body.slice_ref(r)),
                tagged_fields,
            },
        ))
    };
    let topic = |i| -> PResult<'_, TopicProduceData> {
        let (i, topic) = parse_topic_ref(i, version)?;
        let (i, partitions) = parse_array_min(
            i,
            flex,
            min_partition_bytes(version),
            "partition count",
            partition,
        )?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            TopicProduceData {
                topic,
                partitions,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::REQUEST, |i| {
        let (i, transactional_id) = parse_nullable_string(i, flex)?;
        let (i, acks) = parse_i16(i)?;
        let (i, timeout_ms) = parse_i32(i)?;
        let (i, topics) = parse_array_min(i, flex, min_topic_bytes(version), "topic count", topic)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            ProduceRequest {
                transactional_id,
                acks,
                timeout_ms,
                topics,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_produce_request(buf: &mut BytesMut, r: &ProduceRequest, version: i16) {
    let flex = version >= FIRST_FLEXIBLE;
    put_nullable_string(buf, r.transactional_id.as_deref(), flex);
    buf.put_i16(r.acks);
    buf.put_i32(r.timeout_ms);
    put_array_len(buf, Some(r.topics.len()), flex);
    for t in &r.topics {
        put_topic_ref(buf, &t.topic, version);
        put_array_len(buf, Some(t.partitions.len()), flex);
        for p in &t.partitions {
            buf.put_i32(p.index);
            put_nullable_bytes(buf, p.records.as_deref(), flex);
            put_tagged_if(buf, &p.tagged_fields, flex);
        }
        put_tagged_if(buf, &t.tagged_fields, flex);
    }
    put_tagged_if(buf, &r.tagged_fields, flex);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchIndexAndErrorMessage {
    pub batch_index: i32,
    pub batch_index_error_message: Option<String>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProduceResponse {
    pub index: i32,
    pub error_code: i16,
    pub base_offset: i64,
    /// -1 unless the topic uses LogAppendTime (or the batch was a duplicate).
    pub log_append_time_ms: i64,
    /// v5+; -1 below.
    pub log_start_offset: i64,
    /// v8+.
    pub record_errors: Vec<BatchIndexAndErrorMessage>,
    /// v8+.
    pub error_message: Option<String>,
    /// v9+; tag 0 is `CurrentLeader` (v10+), kept raw: it holds no address.
    pub tagged_fields: TaggedFields,
}

impl PartitionProduceResponse {
    /// The answer the broker gives a duplicate batch (UnifiedLog's
    /// duplicate path): NONE with the original offsets, nothing else.
    pub fn success(
        index: i32,
        base_offset: i64,
        log_append_time_ms: i64,
        log_start_offset: i64,
    ) -> Self {
        PartitionProduceResponse {
            index,
            error_code: 0,
            base_offset,
            log_append_time_ms,
            log_start_offset,
            record_errors: Vec::new(),
            error_message: None,
            tagged_fields: TaggedFields::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicProduceResponse {
    pub topic: TopicRef,
    pub partitions: Vec<PartitionProduceResponse>,
    pub tagged_fields: TaggedFields,
}

/// `NodeEndpoints` (ProduceResponse tag 0, v10+): where the new leaders
/// live. These are broker addresses and must be rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEndpoint {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProduceResponse {
    pub responses: Vec<TopicProduceResponse>,
    pub throttle_time_ms: i32,
    /// v9+; tag 0 is `NodeEndpoints` (v10+), see [`parse_node_endpoints`].
    pub tagged_fields: TaggedFields,
}

/// Tag of `NodeEndpoints` in ProduceResponse (and of FetchResponse v16+).
pub const NODE_ENDPOINTS_TAG: u32 = 0;

pub fn parse_produce_response(body: &[u8], version: i16) -> Result<ProduceResponse, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    let record_error = |i| -> PResult<'_, BatchIndexAndErrorMessage> {
        let (i, batch_index) = parse_i32(i)?;
        let (i, batch_index_error_message) = parse_nullable_string(i, flex)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            BatchIndexAndErrorMessage {
                batch_index,
                batch_index_error_message,
                tagged_fields,
            },
        ))
    };
    let partition = |i| -> PResult<'_, PartitionProduceResponse> {
        let (i, index) = parse_i32(i)?;
        let (i, error_code) = parse_i16(i)?;
        let (i, base_offset) = parse_i64(i)?;
        let (i, log_append_time_ms) = parse_i64(i)?;
        let (i, log_start_offset) = if version >= 5 { parse_i64(i)? } else { (i, -1) };
        let (i, record_errors, error_message) = if version >= 8 {
            let (i, e) = parse_array(i, flex, record_error)?;
            let (i, m) = parse_nullable_string(i, flex)?;
            (i, e, m)
        } else {
            (i, Vec::new(), None)
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            PartitionProduceResponse {
                index,
                error_code,
                base_offset,
                log_append_time_ms,
                log_start_offset,
                record_errors,
                error_message,
                tagged_fields,
            },
        ))
    };
    let topic = |i| -> PResult<'_, TopicProduceResponse> {
        let (i, topic) = parse_topic_ref(i, version)?;
        let (i, partitions) = parse_array(i, flex, partition)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            TopicProduceResponse {
                topic,
                partitions,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::RESPONSE, |i| {
        let (i, responses) = parse_array(i, flex, topic)?;
        let (i, throttle_time_ms) = parse_i32(i)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            ProduceResponse {
                responses,
                throttle_time_ms,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_produce_response(buf: &mut BytesMut, r: &ProduceResponse, version: i16) {
    let flex = version >= FIRST_FLEXIBLE;
    put_array_len(buf, Some(r.responses.len()), flex);
    for t in &r.responses {
        put_topic_ref(buf, &t.topic, version);
        put_array_len(buf, Some(t.partitions.len()), flex);
        for p in &t.partitions {
            buf.put_i32(p.index);
            buf.put_i16(p.error_code);
            buf.put_i64(p.base_offset);
            buf.put_i64(p.log_append_time_ms);
            if version >= 5 {
                buf.put_i64(p.log_start_offset);
            }
            if version >= 8 {
                put_array_len(buf, Some(p.record_errors.len()), flex);
                for e in &p.record_errors {
                    buf.put_i32(e.batch_index);
                    put_nullable_string(buf, e.batch_index_error_message.as_deref(), flex);
                    put_tagged_if(buf, &e.tagged_fields, flex);
                }
                put_nullable_string(buf, p.error_message.as_deref(), flex);
            }
            put_tagged_if(buf, &p.tagged_fields, flex);
        }
        put_tagged_if(buf, &t.tagged_fields, flex);
    }
    buf.put_i32(r.throttle_time_ms);
    put_tagged_if(buf, &r.tagged_fields, flex);
}

/// Decodes a `NodeEndpoints` tagged value (compact array, flexible struct).
pub fn parse_node_endpoints(raw: &[u8]) -> Result<Vec<NodeEndpoint>, CodecError> {
    let endpoint = |i| -> PResult<'_, NodeEndpoint> {
        let (i, node_id) = parse_i32(i)?;
        let (i, host) = parse_string(i, true)?;
        let (i, port) = parse_i32(i)?;
        let (i, rack) = parse_nullable_string(i, true)?;
        let (i, tagged_fields) = parse_tagged_fields(i)?;
        Ok((
            i,
            NodeEndpoint {
                node_id,
                host,
                port,
                rack,
                tagged_fields,
            },
        ))
    };
    parse_all(raw, DecodeBudget::RESPONSE, |i| {
        parse_array(i, true, endpoint)
    })
}

pub fn encode_node_endpoints(endpoints: &[NodeEndpoint]) -> Bytes {
    let mut buf = BytesMut::new();
    put_array_len(&mut buf, Some(endpoints.len()), true);
    for e in endpoints {
        buf.put_i32(e.node_id);
        put_string(&mut buf, &e.host, true);
        buf.put_i32(e.port);
        put_nullable_string(&mut buf, e.rack.as_deref(), true);
        put_tagged_fields(&mut buf, &e.tagged_fields);
    }
    buf.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_and_partition_counts_the_bytes_left_cannot_hold_are_refused() {
        // v9: null transactional id, acks, timeout, then 10 topics claimed
        // in 29 bytes (a topic takes at least 3).
        let mut b = BytesMut::new();
        b.put_u8(0);
        b.put_i16(-1);
        b.put_i32(1000);
        put_uvarint(&mut b, 11);
        b.put_slice(&[1; 29]);
        let e = parse_produce_request(&b.freeze(), 9).unwrap_err();
        assert_eq!(
            e,
            CodecError::LengthOverLimit {
                what: "topic count",
                len: 10,
                limit: 9
            }
        );

        // v3: one topic "t" claiming 2 partitions in 15 bytes (one takes 8).
        let mut b = BytesMut::new();
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i32(1000);
        b.put_i32(1);
        put_string(&mut b, "t", false);
        b.put_i32(2);
        b.put_slice(&[0; 15]);
        let e = parse_produce_request(&b.freeze(), 3).unwrap_err();
        assert_eq!(
            e,
            CodecError::LengthOverLimit {
                what: "partition count",
                len: 2,
                limit: 1
            }
        );
    }
}
