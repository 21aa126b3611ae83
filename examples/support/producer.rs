//! What the load tools in examples/ share: a request header, reading a
//! response frame, InitProducerId, percentiles. Included with `#[path]`.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_dedup_proxy::codec::Frame;
use kafka_dedup_proxy::codec::api::PRODUCE;
use kafka_dedup_proxy::codec::header::{
    RequestHeader, parse_response_header, put_request_header, request_header_version,
    response_header_version,
};
use kafka_dedup_proxy::codec::primitives::TaggedFields;
use kafka_dedup_proxy::codec::produce::{
    PartitionProduceData, ProduceRequest, TopicProduceData, TopicRef, encode_produce_request,
    parse_produce_response,
};
use kafka_dedup_proxy::codec::record_batch::{SimpleRecord, encode_record_batch};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

pub const PRODUCE_VERSION: i16 = 12;
const INIT_PRODUCER_ID: i16 = 22;
const CLIENT_ID: &str = "kdp-load";

pub fn header(api_key: i16, api_version: i16, correlation_id: i32) -> BytesMut {
    let mut buf = BytesMut::new();
    let h = RequestHeader {
        api_key,
        api_version,
        correlation_id,
        client_id: Some(CLIENT_ID.into()),
        tagged_fields: TaggedFields::default(),
    };
    put_request_header(
        &mut buf,
        &h,
        request_header_version(api_key, api_version).unwrap_or(1),
    );
    buf
}

pub async fn read_frame(r: &mut OwnedReadHalf) -> std::io::Result<Bytes> {
    let len = r.read_i32().await?;
    let mut body = vec![0u8; len.max(0) as usize];
    r.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// InitProducerId v0 (no transactional id): the producer id and epoch.
/// Retries while the transaction coordinator loads (a fresh cluster).
pub async fn init_producer_id(s: &mut TcpStream) -> Result<(i64, i16), String> {
    for attempt in 1.. {
        match init_producer_id_once(s).await? {
            Ok(id) => return Ok(id),
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE,
            // NOT_COORDINATOR, CONCURRENT_TRANSACTIONS
            Err(code @ (14 | 15 | 16 | 51)) if attempt < 300 => {
                let _ = code;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(code) => return Err(format!("InitProducerId error {code}")),
        }
    }
    unreachable!()
}

async fn init_producer_id_once(s: &mut TcpStream) -> Result<Result<(i64, i16), i16>, String> {
    let mut buf = header(INIT_PRODUCER_ID, 0, 1);
    buf.put_i16(-1); // transactional_id: null
    buf.put_i32(60_000); // transaction_timeout_ms
    s.write_all(Frame::from_body(&buf).raw())
        .await
        .map_err(|e| e.to_string())?;
    let len = s.read_i32().await.map_err(|e| e.to_string())?;
    let mut body = vec![0u8; len.max(0) as usize];
    s.read_exact(&mut body).await.map_err(|e| e.to_string())?;
    let mut b = &body[..];
    if b.remaining() < 4 + 4 + 2 + 8 + 2 {
        return Err("short InitProducerId response".into());
    }
    let _correlation = b.get_i32();
    let _throttle = b.get_i32();
    let error = b.get_i16();
    let pid = b.get_i64();
    let epoch = b.get_i16();
    if error != 0 {
        return Ok(Err(error));
    }
    Ok(Ok((pid, epoch)))
}

pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

/// A whole Produce v12 frame (acks=all) with one batch of `count` records
/// of `value` from an idempotent producer, for `partition` of `topic`.
#[allow(clippy::too_many_arguments)]
pub fn produce_frame(
    topic: &str,
    partition: i32,
    pid: i64,
    epoch: i16,
    sequence: i32,
    value: &Bytes,
    count: u64,
    correlation_id: i32,
) -> Bytes {
    let records: Vec<_> = (0..count)
        .map(|_| SimpleRecord {
            key: None,
            value: Some(value.clone()),
        })
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let req = ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topics: vec![TopicProduceData {
            topic: TopicRef::Name(topic.to_string()),
            partitions: vec![PartitionProduceData {
                index: partition,
                records: Some(encode_record_batch(
                    pid, epoch, sequence, now_ms, 0, &records,
                )),
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: TaggedFields::default(),
        }],
        tagged_fields: TaggedFields::default(),
    };
    let mut buf = header(PRODUCE, PRODUCE_VERSION, correlation_id);
    encode_produce_request(&mut buf, &req, PRODUCE_VERSION);
    Frame::from_body(&buf).raw().clone()
}

/// The correlation id of a Produce v12 response and how many of its
/// partitions carry an error.
pub fn produce_outcome(body: &[u8]) -> Result<(i32, u64), String> {
    let hv = response_header_version(PRODUCE, PRODUCE_VERSION);
    let (rest, h) = parse_response_header(body, hv).map_err(|e| format!("response header: {e}"))?;
    let resp = parse_produce_response(rest, PRODUCE_VERSION)
        .map_err(|e| format!("produce response: {e}"))?;
    let errors = resp
        .responses
        .iter()
        .flat_map(|t| &t.partitions)
        .filter(|p| p.error_code != 0)
        .count() as u64;
    Ok((h.correlation_id, errors))
}
