//! Control-flow errors of the proxies' waiting operations (lock, event, queue), in the shape of
//! crossbeam-channel's: each form of an operation has its own type, and "timed out" is a
//! variant, never `Ok(None)` or `false`.
//!
//! A proxy's arguments are borrowed (`put(&item)`), so there is never a value to hand back: the
//! caller still has it.

use crate::error::{Error, ErrorKind};

/// Why a blocking proxy operation (`acquire`, `wait`, `put`, `get`) failed.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Manager, ProxyError};
///
/// multiproc::init();
/// let m = Manager::start()?;
/// let q = m.queue::<u32>(None)?;
/// let other = Manager::connect(m.address(), m.authkey())?;
/// m.shutdown()?;
/// assert!(matches!(q.get(), Err(ProxyError::Disconnected)));
/// # drop(other);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum ProxyError {
    /// The connection to the manager is gone (the server died or was shut down).
    Disconnected,
    /// The manager refused the request, or a value did not encode or decode.
    Failed(Error),
}

/// Why `acquire_timeout`, `acquire_deadline`, `wait_timeout`, `wait_deadline`, `put_timeout`,
/// `put_deadline`, `get_timeout` or `get_deadline` of a proxy did not succeed.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::{Manager, ProxyTimeoutError};
///
/// multiproc::init();
/// let m = Manager::start()?;
/// let e = m.event()?;
/// assert!(matches!(e.wait_timeout(Duration::from_millis(1)), Err(ProxyTimeoutError::Timeout)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum ProxyTimeoutError {
    /// The deadline passed first; nothing changed, and the operation can be repeated.
    Timeout,
    /// See [`ProxyError::Disconnected`].
    Disconnected,
    /// See [`ProxyError::Failed`].
    Failed(Error),
}

/// Why [`LockProxy::try_acquire`](crate::LockProxy::try_acquire) did not take the lock.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{LockProxy, Manager, Process, ProxyTryAcquireError};
///
/// // A child has a connection of its own: the parent's hold makes it wait.
/// fn child(lock: LockProxy) -> bool {
///     matches!(lock.try_acquire(), Err(ProxyTryAcquireError::WouldBlock))
/// }
///
/// multiproc::init();
/// let m = Manager::start()?;
/// let lock = m.lock()?;
/// let _held = lock.acquire()?;
/// let mut p = Process::new(child, lock.clone());
/// p.start()?;
/// assert!(p.join()?);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum ProxyTryAcquireError {
    /// Another connection holds the lock now.
    WouldBlock,
    /// See [`ProxyError::Disconnected`].
    Disconnected,
    /// See [`ProxyError::Failed`].
    Failed(Error),
}

/// Why [`QueueProxy::try_get`](crate::QueueProxy::try_get) returned no item.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Manager, ProxyTryGetError};
///
/// multiproc::init();
/// let m = Manager::start()?;
/// let q = m.queue::<u8>(None)?;
/// assert!(matches!(q.try_get(), Err(ProxyTryGetError::Empty)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum ProxyTryGetError {
    /// The queue is empty now.
    Empty,
    /// See [`ProxyError::Disconnected`].
    Disconnected,
    /// See [`ProxyError::Failed`].
    Failed(Error),
}

/// Why [`QueueProxy::try_put`](crate::QueueProxy::try_put) did not append the item.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Manager, ProxyTryPutError};
///
/// multiproc::init();
/// let m = Manager::start()?;
/// let q = m.queue::<u8>(Some(1))?;
/// q.try_put(&1).unwrap();
/// assert!(matches!(q.try_put(&2), Err(ProxyTryPutError::Full)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum ProxyTryPutError {
    /// The (bounded) queue is full now.
    Full,
    /// See [`ProxyError::Disconnected`].
    Disconnected,
    /// See [`ProxyError::Failed`].
    Failed(Error),
}

macro_rules! proxy_error {
    ($name:ident $(, $extra:ident => $kind:ident, $msg:literal)?) => {
        crate::error::error_display!($name {
            Disconnected => "the connection to the manager is gone",
            $($extra => $msg)?
        } Failed => "manager request failed");

        crate::error::failed_error!($name);

        impl From<Error> for $name {
            /// An [`ErrorKind::Disconnected`] error becomes `Disconnected`; any other, `Failed`.
            fn from(e: Error) -> Self {
                if e.kind() == ErrorKind::Disconnected {
                    $name::Disconnected
                } else {
                    $name::Failed(e)
                }
            }
        }

        impl From<$name> for Error {
            /// For `?` in functions returning [`crate::Result`]: `Disconnected` becomes an
            /// [`ErrorKind::Disconnected`] error (and a timeout an [`ErrorKind::Timeout`]
            /// one, a refusal to wait an [`ErrorKind::InvalidState`] one).
            fn from(e: $name) -> Error {
                match e {
                    $name::Disconnected => Error::new(
                        ErrorKind::Disconnected,
                        "the connection to the manager is gone",
                    ),
                    $name::Failed(e) => e,
                    $($name::$extra => Error::new(ErrorKind::$kind, $msg),)?
                }
            }
        }
    };
}

proxy_error!(ProxyError);
proxy_error!(ProxyTimeoutError, Timeout => Timeout, "the manager's operation timed out");
proxy_error!(ProxyTryAcquireError, WouldBlock => InvalidState, "the manager's lock is held by another connection");
proxy_error!(ProxyTryGetError, Empty => InvalidState, "the manager's queue is empty");
proxy_error!(ProxyTryPutError, Full => InvalidState, "the manager's queue is full");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disconnected_errors_become_the_variant_and_back() {
        let e = Error::new(ErrorKind::Disconnected, "gone");
        assert!(matches!(ProxyError::from(e), ProxyError::Disconnected));
        let e = Error::new(ErrorKind::NotOwner, "not yours");
        assert!(matches!(
            ProxyTimeoutError::from(e),
            ProxyTimeoutError::Failed(ref f) if f.kind() == ErrorKind::NotOwner
        ));
        assert_eq!(
            Error::from(ProxyTimeoutError::Timeout).kind(),
            ErrorKind::Timeout
        );
        assert_eq!(
            Error::from(ProxyTryGetError::Empty).kind(),
            ErrorKind::InvalidState
        );
        assert_eq!(
            Error::from(ProxyTryPutError::Disconnected).kind(),
            ErrorKind::Disconnected
        );
        assert_eq!(
            ProxyTryAcquireError::WouldBlock.to_string(),
            "the manager's lock is held by another connection"
        );
    }
}
