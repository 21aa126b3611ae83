//! Request header v0-v2 and response header v0-v1
//! (`RequestHeader.json`, `ResponseHeader.json`).
//!
//! The header version follows from the API's flexible versions
//! (`ApiMessageTypeGenerator.generateHeaderVersion`): v2 requests / v1
//! responses for flexible versions, with one exception: an ApiVersions
//! response always uses header v0 (KIP-511) so that any client can read it.
//! client_id keeps its int16 length even in header v2.

use bytes::{BufMut, BytesMut};

use super::api::{API_VERSIONS, first_flexible_version, is_flexible};
use super::error::CodecError;
use super::primitives::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestHeader {
    pub api_key: i16,
    pub api_version: i16,
    pub correlation_id: i32,
    /// v1+; `None` is null (the broker treats it as "").
    pub client_id: Option<String>,
    /// v2+.
    pub tagged_fields: TaggedFields,
}

/// Request header version for an API we know; `None` when the proxy does
/// not know the API's flexible versions (its body is never parsed then).
pub fn request_header_version(api_key: i16, api_version: i16) -> Option<i16> {
    first_flexible_version(api_key)?;
    Some(if is_flexible(api_key, api_version) {
        2
    } else {
        1
    })
}

/// Response header version for an API we know.
pub fn response_header_version(api_key: i16, api_version: i16) -> i16 {
    if api_key == API_VERSIONS {
        0
    } else if is_flexible(api_key, api_version) {
        1
    } else {
        0
    }
}

/// The fixed prefix every request header version shares: enough to route
/// any request, including APIs the proxy does not know.
pub fn parse_request_prefix(i: &[u8]) -> PResult<'_, (i16, i16, i32)> {
    let (i, api_key) = parse_i16(i)?;
    let (i, api_version) = parse_i16(i)?;
    let (i, correlation_id) = parse_i32(i)?;
    Ok((i, (api_key, api_version, correlation_id)))
}

pub fn parse_request_header(i: &[u8], header_version: i16) -> PResult<'_, RequestHeader> {
    let (i, (api_key, api_version, correlation_id)) = parse_request_prefix(i)?;
    let (i, client_id) = if header_version >= 1 {
        parse_nullable_string(i, false)?
    } else {
        (i, None)
    };
    let (i, tagged_fields) = parse_tagged_if(i, header_version >= 2)?;
    Ok((
        i,
        RequestHeader {
            api_key,
            api_version,
            correlation_id,
            client_id,
            tagged_fields,
        },
    ))
}

pub fn put_request_header(buf: &mut BytesMut, h: &RequestHeader, header_version: i16) {
    buf.put_i16(h.api_key);
    buf.put_i16(h.api_version);
    buf.put_i32(h.correlation_id);
    if header_version >= 1 {
        put_nullable_string(buf, h.client_id.as_deref(), false);
    }
    put_tagged_if(buf, &h.tagged_fields, header_version >= 2);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResponseHeader {
    pub correlation_id: i32,
    /// v1+.
    pub tagged_fields: TaggedFields,
}

/// The correlation id a response frame's body starts with, whatever its
/// header version: enough to match it to its request.
pub fn peek_correlation_id(body: &[u8]) -> Option<i32> {
    parse_i32(body).ok().map(|(_, c)| c)
}

pub fn parse_response_header(i: &[u8], header_version: i16) -> PResult<'_, ResponseHeader> {
    let (i, correlation_id) = parse_i32(i)?;
    let (i, tagged_fields) = parse_tagged_if(i, header_version >= 1)?;
    Ok((
        i,
        ResponseHeader {
            correlation_id,
            tagged_fields,
        },
    ))
}

pub fn put_response_header(buf: &mut BytesMut, h: &ResponseHeader, header_version: i16) {
    buf.put_i32(h.correlation_id);
    put_tagged_if(buf, &h.tagged_fields, header_version >= 1);
}

/// A response frame in the proxy's own name: a header with
/// `correlation_id` (no tagged fields) at `header_version`, then what `body`
/// writes.
pub fn response_frame(
    correlation_id: i32,
    header_version: i16,
    body: impl FnOnce(&mut BytesMut),
) -> bytes::Bytes {
    let mut buf = BytesMut::new();
    let h = ResponseHeader {
        correlation_id,
        tagged_fields: TaggedFields::default(),
    };
    put_response_header(&mut buf, &h, header_version);
    body(&mut buf);
    super::frame::Frame::from_body(&buf).into_raw()
}

/// Parses a request header whose version follows from its own api key and
/// version. Fails for APIs whose flexible versions the proxy does not know.
pub fn parse_request_header_auto(i: &[u8]) -> Result<(RequestHeader, &[u8]), CodecError> {
    let (_, (api_key, api_version, _)) = parse_request_prefix(i)?;
    let header_version =
        request_header_version(api_key, api_version).ok_or(CodecError::UnsupportedVersion {
            api_key,
            version: api_version,
        })?;
    let (rest, h) = parse_request_header(i, header_version)?;
    Ok((h, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::api::{DESCRIBE_CLUSTER, METADATA, PRODUCE};

    #[test]
    fn header_versions_follow_flexible_versions() {
        assert_eq!(request_header_version(PRODUCE, 8), Some(1));
        assert_eq!(request_header_version(PRODUCE, 9), Some(2));
        assert_eq!(response_header_version(PRODUCE, 9), 1);
        assert_eq!(response_header_version(API_VERSIONS, 4), 0);
        assert_eq!(request_header_version(API_VERSIONS, 3), Some(2));
        assert_eq!(request_header_version(DESCRIBE_CLUSTER, 0), Some(2));
        assert_eq!(response_header_version(METADATA, 8), 0);
    }

    #[test]
    fn client_id_keeps_int16_length_in_header_v2() {
        let h = RequestHeader {
            api_key: PRODUCE,
            api_version: 9,
            correlation_id: 7,
            client_id: Some("abc".into()),
            tagged_fields: TaggedFields::default(),
        };
        let mut b = BytesMut::new();
        put_request_header(&mut b, &h, 2);
        assert_eq!(&b[..], &[0, 0, 0, 9, 0, 0, 0, 7, 0, 3, b'a', b'b', b'c', 0]);
        assert_eq!(parse_request_header(&b, 2).unwrap().1, h);
    }
}
