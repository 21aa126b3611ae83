//! What the cache takes from outside itself to be shared between threads:
//! its locks, its atomics, its clock and the seeds of its hasher, in one
//! place so that the model check (`model.rs`, `--features model-check`)
//! can swap them.
//!
//! In a test build with `model-check` the locks and atomics are shuttle's,
//! so every lock and atomic access is a point where shuttle's scheduler
//! may switch threads; the clock is a counter the model advances, and the
//! hasher's seeds are fixed, so a failing schedule replays exactly. Every
//! other build uses `std` and the real clock. The oneshot channels of
//! waiters stay tokio's in both (they are part of the public `Lookup`);
//! shuttle runs futures over any waker, so a waiter blocked on one is
//! still a task shuttle sees, and a waiter nobody answers is a deadlock it
//! reports.

use ahash::RandomState;

#[cfg(not(all(test, feature = "model-check")))]
pub(super) use std::sync::atomic::{AtomicU64, AtomicUsize};
#[cfg(not(all(test, feature = "model-check")))]
pub(super) use std::sync::{Mutex, MutexGuard};

#[cfg(all(test, feature = "model-check"))]
pub(super) use shuttle::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
#[cfg(all(test, feature = "model-check"))]
pub(super) use shuttle::sync::{Mutex, MutexGuard};

pub(super) use std::sync::atomic::Ordering;

/// Whole seconds since the cache was made: the unit of `last_access`.
#[cfg(not(all(test, feature = "model-check")))]
pub(super) struct Clock {
    started: std::time::Instant,
}

#[cfg(not(all(test, feature = "model-check")))]
impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            started: std::time::Instant::now(),
        }
    }

    pub(super) fn secs(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }
}

/// A clock that moves only when the model says so.
#[cfg(all(test, feature = "model-check"))]
pub(super) struct Clock {
    secs: AtomicU32,
}

#[cfg(all(test, feature = "model-check"))]
impl Clock {
    pub(super) fn new() -> Self {
        Clock {
            secs: AtomicU32::new(0),
        }
    }

    pub(super) fn secs(&self) -> u32 {
        self.secs.load(Ordering::SeqCst)
    }

    /// Moves the clock on by `by` seconds; returns the new time.
    pub(super) fn advance(&self, by: u32) -> u32 {
        self.secs.fetch_add(by, Ordering::SeqCst) + by
    }
}

/// The hasher of keys and groups.
#[cfg(not(all(test, feature = "model-check")))]
pub(super) fn random_state() -> RandomState {
    RandomState::new()
}

/// Fixed seeds: which keys share a shard, and so what a schedule does, is
/// the same in every run.
#[cfg(all(test, feature = "model-check"))]
pub(super) fn random_state() -> RandomState {
    RandomState::with_seeds(1, 2, 3, 4)
}
