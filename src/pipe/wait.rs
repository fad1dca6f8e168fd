//! Waiting for the first of several connections or processes: Python's
//! `multiprocessing.connection.wait`.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use super::Connection;
use crate::error::{Error, Result};
use crate::sys;

/// Something [`wait`] can wait for: a [`Connection`] (ready when a message or the end of the
/// stream can be received) or a process [`Sentinel`] (ready when the process has ended).
///
/// # Examples
///
/// ```
/// use multiproc::Waitable;
/// let (a, b) = multiproc::pipe::<u8>().unwrap();
/// assert!(!b.ready_now()); // nothing buffered yet
/// a.send(&1).unwrap();
/// assert!(b.wait_fd().is_some()); // wait() polls this descriptor
/// assert_eq!(multiproc::wait(&[&b], None).unwrap(), [0]);
/// ```
pub trait Waitable {
    /// Ready without waiting (for example, a message already buffered in user space).
    fn ready_now(&self) -> bool;
    /// The descriptor that becomes readable when the object may have become ready; `None`
    /// if there is nothing to wait on (then `ready_now` decides).
    fn wait_fd(&self) -> Option<BorrowedFd<'_>>;
}

impl<S, R> Waitable for Connection<S, R> {
    fn ready_now(&self) -> bool {
        match self.recv.try_lock() {
            Ok(mut st) => st.broken.is_some() || st.eof || st.has_frame(),
            // Another thread is receiving right now: let the descriptor decide.
            Err(_) => false,
        }
    }

    fn wait_fd(&self) -> Option<BorrowedFd<'_>> {
        self.readable.then(|| self.fd.as_fd())
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
        // A process already reaped has no pidfd: it has ended.
        self.pidfd.is_none()
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
        let mut index = Vec::with_capacity(objects.len());
        let mut fds = Vec::with_capacity(objects.len());
        for (i, o) in objects.iter().enumerate() {
            if let Some(fd) = o.wait_fd() {
                index.push(i);
                fds.push(sys::pollfd(fd, sys::POLLIN));
            }
        }
        if sys::poll(&mut fds, deadline).map_err(|e| Error::io("wait failed", e))? == 0 {
            return Ok(Vec::new());
        }
        let ready: Vec<usize> = fds
            .iter()
            .zip(&index)
            .filter(|(p, _)| p.revents != 0)
            .map(|(_, &i)| i)
            .collect();
        if !ready.is_empty() {
            return Ok(ready);
        }
    }
}
