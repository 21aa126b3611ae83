//! RecordBatch v2 (magic 2) header, `DefaultRecordBatch.java`.
//!
//! The 61-byte header is never compressed, so every field dedup needs
//! (producer id, epoch, sequence range, CRC) is read without touching the
//! records themselves. The CRC is CRC-32C over attributes..end of batch.

use bytes::{BufMut, Bytes, BytesMut};

use super::error::CodecError;
use super::primitives::*;

/// Bytes before `batchLength`'s coverage starts: baseOffset + batchLength.
pub const LOG_OVERHEAD: usize = 12;
/// Size of the batch header up to and including `recordsCount`.
pub const RECORD_BATCH_OVERHEAD: usize = 61;
/// Offset of `attributes`, where the CRC coverage starts.
const ATTRIBUTES_OFFSET: usize = 21;
/// The only magic Produce v3+ accepts.
pub const MAGIC_V2: i8 = 2;

/// Sentinels from `RecordBatch.java`.
pub const NO_PRODUCER_ID: i64 = -1;
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordBatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

impl RecordBatchHeader {
    /// `DefaultRecordBatch.incrementSequence(baseSequence, lastOffsetDelta)`:
    /// wraps past `i32::MAX` to 0.
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & 0x10 != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & 0x20 != 0
    }

    /// Total bytes of the batch, LOG_OVERHEAD included.
    pub fn total_size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length as usize
    }
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0 as the broker does.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Where the base sequence sits in a v2 batch: after base offset (8),
/// length (4), leader epoch (4), magic (1), CRC (4), attributes (2), last
/// offset delta (4), timestamps (8 + 8), producer id (8) and epoch (2).
const BASE_SEQUENCE_OFFSET: usize = 53;

/// A copy of the single batch `records` with its base sequence set to
/// `base_sequence` and the CRC-32C recomputed; the records are untouched.
/// Callers check the CRC first: a corrupt batch is never made valid.
pub fn with_base_sequence(records: &[u8], base_sequence: i32) -> Result<Bytes, CodecError> {
    let h = parse_single_batch_header(records)?;
    verify_crc(records, &h)?;
    let end = h.total_size();
    let mut b = BytesMut::from(
        records
            .get(..end)
            .ok_or(CodecError::Truncated("record batch"))?,
    );
    b[BASE_SEQUENCE_OFFSET..BASE_SEQUENCE_OFFSET + 4].copy_from_slice(&base_sequence.to_be_bytes());
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(b.freeze())
}

/// Parses the header of the first batch in `i` (no CRC check).
pub fn parse_record_batch_header(i: &[u8]) -> PResult<'_, RecordBatchHeader> {
    let (i, base_offset) = parse_i64(i)?;
    let (i, batch_length) = parse_i32(i)?;
    if batch_length < (RECORD_BATCH_OVERHEAD - LOG_OVERHEAD) as i32 {
        return fail(CodecError::InvalidLength {
            what: "record batch length",
            len: i64::from(batch_length),
        });
    }
    let (i, partition_leader_epoch) = parse_i32(i)?;
    let (i, magic) = parse_i8(i)?;
    if magic != MAGIC_V2 {
        return fail(CodecError::UnsupportedMagic(magic));
    }
    let (i, crc) = parse_u32(i)?;
    let (i, attributes) = parse_i16(i)?;
    let (i, last_offset_delta) = parse_i32(i)?;
    let (i, base_timestamp) = parse_i64(i)?;
    let (i, max_timestamp) = parse_i64(i)?;
    let (i, producer_id) = parse_i64(i)?;
    let (i, producer_epoch) = parse_i16(i)?;
    let (i, base_sequence) = parse_i32(i)?;
    let (i, records_count) = parse_i32(i)?;
    if last_offset_delta < 0 || records_count < 0 {
        return fail(CodecError::InvalidLength {
            what: "record batch last offset delta / count",
            len: i64::from(last_offset_delta.min(records_count)),
        });
    }
    Ok((
        i,
        RecordBatchHeader {
            base_offset,
            batch_length,
            partition_leader_epoch,
            magic,
            crc,
            attributes,
            last_offset_delta,
            base_timestamp,
            max_timestamp,
            producer_id,
            producer_epoch,
            base_sequence,
            records_count,
        },
    ))
}

/// Parses a records field that must hold exactly one v2 batch (Produce v3+,
/// "exactly one record batch per partition"), verifying its CRC-32C.
pub fn parse_single_batch(records: &[u8]) -> Result<RecordBatchHeader, CodecError> {
    let h = parse_single_batch_header(records)?;
    verify_crc(records, &h)?;
    Ok(h)
}

/// The header of a records field that holds exactly one v2 batch, without
/// the CRC check: the size is checked, the records are not read. For a
/// batch on its way to the broker, which verifies the CRC itself.
pub fn parse_single_batch_header(records: &[u8]) -> Result<RecordBatchHeader, CodecError> {
    let (_, h) = parse_record_batch_header(records)?;
    let total = h.total_size();
    if total != records.len() {
        return Err(if total > records.len() {
            CodecError::Truncated("record batch")
        } else {
            CodecError::TrailingBytes(records.len() - total)
        });
    }
    Ok(h)
}

/// Checks the CRC-32C of a batch whose header `h` was parsed from `records`
/// (by [`parse_single_batch_header`], so the size is known to match).
pub fn verify_crc(records: &[u8], h: &RecordBatchHeader) -> Result<(), CodecError> {
    let end = h.total_size().min(records.len());
    let actual = crc32c::crc32c(records.get(ATTRIBUTES_OFFSET..end).unwrap_or_default());
    if actual != h.crc {
        return Err(CodecError::CrcMismatch {
            expected: h.crc,
            actual,
        });
    }
    Ok(())
}

/// One record of a batch being built (tests, tools and benchmarks build
/// real batches with it; the proxy itself never re-encodes records).
#[derive(Debug, Clone, Default)]
pub struct SimpleRecord {
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
}

/// Encodes an uncompressed magic-2 batch with a correct CRC-32C.
pub fn encode_record_batch(
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    base_timestamp: i64,
    attributes: i16,
    records: &[SimpleRecord],
) -> Bytes {
    let mut body = BytesMut::new();
    for (n, r) in records.iter().enumerate() {
        let mut rec = BytesMut::new();
        rec.put_i8(0); // attributes
        put_varlong(&mut rec, 0); // timestamp delta
        put_varint(&mut rec, n as i32); // offset delta
        match &r.key {
            Some(k) => {
                put_varint(&mut rec, k.len() as i32);
                rec.put_slice(k);
            }
            None => put_varint(&mut rec, -1),
        }
        match &r.value {
            Some(v) => {
                put_varint(&mut rec, v.len() as i32);
                rec.put_slice(v);
            }
            None => put_varint(&mut rec, -1),
        }
        put_varint(&mut rec, 0); // headers
        put_varint(&mut body, rec.len() as i32);
        body.put_slice(&rec);
    }
    let count = records.len() as i32;
    let mut b = BytesMut::with_capacity(RECORD_BATCH_OVERHEAD + body.len());
    b.put_i64(0);
    b.put_i32((RECORD_BATCH_OVERHEAD - LOG_OVERHEAD + body.len()) as i32);
    b.put_i32(-1);
    b.put_i8(MAGIC_V2);
    b.put_u32(0); // crc, patched below
    b.put_i16(attributes);
    b.put_i32((count - 1).max(0));
    b.put_i64(base_timestamp);
    b.put_i64(base_timestamp);
    b.put_i64(producer_id);
    b.put_i16(producer_epoch);
    b.put_i32(base_sequence);
    b.put_i32(count);
    b.put_slice(&body);
    let crc = crc32c::crc32c(&b[ATTRIBUTES_OFFSET..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(seq: i32, n: usize) -> Bytes {
        let recs: Vec<_> = (0..n)
            .map(|i| SimpleRecord {
                key: None,
                value: Some(Bytes::from(format!("v{i}"))),
            })
            .collect();
        encode_record_batch(42, 3, seq, 1_700_000_000_000, 0, &recs)
    }

    #[test]
    fn last_sequence_wraps_past_i32_max() {
        assert_eq!(increment_sequence(10, 4), 14);
        assert_eq!(increment_sequence(i32::MAX, 0), i32::MAX);
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        let b = batch(i32::MAX - 1, 4);
        let h = parse_single_batch(&b).unwrap();
        assert_eq!(h.last_sequence(), 1);
    }

    #[test]
    fn built_batch_parses_with_every_field() {
        let b = batch(5, 3);
        let h = parse_single_batch(&b).unwrap();
        assert_eq!(h.producer_id, 42);
        assert_eq!(h.producer_epoch, 3);
        assert_eq!(h.base_sequence, 5);
        assert_eq!(h.last_sequence(), 7);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.total_size(), b.len());
    }

    #[test]
    fn flipped_byte_fails_the_crc() {
        let mut b = BytesMut::from(&batch(0, 2)[..]);
        let last = b.len() - 1;
        b[last] ^= 0xff;
        assert!(matches!(
            parse_single_batch(&b),
            Err(CodecError::CrcMismatch { .. })
        ));
    }

    #[test]
    fn truncated_and_padded_batches_are_refused() {
        let b = batch(0, 2);
        assert!(parse_single_batch(&b[..b.len() - 1]).is_err());
        let mut padded = BytesMut::from(&b[..]);
        padded.put_u8(0);
        assert_eq!(
            parse_single_batch(&padded),
            Err(CodecError::TrailingBytes(1))
        );
        assert!(parse_single_batch(&b[..30]).is_err());
    }
}
