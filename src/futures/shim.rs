//! The mutex and condition variable that a [`Future`](super::Future)'s completion protocol and
//! the `wait`/`as_completed` signals are built from, in one place so that the loom model tests
//! (`model_tests.rs`, `--cfg loom`) can replace them, as `sync/shim.rs` does for the futex.
//!
//! In normal builds these are `std`'s. Under loom they are loom's, and a wait with a deadline
//! is modelled as a wait whose deadline passes while the lock is released: the lock is dropped,
//! other threads may run any number of steps, and the waiter returns "timed out" with the lock
//! held again (loom has no clock; a timed wait that is woken before its deadline behaves as an
//! untimed one, which the models check separately).

use std::time::Instant;

#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning: every critical section here leaves the state consistent
/// before it can panic (the user's callbacks run outside the lock).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` (with `guard`, a guard of `m`) until notified or `deadline`; true if the
/// deadline has passed. Under loom: untimed, a real (model) condvar wait; timed, the
/// deadline passes while the lock is released.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    m: &'a Mutex<T>,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, T>, bool) {
    #[cfg(not(loom))]
    {
        let _ = m;
        crate::pool::result::wait_until(cv, guard, deadline)
    }
    #[cfg(loom)]
    match deadline {
        None => (cv.wait(guard).unwrap_or_else(|p| p.into_inner()), false),
        Some(_) => {
            drop(guard);
            loom::thread::yield_now();
            (lock(m), true)
        }
    }
}
