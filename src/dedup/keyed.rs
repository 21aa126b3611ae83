//! Record-level dedup by idempotency key, for the topics that opt in: what
//! the broker cannot see (an application that sends a record again, several
//! instances sending the same event, a producer without idempotence).
//!
//! The rules (docs/idempotency-keys.md has the whole of them):
//! * Only batches of acks=all requests, neither transactional nor control,
//!   that decode (CRC, codec, varints) are read; anything else goes to the
//!   broker untouched. An idempotent producer's batches (producer id ≥ 0)
//!   also go out with their base sequence lowered by the records removed
//!   before them, and a batch sent again goes out as the first time
//!   ([`super::sequence`]): the broker sees an unbroken sequence.
//! * A record's key is a header, the record key, or its whole content; a
//!   record without one is kept. Of two records with the same key in one
//!   batch, the first is kept.
//! * A key is claimed while its batch is at the broker and recorded only
//!   when the broker acknowledged it (acks=all, NONE); a copy that meets a
//!   claimed key waits for that outcome.
//! * A batch whose records are all duplicates is answered by the proxy; a
//!   batch with some is re-encoded without them (same codec, consecutive
//!   offsets, CRC-32C recomputed); a batch with none goes out untouched.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;

use tokio::sync::oneshot;

use super::cache::{BatchId, Committed, TopicKey};
use super::classify::{Action, Forward, PartitionBatch, Pause};
use super::keys::{Claim, KeyCache, KeyClaims, KeyId, KeyOrigin, KeyOutcome};
use super::outcome::Outcomes;
use super::sequence::{Plan, Removal, Sending, Sequences, shifted};
use crate::codec::record_batch::{
    NO_PRODUCER_ID, RecordBatchHeader, parse_single_batch_header, verify_crc, with_base_sequence,
};
use crate::codec::records::{Record, decode_batch, encode_batch};

/// Where a record's idempotency key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// The value of the first record header of this name.
    Header(Bytes),
    /// The record key.
    RecordKey,
    /// Key, value and headers together.
    Content,
}

impl std::str::FromStr for KeySource {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "key" => Ok(KeySource::RecordKey),
            "content" => Ok(KeySource::Content),
            _ => match s.strip_prefix("header:") {
                Some(name) if !name.is_empty() => {
                    Ok(KeySource::Header(Bytes::from(name.to_string())))
                }
                _ => Err(format!("'{s}': expected header:NAME, key or content")),
            },
        }
    }
}

/// Which topics are deduplicated by key, from where each takes its keys,
/// and the cache that holds them.
#[derive(Debug)]
pub struct KeyRules {
    /// The first pattern that matches a topic names its key source.
    topics: Vec<(glob::Pattern, KeySource)>,
    cache: Arc<KeyCache>,
    /// Sequence rewrites of idempotent producers whose records were removed.
    sequences: Arc<Sequences>,
}

impl KeyRules {
    /// `topics`: names or globs (`orders-*`), all with `source`. Errors
    /// name the bad pattern.
    pub fn new(topics: &[String], source: KeySource, cache: Arc<KeyCache>) -> Result<Self, String> {
        let rules = topics.iter().map(|t| (t.clone(), source.clone()));
        Self::with_sources(rules, cache)
    }

    /// One key source per topic pattern: the first pattern that matches a
    /// topic applies to it. Errors name the bad pattern.
    pub fn with_sources(
        rules: impl IntoIterator<Item = (String, KeySource)>,
        cache: Arc<KeyCache>,
    ) -> Result<Self, String> {
        let topics = rules
            .into_iter()
            .map(|(t, source)| {
                glob::Pattern::new(&t)
                    .map(|p| (p, source))
                    .map_err(|e| format!("topic pattern '{t}': {e}"))
            })
            .collect::<Result<_, _>>()?;
        Ok(KeyRules {
            topics,
            cache,
            sequences: Sequences::new(super::sequence::MAX_LINES),
        })
    }

    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    pub fn sequences(&self) -> &Arc<Sequences> {
        &self.sequences
    }

    /// Drops expired keys and idle producer lines (called periodically).
    pub fn sweep(&self) {
        self.cache.sweep();
        self.sequences.sweep();
    }

    pub fn applies_to(&self, topic: &str) -> bool {
        self.source_for(topic).is_some()
    }

    /// Where `topic`'s records take their keys, if it is deduplicated.
    pub fn source_for(&self, topic: &str) -> Option<&KeySource> {
        self.topics
            .iter()
            .find(|(p, _)| p.matches(topic))
            .map(|(_, s)| s)
    }
}

impl KeySource {
    /// The idempotency key of `r`, if it has one.
    pub(crate) fn key_of<'a>(&self, r: &'a Record) -> Option<Cow<'a, [u8]>> {
        match self {
            KeySource::Header(name) => r
                .headers
                .iter()
                .find(|h| h.key == *name)
                .and_then(|h| h.value.as_deref())
                .map(Cow::Borrowed),
            KeySource::RecordKey => r.key.as_deref().map(Cow::Borrowed),
            KeySource::Content => {
                let mut c = Vec::new();
                let mut field = |b: Option<&[u8]>| match b {
                    Some(b) => {
                        c.extend_from_slice(&(b.len() as i64).to_le_bytes());
                        c.extend_from_slice(b);
                    }
                    None => c.extend_from_slice(&(-1i64).to_le_bytes()),
                };
                field(r.key.as_deref());
                field(r.value.as_deref());
                for h in &r.headers {
                    field(Some(&h.key));
                    field(h.value.as_deref());
                }
                Some(Cow::Owned(c))
            }
        }
    }
}

fn record_size(r: &Record) -> u64 {
    let h: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, |v| v.len()))
        .sum();
    (r.key.as_ref().map_or(0, |k| k.len()) + r.value.as_ref().map_or(0, |v| v.len()) + h) as u64
}

/// A batch's topic as key dedup sees it: its rules and key source.
struct Keyed<'a> {
    rules: &'a KeyRules,
    source: &'a KeySource,
    topic: &'a str,
}

/// The records of one batch as key dedup reads them.
struct Reading {
    /// Positions (in the client's batch) of the records removed, ascending.
    removed: Vec<u32>,
    /// Records that go to the broker.
    kept: usize,
    /// Where the first removed record's original was written.
    first_origin: Option<KeyOrigin>,
    counts: Outcomes,
}

/// Reads every record's key: claims the fresh ones in `claims`, drops the
/// ones the cluster holds (and a second record with a key seen earlier in
/// the batch). A key another batch has in flight makes the batch wait
/// (`Err`) when `may_wait`; otherwise that record is kept unclaimed (a
/// duplicate may pass, nothing is lost).
fn read_keys(
    b: &PartitionBatch<'_>,
    k: &Keyed<'_>,
    records: &[Record],
    may_wait: bool,
    claims: &mut KeyClaims,
) -> Result<Reading, oneshot::Receiver<KeyOutcome>> {
    let mut seen = HashSet::with_capacity(records.len());
    let mut r = Reading {
        removed: Vec::new(),
        kept: 0,
        first_origin: None,
        counts: Outcomes::default(),
    };
    for (position, record) in records.iter().enumerate() {
        let Some(key) = k.source.key_of(record) else {
            r.counts.key_records_unkeyed += 1;
            r.kept += 1;
            continue;
        };
        let id = KeyId::new(b.scope, k.topic, &key);
        let claim = if seen.insert(id) {
            k.rules.cache.claim(id, r.kept as u32, claims)
        } else {
            // The first of two records with one key is kept.
            Claim::Duplicate(KeyOrigin {
                partition: b.partition,
                offset: -1,
            })
        };
        match claim {
            Claim::Fresh => {
                r.counts.key_records_fresh += 1;
                r.kept += 1;
            }
            Claim::Duplicate(origin) => {
                r.counts.key_records_duplicate += 1;
                r.counts.bytes_saved += record_size(record);
                r.removed.push(position as u32);
                if origin.offset >= 0 {
                    r.first_origin.get_or_insert(origin);
                }
            }
            // Another batch carries this key now: let go of what this one
            // claimed (copies waiting for those keys go ahead) and wait.
            Claim::InFlight(rx) if may_wait => return Err(rx),
            Claim::InFlight(_) => {
                r.counts.key_records_fresh += 1;
                r.kept += 1;
            }
        }
    }
    Ok(r)
}

/// The answer for a batch whose records are all in the cluster: the first
/// original's offset when it is on this partition; otherwise -1, as an
/// acks=0 answer carries: success, no offset to tell.
fn answer_for(r: &Reading, partition: i32) -> Committed {
    let base_offset = r
        .first_origin
        .filter(|o| o.partition == partition)
        .map_or(-1, |o| o.offset);
    Committed {
        base_offset,
        log_append_time_ms: -1,
        log_start_offset: -1,
    }
}

/// Classifies one partition by its records' keys. `f` is what the batch
/// rules decided (forward, with the batch's guard when it has one); it
/// stands, untouched, where key dedup does not apply.
pub(crate) fn classify_keys(
    b: &PartitionBatch<'_>,
    rules: &KeyRules,
    f: Forward,
    may_wait: bool,
    out: &mut Outcomes,
) -> Action {
    let TopicKey::Name(topic) = &b.topic else {
        // A topic id whose name is not known yet: its rules cannot be told.
        return Action::Forward(f);
    };
    let Some(source) = rules.source_for(topic).filter(|_| b.acks == -1) else {
        return Action::Forward(f);
    };
    let k = Keyed {
        rules,
        source,
        topic,
    };
    let Some(records) = b.records else {
        return Action::Forward(f);
    };
    let Ok(header) = parse_single_batch_header(records) else {
        return Action::Forward(f);
    };
    if header.is_transactional() || header.is_control() {
        return Action::Forward(f);
    }
    if header.producer_id == NO_PRODUCER_ID {
        classify_plain(b, &k, records, &header, may_wait, out).unwrap_or(Action::Forward(f))
    } else {
        classify_idempotent(b, &k, records, &header, f, may_wait, out)
    }
}

/// A producer without idempotence: records are removed freely. `None`:
/// forward the batch untouched.
fn classify_plain(
    b: &PartitionBatch<'_>,
    k: &Keyed<'_>,
    records: &Bytes,
    header: &RecordBatchHeader,
    may_wait: bool,
    out: &mut Outcomes,
) -> Option<Action> {
    let batch = match decode_batch(records) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "batch not decodable for key dedup; forwarding untouched");
            out.key_batches_undecodable += 1;
            return None;
        }
    };
    let mut claims = KeyClaims::new(&k.rules.cache);
    let r = match read_keys(b, k, &batch.records, may_wait, &mut claims) {
        Ok(r) => r,
        Err(rx) => return Some(Action::Wait(Pause::Key(rx))),
    };
    let keys = (!claims.is_empty()).then_some(claims);
    if r.removed.is_empty() {
        out.add(r.counts);
        return Some(Action::Forward(Forward {
            keys,
            ..Forward::default()
        }));
    }
    if r.kept == 0 {
        out.key_batches_answered += 1;
        out.add(r.counts);
        return Some(Action::Synthetic(answer_for(&r, b.partition)));
    }
    match encode_batch(
        &batch.header,
        batch.compression,
        header.base_sequence,
        &kept_records(batch.records, &r.removed),
    ) {
        Ok(replace) => {
            out.key_batches_reencoded += 1;
            out.add(r.counts);
            Some(Action::Forward(Forward {
                keys,
                replace: Some(replace),
                ..Forward::default()
            }))
        }
        Err(e) => {
            // Claims are let go with `keys`: nothing is recorded for a
            // batch sent as the client wrote it.
            tracing::warn!(error = %e, "batch could not be re-encoded; forwarding untouched");
            out.key_batches_undecodable += 1;
            None
        }
    }
}

/// An idempotent producer (docs/idempotency-keys.md, "Idempotent
/// producers"): records are removed as for any producer, and the batch
/// goes out with its base sequence lowered by what was removed before it
/// on this producer-partition ([`super::sequence`]); a batch sent again
/// goes out exactly as the first time.
#[allow(clippy::too_many_arguments)]
fn classify_idempotent(
    b: &PartitionBatch<'_>,
    k: &Keyed<'_>,
    records: &Bytes,
    header: &RecordBatchHeader,
    f: Forward,
    may_wait: bool,
    out: &mut Outcomes,
) -> Action {
    if header.base_sequence < 0 {
        return Action::Forward(f);
    }
    if verify_crc(records, header).is_err() {
        // The broker answers CORRUPT_MESSAGE; nothing to remember.
        return Action::Forward(f);
    }
    // Decoded before the line is locked: other producers of its shard do
    // not wait for a decompression.
    let decoded = match decode_batch(records) {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::debug!(error = %e, "batch not decodable for key dedup; sent whole");
            out.key_batches_undecodable += 1;
            None
        }
    };
    let key = b.producer_partition(header.producer_id);
    let id = BatchId::of(header);
    let count = (header.last_offset_delta.max(0) as u32).saturating_add(1);
    let planned = k.rules.sequences.plan(&key, id, count);
    let mut claims = KeyClaims::new(&k.rules.cache);
    let mut counts = Outcomes::default();
    let (removal, again) = match planned.plan().clone() {
        Plan::Untouched => return Action::Forward(f),
        Plan::Again { removal, .. } => (removal, true),
        Plan::New { .. } => match &decoded {
            None => (Removal::Nothing, false),
            Some(d) => {
                let r = match read_keys(b, k, &d.records, may_wait, &mut claims) {
                    Ok(r) => r,
                    Err(rx) => return Action::Wait(Pause::OrderedKey(rx)),
                };
                counts = r.counts;
                let removal = if r.removed.is_empty() {
                    Removal::Nothing
                } else if r.kept == 0 {
                    Removal::All(answer_for(&r, b.partition))
                } else {
                    Removal::Records(r.removed.into())
                };
                (removal, false)
            }
        },
    };
    let (shift, ticket) = match planned.send(removal.clone()) {
        Sending::Broker { shift, ticket } => (shift, ticket),
        Sending::Answer(c) => {
            out.add(counts);
            out.key_batches_answered += 1;
            return Action::Synthetic(c);
        }
        Sending::Wait(rx) if may_wait => return Action::Wait(Pause::Seq(rx)),
        // An earlier batch was refused, or is still at the broker past the
        // deadline: the client sends both again.
        Sending::Wait(_) | Sending::Gap => {
            out.key_sequence_gaps += 1;
            return Action::Gap;
        }
    };
    let base = shifted(header.base_sequence, shift);
    // What goes out, decoded: the kept records with the batch's fields.
    let sent = decoded.map(|d| {
        let records = match &removal {
            Removal::Records(gone) => kept_records(d.records, gone),
            _ => d.records,
        };
        (records, d.header, d.compression)
    });
    if again && let Some((kept, ..)) = &sent {
        // A batch sent again: the keys it carries are claimed anew, so
        // that its acknowledgement records them.
        claim_quietly(b, k, kept, &mut claims);
    }
    let replace = match (&removal, sent) {
        (Removal::Records(_), Some((kept, h, c))) => encode_batch(&h, c, base, &kept).map(Some),
        (Removal::Nothing, _) if shift == 0 => Ok(None),
        (Removal::Nothing, _) => with_base_sequence(records, base).map(Some),
        _ => Err(crate::codec::CodecError::Invalid(
            "records to remove from a batch that does not decode",
        )),
    };
    let replace = match replace {
        Ok(r) => r,
        Err(e) => {
            // Not as planned: the broker sees the client's batch and
            // decides (at worst it refuses it).
            tracing::warn!(error = %e, "idempotent batch could not be rewritten; forwarding untouched");
            return Action::Forward(f);
        }
    };
    out.add(counts);
    if matches!(removal, Removal::Records(_)) {
        out.key_batches_reencoded += 1;
    }
    if shift != 0 {
        out.key_batches_resequenced += 1;
    }
    Action::Forward(Forward {
        guard: f.guard,
        keys: (!claims.is_empty()).then_some(claims),
        replace,
        seq: Some(ticket),
    })
}

/// `records` without the ones at positions `gone` (ascending).
fn kept_records(records: Vec<Record>, gone: &[u32]) -> Vec<Record> {
    records
        .into_iter()
        .enumerate()
        .filter(|(i, _)| gone.binary_search(&(*i as u32)).is_err())
        .map(|(_, r)| r)
        .collect()
}

/// Claims the keys of `kept` that nobody holds, without waiting for any:
/// the records go out whatever the claims say (a batch sent again must be
/// the same batch).
fn claim_quietly(b: &PartitionBatch<'_>, k: &Keyed<'_>, kept: &[Record], claims: &mut KeyClaims) {
    for (position, r) in kept.iter().enumerate() {
        if let Some(key) = k.source.key_of(r) {
            let id = KeyId::new(b.scope, k.topic, &key);
            let _ = k.rules.cache.claim(id, position as u32, claims);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec::primitives::TaggedFields;
    use crate::codec::produce::{
        PartitionProduceData, PartitionProduceResponse, ProduceRequest, ProduceResponse,
        TopicProduceData, TopicProduceResponse, TopicRef,
    };
    use crate::codec::record_batch::encode_record_batch;
    use crate::codec::records::{Compression, RecordHeader};
    use crate::dedup::cache::{DedupCache, Scope};
    use crate::dedup::{Decision, Mode, ProduceDedup};

    fn dedup() -> ProduceDedup {
        let rules = KeyRules::new(
            &["orders-*".to_string()],
            "header:idempotency-key".parse().unwrap(),
            KeyCache::new(Duration::from_secs(600), 1000),
        )
        .unwrap();
        ProduceDedup::new(DedupCache::new(5, 100, Duration::from_secs(60)), Mode::On)
            .with_keys(rules)
    }

    fn record(key: Option<&str>, value: &str) -> Record {
        Record {
            attributes: 0,
            timestamp_delta: 0,
            offset_delta: 0,
            key: None,
            value: Some(Bytes::from(value.to_string())),
            headers: key
                .map(|k| RecordHeader {
                    key: Bytes::from_static(b"idempotency-key"),
                    value: Some(Bytes::from(k.to_string())),
                })
                .into_iter()
                .collect(),
        }
    }

    /// A batch of a producer without idempotence (or with `pid`).
    fn batch_of(pid: i64, attributes: i16, c: Compression, keys: &[Option<&str>]) -> Bytes {
        let t = encode_record_batch(
            pid,
            if pid < 0 { -1 } else { 0 },
            if pid < 0 { -1 } else { 0 },
            1_000,
            attributes,
            &[],
        );
        let t = parse_single_batch_header(&t).unwrap();
        let records: Vec<_> = keys
            .iter()
            .map(|k| record(*k, &format!("v-{k:?}")))
            .collect();
        encode_batch(&t, c, t.base_sequence, &records).unwrap()
    }

    fn batch(keys: &[Option<&str>]) -> Bytes {
        batch_of(-1, 0, Compression::Lz4, keys)
    }

    fn request(topic: &str, acks: i16, records: Bytes) -> ProduceRequest {
        ProduceRequest {
            transactional_id: None,
            acks,
            timeout_ms: 30_000,
            topics: vec![TopicProduceData {
                topic: TopicRef::Name(topic.into()),
                partitions: vec![PartitionProduceData {
                    index: 2,
                    records: Some(records),
                    tagged_fields: TaggedFields::default(),
                }],
                tagged_fields: TaggedFields::default(),
            }],
            tagged_fields: TaggedFields::default(),
        }
    }

    fn ok(topic: &str, offset: i64) -> ProduceResponse {
        ProduceResponse {
            responses: vec![TopicProduceResponse {
                topic: TopicRef::Name(topic.into()),
                partitions: vec![PartitionProduceResponse::success(2, offset, -1, 0)],
                tagged_fields: TaggedFields::default(),
            }],
            throttle_time_ms: 0,
            tagged_fields: TaggedFields::default(),
        }
    }

    fn decide(d: &ProduceDedup, req: ProduceRequest) -> (Decision, Outcomes) {
        d.decide(req, &Scope::Anonymous, |t| match t {
            TopicRef::Name(n) => TopicKey::Name(Arc::from(n.as_str())),
            TopicRef::Id(id) => TopicKey::Id(*id),
        })
    }

    /// Values of the records in the one batch a split request sends.
    fn sent_values(d: Decision) -> (Vec<String>, crate::dedup::Pending) {
        let Decision::Split { request, pending } = d else {
            panic!("expected a re-encoded request, got {d:?}");
        };
        let records = request.topics[0].partitions[0].records.clone().unwrap();
        let b = decode_batch(&records).unwrap();
        let values = b
            .records
            .iter()
            .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
            .collect();
        (values, pending)
    }

    #[test]
    fn a_record_sent_again_is_removed_once_the_first_is_acknowledged() {
        let d = dedup();
        let (Decision::Forward(p), out) =
            decide(&d, request("orders-eu", -1, batch(&[Some("a"), Some("b")])))
        else {
            panic!("fresh keys go out untouched");
        };
        assert_eq!(out.key_records_fresh, 2);
        p.complete(&ok("orders-eu", 40)).unwrap();
        // "b" again with a new "c" and an unkeyed record.
        let (d2, out) = decide(
            &d,
            request("orders-eu", -1, batch(&[Some("b"), Some("c"), None])),
        );
        assert_eq!(
            (
                out.key_records_duplicate,
                out.key_records_fresh,
                out.key_records_unkeyed
            ),
            (1, 1, 1)
        );
        let (values, pending) = sent_values(d2);
        assert_eq!(values, vec!["v-Some(\"c\")", "v-None"]);
        // The broker's answer is the client's (nothing to merge).
        assert_eq!(pending.complete(&ok("orders-eu", 50)).unwrap(), None);
        // "c" landed at 50 (its place in the batch sent).
        let (Decision::Answer(r), out) = decide(&d, request("orders-eu", -1, batch(&[Some("c")])))
        else {
            panic!("duplicates only are answered");
        };
        assert_eq!(out.key_batches_answered, 1);
        let p = &r.responses[0].partitions[0];
        assert_eq!((p.error_code, p.base_offset), (0, 50));
    }

    #[test]
    fn a_key_is_not_recorded_when_the_broker_refuses_the_batch() {
        let d = dedup();
        let (Decision::Forward(p), _) = decide(&d, request("orders-eu", -1, batch(&[Some("a")])))
        else {
            panic!("fresh");
        };
        let mut refused = ok("orders-eu", -1);
        refused.responses[0].partitions[0].error_code = 6;
        p.complete(&refused).unwrap();
        assert!(matches!(
            decide(&d, request("orders-eu", -1, batch(&[Some("a")]))).0,
            Decision::Forward(_)
        ));
    }

    #[test]
    fn the_first_of_two_records_with_one_key_in_a_batch_is_kept() {
        let d = dedup();
        let (d2, out) = decide(
            &d,
            request("orders-eu", -1, batch(&[Some("a"), Some("a"), Some("b")])),
        );
        assert_eq!(out.key_records_duplicate, 1);
        let (values, _) = sent_values(d2);
        assert_eq!(values, vec!["v-Some(\"a\")", "v-Some(\"b\")"]);
    }

    /// Key "a" sent once (at the broker now) and again (waiting for it).
    fn in_flight_and_waiting(
        d: &ProduceDedup,
    ) -> (
        crate::dedup::Pending,
        tokio::task::JoinHandle<(Decision, Outcomes)>,
    ) {
        let (Decision::Forward(p), _) = decide(d, request("orders-eu", -1, batch(&[Some("a")])))
        else {
            panic!("fresh");
        };
        let (Decision::Wait(w), _) = decide(d, request("orders-eu", -1, batch(&[Some("a")])))
        else {
            panic!("waits for the first copy");
        };
        (p, tokio::spawn(w.resolve(std::future::pending())))
    }

    #[tokio::test]
    async fn a_copy_of_an_in_flight_key_waits_for_its_outcome() {
        let d = dedup();
        let (p, waiting) = in_flight_and_waiting(&d);
        p.complete(&ok("orders-eu", 9)).unwrap();
        let (Decision::Answer(r), _) = waiting.await.unwrap() else {
            panic!("answered once the first copy landed");
        };
        assert_eq!(r.responses[0].partitions[0].base_offset, 9);
    }

    #[tokio::test]
    async fn a_copy_of_a_failed_key_goes_to_the_broker() {
        let d = dedup();
        let (p, waiting) = in_flight_and_waiting(&d);
        drop(p);
        let (Decision::Forward(_), out) = waiting.await.unwrap() else {
            panic!("the copy goes out");
        };
        assert_eq!(out.key_records_fresh, 1);
    }

    #[test]
    fn what_key_dedup_does_not_read_goes_out_untouched() {
        let d = dedup();
        let seen = batch(&[Some("a")]);
        let (Decision::Forward(p), _) = decide(&d, request("orders-eu", -1, seen.clone())) else {
            panic!("fresh");
        };
        p.complete(&ok("orders-eu", 1)).unwrap();
        // Another topic, acks=1, an idempotent or a transactional producer,
        // a corrupt batch: all forwarded as sent, whatever their keys.
        let mut corrupt = seen.to_vec();
        let n = corrupt.len() - 2;
        corrupt[n] ^= 0xff;
        for req in [
            request("payments", -1, seen.clone()),
            request("orders-eu", 1, seen.clone()),
            request(
                "orders-eu",
                -1,
                batch_of(-1, 0x10, Compression::None, &[Some("a")]),
            ),
            request("orders-eu", -1, idem(77, 1, 0, 0x10, &[Some("a")])),
            request("orders-eu", -1, Bytes::from(corrupt)),
        ] {
            let (decision, out) = decide(&d, req);
            assert!(matches!(decision, Decision::Forward(_)), "{decision:?}");
            assert_eq!(out.key_records_duplicate, 0);
        }
    }

    /// A batch of idempotent producer `pid` (epoch `epoch`) starting at
    /// sequence `seq`.
    fn idem(pid: i64, epoch: i16, seq: i32, attributes: i16, keys: &[Option<&str>]) -> Bytes {
        let t = encode_record_batch(pid, epoch, seq, 1_000, attributes, &[]);
        let t = parse_single_batch_header(&t).unwrap();
        let records: Vec<_> = keys
            .iter()
            .map(|k| record(*k, &format!("v-{k:?}")))
            .collect();
        encode_batch(&t, Compression::Zstd, seq, &records).unwrap()
    }

    /// The base sequence and record values of what goes to the broker.
    fn sent(d: &Decision, client: &Bytes) -> (i32, Vec<String>) {
        let records = match d {
            Decision::Forward(_) => client.clone(),
            Decision::Split { request, .. } => {
                request.topics[0].partitions[0].records.clone().unwrap()
            }
            other => panic!("nothing goes to the broker: {other:?}"),
        };
        let b = decode_batch(&records).unwrap();
        let values = b
            .records
            .iter()
            .map(|r| String::from_utf8(r.value.as_ref().unwrap().to_vec()).unwrap())
            .collect();
        (b.header.base_sequence, values)
    }

    fn pending(d: Decision) -> crate::dedup::Pending {
        match d {
            Decision::Forward(p) | Decision::Split { pending: p, .. } => p,
            other => panic!("nothing goes to the broker: {other:?}"),
        }
    }

    #[test]
    fn a_restarted_idempotent_producer_keeps_its_sequences_as_the_broker_sees_them() {
        let d = dedup();
        // The first producer wrote "a" and "b".
        let first = idem(5, 0, 0, 0, &[Some("a"), Some("b")]);
        let (d1, _) = decide(&d, request("orders-eu", -1, first.clone()));
        assert_eq!(
            sent(&d1, &first),
            (0, vec!["v-Some(\"a\")".into(), "v-Some(\"b\")".into()])
        );
        pending(d1).complete(&ok("orders-eu", 10)).unwrap();
        // Its successor (a new producer id) sends "a", "c" from sequence 0,
        // then "b" alone, then "d", "e".
        let b0 = idem(6, 0, 0, 0, &[Some("a"), Some("c")]);
        let (d0, out) = decide(&d, request("orders-eu", -1, b0.clone()));
        assert_eq!(out.key_records_duplicate, 1);
        assert_eq!(sent(&d0, &b0), (0, vec!["v-Some(\"c\")".into()]));
        // Not answered yet: "b" alone must wait for it.
        let b2 = idem(6, 0, 2, 0, &[Some("b")]);
        let (Decision::Wait(w), _) = decide(&d, request("orders-eu", -1, b2.clone())) else {
            panic!("a batch of duplicates only waits for the batch before it");
        };
        assert!(w.in_order());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let waiting = rt.spawn(w.resolve(std::future::pending()));
        // The broker took "c" as sequence 0: "b" is answered, then "d", "e"
        // (sequences 3, 4) go out as 1, 2.
        pending(d0).complete(&ok("orders-eu", 12)).unwrap();
        let (Decision::Answer(r), out) = rt.block_on(waiting).unwrap() else {
            panic!("answered once the batch before it landed");
        };
        assert_eq!(out.key_batches_answered, 1);
        assert_eq!(r.responses[0].partitions[0].base_offset, 11);
        let b3 = idem(6, 0, 3, 0, &[Some("d"), Some("e")]);
        let (d3, out) = decide(&d, request("orders-eu", -1, b3.clone()));
        assert_eq!(out.key_batches_resequenced, 1);
        assert_eq!(
            sent(&d3, &b3),
            (1, vec!["v-Some(\"d\")".into(), "v-Some(\"e\")".into()])
        );
        // Its answer lost, it is sent again: it goes out exactly as the
        // first time, whatever the keys say now ("d" and "e" are claimed by
        // no one any more).
        drop(d3);
        let (again3, _) = decide(&d, request("orders-eu", -1, b3.clone()));
        assert_eq!(
            sent(&again3, &b3),
            (1, vec!["v-Some(\"d\")".into(), "v-Some(\"e\")".into()])
        );
        // A new epoch starts over from sequence 0, unshifted.
        let e1 = idem(6, 1, 0, 0, &[Some("f")]);
        let (de, out) = decide(&d, request("orders-eu", -1, e1.clone()));
        assert_eq!(out.key_batches_resequenced, 0);
        assert_eq!(sent(&de, &e1), (0, vec!["v-Some(\"f\")".into()]));
    }

    #[test]
    fn a_batch_of_duplicates_only_behind_a_failed_batch_closes_the_connection() {
        let d = dedup();
        let (d1, _) = decide(&d, request("orders-eu", -1, idem(5, 0, 0, 0, &[Some("a")])));
        pending(d1).complete(&ok("orders-eu", 10)).unwrap();
        let (d0, _) = decide(&d, request("orders-eu", -1, idem(6, 0, 0, 0, &[Some("x")])));
        // The broker refuses "x" (say, NOT_LEADER_OR_FOLLOWER).
        let mut refused = ok("orders-eu", -1);
        refused.responses[0].partitions[0].error_code = 6;
        pending(d0).complete(&refused).unwrap();
        let (gap, out) = decide(&d, request("orders-eu", -1, idem(6, 0, 1, 0, &[Some("a")])));
        assert!(matches!(gap, Decision::Disconnect), "{gap:?}");
        assert_eq!(out.key_sequence_gaps, 1);
        // Sent again in order, both go through: "x" to the broker, then
        // "a" answered.
        let (d0, _) = decide(&d, request("orders-eu", -1, idem(6, 0, 0, 0, &[Some("x")])));
        pending(d0).complete(&ok("orders-eu", 11)).unwrap();
        let (Decision::Answer(r), _) =
            decide(&d, request("orders-eu", -1, idem(6, 0, 1, 0, &[Some("a")])))
        else {
            panic!("answered behind an acknowledged batch");
        };
        assert_eq!(r.responses[0].partitions[0].base_offset, 10);
    }

    #[test]
    fn key_sources_parse_and_read_their_field() {
        assert_eq!("key".parse::<KeySource>(), Ok(KeySource::RecordKey));
        assert_eq!("content".parse::<KeySource>(), Ok(KeySource::Content));
        assert!("header:".parse::<KeySource>().is_err());
        assert!("value".parse::<KeySource>().is_err());
        let cache = KeyCache::new(Duration::from_secs(1), 1);
        let r = record(Some("h"), "v");
        let by = |s: &str| {
            s.parse::<KeySource>()
                .unwrap()
                .key_of(&r)
                .map(|c| c.into_owned())
        };
        assert_eq!(by("header:idempotency-key"), Some(b"h".to_vec()));
        assert_eq!(by("key"), None);
        assert!(by("content").is_some());
        assert!(KeyRules::new(&["[".into()], KeySource::RecordKey, cache).is_err());
    }

    #[test]
    fn the_first_rule_that_matches_a_topic_names_its_key_source() {
        let rules = KeyRules::with_sources(
            [
                ("orders-eu".to_string(), KeySource::Content),
                ("orders-*".to_string(), KeySource::RecordKey),
            ],
            KeyCache::new(Duration::from_secs(1), 1),
        )
        .unwrap();
        assert_eq!(rules.source_for("orders-eu"), Some(&KeySource::Content));
        assert_eq!(rules.source_for("orders-us"), Some(&KeySource::RecordKey));
        assert_eq!(rules.source_for("payments"), None);
    }
}
