//! One client connection and its one upstream connection.
//!
//! Three tasks share the work:
//! * the client reader (this function) reads requests, decides what each
//!   needs, queues, in arrival order, one *response slot* per request
//!   that expects an answer, and writes the requests to the broker (a
//!   burst of pipelined requests in one vectored write), registering each
//!   as *pending* just before its bytes go out; a retried batch that had to
//!   wait for its original is written later by its own task, through the
//!   same lock;
//! * the upstream reader takes the broker's responses in order, matches
//!   each to its pending entry by correlation id, rewrites it and fills
//!   that request's slot;
//! * the client writer empties the slots strictly in request order, so an
//!   answer the proxy makes itself waits its turn behind earlier requests
//!   still at the broker (Java clients throw on a correlation mismatch;
//!   librdkafka drops the connection).
//!
//! The upstream reader runs until every pending request is answered, even
//! after the client went away: a retry on another connection may be
//! waiting for exactly that answer.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::brokers::observe_brokers;
use super::io::{Ahead, BrokerStream, FrameReader, dial_broker, write_all_vectored};
use super::listener::Target;
use super::rewrite;
use super::sasl;
use super::tls;
use crate::codec::api::{self, api_name, is_hidden_api, max_supported_version};
use crate::codec::api_versions::{self, ApiVersion, ApiVersionsResponse};
use crate::codec::frame::{Frame, FrameError};
use crate::codec::header::{
    ResponseHeader, parse_request_header_auto, parse_request_prefix, parse_response_header,
    put_request_header, put_response_header, response_header_version,
};
use crate::codec::primitives::{TaggedFields, parse_i16, parse_nullable_string, parse_string};
use crate::codec::produce::{
    self, NODE_ENDPOINTS_TAG, ProduceRequest, ProduceResponse, encode_node_endpoints,
    parse_node_endpoints,
};
use crate::codec::{CodecError, describe_cluster, find_coordinator, metadata, producer_epoch};
use crate::config::DedupMode;
use crate::dedup::cache::Scope;
use crate::dedup::produce::{
    Action, Plan, all_forward, classify, classify_partition, forward_subset, merge_response,
    none_forward, resolve_guards,
};
use crate::metrics::{self as m, outcome};

/// What the client writer receives: the bytes to send, or an instruction to
/// close the connection because no correct answer can be given.
type Reply = Result<Bytes, ()>;

/// Requests queued per connection before the reader waits (backpressure).
const QUEUE_DEPTH: usize = 128;
/// Longest a retried batch waits for its in-flight original, whatever the
/// request's own timeout says.
const MAX_WAIT: Duration = Duration::from_secs(120);

/// What to do with a response before it goes to the client.
enum Post {
    Raw,
    ApiVersions {
        version: i16,
    },
    Metadata {
        version: i16,
    },
    FindCoordinator {
        version: i16,
    },
    DescribeCluster {
        version: i16,
    },
    Produce(Box<ProducePost>),
    /// InitProducerId or EndTxn (v5+): the epoch handed out fences older ones.
    ProducerEpoch {
        api_key: i16,
        version: i16,
    },
    /// A SASL round; when `adopt` is set, this round completes the exchange
    /// and a success makes `adopt` the connection's dedup scope.
    Sasl {
        /// SaslAuthenticate version, `None` for a raw SaslHandshake v0 token.
        version: Option<i16>,
        adopt: Option<Arc<str>>,
        scope: Arc<Mutex<Scope>>,
    },
}

struct ProducePost {
    version: i16,
    /// The parsed request and the plan for its partitions; `None` when the
    /// request was not parsed (only endpoint rewriting applies then).
    dedup: Option<(ProduceRequest, Plan)>,
    /// Some partitions are answered by the proxy: the client's response is
    /// the broker's merged with those.
    merge: bool,
}

struct Pending {
    /// `None` for raw SASL v0 tokens, which carry no Kafka header.
    correlation_id: Option<i32>,
    api_key: i16,
    sent_at: Option<Instant>,
    post: Post,
    reply: oneshot::Sender<Reply>,
}

struct UpstreamSend {
    bytes: Bytes,
    /// `None` for requests that get no response (Produce with acks=0).
    pending: Option<Pending>,
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

/// The broker side of the connection: its write half and the queue of
/// answers owed, in the order the requests were written.
struct Upstream {
    w: Option<Box<dyn UpstreamWrite>>,
    pending: mpsc::UnboundedSender<Pending>,
    burst: Vec<Bytes>,
}

impl Upstream {
    /// Registers each request as pending, then writes them all.
    async fn send(&mut self, items: impl Iterator<Item = UpstreamSend>) -> Result<(), Close> {
        for UpstreamSend { bytes, pending } in items {
            if let Some(mut p) = pending {
                p.sent_at = Some(Instant::now());
                // The upstream reader is gone: the broker connection is.
                self.pending.send(p).map_err(|_| Close)?;
            }
            self.burst.push(bytes);
        }
        let Some(w) = self.w.as_mut() else {
            return Err(Close);
        };
        let written = write_all_vectored(w, &mut self.burst).await;
        self.burst.clear();
        written.map_err(|_| Close)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(w) = self.w.take() {
            w.release();
        }
    }
}

/// Requests queued for the broker before a write goes out anyway.
const FLUSH_BYTES: usize = 256 * 1024;

/// Per-connection handles the request handlers use.
struct Conn {
    shared: Arc<Shared>,
    peer: SocketAddr,
    slots: mpsc::Sender<oneshot::Receiver<Reply>>,
    /// Shared with tasks that send a retried batch after waiting.
    upstream: Arc<tokio::sync::Mutex<Upstream>>,
    /// Requests read but not written yet (a burst in the making).
    queued: Vec<UpstreamSend>,
    queued_bytes: usize,
    /// Raw SASL tokens still expected after a SaslHandshake v0.
    sasl_tokens: usize,
    id: u64,
    /// Dedup scope, shared with response handling (which adopts a SASL
    /// user once the broker accepted it).
    scope: Arc<Mutex<Scope>>,
    sasl: Option<SaslProgress>,
}

/// A SASL exchange the proxy follows to learn the connection's user.
struct SaslProgress {
    mechanism: String,
    user: Option<Arc<str>>,
    rounds: usize,
}

impl Conn {
    /// Takes the next response slot. When the slot queue is full, what is
    /// queued for the broker goes out first: the answers the client writer
    /// waits for may be among them.
    async fn slot(&mut self) -> Result<oneshot::Sender<Reply>, Close> {
        if self.slots.capacity() == 0 {
            self.flush().await?;
        }
        let (tx, rx) = oneshot::channel();
        self.slots.send(rx).await.map_err(|_| Close)?;
        Ok(tx)
    }

    fn queue(&mut self, bytes: Bytes, pending: Option<Pending>) {
        self.queued_bytes += bytes.len();
        self.queued.push(UpstreamSend { bytes, pending });
    }

    fn should_flush(&self) -> bool {
        self.queued.len() >= WRITE_BURST || self.queued_bytes >= FLUSH_BYTES
    }

    /// Writes what is queued for the broker.
    async fn flush(&mut self) -> Result<(), Close> {
        if self.queued.is_empty() {
            return Ok(());
        }
        self.queued_bytes = 0;
        let queued = &mut self.queued;
        self.upstream.lock().await.send(queued.drain(..)).await
    }

    /// Starts following a SASL exchange: until it completes, the
    /// connection only meets its own batches.
    fn sasl_started(&mut self, mechanism: String) {
        *lock(&self.scope) = Scope::Connection(self.id);
        self.sasl = Some(SaslProgress {
            mechanism,
            user: None,
            rounds: 0,
        });
    }

    /// Records one client token; returns the user to adopt if the broker
    /// accepts this round, which completes the exchange.
    fn sasl_round(&mut self, token: Option<&[u8]>) -> Option<Arc<str>> {
        let p = self.sasl.as_mut()?;
        if p.rounds == 0 {
            p.user = token
                .and_then(|t| sasl::user_from_token(&p.mechanism, t))
                .map(Arc::from);
        }
        p.rounds += 1;
        (sasl::rounds(&p.mechanism) == Some(p.rounds))
            .then(|| p.user.clone())
            .flatten()
    }
}

fn lock(scope: &Mutex<Scope>) -> std::sync::MutexGuard<'_, Scope> {
    scope.lock().unwrap_or_else(|e| e.into_inner())
}

static CONNECTION_IDS: AtomicU64 = AtomicU64::new(0);

pub async fn serve(client: TcpStream, peer: SocketAddr, target: Target, shared: Arc<Shared>) {
    let kind = target.label();
    metrics::counter!(m::CONNECTIONS_TOTAL, "listener" => kind).increment(1);
    metrics::gauge!(m::CONNECTIONS_ACTIVE, "listener" => kind).increment(1.0);
    let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", id, %peer, listener = kind);
    let _ =
        tracing::Instrument::instrument(run(client, peer, target, Arc::clone(&shared), id), span)
            .await;
    metrics::gauge!(m::CONNECTIONS_ACTIVE, "listener" => kind).decrement(1.0);
}

async fn connect_upstream(target: Target, shared: &Shared) -> Option<BrokerStream> {
    let candidates = match target {
        Target::Bootstrap => shared.bootstrap_rotation(),
        Target::Broker(node) => match shared.brokers.upstream_of(node) {
            Some(a) => vec![a],
            None => {
                tracing::warn!(node, "no upstream address known for broker");
                return None;
            }
        },
    };
    for addr in candidates {
        match dial_broker(
            &addr,
            shared.tls_upstream.as_deref(),
            shared.config.upstream_connect_timeout(),
        )
        .await
        {
            Ok(s) => return Some(s),
            Err(e) => tracing::warn!(upstream = %addr, error = %e, "upstream connection failed"),
        }
    }
    None
}

/// The client side of a connection, after the TLS handshake if any.
enum ClientStream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn run(client: TcpStream, peer: SocketAddr, target: Target, shared: Arc<Shared>, id: u64) {
    let _ = client.set_nodelay(true);
    let mut scope = Scope::Anonymous;
    let client = match &shared.tls_server {
        None => ClientStream::Plain(client),
        Some(t) => match t.accept(client).await {
            Ok(s) => {
                if let Some(cert) = s.get_ref().1.peer_certificates().and_then(|c| c.first()) {
                    // A certificate the client CA verified: until SASL names
                    // a user, the connection is scoped to its subject.
                    scope = Scope::Certificate(Arc::from(tls::client_identity(cert)));
                }
                ClientStream::Tls(Box::new(s))
            }
            Err(e) => {
                metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => "tls_handshake").increment(1);
                tracing::warn!(%peer, error = %e, "closing connection: TLS handshake with the client failed (a plaintext client on a TLS listener?)");
                return;
            }
        },
    };
    let Some(upstream) = connect_upstream(target, &shared).await else {
        metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => "upstream_connect").increment(1);
        return;
    };
    let link = Link {
        peer,
        shared,
        id,
        scope,
    };
    // Plain TCP keeps the owned halves (no lock between reader and
    // writer); only TLS streams, whose halves share one session, are split
    // through tokio::io::split.
    match (client, upstream) {
        (ClientStream::Plain(c), BrokerStream::Plain(u)) => {
            let (cr, cw) = c.into_split();
            let (ur, uw) = u.into_split();
            link.relay(cr, cw, ur, uw).await
        }
        (ClientStream::Plain(c), BrokerStream::Tls(u)) => {
            let (cr, cw) = c.into_split();
            let (ur, uw) = tokio::io::split(*u);
            link.relay(cr, cw, ur, uw).await
        }
        (ClientStream::Tls(c), BrokerStream::Plain(u)) => {
            let (cr, cw) = tokio::io::split(*c);
            let (ur, uw) = u.into_split();
            link.relay(cr, cw, ur, uw).await
        }
        (ClientStream::Tls(c), BrokerStream::Tls(u)) => {
            let (cr, cw) = tokio::io::split(*c);
            let (ur, uw) = tokio::io::split(*u);
            link.relay(cr, cw, ur, uw).await
        }
    }
}

/// What a connection's tasks need besides the streams.
struct Link {
    peer: SocketAddr,
    shared: Arc<Shared>,
    id: u64,
    scope: Scope,
}

impl Link {
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
        let (pending_tx, pending_rx) = mpsc::unbounded_channel();

        let writer = tokio::spawn(client_writer(client_w, slot_rx, closing.clone()));
        let up_reader = tokio::spawn(upstream_reader(
            FrameReader::with_ahead(up_r, max, Ahead::Whole),
            pending_rx,
            Arc::clone(&shared),
            closing.clone(),
            peer,
        ));

        let mut conn = Conn {
            shared: Arc::clone(&shared),
            peer,
            slots: slot_tx,
            upstream: Arc::new(tokio::sync::Mutex::new(Upstream {
                w: Some(Box::new(up_w)),
                pending: pending_tx,
                burst: Vec::with_capacity(WRITE_BURST),
            })),
            queued: Vec::with_capacity(WRITE_BURST),
            queued_bytes: 0,
            sasl_tokens: 0,
            id,
            scope: Arc::new(Mutex::new(scope)),
            sasl: None,
        };
        client_reader(FrameReader::new(client_r, max), &mut conn, &closing).await;
        let _ = conn.flush().await;
        // The broker side ends once no task can write to it any more (the
        // pending queue closes) and every answer owed has been read.
        drop(conn);
        // Drain: every queued answer is written (or the client is gone), the
        // broker answers everything it was sent.
        let _ = writer.await;
        let _ = up_reader.await;
    }
}

async fn client_reader<R: AsyncRead + Unpin>(
    mut frames: FrameReader<R>,
    conn: &mut Conn,
    closing: &CancellationToken,
) {
    loop {
        // Pipelined requests already read go to the broker together; the
        // burst is written before waiting for more input.
        if (!frames.has_buffered_frame() || conn.should_flush()) && conn.flush().await.is_err() {
            return;
        }
        let next = tokio::select! {
            _ = closing.cancelled() => return,
            _ = conn.shared.shutdown.cancelled() => {
                tracing::debug!("shutting down: no new requests on this connection");
                return;
            }
            f = frames.next() => f,
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => return,
            Err(e) => {
                log_frame_error("client", conn.peer, &e);
                return;
            }
        };
        if handle_request(conn, frame).await.is_err() {
            return;
        }
    }
}

fn log_frame_error(side: &'static str, peer: SocketAddr, e: &FrameError) {
    let kind = match e {
        FrameError::Io(_) => "io",
        FrameError::Codec(CodecError::FrameLength { .. }) => "oversized",
        FrameError::Codec(_) => "parse",
    };
    metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => kind).increment(1);
    match e {
        FrameError::Io(err) if err.kind() == std::io::ErrorKind::ConnectionReset => {
            tracing::debug!(%peer, side, error = %e, "connection reset")
        }
        _ => tracing::warn!(%peer, side, error = %e, "closing connection: bad frame"),
    }
}

/// Marker error: stop reading from the client and close.
struct Close;

fn close_for(conn: &Conn, why: &str, api_key: i16, version: i16) -> Result<(), Close> {
    metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => "parse").increment(1);
    tracing::warn!(peer = %conn.peer, api = api_name(api_key), api_key, version, "closing connection: {why}");
    Err(Close)
}

async fn handle_request(conn: &mut Conn, frame: Frame) -> Result<(), Close> {
    if conn.sasl_tokens > 0 {
        // SaslHandshake v0: opaque, header-less tokens until authenticated.
        conn.sasl_tokens -= 1;
        let token = frame.body();
        let adopt = conn.sasl_round(Some(&token));
        let post = Post::Sasl {
            version: None,
            adopt: if conn.sasl_tokens == 0 { adopt } else { None },
            scope: Arc::clone(&conn.scope),
        };
        return forward(conn, frame.into_raw(), None, api::SASL_HANDSHAKE, post).await;
    }
    let body = frame.body();
    let Ok((_, (api_key, version, correlation_id))) = parse_request_prefix(&body) else {
        return close_for(conn, "request shorter than a header", -1, -1);
    };
    m::count_request(api_key);
    if is_hidden_api(api_key) {
        return close_for(conn, "API not offered by the proxy", api_key, version);
    }
    if let Some(max) = max_supported_version(api_key)
        && version > max
        && api_key != api::API_VERSIONS
    {
        // What the broker does for a version it does not support: close.
        return close_for(
            conn,
            "request version above what the proxy advertised",
            api_key,
            version,
        );
    }
    let corr = Some(correlation_id);
    let post = match api_key {
        api::API_VERSIONS if version > api_versions::MAX_VERSION => {
            return unsupported_api_versions(conn, correlation_id).await;
        }
        api::API_VERSIONS => Post::ApiVersions { version },
        api::METADATA => Post::Metadata { version },
        api::FIND_COORDINATOR => Post::FindCoordinator { version },
        api::DESCRIBE_CLUSTER => Post::DescribeCluster { version },
        api::PRODUCE => return handle_produce(conn, frame, version, correlation_id).await,
        api::INIT_PRODUCER_ID => Post::ProducerEpoch { api_key, version },
        api::END_TXN if version >= producer_epoch::END_TXN_FIRST_WITH_EPOCH => {
            Post::ProducerEpoch { api_key, version }
        }
        api::SASL_HANDSHAKE if version == 0 => {
            let Some(tokens) = sasl_v0_tokens(&body) else {
                return close_for(
                    conn,
                    "SaslHandshake v0 with a mechanism the proxy cannot relay",
                    api_key,
                    version,
                );
            };
            conn.sasl_started(sasl::handshake_mechanism(&body).unwrap_or_default());
            forward(conn, frame.into_raw(), corr, api_key, Post::Raw).await?;
            conn.sasl_tokens = tokens;
            return Ok(());
        }
        api::SASL_HANDSHAKE => {
            conn.sasl_started(sasl::handshake_mechanism(&body).unwrap_or_default());
            Post::Raw
        }
        api::SASL_AUTHENTICATE => {
            let token = sasl::authenticate_token(&body);
            let adopt = conn.sasl_round(token.as_deref());
            Post::Sasl {
                version: Some(version),
                adopt,
                scope: Arc::clone(&conn.scope),
            }
        }
        _ => Post::Raw,
    };
    forward(conn, frame.into_raw(), corr, api_key, post).await
}

/// How many opaque token round trips follow a SaslHandshake v0 for its
/// mechanism (PLAIN and OAUTHBEARER one, SCRAM two). `None` for
/// mechanisms whose number of rounds the proxy cannot know.
fn sasl_v0_tokens(body: &[u8]) -> Option<usize> {
    let (_, rest) = parse_request_header_auto(body).ok()?;
    let (_, mechanism) = parse_string(rest, false).ok()?;
    match mechanism.as_str() {
        "PLAIN" | "OAUTHBEARER" => Some(1),
        m if m.starts_with("SCRAM-") => Some(2),
        _ => None,
    }
}

/// Takes a slot and queues the request for the broker.
async fn forward(
    conn: &mut Conn,
    bytes: Bytes,
    corr: Option<i32>,
    api_key: i16,
    post: Post,
) -> Result<(), Close> {
    let reply = conn.slot().await?;
    conn.queue(
        bytes,
        Some(Pending {
            correlation_id: corr,
            api_key,
            sent_at: None,
            post,
            reply,
        }),
    );
    Ok(())
}

/// Answers an ApiVersions request above v4 as a broker answers an
/// unsupported version: error UNSUPPORTED_VERSION in a v0 body listing the
/// ApiVersions range we speak; the client retries at that version.
async fn unsupported_api_versions(conn: &mut Conn, correlation_id: i32) -> Result<(), Close> {
    let resp = ApiVersionsResponse {
        error_code: api_versions::UNSUPPORTED_VERSION,
        api_keys: vec![ApiVersion {
            api_key: api::API_VERSIONS,
            min_version: 0,
            max_version: api_versions::MAX_VERSION,
            tagged_fields: TaggedFields::default(),
        }],
        throttle_time_ms: 0,
        tagged_fields: TaggedFields::default(),
    };
    let mut buf = BytesMut::new();
    put_response_header(
        &mut buf,
        &ResponseHeader {
            correlation_id,
            tagged_fields: TaggedFields::default(),
        },
        0,
    );
    api_versions::encode_api_versions_response(&mut buf, &resp, 0);
    reply_now(conn, Frame::from_body(&buf).into_raw()).await
}

async fn reply_now(conn: &mut Conn, bytes: Bytes) -> Result<(), Close> {
    let _ = conn.slot().await?.send(Ok(bytes));
    Ok(())
}

/// acks of a Produce request, read even when the rest does not parse
/// (it decides whether a response is expected at all).
fn peek_acks(rest: &[u8], version: i16) -> Option<i16> {
    let rest = if version >= 3 {
        parse_nullable_string(rest, version >= 9).ok()?.0
    } else {
        rest
    };
    parse_i16(rest).ok().map(|(_, a)| a)
}

async fn handle_produce(
    conn: &mut Conn,
    frame: Frame,
    version: i16,
    correlation_id: i32,
) -> Result<(), Close> {
    let body = frame.body();
    let Ok((header, rest)) = parse_request_header_auto(&body) else {
        return close_for(
            conn,
            "unparsable produce request header",
            api::PRODUCE,
            version,
        );
    };
    let Some(acks) = peek_acks(rest, version) else {
        return close_for(conn, "unparsable produce request", api::PRODUCE, version);
    };
    let corr = Some(correlation_id);
    if acks == 0 {
        // No response from the broker, none from us; nothing is cached.
        conn.queue(frame.into_raw(), None);
        return Ok(());
    }
    let raw_post = |dedup| {
        Post::Produce(Box::new(ProducePost {
            version,
            dedup,
            merge: false,
        }))
    };
    if version < produce::MIN_VERSION || conn.shared.config.dedup_mode == DedupMode::Off {
        return forward(conn, frame.into_raw(), corr, api::PRODUCE, raw_post(None)).await;
    }
    let rest_bytes = body.slice_ref(rest);
    let req = match produce::parse_produce_request(&rest_bytes, version) {
        Ok(r) => r,
        Err(e) => {
            // When unsure, forward: the broker is the source of truth.
            tracing::warn!(peer = %conn.peer, version, error = %e, "produce request not parsable; forwarding untouched");
            m::count_batch(outcome::UNCACHEABLE);
            return forward(conn, frame.into_raw(), corr, api::PRODUCE, raw_post(None)).await;
        }
    };
    let shared = &conn.shared;
    let scope = lock(&conn.scope).clone();
    let plan = classify(&req, &shared.cache, shared.config.dedup_mode, &scope, |t| {
        shared.topics.key_for(t)
    });
    if all_forward(&plan) {
        return forward(
            conn,
            frame.into_raw(),
            corr,
            api::PRODUCE,
            raw_post(Some((without_records(req), plan))),
        )
        .await;
    }
    let tx = conn.slot().await?;
    let hv = header_version_of(&header);
    let ctx = ProduceCtx {
        header,
        header_version: hv,
        version,
        req,
        plan,
        scope,
        reply: tx,
    };
    let has_waits = ctx
        .plan
        .iter()
        .flatten()
        .any(|a| matches!(a, Action::Wait(_)));
    if has_waits {
        // Rare path: a retry of a batch that is at the broker right now.
        let shared = Arc::clone(&conn.shared);
        let up = Arc::clone(&conn.upstream);
        tokio::spawn(async move {
            let ctx = resolve_waits(ctx, &shared).await;
            if let Some(send) = dispatch_produce(ctx) {
                let _ = up.lock().await.send(std::iter::once(send)).await;
            }
        });
        Ok(())
    } else {
        if let Some(send) = dispatch_produce(ctx) {
            conn.queue(send.bytes, send.pending);
        }
        Ok(())
    }
}

/// The request as its response needs it (topics and partitions): the
/// records, which hold the whole request frame, are let go once the frame
/// is written to the broker, not when the answer comes back.
fn without_records(mut req: ProduceRequest) -> ProduceRequest {
    for t in &mut req.topics {
        for p in &mut t.partitions {
            p.records = None;
        }
    }
    req
}

fn header_version_of(h: &crate::codec::header::RequestHeader) -> i16 {
    crate::codec::header::request_header_version(h.api_key, h.api_version).unwrap_or(1)
}

/// A Produce request some of whose partitions the proxy answers itself.
struct ProduceCtx {
    header: crate::codec::header::RequestHeader,
    header_version: i16,
    version: i16,
    req: ProduceRequest,
    plan: Plan,
    scope: Scope,
    reply: oneshot::Sender<Reply>,
}

/// Waits for the in-flight originals (bounded by the request's timeout);
/// a committed original gives a synthetic answer, anything else sends
/// this copy to the broker after all.
async fn resolve_waits(mut ctx: ProduceCtx, shared: &Shared) -> ProduceCtx {
    let timeout = Duration::from_millis(ctx.req.timeout_ms.max(0) as u64).min(MAX_WAIT);
    let deadline = tokio::time::Instant::now() + timeout;
    for ti in 0..ctx.plan.len() {
        for pi in 0..ctx.plan[ti].len() {
            while let Action::Wait(rx) = &mut ctx.plan[ti][pi] {
                let outcome = tokio::time::timeout_at(deadline, rx).await;
                ctx.plan[ti][pi] = match outcome {
                    Ok(Ok(Some(c))) => {
                        m::count_batch(outcome::COALESCED);
                        let records = ctx.req.topics[ti].partitions[pi].records.as_ref();
                        m::count_bytes_saved(records.map_or(0, |r| r.len() as u64));
                        Action::Synthetic(c)
                    }
                    Ok(_) if tokio::time::Instant::now() < deadline => {
                        // The original failed: look again (this copy may
                        // now be the one that goes to the broker).
                        let t = &ctx.req.topics[ti];
                        let p = &t.partitions[pi];
                        classify_partition(
                            ctx.req.acks,
                            &ctx.scope,
                            shared.topics.key_for(&t.topic),
                            p.index,
                            p.records.as_ref(),
                            &shared.cache,
                            shared.config.dedup_mode,
                        )
                    }
                    _ => {
                        m::count_batch(outcome::FORWARDED);
                        Action::Forward(None)
                    }
                };
            }
        }
    }
    ctx
}

/// Answers from the cache alone, or returns the request for the fresh
/// partitions, with a merge step for the response.
fn dispatch_produce(ctx: ProduceCtx) -> Option<UpstreamSend> {
    let ProduceCtx {
        header,
        header_version,
        version,
        req,
        mut plan,
        reply,
        ..
    } = ctx;
    let resp_hv = response_header_version(api::PRODUCE, version);
    if none_forward(&plan) {
        let out = merge_response(&req, &plan, None)
            .map(|r| encode_produce_response_frame(header.correlation_id, resp_hv, &r, version))
            .map_err(|e| tracing::error!(error = %e, "cannot build synthetic produce response"));
        let _ = reply.send(out);
        return None;
    }
    let sub = forward_subset(&req, &plan);
    let mut buf = BytesMut::new();
    put_request_header(&mut buf, &header, header_version);
    produce::encode_produce_request(&mut buf, &sub, version);
    let bytes = Frame::from_body(&buf).into_raw();
    let pending = Pending {
        correlation_id: Some(header.correlation_id),
        api_key: api::PRODUCE,
        sent_at: None,
        post: Post::Produce(Box::new(ProducePost {
            version,
            dedup: Some((without_records(req), std::mem::take(&mut plan))),
            merge: true,
        })),
        reply,
    };
    Some(UpstreamSend {
        bytes,
        pending: Some(pending),
    })
}

fn encode_produce_response_frame(
    correlation_id: i32,
    hv: i16,
    r: &ProduceResponse,
    version: i16,
) -> Bytes {
    let mut buf = BytesMut::new();
    put_response_header(
        &mut buf,
        &ResponseHeader {
            correlation_id,
            tagged_fields: TaggedFields::default(),
        },
        hv,
    );
    produce::encode_produce_response(&mut buf, r, version);
    Frame::from_body(&buf).into_raw()
}

/// Most frames gathered into one vectored write.
const WRITE_BURST: usize = 64;

async fn client_writer<W: AsyncWrite + Unpin>(
    mut w: W,
    mut slots: mpsc::Receiver<oneshot::Receiver<Reply>>,
    closing: CancellationToken,
) {
    let mut burst: Vec<Bytes> = Vec::with_capacity(WRITE_BURST);
    // A slot taken from the queue whose answer is not ready yet.
    let mut head: Option<oneshot::Receiver<Reply>> = None;
    'outer: loop {
        let slot = match head.take() {
            Some(s) => s,
            None => match slots.recv().await {
                Some(s) => s,
                None => break,
            },
        };
        // The broker connection failed or no correct answer exists:
        // close, so the client retries on a new connection.
        let mut close = match slot.await {
            Ok(Ok(b)) => {
                burst.push(b);
                false
            }
            _ => true,
        };
        // Answers already there go out in the same write, in order.
        while !close && burst.len() < WRITE_BURST {
            let Ok(mut next) = slots.try_recv() else {
                break;
            };
            match next.try_recv() {
                Ok(Ok(b)) => burst.push(b),
                Err(oneshot::error::TryRecvError::Empty) => {
                    head = Some(next);
                    break;
                }
                _ => close = true,
            }
        }
        if write_all_vectored(&mut w, &mut burst).await.is_err() || close {
            break 'outer;
        }
    }
    let _ = w.shutdown().await;
    closing.cancel();
}

/// Ends (and closes the client connection) when the broker closes its end,
/// even while nothing is pending: a broker closing an idle connection
/// (`connections.max.idle.ms`) is passed on to the client as it would be
/// without the proxy.
async fn upstream_reader<R: AsyncRead + Unpin>(
    mut frames: FrameReader<R>,
    mut pending: mpsc::UnboundedReceiver<Pending>,
    shared: Arc<Shared>,
    closing: CancellationToken,
    peer: SocketAddr,
) {
    loop {
        let (p, early) = tokio::select! {
            // Pending first: an entry is always queued before its request
            // is written, so a response never arrives ahead of its entry.
            biased;
            p = pending.recv() => match p {
                Some(p) => (p, None),
                None => break,
            },
            // Nothing seemed owed. The entry may have been queued between
            // the two polls (then this is its answer); otherwise the broker
            // closed an idle connection (`connections.max.idle.ms`) or
            // misbehaves, and the client is told by a close, as it would
            // be without the proxy. FrameReader::next keeps partial reads,
            // so losing this race drops no bytes.
            r = frames.next() => match pending.try_recv() {
                Ok(p) => (p, Some(r)),
                Err(_) => {
                    match r {
                        Ok(Some(_)) => tracing::error!("broker sent a response nobody asked for; closing"),
                        Ok(None) => tracing::debug!("broker closed an idle connection"),
                        Err(e) => log_frame_error("upstream", peer, &e),
                    }
                    break;
                }
            },
        };
        let next = match early {
            Some(r) => r,
            None => frames.next().await,
        };
        let frame = match next {
            Ok(Some(f)) => f,
            Ok(None) => {
                // A broker closes instead of answering a request it cannot
                // parse or does not support (SocketServer.processChannelException).
                tracing::warn!(
                    %peer,
                    api = api_name(p.api_key),
                    "broker closed the connection instead of answering; closing the client connection"
                );
                metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => "upstream_closed").increment(1);
                break;
            }
            Err(e) => {
                log_frame_error("upstream", peer, &e);
                break;
            }
        };
        if let Some(sent) = p.sent_at {
            m::record_upstream_duration(p.api_key, sent.elapsed().as_secs_f64());
        }
        if let Some(expected) = p.correlation_id {
            let got = frame
                .body()
                .get(..4)
                .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            if got != Some(expected) {
                tracing::error!(expected, ?got, "broker answered out of order; closing");
                break;
            }
        }
        let out = post_process(p.post, frame, &shared);
        let _ = p.reply.send(out);
    }
    // Everything still pending is dropped here: each guard forgets its
    // batch and each client slot closes its connection.
    closing.cancel();
}

fn post_process(post: Post, frame: Frame, shared: &Arc<Shared>) -> Reply {
    match post {
        Post::Raw => Ok(frame.into_raw()),
        Post::ApiVersions { version } => {
            rewrite_response(frame, api::API_VERSIONS, version, |body| {
                let (mut r, at) = match api_versions::parse_api_versions_response(body, version) {
                    Ok(r) => (r, version),
                    // A broker that did not know our version answers with a v0 body.
                    Err(_) => (api_versions::parse_api_versions_response(body, 0)?, 0),
                };
                rewrite::clamp_api_versions(&mut r);
                let mut out = BytesMut::new();
                api_versions::encode_api_versions_response(&mut out, &r, at);
                Ok(out)
            })
        }
        Post::Metadata { version } => rewrite_response(frame, api::METADATA, version, |body| {
            let mut r = metadata::parse_metadata_response(body, version)?;
            observe_brokers(
                shared,
                r.brokers
                    .iter()
                    .map(|b| (b.node_id, b.host.clone(), b.port)),
            );
            shared.topics.learn(&r);
            rewrite::rewrite_metadata(&mut r, &|id| shared.brokers.advertise(id));
            let mut out = BytesMut::new();
            metadata::encode_metadata_response(&mut out, &r, version);
            Ok(out)
        }),
        Post::FindCoordinator { version } => {
            rewrite_response(frame, api::FIND_COORDINATOR, version, |body| {
                let mut r = find_coordinator::parse_find_coordinator_response(body, version)?;
                rewrite::rewrite_find_coordinator(&mut r, &|id| shared.brokers.advertise(id));
                let mut out = BytesMut::new();
                find_coordinator::encode_find_coordinator_response(&mut out, &r, version);
                Ok(out)
            })
        }
        Post::DescribeCluster { version } => {
            rewrite_response(frame, api::DESCRIBE_CLUSTER, version, |body| {
                let mut r = describe_cluster::parse_describe_cluster_response(body, version)?;
                rewrite::rewrite_describe_cluster(&mut r, &|id| shared.brokers.advertise(id));
                let mut out = BytesMut::new();
                describe_cluster::encode_describe_cluster_response(&mut out, &r, version);
                Ok(out)
            })
        }
        Post::Produce(p) => produce_response(*p, frame, shared),
        Post::ProducerEpoch { api_key, version } => {
            let body = frame.body();
            let hv = response_header_version(api_key, version);
            let handed_out = parse_response_header(&body, hv)
                .map_err(CodecError::from)
                .and_then(|(rest, _)| producer_epoch::parse_producer_epoch(rest, api_key, version));
            match handed_out {
                Ok(e) if e.error_code == 0 && e.producer_id >= 0 => {
                    shared.cache.fence(e.producer_id, e.producer_epoch)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(api = api_name(api_key), version, error = %e, "producer epoch not readable")
                }
            }
            Ok(frame.into_raw())
        }
        Post::Sasl {
            version,
            adopt,
            scope,
        } => {
            if let Some(user) = adopt {
                let body = frame.body();
                let ok = match version {
                    Some(v) => sasl::authenticate_succeeded(&body, v),
                    // SaslHandshake v0 tokens: a failed exchange ends in a
                    // closed connection, except SCRAM's server-final "e=".
                    None => !body.starts_with(b"e="),
                };
                if ok {
                    tracing::debug!(user = %user, "SASL authentication completed; dedup scoped to the user");
                    *lock(&scope) = Scope::Principal(user);
                }
            }
            Ok(frame.into_raw())
        }
    }
}

/// Parses the response header, lets `f` rewrite the body, re-frames. A
/// response we cannot parse closes the client connection: forwarding it
/// could leak a broker address.
fn rewrite_response(
    frame: Frame,
    api_key: i16,
    version: i16,
    f: impl FnOnce(&[u8]) -> Result<BytesMut, CodecError>,
) -> Reply {
    let body = frame.body();
    let hv = response_header_version(api_key, version);
    let result = parse_response_header(&body, hv)
        .map_err(CodecError::from)
        .and_then(|(rest, h)| {
            let new_body = f(rest)?;
            let mut buf = BytesMut::with_capacity(new_body.len() + 8);
            put_response_header(&mut buf, &h, hv);
            buf.extend_from_slice(&new_body);
            Ok(Frame::from_body(&buf).into_raw())
        });
    result.map_err(|e| {
        metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => "parse").increment(1);
        tracing::error!(api = api_name(api_key), version, error = %e, "cannot parse broker response; closing client connection");
    })
}

fn produce_response(p: ProducePost, frame: Frame, shared: &Arc<Shared>) -> Reply {
    let ProducePost {
        version,
        dedup,
        merge,
    } = p;
    if version < produce::MIN_VERSION {
        return Ok(frame.into_raw());
    }
    let body = frame.body();
    let hv = response_header_version(api::PRODUCE, version);
    let parsed = parse_response_header(&body, hv)
        .map_err(CodecError::from)
        .and_then(|(rest, h)| Ok((h, produce::parse_produce_response(rest, version)?)));
    let (h, mut resp) = match parsed {
        Ok(x) => x,
        Err(e) => {
            // Guards drop with `dedup`: nothing is cached from a response
            // we could not read.
            metrics::counter!(m::FRAME_ERRORS_TOTAL, "kind" => "parse").increment(1);
            tracing::error!(version, error = %e, "cannot parse broker produce response; closing client connection");
            return Err(());
        }
    };
    if let Some((req, mut plan)) = dedup {
        resolve_guards(&req, &mut plan, Some(&resp));
        if merge {
            rewrite_endpoints(&mut resp, shared)?;
            let merged = merge_response(&req, &plan, Some(&resp)).map_err(|e| {
                tracing::error!(error = %e, "cannot merge produce response; closing client connection");
            })?;
            let mut buf = BytesMut::new();
            put_response_header(&mut buf, &h, hv);
            produce::encode_produce_response(&mut buf, &merged, version);
            return Ok(Frame::from_body(&buf).into_raw());
        }
    }
    if rewrite_endpoints(&mut resp, shared)? {
        let mut buf = BytesMut::new();
        put_response_header(&mut buf, &h, hv);
        produce::encode_produce_response(&mut buf, &resp, version);
        return Ok(Frame::from_body(&buf).into_raw());
    }
    Ok(frame.into_raw())
}

/// Rewrites ProduceResponse `NodeEndpoints` (v10+). Returns whether there
/// were any.
fn rewrite_endpoints(resp: &mut ProduceResponse, shared: &Arc<Shared>) -> Result<bool, ()> {
    let Some(raw) = resp.tagged_fields.get(NODE_ENDPOINTS_TAG) else {
        return Ok(false);
    };
    let mut endpoints = parse_node_endpoints(raw).map_err(|e| {
        tracing::error!(error = %e, "cannot parse produce node endpoints; closing client connection");
    })?;
    observe_brokers(
        shared,
        endpoints
            .iter()
            .map(|e| (e.node_id, e.host.clone(), e.port)),
    );
    rewrite::rewrite_node_endpoints(&mut endpoints, &|id| shared.brokers.advertise(id));
    resp.tagged_fields
        .set(NODE_ENDPOINTS_TAG, encode_node_endpoints(&endpoints));
    Ok(true)
}
