//! Control-flow errors of the queues, in the style of crossbeam: the value comes back.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// A put failed for a reason other than a full queue: the value could not be serialized, it is
/// larger than the queue's message limit, or this handle was closed. The value comes back.
///
/// # Examples
///
/// ```
/// use multiproc::{ErrorKind, Queue};
///
/// let q = Queue::<String>::new()?;
/// q.close();
/// let err = q.put("late".to_string()).unwrap_err();
/// assert_eq!(err.kind(), ErrorKind::Closed);
/// assert_eq!(err.into_inner(), "late");
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct PutError<T> {
    pub(crate) value: T,
    pub(crate) error: Error,
}

impl<T> PutError<T> {
    /// The value that was not put.
    ///
    /// # Examples
    ///
    /// ```
    /// # let q = multiproc::Queue::<u8>::new()?;
    /// # q.close();
    /// let v = q.put(3).unwrap_err().into_inner();
    /// assert_eq!(v, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn into_inner(self) -> T {
        self.value
    }

    /// What went wrong ([`ErrorKind::Codec`], [`ErrorKind::Closed`], ...).
    ///
    /// # Examples
    ///
    /// ```
    /// # let q = multiproc::Queue::<u8>::new()?;
    /// # q.close();
    /// assert_eq!(q.put(3).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    /// The underlying error.
    ///
    /// # Examples
    ///
    /// ```
    /// # let q = multiproc::Queue::<u8>::new()?;
    /// # q.close();
    /// println!("{}", q.put(3).unwrap_err().error());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn error(&self) -> &Error {
        &self.error
    }
}

impl<T> fmt::Debug for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PutError")
            .field("error", &self.error)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for PutError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "put failed: {}", self.error)
    }
}

impl<T> std::error::Error for PutError<T> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// Why `try_put` did not put.
///
/// # Examples
///
/// ```
/// use multiproc::{Queue, TryPutError};
///
/// let q = Queue::<u32>::builder().max_items(1).build()?;
/// q.try_put(1).unwrap();
/// match q.try_put(2) {
///     Err(TryPutError::Full(v)) => assert_eq!(v, 2),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum TryPutError<T> {
    /// No room right now (or another producer holds the put side); the value comes back.
    Full(T),
    /// See [`PutError`].
    Failed(PutError<T>),
}

/// Why `put_timeout` did not put.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{PutTimeoutError, Queue};
///
/// let q = Queue::<u32>::builder().max_items(1).build()?;
/// q.put(1).unwrap();
/// let r = q.put_timeout(2, Duration::from_millis(5));
/// assert!(matches!(r, Err(PutTimeoutError::Timeout(2))));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub enum PutTimeoutError<T> {
    /// Still no room at the deadline; the value comes back.
    Timeout(T),
    /// See [`PutError`].
    Failed(PutError<T>),
}

macro_rules! put_variants {
    ($name:ident, $full:ident) => {
        impl<T> $name<T> {
            /// The value that was not put.
            ///
            /// # Examples
            ///
            /// ```
            /// # let q = multiproc::Queue::<u8>::new()?;
            /// # q.close();
            /// # let _ = q.try_put(1).map_err(|e| e.into_inner());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn into_inner(self) -> T {
                match self {
                    $name::$full(v) => v,
                    $name::Failed(e) => e.value,
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$full(_) => f.write_str(concat!(stringify!($full), "(..)")),
                    $name::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $name::$full(_) => f.write_str(concat!("queue: ", stringify!($full))),
                    $name::Failed(e) => fmt::Display::fmt(e, f),
                }
            }
        }

        impl<T> std::error::Error for $name<T> {}

        impl<T> From<PutError<T>> for $name<T> {
            fn from(e: PutError<T>) -> Self {
                $name::Failed(e)
            }
        }
    };
}
put_variants!(TryPutError, Full);
put_variants!(PutTimeoutError, Timeout);

/// Why `get` returned no value.
///
/// # Examples
///
/// ```
/// use multiproc::{GetError, Queue};
///
/// let q = Queue::<u8>::new()?;
/// q.put(1).unwrap();
/// q.close(); // this handle will put no more; no other handle exists
/// assert_eq!(q.get().unwrap(), 1);
/// assert!(matches!(q.get(), Err(GetError::Disconnected)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum GetError {
    /// The queue is empty and no handle that could put is left (all closed, dropped, or in
    /// processes that died).
    Disconnected,
    /// A message could not be decoded (it is consumed, and the queue goes on).
    Failed(Error),
}

/// Why `try_get` returned no value.
///
/// # Examples
///
/// ```
/// use multiproc::{Queue, TryGetError};
///
/// let q = Queue::<u8>::new()?;
/// assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum TryGetError {
    /// Nothing to get right now (or another consumer holds the get side).
    Empty,
    /// See [`GetError::Disconnected`].
    Disconnected,
    /// See [`GetError::Failed`].
    Failed(Error),
}

/// Why `get_timeout` returned no value.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{GetTimeoutError, Queue};
///
/// let q = Queue::<u8>::new()?;
/// assert!(matches!(q.get_timeout(Duration::from_millis(1)), Err(GetTimeoutError::Timeout)));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub enum GetTimeoutError {
    /// Nothing came before the deadline.
    Timeout,
    /// See [`GetError::Disconnected`].
    Disconnected,
    /// See [`GetError::Failed`].
    Failed(Error),
}

macro_rules! get_display {
    ($name:ident $(, $extra:ident => $msg:literal)?) => {
        crate::error::error_display!($name {
            Disconnected => "queue is empty and disconnected",
            $($extra => $msg)?
        } Failed => "get failed");

        impl std::error::Error for $name {}
    };
}
get_display!(GetError);
get_display!(TryGetError, Empty => "queue is empty");
get_display!(GetTimeoutError, Timeout => "timed out waiting on an empty queue");

/// [`JoinableQueue::task_done`](crate::JoinableQueue::task_done) was called more times than
/// items were put (Python's `ValueError('task_done() called too many times')`).
///
/// # Examples
///
/// ```
/// let q = multiproc::JoinableQueue::<u8>::new()?;
/// assert_eq!(q.task_done(), Err(multiproc::TaskDoneError));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDoneError;

crate::error::message_error!(
    TaskDoneError,
    "task_done() called more times than items were put"
);

/// The error of [`JoinableQueue::join_timeout`](crate::JoinableQueue::join_timeout) and
/// [`join_deadline`](crate::JoinableQueue::join_deadline): some task put was not yet marked
/// done by [`task_done`](crate::JoinableQueue::task_done) before the deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let q = multiproc::JoinableQueue::new()?;
/// q.put(1u8).unwrap();
/// assert_eq!(q.join_timeout(Duration::from_millis(1)), Err(multiproc::QueueJoinTimeoutError));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueJoinTimeoutError;

crate::error::message_error!(
    QueueJoinTimeoutError,
    "some task was not marked done before the deadline"
);

impl<T> From<PutError<T>> for Error {
    /// Drops the value and keeps the error, so that `?` works in functions returning
    /// [`crate::Result`].
    fn from(e: PutError<T>) -> Error {
        e.error
    }
}

impl From<GetError> for Error {
    /// `Disconnected` becomes an [`ErrorKind::Disconnected`] error.
    fn from(e: GetError) -> Error {
        match e {
            GetError::Disconnected => Error::new(
                ErrorKind::Disconnected,
                "the queue is empty and no handle that could put is left",
            ),
            GetError::Failed(e) => e,
        }
    }
}
