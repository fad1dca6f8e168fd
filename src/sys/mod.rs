//! The only module that calls the operating system directly.
//!
//! Everything here is a thin wrapper over one system call, or a small group of them, that returns
//! `std::io::Result` and retries `EINTR` where the call is restartable. The rest of the crate goes
//! through these functions and never names `libc` itself.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::Instant;

mod futex;
mod image;
mod mem;
mod overflow;
mod process;
mod random;
mod robust;

#[cfg(test)]
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use futex::monotonic_timespec;
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use futex::{FutexWait, LockFailed, Locked, RobustMutex, futex_wait, futex_wake};
pub(crate) use image::*;
pub(crate) use mem::*;
pub(crate) use overflow::*;
pub(crate) use process::*;
pub(crate) use random::*;

/// Turns a `-1`-means-error return value into an `io::Result`.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`cvt`] for calls that return `ssize_t`.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A connected pair of Unix stream sockets, both close-on-exec. See socketpair(2).
pub(crate) fn stream_socketpair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors socketpair writes.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: both descriptors were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Reads at most `buf.len()` bytes; `Ok(0)` means end of stream. Retries `EINTR`. See read(2).
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        // SAFETY: `buf` is a valid writable slice for its whole length.
        let ret = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        match cvt_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Time left until `deadline`, as a poll(2) timeout in milliseconds (rounded up; -1 = forever).
fn poll_timeout(deadline: Option<Instant>) -> libc::c_int {
    match deadline {
        None => -1,
        Some(d) => {
            let left = d.saturating_duration_since(Instant::now());
            // Round up so that we never wake a hair before the deadline and spin.
            let ms = left.as_nanos().div_ceil(1_000_000);
            ms.min(libc::c_int::MAX as u128) as libc::c_int
        }
    }
}

/// Waits until at least one descriptor is ready or `deadline` passes (`Ok(0)`).
/// Retries `EINTR` with the time that is left. See poll(2).
pub(crate) fn poll(fds: &mut [libc::pollfd], deadline: Option<Instant>) -> io::Result<usize> {
    loop {
        let timeout = poll_timeout(deadline);
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structures.
        let ret = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        match cvt(ret) {
            Ok(n) => {
                if n == 0 && deadline.is_some_and(|d| Instant::now() < d) {
                    // poll rounds to milliseconds; a few microseconds may remain.
                    continue;
                }
                return Ok(n as usize);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits for `events` on one descriptor; `Ok(false)` when `deadline` passed first.
pub(crate) fn wait_fd(
    fd: BorrowedFd<'_>,
    events: i16,
    deadline: Option<Instant>,
) -> io::Result<bool> {
    let mut pfd = [pollfd(fd, events)];
    Ok(poll(&mut pfd, deadline)? > 0)
}

/// A `pollfd` for `fd`, asking for `events`.
pub(crate) fn pollfd(fd: BorrowedFd<'_>, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// Signal numbers used by the crate.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
pub(crate) const SIGTERM: i32 = libc::SIGTERM;

/// Re-exported poll flags so that callers need not name libc.
pub(crate) const POLLIN: i16 = libc::POLLIN;

/// Closes a descriptor known only by number (in a forked child, the copy of one that its
/// parent owns). See close(2).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller passes a descriptor that nothing else in this process will use.
    unsafe {
        libc::close(fd);
    }
}

/// Duplicates `fd` onto the lowest free descriptor ≥ 3, close-on-exec. See fcntl(2).
pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC takes a minimum descriptor number.
    let new = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) })?;
    // SAFETY: fcntl just created this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// Points descriptor `target` at `/dev/null` (read and write). See dup2(2).
pub(crate) fn redirect_to_devnull(target: RawFd) -> io::Result<()> {
    let null = open(c"/dev/null", libc::O_RDWR)?;
    // SAFETY: both descriptors are valid; dup2 atomically replaces `target`.
    cvt(unsafe { libc::dup2(null.as_raw_fd(), target) }).map(drop)
}

/// Opens `path` close-on-exec. See open(2).
pub(crate) fn open(path: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    loop {
        // SAFETY: `path` is a valid NUL-terminated string.
        let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) };
        match cvt(fd) {
            // SAFETY: open just returned this descriptor.
            Ok(fd) => return Ok(unsafe { OwnedFd::from_raw_fd(fd) }),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Opens the running executable file (whatever has happened to its path since).
/// See proc(5), `/proc/self/exe`.
pub(crate) fn open_self_exe() -> io::Result<OwnedFd> {
    open(c"/proc/self/exe", libc::O_RDONLY)
}

/// True when `fd` is a socket. See fstat(2).
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid writable memory for one `stat`.
    let ok = unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0;
    ok && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK
}

/// The (device, inode) pair of an open file, which names the file whatever its path.
pub(crate) fn file_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is valid writable memory for one `stat`.
    cvt(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok((st.st_dev, st.st_ino))
}

/// The load address of the executable or shared object that contains `addr`, if any.
/// See dladdr(3).
pub(crate) fn object_base(addr: usize) -> Option<usize> {
    // SAFETY: an all-zero Dl_info is a valid value to be overwritten.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: dladdr only reads the address value; `info` is writable.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
    (found != 0).then_some(info.dli_fbase as usize)
}

/// An eventfd used to wake a thread blocked in poll(2). See eventfd(2).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: eventfd takes an initial value and flags.
    let fd = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: eventfd just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Adds one to an eventfd's counter, waking its poller.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    loop {
        // SAFETY: writing 8 readable bytes from a local array.
        let ret = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), one.len()) };
        match cvt_size(ret) {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // The counter is saturated: the poller is certainly going to wake.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
}

/// Resets an eventfd's counter to zero (it is non-blocking: an empty counter is fine).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    let _ = read(fd, &mut buf);
}

/// Largest number of descriptors passed in one message (the kernel's SCM_MAX_FD is 253).
pub(crate) const MAX_FDS_PER_MESSAGE: usize = 253;

/// Sends `parts` (gathered) on a socket without raising SIGPIPE, with `fds` attached to the first
/// byte as SCM_RIGHTS. Returns how many bytes went out (possibly fewer than asked).
/// `nonblocking` adds MSG_DONTWAIT. See sendmsg(2), unix(7).
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
    let empty = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut iov = [empty; MAX_PARTS];
    let mut count = 0;
    for p in parts.iter().filter(|p| !p.is_empty()) {
        iov[count] = libc::iovec {
            iov_base: p.as_ptr() as *mut libc::c_void,
            iov_len: p.len(),
        };
        count += 1;
    }
    let fd_bytes = std::mem::size_of_val(fds);
    let space = if fds.is_empty() {
        0
    } else {
        // SAFETY: CMSG_SPACE is a pure size computation.
        (unsafe { libc::CMSG_SPACE(fd_bytes as u32) }) as usize
    };
    let mut control = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_mut_ptr();
    msg.msg_iovlen = count;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: `control` has room for one cmsghdr with `fd_bytes` of data (CMSG_SPACE), and
        // is 8-byte aligned; CMSG_FIRSTHDR/CMSG_DATA point inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as usize;
            let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, f) in fds.iter().enumerate() {
                data.add(i).write_unaligned(f.as_raw_fd());
            }
        }
    }
    let flags = libc::MSG_NOSIGNAL | if nonblocking { libc::MSG_DONTWAIT } else { 0 };
    loop {
        // SAFETY: `msg` points at valid iovecs and control data for the whole call.
        let ret = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, flags) };
        match cvt_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
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

/// Makes `fd` non-blocking, as a user's socket crate would (for tests of that case).
/// See fcntl(2), `O_NONBLOCK`.
#[cfg(test)]
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on a valid descriptor take and return plain flags.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    // SAFETY: as above.
    cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) }).map(drop)
}

/// Shuts down one direction of a socket (`write` true: no more sending). See shutdown(2).
pub(crate) fn shutdown(fd: BorrowedFd<'_>, write: bool) -> io::Result<()> {
    let how = if write { libc::SHUT_WR } else { libc::SHUT_RD };
    // SAFETY: shutdown takes a valid descriptor and a constant.
    cvt(unsafe { libc::shutdown(fd.as_raw_fd(), how) }).map(drop)
}

/// Sets a socket's send and receive buffer sizes (best effort). See socket(7).
pub(crate) fn set_socket_buffers(fd: BorrowedFd<'_>, bytes: usize) {
    let v = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: `v` is a valid c_int option value of the stated size.
        unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}

/// Readiness flags so that callers need not name libc.
pub(crate) const POLLOUT: i16 = libc::POLLOUT;

/// Receives at most `max` bytes straight into the spare capacity of `vec` (which the caller has
/// reserved), appending them; descriptors passed with SCM_RIGHTS go to `fds` when it is given.
/// `Ok(0)` means end of stream. Nothing is zero-filled first. See recvmsg(2).
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
    let mut iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: max,
    };
    // Room for the most descriptors one message can carry (SCM_MAX_FD), 8-byte aligned.
    let mut control = [0u64; 160];
    let mut flags = libc::MSG_CMSG_CLOEXEC;
    if nonblocking {
        flags |= libc::MSG_DONTWAIT;
    }
    let n = loop {
        // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if fds.is_some() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control);
        }
        // SAFETY: `iov` describes `max` bytes of the vector's spare capacity, which are ours to
        // write; the control buffer lives for the whole call.
        let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, flags) };
        match cvt_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
            Ok(n) => {
                if let Some(fds) = fds {
                    // SAFETY: the kernel filled msg_control with well-formed cmsghdrs up to
                    // msg_controllen; the CMSG_* macros walk them without leaving `control`.
                    unsafe { take_rights(&msg, fds) };
                }
                break n;
            }
        }
    };
    // SAFETY: the kernel initialised the first `n` (≤ max ≤ spare capacity) bytes after `len`.
    unsafe { vec.set_len(len + n) };
    Ok(n)
}

/// Receives into `first`, then `second` (a scatter read), in one call; `Ok(0)` means end of
/// stream. Retries `EINTR`. See recvmsg(2), readv(2).
pub(crate) fn recv_two(
    fd: BorrowedFd<'_>,
    first: &mut [u8],
    second: &mut [u8],
) -> io::Result<usize> {
    let mut iov = [
        libc::iovec {
            iov_base: first.as_mut_ptr().cast(),
            iov_len: first.len(),
        },
        libc::iovec {
            iov_base: second.as_mut_ptr().cast(),
            iov_len: second.len(),
        },
    ];
    loop {
        // SAFETY: an all-zero msghdr is valid; the iovecs point at the two writable slices,
        // which outlive the call.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = iov.as_mut_ptr();
        msg.msg_iovlen = iov.len();
        // SAFETY: `msg` describes only memory we may write.
        let ret = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
        match cvt_size(ret) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Collects the SCM_RIGHTS descriptors of a received message.
///
/// # Safety
/// `msg` must have been filled by a successful recvmsg(2) whose control buffer is still alive.
unsafe fn take_rights(msg: &libc::msghdr, fds: &mut Vec<OwnedFd>) {
    // SAFETY: guaranteed by the caller (see above).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                let len = (*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize;
                for i in 0..len / size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
}
