//! The only module that calls the operating system directly.
//!
//! Everything here is a thin wrapper over one system call, or a small group of them, that returns
//! `std::io::Result` and retries `EINTR` where the call is restartable. The rest of the crate goes
//! through these functions and never names `libc` or `rustix` itself.
//!
//! Where std already wraps a call, std does it (opening files, socket pairs, duplicating
//! descriptors, hard links, process ids). What std lacks goes through rustix's safe wrappers
//! (descriptor passing, eventfd, pidfds, memfd and seals, futexes, prctl). libc is left for what
//! no safe wrapper covers: fork and `_exit`, mappings, signal handlers, the loader's tables,
//! poll(2) over libc's `pollfd`, and calls on bare descriptor numbers. See
//! docs/architecture.md, "sys: one door to the OS", for the measurements behind the choice.
//!
//! By area: [`fds`] (descriptors), [`socket`] (socket pairs and SCM_RIGHTS),
//! [`poll`](mod@poll) (poll and eventfd), [`process`] (ids, waiting, signals), [`mem`] (memfd,
//! shm, mappings), [`futex`] and `robust` (waiting on shared words, the robust lock), [`image`]
//! (the program image), [`overflow`] (stack overflows before `main`), [`random`] (kernel
//! randomness).

use std::io;

mod fds;
mod futex;
mod image;
mod mem;
mod overflow;
mod poll;
mod process;
mod random;
mod robust;
mod socket;

pub(crate) use fds::*;
#[cfg(test)]
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use futex::monotonic_timespec;
#[cfg_attr(loom, allow(unused_imports))]
pub(crate) use futex::{FutexWait, LockFailed, Locked, RobustMutex, futex_wait, futex_wake};
pub(crate) use image::*;
pub(crate) use mem::*;
pub(crate) use overflow::*;
pub(crate) use poll::*;
pub(crate) use process::*;
pub(crate) use random::*;
pub(crate) use socket::*;

/// Signal numbers used by the crate.
pub(crate) const SIGKILL: i32 = libc::SIGKILL;
/// See [`SIGKILL`].
pub(crate) const SIGTERM: i32 = libc::SIGTERM;
/// See [`SIGKILL`].
pub(crate) const SIGINT: i32 = libc::SIGINT;
/// See [`SIGKILL`].
pub(crate) const SIGCHLD: i32 = libc::SIGCHLD;

/// Turns a `-1`-means-error return value of a libc call into an `io::Result`.
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

/// `EINVAL`: what the kernel answers for an argument it cannot use.
fn einval() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

/// `pid` as rustix's pid type, for a call about one process (`EINVAL` for zero or less, which
/// would name a process group, or every process we may signal).
fn one_pid(pid: i32) -> io::Result<rustix::process::Pid> {
    if pid <= 0 {
        return Err(einval());
    }
    rustix::process::Pid::from_raw(pid).ok_or_else(einval)
}

/// `signal` as rustix's signal type (`EINVAL` for a number that names no signal).
fn signal(signal: i32) -> io::Result<rustix::process::Signal> {
    rustix::process::Signal::from_named_raw(signal).ok_or_else(einval)
}
