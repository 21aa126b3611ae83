//! Produce request bodies: decode → encode → decode must be equal, and the
//! records of every partition go through the single-batch CRC path.
//!
//! Input: one byte picking the version (3-13), then the request body.

#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_dedup_proxy::codec::CodecError;
use kafka_dedup_proxy::codec::produce::{encode_produce_request, parse_produce_request};
use kafka_dedup_proxy::codec::record_batch::parse_single_batch;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let version = 3 + i16::from(selector % 11);
    let body = Bytes::copy_from_slice(body);
    let Ok(request) = parse_produce_request(&body, version) else {
        return;
    };
    for topic in &request.topics {
        for partition in &topic.partitions {
            if let Some(records) = &partition.records
                && let Ok(h) = parse_single_batch(records)
            {
                assert_eq!(h.total_size(), records.len());
                let _ = h.last_sequence();
            }
        }
    }

    let mut encoded = BytesMut::new();
    encode_produce_request(&mut encoded, &request, version);
    let encoded = encoded.freeze();
    // Our encoding is minimal: never longer than what we parsed.
    assert!(encoded.len() <= body.len());
    let again = match parse_produce_request(&encoded, version) {
        Ok(again) => again,
        // The decode budget follows the input's length: when overlong
        // varints made the input longer than our encoding, the shorter
        // copy may not afford what the original did.
        Err(CodecError::DecodeBudget { .. }) if encoded.len() < body.len() => return,
        Err(e) => panic!("our own encoding parses: {e}"),
    };
    assert_eq!(again, request);
    let mut twice = BytesMut::new();
    encode_produce_request(&mut twice, &again, version);
    assert_eq!(twice, encoded);
});
