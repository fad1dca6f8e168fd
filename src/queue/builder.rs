//! [`QueueBuilder`]: the settings of a new queue.

use std::marker::PhantomData;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{JoinableQueue, Queue};
#[cfg(doc)]
use crate::error::ErrorKind;
use crate::error::Result;

/// Settings for a new [`Queue`] (or [`JoinableQueue`]).
///
/// # Examples
///
/// ```
/// let q = multiproc::Queue::<u64>::builder()
///     .capacity(1 << 20)
///     .max_items(100)
///     .max_message(64 << 10)
///     .build()?;
/// assert_eq!(q.capacity(), 1 << 20);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct QueueBuilder<T> {
    pub(super) capacity: usize,
    pub(super) max_items: u64,
    pub(super) max_message: usize,
    _type: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The ring's size in bytes, rounded up to a multiple of the page size (at least one page).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().capacity(1).build()?;
    /// assert_eq!(q.capacity(), 4096);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// At most this many messages in the queue (Python's `maxsize`); 0 for no limit (the
    /// default; the ring's size still bounds it).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().max_items(1).build()?;
    /// q.put(1).unwrap();
    /// assert!(q.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_items(mut self, n: u64) -> Self {
        self.max_items = n;
        self
    }

    /// The largest message accepted, in serialized bytes ([`DEFAULT_MAX_MESSAGE`](super::DEFAULT_MAX_MESSAGE) by default;
    /// at most `u32::MAX`). A larger value fails its `put` with [`ErrorKind::Codec`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::builder().max_message(16).build()?;
    /// assert!(q.put(vec![0; 100]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Creates the queue.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for sizes that cannot be mapped; [`ErrorKind::Io`] if the
    /// segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<Queue<T>> {
        Queue::create(&self, false)
    }

    /// Creates a [`JoinableQueue`] with these settings.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().max_items(8).build_joinable()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build_joinable(self) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue::from_queue(Queue::create(&self, true)?))
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// Settings beyond the capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().max_items(10).build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            capacity: super::DEFAULT_CAPACITY,
            max_items: 0,
            max_message: super::DEFAULT_MAX_MESSAGE,
            _type: PhantomData,
        }
    }
}
