//! `Queue`'s public methods: the put and get families, sizes, losses, close.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::layout::{HDR, put_state};
use super::{
    Deadline, GetError, GetFail, GetTimeoutError, PutError, PutFail, PutTimeoutError, Queue,
    TryGetError, TryPutError,
};
use crate::atomic::Ordering;
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::Result;

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Puts `value`, waiting as long as it takes for room (Python's `put()`).
    ///
    /// # Errors
    /// [`PutError`] with the value: it cannot be serialized ([`ErrorKind::Codec`]), it is larger
    /// than the message limit, or this handle was closed ([`ErrorKind::Closed`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put([1u8, 2, 3]).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        match self.put_inner(&value, Deadline::Never) {
            Ok(()) => Ok(()),
            Err(PutFail::Error(error)) => Err(PutError { value, error }),
            Err(PutFail::OutOfTime) => unreachable!("an untimed put waits for room"),
        }
    }

    /// Puts a copy of `*value`, waiting as long as it takes for room: the value is serialized
    /// into the ring and stays yours (Python's `put()` does not consume its argument either).
    ///
    /// # Errors
    /// As [`put`](Self::put), without the value: [`ErrorKind::Codec`] or [`ErrorKind::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::new()?;
    /// let block = vec![1u8; 4096];
    /// for _ in 0..3 {
    ///     q.put_ref(&block)?; // no clone
    /// }
    /// assert_eq!(q.qsize(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_ref(&self, value: &T) -> Result<()> {
        match self.put_inner(value, Deadline::Never) {
            Ok(()) => Ok(()),
            Err(PutFail::Error(e)) => Err(e),
            Err(PutFail::OutOfTime) => unreachable!("an untimed put waits for room"),
        }
    }

    /// Puts `value` if there is room now (Python's `put_nowait()`).
    ///
    /// # Errors
    /// [`TryPutError::Full`] with the value if there is no room (or another producer is
    /// putting; or the value is larger than the whole ring, which only a waiting put can
    /// stream); [`TryPutError::Failed`] as for [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.try_put(5u32).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, value: T) -> std::result::Result<(), TryPutError<T>> {
        match self.put_inner(&value, Deadline::Now) {
            Ok(()) => Ok(()),
            Err(PutFail::OutOfTime) => Err(TryPutError::Full(value)),
            Err(PutFail::Error(error)) => Err(TryPutError::Failed(PutError { value, error })),
        }
    }

    /// [`try_put`](Self::try_put) of a borrowed value, for a caller that keeps it (the pool
    /// keeps each task's message until the task is done, to send it again if its worker
    /// dies): `Ok(true)` if put, `Ok(false)` if there was no room now, the error of
    /// [`TryPutError::Failed`] otherwise.
    pub(crate) fn try_put_ref(&self, value: &T) -> std::result::Result<bool, crate::Error> {
        match self.put_inner(value, Deadline::Now) {
            Ok(()) => Ok(true),
            Err(PutFail::OutOfTime) => Ok(false),
            Err(PutFail::Error(error)) => Err(error),
        }
    }

    /// Puts `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`] with the value; [`PutTimeoutError::Failed`] as for
    /// [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::new()?;
    /// q.put_timeout('x', Duration::from_millis(10)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.put_until(value, Instant::now().checked_add(timeout))
    }

    /// Puts `value`, waiting until `deadline` at the latest for room.
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put_deadline(1i8, std::time::Instant::now()).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_deadline(
        &self,
        value: T,
        deadline: Instant,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.put_until(value, Some(deadline))
    }

    fn put_until(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        match self.put_inner(&value, Deadline::until(deadline)) {
            Ok(()) => Ok(()),
            Err(PutFail::OutOfTime) => Err(PutTimeoutError::Timeout(value)),
            Err(PutFail::Error(error)) => Err(PutTimeoutError::Failed(PutError { value, error })),
        }
    }

    /// Takes the oldest message, waiting as long as it takes (Python's `get()`).
    ///
    /// # Errors
    /// [`GetError::Disconnected`] when the queue is empty and no handle that could put is left;
    /// [`GetError::Failed`] if a message cannot be decoded (it is consumed).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(7u64).unwrap();
    /// assert_eq!(q.get().unwrap(), 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.get_inner(Deadline::Never).map_err(|e| match e {
            GetFail::Nothing => unreachable!("an untimed get waits"),
            GetFail::Disconnected => GetError::Disconnected,
            GetFail::Error(e) => GetError::Failed(e),
        })
    }

    /// Takes the oldest message if there is one now (Python's `get_nowait()`).
    ///
    /// # Errors
    /// [`TryGetError::Empty`] if there is none (or another consumer is getting);
    /// [`TryGetError::Disconnected`] and [`TryGetError::Failed`] as for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.try_get().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> std::result::Result<T, TryGetError> {
        self.get_inner(Deadline::Now).map_err(|e| match e {
            GetFail::Nothing => TryGetError::Empty,
            GetFail::Disconnected => TryGetError::Disconnected,
            GetFail::Error(e) => TryGetError::Failed(e),
        })
    }

    /// Takes the oldest message, waiting at most `timeout`. The deadline holds in the middle
    /// of a streamed message too: what arrived of it stays with this handle, and its next get
    /// finishes it (a get on another handle skips it and counts it in
    /// [`lost_messages`](Self::lost_messages)).
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`] if nothing came; the others as for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.get_timeout(Duration::from_millis(1)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetTimeoutError> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    /// Takes the oldest message, waiting until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.get_deadline(std::time::Instant::now()).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_deadline(&self, deadline: Instant) -> std::result::Result<T, GetTimeoutError> {
        self.get_until(Some(deadline))
    }

    fn get_until(&self, deadline: Option<Instant>) -> std::result::Result<T, GetTimeoutError> {
        self.get_inner(Deadline::until(deadline))
            .map_err(|e| match e {
                GetFail::Nothing => GetTimeoutError::Timeout,
                GetFail::Disconnected => GetTimeoutError::Disconnected,
                GetFail::Error(e) => GetTimeoutError::Failed(e),
            })
    }

    /// The number of messages in the queue: exact (Python's is approximate), though it can
    /// change as soon as it is read. A message is counted once it is entirely in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1u8).unwrap();
    /// q.put(2u8).unwrap();
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "len")]
    pub fn qsize(&self) -> usize {
        if self.st().prod.busy.load(Ordering::Acquire) == put_state::PUBLISHING {
            // Counted and maybe not published: make sure its producer is alive.
            self.repair_dead_producer();
        }
        let gets = self.st().cons.gets.load(Ordering::Acquire);
        let puts = self.st().prod.puts.load(Ordering::Acquire);
        puts.saturating_sub(gets) as usize
    }

    /// True when [`qsize`](Self::qsize) is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::Queue::<u8>::new()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// True when the message limit is reached or the ring has no room for even an empty
    /// message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::Queue::<u8>::new()?.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        let st = self.st();
        let max = self.seg.max_items;
        if max != 0 && self.qsize() as u64 >= max {
            return true;
        }
        let cap = self.seg.cap;
        let used = st
            .prod
            .tail
            .load(Ordering::Acquire)
            .wrapping_sub(st.cons.head.load(Ordering::Acquire));
        cap - used.min(cap) < HDR as u64
    }

    /// The ring's size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::new()?.capacity(), multiproc::DEFAULT_CAPACITY);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.seg.cap as usize
    }

    /// Messages known to be lost because a process died in the middle of putting or getting
    /// them: taken by a consumer that died before returning them, or cut short by a producer
    /// that died while streaming them. A `put` that had not returned when its process died is
    /// not counted: it was never accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::new()?.lost_messages(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lost_messages(&self) -> u64 {
        self.st().reap_dead();
        self.st().counts.lost.load(Ordering::Acquire)
    }

    /// Declares that this handle will put nothing more (Python's `close()`): later puts on it
    /// fail with [`ErrorKind::Closed`], and it no longer keeps the queue connected (see
    /// "Disconnection" above). Getting still works. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.unregister();
        }
    }

    /// Whether [`close`](Self::close) was called on this handle.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::Queue::<u8>::new()?.is_closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}
