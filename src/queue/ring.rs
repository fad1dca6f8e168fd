//! The ring's cursors and its sleep/wake protocol, kept apart from the bytes so that loom can
//! check them (`model_tests.rs`).
//!
//! One producer at a time (the holder of the put lock) advances the tail; one consumer at a time
//! (the holder of the get lock) advances the head. Each side sleeps, when it must, on a [`Wake`]:
//! a sequence word plus a "someone is asleep" flag.
//!
//! The protocol is the semaphore's (see `crate::sync`): the sleeper registers in `sleepers`,
//! reads the sequence, re-checks its condition with a read-modify-write, and sleeps only while
//! the sequence still has the value it read. The waker publishes its change with a
//! read-modify-write, then reads `sleepers` with one; if anyone is registered it advances the
//! sequence and calls `FUTEX_WAKE`. Of the two read-modify-write pairs, at least one side sees
//! the other, and a waker that sees a sleeper changes the very word it sleeps on, so a wake can
//! never land before the sleep it is meant for. While nobody sleeps, a waker's cost is one
//! read-modify-write of a line only sleepers write.
//!
//! (An earlier version cleared a "sleeping" flag in the waker to spare repeated wakes; its
//! correctness rests on a total modification order of the flag, which loom's model does not
//! provide, so it could not be checked. This one can.)

use std::time::Instant;

use crate::sync::shim::{self, AtomicU32, AtomicU64, FutexWait, Ordering};

/// A sequence word to sleep on and a count of sleepers.
#[repr(C)]
pub(crate) struct Wake {
    seq: AtomicU32,
    sleepers: AtomicU32,
}

impl Wake {
    #[cfg_attr(not(loom), allow(dead_code))]
    pub(crate) fn new() -> Wake {
        Wake {
            seq: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    /// After publishing a change with a read-modify-write: wakes the sleepers, if any.
    #[inline]
    pub(crate) fn notify(&self) {
        if self.sleepers.fetch_add(0, Ordering::AcqRel) != 0 {
            self.seq.fetch_add(1, Ordering::AcqRel);
            shim::wake(&self.seq, u32::MAX);
        }
    }

    /// Wakes every sleeper (for rare events: close, a producer gone, the last task done).
    pub(crate) fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::AcqRel);
        shim::wake(&self.seq, u32::MAX);
    }

    /// Waits until `ready` holds (→ `Ready`), `stop()` holds (→ `Stopped`), or `deadline`
    /// passes (→ `TimedOut`). `ready(sync)` reads the shared state it depends on; when `sync`
    /// is true it must read it with a read-modify-write (`fetch_add(0, AcqRel)`), which is what
    /// pairs with the waker's. `stop` reads state whose writers call
    /// [`notify_all`](Self::notify_all).
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(bool) -> bool,
        mut stop: impl FnMut() -> bool,
    ) -> Waited {
        if shim::spin_until(|| ready(false)) {
            return Waited::Ready;
        }
        self.sleepers.fetch_add(1, Ordering::AcqRel);
        let outcome = loop {
            let seen = self.seq.load(Ordering::Acquire);
            if ready(true) {
                break Waited::Ready;
            }
            if stop() {
                // What made `stop` true was published after any change `ready` waits for
                // (a producer leaves after its last put): look once more.
                break if ready(true) {
                    Waited::Ready
                } else {
                    Waited::Stopped
                };
            }
            if shim::wait(&self.seq, seen, deadline) == FutexWait::TimedOut {
                break if ready(true) {
                    Waited::Ready
                } else {
                    Waited::TimedOut
                };
            }
        };
        self.sleepers.fetch_sub(1, Ordering::AcqRel);
        outcome
    }
}

/// How [`Wake::wait_until`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    Ready,
    Stopped,
    TimedOut,
}

/// Stores a new cursor value (the tail, after writing bytes; the head, after consuming them)
/// with a read-modify-write, and wakes the other side if it sleeps on `wake`.
#[inline]
pub(crate) fn advance(cursor: &AtomicU64, value: u64, wake: &Wake) {
    cursor.swap(value, Ordering::AcqRel);
    wake.notify();
}

/// Reads a cursor; with `sync`, as a read-modify-write (see [`Wake::wait_until`]).
#[inline]
pub(crate) fn read(cursor: &AtomicU64, sync: bool) -> u64 {
    if sync {
        cursor.fetch_add(0, Ordering::AcqRel)
    } else {
        cursor.load(Ordering::Acquire)
    }
}
