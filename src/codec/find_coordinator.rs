//! FindCoordinatorRequest and FindCoordinatorResponse, versions 0-6
//! (`FindCoordinatorRequest.json`, `FindCoordinatorResponse.json`; flexible
//! from v3). v4+ (KIP-699) batches several keys in `Coordinators`.

use bytes::{BufMut, BytesMut};

use super::api::{FIND_COORDINATOR_VERSIONS, check_parsed_version};
use super::error::CodecError;
use super::primitives::*;

pub const MAX_VERSION: i16 = match FIND_COORDINATOR_VERSIONS.max_version {
    Some(v) => v,
    None => i16::MAX,
};
const FIRST_FLEXIBLE: i16 = FIND_COORDINATOR_VERSIONS.first_flexible;
const FIRST_BATCHED: i16 = 4;

fn check_version(version: i16) -> Result<(), CodecError> {
    check_parsed_version(&FIND_COORDINATOR_VERSIONS, version)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorRequest {
    /// v0-3.
    pub key: String,
    /// v1+: 0 group, 1 transaction, 2 share (v6).
    pub key_type: i8,
    /// v4+.
    pub coordinator_keys: Vec<String>,
    pub tagged_fields: TaggedFields,
}

pub fn parse_find_coordinator_request(
    body: &[u8],
    version: i16,
) -> Result<FindCoordinatorRequest, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    parse_all(body, DecodeBudget::REQUEST, |i| {
        let (i, key) = if version < FIRST_BATCHED {
            parse_string(i, flex)?
        } else {
            (i, String::new())
        };
        let (i, key_type) = if version >= 1 { parse_i8(i)? } else { (i, 0) };
        let (i, coordinator_keys) = if version >= FIRST_BATCHED {
            parse_array(i, flex, |i| parse_string(i, flex))?
        } else {
            (i, Vec::new())
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            FindCoordinatorRequest {
                key,
                key_type,
                coordinator_keys,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_find_coordinator_request(
    buf: &mut BytesMut,
    r: &FindCoordinatorRequest,
    version: i16,
) {
    let flex = version >= FIRST_FLEXIBLE;
    if version < FIRST_BATCHED {
        put_string(buf, &r.key, flex);
    }
    if version >= 1 {
        buf.put_i8(r.key_type);
    }
    if version >= FIRST_BATCHED {
        put_array_len(buf, Some(r.coordinator_keys.len()), flex);
        for k in &r.coordinator_keys {
            put_string(buf, k, flex);
        }
    }
    put_tagged_if(buf, &r.tagged_fields, flex);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub key: String,
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindCoordinatorResponse {
    /// v1+.
    pub throttle_time_ms: i32,
    /// v0-3 single answer.
    pub error_code: i16,
    /// v1-3.
    pub error_message: Option<String>,
    /// v0-3.
    pub node_id: i32,
    /// v0-3.
    pub host: String,
    /// v0-3.
    pub port: i32,
    /// v4+.
    pub coordinators: Vec<Coordinator>,
    pub tagged_fields: TaggedFields,
}

pub fn parse_find_coordinator_response(
    body: &[u8],
    version: i16,
) -> Result<FindCoordinatorResponse, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    let coordinator = |i| -> PResult<'_, Coordinator> {
        let (i, key) = parse_string(i, flex)?;
        let (i, node_id) = parse_i32(i)?;
        let (i, host) = parse_string(i, flex)?;
        let (i, port) = parse_i32(i)?;
        let (i, error_code) = parse_i16(i)?;
        let (i, error_message) = parse_nullable_string(i, flex)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            Coordinator {
                key,
                node_id,
                host,
                port,
                error_code,
                error_message,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::RESPONSE, |i| {
        let (i, throttle_time_ms) = if version >= 1 { parse_i32(i)? } else { (i, 0) };
        let mut r = FindCoordinatorResponse {
            throttle_time_ms,
            error_code: 0,
            error_message: None,
            node_id: -1,
            host: String::new(),
            port: -1,
            coordinators: Vec::new(),
            tagged_fields: TaggedFields::default(),
        };
        let i = if version < FIRST_BATCHED {
            let (i, error_code) = parse_i16(i)?;
            let (i, error_message) = if version >= 1 {
                parse_nullable_string(i, flex)?
            } else {
                (i, None)
            };
            let (i, node_id) = parse_i32(i)?;
            let (i, host) = parse_string(i, flex)?;
            let (i, port) = parse_i32(i)?;
            r.error_code = error_code;
            r.error_message = error_message;
            r.node_id = node_id;
            r.host = host;
            r.port = port;
            i
        } else {
            let (i, c) = parse_array(i, flex, coordinator)?;
            r.coordinators = c;
            i
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        r.tagged_fields = tagged_fields;
        Ok((i, r))
    })
}

pub fn encode_find_coordinator_response(
    buf: &mut BytesMut,
    r: &FindCoordinatorResponse,
    version: i16,
) {
    let flex = version >= FIRST_FLEXIBLE;
    if version >= 1 {
        buf.put_i32(r.throttle_time_ms);
    }
    if version < FIRST_BATCHED {
        buf.put_i16(r.error_code);
        if version >= 1 {
            put_nullable_string(buf, r.error_message.as_deref(), flex);
        }
        buf.put_i32(r.node_id);
        put_string(buf, &r.host, flex);
        buf.put_i32(r.port);
    } else {
        put_array_len(buf, Some(r.coordinators.len()), flex);
        for c in &r.coordinators {
            put_string(buf, &c.key, flex);
            buf.put_i32(c.node_id);
            put_string(buf, &c.host, flex);
            buf.put_i32(c.port);
            buf.put_i16(c.error_code);
            put_nullable_string(buf, c.error_message.as_deref(), flex);
            put_tagged_if(buf, &c.tagged_fields, flex);
        }
    }
    put_tagged_if(buf, &r.tagged_fields, flex);
}
