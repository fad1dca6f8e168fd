//! `Condition`: a condition variable over a shared `Lock`.

use std::fmt;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;

use super::error::{LockError, LockResult};
use super::lock::{Acquired, Lock, LockCell, LockGuard, deadline_after, wrap_lock};
use super::wait_word::{Slept, WAKE_ALL, WaitWord};
use crate::atomic::Ordering;
use crate::error::{Error, Result};
use crate::shm::{Kind, Shared};

/// The shared state of a condition variable: a [`WaitWord`] whose word is a sequence number that
/// notifications advance.
///
/// A waiter registers and reads the sequence while holding the lock, releases the lock, and
/// sleeps only while the sequence is unchanged. A notifier that changed the protected state under
/// the lock calls [`WaitWord::notify`] after that, which advances the sequence (and wakes if
/// anyone is registered), so it cannot slip between the waiter's check and its sleep.
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
        let mut seen = 0;
        let mut slept = self.seq.sleep_counted(deadline, |seq| {
            seen = seq.load(Ordering::Relaxed);
            // SAFETY: the caller holds the lock.
            unsafe { cell.release() };
            Some(seen)
        });
        // Every `notify` advances the sequence: while it has not moved, this was the end of a
        // slice or a spurious return, not a notification. Sleep on, without the lock.
        while slept == Slept::Woken && self.seq.word().load(Ordering::Acquire) == seen {
            slept = self.seq.sleep_counted(deadline, |seq| {
                (seq.fetch_add(0, Ordering::AcqRel) == seen).then_some(seen)
            });
        }
        (cell.lock(None), slept == Slept::TimedOut)
    }

    pub(crate) fn notify(&self, n: u32) {
        self.seq.notify(n);
    }
}

/// Why a timed wait on a [`Condition`] ([`wait_timeout`](Condition::wait_timeout),
/// [`wait_deadline`](Condition::wait_deadline), [`wait_for_timeout`](Condition::wait_for_timeout),
/// [`wait_for_deadline`](Condition::wait_for_deadline)) did not end with a plain `Ok`. Like
/// Python's `wait(timeout)`, a timed-out wait takes the lock back before it returns: the guard
/// comes back inside the error.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::ConditionTimeoutError;
///
/// let cond = multiproc::Condition::new()?;
/// let guard = cond.lock().unwrap();
/// match cond.wait_timeout(guard, Duration::from_millis(1)) {
///     Ok(_guard) => {}                                    // notified (or spurious)
///     Err(ConditionTimeoutError::Timeout(_guard)) => {}   // time ran out, lock held again
///     Err(ConditionTimeoutError::Lock(e)) => panic!("{e}"), // a dead owner or a broken lock
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum ConditionTimeoutError<G> {
    /// The deadline passed (for the `wait_for` forms: with the predicate still false). The
    /// lock is held again: here is its guard.
    Timeout(G),
    /// Taking the lock back reported a dead owner (with the guard; whether the time also ran
    /// out is then not reported: check the state, which the dead owner may have left half
    /// changed) or failed (without it).
    Lock(LockError<G>),
}

impl<G> ConditionTimeoutError<G> {
    /// The guard, whether the wait timed out or an owner died; the error of a broken lock.
    ///
    /// # Errors
    /// [`LockError::Broken`]'s error.
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// let _g = cond
    ///     .wait_timeout(g, Duration::ZERO)
    ///     .or_else(multiproc::ConditionTimeoutError::into_inner)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> Result<G> {
        match self {
            ConditionTimeoutError::Timeout(g) => Ok(g),
            ConditionTimeoutError::Lock(e) => e.into_inner(),
        }
    }

    /// True for [`Timeout`](Self::Timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// assert!(cond.wait_timeout(g, Duration::ZERO).unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConditionTimeoutError::Timeout(_))
    }
}

impl<G> From<LockError<G>> for ConditionTimeoutError<G> {
    fn from(e: LockError<G>) -> Self {
        ConditionTimeoutError::Lock(e)
    }
}

impl<G> fmt::Debug for ConditionTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionTimeoutError::Timeout(_) => f.write_str("Timeout(..)"),
            ConditionTimeoutError::Lock(e) => f.debug_tuple("Lock").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for ConditionTimeoutError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConditionTimeoutError::Timeout(_) => f.write_str("timed out waiting on the condition"),
            ConditionTimeoutError::Lock(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for ConditionTimeoutError<G> {}

/// A timed wait's outcome as its result.
fn timed<G>(r: LockResult<G>, timed_out: bool) -> std::result::Result<G, ConditionTimeoutError<G>> {
    match r {
        Ok(g) if timed_out => Err(ConditionTimeoutError::Timeout(g)),
        Ok(g) => Ok(g),
        Err(e) => Err(ConditionTimeoutError::Lock(e)),
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
/// [`Lock`]. A waiter that dies while asleep harms no one. `notify(n)` wakes up to `n` waiters
/// at once, but every other waiter that was asleep before it returns too when its sleep slice
/// (at most 100 ms) ends: such a waiter cannot tell a wake meant for another from one a peer's
/// scribble made the notifier skip, so it takes the moved sequence as its notification (a
/// spurious return). Hence a waiter woken by `notify(1)` and killed before it re-took the lock
/// does not take that notification with it while others were waiting, and `notify(1)` is no
/// cheaper than `notify_all` for waiters that sleep on.
///
/// # Differences from Python
/// - The lock is a non-recursive [`Lock`], not an `RLock`.
/// - `notify(n)` may end more than `n` waits (see above; Python's ends at most `n`).
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
    /// The condition's own segment's descriptor (tests scribble on it as another process would).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.state.fd()
    }

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

    /// Like [`wait`](Self::wait), giving up after `timeout` (Python's `wait(timeout)`: its
    /// `False` is `Err(Timeout(guard))` here).
    ///
    /// # Errors
    /// [`ConditionTimeoutError::Timeout`] (holding the guard) if the time ran out;
    /// [`ConditionTimeoutError::Lock`] as [`wait`](Self::wait)'s errors.
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
    /// let r = cond.wait_timeout(g, Duration::from_millis(1));
    /// assert!(r.unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
    ) -> std::result::Result<LockGuard<'a>, ConditionTimeoutError<LockGuard<'a>>> {
        let (r, timed_out) = self.wait_until(guard, deadline_after(timeout));
        timed(r, timed_out)
    }

    /// Like [`wait`](Self::wait), giving up at `deadline`.
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// let r = cond.wait_deadline(g, std::time::Instant::now());
    /// assert!(r.unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Instant,
    ) -> std::result::Result<LockGuard<'a>, ConditionTimeoutError<LockGuard<'a>>> {
        let (r, timed_out) = self.wait_until(guard, Some(deadline));
        timed(r, timed_out)
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

    /// Waits until `pred` returns true or `timeout` passes (Python's `wait_for(pred, timeout)`,
    /// whose `False` is `Err(Timeout(guard))` here).
    ///
    /// # Errors
    /// [`ConditionTimeoutError::Timeout`] (holding the guard) if `pred` was still false at the
    /// deadline; [`ConditionTimeoutError::Lock`] as [`wait_for`](Self::wait_for)'s errors.
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
    /// let r = cond.wait_for_timeout(g, Duration::from_millis(2), || false);
    /// assert!(r.unwrap_err().is_timeout());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for_timeout<'a>(
        &'a self,
        guard: LockGuard<'a>,
        timeout: Duration,
        pred: impl FnMut() -> bool,
    ) -> std::result::Result<LockGuard<'a>, ConditionTimeoutError<LockGuard<'a>>> {
        self.wait_for_until(guard, deadline_after(timeout), pred)
    }

    /// Like [`wait_for_timeout`](Self::wait_for_timeout), giving up at `deadline`.
    ///
    /// # Errors
    /// As [`wait_for_timeout`](Self::wait_for_timeout).
    ///
    /// # Panics
    /// If `guard` belongs to another lock.
    ///
    /// # Examples
    ///
    /// ```
    /// let cond = multiproc::Condition::new()?;
    /// let g = cond.lock().unwrap();
    /// let _g = cond.wait_for_deadline(g, std::time::Instant::now(), || true).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_for_deadline<'a>(
        &'a self,
        guard: LockGuard<'a>,
        deadline: Instant,
        pred: impl FnMut() -> bool,
    ) -> std::result::Result<LockGuard<'a>, ConditionTimeoutError<LockGuard<'a>>> {
        self.wait_for_until(guard, Some(deadline), pred)
    }

    fn wait_for_until<'a>(
        &'a self,
        mut guard: LockGuard<'a>,
        deadline: Option<Instant>,
        mut pred: impl FnMut() -> bool,
    ) -> std::result::Result<LockGuard<'a>, ConditionTimeoutError<LockGuard<'a>>> {
        loop {
            if pred() {
                return Ok(guard);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(ConditionTimeoutError::Timeout(guard));
            }
            // A dead owner's report ends the wait (the lock is held again: `pred` may be
            // checked by the caller, who must look at the state anyway).
            guard = self.wait_until(guard, deadline).0?;
        }
    }

    /// Wakes up to `n` waiters now; the others asleep before this call return when their sleep
    /// slice ends (see the type's docs: waits may return spuriously).
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

shared_handle!(
    /// A condition travels as its own segment's descriptor, followed by its lock (a handle too).
    [] Condition, state, Lock,
    |this| Ok(this.lock.clone()),
    |fd, lock| {
        let state = Shared::open(fd, &[Kind::Condition], 0, 0)?;
        Ok(Condition { state, lock })
    },
);
