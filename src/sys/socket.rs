//! Unix stream sockets: pairs, gathered sends and scattered receives, and descriptors passed
//! beside the bytes (SCM_RIGHTS).
//!
//! std makes the pair and shuts sockets down; rustix builds the control messages that carry
//! descriptors, and the one receive that takes them reads its control messages with libc's
//! `CMSG_*` functions (rustix would need the data buffer zero-filled first). Every call retries `EINTR`,
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
    RecvAncillaryBuffer, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
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

/// Sends `parts` (gathered) on a socket without raising SIGPIPE, with `fds` attached to the first
/// byte as SCM_RIGHTS. Returns how many bytes went out (possibly fewer than asked).
/// `nonblocking` adds MSG_DONTWAIT. See sendmsg(2), unix(7).
///
/// More than [`MAX_FDS_PER_MESSAGE`] descriptors is `EINVAL`, as the kernel says.
///
/// # Panics
/// With more than four parts.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
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
        return send_one(fd, if count == 1 { &iov[0] } else { &[] }, flags);
    }
    send_parts(fd, &iov[..count], fds, flags)
}

/// The sendmsg(2) of [`sendmsg`], out of line: its kilobyte of room for descriptors is then in
/// no frame of the one-buffer path (a forked child's report, which would fault in a second
/// page of stack for it).
#[inline(never)]
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn send_parts(
    fd: BorrowedFd<'_>,
    iov: &[IoSlice<'_>],
    fds: &[BorrowedFd<'_>],
    flags: SendFlags,
) -> io::Result<usize> {
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
        match rustix::net::sendmsg(fd, iov, &mut control, flags) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Sends one buffer on a socket, non-blocking (MSG_DONTWAIT), without raising SIGPIPE; returns
/// how many bytes went out (possibly fewer than asked). What [`sendmsg`] does for one part and
/// no descriptors, without building the parts first. See send(2).
pub(crate) fn send_nonblocking(fd: BorrowedFd<'_>, bytes: &[u8]) -> io::Result<usize> {
    send_one(fd, bytes, SendFlags::NOSIGNAL | SendFlags::DONTWAIT)
}

/// Waits until one byte can be taken from the socket `fd`, or its peer has closed it, and takes
/// that byte; any other failure ends the wait too. No lock, no allocation: a forked child's
/// last step (see `process::launch::fork`).
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn await_byte(fd: BorrowedFd<'_>) {
    let mut byte = [0u8; 1];
    loop {
        match rustix::net::recv(fd, &mut byte, rustix::net::RecvFlags::empty()) {
            Err(Errno::INTR) => continue,
            // A descriptor made non-blocking by someone else: wait for it instead.
            Err(Errno::AGAIN) => {
                let _ = wait_fd(fd, super::POLLIN, None);
            }
            _ => return,
        }
    }
}

/// send(2) of one buffer with `flags`, retried on `EINTR`.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn send_one(fd: BorrowedFd<'_>, bytes: &[u8], flags: SendFlags) -> io::Result<usize> {
    loop {
        match rustix::net::send(fd, bytes, flags) {
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
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
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
/// (and are closed when it is not). `Ok(0)` means end of stream. A message whose descriptors
/// the kernel could not all install (a full descriptor table: `MSG_CTRUNC`) is an error, its
/// bytes consumed and the descriptors that did arrive closed. Nothing is zero-filled first,
/// with or without `fds`: only the bytes that arrive are written, so a large reserve costs no
/// page touched beyond them (in a freshly forked or spawned process each such page would be a
/// fault, and a copy in a parent that shares its pages with a forked child). See recvmsg(2).
pub(crate) fn recv_append(
    fd: BorrowedFd<'_>,
    vec: &mut Vec<u8>,
    max: usize,
    fds: Option<&mut Vec<OwnedFd>>,
    nonblocking: bool,
) -> io::Result<usize> {
    let len = vec.len();
    let spare = vec.spare_capacity_mut();
    let max = max.min(spare.len());
    let n = recv_into(fd, &mut spare[..max], fds, nonblocking)?;
    // SAFETY: the kernel initialised the first `n` (≤ max ≤ spare capacity) bytes after `len`.
    unsafe { vec.set_len(len + n) };
    Ok(n)
}

/// [`recv_append`] into a caller's buffer (on the stack, say): receives at most `buf.len()`
/// bytes without blocking when `nonblocking`; returns how many of the first bytes of `buf`
/// the kernel wrote. `Ok(0)` means end of stream.
pub(crate) fn recv_into(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    fds: Option<&mut Vec<OwnedFd>>,
    nonblocking: bool,
) -> io::Result<usize> {
    let mut flags = RecvFlags::CMSG_CLOEXEC;
    if nonblocking {
        flags |= RecvFlags::DONTWAIT;
    }
    recv_uninit(fd, buf, fds, flags)
}

fn recv_uninit(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    fds: Option<&mut Vec<OwnedFd>>,
    flags: RecvFlags,
) -> io::Result<usize> {
    match fds {
        None => loop {
            match rustix::net::recv(fd, &mut *buf, flags) {
                Err(Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(((filled, _), _)) => break Ok(filled.len()),
            }
        },
        Some(fds) => recvmsg_rights(fd, buf, fds, flags.bits() as libc::c_int),
    }
}

/// One recvmsg(2) into possibly uninitialised memory, collecting SCM_RIGHTS descriptors into
/// `fds` (owned at once). Retries `EINTR`; returns how many bytes the kernel wrote into `buf`.
///
/// rustix's `recvmsg` takes initialised buffers only, which would mean zero-filling `buf`
/// first; so this one call is made through libc, and its control messages are read with
/// libc's `CMSG_*` functions, bounded by what the kernel reported.
fn recvmsg_rights(
    fd: BorrowedFd<'_>,
    buf: &mut [MaybeUninit<u8>],
    fds: &mut Vec<OwnedFd>,
    flags: libc::c_int,
) -> io::Result<usize> {
    use std::os::fd::{AsRawFd, FromRawFd};
    // Aligned for `cmsghdr`, room for the most descriptors one message can carry.
    let mut space = [MaybeUninit::<u64>::uninit(); RIGHTS_SPACE.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: an all-zero msghdr (no name, no buffers) is a valid value to fill in.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    let got = loop {
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = space.as_mut_ptr().cast();
        msg.msg_controllen = size_of_val(&space) as _;
        // SAFETY: `msg` points at one iovec over `buf` (writable for its length) and at
        // `space` (writable for msg_controllen bytes); both outlive the call.
        let r = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        if r >= 0 {
            break r as usize;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    };
    // The control messages the kernel wrote: msg_controllen now says how many bytes of
    // `space` it filled, and CMSG_FIRSTHDR / CMSG_NXTHDR never step past that.
    let before = fds.len();
    // SAFETY: `msg` is the header the kernel just filled in.
    let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    while !cmsg.is_null() {
        // SAFETY: a non-null header from CMSG_FIRSTHDR/CMSG_NXTHDR lies wholly inside the
        // filled part of `space`, which is aligned for it.
        let header = unsafe { &*cmsg };
        if header.cmsg_level == libc::SOL_SOCKET && header.cmsg_type == libc::SCM_RIGHTS {
            // SAFETY: as above; CMSG_DATA points just past the header, inside the message.
            let data = unsafe { libc::CMSG_DATA(cmsg) };
            let bytes = (header.cmsg_len as usize).saturating_sub(data as usize - cmsg as usize);
            for i in 0..bytes / size_of::<libc::c_int>() {
                // SAFETY: the message holds `bytes` bytes of descriptor numbers after
                // CMSG_DATA, and `i` indexes one of them.
                let raw = unsafe { data.cast::<libc::c_int>().add(i).read_unaligned() };
                // SAFETY: a descriptor the kernel just installed in this process for this
                // receive, open and owned by nobody else.
                fds.push(unsafe { OwnedFd::from_raw_fd(raw) });
            }
        }
        // SAFETY: `cmsg` is a header of `msg` (see above).
        cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        // Some descriptors of the message were dropped by the kernel (our space holds the
        // most one message carries, so the descriptor table was full): the message cannot be
        // used, and the stream is out of step. The ones that arrived are closed.
        fds.truncate(before);
        return Err(io::Error::other(
            "descriptors passed with a message were lost (MSG_CTRUNC): this process's \
             descriptor table is full",
        ));
    }
    Ok(got)
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
    use std::os::fd::{AsFd, AsRawFd};

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
    fn a_receive_writes_only_the_bytes_that_arrive() {
        // The reserve beyond what arrives is left as it was (not zero-filled): pages there are
        // never touched, which a freshly forked or spawned process would pay for in faults.
        const CAP: usize = 64 * 1024;
        for with_fds in [false, true] {
            let (a, b) = stream_socketpair().unwrap();
            let (p, _q) = stream_socketpair().unwrap();
            let attach = if with_fds {
                vec![p.as_fd()]
            } else {
                Vec::new()
            };
            sendmsg(a.as_fd(), &[b"hello"], &attach, false).unwrap();
            let mut buf: Vec<u8> = Vec::with_capacity(CAP);
            // SAFETY: writes within the capacity; the length stays 0.
            unsafe { std::ptr::write_bytes(buf.as_mut_ptr(), 0xa5, CAP) };
            let mut fds = Vec::new();
            let n = recv_append(
                b.as_fd(),
                &mut buf,
                CAP,
                with_fds.then_some(&mut fds),
                false,
            );
            assert_eq!(n.unwrap(), 5);
            assert_eq!(&buf[..], b"hello");
            assert_eq!(fds.len(), usize::from(with_fds));
            // SAFETY: every byte of the capacity was initialised above or by the receive.
            let after = unsafe { std::slice::from_raw_parts(buf.as_ptr().add(5), CAP - 5) };
            assert!(
                after.iter().all(|&x| x == 0xa5),
                "bytes past the received ones were written (with_fds {with_fds})"
            );
        }
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
    fn descriptors_the_kernel_could_not_install_are_an_error_not_silence() {
        // A receiver whose descriptor table is full gets only some of a message's descriptors
        // (the kernel closes the rest and sets MSG_CTRUNC): that must not look like a message
        // that carried fewer. A forked child lowers its own limit (the test process's is
        // shared by every test thread), receives 4 descriptors with room for at most 2, and
        // reports through its exit code: 0 an error, 1 a silent Ok, 2 anything else.
        let (a, b) = stream_socketpair().unwrap();
        let (p, _q) = stream_socketpair().unwrap();
        sendmsg(a.as_fd(), &[b"z"], &[p.as_fd(); 4], false).unwrap();
        // Everything the child uses is allocated here: it neither allocates nor locks.
        let (mut buf, mut fds) = (Vec::with_capacity(4), Vec::with_capacity(8));
        // SAFETY: the child makes system calls, pushes into reserved vectors and `_exit`s.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: plain system calls on our own descriptors and limits.
            let code = unsafe {
                let lowest = libc::fcntl(b.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
                libc::close(lowest);
                let mut lim: libc::rlimit = std::mem::zeroed();
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
                lim.rlim_cur = (lowest + 2) as libc::rlim_t;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
                match recv_append(b.as_fd(), &mut buf, 4, Some(&mut fds), false) {
                    Err(_) => 0,
                    Ok(1) if fds.len() < 4 => 1,
                    Ok(_) => 2,
                }
            };
            // SAFETY: ends the child without running anything of the parent's.
            unsafe { libc::_exit(code) };
        }
        assert!(pid > 0, "fork failed");
        let mut status = 0;
        // SAFETY: reaping our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status), "the child died: {status:#x}");
        assert_eq!(
            libc::WEXITSTATUS(status),
            0,
            "descriptors lost to a full table were not reported (1: Ok with fewer)"
        );
    }

    #[test]
    fn a_one_buffer_send_never_blocks_and_never_raises_sigpipe() {
        let (a, b) = stream_socketpair().unwrap();
        set_socket_buffers(a.as_fd(), 4096);
        set_socket_buffers(b.as_fd(), 4096);
        let chunk = [7u8; 4096];
        let mut sent = 0;
        let full = loop {
            match send_nonblocking(a.as_fd(), &chunk) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(
                sent < 64 << 20,
                "a 4 KiB socket took {sent} bytes without filling"
            );
        };
        assert_eq!(full.kind(), io::ErrorKind::WouldBlock);
        drop(b);
        let err = send_nonblocking(a.as_fd(), b"x").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
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
