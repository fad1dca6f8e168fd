//! The byte moving under a [`Connection`]: sends that read the peer while they wait, receives
//! that wait for readiness (never spin), and the direct read of a frame into a caller's buffer.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use super::slot::RecvState;
use super::{Connection, SendError, broken};
use crate::codec::{CodecError, FrameDecoder, HEADER_LEN};
use crate::error::{Error, Result};
use crate::sys;

/// How many times a receive that finds the socket empty yields the CPU (each time looking
/// again) before it sleeps. On one CPU a yield runs the sender, which is then not woken up
/// to preempt for every few frames; where nothing else wants the CPU a yield returns at once.
pub(super) const YIELDS: u32 = 4;

#[cfg(test)]
thread_local! {
    /// The yields this thread's receives made, for tests of when a receive may yield.
    pub(super) static YIELDED: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// What one read from a descriptor gave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Filled {
    /// This many bytes arrived.
    Bytes(usize),
    /// Nothing was available (non-blocking read).
    Empty,
    /// The peer closed its end (or reset the connection).
    Closed,
}

/// Reads once from the stream socket `fd` straight into `decoder` (no zero-filling),
/// collecting descriptors passed with SCM_RIGHTS into `fds` if given. The codec stays pure:
/// reading a descriptor is the transport's business, here and in the process layer's channel.
pub(crate) fn read_into(
    decoder: &mut FrameDecoder,
    fd: BorrowedFd<'_>,
    nonblocking: bool,
    fds: Option<&mut Vec<OwnedFd>>,
) -> std::io::Result<Filled> {
    match decoder.append_with(|vec, room| sys::recv_append(fd, vec, room, fds, nonblocking)) {
        Ok(0) => Ok(Filled::Closed),
        Ok(n) => Ok(Filled::Bytes(n)),
        Err(e) => match e.kind() {
            std::io::ErrorKind::WouldBlock => Ok(Filled::Empty),
            // The peer died with data of ours unread: its stream is over.
            std::io::ErrorKind::ConnectionReset => Ok(Filled::Closed),
            _ => Err(e),
        },
    }
}

impl<S, R> Connection<S, R> {
    /// Receives the next frame with the header read apart and the payload read into `out`.
    /// Bytes that are not this frame's payload (a frame too long for `out` or the limit, the
    /// frames after it) go to the decoder, and `Ok(None)` hands over to the decoder's path.
    pub(super) fn recv_direct(
        &self,
        st: &mut RecvState,
        out: &mut [u8],
    ) -> Result<Option<std::result::Result<usize, Vec<u8>>>> {
        let mut header = [0u8; HEADER_LEN];
        let n = loop {
            match sys::recv_two(self.fd.as_fd(), &mut header, out) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    sys::wait_fd(self.fd.as_fd(), sys::POLLIN, None)
                        .map_err(|e| Error::io("waiting on a pipe failed", e))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break 0,
                Err(e) => return Err(Error::io("receiving on a pipe failed", e)),
            }
        };
        if n == 0 {
            st.eof = true;
            return Ok(None);
        }
        if n < HEADER_LEN {
            st.decoder.push(&header[..n]);
            return Ok(None);
        }
        let body = n - HEADER_LEN;
        let len = u32::from_le_bytes(header) as usize;
        if len > out.len() || len > st.decoder.limit() {
            // Too long for `out` (the caller gets it whole) or for the limit (an error): the
            // decoder's path deals with it.
            st.decoder.push(&header);
            st.decoder.push(&out[..body]);
            return Ok(None);
        }
        if body > len {
            st.decoder.push(&out[len..body]);
        }
        self.read_rest_into(st, &mut out[..len], body.min(len))
            .map(|n| Some(Ok(n)))
    }

    /// Reads the rest of a diverted frame from the socket into `out[have..]`.
    pub(super) fn read_rest_into(
        &self,
        st: &mut RecvState,
        out: &mut [u8],
        mut have: usize,
    ) -> Result<usize> {
        while have < out.len() {
            match sys::read(self.fd.as_fd(), &mut out[have..]) {
                Ok(0) => {
                    st.eof = true;
                    st.broken = Some(CodecError::Truncated);
                    return Err(broken(CodecError::Truncated));
                }
                Ok(n) => have += n,
                // A descriptor someone made non-blocking: wait for the bytes, as a blocking
                // read would have.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    sys::wait_fd(self.fd.as_fd(), sys::POLLIN, None)
                        .map_err(|e| Error::io("waiting on a pipe failed", e))?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                    st.eof = true;
                    st.broken = Some(CodecError::Truncated);
                    return Err(broken(CodecError::Truncated));
                }
                Err(e) => {
                    // The frame's remaining bytes can no longer be accounted for.
                    st.broken = Some(CodecError::Truncated);
                    return Err(Error::io("receiving on a pipe failed", e));
                }
            }
        }
        Ok(have)
    }

    /// Writes the parts with non-blocking sends; while the socket is full, reads what the peer
    /// sends so that two large sends in opposite directions cannot wait on each other forever.
    pub(super) fn write_parts(&self, parts: &[&[u8]]) -> std::result::Result<(), SendError> {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        let mut done = 0;
        while done < total {
            let sent = match parts {
                // One buffer (every frame but a large `send_bytes`): a plain send(2).
                [one] => sys::send_nonblocking(self.fd.as_fd(), &one[done..]),
                _ => {
                    let (rest, n) = sys::skip_parts(parts, done);
                    sys::sendmsg(self.fd.as_fd(), &rest[..n], &[], true)
                }
            };
            match sent {
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => self.wait_writable()?,
                Err(e) => {
                    return Err(match e.kind() {
                        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                            SendError::Disconnected
                        }
                        _ => SendError::Failed(Error::io("sending on a pipe failed", e)),
                    });
                }
            }
        }
        Ok(())
    }

    pub(super) fn wait_writable(&self) -> Result<()> {
        // Only read meanwhile if no other thread is receiving (it would be reading anyway), and
        // only until one whole frame is buffered: that is enough for a peer that is itself
        // blocked sending to us to finish, and it bounds what we hold by the frame limit.
        let mut st = if self.readable { self.try_lend() } else { None };
        let watch_in = st
            .as_mut()
            .is_some_and(|s| !s.eof && s.broken.is_none() && !s.has_frame());
        if !watch_in {
            // Nothing to read for: give the state back before a wait that may be long, or a
            // receiving thread of this end would wait behind us with its frame buffered.
            st = None;
        }
        let mut fds = [sys::pollfd(self.fd.as_fd(), sys::POLLOUT)];
        if watch_in {
            fds[0].events |= sys::POLLIN;
        }
        sys::poll(&mut fds, None).map_err(|e| Error::io("waiting on a pipe failed", e))?;
        if let Some(st) = st
            .as_mut()
            .filter(|_| watch_in && fds[0].revents & sys::POLLIN != 0)
        {
            self.read_once(st, true)?;
        }
        Ok(())
    }

    /// Reads once; returns false if nothing was available (non-blocking) or at end of stream.
    pub(super) fn read_once(&self, st: &mut RecvState, nonblocking: bool) -> Result<bool> {
        Ok(matches!(self.read(st, nonblocking)?, Filled::Bytes(_)))
    }

    /// Reads once into the decoder, noting the end of the stream.
    pub(super) fn read(&self, st: &mut RecvState, nonblocking: bool) -> Result<Filled> {
        match read_into(&mut st.decoder, self.fd.as_fd(), nonblocking, None) {
            Ok(Filled::Closed) => {
                st.eof = true;
                Ok(Filled::Closed)
            }
            Ok(filled) => Ok(filled),
            Err(e) => Err(Error::io("receiving on a pipe failed", e)),
        }
    }

    /// Reads more bytes, waiting for them until `deadline`; false if it passed (or the stream
    /// ended). The first read does not block: if nothing is there, a few `sched_yield`s come
    /// first, each followed by another look (see [`YIELDS`]). Then, without a deadline, the
    /// wait is the read itself (one system call per wake-up); with one — or when someone made
    /// the descriptor non-blocking, so that the read returns `EAGAIN` — readiness is waited for
    /// with poll(2), never by spinning. No yield once the deadline has passed, so `try_recv`
    /// only looks.
    pub(super) fn fill(&self, st: &mut RecvState, deadline: Option<Instant>) -> Result<bool> {
        let mut nonblocking = true;
        let mut yields = YIELDS;
        let mut blocked = false;
        loop {
            match self.read(st, nonblocking)? {
                Filled::Bytes(_) => return Ok(true),
                Filled::Closed => return Ok(false),
                Filled::Empty => {
                    if yields > 0 && deadline.is_none_or(|d| Instant::now() < d) {
                        yields -= 1;
                        #[cfg(test)]
                        YIELDED.with(|y| y.set(y.get() + 1));
                        std::thread::yield_now();
                        continue;
                    }
                    if deadline.is_none() && !blocked {
                        // Sleep in the read itself.
                        blocked = true;
                        nonblocking = false;
                        continue;
                    }
                    if !sys::wait_fd(self.fd.as_fd(), sys::POLLIN, deadline)
                        .map_err(|e| Error::io("waiting on a pipe failed", e))?
                    {
                        return Ok(false);
                    }
                    nonblocking = true;
                }
            }
        }
    }
}
