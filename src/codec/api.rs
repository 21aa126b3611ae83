//! API keys, their names (bounded metric labels) and the versions this
//! codec implements.

/// Produce (ProduceRequest.json / ProduceResponse.json).
pub const PRODUCE: i16 = 0;
pub const FETCH: i16 = 1;
pub const METADATA: i16 = 3;
pub const FIND_COORDINATOR: i16 = 10;
pub const SASL_HANDSHAKE: i16 = 17;
pub const INIT_PRODUCER_ID: i16 = 22;
pub const END_TXN: i16 = 26;
pub const API_VERSIONS: i16 = 18;
pub const SASL_AUTHENTICATE: i16 = 36;
pub const DESCRIBE_QUORUM: i16 = 55;
pub const DESCRIBE_CLUSTER: i16 = 60;
pub const SHARE_FETCH: i16 = 78;
pub const SHARE_ACKNOWLEDGE: i16 = 79;

const NAMES: [&str; 93] = [
    "produce",
    "fetch",
    "list_offsets",
    "metadata",
    "leader_and_isr",
    "stop_replica",
    "update_metadata",
    "controlled_shutdown",
    "offset_commit",
    "offset_fetch",
    "find_coordinator",
    "join_group",
    "heartbeat",
    "leave_group",
    "sync_group",
    "describe_groups",
    "list_groups",
    "sasl_handshake",
    "api_versions",
    "create_topics",
    "delete_topics",
    "delete_records",
    "init_producer_id",
    "offset_for_leader_epoch",
    "add_partitions_to_txn",
    "add_offsets_to_txn",
    "end_txn",
    "write_txn_markers",
    "txn_offset_commit",
    "describe_acls",
    "create_acls",
    "delete_acls",
    "describe_configs",
    "alter_configs",
    "alter_replica_log_dirs",
    "describe_log_dirs",
    "sasl_authenticate",
    "create_partitions",
    "create_delegation_token",
    "renew_delegation_token",
    "expire_delegation_token",
    "describe_delegation_token",
    "delete_groups",
    "elect_leaders",
    "incremental_alter_configs",
    "alter_partition_reassignments",
    "list_partition_reassignments",
    "offset_delete",
    "describe_client_quotas",
    "alter_client_quotas",
    "describe_user_scram_credentials",
    "alter_user_scram_credentials",
    "vote",
    "begin_quorum_epoch",
    "end_quorum_epoch",
    "describe_quorum",
    "alter_partition",
    "update_features",
    "envelope",
    "fetch_snapshot",
    "describe_cluster",
    "describe_producers",
    "broker_registration",
    "broker_heartbeat",
    "unregister_broker",
    "describe_transactions",
    "list_transactions",
    "allocate_producer_ids",
    "consumer_group_heartbeat",
    "consumer_group_describe",
    "controller_registration",
    "get_telemetry_subscriptions",
    "push_telemetry",
    "assign_replicas_to_dirs",
    "list_config_resources",
    "describe_topic_partitions",
    "share_group_heartbeat",
    "share_group_describe",
    "share_fetch",
    "share_acknowledge",
    "add_raft_voter",
    "remove_raft_voter",
    "update_raft_voter",
    "initialize_share_group_state",
    "read_share_group_state",
    "write_share_group_state",
    "delete_share_group_state",
    "read_share_group_state_summary",
    "streams_group_heartbeat",
    "streams_group_describe",
    "describe_share_group_offsets",
    "alter_share_group_offsets",
    "delete_share_group_offsets",
];

/// Snake-case API name, or "unknown": a bounded label set for metrics.
pub fn api_name(api_key: i16) -> &'static str {
    usize::try_from(api_key)
        .ok()
        .and_then(|k| NAMES.get(k).copied())
        .unwrap_or("unknown")
}

/// The first flexible version of the APIs whose headers or bodies the proxy
/// reads (`flexibleVersions` in each message's JSON schema). `None` for an
/// API we never parse beyond the fixed header prefix.
pub fn first_flexible_version(api_key: i16) -> Option<i16> {
    match api_key {
        PRODUCE => Some(9),
        FETCH => Some(12),
        METADATA => Some(9),
        FIND_COORDINATOR => Some(3),
        SASL_HANDSHAKE => Some(i16::MAX),
        API_VERSIONS => Some(3),
        SASL_AUTHENTICATE => Some(2),
        INIT_PRODUCER_ID => Some(2),
        END_TXN => Some(3),
        DESCRIBE_QUORUM => Some(0),
        DESCRIBE_CLUSTER => Some(0),
        _ => None,
    }
}

/// The highest version of each API whose *response* the proxy rewrites or
/// reads, so ApiVersions is clamped to it and a newer broker never speaks a
/// version we cannot parse. Fetch is held below v16 and DescribeQuorum below
/// v2 because those versions start carrying broker endpoints
/// (`NodeEndpoints`, `Nodes.Listeners`) that we would otherwise have to
/// rewrite; ApiVersions v5 (KIP-1242) carries ClusterId/NodeId checks.
pub fn max_supported_version(api_key: i16) -> Option<i16> {
    match api_key {
        PRODUCE => Some(13),
        FETCH => Some(15),
        METADATA => Some(13),
        FIND_COORDINATOR => Some(6),
        API_VERSIONS => Some(4),
        DESCRIBE_QUORUM => Some(1),
        DESCRIBE_CLUSTER => Some(2),
        _ => None,
    }
}

/// APIs removed from the ApiVersions answer altogether: their responses carry
/// broker endpoints (ShareFetch/ShareAcknowledge `NodeEndpoints`) at every
/// version, and the proxy does not rewrite them yet.
pub fn is_hidden_api(api_key: i16) -> bool {
    matches!(api_key, SHARE_FETCH | SHARE_ACKNOWLEDGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_their_keys() {
        assert_eq!(api_name(PRODUCE), "produce");
        assert_eq!(api_name(API_VERSIONS), "api_versions");
        assert_eq!(api_name(DESCRIBE_CLUSTER), "describe_cluster");
        assert_eq!(api_name(SHARE_ACKNOWLEDGE), "share_acknowledge");
        assert_eq!(api_name(92), "delete_share_group_offsets");
        assert_eq!(api_name(93), "unknown");
        assert_eq!(api_name(-1), "unknown");
    }
}
