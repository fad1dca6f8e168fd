//! `Condition`: a condition variable over a shared `Lock`.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

#[cfg(doc)]
use super::error::LockError;
use super::error::{LockResult, Recover, sealed};
use super::lock::{Acquired, Lock, LockCell, LockGuard, deadline_after, wrap_lock};
use super::shim::Ordering;
use super::wait_word::{Slept, WAKE_ALL, WaitWord};
use crate::error::{Error, Result};
use crate::shm::{Kind, Shared};

/// The shared state of a condition variable: a [`WaitWord`] whose word is a sequence number that
/// notifications advance.
///
/// A waiter registers and reads the sequence while holding the lock, releases the lock, and
/// sleeps only while the sequence is unchanged. A notifier that changed the protected state under
/// the lock calls [`WaitWord::notify`] after that, which advances the sequence if anyone is
/// registered, so it cannot slip between the waiter's check and its sleep.
#[repr(C)]
pub(crate) struct CondState {
    seq: WaitWord,
}

impl CondState {
    pub(crate) fn new() -> CondState {
        CondState {
            seq: WaitWord::new(0),
        }
    }

    /// Releases `cell` (held by the caller), sleeps until notified or `deadline`, re-acquires.
    /// Returns how the re-acquisition went and whether the deadline passed.
    ///
    /// # Safety
    /// The calling thread holds `cell`.
    pub(crate) unsafe fn wait(
        &self,
        cell: &LockCell,
        deadline: Option<Instant>,
    ) -> (Result<Option<Acquired>, Error>, bool) {
        let slept = self.seq.sleep(deadline, |seq| {
            let seen = seq.load(Ordering::Relaxed);
            // SAFETY: the caller holds the lock.
            unsafe { cell.release() };
            Some(seen)
        });
        (cell.lock(None), slept == Slept::TimedOut)
    }

    pub(crate) fn notify(&self, n: u32) {
        self.seq.notify(n);
    }
}

/// Whether a timed wait ended because the time ran out.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let cond = multiproc::Condition::new()?;
/// let guard = cond.lock().unwrap();
/// let (_guard, res) = cond.wait_timeout(guard, Duration::from_millis(1)).unwrap();
/// assert!(res.timed_out());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WaitTimeoutResult(bool);

impl WaitTimeoutResult {
    /// True if the wait ended at its deadline (for `wait_for_timeout`: with the predicate still
    /// false).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let cond = multiproc::Condition::new()?;
    /// # let guard = cond.lock().unwrap();
    /// let (_g, res) = cond.wait_timeout(guard, Duration::ZERO).unwrap();
    /// println!("timed out: {}", res.timed_out());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn timed_out(&self) -> bool {
        self.0
    }
}

impl<G: Recover> sealed::Sealed for (G, WaitTimeoutResult) {}
impl<G: Recover> Recover for (G, WaitTimeoutResult) {
    fn mark_consistent(&self) {
        self.0.mark_consistent();
    }
}

/// A condition variable shared between processes (Python's `multiprocessing.Condition`).
///
/// It owns (a handle to) a [`Lock`]: take it with [`lock`](Self::lock), check your condition,
/// and [`wait`](Self::wait) with the guard, which releases the lock while sleeping and takes it
/// back before returning. [`notify`](Self::notify) wakes up to `n` waiters and
/// [`notify_all`](Self::notify_all) all of them. Waits can return spuriously: check the
/// condition in a loop, or let [`wait_for`](Self::wait_for) do it.
///
/// If a process dies holding the lock, the next waiter or locker gets [`LockError::OwnerDied`] as with
/// [`Lock`]. A waiter that dies while asleep harms no one. A waiter woken by `notify(1)` and
/// killed before it re-took the lock takes that notification with it: use `notify_all` or timed
/// waits where that matters.
///
/// # Differences from Python
/// - The lock is a non-recursive [`Lock`], not an `RLock`.
/// - `notify` does not require holding the lock (a notification only reaches waiters that
///   checked the condition before it, as always).
///
/// # Examples
///
/// ```
/// use multiproc::{Condition, Value};
///
/// let cond = Condition::new()?;
/// let ready = Value::new(0u32)?;
/// let (c2, r2) = (cond.clone(), ready.clone());
/// let t = std::thread::spawn(move || {
///     let _g = c2.lock().unwrap();
///     r2.set(1).unwrap();
///     c2.notify_all();
/// });
/// let guard = cond.lock().unwrap();
/// let _guard = cond.wait_for(guard, || matches!(ready.get(), Ok(1))).unwrap();
/// t.join().unwrap();
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Condition {
    state: Shared<CondState>,
    lock: Lock,
}

impl Condition {
    /// Creates a condition variable with a new lock.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if a shared segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Condition> {
        Condition::with_lock(Lock::new()?)
    }

    /// Creates a condition variable over an existing lock (Python's `Condition(lock)`), for
    /// example a [`Value`](crate::Value)'s [`get_lock`](crate::Value::get_lock).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let counter = multiproc::Value::new(0u64)?;
    /// let cond = multiproc::Condition::with_lock(counter.get_lock().clone())?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_lock(lock: Lock) -> Result<Condition> {
        let state = Shared::create(Kind::Condition, 0, 0, |p: *mut CondState| {
            // SAFETY: `create` passes fresh, aligned memory sized for the state.
            unsafe { p.write(CondState::new()) };
            Ok(())
        })?;
        Ok(Condition { state, lock })
    }

    /// The lock (Python's `with cond:` takes it).
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// assert!(!cond.get_lock().is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        &self.lock
    }

    /// Takes the lock. Same as `get_lock().lock()`.
    ///
    /// # Errors
    /// As [`Lock::lock`].
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let _guard = cond.lock().unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        self.lock.lock()
    }

    /// Panics unless `guard` holds this condition's lock. Identity is the segment's (device,
    /// inode), not an address: a child that received the condition and its lock as two
    /// arguments maps the lock twice, and either mapping's guard is the right one.
    fn check(&self, guard: &LockGuard<'_>) {
        assert!(
            guard.lock_id() == self.lock.id(),
            "Condition::wait called with a guard of another lock"
        );
    }

    fn wait_until<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Option<Instant>,
    ) -> (LockResult<LockGuard<'a>>, bool) {
        self.check(&guard);
        // The guard's drop would unlock: the wait does it instead, through the guard's own
        // mapping of the lock (which may not be `self.lock`'s, see `check`).
        let held = guard.into_held();
        // SAFETY: the guard proved this thread holds the lock.
        let (acquired, timed_out) = unsafe { self.state.wait(held, deadline) };
        // SAFETY: if `wait` re-acquired the mutex (the only case that builds a guard), this
        // thread holds it again; the old guard is gone.
        let guard = wrap_lock(acquired, || unsafe { LockGuard::rebuild(held) });
        (guard, timed_out)
    }

    /// Releases the lock, sleeps until notified (or spuriously woken), and takes the lock back.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (holding the guard) if a process died holding the lock
    /// meanwhile; [`LockError::Broken`] (without it) if the lock could not be taken back.
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let c2 = cond.clone();
    /// let guard = cond.lock().unwrap();
    /// let t = std::thread::spawn(move || {
    ///     let _g = c2.lock().unwrap(); // waits until the main thread sleeps
    ///     c2.notify(1);
    /// });
    /// let _guard = cond.wait(guard).unwrap();
    /// t.join().unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait<'a>(&'a self, guard: LockGuard<'a>) -> LockResult<LockGuard<'a>> {
        self.wait_until(guard, None).0
    }

    /// Like [`wait`](Self::wait), giving up after `timeout`.
    ///
    /// # Errors
    /// As [`wait`](Self::wait).
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// let (_g, r) = cond.wait_timeout(g, Duration::from_millis(1)).unwrap();
    /// assert!(r.timed_out());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> LockResult<(LockGuard<'a>, WaitTimeoutResult)> {
        let (r, timed_out) = self.wait_until(guard, deadline_after(timeout));
        let res = WaitTimeoutResult(timed_out);
        r.map(|g| (g, res)).map_err(|e| e.map(|g| (g, res)))
    }

    /// Waits until `pred` returns true (checked with the lock held, first before any wait).
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] as soon as a re-acquisition reports it (`pred` may not hold
    /// then); [`LockError::Broken`] as for [`wait`](Self::wait).
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// let _g = cond.wait_for(g, || true).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        mut pred: impl FnMut() -> bool,
    ) -> LockResult<LockGuard<'a>> {
        while !pred() {
            guard = self.wait(guard)?;
        }
        Ok(guard)
    }

    /// Waits until `pred` returns true or `timeout` passes (Python's `wait_for(pred, timeout)`);
    /// the result's [`timed_out`](WaitTimeoutResult::timed_out) is true when `pred` was still
    /// false at the end.
    ///
    /// # Errors
    /// As [`wait_for`](Self::wait_for).
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// let (_g, r) = cond.wait_for_timeout(g, Duration::from_millis(2), || false).unwrap();
    /// assert!(r.timed_out());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for_timeout<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        timeout: Duration,
        mut pred: impl FnMut() -> bool,
    ) -> LockResult<(LockGuard<'a>, WaitTimeoutResult)> {
        let deadline = deadline_after(timeout);
        loop {
            if pred() {
                return Ok((guard, WaitTimeoutResult(false)));
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok((guard, WaitTimeoutResult(true)));
            }
            guard = match self.wait_until(guard, deadline).0 {
                Ok(g) => g,
                Err(e) => {
                    // The lock is held again if an owner died: `pred` may be checked.
                    let mut timed_out = false;
                    let e = e.map(|g| {
                        timed_out = !pred();
                        g
                    });
                    return Err(e.map(|g| (g, WaitTimeoutResult(timed_out))));
                }
            };
        }
    }

    /// Wakes up to `n` waiters.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Condition::new()?.notify(1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify(&self, n: u32) {
        self.state.notify(n);
    }

    /// Wakes every waiter.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Condition::new()?.notify_all();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn notify_all(&self) {
        self.state.notify(WAKE_ALL);
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condition")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

impl Serialize for Condition {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        struct H<'a>(&'a Shared<CondState>);
        impl Serialize for H<'_> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.0.serialize_handle(s)
            }
        }
        let mut t = s.serialize_tuple(2)?;
        t.serialize_element(&H(&self.state))?;
        t.serialize_element(&self.lock)?;
        t.end()
    }
}

impl<'de> Deserialize<'de> for Condition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct H(Shared<CondState>);
        impl<'de> Deserialize<'de> for H {
            fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                Shared::deserialize_handle(d, &[Kind::Condition], 0, 0).map(H)
            }
        }
        let (H(state), lock) = <(H, Lock)>::deserialize(d)?;
        Ok(Condition { state, lock })
    }
}
