//! Reads the client's requests and hands each to [`dispatch`]; the per-
//! connection [`Session`] the request stages share: response slots in
//! arrival order, the burst of requests queued for the broker, SASL state.
//!
//! [`dispatch`]: super::dispatch

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncRead;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::dispatch::handle_request;
use super::responses::OnResponse;
use super::sasl::SaslTracker;
use super::upstream::{BrokerWriter, Outgoing, Owed};
use super::{FLUSH_BYTES, Reply, WRITE_BURST};
use crate::dedup::cache::Scope;
use crate::proxy::Shared;
use crate::proxy::error::{ClientFault, Close};
use crate::proxy::io::FrameReader;

/// Per-connection handles the request stages use.
pub(super) struct Session {
    pub shared: Arc<Shared>,
    pub peer: SocketAddr,
    slots: mpsc::Sender<oneshot::Receiver<Reply>>,
    /// Shared with tasks that send a retried batch after waiting.
    pub upstream: Arc<tokio::sync::Mutex<BrokerWriter>>,
    /// Requests read but not written yet (a burst in the making).
    queued: Vec<Outgoing>,
    queued_bytes: usize,
    pub sasl: SaslTracker,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        peer: SocketAddr,
        id: u64,
        scope: Scope,
        slots: mpsc::Sender<oneshot::Receiver<Reply>>,
        upstream: BrokerWriter,
    ) -> Self {
        Session {
            shared,
            peer,
            slots,
            upstream: Arc::new(tokio::sync::Mutex::new(upstream)),
            queued: Vec::with_capacity(WRITE_BURST),
            queued_bytes: 0,
            sasl: SaslTracker::new(id, scope),
        }
    }

    /// Takes the next response slot. When the slot queue is full, what is
    /// queued for the broker goes out first: the answers the client writer
    /// waits for may be among them.
    pub async fn slot(&mut self) -> Result<oneshot::Sender<Reply>, Close> {
        if self.slots.capacity() == 0 {
            self.flush().await?;
        }
        let (tx, rx) = oneshot::channel();
        self.slots.send(rx).await.map_err(|_| ClientFault::Gone)?;
        Ok(tx)
    }

    /// Queues a request for the broker.
    pub fn queue(&mut self, bytes: Bytes, owed: Option<Owed>) {
        self.queued_bytes += bytes.len();
        self.queued.push(Outgoing { bytes, owed });
    }

    /// Takes a slot and queues the request, whose answer fills the slot
    /// after `on_response`.
    pub async fn forward(
        &mut self,
        bytes: Bytes,
        correlation_id: Option<i32>,
        api_key: i16,
        on_response: OnResponse,
    ) -> Result<(), Close> {
        let reply = self.slot().await?;
        self.queue(
            bytes,
            Some(Owed {
                correlation_id,
                api_key,
                sent_at: None,
                on_response,
                reply,
            }),
        );
        Ok(())
    }

    /// Answers in the proxy's name, in the request's turn.
    pub async fn reply_now(&mut self, bytes: Bytes) -> Result<(), Close> {
        let _ = self.slot().await?.send(Ok(bytes.into()));
        Ok(())
    }

    fn should_flush(&self) -> bool {
        self.queued.len() >= WRITE_BURST || self.queued_bytes >= FLUSH_BYTES
    }

    /// Writes what is queued for the broker.
    pub async fn flush(&mut self) -> Result<(), Close> {
        if self.queued.is_empty() {
            return Ok(());
        }
        self.queued_bytes = 0;
        let queued = &mut self.queued;
        self.upstream.lock().await.send(queued.drain(..)).await
    }
}

/// Reads requests until the client closes, the connection is closing, or
/// the proxy shuts down. Pipelined requests already read go to the broker
/// together; the burst is written before waiting for more input.
pub(super) async fn run<R: AsyncRead + Unpin>(
    mut frames: FrameReader<R>,
    session: &mut Session,
    closing: &CancellationToken,
) -> Result<(), Close> {
    loop {
        if !frames.has_buffered_frame() || session.should_flush() {
            session.flush().await?;
        }
        let next = tokio::select! {
            _ = closing.cancelled() => return Ok(()),
            _ = session.shared.shutdown.cancelled() => {
                tracing::debug!("shutting down: no new requests on this connection");
                return Ok(());
            }
            f = frames.next() => f,
        };
        match next.map_err(ClientFault::Frame)? {
            Some(frame) => handle_request(session, frame).await?,
            None => return Ok(()),
        }
    }
}
