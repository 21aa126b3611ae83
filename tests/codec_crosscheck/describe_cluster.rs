//! DescribeCluster (API key 60), v0-2.

use super::*;

// Strategies for kafka-protocol values

pub(crate) fn describe_cluster_request(
    v: i16,
) -> impl Strategy<Value = kp::DescribeClusterRequest> {
    (
        any::<bool>(),
        when(v >= 1, any::<i8>(), 1),
        when(v >= 2, any::<bool>(), false),
        unknown_tags(true, 0),
    )
        .prop_map(|(ops, endpoint_type, fenced, tags)| {
            let mut r = kp::DescribeClusterRequest::default();
            r.include_cluster_authorized_operations = ops;
            r.endpoint_type = endpoint_type;
            r.include_fenced_brokers = fenced;
            r.unknown_tagged_fields = tags;
            r
        })
}

pub(crate) fn describe_cluster_response(
    v: i16,
) -> impl Strategy<Value = kp::DescribeClusterResponse> {
    let broker = (
        any::<i32>(),
        text(),
        any::<i32>(),
        opt_text(),
        when(v >= 2, any::<bool>(), false),
        unknown_tags(true, 0),
    )
        .prop_map(|(id, host, port, rack, fenced, tags)| {
            let mut b = kp::describe_cluster_response::DescribeClusterBroker::default();
            b.broker_id = kp::BrokerId(id);
            b.host = ks(&host);
            b.port = port;
            b.rack = rack.map(|r| ks(&r));
            b.is_fenced = fenced;
            b.unknown_tagged_fields = tags;
            b
        });
    (
        (any::<i32>(), any::<i16>(), opt_text()),
        when(v >= 1, any::<i8>(), 1),
        (text(), any::<i32>()),
        prop::collection::vec(broker, 0..4),
        any::<i32>(),
        unknown_tags(true, 0),
    )
        .prop_map(
            |(
                (throttle, error_code, msg),
                endpoint_type,
                (cluster_id, controller),
                brokers,
                ops,
                tags,
            )| {
                let mut r = kp::DescribeClusterResponse::default();
                r.throttle_time_ms = throttle;
                r.error_code = error_code;
                r.error_message = msg.map(|m| ks(&m));
                r.endpoint_type = endpoint_type;
                r.cluster_id = ks(&cluster_id);
                r.controller_id = kp::BrokerId(controller);
                r.brokers = brokers;
                r.cluster_authorized_operations = ops;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

// What our codec must make of each of them

fn expect_describe_cluster_request(m: &kp::DescribeClusterRequest) -> dc::DescribeClusterRequest {
    dc::DescribeClusterRequest {
        include_cluster_authorized_operations: m.include_cluster_authorized_operations,
        endpoint_type: m.endpoint_type,
        include_fenced_brokers: m.include_fenced_brokers,
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_describe_cluster_response(
    m: &kp::DescribeClusterResponse,
) -> dc::DescribeClusterResponse {
    dc::DescribeClusterResponse {
        throttle_time_ms: m.throttle_time_ms,
        error_code: m.error_code,
        error_message: ost(&m.error_message),
        endpoint_type: m.endpoint_type,
        cluster_id: st(&m.cluster_id),
        controller_id: m.controller_id.0,
        brokers: m
            .brokers
            .iter()
            .map(|b| dc::DescribeClusterBroker {
                broker_id: b.broker_id.0,
                host: st(&b.host),
                port: b.port,
                rack: ost(&b.rack),
                is_fenced: b.is_fenced,
                tagged_fields: tagged(&b.unknown_tagged_fields),
            })
            .collect(),
        cluster_authorized_operations: m.cluster_authorized_operations,
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

// Our parser under the signature of `cross_check`

pub(crate) fn parse_describe_cluster_request(
    b: &Bytes,
    v: i16,
) -> Result<dc::DescribeClusterRequest, CodecError> {
    dc::parse_describe_cluster_request(b, v)
}

pub(crate) fn parse_describe_cluster_response(
    b: &Bytes,
    v: i16,
) -> Result<dc::DescribeClusterResponse, CodecError> {
    dc::parse_describe_cluster_response(b, v)
}

// Round trips against kafka-protocol

#[test]
fn describe_cluster_requests_v0_to_v2_match_kafka_protocol() {
    for_each_version(0..=2, CASES, describe_cluster_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_describe_cluster_request(&m),
            parse_describe_cluster_request,
            dc::encode_describe_cluster_request,
        )
        .map(drop)
    });
}

#[test]
fn describe_cluster_responses_v0_to_v2_match_kafka_protocol() {
    for_each_version(0..=2, CASES, describe_cluster_response, |v, m| {
        cross_check(
            v,
            &m,
            &expect_describe_cluster_response(&m),
            parse_describe_cluster_response,
            dc::encode_describe_cluster_response,
        )
        .map(drop)
    });
}
