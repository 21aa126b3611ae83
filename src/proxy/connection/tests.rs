//! The request path over in-memory streams: a test plays the client on one
//! end and the broker on the other (hand-written answers for one edge at a
//! time; the integration tests use a real Kafka).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

use super::Link;
use crate::codec::api;
use crate::codec::frame::Frame;
use crate::codec::header::{
    RequestHeader, ResponseHeader, parse_request_prefix, parse_response_header, put_request_header,
    put_response_header,
};
use crate::codec::primitives::TaggedFields;
use crate::codec::produce::{
    PartitionProduceData, PartitionProduceResponse, ProduceRequest, ProduceResponse,
    TopicProduceData, TopicProduceResponse, TopicRef, encode_produce_request,
    encode_produce_response, parse_produce_response,
};
use crate::codec::record_batch::{SimpleRecord, encode_record_batch};
use crate::config::Config;
use crate::dedup::cache::Scope;
use crate::dedup::{Decision, ProduceDedup};
use crate::proxy::Shared;

const PRODUCE_V: i16 = 9;
/// Produce header v2 (flexible) and response header v1.
const PRODUCE_HV: i16 = 2;

struct Harness {
    client: DuplexStream,
    broker: DuplexStream,
    shared: Arc<Shared>,
    relay: tokio::task::JoinHandle<()>,
}

fn harness() -> Harness {
    let config = Config::parse_from(["kafka-dedup-proxy", "--upstream", "127.0.0.1:9"]);
    let dedup = crate::proxy::shared::dedup_for(&config).unwrap();
    let (shared, _listeners) = Shared::new(
        config,
        dedup,
        "127.0.0.1:9092".parse().unwrap(),
        None,
        None,
        None,
    );
    harness_on(&shared)
}

/// Another client connection to the same proxy (same caches).
fn harness_on(shared: &Arc<Shared>) -> Harness {
    let (client, proxy_client) = tokio::io::duplex(1 << 20);
    let (broker, proxy_broker) = tokio::io::duplex(1 << 20);
    let link = Link {
        peer: "127.0.0.1:1".parse().unwrap(),
        shared: Arc::clone(shared),
        id: 1,
        scope: Scope::Anonymous,
    };
    let (cr, cw) = tokio::io::split(proxy_client);
    let (ur, uw) = tokio::io::split(proxy_broker);
    let relay = tokio::spawn(link.relay(cr, cw, ur, uw));
    Harness {
        client,
        broker,
        shared: Arc::clone(shared),
        relay,
    }
}

fn batch(seq: i32) -> Bytes {
    let records = [SimpleRecord {
        key: None,
        value: Some(Bytes::from(format!("value-{seq}"))),
    }];
    encode_record_batch(7, 0, seq, 1, 0, &records)
}

fn produce_request(acks: i16, records: &Bytes) -> ProduceRequest {
    ProduceRequest {
        transactional_id: None,
        acks,
        timeout_ms: 30_000,
        topics: vec![TopicProduceData {
            topic: TopicRef::Name("t".into()),
            partitions: vec![PartitionProduceData {
                index: 0,
                records: Some(records.clone()),
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: TaggedFields::default(),
        }],
        tagged_fields: TaggedFields::default(),
    }
}

fn produce_frame(correlation_id: i32, acks: i16, records: &Bytes) -> Bytes {
    let mut buf = BytesMut::new();
    let header = RequestHeader {
        api_key: api::PRODUCE,
        api_version: PRODUCE_V,
        correlation_id,
        client_id: Some("test".into()),
        tagged_fields: TaggedFields::default(),
    };
    put_request_header(&mut buf, &header, PRODUCE_HV);
    encode_produce_request(&mut buf, &produce_request(acks, records), PRODUCE_V);
    Frame::from_body(&buf).into_raw()
}

/// A request of an API the proxy relays untouched (ListOffsets v1, body
/// not read by anyone here).
fn relayed_frame(correlation_id: i32) -> Bytes {
    let mut buf = BytesMut::new();
    let header = RequestHeader {
        api_key: 2,
        api_version: 1,
        correlation_id,
        client_id: None,
        tagged_fields: TaggedFields::default(),
    };
    put_request_header(&mut buf, &header, 1);
    buf.extend_from_slice(b"opaque");
    Frame::from_body(&buf).into_raw()
}

fn relayed_response(correlation_id: i32) -> Bytes {
    let mut body = correlation_id.to_be_bytes().to_vec();
    body.extend_from_slice(b"answer");
    Frame::from_body(&body).into_raw()
}

fn produce_response(correlation_id: i32, error_code: i16, base_offset: i64) -> Bytes {
    let mut partition = PartitionProduceResponse::success(0, base_offset, -1, 0);
    partition.error_code = error_code;
    let resp = ProduceResponse {
        responses: vec![TopicProduceResponse {
            topic: TopicRef::Name("t".into()),
            partitions: vec![partition],
            tagged_fields: TaggedFields::default(),
        }],
        throttle_time_ms: 0,
        tagged_fields: TaggedFields::default(),
    };
    let mut buf = BytesMut::new();
    let h = ResponseHeader {
        correlation_id,
        tagged_fields: TaggedFields::default(),
    };
    put_response_header(&mut buf, &h, 1);
    encode_produce_response(&mut buf, &resp, PRODUCE_V);
    Frame::from_body(&buf).into_raw()
}

/// The next frame's body, or `None` at end of stream.
async fn read_frame(s: &mut DuplexStream) -> Option<Bytes> {
    let mut len = [0u8; 4];
    s.read_exact(&mut len).await.ok()?;
    let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).await.ok()?;
    Some(Bytes::from(body))
}

async fn next_frame(s: &mut DuplexStream) -> Bytes {
    tokio::time::timeout(Duration::from_secs(10), read_frame(s))
        .await
        .expect("a frame in time")
        .expect("a frame, not the end of the stream")
}

/// (api key, correlation id) of a request the broker received.
fn request_id(body: &[u8]) -> (i16, i32) {
    let (_, (key, _, corr)) = parse_request_prefix(body).unwrap();
    (key, corr)
}

/// (correlation id, error code, base offset) of a Produce response.
fn produce_answer(body: &[u8]) -> (i32, i16, i64) {
    let (rest, h) = parse_response_header(body, 1).unwrap();
    let r = parse_produce_response(rest, PRODUCE_V).unwrap();
    let p = &r.responses[0].partitions[0];
    (h.correlation_id, p.error_code, p.base_offset)
}

fn correlation(body: &[u8]) -> i32 {
    i32::from_be_bytes([body[0], body[1], body[2], body[3]])
}

/// Sends `records` once through the proxy and has the broker accept it.
async fn commit(h: &mut Harness, correlation_id: i32, records: &Bytes, offset: i64) {
    h.client
        .write_all(&produce_frame(correlation_id, -1, records))
        .await
        .unwrap();
    let got = next_frame(&mut h.broker).await;
    assert_eq!(request_id(&got), (api::PRODUCE, correlation_id));
    h.broker
        .write_all(&produce_response(correlation_id, 0, offset))
        .await
        .unwrap();
    let answer = next_frame(&mut h.client).await;
    assert_eq!(produce_answer(&answer), (correlation_id, 0, offset));
}

#[tokio::test]
async fn an_answer_of_the_proxy_waits_behind_an_earlier_request_at_the_broker() {
    let mut h = harness();
    let b = batch(0);
    commit(&mut h, 1, &b, 42).await;
    // A relayed request, then a duplicate the proxy can answer at once.
    h.client.write_all(&relayed_frame(2)).await.unwrap();
    h.client.write_all(&produce_frame(3, -1, &b)).await.unwrap();
    assert_eq!(request_id(&next_frame(&mut h.broker).await), (2, 2));
    // The broker answers late; the duplicate's answer must not overtake.
    tokio::time::sleep(Duration::from_millis(50)).await;
    h.broker.write_all(&relayed_response(2)).await.unwrap();
    assert_eq!(correlation(&next_frame(&mut h.client).await), 2);
    assert_eq!(produce_answer(&next_frame(&mut h.client).await), (3, 0, 42));
    // The duplicate never reached the broker: its next request is this one.
    h.client.write_all(&relayed_frame(4)).await.unwrap();
    assert_eq!(request_id(&next_frame(&mut h.broker).await), (2, 4));
}

#[tokio::test]
async fn acks_zero_takes_no_slot_and_later_answers_still_match() {
    let mut h = harness();
    h.client
        .write_all(&produce_frame(1, 0, &batch(0)))
        .await
        .unwrap();
    h.client.write_all(&relayed_frame(2)).await.unwrap();
    assert_eq!(
        request_id(&next_frame(&mut h.broker).await),
        (api::PRODUCE, 1)
    );
    assert_eq!(request_id(&next_frame(&mut h.broker).await), (2, 2));
    h.broker.write_all(&relayed_response(2)).await.unwrap();
    assert_eq!(correlation(&next_frame(&mut h.client).await), 2);
}

/// One batch sent once: the broker has received it.
async fn sent_once() -> (Harness, Bytes) {
    let mut h = harness();
    let b = batch(0);
    h.client.write_all(&produce_frame(1, -1, &b)).await.unwrap();
    assert_eq!(
        request_id(&next_frame(&mut h.broker).await),
        (api::PRODUCE, 1)
    );
    (h, b)
}

/// One batch sent twice, pipelined: the broker has received the first.
async fn sent_twice() -> Harness {
    let mut h = harness();
    let b = batch(0);
    h.client.write_all(&produce_frame(1, -1, &b)).await.unwrap();
    h.client.write_all(&produce_frame(2, -1, &b)).await.unwrap();
    assert_eq!(
        request_id(&next_frame(&mut h.broker).await),
        (api::PRODUCE, 1)
    );
    h
}

#[tokio::test]
async fn a_retry_of_an_in_flight_batch_gets_the_originals_offset() {
    let mut h = sent_twice().await;
    h.broker
        .write_all(&produce_response(1, 0, 7))
        .await
        .unwrap();
    assert_eq!(produce_answer(&next_frame(&mut h.client).await), (1, 0, 7));
    assert_eq!(produce_answer(&next_frame(&mut h.client).await), (2, 0, 7));
    // The copy never reached the broker.
    h.client.write_all(&relayed_frame(3)).await.unwrap();
    assert_eq!(request_id(&next_frame(&mut h.broker).await), (2, 3));
}

#[tokio::test]
async fn a_retry_waiting_for_its_original_holds_back_the_producers_next_batch() {
    // The original is at the broker on one connection, unanswered; the
    // client gives up on it and, on a new connection, sends it again and
    // then its next batch (sequence 1).
    let (mut a, b0) = sent_once().await;
    let mut b = harness_on(&a.shared);
    b.client
        .write_all(&produce_frame(1, -1, &b0))
        .await
        .unwrap();
    b.client
        .write_all(&produce_frame(2, -1, &batch(1)))
        .await
        .unwrap();
    // Sequence 1 must not reach the broker ahead of sequence 0 (it would
    // be refused with OUT_OF_ORDER_SEQUENCE_NUMBER): nothing goes out on
    // the new connection while the original is in flight.
    let early = tokio::time::timeout(Duration::from_millis(300), read_frame(&mut b.broker)).await;
    assert!(early.is_err(), "a request went out ahead of the original");
    // The original lands: the retry is answered with its offset, then
    // sequence 1 goes out.
    a.broker
        .write_all(&produce_response(1, 0, 7))
        .await
        .unwrap();
    assert_eq!(produce_answer(&next_frame(&mut a.client).await), (1, 0, 7));
    assert_eq!(
        request_id(&next_frame(&mut b.broker).await),
        (api::PRODUCE, 2)
    );
    b.broker
        .write_all(&produce_response(2, 0, 8))
        .await
        .unwrap();
    assert_eq!(produce_answer(&next_frame(&mut b.client).await), (1, 0, 7));
    assert_eq!(produce_answer(&next_frame(&mut b.client).await), (2, 0, 8));
}

#[tokio::test]
async fn a_retry_whose_original_fails_goes_to_the_broker() {
    let mut h = sent_twice().await;
    // NOT_LEADER_OR_FOLLOWER: the original is not written.
    h.broker
        .write_all(&produce_response(1, 6, -1))
        .await
        .unwrap();
    assert_eq!(
        request_id(&next_frame(&mut h.broker).await),
        (api::PRODUCE, 2)
    );
    h.broker
        .write_all(&produce_response(2, 0, 9))
        .await
        .unwrap();
    assert_eq!(produce_answer(&next_frame(&mut h.client).await), (1, 6, -1));
    assert_eq!(produce_answer(&next_frame(&mut h.client).await), (2, 0, 9));
}

#[tokio::test]
async fn a_broker_gone_mid_request_closes_the_client_and_remembers_nothing() {
    let (mut h, b) = sent_once().await;
    drop(h.broker);
    // No answer: the client's connection closes.
    let end = tokio::time::timeout(Duration::from_secs(10), read_frame(&mut h.client)).await;
    assert_eq!(end.expect("closed in time"), None);
    tokio::time::timeout(Duration::from_secs(10), h.relay)
        .await
        .expect("relay ends")
        .unwrap();
    // The batch is fresh again: nothing was cached in doubt.
    let dedup: &ProduceDedup = &h.shared.dedup;
    let (decision, out) = dedup.decide(produce_request(-1, &b), &Scope::Anonymous, |t| {
        h.shared.topics.key_for(t)
    });
    assert!(matches!(decision, Decision::Forward(_)));
    assert_eq!(out.forwarded, 1);
}

#[tokio::test]
async fn a_client_gone_mid_request_still_commits_the_brokers_answer() {
    let (mut h, b) = sent_once().await;
    drop(h.client);
    // The broker's answer still resolves the batch: a retry on another
    // connection may be waiting for it.
    h.broker
        .write_all(&produce_response(1, 0, 5))
        .await
        .unwrap();
    drop(h.broker);
    tokio::time::timeout(Duration::from_secs(10), h.relay)
        .await
        .expect("relay ends")
        .unwrap();
    let (decision, _) = h
        .shared
        .dedup
        .decide(produce_request(-1, &b), &Scope::Anonymous, |t| {
            h.shared.topics.key_for(t)
        });
    let Decision::Answer(resp) = decision else {
        panic!("expected an answer from the cache");
    };
    assert_eq!(resp.responses[0].partitions[0].base_offset, 5);
}

#[tokio::test]
async fn a_client_that_does_not_read_stops_the_proxy_reading_its_broker() {
    let mut h = harness();
    // 128 pipelined requests (the most the proxy queues), 1 MiB answers:
    // twice the response budget.
    const N: i32 = 128;
    for c in 0..N {
        h.client.write_all(&relayed_frame(c)).await.unwrap();
    }
    let mut asked = Vec::new();
    for _ in 0..N {
        asked.push(correlation_of_request(&next_frame(&mut h.broker).await));
    }
    let big = |c: i32| {
        let mut body = c.to_be_bytes().to_vec();
        body.resize(1 << 20, b'.');
        Frame::from_body(&body).into_raw()
    };
    // The broker writes its answers while the client reads nothing: the
    // proxy takes the budget (64 MiB) and a frame or two, then the
    // broker's writes stall.
    let (mut broker_r, mut broker_w) = tokio::io::split(h.broker);
    let written = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let writer = {
        let written = Arc::clone(&written);
        tokio::spawn(async move {
            for c in asked {
                broker_w.write_all(&big(c)).await.unwrap();
                written.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            broker_w
        })
    };
    // Until the count stops moving (or everything was written).
    let mut stalled_at = usize::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = written.load(std::sync::atomic::Ordering::SeqCst);
        if now == stalled_at || now == N as usize {
            break;
        }
        stalled_at = now;
    }
    let stalled_at = written.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (60..80).contains(&stalled_at),
        "the broker wrote {stalled_at} answers of 1 MiB into a client that reads nothing"
    );
    // Once the client reads, everything arrives, in order.
    for c in 0..N {
        let got = next_frame(&mut h.client).await;
        assert_eq!((correlation(&got), got.len()), (c, 1 << 20));
    }
    let broker_w = writer.await.unwrap();
    drop((broker_w, &mut broker_r));
    drop(h.client);
    let _ = tokio::time::timeout(Duration::from_secs(5), h.relay).await;
}

fn correlation_of_request(body: &[u8]) -> i32 {
    request_id(body).1
}
