//! Raw producers speaking through the independent `kafka-protocol` crate:
//! idempotent and transactional Produce, InitProducerId, the transaction
//! coordinator calls, and the canary, a client that keeps producing one
//! record at a time while a scenario attacks the proxy.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use kafka_dedup_proxy::codec::record_batch::{SimpleRecord, encode_record_batch};
use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::produce_response::PartitionProduceResponse;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, FindCoordinatorRequest, InitProducerIdRequest, ProduceRequest,
    ProduceResponse, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::RawConn;
use super::verifiable::Record;

pub const PRODUCE_VERSION: i16 = 9;

/// Kafka error codes the scenarios look for.
pub mod errors {
    pub const NONE: i16 = 0;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_TXN_STATE: i16 = 48;
    pub const CONCURRENT_TRANSACTIONS: i16 = 51;
    pub const PRODUCER_FENCED: i16 = 90;
}

fn retriable_coordinator_error(e: i16) -> bool {
    matches!(e, 7 | 14 | 15 | 16 | 51)
}

/// InitProducerId; `transactional_id` None for an idempotent producer.
pub async fn init_producer_id(conn: &mut RawConn, transactional_id: Option<&str>) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
        )
        .with_transaction_timeout_ms(60_000);
    for _ in 0..120 {
        let resp = conn.call(1, &req).await;
        match resp.error_code {
            0 => return (resp.producer_id.0, resp.producer_epoch),
            e if retriable_coordinator_error(e) => {
                tokio::time::sleep(Duration::from_millis(250)).await
            }
            e => panic!("InitProducerId failed with error {e}"),
        }
    }
    panic!("InitProducerId kept failing")
}

/// The proxy's address of the transaction coordinator of `transactional_id`.
pub async fn txn_coordinator(conn: &mut RawConn, transactional_id: &str) -> i32 {
    let req = FindCoordinatorRequest::default()
        .with_key(StrBytes::from_string(transactional_id.to_string()))
        .with_key_type(1);
    for _ in 0..120 {
        let resp = conn.call(2, &req).await;
        if resp.error_code == 0 {
            return resp.node_id.0;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("no transaction coordinator for {transactional_id}")
}

/// AddPartitionsToTxn v3 for one partition; returns its error code.
pub async fn add_partition_to_txn(
    conn: &mut RawConn,
    transactional_id: &str,
    pid: i64,
    epoch: i16,
    topic: &str,
    partition: i32,
) -> i16 {
    let req = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TransactionalId(StrBytes::from_string(
            transactional_id.to_string(),
        )))
        .with_v3_and_below_producer_id(ProducerId(pid))
        .with_v3_and_below_producer_epoch(epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partitions(vec![partition]),
        ]);
    for _ in 0..120 {
        let resp = conn.call(3, &req).await;
        let code = resp
            .results_by_topic_v3_and_below
            .iter()
            .flat_map(|t| t.results_by_partition.iter())
            .map(|p| p.partition_error_code)
            .find(|c| *c != 0)
            .unwrap_or(0);
        if !retriable_coordinator_error(code) {
            return code;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("AddPartitionsToTxn kept failing")
}

/// An uncompressed batch of `n` records with values "<tag>-<seq+i>".
pub fn batch(pid: i64, epoch: i16, seq: i32, n: usize, tag: &str, transactional: bool) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<_> = (0..n)
        .map(|i| SimpleRecord {
            key: None,
            value: Some(Bytes::from(format!("{tag}-{}", seq as usize + i))),
        })
        .collect();
    let attributes = if transactional { 0x10 } else { 0 };
    encode_record_batch(pid, epoch, seq, now, attributes, &records)
}

pub fn produce_request(
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> ProduceRequest {
    ProduceRequest::default()
        .with_transactional_id(
            transactional_id.map(|t| TransactionalId(StrBytes::from_string(t.to_string()))),
        )
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records)),
                ]),
        ])
}

pub fn first_partition(resp: &ProduceResponse) -> PartitionProduceResponse {
    resp.responses
        .iter()
        .flat_map(|t| t.partition_responses.iter())
        .next()
        .cloned()
        .expect("one partition in the produce response")
}

/// Produces `records` once on a new connection to `addr`: (error, offset).
pub async fn produce_once(
    addr: &str,
    transactional_id: Option<&str>,
    topic: &str,
    partition: i32,
    records: Bytes,
) -> (i16, i64) {
    let mut conn = RawConn::connect(addr).await;
    let resp = tokio::time::timeout(
        Duration::from_secs(40),
        conn.call(
            PRODUCE_VERSION,
            &produce_request(transactional_id, topic, partition, records),
        ),
    )
    .await
    .expect("a produce answer within 40 s");
    let p = first_partition(&resp);
    (p.error_code, p.base_offset)
}

/// A client that keeps producing while something else goes on: one raw
/// idempotent batch of one record at a time, on one connection, every
/// `every`. Each answer must be error NONE at the next offset. The values
/// are the sequence numbers in decimal, so VerifiableConsumer can read the
/// topic back and the scenario can judge delivery as for the Java clients.
pub struct Canary {
    stop: CancellationToken,
    task: JoinHandle<CanaryResult>,
    ok: watch::Receiver<usize>,
    acked: Arc<Mutex<Vec<Record>>>,
}

#[derive(Debug, Default, Clone)]
pub struct CanaryResult {
    pub ok: usize,
    pub failures: Vec<String>,
    pub max_latency: Duration,
    /// Every record acknowledged with error NONE: (partition, offset, value).
    pub acked: Vec<Record>,
}

/// One record whose value is `value`, uncompressed.
pub fn value_batch(pid: i64, epoch: i16, seq: i32, value: &str) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records = [SimpleRecord {
        key: None,
        value: Some(Bytes::from(value.to_string())),
    }];
    encode_record_batch(pid, epoch, seq, now, 0, &records)
}

impl Canary {
    /// `leader_addr` is the proxy's address of the partition's leader.
    pub async fn start(leader_addr: &str, topic: &str, partition: i32, every: Duration) -> Canary {
        let mut conn = RawConn::connect(leader_addr).await;
        let (pid, epoch) = init_producer_id(&mut conn, None).await;
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        let topic = topic.to_string();
        let (ok_tx, ok) = watch::channel(0usize);
        let acked: Arc<Mutex<Vec<Record>>> = Arc::default();
        let acked2 = Arc::clone(&acked);
        let task = tokio::spawn(async move {
            let mut r = CanaryResult::default();
            let mut last_offset = -1i64;
            let mut seq = 0;
            while !s2.is_cancelled() {
                let value = seq.to_string();
                let b = value_batch(pid, epoch, seq, &value);
                let t0 = Instant::now();
                let answer = tokio::time::timeout(
                    Duration::from_secs(10),
                    conn.call(
                        PRODUCE_VERSION,
                        &produce_request(None, &topic, partition, b),
                    ),
                )
                .await;
                let took = t0.elapsed();
                r.max_latency = r.max_latency.max(took);
                match answer {
                    Ok(resp) => {
                        let p = first_partition(&resp);
                        if p.error_code != 0 {
                            r.failures
                                .push(format!("seq {seq}: error {}", p.error_code));
                        } else if p.base_offset <= last_offset {
                            r.failures.push(format!(
                                "seq {seq}: offset {} after {last_offset}",
                                p.base_offset
                            ));
                        } else {
                            last_offset = p.base_offset;
                            r.ok += 1;
                            acked2
                                .lock()
                                .unwrap()
                                .push((partition, p.base_offset, value));
                            ok_tx.send_modify(|n| *n += 1);
                        }
                    }
                    Err(_) => {
                        r.failures.push(format!("seq {seq}: no answer in 10 s"));
                        break;
                    }
                }
                seq += 1;
                tokio::select! {
                    _ = s2.cancelled() => {}
                    _ = tokio::time::sleep(every) => {}
                }
            }
            r
        });
        Canary {
            stop,
            task,
            ok,
            acked,
        }
    }

    /// Waits until `more` further batches were acknowledged.
    pub async fn wait_more(&self, more: usize, within: Duration) -> bool {
        let mut rx = self.ok.clone();
        let want = *rx.borrow() + more;
        let reached = tokio::time::timeout(within, rx.wait_for(|n| *n >= want)).await;
        matches!(reached, Ok(Ok(_)))
    }

    pub async fn stop(self) -> CanaryResult {
        self.stop.cancel();
        // A closed connection panics the raw client: that is a failure too.
        let mut r = self.task.await.unwrap_or_else(|e| CanaryResult {
            failures: vec![format!("canary connection failed: {e}")],
            ..CanaryResult::default()
        });
        r.acked = self.acked.lock().unwrap().clone();
        r.ok = r.acked.len();
        r
    }
}

pub async fn end_txn(conn: &mut RawConn, tid: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
    let req = kafka_protocol::messages::EndTxnRequest::default()
        .with_transactional_id(TransactionalId(StrBytes::from_string(tid.to_string())))
        .with_producer_id(ProducerId(pid))
        .with_producer_epoch(epoch)
        .with_committed(commit);
    for _ in 0..120 {
        let resp = conn.call(3, &req).await;
        if !retriable_coordinator_error(resp.error_code) {
            return resp.error_code;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("EndTxn kept failing")
}
