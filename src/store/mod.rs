//! The shared dedup store's implementations outside the process: Redis,
//! single node or Redis Cluster (`redis.rs`), behind the interface of
//! `dedup::store`. This layer owns the network, the clock (every call is
//! bounded by `--dedup-store-timeout-ms`) and the store's metrics; dedup
//! only sees answers and errors.
//!
//! What is in Redis (docs/replicas.md has sizes and TTLs):
//!
//! * `kdp:w:{S.P}:T:N`: the committed batch window of producer id `P` on
//!   partition `N` of topic `T` (a 128-bit hash of its name or id) for
//!   dedup scope `S` (a 64-bit hash of the principal), a list of at most
//!   `--dedup-window` entries `epoch,base,last,crc,offset,append_ms,start`,
//!   newest first, expiring after `--cache-idle-ttl-seconds` without writes.
//!   The hash tag `{S.P}` keeps one producer's partitions in one slot of a
//!   Redis Cluster, so one request's lookup is one command batch.
//! * `kdp:k:{K}:I`: idempotency key `I` (the 128-bit hash dedup keys it
//!   by) of key space `K` (a 64-bit hash of ⟨scope, topic⟩): `f:R:N`
//!   while replica `R`'s claim `N` holds it (30 s at most), then
//!   `c:PARTITION:OFFSET` once the broker acknowledged its record, for
//!   `--key-dedup-window-seconds`. The tag `{K}` keeps one topic's keys in
//!   one slot: a request's keys are claimed by one script per topic.

pub mod names;
pub mod redis;
mod url;

pub use self::redis::RedisStore;
pub use self::url::{StoreTarget, parse_store_url};

use std::time::Duration;

/// What the Redis store needs from the configuration.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub target: StoreTarget,
    /// From `KDP_DEDUP_STORE_PASSWORD` or the password file; overrides a
    /// password in the URL.
    pub password: Option<String>,
    /// Bound of every call (connects excepted, which run in the background).
    pub timeout: Duration,
    /// Batches kept per producer-partition (`--dedup-window`).
    pub window: usize,
    /// Expiry of a window after its last write (`--cache-idle-ttl-seconds`).
    pub window_ttl: Duration,
    /// How long a committed idempotency key is kept
    /// (`--key-dedup-window-seconds`).
    pub key_ttl: Duration,
}
