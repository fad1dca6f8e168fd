//! Futexes with deadlines on `CLOCK_MONOTONIC`, and the robust lock built on them
//! (`robust.rs`).

// Under loom the sync module uses its models instead.
#![cfg_attr(loom, allow(dead_code))]

use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// The absolute `CLOCK_MONOTONIC` time of `deadline`, normalized (`0 <= tv_nsec < 1e9`).
/// Rust's `Instant` is `CLOCK_MONOTONIC` on Linux, but opaque: the remaining time is added to the
/// clock read now. A deadline too far away to represent saturates. See clock_gettime(2).
// `time_t` and `c_long` are i64 here but narrower on 32-bit targets: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn monotonic_timespec(deadline: Instant) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is writable memory for one timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut sec = now.tv_sec as i64;
    let mut nsec = now.tv_nsec as i64 + i64::from(left.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    sec = sec.saturating_add(i64::try_from(left.as_secs()).unwrap_or(i64::MAX));
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
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
    let ts = deadline.map(monotonic_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of the call; the
        // timespec pointer is null or points at `ts`, which outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return FutexWait::Returned;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return FutexWait::TimedOut,
            // EAGAIN: the value changed before we slept. Anything else cannot happen with valid
            // arguments; returning lets the caller re-check rather than spin here.
            _ => return FutexWait::Returned,
        }
    }
}

/// Wakes up to `count` sleepers on `word` (in any process); returns how many woke. See futex(2).
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE reads nothing else.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count) };
    usize::try_from(r).unwrap_or(0)
}

pub(crate) use super::robust::{LockFailed, Locked, RobustMutex};
