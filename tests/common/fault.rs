//! A fault layer between the proxy and the brokers: a TCP relay per broker
//! that holds back some Produce responses for longer than the client's
//! request timeout, so real clients time out and retry while the original
//! is still (or already) committed at the broker.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub struct FaultLayer {
    /// (real broker address, relay address)
    pub routes: Vec<(String, String)>,
    pub delayed: Arc<AtomicUsize>,
}

impl FaultLayer {
    /// "real=relay,..." for `--broker-address-map`.
    pub fn address_map(&self) -> String {
        self.routes
            .iter()
            .map(|(real, relay)| format!("{real}={relay}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Relays to every broker; every `every`-th Produce response (at most
/// `max_delays` of them) is held for `delay`.
pub async fn start(
    brokers: &[String],
    every: usize,
    delay: Duration,
    max_delays: usize,
) -> FaultLayer {
    let delayed = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(AtomicUsize::new(0));
    let mut routes = Vec::new();
    for real in brokers {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = listener.local_addr().unwrap().to_string();
        routes.push((real.clone(), relay));
        let real = real.clone();
        let delayed = Arc::clone(&delayed);
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(upstream) = TcpStream::connect(&real).await else {
                    continue;
                };
                let delayed = Arc::clone(&delayed);
                let seen = Arc::clone(&seen);
                tokio::spawn(relay_conn(
                    client, upstream, every, delay, max_delays, delayed, seen,
                ));
            }
        });
    }
    FaultLayer { routes, delayed }
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Vec<u8>> {
    let len = r.read_i32().await.ok()?;
    let mut buf = vec![0u8; 4 + len as usize];
    buf[..4].copy_from_slice(&len.to_be_bytes());
    r.read_exact(&mut buf[4..]).await.ok()?;
    Some(buf)
}

async fn relay_conn(
    client: TcpStream,
    upstream: TcpStream,
    every: usize,
    delay: Duration,
    max_delays: usize,
    delayed: Arc<AtomicUsize>,
    seen: Arc<AtomicUsize>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut ur, mut uw) = upstream.into_split();
    let kinds: Arc<Mutex<HashMap<i32, i16>>> = Arc::default();
    let k2 = Arc::clone(&kinds);
    tokio::spawn(async move {
        while let Some(f) = read_frame(&mut cr).await {
            if f.len() >= 12 {
                let api = i16::from_be_bytes([f[4], f[5]]);
                let corr = i32::from_be_bytes([f[8], f[9], f[10], f[11]]);
                k2.lock().unwrap().insert(corr, api);
            }
            if uw.write_all(&f).await.is_err() {
                break;
            }
        }
    });
    while let Some(f) = read_frame(&mut ur).await {
        let corr = i32::from_be_bytes([f[4], f[5], f[6], f[7]]);
        let api = kinds.lock().unwrap().remove(&corr);
        if api == Some(0) {
            let n = seen.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_multiple_of(every) && delayed.load(Ordering::Relaxed) < max_delays {
                delayed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
            }
        }
        if cw.write_all(&f).await.is_err() {
            break;
        }
    }
}
