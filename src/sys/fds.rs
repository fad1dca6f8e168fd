//! Descriptors: reading, duplicating, closing, what an open file is.
//!
//! std opens files (always close-on-exec) and duplicates descriptors
//! ([`OwnedFd::try_clone`](std::os::fd::OwnedFd::try_clone) is `F_DUPFD_CLOEXEC` from 3, as
//! before); rustix reads and stats a *borrowed* descriptor, which std can do only through an
//! owned `File` (a `dup` and a `close` more per call). What remains on libc works on bare
//! descriptor numbers, for which no safe type exists: in a forked child, the parent's copies.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};

use rustix::fs::FileType;
use rustix::io::Errno;

/// Reads at most `buf.len()` bytes; `Ok(0)` means end of stream. Retries `EINTR`. See read(2).
pub(crate) fn read(fd: BorrowedFd<'_>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match rustix::io::read(fd, &mut *buf) {
            Err(Errno::INTR) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Writes all of `bytes` to descriptor `fd` with plain write(2) calls: no buffer, no lock (for
/// a forked child, whose stdio locks another thread may have held). Errors are ignored.
pub(crate) fn write_all_raw(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid readable memory for its length; a bad fd gives EBADF.
        let ret = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match super::cvt_size(ret) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Closes a descriptor known only by number (in a forked child, the copy of one that its
/// parent owns). See close(2).
pub(crate) fn close_raw(fd: RawFd) {
    // SAFETY: the caller passes a descriptor that nothing else in this process will use.
    unsafe {
        libc::close(fd);
    }
}

/// True when descriptor `fd` is open. See fcntl(2), `F_GETFD`.
pub(crate) fn fd_is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only queries the descriptor table.
    unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
}

/// For each descriptor of `fds`, whether it is closed: one poll(2) for all (a closed one reports
/// `POLLNVAL`), as std's runtime set-up checks the standard descriptors; one fcntl(2) each
/// should poll fail. `POLLNVAL` is confirmed with fcntl(2): poll gives it to an `O_PATH`
/// descriptor too, which is open. A negative number (which poll skips) is never open.
pub(crate) fn closed_fds<const N: usize>(fds: [RawFd; N]) -> [bool; N] {
    let mut polled = fds.map(|fd| libc::pollfd {
        fd,
        events: 0,
        revents: 0,
    });
    // SAFETY: `polled` is an array of N initialised pollfd structures; a zero timeout never
    // blocks.
    let ret = unsafe { libc::poll(polled.as_mut_ptr(), N as libc::nfds_t, 0) };
    if ret < 0 {
        return fds.map(|fd| !fd_is_open(fd));
    }
    polled.map(|p| p.fd < 0 || (p.revents & libc::POLLNVAL != 0 && !fd_is_open(p.fd)))
}

/// Duplicates `fd` onto the lowest free descriptor ≥ 3, close-on-exec. See fcntl(2),
/// `F_DUPFD_CLOEXEC` (which std uses, from 3).
pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Points standard input, output or error (`target` 0, 1 or 2) at `/dev/null` (read and
/// write); `InvalidInput` for any other descriptor. See dup2(2).
///
/// When `target` is closed, the kernel hands `/dev/null` that very number (the lowest free
/// one, below the others): it is then kept as it is, made inheritable as a dup2 would have.
pub(crate) fn redirect_to_devnull(target: RawFd) -> io::Result<()> {
    if !(0..=2).contains(&target) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    if null.as_raw_fd() == target {
        // Opened close-on-exec, as every std file is: a standard descriptor is not.
        rustix::io::fcntl_setfd(&null, rustix::io::FdFlags::empty())?;
        let _ = null.into_raw_fd();
        return Ok(());
    }
    match target {
        0 => rustix::stdio::dup2_stdin(&null)?,
        1 => rustix::stdio::dup2_stdout(&null)?,
        _ => rustix::stdio::dup2_stderr(&null)?,
    }
    Ok(())
}

/// Opens the running executable file (whatever has happened to its path since), read-only and
/// close-on-exec. See proc(5), `/proc/self/exe`.
pub(crate) fn open_self_exe() -> io::Result<OwnedFd> {
    Ok(std::fs::File::open("/proc/self/exe")?.into())
}

/// True when `fd` is a socket. See fstat(2).
pub(crate) fn is_socket(fd: BorrowedFd<'_>) -> bool {
    rustix::fs::fstat(fd).is_ok_and(|st| FileType::from_raw_mode(st.st_mode) == FileType::Socket)
}

/// The (device, inode) pair of an open file, which names the file whatever its path.
// `dev_t` and `ino_t` are u64 here but narrower on some targets: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn file_identity(fd: BorrowedFd<'_>) -> io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// The (device, inode) pair of the file at `path` (following symbolic links, and the magic
/// links of `/proc`). See stat(2).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn path_identity(path: &str) -> io::Result<(u64, u64)> {
    let st = rustix::fs::stat(path)?;
    Ok((st.st_dev as u64, st.st_ino as u64))
}

/// Makes `fd` non-blocking, as a user's socket crate would (for tests of that case).
/// See fcntl(2), `O_NONBLOCK`.
#[cfg(test)]
pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    let flags = rustix::fs::fcntl_getfl(fd)?;
    Ok(rustix::fs::fcntl_setfl(
        fd,
        flags | rustix::fs::OFlags::NONBLOCK,
    )?)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_duplicate_is_close_on_exec_above_the_standard_three_and_the_same_file() {
        let exe = open_self_exe().unwrap();
        let copy = dup_cloexec(exe.as_fd()).unwrap();
        use std::os::fd::AsRawFd;
        assert!(copy.as_raw_fd() >= 3);
        let flags = rustix::io::fcntl_getfd(&copy).unwrap();
        assert!(flags.contains(rustix::io::FdFlags::CLOEXEC));
        assert_eq!(
            file_identity(copy.as_fd()).unwrap(),
            file_identity(exe.as_fd()).unwrap()
        );
        assert!(!is_socket(exe.as_fd()));
        let (a, _b) = super::super::stream_socketpair().unwrap();
        assert!(is_socket(a.as_fd()));
    }

    #[test]
    fn only_a_descriptor_that_is_not_open_counts_as_closed() {
        use std::os::unix::fs::OpenOptionsExt;
        // poll(2) answers POLLNVAL for an O_PATH descriptor, which is open, and skips a
        // negative number, which is not.
        let path = std::fs::File::options()
            .read(true)
            .custom_flags(libc::O_PATH)
            .open("/")
            .unwrap();
        let (hung_up, peer) = super::super::stream_socketpair().unwrap();
        drop(peer);
        let fds = [path.as_raw_fd(), hung_up.as_raw_fd(), 1 << 20, -1];
        assert_eq!(closed_fds(fds), fds.map(|fd| !fd_is_open(fd)));
        assert_eq!(closed_fds(fds), [false, false, true, true]);
    }

    #[test]
    fn only_the_standard_descriptors_can_be_pointed_at_dev_null() {
        let err = redirect_to_devnull(7).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
