//! Deduplication of Produce batches, without I/O.
//!
//! * [`decision`]: the one API the proxy calls: a parsed request in, a
//!   [`Decision`] out (forward, answer, split, wait), the broker's answer
//!   back through [`Pending::complete`].
//! * [`classify`]: the rules for one partition (docs/architecture.md, "Dedup rules").
//! * [`answer`]: where a duplicate gets answered: synthetic partitions,
//!   cut-down requests and merged responses.
//! * [`cache`]: the shared cache of producer-partition windows.
//! * [`outcome`]: what happened to each batch, as counts for the caller.
//!
//! This module imports only `codec` (and `tokio::sync` for waiters): no
//! sockets, no metrics, no configuration types.

pub mod answer;
pub mod cache;
pub mod classify;
pub mod decision;
pub mod outcome;

pub use answer::MergeError;
pub use cache::DedupCache;
pub use decision::{Decision, MAX_WAIT, Pending, ProduceDedup, Waiting};
pub use outcome::Outcomes;

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
