//! The errors of the futures' waits with a deadline: [`ResultTimeoutError`],
//! [`WaitTimeoutError`], [`AsCompletedTimeoutError`], [`MapTimeoutError`] (the crate's one shape of error for
//! blocking operations, see docs/architecture.md).

use std::fmt;

use super::future::Future;
use crate::error::{Error, ErrorKind};

/// Why [`Future::result_timeout`] (or `_deadline`, or
/// [`exception_timeout`](Future::exception_timeout)) returned no value.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ErrorKind, ResultTimeoutError, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(1)?;
/// let f = ex.submit_closure(|| std::thread::sleep(Duration::from_millis(200)))?;
/// assert!(matches!(f.result_timeout(Duration::from_millis(1)), Err(ResultTimeoutError::Timeout)));
/// let g = ex.submit_closure(|| -> u8 { panic!("no") })?;
/// match g.result_timeout(Duration::from_secs(30)) {
///     Err(ResultTimeoutError::Failed(e)) => assert_eq!(e.kind(), ErrorKind::Panicked),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum ResultTimeoutError {
    /// The call had not finished when the deadline passed; it goes on, and its result can
    /// still be waited for.
    Timeout,
    /// The call finished without a value: exactly the error [`Future::result`] returns
    /// ([`ErrorKind::Cancelled`], [`ErrorKind::Panicked`], [`ErrorKind::WorkerDied`],
    /// [`ErrorKind::ResultTaken`], ...).
    Failed(Error),
}

crate::error::error_display!(ResultTimeoutError {
    Timeout => "the future did not finish in time",
} Failed => "the future failed");

crate::error::failed_error!(ResultTimeoutError);

impl From<ResultTimeoutError> for Error {
    /// `Timeout` becomes an [`ErrorKind::Timeout`] error, so that `?` works in functions
    /// returning [`crate::Result`].
    fn from(e: ResultTimeoutError) -> Error {
        match e {
            ResultTimeoutError::Timeout => timeout_error(),
            ResultTimeoutError::Failed(e) => e,
        }
    }
}

pub(crate) fn timeout_error() -> Error {
    Error::new(ErrorKind::Timeout, "the future did not finish in time")
}

/// [`futures::wait_timeout`](crate::futures::wait_timeout) (or `_deadline`): the condition did
/// not hold when the deadline passed. Both lists come back, as CPython's `wait` returns them.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, WaitTimeoutError, futures::wait_timeout};
/// let ex = ThreadPoolExecutor::new(1)?;
/// let slow = ex.submit_closure(|| std::thread::sleep(Duration::from_millis(300)))?;
/// match wait_timeout([&slow], Duration::from_millis(1), ReturnWhen::AllCompleted) {
///     Err(WaitTimeoutError::Timeout { done, not_done }) => assert_eq!((done.len(), not_done.len()), (0, 1)),
///     Ok(_) => panic!("finished too early"),
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum WaitTimeoutError<'a, R> {
    /// The deadline passed first: the futures done by then, and the others.
    Timeout {
        /// The futures done at the deadline.
        done: Vec<&'a Future<R>>,
        /// The futures still pending or running at the deadline.
        not_done: Vec<&'a Future<R>>,
    },
}

impl<R> fmt::Debug for WaitTimeoutError<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WaitTimeoutError::Timeout { done, not_done } = self;
        f.debug_struct("Timeout")
            .field("done", &done.len())
            .field("not_done", &not_done.len())
            .finish()
    }
}

impl<R> fmt::Display for WaitTimeoutError<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let WaitTimeoutError::Timeout { done, not_done } = self;
        write!(
            f,
            "timed out waiting on futures: {} done, {} not done",
            done.len(),
            not_done.len()
        )
    }
}

impl<R> std::error::Error for WaitTimeoutError<'_, R> {}

impl<R> From<WaitTimeoutError<'_, R>> for Error {
    /// An [`ErrorKind::Timeout`] error (the lists are dropped).
    fn from(e: WaitTimeoutError<'_, R>) -> Error {
        Error::new(ErrorKind::Timeout, e.to_string())
    }
}

/// The deadline of [`as_completed_timeout`](crate::as_completed_timeout) (or `_deadline`)
/// passed with futures unfinished (CPython raises `TimeoutError` from the iterator): they come
/// back, in input order, and the iterator ends.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{AsCompletedTimeoutError, ThreadPoolExecutor, as_completed_timeout};
/// let ex = ThreadPoolExecutor::new(1)?;
/// let slow = ex.submit_closure(|| std::thread::sleep(Duration::from_millis(300)))?;
/// let mut it = as_completed_timeout([&slow], Duration::from_millis(1));
/// match it.next() {
///     Some(Err(AsCompletedTimeoutError::Timeout(left))) => assert!(left[0].cancel() || left[0].running()),
///     other => panic!("{other:?}"),
/// }
/// assert!(it.next().is_none());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum AsCompletedTimeoutError<'a, R> {
    /// The futures not yielded when the deadline passed.
    Timeout(Vec<&'a Future<R>>),
}

impl<R> fmt::Debug for AsCompletedTimeoutError<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let AsCompletedTimeoutError::Timeout(left) = self;
        f.debug_tuple("Timeout").field(&left.len()).finish()
    }
}

impl<R> fmt::Display for AsCompletedTimeoutError<'_, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let AsCompletedTimeoutError::Timeout(left) = self;
        write!(
            f,
            "{} futures unfinished when the timeout passed",
            left.len()
        )
    }
}

impl<R> std::error::Error for AsCompletedTimeoutError<'_, R> {}

impl<R> From<AsCompletedTimeoutError<'_, R>> for Error {
    /// An [`ErrorKind::Timeout`] error (the futures are dropped).
    fn from(e: AsCompletedTimeoutError<'_, R>) -> Error {
        Error::new(ErrorKind::Timeout, e.to_string())
    }
}

/// An item of [`Executor::map_timeout`](crate::Executor::map_timeout) (or `map_deadline`)
/// that has no value: the deadline passed before it was ready (the last item: the calls not
/// started are cancelled and the iterator ends, as CPython's `map` raises `TimeoutError`), or
/// its call failed.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ErrorKind, Executor, MapTimeoutError, ThreadPoolExecutor};
/// fn check(x: u8) -> u8 { assert!(x < 2, "too big"); x }
/// let ex = ThreadPoolExecutor::new(1)?;
/// let got: Vec<_> = ex.map_timeout(check, [1, 2], Duration::from_secs(30), 1)?.collect();
/// assert!(matches!(&got[1], Err(MapTimeoutError::Failed(e)) if e.kind() == ErrorKind::Panicked));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum MapTimeoutError {
    /// The deadline passed with this item's call unfinished.
    Timeout,
    /// The item's call (or a later submission) failed: the error the untimed
    /// [`Map`](crate::Map) would yield.
    Failed(Error),
}

crate::error::error_display!(MapTimeoutError {
    Timeout => "the map's results were not ready in time",
} Failed => "the map's call failed");

crate::error::failed_error!(MapTimeoutError);

impl From<MapTimeoutError> for Error {
    /// `Timeout` becomes an [`ErrorKind::Timeout`] error, so that `?` works in functions
    /// returning [`crate::Result`].
    fn from(e: MapTimeoutError) -> Error {
        match e {
            MapTimeoutError::Timeout => Error::new(
                ErrorKind::Timeout,
                "the map's results were not ready in time",
            ),
            MapTimeoutError::Failed(e) => e,
        }
    }
}
