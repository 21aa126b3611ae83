//! Memory a parse may take is bounded by the bytes it was given, whatever
//! the counts in them claim.
//!
//! A counting global allocator (per thread, so tests running in parallel do
//! not see each other) records the peak heap growth while one message is
//! parsed. Hostile shapes: counts that claim nearly every byte left, filled
//! with the smallest elements that parse (an empty topic of a flexible
//! Produce request is 3 bytes on the wire and a 72-byte struct), tagged
//! field counts, and responses the proxy rewrites. Real messages at the
//! densest ratio their direction reaches must still parse.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_dedup_proxy::codec::CodecError;
use kafka_dedup_proxy::codec::header::{parse_request_header_auto, parse_response_header};
use kafka_dedup_proxy::codec::metadata::{
    MetadataBroker, MetadataPartition, MetadataResponse, MetadataTopic, encode_metadata_response,
    parse_metadata_request, parse_metadata_response,
};
use kafka_dedup_proxy::codec::primitives::{
    DECODE_BUDGET_SLACK, DecodeBudget, TaggedFields, put_uvarint,
};
use kafka_dedup_proxy::codec::produce::{
    PartitionProduceData, ProduceRequest, TopicProduceData, TopicRef, encode_produce_request,
    parse_node_endpoints, parse_produce_request, parse_produce_response,
};
use kafka_dedup_proxy::codec::record_batch::{SimpleRecord, encode_record_batch};
use kafka_dedup_proxy::codec::{
    api_versions::parse_api_versions_response, describe_cluster::parse_describe_cluster_response,
    find_coordinator::parse_find_coordinator_request,
    find_coordinator::parse_find_coordinator_response,
};
use proptest::prelude::*;

#[path = "support/peak_alloc.rs"]
mod peak_alloc;
use peak_alloc::peak_during;

/// What the codec promises for an input of `len` bytes.
fn bound(budget: DecodeBudget, len: usize) -> usize {
    budget.bytes_for(len)
}

/// The multiple the user-facing claim is stated in (`4 × input + slack`),
/// checked on top of the per-direction budget for requests.
fn within_four_times(peak: usize, len: usize) -> bool {
    peak <= 4 * len + DECODE_BUDGET_SLACK
}

fn report(name: &str, len: usize, peak: usize) {
    eprintln!(
        "{name}: input {len} bytes, peak heap growth {peak} bytes ({:.2}x input)",
        peak as f64 / len as f64
    );
}

const MIB: usize = 1024 * 1024;

/// Produce v9 body: null transactional id, acks=-1, timeout, then a topic
/// count of `count` and `filler`.
fn produce_v9_with_topics(count: usize, filler: &[u8]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_u8(0); // null transactional id
    b.put_i16(-1);
    b.put_i32(30_000);
    put_uvarint(&mut b, count as u32 + 1);
    b.put_slice(filler);
    b.freeze()
}

/// The shape a user measured: a topic count that claims nearly every byte
/// left, followed by one-byte elements.
#[test]
fn produce_topic_count_claiming_every_byte_stays_bounded() {
    let len = 4 * MIB;
    let body = produce_v9_with_topics(len, &vec![1u8; len]);
    let (peak, r) = peak_during(|| parse_produce_request(&body, 9));
    report(
        "produce v9, count = bytes left, 0x01 filler",
        body.len(),
        peak,
    );
    assert!(r.is_err());
    assert!(peak <= bound(DecodeBudget::REQUEST, body.len()));
    assert!(within_four_times(peak, body.len()));
}

/// The same count, but every element a valid empty topic (name "",
/// no partitions, no tagged fields): the parse would succeed if memory
/// were not bounded.
#[test]
fn produce_of_empty_topics_is_refused_within_its_budget() {
    let topics = 2 * MIB / 3;
    let filler: Vec<u8> = std::iter::repeat_n([1u8, 1, 0], topics).flatten().collect();
    let mut body = BytesMut::from(&produce_v9_with_topics(topics, &filler)[..]);
    body.put_u8(0); // request tagged fields
    let body = body.freeze();
    let (peak, r) = peak_during(|| parse_produce_request(&body, 9).map(|_| ()));
    report("produce v9, valid empty topics", body.len(), peak);
    assert!(matches!(r, Err(CodecError::DecodeBudget { .. })), "{r:?}");
    assert!(peak <= bound(DecodeBudget::REQUEST, body.len()));
}

/// Classic Produce (v3, int32 counts): a topic count of i32::MAX and a
/// partition count close to the bytes left.
#[test]
fn classic_produce_counts_stay_bounded() {
    for count in [i32::MAX as usize, MIB] {
        let mut b = BytesMut::new();
        b.put_i16(-1); // null transactional id
        b.put_i16(-1);
        b.put_i32(30_000);
        b.put_i32(count as i32);
        b.put_i16(0); // topic ""
        b.put_i32(count as i32);
        b.put_slice(&vec![0u8; MIB]);
        let body = b.freeze();
        let (peak, r) = peak_during(|| parse_produce_request(&body, 3));
        report("produce v3, huge counts", body.len(), peak);
        assert!(r.is_err());
        assert!(within_four_times(peak, body.len()));
    }
}

/// A tagged field count of half the bytes left, all of them empty fields
/// (the smallest tagged field: two bytes).
#[test]
fn tagged_field_count_stays_bounded() {
    let fields = MIB;
    let mut b = BytesMut::new();
    b.put_u8(0); // null transactional id
    b.put_i16(-1);
    b.put_i32(30_000);
    put_uvarint(&mut b, 1); // no topics
    put_uvarint(&mut b, fields as u32);
    for tag in 0..fields {
        put_uvarint(&mut b, tag as u32 & 0x7f);
        b.put_u8(0);
    }
    let body = b.freeze();
    let (peak, r) = peak_during(|| parse_produce_request(&body, 9).map(|_| ()));
    report("produce v9, tagged fields", body.len(), peak);
    assert!(matches!(r, Err(CodecError::DecodeBudget { .. })), "{r:?}");
    assert!(within_four_times(peak, body.len()));

    // The same in a request header (parsed before the body).
    let mut h = BytesMut::new();
    h.put_i16(0); // Produce
    h.put_i16(9);
    h.put_i32(7);
    h.put_i16(-1); // null client id
    h.put_slice(&body[8..]);
    let (peak, r) = peak_during(|| parse_request_header_auto(&h).map(|_| ()));
    report("request header v2, tagged fields", h.len(), peak);
    assert!(r.is_err());
    assert!(within_four_times(peak, h.len()));
}

/// Whether a parser refused a body.
type Refused = Box<dyn Fn(&[u8]) -> bool>;

/// Broker responses the proxy rewrites, with every count claiming the
/// bytes left and the smallest elements that parse.
#[test]
fn response_counts_stay_bounded() {
    let len = 2 * MIB;
    let ones = vec![1u8; len];
    let zeros = vec![0u8; len];
    let cases: Vec<(&str, Bytes, Refused)> = vec![
        (
            "metadata v12, broker count",
            {
                let mut b = BytesMut::new();
                b.put_i32(0);
                put_uvarint(&mut b, len as u32);
                b.put_slice(&ones);
                b.freeze()
            },
            Box::new(|b| parse_metadata_response(b, 12).is_err()),
        ),
        (
            "metadata v12, partition count",
            {
                let mut b = BytesMut::new();
                b.put_i32(0);
                put_uvarint(&mut b, 1); // no brokers
                b.put_u8(0); // null cluster id
                b.put_i32(1);
                put_uvarint(&mut b, 2); // one topic
                b.put_i16(0);
                b.put_u8(1); // name ""
                b.put_slice(&[0; 16]);
                b.put_u8(0);
                put_uvarint(&mut b, len as u32);
                b.put_slice(&zeros);
                b.freeze()
            },
            Box::new(|b| parse_metadata_response(b, 12).is_err()),
        ),
        (
            "produce response v11, topic count",
            {
                let mut b = BytesMut::new();
                put_uvarint(&mut b, len as u32);
                b.put_slice(&ones);
                b.freeze()
            },
            Box::new(|b| parse_produce_response(b, 11).is_err()),
        ),
        (
            "node endpoints",
            {
                let mut b = BytesMut::new();
                put_uvarint(&mut b, len as u32);
                b.put_slice(&zeros);
                b.freeze()
            },
            Box::new(|b| parse_node_endpoints(b).is_err()),
        ),
        (
            "api versions v3, api count",
            {
                let mut b = BytesMut::new();
                b.put_i16(0);
                put_uvarint(&mut b, len as u32);
                b.put_slice(&zeros);
                b.freeze()
            },
            Box::new(|b| parse_api_versions_response(b, 3).is_err()),
        ),
        (
            "describe cluster v1, broker count",
            {
                let mut b = BytesMut::new();
                b.put_i32(0);
                b.put_i16(0);
                b.put_u8(0);
                b.put_i8(1);
                b.put_u8(1);
                b.put_i32(0);
                put_uvarint(&mut b, len as u32);
                b.put_slice(&ones);
                b.freeze()
            },
            Box::new(|b| parse_describe_cluster_response(b, 1).is_err()),
        ),
        (
            "find coordinator v4, coordinator count",
            {
                let mut b = BytesMut::new();
                b.put_i32(0);
                put_uvarint(&mut b, len as u32);
                b.put_slice(&ones);
                b.freeze()
            },
            Box::new(|b| parse_find_coordinator_response(b, 4).is_err()),
        ),
        (
            "response header v1, tagged fields",
            {
                let mut b = BytesMut::new();
                b.put_i32(7);
                put_uvarint(&mut b, len as u32 / 2);
                for _ in 0..len / 2 {
                    b.put_slice(&[0, 0]);
                }
                b.freeze()
            },
            Box::new(|b| parse_response_header(b, 1).is_err()),
        ),
    ];
    for (name, body, refused) in cases {
        let (peak, was_refused) = peak_during(|| refused(&body));
        report(name, body.len(), peak);
        assert!(was_refused, "{name}");
        assert!(
            peak <= bound(DecodeBudget::RESPONSE, body.len()),
            "{name}: {peak} bytes for {} input bytes",
            body.len()
        );
    }
}

/// A real Produce request at the densest ratio a client reaches (many
/// topics, one partition and one one-record batch each) parses.
#[test]
fn densest_real_produce_request_parses_within_budget() {
    let batch = encode_record_batch(
        1,
        0,
        0,
        0,
        0,
        &[SimpleRecord {
            key: None,
            value: Some(Bytes::from_static(b"v")),
        }],
    );
    for version in [3i16, 9, 12, 13] {
        let topics = (0..20_000)
            .map(|t| TopicProduceData {
                topic: if version >= 13 {
                    TopicRef::Id([t as u8; 16])
                } else {
                    TopicRef::Name(format!("t{t}"))
                },
                partitions: vec![PartitionProduceData {
                    index: 0,
                    records: Some(batch.clone()),
                    tagged_fields: TaggedFields::default(),
                }],
                tagged_fields: TaggedFields::default(),
            })
            .collect();
        let req = ProduceRequest {
            transactional_id: None,
            acks: -1,
            timeout_ms: 30_000,
            topics,
            tagged_fields: TaggedFields::default(),
        };
        let mut b = BytesMut::new();
        encode_produce_request(&mut b, &req, version);
        let body = b.freeze();
        let _shared = body.clone();
        let (peak, r) = peak_during(|| parse_produce_request(&body, version));
        report(&format!("real produce v{version}"), body.len(), peak);
        assert_eq!(r.expect("a real request parses"), req);
        assert!(peak <= bound(DecodeBudget::REQUEST, body.len()));
    }
}

/// A real Metadata response at the densest ratio a broker reaches
/// (replication factor 1, short names) parses, for every version.
#[test]
fn densest_real_metadata_response_parses_within_budget() {
    for version in 0i16..=13 {
        let topics = (0..500)
            .map(|t| MetadataTopic {
                error_code: 0,
                name: Some(format!("t{t}")),
                topic_id: if version >= 10 {
                    [t as u8; 16]
                } else {
                    [0; 16]
                },
                is_internal: false,
                partitions: (0..100)
                    .map(|p| MetadataPartition {
                        error_code: 0,
                        partition_index: p,
                        leader_id: 1,
                        leader_epoch: if version >= 7 { 0 } else { -1 },
                        replica_nodes: vec![1],
                        isr_nodes: vec![1],
                        offline_replicas: Vec::new(),
                        tagged_fields: TaggedFields::default(),
                    })
                    .collect(),
                topic_authorized_operations: if version >= 8 { 0 } else { i32::MIN },
                tagged_fields: TaggedFields::default(),
            })
            .collect();
        let resp = MetadataResponse {
            throttle_time_ms: 0,
            brokers: vec![MetadataBroker {
                node_id: 1,
                host: "localhost".into(),
                port: 9092,
                rack: None,
                tagged_fields: TaggedFields::default(),
            }],
            cluster_id: (version >= 2).then(|| "c".into()),
            controller_id: if version >= 1 { 1 } else { -1 },
            topics,
            cluster_authorized_operations: i32::MIN,
            error_code: 0,
            tagged_fields: TaggedFields::default(),
        };
        let mut b = BytesMut::new();
        encode_metadata_response(&mut b, &resp, version);
        let (peak, r) = peak_during(|| parse_metadata_response(&b, version));
        report(&format!("real metadata v{version}"), b.len(), peak);
        assert_eq!(r.expect("a real response parses"), resp);
        assert!(peak <= bound(DecodeBudget::RESPONSE, b.len()));
    }
}

/// A named parse of one input (true when it succeeded).
type Check<'a> = (&'static str, Box<dyn Fn() -> bool + 'a>);

/// Bytes that begin with a hostile count and continue with a repeated
/// small pattern (the cheapest elements) or random bytes.
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(any::<u8>(), 0..8),
        prop::collection::vec(any::<u8>(), 1..6),
        1usize..200_000,
        prop::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(prefix, pattern, len, tail)| {
            let mut b = prefix;
            let mut count = BytesMut::new();
            put_uvarint(&mut count, len as u32);
            b.extend_from_slice(&count);
            b.extend((0..len).map(|k| pattern[k % pattern.len()]));
            b.extend_from_slice(&tail);
            b
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Any request body, at any version of the requests the proxy parses,
    /// allocates at most its request budget (and within 4 × its size plus
    /// the slack).
    #[test]
    fn any_request_parse_stays_within_its_budget(body in hostile_body(), version in 0i16..14) {
        let bytes = Bytes::from(body);
        // As in the proxy, where a frame is split off its read buffer:
        // slicing records out of it allocates nothing (a fresh `Bytes`
        // allocates its shared header on the first slice; the clone takes
        // that here).
        let _shared = bytes.clone();
        let checks: [Check; 4] = [
            ("produce", Box::new(|| parse_produce_request(&bytes, 3 + version % 11).is_ok())),
            ("metadata", Box::new(|| parse_metadata_request(&bytes, version).is_ok())),
            ("find coordinator", Box::new(|| parse_find_coordinator_request(&bytes, version % 7).is_ok())),
            ("header", Box::new(|| parse_request_header_auto(&bytes).is_ok())),
        ];
        for (name, parse) in checks {
            let (peak, _) = peak_during(parse);
            prop_assert!(peak <= bound(DecodeBudget::REQUEST, bytes.len()), "{name}: {peak} for {}", bytes.len());
            prop_assert!(within_four_times(peak, bytes.len()), "{name}: {peak} for {}", bytes.len());
        }
    }

    /// Any response body of the kinds the proxy rewrites allocates at most
    /// the response budget.
    #[test]
    fn any_response_parse_stays_within_its_budget(body in hostile_body(), version in 0i16..14) {
        let checks: [Check; 6] = [
            ("produce", Box::new(|| parse_produce_response(&body, 3 + version % 11).is_ok())),
            ("metadata", Box::new(|| parse_metadata_response(&body, version).is_ok())),
            ("find coordinator", Box::new(|| parse_find_coordinator_response(&body, version % 7).is_ok())),
            ("api versions", Box::new(|| parse_api_versions_response(&body, version % 5).is_ok())),
            ("describe cluster", Box::new(|| parse_describe_cluster_response(&body, version % 3).is_ok())),
            ("node endpoints", Box::new(|| parse_node_endpoints(&body).is_ok())),
        ];
        for (name, parse) in checks {
            let (peak, _) = peak_during(parse);
            prop_assert!(peak <= bound(DecodeBudget::RESPONSE, body.len()), "{name}: {peak} for {}", body.len());
        }
    }
}
