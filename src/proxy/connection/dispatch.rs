//! What each request needs, by API: most are forwarded untouched; those
//! whose responses carry broker addresses are marked for rewriting;
//! Produce goes to [`produce`](super::produce); SASL is followed to learn
//! the user; ApiVersions above our range is answered in the broker's way.

use super::client_reader::Session;
use super::produce::handle_produce;
use super::responses::OnResponse;
use crate::codec::api::{self, is_hidden_api, max_supported_version};
use crate::codec::api_versions::{self, ApiVersion, ApiVersionsResponse};
use crate::codec::frame::Frame;
use crate::codec::header::{parse_request_header_auto, parse_request_prefix, response_frame};
use crate::codec::primitives::TaggedFields;
use crate::codec::{producer_epoch, sasl};
use crate::metrics as kdp_metrics;
use crate::proxy::error::{ClientFault, Close, Refusal};

pub(super) async fn handle_request(s: &mut Session, frame: Frame) -> Result<(), Close> {
    if s.sasl.expects_raw_token() {
        // SaslHandshake v0: opaque, header-less tokens until authenticated.
        let adopt = s.sasl.raw_token(&frame.body());
        let on = OnResponse::Sasl {
            version: None,
            adopt,
        };
        return s
            .forward(frame.into_raw(), None, api::SASL_HANDSHAKE, on)
            .await;
    }
    let body = frame.body();
    let Ok((_, (api_key, version, correlation_id))) = parse_request_prefix(&body) else {
        return Err(ClientFault::ShortHeader.into());
    };
    kdp_metrics::count_request(api_key);
    if is_hidden_api(api_key) {
        return Err(Refusal::HiddenApi { api_key }.into());
    }
    if let Some(max) = max_supported_version(api_key)
        && version > max
        && api_key != api::API_VERSIONS
    {
        // What the broker does for a version it does not support: close.
        return Err(Refusal::VersionAboveAdvertised { api_key, version }.into());
    }
    let corr = Some(correlation_id);
    let on = match api_key {
        api::API_VERSIONS if version > api_versions::MAX_VERSION => {
            return s.reply_now(unsupported_api_versions(correlation_id)).await;
        }
        api::API_VERSIONS => OnResponse::ApiVersions { version },
        api::METADATA => OnResponse::Metadata { version },
        api::FIND_COORDINATOR => OnResponse::FindCoordinator { version },
        api::DESCRIBE_CLUSTER => OnResponse::DescribeCluster { version },
        api::INIT_PRODUCER_ID => OnResponse::ProducerEpoch { api_key, version },
        api::END_TXN if version >= producer_epoch::END_TXN_FIRST_WITH_EPOCH => {
            OnResponse::ProducerEpoch { api_key, version }
        }
        // The APIs whose bodies the proxy reads: the whole header is
        // parsed here, once.
        api::PRODUCE => {
            let Ok((header, rest)) = parse_request_header_auto(&body) else {
                return Err(ClientFault::Unparsable {
                    api_key,
                    version,
                    detail: "request header".into(),
                }
                .into());
            };
            let rest = body.slice_ref(rest);
            return handle_produce(s, frame, header, rest).await;
        }
        // SASL bodies are only read to learn the user; what does not parse
        // is forwarded and the broker judges it.
        api::SASL_HANDSHAKE => {
            let mechanism = parse_request_header_auto(&body)
                .ok()
                .and_then(|(_, rest)| sasl::parse_handshake_mechanism(rest))
                .unwrap_or_default();
            if version == 0 {
                let Some(tokens) = sasl::handshake_v0_token_rounds(&mechanism) else {
                    return Err(Refusal::SaslMechanism { mechanism }.into());
                };
                s.sasl.started(mechanism);
                s.forward(frame.into_raw(), corr, api_key, OnResponse::Relay)
                    .await?;
                s.sasl.expect_raw_tokens(tokens);
                return Ok(());
            }
            s.sasl.started(mechanism);
            OnResponse::Relay
        }
        api::SASL_AUTHENTICATE => {
            let token = parse_request_header_auto(&body)
                .ok()
                .and_then(|(_, rest)| sasl::parse_authenticate_token(rest, version));
            OnResponse::Sasl {
                version: Some(version),
                adopt: s.sasl.round(token.as_deref()),
            }
        }
        _ => OnResponse::Relay,
    };
    s.forward(frame.into_raw(), corr, api_key, on).await
}

/// The answer to an ApiVersions request above v4, as a broker answers an
/// unsupported version: error UNSUPPORTED_VERSION in a v0 body listing the
/// ApiVersions range we speak; the client retries at that version.
fn unsupported_api_versions(correlation_id: i32) -> bytes::Bytes {
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
    response_frame(correlation_id, 0, |buf| {
        api_versions::encode_api_versions_response(buf, &resp, 0)
    })
}
