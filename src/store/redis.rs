//! The Redis store: [`DedupStore`] over a single node (redis-rs'
//! `ConnectionManager`, which reconnects with backoff) or a Redis Cluster
//! (its async `ClusterConnection`, which follows slot moves and failovers).
//!
//! * Every call is bounded by the configured timeout, whatever the client
//!   does inside (retries, reconnects): a slow or dead store costs at most
//!   that much per request, then the caller falls back.
//! * The first connection is made in the background, so the proxy starts
//!   (and serves, forwarding) while the store is down.
//! * Writes are queued and sent by one writer task in pipelines of
//!   whatever has queued meanwhile: the Produce response never waits for
//!   them. A full queue drops the write (counted): a later retry of that
//!   batch on another replica is then forwarded, the broker decides.
//! * On a cluster, one pipeline per hash tag (a command batch may not cross
//!   slots), all sent at once: still one round trip of wall time.
//! * A ping every second keeps `kdp_store_up` and `/readyz` current
//!   without traffic; two failed pings in a row (or ten unanswered within
//!   the timeout) drop the connection and make a new one (with backoff),
//!   so a Redis that was killed and restarted is found again without a
//!   proxy restart.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{IntoConnectionInfo, Pipeline, RedisResult, Value};
use tokio::sync::mpsc;

use super::names::{
    decode_batch, decode_key, encode_batch, encode_claim, encode_origin, key_name, key_tag,
    window_key, window_tag,
};
use super::{StoreSettings, StoreTarget};
use crate::dedup::cache::ProducerPartition;
use crate::dedup::keys::{KeyId, KeyOrigin};
use crate::dedup::store::{
    ClaimToken, DedupStore, KeySpace, StoreError, StoreFuture, StoredBatch, StoredKey, shareable,
};
use crate::metrics as m;

/// Writes queued before new ones are dropped: at 100k acknowledged
/// batches a second, a second of store outage.
const WRITE_QUEUE: usize = 100_000;
/// Most writes sent in one pipeline.
const WRITE_BATCH: usize = 512;
const PING_EVERY: Duration = Duration::from_secs(1);
/// Bound of one background connection attempt (not on any request's path).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How long a key claim holds without its replica resolving it (a replica
/// that died mid-request): past it another replica may claim the key.
/// Waiters give up sooner (`dedup::shared_keys::KEY_WAIT_MAX`).
const CLAIM_TTL_MS: u64 = 30_000;

/// Claims each key of KEYS that nobody holds for ARGV[1] (PX ARGV[2]);
/// returns per key "" (claimed now, or already by ARGV[1]) or the value
/// found (another claim, or a committed origin). Atomic: one script.
const CLAIM_SCRIPT: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('SET', k, ARGV[1], 'NX', 'PX', ARGV[2]) then
    out[i] = ''
  else
    local v = redis.call('GET', k)
    if v == ARGV[1] then out[i] = '' else out[i] = v or '' end
  end
end
return out
"#;

/// Commits KEYS[1] as ARGV[2] for the window (PX ARGV[3]) if claim ARGV[1]
/// holds it or nobody does; a key another claim holds or another replica
/// committed first is left alone.
const COMMIT_SCRIPT: &str = r#"
local v = redis.call('GET', KEYS[1])
if (not v) or v == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
"#;

/// Deletes KEYS[1] if claim ARGV[1] holds it.
const RELEASE_SCRIPT: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"#;

/// Metric `op` labels.
mod op {
    pub const LOAD_WINDOWS: &str = "load_windows";
    pub const SAVE_BATCHES: &str = "save_batches";
    pub const CLAIM_KEYS: &str = "claim_keys";
    pub const PING: &str = "ping";
}

#[derive(Clone)]
enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    async fn pipe(&mut self, p: &Pipeline) -> RedisResult<Vec<Value>> {
        match self {
            Conn::Single(c) => p.query_async(c).await,
            Conn::Cluster(c) => p.query_async(c).await,
        }
    }
}

/// One queued write: its commands, and the hash tag they share.
struct Write {
    tag: String,
    cmds: Vec<redis::Cmd>,
}

struct Inner {
    conn: RwLock<Option<Conn>>,
    timeout: Duration,
    window: usize,
    window_ttl_ms: u64,
    key_ttl_ms: u64,
    up: AtomicBool,
    target: String,
}

/// The Redis implementation of [`DedupStore`].
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
    writes: mpsc::Sender<Write>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("target", &self.inner.target)
            .field("up", &self.is_up())
            .finish()
    }
}

fn store_error(e: &redis::RedisError) -> StoreError {
    if e.is_timeout() {
        StoreError::Timeout
    } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() {
        StoreError::Unavailable(e.to_string())
    } else {
        StoreError::Failed(e.to_string())
    }
}

impl Inner {
    fn conn(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn mark(&self, up: bool) {
        if self.up.swap(up, Ordering::Relaxed) != up {
            if up {
                tracing::info!(store = %self.target, "dedup store reachable");
            } else {
                tracing::warn!(store = %self.target, "dedup store unreachable; batch dedup falls back to forwarding");
            }
        }
        m::set_store_up(up);
    }

    /// Runs each pipeline (one per hash tag on a cluster) at once, all
    /// bounded by the timeout together; results in the pipelines' order.
    async fn run(
        &self,
        what: &'static str,
        pipes: Vec<Pipeline>,
    ) -> Result<Vec<Vec<Value>>, StoreError> {
        let started = Instant::now();
        let result = match self.conn() {
            None => Err(StoreError::Unavailable("not connected yet".into())),
            Some(conn) => {
                let calls: Vec<_> = pipes
                    .into_iter()
                    .map(|p| {
                        let mut c = conn.clone();
                        tokio::spawn(async move { c.pipe(&p).await })
                    })
                    .collect();
                let all = async {
                    let mut out = Vec::with_capacity(calls.len());
                    for call in calls {
                        match call.await {
                            Ok(Ok(v)) => out.push(v),
                            Ok(Err(e)) => return Err(store_error(&e)),
                            Err(e) => return Err(StoreError::Failed(e.to_string())),
                        }
                    }
                    Ok(out)
                };
                match tokio::time::timeout(self.timeout, all).await {
                    Ok(r) => r,
                    Err(_) => Err(StoreError::Timeout),
                }
            }
        };
        m::record_store_duration(what, started.elapsed().as_secs_f64());
        match &result {
            Ok(_) => self.mark(true),
            Err(e) => {
                m::count_store_error(what, e.kind());
                if !matches!(e, StoreError::Timeout) {
                    self.mark(false);
                }
            }
        }
        result
    }
}

async fn connect(
    target: &StoreTarget,
    password: Option<&str>,
    timeout: Duration,
) -> RedisResult<Conn> {
    match target {
        StoreTarget::Single { url } => {
            let mut info = url.as_str().into_connection_info()?;
            if let Some(p) = password {
                info.redis.password = Some(p.to_string());
            }
            let client = redis::Client::open(info)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(CONNECT_TIMEOUT)
                .set_response_timeout(timeout)
                .set_number_of_retries(2)
                .set_max_delay(MAX_BACKOFF.as_millis() as u64);
            Ok(Conn::Single(
                ConnectionManager::new_with_config(client, config).await?,
            ))
        }
        StoreTarget::Cluster {
            nodes,
            username,
            password: url_password,
        } => {
            let mut b = ClusterClientBuilder::new(nodes.clone())
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(timeout)
                .retries(2)
                .min_retry_wait(10)
                .max_retry_wait(MAX_BACKOFF.as_millis() as u64);
            if let Some(u) = username {
                b = b.username(u.clone());
            }
            if let Some(p) = password
                .map(str::to_string)
                .or_else(|| url_password.clone())
            {
                b = b.password(p);
            }
            Ok(Conn::Cluster(b.build()?.get_async_connection().await?))
        }
    }
}

impl RedisStore {
    /// Starts the store's background tasks (connecting, writing, pinging)
    /// on the current runtime; returns at once.
    pub fn start(settings: StoreSettings) -> RedisStore {
        let (tx, rx) = mpsc::channel(WRITE_QUEUE);
        let inner = Arc::new(Inner {
            conn: RwLock::new(None),
            timeout: settings.timeout,
            window: settings.window.max(1),
            window_ttl_ms: settings
                .window_ttl
                .as_millis()
                .clamp(1000, u64::MAX as u128) as u64,
            key_ttl_ms: settings.key_ttl.as_millis().clamp(1000, u64::MAX as u128) as u64,
            up: AtomicBool::new(false),
            target: settings.target.redacted(),
        });
        m::set_store_up(false);
        tokio::spawn(supervise(Arc::clone(&inner), settings));
        tokio::spawn(write_loop(Arc::clone(&inner), rx));
        RedisStore { inner, writes: tx }
    }

    fn queue(&self, w: Write) {
        if self.writes.try_send(w).is_err() {
            m::count_store_error(op::SAVE_BATCHES, "overflow");
        }
    }

    /// The target without credentials, for logs and `/readyz`.
    pub fn target(&self) -> &str {
        &self.inner.target
    }
}

/// Consecutive failed pings (an error: refused, reset, closed) after which
/// the connection is dropped and made anew (the client's own reconnect
/// gives up after one failed attempt).
const PINGS_BEFORE_RECONNECT: u32 = 2;
/// Consecutive pings past the timeout after which the same is done: a slow
/// store is not reconnected every other second, a silent one is.
const SLOW_PINGS_BEFORE_RECONNECT: u32 = 10;

/// Connects (in the background, with backoff), pings every second, and
/// drops and remakes a connection whose pings keep failing: a store that
/// was killed and restarted, or moved, is found again without a restart.
async fn supervise(inner: Arc<Inner>, settings: StoreSettings) {
    let mut backoff = Duration::from_millis(100);
    let mut logged = false;
    let (mut failed_pings, mut slow_pings) = (0, 0);
    loop {
        if inner.conn().is_none() {
            let attempt = tokio::time::timeout(
                CONNECT_TIMEOUT * 2,
                connect(
                    &settings.target,
                    settings.password.as_deref(),
                    settings.timeout,
                ),
            )
            .await;
            match attempt {
                Ok(Ok(conn)) => {
                    *inner.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
                    inner.mark(true);
                    backoff = Duration::from_millis(100);
                    logged = false;
                    (failed_pings, slow_pings) = (0, 0);
                }
                failed => {
                    inner.mark(false);
                    if !logged {
                        logged = true;
                        let error = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "connection timed out".into(),
                        };
                        tracing::warn!(store = %inner.target, %error, "dedup store not reachable; retrying in the background");
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
        }
        tokio::time::sleep(PING_EVERY).await;
        let mut p = redis::pipe();
        p.cmd("PING");
        match inner.run(op::PING, vec![p]).await {
            Ok(_) => (failed_pings, slow_pings) = (0, 0),
            Err(StoreError::Timeout) => {
                // Not answering within the timeout is down, as far as
                // requests can tell (`kdp_store_up`, `/readyz`).
                slow_pings += 1;
                inner.mark(false);
            }
            Err(_) => failed_pings += 1,
        }
        if failed_pings >= PINGS_BEFORE_RECONNECT || slow_pings >= SLOW_PINGS_BEFORE_RECONNECT {
            tracing::debug!(store = %inner.target, "dedup store pings failing; connecting anew");
            *inner.conn.write().unwrap_or_else(|e| e.into_inner()) = None;
            inner.mark(false);
        }
    }
}

/// Pipelines of the queued writes: one per hash tag on a cluster, one in
/// all on a single node.
fn write_pipes(cluster: bool, writes: Vec<Write>) -> Vec<Pipeline> {
    let mut by_tag: HashMap<String, Pipeline> = HashMap::new();
    for w in writes {
        let tag = if cluster { w.tag } else { String::new() };
        let p = by_tag.entry(tag).or_insert_with(redis::pipe);
        for c in w.cmds {
            p.add_command(c).ignore();
        }
    }
    by_tag.into_values().collect()
}

async fn write_loop(inner: Arc<Inner>, mut rx: mpsc::Receiver<Write>) {
    let mut buf = Vec::with_capacity(WRITE_BATCH);
    while rx.recv_many(&mut buf, WRITE_BATCH).await > 0 {
        let writes = std::mem::take(&mut buf);
        let n = writes.len();
        let cluster = inner.conn().is_some_and(|c| c.is_cluster());
        let pipes = write_pipes(cluster, writes);
        if let Err(e) = inner.run(op::SAVE_BATCHES, pipes).await {
            tracing::debug!(error = %e, batches = n, "committed batches not written to the dedup store");
        }
    }
}

impl DedupStore for RedisStore {
    fn load_windows(&self, keys: Vec<ProducerPartition>) -> StoreFuture<Vec<Vec<StoredBatch>>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            let cluster = inner.conn().is_some_and(|c| c.is_cluster());
            // Pipelines by tag, and where each key's answer is.
            let mut tags: Vec<String> = Vec::new();
            let mut pipes: Vec<Pipeline> = Vec::new();
            let mut at: Vec<(usize, usize)> = Vec::with_capacity(keys.len());
            let mut counts: Vec<usize> = Vec::new();
            for k in &keys {
                let tag = if cluster {
                    window_tag(k)
                } else {
                    String::new()
                };
                let i = match tags.iter().position(|t| *t == tag) {
                    Some(i) => i,
                    None => {
                        tags.push(tag);
                        pipes.push(redis::pipe());
                        counts.push(0);
                        tags.len() - 1
                    }
                };
                pipes[i]
                    .cmd("LRANGE")
                    .arg(window_key(k))
                    .arg(0)
                    .arg(inner.window as isize - 1);
                at.push((i, counts[i]));
                counts[i] += 1;
            }
            let answers = inner.run(op::LOAD_WINDOWS, pipes).await?;
            let windows = at
                .iter()
                .map(|&(p, j)| match answers.get(p).and_then(|a| a.get(j)) {
                    Some(Value::Array(items)) => items
                        .iter()
                        .filter_map(|v| match v {
                            Value::BulkString(b) => decode_batch(b),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                })
                .collect();
            Ok(windows)
        })
    }

    fn save_batch(&self, key: ProducerPartition, batch: StoredBatch) {
        if !shareable(&key.scope) {
            return;
        }
        let name = window_key(&key);
        let mut push = redis::cmd("LPUSH");
        push.arg(&name).arg(encode_batch(&batch));
        let mut trim = redis::cmd("LTRIM");
        trim.arg(&name).arg(0).arg(self.inner.window as isize - 1);
        let mut expire = redis::cmd("PEXPIRE");
        expire.arg(&name).arg(self.inner.window_ttl_ms);
        self.queue(Write {
            tag: window_tag(&key),
            cmds: vec![push, trim, expire],
        });
    }

    fn claim_keys(
        &self,
        keys: Vec<(KeySpace, KeyId)>,
        token: ClaimToken,
    ) -> StoreFuture<Vec<StoredKey>> {
        let inner = Arc::clone(&self.inner);
        Box::pin(async move {
            // One script per key space (one hash tag, one slot), all sent
            // in one pipeline on a single node, side by side on a cluster.
            let mut spaces: Vec<KeySpace> = Vec::new();
            let mut members: Vec<Vec<usize>> = Vec::new();
            for (i, (space, _)) in keys.iter().enumerate() {
                match spaces.iter().position(|s| s == space) {
                    Some(j) => members[j].push(i),
                    None => {
                        spaces.push(*space);
                        members.push(vec![i]);
                    }
                }
            }
            let cluster = inner.conn().is_some_and(|c| c.is_cluster());
            let claim = encode_claim(token);
            let mut pipes: Vec<Pipeline> = Vec::new();
            let mut at: Vec<(usize, usize)> = Vec::new();
            for (j, space) in spaces.iter().enumerate() {
                if cluster || pipes.is_empty() {
                    pipes.push(redis::pipe());
                }
                let p = pipes.len() - 1;
                let pipe = &mut pipes[p];
                let cmd = pipe.cmd("EVAL").arg(CLAIM_SCRIPT).arg(members[j].len());
                for &i in &members[j] {
                    cmd.arg(key_name(*space, keys[i].1));
                }
                cmd.arg(&claim).arg(CLAIM_TTL_MS);
                let index = pipe.cmd_iter().count() - 1;
                at.push((p, index));
            }
            let answers = inner.run(op::CLAIM_KEYS, pipes).await?;
            let mut found = vec![None; keys.len()];
            for (j, &(p, index)) in at.iter().enumerate() {
                let Some(Value::Array(items)) = answers.get(p).and_then(|a| a.get(index)) else {
                    return Err(StoreError::Failed("claim script answered no list".into()));
                };
                if items.len() != members[j].len() {
                    return Err(StoreError::Failed(
                        "claim script answered a short list".into(),
                    ));
                }
                for (&i, v) in members[j].iter().zip(items) {
                    let bytes: &[u8] = match v {
                        Value::BulkString(b) => b,
                        Value::SimpleString(s) => s.as_bytes(),
                        _ => b"",
                    };
                    found[i] = Some(decode_key(bytes));
                }
            }
            // Every position was filled above (lengths checked).
            Ok(found
                .into_iter()
                .map(|f| f.unwrap_or(StoredKey::Claimed))
                .collect())
        })
    }

    fn commit_key(&self, space: KeySpace, id: KeyId, token: ClaimToken, origin: KeyOrigin) {
        let mut c = redis::cmd("EVAL");
        c.arg(COMMIT_SCRIPT)
            .arg(1)
            .arg(key_name(space, id))
            .arg(encode_claim(token))
            .arg(encode_origin(origin))
            .arg(self.inner.key_ttl_ms);
        self.queue(Write {
            tag: key_tag(space),
            cmds: vec![c],
        });
    }

    fn release_key(&self, space: KeySpace, id: KeyId, token: ClaimToken) {
        let mut c = redis::cmd("EVAL");
        c.arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(key_name(space, id))
            .arg(encode_claim(token));
        self.queue(Write {
            tag: key_tag(space),
            cmds: vec![c],
        });
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Relaxed)
    }
}
