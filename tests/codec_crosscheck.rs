//! Cross-checks the codec against an independent implementation of the
//! Kafka protocol, the `kafka-protocol` crate.
//!
//! For every message and every version the codec implements, random
//! instances of the `kafka-protocol` types are encoded by `kafka-protocol`,
//! decoded by our codec and compared field by field with what the instance
//! says; then our encoding of the expected value must be byte-identical to
//! `kafka-protocol`'s, and `kafka-protocol` must decode our bytes back into
//! the very instance it started from. Fields a version does not carry hold
//! their defaults (`kafka-protocol` refuses to encode anything else).
//!
//! The rest of the file checks the RecordBatch header against the `crc32c`
//! crate and `kafka-protocol`'s record decoder, that every strict prefix of
//! a valid message is refused, and that garbage never panics.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeInclusive;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages as kp;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use kafka_protocol::records::RecordBatchDecoder;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use uuid::Uuid;

use kafka_dedup_proxy::codec::api;
use kafka_dedup_proxy::codec::api_versions as av;
use kafka_dedup_proxy::codec::describe_cluster as dc;
use kafka_dedup_proxy::codec::find_coordinator as fc;
use kafka_dedup_proxy::codec::frame::split_frames;
use kafka_dedup_proxy::codec::header;
use kafka_dedup_proxy::codec::metadata as md;
use kafka_dedup_proxy::codec::primitives::TaggedFields;
use kafka_dedup_proxy::codec::produce as pr;
use kafka_dedup_proxy::codec::record_batch::{
    self as rb, RecordBatchHeader, SimpleRecord, encode_record_batch,
};
use kafka_dedup_proxy::codec::{CodecError, frame};

/// Random instances per message version.
const CASES: u32 = 64;
/// Random instances per version whose every prefix is parsed.
const TRUNCATION_CASES: u32 = 6;

// ---------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// Runs `test` on `cases` values of `strategy(v)` for every version `v`.
fn for_each_version<S: Strategy>(
    versions: RangeInclusive<i16>,
    cases: u32,
    strategy: impl Fn(i16) -> S,
    test: impl Fn(i16, S::Value) -> Result<(), TestCaseError>,
) {
    for v in versions {
        runner(cases)
            .run(&strategy(v), |x| test(v, x))
            .unwrap_or_else(|e| panic!("version {v}: {e}"));
    }
}

fn kp_encode<T: Encodable>(m: &T, version: i16) -> Bytes {
    let mut b = BytesMut::new();
    m.encode(&mut b, version)
        .unwrap_or_else(|e| panic!("kafka-protocol refuses to encode v{version}: {e}"));
    b.freeze()
}

fn kp_decode<T: Decodable>(bytes: &[u8], version: i16) -> Result<T, TestCaseError> {
    let mut buf = Bytes::copy_from_slice(bytes);
    let m = T::decode(&mut buf, version).map_err(|e| {
        TestCaseError::fail(format!("kafka-protocol refuses our v{version} bytes: {e}"))
    })?;
    prop_assert!(
        buf.is_empty(),
        "kafka-protocol left {} bytes of ours",
        buf.len()
    );
    Ok(m)
}

/// An unsigned varint, written here rather than with the codec under test.
fn uvarint(b: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        b.put_u8((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    b.put_u8(v as u8);
}

/// A compact array of flexible structs encoded by `kafka-protocol`.
fn kp_compact_array<T: Encodable>(items: &[T], version: i16) -> Bytes {
    let mut b = BytesMut::new();
    uvarint(&mut b, items.len() as u32 + 1);
    for item in items {
        item.encode(&mut b, version)
            .expect("kafka-protocol encodes the element");
    }
    b.freeze()
}

/// Decodes a compact array of flexible structs with `kafka-protocol`.
fn kp_decode_compact_array<T: Decodable>(raw: &[u8], version: i16) -> Result<Vec<T>, String> {
    let mut buf = Bytes::copy_from_slice(raw);
    let mut n: u32 = 0;
    let mut shift = 0;
    loop {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err("varint cut short".into());
        };
        n |= u32::from(byte & 0x7f) << shift;
        buf = Bytes::copy_from_slice(rest);
        if byte & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    let count = n.checked_sub(1).ok_or("null array")?;
    let mut out = Vec::new();
    for _ in 0..count {
        out.push(T::decode(&mut buf, version).map_err(|e| e.to_string())?);
    }
    if !buf.is_empty() {
        return Err(format!("{} bytes left", buf.len()));
    }
    Ok(out)
}

/// The whole round trip for one message:
/// kafka-protocol bytes → our parse == `expected` → our bytes == theirs →
/// kafka-protocol decodes our bytes into the original.
fn cross_check<K, O>(
    version: i16,
    theirs: &K,
    expected: &O,
    parse: impl Fn(&Bytes, i16) -> Result<O, CodecError>,
    encode: impl Fn(&mut BytesMut, &O, i16),
) -> Result<O, TestCaseError>
where
    K: Encodable + Decodable + PartialEq + Debug,
    O: PartialEq + Debug,
{
    let wire = kp_encode(theirs, version);
    let parsed = parse(&wire, version).map_err(|e| {
        TestCaseError::fail(format!(
            "our codec refuses kafka-protocol's v{version} bytes: {e}"
        ))
    })?;
    prop_assert_eq!(&parsed, expected, "field by field, v{}", version);
    let mut ours = BytesMut::new();
    encode(&mut ours, expected, version);
    prop_assert_eq!(&ours[..], &wire[..], "byte for byte, v{}", version);
    let back: K = kp_decode(&ours, version)?;
    prop_assert_eq!(
        &back,
        theirs,
        "kafka-protocol reads ours back, v{}",
        version
    );
    Ok(parsed)
}

// ---------------------------------------------------------------------------
// Conversions
// ---------------------------------------------------------------------------

fn ks(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

fn st(s: &StrBytes) -> String {
    s.as_str().to_owned()
}

fn ost(s: &Option<StrBytes>) -> Option<String> {
    s.as_ref().map(st)
}

fn tagged(unknown: &BTreeMap<i32, Bytes>) -> TaggedFields {
    TaggedFields(
        unknown
            .iter()
            .map(|(k, v)| (u32::try_from(*k).unwrap(), v.clone()))
            .collect(),
    )
}

/// Known tagged fields come first (ascending, as on the wire), then the
/// unknown ones.
fn tagged_with(known: Vec<(u32, Bytes)>, unknown: &BTreeMap<i32, Bytes>) -> TaggedFields {
    let mut t = known;
    t.extend(tagged(unknown).0);
    TaggedFields(t)
}

// ---------------------------------------------------------------------------
// Strategies for kafka-protocol values
// ---------------------------------------------------------------------------

fn name() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._-]{0,16}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,10}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    prop::option::of(text())
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<[u8; 16]>().prop_map(Uuid::from_bytes)
}

/// Unknown tagged fields (only in flexible versions), with tags from
/// `first` on: `kafka-protocol` writes unknown tags only past its known ones.
fn unknown_tags(flexible: bool, first: i32) -> BoxedStrategy<BTreeMap<i32, Bytes>> {
    if !flexible {
        return Just(BTreeMap::new()).boxed();
    }
    prop::collection::btree_map(
        first..first + 40,
        prop::collection::vec(any::<u8>(), 0..8).prop_map(Bytes::from),
        0..3,
    )
    .boxed()
}

fn when<T: Debug + Clone + 'static>(
    present: bool,
    s: impl Strategy<Value = T> + 'static,
    default: T,
) -> BoxedStrategy<T> {
    if present {
        s.boxed()
    } else {
        Just(default).boxed()
    }
}

fn acks() -> impl Strategy<Value = i16> {
    prop_oneof![Just(-1i16), Just(0), Just(1), any::<i16>()]
}

fn bytes_up_to(n: usize) -> impl Strategy<Value = Option<Bytes>> {
    prop::option::weighted(
        0.8,
        prop::collection::vec(any::<u8>(), 0..n).prop_map(Bytes::from),
    )
}

/// Parameters of a real v2 RecordBatch built by the codec's own encoder.
#[derive(Debug, Clone)]
struct BatchSpec {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: i64,
    transactional: bool,
    records: Vec<(Option<Bytes>, Option<Bytes>)>,
}

impl BatchSpec {
    fn attributes(&self) -> i16 {
        if self.transactional { 0x10 } else { 0 }
    }

    fn encode(&self) -> Bytes {
        let records: Vec<SimpleRecord> = self
            .records
            .iter()
            .map(|(key, value)| SimpleRecord {
                key: key.clone(),
                value: value.clone(),
            })
            .collect();
        encode_record_batch(
            self.producer_id,
            self.producer_epoch,
            self.base_sequence,
            self.base_timestamp,
            self.attributes(),
            &records,
        )
    }
}

fn batch_spec() -> impl Strategy<Value = BatchSpec> {
    (
        prop_oneof![Just(-1i64), 0..i64::MAX],
        prop_oneof![Just(-1i16), 0..i16::MAX],
        prop_oneof![Just(-1i32), 0..i32::MAX],
        0..4_000_000_000_000i64,
        any::<bool>(),
        prop::collection::vec((bytes_up_to(8), bytes_up_to(24)), 1..5),
    )
        .prop_map(
            |(
                producer_id,
                producer_epoch,
                base_sequence,
                base_timestamp,
                transactional,
                records,
            )| {
                BatchSpec {
                    producer_id,
                    producer_epoch,
                    base_sequence,
                    base_timestamp,
                    transactional,
                    records,
                }
            },
        )
}

fn produce_request(v: i16) -> impl Strategy<Value = kp::ProduceRequest> {
    let flex = v >= 9;
    let partition = (
        any::<i32>(),
        prop::option::weighted(0.9, batch_spec().prop_map(|b| b.encode())),
        unknown_tags(flex, 0),
    )
        .prop_map(|(index, records, tags)| {
            let mut p = kp::produce_request::PartitionProduceData::default();
            p.index = index;
            p.records = records;
            p.unknown_tagged_fields = tags;
            p
        });
    let topic = (
        name(),
        uuid(),
        prop::collection::vec(partition, 0..3),
        unknown_tags(flex, 0),
    )
        .prop_map(move |(n, id, partitions, tags)| {
            let mut t = kp::produce_request::TopicProduceData::default();
            if v >= 13 {
                t.topic_id = id;
            } else {
                t.name = kp::TopicName(ks(&n));
            }
            t.partition_data = partitions;
            t.unknown_tagged_fields = tags;
            t
        });
    (
        opt_text(),
        acks(),
        any::<i32>(),
        prop::collection::vec(topic, 0..3),
        unknown_tags(flex, 0),
    )
        .prop_map(|(txn, acks, timeout_ms, topics, tags)| {
            let mut r = kp::ProduceRequest::default();
            r.transactional_id = txn.map(|t| kp::TransactionalId(ks(&t)));
            r.acks = acks;
            r.timeout_ms = timeout_ms;
            r.topic_data = topics;
            r.unknown_tagged_fields = tags;
            r
        })
}

fn produce_response(v: i16) -> impl Strategy<Value = kp::ProduceResponse> {
    let flex = v >= 9;
    let record_error = (any::<i32>(), opt_text(), unknown_tags(flex, 0)).prop_map(|(i, m, t)| {
        let mut e = kp::produce_response::BatchIndexAndErrorMessage::default();
        e.batch_index = i;
        e.batch_index_error_message = m.map(|m| ks(&m));
        e.unknown_tagged_fields = t;
        e
    });
    let leader = prop::option::of((any::<i32>(), any::<i32>(), unknown_tags(true, 0)));
    let partition = (
        (any::<i32>(), any::<i16>(), any::<i64>(), any::<i64>()),
        when(v >= 5, any::<i64>(), -1),
        when(
            v >= 8,
            prop::collection::vec(record_error, 0..3),
            Vec::new(),
        ),
        when(v >= 8, opt_text(), None),
        when(v >= 10, leader, None),
        unknown_tags(flex, 1),
    )
        .prop_map(
            |((index, error_code, base_offset, append_time), start, errors, msg, leader, tags)| {
                let mut p = kp::produce_response::PartitionProduceResponse::default();
                p.index = index;
                p.error_code = error_code;
                p.base_offset = base_offset;
                p.log_append_time_ms = append_time;
                p.log_start_offset = start;
                p.record_errors = errors;
                p.error_message = msg.map(|m| ks(&m));
                if let Some((id, epoch, t)) = leader {
                    p.current_leader.leader_id = kp::BrokerId(id);
                    p.current_leader.leader_epoch = epoch;
                    p.current_leader.unknown_tagged_fields = t;
                }
                p.unknown_tagged_fields = tags;
                p
            },
        );
    let topic = (
        name(),
        uuid(),
        prop::collection::vec(partition, 0..3),
        unknown_tags(flex, 0),
    )
        .prop_map(move |(n, id, partitions, tags)| {
            let mut t = kp::produce_response::TopicProduceResponse::default();
            if v >= 13 {
                t.topic_id = id;
            } else {
                t.name = kp::TopicName(ks(&n));
            }
            t.partition_responses = partitions;
            t.unknown_tagged_fields = tags;
            t
        });
    let endpoint = (
        any::<i32>(),
        text(),
        any::<i32>(),
        opt_text(),
        unknown_tags(true, 0),
    )
        .prop_map(|(id, host, port, rack, tags)| {
            let mut e = kp::produce_response::NodeEndpoint::default();
            e.node_id = kp::BrokerId(id);
            e.host = ks(&host);
            e.port = port;
            e.rack = rack.map(|r| ks(&r));
            e.unknown_tagged_fields = tags;
            e
        });
    (
        prop::collection::vec(topic, 0..3),
        any::<i32>(),
        when(v >= 10, prop::collection::vec(endpoint, 0..3), Vec::new()),
        unknown_tags(flex, 1),
    )
        .prop_map(|(responses, throttle, endpoints, tags)| {
            let mut r = kp::ProduceResponse::default();
            r.responses = responses;
            r.throttle_time_ms = throttle;
            r.node_endpoints = endpoints;
            r.unknown_tagged_fields = tags;
            r
        })
}

fn api_versions_request(v: i16) -> impl Strategy<Value = kp::ApiVersionsRequest> {
    let flex = v >= 3;
    (
        when(flex, text(), String::new()),
        when(flex, text(), String::new()),
        unknown_tags(flex, 0),
    )
        .prop_map(|(n, ver, tags)| {
            let mut r = kp::ApiVersionsRequest::default();
            r.client_software_name = ks(&n);
            r.client_software_version = ks(&ver);
            r.unknown_tagged_fields = tags;
            r
        })
}

fn api_versions_response(v: i16) -> impl Strategy<Value = kp::ApiVersionsResponse> {
    use kp::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
    let flex = v >= 3;
    let api = (
        any::<i16>(),
        any::<i16>(),
        any::<i16>(),
        unknown_tags(flex, 0),
    )
        .prop_map(|(k, min, max, tags)| {
            let mut a = ApiVersion::default();
            a.api_key = k;
            a.min_version = min;
            a.max_version = max;
            a.unknown_tagged_fields = tags;
            a
        });
    let supported = (name(), any::<i16>(), any::<i16>()).prop_map(|(n, min, max)| {
        let mut f = SupportedFeatureKey::default();
        f.name = ks(&n);
        f.min_version = min;
        f.max_version = max;
        f
    });
    let finalized = (name(), any::<i16>(), any::<i16>()).prop_map(|(n, max, min)| {
        let mut f = FinalizedFeatureKey::default();
        f.name = ks(&n);
        f.max_version_level = max;
        f.min_version_level = min;
        f
    });
    (
        (any::<i16>(), prop::collection::vec(api, 0..8)),
        when(v >= 1, any::<i32>(), 0),
        when(flex, prop::collection::vec(supported, 0..3), Vec::new()),
        when(flex, prop_oneof![Just(-1i64), any::<i64>()], -1),
        when(flex, prop::collection::vec(finalized, 0..3), Vec::new()),
        when(flex, any::<bool>(), false),
        unknown_tags(flex, 4),
    )
        .prop_map(
            |((error_code, apis), throttle, supported, epoch, finalized, zk, tags)| {
                let mut r = kp::ApiVersionsResponse::default();
                r.error_code = error_code;
                r.api_keys = apis;
                r.throttle_time_ms = throttle;
                r.supported_features = supported;
                r.finalized_features_epoch = epoch;
                r.finalized_features = finalized;
                r.zk_migration_ready = zk;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

fn metadata_request(v: i16) -> impl Strategy<Value = kp::MetadataRequest> {
    let flex = v >= 9;
    let topic = (
        when(v >= 10, uuid(), Uuid::nil()),
        when(v >= 10, prop::option::of(name()), Some(String::new())),
        name(),
        unknown_tags(flex, 0),
    )
        .prop_map(move |(id, nullable_name, n, tags)| {
            let mut t = kp::metadata_request::MetadataRequestTopic::default();
            t.topic_id = id;
            t.name = if v >= 10 { nullable_name } else { Some(n) }.map(|n| kp::TopicName(ks(&n)));
            t.unknown_tagged_fields = tags;
            t
        });
    let topics = prop::collection::vec(topic, 0..4);
    let topics = if v >= 1 {
        prop::option::of(topics).boxed()
    } else {
        topics.prop_map(Some).boxed()
    };
    (
        topics,
        when(v >= 4, any::<bool>(), true),
        when((8..=10).contains(&v), any::<bool>(), false),
        when(v >= 8, any::<bool>(), false),
        unknown_tags(flex, 0),
    )
        .prop_map(|(topics, auto, cluster_ops, topic_ops, tags)| {
            let mut r = kp::MetadataRequest::default();
            r.topics = topics;
            r.allow_auto_topic_creation = auto;
            r.include_cluster_authorized_operations = cluster_ops;
            r.include_topic_authorized_operations = topic_ops;
            r.unknown_tagged_fields = tags;
            r
        })
}

fn metadata_response(v: i16) -> impl Strategy<Value = kp::MetadataResponse> {
    use kp::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    let flex = v >= 9;
    let broker = (
        any::<i32>(),
        text(),
        any::<i32>(),
        when(v >= 1, opt_text(), None),
        unknown_tags(flex, 0),
    )
        .prop_map(|(id, host, port, rack, tags)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = kp::BrokerId(id);
            b.host = ks(&host);
            b.port = port;
            b.rack = rack.map(|r| ks(&r));
            b.unknown_tagged_fields = tags;
            b
        });
    let ids = || prop::collection::vec(any::<i32>(), 0..4);
    let partition = (
        (any::<i16>(), any::<i32>(), any::<i32>()),
        when(v >= 7, any::<i32>(), -1),
        ids(),
        ids(),
        when(v >= 5, ids(), Vec::new()),
        unknown_tags(flex, 0),
    )
        .prop_map(
            |((error_code, index, leader), epoch, replicas, isr, offline, tags)| {
                let mut p = MetadataResponsePartition::default();
                p.error_code = error_code;
                p.partition_index = index;
                p.leader_id = kp::BrokerId(leader);
                p.leader_epoch = epoch;
                p.replica_nodes = replicas.into_iter().map(kp::BrokerId).collect();
                p.isr_nodes = isr.into_iter().map(kp::BrokerId).collect();
                p.offline_replicas = offline.into_iter().map(kp::BrokerId).collect();
                p.unknown_tagged_fields = tags;
                p
            },
        );
    let topic = (
        any::<i16>(),
        when(v >= 12, prop::option::of(name()), Some(String::new())),
        name(),
        when(v >= 10, uuid(), Uuid::nil()),
        when(v >= 1, any::<bool>(), false),
        prop::collection::vec(partition, 0..3),
        when(v >= 8, any::<i32>(), i32::MIN),
        unknown_tags(flex, 0),
    )
        .prop_map(
            move |(error_code, nullable_name, n, id, internal, partitions, ops, tags)| {
                let mut t = MetadataResponseTopic::default();
                t.error_code = error_code;
                t.name =
                    if v >= 12 { nullable_name } else { Some(n) }.map(|n| kp::TopicName(ks(&n)));
                t.topic_id = id;
                t.is_internal = internal;
                t.partitions = partitions;
                t.topic_authorized_operations = ops;
                t.unknown_tagged_fields = tags;
                t
            },
        );
    (
        when(v >= 3, any::<i32>(), 0),
        prop::collection::vec(broker, 0..4),
        when(v >= 2, opt_text(), None),
        when(v >= 1, any::<i32>(), -1),
        prop::collection::vec(topic, 0..3),
        when((8..=10).contains(&v), any::<i32>(), i32::MIN),
        when(v >= 13, any::<i16>(), 0),
        unknown_tags(flex, 0),
    )
        .prop_map(
            |(throttle, brokers, cluster_id, controller, topics, cluster_ops, error_code, tags)| {
                let mut r = kp::MetadataResponse::default();
                r.throttle_time_ms = throttle;
                r.brokers = brokers;
                r.cluster_id = cluster_id.map(|c| ks(&c));
                r.controller_id = kp::BrokerId(controller);
                r.topics = topics;
                r.cluster_authorized_operations = cluster_ops;
                r.error_code = error_code;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

fn find_coordinator_request(v: i16) -> impl Strategy<Value = kp::FindCoordinatorRequest> {
    let flex = v >= 3;
    (
        when(v < 4, text(), String::new()),
        when(v >= 1, any::<i8>(), 0),
        when(v >= 4, prop::collection::vec(text(), 0..4), Vec::new()),
        unknown_tags(flex, 0),
    )
        .prop_map(|(key, key_type, keys, tags)| {
            let mut r = kp::FindCoordinatorRequest::default();
            r.key = ks(&key);
            r.key_type = key_type;
            r.coordinator_keys = keys.iter().map(|k| ks(k)).collect();
            r.unknown_tagged_fields = tags;
            r
        })
}

fn find_coordinator_response(v: i16) -> impl Strategy<Value = kp::FindCoordinatorResponse> {
    let flex = v >= 3;
    let single = v < 4;
    let coordinator = (
        (text(), any::<i32>(), text(), any::<i32>()),
        any::<i16>(),
        opt_text(),
        unknown_tags(flex, 0),
    )
        .prop_map(|((key, id, host, port), error_code, msg, tags)| {
            let mut c = kp::find_coordinator_response::Coordinator::default();
            c.key = ks(&key);
            c.node_id = kp::BrokerId(id);
            c.host = ks(&host);
            c.port = port;
            c.error_code = error_code;
            c.error_message = msg.map(|m| ks(&m));
            c.unknown_tagged_fields = tags;
            c
        });
    let defaults = kp::FindCoordinatorResponse::default();
    (
        when(v >= 1, any::<i32>(), 0),
        when(single, any::<i16>(), 0),
        when(
            (1..=3).contains(&v),
            opt_text(),
            defaults.error_message.as_ref().map(st),
        ),
        when(single, any::<i32>(), 0),
        when(single, text(), String::new()),
        when(single, any::<i32>(), 0),
        when(
            !single,
            prop::collection::vec(coordinator, 0..3),
            Vec::new(),
        ),
        unknown_tags(flex, 0),
    )
        .prop_map(
            |(throttle, error_code, msg, node_id, host, port, coordinators, tags)| {
                let mut r = kp::FindCoordinatorResponse::default();
                r.throttle_time_ms = throttle;
                r.error_code = error_code;
                r.error_message = msg.map(|m| ks(&m));
                r.node_id = kp::BrokerId(node_id);
                r.host = ks(&host);
                r.port = port;
                r.coordinators = coordinators;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

fn describe_cluster_request(v: i16) -> impl Strategy<Value = kp::DescribeClusterRequest> {
    (
        any::<bool>(),
        when(v >= 1, any::<i8>(), 1),
        when(v >= 2, any::<bool>(), false),
        unknown_tags(true, 0),
    )
        .prop_map(|(ops, endpoint_type, fenced, tags)| {
            let mut r = kp::DescribeClusterRequest::default();
            r.include_cluster_authorized_operations = ops;
            r.endpoint_type = endpoint_type;
            r.include_fenced_brokers = fenced;
            r.unknown_tagged_fields = tags;
            r
        })
}

fn describe_cluster_response(v: i16) -> impl Strategy<Value = kp::DescribeClusterResponse> {
    let broker = (
        any::<i32>(),
        text(),
        any::<i32>(),
        opt_text(),
        when(v >= 2, any::<bool>(), false),
        unknown_tags(true, 0),
    )
        .prop_map(|(id, host, port, rack, fenced, tags)| {
            let mut b = kp::describe_cluster_response::DescribeClusterBroker::default();
            b.broker_id = kp::BrokerId(id);
            b.host = ks(&host);
            b.port = port;
            b.rack = rack.map(|r| ks(&r));
            b.is_fenced = fenced;
            b.unknown_tagged_fields = tags;
            b
        });
    (
        (any::<i32>(), any::<i16>(), opt_text()),
        when(v >= 1, any::<i8>(), 1),
        (text(), any::<i32>()),
        prop::collection::vec(broker, 0..4),
        any::<i32>(),
        unknown_tags(true, 0),
    )
        .prop_map(
            |(
                (throttle, error_code, msg),
                endpoint_type,
                (cluster_id, controller),
                brokers,
                ops,
                tags,
            )| {
                let mut r = kp::DescribeClusterResponse::default();
                r.throttle_time_ms = throttle;
                r.error_code = error_code;
                r.error_message = msg.map(|m| ks(&m));
                r.endpoint_type = endpoint_type;
                r.cluster_id = ks(&cluster_id);
                r.controller_id = kp::BrokerId(controller);
                r.brokers = brokers;
                r.cluster_authorized_operations = ops;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

// ---------------------------------------------------------------------------
// What our codec must make of each kafka-protocol value
// ---------------------------------------------------------------------------

fn topic_ref(name: &kp::TopicName, id: &Uuid, v: i16) -> pr::TopicRef {
    if v >= 13 {
        pr::TopicRef::Id(*id.as_bytes())
    } else {
        pr::TopicRef::Name(st(&name.0))
    }
}

fn expect_produce_request(m: &kp::ProduceRequest, v: i16) -> pr::ProduceRequest {
    pr::ProduceRequest {
        transactional_id: m.transactional_id.as_ref().map(|t| st(&t.0)),
        acks: m.acks,
        timeout_ms: m.timeout_ms,
        topics: m
            .topic_data
            .iter()
            .map(|t| pr::TopicProduceData {
                topic: topic_ref(&t.name, &t.topic_id, v),
                partitions: t
                    .partition_data
                    .iter()
                    .map(|p| pr::PartitionProduceData {
                        index: p.index,
                        records: p.records.clone(),
                        tagged_fields: tagged(&p.unknown_tagged_fields),
                    })
                    .collect(),
                tagged_fields: tagged(&t.unknown_tagged_fields),
            })
            .collect(),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_node_endpoints(m: &kp::ProduceResponse) -> Vec<pr::NodeEndpoint> {
    m.node_endpoints
        .iter()
        .map(|e| pr::NodeEndpoint {
            node_id: e.node_id.0,
            host: st(&e.host),
            port: e.port,
            rack: ost(&e.rack),
            tagged_fields: tagged(&e.unknown_tagged_fields),
        })
        .collect()
}

fn expect_produce_response(m: &kp::ProduceResponse, v: i16) -> pr::ProduceResponse {
    let flex = v >= 9;
    let partition = |p: &kp::produce_response::PartitionProduceResponse| {
        let mut known = Vec::new();
        if v >= 10 && p.current_leader != Default::default() {
            known.push((0, kp_encode(&p.current_leader, v)));
        }
        pr::PartitionProduceResponse {
            index: p.index,
            error_code: p.error_code,
            base_offset: p.base_offset,
            log_append_time_ms: p.log_append_time_ms,
            log_start_offset: if v >= 5 { p.log_start_offset } else { -1 },
            record_errors: p
                .record_errors
                .iter()
                .map(|e| pr::BatchIndexAndErrorMessage {
                    batch_index: e.batch_index,
                    batch_index_error_message: ost(&e.batch_index_error_message),
                    tagged_fields: tagged(&e.unknown_tagged_fields),
                })
                .collect(),
            error_message: ost(&p.error_message),
            tagged_fields: if flex {
                tagged_with(known, &p.unknown_tagged_fields)
            } else {
                TaggedFields::default()
            },
        }
    };
    let mut known = Vec::new();
    if v >= 10 && !m.node_endpoints.is_empty() {
        known.push((
            pr::NODE_ENDPOINTS_TAG,
            kp_compact_array(&m.node_endpoints, v),
        ));
    }
    pr::ProduceResponse {
        responses: m
            .responses
            .iter()
            .map(|t| pr::TopicProduceResponse {
                topic: topic_ref(&t.name, &t.topic_id, v),
                partitions: t.partition_responses.iter().map(partition).collect(),
                tagged_fields: tagged(&t.unknown_tagged_fields),
            })
            .collect(),
        throttle_time_ms: m.throttle_time_ms,
        tagged_fields: tagged_with(known, &m.unknown_tagged_fields),
    }
}

fn expect_api_versions_request(m: &kp::ApiVersionsRequest) -> av::ApiVersionsRequest {
    av::ApiVersionsRequest {
        client_software_name: st(&m.client_software_name),
        client_software_version: st(&m.client_software_version),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_api_versions_response(m: &kp::ApiVersionsResponse, v: i16) -> av::ApiVersionsResponse {
    let mut known = Vec::new();
    if v >= 3 {
        if !m.supported_features.is_empty() {
            known.push((0, kp_compact_array(&m.supported_features, v)));
        }
        if m.finalized_features_epoch != -1 {
            known.push((
                1,
                Bytes::copy_from_slice(&m.finalized_features_epoch.to_be_bytes()),
            ));
        }
        if !m.finalized_features.is_empty() {
            known.push((2, kp_compact_array(&m.finalized_features, v)));
        }
        if m.zk_migration_ready {
            known.push((3, Bytes::from_static(&[1])));
        }
    }
    av::ApiVersionsResponse {
        error_code: m.error_code,
        api_keys: m
            .api_keys
            .iter()
            .map(|a| av::ApiVersion {
                api_key: a.api_key,
                min_version: a.min_version,
                max_version: a.max_version,
                tagged_fields: tagged(&a.unknown_tagged_fields),
            })
            .collect(),
        throttle_time_ms: m.throttle_time_ms,
        tagged_fields: tagged_with(known, &m.unknown_tagged_fields),
    }
}

fn expect_metadata_request(m: &kp::MetadataRequest) -> md::MetadataRequest {
    md::MetadataRequest {
        topics: m.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| md::MetadataRequestTopic {
                    topic_id: *t.topic_id.as_bytes(),
                    name: t.name.as_ref().map(|n| st(&n.0)),
                    tagged_fields: tagged(&t.unknown_tagged_fields),
                })
                .collect()
        }),
        allow_auto_topic_creation: m.allow_auto_topic_creation,
        include_cluster_authorized_operations: m.include_cluster_authorized_operations,
        include_topic_authorized_operations: m.include_topic_authorized_operations,
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_metadata_response(m: &kp::MetadataResponse, v: i16) -> md::MetadataResponse {
    md::MetadataResponse {
        throttle_time_ms: m.throttle_time_ms,
        brokers: m
            .brokers
            .iter()
            .map(|b| md::MetadataBroker {
                node_id: b.node_id.0,
                host: st(&b.host),
                port: b.port,
                rack: ost(&b.rack),
                tagged_fields: tagged(&b.unknown_tagged_fields),
            })
            .collect(),
        cluster_id: ost(&m.cluster_id),
        controller_id: m.controller_id.0,
        topics: m
            .topics
            .iter()
            .map(|t| md::MetadataTopic {
                error_code: t.error_code,
                // Below v12 the name is never null; kafka-protocol's default
                // topic name is "" (which we write as such).
                name: t.name.as_ref().map(|n| st(&n.0)),
                topic_id: *t.topic_id.as_bytes(),
                is_internal: t.is_internal,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| md::MetadataPartition {
                        error_code: p.error_code,
                        partition_index: p.partition_index,
                        leader_id: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replica_nodes: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr_nodes: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                        tagged_fields: tagged(&p.unknown_tagged_fields),
                    })
                    .collect(),
                topic_authorized_operations: t.topic_authorized_operations,
                tagged_fields: tagged(&t.unknown_tagged_fields),
            })
            .collect(),
        cluster_authorized_operations: m.cluster_authorized_operations,
        error_code: if v >= 13 { m.error_code } else { 0 },
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_find_coordinator_request(m: &kp::FindCoordinatorRequest) -> fc::FindCoordinatorRequest {
    fc::FindCoordinatorRequest {
        key: st(&m.key),
        key_type: m.key_type,
        coordinator_keys: m.coordinator_keys.iter().map(st).collect(),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_find_coordinator_response(
    m: &kp::FindCoordinatorResponse,
    v: i16,
) -> fc::FindCoordinatorResponse {
    let single = v < 4;
    fc::FindCoordinatorResponse {
        throttle_time_ms: m.throttle_time_ms,
        // Our codec's "absent" values for the v0-3 single answer at v4+.
        error_code: if single { m.error_code } else { 0 },
        error_message: if (1..=3).contains(&v) {
            ost(&m.error_message)
        } else {
            None
        },
        node_id: if single { m.node_id.0 } else { -1 },
        host: if single { st(&m.host) } else { String::new() },
        port: if single { m.port } else { -1 },
        coordinators: m
            .coordinators
            .iter()
            .map(|c| fc::Coordinator {
                key: st(&c.key),
                node_id: c.node_id.0,
                host: st(&c.host),
                port: c.port,
                error_code: c.error_code,
                error_message: ost(&c.error_message),
                tagged_fields: tagged(&c.unknown_tagged_fields),
            })
            .collect(),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_describe_cluster_request(m: &kp::DescribeClusterRequest) -> dc::DescribeClusterRequest {
    dc::DescribeClusterRequest {
        include_cluster_authorized_operations: m.include_cluster_authorized_operations,
        endpoint_type: m.endpoint_type,
        include_fenced_brokers: m.include_fenced_brokers,
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_describe_cluster_response(
    m: &kp::DescribeClusterResponse,
) -> dc::DescribeClusterResponse {
    dc::DescribeClusterResponse {
        throttle_time_ms: m.throttle_time_ms,
        error_code: m.error_code,
        error_message: ost(&m.error_message),
        endpoint_type: m.endpoint_type,
        cluster_id: st(&m.cluster_id),
        controller_id: m.controller_id.0,
        brokers: m
            .brokers
            .iter()
            .map(|b| dc::DescribeClusterBroker {
                broker_id: b.broker_id.0,
                host: st(&b.host),
                port: b.port,
                rack: ost(&b.rack),
                is_fenced: b.is_fenced,
                tagged_fields: tagged(&b.unknown_tagged_fields),
            })
            .collect(),
        cluster_authorized_operations: m.cluster_authorized_operations,
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

// Our parsers and encoders under one signature.

fn parse_produce_request(b: &Bytes, v: i16) -> Result<pr::ProduceRequest, CodecError> {
    pr::parse_produce_request(b, v)
}
fn parse_produce_response(b: &Bytes, v: i16) -> Result<pr::ProduceResponse, CodecError> {
    pr::parse_produce_response(b, v)
}
fn parse_api_versions_request(b: &Bytes, v: i16) -> Result<av::ApiVersionsRequest, CodecError> {
    av::parse_api_versions_request(b, v)
}
fn parse_api_versions_response(b: &Bytes, v: i16) -> Result<av::ApiVersionsResponse, CodecError> {
    av::parse_api_versions_response(b, v)
}
fn parse_metadata_request(b: &Bytes, v: i16) -> Result<md::MetadataRequest, CodecError> {
    md::parse_metadata_request(b, v)
}
fn parse_metadata_response(b: &Bytes, v: i16) -> Result<md::MetadataResponse, CodecError> {
    md::parse_metadata_response(b, v)
}
fn parse_find_coordinator_request(
    b: &Bytes,
    v: i16,
) -> Result<fc::FindCoordinatorRequest, CodecError> {
    fc::parse_find_coordinator_request(b, v)
}
fn parse_find_coordinator_response(
    b: &Bytes,
    v: i16,
) -> Result<fc::FindCoordinatorResponse, CodecError> {
    fc::parse_find_coordinator_response(b, v)
}
fn parse_describe_cluster_request(
    b: &Bytes,
    v: i16,
) -> Result<dc::DescribeClusterRequest, CodecError> {
    dc::parse_describe_cluster_request(b, v)
}
fn parse_describe_cluster_response(
    b: &Bytes,
    v: i16,
) -> Result<dc::DescribeClusterResponse, CodecError> {
    dc::parse_describe_cluster_response(b, v)
}

// ---------------------------------------------------------------------------
// Round trips against kafka-protocol, message by message
// ---------------------------------------------------------------------------

#[test]
fn produce_requests_v3_to_v13_match_kafka_protocol_field_by_field_and_byte_for_byte() {
    for_each_version(3..=13, CASES, produce_request, |v, m| {
        let parsed = cross_check(
            v,
            &m,
            &expect_produce_request(&m, v),
            parse_produce_request,
            pr::encode_produce_request,
        )?;
        // Each partition's records are one real batch, as the proxy reads it.
        for (t, theirs) in parsed.topics.iter().zip(&m.topic_data) {
            for (p, their_p) in t.partitions.iter().zip(&theirs.partition_data) {
                let Some(records) = &p.records else { continue };
                let h = rb::parse_single_batch(records)
                    .map_err(|e| TestCaseError::fail(format!("batch refused: {e}")))?;
                let mut buf = their_p.records.clone().unwrap();
                let info = RecordBatchDecoder::decode_batch_info(&mut buf)
                    .map_err(|e| TestCaseError::fail(format!("kafka-protocol: {e}")))?;
                prop_assert_eq!(info.len(), 1);
                let info = &info[0];
                prop_assert_eq!(h.producer_id, info.producer_id);
                prop_assert_eq!(h.producer_epoch, info.producer_epoch);
                prop_assert_eq!(h.base_sequence, info.base_sequence);
                prop_assert_eq!(h.records_count, info.record_count);
                prop_assert_eq!(h.is_transactional(), info.transactional);
                prop_assert_eq!(h.partition_leader_epoch, info.partition_leader_epoch);
            }
        }
        Ok(())
    });
}

#[test]
fn produce_responses_v3_to_v13_match_kafka_protocol_including_current_leader_and_node_endpoints() {
    for_each_version(3..=13, CASES, produce_response, |v, m| {
        let parsed = cross_check(
            v,
            &m,
            &expect_produce_response(&m, v),
            parse_produce_response,
            pr::encode_produce_response,
        )?;
        // NodeEndpoints (tag 0, v10+) decodes field by field and re-encodes
        // to the very bytes kafka-protocol wrote.
        match parsed.tagged_fields.get(pr::NODE_ENDPOINTS_TAG) {
            Some(raw) => {
                prop_assert!(v >= 10);
                let endpoints = pr::parse_node_endpoints(raw)
                    .map_err(|e| TestCaseError::fail(format!("NodeEndpoints: {e}")))?;
                prop_assert_eq!(&endpoints, &expect_node_endpoints(&m));
                prop_assert_eq!(&pr::encode_node_endpoints(&endpoints)[..], &raw[..]);
            }
            None => prop_assert!(m.node_endpoints.is_empty()),
        }
        Ok(())
    });
}

#[test]
fn api_versions_requests_v0_to_v4_match_kafka_protocol() {
    for_each_version(0..=4, CASES, api_versions_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_api_versions_request(&m),
            parse_api_versions_request,
            av::encode_api_versions_request,
        )
        .map(drop)
    });
}

#[test]
fn api_versions_responses_v0_to_v4_keep_supported_and_finalized_features_byte_for_byte() {
    for_each_version(0..=4, CASES, api_versions_response, |v, m| {
        let parsed = cross_check(
            v,
            &m,
            &expect_api_versions_response(&m, v),
            parse_api_versions_response,
            av::encode_api_versions_response,
        )?;
        if v >= 3 && !m.finalized_features.is_empty() {
            let raw = parsed.tagged_fields.get(2).expect("FinalizedFeatures kept");
            let decoded: Vec<kp::api_versions_response::FinalizedFeatureKey> =
                kp_decode_compact_array(raw, v)
                    .map_err(|e| TestCaseError::fail(format!("FinalizedFeatures: {e}")))?;
            prop_assert_eq!(decoded, m.finalized_features.clone());
        }
        Ok(())
    });
}

#[test]
fn metadata_requests_v0_to_v13_match_kafka_protocol() {
    for_each_version(0..=13, CASES, metadata_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_metadata_request(&m),
            parse_metadata_request,
            md::encode_metadata_request,
        )
        .map(drop)
    });
}

#[test]
fn metadata_responses_v0_to_v13_match_kafka_protocol() {
    for_each_version(0..=13, CASES, metadata_response, |v, m| {
        cross_check(
            v,
            &m,
            &expect_metadata_response(&m, v),
            parse_metadata_response,
            md::encode_metadata_response,
        )
        .map(drop)
    });
}

#[test]
fn find_coordinator_requests_v0_to_v6_match_kafka_protocol() {
    for_each_version(0..=6, CASES, find_coordinator_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_find_coordinator_request(&m),
            parse_find_coordinator_request,
            fc::encode_find_coordinator_request,
        )
        .map(drop)
    });
}

#[test]
fn find_coordinator_responses_v0_to_v6_match_kafka_protocol() {
    for_each_version(0..=6, CASES, find_coordinator_response, |v, m| {
        cross_check(
            v,
            &m,
            &expect_find_coordinator_response(&m, v),
            parse_find_coordinator_response,
            fc::encode_find_coordinator_response,
        )
        .map(drop)
    });
}

#[test]
fn describe_cluster_requests_v0_to_v2_match_kafka_protocol() {
    for_each_version(0..=2, CASES, describe_cluster_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_describe_cluster_request(&m),
            parse_describe_cluster_request,
            dc::encode_describe_cluster_request,
        )
        .map(drop)
    });
}

#[test]
fn describe_cluster_responses_v0_to_v2_match_kafka_protocol() {
    for_each_version(0..=2, CASES, describe_cluster_response, |v, m| {
        cross_check(
            v,
            &m,
            &expect_describe_cluster_response(&m),
            parse_describe_cluster_response,
            dc::encode_describe_cluster_response,
        )
        .map(drop)
    });
}

// ---------------------------------------------------------------------------
// Headers
// ---------------------------------------------------------------------------

/// Every API whose header layout the codec knows.
fn known_header_apis() -> Vec<i16> {
    let known: Vec<i16> = (0..=i16::MAX)
        .filter(|k| kp::ApiKey::try_from(*k).is_ok())
        .filter(|k| header::request_header_version(*k, 0).is_some())
        .collect();
    for key in [
        api::PRODUCE,
        api::METADATA,
        api::FIND_COORDINATOR,
        api::API_VERSIONS,
        api::DESCRIBE_CLUSTER,
    ] {
        assert!(known.contains(&key), "api {key}");
    }
    known
}

fn kp_api(key: i16) -> kp::ApiKey {
    kp::ApiKey::try_from(key).expect("kafka-protocol knows the api key")
}

#[test]
fn header_versions_agree_with_kafka_protocol_for_every_known_api_and_version() {
    for key in known_header_apis() {
        let theirs = kp_api(key);
        let range = theirs.valid_versions();
        for v in range.min..=range.max {
            assert_eq!(
                header::request_header_version(key, v),
                Some(theirs.request_header_version(v)),
                "request header of api {key} v{v}"
            );
            assert_eq!(
                header::response_header_version(key, v),
                theirs.response_header_version(v),
                "response header of api {key} v{v}"
            );
        }
    }
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn api_names_are_the_snake_case_names_kafka_protocol_knows() {
    for key in 0..=i16::MAX {
        let Ok(theirs) = kp::ApiKey::try_from(key) else {
            continue;
        };
        let expected = camel_to_snake(&format!("{theirs:?}")).replace("k_raft", "kraft");
        assert_eq!(api::api_name(key), expected, "api key {key}");
    }
}

fn request_header_case() -> impl Strategy<Value = (i16, kp::RequestHeader)> {
    prop::sample::select(known_header_apis())
        .prop_flat_map(|key| {
            let range = kp_api(key).valid_versions();
            (Just(key), range.min..=range.max)
        })
        .prop_flat_map(|(key, v)| {
            let hv = kp_api(key).request_header_version(v);
            (
                Just(hv),
                Just(key),
                Just(v),
                any::<i32>(),
                opt_text(),
                unknown_tags(hv >= 2, 0),
            )
        })
        .prop_map(|(hv, key, v, corr, client_id, tags)| {
            let mut h = kp::RequestHeader::default();
            h.request_api_key = key;
            h.request_api_version = v;
            h.correlation_id = corr;
            h.client_id = client_id.map(|c| ks(&c));
            h.unknown_tagged_fields = tags;
            (hv, h)
        })
}

#[test]
fn request_headers_match_kafka_protocol_and_parse_by_their_own_api_version() {
    runner(CASES * 8)
        .run(&request_header_case(), |(hv, h)| {
            let wire = kp_encode(&h, hv);
            let expected = header::RequestHeader {
                api_key: h.request_api_key,
                api_version: h.request_api_version,
                correlation_id: h.correlation_id,
                client_id: ost(&h.client_id),
                tagged_fields: tagged(&h.unknown_tagged_fields),
            };
            let (parsed, rest) = header::parse_request_header_auto(&wire)
                .map_err(|e| TestCaseError::fail(format!("header refused: {e}")))?;
            prop_assert!(rest.is_empty());
            prop_assert_eq!(&parsed, &expected);
            let mut ours = BytesMut::new();
            header::put_request_header(&mut ours, &expected, hv);
            prop_assert_eq!(&ours[..], &wire[..]);
            let back: kp::RequestHeader = kp_decode(&ours, hv)?;
            prop_assert_eq!(back, h);
            Ok(())
        })
        .unwrap();
}

#[test]
fn response_headers_v0_and_v1_match_kafka_protocol() {
    let case = (0i16..=1).prop_flat_map(|hv| (Just(hv), any::<i32>(), unknown_tags(hv >= 1, 0)));
    runner(CASES * 4)
        .run(&case, |(hv, corr, tags)| {
            let mut h = kp::ResponseHeader::default();
            h.correlation_id = corr;
            h.unknown_tagged_fields = tags;
            let expected = header::ResponseHeader {
                correlation_id: corr,
                tagged_fields: tagged(&h.unknown_tagged_fields),
            };
            cross_check(
                hv,
                &h,
                &expected,
                |b, hv| primitives_parse_all(b, |i| header::parse_response_header(i, hv)),
                header::put_response_header,
            )
            .map(drop)
        })
        .unwrap();
}

#[test]
fn request_header_v0_without_client_id_round_trips() {
    let case = (any::<i16>(), any::<i16>(), any::<i32>());
    runner(CASES)
        .run(&case, |(key, v, corr)| {
            let h = header::RequestHeader {
                api_key: key,
                api_version: v,
                correlation_id: corr,
                client_id: None,
                tagged_fields: TaggedFields::default(),
            };
            let mut b = BytesMut::new();
            header::put_request_header(&mut b, &h, 0);
            prop_assert_eq!(b.len(), 8);
            let parsed = primitives_parse_all(&b, |i| header::parse_request_header(i, 0))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed, h);
            Ok(())
        })
        .unwrap();
}

fn primitives_parse_all<'a, T>(
    b: &'a [u8],
    f: impl FnOnce(&'a [u8]) -> kafka_dedup_proxy::codec::primitives::PResult<'a, T>,
) -> Result<T, CodecError> {
    kafka_dedup_proxy::codec::primitives::parse_all(
        b,
        kafka_dedup_proxy::codec::primitives::DecodeBudget::REQUEST,
        f,
    )
}

// ---------------------------------------------------------------------------
// RecordBatch header and CRC
// ---------------------------------------------------------------------------

fn header_and_body() -> impl Strategy<Value = (RecordBatchHeader, Vec<u8>)> {
    (
        (any::<i64>(), any::<i32>(), any::<i16>(), 0..i32::MAX),
        (any::<i64>(), any::<i64>(), any::<i64>(), any::<i16>()),
        (any::<i32>(), 0..i32::MAX),
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(
            |(
                (base_offset, leader_epoch, attributes, last_offset_delta),
                (base_ts, max_ts, producer_id, producer_epoch),
                (base_sequence, records_count),
                body,
            )| {
                let h = RecordBatchHeader {
                    base_offset,
                    batch_length: (rb::RECORD_BATCH_OVERHEAD - rb::LOG_OVERHEAD + body.len())
                        as i32,
                    partition_leader_epoch: leader_epoch,
                    magic: rb::MAGIC_V2,
                    crc: 0,
                    attributes,
                    last_offset_delta,
                    base_timestamp: base_ts,
                    max_timestamp: max_ts,
                    producer_id,
                    producer_epoch,
                    base_sequence,
                    records_count,
                };
                (h, body)
            },
        )
}

/// Writes a batch header field by field (`DefaultRecordBatch` layout) and
/// fills in the CRC-32C of bytes 21.. computed by the `crc32c` crate.
fn encode_header(h: &RecordBatchHeader, body: &[u8]) -> (Vec<u8>, u32) {
    let mut b = BytesMut::new();
    b.put_i64(h.base_offset);
    b.put_i32(h.batch_length);
    b.put_i32(h.partition_leader_epoch);
    b.put_i8(h.magic);
    b.put_u32(0);
    b.put_i16(h.attributes);
    b.put_i32(h.last_offset_delta);
    b.put_i64(h.base_timestamp);
    b.put_i64(h.max_timestamp);
    b.put_i64(h.producer_id);
    b.put_i16(h.producer_epoch);
    b.put_i32(h.base_sequence);
    b.put_i32(h.records_count);
    assert_eq!(b.len(), rb::RECORD_BATCH_OVERHEAD);
    b.put_slice(body);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    (b.to_vec(), crc)
}

#[test]
fn record_batch_header_decodes_what_was_encoded_and_checks_the_crc_over_bytes_21_on() {
    runner(CASES * 4)
        .run(&header_and_body(), |(mut h, body)| {
            let (wire, crc) = encode_header(&h, &body);
            h.crc = crc;
            let (rest, parsed) = rb::parse_record_batch_header(&wire)
                .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
            prop_assert_eq!(parsed, h);
            prop_assert_eq!(rest, &body[..]);
            prop_assert_eq!(rb::parse_single_batch(&wire), Ok(h));
            prop_assert_eq!(h.total_size(), wire.len());
            // Any change to a CRC-covered byte or to the CRC is caught.
            for pos in 17..wire.len() {
                let mut bad = wire.clone();
                bad[pos] ^= 0x5a;
                prop_assert!(rb::parse_single_batch(&bad).is_err(), "flip at {}", pos);
                if pos < 21 {
                    let r = rb::parse_single_batch(&bad);
                    let crc_mismatch = matches!(r, Err(CodecError::CrcMismatch { .. }));
                    prop_assert!(crc_mismatch, "flip in the CRC at {}: {:?}", pos, r);
                }
            }
            Ok(())
        })
        .unwrap();
}

#[test]
fn encoded_record_batches_carry_their_fields_a_crc32c_and_records_kafka_protocol_reads() {
    runner(CASES * 4)
        .run(&batch_spec(), |spec| {
            let batch = spec.encode();
            let h =
                rb::parse_single_batch(&batch).map_err(|e| TestCaseError::fail(format!("{e}")))?;
            prop_assert_eq!(h.crc, crc32c::crc32c(&batch[21..]));
            prop_assert_eq!(
                &batch[17..21],
                &crc32c::crc32c(&batch[21..]).to_be_bytes()[..]
            );
            prop_assert_eq!(h.producer_id, spec.producer_id);
            prop_assert_eq!(h.producer_epoch, spec.producer_epoch);
            prop_assert_eq!(h.base_sequence, spec.base_sequence);
            prop_assert_eq!(h.records_count as usize, spec.records.len());
            prop_assert_eq!(h.last_offset_delta as usize, spec.records.len() - 1);
            prop_assert_eq!(h.is_transactional(), spec.transactional);
            prop_assert_eq!(h.base_timestamp, spec.base_timestamp);
            let mut buf = batch.clone();
            let set = RecordBatchDecoder::decode(&mut buf)
                .map_err(|e| TestCaseError::fail(format!("kafka-protocol: {e}")))?;
            prop_assert_eq!(set.records.len(), spec.records.len());
            for (n, (r, (key, value))) in set.records.iter().zip(&spec.records).enumerate() {
                prop_assert_eq!(&r.key, key);
                prop_assert_eq!(&r.value, value);
                prop_assert_eq!(r.offset, n as i64);
                prop_assert_eq!(r.producer_id, spec.producer_id);
                prop_assert_eq!(r.producer_epoch, spec.producer_epoch);
                prop_assert_eq!(r.transactional, spec.transactional);
                prop_assert_eq!(r.timestamp, spec.base_timestamp);
                // kafka-protocol numbers records even without a base
                // sequence; the broker only reads sequences of idempotent
                // batches.
                if spec.base_sequence >= 0 {
                    let expected = rb::increment_sequence(spec.base_sequence, n as i32);
                    prop_assert_eq!(r.sequence, expected);
                }
            }
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------
// Truncation and garbage
// ---------------------------------------------------------------------------

/// Every strict prefix of `wire` must be refused by `parse`, without a panic.
fn every_prefix_is_refused<T: Debug>(
    what: &str,
    v: i16,
    wire: &Bytes,
    parse: impl Fn(&Bytes, i16) -> Result<T, CodecError>,
) -> Result<(), TestCaseError> {
    prop_assert!(parse(wire, v).is_ok(), "{} v{} whole message", what, v);
    for n in 0..wire.len() {
        let r = parse(&wire.slice(..n), v);
        prop_assert!(
            r.is_err(),
            "{} v{} cut at {} of {}: {:?}",
            what,
            v,
            n,
            wire.len(),
            r
        );
    }
    Ok(())
}

fn truncations<S: Strategy, T: Debug>(
    what: &str,
    versions: RangeInclusive<i16>,
    strategy: impl Fn(i16) -> S,
    parse: impl Fn(&Bytes, i16) -> Result<T, CodecError>,
) where
    S::Value: Encodable,
{
    for_each_version(versions, TRUNCATION_CASES, strategy, |v, m| {
        every_prefix_is_refused(what, v, &kp_encode(&m, v), &parse)
    });
}

#[test]
fn every_truncation_of_a_valid_message_is_an_error_not_a_panic() {
    truncations(
        "produce request",
        3..=13,
        produce_request,
        parse_produce_request,
    );
    truncations(
        "produce response",
        3..=13,
        produce_response,
        parse_produce_response,
    );
    truncations(
        "api versions request",
        0..=4,
        api_versions_request,
        |b, v| {
            // v0-2 bodies are empty: nothing to cut.
            parse_api_versions_request(b, v)
        },
    );
    truncations(
        "api versions response",
        0..=4,
        api_versions_response,
        parse_api_versions_response,
    );
    truncations(
        "metadata request",
        0..=13,
        metadata_request,
        parse_metadata_request,
    );
    truncations(
        "metadata response",
        0..=13,
        metadata_response,
        parse_metadata_response,
    );
    truncations(
        "find coordinator request",
        0..=6,
        find_coordinator_request,
        parse_find_coordinator_request,
    );
    truncations(
        "find coordinator response",
        0..=6,
        find_coordinator_response,
        parse_find_coordinator_response,
    );
    truncations(
        "describe cluster request",
        0..=2,
        describe_cluster_request,
        parse_describe_cluster_request,
    );
    truncations(
        "describe cluster response",
        0..=2,
        describe_cluster_response,
        parse_describe_cluster_response,
    );
}

#[test]
fn every_truncation_of_a_header_or_record_batch_is_an_error_not_a_panic() {
    runner(CASES)
        .run(&request_header_case(), |(hv, h)| {
            let wire = kp_encode(&h, hv);
            for n in 0..wire.len() {
                prop_assert!(header::parse_request_header_auto(&wire[..n]).is_err());
            }
            Ok(())
        })
        .unwrap();
    runner(CASES)
        .run(&batch_spec(), |spec| {
            let batch = spec.encode();
            for n in 0..batch.len() {
                prop_assert!(rb::parse_single_batch(&batch[..n]).is_err());
            }
            Ok(())
        })
        .unwrap();
}

/// Runs every parser of the codec over `input` at version `v`; only a
/// panic can fail this.
fn parse_everything(input: &[u8], v: i16) {
    let b = Bytes::copy_from_slice(input);
    let _ = pr::parse_produce_request(&b, v);
    let _ = pr::parse_produce_response(input, v);
    let _ = pr::parse_node_endpoints(input);
    let _ = av::parse_api_versions_request(input, v);
    let _ = av::parse_api_versions_response(input, v);
    let _ = md::parse_metadata_request(input, v);
    let _ = md::parse_metadata_response(input, v);
    let _ = fc::parse_find_coordinator_request(input, v);
    let _ = fc::parse_find_coordinator_response(input, v);
    let _ = dc::parse_describe_cluster_request(input, v);
    let _ = dc::parse_describe_cluster_response(input, v);
    let _ = header::parse_request_header_auto(input);
    for hv in 0..=2 {
        let _ = header::parse_request_header(input, hv);
        let _ = header::parse_response_header(input, hv);
    }
    let _ = rb::parse_record_batch_header(input);
    let _ = rb::parse_single_batch(input);
    let _ = split_frames(input, 1 << 16);
    let mut buf = BytesMut::from(input);
    while let Ok(Some(_)) = frame::decode_frame(&mut buf, 1 << 16) {}
}

#[test]
fn random_garbage_never_panics_any_parser_at_any_version() {
    let case = (-2i16..=16, prop::collection::vec(any::<u8>(), 0..256));
    runner(CASES * 32)
        .run(&case, |(v, input)| {
            parse_everything(&input, v);
            Ok(())
        })
        .unwrap();
}

#[test]
fn corrupted_valid_messages_never_panic_any_parser() {
    // Valid encodings with a few bytes overwritten reach deeper than pure
    // noise: lengths and counts that are almost right.
    let messages = (3i16..=13).prop_flat_map(|v| {
        (
            Just(v),
            prop_oneof![
                produce_request(v).prop_map(move |m| kp_encode(&m, v)),
                produce_response(v).prop_map(move |m| kp_encode(&m, v)),
                metadata_response(v).prop_map(move |m| kp_encode(&m, v)),
                metadata_request(v).prop_map(move |m| kp_encode(&m, v)),
            ],
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
        )
    });
    runner(CASES * 8)
        .run(&messages, |(v, wire, edits)| {
            if wire.is_empty() {
                return Ok(());
            }
            let mut bad = wire.to_vec();
            for (at, byte) in edits {
                let i = at.index(bad.len());
                bad[i] = byte;
            }
            parse_everything(&bad, v);
            Ok(())
        })
        .unwrap();
}
