//! ApiVersionsRequest and ApiVersionsResponse, versions 0-4
//! (`ApiVersionsRequest.json`, `ApiVersionsResponse.json`; flexible from
//! v3). The response's tagged fields (SupportedFeatures, FinalizedFeatures
//! with `transaction.version`, ...) are kept verbatim: dropping them would
//! silently switch clients' behaviour (Transactions V2).

use bytes::{BufMut, BytesMut};

use super::api::{API_VERSIONS_VERSIONS, check_parsed_version};
use super::error::CodecError;
use super::primitives::*;

pub const MAX_VERSION: i16 = match API_VERSIONS_VERSIONS.max_version {
    Some(v) => v,
    None => i16::MAX,
};
const FIRST_FLEXIBLE: i16 = API_VERSIONS_VERSIONS.first_flexible;
/// UNSUPPORTED_VERSION.
pub const UNSUPPORTED_VERSION: i16 = 35;

fn check_version(version: i16) -> Result<(), CodecError> {
    check_parsed_version(&API_VERSIONS_VERSIONS, version)
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiVersionsRequest {
    /// v3+.
    pub client_software_name: String,
    /// v3+.
    pub client_software_version: String,
    pub tagged_fields: TaggedFields,
}

pub fn parse_api_versions_request(
    body: &[u8],
    version: i16,
) -> Result<ApiVersionsRequest, CodecError> {
    check_version(version)?;
    if version < FIRST_FLEXIBLE {
        return parse_all(body, DecodeBudget::REQUEST, |i| {
            Ok((i, ApiVersionsRequest::default()))
        });
    }
    parse_all(body, DecodeBudget::REQUEST, |i| {
        let (i, client_software_name) = parse_string(i, true)?;
        let (i, client_software_version) = parse_string(i, true)?;
        let (i, tagged_fields) = parse_tagged_fields(i)?;
        Ok((
            i,
            ApiVersionsRequest {
                client_software_name,
                client_software_version,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_api_versions_request(buf: &mut BytesMut, r: &ApiVersionsRequest, version: i16) {
    if version >= FIRST_FLEXIBLE {
        put_string(buf, &r.client_software_name, true);
        put_string(buf, &r.client_software_version, true);
        put_tagged_fields(buf, &r.tagged_fields);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersion {
    pub api_key: i16,
    pub min_version: i16,
    pub max_version: i16,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiVersionsResponse {
    pub error_code: i16,
    pub api_keys: Vec<ApiVersion>,
    /// v1+.
    pub throttle_time_ms: i32,
    /// v3+: SupportedFeatures (0), FinalizedFeaturesEpoch (1),
    /// FinalizedFeatures (2), ZkMigrationReady (3), kept raw.
    pub tagged_fields: TaggedFields,
}

pub fn parse_api_versions_response(
    body: &[u8],
    version: i16,
) -> Result<ApiVersionsResponse, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    let api = |i| -> PResult<'_, ApiVersion> {
        let (i, api_key) = parse_i16(i)?;
        let (i, min_version) = parse_i16(i)?;
        let (i, max_version) = parse_i16(i)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            ApiVersion {
                api_key,
                min_version,
                max_version,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::RESPONSE, |i| {
        let (i, error_code) = parse_i16(i)?;
        let (i, api_keys) = parse_array(i, flex, api)?;
        let (i, throttle_time_ms) = if version >= 1 { parse_i32(i)? } else { (i, 0) };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            ApiVersionsResponse {
                error_code,
                api_keys,
                throttle_time_ms,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_api_versions_response(buf: &mut BytesMut, r: &ApiVersionsResponse, version: i16) {
    let flex = version >= FIRST_FLEXIBLE;
    buf.put_i16(r.error_code);
    put_array_len(buf, Some(r.api_keys.len()), flex);
    for a in &r.api_keys {
        buf.put_i16(a.api_key);
        buf.put_i16(a.min_version);
        buf.put_i16(a.max_version);
        put_tagged_if(buf, &a.tagged_fields, flex);
    }
    if version >= 1 {
        buf.put_i32(r.throttle_time_ms);
    }
    put_tagged_if(buf, &r.tagged_fields, flex);
}
