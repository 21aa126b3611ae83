//! Metadata (API key 3), v0-13.

use super::*;

// Strategies for kafka-protocol values

pub(crate) fn metadata_request(v: i16) -> impl Strategy<Value = kp::MetadataRequest> {
    let flex = v >= 9;
    let topic = (
        when(v >= 10, uuid(), Uuid::nil()),
        when(v >= 10, prop::option::of(name()), Some(String::new())),
        name(),
        unknown_tags(flex, 0),
    )
        .prop_map(move |(id, nullable_name, n, tags)| {
            let mut t = kp::metadata_request::MetadataRequestTopic::default();
            t.topic_id = id;
            t.name = if v >= 10 { nullable_name } else { Some(n) }.map(|n| kp::TopicName(ks(&n)));
            t.unknown_tagged_fields = tags;
            t
        });
    let topics = prop::collection::vec(topic, 0..4);
    let topics = if v >= 1 {
        prop::option::of(topics).boxed()
    } else {
        topics.prop_map(Some).boxed()
    };
    (
        topics,
        when(v >= 4, any::<bool>(), true),
        when((8..=10).contains(&v), any::<bool>(), false),
        when(v >= 8, any::<bool>(), false),
        unknown_tags(flex, 0),
    )
        .prop_map(|(topics, auto, cluster_ops, topic_ops, tags)| {
            let mut r = kp::MetadataRequest::default();
            r.topics = topics;
            r.allow_auto_topic_creation = auto;
            r.include_cluster_authorized_operations = cluster_ops;
            r.include_topic_authorized_operations = topic_ops;
            r.unknown_tagged_fields = tags;
            r
        })
}

pub(crate) fn metadata_response(v: i16) -> impl Strategy<Value = kp::MetadataResponse> {
    use kp::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };
    let flex = v >= 9;
    let broker = (
        any::<i32>(),
        text(),
        any::<i32>(),
        when(v >= 1, opt_text(), None),
        unknown_tags(flex, 0),
    )
        .prop_map(|(id, host, port, rack, tags)| {
            let mut b = MetadataResponseBroker::default();
            b.node_id = kp::BrokerId(id);
            b.host = ks(&host);
            b.port = port;
            b.rack = rack.map(|r| ks(&r));
            b.unknown_tagged_fields = tags;
            b
        });
    let ids = || prop::collection::vec(any::<i32>(), 0..4);
    let partition = (
        (any::<i16>(), any::<i32>(), any::<i32>()),
        when(v >= 7, any::<i32>(), -1),
        ids(),
        ids(),
        when(v >= 5, ids(), Vec::new()),
        unknown_tags(flex, 0),
    )
        .prop_map(
            |((error_code, index, leader), epoch, replicas, isr, offline, tags)| {
                let mut p = MetadataResponsePartition::default();
                p.error_code = error_code;
                p.partition_index = index;
                p.leader_id = kp::BrokerId(leader);
                p.leader_epoch = epoch;
                p.replica_nodes = replicas.into_iter().map(kp::BrokerId).collect();
                p.isr_nodes = isr.into_iter().map(kp::BrokerId).collect();
                p.offline_replicas = offline.into_iter().map(kp::BrokerId).collect();
                p.unknown_tagged_fields = tags;
                p
            },
        );
    let topic = (
        any::<i16>(),
        when(v >= 12, prop::option::of(name()), Some(String::new())),
        name(),
        when(v >= 10, uuid(), Uuid::nil()),
        when(v >= 1, any::<bool>(), false),
        prop::collection::vec(partition, 0..3),
        when(v >= 8, any::<i32>(), i32::MIN),
        unknown_tags(flex, 0),
    )
        .prop_map(
            move |(error_code, nullable_name, n, id, internal, partitions, ops, tags)| {
                let mut t = MetadataResponseTopic::default();
                t.error_code = error_code;
                t.name =
                    if v >= 12 { nullable_name } else { Some(n) }.map(|n| kp::TopicName(ks(&n)));
                t.topic_id = id;
                t.is_internal = internal;
                t.partitions = partitions;
                t.topic_authorized_operations = ops;
                t.unknown_tagged_fields = tags;
                t
            },
        );
    (
        when(v >= 3, any::<i32>(), 0),
        prop::collection::vec(broker, 0..4),
        when(v >= 2, opt_text(), None),
        when(v >= 1, any::<i32>(), -1),
        prop::collection::vec(topic, 0..3),
        when((8..=10).contains(&v), any::<i32>(), i32::MIN),
        when(v >= 13, any::<i16>(), 0),
        unknown_tags(flex, 0),
    )
        .prop_map(
            |(throttle, brokers, cluster_id, controller, topics, cluster_ops, error_code, tags)| {
                let mut r = kp::MetadataResponse::default();
                r.throttle_time_ms = throttle;
                r.brokers = brokers;
                r.cluster_id = cluster_id.map(|c| ks(&c));
                r.controller_id = kp::BrokerId(controller);
                r.topics = topics;
                r.cluster_authorized_operations = cluster_ops;
                r.error_code = error_code;
                r.unknown_tagged_fields = tags;
                r
            },
        )
}

// What our codec must make of each of them

fn expect_metadata_request(m: &kp::MetadataRequest) -> md::MetadataRequest {
    md::MetadataRequest {
        topics: m.topics.as_ref().map(|ts| {
            ts.iter()
                .map(|t| md::MetadataRequestTopic {
                    topic_id: *t.topic_id.as_bytes(),
                    name: t.name.as_ref().map(|n| st(&n.0)),
                    tagged_fields: tagged(&t.unknown_tagged_fields),
                })
                .collect()
        }),
        allow_auto_topic_creation: m.allow_auto_topic_creation,
        include_cluster_authorized_operations: m.include_cluster_authorized_operations,
        include_topic_authorized_operations: m.include_topic_authorized_operations,
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_metadata_response(m: &kp::MetadataResponse, v: i16) -> md::MetadataResponse {
    md::MetadataResponse {
        throttle_time_ms: m.throttle_time_ms,
        brokers: m
            .brokers
            .iter()
            .map(|b| md::MetadataBroker {
                node_id: b.node_id.0,
                host: st(&b.host),
                port: b.port,
                rack: ost(&b.rack),
                tagged_fields: tagged(&b.unknown_tagged_fields),
            })
            .collect(),
        cluster_id: ost(&m.cluster_id),
        controller_id: m.controller_id.0,
        topics: m
            .topics
            .iter()
            .map(|t| md::MetadataTopic {
                error_code: t.error_code,
                // Below v12 the name is never null; kafka-protocol's default
                // topic name is "" (which we write as such).
                name: t.name.as_ref().map(|n| st(&n.0)),
                topic_id: *t.topic_id.as_bytes(),
                is_internal: t.is_internal,
                partitions: t
                    .partitions
                    .iter()
                    .map(|p| md::MetadataPartition {
                        error_code: p.error_code,
                        partition_index: p.partition_index,
                        leader_id: p.leader_id.0,
                        leader_epoch: p.leader_epoch,
                        replica_nodes: p.replica_nodes.iter().map(|b| b.0).collect(),
                        isr_nodes: p.isr_nodes.iter().map(|b| b.0).collect(),
                        offline_replicas: p.offline_replicas.iter().map(|b| b.0).collect(),
                        tagged_fields: tagged(&p.unknown_tagged_fields),
                    })
                    .collect(),
                topic_authorized_operations: t.topic_authorized_operations,
                tagged_fields: tagged(&t.unknown_tagged_fields),
            })
            .collect(),
        cluster_authorized_operations: m.cluster_authorized_operations,
        error_code: if v >= 13 { m.error_code } else { 0 },
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

// Our parser under the signature of `cross_check`

pub(crate) fn parse_metadata_request(b: &Bytes, v: i16) -> Result<md::MetadataRequest, CodecError> {
    md::parse_metadata_request(b, v)
}

pub(crate) fn parse_metadata_response(
    b: &Bytes,
    v: i16,
) -> Result<md::MetadataResponse, CodecError> {
    md::parse_metadata_response(b, v)
}

// Round trips against kafka-protocol

#[test]
fn metadata_requests_v0_to_v13_match_kafka_protocol() {
    for_each_version(0..=13, CASES, metadata_request, |v, m| {
        cross_check(
            v,
            &m,
            &expect_metadata_request(&m),
            parse_metadata_request,
            md::encode_metadata_request,
        )
        .map(drop)
    });
}

#[test]
fn metadata_responses_v0_to_v13_match_kafka_protocol() {
    for_each_version(0..=13, CASES, metadata_response, |v, m| {
        cross_check(
            v,
            &m,
            &expect_metadata_response(&m, v),
            parse_metadata_response,
            md::encode_metadata_response,
        )
        .map(drop)
    });
}
