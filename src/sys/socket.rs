//! Unix stream sockets: pairs, gathered sends and scattered receives, and descriptors passed
//! beside the bytes (SCM_RIGHTS).
//!
//! std makes the pair and shuts sockets down; rustix builds and parses the control messages
//! that carry descriptors, so no `cmsghdr` is walked by hand here. Every call retries `EINTR`,
//! never raises SIGPIPE (`MSG_NOSIGNAL`), and every descriptor received is close-on-exec
//! (`MSG_CMSG_CLOEXEC`) and owned at once: one that the caller did not ask for is closed, never
//! leaked.

use std::io::{self, IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use rustix::io::Errno;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use super::{POLLOUT, wait_fd};

/// A connected pair of Unix stream sockets, both close-on-exec. See socketpair(2).
pub(crate) fn stream_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let (a, b) = UnixStream::pair()?;
    Ok((a.into(), b.into()))
}

/// Largest number of descriptors passed in one message (the kernel's SCM_MAX_FD is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Room for one control message carrying [`MAX_FDS_PER_MESSAGE`] descriptors.
const RIGHTS_SPACE: usize = rustix::cmsg_space!(ScmRights(MAX_FDS_PER_MESSAGE));

/// The most bytes that one receive which also collects descriptors asks for. Such a receive
/// needs initialised memory (the receive buffer is zeroed first), so it is kept to about what a
/// socket buffer holds; the caller loops for the rest of a stream anyway.
const RIGHTS_RECV_MAX: usize = 256 * 1024;

/// Sends `parts` (gathered) on a socket without raising SIGPIPE, with `fds` attached to the first
/// byte as SCM_RIGHTS. Returns how many bytes went out (possibly fewer than asked).
/// `nonblocking` adds MSG_DONTWAIT. See sendmsg(2), unix(7).
///
/// More than [`MAX_FDS_PER_MESSAGE`] descriptors is `EINVAL`, as the kernel says.
///
/// # Panics
/// With more than four parts.
pub(crate) fn sendmsg(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
    nonblocking: bool,
) -> io::Result<usize> {
    const MAX_PARTS: usize = 4;
    assert!(
        parts.len() <= MAX_PARTS,
        "sendmsg: at most {MAX_PARTS} parts"
    );
    if fds.len() > MAX_FDS_PER_MESSAGE {
        // What the kernel answers for more than SCM_MAX_FD descriptors.
        return Err(super::einval());
    }
    let mut iov = [IoSlice::new(&[]); MAX_PARTS];
    let mut count = 0;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        iov[count] = IoSlice::new(p);
        count += 1;
    }
    let mut flags = SendFlags::NOSIGNAL;
    if nonblocking {
        flags |= SendFlags::DONTWAIT;
    }
    if fds.is_empty() && count <= 1 {
        // One buffer and no descriptors: send(2) does the same as sendmsg(2) without copying
        // in a message header and an iovec array, which a small message notices (~80 ns).
        let bytes: &[u8] = if count == 1 { &iov[0] } else { &[] };
        loop {
            match rustix::net::send(fd, bytes, flags) {
                Err(Errno::INTR) => continue,
                other => return other.map_err(io::Error::from),
            }
        }
    }
    let mut space = [MaybeUninit::<u8>::uninit(); RIGHTS_SPACE];
    let mut control = if fds.is_empty() {
        SendAncillaryBuffer::default()
    } else {
        let mut control = SendAncillaryBuffer::new(&mut space);
        let fitted = control.push(SendAncillaryMessage::ScmRights(fds));
        debug_assert!(fitted, "RIGHTS_SPACE holds MAX_FDS_PER_MESSAGE descriptors");
        control
    };
    loop {
        match rustix::net::sendmsg(fd, &iov[..count], &mut control, flags) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// The parts of `parts` left after the first `skip` bytes (at most 4 parts, no allocation).
pub(crate) fn skip_parts<'a>(parts: &[&'a [u8]], mut skip: usize) -> ([&'a [u8]; 4], usize) {
    let mut out: [&[u8]; 4] = [&[]; 4];
    let mut n = 0;
    for p in parts {
        if skip >= p.len() {
            skip -= p.len();
        } else {
            out[n] = &p[skip..];
            n += 1;
            skip = 0;
        }
    }
    (out, n)
}

/// Sends all of `parts` on a socket, with `fds` attached to the first byte, without raising
/// SIGPIPE; gives up at `deadline` (`None`: never) with [`io::ErrorKind::TimedOut`] (then
/// part of the message may have gone out: the stream is no longer usable). Works whether the
/// socket is blocking or not: each send is non-blocking, and a full socket is waited on.
pub(crate) fn send_all_parts_until(
    fd: BorrowedFd<'_>,
    parts: &[&[u8]],
    fds: &[BorrowedFd<'_>],
    deadline: Option<Instant>,
) -> io::Result<()> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut done = 0;
    let mut first = true;
    while done < total || first {
        let (rest, n) = skip_parts(parts, done);
        let attach = if first { fds } else { &[] };
        match sendmsg(fd, &rest[..n], attach, true) {
            Ok(sent) => {
                done += sent;
                first = false;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_fd(fd, POLLOUT, deadline)? {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "the peer did not read in time",
                    ));
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Shuts down one direction of a socket (`write` true: no more sending). See shutdown(2).
/// (std's `UnixStream::shutdown` would need the stream owned; the callers only borrow it.)
pub(crate) fn shutdown(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    let how = if write {
        rustix::net::Shutdown::Write
    } else {
        rustix::net::Shutdown::Read
    };
    rustix::net::shutdown(fd, how).map_err(io::Error::from)
}

/// Sets a socket's send and receive buffer sizes (best effort). See socket(7).
pub(crate) fn set_socket_buffers(fd: BorrowedFd<'_>, bytes: usize) {
    let bytes = bytes.min(i32::MAX as usize);
    let _ = rustix::net::sockopt::set_socket_send_buffer_size(fd, bytes);
    let _ = rustix::net::sockopt::set_socket_recv_buffer_size(fd, bytes);
}

/// Receives at most `max` bytes into the spare capacity of `vec` (which the caller has
/// reserved), appending them; descriptors passed with SCM_RIGHTS go to `fds` when it is given
/// (and are closed when it is not). `Ok(0)` means end of stream. Without `fds` nothing is
/// zero-filled first; with it, at most [`RIGHTS_RECV_MAX`] bytes are asked for. See recvmsg(2).
pub(crate) fn recv_append(
    fd: BorrowedFd<'_>,
    vec: &mut Vec<u8>,
    max: usize,
    fds: Option<&mut Vec<OwnedFd>>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    let Some(fds) = fds else {
        let len = vec.len();
        let spare = vec.spare_capacity_mut();
        let max = max.min(spare.len());
        let n = loop {
            match rustix::net::recv(fd, &mut spare[..max], flags) {
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(((filled, _), _)) => break filled.len(),
            }
        };
        // SAFETY: the kernel initialised the first `n` (≤ max ≤ spare capacity) bytes after
        // `len`, and `recv` returned them as initialised.
        unsafe { vec.set_len(len + n) };
        return Ok(n);
    };
    let len = vec.len();
    let max = max.min(vec.capacity() - len).min(RIGHTS_RECV_MAX);
    vec.resize(len + max, 0);
    let mut space = [MaybeUninit::<u8>::uninit(); RIGHTS_SPACE];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = loop {
        let mut iov = [IoSliceMut::new(&mut vec[len..])];
        match rustix::net::recvmsg(fd, &mut iov, &mut control, flags) {
            Err(Errno::INTR) => continue,
            Err(e) => break Err(e.into()),
            Ok(msg) => break Ok(msg.bytes),
        }
    };
    vec.truncate(len + *got.as_ref().unwrap_or(&0));
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(rights) = message {
            fds.extend(rights);
        }
    }
    got
}

/// Receives into `first`, then `second` (a scatter read), in one call; `Ok(0)` means end of
/// stream. Retries `EINTR`. See recvmsg(2), readv(2).
pub(crate) fn recv_two(
    fd: BorrowedFd<'_>,
    first: &mut [u8],
    second: &mut [u8],
) -> io::Result<usize> {
    let mut iov = [IoSliceMut::new(first), IoSliceMut::new(second)];
    loop {
        match rustix::net::recvmsg(
            fd,
            &mut iov,
            &mut RecvAncillaryBuffer::default(),
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Err(Errno::INTR) => continue,
            other => return other.map(|m| m.bytes).map_err(io::Error::from),
        }
    }
}

/// The user id of the process at the other end of a connected Unix socket, as the kernel
/// recorded it when the connection was made. See unix(7), `SO_PEERCRED`.
pub(crate) fn peer_uid(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let cred = rustix::net::sockopt::socket_peercred(fd)?;
    Ok(cred.uid.as_raw())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn the_peer_of_a_socketpair_is_ourselves() {
        let (x, _y) = stream_socketpair().unwrap();
        assert_eq!(peer_uid(x.as_fd()).unwrap(), super::super::euid());
    }

    #[test]
    fn descriptors_cross_with_their_bytes_and_arrive_close_on_exec() {
        let (a, b) = stream_socketpair().unwrap();
        let (p, q) = stream_socketpair().unwrap();
        let sent = sendmsg(
            a.as_fd(),
            &[b"ab", b"", b"c"],
            &[p.as_fd(), q.as_fd()],
            false,
        );
        assert_eq!(sent.unwrap(), 3);
        let (mut buf, mut fds) = (Vec::with_capacity(16), Vec::new());
        let n = recv_append(b.as_fd(), &mut buf, 16, Some(&mut fds), false).unwrap();
        assert_eq!((n, &buf[..]), (3, &b"abc"[..]));
        assert_eq!(fds.len(), 2);
        for fd in &fds {
            let flags = rustix::io::fcntl_getfd(fd).unwrap();
            assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        }
        // The received descriptors name the same sockets as those sent.
        assert_eq!(
            super::super::file_identity(fds[0].as_fd()).unwrap(),
            super::super::file_identity(p.as_fd()).unwrap()
        );
    }

    #[test]
    fn descriptors_nobody_asked_for_are_closed_not_leaked() {
        let (a, b) = stream_socketpair().unwrap();
        let (p, q) = stream_socketpair().unwrap();
        sendmsg(a.as_fd(), &[b"x"], &[p.as_fd()], false).unwrap();
        let mut buf = Vec::with_capacity(4);
        assert_eq!(recv_append(b.as_fd(), &mut buf, 4, None, false).unwrap(), 1);
        drop(p);
        // `p` had two descriptors: ours, dropped, and the one in flight. Unless the receive
        // closed the second, `q` would not see the end of its stream (WouldBlock instead).
        let mut end = Vec::with_capacity(4);
        assert_eq!(recv_append(q.as_fd(), &mut end, 4, None, true).unwrap(), 0);
        // The same through a scatter receive, which never takes descriptors.
        let (p, q) = stream_socketpair().unwrap();
        sendmsg(a.as_fd(), &[b"y"], &[p.as_fd()], false).unwrap();
        let (mut one, mut two) = ([0u8; 1], [0u8; 1]);
        assert_eq!(recv_two(b.as_fd(), &mut one, &mut two).unwrap(), 1);
        assert_eq!(&one, b"y");
        drop(p);
        assert_eq!(recv_append(q.as_fd(), &mut end, 4, None, true).unwrap(), 0);
    }

    #[test]
    fn the_most_descriptors_one_message_carries_all_arrive() {
        let (a, b) = stream_socketpair().unwrap();
        let (p, _q) = stream_socketpair().unwrap();
        let many = vec![p.as_fd(); MAX_FDS_PER_MESSAGE];
        sendmsg(a.as_fd(), &[b"z"], &many, false).unwrap();
        let (mut buf, mut fds) = (Vec::with_capacity(4), Vec::new());
        recv_append(b.as_fd(), &mut buf, 4, Some(&mut fds), false).unwrap();
        assert_eq!(fds.len(), MAX_FDS_PER_MESSAGE);
    }

    #[test]
    fn more_descriptors_than_one_message_carries_is_refused_like_the_kernel_does() {
        let (a, _b) = stream_socketpair().unwrap();
        let too_many = vec![a.as_fd(); MAX_FDS_PER_MESSAGE + 1];
        let err = sendmsg(a.as_fd(), &[b"z"], &too_many, false).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    }

    #[test]
    fn an_empty_nonblocking_socket_would_block_and_a_closed_one_ends() {
        let (a, b) = stream_socketpair().unwrap();
        let mut buf = Vec::with_capacity(4);
        let err = recv_append(b.as_fd(), &mut buf, 4, Some(&mut Vec::new()), true).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
        assert!(buf.is_empty(), "a failed receive appends nothing");
        drop(a);
        assert_eq!(recv_append(b.as_fd(), &mut buf, 4, None, true).unwrap(), 0);
        // Writing to a socket whose peer is gone is EPIPE, not a SIGPIPE that kills the test.
        let (c, d) = stream_socketpair().unwrap();
        drop(d);
        let err = sendmsg(c.as_fd(), &[b"x"], &[], false).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    }
}
