//! `Semaphore` and `BoundedSemaphore`: a counter and a futex.

use std::fmt;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;

use super::error::OverRelease;
use super::lock::deadline_after;
use super::shim;
use super::wait_word::{Slept, WAKE_ALL, WaitWord};
use crate::atomic::{AtomicU32, Ordering};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Kind, Shared, type_tag};

/// The shared state of a semaphore: the count is the futex word of a [`WaitWord`].
///
/// An acquirer that finds the count at 0 sleeps through [`WaitWord::sleep`], re-reading the
/// count with a read-modify-write; a releaser raises the count with a read-modify-write and
/// calls [`WaitWord::wake_counted`]. Releases wake *all* sleepers: a sleeper that was woken and then
/// killed before taking its permit cannot strand the others.
#[repr(C)]
pub(crate) struct SemState {
    count: WaitWord,
    /// [`SEM_MAX`] for a plain semaphore. Written once by the creator; handles keep the copy
    /// they read when they were opened.
    max: AtomicU32,
}

impl SemState {
    pub(crate) fn new(value: u32, max: u32) -> SemState {
        SemState {
            count: WaitWord::new(value),
            max: AtomicU32::new(max),
        }
    }

    pub(crate) fn try_acquire(&self) -> bool {
        let count = self.count.word();
        let mut c = count.load(Ordering::Relaxed);
        loop {
            if c == 0 {
                return false;
            }
            match count.compare_exchange_weak(c, c - 1, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => return true,
                Err(now) => c = now,
            }
        }
    }

    /// Takes a permit, waiting until `deadline` (`None`: for ever); false if none came.
    pub(crate) fn acquire(&self, deadline: Option<Instant>) -> bool {
        if shim::spin_until(|| self.try_acquire()) {
            return true;
        }
        loop {
            if self.try_acquire() {
                return true;
            }
            let slept = self.count.sleep_counted(deadline, |count| {
                (count.fetch_add(0, Ordering::AcqRel) == 0).then_some(0)
            });
            // Also when the re-check saw a permit that another thread then took: a waiter that
            // keeps losing that race must still give up at its deadline.
            if slept == Slept::TimedOut || deadline.is_some_and(|d| Instant::now() >= d) {
                return self.try_acquire();
            }
        }
    }

    /// Adds `n` permits unless that would take the count above `max` (this handle's copy).
    pub(crate) fn release(&self, n: u32, max: u32) -> Result<(), OverRelease> {
        let count = self.count.word();
        let mut c = count.load(Ordering::Relaxed);
        loop {
            let new = c.checked_add(n).filter(|&v| v <= max).ok_or(OverRelease)?;
            match count.compare_exchange_weak(c, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => break,
                Err(now) => c = now,
            }
        }
        self.count.wake_counted(WAKE_ALL);
        Ok(())
    }

    pub(crate) fn value(&self) -> u32 {
        self.count.word().load(Ordering::Relaxed)
    }
}

/// Why [`Semaphore::try_acquire`] (or `try_permit`, or the [`BoundedSemaphore`] ones) took no
/// permit.
///
/// # Examples
///
/// ```
/// let sem = multiproc::Semaphore::new(0)?;
/// assert_eq!(sem.try_acquire(), Err(multiproc::TryAcquireError::NoPermit));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TryAcquireError {
    /// Every permit is taken.
    NoPermit,
}

impl fmt::Display for TryAcquireError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no permit is available")
    }
}

impl std::error::Error for TryAcquireError {}

/// Why [`Semaphore::acquire_timeout`] (or `acquire_deadline`, `permit_timeout`,
/// `permit_deadline`, or the [`BoundedSemaphore`] ones) took no permit.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let sem = multiproc::Semaphore::new(0)?;
/// let r = sem.acquire_timeout(Duration::ZERO);
/// assert_eq!(r, Err(multiproc::AcquireTimeoutError::Timeout));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireTimeoutError {
    /// No permit became available before the deadline.
    Timeout,
}

timeout_only!(AcquireTimeoutError, "timed out waiting for a permit");

/// A counting semaphore shared between processes (Python's `multiprocessing.Semaphore`).
///
/// [`acquire`](Self::acquire) takes a permit, waiting while there is none;
/// [`release`](Self::release) gives one back, from any thread or process. Like Python's, it has
/// no owner: a process that dies holding permits does not give them back (use a [`Lock`](crate::Lock) when
/// that matters). A process that dies *waiting* harms no one.
///
/// # Examples
///
/// ```
/// let sem = multiproc::Semaphore::new(2)?;
/// assert!(sem.try_acquire().is_ok());
/// assert!(sem.try_acquire().is_ok());
/// assert_eq!(sem.try_acquire(), Err(multiproc::TryAcquireError::NoPermit));
/// sem.release().unwrap();
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Semaphore {
    state: Shared<SemState>,
}

/// The largest count of any semaphore (and the maximum of a plain [`Semaphore`]).
pub(crate) const SEM_MAX: u32 = u32::MAX - 1;

/// Like [`Semaphore`], but releasing beyond the initial value is an error (Python's
/// `multiprocessing.BoundedSemaphore`).
///
/// # Examples
///
/// ```
/// let sem = multiproc::BoundedSemaphore::new(1)?;
/// sem.acquire();
/// sem.release()?;
/// assert_eq!(sem.release(), Err(multiproc::OverRelease));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct BoundedSemaphore {
    state: Shared<SemState>,
    /// The maximum, read once when this handle was made.
    max: u32,
}

/// A permit taken from a [`Semaphore`] or [`BoundedSemaphore`], given back when dropped
/// (Python's `with sem:`).
///
/// # Examples
///
/// ```
/// let sem = multiproc::Semaphore::new(1)?;
/// {
///     let _permit = sem.permit();
///     assert_eq!(sem.value(), 0);
/// }
/// assert_eq!(sem.value(), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the permit is given back as soon as it is dropped"]
pub struct SemaphorePermit<'a> {
    state: &'a SemState,
    max: u32,
}

impl SemaphorePermit<'_> {
    /// Keeps the permit taken: dropping nothing gives it back (like `acquire` without a
    /// matching `release`).
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(1)?;
    /// sem.permit().forget();
    /// assert_eq!(sem.value(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn forget(self) {
        std::mem::forget(self);
    }
}

impl Drop for SemaphorePermit<'_> {
    fn drop(&mut self) {
        // A permit taken is always ours to give back, unless other handles released beyond
        // the maximum meanwhile (a bounded semaphore then stays at its maximum).
        let _ = self.state.release(1, self.max);
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit").finish_non_exhaustive()
    }
}

fn create(value: u32, max: u32, tag: u64) -> Result<Shared<SemState>> {
    if value > SEM_MAX {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "a semaphore's value must be below u32::MAX",
        ));
    }
    Shared::create(Kind::Semaphore, tag, 0, |p: *mut SemState| {
        // SAFETY: `create` passes fresh, aligned memory sized for the state.
        unsafe { p.write(SemState::new(value, max)) };
        Ok(())
    })
}

macro_rules! common_methods {
    ($ty:ident) => {
        /// Takes a permit, waiting as long as it takes.
        ///
        /// # Examples
        ///
        /// ```
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
        /// sem.acquire();
        /// # Ok::<(), multiproc::Error>(())
        /// ```
        pub fn acquire(&self) {
            self.state.acquire(None);
        }

        /// Takes a permit if one is available, without waiting (Python's
        /// `acquire(block=False)`, whose `False` is `Err(NoPermit)` here).
        ///
        /// # Errors
        /// [`TryAcquireError::NoPermit`] if none is available now.
        ///
        /// # Examples
        ///
        /// ```
        /// use multiproc::TryAcquireError;
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(0)?;")]
        /// assert_eq!(sem.try_acquire(), Err(TryAcquireError::NoPermit));
        /// # Ok::<(), multiproc::Error>(())
        /// ```
        pub fn try_acquire(&self) -> Result<(), TryAcquireError> {
            if self.state.try_acquire() {
                Ok(())
            } else {
                Err(TryAcquireError::NoPermit)
            }
        }

        /// Takes a permit, waiting at most `timeout` (Python's `acquire(timeout=...)`, whose
        /// `False` is `Err(Timeout)` here).
        ///
        /// # Errors
        /// [`AcquireTimeoutError::Timeout`] if no permit came in time.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::time::Duration;
        /// use multiproc::AcquireTimeoutError;
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(0)?;")]
        /// assert_eq!(
        ///     sem.acquire_timeout(Duration::from_millis(1)),
        ///     Err(AcquireTimeoutError::Timeout)
        /// );
        /// # Ok::<(), multiproc::Error>(())
        /// ```
        pub fn acquire_timeout(&self, timeout: Duration) -> Result<(), AcquireTimeoutError> {
            AcquireTimeoutError::unless(self.state.acquire(deadline_after(timeout)))
        }

        /// Takes a permit, waiting until `deadline` at the latest.
        ///
        /// # Errors
        /// [`AcquireTimeoutError::Timeout`] if no permit came in time.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::time::Instant;
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
        /// sem.acquire_deadline(Instant::now())?;
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn acquire_deadline(&self, deadline: Instant) -> Result<(), AcquireTimeoutError> {
            AcquireTimeoutError::unless(self.state.acquire(Some(deadline)))
        }

        /// Takes a permit, waiting as long as it takes, and gives it back when the returned
        /// [`SemaphorePermit`] is dropped (Python's `with sem:`).
        ///
        /// # Examples
        ///
        /// ```
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
        /// let permit = sem.permit();
        /// assert!(sem.try_acquire().is_err());
        /// drop(permit);
        /// assert!(sem.try_acquire().is_ok());
        /// # Ok::<(), multiproc::Error>(())
        /// ```
        pub fn permit(&self) -> SemaphorePermit<'_> {
            self.state.acquire(None);
            self.permit_held()
        }

        /// Like [`permit`](Self::permit), without waiting.
        ///
        /// # Errors
        /// [`TryAcquireError::NoPermit`] if none is available now.
        ///
        /// # Examples
        ///
        /// ```
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
        /// let held = sem.try_permit()?;
        /// assert!(sem.try_permit().is_err());
        /// # drop(held);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn try_permit(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
            self.try_acquire().map(|()| self.permit_held())
        }

        /// Like [`permit`](Self::permit), waiting at most `timeout`.
        ///
        /// # Errors
        /// [`AcquireTimeoutError::Timeout`] if no permit came in time.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::time::Duration;
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(0)?;")]
        /// assert!(sem.permit_timeout(Duration::from_millis(1)).is_err());
        /// # Ok::<(), multiproc::Error>(())
        /// ```
        pub fn permit_timeout(
            &self,
            timeout: Duration,
        ) -> Result<SemaphorePermit<'_>, AcquireTimeoutError> {
            self.acquire_timeout(timeout).map(|()| self.permit_held())
        }

        /// Like [`permit`](Self::permit), waiting until `deadline`.
        ///
        /// # Errors
        /// [`AcquireTimeoutError::Timeout`] if no permit came in time.
        ///
        /// # Examples
        ///
        /// ```
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(1)?;")]
        /// let _permit = sem.permit_deadline(std::time::Instant::now())?;
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn permit_deadline(
            &self,
            deadline: Instant,
        ) -> Result<SemaphorePermit<'_>, AcquireTimeoutError> {
            self.acquire_deadline(deadline).map(|()| self.permit_held())
        }

        /// Gives `n` permits back at once (Python 3.9's `release(n)`); all or none.
        ///
        /// # Errors
        /// [`OverRelease`] if the count would exceed the maximum (the count is unchanged).
        ///
        /// # Examples
        ///
        /// ```
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(3)?;")]
        /// sem.try_acquire()?;
        /// sem.try_acquire()?;
        /// sem.release_n(2)?;
        /// assert_eq!(sem.value(), 3);
        /// assert!(sem.release_n(u32::MAX).is_err());
        /// assert_eq!(sem.value(), 3);
        /// # Ok::<(), Box<dyn std::error::Error>>(())
        /// ```
        pub fn release_n(&self, n: u32) -> Result<(), OverRelease> {
            self.state.release(n, self.max())
        }

        fn permit_held(&self) -> SemaphorePermit<'_> {
            SemaphorePermit {
                state: &self.state,
                max: self.max(),
            }
        }

        /// The number of permits available now (a snapshot; Python's `get_value()`).
        ///
        /// # Examples
        ///
        /// ```
        #[doc = concat!("let sem = multiproc::", stringify!($ty), "::new(3)?;")]
        /// assert_eq!(sem.value(), 3);
        /// # Ok::<(), multiproc::Error>(())
        /// ```
        #[doc(alias = "get_value")]
        pub fn value(&self) -> u32 {
            self.state.value()
        }
    };
}

impl Semaphore {
    /// The segment's descriptor (tests reopen it as other objects).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.state.fd()
    }
    /// Creates a semaphore with `value` permits.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for `u32::MAX`; [`ErrorKind::Io`] if the shared segment
    /// cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(4)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<Semaphore> {
        Ok(Semaphore {
            state: create(value, SEM_MAX, type_tag::<Semaphore>())?,
        })
    }

    common_methods!(Semaphore);

    /// Gives a permit back.
    ///
    /// # Errors
    /// [`OverRelease`] if the count is already at its maximum, `u32::MAX - 1` (which another
    /// process can cause by releasing that often); the count is unchanged.
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = multiproc::Semaphore::new(0)?;
    /// sem.release()?;
    /// sem.try_acquire()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self) -> Result<(), OverRelease> {
        self.state.release(1, SEM_MAX)
    }

    fn max(&self) -> u32 {
        SEM_MAX
    }
}

impl BoundedSemaphore {
    /// The segment's descriptor (tests reopen it as other objects).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.state.fd()
    }
    /// Creates a bounded semaphore with `value` permits, which is also its maximum.
    ///
    /// # Errors
    /// As [`Semaphore::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(2)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: u32) -> Result<BoundedSemaphore> {
        Ok(BoundedSemaphore {
            state: create(value, value, type_tag::<BoundedSemaphore>())?,
            max: value,
        })
    }

    common_methods!(BoundedSemaphore);

    /// Gives a permit back.
    ///
    /// # Errors
    /// [`OverRelease`] if every permit is already available (the count is unchanged).
    ///
    /// # Examples
    ///
    /// ```
    /// let sem = multiproc::BoundedSemaphore::new(1)?;
    /// assert!(sem.release().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn release(&self) -> Result<(), OverRelease> {
        self.state.release(1, self.max)
    }

    fn max(&self) -> u32 {
        self.max
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Semaphore")
            .field("value", &self.value())
            .finish()
    }
}

impl fmt::Debug for BoundedSemaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedSemaphore")
            .field("value", &self.value())
            .field("max", &self.max)
            .finish()
    }
}

shared_handle!(
    /// A semaphore travels as its segment's descriptor alone.
    [] Semaphore, state, (),
    |_| Ok(()),
    |fd, ()| {
        Shared::open(fd, &[Kind::Semaphore], type_tag::<Semaphore>(), 0)
            .map(|state| Semaphore { state })
    },
);

shared_handle!(
    /// As a [`Semaphore`]; its maximum is read back from the segment and checked.
    [] BoundedSemaphore, state, (),
    |_| Ok(()),
    |fd, ()| {
        let state: Shared<SemState> =
            Shared::open(fd, &[Kind::Semaphore], type_tag::<BoundedSemaphore>(), 0)?;
        let max = state.max.load(Ordering::Relaxed);
        if max > SEM_MAX {
            return Err(Error::new(
                ErrorKind::BadHeader,
                "the bounded semaphore's segment announces an impossible maximum",
            ));
        }
        Ok(BoundedSemaphore { state, max })
    },
);
