//! FindCoordinator (API key 10), v0-6: one key up to v3, a batch of keys
//! from v4.

use super::*;

// Strategies for kafka-protocol values

pub(crate) fn find_coordinator_request(
    v: i16,
) -> impl Strategy<Value = kp::FindCoordinatorRequest> {
    let flex = v >= 3;
    (
        when(v < 4, text(), String::new()),
        when(v >= 1, any::<i8>(), 0),
        when(v >= 4, prop::collection::vec(text(), 0..4), Vec::new()),
        unknown_tags(flex, 0),
    )
        .prop_map(|(key, key_type, keys, tags)| {
            let mut r = kp::FindCoordinatorRequest::default();
            r.key = ks(&key);
            r.key_type = key_type;
            r.coordinator_keys = keys.iter().map(|k| ks(k)).collect();
            r.unknown_tagged_fields = tags;
            r
        })
}

pub(crate) fn find_coordinator_response(
    v: i16,
) -> impl Strategy<Value = kp::FindCoordinatorResponse> {
    let flex = v >= 3;
    let single = v < 4;
    let coordinator = (
        (text(), any::<i32>(), text(), any::<i32>()),
        any::<i16>(),
        opt_text(),
        unknown_tags(flex, 0),
    )
        .prop_map(|((key, id, host, port), error_code, msg, tags)| {
            let mut c = kp::find_coordinator_response::Coordinator::default();
            c.key = ks(&key);
            c.node_id = kp::BrokerId(id);
            c.host = ks(&host);
            c.port = port;
            c.error_code = error_code;
            c.error_message = msg.map(|m| ks(&m));
            c.unknown_tagged_fields = tags;
            c
        });
    let defaults = kp::FindCoordinatorResponse::default();
    (
        when(v >= 1, any::<i32>(), 0),
        when(single, any::<i16>(), 0),
        when(
            (1..=3).contains(&v),
            opt_text(),
            defaults.error_message.as_ref().map(st),
        ),
        when(single, any::<i32>(), 0),
        when(single, text(), String::new()),
        when(single, any::<i32>(), 0),
        when(
            !single,
            prop::collection::vec(coordinator, 0..3),
            Vec::new(),
        ),
        unknown_tags(flex, 0),
    )
        .prop_map(
            |(throttle, error_code, msg, node_id, host, port, coordinators, tags)| {
                let mut r = kp::FindCoordinatorResponse::default();
                r.throttle_time_ms = throttle;
                r.error_code = error_code;
                r.error_message = msg.map(|m| ks(&m));
                r.node_id = kp::BrokerId(node_id);
                r.host = ks(&host);
                r.port = port;
                r.coordinators = coordinators;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

// What our codec must make of each of them

fn expect_find_coordinator_request(m: &kp::FindCoordinatorRequest) -> fc::FindCoordinatorRequest {
    fc::FindCoordinatorRequest {
        key: st(&m.key),
        key_type: m.key_type,
        coordinator_keys: m.coordinator_keys.iter().map(st).collect(),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_find_coordinator_response(
    m: &kp::FindCoordinatorResponse,
    v: i16,
) -> fc::FindCoordinatorResponse {
    let single = v < 4;
    fc::FindCoordinatorResponse {
        throttle_time_ms: m.throttle_time_ms,
        // Our codec's "absent" values for the v0-3 single answer at v4+.
        error_code: if single { m.error_code } else { 0 },
        error_message: if (1..=3).contains(&v) {
            ost(&m.error_message)
        } else {
            None
        },
        node_id: if single { m.node_id.0 } else { -1 },
        host: if single { st(&m.host) } else { String::new() },
        port: if single { m.port } else { -1 },
        coordinators: m
            .coordinators
            .iter()
            .map(|c| fc::Coordinator {
                key: st(&c.key),
                node_id: c.node_id.0,
                host: st(&c.host),
                port: c.port,
                error_code: c.error_code,
                error_message: ost(&c.error_message),
                tagged_fields: tagged(&c.unknown_tagged_fields),
            })
            .collect(),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

// Our parser under the signature of `cross_check`

pub(crate) fn parse_find_coordinator_request(
    b: &Bytes,
    v: i16,
) -> Result<fc::FindCoordinatorRequest, CodecError> {
    fc::parse_find_coordinator_request(b, v)
}

pub(crate) fn parse_find_coordinator_response(
    b: &Bytes,
    v: i16,
) -> Result<fc::FindCoordinatorResponse, CodecError> {
    fc::parse_find_coordinator_response(b, v)
}

// Round trips against kafka-protocol

#[test]
fn find_coordinator_requests_v0_to_v6_match_kafka_protocol() {
    for_each_version(0..=6, CASES, find_coordinator_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_find_coordinator_request(&m),
            parse_find_coordinator_request,
            fc::encode_find_coordinator_request,
        )
        .map(drop)
    });
}

#[test]
fn find_coordinator_responses_v0_to_v6_match_kafka_protocol() {
    for_each_version(0..=6, CASES, find_coordinator_response, |v, m| {
        cross_check(
            v,
            &m,
            &expect_find_coordinator_response(&m, v),
            parse_find_coordinator_response,
            fc::encode_find_coordinator_response,
        )
        .map(drop)
    });
}
