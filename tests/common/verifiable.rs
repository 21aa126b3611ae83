//! Kafka's own VerifiableProducer and VerifiableConsumer through the
//! proxy, and delivery judged from what they saw, the way Kafka's system
//! tests judge it (`ProduceConsumeValidateTest`), plus the offsets: every
//! acknowledged offset must hold the acknowledged value.
//!
//! The other reliability helpers live beside this file, one concern each:
//! `report` (JSON lines and checks), `cluster_faults` (broker kill and
//! pause guards), `relay` (the fault relay), `proxy_process` (the proxy
//! binary, or the plain forwarder, as a child process), `raw` (raw
//! idempotent and transactional producers, the canary), `hostile`
//! (malformed input and connection floods) and `readings` (process memory
//! and descriptors). Everything that moved out is re-exported here under
//! its old path.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{repo, unique};

// The old paths (`common::verifiable::X`) of everything that moved out.
#[allow(unused_imports)]
pub use super::cluster_faults::*;
#[allow(unused_imports)]
pub use super::hostile::*;
#[allow(unused_imports)]
pub use super::proxy_process::*;
#[allow(unused_imports)]
pub use super::raw::*;
#[allow(unused_imports)]
pub use super::readings::*;
#[allow(unused_imports)]
pub use super::relay::*;

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
    /// Records acknowledged so far (closed when the tool's stdout ends).
    acked_count: watch::Receiver<usize>,
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
        Self::start_with_env(bootstrap, topic, max_messages, throughput, extra, &[]).await
    }

    /// The same with `env` set for `scripts/kafka run` (e.g. KDP_JAVA_OPTS).
    pub async fn start_with_env(
        bootstrap: &str,
        topic: &str,
        max_messages: usize,
        throughput: usize,
        extra: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> VerifiableProducer {
        let props = write_props(PRODUCER_DEFAULTS, extra);
        let mut child = Command::new(repo().join("scripts/kafka"))
            .envs(env.iter().copied())
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
        let (a2, acked_count) = watch::channel(0usize);
        let out = child.stdout.take().unwrap();
        let s2 = Arc::clone(&state);
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
                            a2.send_modify(|n| *n += 1);
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
        *self.acked_count.borrow()
    }

    /// Waits until at least `n` records are acknowledged (false on timeout
    /// or when the tool exited first).
    pub async fn wait_acked(&mut self, n: usize, within: Duration) -> bool {
        let mut rx = self.acked_count.clone();
        let reached = tokio::time::timeout(within, rx.wait_for(|a| *a >= n)).await;
        matches!(reached, Ok(Ok(_))) || self.acked() >= n
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

/// One record, identified by its value, that a raw producer saw
/// acknowledged or a consumer read: (partition, offset, value).
pub type Record = (i32, i64, String);

/// `judge` for records whose values are strings (raw producers and the
/// Java harness): each distinct value stands for one number.
pub fn judge_records(acked: &[Record], consumed: &[Record]) -> Verdict {
    let mut ids: HashMap<String, i64> = HashMap::new();
    let mut id = |v: &String| {
        let next = ids.len() as i64;
        *ids.entry(v.clone()).or_insert(next)
    };
    let acked: Vec<Acked> = acked
        .iter()
        .map(|(p, o, v)| Acked {
            partition: *p,
            offset: *o,
            value: id(v),
        })
        .collect();
    let consumed: Vec<Consumed> = consumed
        .iter()
        .map(|(p, o, v)| Consumed {
            partition: *p,
            offset: *o,
            value: id(v),
        })
        .collect();
    judge(&acked, &distinct_offsets(&consumed))
}

/// The records of a `ClientHarness consume` answer.
pub fn harness_records(consumed: &Value) -> Vec<Record> {
    consumed["records"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| {
                    Some((
                        r["p"].as_i64()? as i32,
                        r["o"].as_i64()?,
                        r["v"].as_str()?.to_string(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Verdict {
    /// The delivery checks every Java-producer scenario makes: every send
    /// acknowledged without error, something consumed, and nothing lost,
    /// duplicated, reordered or at a wrong offset.
    pub fn check(&self, c: &mut super::report::Checks, out: &ProducerOutcome, messages: usize) {
        c.eq(out.errors.len(), 0, "sends failed");
        c.eq(out.acked.len(), messages, "records acknowledged");
        self.check_consumed(c);
    }

    /// Nothing lost, duplicated, reordered or at a wrong offset, and the
    /// consumer read at least what was acknowledged.
    pub fn check_consumed(&self, c: &mut super::report::Checks) {
        c.positive(self.acked, "records acknowledged");
        c.check(
            self.consumed >= self.acked,
            format!("consumed {} >= acknowledged {}", self.consumed, self.acked),
        );
        c.eq(self.lost, 0, "acknowledged records lost");
        c.eq(self.duplicated, 0, "records duplicated");
        c.eq(self.out_of_order, 0, "records out of order");
        c.eq(
            self.offset_mismatch,
            0,
            "acknowledged offsets not holding their value",
        );
    }
}

/// Canary records (decimal values) as VerifiableConsumer-judgeable acks.
pub fn acked_from_records(records: &[Record]) -> Vec<Acked> {
    records
        .iter()
        .filter_map(|(p, o, v)| {
            Some(Acked {
                partition: *p,
                offset: *o,
                value: v.parse().ok()?,
            })
        })
        .collect()
}
