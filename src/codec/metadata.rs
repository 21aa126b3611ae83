//! MetadataRequest and MetadataResponse, versions 0-13
//! (`MetadataRequest.json`, `MetadataResponse.json`; flexible from v9).
//! The proxy rewrites `brokers` and learns topic id → name (v10+).

use bytes::{BufMut, BytesMut};

use super::api::{METADATA_VERSIONS, check_parsed_version};
use super::error::CodecError;
use super::primitives::*;

pub const MAX_VERSION: i16 = match METADATA_VERSIONS.max_version {
    Some(v) => v,
    None => i16::MAX,
};
const FIRST_FLEXIBLE: i16 = METADATA_VERSIONS.first_flexible;

fn check_version(version: i16) -> Result<(), CodecError> {
    check_parsed_version(&METADATA_VERSIONS, version)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequestTopic {
    /// v10+.
    pub topic_id: [u8; 16],
    /// Nullable from v10.
    pub name: Option<String>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataRequest {
    /// `None` (v1+) asks for every topic; in v0 an empty array does.
    pub topics: Option<Vec<MetadataRequestTopic>>,
    /// v4+.
    pub allow_auto_topic_creation: bool,
    /// v8-10.
    pub include_cluster_authorized_operations: bool,
    /// v8+.
    pub include_topic_authorized_operations: bool,
    pub tagged_fields: TaggedFields,
}

pub fn parse_metadata_request(body: &[u8], version: i16) -> Result<MetadataRequest, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    let topic = |i| -> PResult<'_, MetadataRequestTopic> {
        let (i, topic_id) = if version >= 10 {
            parse_uuid(i)?
        } else {
            (i, [0; 16])
        };
        let (i, name) = parse_nullable_string(i, flex)?;
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            MetadataRequestTopic {
                topic_id,
                name,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::REQUEST, |i| {
        let (i, topics) = parse_nullable_array(i, flex, topic)?;
        let (i, allow_auto_topic_creation) = if version >= 4 {
            parse_bool(i)?
        } else {
            (i, true)
        };
        let (i, include_cluster_authorized_operations) = if (8..=10).contains(&version) {
            parse_bool(i)?
        } else {
            (i, false)
        };
        let (i, include_topic_authorized_operations) = if version >= 8 {
            parse_bool(i)?
        } else {
            (i, false)
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            MetadataRequest {
                topics,
                allow_auto_topic_creation,
                include_cluster_authorized_operations,
                include_topic_authorized_operations,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_metadata_request(buf: &mut BytesMut, r: &MetadataRequest, version: i16) {
    let flex = version >= FIRST_FLEXIBLE;
    put_array_len(buf, r.topics.as_ref().map(Vec::len), flex);
    for t in r.topics.iter().flatten() {
        if version >= 10 {
            buf.put_slice(&t.topic_id);
        }
        put_nullable_string(buf, t.name.as_deref(), flex);
        put_tagged_if(buf, &t.tagged_fields, flex);
    }
    if version >= 4 {
        put_bool(buf, r.allow_auto_topic_creation);
    }
    if (8..=10).contains(&version) {
        put_bool(buf, r.include_cluster_authorized_operations);
    }
    if version >= 8 {
        put_bool(buf, r.include_topic_authorized_operations);
    }
    put_tagged_if(buf, &r.tagged_fields, flex);
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataBroker {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    /// v1+.
    pub rack: Option<String>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataPartition {
    pub error_code: i16,
    pub partition_index: i32,
    pub leader_id: i32,
    /// v7+.
    pub leader_epoch: i32,
    pub replica_nodes: Vec<i32>,
    pub isr_nodes: Vec<i32>,
    /// v5+.
    pub offline_replicas: Vec<i32>,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataTopic {
    pub error_code: i16,
    /// Nullable from v12 (topics looked up by id).
    pub name: Option<String>,
    /// v10+.
    pub topic_id: [u8; 16],
    /// v1+.
    pub is_internal: bool,
    pub partitions: Vec<MetadataPartition>,
    /// v8+.
    pub topic_authorized_operations: i32,
    pub tagged_fields: TaggedFields,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataResponse {
    /// v3+.
    pub throttle_time_ms: i32,
    pub brokers: Vec<MetadataBroker>,
    /// v2+.
    pub cluster_id: Option<String>,
    /// v1+.
    pub controller_id: i32,
    pub topics: Vec<MetadataTopic>,
    /// v8-10.
    pub cluster_authorized_operations: i32,
    /// v13+.
    pub error_code: i16,
    pub tagged_fields: TaggedFields,
}

fn parse_i32_array(i: &[u8], flex: bool) -> PResult<'_, Vec<i32>> {
    parse_array(i, flex, parse_i32)
}

fn put_i32_array(buf: &mut BytesMut, v: &[i32], flex: bool) {
    put_array_len(buf, Some(v.len()), flex);
    for x in v {
        buf.put_i32(*x);
    }
}

pub fn parse_metadata_response(body: &[u8], version: i16) -> Result<MetadataResponse, CodecError> {
    check_version(version)?;
    let flex = version >= FIRST_FLEXIBLE;
    let broker = |i| -> PResult<'_, MetadataBroker> {
        let (i, node_id) = parse_i32(i)?;
        let (i, host) = parse_string(i, flex)?;
        let (i, port) = parse_i32(i)?;
        let (i, rack) = if version >= 1 {
            parse_nullable_string(i, flex)?
        } else {
            (i, None)
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            MetadataBroker {
                node_id,
                host,
                port,
                rack,
                tagged_fields,
            },
        ))
    };
    let partition = |i| -> PResult<'_, MetadataPartition> {
        let (i, error_code) = parse_i16(i)?;
        let (i, partition_index) = parse_i32(i)?;
        let (i, leader_id) = parse_i32(i)?;
        let (i, leader_epoch) = if version >= 7 { parse_i32(i)? } else { (i, -1) };
        let (i, replica_nodes) = parse_i32_array(i, flex)?;
        let (i, isr_nodes) = parse_i32_array(i, flex)?;
        let (i, offline_replicas) = if version >= 5 {
            parse_i32_array(i, flex)?
        } else {
            (i, Vec::new())
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            MetadataPartition {
                error_code,
                partition_index,
                leader_id,
                leader_epoch,
                replica_nodes,
                isr_nodes,
                offline_replicas,
                tagged_fields,
            },
        ))
    };
    let topic = |i| -> PResult<'_, MetadataTopic> {
        let (i, error_code) = parse_i16(i)?;
        let (i, name) = parse_nullable_string(i, flex)?;
        let (i, topic_id) = if version >= 10 {
            parse_uuid(i)?
        } else {
            (i, [0; 16])
        };
        let (i, is_internal) = if version >= 1 {
            parse_bool(i)?
        } else {
            (i, false)
        };
        let (i, partitions) = parse_array(i, flex, partition)?;
        let (i, topic_authorized_operations) = if version >= 8 {
            parse_i32(i)?
        } else {
            (i, i32::MIN)
        };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            MetadataTopic {
                error_code,
                name,
                topic_id,
                is_internal,
                partitions,
                topic_authorized_operations,
                tagged_fields,
            },
        ))
    };
    parse_all(body, DecodeBudget::RESPONSE, |i| {
        let (i, throttle_time_ms) = if version >= 3 { parse_i32(i)? } else { (i, 0) };
        let (i, brokers) = parse_array(i, flex, broker)?;
        let (i, cluster_id) = if version >= 2 {
            parse_nullable_string(i, flex)?
        } else {
            (i, None)
        };
        let (i, controller_id) = if version >= 1 { parse_i32(i)? } else { (i, -1) };
        let (i, topics) = parse_array(i, flex, topic)?;
        let (i, cluster_authorized_operations) = if (8..=10).contains(&version) {
            parse_i32(i)?
        } else {
            (i, i32::MIN)
        };
        let (i, error_code) = if version >= 13 { parse_i16(i)? } else { (i, 0) };
        let (i, tagged_fields) = parse_tagged_if(i, flex)?;
        Ok((
            i,
            MetadataResponse {
                throttle_time_ms,
                brokers,
                cluster_id,
                controller_id,
                topics,
                cluster_authorized_operations,
                error_code,
                tagged_fields,
            },
        ))
    })
}

pub fn encode_metadata_response(buf: &mut BytesMut, r: &MetadataResponse, version: i16) {
    let flex = version >= FIRST_FLEXIBLE;
    if version >= 3 {
        buf.put_i32(r.throttle_time_ms);
    }
    put_array_len(buf, Some(r.brokers.len()), flex);
    for b in &r.brokers {
        buf.put_i32(b.node_id);
        put_string(buf, &b.host, flex);
        buf.put_i32(b.port);
        if version >= 1 {
            put_nullable_string(buf, b.rack.as_deref(), flex);
        }
        put_tagged_if(buf, &b.tagged_fields, flex);
    }
    if version >= 2 {
        put_nullable_string(buf, r.cluster_id.as_deref(), flex);
    }
    if version >= 1 {
        buf.put_i32(r.controller_id);
    }
    put_array_len(buf, Some(r.topics.len()), flex);
    for t in &r.topics {
        buf.put_i16(t.error_code);
        put_nullable_string(buf, t.name.as_deref(), flex);
        if version >= 10 {
            buf.put_slice(&t.topic_id);
        }
        if version >= 1 {
            put_bool(buf, t.is_internal);
        }
        put_array_len(buf, Some(t.partitions.len()), flex);
        for p in &t.partitions {
            buf.put_i16(p.error_code);
            buf.put_i32(p.partition_index);
            buf.put_i32(p.leader_id);
            if version >= 7 {
                buf.put_i32(p.leader_epoch);
            }
            put_i32_array(buf, &p.replica_nodes, flex);
            put_i32_array(buf, &p.isr_nodes, flex);
            if version >= 5 {
                put_i32_array(buf, &p.offline_replicas, flex);
            }
            put_tagged_if(buf, &p.tagged_fields, flex);
        }
        if version >= 8 {
            buf.put_i32(t.topic_authorized_operations);
        }
        put_tagged_if(buf, &t.tagged_fields, flex);
    }
    if (8..=10).contains(&version) {
        buf.put_i32(r.cluster_authorized_operations);
    }
    if version >= 13 {
        buf.put_i16(r.error_code);
    }
    put_tagged_if(buf, &r.tagged_fields, flex);
}
