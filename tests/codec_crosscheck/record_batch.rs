//! The RecordBatch header and its CRC, against the `crc32c` crate and
//! `kafka-protocol`'s record decoder.

use super::*;

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
