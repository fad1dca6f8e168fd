//! Waiting for the first of several connections or processes: Python's
//! `multiprocessing.connection.wait`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::Connection;
use crate::error::{Error, Result};
use crate::sys;

/// Something [`wait`] can wait for: a [`Connection`] (ready when a whole message, the end of
/// the stream or a broken stream can be received; the write end of a [`simplex`](crate::simplex)
/// pipe, which receives nothing, is ready when its reader is gone) or a process [`Sentinel`]
/// (ready when the process has ended).
///
/// [`wait`] sleeps until the descriptor of some object signals, then asks every object's
/// [`ready_now`](Self::ready_now): that answer decides, so a partial message wakes `wait` but
/// is not reported.
///
/// # Examples
///
/// ```
/// use multiproc::Waitable;
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// assert!(!b.ready_now()); // nothing has arrived yet
/// a.send(&1).unwrap();
/// assert!(b.ready_now()); // reads what has arrived: one whole message
/// assert!(b.wait_fd().is_some()); // wait() polls this descriptor
/// assert!(!b.ready_on_hangup());
/// assert_eq!(multiproc::wait(&[&b], None).unwrap(), [0]);
/// ```
pub trait Waitable {
    /// Ready without waiting. May read what has already arrived (a connection does, into its
    /// own buffer), never blocks.
    fn ready_now(&self) -> bool;
    /// The descriptor that signals when the object may have become ready; `None` if there is
    /// nothing to wait on (then `ready_now` decides).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;
    /// True if the descriptor signals by hanging up (its peer is gone) rather than by becoming
    /// readable, as the write end of a simplex pipe does. False unless overridden.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::Waitable;
    /// let (reader, writer) = multiproc::simplex::<u8>().unwrap();
    /// assert!(writer.ready_on_hangup() && !reader.ready_on_hangup());
    /// ```
    fn ready_on_hangup(&self) -> bool {
        false
    }
}

/// True if `fd` signals `events` (or a hang-up or error) right now.
fn signals_now(fd: BorrowedFd<'_>, events: i16) -> bool {
    let mut pfd = [sys::pollfd(fd, events)];
    sys::poll(&mut pfd, Some(Instant::now())).is_ok_and(|n| n > 0)
}

impl<S, R> Waitable for Connection<S, R> {
    fn ready_now(&self) -> bool {
        if !self.readable {
            // Nothing to receive: ready once the reader is gone (a send would fail).
            return self.writable && signals_now(self.fd.as_fd(), 0);
        }
        match self.try_lend() {
            Some(mut st) => {
                // Take in what has arrived, stopping at the first whole frame.
                while !(st.broken.is_some() || st.eof || st.has_frame()) {
                    match self.read_once(&mut st, true) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(_) => return true,
                    }
                }
                st.broken.is_some() || st.eof || st.has_frame()
            }
            // Another thread is receiving right now: let the descriptor decide.
            None => signals_now(self.fd.as_fd(), sys::POLLIN),
        }
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        (self.readable || self.writable).then(|| self.fd.as_fd())
    }

    fn ready_on_hangup(&self) -> bool {
        !self.readable
    }
}

/// A handle that becomes ready when a process ends — Python's `Process.sentinel`. Get one from
/// [`Process::sentinel`](crate::Process::sentinel).
///
/// # Examples
///
/// ```no_run
/// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
/// multiproc::init();
/// let mut p = multiproc::Process::new(nap, 10);
/// p.start().unwrap();
/// let ready = multiproc::wait(&[&p.sentinel().unwrap()], None).unwrap();
/// assert_eq!(ready, [0]);
/// ```
#[derive(Debug)]
pub struct Sentinel<'a> {
    pub(crate) pidfd: Option<BorrowedFd<'a>>,
}

impl Waitable for Sentinel<'_> {
    fn ready_now(&self) -> bool {
        // A process already reaped has no pidfd: it has ended. Else its pidfd says.
        self.pidfd.is_none_or(|fd| signals_now(fd, sys::POLLIN))
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd
    }
}

/// Waits until at least one of `objects` is ready, or `timeout` passes (`None`: no limit), and
/// returns the indices of the ready ones (empty on timeout).
///
/// # Errors
/// [`ErrorKind::Io`](crate::ErrorKind::Io) if waiting fails.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let (a1, b1) = multiproc::pipe::<u8>().unwrap();
/// let (_a2, b2) = multiproc::pipe::<u8>().unwrap();
/// a1.send(&9).unwrap();
/// let ready = multiproc::wait(&[&b1, &b2], Some(Duration::from_secs(5))).unwrap();
/// assert_eq!(ready, [0]);
/// assert!(multiproc::wait(&[&b2], Some(Duration::from_millis(1))).unwrap().is_empty());
/// ```
pub fn wait(objects: &[&dyn Waitable], timeout: Option<Duration>) -> Result<Vec<usize>> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let now: Vec<usize> = (0..objects.len())
            .filter(|&i| objects[i].ready_now())
            .collect();
        if !now.is_empty() {
            return Ok(now);
        }
        let mut fds: Vec<_> = objects
            .iter()
            .filter_map(|o| {
                let events = if o.ready_on_hangup() { 0 } else { sys::POLLIN };
                o.wait_fd().map(|fd| sys::pollfd(fd, events))
            })
            .collect();
        // Something signalled: back to the top, where `ready_now` decides (a partial message
        // has been read in by then, so the next poll sleeps until more arrives).
        if sys::poll(&mut fds, deadline).map_err(|e| Error::io("wait failed", e))? == 0 {
            return Ok(Vec::new());
        }
    }
}
