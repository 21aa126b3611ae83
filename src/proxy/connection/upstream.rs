//! The broker side of a connection: its write half, and the queue of
//! answers it owes, in the order the requests were written.

use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use super::Reply;
use super::WRITE_BURST;
use super::responses::OnResponse;
use crate::proxy::error::{BrokerFault, Close};
use crate::proxy::io::write_all_vectored;

/// An answer the broker owes for a request written to it.
pub(super) struct Owed {
    /// `None` for raw SASL v0 tokens, which carry no Kafka header.
    pub correlation_id: Option<i32>,
    pub api_key: i16,
    pub sent_at: Option<Instant>,
    pub on_response: OnResponse,
    pub reply: oneshot::Sender<Reply>,
}

/// A request on its way to the broker.
pub(super) struct Outgoing {
    pub bytes: Bytes,
    /// `None` for requests that get no response (Produce with acks=0).
    pub owed: Option<Owed>,
}

/// A broker write half that is let go without shutting the write direction
/// down: a broker that reads EOF closes the whole connection, and answers
/// still owed to us (which retries elsewhere may be waiting for) would be
/// lost. The connection closes when the read half goes.
pub(crate) trait UpstreamWrite: AsyncWrite + Unpin + Send {
    fn release(self: Box<Self>);
}

impl UpstreamWrite for OwnedWriteHalf {
    fn release(self: Box<Self>) {
        (*self).forget();
    }
}

impl<T: AsyncRead + AsyncWrite + Send> UpstreamWrite for tokio::io::WriteHalf<T> {
    fn release(self: Box<Self>) {}
}

/// Writes requests to the broker, registering each owed answer with the
/// upstream reader just before its bytes go out (so a response never
/// arrives ahead of its entry).
pub(super) struct BrokerWriter {
    w: Option<Box<dyn UpstreamWrite>>,
    owed: mpsc::UnboundedSender<Owed>,
    burst: Vec<Bytes>,
}

impl BrokerWriter {
    pub fn new(w: Box<dyn UpstreamWrite>, owed: mpsc::UnboundedSender<Owed>) -> Self {
        BrokerWriter {
            w: Some(w),
            owed,
            burst: Vec::with_capacity(WRITE_BURST),
        }
    }

    /// Registers each request's owed answer, then writes them all in one
    /// vectored write.
    pub async fn send(&mut self, items: impl Iterator<Item = Outgoing>) -> Result<(), Close> {
        for Outgoing { bytes, owed } in items {
            if let Some(mut o) = owed {
                o.sent_at = Some(Instant::now());
                // The upstream reader is gone: the broker connection is.
                self.owed.send(o).map_err(|_| BrokerFault::Gone)?;
            }
            self.burst.push(bytes);
        }
        let Some(w) = self.w.as_mut() else {
            return Err(BrokerFault::Gone.into());
        };
        let written = write_all_vectored(w, &mut self.burst).await;
        self.burst.clear();
        written.map_err(|_| BrokerFault::Gone.into())
    }
}

impl Drop for BrokerWriter {
    fn drop(&mut self) {
        if let Some(w) = self.w.take() {
            w.release();
        }
    }
}
