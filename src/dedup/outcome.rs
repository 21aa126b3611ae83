//! What dedup did with the batches of one request, returned to the caller
//! as plain counts: dedup records no metrics itself, the proxy (or any
//! other caller) publishes them.

/// Per-request batch outcomes. Each batch of a Produce request is counted
/// once, under the outcome that sent it on its way.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcomes {
    /// Sent to the broker and remembered (or not cacheable as a duplicate:
    /// a different CRC, an older epoch).
    pub forwarded: u32,
    /// Answered by the proxy from a committed original.
    pub duplicate: u32,
    /// Answered by the proxy after waiting for an in-flight original.
    pub coalesced: u32,
    /// Not deduplicated at all: acks other than all, no producer id, a batch
    /// or request that does not parse.
    pub uncacheable: u32,
    /// A duplicate seen in observe mode and forwarded anyway.
    pub observed_duplicate: u32,
    /// Record bytes the broker did not have to receive again.
    pub bytes_saved: u64,
    /// Records of key-dedup topics whose key nobody held: forwarded.
    pub key_records_fresh: u32,
    /// Records whose key the cluster already holds: removed.
    pub key_records_duplicate: u32,
    /// Records of key-dedup topics without a key: kept.
    pub key_records_unkeyed: u32,
    /// Batches re-encoded without their duplicate records.
    pub key_batches_reencoded: u32,
    /// Batches of duplicates only, answered by the proxy.
    pub key_batches_answered: u32,
    /// Batches of key-dedup topics that did not decode: forwarded untouched.
    pub key_batches_undecodable: u32,
    /// Idempotent producers' batches sent with their base sequence lowered
    /// by records removed from earlier batches.
    pub key_batches_resequenced: u32,
    /// Idempotent producers' batches of duplicates only that could not be
    /// answered in order: the connection was closed.
    pub key_sequence_gaps: u32,
}

impl Outcomes {
    /// A Produce request that did not parse: forwarded untouched, counted
    /// once as uncacheable.
    pub fn unparsable_request() -> Outcomes {
        Outcomes {
            uncacheable: 1,
            ..Outcomes::default()
        }
    }

    /// Adds `other`'s counts to these.
    pub fn add(&mut self, other: Outcomes) {
        self.forwarded += other.forwarded;
        self.duplicate += other.duplicate;
        self.coalesced += other.coalesced;
        self.uncacheable += other.uncacheable;
        self.observed_duplicate += other.observed_duplicate;
        self.bytes_saved += other.bytes_saved;
        self.key_records_fresh += other.key_records_fresh;
        self.key_records_duplicate += other.key_records_duplicate;
        self.key_records_unkeyed += other.key_records_unkeyed;
        self.key_batches_reencoded += other.key_batches_reencoded;
        self.key_batches_answered += other.key_batches_answered;
        self.key_batches_undecodable += other.key_batches_undecodable;
        self.key_batches_resequenced += other.key_batches_resequenced;
        self.key_sequence_gaps += other.key_sequence_gaps;
    }
}
