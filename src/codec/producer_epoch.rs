//! The producer id and epoch a transaction coordinator hands out:
//! InitProducerIdResponse (every version) and EndTxnResponse v5+ (KIP-890:
//! Transactions V2 bumps the epoch at every commit or abort). Both begin
//! with ThrottleTimeMs, ErrorCode, ProducerId, ProducerEpoch
//! (`InitProducerIdResponse.json`, `EndTxnResponse.json`).

use super::api::{END_TXN, INIT_PRODUCER_ID};
use super::error::CodecError;
use super::primitives::{parse_i16, parse_i32, parse_i64};

/// First EndTxn version whose response carries the producer id and epoch.
pub const END_TXN_FIRST_WITH_EPOCH: i16 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerEpoch {
    pub error_code: i16,
    pub producer_id: i64,
    pub producer_epoch: i16,
}

/// Reads the leading fields of an InitProducerId or EndTxn (v5+) response
/// body; the rest (tagged fields, v6 additions) is not needed.
pub fn parse_producer_epoch(
    body: &[u8],
    api_key: i16,
    version: i16,
) -> Result<ProducerEpoch, CodecError> {
    let supported = match api_key {
        INIT_PRODUCER_ID => (0..=6).contains(&version),
        END_TXN => version >= END_TXN_FIRST_WITH_EPOCH,
        _ => false,
    };
    if !supported {
        return Err(CodecError::UnsupportedVersion { api_key, version });
    }
    let (i, _throttle) = parse_i32(body)?;
    let (i, error_code) = parse_i16(i)?;
    let (i, producer_id) = parse_i64(i)?;
    let (_, producer_epoch) = parse_i16(i)?;
    Ok(ProducerEpoch {
        error_code,
        producer_id,
        producer_epoch,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_handed_out_epoch() {
        let mut b = vec![0, 0, 0, 0, 0, 0];
        b.extend_from_slice(&77i64.to_be_bytes());
        b.extend_from_slice(&3i16.to_be_bytes());
        b.push(0);
        let e = parse_producer_epoch(&b, INIT_PRODUCER_ID, 4).unwrap();
        assert_eq!((e.error_code, e.producer_id, e.producer_epoch), (0, 77, 3));
        assert!(parse_producer_epoch(&b, END_TXN, 4).is_err());
        assert!(parse_producer_epoch(&b[..10], INIT_PRODUCER_ID, 1).is_err());
    }
}
