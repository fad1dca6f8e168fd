//! The pool's control-flow errors: what its waits with a time limit return (the shape of
//! every blocking operation in the crate: see "One shape of error" in docs/architecture.md).

use crate::error::{Error, ErrorKind};

/// The error of [`AsyncResult::get_timeout`](crate::AsyncResult::get_timeout) and
/// [`get_deadline`](crate::AsyncResult::get_deadline).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::AsyncGetTimeoutError;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// multiproc::init();
/// let pool = multiproc::Pool::new(1)?;
/// let r = pool.apply_async(nap, 500)?;
/// assert!(matches!(r.get_timeout(Duration::from_millis(1)), Err(AsyncGetTimeoutError::Timeout)));
/// assert_eq!(r.get()?, 500);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum AsyncGetTimeoutError {
    /// The result was not ready by the deadline; it is still to come (call again).
    Timeout,
    /// The call failed: how the task failed, or [`ErrorKind::ResultTaken`] (see
    /// [`AsyncResult::get`](crate::AsyncResult::get)).
    Failed(Error),
}

/// Display, `Error` (with the failure as its source) and the conversion into a crate
/// [`Error`] for an error with `Timeout` and `Failed(Error)`.
macro_rules! timeout_error {
    ($name:ident, $timeout:literal, $failed:literal) => {
        crate::error::error_display!($name { Timeout => $timeout } Failed => $failed);

        crate::error::failed_error!($name);

        impl From<$name> for Error {
            /// A timeout becomes [`ErrorKind::Timeout`], so that `?` works in functions
            /// returning [`crate::Result`].
            fn from(e: $name) -> Error {
                match e {
                    $name::Timeout => Error::new(ErrorKind::Timeout, $timeout),
                    $name::Failed(e) => e,
                }
            }
        }
    };
}

timeout_error!(
    AsyncGetTimeoutError,
    "the result was not ready before the deadline",
    "the call failed"
);

/// The error of [`AsyncResult::wait_timeout`](crate::AsyncResult::wait_timeout) and
/// [`wait_deadline`](crate::AsyncResult::wait_deadline): the result was not ready by the
/// deadline (waiting itself cannot fail).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
///
/// multiproc::init();
/// let pool = multiproc::Pool::new(1)?;
/// let r = pool.apply_async(nap, 500)?;
/// assert_eq!(r.wait_timeout(Duration::from_millis(1)), Err(multiproc::AsyncWaitTimeoutError));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AsyncWaitTimeoutError;

crate::error::message_error!(
    AsyncWaitTimeoutError,
    "the result was not ready before the deadline"
);

/// The error of [`Pool::join_timeout`](crate::Pool::join_timeout) and
/// [`join_deadline`](crate::Pool::join_deadline) (and the same methods of
/// [`ThreadPool`](crate::ThreadPool)).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::PoolJoinTimeoutError;
///
/// multiproc::init();
/// let pool = multiproc::Pool::new(1)?;
/// let e = pool.join_timeout(Duration::from_secs(1)).unwrap_err();
/// assert!(matches!(e, PoolJoinTimeoutError::Failed(ref e) if e.kind() == multiproc::ErrorKind::InvalidState));
/// pool.close();
/// loop {
///     match pool.join_timeout(Duration::from_millis(100)) {
///         Ok(()) => break,
///         Err(PoolJoinTimeoutError::Timeout) => continue,
///         Err(e) => return Err(e.into()),
///     }
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum PoolJoinTimeoutError {
    /// The pool was still winding down at the deadline (call again).
    Timeout,
    /// The pool cannot be joined: [`ErrorKind::InvalidState`] while it is still running
    /// (before [`close`](crate::Pool::close) or [`terminate`](crate::Pool::terminate)).
    Failed(Error),
}

timeout_error!(
    PoolJoinTimeoutError,
    "the pool had not ended before the deadline",
    "join failed"
);

/// The outcome of a join with a deadline (`Ok(false)`: not ended yet) in the shape of
/// [`PoolJoinTimeoutError`].
pub(crate) fn joined(r: crate::Result<bool>) -> Result<(), PoolJoinTimeoutError> {
    match r {
        Ok(true) => Ok(()),
        Ok(false) => Err(PoolJoinTimeoutError::Timeout),
        Err(e) => Err(PoolJoinTimeoutError::Failed(e)),
    }
}

impl From<AsyncWaitTimeoutError> for Error {
    /// [`ErrorKind::Timeout`], so that `?` works in functions returning [`crate::Result`].
    fn from(_: AsyncWaitTimeoutError) -> Error {
        Error::new(
            ErrorKind::Timeout,
            "the result was not ready before the deadline",
        )
    }
}
