//! The futex and mutex that shared state is built from, in one place so that the loom model
//! tests can replace them (`--cfg loom`); the atomics beside them are [`crate::atomic`]'s.
//!
//! In normal builds these are `std` atomics, real futexes and glibc's robust pthread mutex. Under
//! loom, the futex is modelled faithfully for what our protocols rely on: a waiter sleeps only if
//! the word still holds the expected value, and then only a wake ends the sleep (no timeouts in
//! the model). The mutex is a plain futex lock over the model futex.

// The atomics themselves (std's, or loom's under `--cfg loom`) are in `crate::atomic`.
use crate::atomic::AtomicU32;
#[cfg(loom)]
use crate::atomic::Ordering;

use std::time::Instant;

pub(crate) use crate::sys::{FutexWait, LockFailed, Locked};

/// Sleeps while `word == expected`, until woken or `deadline` (see [`crate::sys::futex_wait`]).
#[cfg(not(loom))]
#[inline]
pub(crate) fn wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> FutexWait {
    crate::sys::futex_wait(word, expected, deadline)
}

/// Wakes up to `count` sleepers on `word`.
#[cfg(not(loom))]
#[inline]
pub(crate) fn wake(word: &AtomicU32, count: u32) {
    crate::sys::futex_wake(word, count);
}

#[cfg(not(loom))]
pub(crate) use crate::sys::RobustMutex as Mutex;

/// Polls `ready` a little before a sleep: a few dozen checks, then a few `sched_yield`s. Across
/// CPUs this catches a peer that is about to act without a futex round trip (a wake-up there
/// costs ~33 µs on these machines); on one CPU, a yield hands the CPU to the peer right away.
/// Bounded to a few microseconds either way.
#[cfg(not(loom))]
#[inline]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    const CHECKS: u32 = 64;
    const YIELDS: u32 = 4;
    for i in 0..CHECKS + YIELDS {
        if ready() {
            return true;
        }
        if i < CHECKS {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    ready()
}

/// Under loom, spinning only multiplies the interleavings: check once.
#[cfg(loom)]
pub(crate) fn spin_until(mut ready: impl FnMut() -> bool) -> bool {
    ready()
}

#[cfg(loom)]
mod model {
    use super::*;
    use loom::sync::{Condvar, Mutex as LoomMutex};

    /// One wake counter per futex address: a sleeper returns only when its own address was
    /// woken (every sleeper on it: `wake(n)` is modelled as waking all, which real futexes
    /// may also appear to do through spurious returns).
    pub(crate) struct Futex {
        epochs: LoomMutex<std::collections::HashMap<usize, u64>>,
        cv: Condvar,
    }

    loom::lazy_static! {
        pub(crate) static ref FUTEX: Futex = Futex {
            epochs: LoomMutex::new(std::collections::HashMap::new()),
            cv: Condvar::new(),
        };
    }

    fn key(word: &AtomicU32) -> usize {
        word as *const AtomicU32 as usize
    }

    pub(crate) fn wait(word: &AtomicU32, expected: u32, _deadline: Option<Instant>) -> FutexWait {
        let mut epochs = FUTEX.epochs.lock().unwrap();
        // The kernel compares against the word's current value: a read-modify-write reads the
        // latest value in its modification order, where a plain load may see an older one.
        if word.load(Ordering::SeqCst) != expected {
            return FutexWait::Returned;
        }
        let seen = epochs.get(&key(word)).copied().unwrap_or(0);
        while epochs.get(&key(word)).copied().unwrap_or(0) == seen {
            epochs = FUTEX.cv.wait(epochs).unwrap();
        }
        FutexWait::Returned
    }

    pub(crate) fn wake(word: &AtomicU32, _count: u32) {
        *FUTEX.epochs.lock().unwrap().entry(key(word)).or_insert(0) += 1;
        FUTEX.cv.notify_all();
    }

    /// A plain (not robust) futex mutex over the model futex.
    pub(crate) struct Mutex {
        state: AtomicU32,
    }

    impl Mutex {
        pub(crate) unsafe fn init(this: *mut Mutex, _recursive: bool) -> std::io::Result<()> {
            // SAFETY: the caller provides writable memory for a Mutex.
            unsafe {
                this.write(Mutex {
                    state: AtomicU32::new(0),
                })
            };
            Ok(())
        }

        pub(crate) fn lock(
            &self,
            _deadline: Option<Instant>,
            _recursive: bool,
        ) -> Result<Locked, LockFailed> {
            while self
                .state
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                wait(&self.state, 1, None);
            }
            Ok(Locked::Clean)
        }

        pub(crate) fn try_lock(&self, _recursive: bool) -> Result<Locked, LockFailed> {
            self.state
                .compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed)
                .map(|_| Locked::Clean)
                .map_err(|_| LockFailed::Busy)
        }

        pub(crate) unsafe fn unlock(&self, _recursive: bool) {
            self.state.store(0, Ordering::Release);
            wake(&self.state, 1);
        }

        pub(crate) fn is_held(&self) -> bool {
            self.state.load(Ordering::Relaxed) != 0
        }
    }
}

#[cfg(loom)]
pub(crate) use model::{Mutex, wait, wake};
