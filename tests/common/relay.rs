//! The fault relay: a frame-aware TCP relay per broker between the proxy
//! and the cluster (the proxy dials it through `--broker-address-map`). It
//! parses frames, so its faults hit the moments that matter exactly: a
//! Produce response lost after the broker wrote the batch, a Produce
//! response held past the client's request timeout (the client retries
//! while the original is still at the broker), connections reset
//! mid-stream, every frame delayed, or nothing delivered at all for a
//! while (a black hole: bytes and new connections are held, as TCP holds
//! them across a partition). It counts everything it did, so a scenario
//! can assert that each fault it asked for happened.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::cluster;
use super::report::sabotage;

/// False under `KDP_RELIABILITY_SABOTAGE=no-faults`: the relay then
/// injects nothing it is asked to, and the scenarios' fault checks (and
/// the checks that depend on a fault, such as answers by the proxy) must
/// fail.
fn injecting() -> bool {
    sabotage() != "no-faults"
}

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
    /// Produce responses held back by `hold_produce_responses`.
    pub held_responses: AtomicUsize,
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
    hold_produce_responses: AtomicUsize,
    hold_ms: AtomicU64,
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
            hold_produce_responses: AtomicUsize::new(0),
            hold_ms: AtomicU64::new(0),
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
        if !injecting() {
            return;
        }
        self.ctl.reset.send_modify(|g| *g += 1);
    }

    /// Delays every frame, both ways, by `d` from the moment it arrived.
    pub fn set_delay(&self, d: Duration) {
        if !injecting() {
            return;
        }
        self.ctl
            .delay_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
    }

    /// Holds every frame and new connection while `on`.
    pub fn black_hole(&self, on: bool) {
        if !injecting() {
            return;
        }
        if on {
            self.ctl.stats.blackholes.fetch_add(1, Ordering::Relaxed);
        }
        self.ctl.blackhole.send_replace(on);
    }

    /// The next `n` Produce responses are swallowed and their connection
    /// reset.
    pub fn lose_produce_responses(&self, n: usize) {
        if !injecting() {
            return;
        }
        self.ctl
            .lose_produce_responses
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The next `n` Produce responses are each held for `d` (longer than
    /// the client's request timeout: it gives up and retries while the
    /// original is committed or still at the broker), then delivered.
    pub fn hold_produce_responses(&self, n: usize, d: Duration) {
        if !injecting() {
            return;
        }
        self.ctl
            .hold_ms
            .store(d.as_millis() as u64, Ordering::Relaxed);
        self.ctl
            .hold_produce_responses
            .fetch_add(n, Ordering::Relaxed);
    }

    /// Produce responses still to be held.
    pub fn holds_pending(&self) -> usize {
        self.ctl.hold_produce_responses.load(Ordering::Relaxed)
    }

    /// Produce responses still to be lost.
    pub fn losses_pending(&self) -> usize {
        self.ctl.lose_produce_responses.load(Ordering::Relaxed)
    }

    /// A reading of one counter.
    pub fn count(&self, which: fn(&RelayStats) -> &AtomicUsize) -> usize {
        which(self.stats()).load(Ordering::Relaxed)
    }

    pub fn faults_json(&self) -> Value {
        let s = self.stats();
        json!({
            "relay_connections": s.connections.load(Ordering::Relaxed),
            "resets": s.resets.load(Ordering::Relaxed),
            "lost_responses": s.lost_responses.load(Ordering::Relaxed),
            "delayed_frames": s.delayed_frames.load(Ordering::Relaxed),
            "held_responses": s.held_responses.load(Ordering::Relaxed),
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
            + s.held_responses.load(Ordering::Relaxed)
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
                let take = |n: &AtomicUsize| {
                    n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                        .is_ok()
                };
                if api == Some(0) && take(&ctl.lose_produce_responses) {
                    ctl.stats.lost_responses.fetch_add(1, Ordering::Relaxed);
                    kill.cancel();
                    return;
                }
                if api == Some(0) && take(&ctl.hold_produce_responses) {
                    ctl.stats.held_responses.fetch_add(1, Ordering::Relaxed);
                    let hold = ctl.hold_ms.load(Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(hold)).await;
                }
            }
            if w.write_all(&f).await.is_err() {
                return;
            }
        }
    };
    tokio::join!(reader, writer);
}
