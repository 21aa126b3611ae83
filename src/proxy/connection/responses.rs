//! What happens to a broker response before it reaches the client: broker
//! endpoints rewritten to the proxy's (Metadata, FindCoordinator,
//! DescribeCluster, Produce `NodeEndpoints`), ApiVersions clamped, dedup
//! completed with the broker's Produce answer, producer epochs fenced,
//! a SASL user adopted. Everything else goes out as the broker sent it.

use bytes::{Bytes, BytesMut};

use super::sasl::Adoption;
use crate::codec::api::{self, api_name};
use crate::codec::frame::Frame;
use crate::codec::header::{parse_response_header, put_response_header, response_header_version};
use crate::codec::produce::{
    self, NODE_ENDPOINTS_TAG, ProduceResponse, encode_node_endpoints, parse_node_endpoints,
};
use crate::codec::{
    CodecError, api_versions, describe_cluster, find_coordinator, metadata, producer_epoch, sasl,
};
use crate::dedup::Pending;
use crate::proxy::Shared;
use crate::proxy::error::{BrokerFault, Close};
use crate::proxy::rewrite;

/// What to do with a response before it goes to the client.
pub(super) enum OnResponse {
    /// Nothing: relay the broker's bytes.
    Relay,
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
    /// `dedup` is `None` when the request was not read (dedup off, an old
    /// version, a request that did not parse): only endpoints are rewritten.
    Produce {
        version: i16,
        dedup: Option<Pending>,
    },
    /// InitProducerId or EndTxn (v5+): the epoch handed out fences older ones.
    ProducerEpoch {
        api_key: i16,
        version: i16,
    },
    /// A SASL round; with `adopt`, a success completes the exchange.
    Sasl {
        /// SaslAuthenticate version, `None` for a raw SaslHandshake v0 token.
        version: Option<i16>,
        adopt: Option<Adoption>,
    },
}

pub(super) fn respond(on: OnResponse, frame: Frame, shared: &Shared) -> Result<Bytes, Close> {
    match on {
        OnResponse::Relay => Ok(frame.into_raw()),
        OnResponse::ApiVersions { version } => {
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
        OnResponse::Metadata { version } => {
            rewrite_response(frame, api::METADATA, version, |body| {
                let mut r = metadata::parse_metadata_response(body, version)?;
                shared.observe_brokers(
                    r.brokers
                        .iter()
                        .map(|b| (b.node_id, b.host.clone(), b.port)),
                );
                shared.topics.learn(&r);
                rewrite::rewrite_metadata(&mut r, &|id| shared.advertise(id));
                let mut out = BytesMut::new();
                metadata::encode_metadata_response(&mut out, &r, version);
                Ok(out)
            })
        }
        OnResponse::FindCoordinator { version } => {
            rewrite_response(frame, api::FIND_COORDINATOR, version, |body| {
                let mut r = find_coordinator::parse_find_coordinator_response(body, version)?;
                rewrite::rewrite_find_coordinator(&mut r, &|id| shared.advertise(id));
                let mut out = BytesMut::new();
                find_coordinator::encode_find_coordinator_response(&mut out, &r, version);
                Ok(out)
            })
        }
        OnResponse::DescribeCluster { version } => {
            rewrite_response(frame, api::DESCRIBE_CLUSTER, version, |body| {
                let mut r = describe_cluster::parse_describe_cluster_response(body, version)?;
                shared.observe_brokers(
                    r.brokers
                        .iter()
                        .map(|b| (b.broker_id, b.host.clone(), b.port)),
                );
                rewrite::rewrite_describe_cluster(&mut r, &|id| shared.advertise(id));
                let mut out = BytesMut::new();
                describe_cluster::encode_describe_cluster_response(&mut out, &r, version);
                Ok(out)
            })
        }
        OnResponse::Produce { version, dedup } => produce_response(version, dedup, frame, shared),
        OnResponse::ProducerEpoch { api_key, version } => {
            let body = frame.body();
            let header_version = response_header_version(api_key, version);
            let handed_out = parse_response_header(&body, header_version)
                .map_err(CodecError::from)
                .and_then(|(rest, _)| producer_epoch::parse_producer_epoch(rest, api_key, version));
            match handed_out {
                Ok(e) if e.error_code == 0 && e.producer_id >= 0 => {
                    shared.dedup.cache().fence(e.producer_id, e.producer_epoch)
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(api = api_name(api_key), version, error = %e, "producer epoch not readable")
                }
            }
            Ok(frame.into_raw())
        }
        OnResponse::Sasl { version, adopt } => {
            if let Some(adoption) = adopt {
                let body = frame.body();
                let ok = match version {
                    Some(v) => sasl::authenticate_succeeded(&body, v),
                    // SaslHandshake v0 tokens: a failed exchange ends in a
                    // closed connection, except SCRAM's server-final "e=".
                    None => !body.starts_with(b"e="),
                };
                if ok {
                    adoption.adopt();
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
) -> Result<Bytes, Close> {
    let body = frame.body();
    let header_version = response_header_version(api_key, version);
    parse_response_header(&body, header_version)
        .map_err(CodecError::from)
        .and_then(|(rest, h)| {
            let new_body = f(rest)?;
            let mut buf = BytesMut::with_capacity(new_body.len() + 8);
            put_response_header(&mut buf, &h, header_version);
            buf.extend_from_slice(&new_body);
            Ok(Frame::from_body(&buf).into_raw())
        })
        .map_err(|error| {
            BrokerFault::Unparsable {
                api_key,
                version,
                error,
            }
            .into()
        })
}

fn produce_response(
    version: i16,
    dedup: Option<Pending>,
    frame: Frame,
    shared: &Shared,
) -> Result<Bytes, Close> {
    if version < produce::MIN_VERSION {
        return Ok(frame.into_raw());
    }
    let unparsable = |error| BrokerFault::Unparsable {
        api_key: api::PRODUCE,
        version,
        error,
    };
    let body = frame.body();
    let header_version = response_header_version(api::PRODUCE, version);
    // An unreadable answer drops `dedup` unanswered: nothing is cached.
    let (h, mut resp) = parse_response_header(&body, header_version)
        .map_err(CodecError::from)
        .and_then(|(rest, h)| Ok((h, produce::parse_produce_response(rest, version)?)))
        .map_err(unparsable)?;
    let merged = match dedup {
        Some(p) => p.complete(&resp).map_err(BrokerFault::Merge)?,
        None => None,
    };
    let out = match merged {
        Some(mut m) => {
            rewrite_endpoints(&mut m, shared).map_err(unparsable)?;
            m
        }
        None if rewrite_endpoints(&mut resp, shared).map_err(unparsable)? => resp,
        None => return Ok(frame.into_raw()),
    };
    let mut buf = BytesMut::new();
    put_response_header(&mut buf, &h, header_version);
    produce::encode_produce_response(&mut buf, &out, version);
    Ok(Frame::from_body(&buf).into_raw())
}

/// Rewrites ProduceResponse `NodeEndpoints` (v10+). Returns whether there
/// were any.
fn rewrite_endpoints(resp: &mut ProduceResponse, shared: &Shared) -> Result<bool, CodecError> {
    let Some(raw) = resp.tagged_fields.get(NODE_ENDPOINTS_TAG) else {
        return Ok(false);
    };
    let mut endpoints = parse_node_endpoints(raw)?;
    shared.observe_brokers(
        endpoints
            .iter()
            .map(|e| (e.node_id, e.host.clone(), e.port)),
    );
    rewrite::rewrite_node_endpoints(&mut endpoints, &|id| shared.advertise(id));
    resp.tagged_fields
        .set(NODE_ENDPOINTS_TAG, encode_node_endpoints(&endpoints));
    Ok(true)
}
