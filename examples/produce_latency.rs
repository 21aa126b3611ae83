//! Produce latency with microsecond resolution, at a fixed rate.
//!
//!   cargo run --release --example produce_latency -- BOOTSTRAP TOPIC [RATE] [SECONDS] [BATCH] [SIZE]
//!
//! An idempotent producer on one connection to BOOTSTRAP (InitProducerId,
//! then Produce v12 with acks=all): RATE records/s (default 2000) in
//! batches of BATCH records (default 10) of SIZE bytes (default 1024),
//! round-robin over partitions 0..2 of TOPIC, for SECONDS s (default 25;
//! the first second is warm-up and not counted). Requests go out on a fixed
//! schedule whatever the answers do (pipelined, as a real producer does),
//! and each latency runs from the request's scheduled time to its complete
//! response, so a stall is counted in full (no coordinated omission).
//!
//! Kafka's ProducerPerformance reports percentiles in whole milliseconds;
//! this measures what a proxy adds to a request's round trip with
//! microseconds. With a 1-node cluster the bootstrap broker leads every
//! partition, so the bootstrap connection is the produce connection.
//! Prints one JSON object on stdout.

use std::process::ExitCode;
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
use tokio::time::{Instant, MissedTickBehavior};

const PRODUCE_VERSION: i16 = 12;
const INIT_PRODUCER_ID: i16 = 22;
const PARTITIONS: i32 = 3;
const CLIENT_ID: &str = "kdp-produce-latency";

fn header(api_key: i16, api_version: i16, correlation_id: i32) -> BytesMut {
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

async fn read_frame(r: &mut OwnedReadHalf) -> std::io::Result<Bytes> {
    let len = r.read_i32().await?;
    let mut body = vec![0u8; len.max(0) as usize];
    r.read_exact(&mut body).await?;
    Ok(Bytes::from(body))
}

/// InitProducerId v0 (no transactional id): the producer id and epoch.
/// Retries while the transaction coordinator loads (a fresh cluster).
async fn init_producer_id(s: &mut TcpStream) -> Result<(i64, i16), String> {
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

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[i.clamp(1, sorted.len()) - 1]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 2 {
        eprintln!("usage: produce_latency BOOTSTRAP TOPIC [RATE] [SECONDS] [BATCH] [SIZE]");
        return ExitCode::from(2);
    }
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (bootstrap, topic) = (args[0].clone(), args[1].clone());
    let (rate, seconds, batch, size) = (num(2, 2000), num(3, 25), num(4, 10), num(5, 1024));
    match run(&bootstrap, &topic, rate, seconds, batch.max(1), size).await {
        Ok(json) => {
            println!("{json}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("produce_latency: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(
    bootstrap: &str,
    topic: &str,
    rate: u64,
    seconds: u64,
    batch: u64,
    size: u64,
) -> Result<String, String> {
    let mut stream = TcpStream::connect(bootstrap)
        .await
        .map_err(|e| format!("connect {bootstrap}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (pid, epoch) = init_producer_id(&mut stream).await?;
    let (mut r, mut w) = stream.into_split();

    let requests = rate * seconds / batch;
    let period = Duration::from_nanos(1_000_000_000 * batch / rate.max(1));
    let warmup = rate / batch; // the first second
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(i32, Instant)>();

    let reader = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(requests as usize);
        let mut errors = 0u64;
        let mut n = 0u64;
        let hv = response_header_version(PRODUCE, PRODUCE_VERSION);
        while let Some((corr, scheduled)) = rx.recv().await {
            let body = read_frame(&mut r).await.map_err(|e| e.to_string())?;
            let elapsed = scheduled.elapsed();
            let (rest, h) =
                parse_response_header(&body, hv).map_err(|e| format!("response header: {e}"))?;
            if h.correlation_id != corr {
                return Err(format!(
                    "correlation {} for request {corr}",
                    h.correlation_id
                ));
            }
            let resp = parse_produce_response(rest, PRODUCE_VERSION)
                .map_err(|e| format!("produce response: {e}"))?;
            errors += resp
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .filter(|p| p.error_code != 0)
                .count() as u64;
            if n >= warmup {
                lat.push(elapsed.as_micros() as u64);
            }
            n += 1;
        }
        Ok::<_, String>((lat, errors))
    });

    let value = Bytes::from(vec![b'x'; size as usize]);
    let mut sequences = [0i32; PARTITIONS as usize];
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    for k in 0..requests {
        let scheduled = tick.tick().await;
        let partition = (k % PARTITIONS as u64) as i32;
        let seq = &mut sequences[partition as usize];
        let records: Vec<_> = (0..batch)
            .map(|_| SimpleRecord {
                key: None,
                value: Some(value.clone()),
            })
            .collect();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let batch_bytes = encode_record_batch(pid, epoch, *seq, now_ms, 0, &records);
        *seq += batch as i32;
        let req = ProduceRequest {
            transactional_id: None,
            acks: -1,
            timeout_ms: 30_000,
            topics: vec![TopicProduceData {
                topic: TopicRef::Name(topic.to_string()),
                partitions: vec![PartitionProduceData {
                    index: partition,
                    records: Some(batch_bytes),
                    tagged_fields: TaggedFields::default(),
                }],
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: TaggedFields::default(),
        };
        let corr = 2 + k as i32;
        let mut buf = header(PRODUCE, PRODUCE_VERSION, corr);
        encode_produce_request(&mut buf, &req, PRODUCE_VERSION);
        tx.send((corr, scheduled))
            .map_err(|_| "the response reader stopped".to_string())?;
        w.write_all(Frame::from_body(&buf).raw())
            .await
            .map_err(|e| e.to_string())?;
    }
    drop(tx);
    let (mut lat, errors) = reader
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("reading responses: {e}"))?;
    lat.sort_unstable();
    let avg = lat.iter().sum::<u64>() as f64 / lat.len().max(1) as f64;
    Ok(format!(
        "{{\"requests\":{},\"records_per_request\":{batch},\"rate\":{rate},\"errors\":{errors},\
         \"avg_us\":{avg:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"p999_us\":{},\"max_us\":{}}}",
        lat.len(),
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().copied().unwrap_or(0),
    ))
}
