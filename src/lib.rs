//! kafka-dedup-proxy: a transparent, deduplicating proxy in front of a real
//! Apache Kafka cluster.
//!
//! * [`codec`]: the nom codec for frames, headers and the messages the proxy
//!   reads or rewrites (Produce, ApiVersions, Metadata, FindCoordinator,
//!   DescribeCluster, the RecordBatch header).
#![forbid(unsafe_code)]

pub mod codec;
