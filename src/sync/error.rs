//! Control-flow errors of the sync primitives.

use std::fmt;

/// The lock was acquired, but its previous owner died holding it (a crash, a SIGKILL), so the
/// data it protects may be half-updated. Like `std::sync::PoisonError`, it carries the guard.
///
/// It reaches the caller as [`LockError::OwnerDied`] (from `lock`),
/// [`TryLockError::OwnerDied`] (from `try_lock`) or [`LockTimeoutError::OwnerDied`] (from
/// `lock_timeout` and `lock_deadline`).
///
/// Every acquirer sees this until one of them declares the state consistent with
/// [`make_consistent`](Self::make_consistent) (or [`Lock::clear_owner_died`](crate::Lock::clear_owner_died)).
/// Dropping the guard without doing so leaves the indication for the next acquirer.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, LockError};
///
/// fn lock_and_repair(lock: &Lock) -> multiproc::Result<multiproc::LockGuard<'_>> {
///     match lock.lock() {
///         Ok(guard) => Ok(guard),
///         Err(LockError::OwnerDied(died)) => {
///             // Check or repair what the lock protects here, then:
///             Ok(died.make_consistent())
///         }
///         Err(LockError::Broken(e)) => Err(e),
///     }
/// }
/// let lock = Lock::new()?;
/// drop(lock_and_repair(&lock)?);
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
/// use multiproc::{LockResult, Recover};
///
/// fn repaired<G: Recover>(r: LockResult<G>) -> multiproc::Result<G> {
///     r.or_else(multiproc::LockError::make_consistent)
/// }
/// let lock = multiproc::RLock::new()?;
/// let _g = repaired(lock.lock())?;
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
    /// use multiproc::LockError;
    /// let lock = multiproc::Lock::new()?;
    /// if let Err(LockError::OwnerDied(died)) = lock.lock() {
    ///     let guard = died.into_inner();
    ///     # drop(guard);
    /// }
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
    /// if let Err(multiproc::LockError::OwnerDied(died)) = v.lock() {
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
    /// if let Err(multiproc::LockError::OwnerDied(mut died)) = v.lock() {
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
    /// use multiproc::LockError;
    /// let lock = multiproc::Lock::new()?;
    /// let guard = match lock.lock() {
    ///     Ok(g) => g,
    ///     Err(LockError::OwnerDied(died)) => died.make_consistent(),
    ///     Err(LockError::Broken(e)) => return Err(e),
    /// };
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

/// Why a blocking `lock` did not give a clean guard.
///
/// # Examples
///
/// ```
/// use multiproc::{Lock, LockError};
///
/// let lock = Lock::new()?;
/// match lock.lock() {
///     Ok(_guard) => {}
///     Err(LockError::OwnerDied(died)) => drop(died.make_consistent()),
///     Err(LockError::Broken(e)) => return Err(e),
/// }
/// // Or, repairing nothing but accepting a dead owner's state:
/// let _guard = lock.lock().or_else(LockError::make_consistent)?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum LockError<G> {
    /// Acquired, but the previous owner died holding it.
    OwnerDied(OwnerDied<G>),
    /// Not acquired: the lock cannot be used. Its shared state was overwritten (another
    /// process of this user scribbled over the segment), or this very thread already holds it
    /// (a non-recursive lock reports that rather than deadlocking). The error's
    /// [`io_error`](crate::Error::io_error) has the C library's code (`EDEADLK`, `EINVAL`,
    /// `ENOTRECOVERABLE`, ...).
    Broken(crate::Error),
}

impl<G> LockError<G> {
    /// The guard even if an owner died (leaving the indication for the next acquirer), or the
    /// error of a broken lock.
    ///
    /// # Errors
    /// The [`Broken`](Self::Broken) error.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let _g = lock.lock().or_else(multiproc::LockError::into_inner)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> Result<G, crate::Error> {
        match self {
            LockError::OwnerDied(d) => Ok(d.into_inner()),
            LockError::Broken(e) => Err(e),
        }
    }
}

impl<G: Recover> LockError<G> {
    /// Declares the state consistent if an owner died and returns the guard; the error of a
    /// broken lock otherwise.
    ///
    /// # Errors
    /// The [`Broken`](Self::Broken) error.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let _g = lock.lock().or_else(multiproc::LockError::make_consistent)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn make_consistent(self) -> Result<G, crate::Error> {
        match self {
            LockError::OwnerDied(d) => Ok(d.make_consistent()),
            LockError::Broken(e) => Err(e),
        }
    }
}

impl<G> From<OwnerDied<G>> for LockError<G> {
    fn from(e: OwnerDied<G>) -> Self {
        LockError::OwnerDied(e)
    }
}

impl<G> fmt::Debug for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(e) => fmt::Debug::fmt(e, f),
            LockError::Broken(e) => f.debug_tuple("Broken").field(e).finish(),
        }
    }
}

impl<G> fmt::Display for LockError<G> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockError::OwnerDied(e) => fmt::Display::fmt(e, f),
            LockError::Broken(e) => fmt::Display::fmt(e, f),
        }
    }
}

impl<G> std::error::Error for LockError<G> {}

/// Why `try_lock` did not give a clean guard.
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
    /// The lock is held by someone else (for an `RLock`: by another thread).
    WouldBlock,
    /// Acquired, but the previous owner died holding it.
    OwnerDied(OwnerDied<G>),
    /// Not acquired: the lock cannot be used (see [`LockError::Broken`]).
    Broken(crate::Error),
}

/// Why `lock_timeout` or `lock_deadline` did not give a clean guard.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Lock, LockTimeoutError};
///
/// let lock = Lock::new()?;
/// let _held = lock.lock().unwrap();
/// let other = lock.clone();
/// std::thread::spawn(move || {
///     let r = other.lock_timeout(Duration::from_millis(1));
///     assert!(matches!(r, Err(LockTimeoutError::Timeout)));
/// })
/// .join()
/// .unwrap();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum LockTimeoutError<G> {
    /// The lock stayed held by someone else until the deadline.
    Timeout,
    /// Acquired, but the previous owner died holding it.
    OwnerDied(OwnerDied<G>),
    /// Not acquired: the lock cannot be used (see [`LockError::Broken`]).
    Broken(crate::Error),
}

/// What [`TryLockError`] and [`LockTimeoutError`] have in common beside the variant that
/// names why the lock was not taken: their guard-carrying and broken cases, spelled once.
macro_rules! lock_attempt_error {
    ($name:ident, $not_taken:ident, $why:literal) => {
        impl<G> From<OwnerDied<G>> for $name<G> {
            fn from(e: OwnerDied<G>) -> Self {
                $name::OwnerDied(e)
            }
        }

        impl<G> From<LockError<G>> for $name<G> {
            fn from(e: LockError<G>) -> Self {
                match e {
                    LockError::OwnerDied(d) => $name::OwnerDied(d),
                    LockError::Broken(e) => $name::Broken(e),
                }
            }
        }

        impl<G> fmt::Debug for $name<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$not_taken => f.write_str(stringify!($not_taken)),
                    $name::OwnerDied(e) => fmt::Debug::fmt(e, f),
                    $name::Broken(e) => f.debug_tuple("Broken").field(e).finish(),
                }
            }
        }

        impl<G> fmt::Display for $name<G> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$not_taken => f.write_str($why),
                    $name::OwnerDied(e) => fmt::Display::fmt(e, f),
                    $name::Broken(e) => fmt::Display::fmt(e, f),
                }
            }
        }

        impl<G> std::error::Error for $name<G> {}
    };
}

lock_attempt_error!(TryLockError, WouldBlock, "the lock is held by someone else");
lock_attempt_error!(
    LockTimeoutError,
    Timeout,
    "the lock stayed held by someone else until the deadline"
);

/// The result of a blocking lock: the guard, the guard wrapped in [`OwnerDied`], or a broken
/// lock ([`LockError`]).
///
/// # Examples
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// let r: multiproc::LockResult<multiproc::LockGuard<'_>> = lock.lock();
/// assert!(r.is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type LockResult<G> = Result<G, LockError<G>>;

/// The result of `try_lock`.
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

/// The result of `lock_timeout` and `lock_deadline`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let lock = multiproc::Lock::new()?;
/// let r: multiproc::LockTimeoutResult<multiproc::LockGuard<'_>> =
///     lock.lock_timeout(Duration::from_millis(1));
/// assert!(r.is_ok());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type LockTimeoutResult<G> = Result<G, LockTimeoutError<G>>;

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

crate::error::message_error!(OverRelease, "semaphore released too many times");

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

crate::error::message_error!(BrokenBarrier, "the barrier is broken");

/// Why [`Barrier::wait_timeout`](crate::Barrier::wait_timeout) or
/// [`Barrier::wait_deadline`](crate::Barrier::wait_deadline) did not pass the barrier.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::BarrierTimeoutError;
///
/// let b = multiproc::Barrier::new(2)?;
/// assert_eq!(b.wait_timeout(Duration::from_millis(1)), Err(BarrierTimeoutError::Timeout));
/// // This party's timeout broke the barrier for everyone:
/// assert_eq!(b.wait_timeout(Duration::from_millis(1)), Err(BarrierTimeoutError::Broken));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum BarrierTimeoutError {
    /// This party's deadline passed before the others arrived. As in Python, that breaks the
    /// barrier: the parties waiting with it fail with [`Broken`](Self::Broken) (or
    /// [`BrokenBarrier`]).
    Timeout,
    /// The barrier is or became broken by something else (see [`BrokenBarrier`]).
    Broken,
}

impl From<BrokenBarrier> for BarrierTimeoutError {
    fn from(_: BrokenBarrier) -> Self {
        BarrierTimeoutError::Broken
    }
}

impl From<BarrierTimeoutError> for BrokenBarrier {
    /// A timeout breaks the barrier, so both cases are a broken barrier to whoever does not
    /// need to tell them apart.
    fn from(_: BarrierTimeoutError) -> Self {
        BrokenBarrier
    }
}

impl fmt::Display for BarrierTimeoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BarrierTimeoutError::Timeout => {
                f.write_str("timed out waiting at the barrier (which is now broken)")
            }
            BarrierTimeoutError::Broken => fmt::Display::fmt(&BrokenBarrier, f),
        }
    }
}

impl std::error::Error for BarrierTimeoutError {}
