//! Produce (API key 0), v3-13: requests carry one real RecordBatch per
//! partition; responses carry the current leader and NodeEndpoints (v10+).

use super::*;

// Strategies for kafka-protocol values

pub(crate) fn produce_request(v: i16) -> impl Strategy<Value = kp::ProduceRequest> {
    let flex = v >= 9;
    let partition = (
        any::<i32>(),
        prop::option::weighted(0.9, batch_spec().prop_map(|b| b.encode())),
        unknown_tags(flex, 0),
    )
        .prop_map(|(index, records, tags)| {
            let mut p = kp::produce_request::PartitionProduceData::default();
            p.index = index;
            p.records = records;
            p.unknown_tagged_fields = tags;
            p
        });
    let topic = (
        name(),
        uuid(),
        prop::collection::vec(partition, 0..3),
        unknown_tags(flex, 0),
    )
        .prop_map(move |(n, id, partitions, tags)| {
            let mut t = kp::produce_request::TopicProduceData::default();
            if v >= 13 {
                t.topic_id = id;
            } else {
                t.name = kp::TopicName(ks(&n));
            }
            t.partition_data = partitions;
            t.unknown_tagged_fields = tags;
            t
        });
    (
        opt_text(),
        acks(),
        any::<i32>(),
        prop::collection::vec(topic, 0..3),
        unknown_tags(flex, 0),
    )
        .prop_map(|(txn, acks, timeout_ms, topics, tags)| {
            let mut r = kp::ProduceRequest::default();
            r.transactional_id = txn.map(|t| kp::TransactionalId(ks(&t)));
            r.acks = acks;
            r.timeout_ms = timeout_ms;
            r.topic_data = topics;
            r.unknown_tagged_fields = tags;
            r
        })
}

pub(crate) fn produce_response(v: i16) -> impl Strategy<Value = kp::ProduceResponse> {
    let flex = v >= 9;
    let record_error = (any::<i32>(), opt_text(), unknown_tags(flex, 0)).prop_map(|(i, m, t)| {
        let mut e = kp::produce_response::BatchIndexAndErrorMessage::default();
        e.batch_index = i;
        e.batch_index_error_message = m.map(|m| ks(&m));
        e.unknown_tagged_fields = t;
        e
    });
    let leader = prop::option::of((any::<i32>(), any::<i32>(), unknown_tags(true, 0)));
    let partition = (
        (any::<i32>(), any::<i16>(), any::<i64>(), any::<i64>()),
        when(v >= 5, any::<i64>(), -1),
        when(
            v >= 8,
            prop::collection::vec(record_error, 0..3),
            Vec::new(),
        ),
        when(v >= 8, opt_text(), None),
        when(v >= 10, leader, None),
        unknown_tags(flex, 1),
    )
        .prop_map(
            |((index, error_code, base_offset, append_time), start, errors, msg, leader, tags)| {
                let mut p = kp::produce_response::PartitionProduceResponse::default();
                p.index = index;
                p.error_code = error_code;
                p.base_offset = base_offset;
                p.log_append_time_ms = append_time;
                p.log_start_offset = start;
                p.record_errors = errors;
                p.error_message = msg.map(|m| ks(&m));
                if let Some((id, epoch, t)) = leader {
                    p.current_leader.leader_id = kp::BrokerId(id);
                    p.current_leader.leader_epoch = epoch;
                    p.current_leader.unknown_tagged_fields = t;
                }
                p.unknown_tagged_fields = tags;
                p
            },
        );
    let topic = (
        name(),
        uuid(),
        prop::collection::vec(partition, 0..3),
        unknown_tags(flex, 0),
    )
        .prop_map(move |(n, id, partitions, tags)| {
            let mut t = kp::produce_response::TopicProduceResponse::default();
            if v >= 13 {
                t.topic_id = id;
            } else {
                t.name = kp::TopicName(ks(&n));
            }
            t.partition_responses = partitions;
            t.unknown_tagged_fields = tags;
            t
        });
    let endpoint = (
        any::<i32>(),
        text(),
        any::<i32>(),
        opt_text(),
        unknown_tags(true, 0),
    )
        .prop_map(|(id, host, port, rack, tags)| {
            let mut e = kp::produce_response::NodeEndpoint::default();
            e.node_id = kp::BrokerId(id);
            e.host = ks(&host);
            e.port = port;
            e.rack = rack.map(|r| ks(&r));
            e.unknown_tagged_fields = tags;
            e
        });
    (
        prop::collection::vec(topic, 0..3),
        any::<i32>(),
        when(v >= 10, prop::collection::vec(endpoint, 0..3), Vec::new()),
        unknown_tags(flex, 1),
    )
        .prop_map(|(responses, throttle, endpoints, tags)| {
            let mut r = kp::ProduceResponse::default();
            r.responses = responses;
            r.throttle_time_ms = throttle;
            r.node_endpoints = endpoints;
            r.unknown_tagged_fields = tags;
            r
        })
}

// What our codec must make of each of them

fn topic_ref(name: &kp::TopicName, id: &Uuid, v: i16) -> pr::TopicRef {
    if v >= 13 {
        pr::TopicRef::Id(*id.as_bytes())
    } else {
        pr::TopicRef::Name(st(&name.0))
    }
}

fn expect_produce_request(m: &kp::ProduceRequest, v: i16) -> pr::ProduceRequest {
    pr::ProduceRequest {
        transactional_id: m.transactional_id.as_ref().map(|t| st(&t.0)),
        acks: m.acks,
        timeout_ms: m.timeout_ms,
        topics: m
            .topic_data
            .iter()
            .map(|t| pr::TopicProduceData {
                topic: topic_ref(&t.name, &t.topic_id, v),
                partitions: t
                    .partition_data
                    .iter()
                    .map(|p| pr::PartitionProduceData {
                        index: p.index,
                        records: p.records.clone(),
                        tagged_fields: tagged(&p.unknown_tagged_fields),
                    })
                    .collect(),
                tagged_fields: tagged(&t.unknown_tagged_fields),
            })
            .collect(),
        tagged_fields: tagged(&m.unknown_tagged_fields),
    }
}

fn expect_node_endpoints(m: &kp::ProduceResponse) -> Vec<pr::NodeEndpoint> {
    m.node_endpoints
        .iter()
        .map(|e| pr::NodeEndpoint {
            node_id: e.node_id.0,
            host: st(&e.host),
            port: e.port,
            rack: ost(&e.rack),
            tagged_fields: tagged(&e.unknown_tagged_fields),
        })
        .collect()
}

fn expect_produce_response(m: &kp::ProduceResponse, v: i16) -> pr::ProduceResponse {
    let flex = v >= 9;
    let partition = |p: &kp::produce_response::PartitionProduceResponse| {
        let mut known = Vec::new();
        if v >= 10 && p.current_leader != Default::default() {
            known.push((0, kp_encode(&p.current_leader, v)));
        }
        pr::PartitionProduceResponse {
            index: p.index,
            error_code: p.error_code,
            base_offset: p.base_offset,
            log_append_time_ms: p.log_append_time_ms,
            log_start_offset: if v >= 5 { p.log_start_offset } else { -1 },
            record_errors: p
                .record_errors
                .iter()
                .map(|e| pr::BatchIndexAndErrorMessage {
                    batch_index: e.batch_index,
                    batch_index_error_message: ost(&e.batch_index_error_message),
                    tagged_fields: tagged(&e.unknown_tagged_fields),
                })
                .collect(),
            error_message: ost(&p.error_message),
            tagged_fields: if flex {
                tagged_with(known, &p.unknown_tagged_fields)
            } else {
                TaggedFields::default()
            },
        }
    };
    let mut known = Vec::new();
    if v >= 10 && !m.node_endpoints.is_empty() {
        known.push((
            pr::NODE_ENDPOINTS_TAG,
            kp_compact_array(&m.node_endpoints, v),
        ));
    }
    pr::ProduceResponse {
        responses: m
            .responses
            .iter()
            .map(|t| pr::TopicProduceResponse {
                topic: topic_ref(&t.name, &t.topic_id, v),
                partitions: t.partition_responses.iter().map(partition).collect(),
                tagged_fields: tagged(&t.unknown_tagged_fields),
            })
            .collect(),
        throttle_time_ms: m.throttle_time_ms,
        tagged_fields: tagged_with(known, &m.unknown_tagged_fields),
    }
}

// Our parser under the signature of `cross_check`

pub(crate) fn parse_produce_request(b: &Bytes, v: i16) -> Result<pr::ProduceRequest, CodecError> {
    pr::parse_produce_request(b, v)
}

pub(crate) fn parse_produce_response(b: &Bytes, v: i16) -> Result<pr::ProduceResponse, CodecError> {
    pr::parse_produce_response(b, v)
}

// Round trips against kafka-protocol

#[test]
fn produce_requests_v3_to_v13_match_kafka_protocol_field_by_field_and_byte_for_byte() {
    for_each_version(3..=13, CASES, produce_request, |v, m| {
        let parsed = cross_check(
            v,
            &m,
            &expect_produce_request(&m, v),
            parse_produce_request,
            pr::encode_produce_request,
        )?;
        // Each partition's records are one real batch, as the proxy reads it.
        for (t, theirs) in parsed.topics.iter().zip(&m.topic_data) {
            for (p, their_p) in t.partitions.iter().zip(&theirs.partition_data) {
                let Some(records) = &p.records else { continue };
                let h = rb::parse_single_batch(records)
                    .map_err(|e| TestCaseError::fail(format!("batch refused: {e}")))?;
                let mut buf = their_p.records.clone().unwrap();
                let info = RecordBatchDecoder::decode_batch_info(&mut buf)
                    .map_err(|e| TestCaseError::fail(format!("kafka-protocol: {e}")))?;
                prop_assert_eq!(info.len(), 1);
                let info = &info[0];
                prop_assert_eq!(h.producer_id, info.producer_id);
                prop_assert_eq!(h.producer_epoch, info.producer_epoch);
                prop_assert_eq!(h.base_sequence, info.base_sequence);
                prop_assert_eq!(h.records_count, info.record_count);
                prop_assert_eq!(h.is_transactional(), info.transactional);
                prop_assert_eq!(h.partition_leader_epoch, info.partition_leader_epoch);
            }
        }
        Ok(())
    });
}

#[test]
fn produce_responses_v3_to_v13_match_kafka_protocol_including_current_leader_and_node_endpoints() {
    for_each_version(3..=13, CASES, produce_response, |v, m| {
        let parsed = cross_check(
            v,
            &m,
            &expect_produce_response(&m, v),
            parse_produce_response,
            pr::encode_produce_response,
        )?;
        // NodeEndpoints (tag 0, v10+) decodes field by field and re-encodes
        // to the very bytes kafka-protocol wrote.
        match parsed.tagged_fields.get(pr::NODE_ENDPOINTS_TAG) {
            Some(raw) => {
                prop_assert!(v >= 10);
                let endpoints = pr::parse_node_endpoints(raw)
                    .map_err(|e| TestCaseError::fail(format!("NodeEndpoints: {e}")))?;
                prop_assert_eq!(&endpoints, &expect_node_endpoints(&m));
                prop_assert_eq!(&pr::encode_node_endpoints(&endpoints)[..], &raw[..]);
            }
            None => prop_assert!(m.node_endpoints.is_empty()),
        }
        Ok(())
    });
}
