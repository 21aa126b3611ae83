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

/// The version facts of one API the proxy reads, from its JSON schemas in
/// apache/kafka `clients/src/main/resources/common/message/`. This table is
/// the one place these numbers live: message modules, header versions and
/// the ApiVersions clamp all read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiVersions {
    pub api_key: i16,
    /// `flexibleVersions`: the first version with compact encodings, tagged
    /// fields and header v2/v1. `i16::MAX` for an API that never became
    /// flexible.
    pub first_flexible: i16,
    /// Oldest version whose body this codec parses (the message module
    /// refuses older ones).
    pub min_parsed: i16,
    /// Newest version whose body this codec parses, or, for an API whose
    /// body the proxy never reads, the newest version it lets clients use.
    /// `None`: no limit (the broker's own range stands).
    pub max_version: Option<i16>,
}

const fn spec(api_key: i16, first_flexible: i16, min_parsed: i16, max: Option<i16>) -> ApiVersions {
    ApiVersions {
        api_key,
        first_flexible,
        min_parsed,
        max_version: max,
    }
}

/// Produce v3-13 (v3+ carries exactly one magic-2 batch per partition;
/// v13, KIP-516, names topics by id). Flexible from v9.
pub const PRODUCE_VERSIONS: ApiVersions = spec(PRODUCE, 9, 3, Some(13));
/// Fetch is never parsed; held below v16, whose responses carry
/// `NodeEndpoints` the proxy would have to rewrite. Flexible from v12.
pub const FETCH_VERSIONS: ApiVersions = spec(FETCH, 12, 0, Some(15));
/// Metadata v0-13. Flexible from v9.
pub const METADATA_VERSIONS: ApiVersions = spec(METADATA, 9, 0, Some(13));
/// FindCoordinator v0-6 (batched from v4). Flexible from v3.
pub const FIND_COORDINATOR_VERSIONS: ApiVersions = spec(FIND_COORDINATOR, 3, 0, Some(6));
/// SaslHandshake: never flexible; only the mechanism is read.
pub const SASL_HANDSHAKE_VERSIONS: ApiVersions = spec(SASL_HANDSHAKE, i16::MAX, 0, None);
/// ApiVersions v0-4 (v5, KIP-1242, carries ClusterId/NodeId checks the
/// proxy would have to answer for). Flexible from v3.
pub const API_VERSIONS_VERSIONS: ApiVersions = spec(API_VERSIONS, 3, 0, Some(4));
/// SaslAuthenticate: only the auth bytes and the error code are read.
/// Flexible from v2.
pub const SASL_AUTHENTICATE_VERSIONS: ApiVersions = spec(SASL_AUTHENTICATE, 2, 0, None);
/// InitProducerId: the id and epoch handed out are read. Flexible from v2.
pub const INIT_PRODUCER_ID_VERSIONS: ApiVersions = spec(INIT_PRODUCER_ID, 2, 0, None);
/// EndTxn: from v5 (KIP-890) its response carries the new epoch.
/// Flexible from v3.
pub const END_TXN_VERSIONS: ApiVersions = spec(END_TXN, 3, 0, None);
/// DescribeQuorum is never parsed; held below v2, whose responses carry
/// `Nodes.Listeners`. Flexible at every version.
pub const DESCRIBE_QUORUM_VERSIONS: ApiVersions = spec(DESCRIBE_QUORUM, 0, 0, Some(1));
/// DescribeCluster v0-2. Flexible at every version.
pub const DESCRIBE_CLUSTER_VERSIONS: ApiVersions = spec(DESCRIBE_CLUSTER, 0, 0, Some(2));

/// Every API the proxy reads beyond the fixed header prefix.
pub const KNOWN: [ApiVersions; 11] = [
    PRODUCE_VERSIONS,
    FETCH_VERSIONS,
    METADATA_VERSIONS,
    FIND_COORDINATOR_VERSIONS,
    SASL_HANDSHAKE_VERSIONS,
    API_VERSIONS_VERSIONS,
    SASL_AUTHENTICATE_VERSIONS,
    INIT_PRODUCER_ID_VERSIONS,
    END_TXN_VERSIONS,
    DESCRIBE_QUORUM_VERSIONS,
    DESCRIBE_CLUSTER_VERSIONS,
];

/// The version facts of an API the proxy reads, `None` for any other.
pub fn versions_of(api_key: i16) -> Option<&'static ApiVersions> {
    KNOWN.iter().find(|a| a.api_key == api_key)
}

/// The first flexible version of the APIs whose headers or bodies the proxy
/// reads. `None` for an API we never parse beyond the fixed header prefix.
pub fn first_flexible_version(api_key: i16) -> Option<i16> {
    versions_of(api_key).map(|a| a.first_flexible)
}

/// Whether `version` of `api_key` uses the flexible encodings (`false` for
/// an API the proxy does not know).
pub fn is_flexible(api_key: i16, version: i16) -> bool {
    first_flexible_version(api_key).is_some_and(|v| version >= v)
}

/// The highest version of each API whose *response* the proxy rewrites or
/// reads, so ApiVersions is clamped to it and a newer broker never speaks a
/// version we cannot parse.
pub fn max_supported_version(api_key: i16) -> Option<i16> {
    versions_of(api_key).and_then(|a| a.max_version)
}

/// APIs removed from the ApiVersions answer altogether: their responses carry
/// broker endpoints (ShareFetch/ShareAcknowledge `NodeEndpoints`) at every
/// version, and the proxy does not rewrite them yet.
pub fn is_hidden_api(api_key: i16) -> bool {
    matches!(api_key, SHARE_FETCH | SHARE_ACKNOWLEDGE)
}

/// Refuses a version outside what the codec parses for `v`'s API.
pub fn check_parsed_version(v: &ApiVersions, version: i16) -> Result<(), crate::codec::CodecError> {
    let max = v.max_version.unwrap_or(i16::MAX);
    if (v.min_parsed..=max).contains(&version) {
        Ok(())
    } else {
        Err(crate::codec::CodecError::UnsupportedVersion {
            api_key: v.api_key,
            version,
        })
    }
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

    #[test]
    fn every_known_api_appears_once_with_a_sane_range() {
        for (i, a) in KNOWN.iter().enumerate() {
            assert!(KNOWN[i + 1..].iter().all(|b| b.api_key != a.api_key));
            assert!(a.max_version.is_none_or(|m| m >= a.min_parsed));
            assert_eq!(versions_of(a.api_key), Some(a));
        }
        assert!(is_flexible(PRODUCE, 9) && !is_flexible(PRODUCE, 8));
        assert!(!is_flexible(SASL_HANDSHAKE, 1));
        assert!(!is_flexible(42, 100));
        assert!(check_parsed_version(&PRODUCE_VERSIONS, 2).is_err());
        assert!(check_parsed_version(&PRODUCE_VERSIONS, 13).is_ok());
        assert!(check_parsed_version(&PRODUCE_VERSIONS, 14).is_err());
    }
}
