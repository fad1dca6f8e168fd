//! [`pipe`] and [`Connection`]: typed, framed, two-way channels between processes, like Python's
//! `multiprocessing.Pipe` — plus [`wait`] for several connections and processes at once.
//!
//! A connection is one end of a Unix stream socket pair. Each message is a frame (a 4-byte
//! length and a postcard payload, see [`codec`](crate::codec)). A `Connection<S, R>` sends `S`
//! and receives `R`: sending the wrong type does not compile. The bytes API
//! ([`send_bytes`](Connection::send_bytes), [`recv_bytes`](Connection::recv_bytes),
//! [`recv_bytes_into`](Connection::recv_bytes_into)) uses the same frames.
//!
//! # Threads
//! A `Connection` is `Send` and `Sync`. Sends are serialized by a lock, so two threads never
//! interleave the bytes of their frames, and so are receives; a thread blocked in `recv` never
//! stops another from sending on the same end.
//!
//! # Large messages in both directions
//! A sender whose socket buffer is full reads what the peer is sending meanwhile into its own
//! receive buffer (unless another thread is receiving), until one whole message is buffered.
//! Two processes that send each other a 64 MiB message at the same moment therefore both
//! finish, instead of waiting on each other forever; and a blocked sender holds at most one
//! of its peer's messages (so at most the frame limit), however much the peer keeps sending:
//! a peer that sends a second message before receiving waits for us to receive.
//!
//! # Deadlines
//! `try_recv` and `poll(Some(Duration::ZERO))` never block, and a timeout bounds the whole
//! call: waiting for another thread's receive to finish, and a large message that is still
//! streaming in (what has arrived stays buffered for the next call). A descriptor made
//! non-blocking behind our back (through [`AsFd`]) changes nothing: a receive waits for data
//! with poll(2) instead of spinning.
//!
//! # Failures
//! - The peer closed its end (or died) and nothing is left: [`RecvError::Disconnected`] — Python's
//!   `EOFError` — never a hang.
//! - The peer wrote a length above the limit, garbage, or stopped in the middle of a frame:
//!   [`RecvError::Failed`] with an [`ErrorKind::Codec`] error, and the connection is *broken* (every later receive returns the
//!   same error: a byte stream cannot be resynchronised). Nothing is allocated beyond the limit.
//! - A value that does not serialize fails in `send`, and nothing reaches the wire.
//!
//! Each form of receive has its own error, as in crossbeam-channel: [`recv`](Connection::recv)
//! gives [`RecvError`], [`try_recv`](Connection::try_recv) [`TryRecvError`] (`Empty`),
//! [`recv_timeout`](Connection::recv_timeout) and [`recv_deadline`](Connection::recv_deadline)
//! [`RecvTimeoutError`] (`Timeout`); sends give [`SendError`]. Each converts into the crate's
//! [`Error`] for `?`.
//!
//! # Examples
//!
//! ```
//! let (left, right) = multiproc::pipe::<String>().unwrap();
//! left.send(&"ping".to_string()).unwrap();
//! assert_eq!(right.recv().unwrap(), "ping");
//! drop(left);
//! assert!(matches!(right.recv(), Err(multiproc::RecvError::Disconnected)));
//! ```

#![forbid(unsafe_code)]

use crate::atomic::Ordering;
use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{self, CodecError, FrameDecoder, HEADER_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::handles::{Handle, handle_serde};
use crate::sys;

mod error;
mod io;
mod slot;
mod wait;

pub use error::{RecvError, RecvIntoError, RecvTimeoutError, SendError, TryRecvError};
use slot::{Lent, RecvSlot, RecvState};

pub use wait::{Sentinel, Waitable, wait};

// For the process layer's control channel, which reads frames and descriptors the same way.
pub(crate) use io::{Filled, read_into};

/// The frame limit of a new connection: 1 GiB. See [`Connection::set_max_frame`].
pub const DEFAULT_PIPE_FRAME_LIMIT: usize = codec::DEFAULT_MAX_FRAME;

/// A receive buffer from this size on gets frames read straight into it (see `recv_direct`).
const DIRECT_MIN: usize = 64 * 1024;

/// `send_bytes` copies a message up to this size behind its header and sends one buffer;
/// a longer one is sent from where it is, header and payload gathered.
const COPY_MAX: usize = 4 * 1024;

/// Socket buffer size asked for (the kernel caps it): larger buffers move large messages with
/// fewer wake-ups.
const SOCKET_BUFFER: usize = 4 << 20;

/// The message type of a direction that carries nothing: a value of it cannot exist, so the
/// read end of a [`simplex`] pipe has no usable `send`, and its write end no usable `recv`.
///
/// # Examples
///
/// ```
/// let (reader, writer) = multiproc::simplex::<u32>().unwrap();
/// writer.send(&7).unwrap();
/// assert_eq!(reader.recv().unwrap(), 7);
/// // reader.send(&...) cannot be written: there is no value of type `Nothing`.
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Nothing {}

/// One end of a [`pipe`]: sends `S`, receives `R`.
///
/// Sends are serialized by one lock and receives by another, so threads sharing an end never
/// interleave frames. A sender blocked on a full socket reads what the peer sends meanwhile (up
/// to one whole message), so large messages sent both ways at once cannot deadlock. A peer that
/// closed or died gives [`RecvError::Disconnected`] once everything it sent has been received;
/// a garbage, oversized or truncated frame gives an [`ErrorKind::Codec`] error and breaks the
/// connection for good.
///
/// # Examples
///
/// ```
/// let (a, b) = multiproc::pipe_typed::<u32, String>().unwrap();
/// a.send(&42).unwrap();
/// assert_eq!(b.recv().unwrap(), 42);
/// b.send(&"forty-two".to_string()).unwrap();
/// assert_eq!(a.recv().unwrap(), "forty-two");
/// ```
pub struct Connection<S, R = S> {
    fd: OwnedFd,
    readable: bool,
    writable: bool,
    /// The frame limit, readable by senders without taking the receive lock.
    limit: AtomicUsize,
    /// Held for the whole of a send; the buffer is reused for encoding.
    send: Mutex<Vec<u8>>,
    recv: RecvSlot,
    _types: PhantomData<fn(S) -> R>,
}

/// What a receive step offers: a complete frame, or the state while one is still arriving.
enum Step<'a> {
    Ready(&'a mut FrameDecoder),
    Pending(&'a mut RecvState),
}

impl<S, R> fmt::Debug for Connection<S, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("fd", &self.fd)
            .field("readable", &self.readable)
            .field("writable", &self.writable)
            .finish()
    }
}

/// Two connected ends that send and receive `T` both ways — Python's `Pipe()`.
///
/// # Errors
/// [`ErrorKind::Io`] if the sockets cannot be created.
///
/// # Examples
///
/// ```
/// let (a, b) = multiproc::pipe::<(u8, String)>().unwrap();
/// a.send(&(1, "one".into())).unwrap();
/// assert_eq!(b.recv().unwrap(), (1, "one".to_string()));
/// ```
#[doc(alias = "Pipe")]
pub fn pipe<T>() -> Result<(Connection<T>, Connection<T>)> {
    pipe_typed::<T, T>()
}

/// Two connected ends with a different type each way: the first sends `A` and receives `B`.
///
/// # Errors
/// [`ErrorKind::Io`] if the sockets cannot be created.
///
/// # Examples
///
/// ```
/// let (client, server) = multiproc::pipe_typed::<String, usize>().unwrap();
/// client.send(&"hello".to_string()).unwrap();
/// let req = server.recv().unwrap();
/// server.send(&req.len()).unwrap();
/// assert_eq!(client.recv().unwrap(), 5);
/// ```
pub fn pipe_typed<A, B>() -> Result<(Connection<A, B>, Connection<B, A>)> {
    let (x, y) = sys::stream_socketpair().map_err(|e| Error::io("cannot create a pipe", e))?;
    Ok((
        Connection::new(x, true, true),
        Connection::new(y, true, true),
    ))
}

/// A one-way pipe — Python's `Pipe(duplex=False)`: the first end only receives, the second only
/// sends.
///
/// # Errors
/// [`ErrorKind::Io`] if the sockets cannot be created.
///
/// # Examples
///
/// ```
/// let (reader, writer) = multiproc::simplex::<Vec<u8>>().unwrap();
/// writer.send(&vec![1, 2, 3]).unwrap();
/// assert_eq!(reader.recv().unwrap(), [1, 2, 3]);
/// assert!(reader.readable() && !reader.writable());
/// ```
pub fn simplex<T>() -> Result<(Connection<Nothing, T>, Connection<T, Nothing>)> {
    let (r, w) = sys::stream_socketpair().map_err(|e| Error::io("cannot create a pipe", e))?;
    // Each end refuses the direction it does not have, at the socket level too.
    let _ = sys::shutdown(r.as_fd(), true);
    let _ = sys::shutdown(w.as_fd(), false);
    Ok((
        Connection::new(r, true, false),
        Connection::new(w, false, true),
    ))
}

impl<S, R> Connection<S, R> {
    fn new(fd: OwnedFd, readable: bool, writable: bool) -> Connection<S, R> {
        sys::set_socket_buffers(fd.as_fd(), SOCKET_BUFFER);
        Connection {
            fd,
            readable,
            writable,
            limit: AtomicUsize::new(DEFAULT_PIPE_FRAME_LIMIT),
            send: Mutex::new(Vec::new()),
            recv: RecvSlot::new(RecvState {
                decoder: FrameDecoder::new(DEFAULT_PIPE_FRAME_LIMIT),
                eof: false,
                broken: None,
            }),
            _types: PhantomData,
        }
    }

    /// True if this end can receive.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = multiproc::pipe::<u8>().unwrap();
    /// assert!(a.readable());
    /// ```
    pub fn readable(&self) -> bool {
        self.readable
    }

    /// True if this end can send.
    ///
    /// # Examples
    ///
    /// ```
    /// let (r, w) = multiproc::simplex::<u8>().unwrap();
    /// assert!(!r.writable() && w.writable());
    /// ```
    pub fn writable(&self) -> bool {
        self.writable
    }

    /// Sets the largest frame this end accepts when receiving (and the largest it sends).
    /// A longer incoming frame breaks the connection with [`CodecError::Oversized`] before
    /// anything is allocated. Never blocks: a receive already under way applies the new limit
    /// from its next frame header on.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// b.set_max_frame(4);
    /// a.send_bytes(b"too long").unwrap();
    /// match b.recv_bytes() {
    ///     Err(multiproc::RecvError::Failed(e)) => assert_eq!(e.kind(), multiproc::ErrorKind::Codec),
    ///     other => panic!("{other:?}"),
    /// }
    /// ```
    pub fn set_max_frame(&self, limit: usize) {
        let limit = limit.min(codec::MAX_FRAME_LIMIT);
        self.limit.store(limit, Ordering::Relaxed);
        // Applied when the receive state is next lent out (see `lend`).
        drop(self.try_lend());
    }

    /// The receive state, once no other thread has it or `deadline` passed (`None`).
    fn lend(&self, deadline: Option<Instant>) -> Option<Lent<'_>> {
        let mut st = self.recv.take(deadline)?;
        st.decoder.set_limit(self.max_frame());
        Some(st)
    }

    /// The receive state if no other thread has it now.
    fn try_lend(&self) -> Option<Lent<'_>> {
        let mut st = self.recv.try_take()?;
        st.decoder.set_limit(self.max_frame());
        Some(st)
    }

    /// The largest frame this end accepts.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, _b) = multiproc::pipe::<()>().unwrap();
    /// assert_eq!(a.max_frame(), multiproc::DEFAULT_PIPE_FRAME_LIMIT);
    /// ```
    pub fn max_frame(&self) -> usize {
        // Not through the receive lock: a sender must never wait for a blocked receiver.
        self.limit.load(Ordering::Relaxed)
    }

    /// Sends `bytes` as one message (Python's `send_bytes`), waiting while the socket is full.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] if the peer is gone; [`SendError::Failed`] with
    /// [`ErrorKind::Codec`] if the message is longer than the frame limit (nothing is sent),
    /// [`ErrorKind::Io`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// a.send_bytes(&[1, 2, 3]).unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), [1, 2, 3]);
    /// ```
    pub fn send_bytes(&self, bytes: &[u8]) -> std::result::Result<(), SendError> {
        self.check_writable()?;
        let header = codec::encode_frame_header(bytes.len(), self.max_frame())
            .map_err(|e| Error::codec("message too large", e))?;
        let mut buf = lock(&self.send);
        if bytes.len() > COPY_MAX {
            return self.write_parts(&[&header, bytes]);
        }
        // A small message goes out as one buffer: copying it is cheaper than the gathered
        // send's extra work in the kernel.
        buf.clear();
        buf.extend_from_slice(&header);
        buf.extend_from_slice(bytes);
        self.write_parts(&[&buf])
    }

    /// Receives one message as bytes (Python's `recv_bytes`), blocking until one arrives.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] when the peer has closed and nothing is left;
    /// [`RecvError::Failed`] with [`ErrorKind::Codec`] for a broken stream, [`ErrorKind::Io`]
    /// otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// a.send_bytes(b"").unwrap();
    /// assert_eq!(b.recv_bytes().unwrap(), b"");
    /// ```
    pub fn recv_bytes(&self) -> std::result::Result<Vec<u8>, RecvError> {
        // A large frame was assembled in a vector of its own: it is handed over, not copied.
        self.recv_with(None, |step| match step {
            Step::Ready(dec) => Ok(Some(dec.next_frame().map_err(broken)?.unwrap_or_default())),
            Step::Pending(_) => Ok(None),
        })?
        .ok_or_else(unreachable_timeout)
    }

    /// Receives one message into `buf` and returns its length (Python's `recv_bytes_into`).
    ///
    /// # Errors
    /// [`RecvIntoError::BufferTooShort`] with the whole message if it does not fit (nothing is
    /// lost); [`RecvIntoError::Disconnected`] and [`RecvIntoError::Failed`] as
    /// [`recv_bytes`](Self::recv_bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<()>().unwrap();
    /// a.send_bytes(b"abc").unwrap();
    /// let mut buf = [0u8; 8];
    /// let n = b.recv_bytes_into(&mut buf).unwrap();
    /// assert_eq!(&buf[..n], b"abc");
    /// ```
    pub fn recv_bytes_into(&self, buf: &mut [u8]) -> std::result::Result<usize, RecvIntoError> {
        let got = self.recv_with(None, |step| match step {
            Step::Ready(dec) => {
                let frame = dec.next_frame_ref().map_err(broken)?.unwrap_or_default();
                if frame.len() <= buf.len() {
                    buf[..frame.len()].copy_from_slice(frame);
                    Ok(Some(Ok(frame.len())))
                } else {
                    Ok(Some(Err(frame.to_vec())))
                }
            }
            // Nothing buffered and a large buffer: the kernel copies the payload straight
            // into `buf` (a scatter read of the header and the payload), as a bare read would.
            Step::Pending(st) if buf.len() >= DIRECT_MIN && st.decoder.buffered() == 0 => {
                self.recv_direct(st, buf)
            }
            // A large frame that fits is read straight into `buf`: no second copy.
            Step::Pending(st) => match st.decoder.divert_large_into(buf) {
                Some((len, have)) => self
                    .read_rest_into(st, &mut buf[..len], have)
                    .map(|n| Some(Ok(n))),
                None => Ok(None),
            },
        });
        match got {
            Ok(Some(Ok(n))) => Ok(n),
            Ok(Some(Err(msg))) => Err(RecvIntoError::BufferTooShort(msg)),
            Ok(None) => Err(unreachable_timeout().into()),
            Err(e) => Err(e.into()),
        }
    }

    /// True if a message (or the end of the stream) is ready to be received within `timeout`
    /// (`None`: wait as long as it takes; `Some(Duration::ZERO)`: just look). Python's `poll`,
    /// whose default is not to wait.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if waiting fails.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// assert!(!b.poll(Some(Duration::ZERO)).unwrap());
    /// a.send(&1).unwrap();
    /// assert!(b.poll(Some(Duration::from_secs(5))).unwrap());
    /// ```
    pub fn poll(&self, timeout: Option<Duration>) -> Result<bool> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        // Another thread receiving past the deadline: nothing is ready for us.
        let Some(mut st) = self.lend(deadline) else {
            return Ok(false);
        };
        let mut first = true;
        loop {
            if st.broken.is_some() || st.eof || st.has_frame() {
                return Ok(true);
            }
            // The deadline holds on every pass, also while a large frame streams in.
            if !first && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
            first = false;
            if !self.fill(&mut st, deadline)? && !st.eof {
                return Ok(false);
            }
        }
    }

    /// Closes this end (dropping it does the same). The peer's receives then drain what was
    /// sent and fail with [`RecvError::Disconnected`].
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// a.send(&5).unwrap();
    /// a.close();
    /// assert_eq!(b.recv().unwrap(), 5);
    /// assert!(b.recv().is_err());
    /// ```
    pub fn close(self) {}

    fn check_writable(&self) -> Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(Error::new(
                ErrorKind::Io,
                "this end of a one-way pipe cannot send",
            ))
        }
    }

    /// Waits for a frame and lets `f` take it: with [`Step::Ready`] `f` must take the complete
    /// frame and return `Some`; with [`Step::Pending`] (before each wait for more bytes) it may
    /// take the incoming frame another way, or return `None`. `Ok(None)` if the deadline passed.
    fn recv_with<T>(
        &self,
        deadline: Option<Instant>,
        mut f: impl FnMut(Step<'_>) -> Result<Option<T>>,
    ) -> std::result::Result<Option<T>, RecvError> {
        if !self.readable {
            return Err(RecvError::Failed(Error::new(
                ErrorKind::Io,
                "this end of a one-way pipe cannot receive",
            )));
        }
        // Another thread receiving past our deadline: nothing for us in time.
        let Some(mut st) = self.lend(deadline) else {
            return Ok(None);
        };
        let mut first = true;
        loop {
            if let Some(e) = &st.broken {
                return Err(broken(e.clone()).into());
            }
            match st.decoder.has_frame() {
                Ok(true) => {
                    if let Some(v) = f(Step::Ready(&mut st.decoder))? {
                        return Ok(Some(v));
                    }
                }
                Ok(false) => {}
                Err(e) => {
                    st.broken = Some(e.clone());
                    return Err(broken(e).into());
                }
            }
            if st.eof {
                if st.decoder.buffered() > 0 {
                    st.broken = Some(CodecError::Truncated);
                    return Err(broken(CodecError::Truncated).into());
                }
                return Err(RecvError::Disconnected);
            }
            if let Some(v) = f(Step::Pending(&mut st))? {
                return Ok(Some(v));
            }
            // The deadline holds on every pass, also while a large frame streams in (after one
            // read at least, so that `try_recv` takes what has already arrived).
            if !first && deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(None);
            }
            first = false;
            if !self.fill(&mut st, deadline)? && !st.eof {
                return Ok(None);
            }
        }
    }
}

impl<S: Serialize, R> Connection<S, R> {
    /// Sends a value, waiting while the socket is full. It is serialized here, in the caller: a
    /// value that does not serialize fails now and nothing reaches the wire.
    ///
    /// # Errors
    /// [`SendError::Disconnected`] if the peer is gone; [`SendError::Failed`] with
    /// [`ErrorKind::Codec`] if the value does not serialize or is longer than the frame limit
    /// (nothing is sent), [`ErrorKind::Io`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<Vec<u32>>().unwrap();
    /// a.send(&vec![1, 2]).unwrap();
    /// assert_eq!(b.recv().unwrap(), [1, 2]);
    /// ```
    pub fn send(&self, value: &S) -> std::result::Result<(), SendError> {
        self.check_writable()?;
        let limit = self.max_frame();
        let mut buf = lock(&self.send);
        buf.clear();
        buf.extend_from_slice(&[0; HEADER_LEN]);
        codec::encode_into(value, &mut buf)
            .map_err(|e| Error::codec(format!("sending a {}", std::any::type_name::<S>()), e))?;
        let header = codec::encode_frame_header(buf.len() - HEADER_LEN, limit)
            .map_err(|e| Error::codec("message too large", e))?;
        buf[..HEADER_LEN].copy_from_slice(&header);
        let out = self.write_parts(&[&buf]);
        // Do not keep a huge buffer around after a rare huge message.
        if buf.capacity() > 1 << 20 {
            *buf = Vec::new();
        }
        out
    }
}

impl<S, R: DeserializeOwned> Connection<S, R> {
    /// Receives a value, blocking until one arrives.
    ///
    /// # Errors
    /// [`RecvError::Disconnected`] when the peer has closed (or died) and nothing is left —
    /// Python's `EOFError`; [`RecvError::Failed`] with [`ErrorKind::Codec`] if the bytes are not
    /// an `R` (that message is consumed) or the stream is broken, [`ErrorKind::Io`] otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// let (a, b) = multiproc::pipe::<char>().unwrap();
    /// a.send(&'x').unwrap();
    /// assert_eq!(b.recv().unwrap(), 'x');
    /// ```
    pub fn recv(&self) -> std::result::Result<R, RecvError> {
        self.recv_until(None)?.ok_or_else(unreachable_timeout)
    }

    /// Receives a value if a whole one has arrived; never blocks, not even behind another
    /// thread's receive.
    ///
    /// # Errors
    /// [`TryRecvError::Empty`] if no whole message is there (or another thread is receiving);
    /// otherwise as [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::TryRecvError;
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
    /// a.send(&3).unwrap();
    /// assert_eq!(b.try_recv().unwrap(), 3);
    /// ```
    pub fn try_recv(&self) -> std::result::Result<R, TryRecvError> {
        self.recv_until(Some(Instant::now()))?
            .ok_or(TryRecvError::Empty)
    }

    /// Receives a value, waiting at most `timeout` for the whole call (a `timeout` too large
    /// for an [`Instant`] waits forever).
    ///
    /// # Errors
    /// [`RecvTimeoutError::Timeout`] if no whole message arrived in time (what has arrived of
    /// one stays buffered); otherwise as [`recv`](Self::recv).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::RecvTimeoutError;
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// let r = b.recv_timeout(Duration::from_millis(10));
    /// assert!(matches!(r, Err(RecvTimeoutError::Timeout)));
    /// a.send(&4).unwrap();
    /// assert_eq!(b.recv_timeout(Duration::from_secs(5)).unwrap(), 4);
    /// ```
    pub fn recv_timeout(&self, timeout: Duration) -> std::result::Result<R, RecvTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.recv_deadline(deadline),
            None => Ok(self.recv()?),
        }
    }

    /// Receives a value, waiting until `deadline` at most for the whole call.
    ///
    /// # Errors
    /// As [`recv_timeout`](Self::recv_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use multiproc::RecvTimeoutError;
    /// let (a, b) = multiproc::pipe::<u8>().unwrap();
    /// let soon = Instant::now() + Duration::from_millis(10);
    /// assert!(matches!(b.recv_deadline(soon), Err(RecvTimeoutError::Timeout)));
    /// drop(a);
    /// let later = Instant::now() + Duration::from_secs(5);
    /// assert!(matches!(b.recv_deadline(later), Err(RecvTimeoutError::Disconnected)));
    /// ```
    pub fn recv_deadline(&self, deadline: Instant) -> std::result::Result<R, RecvTimeoutError> {
        self.recv_until(Some(deadline))?
            .ok_or(RecvTimeoutError::Timeout)
    }

    /// Every receive of a value: `Ok(None)` if `deadline` passed first.
    fn recv_until(&self, deadline: Option<Instant>) -> std::result::Result<Option<R>, RecvError> {
        self.recv_with(deadline, |step| match step {
            Step::Ready(dec) => {
                let frame = dec.next_frame_ref().map_err(broken)?.unwrap_or_default();
                codec::decode(frame)
                    .map(Some)
                    .map_err(|e| Error::codec("the message is not of the expected type", e))
            }
            Step::Pending(_) => Ok(None),
        })
    }
}

impl<S, R> AsFd for Connection<S, R> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Locks a mutex, ignoring poisoning: the state it guards stays consistent across a panic in
/// user code because no user code runs while it is held.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn broken(e: CodecError) -> Error {
    Error::codec("the pipe's byte stream is broken", e)
}

/// A blocking receive that came back without a message (it cannot: no deadline).
fn unreachable_timeout() -> RecvError {
    RecvError::Failed(Error::new(
        ErrorKind::Io,
        "a blocking receive returned without a message",
    ))
}

/// What travels beside a connection's descriptor inside a process's arguments.
#[derive(Serialize, Deserialize)]
pub(crate) struct WireConnection {
    readable: bool,
    writable: bool,
    limit: u64,
}

/// A connection can be passed to a child process as (part of) its arguments, and only so; the
/// child gets a working connection (the parent's own copy is closed when the argument is
/// consumed).
impl<S, R> Handle for Connection<S, R> {
    type Wire = WireConnection;
    fn descriptor(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
    fn wire(&self) -> std::result::Result<WireConnection, String> {
        Ok(WireConnection {
            readable: self.readable,
            writable: self.writable,
            limit: self.max_frame() as u64,
        })
    }
    fn import(fd: OwnedFd, w: WireConnection) -> Result<Self> {
        let c = Connection::new(fd, w.readable, w.writable);
        c.set_max_frame(usize::try_from(w.limit).unwrap_or(usize::MAX));
        Ok(c)
    }
}
handle_serde!([S, R] Connection<S, R>);

#[cfg(test)]
mod tests;
