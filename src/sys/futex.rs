//! Futexes with deadlines on `CLOCK_MONOTONIC`, and the robust lock built on them
//! (`robust.rs`).

// Under loom the sync module uses its models instead.
#![cfg_attr(loom, allow(dead_code))]

use std::num::NonZeroU32;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

use rustix::io::Errno;
use rustix::thread::futex;
use rustix::time::{ClockId, Timespec};

/// The absolute `CLOCK_MONOTONIC` time of `deadline`, normalized (`0 <= tv_nsec < 1e9`).
/// Rust's `Instant` is `CLOCK_MONOTONIC` on Linux, but opaque: the remaining time is added to the
/// clock read now. A deadline too far away to represent saturates. See clock_gettime(2).
pub(crate) fn monotonic_timespec(deadline: Instant) -> Timespec {
    let now = rustix::time::clock_gettime(ClockId::Monotonic);
    let left = deadline.saturating_duration_since(Instant::now());
    let mut sec = now.tv_sec;
    let mut nsec = now.tv_nsec + i64::from(left.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    sec = sec.saturating_add(i64::try_from(left.as_secs()).unwrap_or(i64::MAX));
    Timespec {
        tv_sec: sec,
        tv_nsec: nsec,
    }
}

/// How a futex wait ended. Spurious returns are possible: callers re-check their condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken, or the word no longer held the expected value.
    Returned,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, until woken or `deadline`. Shared between processes (not
/// `FUTEX_PRIVATE_FLAG`); the deadline is absolute on `CLOCK_MONOTONIC` (`FUTEX_WAIT_BITSET`), so
/// an `EINTR` retry keeps it. See futex(2).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> FutexWait {
    const MATCH_ANY: NonZeroU32 = NonZeroU32::MAX;
    let ts = deadline.map(monotonic_timespec);
    loop {
        // Shared (no FUTEX_PRIVATE_FLAG) and absolute on CLOCK_MONOTONIC (no
        // FUTEX_CLOCK_REALTIME).
        match futex::wait_bitset(
            word,
            futex::Flags::empty(),
            expected,
            ts.as_ref(),
            MATCH_ANY,
        ) {
            Ok(()) => return FutexWait::Returned,
            Err(Errno::INTR) => continue,
            Err(Errno::TIMEDOUT) => return FutexWait::TimedOut,
            // EAGAIN: the value changed before we slept. Anything else cannot happen with valid
            // arguments; returning lets the caller re-check rather than spin here.
            Err(_) => return FutexWait::Returned,
        }
    }
}

/// Wakes up to `count` sleepers on `word` (in any process); returns how many woke. See futex(2).
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32);
    futex::wake(word, futex::Flags::empty(), count).unwrap_or(0)
}

pub(crate) use super::robust::{LockFailed, Locked, RobustMutex};
