//! Record-level dedup by idempotency key, for the topics that opt in: what
//! the broker cannot see (an application that sends a record again, several
//! instances sending the same event, a producer without idempotence).
//!
//! The rules (docs/idempotency-keys.md has the whole of them):
//! * Only batches of acks=all requests, neither transactional nor control,
//!   that decode (CRC, codec, varints) are read; anything else goes to the
//!   broker untouched. Batches of idempotent producers (producer id ≥ 0)
//!   are left to the broker's own dedup for now: removing records from them
//!   would shift their sequence numbers.
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

use super::cache::{Committed, TopicKey};
use super::classify::{Action, Forward, PartitionBatch, Pause};
use super::keys::{Claim, KeyCache, KeyClaims, KeyId, KeyOrigin};
use super::outcome::Outcomes;
use crate::codec::record_batch::{NO_PRODUCER_ID, parse_single_batch_header};
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

/// Which topics are deduplicated by key, from where keys come, and the
/// cache that holds them.
#[derive(Debug)]
pub struct KeyRules {
    topics: Vec<glob::Pattern>,
    source: KeySource,
    cache: Arc<KeyCache>,
}

impl KeyRules {
    /// `topics`: names or globs (`orders-*`). Errors name the bad pattern.
    pub fn new(topics: &[String], source: KeySource, cache: Arc<KeyCache>) -> Result<Self, String> {
        let topics = topics
            .iter()
            .map(|t| glob::Pattern::new(t).map_err(|e| format!("topic pattern '{t}': {e}")))
            .collect::<Result<_, _>>()?;
        Ok(KeyRules {
            topics,
            source,
            cache,
        })
    }

    pub fn cache(&self) -> &Arc<KeyCache> {
        &self.cache
    }

    pub fn applies_to(&self, topic: &str) -> bool {
        self.topics.iter().any(|p| p.matches(topic))
    }

    fn key_of<'a>(&self, r: &'a Record) -> Option<Cow<'a, [u8]>> {
        match &self.source {
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

/// Classifies one partition by its records' keys; `None` when key dedup
/// does not apply to it (the batch-level decision stands).
pub(crate) fn classify_keys(
    b: &PartitionBatch<'_>,
    rules: &KeyRules,
    out: &mut Outcomes,
) -> Option<Action> {
    let TopicKey::Name(topic) = &b.topic else {
        // A topic id whose name is not known yet: its rules cannot be told.
        return None;
    };
    if b.acks != -1 || !rules.applies_to(topic) {
        return None;
    }
    let records = b.records?;
    let header = parse_single_batch_header(records).ok()?;
    if header.is_transactional() || header.is_control() || header.producer_id != NO_PRODUCER_ID {
        return None;
    }
    let batch = match decode_batch(records) {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "batch not decodable for key dedup; forwarding untouched");
            out.key_batches_undecodable += 1;
            return None;
        }
    };
    let mut claims = KeyClaims::new(&rules.cache);
    let mut seen = HashSet::with_capacity(batch.records.len());
    let mut kept: Vec<Record> = Vec::with_capacity(batch.records.len());
    let mut first_origin: Option<KeyOrigin> = None;
    let mut counts = Outcomes::default();
    for r in batch.records {
        let Some(key) = rules.key_of(&r) else {
            counts.key_records_unkeyed += 1;
            kept.push(r);
            continue;
        };
        let id = KeyId::new(b.scope, topic, &key);
        if !seen.insert(id) {
            counts.key_records_duplicate += 1;
            counts.bytes_saved += record_size(&r);
            continue;
        }
        match rules.cache.claim(id, kept.len() as u32, &mut claims) {
            Claim::Fresh => {
                counts.key_records_fresh += 1;
                kept.push(r);
            }
            Claim::Duplicate(origin) => {
                counts.key_records_duplicate += 1;
                counts.bytes_saved += record_size(&r);
                first_origin.get_or_insert(origin);
            }
            // Another batch carries this key now: let go of what this one
            // claimed (copies waiting for those keys go ahead) and wait.
            Claim::InFlight(rx) => return Some(Action::Wait(Pause::Key(rx))),
        }
    }
    let keys = (!claims.is_empty()).then_some(claims);
    if counts.key_records_duplicate == 0 {
        out.add(counts);
        return Some(Action::Forward(Forward {
            guard: None,
            keys,
            replace: None,
        }));
    }
    if kept.is_empty() {
        // Every record is in the cluster already. The answer carries the
        // first original's offset when it is on this partition; otherwise
        // -1, as an acks=0 answer does: success, no offset to tell.
        let base_offset = first_origin
            .filter(|o| o.partition == b.partition)
            .map_or(-1, |o| o.offset);
        counts.key_batches_answered += 1;
        out.add(counts);
        return Some(Action::Synthetic(Committed {
            base_offset,
            log_append_time_ms: -1,
            log_start_offset: -1,
        }));
    }
    match encode_batch(
        &batch.header,
        batch.compression,
        header.base_sequence,
        &kept,
    ) {
        Ok(replace) => {
            counts.key_batches_reencoded += 1;
            out.add(counts);
            Some(Action::Forward(Forward {
                guard: None,
                keys,
                replace: Some(replace),
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
                batch_of(77, 0, Compression::None, &[Some("a")]),
            ),
            request(
                "orders-eu",
                -1,
                batch_of(-1, 0x10, Compression::None, &[Some("a")]),
            ),
            request("orders-eu", -1, Bytes::from(corrupt)),
        ] {
            let (decision, out) = decide(&d, req);
            assert!(matches!(decision, Decision::Forward(_)), "{decision:?}");
            assert_eq!(out.key_records_duplicate, 0);
        }
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
            KeyRules::new(&[], s.parse().unwrap(), Arc::clone(&cache))
                .unwrap()
                .key_of(&r)
                .map(|c| c.into_owned())
        };
        assert_eq!(by("header:idempotency-key"), Some(b"h".to_vec()));
        assert_eq!(by("key"), None);
        assert!(by("content").is_some());
        assert!(KeyRules::new(&["[".into()], KeySource::RecordKey, cache).is_err());
    }
}
