//! Deduplication of Produce batches, without I/O.
//!
//! * [`decision`]: the one API the proxy calls: a parsed request in, a
//!   [`Decision`] out (forward, answer, split, wait), the broker's answer
//!   back through [`Pending::complete`].
//! * [`classify`]: the rules for one partition (docs/architecture.md, "Dedup rules").
//! * [`answer`]: where a duplicate gets answered: synthetic partitions,
//!   cut-down requests and merged responses.
//! * [`cache`]: the shared cache of producer-partition windows.
//! * [`keyed`]: dedup by idempotency key for the topics that opt in, over
//!   the key cache in [`keys`].
//! * [`outcome`]: what happened to each batch, as counts for the caller.
//! * [`store`]: the interface of the state shared with other replicas
//!   (implemented in-process by [`MemoryStore`] and over Redis in
//!   `crate::store`), and `prefetch`: its one lookup per request.
//!
//! This module imports only `codec` (and `tokio::sync` for waiters): no
//! sockets, no metrics, no configuration types.

pub mod answer;
pub mod cache;
pub mod classify;
pub mod decision;
pub mod keyed;
pub mod keys;
pub mod outcome;
mod prefetch;
pub mod sequence;
pub mod shared_keys;
pub mod store;
#[cfg(test)]
mod testing;

pub use answer::MergeError;
pub use cache::DedupCache;
pub use decision::{Decision, MAX_WAIT, Pending, ProduceDedup, Waiting};
pub use keyed::{KeyRules, KeySource};
pub use keys::KeyCache;
pub use outcome::Outcomes;
pub use shared_keys::KeyVerdict;
pub use store::{DedupStore, MemoryStore, OnStoreError, StoreError, StoreFuture, StoredBatch};

/// How far dedup goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answer duplicates from the cache.
    On,
    /// Count duplicates, forward everything.
    Observe,
    /// Parse nothing, remember nothing.
    Off,
}
