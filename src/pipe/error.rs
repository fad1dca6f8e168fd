//! Control-flow errors of a [`Connection`](super::Connection), in the shape of crossbeam's: one
//! type per form of the operation, naming only what that form can meet.

use std::fmt;

use crate::error::{Error, ErrorKind};

/// Why [`recv`](super::Connection::recv) (or `recv_bytes`) returned no message.
///
/// # Examples
///
/// ```
/// use multiproc::RecvError;
///
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// a.send(&1).unwrap();
/// drop(a);
/// assert_eq!(b.recv().unwrap(), 1); // what was sent is still received
/// assert!(matches!(b.recv(), Err(RecvError::Disconnected)));
/// ```
#[derive(Debug)]
pub enum RecvError {
    /// The peer closed its end (or died) and nothing is left to receive: Python's `EOFError`.
    Disconnected,
    /// A message that is not the expected type (it is consumed), a broken stream (a garbage,
    /// oversized or cut frame: every later receive fails the same way), an end that cannot
    /// receive, or an I/O error: see [`Error::kind`].
    Failed(Error),
}

/// Why [`try_recv`](super::Connection::try_recv) returned no message.
///
/// # Examples
///
/// ```
/// use multiproc::TryRecvError;
///
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
/// drop(a);
/// assert!(matches!(b.try_recv(), Err(TryRecvError::Disconnected)));
/// ```
#[derive(Debug)]
pub enum TryRecvError {
    /// No whole message has arrived yet (or another thread is receiving right now).
    Empty,
    /// As [`RecvError::Disconnected`].
    Disconnected,
    /// As [`RecvError::Failed`].
    Failed(Error),
}

/// Why [`recv_timeout`](super::Connection::recv_timeout) or
/// [`recv_deadline`](super::Connection::recv_deadline) returned no message.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::RecvTimeoutError;
///
/// let (_a, b) = multiproc::pipe::<u8>().unwrap();
/// let r = b.recv_timeout(Duration::from_millis(5));
/// assert!(matches!(r, Err(RecvTimeoutError::Timeout)));
/// ```
#[derive(Debug)]
pub enum RecvTimeoutError {
    /// No whole message by the deadline. What has arrived of one stays buffered for the next
    /// receive.
    Timeout,
    /// As [`RecvError::Disconnected`].
    Disconnected,
    /// As [`RecvError::Failed`].
    Failed(Error),
}

/// Why [`send`](super::Connection::send) (or `send_bytes`) did not send.
///
/// A send waits only while the socket's buffer is full, and it has no `try_` or timeout form:
/// once the first byte of a frame is on the wire it cannot be taken back (the peer would see a
/// broken stream), so a send ends only when its frame is whole or the peer is gone.
///
/// # Examples
///
/// ```
/// use multiproc::SendError;
///
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// drop(b);
/// assert!(matches!(a.send(&1), Err(SendError::Disconnected)));
/// ```
#[derive(Debug)]
pub enum SendError {
    /// The peer closed its end (or died): nothing more can reach it.
    Disconnected,
    /// The value did not serialize or is longer than the frame limit (nothing was sent), the
    /// end cannot send, or an I/O error: see [`Error::kind`].
    Failed(Error),
}

/// What [`recv_bytes_into`](super::Connection::recv_bytes_into) returns when it receives no
/// message into the buffer: Python's `BufferTooShort` hands back the whole message, so that
/// nothing is lost.
///
/// # Examples
///
/// ```
/// use multiproc::RecvIntoError;
/// let (a, b) = multiproc::pipe::<()>().unwrap();
/// a.send_bytes(b"hello world").unwrap();
/// let mut small = [0u8; 4];
/// match b.recv_bytes_into(&mut small) {
///     Err(RecvIntoError::BufferTooShort(msg)) => assert_eq!(msg, b"hello world"),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug)]
pub enum RecvIntoError {
    /// The message did not fit; here it is, whole.
    BufferTooShort(Vec<u8>),
    /// As [`RecvError::Disconnected`].
    Disconnected,
    /// As [`RecvError::Failed`].
    Failed(Error),
}

const DISCONNECTED: &str = "the other end of the pipe is closed and nothing is left to receive";
const SEND_DISCONNECTED: &str = "the other end of the pipe is closed";

/// `Display` for the receive errors: `Disconnected` and `Failed` read alike in all of them;
/// `Variant => text` adds the one that stopped a try or a timed receive.
macro_rules! recv_display {
    ($name:ident $(, $extra:ident => $msg:literal)?) => {
        crate::error::error_display!($name {
            $($extra => $msg,)?
            Disconnected => DISCONNECTED,
        } Failed => "receive failed");
    };
}
recv_display!(RecvError);
recv_display!(TryRecvError, Empty => "no message has arrived on the pipe");
recv_display!(RecvTimeoutError, Timeout => "timed out waiting for a message on the pipe");

crate::error::error_display!(SendError { Disconnected => SEND_DISCONNECTED } Failed => "send failed");

impl fmt::Display for RecvIntoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecvIntoError::BufferTooShort(m) => {
                write!(f, "buffer too short for a message of {} bytes", m.len())
            }
            RecvIntoError::Disconnected => f.write_str(DISCONNECTED),
            RecvIntoError::Failed(e) => write!(f, "receive failed: {e}"),
        }
    }
}

crate::error::failed_error!(
    from
    RecvError,
    TryRecvError,
    RecvTimeoutError,
    SendError,
    RecvIntoError
);

/// A blocking receive's error as the error of the other receives, which share its variants.
macro_rules! from_recv_error {
    ($($name:ident),+) => {$(
        impl From<RecvError> for $name {
            fn from(e: RecvError) -> Self {
                match e {
                    RecvError::Disconnected => $name::Disconnected,
                    RecvError::Failed(e) => $name::Failed(e),
                }
            }
        }
    )+};
}
from_recv_error!(TryRecvError, RecvTimeoutError, RecvIntoError);

/// A receive that ended for good becomes the crate's error (`Disconnected` keeps its kind), so
/// that `?` works in functions that return [`crate::Result`].
impl From<RecvError> for Error {
    fn from(e: RecvError) -> Error {
        match e {
            RecvError::Disconnected => Error::new(ErrorKind::Disconnected, DISCONNECTED),
            RecvError::Failed(e) => e,
        }
    }
}

/// As for [`RecvError`]; `Empty` becomes an [`ErrorKind::Timeout`] error.
impl From<TryRecvError> for Error {
    fn from(e: TryRecvError) -> Error {
        match e {
            TryRecvError::Empty => Error::new(ErrorKind::Timeout, "no message has arrived"),
            TryRecvError::Disconnected => Error::new(ErrorKind::Disconnected, DISCONNECTED),
            TryRecvError::Failed(e) => e,
        }
    }
}

/// As for [`RecvError`]; `Timeout` becomes an [`ErrorKind::Timeout`] error.
impl From<RecvTimeoutError> for Error {
    fn from(e: RecvTimeoutError) -> Error {
        match e {
            RecvTimeoutError::Timeout => {
                Error::new(ErrorKind::Timeout, "timed out waiting for a message")
            }
            RecvTimeoutError::Disconnected => Error::new(ErrorKind::Disconnected, DISCONNECTED),
            RecvTimeoutError::Failed(e) => e,
        }
    }
}

/// As for [`RecvError`].
impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        match e {
            SendError::Disconnected => Error::new(ErrorKind::Disconnected, SEND_DISCONNECTED),
            SendError::Failed(e) => e,
        }
    }
}
