//! The errors of the process layer's operations that wait: joining a [`Process`] and calling a
//! [`Worker`] with a deadline, in the crossbeam shape (one small type per form).
//!
//! The blocking forms (`Process::join`, `Worker::call`) return the crate's [`Error`], whose
//! [`kind`](Error::kind) says how the child failed; the forms that can also stop early say so
//! with a variant of their own, never with `Ok(None)`.
//!
//! [`Process`]: crate::Process
//! [`Worker`]: crate::Worker

use std::fmt;

use crate::error::{Error, ErrorKind};

/// Why [`Process::try_join`](crate::Process::try_join) returned no value.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Process, TryJoinError};
/// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
/// multiproc::init();
/// let mut p = Process::new(nap, 10_000);
/// p.start()?;
/// assert!(matches!(p.try_join(), Err(TryJoinError::Running)));
/// p.kill()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum TryJoinError {
    /// The child is still running: join again later.
    Running,
    /// The child ended without a value, or the join itself failed: the error says how (as
    /// [`Process::join`](crate::Process::join)).
    Failed(Error),
}

/// Why [`Process::join_timeout`](crate::Process::join_timeout) or
/// [`join_deadline`](crate::Process::join_deadline) returned no value.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::{JoinTimeoutError, Process};
/// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
/// multiproc::init();
/// let mut p = Process::new(nap, 10_000);
/// p.start()?;
/// assert!(matches!(p.join_timeout(Duration::from_millis(10)), Err(JoinTimeoutError::Timeout)));
/// p.kill()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum JoinTimeoutError {
    /// The deadline passed with the child still running; it is left running, and can be joined
    /// again.
    Timeout,
    /// See [`TryJoinError::Failed`].
    Failed(Error),
}

/// Why [`Worker::call_timeout`](crate::Worker::call_timeout) or
/// [`call_deadline`](crate::Worker::call_deadline) returned no value.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::{CallTimeoutError, Worker};
/// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
/// multiproc::init();
/// let mut w = Worker::start()?;
/// let late = w.call_timeout(nap, 10_000, Duration::from_millis(10));
/// assert!(matches!(late, Err(CallTimeoutError::Timeout)));
/// assert!(!w.is_alive()); // killed: it was in the middle of the call
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum CallTimeoutError {
    /// The deadline passed before the result arrived. The worker, in the middle of the call
    /// (or of receiving its argument), was killed and reaped; later calls fail with
    /// [`ErrorKind::Disconnected`].
    Timeout,
    /// The call failed as [`Worker::call`](crate::Worker::call) can fail (a panic, a codec
    /// error, a worker that died or had died before: see the error's kind).
    Failed(Error),
}

macro_rules! stopped_early {
    ($name:ident, $early:ident => $msg:literal, $kind:expr) => {
        impl $name {
            /// The failure as the crate's [`Error`]; stopping early becomes an error of kind
            #[doc = concat!("[`", stringify!($kind), "`].")]
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("use multiproc::{ErrorKind, ", stringify!($name), "};")]
            #[doc = concat!("let e = ", stringify!($name), "::", stringify!($early), ".into_error();")]
            #[doc = concat!("assert_eq!(e.kind(), ", stringify!($kind), ");")]
            /// ```
            pub fn into_error(self) -> Error {
                match self {
                    $name::$early => Error::new($kind, $msg),
                    $name::Failed(e) => e,
                }
            }

        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$early => f.write_str($msg),
                    $name::Failed(e) => fmt::Display::fmt(e, f),
                }
            }
        }

        crate::error::failed_error!(from $name);

        impl From<$name> for Error {
            #[doc = concat!("See [`", stringify!($name), "::into_error`]: so that `?` works in functions returning")]
            /// [`crate::Result`].
            fn from(e: $name) -> Error {
                e.into_error()
            }
        }
    };
}

stopped_early!(TryJoinError, Running => "the child process is still running", ErrorKind::Timeout);
stopped_early!(
    JoinTimeoutError,
    Timeout => "timed out waiting for the child process to end",
    ErrorKind::Timeout
);
stopped_early!(
    CallTimeoutError,
    Timeout => "the call timed out; the worker was killed",
    ErrorKind::Timeout
);
