//! Broker registry: node id → real upstream address, and the per-broker
//! listener the proxy serves that node on (port = base + node id).
//!
//! Listeners are bound the first time a node id is seen (in the start-up
//! probe or in any response relayed to a client that names brokers) and
//! before the response that names it reaches the client, so a client can
//! always connect to an address it was just given. The registry only binds;
//! the top of the proxy serves what it bound (see `proxy::serve_new_listeners`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use tokio::net::TcpListener;
use tokio::sync::mpsc;

use crate::metrics as kdp_metrics;

/// A broker listener bound for a node id seen for the first time, handed to
/// whoever serves listeners (the top of the proxy).
#[derive(Debug)]
pub struct NewListener {
    pub node_id: i32,
    pub listener: TcpListener,
}

#[derive(Debug)]
struct BrokerEntry {
    upstream: String,
    listening: bool,
}

#[derive(Debug)]
pub struct BrokerRegistry {
    inner: Mutex<HashMap<i32, BrokerEntry>>,
    advertised_host: String,
    port_base: u16,
    listen_ip: IpAddr,
    opened: mpsc::UnboundedSender<NewListener>,
}

impl BrokerRegistry {
    /// A registry and the receiving end of the listeners it binds.
    pub fn new(
        advertised_host: String,
        port_base: u16,
        listen_ip: IpAddr,
    ) -> (Self, mpsc::UnboundedReceiver<NewListener>) {
        let (opened, rx) = mpsc::unbounded_channel();
        let reg = BrokerRegistry {
            inner: Mutex::new(HashMap::new()),
            advertised_host,
            port_base,
            listen_ip,
            opened,
        };
        (reg, rx)
    }

    /// The documented, deterministic port of node `node_id`.
    pub fn port_of(&self, node_id: i32) -> Option<u16> {
        let p = i64::from(self.port_base) + i64::from(node_id);
        u16::try_from(p).ok().filter(|p| *p != 0)
    }

    /// (host, port) clients are told for a node. A node id whose port
    /// would fall outside 1..=65535 is advertised with port 0, which no
    /// client can reach: never the broker's real address.
    pub fn advertise(&self, node_id: i32) -> (String, i32) {
        (
            self.advertised_host.clone(),
            self.port_of(node_id).map_or(0, i32::from),
        )
    }

    /// The real address of a node, as the cluster last reported it.
    pub fn upstream_of(&self, node_id: i32) -> Option<String> {
        self.lock().get(&node_id).map(|e| e.upstream.clone())
    }

    pub fn node_ids(&self) -> Vec<i32> {
        let mut v: Vec<_> = self.lock().keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, BrokerEntry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl BrokerRegistry {
    /// Records the brokers a response names (`real_address` maps the
    /// address the cluster reports to the one the proxy dials). Every node
    /// id seen for the first time gets its listener bound here, before the
    /// response that names it reaches the client, so a client can always
    /// connect to an address it was just given; the bound listener is
    /// handed on to be served. With `open_listeners` false (draining)
    /// addresses are still recorded.
    pub fn observe(
        &self,
        brokers: impl IntoIterator<Item = (i32, String, i32)>,
        real_address: impl Fn(&str) -> String,
        open_listeners: bool,
    ) {
        let mut map = self.lock();
        for (node_id, host, port) in brokers {
            let upstream = real_address(&format!("{host}:{port}"));
            let entry = map.entry(node_id).or_insert_with(|| BrokerEntry {
                upstream: upstream.clone(),
                listening: false,
            });
            if entry.upstream != upstream {
                tracing::info!(node_id, old = %entry.upstream, new = %upstream, "broker address changed");
                entry.upstream = upstream;
            }
            if entry.listening || !open_listeners {
                continue;
            }
            let Some(port) = self.port_of(node_id) else {
                tracing::error!(
                    node_id,
                    base = self.port_base,
                    "broker node id gives no valid port; not served"
                );
                continue;
            };
            let addr = SocketAddr::new(self.listen_ip, port);
            match bind(addr) {
                Ok(listener) => {
                    entry.listening = true;
                    metrics::gauge!(kdp_metrics::BROKER_LISTENERS).increment(1.0);
                    tracing::info!(node_id, %addr, upstream = %entry.upstream, "broker listener open");
                    // Nobody serves listeners any more only while the
                    // proxy stops.
                    let _ = self.opened.send(NewListener { node_id, listener });
                }
                Err(e) => {
                    tracing::error!(node_id, %addr, error = %e, "cannot open broker listener")
                }
            }
        }
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Binds the bootstrap listener the same way.
pub fn bind_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    bind(addr)
}
