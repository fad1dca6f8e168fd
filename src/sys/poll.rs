//! Waiting on descriptors: poll(2) with deadlines, and the eventfd that wakes a poller.
//!
//! poll(2) stays on libc: the callers fill and read libc's `pollfd` records (`revents` is a
//! field they test), and the one `unsafe` block passes a slice's pointer and length. The
//! eventfd is rustix's.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::Instant;

use rustix::event::EventfdFlags;
use rustix::io::Errno;

use super::{cvt, read};

/// Readiness flags so that callers need not name libc.
pub(crate) const POLLIN: i16 = libc::POLLIN;
/// See [`POLLIN`].
pub(crate) const POLLOUT: i16 = libc::POLLOUT;

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

/// An eventfd used to wake a thread blocked in poll(2): close-on-exec and non-blocking.
/// See eventfd(2).
pub(crate) fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

/// Adds one to an eventfd's counter, waking its poller.
pub(crate) fn eventfd_signal(fd: BorrowedFd<'_>) -> io::Result<()> {
    let one = 1u64.to_ne_bytes();
    loop {
        match rustix::io::write(fd, &one) {
            Ok(_) => return Ok(()),
            Err(Errno::INTR) => continue,
            // The counter is saturated: the poller is certainly going to wake.
            Err(Errno::AGAIN) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Resets an eventfd's counter to zero (it is non-blocking: an empty counter is fine).
pub(crate) fn eventfd_drain(fd: BorrowedFd<'_>) {
    let mut buf = [0u8; 8];
    let _ = read(fd, &mut buf);
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::time::Duration;

    use super::*;

    #[test]
    fn an_eventfd_wakes_its_poller_until_drained() {
        let fd = eventfd().unwrap();
        let soon = Some(Instant::now() + Duration::from_millis(5));
        assert!(
            !wait_fd(fd.as_fd(), POLLIN, soon).unwrap(),
            "nothing signalled yet"
        );
        eventfd_signal(fd.as_fd()).unwrap();
        eventfd_signal(fd.as_fd()).unwrap();
        assert!(wait_fd(fd.as_fd(), POLLIN, Some(Instant::now())).unwrap());
        eventfd_drain(fd.as_fd());
        let soon = Some(Instant::now() + Duration::from_millis(5));
        assert!(
            !wait_fd(fd.as_fd(), POLLIN, soon).unwrap(),
            "one drain empties it"
        );
    }

    #[test]
    fn a_poll_deadline_is_never_cut_short() {
        let fd = eventfd().unwrap();
        let start = Instant::now();
        let deadline = start + Duration::from_micros(2_500);
        let mut pfd = [pollfd(fd.as_fd(), POLLIN)];
        assert_eq!(poll(&mut pfd, Some(deadline)).unwrap(), 0);
        assert!(Instant::now() >= deadline);
    }
}
