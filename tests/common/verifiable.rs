//! Reliability support: Kafka's own VerifiableProducer and
//! VerifiableConsumer through the proxy (judged the way Kafka's system
//! tests judge delivery), a frame-aware fault relay between the proxy and
//! the brokers, broker kill and pause guards, the proxy binary as a child
//! process on fixed ports, raw idempotent and transactional producers, and
//! process memory and file-descriptor readings.
//!
//! Every scenario reports one `RELIABILITY {json}` line on stdout and, when
//! `KDP_RELIABILITY_RESULTS` names a file, appends the same JSON there
//! (`scripts/reliability` builds its summary table from it).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write as _;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
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
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{RawConn, cluster, harness, http_get, kafka, metric_sum, repo, unique};

pub const PROXY_BIN: &str = env!("CARGO_BIN_EXE_kafka-dedup-proxy");

// ---------------------------------------------------------------------------
// Reporting
// ---------------------------------------------------------------------------

/// Prints one scenario's result and appends it to `$KDP_RELIABILITY_RESULTS`.
pub fn report(scenario: &str, mut fields: Value) {
    fields["scenario"] = json!(scenario);
    let line = fields.to_string();
    println!("RELIABILITY {line}");
    if let Ok(path) = std::env::var("KDP_RELIABILITY_RESULTS")
        && let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
    {
        let _ = writeln!(f, "{line}");
    }
}

// ---------------------------------------------------------------------------
// VerifiableProducer / VerifiableConsumer
// ---------------------------------------------------------------------------

/// One record VerifiableProducer saw acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub partition: i32,
    pub offset: i64,
    pub value: i64,
}

/// One record VerifiableConsumer read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Consumed {
    pub partition: i32,
    pub offset: i64,
    pub value: i64,
}

#[derive(Debug, Default, Clone)]
pub struct ProducerOutcome {
    pub acked: Vec<Acked>,
    pub errors: Vec<String>,
    /// From the tool's final `tool_data` line (absent when it was killed).
    pub sent: Option<u64>,
    pub exited_cleanly: bool,
    pub stderr_tail: Vec<String>,
}

/// Client settings every scenario's producer uses: idempotence on,
/// acks=all, retries without limit inside a delivery timeout that outlasts
/// every injected fault.
pub const PRODUCER_DEFAULTS: &[(&str, &str)] = &[
    ("enable.idempotence", "true"),
    ("acks", "all"),
    ("retries", "2147483647"),
    ("max.in.flight.requests.per.connection", "5"),
    ("delivery.timeout.ms", "110000"),
    ("request.timeout.ms", "5000"),
    ("retry.backoff.ms", "100"),
    ("reconnect.backoff.ms", "50"),
    ("reconnect.backoff.max.ms", "1000"),
    ("linger.ms", "5"),
    ("batch.size", "16384"),
    ("metadata.max.age.ms", "5000"),
];

fn write_props(settings: &[(&str, &str)], extra: &[(&str, &str)]) -> std::path::PathBuf {
    let mut merged: BTreeMap<&str, &str> = settings.iter().copied().collect();
    merged.extend(extra.iter().copied());
    let path = std::env::temp_dir().join(format!("{}.properties", unique("kdp-rel")));
    let text: String = merged.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&path, text).expect("write client properties");
    path
}

fn last_lines(lines: &Arc<Mutex<Vec<String>>>) -> Vec<String> {
    let l = lines.lock().unwrap();
    l[l.len().saturating_sub(20)..].to_vec()
}

/// Keeps the last 200 lines of a child's stderr.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    if let Some(err) = child.stderr.take() {
        let l2 = Arc::clone(&lines);
        tokio::spawn(async move {
            let mut r = BufReader::new(err).lines();
            while let Ok(Some(line)) = r.next_line().await {
                let mut l = l2.lock().unwrap();
                if l.len() >= 200 {
                    l.remove(0);
                }
                l.push(line);
            }
        });
    }
    lines
}

/// `org.apache.kafka.tools.VerifiableProducer` running in the background:
/// it writes increasing integers and prints a JSON line per acknowledged
/// record (partition and offset).
pub struct VerifiableProducer {
    child: Child,
    state: Arc<Mutex<ProducerOutcome>>,
    acked_count: Arc<AtomicUsize>,
    stdout_task: JoinHandle<()>,
    stderr: Arc<Mutex<Vec<String>>>,
    props: std::path::PathBuf,
}

impl VerifiableProducer {
    /// Starts producing `max_messages` records at about `throughput` per
    /// second to `topic` through `bootstrap`.
    pub async fn start(
        bootstrap: &str,
        topic: &str,
        max_messages: usize,
        throughput: usize,
        extra: &[(&str, &str)],
    ) -> VerifiableProducer {
        let props = write_props(PRODUCER_DEFAULTS, extra);
        let mut child = Command::new(repo().join("scripts/kafka"))
            .args([
                "run",
                "org.apache.kafka.tools.VerifiableProducer",
                "--topic",
                topic,
                "--bootstrap-server",
                bootstrap,
                "--max-messages",
                &max_messages.to_string(),
                "--throughput",
                &throughput.to_string(),
                "--command-config",
                props.to_str().unwrap(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("VerifiableProducer");
        let stderr = collect_stderr(&mut child);
        let state: Arc<Mutex<ProducerOutcome>> = Arc::default();
        let acked_count = Arc::new(AtomicUsize::new(0));
        let out = child.stdout.take().unwrap();
        let (s2, a2) = (Arc::clone(&state), Arc::clone(&acked_count));
        let stdout_task = tokio::spawn(async move {
            let mut r = BufReader::new(out).lines();
            while let Ok(Some(line)) = r.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let mut s = s2.lock().unwrap();
                match v["name"].as_str() {
                    Some("producer_send_success") => {
                        let value = v["value"].as_str().and_then(|x| x.parse().ok());
                        if let (Some(p), Some(o), Some(value)) =
                            (v["partition"].as_i64(), v["offset"].as_i64(), value)
                        {
                            s.acked.push(Acked {
                                partition: p as i32,
                                offset: o,
                                value,
                            });
                            a2.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Some("producer_send_error") if s.errors.len() < 50 => {
                        s.errors.push(format!(
                            "value {}: {} {}",
                            v["value"], v["exception"], v["message"]
                        ));
                    }
                    Some("tool_data") => s.sent = v["sent"].as_u64(),
                    _ => {}
                }
            }
        });
        VerifiableProducer {
            child,
            state,
            acked_count,
            stdout_task,
            stderr,
            props,
        }
    }

    pub fn acked(&self) -> usize {
        self.acked_count.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` records are acknowledged (false on timeout
    /// or when the tool exited first).
    pub async fn wait_acked(&mut self, n: usize, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            if Instant::now() >= deadline || matches!(self.child.try_wait(), Ok(Some(_))) {
                return self.acked() >= n;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }

    /// Waits for the tool to finish (killing it after `within`) and returns
    /// what it acknowledged.
    pub async fn finish(mut self, within: Duration) -> ProducerOutcome {
        let status = match tokio::time::timeout(within, self.child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                None
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.stdout_task).await;
        let _ = std::fs::remove_file(&self.props);
        let mut out = self.state.lock().unwrap().clone();
        out.exited_cleanly = status.is_some_and(|s| s.success());
        out.stderr_tail = last_lines(&self.stderr);
        out
    }
}

/// Reads `topic` from the beginning with `VerifiableConsumer --verbose` (a
/// fresh consumer group) until every value in `expect` was seen and nothing
/// new arrived for 3 s, or `within` passed.
pub async fn consume_verifiable(
    bootstrap: &str,
    topic: &str,
    expect: &HashSet<i64>,
    within: Duration,
) -> Vec<Consumed> {
    let group = unique("kdp-rel-group");
    let mut child = Command::new(repo().join("scripts/kafka"))
        .args([
            "run",
            "org.apache.kafka.tools.VerifiableConsumer",
            "--topic",
            topic,
            "--group-id",
            &group,
            "--bootstrap-server",
            bootstrap,
            "--verbose",
            "--reset-policy",
            "earliest",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("VerifiableConsumer");
    let out = child.stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let deadline = tokio::time::Instant::now() + within;
    let mut consumed = Vec::new();
    let mut missing: HashSet<i64> = expect.clone();
    let mut last_record = tokio::time::Instant::now();
    let quiet = Duration::from_secs(3);
    loop {
        let wake = if missing.is_empty() {
            (last_record + quiet).min(deadline)
        } else {
            deadline
        };
        match tokio::time::timeout_at(wake, lines.next_line()).await {
            Ok(Ok(Some(line))) => {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if v["name"] != "record_data" {
                    continue;
                }
                let value = v["value"].as_str().and_then(|x| x.parse().ok());
                if let (Some(p), Some(o), Some(value)) =
                    (v["partition"].as_i64(), v["offset"].as_i64(), value)
                {
                    missing.remove(&value);
                    consumed.push(Consumed {
                        partition: p as i32,
                        offset: o,
                        value,
                    });
                    last_record = tokio::time::Instant::now();
                }
            }
            // the tool ended, or the quiet period or deadline passed
            _ => break,
        }
    }
    let _ = child.start_kill();
    let _ = child.wait().await;
    consumed
}

/// Delivery judged as Kafka's ProduceConsumeValidateTest does, plus the
/// offsets: every acknowledged offset must hold the acknowledged value.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub acked: usize,
    pub consumed: usize,
    /// Acknowledged values never consumed.
    pub lost: usize,
    /// Extra copies of any value.
    pub duplicated: usize,
    /// Per partition, a value not greater than the one before it.
    pub out_of_order: usize,
    /// Acknowledged (partition, offset) holding another value, or none.
    pub offset_mismatch: usize,
    /// Consumed values whose send the producer did not see acknowledged
    /// (allowed: the send's outcome was unknown to the client).
    pub unacked_consumed: usize,
}

impl Verdict {
    pub fn is_clean(&self) -> bool {
        self.lost == 0
            && self.duplicated == 0
            && self.out_of_order == 0
            && self.offset_mismatch == 0
    }

    pub fn json(&self) -> Value {
        json!({
            "acked": self.acked,
            "consumed": self.consumed,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "offset_mismatch": self.offset_mismatch,
            "unacked_consumed": self.unacked_consumed,
        })
    }
}

pub fn judge(acked: &[Acked], consumed: &[Consumed]) -> Verdict {
    let mut copies: HashMap<i64, usize> = HashMap::new();
    let mut at: HashMap<(i32, i64), i64> = HashMap::new();
    for c in consumed {
        *copies.entry(c.value).or_default() += 1;
        at.insert((c.partition, c.offset), c.value);
    }
    let acked_values: HashSet<i64> = acked.iter().map(|a| a.value).collect();
    let lost = acked_values
        .iter()
        .filter(|v| !copies.contains_key(v))
        .count();
    let duplicated = copies.values().map(|n| n - 1).sum();
    let offset_mismatch = acked
        .iter()
        .filter(|a| at.get(&(a.partition, a.offset)) != Some(&a.value))
        .count();
    let mut by_partition: BTreeMap<i32, Vec<(i64, i64)>> = BTreeMap::new();
    for c in consumed {
        by_partition
            .entry(c.partition)
            .or_default()
            .push((c.offset, c.value));
    }
    let mut out_of_order = 0;
    for recs in by_partition.values_mut() {
        recs.sort_unstable();
        recs.dedup_by_key(|r| r.0); // a re-read after a rebalance is not a copy in the log
        out_of_order += recs.windows(2).filter(|w| w[1].1 <= w[0].1).count();
    }
    let unacked_consumed = copies.keys().filter(|v| !acked_values.contains(v)).count();
    Verdict {
        acked: acked_values.len(),
        consumed: consumed.len(),
        lost,
        duplicated,
        out_of_order,
        offset_mismatch,
        unacked_consumed,
    }
}

/// Duplicates counted from the log itself: the consumer may re-read
/// offsets after a rebalance, which is not a duplicate record. `judge`
/// counts copies of values; this drops re-reads of the same offset first.
pub fn distinct_offsets(consumed: &[Consumed]) -> Vec<Consumed> {
    let mut seen = HashSet::new();
    consumed
        .iter()
        .filter(|c| seen.insert((c.partition, c.offset)))
        .copied()
        .collect()
}

/// Consumes `topic` through `bootstrap` and judges it against `acked`.
pub async fn verify_delivery(bootstrap: &str, topic: &str, acked: &[Acked]) -> Verdict {
    let expect: HashSet<i64> = acked.iter().map(|a| a.value).collect();
    let consumed = consume_verifiable(bootstrap, topic, &expect, Duration::from_secs(90)).await;
    judge(acked, &distinct_offsets(&consumed))
}

// ---------------------------------------------------------------------------
// Cluster helpers and fault guards
// ---------------------------------------------------------------------------

pub async fn leader_of(topic: &str, partition: i32) -> i32 {
    let out = harness(&[
        "topic-leader",
        "--bootstrap",
        &cluster().bootstrap,
        "--topic",
        topic,
        "--partition",
        &partition.to_string(),
        "--wait-ms",
        "30000",
    ])
    .await;
    out["leader"]
        .as_i64()
        .unwrap_or_else(|| panic!("no leader for {topic}-{partition}: {out}")) as i32
}

/// Waits until every node runs and reports all brokers (after a restart).
pub async fn wait_cluster_whole() {
    let nodes = cluster().broker_ports.len().to_string();
    harness(&[
        "cluster",
        "--bootstrap",
        &cluster().bootstrap,
        "--expect-nodes",
        &nodes,
        "--nodes-only",
        "--wait-ms",
        "90000",
    ])
    .await;
}

/// Creates a topic whose partitions are replicated on every node.
pub async fn create_replicated_topic(topic: &str, partitions: u32) {
    super::create_topic(topic, partitions).await;
}

fn signal(pid: &str, sig: &str) -> bool {
    std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .is_ok_and(|s| s.success())
}

/// A broker killed with SIGKILL; restarted when dropped if the test did
/// not restart it itself.
pub struct KilledBroker {
    pub node: i32,
    restarted: bool,
}

impl KilledBroker {
    pub async fn kill(node: i32) -> KilledBroker {
        let pid = kafka(&["pid", &node.to_string()]).await.trim().to_string();
        assert!(signal(&pid, "-KILL"), "SIGKILL broker {node} (pid {pid})");
        // the pid file outlives the process: wait until it is gone
        for _ in 0..100 {
            if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        KilledBroker {
            node,
            restarted: false,
        }
    }

    pub async fn restart(mut self) {
        kafka(&["restart-node", &self.node.to_string()]).await;
        self.restarted = true;
    }
}

impl Drop for KilledBroker {
    fn drop(&mut self) {
        if !self.restarted {
            let _ = std::process::Command::new(repo().join("scripts/kafka"))
                .args(["restart-node", &self.node.to_string()])
                .stdout(Stdio::null())
                .status();
        }
    }
}

/// A broker paused with SIGSTOP; resumed when dropped, whatever happens.
pub struct PausedBroker(String);

impl PausedBroker {
    pub async fn pause(node: i32) -> PausedBroker {
        let pid = kafka(&["pid", &node.to_string()]).await.trim().to_string();
        assert!(signal(&pid, "-STOP"), "SIGSTOP broker {node}");
        PausedBroker(pid)
    }
}

impl Drop for PausedBroker {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

// ---------------------------------------------------------------------------
// Fault relay
// ---------------------------------------------------------------------------

/// Counts of what the relay did.
#[derive(Debug, Default)]
pub struct RelayStats {
    pub connections: AtomicUsize,
    /// Connections reset (RST both ways) by `reset_all`.
    pub resets: AtomicUsize,
    /// Produce responses swallowed, their connection reset: the broker
    /// wrote the batch, the proxy never heard.
    pub lost_responses: AtomicUsize,
    /// Frames held back by an injected delay.
    pub delayed_frames: AtomicUsize,
    /// Frames (and new connections) held by a black hole.
    pub held: AtomicUsize,
    pub blackholes: AtomicUsize,
}

struct RelayCtl {
    stats: RelayStats,
    reset: watch::Sender<u64>,
    blackhole: watch::Sender<bool>,
    delay_ms: AtomicU64,
    lose_produce_responses: AtomicUsize,
    shutdown: CancellationToken,
}

impl RelayCtl {
    /// Waits while the black hole is on; true when anything was held.
    async fn pass_black_hole(&self) -> bool {
        let mut rx = self.blackhole.subscribe();
        let mut held = false;
        while *rx.borrow_and_update() {
            held = true;
            if rx.changed().await.is_err() {
                break;
            }
        }
        held
    }
}

/// A TCP relay per broker between the proxy and the cluster (the proxy
/// dials it through `--broker-address-map`). It parses frames, so its
/// faults can hit the worst moments exactly: a Produce response lost after
/// the broker wrote the batch, connections reset mid-stream, every frame
/// delayed, or nothing delivered at all for a while (a black hole: bytes
/// and new connections are held, as TCP holds them across a partition).
pub struct Relay {
    /// (real broker address, relay address)
    pub routes: Vec<(String, String)>,
    ctl: Arc<RelayCtl>,
}

impl Relay {
    pub async fn start(brokers: &[String]) -> Relay {
        let ctl = Arc::new(RelayCtl {
            stats: RelayStats::default(),
            reset: watch::channel(0).0,
            blackhole: watch::channel(false).0,
            delay_ms: AtomicU64::new(0),
            lose_produce_responses: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
        });
        let mut routes = Vec::new();
        for real in brokers {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            routes.push((real.clone(), listener.local_addr().unwrap().to_string()));
            let (real, ctl) = (real.clone(), Arc::clone(&ctl));
            tokio::spawn(async move {
                loop {
                    let accepted = tokio::select! {
                        _ = ctl.shutdown.cancelled() => return,
                        a = listener.accept() => a,
                    };
                    let Ok((client, _)) = accepted else { continue };
                    tokio::spawn(relay_conn(client, real.clone(), Arc::clone(&ctl)));
                }
            });
        }
        Relay { routes, ctl }
    }

    /// Starts a relay in front of every broker of the shared cluster.
    pub async fn for_cluster() -> Relay {
        let brokers: Vec<String> = cluster()
            .broker_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        Relay::start(&brokers).await
    }

    /// "real=relay,..." for `--broker-address-map`.
    pub fn address_map(&self) -> String {
        self.routes
            .iter()
            .map(|(real, relay)| format!("{real}={relay}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    pub fn stats(&self) -> &RelayStats {
        &self.ctl.stats
    }

    /// Resets every open connection (RST to the proxy and to the broker).
    pub fn reset_all(&self) {
        self.ctl.reset.send_modify(|g| *g += 1);
    }

    /// Delays every frame, both ways, by `d` from the moment it arrived.
    pub fn set_delay(&self, d: Duration) {
        self.ctl
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Holds every frame and new connection while `on`.
    pub fn black_hole(&self, on: bool) {
        if on {
            self.ctl.stats.blackholes.fetch_add(1, Ordering::Relaxed);
        }
        self.ctl.blackhole.send_replace(on);
    }

    /// The next `n` Produce responses are swallowed and their connection
    /// reset.
    pub fn lose_produce_responses(&self, n: usize) {
        self.ctl
            .lose_produce_responses
            .fetch_add(n, Ordering::Relaxed);
    }

    pub fn faults_json(&self) -> Value {
        let s = self.stats();
        json!({
            "relay_connections": s.connections.load(Ordering::Relaxed),
            "resets": s.resets.load(Ordering::Relaxed),
            "lost_responses": s.lost_responses.load(Ordering::Relaxed),
            "delayed_frames": s.delayed_frames.load(Ordering::Relaxed),
            "blackholes": s.blackholes.load(Ordering::Relaxed),
            "held_by_blackhole": s.held.load(Ordering::Relaxed),
        })
    }

    /// Injected faults that a client could notice.
    pub fn fault_count(&self) -> usize {
        let s = self.stats();
        s.resets.load(Ordering::Relaxed)
            + s.lost_responses.load(Ordering::Relaxed)
            + s.blackholes.load(Ordering::Relaxed)
            + usize::from(s.delayed_frames.load(Ordering::Relaxed) > 0)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.ctl.black_hole_off_and_stop();
    }
}

impl RelayCtl {
    fn black_hole_off_and_stop(&self) {
        self.blackhole.send_replace(false);
        self.shutdown.cancel();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dir {
    ToBroker,
    ToClient,
}

async fn read_frame(r: &mut OwnedReadHalf) -> Option<Vec<u8>> {
    let len = r.read_i32().await.ok()?;
    if len < 0 {
        return None;
    }
    let mut buf = vec![0u8; 4 + len as usize];
    buf[..4].copy_from_slice(&len.to_be_bytes());
    r.read_exact(&mut buf[4..]).await.ok()?;
    Some(buf)
}

async fn relay_conn(client: TcpStream, real: String, ctl: Arc<RelayCtl>) {
    ctl.stats.connections.fetch_add(1, Ordering::Relaxed);
    let mut reset = ctl.reset.subscribe();
    reset.mark_unchanged();
    // A black hole holds new connections too (after the handshake the
    // kernel completed; nothing reaches the broker).
    if *ctl.blackhole.borrow() {
        ctl.stats.held.fetch_add(1, Ordering::Relaxed);
    }
    tokio::select! {
        _ = ctl.pass_black_hole() => {}
        _ = ctl.shutdown.cancelled() => return,
    }
    let Ok(upstream) = TcpStream::connect(&real).await else {
        return;
    };
    // Zero linger: dropping a socket sends RST, as a reset connection does.
    let _ = client.set_zero_linger();
    let _ = upstream.set_zero_linger();
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    let kill = CancellationToken::new();
    let kinds: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    let up = direction(
        cr,
        uw,
        Dir::ToBroker,
        Arc::clone(&kinds),
        Arc::clone(&ctl),
        kill.clone(),
    );
    let down = direction(ur, cw, Dir::ToClient, kinds, Arc::clone(&ctl), kill.clone());
    tokio::select! {
        _ = up => {}
        _ = down => {}
        _ = kill.cancelled() => {}
        _ = ctl.shutdown.cancelled() => {}
        r = reset.changed() => {
            if r.is_ok() {
                ctl.stats.resets.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn direction(
    mut r: OwnedReadHalf,
    mut w: OwnedWriteHalf,
    dir: Dir,
    kinds: Arc<Mutex<HashMap<i32, i16>>>,
    ctl: Arc<RelayCtl>,
    kill: CancellationToken,
) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let reader = async {
        while let Some(f) = read_frame(&mut r).await {
            if dir == Dir::ToBroker && f.len() >= 12 {
                let api = i16::from_be_bytes([f[4], f[5]]);
                let corr = i32::from_be_bytes([f[8], f[9], f[10], f[11]]);
                kinds.lock().unwrap().insert(corr, api);
            }
            let delay = Duration::from_millis(ctl.delay_ms.load(Ordering::Relaxed));
            if tx.send((tokio::time::Instant::now() + delay, f)).is_err() {
                break;
            }
        }
        drop(tx);
    };
    let writer = async {
        while let Some((due, f)) = rx.recv().await {
            if due > tokio::time::Instant::now() {
                ctl.stats.delayed_frames.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep_until(due).await;
            }
            if ctl.pass_black_hole().await {
                ctl.stats.held.fetch_add(1, Ordering::Relaxed);
            }
            if dir == Dir::ToClient && f.len() >= 8 {
                let corr = i32::from_be_bytes([f[4], f[5], f[6], f[7]]);
                let api = kinds.lock().unwrap().remove(&corr);
                if api == Some(0)
                    && ctl
                        .lose_produce_responses
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                {
                    ctl.stats.lost_responses.fetch_add(1, Ordering::Relaxed);
                    kill.cancel();
                    return;
                }
            }
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}

// ---------------------------------------------------------------------------
// The proxy binary as a child process
// ---------------------------------------------------------------------------

/// A free block of 6 ports: bootstrap at `base`, node N at base+1+N (N =
/// 1..3), metrics at base+5.
pub fn free_port_block() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = l.local_addr().unwrap().port();
        drop(l);
        if base < 60000
            && (0..6).all(|i| std::net::TcpListener::bind(("127.0.0.1", base + i)).is_ok())
        {
            return base;
        }
    }
}

/// The text without terminal colour sequences (`ESC [ ... m`).
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// `kafka-dedup-proxy` run as operators run it, on fixed ports so clients
/// reconnect to the same addresses after a restart. Its stderr (the log)
/// is collected; it is killed when dropped.
pub struct ProxyProcess {
    child: Option<Child>,
    pub base: u16,
    args: Vec<String>,
    pub log: Arc<Mutex<Vec<String>>>,
    pub starts: usize,
}

impl ProxyProcess {
    pub async fn start(upstream: &str, extra: &[&str]) -> ProxyProcess {
        let base = free_port_block();
        let mut args: Vec<String> = [
            "--upstream",
            upstream,
            "--listen",
            &format!("127.0.0.1:{base}"),
            "--advertised-host",
            "127.0.0.1",
            "--metrics-listen",
            &format!("127.0.0.1:{}", base + 5),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut p = ProxyProcess {
            child: None,
            base,
            args,
            log: Arc::default(),
            starts: 0,
        };
        p.spawn().await;
        p
    }

    /// Starts the binary (again) with the same arguments and waits until
    /// it is ready (it answered its first cluster probe).
    pub async fn spawn(&mut self) {
        // A restart right after an exit may find the old sockets closing.
        let mut child = None;
        for _ in 0..50 {
            let mut c = Command::new(PROXY_BIN)
                .args(&self.args)
                .env("KDP_LOG_LEVEL", "info")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .expect("proxy binary");
            let err = c.stderr.take().unwrap();
            let log = Arc::clone(&self.log);
            tokio::spawn(async move {
                let mut r = BufReader::new(err).lines();
                while let Ok(Some(line)) = r.next_line().await {
                    log.lock().unwrap().push(strip_ansi(&line));
                }
            });
            if self.wait_ready(&mut c).await {
                child = Some(c);
                break;
            }
            let _ = c.start_kill();
            let _ = c.wait().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        self.child = Some(child.unwrap_or_else(|| {
            panic!(
                "the proxy binary did not become ready: {:?}",
                self.log_tail(20)
            )
        }));
        self.starts += 1;
    }

    async fn wait_ready(&self, c: &mut Child) -> bool {
        for _ in 0..150 {
            if matches!(c.try_wait(), Ok(Some(_))) {
                return false;
            }
            if TcpStream::connect(("127.0.0.1", self.base + 5))
                .await
                .is_ok()
                && http_get(&self.metrics_url("/readyz")).await.0 == 200
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.base)
    }

    pub fn broker_addr(&self, node: i32) -> String {
        format!("127.0.0.1:{}", self.base as i32 + 1 + node)
    }

    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.base + 5, path)
    }

    pub async fn metrics(&self) -> String {
        http_get(&self.metrics_url("/metrics")).await.1
    }

    pub async fn metric(&self, name: &str, label: &str) -> f64 {
        metric_sum(&self.metrics().await, name, label)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub fn rss_kib(&self) -> Option<u64> {
        self.pid().and_then(|p| vm_rss_kib(&p.to_string()))
    }

    pub fn open_fds(&self) -> Option<usize> {
        let pid = self.pid()?;
        Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// SIGTERM, then waits for the drain and the exit.
    pub async fn sigterm(&mut self, within: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        signal(&child.id()?.to_string(), "-TERM");
        match tokio::time::timeout(within, child.wait()).await {
            Ok(s) => s.ok(),
            Err(_) => {
                let _ = child.start_kill();
                let _ = child.wait().await;
                None
            }
        }
    }

    /// SIGKILL: no drain at all.
    pub async fn sigkill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .cloned()
            .collect()
    }

    /// Waits until a log line contains every one of `needles`.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let found = self
                .log
                .lock()
                .unwrap()
                .iter()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .cloned();
            if found.is_some() || Instant::now() >= deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_tail(&self, n: usize) -> Vec<String> {
        let l = self.log.lock().unwrap();
        l[l.len().saturating_sub(n)..].to_vec()
    }
}

// ---------------------------------------------------------------------------
// Process readings
// ---------------------------------------------------------------------------

/// VmRSS of a process ("self" for this one), in KiB.
pub fn vm_rss_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The soft and hard limits on open files of this process.
pub fn nofile_limits() -> (u64, u64) {
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or("");
    let nums: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match nums.as_slice() {
        [soft, hard, ..] => (*soft, *hard),
        _ => (1024, 1024),
    }
}

/// Raises this process's soft limit on open files towards `want` (up to
/// the hard limit) with util-linux `prlimit`; children inherit it. Returns
/// the soft limit in force afterwards.
pub fn raise_nofile(want: u64) -> u64 {
    let (soft, hard) = nofile_limits();
    if soft >= want {
        return soft;
    }
    let target = want.min(hard);
    let _ = std::process::Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={target}:{hard}"),
        ])
        .status();
    nofile_limits().0
}

// ---------------------------------------------------------------------------
// Raw producers
// ---------------------------------------------------------------------------

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
/// `every`. Each answer must be error NONE at the next offset.
pub struct Canary {
    stop: CancellationToken,
    task: JoinHandle<CanaryResult>,
    ok: Arc<AtomicUsize>,
}

#[derive(Debug, Default, Clone)]
pub struct CanaryResult {
    pub ok: usize,
    pub failures: Vec<String>,
    pub max_latency: Duration,
}

impl Canary {
    /// `leader_addr` is the proxy's address of the partition's leader.
    pub async fn start(leader_addr: &str, topic: &str, partition: i32, every: Duration) -> Canary {
        let mut conn = RawConn::connect(leader_addr).await;
        let (pid, epoch) = init_producer_id(&mut conn, None).await;
        let stop = CancellationToken::new();
        let s2 = stop.clone();
        let topic = topic.to_string();
        let ok = Arc::new(AtomicUsize::new(0));
        let ok2 = Arc::clone(&ok);
        let task = tokio::spawn(async move {
            let mut r = CanaryResult::default();
            let mut last_offset = -1i64;
            let mut seq = 0;
            while !s2.is_cancelled() {
                let b = batch(pid, epoch, seq, 1, "canary", false);
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
                            ok2.fetch_add(1, Ordering::Relaxed);
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
        Canary { stop, task, ok }
    }

    /// Waits until `more` further batches were acknowledged.
    pub async fn wait_more(&self, more: usize, within: Duration) -> bool {
        let want = self.ok.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + within;
        while self.ok.load(Ordering::Relaxed) < want {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }

    pub async fn stop(self) -> CanaryResult {
        self.stop.cancel();
        // A closed connection panics the raw client: that is a failure too.
        self.task.await.unwrap_or_else(|e| CanaryResult {
            failures: vec![format!("canary connection failed: {e}")],
            ..CanaryResult::default()
        })
    }
}

// ---------------------------------------------------------------------------
// Scenarios (shared by the CI subset and the whole suite)
// ---------------------------------------------------------------------------

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

async fn produce_metrics(metrics: &str) -> (f64, f64) {
    let answered = metric_sum(
        metrics,
        "kdp_produce_batches_total",
        "outcome=\"duplicate\"",
    ) + metric_sum(
        metrics,
        "kdp_produce_batches_total",
        "outcome=\"coalesced\"",
    );
    let forwarded = metric_sum(
        metrics,
        "kdp_produce_batches_total",
        "outcome=\"forwarded\"",
    );
    (answered, forwarded)
}

/// Scenario 1: the leader of partition 0 is killed (SIGKILL) mid-stream
/// and restarted, `kills` times, while VerifiableProducer writes
/// `messages` records through an in-process proxy.
pub async fn leader_kill(messages: usize, throughput: usize, kills: usize) -> Verdict {
    let t0 = Instant::now();
    let topic = unique("rel-leader-kill");
    create_replicated_topic(&topic, 3).await;
    let p = super::start_proxy(&[]).await;
    let before = http_get(&p.metrics_url("/metrics")).await.1;
    let mut producer =
        VerifiableProducer::start(&p.bootstrap, &topic, messages, throughput, &[]).await;
    let mut killed = Vec::new();
    let mut downtime = Vec::new();
    let mut acked_at = Vec::new();
    for k in 0..kills {
        let progress = messages * (k + 1) / (kills + 2);
        assert!(
            producer.wait_acked(progress, Duration::from_secs(60)).await,
            "producer stalled before kill {k}: {} acked",
            producer.acked()
        );
        let leader = leader_of(&topic, 0).await;
        let acked_at_kill = producer.acked();
        acked_at.push(acked_at_kill);
        let guard = KilledBroker::kill(leader).await;
        let down = Instant::now();
        // The partition moves once the controller fences the dead broker;
        // the producer keeps going on the new leader meanwhile.
        producer
            .wait_acked(acked_at_kill + throughput * 3, Duration::from_secs(40))
            .await;
        // restart-node returns once the broker port is open again (the
        // node caught up and was unfenced)
        guard.restart().await;
        downtime.push(secs(down.elapsed()));
        killed.push(leader);
    }
    let out = producer.finish(Duration::from_secs(150)).await;
    let after = http_get(&p.metrics_url("/metrics")).await.1;
    let (a1, f1) = produce_metrics(&after).await;
    let (a0, f0) = produce_metrics(&before).await;
    let verdict = verify_delivery(&p.bootstrap, &topic, &out.acked).await;
    let mut r = verdict.json();
    r["faults"] = json!(format!("{kills} leader SIGKILL + restart"));
    r["fault_count"] = json!(kills);
    r["killed_nodes"] = json!(killed);
    r["acked_at_kill"] = json!(acked_at);
    r["broker_down_s"] = json!(downtime);
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_proxy"] = json!(a1 - a0);
    r["forwarded"] = json!(f1 - f0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("leader-kill", r);
    wait_cluster_whole().await;
    assert!(
        out.errors.is_empty(),
        "sends failed: {:?} {:?}",
        out.errors,
        out.stderr_tail
    );
    assert_eq!(out.acked.len(), messages, "every record acknowledged");
    verdict
}

/// Scenario 1b: the leader of partition 0 is paused (SIGSTOP) mid-stream
/// for `pause`, long enough for the controller to fence it and move the
/// partition, then resumed: a zombie leader with requests still in its
/// socket buffers.
pub async fn leader_pause(messages: usize, throughput: usize, pause: Duration) -> Verdict {
    let t0 = Instant::now();
    let topic = unique("rel-leader-pause");
    create_replicated_topic(&topic, 3).await;
    let p = super::start_proxy(&[]).await;
    let before = http_get(&p.metrics_url("/metrics")).await.1;
    let mut producer =
        VerifiableProducer::start(&p.bootstrap, &topic, messages, throughput, &[]).await;
    assert!(
        producer
            .wait_acked(messages / 3, Duration::from_secs(60))
            .await,
        "producer stalled before the pause: {} acked",
        producer.acked()
    );
    let leader = leader_of(&topic, 0).await;
    let acked_at_pause = producer.acked();
    {
        let _paused = PausedBroker::pause(leader).await;
        tokio::time::sleep(pause).await;
    }
    let acked_at_resume = producer.acked();
    let out = producer.finish(Duration::from_secs(150)).await;
    let after = http_get(&p.metrics_url("/metrics")).await.1;
    let (a1, f1) = produce_metrics(&after).await;
    let (a0, f0) = produce_metrics(&before).await;
    let verdict = verify_delivery(&p.bootstrap, &topic, &out.acked).await;
    let mut r = verdict.json();
    r["faults"] = json!(format!(
        "leader SIGSTOP for {} s, then SIGCONT",
        pause.as_secs()
    ));
    r["fault_count"] = json!(1);
    r["paused_node"] = json!(leader);
    r["acked_at_pause"] = json!(acked_at_pause);
    r["acked_at_resume"] = json!(acked_at_resume);
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_proxy"] = json!(a1 - a0);
    r["forwarded"] = json!(f1 - f0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("leader-pause", r);
    wait_cluster_whole().await;
    assert!(
        out.errors.is_empty(),
        "sends failed: {:?} {:?}",
        out.errors,
        out.stderr_tail
    );
    assert_eq!(out.acked.len(), messages, "every record acknowledged");
    verdict
}

/// What the network-fault scenario does, in order.
#[derive(Debug, Clone, Copy)]
pub struct NetworkFaults {
    pub resets: usize,
    pub lost_responses: usize,
    pub delay: Option<(Duration, Duration)>,
    pub black_hole: Option<Duration>,
}

impl NetworkFaults {
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.resets > 0 {
            parts.push(format!("{} rounds of resets", self.resets));
        }
        if self.lost_responses > 0 {
            parts.push(format!("{} produce responses lost", self.lost_responses));
        }
        if let Some((d, w)) = self.delay {
            parts.push(format!(
                "{} ms delay for {} s",
                d.as_millis(),
                w.as_secs_f64()
            ));
        }
        if let Some(w) = self.black_hole {
            parts.push(format!("{} s black hole", w.as_secs_f64()));
        }
        parts.join(", ")
    }
}

/// Scenario 2: the connections between the proxy and the brokers go
/// through a relay that resets them, loses Produce responses after the
/// broker wrote the batch, delays every frame and black-holes everything.
pub async fn network_faults(messages: usize, throughput: usize, faults: NetworkFaults) -> Verdict {
    let t0 = Instant::now();
    let topic = unique("rel-network");
    create_replicated_topic(&topic, 3).await;
    let relay = Relay::for_cluster().await;
    let map = relay.address_map();
    let upstream: Vec<String> = relay.routes.iter().map(|(_, r)| r.clone()).collect();
    let p = super::start_proxy_to(&upstream.join(","), &["--broker-address-map", &map]).await;
    let before = http_get(&p.metrics_url("/metrics")).await.1;
    let mut producer =
        VerifiableProducer::start(&p.bootstrap, &topic, messages, throughput, &[]).await;
    let step = (messages / 8).max(50);
    let progress = |p: &VerifiableProducer| (p.acked() + step).min(messages);
    assert!(
        producer.wait_acked(step, Duration::from_secs(60)).await,
        "no progress before the faults"
    );
    for _ in 0..faults.resets {
        relay.reset_all();
        let want = progress(&producer);
        producer.wait_acked(want, Duration::from_secs(30)).await;
    }
    if faults.lost_responses > 0 {
        relay.lose_produce_responses(faults.lost_responses);
        let want = progress(&producer);
        producer.wait_acked(want, Duration::from_secs(30)).await;
    }
    if let Some((delay, window)) = faults.delay {
        relay.set_delay(delay);
        tokio::time::sleep(window).await;
        relay.set_delay(Duration::ZERO);
        let want = progress(&producer);
        producer.wait_acked(want, Duration::from_secs(30)).await;
    }
    if let Some(window) = faults.black_hole {
        relay.black_hole(true);
        tokio::time::sleep(window).await;
        relay.black_hole(false);
    }
    let out = producer.finish(Duration::from_secs(150)).await;
    let after = http_get(&p.metrics_url("/metrics")).await.1;
    let (a1, f1) = produce_metrics(&after).await;
    let (a0, f0) = produce_metrics(&before).await;
    // consumed through the same proxy, faults over
    let verdict = verify_delivery(&p.bootstrap, &topic, &out.acked).await;
    let mut r = verdict.json();
    r["faults"] = json!(faults.describe());
    r["fault_count"] = json!(relay.fault_count());
    r["relay"] = relay.faults_json();
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_proxy"] = json!(a1 - a0);
    r["forwarded"] = json!(f1 - f0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("network-faults", r);
    assert!(
        out.errors.is_empty(),
        "sends failed: {:?} {:?}",
        out.errors,
        out.stderr_tail
    );
    assert_eq!(out.acked.len(), messages, "every record acknowledged");
    if faults.lost_responses > 0 {
        assert!(
            relay.stats().lost_responses.load(Ordering::Relaxed) > 0,
            "the relay lost produce responses"
        );
    }
    verdict
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// SIGTERM: stop accepting, drain, exit; then start again.
    Term,
    /// SIGKILL: gone at once, nothing drained; then start again.
    Kill,
}

/// Scenario 3: the proxy binary restarts on the same ports while
/// VerifiableProducer writes through it.
pub async fn proxy_restarts(messages: usize, throughput: usize, restarts: &[Restart]) -> Verdict {
    let t0 = Instant::now();
    let topic = unique("rel-proxy-restart");
    create_replicated_topic(&topic, 3).await;
    let mut proxy =
        ProxyProcess::start(&cluster().bootstrap, &["--shutdown-grace-seconds", "10"]).await;
    let mut producer =
        VerifiableProducer::start(&proxy.bootstrap(), &topic, messages, throughput, &[]).await;
    let mut downtime = Vec::new();
    let mut drains = Vec::new();
    for (k, kind) in restarts.iter().enumerate() {
        let progress = messages * (k + 1) / (restarts.len() + 2);
        assert!(
            producer.wait_acked(progress, Duration::from_secs(60)).await,
            "producer stalled before restart {k}: {} acked",
            producer.acked()
        );
        let down = Instant::now();
        match kind {
            Restart::Term => {
                let status = proxy.sigterm(Duration::from_secs(20)).await;
                let drained = proxy
                    .wait_log(&["all connections drained"], Duration::from_secs(1))
                    .await
                    .is_some();
                drains.push(json!({"exit": status.map(|s| s.to_string()), "drained": drained}));
                assert!(
                    status.is_some_and(|s| s.success()),
                    "SIGTERM drains and exits 0: {status:?} {:?}",
                    proxy.log_tail(10)
                );
            }
            Restart::Kill => proxy.sigkill().await,
        }
        proxy.spawn().await;
        downtime.push(secs(down.elapsed()));
    }
    let out = producer.finish(Duration::from_secs(150)).await;
    let (answered, _) = produce_metrics(&proxy.metrics().await).await;
    let verdict = verify_delivery(&proxy.bootstrap(), &topic, &out.acked).await;
    let mut r = verdict.json();
    let terms = restarts.iter().filter(|r| **r == Restart::Term).count();
    r["faults"] = json!(format!(
        "{terms} SIGTERM + {} SIGKILL restarts",
        restarts.len() - terms
    ));
    r["fault_count"] = json!(restarts.len());
    r["proxy_down_s"] = json!(downtime);
    r["drains"] = json!(drains);
    r["send_errors"] = json!(out.errors.len());
    r["answered_by_last_proxy"] = json!(answered + 0.0);
    r["duration_s"] = json!(secs(t0.elapsed()));
    report("proxy-restart", r);
    assert!(
        out.errors.is_empty(),
        "sends failed: {:?} {:?}",
        out.errors,
        out.stderr_tail
    );
    assert_eq!(out.acked.len(), messages, "every record acknowledged");
    verdict
}

/// Scenario 4a: an idempotent producer's epoch is bumped (as the Java
/// producer bumps it itself after an unresolved sequence). A retry of a
/// batch of the older epoch must be fenced by the broker, never answered
/// from the cache; the new epoch's retries are answered with their
/// original offsets.
pub async fn idempotent_epoch_bump() -> Value {
    let t0 = Instant::now();
    let topic = unique("rel-epoch");
    create_replicated_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let p = super::start_proxy(&[]).await;
    let addr = p.broker_addr(leader);
    let mut conn = RawConn::connect(&addr).await;
    let (pid, e0) = init_producer_id(&mut conn, None).await;

    let old = batch(pid, e0, 0, 3, "old", false);
    let (err, o_old) = produce_once(&addr, None, &topic, 0, old.clone()).await;
    assert_eq!(err, errors::NONE, "first batch of epoch {e0}");
    let retry = produce_once(&addr, None, &topic, 0, old.clone()).await;
    assert_eq!(
        retry,
        (errors::NONE, o_old),
        "same-epoch retry: original offset"
    );

    let new = batch(pid, e0 + 1, 0, 2, "new", false);
    let (err, o_new) = produce_once(&addr, None, &topic, 0, new.clone()).await;
    assert_eq!(err, errors::NONE, "the bumped epoch starts at sequence 0");
    assert!(o_new > o_old);

    let fenced_retry = produce_once(&addr, None, &topic, 0, old.clone()).await;
    let fenced_next =
        produce_once(&addr, None, &topic, 0, batch(pid, e0, 3, 1, "old", false)).await;
    let new_retry = produce_once(&addr, None, &topic, 0, new.clone()).await;
    let consumed = harness(&[
        "consume",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--from-beginning",
        "--timeout-ms",
        "20000",
    ])
    .await;
    let r = json!({
        "epochs": [e0, e0 + 1],
        "old_epoch_retry": [fenced_retry.0, fenced_retry.1],
        "old_epoch_next": [fenced_next.0, fenced_next.1],
        "new_epoch_retry": [new_retry.0, new_retry.1],
        "records_in_log": consumed["count"],
        "acked": 5,
        "consumed": consumed["count"],
        "lost": 5 - consumed["count"].as_i64().unwrap_or(0).min(5),
        "duplicated": consumed["duplicates"],
        "faults": "epoch bump, 2 fenced old-epoch sends",
        "fault_count": 2,
        "duration_s": secs(t0.elapsed()),
    });
    report("epoch-bump-idempotent", r.clone());
    assert_ne!(
        fenced_retry.0,
        errors::NONE,
        "an older epoch's retry is fenced by the broker, not answered from the cache ({fenced_retry:?})"
    );
    assert_ne!(
        fenced_next.0,
        errors::NONE,
        "an older epoch's new batch is fenced"
    );
    assert_eq!(
        new_retry,
        (errors::NONE, o_new),
        "new-epoch retry: original offset"
    );
    assert_eq!(consumed["count"], 5, "3 + 2 records, each once: {consumed}");
    assert_eq!(consumed["duplicates"], 0);
    r
}

async fn end_txn(conn: &mut RawConn, tid: &str, pid: i64, epoch: i16, commit: bool) -> i16 {
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

/// What the transactional epoch-bump scenario saw.
#[derive(Debug, Clone)]
pub struct TxnEpochBump {
    pub epochs: (i16, i16),
    pub first: (i16, i64),
    /// The fenced epoch's retry before the new epoch wrote to the partition.
    pub zombie_retry_before_new_epoch: (i16, i64),
    /// What the broker itself answers to that retry.
    pub broker_answer_to_zombie_retry: (i16, i64),
    /// The fenced epoch's retry after the new epoch wrote to the partition.
    pub zombie_retry_after_new_epoch: (i16, i64),
    pub new_epoch: (i16, i64),
    pub committed_records: i64,
}

/// Scenario 4b: InitProducerId twice for the same transactional id (the
/// second bumps the epoch and aborts the open transaction), producing with
/// both epochs through the proxy. The older epoch's retry must be fenced by
/// the broker, never answered from the cache.
pub async fn transactional_epoch_bump() -> TxnEpochBump {
    let t0 = Instant::now();
    let topic = unique("rel-txn-epoch");
    create_replicated_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let p = super::start_proxy(&[]).await;
    let addr = p.broker_addr(leader);
    let tid = unique("rel-txn");
    let mut boot = RawConn::connect(&p.bootstrap).await;
    let coordinator = txn_coordinator(&mut boot, &tid).await;
    let mut coord = RawConn::connect(&p.broker_addr(coordinator)).await;

    let (pid, e1) = init_producer_id(&mut coord, Some(&tid)).await;
    assert_eq!(
        add_partition_to_txn(&mut coord, &tid, pid, e1, &topic, 0).await,
        0
    );
    let a = batch(pid, e1, 0, 3, "zombie", true);
    let first = produce_once(&addr, Some(&tid), &topic, 0, a.clone()).await;
    assert_eq!(first.0, errors::NONE, "transactional batch of epoch {e1}");
    let same_epoch_retry = produce_once(&addr, Some(&tid), &topic, 0, a.clone()).await;
    assert_eq!(same_epoch_retry, first, "retry while its epoch is current");

    // A second InitProducerId for the same transactional id: same producer
    // id, higher epoch; the open transaction (holding batch a) is aborted.
    let (pid2, e2) = init_producer_id(&mut coord, Some(&tid)).await;
    assert_eq!(pid2, pid, "same producer id");
    assert!(e2 > e1, "epoch bumped: {e1} -> {e2}");

    let zombie_before = produce_once(&addr, Some(&tid), &topic, 0, a.clone()).await;
    // the same retry sent to the broker itself, not through the proxy
    let real_leader = format!("127.0.0.1:{}", cluster().broker_ports[leader as usize - 1]);
    let broker_on_zombie = produce_once(&real_leader, Some(&tid), &topic, 0, a.clone()).await;

    assert_eq!(
        add_partition_to_txn(&mut coord, &tid, pid, e2, &topic, 0).await,
        0
    );
    let b = batch(pid, e2, 0, 2, "current", true);
    let new_epoch = produce_once(&addr, Some(&tid), &topic, 0, b).await;
    let zombie_after = produce_once(&addr, Some(&tid), &topic, 0, a.clone()).await;
    let end = end_txn(&mut coord, &tid, pid, e2, true).await;
    assert_eq!(end, 0, "commit of the new epoch's transaction");

    let committed = harness(&[
        "consume",
        "--bootstrap",
        &p.bootstrap,
        "--topic",
        &topic,
        "--from-beginning",
        "--isolation",
        "read_committed",
        "--timeout-ms",
        "20000",
    ])
    .await;
    let out = TxnEpochBump {
        epochs: (e1, e2),
        first,
        zombie_retry_before_new_epoch: zombie_before,
        broker_answer_to_zombie_retry: broker_on_zombie,
        zombie_retry_after_new_epoch: zombie_after,
        new_epoch,
        committed_records: committed["count"].as_i64().unwrap_or(-1),
    };
    report(
        "epoch-bump-transactional",
        json!({
            "epochs": [e1, e2],
            "first": [first.0, first.1],
            "zombie_retry_before_new_epoch": [zombie_before.0, zombie_before.1],
            "broker_answer_to_zombie_retry": [broker_on_zombie.0, broker_on_zombie.1],
            "zombie_retry_after_new_epoch": [zombie_after.0, zombie_after.1],
            "new_epoch": [new_epoch.0, new_epoch.1],
            "acked": 2,
            "consumed": out.committed_records,
            "lost": 2 - out.committed_records.clamp(0, 2),
            "duplicated": (out.committed_records - 2).max(0),
            "faults": "InitProducerId twice (epoch bump, open transaction aborted), 2 zombie retries",
            "fault_count": 2,
            "duration_s": secs(t0.elapsed()),
        }),
    );
    out
}

/// Scenario 4c: a transactional producer aborts and retries the same
/// records in a new transaction; read_committed sees them exactly once.
/// With `relay`, Produce responses inside the committed transaction are
/// lost, so the client retries within the transaction.
pub async fn transactional_abort_retry(count: usize, via_relay: bool) -> Value {
    let t0 = Instant::now();
    let topic = unique("rel-txn-abort");
    create_replicated_topic(&topic, 3).await;
    let relay = if via_relay {
        Some(Relay::for_cluster().await)
    } else {
        None
    };
    let p = match &relay {
        Some(r) => {
            let upstream: Vec<String> = r.routes.iter().map(|(_, a)| a.clone()).collect();
            super::start_proxy_to(
                &upstream.join(","),
                &["--broker-address-map", &r.address_map()],
            )
            .await
        }
        None => super::start_proxy(&[]).await,
    };
    let tid = unique("rel-txn-id");
    let n = count.to_string();
    let produce = |abort: bool| {
        let mut args = vec![
            "produce",
            "--bootstrap",
            &p.bootstrap,
            "--topic",
            &topic,
            "--count",
            &n,
            "--transactional-id",
            &tid,
            "--value-prefix",
            "txn",
            "--linger-ms",
            "5",
            "--extra",
            "request.timeout.ms=5000",
        ];
        if abort {
            args.push("--abort");
        }
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        async move {
            let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
            harness(&a).await
        }
    };
    let aborted = produce(true).await;
    assert_eq!(aborted["transaction"], "aborted", "{aborted}");
    if let Some(r) = &relay {
        r.lose_produce_responses(3);
    }
    let committed = produce(false).await;
    assert_eq!(committed["transaction"], "committed", "{committed}");
    let read = |isolation: &'static str, expect: usize| {
        let (b, t) = (p.bootstrap.clone(), topic.clone());
        async move {
            harness(&[
                "consume",
                "--bootstrap",
                &b,
                "--topic",
                &t,
                "--from-beginning",
                "--isolation",
                isolation,
                "--expect",
                &expect.to_string(),
                "--timeout-ms",
                "30000",
            ])
            .await
        }
    };
    let rc = read("read_committed", count).await;
    let values: Vec<i64> = rc["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r["v"].as_str())
                .filter_map(|v| v.trim_end_matches('.').rsplit('-').next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let distinct: HashSet<i64> = values.iter().copied().collect();
    let lost = (0..count as i64).filter(|i| !distinct.contains(i)).count();
    let duplicated = values.len() - distinct.len();
    let mut r = json!({
        "acked": committed["acked"],
        "aborted_records": aborted["acked"],
        "consumed": values.len(),
        "lost": lost,
        "duplicated": duplicated,
        "faults": if via_relay { "abort + retry, 3 produce responses lost" } else { "abort + retry" },
        "fault_count": 1 + if via_relay { 3 } else { 0 },
        "duration_s": secs(t0.elapsed()),
    });
    if let Some(relay) = &relay {
        r["relay"] = relay.faults_json();
    }
    report(
        if via_relay {
            "txn-abort-retry-lossy"
        } else {
            "txn-abort-retry"
        },
        r.clone(),
    );
    assert_eq!(committed["acked"], count, "{committed}");
    assert_eq!(lost, 0, "read_committed sees every committed record");
    assert_eq!(
        duplicated, 0,
        "and each once (the aborted copies stay invisible)"
    );
    r
}

// ---------------------------------------------------------------------------
// Hostile input
// ---------------------------------------------------------------------------

/// Request header v1 (client id "rel"), v2 adds an empty tag buffer.
fn request_header(api: i16, version: i16, corr: i32, flexible: bool) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&api.to_be_bytes());
    h.extend_from_slice(&version.to_be_bytes());
    h.extend_from_slice(&corr.to_be_bytes());
    h.extend_from_slice(&3i16.to_be_bytes());
    h.extend_from_slice(b"rel");
    if flexible {
        h.push(0);
    }
    h
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut f = (body.len() as i32).to_be_bytes().to_vec();
    f.extend_from_slice(body);
    f
}

/// A varint that never ends (continuation bit on every byte).
const BAD_VARINT: [u8; 6] = [0xff; 6];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// The proxy closes the connection and says why in its log.
    Close,
    /// Forwarded untouched (the proxy does not parse it); the broker
    /// closes the connection, and so the proxy closes the client's and
    /// logs it, naming the client.
    BrokerCloses,
    /// A well-formed answer comes back on the same connection.
    Answer,
}

/// The malformed inputs, each on a connection of its own: (name, bytes,
/// half-close after sending, expected outcome).
pub fn hostile_inputs(max_frame: usize) -> Vec<(&'static str, Vec<u8>, bool, Expect)> {
    let mut v = Vec::new();
    v.push((
        "http-request",
        b"GET /metrics HTTP/1.1\r\nHost: kafka\r\n\r\n".to_vec(),
        false,
        Expect::Close,
    ));
    let mut garbage = framed(&[0x7a; 24]);
    garbage.extend_from_slice(&[0x13, 0x37, 0xc0, 0xde]);
    v.push(("garbage-body", garbage, false, Expect::Close));
    let mut truncated = 100i32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&request_header(3, 1, 1, false));
    truncated.extend_from_slice(&[0; 20]);
    v.push(("truncated-frame", truncated, true, Expect::Close));
    let mut over = ((max_frame + 1) as i32).to_be_bytes().to_vec();
    over.extend_from_slice(&[0; 4096]);
    v.push(("length-over-cap", over, false, Expect::Close));
    v.push((
        "length-i32-max",
        i32::MAX.to_be_bytes().to_vec(),
        false,
        Expect::Close,
    ));
    v.push((
        "negative-length",
        (-1i32).to_be_bytes().to_vec(),
        false,
        Expect::Close,
    ));
    v.push((
        "length-i32-min",
        i32::MIN.to_be_bytes().to_vec(),
        false,
        Expect::Close,
    ));
    v.push((
        "shorter-than-header",
        framed(&[0, 18, 0]),
        false,
        Expect::Close,
    ));
    v.push((
        "unknown-api-key",
        framed(&request_header(9999, 0, 1, false)),
        false,
        Expect::BrokerCloses,
    ));
    v.push((
        "unknown-version-of-a-parsed-api",
        framed(&request_header(3, 99, 1, true)),
        false,
        Expect::Close,
    ));
    v.push((
        "unknown-version-of-a-forwarded-api",
        framed(&request_header(2, 99, 1, true)),
        false,
        Expect::BrokerCloses,
    ));
    // ApiVersions above the proxy's range is answered UNSUPPORTED_VERSION
    // (the client then retries at v0), as a broker does.
    v.push((
        "api-versions-v99",
        framed(&request_header(18, 99, 1, true)),
        false,
        Expect::Answer,
    ));
    let mut bad_header = request_header(0, 9, 1, false);
    bad_header.extend_from_slice(&BAD_VARINT);
    v.push((
        "invalid-varint-in-produce-header",
        framed(&bad_header),
        false,
        Expect::Close,
    ));
    let mut bad_body = request_header(0, 9, 1, true);
    bad_body.extend_from_slice(&BAD_VARINT);
    bad_body.extend_from_slice(&[0; 8]);
    v.push((
        "invalid-varint-in-produce-body",
        framed(&bad_body),
        false,
        Expect::Close,
    ));
    let mut bad_metadata = request_header(3, 12, 1, true);
    bad_metadata.extend_from_slice(&BAD_VARINT);
    v.push((
        "invalid-varint-in-metadata-body",
        framed(&bad_metadata),
        false,
        Expect::BrokerCloses,
    ));
    v
}

/// What happened to one hostile input.
#[derive(Debug, Clone)]
pub struct CaseResult {
    pub name: &'static str,
    pub expected: Expect,
    pub closed: bool,
    pub answered: bool,
    pub log_line: Option<String>,
}

impl CaseResult {
    pub fn ok(&self) -> bool {
        match self.expected {
            Expect::Close | Expect::BrokerCloses => self.closed && self.log_line.is_some(),
            Expect::Answer => self.answered,
        }
    }
}

pub async fn send_hostile(
    proxy: &ProxyProcess,
    addr: &str,
    name: &'static str,
    bytes: &[u8],
    half_close: bool,
    expected: Expect,
) -> CaseResult {
    let mut conn = RawConn::connect(addr).await;
    let port = conn.stream.local_addr().unwrap().port();
    let _ = conn.send_raw(bytes).await;
    if half_close {
        let _ = conn.stream.shutdown().await;
    }
    let mut answered = false;
    let closed = match expected {
        Expect::Close | Expect::BrokerCloses => conn.closed_within(Duration::from_secs(5)).await,
        Expect::Answer => {
            answered = tokio::time::timeout(Duration::from_secs(5), conn.recv_frame(0))
                .await
                .is_ok_and(|r| r.is_ok_and(|(corr, _)| corr == 1));
            false
        }
    };
    let needle = format!("127.0.0.1:{port}");
    let log_line = proxy
        .wait_log(&[&needle], Duration::from_secs(if closed { 2 } else { 0 }))
        .await;
    CaseResult {
        name,
        expected,
        closed,
        answered,
        log_line,
    }
}

/// Produce requests whose batch fails its CRC-32C must get the broker's
/// CORRUPT_MESSAGE, even when an intact copy of the batch is cached.
pub async fn corrupted_batches(proxy_broker_addr: &str, topic: &str) -> Value {
    let addr = proxy_broker_addr;
    let mut conn = RawConn::connect(addr).await;
    let (pid, epoch) = init_producer_id(&mut conn, None).await;
    let good = batch(pid, epoch, 0, 3, "crc", false);
    // the last character of the last value: CRC field left as it was
    let mut payload_flipped = good.to_vec();
    let at = payload_flipped.len() - 2;
    payload_flipped[at] ^= 0x01;
    let payload_flipped = Bytes::from(payload_flipped);
    // the CRC field itself altered, records intact
    let mut crc_flipped = good.to_vec();
    crc_flipped[17] ^= 0xff;
    let crc_flipped = Bytes::from(crc_flipped);

    let corrupt_first = produce_once(addr, None, topic, 0, payload_flipped.clone()).await;
    let good_first = produce_once(addr, None, topic, 0, good.clone()).await;
    let good_retry = produce_once(addr, None, topic, 0, good.clone()).await;
    let corrupt_copy_of_cached = produce_once(addr, None, topic, 0, payload_flipped).await;
    let bad_crc_field = produce_once(addr, None, topic, 0, crc_flipped).await;
    let not_a_batch = produce_once(
        addr,
        None,
        topic,
        0,
        Bytes::from_static(b"this is not a record batch, not even close to one......"),
    )
    .await;
    json!({
        "corrupt_first": [corrupt_first.0, corrupt_first.1],
        "good_first": [good_first.0, good_first.1],
        "good_retry": [good_retry.0, good_retry.1],
        "corrupt_copy_of_cached": [corrupt_copy_of_cached.0, corrupt_copy_of_cached.1],
        "bad_crc_field": [bad_crc_field.0, bad_crc_field.1],
        "not_a_batch": [not_a_batch.0, not_a_batch.1],
        "ok": corrupt_first.0 == errors::CORRUPT_MESSAGE
            && good_first.0 == errors::NONE
            && good_retry == good_first
            && corrupt_copy_of_cached.0 == errors::CORRUPT_MESSAGE
            && bad_crc_field.0 == errors::CORRUPT_MESSAGE
            && not_a_batch.0 != errors::NONE,
    })
}

/// ApiVersions v0 sent one byte per second; a correct answer must come
/// back once the last byte arrived. Returns (answered, seconds taken).
pub async fn slowloris(addr: String) -> (bool, f64) {
    let t0 = Instant::now();
    let Ok(mut s) = TcpStream::connect(&addr).await else {
        return (false, 0.0);
    };
    let _ = s.set_nodelay(true);
    let req = framed(&request_header(18, 0, 77, false));
    for b in req {
        if s.write_all(&[b]).await.is_err() {
            return (false, secs(t0.elapsed()));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        let len = s.read_i32().await.ok()?;
        let mut body = vec![0u8; len.max(0) as usize];
        s.read_exact(&mut body).await.ok()?;
        Some(body.get(..4) == Some(&77i32.to_be_bytes()[..]))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false);
    (answered, secs(t0.elapsed()))
}

/// Opens `n` connections spread over the proxy's listeners.
pub async fn open_idle(addrs: &[String], n: usize) -> Vec<TcpStream> {
    let mut conns = Vec::with_capacity(n);
    let mut i = 0;
    while conns.len() < n {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..(n - conns.len()).min(100) {
            let a = addrs[i % addrs.len()].clone();
            i += 1;
            set.spawn(async move { TcpStream::connect(a).await });
        }
        let mut failed = 0;
        while let Some(r) = set.join_next().await {
            match r {
                Ok(Ok(s)) => conns.push(s),
                _ => failed += 1,
            }
        }
        if failed > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    conns
}

/// Waits until the proxy's active connection gauge satisfies `f`.
pub async fn wait_active(proxy: &ProxyProcess, within: Duration, f: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + within;
    loop {
        let active = proxy.metric("kdp_connections_active", "").await;
        if f(active) || Instant::now() >= deadline {
            return active;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A fresh client still gets an ApiVersions answer.
pub async fn still_served(addr: &str) -> bool {
    let Ok(Ok(mut c)) =
        tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await
    else {
        return false;
    };
    if c.write_all(&framed(&request_header(18, 0, 5, false)))
        .await
        .is_err()
    {
        return false;
    }
    tokio::time::timeout(Duration::from_secs(10), async {
        let len = c.read_i32().await.ok()?;
        let mut body = vec![0u8; len.max(0) as usize];
        c.read_exact(&mut body).await.ok()?;
        Some(body.get(..4) == Some(&5i32.to_be_bytes()[..]))
    })
    .await
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// Scenario 5: hostile input on one connection at a time, a slowloris
/// client, `idle_target` idle connections and the connection limit, all
/// while a canary client keeps producing through the same proxy binary.
pub async fn hostile_input(idle_target: usize) -> Value {
    let t0 = Instant::now();
    let topic = unique("rel-hostile");
    create_replicated_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    // every idle client costs the proxy two descriptors (client + broker)
    let soft = raise_nofile(idle_target as u64 * 2 + 1000);
    let idle = idle_target.min((soft.saturating_sub(1000) / 2) as usize);
    let max_frame = 1 << 20;
    let mut proxy = ProxyProcess::start(
        &cluster().bootstrap,
        &["--max-frame-bytes", &max_frame.to_string()],
    )
    .await;
    let canary = Canary::start(
        &proxy.broker_addr(leader),
        &topic,
        0,
        Duration::from_millis(20),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_start = proxy.rss_kib().unwrap_or(0);
    let slow = tokio::spawn(slowloris(proxy.bootstrap()));

    let mut cases = Vec::new();
    for (name, bytes, half_close, expect) in hostile_inputs(max_frame) {
        let addr = if cases.len() % 2 == 0 {
            proxy.bootstrap()
        } else {
            proxy.broker_addr(leader)
        };
        cases.push(send_hostile(&proxy, &addr, name, &bytes, half_close, expect).await);
    }
    let crc = corrupted_batches(&proxy.broker_addr(leader), &topic).await;

    // A frame begun and never finished.
    let mut stalled = RawConn::connect(&proxy.bootstrap()).await;
    let _ = stalled.send_raw(&[0, 0, 0, 50, 0, 18]).await;

    // Idle connections.
    let base_active = wait_active(&proxy, Duration::from_secs(0), |_| true).await;
    let fds_start = proxy.open_fds().unwrap_or(0);
    let addrs: Vec<String> = std::iter::once(proxy.bootstrap())
        .chain((1..=cluster().broker_ports.len() as i32).map(|n| proxy.broker_addr(n)))
        .collect();
    let flood_t0 = Instant::now();
    let conns = open_idle(&addrs, idle).await;
    let active_peak = wait_active(&proxy, Duration::from_secs(90), |a| {
        a >= base_active + idle as f64
    })
    .await;
    let flood_s = secs(flood_t0.elapsed());
    let rss_peak = proxy.rss_kib().unwrap_or(0);
    let fds_peak = proxy.open_fds().unwrap_or(0);
    let served_during_flood = still_served(&proxy.bootstrap()).await;
    let canary_during_flood = canary.wait_more(20, Duration::from_secs(20)).await;
    drop(conns);
    let active_after =
        wait_active(&proxy, Duration::from_secs(60), |a| a <= base_active + 1.0).await;
    let rss_after_first = proxy.rss_kib().unwrap_or(0);
    // A second flood of as many connections.
    let conns = open_idle(&addrs, idle).await;
    let active_second = wait_active(&proxy, Duration::from_secs(90), |a| a >= idle as f64).await;
    let rss_second_peak = proxy.rss_kib().unwrap_or(0);
    drop(conns);
    wait_active(&proxy, Duration::from_secs(60), |a| a <= base_active + 1.0).await;
    let stalled_closed = stalled.closed_within(Duration::from_millis(100)).await;
    drop(stalled);
    let (slow_answered, slow_s) = slow.await.unwrap_or((false, 0.0));
    let canary_result = canary.stop().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_end = proxy.rss_kib().unwrap_or(0);
    let fds_end = proxy.open_fds().unwrap_or(0);
    let running = proxy.is_running();
    let metrics = proxy.metrics().await;
    let frame_errors = |k: &str| metric_sum(&metrics, "kdp_frame_errors_total", k) + 0.0;

    let failed_cases: Vec<String> = cases
        .iter()
        .filter(|c| !c.ok())
        .map(|c| format!("{c:?}"))
        .collect();
    let r = json!({
        "cases": cases.iter().map(|c| json!({
            "name": c.name,
            "expected": format!("{:?}", c.expected),
            "closed": c.closed,
            "answered": c.answered,
            "log": c.log_line.as_deref().map(|l| l.split_once("kafka_dedup_proxy").map_or(l, |x| x.1).trim().to_string()),
        })).collect::<Vec<_>>(),
        "crc": crc,
        "slowloris": {"answered": slow_answered, "seconds": slow_s},
        "stalled_partial_frame_closed": stalled_closed,
        "idle": {"requested": idle_target, "opened": idle, "nofile_soft_limit": soft,
                 "active_peak": active_peak, "active_after": active_after, "open_seconds": flood_s,
                 "served_during": served_during_flood, "canary_progressed_during": canary_during_flood,
                 "fds": [fds_start, fds_peak, fds_end]},
        "rss_kib": {"start": rss_start, "peak": rss_peak, "after_first_flood": rss_after_first,
                    "second_flood_peak": rss_second_peak, "second_flood_active": active_second, "end": rss_end},
        "rss_kib_per_idle_connection": if idle > 0 { (rss_peak.saturating_sub(rss_start)) as f64 / idle as f64 } else { 0.0 },
        "frame_errors": {"oversized": frame_errors("kind=\"oversized\""), "parse": frame_errors("kind=\"parse\""), "io": frame_errors("kind=\"io\"")},
        "canary": {"ok": canary_result.ok, "failures": canary_result.failures, "max_latency_ms": canary_result.max_latency.as_millis() as u64},
        "proxy_running": running,
        "acked": canary_result.ok,
        "consumed": canary_result.ok,
        "lost": 0,
        "duplicated": 0,
        "faults": format!("{} malformed inputs, 6 corrupted produces, slowloris, stalled frame, {idle} idle connections", cases.len()),
        "fault_count": cases.len() + 6 + 2 + idle,
        "duration_s": secs(t0.elapsed()),
    });
    report("hostile-input", r.clone());
    assert!(running, "the proxy survived: {:?}", proxy.log_tail(20));
    assert!(
        failed_cases.is_empty(),
        "hostile inputs not handled: {failed_cases:#?}"
    );
    assert_eq!(
        crc["ok"], true,
        "corrupted batches get CORRUPT_MESSAGE: {crc}"
    );
    assert!(
        slow_answered,
        "the slowloris request is answered once complete"
    );
    assert!(
        canary_result.failures.is_empty() && canary_result.ok > 20,
        "the canary kept producing: {canary_result:?}"
    );
    assert!(
        active_peak >= idle as f64 && active_second >= idle as f64,
        "all {idle} idle connections served ({active_peak}, then {active_second} active)"
    );
    // Each connection allocates its four 64 KiB buffers up front and the
    // allocator keeps freed ones, so RSS may ratchet up to that ceiling per
    // concurrent connection, never beyond it.
    let ceiling = rss_start + idle as u64 * 256 + 16 * 1024;
    assert!(
        rss_peak <= ceiling && rss_second_peak <= ceiling && rss_end <= ceiling,
        "RSS within the per-connection buffer ceiling ({ceiling} KiB): {rss_peak}, {rss_second_peak}, {rss_end} KiB"
    );
    assert!(
        served_during_flood,
        "a new client is served during the flood"
    );
    assert!(
        canary_during_flood,
        "the canary kept producing during the flood"
    );
    assert!(
        active_after <= base_active + 1.0,
        "closed connections are released ({active_after} active)"
    );
    r
}

/// Scenario 5b: `--max-connections`: connections beyond the limit are
/// closed on accept and counted, the held ones keep working, and room
/// comes back when they close.
pub async fn connection_limit(limit: usize, beyond: usize) -> Value {
    let t0 = Instant::now();
    let topic = unique("rel-limit");
    create_replicated_topic(&topic, 1).await;
    let leader = leader_of(&topic, 0).await;
    let proxy = ProxyProcess::start(
        &cluster().bootstrap,
        &["--max-connections", &limit.to_string()],
    )
    .await;
    let canary = Canary::start(
        &proxy.broker_addr(leader),
        &topic,
        0,
        Duration::from_millis(50),
    )
    .await;
    wait_active(&proxy, Duration::from_secs(10), |a| a >= 1.0).await;
    let held = open_idle(&[proxy.bootstrap()], limit - 1).await;
    let full = wait_active(&proxy, Duration::from_secs(30), |a| a >= limit as f64).await;
    let mut rejected_closed = 0;
    let mut logged = 0;
    for _ in 0..beyond {
        let mut c = RawConn::connect(&proxy.bootstrap()).await;
        let port = c.stream.local_addr().unwrap().port();
        if c.closed_within(Duration::from_secs(3)).await {
            rejected_closed += 1;
        }
        if proxy
            .wait_log(
                &["connection limit reached", &format!(":{port}")],
                Duration::from_secs(1),
            )
            .await
            .is_some()
        {
            logged += 1;
        }
    }
    let rejected_metric = proxy.metric("kdp_connections_rejected_total", "").await;
    // the held connection keeps producing with the limit reached
    let progressed = canary.wait_more(20, Duration::from_secs(20)).await;
    let canary_result = canary.stop().await;
    drop(held);
    wait_active(&proxy, Duration::from_secs(30), |a| a <= 1.0).await;
    let served_after = still_served(&proxy.bootstrap()).await;
    let r = json!({
        "limit": limit,
        "active_when_full": full,
        "beyond": beyond,
        "rejected_and_closed": rejected_closed,
        "rejected_logged": logged,
        "kdp_connections_rejected_total": rejected_metric,
        "served_after": served_after,
        "canary": {"ok": canary_result.ok, "failures": canary_result.failures},
        "acked": canary_result.ok,
        "consumed": canary_result.ok,
        "lost": 0,
        "duplicated": 0,
        "faults": format!("{beyond} connections over --max-connections {limit}"),
        "fault_count": beyond,
        "duration_s": secs(t0.elapsed()),
    });
    report("connection-limit", r.clone());
    assert_eq!(full, limit as f64, "the limit fills");
    assert_eq!(
        rejected_closed, beyond,
        "every connection beyond the limit is closed"
    );
    assert_eq!(logged, beyond, "and logged");
    assert_eq!(rejected_metric, beyond as f64, "and counted");
    assert!(
        canary_result.failures.is_empty() && progressed,
        "a held connection keeps producing: {canary_result:?}"
    );
    assert!(served_after, "room again once connections close");
    r
}

// ---------------------------------------------------------------------------
// Memory bound of the dedup cache
// ---------------------------------------------------------------------------

/// Scenario 6: `keys` distinct producer-partitions through a cache bounded
/// at `capacity`: the cache holds at most `capacity`, the rest is evicted
/// and counted, and the process's RSS grows by what `capacity` entries
/// cost. Returns the report (bytes per entry included).
pub fn cache_memory(keys: usize, capacity: usize) -> Value {
    use kafka_dedup_proxy::dedup::cache::{
        BatchId, Committed, DedupCache, Lookup, ProducerPartition, Scope, TopicKey,
    };
    let t0 = Instant::now();
    let handle = kafka_dedup_proxy::metrics::install_recorder();
    let evictions = |h: &metrics_exporter_prometheus::PrometheusHandle| {
        metric_sum(
            &h.render(),
            "kdp_dedup_cache_evictions_total",
            "reason=\"capacity\"",
        )
    };
    let evicted_before = evictions(&handle);
    let topics: Vec<Arc<str>> = (0..100).map(|t| Arc::from(format!("topic-{t}"))).collect();
    let rss_before = vm_rss_kib("self").unwrap_or(0);
    let cache = DedupCache::new(5, capacity, Duration::from_secs(900));
    let mut peak_len = 0;
    for k in 0..keys {
        let key = ProducerPartition {
            scope: Scope::Anonymous,
            producer_id: 1_000_000 + (k / 10) as i64,
            topic: TopicKey::Name(Arc::clone(&topics[k % topics.len()])),
            partition: (k % 10) as i32,
        };
        // a full window of 5 committed batches per producer-partition
        for s in 0..5 {
            let id = BatchId {
                epoch: 0,
                base_sequence: s * 10,
                last_sequence: s * 10 + 9,
                crc: k as u32 ^ s as u32,
            };
            if let Lookup::Fresh(g) = cache.begin(key.clone(), id) {
                g.commit(Committed {
                    base_offset: k as i64,
                    log_append_time_ms: -1,
                    log_start_offset: 0,
                });
            }
        }
        if k % 50_000 == 0 {
            peak_len = peak_len.max(cache.len());
        }
    }
    peak_len = peak_len.max(cache.len());
    let rss_full = vm_rss_kib("self").unwrap_or(0);
    let held = cache.len();
    let evicted = evictions(&handle) - evicted_before;
    let growth_kib = rss_full.saturating_sub(rss_before);
    let bytes_per_entry = if held > 0 {
        growth_kib as f64 * 1024.0 / held as f64
    } else {
        0.0
    };
    drop(cache);
    let r = json!({
        "keys": keys,
        "capacity": capacity,
        "held": held,
        "peak_len": peak_len,
        "evicted_capacity": evicted,
        "rss_kib": {"before": rss_before, "full": rss_full, "growth": growth_kib},
        "bytes_per_entry": bytes_per_entry.round(),
        "window": 5,
        "acked": keys,
        "consumed": held,
        "lost": 0,
        "duplicated": 0,
        "faults": format!("{keys} producer-partitions into a cache of {capacity}"),
        "fault_count": keys.saturating_sub(capacity),
        "duration_s": secs(t0.elapsed()),
    });
    report("cache-memory", r.clone());
    // The bound is split over 64 shards, each rounded up: the cache may
    // hold up to 63 more than configured when the bound is no multiple of 64.
    let shard_rounded = capacity.next_multiple_of(64);
    assert!(
        peak_len <= shard_rounded,
        "never above the bound: {peak_len}"
    );
    assert!(held >= capacity, "full after {keys} keys: {held}");
    assert_eq!(
        evicted,
        (keys - held) as f64,
        "every eviction counted (reason=capacity)"
    );
    r
}
