//! [`SimpleQueue`]: Python's `multiprocessing.SimpleQueue`, a thin wrapper over [`Queue`].

use std::fmt;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{GetError, JoinableQueue, PutError, Queue};
use crate::error::{Error, ErrorKind, Result};
use crate::handles::Handle;

/// A queue without a size limit on the number of messages: Python's
/// `multiprocessing.SimpleQueue` (`put`, `get`, `is_empty`, `close`).
///
/// Internally a [`Queue`] with the default ring; `put` waits only when the ring's bytes are all
/// in use.
///
/// # Examples
///
/// ```
/// let q = multiproc::SimpleQueue::new()?;
/// q.put("hi".to_string()).unwrap();
/// assert_eq!(q.get().unwrap(), "hi");
/// assert!(q.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SimpleQueue<T> {
    pub(super) queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Creates a simple queue.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Puts `value`; see [`Queue::put`].
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::SimpleQueue::new()?.put(1u8).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        self.queue.put(value)
    }

    /// Takes the oldest message; see [`Queue::get`].
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(1u8).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.queue.get()
    }

    /// True when there is no message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::SimpleQueue::<u8>::new()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// See [`Queue::close`].
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::SimpleQueue::<u8>::new()?.close();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.queue.close();
    }
}

/// Clone, Debug, [`Handle`] and its serde for a wrapper around a `queue: Queue<T>` field. The
/// wrapper travels as the [`Queue`] it wraps; `|queue| accept` turns the queue the receiving
/// side rebuilt into the wrapper, or refuses it.
macro_rules! queue_wrapper {
    ($name:ident, |$queue:ident| $accept:expr) => {
        impl<T: Serialize + DeserializeOwned> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name {
                    queue: self.queue.clone(),
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.queue).finish()
            }
        }

        impl<T: Serialize + DeserializeOwned> Handle for $name<T> {
            type Wire = ();
            fn descriptor(&self) -> BorrowedFd<'_> {
                self.queue.descriptor()
            }
            fn wire(&self) -> std::result::Result<(), String> {
                self.queue.wire()
            }
            fn import(fd: OwnedFd, (): ()) -> Result<Self> {
                let $queue = Queue::import(fd, ())?;
                $accept
            }
        }

        crate::handles::handle_serde!([T: Serialize + DeserializeOwned] $name<T>);
    };
}
queue_wrapper!(SimpleQueue, |queue| Ok(SimpleQueue { queue }));
// A JoinableQueue must have been created joinable.
queue_wrapper!(JoinableQueue, |queue| {
    if queue.seg.joinable {
        Ok(JoinableQueue { queue })
    } else {
        Err(Error::new(
            ErrorKind::BadHeader,
            "a plain queue cannot be received as a JoinableQueue",
        ))
    }
});
