//! The slab layout of one shard (see the cache's module doc): slots,
//! their batch windows as rings, and the ⟨scope, topic⟩ groups they share.

use hashbrown::HashTable;
use tokio::sync::oneshot;

use super::{Committed, Outcome, ProducerPartition, Scope, TopicKey};

pub(super) type Waiters = Vec<oneshot::Sender<Outcome>>;

/// One batch of a window. The sequence range and CRC sit in each variant
/// (not beside the enum) so they share the space after the tag: 40 B.
#[derive(Default)]
pub(super) enum BatchEntry {
    /// A ring position not in use.
    #[default]
    Empty,
    InFlight {
        base_sequence: i32,
        last_sequence: i32,
        crc: u32,
        token: u64,
        /// Boxed: a duplicate arriving while the original is at the broker
        /// is rare, and an unboxed `Vec` would size every entry.
        waiters: Option<Box<Waiters>>,
    },
    Committed {
        base_sequence: i32,
        last_sequence: i32,
        crc: u32,
        committed: Committed,
    },
}

impl BatchEntry {
    /// Sequence range and CRC; `None` for `Empty`.
    pub(super) fn id(&self) -> Option<(i32, i32, u32)> {
        match *self {
            BatchEntry::Empty => None,
            BatchEntry::InFlight {
                base_sequence,
                last_sequence,
                crc,
                ..
            }
            | BatchEntry::Committed {
                base_sequence,
                last_sequence,
                crc,
                ..
            } => Some((base_sequence, last_sequence, crc)),
        }
    }

    /// Fails any waiter: the original's outcome is unknown to us now.
    pub(super) fn fail_waiters(&mut self) {
        if let BatchEntry::InFlight { waiters, .. } = self
            && let Some(ws) = waiters.take()
        {
            for w in *ws {
                let _ = w.send(None);
            }
        }
    }
}

/// No group: the slot is free.
pub(super) const VACANT: u32 = u32::MAX;

/// One producer-partition. Its window is `batches[slot * window..]`.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub(super) producer_id: i64,
    pub(super) partition: i32,
    /// Index into `Shard::groups`, or `VACANT`.
    pub(super) group: u32,
    /// Seconds since the cache was created, at the last lookup.
    pub(super) last_access: u32,
    pub(super) epoch: i16,
    /// Ring position of the oldest batch.
    pub(super) head: u16,
    /// Batches held.
    pub(super) len: u16,
    /// CLOCK reference bit.
    pub(super) referenced: bool,
}

impl Slot {
    pub(super) const FREE: Slot = Slot {
        producer_id: 0,
        partition: 0,
        group: VACANT,
        last_access: 0,
        epoch: 0,
        head: 0,
        len: 0,
        referenced: false,
    };

    pub(super) fn is_vacant(&self) -> bool {
        self.group == VACANT
    }
}

/// A ⟨scope, topic⟩ pair, held once per shard for all its slots.
pub(super) struct Group {
    pub(super) scope: Scope,
    pub(super) topic: TopicKey,
    /// `DedupCache::group_hash` of the pair.
    pub(super) hash: u64,
    /// Slots using it.
    pub(super) refs: u32,
}

/// The window of one slot: its ring of batches, oldest first.
pub(super) struct Window<'a> {
    pub(super) slot: &'a mut Slot,
    pub(super) ring: &'a mut [BatchEntry],
}

impl Window<'_> {
    /// Ring position of the `i`-th oldest batch.
    pub(super) fn pos(&self, i: usize) -> usize {
        let p = usize::from(self.slot.head) + i;
        if p >= self.ring.len() {
            p - self.ring.len()
        } else {
            p
        }
    }

    pub(super) fn len(&self) -> usize {
        usize::from(self.slot.len)
    }

    pub(super) fn get_mut(&mut self, i: usize) -> &mut BatchEntry {
        let p = self.pos(i);
        &mut self.ring[p]
    }

    /// Newest first: a retry is most often of the latest batches. No two
    /// batches of a window share a sequence range, so the order of the
    /// search does not change what it finds.
    pub(super) fn find(&self, base_sequence: i32, last_sequence: i32) -> Option<usize> {
        (0..self.len()).rev().find(|&i| {
            self.ring[self.pos(i)]
                .id()
                .is_some_and(|(b, l, _)| b == base_sequence && l == last_sequence)
        })
    }

    /// Newest first, as `find`.
    pub(super) fn find_token(&self, token: u64) -> Option<usize> {
        (0..self.len()).rev().find(|&i| {
            matches!(self.ring[self.pos(i)], BatchEntry::InFlight { token: t, .. } if t == token)
        })
    }

    /// Appends a batch; the window must not be full.
    pub(super) fn push_back(&mut self, e: BatchEntry) {
        debug_assert!(self.len() < self.ring.len());
        let p = self.pos(self.len());
        self.ring[p] = e;
        self.slot.len += 1;
    }

    /// Removes the `i`-th oldest batch, failing its waiters; the younger
    /// ones move up, so the order is kept.
    pub(super) fn remove(&mut self, i: usize) {
        let p = self.pos(i);
        let mut e = std::mem::take(&mut self.ring[p]);
        e.fail_waiters();
        if i == 0 {
            self.slot.head = u16::try_from(self.pos(1)).unwrap_or(0);
        } else {
            for j in i..self.len() - 1 {
                let (a, b) = (self.pos(j), self.pos(j + 1));
                self.ring.swap(a, b);
            }
        }
        self.slot.len -= 1;
        if self.slot.len == 0 {
            self.slot.head = 0;
        }
    }

    /// Drops every batch, failing waiters; returns how many there were.
    pub(super) fn clear(&mut self) -> usize {
        let n = self.len();
        for i in 0..n {
            let p = self.pos(i);
            let mut e = std::mem::take(&mut self.ring[p]);
            e.fail_waiters();
        }
        self.slot.head = 0;
        self.slot.len = 0;
        n
    }
}

pub(super) struct Shard {
    /// Slot numbers, keyed by `DedupCache::key_hash`.
    pub(super) index: HashTable<u32>,
    pub(super) slots: Vec<Slot>,
    /// `window` entries per slot.
    pub(super) batches: Vec<BatchEntry>,
    /// Vacant slot numbers.
    pub(super) free: Vec<u32>,
    /// Occupied slots.
    pub(super) live: usize,
    /// CLOCK hand: the next slot number to look at.
    pub(super) hand: usize,
    /// ⟨scope, topic⟩ group numbers, keyed by `Group::hash`.
    pub(super) group_index: HashTable<u32>,
    pub(super) groups: Vec<Option<Group>>,
    pub(super) free_groups: Vec<u32>,
}

impl Shard {
    pub(super) fn new() -> Self {
        Shard {
            index: HashTable::new(),
            slots: Vec::new(),
            batches: Vec::new(),
            free: Vec::new(),
            live: 0,
            hand: 0,
            group_index: HashTable::new(),
            groups: Vec::new(),
            free_groups: Vec::new(),
        }
    }

    pub(super) fn group(&self, g: u32) -> &Group {
        match &self.groups[g as usize] {
            Some(g) => g,
            None => unreachable!("a slot refers to a freed group"),
        }
    }

    pub(super) fn window(&mut self, idx: usize, window: usize) -> Window<'_> {
        Window {
            slot: &mut self.slots[idx],
            ring: &mut self.batches[idx * window..(idx + 1) * window],
        }
    }

    /// The slot holding `key`, whose full hash is `hash`.
    pub(super) fn find(&self, hash: u64, key: &ProducerPartition) -> Option<usize> {
        let Shard {
            index,
            slots,
            groups,
            ..
        } = self;
        index
            .find(hash, |&i| {
                let s = &slots[i as usize];
                s.producer_id == key.producer_id
                    && s.partition == key.partition
                    && groups[s.group as usize]
                        .as_ref()
                        .is_some_and(|g| g.scope == key.scope && g.topic == key.topic)
            })
            .map(|&i| i as usize)
    }

    /// The group of `key`'s ⟨scope, topic⟩, made if new, with one more ref.
    pub(super) fn acquire_group(&mut self, group_hash: u64, key: &ProducerPartition) -> u32 {
        let Shard {
            group_index,
            groups,
            free_groups,
            ..
        } = self;
        let found = group_index.find(group_hash, |&g| {
            groups[g as usize]
                .as_ref()
                .is_some_and(|g| g.scope == key.scope && g.topic == key.topic)
        });
        if let Some(&g) = found {
            if let Some(group) = groups[g as usize].as_mut() {
                group.refs += 1;
            }
            return g;
        }
        let group = Group {
            scope: key.scope.clone(),
            topic: key.topic.clone(),
            hash: group_hash,
            refs: 1,
        };
        let g = match free_groups.pop() {
            Some(g) => {
                groups[g as usize] = Some(group);
                g
            }
            None => {
                groups.push(Some(group));
                u32::try_from(groups.len() - 1).expect("fewer groups than slots")
            }
        };
        group_index.insert_unique(group_hash, g, |&g| match &groups[g as usize] {
            Some(group) => group.hash,
            None => unreachable!("the group index holds a freed group"),
        });
        g
    }

    pub(super) fn release_group(&mut self, g: u32) {
        let Shard {
            group_index,
            groups,
            free_groups,
            ..
        } = self;
        let Some(group) = groups[g as usize].as_mut() else {
            return;
        };
        group.refs -= 1;
        if group.refs > 0 {
            return;
        }
        if let Ok(e) = group_index.find_entry(group.hash, |&x| x == g) {
            e.remove();
        }
        groups[g as usize] = None;
        free_groups.push(g);
    }
}
