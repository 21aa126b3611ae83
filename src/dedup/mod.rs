//! Deduplication of Produce batches: the shared [`cache`] and the
//! I/O-free per-request logic in [`produce`] (classify, split, merge).

pub mod cache;
pub mod produce;

pub use cache::DedupCache;
