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
use super::outcome::Outcomes;
use crate::codec::record_batch::{NO_PRODUCER_ID, parse_single_batch_header, verify_crc};

/// What happens to one partition of a Produce request.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send to the broker; with a guard when the answer is to be cached.
    Forward(Option<InFlightGuard>),
    /// Answer from the cache with the original's offsets.
    Synthetic(Committed),
    /// The same batch is at the broker now; wait for its outcome.
    Wait(oneshot::Receiver<Outcome>),
}

impl Action {
    pub(crate) fn is_forward(&self) -> bool {
        matches!(self, Action::Forward(_))
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

/// Classifies one partition and counts what it decided in `out` (a wait
/// is counted when it resolves).
pub(crate) fn classify_partition(
    b: PartitionBatch<'_>,
    cache: &Arc<DedupCache>,
    mode: Mode,
    out: &mut Outcomes,
) -> Action {
    if mode == Mode::Off {
        return Action::Forward(None);
    }
    let mut uncacheable = || {
        out.uncacheable += 1;
        Action::Forward(None)
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
    let key = ProducerPartition {
        scope: b.scope.clone(),
        producer_id: header.producer_id,
        topic: b.topic,
        partition: b.partition,
    };
    let id = BatchId {
        epoch: header.producer_epoch,
        base_sequence: header.base_sequence,
        last_sequence: header.last_sequence(),
        crc: header.crc,
    };
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
            Action::Forward(Some(g))
        }
        (Lookup::Forward, _) => {
            out.forwarded += 1;
            Action::Forward(None)
        }
        (Lookup::Duplicate(_) | Lookup::Wait(_), Mode::Observe) => {
            out.observed_duplicate += 1;
            Action::Forward(None)
        }
        (Lookup::Duplicate(c), _) => {
            out.duplicate += 1;
            out.bytes_saved += records.len() as u64;
            Action::Synthetic(c)
        }
        (Lookup::Wait(rx), _) => Action::Wait(rx),
    }
}
