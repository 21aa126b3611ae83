//! The rules for one partition of a Produce request (docs/architecture.md,
//! "Dedup rules" 1-5): which batches may be remembered, which are
//! duplicates, and which must simply go to the broker. Everything the rules are unsure of
//! is forwarded: the broker is the source of truth.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::oneshot;

use super::Mode;
use super::cache::{
    BatchId, Committed, DedupCache, InFlightGuard, Lookup, Outcome, ProducerPartition, Scope,
    TopicKey,
};
use super::keyed::{KeyRules, classify_keys};
use super::keys::{KeyClaims, KeyOutcome};
use super::outcome::Outcomes;
use super::sequence::SeqTicket;
use crate::codec::record_batch::{NO_PRODUCER_ID, parse_single_batch_header, verify_crc};

/// What happens to one partition of a Produce request.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send to the broker.
    Forward(Forward),
    /// Answer in the broker's place with these offsets.
    Synthetic(Committed),
    /// Something this batch depends on is at the broker now; wait for its
    /// outcome, then classify again.
    Wait(Pause),
    /// An idempotent producer's batch of duplicates only, behind an earlier
    /// batch that failed: it cannot be acknowledged before that one, and
    /// the broker never saw it. The connection is closed so that the
    /// client sends both again, in order.
    Gap,
}

/// A partition that goes to the broker, and what its answer resolves.
#[derive(Debug, Default)]
pub(crate) struct Forward {
    /// The batch, to be committed when the broker accepts it.
    pub guard: Option<InFlightGuard>,
    /// Idempotency keys this batch claimed.
    pub keys: Option<KeyClaims>,
    /// The batch re-encoded without its duplicate records (or with its
    /// sequence shifted), sent instead of the client's.
    pub replace: Option<Bytes>,
    /// The idempotent producer's batch as its line remembers it.
    pub seq: Option<SeqTicket>,
}

impl Forward {
    pub(crate) fn guarded(guard: InFlightGuard) -> Self {
        Forward {
            guard: Some(guard),
            ..Forward::default()
        }
    }
}

/// What a waiting partition waits for.
#[derive(Debug)]
pub(crate) enum Pause {
    /// The same batch, in flight.
    Batch(oneshot::Receiver<Outcome>),
    /// A record key this batch carries, in flight in another batch.
    Key(oneshot::Receiver<KeyOutcome>),
    /// The same, for an idempotent producer's batch: its connection waits
    /// with it, so that its later batches are not sent ahead of it.
    OrderedKey(oneshot::Receiver<KeyOutcome>),
    /// An earlier batch of the same idempotent producer-partition, at the
    /// broker, before a batch of duplicates only can be answered.
    Seq(oneshot::Receiver<()>),
}

impl Pause {
    /// Whether the connection waits too: an idempotent producer's batches
    /// must reach the broker in the order they were sent. A retry held
    /// back while its original is in flight must not let the producer's
    /// next batch, sent after it on the same connection, overtake it: the
    /// broker would refuse that one (OUT_OF_ORDER_SEQUENCE_NUMBER) when it
    /// arrives before the original is appended. Only a key wait of a
    /// producer without idempotence (no sequences) waits on its own.
    pub(crate) fn in_order(&self) -> bool {
        !matches!(self, Pause::Key(_))
    }
}

impl Action {
    pub(crate) fn is_forward(&self) -> bool {
        matches!(self, Action::Forward(_))
    }

    pub(crate) fn forward() -> Action {
        Action::Forward(Forward::default())
    }
}

/// One partition as the rules see it.
pub(crate) struct PartitionBatch<'a> {
    pub acks: i16,
    pub scope: &'a Scope,
    pub topic: TopicKey,
    pub partition: i32,
    pub records: Option<&'a Bytes>,
}

impl PartitionBatch<'_> {
    /// This partition as `producer_id`'s.
    pub(crate) fn producer_partition(&self, producer_id: i64) -> ProducerPartition {
        ProducerPartition {
            scope: self.scope.clone(),
            producer_id,
            topic: self.topic.clone(),
            partition: self.partition,
        }
    }
}

/// Classifies one partition by its batch (and, where they apply, by its
/// records' idempotency keys) and counts what it decided in `out` (a wait
/// is counted when it resolves). Without `may_wait` (a wait past its
/// deadline) nothing waits: a retry of a batch in flight and a record whose
/// key is in flight go to the broker as key dedup would send them.
pub(crate) fn classify_partition(
    b: PartitionBatch<'_>,
    cache: &Arc<DedupCache>,
    keys: Option<&KeyRules>,
    mode: Mode,
    may_wait: bool,
    out: &mut Outcomes,
) -> Action {
    let action = match classify_batch(&b, cache, mode, out) {
        // Past the deadline the copy goes to the broker, remembering
        // nothing (its original still holds the entry).
        Action::Wait(_) if !may_wait => {
            out.forwarded += 1;
            Action::forward()
        }
        a => a,
    };
    match (action, keys) {
        (Action::Forward(f), Some(rules)) if mode == Mode::On => {
            classify_keys(&b, rules, f, may_wait, out)
        }
        (action, _) => action,
    }
}

/// The batch-level rules (steps 1-5 of the dedup rules).
fn classify_batch(
    b: &PartitionBatch<'_>,
    cache: &Arc<DedupCache>,
    mode: Mode,
    out: &mut Outcomes,
) -> Action {
    if mode == Mode::Off {
        return Action::forward();
    }
    let mut uncacheable = || {
        out.uncacheable += 1;
        Action::forward()
    };
    // acks=1 batches can be lost on leader failover, and the client's
    // retry is what saves them; acks=0 gets no answer at all.
    if b.acks != -1 {
        return uncacheable();
    }
    let Some(records) = b.records else {
        return uncacheable();
    };
    // The CRC is checked only when the proxy would answer or wait in the
    // broker's place (below): a batch that goes to the broker is checked
    // there, and only a batch the broker accepted is ever committed.
    let header = match parse_single_batch_header(records) {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!(error = %e, "produce batch not parsable for dedup; forwarding");
            return uncacheable();
        }
    };
    if header.producer_id == NO_PRODUCER_ID || header.base_sequence < 0 {
        return uncacheable();
    }
    let key = b.producer_partition(header.producer_id);
    let id = BatchId::of(&header);
    let lookup = match cache.begin(key, id) {
        l @ (Lookup::Duplicate(_) | Lookup::Wait(_)) => match verify_crc(records, &header) {
            Ok(()) => l,
            Err(e) => {
                // Never answered from the cache: the broker tells the
                // client what is wrong with it (CORRUPT_MESSAGE).
                tracing::debug!(error = %e, "retried batch fails its CRC; forwarding");
                return uncacheable();
            }
        },
        l => l,
    };
    match (lookup, mode) {
        (Lookup::Fresh(g), _) => {
            out.forwarded += 1;
            Action::Forward(Forward::guarded(g))
        }
        (Lookup::Forward, _) => {
            out.forwarded += 1;
            Action::forward()
        }
        (Lookup::Duplicate(_) | Lookup::Wait(_), Mode::Observe) => {
            out.observed_duplicate += 1;
            Action::forward()
        }
        (Lookup::Duplicate(c), _) => {
            out.duplicate += 1;
            out.bytes_saved += records.len() as u64;
            Action::Synthetic(c)
        }
        (Lookup::Wait(rx), _) => Action::Wait(Pause::Batch(rx)),
    }
}
