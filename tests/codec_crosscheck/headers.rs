//! Request and response headers: the header version of every API and
//! version, the API names, and round trips of the headers themselves.

use super::*;

/// Every API whose header layout the codec knows.
fn known_header_apis() -> Vec<i16> {
    let known: Vec<i16> = (0..=i16::MAX)
        .filter(|k| kp::ApiKey::try_from(*k).is_ok())
        .filter(|k| header::request_header_version(*k, 0).is_some())
        .collect();
    for key in [
        api::PRODUCE,
        api::METADATA,
        api::FIND_COORDINATOR,
        api::API_VERSIONS,
        api::DESCRIBE_CLUSTER,
    ] {
        assert!(known.contains(&key), "api {key}");
    }
    known
}

fn kp_api(key: i16) -> kp::ApiKey {
    kp::ApiKey::try_from(key).expect("kafka-protocol knows the api key")
}

#[test]
fn header_versions_agree_with_kafka_protocol_for_every_known_api_and_version() {
    for key in known_header_apis() {
        let theirs = kp_api(key);
        let range = theirs.valid_versions();
        for v in range.min..=range.max {
            assert_eq!(
                header::request_header_version(key, v),
                Some(theirs.request_header_version(v)),
                "request header of api {key} v{v}"
            );
            assert_eq!(
                header::response_header_version(key, v),
                theirs.response_header_version(v),
                "response header of api {key} v{v}"
            );
        }
    }
}

fn camel_to_snake(s: &str) -> String {
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[test]
fn api_names_are_the_snake_case_names_kafka_protocol_knows() {
    for key in 0..=i16::MAX {
        let Ok(theirs) = kp::ApiKey::try_from(key) else {
            continue;
        };
        let expected = camel_to_snake(&format!("{theirs:?}")).replace("k_raft", "kraft");
        assert_eq!(api::api_name(key), expected, "api key {key}");
    }
}

pub(crate) fn request_header_case() -> impl Strategy<Value = (i16, kp::RequestHeader)> {
    prop::sample::select(known_header_apis())
        .prop_flat_map(|key| {
            let range = kp_api(key).valid_versions();
            (Just(key), range.min..=range.max)
        })
        .prop_flat_map(|(key, v)| {
            let hv = kp_api(key).request_header_version(v);
            (
                Just(hv),
                Just(key),
                Just(v),
                any::<i32>(),
                opt_text(),
                unknown_tags(hv >= 2, 0),
            )
        })
        .prop_map(|(hv, key, v, corr, client_id, tags)| {
            let mut h = kp::RequestHeader::default();
            h.request_api_key = key;
            h.request_api_version = v;
            h.correlation_id = corr;
            h.client_id = client_id.map(|c| ks(&c));
            h.unknown_tagged_fields = tags;
            (hv, h)
        })
}

#[test]
fn request_headers_match_kafka_protocol_and_parse_by_their_own_api_version() {
    runner(CASES * 8)
        .run(&request_header_case(), |(hv, h)| {
            let wire = kp_encode(&h, hv);
            let expected = header::RequestHeader {
                api_key: h.request_api_key,
                api_version: h.request_api_version,
                correlation_id: h.correlation_id,
                client_id: ost(&h.client_id),
                tagged_fields: tagged(&h.unknown_tagged_fields),
            };
            let (parsed, rest) = header::parse_request_header_auto(&wire)
                .map_err(|e| TestCaseError::fail(format!("header refused: {e}")))?;
            prop_assert!(rest.is_empty());
            prop_assert_eq!(&parsed, &expected);
            let mut ours = BytesMut::new();
            header::put_request_header(&mut ours, &expected, hv);
            prop_assert_eq!(&ours[..], &wire[..]);
            let back: kp::RequestHeader = kp_decode(&ours, hv)?;
            prop_assert_eq!(back, h);
            Ok(())
        })
        .unwrap();
}

#[test]
fn response_headers_v0_and_v1_match_kafka_protocol() {
    let case = (0i16..=1).prop_flat_map(|hv| (Just(hv), any::<i32>(), unknown_tags(hv >= 1, 0)));
    runner(CASES * 4)
        .run(&case, |(hv, corr, tags)| {
            let mut h = kp::ResponseHeader::default();
            h.correlation_id = corr;
            h.unknown_tagged_fields = tags;
            let expected = header::ResponseHeader {
                correlation_id: corr,
                tagged_fields: tagged(&h.unknown_tagged_fields),
            };
            cross_check(
                hv,
                &h,
                &expected,
                |b, hv| primitives_parse_all(b, |i| header::parse_response_header(i, hv)),
                header::put_response_header,
            )
            .map(drop)
        })
        .unwrap();
}

#[test]
fn request_header_v0_without_client_id_round_trips() {
    let case = (any::<i16>(), any::<i16>(), any::<i32>());
    runner(CASES)
        .run(&case, |(key, v, corr)| {
            let h = header::RequestHeader {
                api_key: key,
                api_version: v,
                correlation_id: corr,
                client_id: None,
                tagged_fields: TaggedFields::default(),
            };
            let mut b = BytesMut::new();
            header::put_request_header(&mut b, &h, 0);
            prop_assert_eq!(b.len(), 8);
            let parsed = primitives_parse_all(&b, |i| header::parse_request_header(i, 0))
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(parsed, h);
            Ok(())
        })
        .unwrap();
}

fn primitives_parse_all<'a, T>(
    b: &'a [u8],
    f: impl FnOnce(&'a [u8]) -> kafka_dedup_proxy::codec::primitives::PResult<'a, T>,
) -> Result<T, CodecError> {
    kafka_dedup_proxy::codec::primitives::parse_all(
        b,
        kafka_dedup_proxy::codec::primitives::DecodeBudget::REQUEST,
        f,
    )
}
