//! Codec benchmarks: what the proxy does with every Produce request it
//! reads. Frame → request header → Produce body → the RecordBatch header
//! and CRC-32C of every partition's records.
//!
//! Two shapes: one partition with a 16 KiB batch, and 100 partitions with
//! a 1 KiB batch each. Each runs twice, once reporting bytes/s and once
//! requests/s; `produce_read_parts` splits the time between the message
//! and the batches (header + CRC-32C).
//!
//!   cargo bench --bench codec            (full measurement)
//!   cargo bench --bench codec -- --quick (a quick look)

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use kafka_dedup_proxy::codec::Frame;
use kafka_dedup_proxy::codec::api::PRODUCE;
use kafka_dedup_proxy::codec::header::{
    RequestHeader, parse_request_header_auto, put_request_header, request_header_version,
};
use kafka_dedup_proxy::codec::primitives::TaggedFields;
use kafka_dedup_proxy::codec::produce::{
    PartitionProduceData, ProduceRequest, TopicProduceData, TopicRef, encode_produce_request,
    parse_produce_request,
};
use kafka_dedup_proxy::codec::record_batch::{
    SimpleRecord, encode_record_batch, parse_single_batch,
};

/// The version a current Java client speaks.
const VERSION: i16 = 13;

/// A batch of `records` records whose values fill `bytes` in total.
fn batch(producer_id: i64, records: usize, bytes: usize) -> Bytes {
    let value = vec![b'v'; bytes / records];
    let records: Vec<_> = (0..records)
        .map(|i| SimpleRecord {
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(value.clone())),
        })
        .collect();
    encode_record_batch(producer_id, 0, 0, 1_700_000_000_000, 0, &records)
}

/// A whole Produce request frame, length prefix included.
fn produce_frame(partitions: usize, records: usize, bytes_per_batch: usize) -> Bytes {
    let request = ProduceRequest {
        transactional_id: None,
        acks: -1,
        timeout_ms: 30_000,
        topics: vec![TopicProduceData {
            topic: TopicRef::Id([7; 16]),
            partitions: (0..partitions)
                .map(|p| PartitionProduceData {
                    index: p as i32,
                    records: Some(batch(1000 + p as i64, records, bytes_per_batch)),
                    tagged_fields: TaggedFields::default(),
                })
                .collect(),
            tagged_fields: TaggedFields::default(),
        }],
        tagged_fields: TaggedFields::default(),
    };
    let header = RequestHeader {
        api_key: PRODUCE,
        api_version: VERSION,
        correlation_id: 42,
        client_id: Some("producer-1".into()),
        tagged_fields: TaggedFields::default(),
    };
    let mut body = BytesMut::new();
    put_request_header(
        &mut body,
        &header,
        request_header_version(PRODUCE, VERSION).unwrap(),
    );
    encode_produce_request(&mut body, &request, VERSION);
    Frame::from_body(&body).into_raw()
}

/// The proxy's read path for one Produce frame; returns the records seen.
fn read_produce(raw: &Bytes) -> i64 {
    let frame = Frame::from_raw(raw.clone());
    let body = frame.body();
    let (header, rest) = parse_request_header_auto(&body).expect("header");
    let message = body.slice(body.len() - rest.len()..);
    let request = parse_produce_request(&message, header.api_version).expect("produce");
    let mut records = 0i64;
    for topic in &request.topics {
        for partition in &topic.partitions {
            let batch = partition.records.as_ref().expect("records");
            let h = parse_single_batch(batch).expect("batch");
            records += i64::from(h.records_count);
        }
    }
    records
}

fn produce(c: &mut Criterion) {
    let shapes = [
        ("1x16KiB", produce_frame(1, 16, 16 * 1024)),
        ("100x1KiB", produce_frame(100, 4, 1024)),
    ];
    for (_, frame) in &shapes {
        assert!(read_produce(frame) > 0);
    }

    let mut bytes = c.benchmark_group("produce_read_bytes");
    for (name, frame) in &shapes {
        bytes.throughput(Throughput::Bytes(frame.len() as u64));
        bytes.bench_function(*name, |b| b.iter(|| read_produce(black_box(frame))));
    }
    bytes.finish();

    let mut requests = c.benchmark_group("produce_read_requests");
    for (name, frame) in &shapes {
        requests.throughput(Throughput::Elements(1));
        requests.bench_function(*name, |b| b.iter(|| read_produce(black_box(frame))));
    }
    requests.finish();

    // Where the time goes: the message without the batches, and the
    // batches' header + CRC alone.
    let mut parts = c.benchmark_group("produce_read_parts");
    for (name, frame) in &shapes {
        let body = Frame::from_raw(frame.clone()).body();
        let (header, rest) = parse_request_header_auto(&body).unwrap();
        let message = body.slice(body.len() - rest.len()..);
        let batches: Vec<Bytes> = parse_produce_request(&message, header.api_version)
            .unwrap()
            .topics
            .iter()
            .flat_map(|t| &t.partitions)
            .filter_map(|p| p.records.clone())
            .collect();
        parts.throughput(Throughput::Bytes(frame.len() as u64));
        parts.bench_function(format!("{name}/message_only"), |b| {
            b.iter(|| parse_produce_request(black_box(&message), VERSION).unwrap())
        });
        parts.bench_function(format!("{name}/batches_only"), |b| {
            b.iter(|| {
                black_box(&batches)
                    .iter()
                    .map(|r| parse_single_batch(r).unwrap().records_count)
                    .sum::<i32>()
            })
        });
    }
    parts.finish();
}

criterion_group!(benches, produce);
criterion_main!(benches);
