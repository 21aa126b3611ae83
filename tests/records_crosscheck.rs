//! The record codec (`codec::records`) judged by the independent
//! `kafka-protocol` crate, for every compression codec: batches it encodes
//! decode to the same records here, and batches encoded here decode to the
//! same records there.

use bytes::{Bytes, BytesMut};
use indexmap::IndexMap;
use kafka_dedup_proxy::codec::record_batch::parse_single_batch_header;
use kafka_dedup_proxy::codec::records::{
    Compression as Ours, Record as OurRecord, RecordHeader, decode_batch, encode_batch,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use proptest::prelude::*;

/// (key, value, headers) of one record.
type Fields = (
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

fn fields() -> impl Strategy<Value = Fields> {
    (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        proptest::collection::vec(
            (
                "[a-z-]{1,16}",
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
            ),
            0..3,
        ),
    )
}

const CODECS: [Compression; 5] = [
    Compression::None,
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

fn theirs(c: Compression) -> Ours {
    match c {
        Compression::None => Ours::None,
        Compression::Gzip => Ours::Gzip,
        // kafka-protocol writes the xerial framing, as the Java client does.
        Compression::Snappy => Ours::Snappy { xerial: true },
        Compression::Lz4 => Ours::Lz4,
        Compression::Zstd => Ours::Zstd,
    }
}

fn their_record(i: usize, f: &Fields) -> Record {
    let mut headers = IndexMap::new();
    for (k, v) in &f.2 {
        headers.insert(StrBytes::from_string(k.clone()), v.clone().map(Bytes::from));
    }
    Record {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id: 4000,
        producer_epoch: 2,
        timestamp_type: TimestampType::Creation,
        offset: i as i64,
        sequence: 10 + i as i32,
        timestamp: 1_700_000_000_000 + 5 * i as i64,
        key: f.0.clone().map(Bytes::from),
        value: f.1.clone().map(Bytes::from),
        headers,
    }
}

/// Header names and values in order (kafka-protocol keeps them in a map,
/// so duplicate names collapse there; the strategies avoid depending on it).
fn header_list(f: &Fields) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    let mut seen = IndexMap::new();
    for (k, v) in &f.2 {
        seen.insert(k.clone(), v.clone());
    }
    seen.into_iter().map(|(k, v)| (k.into_bytes(), v)).collect()
}

fn our_headers(r: &OurRecord) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
    r.headers
        .iter()
        .map(|h: &RecordHeader| (h.key.to_vec(), h.value.as_ref().map(|v| v.to_vec())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn batches_the_independent_encoder_writes_decode_to_the_same_records(
        records in proptest::collection::vec(fields(), 1..12),
        codec in 0usize..5,
    ) {
        let c = CODECS[codec];
        let theirs_in: Vec<Record> = records.iter().enumerate().map(|(i, f)| their_record(i, f)).collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &theirs_in, &RecordEncodeOptions { version: 2, compression: c }).unwrap();
        let d = decode_batch(&buf.clone().freeze()).unwrap();
        prop_assert_eq!(d.compression, theirs(c));
        prop_assert_eq!(d.records.len(), records.len());
        prop_assert_eq!(d.header.producer_id, 4000);
        prop_assert_eq!(d.header.base_sequence, 10);
        for (i, (r, f)) in d.records.iter().zip(&records).enumerate() {
            prop_assert_eq!(r.key.as_ref().map(|k| k.to_vec()), f.0.clone());
            prop_assert_eq!(r.value.as_ref().map(|v| v.to_vec()), f.1.clone());
            prop_assert_eq!(our_headers(r), header_list(f));
            prop_assert_eq!(r.offset_delta, i as i32);
            prop_assert_eq!(d.header.base_timestamp + r.timestamp_delta, 1_700_000_000_000 + 5 * i as i64);
        }
    }

    #[test]
    fn batches_encoded_here_decode_to_the_same_records_independently(
        records in proptest::collection::vec(fields(), 1..12),
        codec in 0usize..5,
        drop_first in any::<bool>(),
    ) {
        let c = CODECS[codec];
        // Start from the independent encoder's batch, drop a record as key
        // dedup would, and re-encode here.
        let theirs_in: Vec<Record> = records.iter().enumerate().map(|(i, f)| their_record(i, f)).collect();
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode(&mut buf, &theirs_in, &RecordEncodeOptions { version: 2, compression: c }).unwrap();
        let d = decode_batch(&buf.clone().freeze()).unwrap();
        let skip = usize::from(drop_first && records.len() > 1);
        let kept = &d.records[skip..];
        let out = encode_batch(&d.header, d.compression, 10 + skip as i32, kept).unwrap();
        // The header checks out (size, CRC) and the independent decoder agrees.
        let h = parse_single_batch_header(&out).unwrap();
        prop_assert_eq!(h.records_count as usize, kept.len());
        let mut b = Bytes::from(out.to_vec());
        let set = RecordBatchDecoder::decode(&mut b).unwrap();
        prop_assert_eq!(set.compression, c);
        prop_assert_eq!(set.records.len(), kept.len());
        for (i, (r, f)) in set.records.iter().zip(&records[skip..]).enumerate() {
            prop_assert_eq!(r.key.as_ref().map(|k| k.to_vec()), f.0.clone());
            prop_assert_eq!(r.value.as_ref().map(|v| v.to_vec()), f.1.clone());
            prop_assert_eq!(r.offset, i as i64, "consecutive offsets");
            prop_assert_eq!(r.sequence, 10 + (skip + i) as i32);
            prop_assert_eq!(r.timestamp, 1_700_000_000_000 + 5 * (skip + i) as i64);
            let theirs_headers: Vec<_> = r.headers.iter().map(|(k, v)| (k.as_bytes().to_vec(), v.as_ref().map(|v| v.to_vec()))).collect();
            prop_assert_eq!(theirs_headers, header_list(f));
        }
    }
}
