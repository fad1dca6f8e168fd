//! Processes: ids, fork, waiting through pidfds, signals, and the descriptor hygiene of a
//! forked child.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::{cvt, cvt_size};

/// The id of the calling process. See getpid(2).
pub(crate) fn getpid() -> i32 {
    // SAFETY: getpid has no preconditions and cannot fail.
    unsafe { libc::getpid() }
}

/// The id of the parent process. See getppid(2).
pub(crate) fn getppid() -> i32 {
    // SAFETY: getppid has no preconditions and cannot fail.
    unsafe { libc::getppid() }
}

/// The kernel thread id of the calling thread. See gettid(2).
pub(crate) fn gettid() -> i32 {
    // SAFETY: gettid has no preconditions and cannot fail.
    unsafe { libc::gettid() }
}

/// True when the caller is the process's initial thread, whose exit ends the process.
pub(crate) fn is_main_thread() -> bool {
    gettid() == getpid()
}

/// Number of threads in the calling process: the link count of `/proc/self/task` is the number
/// of its entries (one per thread) plus two (`.` and `..`). One stat(2), no parsing. See proc(5).
pub(crate) fn thread_count() -> io::Result<usize> {
    // SAFETY: an all-zero `stat` is a valid value to be overwritten.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the path is NUL-terminated and `st` is writable memory for one `stat`.
    cvt(unsafe { libc::stat(c"/proc/self/task".as_ptr(), &mut st) })?;
    Ok((st.st_nlink as usize).saturating_sub(2).max(1))
}

/// How a child process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It called `exit` with this status.
    Code(i32),
    /// It was killed by this signal.
    Signal(i32),
}

impl Exit {
    /// Python's `exitcode`: the status, or minus the signal number.
    pub(crate) fn exitcode(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => -s,
        }
    }

    fn from_wait_status(status: libc::c_int) -> Option<Exit> {
        if libc::WIFEXITED(status) {
            Some(Exit::Code(libc::WEXITSTATUS(status)))
        } else if libc::WIFSIGNALED(status) {
            Some(Exit::Signal(libc::WTERMSIG(status)))
        } else {
            None
        }
    }
}

/// Reaps `pid` if it has ended; `Ok(None)` while it runs (or, with `block`, waits for it).
/// See waitpid(2).
pub(crate) fn waitpid(pid: i32, block: bool) -> io::Result<Option<Exit>> {
    let flags = if block { 0 } else { libc::WNOHANG };
    loop {
        let mut status = 0;
        // SAFETY: `status` is a valid, writable int; waitpid has no other preconditions.
        let ret = unsafe { libc::waitpid(pid, &mut status, flags) };
        match ret {
            -1 if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted => continue,
            -1 => return Err(io::Error::last_os_error()),
            0 => return Ok(None),
            _ => match Exit::from_wait_status(status) {
                Some(exit) => return Ok(Some(exit)),
                // Stopped or continued: not an end; keep waiting if asked to.
                None if block => continue,
                None => return Ok(None),
            },
        }
    }
}

/// A descriptor that becomes readable when process `pid` ends. See pidfd_open(2).
pub(crate) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags by value and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Sends `signal` to the process behind `pidfd`. Unlike kill(2) this cannot hit a recycled pid.
/// See pidfd_send_signal(2).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> io::Result<()> {
    // SAFETY: the descriptor is valid for the duration of the call; a null siginfo is allowed.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        // ESRCH: it already ended (it may be a zombie we have not reaped): nothing to do.
        if err.raw_os_error() == Some(libc::ESRCH) {
            return Ok(());
        }
        return Err(err);
    }
    Ok(())
}

/// Sends `signal` to process `pid`. See kill(2).
pub(crate) fn kill(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill takes plain integers.
    cvt(unsafe { libc::kill(pid, signal) }).map(drop)
}

/// Asks the kernel to send `signal` to the calling process when the thread that created it ends.
/// See PR_SET_PDEATHSIG in prctl(2).
pub(crate) fn set_parent_death_signal(signal: i32) -> io::Result<()> {
    // SAFETY: PR_SET_PDEATHSIG takes the signal number as its only argument.
    cvt(unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong, 0, 0, 0) }).map(drop)
}

/// Sets `SIGPIPE` to be ignored, so that writing to a closed pipe returns `EPIPE` instead of
/// killing the process (the Rust runtime does this before `main`; children that start before
/// `main` must do it themselves). See signal(7).
pub(crate) fn ignore_sigpipe() {
    // SAFETY: installing SIG_IGN for SIGPIPE has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
    }
}

/// Creates a child process that is a copy of the calling thread. See fork(2).
///
/// # Safety
/// In the child only async-signal-safe work is sound if other threads existed at the time of the
/// fork (their locks stay locked forever in the child). The caller must uphold that or know that
/// the process had one thread.
pub(crate) unsafe fn fork() -> io::Result<i32> {
    // SAFETY: the caller takes responsibility for the child's environment (see above).
    cvt(unsafe { libc::fork() })
}

/// Ends the calling process at once, without running exit handlers. See _exit(2).
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Reaps the child behind `pidfd` if it has ended; `Ok(None)` while it runs (or, with `block`,
/// waits for it). Unlike waitpid(2) by pid, this can never collect a recycled pid's status.
/// `ECHILD` means that the status is gone: collected by someone else (a `waitpid(-1)` elsewhere
/// in the program), or never kept because SIGCHLD is ignored. See waitid(2), `P_PIDFD`.
pub(crate) fn wait_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<Exit>> {
    let flags = libc::WEXITED | if block { 0 } else { libc::WNOHANG };
    loop {
        // SAFETY: an all-zero siginfo_t is valid; with WNOHANG and no change, si_pid stays 0.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: `info` is valid writable memory; the descriptor is borrowed for the call.
        let ret = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                flags,
            )
        };
        if ret == -1 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        // SAFETY: waitid filled `info` (or left it zeroed); these fields are valid for SIGCHLD.
        let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
        if pid == 0 {
            return Ok(None);
        }
        return Ok(Some(match code {
            libc::CLD_EXITED => Exit::Code(status),
            _ => Exit::Signal(status),
        }));
    }
}

/// True if `err` says that a child's status is gone (see [`wait_pidfd`]): the child has ended,
/// but nobody can tell us how.
pub(crate) fn is_status_lost(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECHILD)
}

/// Writes all of `bytes` to descriptor `fd` with plain write(2) calls: no buffer, no lock (for
/// a forked child, whose stdio locks another thread may have held). Errors are ignored.
pub(crate) fn write_all_raw(fd: RawFd, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid readable memory for its length; a bad fd gives EBADF.
        let ret = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        match cvt_size(ret) {
            Ok(0) => return,
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Closes every descriptor from 3 up except those in `keep`, with a few close_range(2) calls
/// over the gaps. For a freshly forked child, which knows exactly what it needs.
pub(crate) fn close_all_except(keep: &mut [RawFd]) {
    keep.sort_unstable();
    let mut from: libc::c_uint = 3;
    for &fd in keep.iter() {
        let Ok(fd) = libc::c_uint::try_from(fd) else {
            continue;
        };
        if fd < from {
            continue;
        }
        if fd > from {
            close_range(from, fd - 1);
        }
        from = fd + 1;
    }
    close_range(from, libc::c_uint::MAX);
}

fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range takes two descriptor numbers and flags; the caller owns every
    // descriptor in the range (see close_all_except).
    let ret = unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) };
    if ret != 0 {
        // Kernels before 5.9: close them one by one, up to the descriptor limit.
        // SAFETY: sysconf has no preconditions.
        let max = unsafe { libc::sysconf(libc::_SC_OPEN_MAX) };
        let end = if max > 0 {
            (max as libc::c_uint).min(last.saturating_add(1))
        } else {
            last.min(65_535).saturating_add(1)
        };
        for fd in first..end {
            // SAFETY: as above; closing a descriptor that is not open gives EBADF, harmlessly.
            unsafe { libc::close(fd as RawFd) };
        }
    }
}
