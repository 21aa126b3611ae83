//! Redis key names and value formats of the shared store (pure, tested
//! here): what `store/mod.rs` documents, in one place.

use crate::dedup::cache::{BatchId, Committed, ProducerPartition, Scope, TopicKey};
use crate::dedup::keys::{KeyId, KeyOrigin};
use crate::dedup::store::{ClaimToken, KeySpace, StoredBatch, StoredKey};

/// A 64-bit hash of a dedup scope (length-prefixed fields: no two scopes
/// hash the same bytes).
fn scope_hash(scope: &Scope) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let (kind, name): (u8, &str) = match scope {
        Scope::Anonymous => (0, ""),
        Scope::Principal(u) => (1, u),
        Scope::Certificate(s) => (2, s),
        // Never shared (dedup::store::shareable); named for completeness.
        Scope::Connection(_) => (3, ""),
    };
    h.update(&[kind]);
    h.update(&(name.len() as u64).to_le_bytes());
    h.update(name.as_bytes());
    h.digest()
}

/// A 128-bit hash of a topic as dedup keys it (name, or id when unknown).
fn topic_hash(topic: &TopicKey) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    match topic {
        TopicKey::Name(n) => {
            h.update(&[0]);
            h.update(n.as_bytes());
        }
        TopicKey::Id(id) => {
            h.update(&[1]);
            h.update(id);
        }
    }
    h.digest128()
}

/// The hash tag of a producer's windows: every partition of one producer
/// in one Redis Cluster slot.
pub fn window_tag(key: &ProducerPartition) -> String {
    format!("{:016x}.{}", scope_hash(&key.scope), key.producer_id)
}

/// `kdp:w:{S.P}:T:N`.
pub fn window_key(key: &ProducerPartition) -> String {
    format!(
        "kdp:w:{{{}}}:{:032x}:{}",
        window_tag(key),
        topic_hash(&key.topic),
        key.partition
    )
}

/// `epoch,base,last,crc,offset,append_ms,start`.
pub fn encode_batch(b: &StoredBatch) -> String {
    format!(
        "{},{},{},{},{},{},{}",
        b.id.epoch,
        b.id.base_sequence,
        b.id.last_sequence,
        b.id.crc,
        b.committed.base_offset,
        b.committed.log_append_time_ms,
        b.committed.log_start_offset
    )
}

/// The batch an entry names; `None` for anything else (an entry another
/// version wrote, a damaged value): it is skipped, never guessed at.
pub fn decode_batch(s: &[u8]) -> Option<StoredBatch> {
    let s = std::str::from_utf8(s).ok()?;
    let mut f = s.split(',');
    let mut next = || f.next();
    let epoch = next()?.parse().ok()?;
    let base_sequence = next()?.parse().ok()?;
    let last_sequence = next()?.parse().ok()?;
    let crc = next()?.parse().ok()?;
    let base_offset: i64 = next()?.parse().ok()?;
    let log_append_time_ms = next()?.parse().ok()?;
    let log_start_offset = next()?.parse().ok()?;
    if next().is_some() || base_offset < 0 {
        return None;
    }
    Some(StoredBatch {
        id: BatchId {
            epoch,
            base_sequence,
            last_sequence,
            crc,
        },
        committed: Committed {
            base_offset,
            log_append_time_ms,
            log_start_offset,
        },
    })
}

/// The hash tag of a key space: all keys of one ⟨scope, topic⟩ in one
/// Redis Cluster slot, so one script claims them together.
pub fn key_tag(space: KeySpace) -> String {
    format!("{:016x}", space.0)
}

/// `kdp:k:{SPACE}:ID`.
pub fn key_name(space: KeySpace, id: KeyId) -> String {
    let [a, b] = id.words();
    format!("kdp:k:{{{}}}:{a:016x}{b:016x}", key_tag(space))
}

/// A claim's value: `f:REPLICA:N` (hex).
pub fn encode_claim(t: ClaimToken) -> String {
    format!("f:{:x}:{:x}", t.replica, t.n)
}

/// A committed key's value: `c:PARTITION:OFFSET`.
pub fn encode_origin(o: KeyOrigin) -> String {
    format!("c:{}:{}", o.partition, o.offset)
}

/// What the claim script found for a key: "" is this claim's. A value
/// this version cannot read counts as held by someone else: the record
/// waits (bounded), then goes to the broker; it is never dropped on it.
pub fn decode_key(v: &[u8]) -> StoredKey {
    let held_by_unknown = StoredKey::Held(ClaimToken {
        replica: u64::MAX,
        n: u64::MAX,
    });
    if v.is_empty() {
        return StoredKey::Claimed;
    }
    let Ok(s) = std::str::from_utf8(v) else {
        return held_by_unknown;
    };
    let mut f = s.split(':');
    match (f.next(), f.next(), f.next(), f.next()) {
        (Some("c"), Some(p), Some(o), None) => match (p.parse(), o.parse::<i64>()) {
            (Ok(partition), Ok(offset)) => StoredKey::Committed(KeyOrigin { partition, offset }),
            _ => held_by_unknown,
        },
        (Some("f"), Some(r), Some(n), None) => {
            match (u64::from_str_radix(r, 16), u64::from_str_radix(n, 16)) {
                (Ok(replica), Ok(n)) => StoredKey::Held(ClaimToken { replica, n }),
                _ => held_by_unknown,
            }
        }
        _ => held_by_unknown,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    fn pp(scope: Scope, pid: i64, topic: &str, partition: i32) -> ProducerPartition {
        ProducerPartition {
            scope,
            producer_id: pid,
            topic: TopicKey::Name(Arc::from(topic)),
            partition,
        }
    }

    #[test]
    fn one_producers_partitions_share_a_hash_tag_and_nothing_else() {
        let a = pp(Scope::Anonymous, 7, "t", 0);
        let b = pp(Scope::Anonymous, 7, "u", 3);
        assert_eq!(window_tag(&a), window_tag(&b));
        assert_ne!(window_key(&a), window_key(&b));
        let other = pp(Scope::Principal("alice".into()), 7, "t", 0);
        assert_ne!(window_tag(&a), window_tag(&other));
        assert!(window_key(&a).starts_with("kdp:w:{"));
    }

    #[test]
    fn a_batch_survives_its_text_form() {
        let b = StoredBatch {
            id: BatchId {
                epoch: 3,
                base_sequence: i32::MAX - 1,
                last_sequence: 0,
                crc: u32::MAX,
            },
            committed: Committed {
                base_offset: 1 << 40,
                log_append_time_ms: -1,
                log_start_offset: 12,
            },
        };
        assert_eq!(decode_batch(encode_batch(&b).as_bytes()), Some(b));
    }

    #[test]
    fn key_values_survive_their_text_form() {
        let t = ClaimToken {
            replica: u64::MAX - 3,
            n: 17,
        };
        assert_eq!(decode_key(encode_claim(t).as_bytes()), StoredKey::Held(t));
        let o = KeyOrigin {
            partition: 3,
            offset: 1 << 35,
        };
        assert_eq!(
            decode_key(encode_origin(o).as_bytes()),
            StoredKey::Committed(o)
        );
        assert_eq!(decode_key(b""), StoredKey::Claimed);
        for junk in [&b"c:x:1"[..], b"f:zz:1", b"q", b"\xff", b"c:1:2:3"] {
            assert!(
                matches!(decode_key(junk), StoredKey::Held(_)),
                "{junk:?} must never read as committed"
            );
        }
    }

    #[test]
    fn one_key_spaces_keys_share_a_hash_tag() {
        let space = KeySpace::new(&Scope::Anonymous, &TopicKey::Name(Arc::from("orders")));
        let a = key_name(space, KeyId::new(&Scope::Anonymous, "orders", b"a"));
        let b = key_name(space, KeyId::new(&Scope::Anonymous, "orders", b"b"));
        let tag = |k: &str| k[k.find('{').unwrap()..=k.find('}').unwrap()].to_string();
        assert_eq!(tag(&a), tag(&b));
        assert_ne!(a, b);
    }

    #[test]
    fn damaged_entries_are_skipped() {
        for bad in [
            &b""[..],
            b"1,2,3",
            b"1,2,3,4,5,6,7,8",
            b"x,2,3,4,5,6,7",
            b"1,2,3,4,-1,6,7",
            b"\xff",
        ] {
            assert_eq!(decode_batch(bad), None, "{bad:?}");
        }
    }
}
