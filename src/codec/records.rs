//! The records inside a RecordBatch v2 (`DefaultRecord.java`,
//! `DefaultRecordBatch.java`), with every compression codec a Produce
//! request may carry: none, gzip, snappy (raw, or in the xerial framing the
//! Java client writes), lz4 (frame format) and zstd.
//!
//! Decoding is for reading keys and headers; encoding re-frames a batch
//! from records kept out of a decoded one, in the codec and framing it came
//! in, with consecutive offset deltas, its count, timestamps and CRC-32C
//! recomputed. Decompression is capped ([`max_decompressed`]) so a small
//! compressed batch cannot make the proxy allocate without bound; anything
//! that does not decode is an error, and callers forward such batches
//! untouched.

use std::io::{Read, Write};

use bytes::{BufMut, Bytes, BytesMut};

use super::error::CodecError;
use super::primitives::*;
use super::record_batch::{
    LOG_OVERHEAD, MAGIC_V2, RECORD_BATCH_OVERHEAD, RecordBatchHeader, parse_single_batch,
};

/// Offset of `attributes` in a batch, where the CRC coverage starts.
const ATTRIBUTES_OFFSET: usize = 21;
/// Smallest encoded record: length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each.
const MIN_RECORD_SIZE: usize = 7;
/// Smallest encoded record header: key length and value length.
const MIN_HEADER_SIZE: usize = 2;
/// Ratio of decompressed to compressed bytes the proxy accepts. Kafka
/// records compress 3-10x in practice; a batch beyond this is forwarded
/// untouched rather than inflated in memory.
pub const MAX_COMPRESSION_RATIO: usize = 64;
/// Decompressed bytes accepted whatever the ratio (a batch this small
/// costs nothing to inflate).
pub const MIN_DECOMPRESSED_CAP: usize = 1 << 20;
/// Decompressed bytes accepted whatever the batch: producers build batches
/// of `batch.size` (16 KiB by default, rarely above 1 MiB) and brokers
/// refuse batches above `max.message.bytes` (1 MiB by default).
pub const MAX_DECOMPRESSED: usize = 16 << 20;
/// Bytes the decoded records and headers may take in memory, per byte of
/// records they were read from, beyond [`DECODED_SLACK`]: a batch of many
/// records too small to be worth that (a record decodes to ~110 B) is
/// refused, and forwarded untouched by its callers.
pub const MAX_DECODED_PER_BYTE: usize = 4;
/// Decoded bytes allowed whatever the records' size (~9,000 records).
pub const DECODED_SLACK: usize = 1 << 20;

/// The most bytes a batch of `compressed` bytes may inflate to.
pub fn max_decompressed(compressed: usize) -> usize {
    compressed
        .saturating_mul(MAX_COMPRESSION_RATIO)
        .clamp(MIN_DECOMPRESSED_CAP, MAX_DECOMPRESSED)
}

/// The xerial snappy stream header: magic, version 1, compatible version 1.
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\x00";
const XERIAL_HEADER_LEN: usize = 16;
/// Uncompressed bytes per xerial block (`SnappyOutputStream`'s default).
const XERIAL_BLOCK: usize = 32 * 1024;

/// The codec in `attributes` bits 0-2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    /// `xerial`: the stream framing the Java client writes; raw otherwise.
    Snappy {
        xerial: bool,
    },
    Lz4,
    Zstd,
}

impl Compression {
    fn attribute_bits(self) -> i16 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy { .. } => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}

/// One record header (`key` is a string on the wire, never null).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Bytes,
    pub value: Option<Bytes>,
}

/// One record, as encoded after the batch header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub attributes: i8,
    pub timestamp_delta: i64,
    pub offset_delta: i32,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<RecordHeader>,
}

/// A batch with its records decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBatch {
    pub header: RecordBatchHeader,
    pub compression: Compression,
    pub records: Vec<Record>,
}

/// Decodes every record of a records field holding exactly one v2 batch,
/// after checking its CRC-32C.
pub fn decode_batch(batch: &Bytes) -> Result<DecodedBatch, CodecError> {
    let header = parse_single_batch(batch)?;
    let body = batch.slice(RECORD_BATCH_OVERHEAD..);
    let (compression, plain) = decompress(header.attributes, &body)?;
    let records = parse_records(&plain, header.records_count)?;
    Ok(DecodedBatch {
        header,
        compression,
        records,
    })
}

fn decompress(attributes: i16, body: &Bytes) -> Result<(Compression, Bytes), CodecError> {
    let cap = max_decompressed(body.len());
    let inflate = |r: &mut dyn Read| -> Result<Bytes, CodecError> {
        let mut out = Vec::new();
        r.take(cap as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| CodecError::Invalid("compressed records do not decompress"))?;
        if out.len() > cap {
            return Err(CodecError::Invalid(
                "compressed records inflate beyond the proxy's cap",
            ));
        }
        Ok(Bytes::from(out))
    };
    match attributes & 0x07 {
        0 => Ok((Compression::None, body.clone())),
        1 => Ok((
            Compression::Gzip,
            inflate(&mut flate2::read::GzDecoder::new(&body[..]))?,
        )),
        2 => snappy_decompress(body, cap),
        3 => {
            let mut d = lz4::Decoder::new(&body[..])
                .map_err(|_| CodecError::Invalid("lz4 frame header"))?;
            Ok((Compression::Lz4, inflate(&mut d)?))
        }
        4 => {
            let mut d = zstd::stream::read::Decoder::new(&body[..])
                .map_err(|_| CodecError::Invalid("zstd stream"))?;
            Ok((Compression::Zstd, inflate(&mut d)?))
        }
        _ => Err(CodecError::Invalid("unknown compression codec")),
    }
}

fn snappy_decompress(body: &[u8], cap: usize) -> Result<(Compression, Bytes), CodecError> {
    let raw_len = |block: &[u8]| {
        snap::raw::decompress_len(block).map_err(|_| CodecError::Invalid("snappy block"))
    };
    let mut out = Vec::new();
    let push_block = |block: &[u8], out: &mut Vec<u8>| -> Result<(), CodecError> {
        let n = raw_len(block)?;
        if out.len() + n > cap {
            return Err(CodecError::Invalid(
                "compressed records inflate beyond the proxy's cap",
            ));
        }
        let start = out.len();
        out.resize(start + n, 0);
        snap::raw::Decoder::new()
            .decompress(block, &mut out[start..])
            .map_err(|_| CodecError::Invalid("snappy block"))?;
        Ok(())
    };
    if body.starts_with(XERIAL_MAGIC) && body.len() >= XERIAL_HEADER_LEN {
        let mut rest = &body[XERIAL_HEADER_LEN..];
        while !rest.is_empty() {
            let (r, len) = parse_i32(rest).map_err(|_| CodecError::Truncated("xerial block"))?;
            let len = usize::try_from(len).map_err(|_| CodecError::Invalid("xerial block"))?;
            let block = r.get(..len).ok_or(CodecError::Truncated("xerial block"))?;
            push_block(block, &mut out)?;
            rest = &r[len..];
        }
        Ok((Compression::Snappy { xerial: true }, Bytes::from(out)))
    } else {
        push_block(body, &mut out)?;
        Ok((Compression::Snappy { xerial: false }, Bytes::from(out)))
    }
}

fn parse_nullable_varbytes(i: &[u8]) -> PResult<'_, Option<&[u8]>> {
    let (i, len) = parse_varint(i)?;
    if len < 0 {
        return Ok((i, None));
    }
    let (i, b) = take_bytes(i, len as usize, "record bytes")?;
    Ok((i, Some(b)))
}

/// Parses `count` records from the decompressed records section; every
/// count and length is checked against the bytes present before anything
/// is allocated for it.
fn parse_records(plain: &Bytes, count: i32) -> Result<Vec<Record>, CodecError> {
    let count = usize::try_from(count).map_err(|_| CodecError::InvalidLength {
        what: "record count",
        len: i64::from(count),
    })?;
    // What the decoded records may take: counts are checked against it
    // before anything is allocated for them.
    let mut budget = plain.len().saturating_mul(MAX_DECODED_PER_BYTE) + DECODED_SLACK;
    let mut spend = |n: usize, size: usize, what: &'static str| {
        let cost = n.saturating_mul(size);
        if cost > budget {
            return Err(CodecError::LengthOverLimit {
                what,
                len: cost as u64,
                limit: budget as u64,
            });
        }
        budget -= cost;
        Ok(())
    };
    spend(count, std::mem::size_of::<Record>(), "decoded records")?;
    if count > plain.len() / MIN_RECORD_SIZE {
        return Err(CodecError::InvalidLength {
            what: "record count",
            len: count as i64,
        });
    }
    let slice = |b: &[u8]| plain.slice_ref(b);
    let mut records = Vec::with_capacity(count);
    let mut i: &[u8] = plain;
    for _ in 0..count {
        let (r, len) = parse_varint(i)?;
        let (r, body) = take_bytes(r, usize::try_from(len).unwrap_or(usize::MAX), "record")?;
        i = r;
        let (b, attributes) = parse_i8(body)?;
        let (b, timestamp_delta) = parse_varlong(b)?;
        let (b, offset_delta) = parse_varint(b)?;
        let (b, key) = parse_nullable_varbytes(b)?;
        let (b, value) = parse_nullable_varbytes(b)?;
        let (mut b, n_headers) = parse_varint(b)?;
        let n_headers = usize::try_from(n_headers).map_err(|_| CodecError::InvalidLength {
            what: "record header count",
            len: i64::from(n_headers),
        })?;
        if n_headers > b.len() / MIN_HEADER_SIZE {
            return Err(CodecError::InvalidLength {
                what: "record header count",
                len: n_headers as i64,
            });
        }
        spend(
            n_headers,
            std::mem::size_of::<RecordHeader>(),
            "decoded headers",
        )?;
        let mut headers = Vec::with_capacity(n_headers);
        for _ in 0..n_headers {
            let (r, key_len) = parse_varint(b)?;
            let key_len = usize::try_from(key_len).map_err(|_| CodecError::InvalidLength {
                what: "record header key",
                len: i64::from(key_len),
            })?;
            let (r, hkey) = take_bytes(r, key_len, "record header key")?;
            let (r, hvalue) = parse_nullable_varbytes(r)?;
            headers.push(RecordHeader {
                key: slice(hkey),
                value: hvalue.map(slice),
            });
            b = r;
        }
        if !b.is_empty() {
            return Err(CodecError::TrailingBytes(b.len()));
        }
        records.push(Record {
            attributes,
            timestamp_delta,
            offset_delta,
            key: key.map(slice),
            value: value.map(slice),
            headers,
        });
    }
    if !i.is_empty() {
        return Err(CodecError::TrailingBytes(i.len()));
    }
    Ok(records)
}

fn put_nullable_varbytes(buf: &mut BytesMut, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.put_slice(b);
        }
        None => put_varint(buf, -1),
    }
}

fn put_record(buf: &mut BytesMut, r: &Record, offset_delta: i32) {
    let mut rec = BytesMut::new();
    rec.put_i8(r.attributes);
    put_varlong(&mut rec, r.timestamp_delta);
    put_varint(&mut rec, offset_delta);
    put_nullable_varbytes(&mut rec, r.key.as_deref());
    put_nullable_varbytes(&mut rec, r.value.as_deref());
    put_varint(&mut rec, r.headers.len() as i32);
    for h in &r.headers {
        put_varint(&mut rec, h.key.len() as i32);
        rec.put_slice(&h.key);
        put_nullable_varbytes(&mut rec, h.value.as_deref());
    }
    put_varint(buf, rec.len() as i32);
    buf.put_slice(&rec);
}

fn compress(compression: Compression, plain: &[u8]) -> Result<Vec<u8>, CodecError> {
    let failed = |_| CodecError::Invalid("records do not compress");
    match compression {
        Compression::None => Ok(plain.to_vec()),
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(plain).map_err(failed)?;
            e.finish().map_err(failed)
        }
        Compression::Snappy { xerial: false } => snap::raw::Encoder::new()
            .compress_vec(plain)
            .map_err(|_| CodecError::Invalid("records do not compress")),
        Compression::Snappy { xerial: true } => {
            let mut out = Vec::with_capacity(plain.len() / 2 + XERIAL_HEADER_LEN);
            out.extend_from_slice(XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            for block in plain.chunks(XERIAL_BLOCK) {
                let c = snap::raw::Encoder::new()
                    .compress_vec(block)
                    .map_err(|_| CodecError::Invalid("records do not compress"))?;
                out.extend_from_slice(&(c.len() as i32).to_be_bytes());
                out.extend_from_slice(&c);
            }
            Ok(out)
        }
        Compression::Lz4 => {
            let mut e = lz4::EncoderBuilder::new()
                .block_size(lz4::BlockSize::Max64KB)
                .block_mode(lz4::BlockMode::Independent)
                .build(Vec::new())
                .map_err(failed)?;
            e.write_all(plain).map_err(failed)?;
            let (out, r) = e.finish();
            r.map_err(failed)?;
            Ok(out)
        }
        Compression::Zstd => zstd::stream::encode_all(plain, 3).map_err(failed),
    }
}

/// Encodes `records` as one batch with the fields of `template` (producer
/// id and epoch, attributes, base timestamp, partition leader epoch) and
/// `base_sequence`, in `compression`. Offset deltas are renumbered 0..n;
/// the count, last offset delta, max timestamp and CRC-32C follow from
/// the records. `records` must not be empty.
pub fn encode_batch(
    template: &RecordBatchHeader,
    compression: Compression,
    base_sequence: i32,
    records: &[Record],
) -> Result<Bytes, CodecError> {
    if records.is_empty() {
        return Err(CodecError::Invalid("a batch needs at least one record"));
    }
    let mut plain = BytesMut::new();
    for (n, r) in records.iter().enumerate() {
        put_record(&mut plain, r, n as i32);
    }
    let body = compress(compression, &plain)?;
    let count = records.len() as i32;
    let log_append_time = template.attributes & 0x08 != 0;
    let max_timestamp = if log_append_time {
        template.max_timestamp
    } else {
        records
            .iter()
            .map(|r| template.base_timestamp.saturating_add(r.timestamp_delta))
            .max()
            .unwrap_or(template.base_timestamp)
    };
    let attributes = (template.attributes & !0x07) | compression.attribute_bits();
    let mut b = BytesMut::with_capacity(RECORD_BATCH_OVERHEAD + body.len());
    b.put_i64(template.base_offset);
    b.put_i32((RECORD_BATCH_OVERHEAD - LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(template.partition_leader_epoch);
    b.put_i8(MAGIC_V2);
    b.put_u32(0); // CRC, set below
    b.put_i16(attributes);
    b.put_i32(count - 1);
    b.put_i64(template.base_timestamp);
    b.put_i64(max_timestamp);
    b.put_i64(template.producer_id);
    b.put_i16(template.producer_epoch);
    b.put_i32(base_sequence);
    b.put_i32(count);
    b.put_slice(&body);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: i32, key: &str) -> Record {
        Record {
            attributes: 0,
            timestamp_delta: i64::from(n) * 3,
            offset_delta: n,
            key: Some(Bytes::from(key.to_string())),
            value: Some(Bytes::from(format!("value {n} ").repeat(20))),
            headers: vec![RecordHeader {
                key: Bytes::from_static(b"idempotency-key"),
                value: Some(Bytes::from(format!("k-{n}"))),
            }],
        }
    }

    fn template() -> RecordBatchHeader {
        let b = super::super::record_batch::encode_record_batch(42, 3, 100, 1_000, 0, &[]);
        super::super::record_batch::parse_single_batch_header(&b).unwrap()
    }

    const ALL: [Compression; 6] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy { xerial: true },
        Compression::Snappy { xerial: false },
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_round_trips_with_renumbered_offsets() {
        let records: Vec<_> = [0, 2, 5].iter().map(|n| record(*n, "k")).collect();
        for c in ALL {
            let b = encode_batch(&template(), c, 7, &records).unwrap();
            let d = decode_batch(&b).unwrap();
            assert_eq!(d.compression, c);
            assert_eq!(d.header.records_count, 3);
            assert_eq!(d.header.last_offset_delta, 2);
            assert_eq!(d.header.base_sequence, 7);
            assert_eq!(d.header.max_timestamp, 1_000 + 15);
            let deltas: Vec<_> = d.records.iter().map(|r| r.offset_delta).collect();
            assert_eq!(deltas, vec![0, 1, 2], "{c:?}");
            assert_eq!(d.records[2].value, records[2].value);
            assert_eq!(d.records[1].headers, records[1].headers);
        }
    }

    #[test]
    fn a_corrupt_or_truncated_batch_is_an_error_never_a_panic() {
        let records: Vec<_> = (0..4).map(|n| record(n, "k")).collect();
        for c in ALL {
            let b = encode_batch(&template(), c, 0, &records).unwrap();
            for cut in [RECORD_BATCH_OVERHEAD, b.len() / 2, b.len() - 1] {
                assert!(decode_batch(&b.slice(..cut)).is_err());
            }
            let mut bad = b.to_vec();
            let n = bad.len() - 3;
            bad[n] ^= 0x55;
            assert!(
                decode_batch(&Bytes::from(bad)).is_err(),
                "{c:?}: CRC guards the body"
            );
        }
    }

    #[test]
    fn a_decompression_bomb_is_refused() {
        let huge = Record {
            value: Some(Bytes::from(vec![b'a'; 4 << 20])),
            ..record(0, "k")
        };
        for c in [Compression::Gzip, Compression::Zstd, Compression::Lz4] {
            let b = encode_batch(&template(), c, 0, std::slice::from_ref(&huge)).unwrap();
            assert!(
                b.len() * MAX_COMPRESSION_RATIO < 4 << 20,
                "{c:?} compresses"
            );
            assert!(
                matches!(decode_batch(&b), Err(CodecError::Invalid(_))),
                "{c:?}"
            );
        }
    }

    #[test]
    fn records_too_small_to_be_worth_their_memory_are_refused() {
        // Records of 8 bytes each decode to ~110 B each in memory: beyond
        // four times the bytes they came in (and the slack), so refused
        // before allocating.
        let tiny = Record {
            key: None,
            value: None,
            headers: Vec::new(),
            ..record(0, "k")
        };
        let many = vec![tiny; 50_000];
        let b = encode_batch(&template(), Compression::None, 0, &many).unwrap();
        assert!(matches!(
            decode_batch(&b),
            Err(CodecError::LengthOverLimit {
                what: "decoded records",
                ..
            })
        ));
        // Real records (a key, a value of a few hundred bytes) decode.
        let real: Vec<_> = (0..2_000).map(|n| record(n, "k")).collect();
        let b = encode_batch(&template(), Compression::Zstd, 0, &real).unwrap();
        assert_eq!(decode_batch(&b).unwrap().records.len(), 2_000);
    }

    #[test]
    fn counts_beyond_the_bytes_present_are_refused_before_allocating() {
        let mut plain = BytesMut::new();
        put_record(&mut plain, &record(0, "k"), 0);
        let plain = plain.freeze();
        assert!(parse_records(&plain, i32::MAX).is_err());
        assert!(parse_records(&plain, -1).is_err());
        assert_eq!(parse_records(&plain, 1).unwrap().len(), 1);
    }
}
