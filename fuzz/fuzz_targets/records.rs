//! The records inside a batch, under every compression codec, as key
//! dedup reads them: decoding never panics nor allocates without bound,
//! and a batch re-encoded from decoded records decodes to the same records.
//!
//! Input: a RecordBatch v2. Its length, magic and CRC-32C are set from the
//! input before decoding (anyone can compute a checksum), so the fuzzer
//! reaches the decompression and record parsing behind them.

#![no_main]

use bytes::Bytes;
use kafka_dedup_proxy::codec::record_batch::{LOG_OVERHEAD, MAGIC_V2, RECORD_BATCH_OVERHEAD};
use kafka_dedup_proxy::codec::records::{decode_batch, encode_batch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < RECORD_BATCH_OVERHEAD {
        return;
    }
    let mut b = data.to_vec();
    let len = (b.len() - LOG_OVERHEAD) as i32;
    b[8..12].copy_from_slice(&len.to_be_bytes());
    b[16] = MAGIC_V2 as u8;
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    let Ok(d) = decode_batch(&Bytes::from(b)) else {
        return;
    };
    assert_eq!(d.records.len(), d.header.records_count as usize);
    if d.records.is_empty() {
        return;
    }
    let re = encode_batch(&d.header, d.compression, d.header.base_sequence, &d.records)
        .expect("decoded records encode");
    let again = decode_batch(&re).expect("a re-encoded batch decodes");
    assert_eq!(again.compression, d.compression);
    assert_eq!(again.records.len(), d.records.len());
    for (a, r) in again.records.iter().zip(&d.records) {
        assert_eq!((&a.key, &a.value, &a.headers), (&r.key, &r.value, &r.headers));
        assert_eq!(a.timestamp_delta, r.timestamp_delta);
    }
});
