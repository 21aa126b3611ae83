//! Why a connection closes, by the side that caused it: the client, the
//! broker, or the proxy's own policy. Every close is logged once and
//! counted in `kdp_frame_errors_total{side, kind}`.

use std::net::SocketAddr;

use super::io::FrameError;
use super::sni::SniRefusal;
use crate::codec::CodecError;
use crate::codec::api::api_name;
use crate::dedup::MergeError;
use crate::metrics as kdp_metrics;

/// The side a close is blamed on (the `side` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Broker,
    Policy,
}

impl Side {
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Broker => "broker",
            Side::Policy => "policy",
        }
    }
}

/// The client sent something the proxy cannot relay, or went away.
#[derive(Debug, thiserror::Error)]
pub enum ClientFault {
    #[error("bad frame: {0}")]
    Frame(FrameError),
    #[error("TLS handshake failed (a plaintext client on a TLS listener?): {0}")]
    TlsHandshake(String),
    /// SNI routing: the requested name is no broker and not the bootstrap.
    #[error("TLS connection refused: {0}")]
    Sni(SniRefusal),
    #[error("request shorter than a header")]
    ShortHeader,
    #[error("unparsable {api} v{version} request: {detail}", api = api_name(*.api_key))]
    Unparsable {
        api_key: i16,
        version: i16,
        detail: String,
    },
    /// The client connection closed (its writer ended).
    #[error("client connection closed")]
    Gone,
}

/// The broker could not be reached, or answered in a way that cannot be
/// relayed.
#[derive(Debug, thiserror::Error)]
pub enum BrokerFault {
    #[error("no broker connection could be opened")]
    Connect,
    #[error("bad frame: {0}")]
    Frame(FrameError),
    #[error("broker closed the connection instead of answering {api}", api = api_name(*.api_key))]
    ClosedInsteadOfAnswering { api_key: i16 },
    #[error("broker answered out of order (expected correlation id {expected}, got {got:?})")]
    OutOfOrder { expected: i32, got: Option<i32> },
    #[error("broker sent a response nobody asked for")]
    Unsolicited,
    #[error("cannot parse broker {api} v{version} response: {error}", api = api_name(*.api_key))]
    Unparsable {
        api_key: i16,
        version: i16,
        error: CodecError,
    },
    #[error("cannot merge produce response: {0}")]
    Merge(MergeError),
    /// The broker connection is gone (its reader ended).
    #[error("broker connection closed")]
    Gone,
}

/// A request the proxy refuses by design, as a broker would refuse it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{api} is not offered by the proxy", api = api_name(*.api_key))]
    HiddenApi { api_key: i16 },
    #[error("{api} v{version} is above what the proxy advertised", api = api_name(*.api_key))]
    VersionAboveAdvertised { api_key: i16, version: i16 },
    #[error(
        "SaslHandshake v0 with mechanism {mechanism:?}, whose token rounds the proxy cannot follow"
    )]
    SaslMechanism { mechanism: String },
    /// An idempotent producer's batch of duplicates only could not be
    /// acknowledged in sequence order (docs/idempotency-keys.md): the
    /// client sends its batches again on a new connection.
    #[error(
        "an idempotent batch of duplicates only follows a batch the broker did not acknowledge"
    )]
    SequenceGap,
}

/// Why a connection closes.
#[derive(Debug, thiserror::Error)]
pub enum Close {
    #[error("client: {0}")]
    Client(#[from] ClientFault),
    #[error("broker: {0}")]
    Broker(#[from] BrokerFault),
    #[error("refused: {0}")]
    Policy(#[from] Refusal),
}

fn frame_kind(e: &FrameError) -> &'static str {
    match e {
        FrameError::Io(_) => "io",
        FrameError::Codec(CodecError::FrameLength { .. }) => "oversized",
        FrameError::Codec(_) => "parse",
    }
}

impl Close {
    pub fn side(&self) -> Side {
        match self {
            Close::Client(_) => Side::Client,
            Close::Broker(_) => Side::Broker,
            Close::Policy(_) => Side::Policy,
        }
    }

    /// The `kind` label, `None` for an ordinary end (a side went away)
    /// that is not counted.
    pub fn kind(&self) -> Option<&'static str> {
        Some(match self {
            Close::Client(ClientFault::Frame(e)) | Close::Broker(BrokerFault::Frame(e)) => {
                frame_kind(e)
            }
            Close::Client(ClientFault::TlsHandshake(_)) => "tls_handshake",
            Close::Client(ClientFault::Sni(_)) => "sni",
            Close::Client(ClientFault::ShortHeader | ClientFault::Unparsable { .. }) => "parse",
            Close::Broker(BrokerFault::Connect) => "upstream_connect",
            Close::Broker(BrokerFault::ClosedInsteadOfAnswering { .. }) => "upstream_closed",
            Close::Broker(BrokerFault::OutOfOrder { .. }) => "out_of_order",
            Close::Broker(BrokerFault::Unsolicited) => "unsolicited",
            Close::Broker(BrokerFault::Unparsable { .. } | BrokerFault::Merge(_)) => "parse",
            Close::Policy(Refusal::HiddenApi { .. }) => "hidden_api",
            Close::Policy(Refusal::VersionAboveAdvertised { .. }) => "version",
            Close::Policy(Refusal::SaslMechanism { .. }) => "sasl_mechanism",
            Close::Policy(Refusal::SequenceGap) => "sequence_gap",
            Close::Client(ClientFault::Gone) | Close::Broker(BrokerFault::Gone) => return None,
        })
    }

    /// Logs the close once and counts it.
    pub fn record(&self, peer: SocketAddr) {
        let Some(kind) = self.kind() else {
            tracing::debug!(%peer, reason = %self, "connection ends");
            return;
        };
        let side = self.side().label();
        metrics::counter!(kdp_metrics::FRAME_ERRORS_TOTAL, "side" => side, "kind" => kind)
            .increment(1);
        match self {
            Close::Client(ClientFault::Frame(FrameError::Io(e)))
            | Close::Broker(BrokerFault::Frame(FrameError::Io(e)))
                if e.kind() == std::io::ErrorKind::ConnectionReset =>
            {
                tracing::debug!(%peer, side, "connection reset")
            }
            Close::Broker(BrokerFault::Unparsable { .. } | BrokerFault::Merge(_))
            | Close::Broker(BrokerFault::OutOfOrder { .. } | BrokerFault::Unsolicited) => {
                tracing::error!(%peer, side, kind, "closing connection: {self}")
            }
            _ => tracing::warn!(%peer, side, kind, "closing connection: {self}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_close_names_its_side_and_kind() {
        let c = Close::from(Refusal::HiddenApi { api_key: 78 });
        assert_eq!((c.side(), c.kind()), (Side::Policy, Some("hidden_api")));
        assert_eq!(
            c.to_string(),
            "refused: share_fetch is not offered by the proxy"
        );
        let c = Close::from(BrokerFault::ClosedInsteadOfAnswering { api_key: 0 });
        assert_eq!(
            (c.side(), c.kind()),
            (Side::Broker, Some("upstream_closed"))
        );
        let c = Close::from(ClientFault::Frame(FrameError::Codec(
            CodecError::FrameLength { len: 9, max: 1 },
        )));
        assert_eq!((c.side(), c.kind()), (Side::Client, Some("oversized")));
        assert_eq!(Close::from(ClientFault::Gone).kind(), None);
        let c = Close::from(ClientFault::Sni(SniRefusal::Missing));
        assert_eq!((c.side(), c.kind()), (Side::Client, Some("sni")));
    }
}
