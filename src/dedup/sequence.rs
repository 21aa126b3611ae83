//! Sequence numbers of idempotent producers whose records key dedup removed.
//!
//! The broker checks, per producer id, epoch and partition, that each
//! batch's base sequence follows the last sequence it appended
//! (ProducerStateManager; OUT_OF_ORDER_SEQUENCE_NUMBER otherwise), and it
//! recognises a retried batch by its sequence range. When key dedup removes
//! records from an idempotent producer's batch, or answers a batch of
//! duplicates only, the broker has seen fewer sequences than the producer
//! sent. So every later batch of that producer-partition goes out with its
//! base sequence lowered by the number of records removed before it (its
//! *shift*), and a batch sent again (a retry after a lost answer, a broken
//! connection, a retriable error) goes out exactly as its first copy did:
//! the same records removed, the same shift. The producer never notices.
//!
//! A *line* per ⟨scope, producer id, topic, partition⟩ holds the producer's
//! epoch, the sequence expected next with the shift that applies to it, and
//! the producer's last [`RECENT`] batches (the Java client and librdkafka
//! keep at most 5 in flight): each with its sequence range and CRC, its
//! shift, what was removed, and whether the broker (or the proxy, for a
//! batch of duplicates only) acknowledged it. A batch of duplicates only is
//! answered only once every earlier batch of the line is acknowledged: were
//! an earlier one to fail, the producer would see a later sequence
//! acknowledged before an earlier one, which no broker does.
//!
//! A higher epoch starts the line afresh (the producer starts its
//! sequences at 0); a batch of an older epoch, or a retry older than the
//! recent batches, goes out as the client sent it (the broker answers it).
//!
//! Bounds: a line costs about 120 B plus 56 B per recent batch (a few
//! hundred bytes). Lines that never shifted anything are dropped after
//! [`PLAIN_IDLE`] without traffic; lines with a shift are kept for
//! [`SHIFTED_IDLE`], longer than the broker keeps an idle producer's state
//! (`producer.id.expiration.ms`, one day by default), so a producer that
//! comes back finds its shift. Beyond [`MAX_LINES`] the least recently used
//! line of a shard goes. A line lost while its producer still sends (the
//! bound, a proxy restart) costs that producer one
//! OUT_OF_ORDER_SEQUENCE_NUMBER on that partition: the broker refuses the
//! batch, so nothing is written twice or lost, and the client reports it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

// Under the model check (`model.rs`) the line locks are shuttle's, so that
// every lock is a point where its scheduler may switch threads.
#[cfg(all(test, feature = "model-check"))]
use shuttle::sync::{Mutex, MutexGuard};
#[cfg(not(all(test, feature = "model-check")))]
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use super::cache::{BatchId, Committed, ProducerPartition};

const SHARDS: usize = 16;

#[cfg(all(test, feature = "model-check"))]
mod model;

/// Batches remembered per line.
pub const RECENT: usize = 8;

/// A line that never shifted anything is dropped after this long idle.
pub const PLAIN_IDLE: Duration = Duration::from_secs(600);

/// A line with a shift is dropped after this long idle: a day and an hour.
pub const SHIFTED_IDLE: Duration = Duration::from_secs(25 * 3600);

/// Lines held at most.
pub const MAX_LINES: usize = 1_000_000;

/// Sequence space: 0..=i32::MAX, wrapping to 0.
const SPACE: i64 = 1 << 31;

/// `sequence - shift` in the producer's sequence space.
pub fn shifted(sequence: i32, shift: u32) -> i32 {
    (i64::from(sequence) - i64::from(shift)).rem_euclid(SPACE) as i32
}

/// Whether `a` is at or ahead of `b` (less than half the space ahead).
fn at_or_ahead(a: i32, b: i32) -> bool {
    (i64::from(a) - i64::from(b)).rem_euclid(SPACE) < SPACE / 2
}

/// What was removed from a batch before it went to the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    /// Nothing: sent whole (its base sequence shifted when an earlier batch
    /// lost records).
    Nothing,
    /// The records at these positions (in the client's batch).
    Records(Arc<[u32]>),
    /// Every record was in the cluster already: answered by the proxy.
    All(Committed),
}

impl Removal {
    fn count(&self, records: u32) -> u32 {
        match self {
            Removal::Nothing => 0,
            Removal::Records(r) => r.len() as u32,
            Removal::All(_) => records,
        }
    }
}

/// How a batch must go out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Seen before: exactly as then.
    Again { shift: u32, removal: Removal },
    /// Not seen before: key dedup decides what to remove; it goes out
    /// `shift` sequences lower.
    New { shift: u32 },
    /// As the client sent it, remembering nothing: an older epoch, or a
    /// retry older than the batches the line remembers.
    Untouched,
}

/// What the caller does with a batch it planned.
#[derive(Debug)]
pub enum Sending {
    /// To the broker, `shift` sequences lower; the ticket is resolved with
    /// the broker's answer.
    Broker { shift: u32, ticket: SeqTicket },
    /// Answered by the proxy (a batch of duplicates only).
    Answer(Committed),
    /// An earlier batch of the line is at the broker: wait for it, then
    /// plan again.
    Wait(oneshot::Receiver<()>),
    /// An earlier batch failed: this one cannot be acknowledged before it.
    /// The client must send both again (the connection is closed).
    Gap,
}

#[derive(Debug)]
enum State {
    InFlight {
        token: u64,
        waiters: Vec<oneshot::Sender<()>>,
    },
    Acked,
    Failed,
}

#[derive(Debug)]
struct Sent {
    base: i32,
    last: i32,
    crc: u32,
    shift: u32,
    removal: Removal,
    state: State,
}

#[derive(Debug)]
struct Line {
    epoch: i16,
    /// The sequence expected next, and the shift that applies to it.
    next: Option<i32>,
    shift: u32,
    recent: VecDeque<Sent>,
    /// Second (since the map started) of the last batch.
    touched: u32,
}

impl Line {
    fn new(epoch: i16, now: u32) -> Line {
        Line {
            epoch,
            next: None,
            shift: 0,
            recent: VecDeque::new(),
            touched: now,
        }
    }

    fn idle_limit(&self) -> u32 {
        let d = if self.shift == 0 {
            PLAIN_IDLE
        } else {
            SHIFTED_IDLE
        };
        d.as_secs() as u32
    }
}

#[derive(Default)]
struct Shard {
    lines: HashMap<ProducerPartition, Line>,
}

/// Lines dropped, by reason, since the map was created.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LineEvictions {
    /// Idle past their limit.
    pub idle: u64,
    /// The least recently used beyond [`MAX_LINES`].
    pub capacity: u64,
    /// Of those, lines that held a shift: their producer, should it send
    /// again, gets OUT_OF_ORDER_SEQUENCE_NUMBER once.
    pub shifted: u64,
}

/// Every line, sharded by producer-partition.
pub struct Sequences {
    shards: Box<[Mutex<Shard>]>,
    shard_capacity: usize,
    started: Instant,
    next_token: AtomicU64,
    len: AtomicUsize,
    idle: AtomicU64,
    capacity: AtomicU64,
    shifted: AtomicU64,
    /// A bug the model check plants to show it catches it: a batch of
    /// duplicates only answered without looking at the batches before it.
    #[cfg(all(test, feature = "model-check"))]
    plant_skip_predecessors: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Sequences {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sequences")
            .field("lines", &self.len())
            .finish()
    }
}

impl Sequences {
    pub fn new(max_lines: usize) -> Arc<Sequences> {
        Arc::new(Sequences {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            shard_capacity: max_lines.div_ceil(SHARDS).max(1),
            started: Instant::now(),
            next_token: AtomicU64::new(1),
            len: AtomicUsize::new(0),
            idle: AtomicU64::new(0),
            capacity: AtomicU64::new(0),
            shifted: AtomicU64::new(0),
            #[cfg(all(test, feature = "model-check"))]
            plant_skip_predecessors: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Lines held now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn evictions(&self) -> LineEvictions {
        LineEvictions {
            idle: self.idle.load(Ordering::Relaxed),
            capacity: self.capacity.load(Ordering::Relaxed),
            shifted: self.shifted.load(Ordering::Relaxed),
        }
    }

    fn now(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    fn shard_of(&self, key: &ProducerPartition) -> &Mutex<Shard> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    fn evicted(&self, line: &Line, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        if line.shift != 0 {
            self.shifted.fetch_add(1, Ordering::Relaxed);
        }
        self.len.fetch_sub(1, Ordering::Relaxed);
    }

    /// Locks the line of `key` and plans `batch` (of `records` records) on
    /// it. The line stays locked until the returned [`Planned`] is sent or
    /// dropped, so two copies of one batch never plan at once.
    pub fn plan(
        self: &Arc<Self>,
        key: &ProducerPartition,
        batch: BatchId,
        records: u32,
    ) -> Planned<'_> {
        let now = self.now();
        let mut shard = self.shard_of(key).lock().unwrap_or_else(|e| e.into_inner());
        if !shard.lines.contains_key(key) {
            if shard.lines.len() >= self.shard_capacity {
                self.make_room(&mut shard, now);
            }
            shard.lines.insert(key.clone(), Line::new(batch.epoch, now));
            self.len.fetch_add(1, Ordering::Relaxed);
        }
        let line = shard.lines.get_mut(key).expect("inserted above");
        line.touched = now;
        if batch.epoch > line.epoch {
            // A new epoch starts its sequences at 0: nothing carries over.
            *line = Line::new(batch.epoch, now);
        }
        let (plan, at) = if batch.epoch < line.epoch {
            (Plan::Untouched, None)
        } else if let Some(i) = line
            .recent
            .iter()
            .position(|s| s.base == batch.base_sequence)
        {
            let s = &line.recent[i];
            if s.last == batch.last_sequence && s.crc == batch.crc {
                let plan = Plan::Again {
                    shift: s.shift,
                    removal: s.removal.clone(),
                };
                (plan, Some(i))
            } else {
                // The same start with other records (a batch the client
                // split after MESSAGE_TOO_LARGE): it replaces the old one
                // and everything after it.
                (Plan::New { shift: s.shift }, Some(i))
            }
        } else {
            match line.next {
                Some(next) if !at_or_ahead(batch.base_sequence, next) => (Plan::Untouched, None),
                // Expected next, or ahead of it (batches sent elsewhere):
                // the shift so far applies.
                _ => (Plan::New { shift: line.shift }, None),
            }
        };
        Planned {
            map: Arc::clone(self),
            shard,
            key: key.clone(),
            batch,
            records,
            plan,
            at,
        }
    }

    /// Drops idle lines of `shard`, then the least recently used while it
    /// is full.
    fn make_room(&self, shard: &mut Shard, now: u32) {
        self.trim(shard, now);
        while shard.lines.len() >= self.shard_capacity {
            let Some(oldest) = shard
                .lines
                .iter()
                .min_by_key(|(_, l)| l.touched)
                .map(|(k, _)| k.clone())
            else {
                return;
            };
            if let Some(line) = shard.lines.remove(&oldest) {
                self.evicted(&line, &self.capacity);
            }
        }
    }

    fn trim(&self, shard: &mut Shard, now: u32) {
        let mut gone = Vec::new();
        shard.lines.retain(|_, l| {
            let keep = now.saturating_sub(l.touched) < l.idle_limit();
            if !keep {
                gone.push(l.shift);
            }
            keep
        });
        for shift in gone {
            self.idle.fetch_add(1, Ordering::Relaxed);
            if shift != 0 {
                self.shifted.fetch_add(1, Ordering::Relaxed);
            }
            self.len.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Drops idle lines from every shard (called periodically).
    pub fn sweep(&self) {
        let now = self.now();
        for s in self.shards.iter() {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            self.trim(&mut s, now);
        }
    }

    /// Ends a batch at the broker: acknowledged or not.
    fn resolve(&self, key: &ProducerPartition, base: i32, token: u64, acked: bool) {
        let mut shard = self.shard_of(key).lock().unwrap_or_else(|e| e.into_inner());
        let Some(sent) = shard
            .lines
            .get_mut(key)
            .and_then(|l| l.recent.iter_mut().find(|s| s.base == base))
        else {
            return;
        };
        if !matches!(sent.state, State::InFlight { token: t, .. } if t == token) {
            return;
        }
        let new = if acked { State::Acked } else { State::Failed };
        if let State::InFlight { waiters, .. } = std::mem::replace(&mut sent.state, new) {
            drop(shard);
            for w in waiters {
                let _ = w.send(());
            }
        }
    }
}

/// A batch planned on its locked line.
pub struct Planned<'a> {
    map: Arc<Sequences>,
    shard: MutexGuard<'a, Shard>,
    key: ProducerPartition,
    batch: BatchId,
    records: u32,
    plan: Plan,
    /// The recent batch with the same base sequence, if any.
    at: Option<usize>,
}

impl std::fmt::Debug for Planned<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Planned").field("plan", &self.plan).finish()
    }
}

impl Planned<'_> {
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Records how the batch goes out: `removal` for a new batch (an
    /// `Again` plan keeps its own). Untouched plans record nothing and go
    /// to the broker unshifted.
    pub fn send(self, removal: Removal) -> Sending {
        let Planned {
            map,
            mut shard,
            key,
            batch,
            records,
            plan,
            at,
        } = self;
        let token = map.next_token.fetch_add(1, Ordering::Relaxed);
        let Some(line) = shard.lines.get_mut(&key) else {
            // Unreachable: the line was made under this lock.
            return Sending::Gap;
        };
        let (shift, removal, index) = match plan {
            Plan::Untouched => {
                return Sending::Broker {
                    shift: 0,
                    ticket: SeqTicket::none(),
                };
            }
            Plan::Again { shift, removal } => (shift, removal, at.expect("found")),
            Plan::New { shift } => {
                if let Some(i) = at {
                    line.recent.truncate(i);
                }
                line.recent.push_back(Sent {
                    base: batch.base_sequence,
                    last: batch.last_sequence,
                    crc: batch.crc,
                    shift,
                    removal: removal.clone(),
                    state: State::Failed,
                });
                if line.recent.len() > RECENT {
                    line.recent.pop_front();
                }
                line.next = Some(increment(batch.last_sequence));
                line.shift =
                    ((i64::from(shift) + i64::from(removal.count(records))) % SPACE) as u32;
                (shift, removal, line.recent.len() - 1)
            }
        };
        #[cfg(all(test, feature = "model-check"))]
        let removal = match removal {
            Removal::All(answer) if map.plant_skip_predecessors.load(Ordering::Relaxed) => {
                line.recent[index].state = State::Acked;
                return Sending::Answer(answer);
            }
            r => r,
        };
        if let Removal::All(answer) = removal {
            // Answered only behind acknowledged predecessors.
            let (earlier, rest) = line.recent.make_contiguous().split_at_mut(index);
            let this = &mut rest[0];
            if let Some(State::InFlight { waiters, .. }) = earlier
                .iter_mut()
                .map(|s| &mut s.state)
                .find(|s| matches!(s, State::InFlight { .. }))
            {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                this.state = State::Failed;
                return Sending::Wait(rx);
            }
            if earlier.iter().any(|s| matches!(s.state, State::Failed)) {
                this.state = State::Failed;
                return Sending::Gap;
            }
            this.state = State::Acked;
            return Sending::Answer(answer);
        }
        let sent = &mut line.recent[index];
        sent.state = State::InFlight {
            token,
            waiters: Vec::new(),
        };
        Sending::Broker {
            shift,
            ticket: SeqTicket {
                owner: Some(Box::new((map, key, batch.base_sequence, token))),
            },
        }
    }
}

fn increment(sequence: i32) -> i32 {
    crate::codec::record_batch::increment_sequence(sequence, 1)
}

/// A batch at the broker: acknowledged ([`SeqTicket::ack`]) or, when
/// dropped unacknowledged, failed (a later batch of duplicates only then
/// cannot be answered before it is sent again).
#[derive(Debug)]
pub struct SeqTicket {
    // Boxed: a ticket rides in every forwarded partition.
    #[allow(clippy::type_complexity)]
    owner: Option<Box<(Arc<Sequences>, ProducerPartition, i32, u64)>>,
}

impl SeqTicket {
    fn none() -> SeqTicket {
        SeqTicket { owner: None }
    }

    pub fn ack(mut self) {
        if let Some(o) = self.owner.take() {
            let (map, key, base, token) = *o;
            map.resolve(&key, base, token, true);
        }
    }
}

impl Drop for SeqTicket {
    fn drop(&mut self) {
        if let Some(o) = self.owner.take() {
            let (map, key, base, token) = *o;
            map.resolve(&key, base, token, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dedup::cache::{Scope, TopicKey};

    fn key(pid: i64) -> ProducerPartition {
        ProducerPartition {
            scope: Scope::Anonymous,
            producer_id: pid,
            topic: TopicKey::Name("t".into()),
            partition: 0,
        }
    }

    fn batch(epoch: i16, base: i32, last: i32, crc: u32) -> BatchId {
        BatchId {
            epoch,
            base_sequence: base,
            last_sequence: last,
            crc,
        }
    }

    fn sent(s: Sending) -> (u32, SeqTicket) {
        match s {
            Sending::Broker { shift, ticket } => (shift, ticket),
            other => panic!("expected the broker, got {other:?}"),
        }
    }

    #[test]
    fn shifts_wrap_in_the_sequence_space() {
        assert_eq!(shifted(10, 3), 7);
        assert_eq!(shifted(1, 3), i32::MAX - 1);
        assert!(at_or_ahead(0, i32::MAX));
        assert!(!at_or_ahead(i32::MAX, 0));
    }

    #[test]
    fn a_split_batch_replaces_what_followed_its_start() {
        let m = Sequences::new(100);
        let k = key(1);
        let removed: Arc<[u32]> = vec![0, 1].into();
        let (_, t0) = sent(
            m.plan(&k, batch(0, 0, 9, 1), 10)
                .send(Removal::Records(removed)),
        );
        t0.ack();
        let p = m.plan(&k, batch(0, 10, 19, 2), 10);
        assert_eq!(p.plan(), &Plan::New { shift: 2 });
        let (_, _t1) = sent(p.send(Removal::Records(vec![5].into())));
        // The client split 10..19 after MESSAGE_TOO_LARGE: 10..14 replaces
        // it with the shift before it, and the removal in the old 10..19
        // no longer counts.
        let p = m.plan(&k, batch(0, 10, 14, 3), 5);
        assert_eq!(p.plan(), &Plan::New { shift: 2 });
        drop(sent(p.send(Removal::Nothing)));
        assert_eq!(
            m.plan(&k, batch(0, 15, 19, 4), 5).plan(),
            &Plan::New { shift: 2 }
        );
    }

    #[test]
    fn older_epochs_and_old_retries_go_out_untouched() {
        let m = Sequences::new(100);
        let k = key(1);
        drop(sent(
            m.plan(&k, batch(3, 0, 0, 1), 1).send(Removal::Nothing),
        ));
        assert_eq!(m.plan(&k, batch(2, 1, 1, 1), 1).plan(), &Plan::Untouched);
        for n in 1..=RECENT as i32 + 1 {
            drop(sent(
                m.plan(&k, batch(3, n, n, 1), 1).send(Removal::Nothing),
            ));
        }
        // Sequence 0 has left the recent batches: the broker decides.
        assert_eq!(m.plan(&k, batch(3, 0, 0, 1), 1).plan(), &Plan::Untouched);
    }

    #[test]
    fn the_least_recently_used_line_goes_beyond_the_bound() {
        let m = Sequences::new(SHARDS);
        for pid in 0..(4 * SHARDS) as i64 {
            drop(sent(
                m.plan(&key(pid), batch(0, 0, 0, 1), 1)
                    .send(Removal::Records(vec![0].into())),
            ));
        }
        assert!(m.len() <= SHARDS);
        let e = m.evictions();
        assert_eq!(e.capacity as usize + m.len(), 4 * SHARDS);
        assert_eq!(e.shifted, e.capacity);
    }
}
