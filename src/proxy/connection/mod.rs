//! One client connection and its one broker connection.
//!
//! A request passes these stages, one file each:
//!
//! * [`accept`]: TLS handshake with the client, the broker connection.
//! * [`client_reader`]: reads requests; queues, in arrival order, one
//!   *response slot* per request that expects an answer; writes requests
//!   to the broker in bursts.
//! * [`dispatch`]: what each API needs (forward, rewrite its response,
//!   follow SASL, answer ApiVersions above our range).
//! * [`produce`]: Produce requests go through dedup's `Decision`.
//! * [`upstream`]: the broker write half and the answers owed by it.
//! * [`upstream_reader`]: reads the broker's responses in order and matches
//!   each to its owed entry by correlation id.
//! * [`responses`]: rewrites a response (endpoints, ApiVersions clamp),
//!   completes dedup, adopts a SASL user; fills the request's slot.
//! * [`client_writer`]: empties the slots strictly in request order, so an
//!   answer the proxy makes itself waits its turn behind earlier requests
//!   still at the broker (Java clients throw on a correlation mismatch;
//!   librdkafka drops the connection).
//!
//! The upstream reader runs until every owed answer is read, even after the
//! client went away: a retry on another connection may be waiting for
//! exactly that answer.

mod accept;
mod client_reader;
mod client_writer;
mod dispatch;
mod produce;
mod responses;
mod sasl;
mod upstream;
mod upstream_reader;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::error::Close;
use super::io::{Ahead, FrameReader};
use crate::dedup::cache::Scope;
use crate::metrics as kdp_metrics;
use client_reader::Session;
use upstream::{BrokerWriter, UpstreamWrite};

/// Which upstream a listener's connections go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Any of the configured bootstrap servers.
    Bootstrap,
    /// The broker with this node id.
    Broker(i32),
}

impl Target {
    pub fn label(self) -> &'static str {
        match self {
            Target::Bootstrap => "bootstrap",
            Target::Broker(_) => "broker",
        }
    }
}

/// What the client writer receives for a slot: the bytes to send, or why
/// the connection must close because no correct answer can be given.
type Reply = Result<Answer, Close>;

/// An answer for the client. A broker's holds its share of the
/// connection's response budget until it is written (or dropped).
pub(super) struct Answer {
    pub bytes: Bytes,
    _budget: Option<OwnedSemaphorePermit>,
}

impl From<Bytes> for Answer {
    fn from(bytes: Bytes) -> Answer {
        Answer {
            bytes,
            _budget: None,
        }
    }
}

/// Broker responses read but not yet written to the client, per
/// connection, at most (a response larger than this still goes through,
/// alone): past it the proxy stops reading from the broker until the
/// client reads, so a client that pipelines requests and never reads
/// cannot make the proxy hold more than this (plus one frame being read).
const RESPONSE_BUDGET_BYTES: usize = 64 << 20;
/// The budget is counted in units of this many bytes (semaphore permits).
const BUDGET_UNIT: usize = 1024;

/// The response budget of one connection.
#[derive(Clone)]
pub(super) struct ResponseBudget {
    permits: Arc<Semaphore>,
    total: u32,
}

impl ResponseBudget {
    fn new(bytes: usize) -> ResponseBudget {
        let total = bytes.div_ceil(BUDGET_UNIT).clamp(1, u32::MAX as usize) as u32;
        ResponseBudget {
            permits: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }

    /// Waits until `bytes` of the budget are free (all of it for an answer
    /// larger than the budget) and wraps them with the answer.
    pub async fn hold(&self, bytes: Bytes) -> Answer {
        let units = bytes.len().div_ceil(BUDGET_UNIT).min(self.total as usize) as u32;
        // The semaphore is never closed: acquiring cannot fail.
        let permit = Arc::clone(&self.permits)
            .acquire_many_owned(units)
            .await
            .ok();
        Answer {
            bytes,
            _budget: permit,
        }
    }
}

/// Requests queued per connection before the reader waits (backpressure).
const QUEUE_DEPTH: usize = 128;
/// Most frames gathered into one vectored write.
const WRITE_BURST: usize = 64;
/// Requests queued for the broker before a write goes out anyway.
const FLUSH_BYTES: usize = 256 * 1024;

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(0);

/// Serves one accepted client connection until both sides are done.
pub async fn serve(client: TcpStream, peer: SocketAddr, target: Target, shared: Arc<Shared>) {
    let kind = target.label();
    metrics::counter!(kdp_metrics::CONNECTIONS_TOTAL, "listener" => kind).increment(1);
    metrics::gauge!(kdp_metrics::CONNECTIONS_ACTIVE, "listener" => kind).increment(1.0);
    let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", id, %peer, listener = kind);
    let run = accept::run(client, peer, target, Arc::clone(&shared), id);
    if let Err(close) = tracing::Instrument::instrument(run, span).await {
        close.record(peer);
    }
    metrics::gauge!(kdp_metrics::CONNECTIONS_ACTIVE, "listener" => kind).decrement(1.0);
}

/// What a connection's tasks need besides the streams.
struct Link {
    peer: SocketAddr,
    shared: Arc<Shared>,
    id: u64,
    scope: Scope,
}

impl Link {
    /// Runs the three tasks of a connection over its four stream halves and
    /// returns once both sides are done.
    async fn relay<CR, CW, UR, UW>(self, client_r: CR, client_w: CW, up_r: UR, up_w: UW)
    where
        CR: AsyncRead + Unpin + Send + 'static,
        CW: AsyncWrite + Unpin + Send + 'static,
        UR: AsyncRead + Unpin + Send + 'static,
        UW: UpstreamWrite + 'static,
    {
        let Link {
            peer,
            shared,
            id,
            scope,
        } = self;
        let max = shared.config.max_frame_bytes;

        let closing = CancellationToken::new();
        let (slot_tx, slot_rx) = mpsc::channel(QUEUE_DEPTH);
        let (owed_tx, owed_rx) = mpsc::unbounded_channel();

        let writer = tokio::spawn(client_writer::run(client_w, slot_rx, closing.clone(), peer));
        let up_reader = tokio::spawn(upstream_reader::run(
            FrameReader::with_ahead(up_r, max, Ahead::Broker),
            owed_rx,
            ResponseBudget::new(RESPONSE_BUDGET_BYTES),
            Arc::clone(&shared),
            closing.clone(),
        ));

        let mut session = Session::new(
            Arc::clone(&shared),
            peer,
            id,
            scope,
            slot_tx,
            BrokerWriter::new(Box::new(up_w), owed_tx),
        );
        let read =
            client_reader::run(FrameReader::new(client_r, max), &mut session, &closing).await;
        let flushed = session.flush().await;
        // The broker side ends once no task can write to it any more (the
        // owed queue closes) and every answer owed has been read.
        drop(session);
        for close in [read.err(), flushed.err()].into_iter().flatten() {
            close.record(peer);
        }
        // Drain: every queued answer is written (or the client is gone), the
        // broker answers everything it was sent.
        let _ = writer.await;
        if let Ok(Err(close)) = up_reader.await {
            close.record(peer);
        }
    }
}
