//! [`WaitWord`]: the one sleep/wake protocol under every object that sleeps on shared state
//! (`Semaphore`, `Event`, `Condition`, and the queue's ring and `join`).
//!
//! # The protocol
//!
//! A `WaitWord` is a futex word plus a sleepers word, side by side in shared memory. The futex
//! word is either the state itself (a semaphore's count, an event's flag and generation) or a
//! sequence number that stands for state kept elsewhere (a condition's predicate, a ring's
//! cursors).
//!
//! - A **sleeper** registers in `sleepers` with a read-modify-write, then re-reads the state it
//!   waits on with a read-modify-write, and sleeps only while the futex word still holds the
//!   value it read (the kernel compares atomically).
//! - A **waker** publishes its change with a read-modify-write, then reads `sleepers` with a
//!   read-modify-write, and calls `FUTEX_WAKE` only if someone registered. When the state is
//!   kept elsewhere, it first advances the sequence word, so that a sleeper about to sleep on
//!   the old value cannot.
//!
//! Registration comes in three flavours:
//! - [`WaitWord::sleep`] / [`WaitWord::wake_all`] (`Event`, whose word never comes back to an
//!   old value and whose `set` wakes everyone): `sleepers` is a flag. The sleeper raises it and
//!   leaves it up; the waker lowers it with its read-modify-write and, if it was up, wakes all.
//! - [`WaitWord::sleep_counted`] / [`WaitWord::wake_counted`] or [`WaitWord::notify`]
//!   (`Semaphore`, whose count comes back to 0; `Condition`, whose `notify(n)` may wake only
//!   some): `sleepers` counts the registered sleepers, each lowers it when it returns. (A flag
//!   lowered by a release would hide a sleeper that read 0, saw the release taken back, and
//!   went to sleep on 0 after all; the loom model of two semaphore waiters finds that.)
//! - [`WaitWord::wait_until`] / [`WaitWord::notify_batched`] (the queue's): no `sleepers` at
//!   all; the sleeper *arms* the sequence word itself before its re-check, and the first waker
//!   to find it armed disarms it and wakes all: one `FUTEX_WAKE` per sleep instead of one per
//!   change.
//!
//! Of the two pairs of read-modify-writes (sleepers, then state; state, then sleepers) each
//! reads the latest value in its location's modification order, so at least one side sees the
//! other: either the sleeper's re-check sees the change and it does not sleep, or the waker
//! sees the sleeper and wakes it. While nobody sleeps, a waker costs one read-modify-write of a
//! line that only sleepers write (two for `notify`). This is model-checked with loom
//! (`sync/model_tests.rs`, `queue/model_tests.rs`).
//!
//! # Robustness
//!
//! Every sleep can return spuriously (a signal, a wake meant for another sleeper, the kernel):
//! callers re-check their condition. Deadlines are absolute on `CLOCK_MONOTONIC`.
//!
//! - *A sleeper killed while registered.* A flag or an armed word stays up only until the next
//!   waker, which lowers it: one `FUTEX_WAKE` that finds nobody. A count stays one too high for
//!   good (a `Semaphore` or `Condition` waiter killed asleep): every later post then makes a `FUTEX_WAKE`
//!   call, which costs time but never loses a wake. A death can never make a count too low (it
//!   is lowered only by the sleeper that raised it, also when unwinding).
//! - *A peer that scribbles `sleepers` or the word.* Any non-zero `sleepers` means "wake",
//!   whatever the value. A scribble that makes a waker skip a wake cannot hang a sleeper: no
//!   futex sleep lasts longer than [`SLICE`], after which the sleeper re-checks the state it
//!   waits on (for a condition, the sequence, which `notify` advances whether or not it sees
//!   anyone registered), as a correct waker's wake would have made it do.

use std::time::{Duration, Instant};

use super::shim::{self, FutexWait};
use super::spin::Spin;

use crate::atomic::{AtomicU32, Ordering};

/// `count` for [`WaitWord::notify`]: every sleeper.
pub(crate) const WAKE_ALL: u32 = u32::MAX;

/// The longest one futex sleep lasts. A sleeper whose slice ends re-checks the state it waits
/// on as if woken, so that a wake skipped because a peer scribbled `sleepers` or the word costs
/// it at most this long instead of hanging it.
pub(crate) const SLICE: Duration = Duration::from_millis(100);

/// A futex word and the registration of its sleepers (see the module docs).
#[repr(C)]
pub(crate) struct WaitWord {
    word: AtomicU32,
    /// For [`sleep`](WaitWord::sleep) / [`wake_all`](WaitWord::wake_all): non-zero when
    /// someone may sleep (any non-zero value, a scribble too, means "wake"). For
    /// [`sleep_counted`](WaitWord::sleep_counted) / [`notify`](WaitWord::notify): how many
    /// sleepers are registered. Unused by [`wait_until`](WaitWord::wait_until).
    sleepers: AtomicU32,
}

/// How one sleep ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Slept {
    /// The re-check found the state changed: no sleep happened.
    NotNeeded,
    /// Woken, a spurious return, or the end of a [`SLICE`]: re-check.
    Woken,
    /// The deadline passed.
    TimedOut,
}

/// Lowers `sleepers` again when a counted sleep ends, however it ends (a `recheck` that
/// unwinds too).
struct Registered<'a>(&'a AtomicU32);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Sleeps while `word == expected`, until woken, `deadline`, or the end of a [`SLICE`]
/// (reported as `Woken`).
fn futex_sleep(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> Slept {
    let slice_end = Instant::now() + SLICE;
    let (until, sliced) = match deadline {
        Some(at) if at <= slice_end => (at, false),
        _ => (slice_end, true),
    };
    match shim::wait(word, expected, Some(until)) {
        FutexWait::Returned => Slept::Woken,
        FutexWait::TimedOut if sliced => Slept::Woken,
        FutexWait::TimedOut => Slept::TimedOut,
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

    /// One sleep, for state words that never come back to a value a sleeper compares against
    /// (an event's, whose generation only grows) and whose wakers call
    /// [`wake_all`](Self::wake_all): raises the
    /// "someone may sleep" flag, calls `recheck` with the word, and sleeps while the word holds
    /// the value `recheck` returns, until woken, `deadline` (`None`: no deadline) or the end of
    /// a [`SLICE`]. `recheck` returns `None` when the state it re-read (with a
    /// read-modify-write, which is what pairs with the waker's) no longer calls for sleeping.
    ///
    /// The flag is not lowered on return: the next waker lowers it (and makes one `FUTEX_WAKE`
    /// that may find nobody). So a sleeper killed while asleep costs one system call, not one
    /// per wake for good.
    pub(crate) fn sleep(
        &self,
        deadline: Option<Instant>,
        recheck: impl FnOnce(&AtomicU32) -> Option<u32>,
    ) -> Slept {
        self.sleepers.swap(1, Ordering::AcqRel);
        let Some(expected) = recheck(&self.word) else {
            return Slept::NotNeeded;
        };
        futex_sleep(&self.word, expected, deadline)
    }

    /// After the caller changed the word itself with a read-modify-write: if the flag of
    /// [`sleep`](Self::sleep) is up, lowers it and wakes every sleeper.
    ///
    /// Lowering it is safe because every sleeper is woken: one registered before the swap is
    /// either asleep (woken now) or not yet asleep, and then compares the word the caller has
    /// already changed (the kernel refuses the sleep); one registered after it re-reads the
    /// changed state.
    #[inline]
    pub(crate) fn wake_all(&self) {
        if self.sleepers.swap(0, Ordering::AcqRel) != 0 {
            shim::wake(&self.word, WAKE_ALL);
        }
    }

    /// One sleep, for words whose wakers call [`wake_counted`](Self::wake_counted) or
    /// [`notify`](Self::notify): as [`sleep`](Self::sleep), but registered in a count that the
    /// sleeper lowers again when it returns. For a waker that wakes only some (a condition's
    /// `notify(1)`), or a state word that can come back to a value a sleeper compares against
    /// (a semaphore's count: released to 1 and taken back to 0 before a sleeper that read 0
    /// gets into the kernel, which then lets it sleep; a flag lowered by that release would
    /// hide it from the next one).
    ///
    /// For a sequence word, `recheck` reads the word first and the state after.
    pub(crate) fn sleep_counted(
        &self,
        deadline: Option<Instant>,
        recheck: impl FnOnce(&AtomicU32) -> Option<u32>,
    ) -> Slept {
        self.sleepers.fetch_add(1, Ordering::AcqRel);
        let _registered = Registered(&self.sleepers);
        let Some(expected) = recheck(&self.word) else {
            return Slept::NotNeeded;
        };
        futex_sleep(&self.word, expected, deadline)
    }

    /// After the caller changed the word itself with a read-modify-write: if anyone registered
    /// in [`sleep_counted`](Self::sleep_counted), wakes up to `count` sleepers.
    #[inline]
    pub(crate) fn wake_counted(&self, count: u32) {
        if self.sleepers.fetch_add(0, Ordering::AcqRel) != 0 {
            shim::wake(&self.word, count);
        }
    }

    /// After the caller changed state kept elsewhere: advances the sequence word, and if anyone
    /// registered in [`sleep_counted`](Self::sleep_counted), wakes up to `count` sleepers.
    ///
    /// The sequence advances even when nobody seems registered: a sleeper whose wake was
    /// skipped (its registration scribbled away) then sees the change when its slice ends.
    #[inline]
    pub(crate) fn notify(&self, count: u32) {
        self.word.fetch_add(1, Ordering::AcqRel);
        if self.sleepers.fetch_add(0, Ordering::AcqRel) != 0 {
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
    /// nobody sleeps. A sleeper killed while asleep leaves the word armed: the next waker
    /// disarms it, with one `FUTEX_WAKE` that finds nobody.
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
    /// For a sequence word: polls a little as `spin` says (see [`Spin`]), then sleeps round
    /// after round until `ready` holds (→ `Ready`), `stop()` holds (→ `Stopped`), or
    /// `deadline` passes (→ `TimedOut`).
    ///
    /// `ready(sync)` reads the shared state it depends on; when `sync` is true it must read it
    /// with a read-modify-write, which is what pairs with the waker's (whose change is
    /// followed by [`notify_batched`](Self::notify_batched)). `stop` reads state whose writers call
    /// [`notify_all_unconditionally`](Self::notify_all_unconditionally).
    pub(crate) fn wait_until(
        &self,
        spin: &Spin,
        deadline: Option<Instant>,
        mut ready: impl FnMut(bool) -> bool,
        mut stop: impl FnMut() -> bool,
    ) -> Waited {
        if spin.before_sleep(|| ready(false)) {
            return Waited::Ready;
        }
        loop {
            // Arming is the read-modify-write that `notify_batched` pairs with. No registration
            // besides it: a sleeper killed here leaves nothing behind but the armed bit.
            let seen = self.word.fetch_or(ARMED, Ordering::AcqRel) | ARMED;
            if ready(true) {
                return Waited::Ready;
            }
            if stop() {
                // What made `stop` true was published after any change `ready` waits for (a
                // producer leaves after its last put): look once more.
                return if ready(true) {
                    Waited::Ready
                } else {
                    Waited::Stopped
                };
            }
            if futex_sleep(&self.word, seen, deadline) == Slept::TimedOut {
                return if ready(true) {
                    Waited::Ready
                } else {
                    Waited::TimedOut
                };
            }
        }
    }
}
