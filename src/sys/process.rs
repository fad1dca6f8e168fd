//! Processes: ids, fork, waiting through pidfds, signals, and the descriptor hygiene of a
//! forked child.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;

use rustix::io::Errno;
use rustix::process::{PidfdFlags, WaitId, WaitIdOptions, WaitOptions};

use super::{cvt, one_pid, signal};

/// The id of the calling process. See getpid(2).
pub(crate) fn getpid() -> i32 {
    std::process::id() as i32
}

/// The CPUs among the first 64 that the calling thread may run on, one bit each (all bits when
/// the mask cannot be read or holds none of them). See sched_getaffinity(2).
pub(crate) fn cpu_mask() -> u64 {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => match (0..64)
            .filter(|&c| set.is_set(c))
            .fold(0u64, |m, c| m | 1 << c)
        {
            0 => u64::MAX,
            m => m,
        },
        Err(_) => u64::MAX,
    }
}

/// Whether the machine has one CPU online (read once per process: it is a file read). See
/// sysconf(3), `_SC_NPROCESSORS_ONLN`.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn one_cpu_online() -> bool {
    static ONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    // SAFETY: sysconf has no preconditions.
    *ONE.get_or_init(|| unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) } == 1)
}

/// The id of the parent process (0 when it lies outside our pid namespace). See getppid(2).
///
/// A system call made inline (no libc call): a forked child calls it first thing, and every code
/// page it runs is one more page fault there (fork does not copy the page tables of code).
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn getppid() -> i32 {
    rustix::process::getppid().map_or(0, |pid| pid.as_raw_nonzero().get())
}

/// The kernel thread id of the calling thread. See gettid(2).
pub(crate) fn gettid() -> i32 {
    rustix::thread::gettid().as_raw_nonzero().get()
}

/// True when the caller is the process's initial thread, whose exit ends the process.
pub(crate) fn is_main_thread() -> bool {
    gettid() == getpid()
}

/// Number of threads in the calling process: the link count of `/proc/self/task` is the number
/// of its entries (one per thread) plus two (`.` and `..`). One stat(2), no parsing. See proc(5).
pub(crate) fn thread_count() -> io::Result<usize> {
    let links = std::fs::metadata("/proc/self/task")?.nlink();
    Ok((links as usize).saturating_sub(2).max(1))
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

    fn from_wait_status(status: rustix::process::WaitStatus) -> Option<Exit> {
        match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => Some(Exit::Code(code)),
            (None, Some(signal)) => Some(Exit::Signal(signal)),
            // Stopped or continued.
            (None, None) => None,
        }
    }
}

/// Reaps `pid` if it has ended; `Ok(None)` while it runs (or, with `block`, waits for it).
/// See waitpid(2).
pub(crate) fn waitpid(pid: i32, block: bool) -> io::Result<Option<Exit>> {
    let pid = one_pid(pid)?;
    let flags = if block {
        WaitOptions::empty()
    } else {
        WaitOptions::NOHANG
    };
    loop {
        match rustix::process::waitpid(Some(pid), flags) {
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            Ok(None) => return Ok(None),
            Ok(Some((_, status))) => match Exit::from_wait_status(status) {
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
    Ok(rustix::process::pidfd_open(
        one_pid(pid)?,
        PidfdFlags::empty(),
    )?)
}

/// Sends `signal` to the process behind `pidfd`. Unlike kill(2) this cannot hit a recycled pid.
/// See pidfd_send_signal(2).
pub(crate) fn pidfd_send_signal(pidfd: BorrowedFd<'_>, sig: i32) -> io::Result<()> {
    match rustix::process::pidfd_send_signal(pidfd, signal(sig)?) {
        // ESRCH: it already ended (it may be a zombie we have not reaped): nothing to do.
        Ok(()) | Err(Errno::SRCH) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Sends `signal` to process `pid` (`EINVAL` for a pid of zero or less, which would signal a
/// whole group). See kill(2).
pub(crate) fn kill(pid: i32, sig: i32) -> io::Result<()> {
    Ok(rustix::process::kill_process(one_pid(pid)?, signal(sig)?)?)
}

/// Asks the kernel to send `signal` to the calling process when the thread that created it ends.
/// See PR_SET_PDEATHSIG in prctl(2).
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn set_parent_death_signal(sig: i32) -> io::Result<()> {
    // SIGKILL, what every child asks for, without the general conversion (one code page fewer
    // to fault in a forked child).
    let sig = match sig {
        0 => None,
        libc::SIGKILL => Some(rustix::process::Signal::KILL),
        _ => Some(signal(sig)?),
    };
    Ok(rustix::process::set_parent_process_death_signal(sig)?)
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

/// Blocks SIGPIPE on the calling thread, so that one raised for it stays pending (even while
/// ignored) for [`sigpipe_pending`] to see (for tests of sends that must not raise it).
/// See pthread_sigmask(3).
#[cfg(test)]
pub(crate) fn block_sigpipe_on_this_thread() {
    // SAFETY: a local signal set; only the calling thread's mask changes.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGPIPE);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// True when a SIGPIPE is pending for the calling thread (or its process). See sigpending(2).
#[cfg(test)]
pub(crate) fn sigpipe_pending() -> bool {
    // SAFETY: a local signal set for sigpending to fill.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut set);
        libc::sigismember(&set, libc::SIGPIPE) == 1
    }
}

/// A signal's disposition as it was before [`ignore_signal`] changed it.
pub(crate) struct SavedAction(libc::sigaction);

/// Ignores `sig` from now on (and in children, which inherit it, across exec too); returns the
/// disposition it had, for [`restore_signal`]. See sigaction(2).
pub(crate) fn ignore_signal(sig: i32) -> io::Result<SavedAction> {
    // SAFETY: all-zero sigaction structures are valid to fill in; SIG_IGN needs no handler.
    unsafe {
        let mut ignore: libc::sigaction = std::mem::zeroed();
        ignore.sa_sigaction = libc::SIG_IGN;
        libc::sigemptyset(&mut ignore.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        cvt(libc::sigaction(sig, &ignore, &mut old))?;
        Ok(SavedAction(old))
    }
}

/// Puts back the disposition [`ignore_signal`] saved. Async-signal-safe: usable in a child
/// just forked. See sigaction(2).
pub(crate) fn restore_signal(sig: i32, saved: &SavedAction) {
    // SAFETY: `saved` is what sigaction(2) returned for this process (or the one it was forked
    // from, whose handlers are at the same addresses).
    unsafe { libc::sigaction(sig, &saved.0, std::ptr::null_mut()) };
}

/// True when the kernel reaps this process's children the moment they end: SIGCHLD ignored, or
/// a handler with `SA_NOCLDWAIT` (true too if the disposition cannot be read). Changes nothing.
/// See sigaction(2).
pub(crate) fn children_reaped_by_kernel() -> bool {
    // SAFETY: an all-zero sigaction structure is valid to fill in; a query changes nothing.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old) != 0 {
            return true;
        }
        old.sa_sigaction == libc::SIG_IGN || old.sa_flags & libc::SA_NOCLDWAIT != 0
    }
}

/// When children are reaped by the kernel the moment they end (SIGCHLD ignored, or a handler
/// with `SA_NOCLDWAIT`): makes them stay until waited for (SIGCHLD at its default, or the
/// handler without the flag) and returns what to put back with [`restore_signal`]. `None`, with
/// nothing changed, in the usual case. For the window between a fork and the pidfd_open of the
/// child, which a child that has already been reaped would make fail (or, were its pid reused,
/// open another process). See sigaction(2).
pub(crate) fn keep_children_reapable() -> io::Result<Option<SavedAction>> {
    // SAFETY: all-zero sigaction structures are valid to fill in; a query changes nothing.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        cvt(libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old))?;
        let ignored = old.sa_sigaction == libc::SIG_IGN;
        if !ignored && old.sa_flags & libc::SA_NOCLDWAIT == 0 {
            return Ok(None);
        }
        let mut kept = old;
        if ignored {
            kept.sa_sigaction = libc::SIG_DFL;
        }
        kept.sa_flags &= !libc::SA_NOCLDWAIT;
        cvt(libc::sigaction(libc::SIGCHLD, &kept, std::ptr::null_mut()))?;
        Ok(Some(SavedAction(old)))
    }
}

/// Has `handler` run in the child of every fork(2) made through the C library from now on (not
/// in the parent). It runs in a copy of one thread of a maybe multi-threaded process: it must
/// be async-signal-safe. Fails only when out of memory. See pthread_atfork(3).
pub(crate) fn on_fork_in_child(handler: extern "C" fn()) -> io::Result<()> {
    // SAFETY: the handler is a plain function, valid for the program's life; no prepare or
    // parent handler.
    match unsafe { libc::pthread_atfork(None, None, Some(handler)) } {
        0 => Ok(()),
        code => Err(io::Error::from_raw_os_error(code)),
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
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn exit_immediately(code: i32) -> ! {
    // SAFETY: _exit never returns and has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Reaps the child behind `pidfd` if it has ended; `Ok(None)` while it runs (or, with `block`,
/// waits for it). Unlike waitpid(2) by pid, this can never collect a recycled pid's status.
/// `ECHILD` means that the status is gone: collected by someone else (a `waitpid(-1)` elsewhere
/// in the program), or never kept because SIGCHLD is ignored. See waitid(2), `P_PIDFD`.
pub(crate) fn wait_pidfd(pidfd: BorrowedFd<'_>, block: bool) -> io::Result<Option<Exit>> {
    let flags = WaitIdOptions::EXITED
        | if block {
            WaitIdOptions::empty()
        } else {
            WaitIdOptions::NOHANG
        };
    loop {
        match rustix::process::waitid(WaitId::PidFd(pidfd), flags) {
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
            // With WNOHANG and no change the kernel reports no pid.
            Ok(None) => return Ok(None),
            // Asked for WEXITED only, the kernel reports an exit, a kill or a core dump.
            Ok(Some(status)) => {
                return Ok(Some(match status.exit_status() {
                    Some(code) => Exit::Code(code),
                    None => Exit::Signal(status.terminating_signal().unwrap_or(0)),
                }));
            }
        }
    }
}

/// True if `err` says that a child's status is gone (see [`wait_pidfd`]): the child has ended,
/// but nobody can tell us how.
pub(crate) fn is_status_lost(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::ECHILD)
}

/// Closes every descriptor from 3 up except those in `keep`, with a few close_range(2) calls
/// over the gaps. For a freshly forked child, which knows exactly what it needs.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
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

/// close_range(2) with no flags: 0, or a nonzero value on failure.
///
/// On x86-64 the system call is made inline rather than through libc's `syscall()`: a forked
/// child calls this first thing, and libc's wrapper sits on a code page of its own that the
/// child would fault in (fork copies no page-table entries of file-backed code).
///
/// # Safety
/// The caller owns every descriptor in `first..=last`.
#[cfg(target_arch = "x86_64")]
unsafe fn close_range_syscall(first: libc::c_uint, last: libc::c_uint) -> isize {
    let ret: isize;
    // SAFETY: the Linux x86-64 system-call convention: number in rax, arguments in rdi, rsi,
    // rdx; the kernel clobbers rcx and r11 and returns in rax (a negated errno on failure). No
    // memory is read or written; the caller's obligation is the one of close_range itself.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") libc::SYS_close_range as isize => ret,
            in("rdi") first as usize,
            in("rsi") last as usize,
            in("rdx") 0usize,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack, preserves_flags),
        );
    }
    ret
}

/// close_range(2) with no flags, through libc: 0, or -1 on failure.
///
/// # Safety
/// The caller owns every descriptor in `first..=last`.
#[cfg(not(target_arch = "x86_64"))]
unsafe fn close_range_syscall(first: libc::c_uint, last: libc::c_uint) -> isize {
    // SAFETY: as the caller promised.
    unsafe { libc::syscall(libc::SYS_close_range, first, last, 0 as libc::c_uint) as isize }
}

#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn close_range(first: libc::c_uint, last: libc::c_uint) {
    // SAFETY: close_range takes two descriptor numbers and flags; the caller owns every
    // descriptor in the range (see close_all_except).
    let ret = unsafe { close_range_syscall(first, last) };
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
