//! An acks=1 Produce is only ever answered by its broker (DESIGN.md
//! "Dedup": with acks=1 a leader can lose an acknowledged batch on
//! failover and the client's retry is what saves it, so the proxy never
//! answers one itself).
//!
//! Many times over: an idempotent batch is accepted through the proxy
//! (with acks=1; every other time with acks=all, which leaves it committed
//! in the proxy's cache); the leader's JVM is stopped (SIGSTOP), and the
//! test checks that
//! what it stopped really is that broker (every thread in state `T`, the
//! pid owns the broker's listening socket) and that the proxy's new
//! upstream connection goes to that very port; the same batch is sent again
//! with acks=1 on a new connection to the leader's proxy port, and nothing
//! may answer
//! while the broker is stopped. Once it resumes, the answer is the
//! broker's (its own duplicate check: error NONE, the original offset),
//! and the proxy's synthetic-answer counters did not move. Where the
//! batch was committed with acks=all, an acks=all copy is then answered
//! by the proxy: the batch was in the cache all along, and the counter
//! counts.
//!
//! The proxy is the binary, as a child process with its own metrics port,
//! so the counters are this test's alone.

mod common;

use std::collections::{HashMap, HashSet};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use common::*;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    InitProducerIdRequest, MetadataRequest, ProduceRequest, ProduceResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tokio::process::{Child, Command};

const BIN: &str = env!("CARGO_BIN_EXE_kafka-dedup-proxy");
const PRODUCE_VERSION: i16 = 9;
const METADATA_VERSION: i16 = 9;
/// Iterations when `KDP_ACKS1_ITERATIONS` is unset.
const DEFAULT_ITERATIONS: usize = 20;
/// How long nothing may answer the retry while the broker is stopped.
const SILENT_WINDOW: Duration = Duration::from_millis(1500);
/// Bound of one iteration.
const ITERATION_TIMEOUT: Duration = Duration::from_secs(30);
const RECORDS_PER_BATCH: usize = 2;
const PARTITIONS: usize = 3;
const NOT_LEADER_OR_FOLLOWER: i16 = 6;

// ---------------------------------------------------------------------------
// The proxy binary
// ---------------------------------------------------------------------------

/// The proxy as a child process: bootstrap at `base`, node N at
/// `base + 1 + N`, metrics at `base + 5`. Its own Metadata probe is made
/// rare, so every upstream connection to a broker during an iteration is a
/// client's.
struct ProxyProcess {
    child: Child,
    base: u16,
}

impl ProxyProcess {
    async fn spawn() -> ProxyProcess {
        let base = next_port_base();
        let child = Command::new(BIN)
            .env("KDP_UPSTREAM", &cluster().bootstrap)
            .env("KDP_LISTEN", format!("127.0.0.1:{base}"))
            .env("KDP_ADVERTISED_HOST", "127.0.0.1")
            .env("KDP_METRICS_LISTEN", format!("127.0.0.1:{}", base + 5))
            .env("KDP_UPSTREAM_PROBE_INTERVAL_SECONDS", "3600")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("proxy binary");
        let p = ProxyProcess { child, base };
        wait_listening(&p.bootstrap()).await;
        p
    }

    fn pid(&self) -> u32 {
        self.child.id().expect("the proxy is running")
    }

    fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.base)
    }

    fn broker_addr(&self, node: i32) -> String {
        format!("127.0.0.1:{}", i32::from(self.base) + 1 + node)
    }

    async fn metrics(&self) -> Counters {
        let (status, body) = http_get(&format!("http://127.0.0.1:{}/metrics", self.base + 5)).await;
        assert_eq!(status, 200, "proxy /metrics");
        let batches = "kdp_produce_batches_total";
        Counters {
            synthetic: metric_sum(&body, batches, "outcome=\"duplicate\"")
                + metric_sum(&body, batches, "outcome=\"coalesced\""),
            uncacheable: metric_sum(&body, batches, "outcome=\"uncacheable\""),
            bytes_saved: metric_sum(&body, "kdp_dedup_bytes_saved_total", ""),
        }
    }
}

async fn wait_listening(addr: &str) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// The proxy's produce counters that matter here.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Counters {
    /// Batches answered by the proxy itself (duplicate + coalesced).
    synthetic: f64,
    uncacheable: f64,
    bytes_saved: f64,
}

// ---------------------------------------------------------------------------
// Processes and sockets, from /proc
// ---------------------------------------------------------------------------

/// Scheduler state of every thread of `pid` (`R`, `S`, `T`, ...).
fn thread_states(pid: u32) -> Vec<char> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("stat")).ok())
        // "tid (comm) S ...": comm may hold spaces and parentheses.
        .filter_map(|s| s.rsplit_once(')')?.1.trim_start().chars().next())
        .collect()
}

fn all_stopped(pid: u32) -> bool {
    let s = thread_states(pid);
    !s.is_empty() && s.iter().all(|c| matches!(c, 'T' | 't'))
}

/// Socket inodes held open by `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|l| {
            l.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// One row of /proc/net/tcp{,6}.
struct TcpRow {
    local_port: u16,
    remote_port: u16,
    state: u8,
    inode: u64,
}

const TCP_ESTABLISHED: u8 = 0x01;
const TCP_LISTEN: u8 = 0x0A;

fn tcp_rows() -> Vec<TcpRow> {
    let port = |addr: &str| u16::from_str_radix(addr.rsplit_once(':')?.1, 16).ok();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|t| t.lines().skip(1).map(str::to_owned).collect::<Vec<_>>())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(TcpRow {
                local_port: port(f.get(1)?)?,
                remote_port: port(f.get(2)?)?,
                state: u8::from_str_radix(f.get(3)?, 16).ok()?,
                inode: f.get(9)?.parse().ok()?,
            })
        })
        .collect()
}

/// Whether `pid` holds the socket listening on `port`.
fn listens_on(pid: u32, port: u16) -> bool {
    let mine = socket_inodes(pid);
    tcp_rows()
        .iter()
        .any(|r| r.state == TCP_LISTEN && r.local_port == port && mine.contains(&r.inode))
}

/// Inodes of `pid`'s established connections to `port`.
fn connections_to(pid: u32, port: u16) -> HashSet<u64> {
    let mine = socket_inodes(pid);
    tcp_rows()
        .into_iter()
        .filter(|r| r.state == TCP_ESTABLISHED && r.remote_port == port && mine.contains(&r.inode))
        .map(|r| r.inode)
        .collect()
}

/// A broker JVM stopped with SIGSTOP; SIGCONT when dropped, whatever
/// happens in between.
struct Stopped {
    pid: u32,
}

impl Stopped {
    /// Stops `pid` and waits until every one of its threads is stopped.
    async fn stop(pid: u32) -> Stopped {
        assert!(signal(pid, "-STOP"), "SIGSTOP {pid}");
        let s = Stopped { pid };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_stopped(pid) {
            assert!(
                Instant::now() < deadline,
                "pid {pid} did not stop: thread states {:?}",
                thread_states(pid)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        s
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        signal(self.pid, "-CONT");
    }
}

fn signal(pid: u32, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success())
}

// ---------------------------------------------------------------------------
// Kafka requests
// ---------------------------------------------------------------------------

fn batch(producer_id: i64, epoch: i16, seq: i32, tag: &str) -> Bytes {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let records: Vec<Record> = (0..RECORDS_PER_BATCH)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: now,
            key: None,
            value: Some(Bytes::from(format!("{tag}-{}", seq as usize + i))),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        &records,
        &RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        },
    )
    .expect("record batch");
    buf.freeze()
}

fn produce(acks: i16, topic: &str, partition: i32, records: &Bytes) -> ProduceRequest {
    ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_string(topic.to_string())))
                .with_partition_data(vec![
                    PartitionProduceData::default()
                        .with_index(partition)
                        .with_records(Some(records.clone())),
                ]),
        ])
}

/// (error code, base offset) of the one partition of a response.
fn answer(resp: &ProduceResponse) -> (i16, i64) {
    let p = &resp.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

async fn init_producer_id(conn: &mut RawConn) -> (i64, i16) {
    let req = InitProducerIdRequest::default()
        .with_transactional_id(None)
        .with_transaction_timeout_ms(i32::MAX);
    // Retriable while the cluster settles: COORDINATOR_LOAD_IN_PROGRESS,
    // NOT_COORDINATOR, timeouts.
    for _ in 0..60 {
        let resp = conn.call(1, &req).await;
        match resp.error_code {
            0 => return (resp.producer_id.0, resp.producer_epoch),
            7 | 14 | 15 | 16 => tokio::time::sleep(Duration::from_millis(500)).await,
            e => panic!("InitProducerId failed with error {e}"),
        }
    }
    panic!("InitProducerId kept failing")
}

/// From the cluster itself (not through the proxy): the leader of
/// `partition` and every broker's port.
async fn leader_and_ports(topic: &str, partition: i32) -> (i32, HashMap<i32, u16>) {
    for _ in 0..100 {
        for port in &cluster().broker_ports {
            let addr = format!("127.0.0.1:{port}");
            if !matches!(
                tokio::time::timeout(
                    Duration::from_secs(2),
                    tokio::net::TcpStream::connect(&addr)
                )
                .await,
                Ok(Ok(_))
            ) {
                continue;
            }
            let mut conn = RawConn::connect(&addr).await;
            let req = MetadataRequest::default()
                .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                    TopicName(StrBytes::from_string(topic.to_string())),
                ))]));
            let Ok(resp) =
                tokio::time::timeout(Duration::from_secs(2), conn.call(METADATA_VERSION, &req))
                    .await
            else {
                continue;
            };
            let ports = resp
                .brokers
                .iter()
                .map(|b| (b.node_id.0, b.port as u16))
                .collect();
            let leader = resp
                .topics
                .first()
                .and_then(|t| t.partitions.iter().find(|p| p.partition_index == partition))
                .map(|p| p.leader_id.0)
                .unwrap_or(-1);
            if leader >= 0 {
                return (leader, ports);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("no leader for {topic}-{partition}")
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

/// What one iteration saw.
#[derive(Debug)]
struct Seen {
    first_acks: i16,
    partition: i32,
    node: i32,
    broker_pid: u32,
    broker_port: u16,
    first_offset: i64,
    /// (error code, base offset) of the answer after the broker resumed.
    answer: (i16, i64),
    answered_after_resume: Duration,
}

struct Producer {
    id: i64,
    epoch: i16,
}

/// `first_acks` is the acks of the first send: 1 as a client that retries
/// does, or -1 (all), which leaves the batch committed in the proxy's cache,
/// where an acks=1 retry must still not find it.
async fn one_iteration(
    proxy: &ProxyProcess,
    topic: &str,
    partition: i32,
    p: &Producer,
    seq: i32,
    first_acks: i16,
) -> Seen {
    let records = batch(p.id, p.epoch, seq, topic);
    let first = produce(first_acks, topic, partition, &records);
    let req = produce(1, topic, partition, &records);
    let start = proxy.metrics().await;
    let mut acks_one_sends = 0.0;

    // 1. The batch is accepted through the leader's proxy port.
    let (node, ports, first_offset) = loop {
        let (node, ports) = leader_and_ports(topic, partition).await;
        wait_listening(&proxy.broker_addr(node)).await;
        let mut conn = RawConn::connect(&proxy.broker_addr(node)).await;
        if first_acks == 1 {
            acks_one_sends += 1.0;
        }
        match answer(&conn.call(PRODUCE_VERSION, &first).await) {
            (0, offset) => break (node, ports, offset),
            (NOT_LEADER_OR_FOLLOWER, _) => tokio::time::sleep(Duration::from_millis(200)).await,
            (e, _) => panic!("first send of batch {seq} failed with error {e}"),
        }
    };
    assert!(first_offset >= 0);

    // 2. What is stopped is that broker: the pid `scripts/kafka` names
    // holds the node's listening socket, and every thread stops.
    let broker_port = ports[&node];
    let broker_pid: u32 = kafka(&["pid", &node.to_string()])
        .await
        .trim()
        .parse()
        .expect("scripts/kafka pid prints a pid");
    assert!(
        listens_on(broker_pid, broker_port),
        "pid {broker_pid} (node {node}) does not hold the listening socket of port {broker_port}"
    );
    let upstream_before = connections_to(proxy.pid(), broker_port);
    let stopped = Stopped::stop(broker_pid).await;

    // 3. The same batch again, on a new connection to that node's proxy
    // port; the proxy's one new upstream connection goes to the stopped
    // broker's port (the kernel completes the handshake for a stopped
    // process).
    let mut retry = RawConn::connect(&proxy.broker_addr(node)).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    let new_upstream = loop {
        let now: HashSet<u64> = connections_to(proxy.pid(), broker_port);
        let new: Vec<u64> = now.difference(&upstream_before).copied().collect();
        if !new.is_empty() {
            break new;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy opened no connection to port {broker_port} for the retry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        new_upstream.len(),
        1,
        "one client connection, one upstream connection"
    );
    let corr = retry.send(PRODUCE_VERSION, &req).await;
    acks_one_sends += 1.0;
    let early = tokio::time::timeout(SILENT_WINDOW, retry.recv::<ProduceRequest>(PRODUCE_VERSION))
        .await
        .ok();
    // The window means something only if the broker stayed stopped
    // through it (nothing else sent it SIGCONT).
    assert!(
        all_stopped(broker_pid),
        "broker pid {broker_pid} (node {node}) was resumed during the window by something else: \
         thread states {:?}",
        thread_states(broker_pid)
    );
    if let Some((c, resp)) = early {
        panic!(
            "an acks=1 retry was answered while its broker (node {node}, pid {broker_pid}) was \
             stopped: correlation {c}, (error, base offset) {:?}; proxy counters {:?} -> {:?}",
            answer(&resp),
            start,
            proxy.metrics().await
        );
    }
    let during = proxy.metrics().await;
    assert_eq!(
        during.synthetic, start.synthetic,
        "the proxy answered a batch itself"
    );
    assert_eq!(
        during.uncacheable - start.uncacheable,
        acks_one_sends,
        "every acks=1 send is classified uncacheable"
    );

    // 4. Resumed, the broker answers: its own duplicate check gives the
    // original offset.
    drop(stopped);
    let resumed = Instant::now();
    let (got, resp) = tokio::time::timeout(
        Duration::from_secs(20),
        retry.recv::<ProduceRequest>(PRODUCE_VERSION),
    )
    .await
    .expect("the broker answers once resumed");
    let answered_after_resume = resumed.elapsed();
    assert_eq!(got, corr, "correlation id");
    let end = proxy.metrics().await;
    assert_eq!(
        (end.synthetic, end.bytes_saved),
        (start.synthetic, start.bytes_saved),
        "the proxy answered a batch itself"
    );
    if first_acks == -1 {
        // Control: the batch was in the cache all along, and the counter
        // does count what the proxy answers: an acks=all copy is answered
        // from the cache.
        let all = produce(-1, topic, partition, &records);
        assert_eq!(
            answer(&retry.call(PRODUCE_VERSION, &all).await),
            (0, first_offset),
            "an acks=all copy gets the original offset"
        );
        assert_eq!(
            proxy.metrics().await.synthetic,
            end.synthetic + 1.0,
            "an acks=all copy of a committed batch is answered by the proxy"
        );
    }
    Seen {
        first_acks,
        partition,
        node,
        broker_pid,
        broker_port,
        first_offset,
        answer: answer(&resp),
        answered_after_resume,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_acks_one_retry_is_answered_only_by_its_broker_never_while_it_is_stopped() {
    let _g = cluster_lock().write().await;
    let topic = unique("acks1-retry");
    // One partition per broker (most likely): the iterations stop each
    // broker in turn.
    create_topic(&topic, PARTITIONS as u32).await;
    let proxy = ProxyProcess::spawn().await;
    let mut conn = RawConn::connect(&proxy.bootstrap()).await;
    let (id, epoch) = init_producer_id(&mut conn).await;
    let producer = Producer { id, epoch };
    let iterations = std::env::var("KDP_ACKS1_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS);

    let started = Instant::now();
    for i in 0..iterations {
        let partition = (i % PARTITIONS) as i32;
        let seq = (i / PARTITIONS * RECORDS_PER_BATCH) as i32;
        let first_acks = if i % 2 == 0 { 1 } else { -1 };
        let seen = tokio::time::timeout(
            ITERATION_TIMEOUT,
            one_iteration(&proxy, &topic, partition, &producer, seq, first_acks),
        )
        .await
        .unwrap_or_else(|_| panic!("iteration {i} took longer than {ITERATION_TIMEOUT:?}"));
        println!(
            "iteration {i}: first send acks={}, partition {} leader node {} (pid {}, port {}) \
             stopped, acks=1 retry unanswered for {:?}; after resume ({:?}) the broker answered \
             error {} base offset {} (first send: offset {})",
            seen.first_acks,
            seen.partition,
            seen.node,
            seen.broker_pid,
            seen.broker_port,
            SILENT_WINDOW,
            seen.answered_after_resume,
            seen.answer.0,
            seen.answer.1,
            seen.first_offset
        );
        assert_eq!(
            seen.answer,
            (0, seen.first_offset),
            "iteration {i}: the broker's own duplicate check answers with the original offset"
        );
    }
    println!(
        "{iterations} iterations in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

/// The pause above is only as good as the pid it stops. A node's pid file
/// outlives its process and pids are reused (pid_max may be 32768), so a
/// stale pid file of one cluster can name a broker of another cluster on
/// the same machine: `scripts/kafka pid` must not report it, or a pause, a
/// resume (SIGCONT) or a stop meant for a dead node reaches a live broker
/// of someone else's cluster, possibly one paused there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_pid_file_never_names_a_broker_of_another_cluster() {
    let _g = cluster_lock().read().await;
    cluster();
    let live = kafka(&["pid", "1"]).await.trim().to_string();
    let dir = std::env::temp_dir().join(unique("kdp-stale"));
    std::fs::create_dir_all(dir.join("node-1")).unwrap();
    std::fs::write(
        dir.join("cluster.env"),
        "KAFKA_VERSION=4.4.0\nNODES=3\nPORT_BASE=1\nSECURITY=0\n",
    )
    .unwrap();
    std::fs::write(dir.join("node-1/pid"), &live).unwrap();
    let out = Command::new(repo().join("scripts/kafka"))
        .args(["pid", "1"])
        .env("KDP_KAFKA_DIR", &dir)
        .output()
        .await
        .expect("scripts/kafka");
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        !out.status.success(),
        "a stale pid file named pid {live} (node 1 of the test cluster) as its own node 1: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}
