//! Unit tests of the cache, and the consistency check they (and the model
//! check) run after every operation.

use super::*;

impl DedupCache {
    /// Asserts the shards' internal consistency.
    pub(super) fn check_invariants(&self) {
        let w = self.window;
        let mut total = 0;
        for (si, s) in self.shards.iter().enumerate() {
            let sh = s.lock().unwrap();
            assert_eq!(sh.batches.len(), sh.slots.len() * w);
            let mut live = 0;
            let mut refs = vec![0u32; sh.groups.len()];
            for (idx, slot) in sh.slots.iter().enumerate() {
                let ring = &sh.batches[idx * w..(idx + 1) * w];
                if slot.is_vacant() {
                    assert!(sh.free.contains(&(idx as u32)), "vacant slot not free");
                    assert!(
                        ring.iter().all(|e| e.id().is_none()),
                        "vacant slot holds batches"
                    );
                    continue;
                }
                live += 1;
                refs[slot.group as usize] += 1;
                let h = self.slot_hash(&sh, idx);
                assert_eq!(Self::shard_of(h), si, "slot in the wrong shard");
                assert!(
                    sh.index.find(h, |&i| i as usize == idx).is_some(),
                    "slot not indexed"
                );
                let (head, len) = (usize::from(slot.head), usize::from(slot.len));
                assert!(head < w && len <= w);
                for (p, e) in ring.iter().enumerate() {
                    let in_ring = (p + w - head) % w < len;
                    assert_eq!(
                        e.id().is_some(),
                        in_ring,
                        "ring position {p} of {head}+{len}"
                    );
                }
                // `Window::find` searches newest first: sound only because
                // no sequence range is held twice.
                let mut ranges: Vec<_> = ring
                    .iter()
                    .filter_map(|e| e.id())
                    .map(|(b, l, _)| (b, l))
                    .collect();
                ranges.sort_unstable();
                ranges.dedup();
                assert_eq!(ranges.len(), len, "a sequence range held twice");
            }
            assert_eq!(live, sh.live);
            assert!(live <= self.shard_capacity);
            assert_eq!(sh.index.len(), live);
            assert_eq!(sh.free.len(), sh.slots.len() - live);
            let mut groups = 0;
            for (g, group) in sh.groups.iter().enumerate() {
                match group {
                    Some(group) => {
                        groups += 1;
                        assert!(group.refs > 0);
                        assert_eq!(group.refs, refs[g], "group refs");
                        assert_eq!(group.hash, self.group_hash(&group.scope, &group.topic));
                        assert!(
                            sh.group_index
                                .find(group.hash, |&x| x as usize == g)
                                .is_some()
                        );
                    }
                    None => {
                        assert_eq!(refs[g], 0);
                        assert!(sh.free_groups.contains(&(g as u32)));
                    }
                }
            }
            assert_eq!(sh.group_index.len(), groups);
            assert_eq!(sh.free_groups.len(), sh.groups.len() - groups);
            total += live;
        }
        assert_eq!(total, self.len());
    }

    /// ⟨scope, topic⟩ groups held over all shards.
    fn groups(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap().group_index.len())
            .sum()
    }
}

fn key(pid: i64, p: i32) -> ProducerPartition {
    ProducerPartition {
        scope: Scope::Anonymous,
        producer_id: pid,
        topic: TopicKey::Name(Arc::from("t")),
        partition: p,
    }
}

fn id(epoch: i16, base: i32, last: i32, crc: u32) -> BatchId {
    BatchId {
        epoch,
        base_sequence: base,
        last_sequence: last,
        crc,
    }
}

fn committed(off: i64) -> Committed {
    Committed {
        base_offset: off,
        log_append_time_ms: -1,
        log_start_offset: 0,
    }
}

fn cache() -> Arc<DedupCache> {
    DedupCache::new(5, 1000, Duration::from_secs(60))
}

#[test]
fn committed_batch_is_a_duplicate_with_its_original_offset() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!("first sight must be fresh")
    };
    g.commit(committed(42));
    assert!(
        matches!(c.begin(key(1, 0), id(0, 0, 9, 7)), Lookup::Duplicate(x) if x.base_offset == 42)
    );
}

#[test]
fn another_principal_never_meets_the_batch() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    g.commit(committed(42));
    let mut other = key(1, 0);
    other.scope = Scope::Principal(Arc::from("mallory"));
    assert!(matches!(c.begin(other, id(0, 0, 9, 7)), Lookup::Fresh(_)));
}

#[test]
fn a_certificate_and_a_sasl_user_of_the_same_name_never_meet() {
    let c = cache();
    let name: Arc<str> = Arc::from("subject:3011");
    let mut by_cert = key(1, 0);
    by_cert.scope = Scope::Certificate(Arc::clone(&name));
    let Lookup::Fresh(g) = c.begin(by_cert.clone(), id(0, 0, 9, 7)) else {
        panic!()
    };
    g.commit(committed(42));
    let mut by_user = key(1, 0);
    by_user.scope = Scope::Principal(name);
    assert!(matches!(c.begin(by_user, id(0, 0, 9, 7)), Lookup::Fresh(_)));
    assert!(matches!(
        c.begin(by_cert, id(0, 0, 9, 7)),
        Lookup::Duplicate(_)
    ));
}

#[test]
fn a_fenced_epoch_is_never_answered_even_where_the_new_epoch_has_not_written() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    g.commit(committed(42));
    c.fence(1, 1);
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 9, 7)),
        Lookup::Forward
    ));
    assert!(matches!(
        c.begin(key(1, 1), id(1, 0, 0, 7)),
        Lookup::Fresh(_)
    ));
    c.fence(1, 0);
    assert!(
        matches!(c.begin(key(1, 0), id(0, 0, 9, 7)), Lookup::Forward),
        "fences only rise"
    );
}

#[test]
fn dropped_guard_forgets_the_batch() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    drop(g);
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 9, 7)),
        Lookup::Fresh(_)
    ));
}

#[test]
fn split_batch_with_same_base_but_shorter_range_is_not_a_duplicate() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    g.commit(committed(1));
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 4, 8)),
        Lookup::Fresh(_)
    ));
}

#[test]
fn different_crc_is_forwarded() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    g.commit(committed(1));
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 9, 8)),
        Lookup::Forward
    ));
}

#[test]
fn higher_epoch_drops_older_entries_and_older_epoch_is_forwarded() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    g.commit(committed(1));
    let Lookup::Fresh(g2) = c.begin(key(1, 0), id(1, 0, 0, 5)) else {
        panic!()
    };
    g2.commit(committed(10));
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 9, 7)),
        Lookup::Forward
    ));
    assert!(matches!(
        c.begin(key(1, 0), id(1, 0, 0, 5)),
        Lookup::Duplicate(_)
    ));
}

#[tokio::test]
async fn in_flight_duplicate_waits_for_the_original() {
    let c = cache();
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    let Lookup::Wait(rx) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!("in flight must wait")
    };
    g.commit(committed(5));
    assert_eq!(rx.await.unwrap(), Some(committed(5)));
    let Lookup::Fresh(g) = c.begin(key(2, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    let Lookup::Wait(rx) = c.begin(key(2, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    drop(g);
    assert_eq!(rx.await.unwrap(), None);
}

#[test]
fn window_keeps_the_last_five_batches() {
    let c = cache();
    for s in 0..6 {
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, s, s, 1)) else {
            panic!()
        };
        g.commit(committed(i64::from(s)));
    }
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 0, 1)),
        Lookup::Fresh(_)
    ));
    assert!(matches!(
        c.begin(key(1, 0), id(0, 5, 5, 1)),
        Lookup::Duplicate(_)
    ));
}

#[test]
fn capacity_bound_evicts_producer_partitions() {
    let c = DedupCache::new(5, 64, Duration::from_secs(60));
    for pid in 0..10_000 {
        if let Lookup::Fresh(g) = c.begin(key(pid, 0), id(0, 0, 0, 1)) {
            g.commit(committed(0));
        }
    }
    assert!(c.len() <= 64 + SHARDS, "len {}", c.len());
}

#[test]
fn idle_entries_expire() {
    let c = DedupCache::new(5, 100, Duration::from_secs(0));
    let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, 0, 0, 1)) else {
        panic!()
    };
    g.commit(committed(0));
    assert_eq!(c.sweep_idle(), 1);
    assert!(c.is_empty());
}

#[test]
fn entries_stay_compact() {
    // The memory per producer-partition (docs/performance.md) rests on
    // these sizes: 32 B per slot, 40 B per batch of the window.
    assert_eq!(std::mem::size_of::<Slot>(), 32);
    assert_eq!(std::mem::size_of::<BatchEntry>(), 40);
}

#[tokio::test]
async fn a_waiter_survives_the_removal_of_an_older_batch() {
    let c = cache();
    let Lookup::Fresh(g1) = c.begin(key(1, 0), id(0, 0, 0, 1)) else {
        panic!()
    };
    let Lookup::Fresh(g2) = c.begin(key(1, 0), id(0, 1, 1, 1)) else {
        panic!()
    };
    let Lookup::Wait(rx) = c.begin(key(1, 0), id(0, 1, 1, 1)) else {
        panic!()
    };
    drop(g1);
    c.check_invariants();
    g2.commit(committed(7));
    assert_eq!(rx.await.unwrap(), Some(committed(7)));
    assert!(matches!(
        c.begin(key(1, 0), id(0, 1, 1, 1)),
        Lookup::Duplicate(x) if x.base_offset == 7
    ));
    c.check_invariants();
}

#[test]
fn window_order_is_kept_when_a_middle_batch_is_removed() {
    let c = DedupCache::new(3, 1000, Duration::from_secs(60));
    let fresh = |s: i32| {
        let Lookup::Fresh(g) = c.begin(key(1, 0), id(0, s, s, 1)) else {
            panic!("batch {s} must be fresh")
        };
        g
    };
    fresh(0).commit(committed(0));
    let g1 = fresh(1);
    fresh(2).commit(committed(2));
    drop(g1);
    fresh(3).commit(committed(3));
    // [0, 2, 3]: full; the next batch rolls out 0, the oldest.
    fresh(4).commit(committed(4));
    c.check_invariants();
    for s in [2, 3, 4] {
        assert!(
            matches!(c.begin(key(1, 0), id(0, s, s, 1)), Lookup::Duplicate(x) if x.base_offset == i64::from(s)),
            "batch {s}"
        );
    }
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 0, 1)),
        Lookup::Fresh(_)
    ));
    c.check_invariants();
}

#[tokio::test]
async fn a_guard_never_resolves_a_batch_of_the_key_that_took_its_slot() {
    // One slot per shard: the first key landing in A's shard takes
    // A's slot.
    let c = DedupCache::new(5, 1, Duration::from_secs(60));
    let Lookup::Fresh(ga) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    let Lookup::Wait(mut rx) = c.begin(key(1, 0), id(0, 0, 9, 7)) else {
        panic!()
    };
    let mut guards = Vec::new();
    let mut last = 0;
    for pid in 2..10_000 {
        let Lookup::Fresh(g) = c.begin(key(pid, 0), id(0, 0, 9, 7)) else {
            panic!()
        };
        guards.push(g);
        if let Ok(outcome) = rx.try_recv() {
            assert_eq!(outcome, None, "eviction fails the waiter");
            last = pid;
            break;
        }
    }
    assert!(last > 0, "key 1 was never evicted");
    c.check_invariants();
    ga.commit(committed(999));
    assert!(
        matches!(c.begin(key(last, 0), id(0, 0, 9, 7)), Lookup::Wait(_)),
        "the new key's batch is still in flight"
    );
    assert!(matches!(
        c.begin(key(1, 0), id(0, 0, 9, 7)),
        Lookup::Fresh(_)
    ));
    c.check_invariants();
}

#[tokio::test]
async fn sweep_fails_waiters_and_releases_names() {
    let c = DedupCache::new(5, 100, Duration::from_secs(0));
    let mut k = key(1, 0);
    k.scope = Scope::Principal(Arc::from("alice"));
    k.topic = TopicKey::Id([7; 16]);
    let Lookup::Fresh(g) = c.begin(k.clone(), id(0, 0, 0, 1)) else {
        panic!()
    };
    let Lookup::Wait(rx) = c.begin(k.clone(), id(0, 0, 0, 1)) else {
        panic!()
    };
    assert_eq!(c.groups(), 1);
    assert_eq!(c.sweep_idle(), 1);
    assert_eq!(rx.await.unwrap(), None);
    assert_eq!(c.groups(), 0);
    g.commit(committed(1));
    assert!(c.is_empty());
    c.check_invariants();
}

#[test]
fn keys_sharing_a_scope_and_topic_share_one_group_per_shard() {
    // Room for every key in any shard: 500 keys over 64 shards of 16 slots
    // would overflow one of them in about one run of six.
    let c = DedupCache::new(5, 500 * SHARDS, Duration::from_secs(60));
    for pid in 0..500 {
        if let Lookup::Fresh(g) = c.begin(key(pid, 0), id(0, 0, 0, 1)) {
            g.commit(committed(0));
        }
    }
    assert_eq!(c.len(), 500);
    assert!(c.groups() <= SHARDS);
    c.check_invariants();
}

#[test]
fn mixed_operations_keep_the_shards_consistent() {
    // Small shards (2 slots each), window 3, keys over two scopes and
    // topics by name and id: insertion, eviction, epoch bumps, window
    // roll, waits, drops, commits, fences and sweeps.
    let c = DedupCache::new(3, 128, Duration::from_secs(60));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut guards: Vec<InFlightGuard> = Vec::new();
    let mut waits = Vec::new();
    for step in 0..10_000 {
        let r = next();
        let mut k = key((r % 97) as i64, ((r >> 8) % 3) as i32);
        if r >> 12 & 1 == 1 {
            k.scope = Scope::Principal(Arc::from("p"));
        }
        if r >> 13 & 1 == 1 {
            k.topic = TopicKey::Id([1; 16]);
        }
        let epoch = ((r >> 16) % 3) as i16;
        let seq = ((r >> 20) % 6) as i32;
        match (r >> 32) % 10 {
            0..=5 => match c.begin(k, id(epoch, seq, seq, 1)) {
                Lookup::Fresh(g) => guards.push(g),
                Lookup::Wait(rx) => waits.push(rx),
                Lookup::Duplicate(_) | Lookup::Forward => {}
            },
            6 | 7 if !guards.is_empty() => {
                let g = guards.swap_remove((r >> 40) as usize % guards.len());
                g.commit(committed(step));
            }
            8 if !guards.is_empty() => {
                drop(guards.swap_remove((r >> 40) as usize % guards.len()));
            }
            9 if r >> 40 & 0xff == 0 => {
                c.sweep_idle();
            }
            9 if r >> 40 & 0xff == 1 => c.fence(k.producer_id, epoch),
            _ => {}
        }
        c.check_invariants();
    }
    drop(guards);
    // Every waiter was answered: commit, failure, eviction or epoch.
    assert!(waits.len() > 10, "{} waits", waits.len());
    for mut rx in waits {
        assert!(rx.try_recv().is_ok());
    }
    c.check_invariants();
}
