//! The Produce stage: acks=0 goes straight out (no answer from anyone);
//! everything else goes through dedup's [`Decision`], and this file only
//! moves the bytes it decides: the original frame, a cut-down request, an
//! answer in the proxy's name, or a wait on its own task.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use super::client_reader::Session;
use super::responses::OnResponse;
use super::upstream::{Outgoing, Owed};
use crate::codec::api;
use crate::codec::frame::Frame;
use crate::codec::header::{
    self, RequestHeader, put_request_header, request_header_version, response_header_version,
};
use crate::codec::produce::{self, ProduceRequest, ProduceResponse};
use crate::dedup::{Decision, KeyVerdict, Outcomes};
use crate::metrics as kdp_metrics;
use crate::proxy::error::{ClientFault, Close, Refusal};

/// `rest` is the request body after the header, a slice of `frame`.
pub(super) async fn handle_produce(
    s: &mut Session,
    frame: Frame,
    header: RequestHeader,
    rest: Bytes,
) -> Result<(), Close> {
    let version = header.api_version;
    let corr = Some(header.correlation_id);
    let Some(acks) = produce::parse_acks(&rest, version) else {
        return Err(ClientFault::Unparsable {
            api_key: api::PRODUCE,
            version,
            detail: "no acks".into(),
        }
        .into());
    };
    if acks == 0 {
        // No response from the broker, none from us; nothing is cached.
        s.queue(frame.into_raw(), None);
        return Ok(());
    }
    let relay = OnResponse::Produce {
        version,
        dedup: None,
    };
    if !s.shared.dedup.reads(version) {
        return s.forward(frame.into_raw(), corr, api::PRODUCE, relay).await;
    }
    let req = match produce::parse_produce_request(&rest, version) {
        Ok(r) => r,
        Err(e) => {
            // When unsure, forward: the broker is the source of truth.
            tracing::warn!(peer = %s.peer, version, error = %e, "produce request not parsable; forwarding untouched");
            kdp_metrics::record_outcomes(&Outcomes::unparsable_request());
            return s.forward(frame.into_raw(), corr, api::PRODUCE, relay).await;
        }
    };
    let scope = s.sasl.scope();
    let shared = Arc::clone(&s.shared);
    // The shared store (docs/replicas.md): at most one round trip, only for
    // producer-partitions this replica cannot judge alone, bounded by the
    // store's timeout; its answer is in the cache before the rules run.
    let lookups = shared
        .dedup
        .store_lookups(&req, &scope, |t| shared.topics.key_for(t));
    if !lookups.is_empty() {
        kdp_metrics::record_outcomes(&shared.dedup.prefetch(lookups).await);
    }
    // Idempotency keys this replica cannot judge alone: claimed in the
    // store in one round trip (waiting, bounded, for keys another replica
    // holds), or refused under --key-dedup-on-store-error fail.
    let (verdict, outcomes) = shared
        .dedup
        .claim_shared_keys(
            &req,
            &scope,
            |t| shared.topics.key_for(t),
            tokio::time::sleep,
        )
        .await;
    kdp_metrics::record_outcomes(&outcomes);
    let claimed = match verdict {
        KeyVerdict::Proceed { claimed } => claimed,
        KeyVerdict::Refuse(resp) => {
            return s
                .reply_now(response_frame(header.correlation_id, version, &resp))
                .await;
        }
    };
    let (decision, outcomes) = shared
        .dedup
        .decide(req, &scope, |t| shared.topics.key_for(t));
    shared.dedup.settle_store_claims(&claimed);
    kdp_metrics::record_outcomes(&outcomes);
    match decision {
        Decision::Wait(waiting) if waiting.in_order() => {
            // An idempotent producer's batch (a retry whose original is at
            // the broker, or a key or earlier batch it depends on): the
            // connection waits with it, so that the producer's later
            // batches cannot reach the broker ahead of it. What is queued
            // goes out first: what it waits for may be there.
            s.flush().await?;
            let deadline = tokio::time::sleep(waiting.timeout());
            let (decision, outcomes) = waiting.resolve(deadline).await;
            kdp_metrics::record_outcomes(&outcomes);
            match carry_out(decision, frame, &header) {
                Carry::Answer(bytes) => s.reply_now(bytes).await,
                Carry::Send(bytes, on) => s.forward(bytes, corr, api::PRODUCE, on).await,
                Carry::Close(close) => Err(close),
            }
        }
        Decision::Wait(waiting) => {
            // A key in flight elsewhere, for a producer without
            // idempotence (no sequences to keep in order): the request
            // keeps its turn (the slot) while its own task waits.
            let reply = s.slot().await?;
            let upstream = Arc::clone(&s.upstream);
            tokio::spawn(async move {
                let deadline = tokio::time::sleep(waiting.timeout());
                let (decision, outcomes) = waiting.resolve(deadline).await;
                kdp_metrics::record_outcomes(&outcomes);
                match carry_out(decision, frame, &header) {
                    Carry::Answer(bytes) => {
                        let _ = reply.send(Ok(bytes.into()));
                    }
                    Carry::Close(close) => {
                        let _ = reply.send(Err(close));
                    }
                    Carry::Send(bytes, on_response) => {
                        let owed = owed_produce(corr, on_response, reply);
                        let one = std::iter::once(Outgoing {
                            bytes,
                            owed: Some(owed),
                        });
                        // A failed write drops the owed answer: its slot
                        // closes the client connection.
                        let _ = upstream.lock().await.send(one).await;
                    }
                }
            });
            Ok(())
        }
        decision => match carry_out(decision, frame, &header) {
            Carry::Answer(bytes) => s.reply_now(bytes).await,
            Carry::Send(bytes, on) => s.forward(bytes, corr, api::PRODUCE, on).await,
            Carry::Close(close) => Err(close),
        },
    }
}

/// What a settled decision sends.
enum Carry {
    /// To the client, in the request's turn.
    Answer(Bytes),
    /// To the broker, with what to do with its answer.
    Send(Bytes, OnResponse),
    /// Nothing: the connection closes.
    Close(Close),
}

fn carry_out(decision: Decision, frame: Frame, header: &RequestHeader) -> Carry {
    let version = header.api_version;
    match decision {
        Decision::Forward(pending) => Carry::Send(
            frame.into_raw(),
            OnResponse::Produce {
                version,
                dedup: Some(pending),
            },
        ),
        Decision::Answer(resp) => {
            Carry::Answer(response_frame(header.correlation_id, version, &resp))
        }
        Decision::Split { request, pending } => Carry::Send(
            request_frame(header, &request),
            OnResponse::Produce {
                version,
                dedup: Some(pending),
            },
        ),
        Decision::Disconnect => Carry::Close(Refusal::SequenceGap.into()),
        // `resolve` never waits twice; were it to, the broker decides.
        Decision::Wait(_) => Carry::Send(
            frame.into_raw(),
            OnResponse::Produce {
                version,
                dedup: None,
            },
        ),
    }
}

fn owed_produce(
    correlation_id: Option<i32>,
    on_response: OnResponse,
    reply: tokio::sync::oneshot::Sender<super::Reply>,
) -> Owed {
    Owed {
        correlation_id,
        api_key: api::PRODUCE,
        sent_at: None,
        on_response,
        reply,
    }
}

/// A Produce request frame at the request's own version and header.
fn request_frame(header: &RequestHeader, req: &ProduceRequest) -> Bytes {
    let header_version = request_header_version(header.api_key, header.api_version).unwrap_or(1);
    let mut buf = BytesMut::new();
    put_request_header(&mut buf, header, header_version);
    produce::encode_produce_request(&mut buf, req, header.api_version);
    Frame::from_body(&buf).into_raw()
}

/// A Produce response frame in the proxy's name.
fn response_frame(correlation_id: i32, version: i16, r: &ProduceResponse) -> Bytes {
    let header_version = response_header_version(api::PRODUCE, version);
    header::response_frame(correlation_id, header_version, |buf| {
        produce::encode_produce_response(buf, r, version)
    })
}
