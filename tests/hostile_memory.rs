//! The proxy process's memory under hostile frames stays within a small
//! multiple of the bytes a client actually sent.
//!
//! Starts the `kafka-dedup-proxy` binary, sends Produce v9 frames whose
//! topic count claims nearly every byte left (filled with one-byte
//! elements), and reads the process's peak resident set (`VmHWM`, reset
//! through `/proc/<pid>/clear_refs` before each case) and its resident set
//! once the connections are closed.
//!
//! The upstream is a stand-in broker that reads each frame and closes the
//! connection, as a broker does with a request it cannot parse, so the test
//! needs no cluster. `KDP_HOSTILE_UPSTREAM=<host:port>` points the proxy at
//! a real cluster instead, and `KDP_PROXY_BIN` runs another build of the
//! proxy (`scripts/hostile-memory` does both, with the release binary).

mod common;

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

const MIB: usize = 1024 * 1024;
/// Allowance over twice the bytes in flight: the proxy's own start-up
/// buffers, a read chunk and a reservation step per connection, and the
/// allocator's rounding.
const SLACK_BYTES: usize = 48 * MIB;

fn proxy_bin() -> String {
    std::env::var("KDP_PROXY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_kafka-dedup-proxy").to_string())
}

/// A stand-in broker: reads whole frames and closes the connection after
/// the first one (a broker's answer to a request it cannot parse).
async fn refusing_broker() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut len = [0u8; 4];
                if s.read_exact(&mut len).await.is_err() {
                    return;
                }
                let mut left = u32::from_be_bytes(len) as u64;
                let mut buf = vec![0u8; 64 * 1024];
                while left > 0 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => left = left.saturating_sub(n as u64),
                    }
                }
            });
        }
    });
    addr
}

struct RunningProxy {
    child: Child,
    pid: u32,
    bootstrap: u16,
    log: std::path::PathBuf,
}

async fn spawn_proxy(upstream: &str) -> RunningProxy {
    let base = common::next_port_base();
    let log = std::env::temp_dir().join(format!("kdp-hostile-memory-{base}.log"));
    let child = Command::new(proxy_bin())
        .env("KDP_UPSTREAM", upstream)
        .env("KDP_LISTEN", format!("127.0.0.1:{base}"))
        .env("KDP_BROKER_PORT_BASE", (base + 1).to_string())
        .env("KDP_ADVERTISED_HOST", "127.0.0.1")
        .env("KDP_METRICS_LISTEN", format!("127.0.0.1:{}", base + 5))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("proxy binary");
    let pid = child.id().unwrap();
    for _ in 0..100 {
        if TcpStream::connect(("127.0.0.1", base)).await.is_ok() {
            return RunningProxy {
                child,
                pid,
                bootstrap: base,
                log,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the proxy binary did not start listening");
}

/// A field of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"));
    let kb: usize = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// Resets the peak resident set to the current one (`proc(5)`,
/// `clear_refs`: "5").
fn reset_peak(pid: u32) {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
}

/// What follows the topic count of a hostile Produce v9 request.
#[derive(Clone, Copy, Debug)]
enum Topics {
    /// A count claiming nearly every byte left, then 0x01 bytes: refused
    /// because the bytes cannot hold that many topics.
    CountClaimsEveryByte,
    /// As many valid empty topics (3 bytes each) as fit: refused because
    /// they would decode into 24 times their size.
    ValidEmpty,
}

/// A Produce v9 request frame of `body_len` body bytes.
fn hostile_produce_frame(body_len: usize, topics: Topics) -> Vec<u8> {
    let mut f = Vec::with_capacity(body_len + 4);
    f.extend_from_slice(&(body_len as i32).to_be_bytes());
    f.extend_from_slice(&0i16.to_be_bytes()); // Produce
    f.extend_from_slice(&9i16.to_be_bytes());
    f.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    f.extend_from_slice(&(-1i16).to_be_bytes()); // null client id
    f.push(0); // header tagged fields
    f.push(0); // null transactional id
    f.extend_from_slice(&(-1i16).to_be_bytes()); // acks=all
    f.extend_from_slice(&30_000i32.to_be_bytes());
    // 5 bytes for the count's varint (at most), 1 for the request's
    // tagged fields.
    let left = body_len - (f.len() - 4) - 5 - 1;
    let count = match topics {
        Topics::CountClaimsEveryByte => left,
        Topics::ValidEmpty => left / 3,
    } as u32;
    let mut v = count + 1;
    while v >= 0x80 {
        f.push((v as u8) | 0x80);
        v >>= 7;
    }
    f.push(v as u8);
    match topics {
        Topics::CountClaimsEveryByte => f.resize(body_len + 4, 1),
        Topics::ValidEmpty => {
            for _ in 0..count {
                f.extend_from_slice(&[1, 1, 0]); // name "", no partitions, no tags
            }
            f.push(0); // request tagged fields
            // Pad what the count's varint did not take with a trailing
            // byte the parser never reaches.
            f.resize(body_len + 4, 0);
        }
    }
    f
}

/// Sends `frame` on a new connection and waits until the proxy closes it.
async fn send_and_wait(port: u16, frame: std::sync::Arc<Vec<u8>>) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let _ = s.write_all(&frame).await;
    let mut sink = [0u8; 1024];
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the proxy closes a refused connection");
}

struct Measured {
    sent: usize,
    before: usize,
    peak: usize,
    after: usize,
}

/// Sends one hostile frame of `frame_bytes` on each of `connections`
/// connections at once; the proxy's resident set before, at its peak and
/// after.
async fn run_case(
    p: &RunningProxy,
    connections: usize,
    frame_bytes: usize,
    topics: Topics,
) -> Measured {
    let frame = std::sync::Arc::new(hostile_produce_frame(frame_bytes, topics));
    // Let start-up settle, then measure from here.
    tokio::time::sleep(Duration::from_millis(300)).await;
    reset_peak(p.pid);
    let before = status_bytes(p.pid, "VmRSS:");
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(send_and_wait(p.bootstrap, std::sync::Arc::clone(&frame))))
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let peak = status_bytes(p.pid, "VmHWM:");
    // The proxy's connection tasks end just after the sockets close.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = status_bytes(p.pid, "VmRSS:");
    Measured {
        sent: connections * frame.len(),
        before,
        peak,
        after,
    }
}

fn mib(n: usize) -> f64 {
    n as f64 / MIB as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_produce_frames_cost_at_most_twice_their_bytes() {
    let upstream = match std::env::var("KDP_HOSTILE_UPSTREAM") {
        Ok(u) => u,
        Err(_) => refusing_broker().await,
    };
    let mut p = spawn_proxy(&upstream).await;
    // Every case runs and is reported before any is judged.
    let mut over = Vec::new();
    for (connections, frame_mib, topics) in [
        (1, 60, Topics::CountClaimsEveryByte),
        (3, 90, Topics::CountClaimsEveryByte),
        (1, 60, Topics::ValidEmpty),
    ] {
        let m = run_case(&p, connections, frame_mib * MIB, topics).await;
        let growth = m.peak.saturating_sub(m.before);
        println!(
            "{connections} x {frame_mib} MiB, {topics:?}: sent {:.0} MiB; RSS before {:.0} MiB, peak {:.0} MiB \
             (+{:.0} MiB, {:.2}x the bytes sent), after {:.0} MiB",
            mib(m.sent),
            mib(m.before),
            mib(m.peak),
            mib(growth),
            growth as f64 / m.sent as f64,
            mib(m.after),
        );
        if growth > 2 * m.sent + SLACK_BYTES {
            over.push(format!(
                "{connections} x {frame_mib} MiB, {topics:?}: peak RSS grew by {:.0} MiB for {:.0} MiB sent",
                mib(growth),
                mib(m.sent)
            ));
        }
        // What stays resident is not the hostile frames.
        if m.after > m.before + SLACK_BYTES {
            over.push(format!(
                "{connections} x {frame_mib} MiB, {topics:?}: {:.0} MiB resident after, {:.0} MiB before",
                mib(m.after),
                mib(m.before)
            ));
        }
    }
    assert!(over.is_empty(), "{over:#?}");
    let _ = p.child.kill().await;
    let log = std::fs::read_to_string(&p.log).unwrap_or_default();
    for line in log.lines().filter(|l| l.contains("not parsable")) {
        println!("proxy log: {line}");
    }
    let _ = std::fs::remove_file(&p.log);
    assert!(
        log.contains("produce request not parsable")
            && log.contains("topic count exceeds")
            && log.contains("decode budget"),
        "a clear log line names each refusal: {log}"
    );
}
