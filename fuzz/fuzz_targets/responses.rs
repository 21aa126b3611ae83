//! Response bodies of every message kind the proxy reads or rewrites:
//! decode → encode → decode must be equal.
//!
//! Input: one byte picking the kind, one picking the version, then the
//! response body.

#![no_main]

use bytes::BytesMut;
use kafka_dedup_proxy::codec::CodecError;
use kafka_dedup_proxy::codec::api_versions::{
    encode_api_versions_response, parse_api_versions_response,
};
use kafka_dedup_proxy::codec::describe_cluster::{
    encode_describe_cluster_response, parse_describe_cluster_response,
};
use kafka_dedup_proxy::codec::find_coordinator::{
    encode_find_coordinator_response, parse_find_coordinator_response,
};
use kafka_dedup_proxy::codec::metadata::{encode_metadata_response, parse_metadata_response};
use kafka_dedup_proxy::codec::produce::{
    NODE_ENDPOINTS_TAG, encode_node_endpoints, encode_produce_response, parse_node_endpoints,
    parse_produce_response,
};
use libfuzzer_sys::fuzz_target;

/// Parses, re-encodes and re-parses `body`; returns the parsed value.
macro_rules! round_trip {
    ($body:expr, $version:expr, $parse:path, $encode:path) => {{
        let body: &[u8] = $body;
        match $parse(body, $version) {
            Err(_) => None,
            Ok(parsed) => {
                let mut encoded = BytesMut::new();
                $encode(&mut encoded, &parsed, $version);
                assert!(encoded.len() <= body.len());
                let again = match $parse(&encoded, $version) {
                    Ok(again) => again,
                    // The decode budget follows the input's length: when
                    // overlong varints made the input longer than our
                    // encoding, the shorter copy may not afford as much.
                    Err(CodecError::DecodeBudget { .. }) if encoded.len() < body.len() => {
                        return;
                    }
                    Err(e) => panic!("our own encoding parses: {e}"),
                };
                assert_eq!(again, parsed);
                let mut twice = BytesMut::new();
                $encode(&mut twice, &again, $version);
                assert_eq!(twice, encoded);
                Some(parsed)
            }
        }
    }};
}

fuzz_target!(|data: &[u8]| {
    let [kind, version, body @ ..] = data else {
        return;
    };
    let version = i16::from(*version);
    match kind % 5 {
        0 => {
            let v = 3 + version % 11;
            let parsed = round_trip!(body, v, parse_produce_response, encode_produce_response);
            if let Some(raw) = parsed.and_then(|r| r.tagged_fields.get(NODE_ENDPOINTS_TAG).cloned())
                && let Ok(endpoints) = parse_node_endpoints(&raw)
            {
                let encoded = encode_node_endpoints(&endpoints);
                assert!(encoded.len() <= raw.len());
                match parse_node_endpoints(&encoded) {
                    Err(CodecError::DecodeBudget { .. }) if encoded.len() < raw.len() => {}
                    again => assert_eq!(again, Ok(endpoints)),
                }
            }
        }
        1 => {
            round_trip!(
                body,
                version % 14,
                parse_metadata_response,
                encode_metadata_response
            );
        }
        2 => {
            round_trip!(
                body,
                version % 7,
                parse_find_coordinator_response,
                encode_find_coordinator_response
            );
        }
        3 => {
            round_trip!(
                body,
                version % 5,
                parse_api_versions_response,
                encode_api_versions_response
            );
        }
        _ => {
            round_trip!(
                body,
                version % 3,
                parse_describe_cluster_response,
                encode_describe_cluster_response
            );
        }
    }
});
