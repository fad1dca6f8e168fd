//! `Event`: a flag processes can wait for.

use std::fmt;
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::handles::{Handle, handle_serde};

use super::lock::deadline_after;
use super::shim::{self, AtomicU32, FutexWait, Ordering};
use crate::error::Result;
use crate::shm::{Kind, Shared};

/// The shared state of an event.
///
/// `word` is `generation << 1 | flag`: every `set` that turns the flag on also advances the
/// generation, so a waiter that saw the word change knows a `set` happened while it waited, even
/// if a `clear` followed. Waiters register in `sleepers` before their final read-modify-write of
/// `word`; `set` reads `sleepers` with a read-modify-write after changing `word` (the same pairing
/// as the semaphore's), and wakes everyone.
#[repr(C)]
pub(crate) struct EventState {
    word: AtomicU32,
    sleepers: AtomicU32,
}

impl EventState {
    pub(crate) fn new() -> EventState {
        EventState {
            word: AtomicU32::new(0),
            sleepers: AtomicU32::new(0),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.word.load(Ordering::Acquire) & 1 == 1
    }

    pub(crate) fn set(&self) {
        let mut w = self.word.load(Ordering::Relaxed);
        loop {
            if w & 1 == 1 {
                return;
            }
            match self.word.compare_exchange_weak(
                w,
                w.wrapping_add(2) | 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        if self.sleepers.fetch_add(0, Ordering::AcqRel) > 0 {
            shim::wake(&self.word, u32::MAX);
        }
    }

    pub(crate) fn clear(&self) {
        self.word.fetch_and(!1, Ordering::AcqRel);
    }

    /// True when the flag is set or a `set` happened while waiting; false at the deadline.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        let seen = self.word.load(Ordering::Acquire);
        if seen & 1 == 1 || shim::spin_until(|| self.word.load(Ordering::Acquire) != seen) {
            return true;
        }
        self.sleepers.fetch_add(1, Ordering::AcqRel);
        let set = loop {
            if self.word.fetch_add(0, Ordering::AcqRel) != seen {
                break true;
            }
            if shim::wait(&self.word, seen, deadline) == FutexWait::TimedOut {
                break self.word.load(Ordering::Acquire) != seen;
            }
        };
        self.sleepers.fetch_sub(1, Ordering::AcqRel);
        set
    }
}

/// A flag shared between processes, that processes can wait for (Python's
/// `multiprocessing.Event`).
///
/// [`set`](Self::set) turns it on and wakes every waiter; [`clear`](Self::clear) turns it off;
/// [`wait`](Self::wait) returns once it is on. A waiter that was waiting when `set` was called
/// returns `true` even if the flag was cleared again before it woke (as in Python's `threading`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let ev = multiproc::Event::new()?;
/// assert!(!ev.wait_timeout(Duration::from_millis(1)));
/// ev.set();
/// assert!(ev.is_set());
/// ev.wait();
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Event {
    state: Shared<EventState>,
}

impl Event {
    /// The segment's descriptor (tests reopen it as other objects).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.state.fd()
    }
    /// Creates an event, initially clear.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the shared segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::Event::new()?.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Event> {
        let state = Shared::create(Kind::Event, 0, 0, |p: *mut EventState| {
            // SAFETY: `create` passes fresh, aligned memory sized for the state.
            unsafe { p.write(EventState::new()) };
            Ok(())
        })?;
        Ok(Event { state })
    }

    /// Whether the flag is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let ev = multiproc::Event::new()?;
    /// ev.set();
    /// assert!(ev.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_set(&self) -> bool {
        self.state.is_set()
    }

    /// Turns the flag on and wakes every waiter.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::Event::new()?.set();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self) {
        self.state.set();
    }

    /// Turns the flag off.
    ///
    /// # Examples
    ///
    /// ```
    /// let ev = multiproc::Event::new()?;
    /// ev.set();
    /// ev.clear();
    /// assert!(!ev.is_set());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear(&self) {
        self.state.clear();
    }

    /// Waits until the flag is on.
    ///
    /// # Examples
    ///
    /// ```
    /// let ev = multiproc::Event::new()?;
    /// ev.set();
    /// ev.wait();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) {
        self.state.wait(None);
    }

    /// Waits at most `timeout` for the flag; returns whether it was set (Python's
    /// `wait(timeout)`).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ev = multiproc::Event::new()?;
    /// assert!(!ev.wait_timeout(Duration::ZERO));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.state.wait(deadline_after(timeout))
    }

    /// Waits until `deadline` at the latest for the flag; returns whether it was set.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// let ev = multiproc::Event::new()?;
    /// ev.set();
    /// assert!(ev.wait_deadline(Instant::now()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> bool {
        self.state.wait(Some(deadline))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

/// An event travels as its segment's descriptor alone.
impl Handle for Event {
    type Wire = ();
    fn descriptor(&self) -> BorrowedFd<'_> {
        self.state.fd().as_fd()
    }
    fn wire(&self) -> std::result::Result<(), String> {
        Ok(())
    }
    fn import(fd: OwnedFd, (): ()) -> Result<Self> {
        Shared::open(fd, &[Kind::Event], 0, 0).map(|state| Event { state })
    }
}
handle_serde!([] Event);
