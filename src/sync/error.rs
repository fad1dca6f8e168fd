//! Control-flow errors of the sync primitives.

use std::fmt;

/// The lock was acquired, but its previous owner died holding it (a crash, a SIGKILL), so the
/// data it protects may be half-updated. Like `std::sync::PoisonError`, it carries the guard.
///
/// Every acquirer sees this until one of them declares the state consistent with
/// [`make_consistent`](Self::make_consistent) (or [`Lock::clear_owner_died`](crate::Lock::clear_owner_died)).
/// Dropping the guard without doing so leaves the indication for the next acquirer.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, OwnerDied};
///
/// fn lock_and_repair(lock: &Lock) -> multiproc::LockGuard<'_> {
///     lock.lock().unwrap_or_else(|died: OwnerDied<_>| {
///         // Check or repair what the lock protects here, then:
///         died.make_consistent()
///     })
/// }
/// let lock = Lock::new()?;
/// drop(lock_and_repair(&lock));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct OwnerDied<G> {
    guard: G,
}

/// Guards whose lock can be declared consistent after an owner died (the guards of [`Lock`],
/// [`RLock`](crate::RLock), [`Value`](crate::Value) and [`Array`](crate::Array)); it is what
/// makes [`OwnerDied::make_consistent`] available.
///
/// [`Lock`]: crate::Lock
///
/// # Examples
///
/// ```
/// use multiproc::{OwnerDied, Recover};
///
/// fn repaired<G: Recover>(r: Result<G, OwnerDied<G>>) -> G {
///     r.unwrap_or_else(OwnerDied::make_consistent)
/// }
/// let lock = multiproc::RLock::new()?;
/// let _g = repaired(lock.lock());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Recover: sealed::Sealed {
    #[doc(hidden)]
    fn mark_consistent(&self);
}

pub(crate) mod sealed {
    pub trait Sealed {}
}

impl<G> OwnerDied<G> {
    pub(crate) fn new(guard: G) -> OwnerDied<G> {
        OwnerDied { guard }
    }

    /// The guard, with the owner-died indication left in place for the next acquirer.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> G {
        self.guard
    }

    /// The guard, by reference.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32)?;
    /// if let Err(died) = v.lock() {
    ///     println!("value was {}", **died.get_ref());
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_ref(&self) -> &G {
        &self.guard
    }

    /// The guard, mutably (to repair the protected data).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32)?;
    /// if let Err(mut died) = v.lock() {
    ///     **died.get_mut() = 0;
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_mut(&mut self) -> &mut G {
        &mut self.guard
    }
}

impl<G: Recover> OwnerDied<G> {
    /// Declares the protected state consistent again and returns the guard: later acquirers
    /// get the lock normally.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.lock().unwrap_or_else(|e| e.make_consistent());
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn make_consistent(self) -> G {
        self.guard.mark_consistent();
        self.guard
    }
}

impl<G> fmt::Debug for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnerDied").finish_non_exhaustive()
    }
}

impl<G> fmt::Display for OwnerDied<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the previous owner of the lock died holding it; the protected state may be inconsistent")
    }
}

impl<G> std::error::Error for OwnerDied<G> {}

/// Why `try_lock` or `lock_timeout` did not give a clean guard.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, TryLockError};
///
/// let lock = Lock::new()?;
/// let _held = lock.lock().unwrap();
/// let other = lock.clone();
/// std::thread::spawn(move || {
///     assert!(matches!(other.try_lock(), Err(TryLockError::WouldBlock)));
/// })
/// .join()
/// .unwrap();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum TryLockError<G> {
    /// The lock is held (for `lock_timeout`: it stayed held until the deadline).
    WouldBlock,
    /// Acquired, but the previous owner died holding it.
    OwnerDied(OwnerDied<G>),
}

impl<G> From<OwnerDied<G>> for TryLockError<G> {
    fn from(e: OwnerDied<G>) -> Self {
        TryLockError::OwnerDied(e)
    }
}

impl<G> fmt::Debug for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("WouldBlock"),
            TryLockError::OwnerDied(e) => fmt::Debug::fmt(e, f),
        }
    }
}

impl<G> fmt::Display for TryLockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryLockError::WouldBlock => f.write_str("the lock is held by someone else"),
            TryLockError::OwnerDied(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for TryLockError<G> {}

/// The result of a blocking lock: the guard, or the guard wrapped in [`OwnerDied`].
///
/// # Examples
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// let r: multiproc::LockResult<multiproc::LockGuard<'_>> = lock.lock();
/// assert!(r.is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type LockResult<G> = Result<G, OwnerDied<G>>;

/// The result of `try_lock` and `lock_timeout`.
///
/// # Examples
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// let r: multiproc::TryLockResult<multiproc::LockGuard<'_>> = lock.try_lock();
/// assert!(r.is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type TryLockResult<G> = Result<G, TryLockError<G>>;

/// A semaphore or bounded semaphore was released more times than allowed, like Python's
/// `ValueError('semaphore or lock released too many times')`.
///
/// # Examples
///
/// ```
/// let sem = multiproc::BoundedSemaphore::new(1)?;
/// assert!(sem.release().is_err());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct OverRelease;

impl fmt::Display for OverRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("semaphore released too many times")
    }
}

impl std::error::Error for OverRelease {}

/// A [`Barrier`](crate::Barrier) is broken: it was aborted, a party timed out or died holding its
/// internal lock, or it was reset while this party waited (Python's `BrokenBarrierError`).
///
/// # Examples
///
/// ```
/// let b = multiproc::Barrier::new(2)?;
/// b.abort();
/// assert_eq!(b.wait(), Err(multiproc::BrokenBarrier));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokenBarrier;

impl fmt::Display for BrokenBarrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the barrier is broken")
    }
}

impl std::error::Error for BrokenBarrier {}
