//! The proxies whose operations wait: a lock, an event and a queue owned by the manager. Each
//! waiting operation comes as `op`, `try_op`, `op_timeout` and `op_deadline`, funnelled into
//! one `op_inner(deadline)`, with the error types of [`crate::manager::error`].

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{Base, done, enc, flag, len, unexpected, value};
use crate::error::{Error, ErrorKind, Result};
use crate::manager::client::until;
use crate::manager::error::{
    ProxyError, ProxyTimeoutError, ProxyTryAcquireError, ProxyTryGetError, ProxyTryPutError,
};
use crate::manager::protocol::{EventOp, LockOp, QueueOp, Reply, Request};

/// `now + timeout`; `None` (forever) when that overflows an `Instant`.
fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// An untimed wait that came back empty-handed: the server broke the protocol.
fn empty_handed(what: &str) -> Error {
    Error::new(
        ErrorKind::Codec,
        format!("the manager ended an untimed {what} without its result"),
    )
}

/// A lock owned by a manager, for processes that share no memory (or no machine). It belongs
/// to the connection that acquired it and is released when that connection ends, so a client
/// killed while holding it does not block the others (CPython's never is).
///
/// Acquiring a lock this connection already holds is an error (not a deadlock).
///
/// # Examples
///
/// ```no_run
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let lock = m.lock()?;
/// {
///     let _held = lock.acquire()?;
///     assert!(lock.is_locked()?);
/// }
/// assert!(!lock.is_locked()?);
/// let _again = lock.acquire_timeout(std::time::Duration::from_secs(1))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct LockProxy {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<()>,
}
proxy_common!(LockProxy, LockOp => Lock);

/// The proof that a [`LockProxy`] is held; dropping it releases the lock.
///
/// # Examples
/// See [`LockProxy`].
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockProxyGuard<'a> {
    lock: &'a LockProxy,
}

impl fmt::Debug for LockProxyGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockProxyGuard")
            .field("id", &self.lock.base.id)
            .finish()
    }
}

impl Drop for LockProxyGuard<'_> {
    fn drop(&mut self) {
        let _ = self.lock.release_raw();
    }
}

impl LockProxy {
    /// `Ok(None)`: the deadline passed first.
    fn acquire_inner(&self, deadline: Option<Instant>) -> Result<Option<LockProxyGuard<'_>>> {
        Ok(flag(self.op(LockOp::Acquire(until(deadline)))?)?
            .then_some(LockProxyGuard { lock: self }))
    }

    /// Waits for the lock and takes it.
    ///
    /// # Errors
    /// [`ProxyError::Disconnected`] if the manager is gone; [`ProxyError::Failed`] with
    /// [`ErrorKind::InvalidArgument`] if this connection holds the lock already.
    ///
    /// # Examples
    /// See [`LockProxy`].
    pub fn acquire(&self) -> std::result::Result<LockProxyGuard<'_>, ProxyError> {
        self.acquire_inner(None)?
            .ok_or_else(|| ProxyError::Failed(empty_handed("acquire")))
    }

    /// Takes the lock only if it is free now.
    ///
    /// # Errors
    /// [`ProxyTryAcquireError::WouldBlock`] if another connection holds it; otherwise as
    /// [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// See [`ProxyTryAcquireError`].
    pub fn try_acquire(&self) -> std::result::Result<LockProxyGuard<'_>, ProxyTryAcquireError> {
        self.acquire_inner(Some(Instant::now()))?
            .ok_or(ProxyTryAcquireError::WouldBlock)
    }

    /// Takes the lock if it is free within `timeout`.
    ///
    /// # Errors
    /// [`ProxyTimeoutError::Timeout`] if it was not; otherwise as [`acquire`](Self::acquire).
    ///
    /// # Examples
    /// See [`LockProxy`].
    pub fn acquire_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<LockProxyGuard<'_>, ProxyTimeoutError> {
        self.acquire_inner(deadline_after(timeout))?
            .ok_or(ProxyTimeoutError::Timeout)
    }

    /// Takes the lock if it is free by `deadline`.
    ///
    /// # Errors
    /// As [`acquire_timeout`](Self::acquire_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// let lock = m.lock()?;
    /// let soon = std::time::Instant::now() + std::time::Duration::from_secs(1);
    /// let _held = lock.acquire_deadline(soon)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn acquire_deadline(
        &self,
        deadline: Instant,
    ) -> std::result::Result<LockProxyGuard<'_>, ProxyTimeoutError> {
        self.acquire_inner(Some(deadline))?
            .ok_or(ProxyTimeoutError::Timeout)
    }

    /// Whether some connection holds the lock now.
    ///
    /// # Examples
    /// See [`LockProxy`].
    pub fn is_locked(&self) -> Result<bool> {
        flag(self.op(LockOp::IsLocked)?)
    }

    pub(crate) fn release_raw(&self) -> Result<()> {
        done(self.op(LockOp::Release)?)
    }
}

/// An event owned by a manager — Python's `manager.Event()`.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::ProxyTimeoutError;
///
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let e = m.event()?;
/// assert!(matches!(e.wait_timeout(Duration::from_millis(1)), Err(ProxyTimeoutError::Timeout)));
/// e.set()?;
/// e.wait_timeout(Duration::from_millis(1))?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct EventProxy {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<()>,
}
proxy_common!(EventProxy, EventOp => Event);

impl EventProxy {
    /// Whether the flag was set before `deadline`.
    fn wait_inner(&self, deadline: Option<Instant>) -> Result<bool> {
        flag(self.op(EventOp::Wait(until(deadline)))?)
    }

    /// Sets the flag and wakes every waiter.
    ///
    /// # Examples
    /// See [`EventProxy`].
    pub fn set(&self) -> Result<()> {
        done(self.op(EventOp::Set)?)
    }

    /// Clears the flag.
    ///
    /// # Examples
    /// See [`EventProxy`].
    pub fn clear(&self) -> Result<()> {
        done(self.op(EventOp::Clear)?)
    }

    /// Whether the flag is set (the event's `try` form: it never waits).
    ///
    /// # Examples
    /// See [`EventProxy`].
    pub fn is_set(&self) -> Result<bool> {
        flag(self.op(EventOp::IsSet)?)
    }

    /// Waits until the flag is set.
    ///
    /// # Errors
    /// [`ProxyError::Disconnected`] if the manager is gone.
    ///
    /// # Examples
    /// See [`EventProxy`].
    pub fn wait(&self) -> std::result::Result<(), ProxyError> {
        match self.wait_inner(None)? {
            true => Ok(()),
            false => Err(ProxyError::Failed(empty_handed("wait"))),
        }
    }

    /// Waits until the flag is set or `timeout` passes.
    ///
    /// # Errors
    /// [`ProxyTimeoutError::Timeout`] if the flag was still clear; otherwise as
    /// [`wait`](Self::wait).
    ///
    /// # Examples
    /// See [`EventProxy`].
    pub fn wait_timeout(&self, timeout: Duration) -> std::result::Result<(), ProxyTimeoutError> {
        self.wait_deadline_opt(deadline_after(timeout))
    }

    /// Waits until the flag is set or `deadline` passes.
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// let e = m.event()?;
    /// e.set()?;
    /// e.wait_deadline(std::time::Instant::now())?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> std::result::Result<(), ProxyTimeoutError> {
        self.wait_deadline_opt(Some(deadline))
    }

    fn wait_deadline_opt(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), ProxyTimeoutError> {
        match self.wait_inner(deadline)? {
            true => Ok(()),
            false => Err(ProxyTimeoutError::Timeout),
        }
    }
}

/// A FIFO queue owned by a manager — Python's `manager.Queue(maxsize)`.
///
/// Items are borrowed by `put` (encoded at once): an item that was not put is still the
/// caller's, so the errors carry none.
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use multiproc::{ProxyTimeoutError, ProxyTryGetError};
///
/// multiproc::init();
/// let m = multiproc::Manager::start()?;
/// let q = m.queue::<String>(None)?;
/// q.put(&"job".into())?;
/// assert_eq!(q.get()?, "job");
/// assert!(matches!(q.try_get(), Err(ProxyTryGetError::Empty)));
/// assert!(matches!(q.get_timeout(Duration::from_millis(1)), Err(ProxyTimeoutError::Timeout)));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct QueueProxy<T> {
    pub(crate) base: Base,
    pub(crate) _t: PhantomData<fn(T) -> T>,
}
proxy_common!(QueueProxy<T>, QueueOp => Queue);

impl<T: Serialize + DeserializeOwned> QueueProxy<T> {
    /// `Ok(false)`: no room before `deadline`.
    fn put_inner(&self, item: &T, deadline: Option<Instant>) -> Result<bool> {
        match self.op(QueueOp::Put(enc(item)?, until(deadline)))? {
            Reply::Done => Ok(true),
            Reply::Timeout => Ok(false),
            r => Err(unexpected(r)),
        }
    }

    /// `Ok(None)`: nothing came before `deadline`.
    fn get_inner(&self, deadline: Option<Instant>) -> Result<Option<T>> {
        match self.op(QueueOp::Get(until(deadline)))? {
            Reply::Timeout => Ok(None),
            r => value(r)?
                .map(Some)
                .ok_or_else(|| Error::new(ErrorKind::Codec, "no item in the manager's reply")),
        }
    }

    /// Appends `item`, waiting for room in a bounded queue.
    ///
    /// # Errors
    /// [`ProxyError::Disconnected`] if the manager is gone; [`ProxyError::Failed`] if `item`
    /// does not encode.
    ///
    /// # Examples
    /// See [`QueueProxy`].
    pub fn put(&self, item: &T) -> std::result::Result<(), ProxyError> {
        match self.put_inner(item, None)? {
            true => Ok(()),
            false => Err(ProxyError::Failed(empty_handed("put"))),
        }
    }

    /// Appends `item` only if there is room now (Python's `put_nowait`).
    ///
    /// # Errors
    /// [`ProxyTryPutError::Full`] if there was none; otherwise as [`put`](Self::put).
    ///
    /// # Examples
    /// See [`ProxyTryPutError`].
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, item: &T) -> std::result::Result<(), ProxyTryPutError> {
        match self.put_inner(item, Some(Instant::now()))? {
            true => Ok(()),
            false => Err(ProxyTryPutError::Full),
        }
    }

    /// Appends `item` if there is room within `timeout`.
    ///
    /// # Errors
    /// [`ProxyTimeoutError::Timeout`] if there was none; otherwise as [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u8>(Some(1))?;
    /// q.put_timeout(&1, std::time::Duration::from_millis(1))?;
    /// assert!(q.put_timeout(&2, std::time::Duration::from_millis(1)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        item: &T,
        timeout: Duration,
    ) -> std::result::Result<(), ProxyTimeoutError> {
        self.put_deadline_opt(item, deadline_after(timeout))
    }

    /// Appends `item` if there is room by `deadline`.
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u8>(None)?;
    /// q.put_deadline(&1, std::time::Instant::now())?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_deadline(
        &self,
        item: &T,
        deadline: Instant,
    ) -> std::result::Result<(), ProxyTimeoutError> {
        self.put_deadline_opt(item, Some(deadline))
    }

    fn put_deadline_opt(
        &self,
        item: &T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), ProxyTimeoutError> {
        match self.put_inner(item, deadline)? {
            true => Ok(()),
            false => Err(ProxyTimeoutError::Timeout),
        }
    }

    /// Takes the oldest item, waiting for one.
    ///
    /// # Errors
    /// [`ProxyError::Disconnected`] if the manager is gone; [`ProxyError::Failed`] if the item
    /// does not decode as `T`.
    ///
    /// # Examples
    /// See [`QueueProxy`].
    pub fn get(&self) -> std::result::Result<T, ProxyError> {
        self.get_inner(None)?
            .ok_or_else(|| ProxyError::Failed(empty_handed("get")))
    }

    /// Takes the oldest item only if there is one now (Python's `get_nowait`).
    ///
    /// # Errors
    /// [`ProxyTryGetError::Empty`] if there was none; otherwise as [`get`](Self::get).
    ///
    /// # Examples
    /// See [`QueueProxy`].
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> std::result::Result<T, ProxyTryGetError> {
        self.get_inner(Some(Instant::now()))?
            .ok_or(ProxyTryGetError::Empty)
    }

    /// Takes the oldest item if one comes within `timeout`.
    ///
    /// # Errors
    /// [`ProxyTimeoutError::Timeout`] if none came; otherwise as [`get`](Self::get).
    ///
    /// # Examples
    /// See [`QueueProxy`].
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, ProxyTimeoutError> {
        self.get_inner(deadline_after(timeout))?
            .ok_or(ProxyTimeoutError::Timeout)
    }

    /// Takes the oldest item if one comes by `deadline`.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let m = multiproc::Manager::start()?;
    /// let q = m.queue::<u8>(None)?;
    /// q.put(&4)?;
    /// assert_eq!(q.get_deadline(std::time::Instant::now())?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_deadline(&self, deadline: Instant) -> std::result::Result<T, ProxyTimeoutError> {
        self.get_inner(Some(deadline))?
            .ok_or(ProxyTimeoutError::Timeout)
    }

    /// The number of items (exact).
    ///
    /// # Examples
    /// See [`QueueProxy`].
    #[doc(alias = "qsize")]
    pub fn len(&self) -> Result<usize> {
        len(self.op(QueueOp::Len)?)
    }

    /// Whether the queue is empty now.
    ///
    /// # Examples
    /// See [`QueueProxy`].
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }
}
