//! Writes answers to the client strictly in request order: each request
//! that expects an answer has a slot, filled by the broker's (rewritten)
//! response or by the proxy's own answer; a slot not filled yet holds back
//! every later one. A slot that closes, or carries a reason to close,
//! closes the connection, so the client retries on a new one.

use std::net::SocketAddr;

use bytes::Bytes;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{Answer, Reply, WRITE_BURST};
use crate::proxy::io::write_all_vectored;

pub(super) async fn run<W: AsyncWrite + Unpin>(
    mut w: W,
    mut slots: mpsc::Receiver<oneshot::Receiver<Reply>>,
    closing: CancellationToken,
    peer: SocketAddr,
) {
    let mut burst: Vec<Bytes> = Vec::with_capacity(WRITE_BURST);
    // The answers of the burst, holding their budget until written.
    let mut held: Vec<Answer> = Vec::with_capacity(WRITE_BURST);
    // A slot taken from the queue whose answer is not ready yet.
    let mut head: Option<oneshot::Receiver<Reply>> = None;
    loop {
        let slot = match head.take() {
            Some(s) => s,
            None => match slots.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        let mut close = take(slot.await, &mut burst, &mut held, peer);
        // Answers already there go out in the same write, in order.
        while !close && burst.len() < WRITE_BURST {
            let Ok(mut next) = slots.try_recv() else {
                break;
            };
            match next.try_recv() {
                Err(oneshot::error::TryRecvError::Empty) => {
                    head = Some(next);
                    break;
                }
                Err(oneshot::error::TryRecvError::Closed) => close = true,
                Ok(reply) => close = take(Ok(reply), &mut burst, &mut held, peer),
            }
        }
        let written = write_all_vectored(&mut w, &mut burst).await;
        held.clear();
        if written.is_err() || close {
            break;
        }
    }
    let _ = w.shutdown().await;
    closing.cancel();
}

/// Adds an answer to the burst; `true` when the connection must close
/// instead (the slot closed unanswered: its reason was recorded where it
/// arose; or it carries a reason, recorded here).
fn take(
    slot: Result<Reply, oneshot::error::RecvError>,
    burst: &mut Vec<Bytes>,
    held: &mut Vec<Answer>,
    peer: SocketAddr,
) -> bool {
    match slot {
        Ok(Ok(answer)) => {
            burst.push(answer.bytes.clone());
            held.push(answer);
            false
        }
        Ok(Err(close)) => {
            close.record(peer);
            true
        }
        Err(_) => true,
    }
}
