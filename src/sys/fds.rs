//! Descriptors: reading, duplicating, closing, what an open file is.
//!
//! std opens files (always close-on-exec) and duplicates descriptors
//! ([`OwnedFd::try_clone`](std::os::fd::OwnedFd::try_clone) is `F_DUPFD_CLOEXEC` from 3, as
//! before); rustix reads and stats a *borrowed* descriptor, which std can do only through an
//! owned `File` (a `dup` and a `close` more per call). What remains on libc works on bare
//! descriptor numbers, for which no safe type exists: in a forked child, the parent's copies.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};

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

/// Duplicates `fd` onto the lowest free descriptor ≥ 3, close-on-exec. See fcntl(2),
/// `F_DUPFD_CLOEXEC` (which std uses, from 3).
pub(crate) fn dup_cloexec(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    fd.try_clone_to_owned()
}

/// Points standard input, output or error (`target` 0, 1 or 2) at `/dev/null` (read and
/// write); `InvalidInput` for any other descriptor. See dup2(2).
pub(crate) fn redirect_to_devnull(target: RawFd) -> io::Result<()> {
    let null = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    match target {
        0 => rustix::stdio::dup2_stdin(&null)?,
        1 => rustix::stdio::dup2_stdout(&null)?,
        2 => rustix::stdio::dup2_stderr(&null)?,
        _ => return Err(io::ErrorKind::InvalidInput.into()),
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
    fn only_the_standard_descriptors_can_be_pointed_at_dev_null() {
        let err = redirect_to_devnull(7).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
