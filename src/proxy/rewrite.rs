//! Response rewrites, without I/O: broker endpoints replaced by the
//! proxy's advertised address for the same node id, and ApiVersions
//! clamped to what the proxy can parse.
//!
//! `advertise(node_id)` gives the (host, port) clients must use for a node.

use crate::codec::api::{is_hidden_api, max_supported_version};
use crate::codec::api_versions::ApiVersionsResponse;
use crate::codec::describe_cluster::DescribeClusterResponse;
use crate::codec::find_coordinator::FindCoordinatorResponse;
use crate::codec::metadata::MetadataResponse;
use crate::codec::produce::NodeEndpoint;

pub trait Advertise {
    fn advertise(&self, node_id: i32) -> (String, i32);
}

impl<F: Fn(i32) -> (String, i32)> Advertise for F {
    fn advertise(&self, node_id: i32) -> (String, i32) {
        self(node_id)
    }
}

pub fn rewrite_metadata(resp: &mut MetadataResponse, a: &impl Advertise) {
    for b in &mut resp.brokers {
        (b.host, b.port) = a.advertise(b.node_id);
    }
}

/// v0-3 carry one coordinator, v4+ a list. A coordinator with an error
/// (node id -1, empty host) names no broker and is left as it is.
pub fn rewrite_find_coordinator(resp: &mut FindCoordinatorResponse, a: &impl Advertise) {
    if resp.node_id >= 0 && !resp.host.is_empty() {
        (resp.host, resp.port) = a.advertise(resp.node_id);
    }
    for c in &mut resp.coordinators {
        if c.node_id >= 0 && !c.host.is_empty() {
            (c.host, c.port) = a.advertise(c.node_id);
        }
    }
}

pub fn rewrite_describe_cluster(resp: &mut DescribeClusterResponse, a: &impl Advertise) {
    for b in &mut resp.brokers {
        (b.host, b.port) = a.advertise(b.broker_id);
    }
}

pub fn rewrite_node_endpoints(endpoints: &mut [NodeEndpoint], a: &impl Advertise) {
    for e in endpoints {
        (e.host, e.port) = a.advertise(e.node_id);
    }
}

/// Lowers the max version of every API whose responses the proxy reads or
/// rewrites to the newest it understands, and drops the APIs it cannot
/// make safe. Keeps the broker's min versions (older librdkafka breaks if
/// Produce's min changes, KAFKA-18659) and every tagged field (finalized
/// features switch client behaviour). Returns whether anything changed.
pub fn clamp_api_versions(resp: &mut ApiVersionsResponse) -> bool {
    let before = resp.api_keys.len();
    resp.api_keys.retain(|a| !is_hidden_api(a.api_key));
    let mut changed = resp.api_keys.len() != before;
    for a in &mut resp.api_keys {
        if let Some(max) = max_supported_version(a.api_key)
            && a.max_version > max
        {
            a.max_version = max.max(a.min_version);
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::api::{API_VERSIONS, FETCH, PRODUCE, SHARE_FETCH};
    use crate::codec::api_versions::ApiVersion;
    use crate::codec::find_coordinator::Coordinator;
    use crate::codec::metadata::MetadataBroker;
    use crate::codec::primitives::TaggedFields;
    use bytes::Bytes;

    fn adv(id: i32) -> (String, i32) {
        ("proxy".to_string(), 19000 + id)
    }

    fn api(k: i16, min: i16, max: i16) -> ApiVersion {
        ApiVersion {
            api_key: k,
            min_version: min,
            max_version: max,
            tagged_fields: TaggedFields::default(),
        }
    }

    #[test]
    fn metadata_brokers_get_proxy_addresses() {
        let mut r = MetadataResponse {
            throttle_time_ms: 0,
            brokers: vec![MetadataBroker {
                node_id: 2,
                host: "10.0.0.5".into(),
                port: 9092,
                rack: Some("r1".into()),
                tagged_fields: TaggedFields::default(),
            }],
            cluster_id: None,
            controller_id: 2,
            topics: vec![],
            cluster_authorized_operations: 0,
            error_code: 0,
            tagged_fields: TaggedFields::default(),
        };
        rewrite_metadata(&mut r, &adv);
        assert_eq!(
            (r.brokers[0].host.as_str(), r.brokers[0].port),
            ("proxy", 19002)
        );
        assert_eq!(r.brokers[0].rack.as_deref(), Some("r1"));
    }

    #[test]
    fn batched_coordinators_are_rewritten_but_errors_are_kept() {
        let c = |id: i32, host: &str| Coordinator {
            key: "g".into(),
            node_id: id,
            host: host.into(),
            port: 9092,
            error_code: if id < 0 { 15 } else { 0 },
            error_message: None,
            tagged_fields: TaggedFields::default(),
        };
        let mut r = FindCoordinatorResponse {
            throttle_time_ms: 0,
            error_code: 0,
            error_message: None,
            node_id: -1,
            host: String::new(),
            port: -1,
            coordinators: vec![c(1, "kafka-1"), c(-1, "")],
            tagged_fields: TaggedFields::default(),
        };
        rewrite_find_coordinator(&mut r, &adv);
        assert_eq!(r.coordinators[0].host, "proxy");
        assert_eq!(r.coordinators[0].port, 19001);
        assert_eq!(r.coordinators[1].host, "");
        assert_eq!(r.coordinators[1].port, 9092);
    }

    #[test]
    fn api_versions_clamp_keeps_minimums_and_tagged_fields() {
        let mut tagged = TaggedFields::default();
        tagged.set(2, Bytes::from_static(b"\x02finalized"));
        let mut r = ApiVersionsResponse {
            error_code: 0,
            api_keys: vec![
                api(PRODUCE, 0, 13),
                api(FETCH, 4, 18),
                api(API_VERSIONS, 0, 5),
                api(SHARE_FETCH, 0, 1),
                api(22, 0, 6),
            ],
            throttle_time_ms: 0,
            tagged_fields: tagged.clone(),
        };
        assert!(clamp_api_versions(&mut r));
        let got: Vec<_> = r
            .api_keys
            .iter()
            .map(|a| (a.api_key, a.min_version, a.max_version))
            .collect();
        assert_eq!(
            got,
            vec![
                (PRODUCE, 0, 13),
                (FETCH, 4, 15),
                (API_VERSIONS, 0, 4),
                (22, 0, 6)
            ]
        );
        assert_eq!(r.tagged_fields, tagged);
        assert!(!clamp_api_versions(&mut r));
    }
}
