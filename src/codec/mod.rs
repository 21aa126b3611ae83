//! The one codec for every byte the proxy parses, built with nom.
//!
//! * [`frame`]: length-prefixed frames with a size cap, raw bytes kept.
//! * [`header`]: request header v0-v2, response header v0-v1.
//! * [`primitives`]: ints, varints, strings, bytes, arrays, tagged fields.
//! * one module per message family the proxy reads or rewrites:
//!   [`produce`], [`api_versions`], [`metadata`], [`find_coordinator`],
//!   [`describe_cluster`], [`producer_epoch`] (InitProducerId/EndTxn), the
//!   SASL fields in [`sasl`], the [`record_batch`] header and the
//!   [`records`] inside a batch (every compression codec).
//! * [`api`]: API keys, names and the one table of version ranges.
//!
//! Every parser works on a complete frame, checks each length against the
//! remaining input before taking bytes, and returns a [`CodecError`]
//! instead of panicking.

pub mod api;
pub mod api_versions;
pub mod describe_cluster;
pub mod error;
pub mod find_coordinator;
pub mod frame;
pub mod header;
pub mod metadata;
pub mod primitives;
pub mod produce;
pub mod producer_epoch;
pub mod record_batch;
pub mod records;
pub mod sasl;

pub use error::CodecError;
pub use frame::Frame;
