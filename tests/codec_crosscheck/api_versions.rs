//! ApiVersions (API key 18), v0-4: the response's supported and finalized
//! features are kept byte for byte.

use super::*;

// Strategies for kafka-protocol values

pub(crate) fn api_versions_request(v: i16) -> impl Strategy<Value = kp::ApiVersionsRequest> {
    let flex = v >= 3;
    (
        when(flex, text(), String::new()),
        when(flex, text(), String::new()),
        unknown_tags(flex, 0),
    )
        .prop_map(|(n, ver, tags)| {
            let mut r = kp::ApiVersionsRequest::default();
            r.client_software_name = ks(&n);
            r.client_software_version = ks(&ver);
            r.unknown_tagged_fields = tags;
            r
        })
}

pub(crate) fn api_versions_response(v: i16) -> impl Strategy<Value = kp::ApiVersionsResponse> {
    use kp::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
    let flex = v >= 3;
    let api = (
        any::<i16>(),
        any::<i16>(),
        any::<i16>(),
        unknown_tags(flex, 0),
    )
        .prop_map(|(k, min, max, tags)| {
            let mut a = ApiVersion::default();
            a.api_key = k;
            a.min_version = min;
            a.max_version = max;
            a.unknown_tagged_fields = tags;
            a
        });
    let supported = (name(), any::<i16>(), any::<i16>()).prop_map(|(n, min, max)| {
        let mut f = SupportedFeatureKey::default();
        f.name = ks(&n);
        f.min_version = min;
        f.max_version = max;
        f
    });
    let finalized = (name(), any::<i16>(), any::<i16>()).prop_map(|(n, max, min)| {
        let mut f = FinalizedFeatureKey::default();
        f.name = ks(&n);
        f.max_version_level = max;
        f.min_version_level = min;
        f
    });
    (
        (any::<i16>(), prop::collection::vec(api, 0..8)),
        when(v >= 1, any::<i32>(), 0),
        when(flex, prop::collection::vec(supported, 0..3), Vec::new()),
        when(flex, prop_oneof![Just(-1i64), any::<i64>()], -1),
        when(flex, prop::collection::vec(finalized, 0..3), Vec::new()),
        when(flex, any::<bool>(), false),
        unknown_tags(flex, 4),
    )
        .prop_map(
            |((error_code, apis), throttle, supported, epoch, finalized, zk, tags)| {
                let mut r = kp::ApiVersionsResponse::default();
                r.error_code = error_code;
                r.api_keys = apis;
                r.throttle_time_ms = throttle;
                r.supported_features = supported;
                r.finalized_features_epoch = epoch;
                r.finalized_features = finalized;
                r.zk_migration_ready = zk;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

// What our codec must make of each of them

fn expect_api_versions_request(m: &kp::ApiVersionsRequest) -> av::ApiVersionsRequest {
    av::ApiVersionsRequest {
        client_software_name: st(&m.client_software_name),
        client_software_version: st(&m.client_software_version),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_api_versions_response(m: &kp::ApiVersionsResponse, v: i16) -> av::ApiVersionsResponse {
    let mut known = Vec::new();
    if v >= 3 {
        if !m.supported_features.is_empty() {
            known.push((0, kp_compact_array(&m.supported_features, v)));
        }
        if m.finalized_features_epoch != -1 {
            known.push((
                1,
                Bytes::copy_from_slice(&m.finalized_features_epoch.to_be_bytes()),
            ));
        }
        if !m.finalized_features.is_empty() {
            known.push((2, kp_compact_array(&m.finalized_features, v)));
        }
        if m.zk_migration_ready {
            known.push((3, Bytes::from_static(&[1])));
        }
    }
    av::ApiVersionsResponse {
        error_code: m.error_code,
        api_keys: m
            .api_keys
            .iter()
            .map(|a| av::ApiVersion {
                api_key: a.api_key,
                min_version: a.min_version,
                max_version: a.max_version,
                tagged_fields: tagged(&a.unknown_tagged_fields),
            })
            .collect(),
        throttle_time_ms: m.throttle_time_ms,
        tagged_fields: tagged_with(known, &m.unknown_tagged_fields),
    }
}

// Our parser under the signature of `cross_check`

pub(crate) fn parse_api_versions_request(
    b: &Bytes,
    v: i16,
) -> Result<av::ApiVersionsRequest, CodecError> {
    av::parse_api_versions_request(b, v)
}

pub(crate) fn parse_api_versions_response(
    b: &Bytes,
    v: i16,
) -> Result<av::ApiVersionsResponse, CodecError> {
    av::parse_api_versions_response(b, v)
}

// Round trips against kafka-protocol

#[test]
fn api_versions_requests_v0_to_v4_match_kafka_protocol() {
    for_each_version(0..=4, CASES, api_versions_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_api_versions_request(&m),
            parse_api_versions_request,
            av::encode_api_versions_request,
        )
        .map(drop)
    });
}

#[test]
fn api_versions_responses_v0_to_v4_keep_supported_and_finalized_features_byte_for_byte() {
    for_each_version(0..=4, CASES, api_versions_response, |v, m| {
        let parsed = cross_check(
            v,
            &m,
            &expect_api_versions_response(&m, v),
            parse_api_versions_response,
            av::encode_api_versions_response,
        )?;
        if v >= 3 && !m.finalized_features.is_empty() {
            let raw = parsed.tagged_fields.get(2).expect("FinalizedFeatures kept");
            let decoded: Vec<kp::api_versions_response::FinalizedFeatureKey> =
                kp_decode_compact_array(raw, v)
                    .map_err(|e| TestCaseError::fail(format!("FinalizedFeatures: {e}")))?;
            prop_assert_eq!(decoded, m.finalized_features.clone());
        }
        Ok(())
    });
}
