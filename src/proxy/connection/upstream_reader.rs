//! Reads the broker's responses in order, matches each to the answer owed
//! for it by correlation id, and fills that request's slot after
//! [`respond`](super::responses::respond).
//!
//! Ends (and closes the client connection) when the broker closes its end,
//! even while nothing is owed: a broker closing an idle connection
//! (`connections.max.idle.ms`) is passed on to the client as it would be
//! without the proxy.

use std::sync::Arc;

use tokio::io::AsyncRead;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ResponseBudget;
use super::responses::respond;
use super::upstream::Owed;
use crate::codec::header::peek_correlation_id;
use crate::metrics as kdp_metrics;
use crate::proxy::Shared;
use crate::proxy::error::{BrokerFault, Close};
use crate::proxy::io::FrameReader;

pub(super) async fn run<R: AsyncRead + Unpin>(
    mut frames: FrameReader<R>,
    mut owed: mpsc::UnboundedReceiver<Owed>,
    budget: ResponseBudget,
    shared: Arc<Shared>,
    closing: CancellationToken,
) -> Result<(), Close> {
    let ended = read_responses(&mut frames, &mut owed, &budget, &shared).await;
    // Everything still owed is dropped here: each dedup entry forgets its
    // batch and each client slot closes its connection.
    closing.cancel();
    ended
}

async fn read_responses<R: AsyncRead + Unpin>(
    frames: &mut FrameReader<R>,
    owed: &mut mpsc::UnboundedReceiver<Owed>,
    budget: &ResponseBudget,
    shared: &Shared,
) -> Result<(), Close> {
    loop {
        let (o, early) = tokio::select! {
            // Owed entries first: an entry is always queued before its
            // request is written, so a response never arrives ahead of it.
            biased;
            o = owed.recv() => match o {
                Some(o) => (o, None),
                None => return Ok(()),
            },
            // Nothing seemed owed. The entry may have been queued between
            // the two polls (then this is its answer); otherwise the broker
            // closed an idle connection or misbehaves, and the client is
            // told by a close, as it would be without the proxy.
            // FrameReader::next keeps partial reads, so losing this race
            // drops no bytes.
            r = frames.next() => match owed.try_recv() {
                Ok(o) => (o, Some(r)),
                Err(_) => {
                    return match r {
                        Ok(Some(_)) => Err(BrokerFault::Unsolicited.into()),
                        Ok(None) => {
                            tracing::debug!("broker closed an idle connection");
                            Ok(())
                        }
                        Err(e) => Err(BrokerFault::Frame(e).into()),
                    };
                }
            },
        };
        let next = match early {
            Some(r) => r,
            None => frames.next().await,
        };
        let frame = match next {
            Ok(Some(f)) => f,
            // A broker closes instead of answering a request it cannot
            // parse or does not support (SocketServer.processChannelException).
            Ok(None) => {
                return Err(BrokerFault::ClosedInsteadOfAnswering { api_key: o.api_key }.into());
            }
            Err(e) => return Err(BrokerFault::Frame(e).into()),
        };
        if let Some(sent) = o.sent_at {
            kdp_metrics::record_upstream_duration(o.api_key, sent.elapsed().as_secs_f64());
        }
        if let Some(expected) = o.correlation_id {
            let got = peek_correlation_id(&frame.body());
            if got != Some(expected) {
                return Err(BrokerFault::OutOfOrder { expected, got }.into());
            }
        }
        // Dedup sees the answer first (a retry elsewhere may wait for it);
        // then the answer waits for room in the budget while the client
        // is slow to read, and so does the next response.
        let reply = match respond(o.on_response, frame, shared) {
            Ok(bytes) => Ok(budget.hold(bytes).await),
            Err(close) => Err(close),
        };
        let _ = o.reply.send(reply);
    }
}
