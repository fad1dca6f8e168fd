//! [`WaitWord`]: the one sleep/wake protocol under every object that sleeps on shared state
//! (`Semaphore`, `Event`, `Condition`, and the queue's ring and `join`).
//!
//! # The protocol
//!
//! A `WaitWord` is a futex word plus a count of registered sleepers, side by side in shared
//! memory. The futex word is either the state itself (a semaphore's count, an event's flag and
//! generation) or a sequence number that stands for state kept elsewhere (a condition's
//! predicate, a ring's cursors).
//!
//! - A **sleeper** registers in `sleepers` with a read-modify-write, then re-reads the state it
//!   waits on with a read-modify-write, and sleeps only while the futex word still holds the
//!   value it read (the kernel compares atomically). It deregisters when it returns.
//! - A **waker** publishes its change with a read-modify-write, then reads `sleepers` with a
//!   read-modify-write, and calls `FUTEX_WAKE` only if someone registered. When the state is
//!   kept elsewhere, it first advances the sequence word, so that a sleeper about to sleep on
//!   the old value cannot.
//!
//! - A sleeper of [`WaitWord::wait_until`] (the queue's) also *arms* the sequence word before its
//!   re-check, so that [`WaitWord::notify_batched`] makes one `FUTEX_WAKE` per sleep instead of
//!   one per change.
//!
//! Of the two pairs of read-modify-writes (sleepers, then state; state, then sleepers) each
//! reads the latest value in its location's modification order, so at least one side sees the
//! other: either the sleeper's re-check sees the change and it does not sleep, or the waker
//! sees the sleeper and wakes it. While nobody sleeps, a waker costs one read-modify-write of a
//! line that only sleepers write. This is model-checked with loom (`sync/model_tests.rs`,
//! `queue/model_tests.rs`).
//!
//! # Robustness
//!
//! Every sleep can return spuriously (a signal, a wake meant for another sleeper, the kernel):
//! callers re-check their condition. Deadlines are absolute on `CLOCK_MONOTONIC`. A sleeper
//! killed while registered leaves `sleepers` one too high for good: wakers then make a
//! `FUTEX_WAKE` call that finds nobody, which costs time but never loses a wake. The count can
//! never be too low through a death (it is decremented only by the sleeper that raised it,
//! after its sleep, also when unwinding); a peer that scribbles it lower can delay a wake, which
//! is why the queue's sleepers also wake on a periodic tick.

use std::time::Instant;

use super::shim::{self, FutexWait};

use crate::atomic::{AtomicU32, Ordering};

/// `count` for [`WaitWord::wake`] and [`WaitWord::notify`]: every sleeper.
pub(crate) const WAKE_ALL: u32 = u32::MAX;

/// A futex word and the count of its registered sleepers (see the module docs).
#[repr(C)]
pub(crate) struct WaitWord {
    word: AtomicU32,
    sleepers: AtomicU32,
}

/// How one [`WaitWord::sleep`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slept {
    /// The re-check found the state changed: no sleep happened.
    NotNeeded,
    /// Woken, or a spurious return: re-check.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Lowers `sleepers` again when a sleep ends, however it ends (a `recheck` that unwinds too).
struct Registered<'a>(&'a AtomicU32);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl WaitWord {
    /// A word holding `value`, with nobody asleep.
    pub(crate) fn new(value: u32) -> WaitWord {
        WaitWord {
            word: AtomicU32::new(value),
            sleepers: AtomicU32::new(0),
        }
    }

    /// The futex word: the state itself, or the sequence that stands for it.
    #[inline]
    pub(crate) fn word(&self) -> &AtomicU32 {
        &self.word
    }

    /// One sleep: registers, calls `recheck` with the word, and sleeps while the word holds the
    /// value `recheck` returns, until woken or `deadline` (`None`: no deadline). `recheck`
    /// returns `None` when the state it re-read (with a read-modify-write, which is what pairs
    /// with the waker's) no longer calls for sleeping.
    ///
    /// For a sequence word, `recheck` reads the word first and the state after; for a state
    /// word, it re-reads the word itself with a read-modify-write.
    pub(crate) fn sleep(
        &self,
        deadline: Option<Instant>,
        recheck: impl FnOnce(&AtomicU32) -> Option<u32>,
    ) -> Slept {
        self.sleepers.fetch_add(1, Ordering::AcqRel);
        let _registered = Registered(&self.sleepers);
        let Some(expected) = recheck(&self.word) else {
            return Slept::NotNeeded;
        };
        match shim::wait(&self.word, expected, deadline) {
            FutexWait::Returned => Slept::Woken,
            FutexWait::TimedOut => Slept::TimedOut,
        }
    }

    /// After the caller changed the word itself with a read-modify-write: wakes up to `count`
    /// sleepers, if any registered.
    #[inline]
    pub(crate) fn wake(&self, count: u32) {
        if self.sleepers.fetch_add(0, Ordering::AcqRel) != 0 {
            shim::wake(&self.word, count);
        }
    }

    /// After the caller changed state kept elsewhere with a read-modify-write: if anyone
    /// registered, advances the sequence word and wakes up to `count` sleepers.
    #[inline]
    pub(crate) fn notify(&self, count: u32) {
        if self.sleepers.fetch_add(0, Ordering::AcqRel) != 0 {
            self.word.fetch_add(1, Ordering::AcqRel);
            shim::wake(&self.word, count);
        }
    }

    /// For the sleepers of [`wait_until`](Self::wait_until), after the caller changed the state
    /// they wait on with a read-modify-write: wakes them all, at most once per sleep.
    ///
    /// A sleeper *arms* the sequence word (sets [`ARMED`] with a read-modify-write) before its
    /// re-check and sleeps on the armed value. The first waker to find the word armed moves it
    /// to the next unarmed value and makes the one `FUTEX_WAKE` call; wakers after it find the
    /// word unarmed and make none, until a sleeper arms it again. This is what spares a producer
    /// a system call per message while a consumer it already woke is still getting up (tens of
    /// microseconds across CPUs). The word's read-modify-write pairs with the sleeper's arming
    /// as the `sleepers` pair does in [`notify`](Self::notify); it is also the only cost while
    /// nobody sleeps.
    ///
    /// Only for words whose every sleeper goes through `wait_until`: a sleeper that did not arm
    /// would not be woken.
    #[inline]
    pub(crate) fn notify_batched(&self) {
        let w = self.word.fetch_add(0, Ordering::AcqRel);
        // A failed exchange means another waker disarmed the word, and woke.
        if w & ARMED != 0
            && self
                .word
                .compare_exchange(w, disarmed(w), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            shim::wake(&self.word, WAKE_ALL);
        }
    }

    /// Moves the sequence word to its next unarmed value and wakes every sleeper of
    /// [`wait_until`](Self::wait_until), armed or not, without looking at anything first: for
    /// rare events (a queue closed, a producer gone, the last task done), where a wake must
    /// not depend on state a peer could have scribbled.
    pub(crate) fn notify_all_unconditionally(&self) {
        let mut w = self.word.load(Ordering::Relaxed);
        while let Err(now) =
            self.word
                .compare_exchange_weak(w, disarmed(w), Ordering::AcqRel, Ordering::Relaxed)
        {
            w = now;
        }
        shim::wake(&self.word, WAKE_ALL);
    }
}

/// The bit of a sequence word that says "a sleeper of `wait_until` sleeps on this value".
pub(crate) const ARMED: u32 = 1;

/// The next unarmed value after `w`: it differs from `w` and from `w`'s armed form, so that a
/// sleeper on either finds the word changed.
fn disarmed(w: u32) -> u32 {
    (w | ARMED).wrapping_add(1)
}

/// How [`WaitWord::wait_until`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Waited {
    /// `ready` held.
    Ready,
    /// `stop` held (and `ready` did not).
    Stopped,
    /// The deadline passed (and `ready` did not hold).
    TimedOut,
}

impl WaitWord {
    /// For a sequence word: spins a little, then sleeps round after round until `ready` holds
    /// (→ `Ready`), `stop()` holds (→ `Stopped`), or `deadline` passes (→ `TimedOut`).
    ///
    /// `ready(sync)` reads the shared state it depends on; when `sync` is true it must read it
    /// with a read-modify-write, which is what pairs with the waker's (whose change is
    /// followed by [`notify_batched`](Self::notify_batched)). `stop` reads state whose writers call
    /// [`notify_all_unconditionally`](Self::notify_all_unconditionally).
    pub(crate) fn wait_until(
        &self,
        deadline: Option<Instant>,
        mut ready: impl FnMut(bool) -> bool,
        mut stop: impl FnMut() -> bool,
    ) -> Waited {
        if shim::spin_until(|| ready(false)) {
            return Waited::Ready;
        }
        loop {
            let mut ended = None;
            let slept = self.sleep(deadline, |seq| {
                // Arming is the read-modify-write that `notify_batched` pairs with.
                let seen = seq.fetch_or(ARMED, Ordering::AcqRel) | ARMED;
                if ready(true) {
                    ended = Some(Waited::Ready);
                } else if stop() {
                    // What made `stop` true was published after any change `ready` waits
                    // for (a producer leaves after its last put): look once more.
                    ended = Some(if ready(true) {
                        Waited::Ready
                    } else {
                        Waited::Stopped
                    });
                }
                ended.is_none().then_some(seen)
            });
            if let Some(ended) = ended {
                return ended;
            }
            if slept == Slept::TimedOut {
                return if ready(true) {
                    Waited::Ready
                } else {
                    Waited::TimedOut
                };
            }
        }
    }
}
