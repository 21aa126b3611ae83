//! kafka-dedup-proxy: a transparent, deduplicating proxy in front of a real
//! Apache Kafka cluster.
//!
//! * [`config`]: flags and environment variables, validated at start-up.
//! * [`dedup`]: the shared dedup cache and the per-request dedup decisions.
//! * [`proxy`]: listeners, connections, response ordering, endpoint rewriting.
//! * [`metrics`]: metric names and descriptions.
//! * [`store`]: the dedup store shared by replicas, over Redis (single
//!   node or Redis Cluster), behind `dedup::store`'s interface.
//! * [`codec`]: the nom codec for frames, headers and the messages the proxy
//!   reads or rewrites (Produce, ApiVersions, Metadata, FindCoordinator,
//!   DescribeCluster, the RecordBatch header).
#![forbid(unsafe_code)]

pub mod codec;
pub mod config;
pub mod dedup;
pub mod metrics;
pub mod proxy;
pub mod store;
