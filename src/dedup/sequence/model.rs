//! Model check of the sequence lines (docs/idempotency-keys.md, rule 2)
//! under shuttle: many schedules of one idempotent producer, a retry of its
//! first batch on another connection, a broker that acknowledges or
//! refuses, and a sweeper, all on one line.
//!
//! Run it with `cargo test --features model-check --lib dedup::sequence::model`
//! (`KDP_MODEL_ITERATIONS` schedules per check, `KDP_MODEL_SEED` the seed).
//!
//! The producer sends b0 (sequences 0-1; key dedup removes its second
//! record or nothing), b1 (sequence 2: a duplicate only, answered by the
//! proxy) and b2 (sequence 3). The broker refuses a batch now and then (at
//! most twice a schedule), so b1 meets b0 in flight, acknowledged or
//! refused; after a gap the producer sends b0 and b1 again, as a client
//! does on a new connection. Invariants:
//!
//! * b1 is answered only after an acknowledgement of b0 (never ahead of a
//!   batch the broker did not take), and a gap follows a refusal of b0;
//! * b0 goes out with the same removal every time, and b2 with the shift
//!   of what was removed before it (b0's removal plus b1);
//! * every wait ends (a waiter left blocked is a deadlock shuttle reports),
//!   and the producer is done within a bounded number of attempts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use shuttle::future::block_on;
use shuttle::rand::{Rng, thread_rng};
use shuttle::scheduler::{PctScheduler, RandomScheduler};
use shuttle::sync::mpsc;
use shuttle::{Config, Runner, thread};

use super::*;
use crate::dedup::cache::{Scope, TopicKey};

const DEFAULT_ITERATIONS: usize = 10_000;
const DEFAULT_SEED: u64 = 0x6b64_705f_7365_7173;

const ANSWER: Committed = Committed {
    base_offset: 7,
    log_append_time_ms: -1,
    log_start_offset: -1,
};

fn key() -> ProducerPartition {
    ProducerPartition {
        scope: Scope::Anonymous,
        producer_id: 1,
        topic: TopicKey::Name("t".into()),
        partition: 0,
    }
}

fn batch(base: i32, last: i32) -> BatchId {
    BatchId {
        epoch: 0,
        base_sequence: base,
        last_sequence: last,
        crc: 10 + base as u32,
    }
}

/// Paths the schedules took (a check that never waits or never meets a gap
/// would prove little).
static WAITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static GAPS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
static ANSWERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// What the model broker did with b0, set before the ticket is resolved.
#[derive(Default)]
struct Broker {
    b0_acked: AtomicBool,
    b0_refused: AtomicBool,
}

fn one_schedule(plant: bool) {
    let map = Sequences::new(100);
    map.plant_skip_predecessors.store(plant, Ordering::Relaxed);
    let seen = Arc::new(Broker::default());
    let (tx, rx) = mpsc::channel::<(u8, SeqTicket)>();

    let broker = {
        let seen = Arc::clone(&seen);
        thread::spawn(move || {
            let mut refusals = 0;
            while let Ok((b, ticket)) = rx.recv() {
                if refusals < 2 && thread_rng().gen_bool(0.4) {
                    refusals += 1;
                    if b == 0 {
                        seen.b0_refused.store(true, Ordering::SeqCst);
                    }
                    drop(ticket);
                } else {
                    if b == 0 {
                        seen.b0_acked.store(true, Ordering::SeqCst);
                    }
                    ticket.ack();
                }
            }
        })
    };

    // b0 sent again on another connection, when the line knows it.
    let retry = {
        let (map, tx) = (Arc::clone(&map), tx.clone());
        thread::spawn(move || {
            if thread_rng().gen_bool(0.5) {
                let p = map.plan(&key(), batch(0, 1), 2);
                if matches!(p.plan(), Plan::Again { .. })
                    && let Sending::Broker { ticket, .. } = p.send(Removal::Nothing)
                {
                    let _ = tx.send((0, ticket));
                }
            }
        })
    };

    let sweeper = {
        let map = Arc::clone(&map);
        thread::spawn(move || map.sweep())
    };

    let removal0 = if thread_rng().gen_bool(0.5) {
        Removal::Nothing
    } else {
        Removal::Records(vec![1].into())
    };
    let removed0 = removal0.count(2);
    let mut done = false;
    for _attempt in 0..8 {
        let p = map.plan(&key(), batch(0, 1), 2);
        match p.plan() {
            Plan::New { shift } => assert_eq!(*shift, 0),
            Plan::Again { shift, removal } => {
                assert_eq!(
                    (*shift, removal),
                    (0, &removal0),
                    "b0 goes out as the first time"
                );
            }
            Plan::Untouched => panic!("b0 untouched"),
        }
        match p.send(removal0.clone()) {
            Sending::Broker { ticket, .. } => tx.send((0, ticket)).unwrap(),
            other => panic!("b0 must go to the broker: {other:?}"),
        }
        let answered = loop {
            match map.plan(&key(), batch(2, 2), 1).send(Removal::All(ANSWER)) {
                Sending::Answer(c) => break Some(c),
                Sending::Wait(rx) => {
                    WAITS.fetch_add(1, Ordering::Relaxed);
                    let _ = block_on(rx);
                }
                Sending::Gap => {
                    GAPS.fetch_add(1, Ordering::Relaxed);
                    break None;
                }
                Sending::Broker { .. } => panic!("b1 of duplicates only went to the broker"),
            }
        };
        let Some(c) = answered else {
            assert!(
                seen.b0_refused.load(Ordering::SeqCst),
                "a gap with no refusal of the batch before it"
            );
            continue;
        };
        assert!(
            seen.b0_acked.load(Ordering::SeqCst),
            "b1 answered before the batch before it was acknowledged"
        );
        assert_eq!(c, ANSWER);
        ANSWERS.fetch_add(1, Ordering::Relaxed);
        let p = map.plan(&key(), batch(3, 3), 1);
        let expected = removed0 + 1;
        match p.send(Removal::Nothing) {
            Sending::Broker { shift, ticket } => {
                assert_eq!(shift, expected, "b2 shifted by what was removed before it");
                tx.send((2, ticket)).unwrap();
            }
            other => panic!("b2 must go to the broker: {other:?}"),
        }
        done = true;
        break;
    }
    assert!(done, "the producer never got b1 answered");
    drop(tx);
    retry.join().unwrap();
    sweeper.join().unwrap();
    broker.join().unwrap();
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn check(plant: bool) {
    let n: usize = env_or("KDP_MODEL_ITERATIONS", DEFAULT_ITERATIONS);
    let seed = env_or("KDP_MODEL_SEED", DEFAULT_SEED);
    Runner::new(
        RandomScheduler::new_from_seed(seed, n.div_ceil(2)),
        Config::new(),
    )
    .run(move || one_schedule(plant));
    Runner::new(PctScheduler::new(3, n / 2), Config::new()).run(move || one_schedule(plant));
}

#[test]
fn sequence_lines_hold_their_invariants_under_every_explored_schedule() {
    let started = std::time::Instant::now();
    check(false);
    let (w, g, a) = (
        WAITS.load(Ordering::Relaxed),
        GAPS.load(Ordering::Relaxed),
        ANSWERS.load(Ordering::Relaxed),
    );
    eprintln!(
        "sequence model: {:.1} s; b1 waited {w} times, met {g} gaps, answered {a} times",
        started.elapsed().as_secs_f64()
    );
    assert!(w > 0 && g > 0 && a > 0, "paths not all taken: {w} {g} {a}");
}

#[test]
fn the_checker_catches_an_answer_ahead_of_an_unacknowledged_batch() {
    let err = std::panic::catch_unwind(|| check(true)).expect_err("the plant went unnoticed");
    let msg = err
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default();
    assert!(
        msg.contains("before the batch before it was acknowledged"),
        "unexpected failure: {msg}"
    );
}
