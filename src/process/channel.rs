//! The control channel between a parent and one child: frames over a Unix stream socket.
//!
//! The parent side never blocks in a read: it polls the socket together with the child's pidfd
//! and drains whatever has arrived into a [`FrameDecoder`], so that a child writing a large result
//! can always make progress while its parent waits for it to exit. The child side reads with
//! plain blocking calls: its parent is its only peer.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::codec::{self, FrameDecoder, HEADER_LEN};
use crate::error::{Error, ErrorKind, Result};
use crate::pipe::{Filled, read_into};
use crate::sys;

/// Room on the stack for a control message and its header; larger ones go to the heap.
const SMALL_MESSAGE: usize = 256;

/// Room on the stack for one read while a channel has only seen small reads (see
/// `Channel::read_once`).
const SMALL_READ: usize = 4096;

/// One end of a framed stream socket.
pub(crate) struct Channel {
    fd: OwnedFd,
    decoder: FrameDecoder,
    eof: bool,
    /// The peer has ended and a read has taken all it left (see [`Channel::drain_ended`]).
    ended: bool,
    /// A read has filled [`SMALL_READ`]: from then on reads go straight into the decoder.
    grown: bool,
    /// Descriptors that arrived as SCM_RIGHTS, until taken.
    fds: Vec<OwnedFd>,
}

/// What ended a wait on a channel.
pub(crate) enum Ready {
    /// A complete frame is buffered.
    Frame,
    /// The peer closed its end (or died) and no complete frame is buffered.
    Closed,
    /// The other descriptor passed to `wait` became readable.
    Other,
    /// The deadline passed.
    Timeout,
}

impl Channel {
    pub(crate) fn new(fd: OwnedFd) -> Channel {
        Channel {
            fd,
            decoder: FrameDecoder::new(codec::MAX_FRAME_LIMIT),
            eof: false,
            ended: false,
            grown: false,
            fds: Vec::new(),
        }
    }

    /// Sends one frame holding `payload`, with `fds` attached (SCM_RIGHTS), giving up at
    /// `deadline` (see [`is_timeout`]; part of the frame may then be out).
    pub(crate) fn send_bytes_with_fds_until(
        &self,
        payload: &[u8],
        fds: &[OwnedFd],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let header = codec::encode_frame_header(payload.len(), codec::MAX_FRAME_LIMIT)
            .map_err(|e| Error::codec("message too large for one frame", e))?;
        let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        sys::send_all_parts_until(self.fd.as_fd(), &[&header, payload], &fds, deadline)
            .map_err(|e| send_error(e, "sending to the other process failed"))
    }

    /// The socket, for polling it together with other descriptors.
    pub(crate) fn socket(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// True once the peer has closed its end and everything it sent has been read.
    pub(crate) fn is_closed(&self) -> bool {
        self.eof
    }

    /// Takes the descriptors received so far.
    pub(crate) fn take_fds(&mut self) -> Vec<OwnedFd> {
        std::mem::take(&mut self.fds)
    }

    /// Sends one frame holding `value`, encoded.
    pub(crate) fn send<T: Serialize>(&self, value: &T) -> Result<()> {
        self.send_message(value, None, &[])
    }

    /// Sends `value` in one frame and, if given, `payload` in the next, with `fds` attached, in
    /// a single system call: the peer wakes once for both.
    pub(crate) fn send_message<T: Serialize>(
        &self,
        value: &T,
        payload: Option<&[u8]>,
        fds: &[OwnedFd],
    ) -> Result<()> {
        self.send_message_until(value, payload, fds, None)
    }

    /// Like [`send_message`](Self::send_message), giving up at `deadline` (see
    /// [`is_timeout`]; part of the message may then be out: the channel is unusable).
    pub(crate) fn send_message_until<T: Serialize>(
        &self,
        value: &T,
        payload: Option<&[u8]>,
        fds: &[OwnedFd],
        deadline: Option<Instant>,
    ) -> Result<()> {
        send_message_on(self.fd.as_fd(), value, payload, fds, deadline)
    }

    /// Sends a value already encoded as `encoded` in one frame and, if given, `payload` in the
    /// next, in one system call: [`send_message`](Self::send_message) without serde's code, for
    /// a message whose encoding is a constant (a forked child's usual report: every code page
    /// it runs is one it faults in).
    #[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
    pub(crate) fn send_encoded(&self, encoded: &[u8], payload: Option<&[u8]>) -> Result<()> {
        let mut small = [0u8; SMALL_MESSAGE];
        let Some(room) = small.get_mut(HEADER_LEN..HEADER_LEN + encoded.len()) else {
            return Err(Error::new(
                ErrorKind::Io,
                "a pre-encoded control message is larger than its buffer",
            ));
        };
        room.copy_from_slice(encoded);
        let header = codec::encode_frame_header(encoded.len(), codec::MAX_FRAME_LIMIT)?;
        small[..HEADER_LEN].copy_from_slice(&header);
        let mut len = HEADER_LEN + encoded.len();
        // A small payload joins the buffer, framed: one plain send(2) then carries both, from
        // a shallow stack (a forked child's report; sendmsg(2) would take a frame with room for
        // descriptors). An empty one is not copied: that is a `memcpy` call, in a page of libc
        // that a forked child would fault in.
        let payload = match payload {
            Some(p) if len + HEADER_LEN + p.len() <= SMALL_MESSAGE => {
                let header = codec::encode_frame_header(p.len(), codec::MAX_FRAME_LIMIT)?;
                small[len..len + HEADER_LEN].copy_from_slice(&header);
                len += HEADER_LEN;
                if !p.is_empty() {
                    small[len..len + p.len()].copy_from_slice(p);
                    len += p.len();
                }
                None
            }
            other => other,
        };
        send_framed(self.fd.as_fd(), &small[..len], payload, &[], None)
    }

    /// Takes the first descriptor received and not yet taken.
    pub(crate) fn take_first_fd(&mut self) -> Option<OwnedFd> {
        (!self.fds.is_empty()).then(|| self.fds.remove(0))
    }

    /// Takes the next buffered frame, if one is complete.
    pub(crate) fn take_frame(&mut self) -> Result<Option<Vec<u8>>> {
        self.decoder
            .next_frame()
            .map_err(|e| Error::codec("the other process sent a malformed frame", e))
    }

    /// Decodes the next buffered frame as a `T`, if one is complete.
    pub(crate) fn take<T: DeserializeOwned>(&mut self) -> Result<Option<T>> {
        match self.decoder.next_frame_ref() {
            Ok(Some(bytes)) => codec::decode(bytes)
                .map(Some)
                .map_err(|e| Error::codec("the other process sent a malformed message", e)),
            Ok(None) => Ok(None),
            Err(e) => Err(Error::codec("the other process sent a malformed frame", e)),
        }
    }

    /// Reads once without blocking; returns false when nothing was available.
    pub(crate) fn read_available(&mut self) -> Result<bool> {
        self.read_once(true)
    }

    /// Reads once; returns false at end of stream or when nothing was there.
    fn read_once(&mut self, nonblocking: bool) -> Result<bool> {
        if self.eof {
            return Ok(false);
        }
        let read = if self.grown {
            read_into(
                &mut self.decoder,
                self.fd.as_fd(),
                nonblocking,
                Some(&mut self.fds),
            )
        } else {
            self.read_small(nonblocking)
        };
        match read {
            Ok(Filled::Bytes(_)) => Ok(true),
            Ok(Filled::Empty) => Ok(false),
            Ok(Filled::Closed) => {
                self.eof = true;
                Ok(false)
            }
            Err(e) => Err(Error::io("reading from the other process failed", e)),
        }
    }

    /// One read into a buffer on the stack, its bytes then copied to the decoder: a child's
    /// report and a small result are a few bytes, and the decoder's own read reserves a whole
    /// read chunk on the heap (tens of KiB: a few page faults and a reallocation on every
    /// start, for bytes that fit in a line). A read that fills the buffer means a large
    /// stream: later reads go straight into the decoder.
    fn read_small(&mut self, nonblocking: bool) -> std::io::Result<Filled> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); SMALL_READ];
        match sys::recv_into(self.fd.as_fd(), &mut buf, Some(&mut self.fds), nonblocking) {
            Ok(0) => Ok(Filled::Closed),
            Ok(n) => {
                self.grown = n == buf.len();
                // SAFETY: the kernel wrote the first `n` (≤ buf.len()) bytes of `buf`.
                let bytes = unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), n) };
                self.decoder.push(bytes);
                Ok(Filled::Bytes(n))
            }
            Err(e) => match e.kind() {
                std::io::ErrorKind::WouldBlock => Ok(Filled::Empty),
                // The peer died with data of ours unread: its stream is over.
                std::io::ErrorKind::ConnectionReset => Ok(Filled::Closed),
                _ => Err(e),
            },
        }
    }

    /// Reads everything that has already arrived, without blocking.
    pub(crate) fn drain(&mut self) -> Result<()> {
        while self.read_available()? {}
        Ok(())
    }

    /// [`drain`](Self::drain) for a peer that has ended, which sends nothing more: stops at the
    /// first read that did not fill its buffer and brought no descriptors. A stream read takes
    /// every byte queued, up to the end of a message that carried descriptors, so such a read
    /// has taken the rest, and no further read is needed to see the end of stream.
    pub(crate) fn drain_ended(&mut self) -> Result<()> {
        while !self.ended {
            let (small, fds) = (!self.grown, self.fds.len());
            if !self.read_available()? {
                break;
            }
            self.ended = small && !self.grown && self.fds.len() == fds;
        }
        Ok(())
    }

    /// Waits, reading whatever arrives meanwhile, until `other` becomes readable or the deadline
    /// passes — and, with `stop_on_frame`, until a frame is complete or the peer has closed.
    pub(crate) fn wait(
        &mut self,
        other: Option<std::os::fd::BorrowedFd<'_>>,
        deadline: Option<Instant>,
        stop_on_frame: bool,
    ) -> Result<Ready> {
        loop {
            if stop_on_frame {
                if self.has_frame()? {
                    return Ok(Ready::Frame);
                }
                if self.eof {
                    return Ok(Ready::Closed);
                }
            }
            let mut fds = Vec::with_capacity(2);
            if !self.eof {
                fds.push(sys::pollfd(self.fd.as_fd(), sys::POLLIN));
            }
            if let Some(o) = other {
                fds.push(sys::pollfd(o, sys::POLLIN));
            }
            if fds.is_empty() {
                return Ok(Ready::Closed);
            }
            if sys::poll(&mut fds, deadline)
                .map_err(|e| Error::io("waiting for the other process failed", e))?
                == 0
            {
                return Ok(Ready::Timeout);
            }
            let other_ready = other.is_some() && fds.last().is_some_and(|p| p.revents != 0);
            if !self.eof && fds[0].revents != 0 {
                self.read_available()?;
            }
            if other_ready && !(stop_on_frame && self.has_frame()?) {
                return Ok(Ready::Other);
            }
        }
    }

    /// Blocks until one frame is complete (child side). `Ok(None)` when the peer closed.
    pub(crate) fn recv_frame_blocking(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            if let Some(frame) = self.take_frame()? {
                return Ok(Some(frame));
            }
            if self.eof {
                return Ok(None);
            }
            // Made non-blocking by someone sharing the descriptor: wait for data, never spin.
            if !self.read_once(false)? && !self.eof {
                sys::wait_fd(self.fd.as_fd(), sys::POLLIN, None)
                    .map_err(|e| Error::io("waiting for the other process failed", e))?;
            }
        }
    }

    fn has_frame(&mut self) -> Result<bool> {
        self.decoder
            .has_frame()
            .map_err(|e| Error::codec("the other process sent a malformed frame", e))
    }
}

/// [`Channel::send_message_until`] on a socket shared with a `Channel` (whose reads it leaves
/// alone): `value` in one frame, `payload` in the next, `fds` attached, in one system call
/// when the socket has room.
pub(crate) fn send_message_on<T: Serialize>(
    fd: BorrowedFd<'_>,
    value: &T,
    payload: Option<&[u8]>,
    fds: &[OwnedFd],
    deadline: Option<Instant>,
) -> Result<()> {
    // A control message is a few bytes: encoded on the stack, so that a forked child's
    // report allocates nothing (each heap page it wrote would be copied for it).
    let mut small = [0u8; SMALL_MESSAGE];
    let mut large = Vec::new();
    let buf: &[u8] = match postcard::to_slice(value, &mut small[HEADER_LEN..]) {
        Ok(encoded) => {
            let len = encoded.len();
            let header = codec::encode_frame_header(len, codec::MAX_FRAME_LIMIT)?;
            small[..HEADER_LEN].copy_from_slice(&header);
            &small[..HEADER_LEN + len]
        }
        Err(_) => {
            large.resize(HEADER_LEN, 0);
            codec::encode_into(value, &mut large)
                .map_err(|e| Error::codec("a control message could not be serialized", e))?;
            let header =
                codec::encode_frame_header(large.len() - HEADER_LEN, codec::MAX_FRAME_LIMIT)?;
            large[..HEADER_LEN].copy_from_slice(&header);
            &large
        }
    };
    send_framed(fd, buf, payload, fds, deadline)
}

/// Sends `framed` (one or more whole frames, headers included) and, if given, `payload` in a
/// frame of its own, with `fds` attached, in one system call when the socket has room.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn send_framed(
    fd: BorrowedFd<'_>,
    framed: &[u8],
    payload: Option<&[u8]>,
    fds: &[OwnedFd],
    deadline: Option<Instant>,
) -> Result<()> {
    let payload_header = match payload {
        Some(p) => codec::encode_frame_header(p.len(), codec::MAX_FRAME_LIMIT)
            .map_err(|e| Error::codec("message too large for one frame", e))?,
        None => [0; HEADER_LEN],
    };
    let parts: [&[u8]; 3] = match payload {
        Some(p) => [framed, &payload_header, p],
        None => [framed, &[], &[]],
    };
    let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
    sys::send_all_parts_until(fd, &parts, &fds, deadline)
        .map_err(|e| send_error(e, "sending to the other process failed"))
}

/// True for the error of a send whose deadline passed (see [`is_timeout`]).
pub(crate) fn is_timeout(e: &Error) -> bool {
    e.io_error()
        .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
}

/// Maps the errors of a write to a vanished peer onto [`ErrorKind::Disconnected`]; a deadline
/// that passed stays an I/O error of kind `TimedOut` (see [`is_timeout`]).
fn send_error(e: std::io::Error, context: &str) -> Error {
    match e.kind() {
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => Error::new(
            ErrorKind::Disconnected,
            format!("{context}: the other process is gone"),
        ),
        _ => Error::io(context, e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames around the size of the stack read (and one far past it) arrive whole and in
    /// order, whether the first read fills the stack buffer or not.
    #[test]
    fn small_reads_hand_over_to_the_decoder() {
        for sizes in [
            &[1usize, 2, 3][..],
            &[SMALL_READ - HEADER_LEN],
            &[SMALL_READ - HEADER_LEN + 1, 10],
            &[SMALL_READ, 200_000, 0, 5],
        ] {
            let (a, b) = sys::stream_socketpair().unwrap();
            let sender = Channel::new(a);
            let mut receiver = Channel::new(b);
            let frames: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, &n)| (0..n).map(|j| (i * 7 + j) as u8).collect())
                .collect();
            let writer = std::thread::spawn(move || {
                for f in &frames {
                    sender.send_bytes_with_fds_until(f, &[], None).unwrap();
                }
                frames
            });
            let mut got = Vec::new();
            // Until the writer's end is dropped with its thread.
            while let Some(frame) = receiver.recv_frame_blocking().unwrap() {
                got.push(frame);
            }
            assert_eq!(got, writer.join().unwrap());
        }
    }

    /// Everything `drain_ended` can collect from `bytes` then `more` (sent by a peer that has
    /// finished sending), as frames.
    fn frames_after_end(sent: impl FnOnce(&Channel)) -> (Vec<Vec<u8>>, usize) {
        let (a, b) = sys::stream_socketpair().unwrap();
        let sender = Channel::new(a);
        let mut receiver = Channel::new(b);
        sent(&sender);
        // The sender's end stays open, as a grandchild that inherited it would keep it: the
        // drain must not need the end of stream.
        receiver.drain_ended().unwrap();
        let mut frames = Vec::new();
        while let Some(f) = receiver.take_frame().unwrap() {
            frames.push(f);
        }
        (frames, receiver.take_fds().len())
    }

    /// A report followed by a result in one buffer, at the sizes around what fits in it: the
    /// frames arrive as if sent apart, and one read takes both.
    #[test]
    fn a_small_payload_travels_in_the_report_buffer() {
        let fits = SMALL_MESSAGE - 2 * HEADER_LEN - 1;
        for n in [0, 1, fits - 1, fits, fits + 1, 5000, SMALL_READ * 3] {
            let payload: Vec<u8> = (0..n).map(|i| (i % 251) as u8).collect();
            let (frames, _) = frames_after_end(|s| s.send_encoded(&[7], Some(&payload)).unwrap());
            assert_eq!(frames, vec![vec![7], payload], "payload of {n} bytes");
        }
        let (frames, _) = frames_after_end(|s| s.send_encoded(&[7, 8], None).unwrap());
        assert_eq!(frames, vec![vec![7, 8]]);
    }

    /// A read stops at the end of a message that carried descriptors: what follows it is read
    /// too, although the first read came back short.
    #[test]
    fn the_drain_after_the_end_reads_past_a_message_with_descriptors() {
        let (frames, fds) = frames_after_end(|s| {
            let (x, y) = sys::stream_socketpair().unwrap();
            s.send_bytes_with_fds_until(&[1, 2, 3], &[x, y], None)
                .unwrap();
            s.send_bytes_with_fds_until(&[4], &[], None).unwrap();
            s.send_bytes_with_fds_until(&[5, 6], &[], None).unwrap();
        });
        assert_eq!(frames, vec![vec![1, 2, 3], vec![4], vec![5, 6]]);
        assert_eq!(fds, 2);
    }
}
