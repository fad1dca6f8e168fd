//! `Barrier`: parties wait until all have arrived.

use std::fmt;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;

use super::error::{BarrierTimeoutError, BrokenBarrier};
use super::lock::{Acquired, CellGuard, LockCell, deadline_after};
use super::shim::{self, FutexWait};
use crate::atomic::{AtomicU32, AtomicU64, Ordering};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Kind, NO_TYPE_TAG, Shared};

/// The shared state of a barrier. Everything but `seq` is read and written with the internal
/// lock held; `seq` (the futex word) advances on every change a waiter must notice: the barrier
/// passing, breaking, or being reset.
///
/// Each passage of the barrier is a generation. A waiter remembers its generation; when the
/// generation has moved on, bit `generation % HISTORY_LEN` of `history` tells whether that generation passed (0)
/// or was broken by a reset (1).
#[repr(C)]
pub(crate) struct BarrierState {
    lock: LockCell,
    seq: AtomicU32,
    /// Written once by the creator; every handle keeps its own copy, read when it was opened.
    parties: AtomicU32,
    count: AtomicU32,
    generation: AtomicU32,
    broken: AtomicU32,
    history: AtomicU64,
}

/// Holds the internal lock; a death of its previous holder breaks the barrier.
type Held<'a> = CellGuard<'a>;

/// `BarrierState::broken`: the barrier can be passed.
const INTACT: u32 = 0;
/// `BarrierState::broken`: every wait fails until a reset.
const BROKEN: u32 = 1;

/// How many generations `BarrierState::history` remembers (one bit each).
const HISTORY_LEN: u32 = u64::BITS;

/// The bit of `BarrierState::history` that records `generation`.
fn history_bit(generation: u32) -> u64 {
    1 << (generation % HISTORY_LEN)
}

/// Wake every sleeper.
const WAKE_ALL: u32 = u32::MAX;

impl BarrierState {
    /// # Safety
    /// `this` is fresh, aligned, writable memory for a `BarrierState`.
    pub(crate) unsafe fn init(this: *mut BarrierState, parties: u32) -> std::io::Result<()> {
        // SAFETY: forwarded from the caller, field by field.
        unsafe {
            LockCell::init(&raw mut (*this).lock, false)?;
            (&raw mut (*this).seq).write(AtomicU32::new(0));
            (&raw mut (*this).parties).write(AtomicU32::new(parties));
            (&raw mut (*this).count).write(AtomicU32::new(0));
            (&raw mut (*this).generation).write(AtomicU32::new(0));
            (&raw mut (*this).broken).write(AtomicU32::new(INTACT));
            (&raw mut (*this).history).write(AtomicU64::new(0));
        }
        Ok(())
    }

    /// Takes the internal lock, waiting until `deadline`. `Timeout` if the deadline passed,
    /// `Broken` if the lock is broken (its shared state overwritten): the barrier cannot be
    /// used then.
    fn hold(&self, deadline: Option<Instant>) -> Result<Held<'_>, BarrierTimeoutError> {
        let (held, a) = Held::lock(&self.lock, deadline)
            .map_err(|_| BarrierTimeoutError::Broken)?
            .ok_or(BarrierTimeoutError::Timeout)?;
        if a == Acquired::OwnerDied {
            // A party died inside the barrier's critical section: the counts cannot be trusted.
            self.break_locked(&held);
            held.mark_consistent();
        }
        Ok(held)
    }

    /// Whether the barrier is broken; read with the lock held.
    fn broken(&self, _held: &Held<'_>) -> bool {
        self.broken.load(Ordering::Relaxed) != INTACT
    }

    fn bump(&self, _held: &Held<'_>) {
        self.seq.fetch_add(1, Ordering::Release);
        shim::wake(&self.seq, WAKE_ALL);
    }

    fn break_locked(&self, held: &Held<'_>) {
        self.broken.store(BROKEN, Ordering::Relaxed);
        self.bump(held);
    }

    fn outcome(&self, generation: u32) -> Result<(), BarrierTimeoutError> {
        if self.history.load(Ordering::Relaxed) & history_bit(generation) != 0 {
            Err(BarrierTimeoutError::Broken)
        } else {
            Ok(())
        }
    }

    fn end_generation(&self, broken: bool, held: &Held<'_>) {
        let generation = self.generation.load(Ordering::Relaxed);
        let bit = history_bit(generation);
        let h = self.history.load(Ordering::Relaxed);
        self.history
            .store(if broken { h | bit } else { h & !bit }, Ordering::Relaxed);
        self.generation
            .store(generation.wrapping_add(1), Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        self.bump(held);
    }

    /// Arrives and waits; the arrival index (0 for the first), or why not: `Timeout` when
    /// `deadline` passed (which breaks the barrier if this party had arrived), `Broken` when
    /// the barrier is or became broken otherwise.
    pub(crate) fn wait(
        &self,
        parties: u32,
        deadline: Option<Instant>,
    ) -> Result<u32, BarrierTimeoutError> {
        let held = self.hold(deadline)?;
        if self.broken(&held) {
            return Err(BarrierTimeoutError::Broken);
        }
        let index = self.count.fetch_add(1, Ordering::Relaxed);
        if index.wrapping_add(1) == parties {
            self.end_generation(false, &held);
            return Ok(index);
        }
        let generation = self.generation.load(Ordering::Relaxed);
        let mut seen = self.seq.load(Ordering::Relaxed);
        drop(held);
        loop {
            let r = shim::wait(&self.seq, seen, deadline);
            let held = self.hold(deadline)?;
            if self.generation.load(Ordering::Relaxed) != generation {
                return self.outcome(generation).map(|()| index);
            }
            if self.broken(&held) {
                return Err(BarrierTimeoutError::Broken);
            }
            if r == FutexWait::TimedOut || deadline.is_some_and(|d| Instant::now() >= d) {
                self.break_locked(&held);
                return Err(BarrierTimeoutError::Timeout);
            }
            seen = self.seq.load(Ordering::Relaxed);
        }
    }

    pub(crate) fn abort(&self) {
        if let Ok(held) = self.hold(None) {
            self.break_locked(&held);
        }
    }

    pub(crate) fn reset(&self) {
        let Ok(held) = self.hold(None) else {
            return;
        };
        let waiting = self.count.load(Ordering::Relaxed) > 0;
        if waiting {
            self.end_generation(true, &held);
        }
        self.broken.store(INTACT, Ordering::Relaxed);
        self.count.store(0, Ordering::Relaxed);
        if !waiting {
            self.bump(&held);
        }
    }

    pub(crate) fn n_waiting(&self) -> u32 {
        let Ok(held) = self.hold(None) else {
            return 0;
        };
        if self.broken(&held) {
            0
        } else {
            self.count.load(Ordering::Relaxed)
        }
    }

    pub(crate) fn is_broken(&self) -> bool {
        let Ok(held) = self.hold(None) else {
            return true;
        };
        self.broken(&held)
    }
}

/// A barrier for a fixed number of parties across processes (Python's
/// `multiprocessing.Barrier`).
///
/// Each party calls [`wait`](Self::wait); all return once `parties` have arrived, each with a
/// distinct arrival index (`0..parties`). The barrier then resets itself for the next round.
///
/// It can break: [`abort`](Self::abort), a party's timed wait running out, or a party dying
/// while holding the barrier's internal lock puts it in the broken state, and every waiting and
/// future `wait` fails with [`BrokenBarrier`] until [`reset`](Self::reset). A party that dies
/// before arriving cannot be told from a slow one: give waits a timeout (here, or
/// [`with_timeout`](Self::with_timeout) for every wait) so the others fail instead of waiting
/// forever.
///
/// # Differences from Python
/// - No `action` callable: the party with index `parties - 1` (the last to arrive) can run it.
///
/// # Examples
///
/// ```
/// let barrier = multiproc::Barrier::new(2)?;
/// let b2 = barrier.clone();
/// let t = std::thread::spawn(move || b2.wait().unwrap());
/// let mine = barrier.wait().unwrap();
/// let theirs = t.join().unwrap();
/// assert_eq!(mine + theirs, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Barrier {
    state: Shared<BarrierState>,
    /// The party count, read once when this handle was made: a peer overwriting the shared
    /// copy cannot change it under us.
    parties: u32,
    default_timeout: Option<Duration>,
}

impl Barrier {
    /// Creates a barrier for `parties` parties.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for 0 parties; [`ErrorKind::Io`] if the shared segment
    /// cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Barrier::new(3)?;
    /// assert_eq!(b.parties(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(parties: u32) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a barrier needs at least one party",
            ));
        }
        let state = Shared::create(Kind::Barrier, NO_TYPE_TAG, 0, |p| {
            // SAFETY: `create` passes fresh, aligned memory sized for the state.
            unsafe { BarrierState::init(p, parties) }
        })?;
        Ok(Barrier {
            state,
            parties,
            default_timeout: None,
        })
    }

    /// Sets the timeout [`wait`](Self::wait) uses (Python's `Barrier(..., timeout=)`); this
    /// handle only.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let b = multiproc::Barrier::new(2)?.with_timeout(Duration::from_millis(1));
    /// assert!(b.wait().is_err());
    /// assert!(b.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_timeout(mut self, timeout: Duration) -> Barrier {
        self.default_timeout = Some(timeout);
        self
    }

    /// Arrives and waits for the other parties (up to the default timeout, if set).
    ///
    /// # Errors
    /// [`BrokenBarrier`] if the barrier is or becomes broken, or the default timeout passes
    /// (which breaks it for everyone, as in Python; [`wait_timeout`](Self::wait_timeout) tells
    /// the two apart).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1)?;
    /// assert_eq!(b.wait(), Ok(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) -> Result<u32, BrokenBarrier> {
        self.state
            .wait(self.parties, self.default_timeout.and_then(deadline_after))
            .map_err(BrokenBarrier::from)
    }

    /// Arrives and waits at most `timeout` (not the default timeout); running out breaks the
    /// barrier for everyone. A timeout too large for an `Instant` waits forever.
    ///
    /// # Errors
    /// [`BarrierTimeoutError::Timeout`] if the time ran out (the barrier is broken now);
    /// [`BarrierTimeoutError::Broken`] if the barrier is or becomes broken otherwise.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::BarrierTimeoutError;
    /// let b = multiproc::Barrier::new(2)?;
    /// assert_eq!(b.wait_timeout(Duration::from_millis(1)), Err(BarrierTimeoutError::Timeout));
    /// assert!(b.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32, BarrierTimeoutError> {
        self.state.wait(self.parties, deadline_after(timeout))
    }

    /// Arrives and waits until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1)?;
    /// assert_eq!(b.wait_deadline(std::time::Instant::now()), Ok(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> Result<u32, BarrierTimeoutError> {
        self.state.wait(self.parties, Some(deadline))
    }

    /// Breaks the barrier: current and future waits fail until [`reset`](Self::reset).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Barrier::new(2)?;
    /// b.abort();
    /// assert!(b.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn abort(&self) {
        self.state.abort();
    }

    /// Returns the barrier to its initial state; parties waiting now fail with
    /// [`BrokenBarrier`].
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Barrier::new(1)?;
    /// b.abort();
    /// b.reset();
    /// assert_eq!(b.wait(), Ok(0));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn reset(&self) {
        self.state.reset();
    }

    /// The number of parties.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4)?.parties(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn parties(&self) -> u32 {
        self.parties
    }

    /// How many parties are waiting now (0 when broken).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Barrier::new(4)?.n_waiting(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn n_waiting(&self) -> u32 {
        self.state.n_waiting()
    }

    /// Whether the barrier is broken.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::Barrier::new(4)?.is_broken());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "broken")]
    pub fn is_broken(&self) -> bool {
        self.state.is_broken()
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties())
            .field("n_waiting", &self.n_waiting())
            .field("broken", &self.is_broken())
            .finish()
    }
}

shared_handle!(
    /// A barrier travels as its segment's descriptor and its default timeout; the number of
    /// parties is read back from the segment and checked.
    [] Barrier, state, Option<Duration>,
    |this| Ok(this.default_timeout),
    |fd, default_timeout| {
        let state: Shared<BarrierState> = Shared::open(fd, &[Kind::Barrier], 0, 0)?;
        let parties = state.parties.load(Ordering::Relaxed);
        if parties == 0 {
            return Err(Error::new(
                ErrorKind::BadHeader,
                "the barrier's segment says it has 0 parties",
            ));
        }
        Ok(Barrier {
            state,
            parties,
            default_timeout,
        })
    },
);
