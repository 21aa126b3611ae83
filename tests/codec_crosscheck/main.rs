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
//! One module per message holds its `kafka-protocol` strategy, what our
//! codec must make of each instance, and the round-trip tests; this file
//! holds the harness and the strategies they share. `headers` checks the
//! request and response headers, `record_batch` the RecordBatch header
//! against the `crc32c` crate and `kafka-protocol`'s record decoder, and
//! `robustness` that every strict prefix of a valid message is refused and
//! that garbage never panics.

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

mod api_versions;
mod describe_cluster;
mod find_coordinator;
mod headers;
mod metadata;
mod produce;
mod record_batch;
mod robustness;

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
