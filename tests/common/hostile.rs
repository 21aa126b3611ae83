//! Hostile clients: malformed frames, each on a connection of its own,
//! corrupted record batches, a slowloris client, a frame begun and left
//! unfinished, and floods of idle connections; plus the probes that tell
//! the proxy still serves everyone else.

use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::RawConn;
use super::proxy_process::ProxyProcess;
use super::raw::{batch, errors, init_producer_id, produce_once};
use super::report::secs;

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
    let refused = [
        corrupt_first,
        corrupt_copy_of_cached,
        bad_crc_field,
        not_a_batch,
    ]
    .iter()
    .filter(|r| r.0 != errors::NONE)
    .count();
    json!({
        "corrupt_first": [corrupt_first.0, corrupt_first.1],
        "good_first": [good_first.0, good_first.1],
        "good_retry": [good_retry.0, good_retry.1],
        "corrupt_copy_of_cached": [corrupt_copy_of_cached.0, corrupt_copy_of_cached.1],
        "bad_crc_field": [bad_crc_field.0, bad_crc_field.1],
        "not_a_batch": [not_a_batch.0, not_a_batch.1],
        "refused": refused,
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

/// An ApiVersions v0 request begun (its length and the first two bytes of
/// its header) and left unfinished until `finish`.
pub struct StalledFrame {
    conn: RawConn,
    rest: Vec<u8>,
}

/// The correlation id of the stalled request.
const STALLED_CORR: i32 = 4242;

/// What the proxy did with a stalled frame.
#[derive(Debug, Clone, Copy)]
pub struct StalledOutcome {
    /// The proxy closed the connection while the frame was unfinished.
    pub closed_while_stalled: bool,
    /// Once the rest arrived, the request was answered (right correlation
    /// id) on the same connection.
    pub answered_once_complete: bool,
}

impl StalledFrame {
    pub async fn start(addr: &str) -> StalledFrame {
        let mut conn = RawConn::connect(addr).await;
        let frame = framed(&request_header(18, 0, STALLED_CORR, false));
        conn.send_raw(&frame[..6]).await.expect("send a half frame");
        StalledFrame {
            conn,
            rest: frame[6..].to_vec(),
        }
    }

    /// Sends the rest of the frame and reads the answer.
    pub async fn finish(mut self) -> StalledOutcome {
        let closed_while_stalled = self.conn.closed_within(Duration::from_millis(200)).await;
        let mut answered_once_complete = false;
        if !closed_while_stalled && self.conn.send_raw(&self.rest).await.is_ok() {
            answered_once_complete =
                tokio::time::timeout(Duration::from_secs(10), self.conn.recv_frame(0))
                    .await
                    .is_ok_and(|r| r.is_ok_and(|(corr, _)| corr == STALLED_CORR));
        }
        StalledOutcome {
            closed_while_stalled,
            answered_once_complete,
        }
    }
}
