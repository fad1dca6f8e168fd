//! `Event`: a flag processes can wait for.

use std::fmt;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;

use super::lock::deadline_after;
use super::shim;
use super::wait_word::{Slept, WaitWord};
use crate::atomic::Ordering;
use crate::error::Result;
use crate::shm::{Kind, Shared};

/// The flag bit of the event's word; the bits above it count the `set`s that turned it on.
const FLAG: u32 = 1;
/// What one flag-raising `set` adds to the generation bits.
const GENERATION: u32 = 2;

/// The shared state of an event: `generation << 1 | flag`, the futex word of a [`WaitWord`].
///
/// Every `set` that turns the flag on also advances the generation, so a waiter that saw the
/// word change knows a `set` happened while it waited, even if a `clear` followed. A waiter
/// sleeps through [`WaitWord::sleep`] while the word is the one it first saw (re-read with a
/// read-modify-write); `set` changes the word with a read-modify-write and wakes everyone.
#[repr(C)]
pub(crate) struct EventState {
    word: WaitWord,
}

impl EventState {
    pub(crate) fn new() -> EventState {
        EventState {
            word: WaitWord::new(0),
        }
    }

    pub(crate) fn is_set(&self) -> bool {
        self.word.word().load(Ordering::Acquire) & FLAG == FLAG
    }

    pub(crate) fn set(&self) {
        let word = self.word.word();
        let mut w = word.load(Ordering::Relaxed);
        loop {
            if w & FLAG == FLAG {
                return;
            }
            match word.compare_exchange_weak(
                w,
                w.wrapping_add(GENERATION) | FLAG,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        self.word.wake_all();
    }

    pub(crate) fn clear(&self) {
        self.word.word().fetch_and(!FLAG, Ordering::AcqRel);
    }

    /// True when the flag is set or a `set` happened while waiting; false at the deadline.
    pub(crate) fn wait(&self, deadline: Option<Instant>) -> bool {
        let word = self.word.word();
        let seen = word.load(Ordering::Acquire);
        if seen & FLAG == FLAG || shim::spin_until(|| word.load(Ordering::Acquire) != seen) {
            return true;
        }
        loop {
            let slept = self.word.sleep(deadline, |w| {
                (w.fetch_add(0, Ordering::AcqRel) == seen).then_some(seen)
            });
            match slept {
                Slept::NotNeeded => return true,
                Slept::Woken => {}
                Slept::TimedOut => return word.load(Ordering::Acquire) != seen,
            }
        }
    }
}

/// Why [`Event::wait_timeout`] or [`Event::wait_deadline`] returned without the flag.
///
/// # Examples
///
/// ```
/// let ev = multiproc::Event::new()?;
/// let r = ev.wait_timeout(std::time::Duration::ZERO);
/// assert_eq!(r, Err(multiproc::EventTimeoutError::Timeout));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventTimeoutError {
    /// The flag was not set (and no `set` happened) before the deadline.
    Timeout,
}

timeout_only!(EventTimeoutError, "timed out waiting for the event");

/// A flag shared between processes, that processes can wait for (Python's
/// `multiprocessing.Event`).
///
/// [`set`](Self::set) turns it on and wakes every waiter; [`clear`](Self::clear) turns it off;
/// [`wait`](Self::wait) returns once it is on. A waiter that was waiting when `set` was called
/// returns even if the flag was cleared again before it woke (as in Python's `threading`).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let ev = multiproc::Event::new()?;
/// assert!(ev.wait_timeout(Duration::from_millis(1)).is_err());
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

    /// Waits at most `timeout` for the flag (Python's `wait(timeout)`: its `True` is `Ok(())`,
    /// its `False` is `Err(Timeout)`). `Ok` also when a `set` happened while waiting and a
    /// `clear` followed before this waiter looked.
    ///
    /// # Errors
    /// [`EventTimeoutError::Timeout`] if the flag was not set in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let ev = multiproc::Event::new()?;
    /// assert_eq!(ev.wait_timeout(Duration::ZERO), Err(multiproc::EventTimeoutError::Timeout));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> std::result::Result<(), EventTimeoutError> {
        EventTimeoutError::unless(self.state.wait(deadline_after(timeout)))
    }

    /// Waits until `deadline` at the latest for the flag.
    ///
    /// # Errors
    /// [`EventTimeoutError::Timeout`] if the flag was not set in time.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Instant;
    /// let ev = multiproc::Event::new()?;
    /// ev.set();
    /// ev.wait_deadline(Instant::now())?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> std::result::Result<(), EventTimeoutError> {
        EventTimeoutError::unless(self.state.wait(Some(deadline)))
    }
}

impl fmt::Debug for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Event")
            .field("set", &self.is_set())
            .finish()
    }
}

shared_handle!(
    /// An event travels as its segment's descriptor alone.
    [] Event, state, (),
    |_| Ok(()),
    |fd, ()| Shared::open(fd, &[Kind::Event], 0, 0).map(|state| Event { state }),
);
