//! DescribeClusterRequest and DescribeClusterResponse, versions 0-2
//! (`DescribeClusterRequest.json`, `DescribeClusterResponse.json`; flexible
//! at every version).

use bytes::{BufMut, BytesMut};

use super::api::{DESCRIBE_CLUSTER_VERSIONS, check_parsed_version};
use super::error::CodecError;
use super::primitives::*;

pub const MAX_VERSION: i16 = match DESCRIBE_CLUSTER_VERSIONS.max_version {
    Some(v) => v,
    None => i16::MAX,
};

fn check_version(version: i16) -> Result<(), CodecError> {
    check_parsed_version(&DESCRIBE_CLUSTER_VERSIONS, version)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterRequest {
    pub include_cluster_authorized_operations: bool,
    /// v1+: 1 brokers, 2 controllers.
    pub endpoint_type: i8,
    /// v2+.
    pub include_fenced_brokers: bool,
    pub tagged_fields: TaggedFields,
}

pub fn parse_describe_cluster_request(
    body: &[u8],
    version: i16,
) -> Result<DescribeClusterRequest, CodecError> {
    check_version(version)?;
    parse_all(body, DecodeBudget::REQUEST, |i| {
        let (i, include_cluster_authorized_operations) = parse_bool(i)?;
        let (i, endpoint_type) = if version >= 1 { parse_i8(i)? } else { (i, 1) };
        let (i, include_fenced_brokers) = if version >= 2 {
            parse_bool(i)?
        } else {
            (i, false)
        };
        let (i, tagged_fields) = parse_tagged_fields(i)?;
        Ok((
            i,
            DescribeClusterRequest {
                include_cluster_authorized_operations,
                endpoint_type,
                include_fenced_brokers,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_describe_cluster_request(
    buf: &mut BytesMut,
    r: &DescribeClusterRequest,
    version: i16,
) {
    put_bool(buf, r.include_cluster_authorized_operations);
    if version >= 1 {
        buf.put_i8(r.endpoint_type);
    }
    if version >= 2 {
        put_bool(buf, r.include_fenced_brokers);
    }
    put_tagged_fields(buf, &r.tagged_fields);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterBroker {
    pub broker_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
    /// v2+.
    pub is_fenced: bool,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribeClusterResponse {
    pub throttle_time_ms: i32,
    pub error_code: i16,
    pub error_message: Option<String>,
    /// v1+.
    pub endpoint_type: i8,
    pub cluster_id: String,
    pub controller_id: i32,
    pub brokers: Vec<DescribeClusterBroker>,
    pub cluster_authorized_operations: i32,
    pub tagged_fields: TaggedFields,
}

pub fn parse_describe_cluster_response(
    body: &[u8],
    version: i16,
) -> Result<DescribeClusterResponse, CodecError> {
    check_version(version)?;
    let broker = |i| -> PResult<'_, DescribeClusterBroker> {
        let (i, broker_id) = parse_i32(i)?;
        let (i, host) = parse_string(i, true)?;
        let (i, port) = parse_i32(i)?;
        let (i, rack) = parse_nullable_string(i, true)?;
        let (i, is_fenced) = if version >= 2 {
            parse_bool(i)?
        } else {
            (i, false)
        };
        let (i, tagged_fields) = parse_tagged_fields(i)?;
        Ok((
            i,
            DescribeClusterBroker {
                broker_id,
                host,
                port,
                rack,
                is_fenced,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::RESPONSE, |i| {
        let (i, throttle_time_ms) = parse_i32(i)?;
        let (i, error_code) = parse_i16(i)?;
        let (i, error_message) = parse_nullable_string(i, true)?;
        let (i, endpoint_type) = if version >= 1 { parse_i8(i)? } else { (i, 1) };
        let (i, cluster_id) = parse_string(i, true)?;
        let (i, controller_id) = parse_i32(i)?;
        let (i, brokers) = parse_array(i, true, broker)?;
        let (i, cluster_authorized_operations) = parse_i32(i)?;
        let (i, tagged_fields) = parse_tagged_fields(i)?;
        Ok((
            i,
            DescribeClusterResponse {
                throttle_time_ms,
                error_code,
                error_message,
                endpoint_type,
                cluster_id,
                controller_id,
                brokers,
                cluster_authorized_operations,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_describe_cluster_response(
    buf: &mut BytesMut,
    r: &DescribeClusterResponse,
    version: i16,
) {
    buf.put_i32(r.throttle_time_ms);
    buf.put_i16(r.error_code);
    put_nullable_string(buf, r.error_message.as_deref(), true);
    if version >= 1 {
        buf.put_i8(r.endpoint_type);
    }
    put_string(buf, &r.cluster_id, true);
    buf.put_i32(r.controller_id);
    put_array_len(buf, Some(r.brokers.len()), true);
    for b in &r.brokers {
        buf.put_i32(b.broker_id);
        put_string(buf, &b.host, true);
        buf.put_i32(b.port);
        put_nullable_string(buf, b.rack.as_deref(), true);
        if version >= 2 {
            put_bool(buf, b.is_fenced);
        }
        put_tagged_fields(buf, &b.tagged_fields);
    }
    buf.put_i32(r.cluster_authorized_operations);
    put_tagged_fields(buf, &r.tagged_fields);
}
