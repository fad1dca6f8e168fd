//! `Lock` and `RLock`: robust locks in shared memory.

use std::borrow::Borrow;
use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;

use super::error::{
    LockError, LockResult, LockTimeoutError, LockTimeoutResult, OwnerDied, Recover, TryLockError,
    TryLockResult, sealed,
};
use super::shim::{LockFailed, Locked, Mutex};
use crate::atomic::{AtomicU32, Ordering};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Kind, NO_TYPE_TAG, Shared};

/// A robust mutex plus the "owner died and nobody declared the state consistent yet" flag.
/// Placed at the start of every segment that has a lock (a `Lock`, `RLock`, `Value`, `Array`,
/// and the internals of other primitives).
#[repr(C)]
pub(crate) struct LockCell {
    mutex: Mutex,
    /// [`OWNER_DIED`] or [`CONSISTENT`].
    owner_died: AtomicU32,
}

/// `LockCell::owner_died`: nobody died holding the lock since it was last declared consistent.
const CONSISTENT: u32 = 0;
/// `LockCell::owner_died`: an owner died holding the lock; nobody declared the state
/// consistent since.
const OWNER_DIED: u32 = 1;

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    Clean,
    /// Acquired; an owner died holding it and the state was not declared consistent since.
    OwnerDied,
}

/// The error of a (non-recursive) lock that this thread holds already.
#[cold]
fn held_by_this_thread() -> Error {
    Error::os(
        "the lock is already held by this thread (or its shared state was overwritten with \
         this thread's id)",
        LockFailed::deadlock_os_error(),
    )
}

/// The error of a lock whose shared state makes no sense.
#[cold]
fn corrupt(e: std::io::Error) -> Error {
    Error::os("the lock cannot be used: its shared state is corrupt", e)
}

impl LockCell {
    /// Initializes a cell in place.
    ///
    /// # Safety
    /// `this` is writable, aligned memory for a `LockCell` that nobody uses yet.
    pub(crate) unsafe fn init(this: *mut LockCell, recursive: bool) -> std::io::Result<()> {
        // SAFETY: the caller's contract covers both fields.
        unsafe {
            Mutex::init(&raw mut (*this).mutex, recursive)?;
            (&raw mut (*this).owner_died).write(AtomicU32::new(CONSISTENT));
        }
        Ok(())
    }

    /// What a lock attempt means: acquired (and how), not available (`Ok(None)`), or a fault
    /// of a lock that cannot be used, as a typed error (never a panic: a peer that scribbles
    /// over the mutex can cause any of them). Inlined so that the uncontended path of every
    /// handle, in any crate, folds to the compare-and-swap and one flag test.
    #[inline]
    fn settle(&self, r: Result<Locked, LockFailed>) -> Result<Option<Acquired>, Error> {
        match r {
            Ok(Locked::Clean) if self.owner_died.load(Ordering::Relaxed) == CONSISTENT => {
                Ok(Some(Acquired::Clean))
            }
            Ok(_) => {
                self.owner_died.store(OWNER_DIED, Ordering::Relaxed);
                Ok(Some(Acquired::OwnerDied))
            }
            Err(LockFailed::Busy) => Ok(None),
            Err(LockFailed::Deadlock) => Err(held_by_this_thread()),
            Err(LockFailed::Os(e)) => Err(corrupt(e)),
        }
    }

    /// Acquires, waiting until `deadline`; `Ok(None)` if it passed.
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Option<Acquired>, Error> {
        self.lock_as(deadline, false)
    }

    /// As [`lock`](Self::lock), for a recursive lock when `recursive` (the handle's own
    /// knowledge, never the segment's).
    #[inline]
    pub(crate) fn lock_as(
        &self,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Option<Acquired>, Error> {
        self.settle(self.mutex.lock(deadline, recursive))
    }

    /// Acquires if free; `Ok(None)` if not. A lock this thread holds is not free.
    #[inline]
    pub(crate) fn try_lock(&self) -> Result<Option<Acquired>, Error> {
        self.try_lock_as(false)
    }

    /// As [`try_lock`](Self::try_lock), for a recursive lock when `recursive`.
    #[inline]
    pub(crate) fn try_lock_as(&self, recursive: bool) -> Result<Option<Acquired>, Error> {
        match self.mutex.try_lock(recursive) {
            // Held by this very thread: not free, as for anyone else's hold.
            Err(LockFailed::Deadlock) => Ok(None),
            r => self.settle(r),
        }
    }

    /// Releases.
    ///
    /// # Safety
    /// The calling thread holds the cell's mutex.
    #[inline]
    pub(crate) unsafe fn release(&self) {
        // SAFETY: forwarded from the caller.
        unsafe { self.release_as(false) }
    }

    /// As [`release`](Self::release), one level of a recursive lock when `recursive`.
    ///
    /// # Safety
    /// The calling thread holds the cell's mutex.
    #[inline]
    pub(crate) unsafe fn release_as(&self, recursive: bool) {
        // SAFETY: forwarded from the caller.
        unsafe { self.mutex.unlock(recursive) }
    }

    /// Whether the mutex is held right now, by anyone (this thread included; a broken mutex
    /// counts as held). A snapshot.
    pub(crate) fn is_locked(&self) -> bool {
        self.mutex.is_held()
    }

    /// Declares the protected state consistent. Called with the mutex held.
    pub(crate) fn mark_consistent(&self) {
        self.owner_died.store(CONSISTENT, Ordering::Relaxed);
    }

    /// Whether an owner died and the state was not declared consistent since (a snapshot).
    pub(crate) fn owner_died(&self) -> bool {
        self.owner_died.load(Ordering::Relaxed) != CONSISTENT
    }
}

/// Holds a [`LockCell`]'s mutex (one level of it when `RECURSIVE`) and releases it when
/// dropped: the one unlocker under every guard of the crate (a [`LockGuard`], an
/// [`RLockGuard`], a `Value`'s or `Array`'s guard, the barrier's internal lock, a queue side's
/// lock). `C` is how the cell is reached: the cell itself, or a [`Shared`] handle on it when the
/// guard must also tell which segment it locks (a `Condition` checks that).
///
/// It is made only by a successful acquisition ([`lock`](Self::lock),
/// [`try_lock`](Self::try_lock)) or, for a hold taken otherwise, by the `unsafe`
/// [`adopt`](Self::adopt). Guards release in the thread that acquired (the lock records its
/// owner's thread id), so it is not `Send`.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub(crate) struct CellGuard<'a, C: Borrow<LockCell> = LockCell, const RECURSIVE: bool = false> {
    cell: &'a C,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing `&CellGuard` between threads only allows `mark_consistent`, an atomic store,
// and reading the cell's address.
unsafe impl<C: Borrow<LockCell> + Sync, const RECURSIVE: bool> Sync
    for CellGuard<'_, C, RECURSIVE>
{
}

/// An acquisition: `Ok(None)` when the lock was not free (by the deadline), a typed error when
/// it cannot be used.
pub(crate) type Acquisition<G> = Result<Option<(G, Acquired)>, Error>;

impl<'a, C: Borrow<LockCell>, const RECURSIVE: bool> CellGuard<'a, C, RECURSIVE> {
    /// Acquires `cell`, waiting until `deadline` (`None`: as long as it takes).
    #[inline]
    pub(crate) fn lock(cell: &'a C, deadline: Option<Instant>) -> Acquisition<Self> {
        let acquired = cell.borrow().lock_as(deadline, RECURSIVE)?;
        // SAFETY: the calling thread has just acquired `cell` (one level of it).
        Ok(acquired.map(|a| (unsafe { Self::adopt(cell) }, a)))
    }

    /// Acquires `cell` if it is free (for a recursive lock: or held by this thread).
    #[inline]
    pub(crate) fn try_lock(cell: &'a C) -> Acquisition<Self> {
        let acquired = cell.borrow().try_lock_as(RECURSIVE)?;
        // SAFETY: the calling thread has just acquired `cell` (one level of it).
        Ok(acquired.map(|a| (unsafe { Self::adopt(cell) }, a)))
    }

    /// A guard for a hold the calling thread already has.
    ///
    /// # Safety
    /// The calling thread holds `cell`'s mutex (one level of it when `RECURSIVE`), and no
    /// other guard stands for that hold: this one releases it.
    #[inline]
    pub(crate) unsafe fn adopt(cell: &'a C) -> Self {
        CellGuard {
            cell,
            _not_send: PhantomData,
        }
    }

    /// How the guard reaches its cell.
    pub(crate) fn cell(&self) -> &'a C {
        self.cell
    }

    /// Gives up the guard without unlocking: the caller takes over the hold (a condition
    /// variable releases it while it sleeps, then [`adopt`](Self::adopt)s it again).
    pub(crate) fn into_held(self) -> &'a C {
        let cell = self.cell;
        std::mem::forget(self);
        cell
    }

    /// Declares the protected state consistent (the lock is held: this guard holds it).
    pub(crate) fn mark_consistent(&self) {
        self.cell.borrow().mark_consistent();
    }
}

impl<C: Borrow<LockCell>, const RECURSIVE: bool> Drop for CellGuard<'_, C, RECURSIVE> {
    #[inline]
    fn drop(&mut self) {
        // SAFETY: a guard stands for exactly one hold of the calling thread (see `adopt`).
        unsafe { self.cell.borrow().release_as(RECURSIVE) };
    }
}

impl Borrow<LockCell> for Shared<LockCell> {
    fn borrow(&self) -> &LockCell {
        self
    }
}

/// Turns an acquisition into a guard, wrapped in `OwnerDied` if it applies.
pub(crate) fn wrap<G>(acquired: Acquired, guard: G) -> LockResult<G> {
    match acquired {
        Acquired::Clean => Ok(guard),
        Acquired::OwnerDied => Err(LockError::OwnerDied(OwnerDied::new(guard))),
    }
}

/// The result of an acquisition as the caller's guard `G` (made by `guard`) and error `E`:
/// `not_taken()` when the lock was not free, `Broken` when it cannot be used.
#[inline]
fn settle_into<H, G, E: From<LockError<G>>>(
    r: Acquisition<H>,
    not_taken: impl FnOnce() -> E,
    guard: impl FnOnce(H) -> G,
) -> Result<G, E> {
    match r {
        Ok(Some((held, a))) => wrap(a, guard(held)).map_err(E::from),
        Ok(None) => Err(not_taken()),
        Err(e) => Err(E::from(LockError::Broken(e))),
    }
}

/// A blocking acquisition (no deadline) as a guard.
#[inline]
fn settle_lock<H, G>(r: Acquisition<H>, guard: impl FnOnce(H) -> G) -> LockResult<G> {
    // Without a deadline the lock waits; a `None` here can only be a peer's doing.
    settle_into(
        r,
        || {
            LockError::Broken(Error::new(
                ErrorKind::Io,
                "an untimed lock gave up: its shared state is corrupt",
            ))
        },
        guard,
    )
}

/// A blocking acquisition (no deadline) of a cell as a guard made by `guard`.
pub(crate) fn wrap_lock<G>(
    r: Result<Option<Acquired>, Error>,
    guard: impl FnOnce() -> G,
) -> LockResult<G> {
    settle_lock(r.map(|a| a.map(|a| ((), a))), |()| guard())
}

/// `Instant::now() + timeout`, or `None` (forever) when that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The four acquisitions of a [`Lock`] or an [`RLock`] (`RECURSIVE`), written once: each takes
/// the lock's cell and makes the handle's guard from the held cell.
mod acquire {
    use super::*;

    type Held<'a, const RECURSIVE: bool> = CellGuard<'a, Shared<LockCell>, RECURSIVE>;

    #[inline]
    pub(super) fn lock<'a, G, const RECURSIVE: bool>(
        cell: &'a Shared<LockCell>,
        guard: impl FnOnce(Held<'a, RECURSIVE>) -> G,
    ) -> LockResult<G> {
        settle_lock(Held::lock(cell, None), guard)
    }

    #[inline]
    pub(super) fn try_lock<'a, G, const RECURSIVE: bool>(
        cell: &'a Shared<LockCell>,
        guard: impl FnOnce(Held<'a, RECURSIVE>) -> G,
    ) -> TryLockResult<G> {
        settle_into(Held::try_lock(cell), || TryLockError::WouldBlock, guard)
    }

    #[inline]
    pub(super) fn lock_until<'a, G, const RECURSIVE: bool>(
        cell: &'a Shared<LockCell>,
        deadline: Option<Instant>,
        guard: impl FnOnce(Held<'a, RECURSIVE>) -> G,
    ) -> LockTimeoutResult<G> {
        settle_into(
            Held::lock(cell, deadline),
            || LockTimeoutError::Timeout,
            guard,
        )
    }
}

/// What `Lock` and `RLock` have in common beyond their cores: the timed acquisitions, the
/// snapshots, and the guard's traits, for the handle `$lock` with guard `$guard`, where one
/// acquisition takes `$what` ("the lock", "one level").
macro_rules! lock_handle_common {
    ($lock:ident, $guard:ident, $what:literal) => {
        impl $lock {
            #[doc = concat!("Acquires ", $what, ", waiting at most `timeout` (Python's ")]
            /// `acquire(timeout=...)`). A timeout too large for an `Instant` waits forever.
            ///
            /// # Errors
            /// [`LockTimeoutError::Timeout`] if the lock stayed held by someone else;
            /// [`LockTimeoutError::OwnerDied`] and [`LockTimeoutError::Broken`] as for
            /// [`lock`](Self::lock).
            ///
            /// # Examples
            ///
            /// ```
            /// use std::time::Duration;
            #[doc = concat!("let lock = multiproc::", stringify!($lock), "::new()?;")]
            /// let _g = lock.lock_timeout(Duration::from_millis(10)).unwrap();
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<$guard<'_>> {
                acquire::lock_until(&self.cell, deadline_after(timeout), $guard)
            }

            #[doc = concat!("Acquires ", $what, ", waiting until `deadline` at the latest.")]
            ///
            /// # Errors
            /// As [`lock_timeout`](Self::lock_timeout).
            ///
            /// # Examples
            ///
            /// ```
            /// use std::time::{Duration, Instant};
            #[doc = concat!("let lock = multiproc::", stringify!($lock), "::new()?;")]
            /// let _g = lock.lock_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn lock_deadline(&self, deadline: Instant) -> LockTimeoutResult<$guard<'_>> {
                acquire::lock_until(&self.cell, Some(deadline), $guard)
            }

            /// Whether the lock is held right now (by anyone, this thread included). A
            /// snapshot, for diagnostics.
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("let lock = multiproc::", stringify!($lock), "::new()?;")]
            /// assert!(!lock.is_locked());
            /// let _g = lock.lock().unwrap();
            /// assert!(lock.is_locked());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_locked(&self) -> bool {
                self.cell.is_locked()
            }

            /// Whether a previous owner died holding the lock and nobody declared the state
            /// consistent since (a snapshot).
            ///
            /// # Examples
            ///
            /// ```
            #[doc = concat!("let lock = multiproc::", stringify!($lock), "::new()?;")]
            /// assert!(!lock.is_owner_died());
            /// # Ok::<(), multiproc::Error>(())
            /// ```
            pub fn is_owner_died(&self) -> bool {
                self.cell.owner_died()
            }
        }

        impl sealed::Sealed for $guard<'_> {}
        impl Recover for $guard<'_> {
            fn mark_consistent(&self) {
                self.0.mark_consistent();
            }
        }

        impl fmt::Debug for $lock {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($lock))
                    .field("owner_died", &self.is_owner_died())
                    .finish_non_exhaustive()
            }
        }

        impl fmt::Debug for $guard<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($guard)).finish_non_exhaustive()
            }
        }
    };
}

lock_handle_common!(Lock, LockGuard, "the lock");
lock_handle_common!(RLock, RLockGuard, "one level");

/// A mutual-exclusion lock shared between processes, that survives its holder's death.
///
/// Python's `multiprocessing.Lock`, as a Rust guard API: [`lock`](Self::lock) blocks,
/// [`try_lock`](Self::try_lock) never does, [`lock_timeout`](Self::lock_timeout) and
/// [`lock_deadline`](Self::lock_deadline) give up at a time. The guard unlocks on drop.
///
/// If a process (or thread) dies holding the lock, the next acquirer gets it with an
/// [`OwnerDied`] error (inside [`LockError`], [`TryLockError`] or [`LockTimeoutError`]) that
/// carries the guard, as with `std::sync::PoisonError`; it can repair the protected state and
/// call [`OwnerDied::make_consistent`]. Until someone does, every acquirer is told. Python's
/// lock, an owner-less semaphore, stays locked forever instead.
///
/// The lock is a futex word in a slot of a shared arena (4096 locks per descriptor, so a
/// program can have hundreds of thousands): waiters notice a dead owner within about 10 ms and
/// take over. `docs/reliability.md` lists what it withstands. Clones are handles to the same
/// lock; pass one to a child as (part of) its [`Process`](crate::Process) arguments.
///
/// # Differences from Python
/// - The lock has an owner: it is released by dropping the guard, in the thread that took it.
///   Python's `Lock` may be released by any process.
/// - Acquiring it again in the thread that holds it is an error, [`LockError::Broken`]
///   (Python's blocks forever).
///
/// # Examples
///
/// ```
/// use multiproc::Lock;
///
/// let lock = Lock::new()?;
/// {
///     let _guard = lock.lock().expect("no previous owner died");
///     assert!(lock.is_locked());
/// }
/// assert!(!lock.is_locked());
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct Lock {
    cell: Shared<LockCell>,
}

impl Lock {
    /// The holder count of the lock's arena slot (for tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn slot_refs(&self) -> Option<u32> {
        self.cell.slot_refs()
    }
}

/// The lock is held while this lives. See [`Lock`].
///
/// # Examples
///
/// ```
/// let lock = multiproc::Lock::new()?;
/// let guard: multiproc::LockGuard<'_> = lock.lock().unwrap();
/// drop(guard); // unlocks
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct LockGuard<'a>(CellGuard<'a, Shared<LockCell>>);

impl Lock {
    /// Creates an unlocked lock in a free slot of this process's arena.
    ///
    /// # Errors
    /// [`ErrorKind::Io`](crate::ErrorKind::Io) if the arena needs a new segment and it cannot
    /// be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Lock> {
        Ok(Lock::from_cell(new_cell(Kind::Lock, false)?))
    }

    pub(crate) fn from_cell(cell: Shared<LockCell>) -> Lock {
        Lock { cell }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn cell(&self) -> &LockCell {
        &self.cell
    }

    /// The segment's identity: equal for every handle on this lock, in any process, however
    /// many times it was mapped.
    pub(crate) fn id(&self) -> (u64, u64, usize) {
        self.cell.id()
    }

    /// The segment's descriptor (tests reopen it as other objects).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.cell.fd()
    }

    /// Where the lock is in its segment's data (tests scribble over it).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn data_offset(&self) -> usize {
        self.cell.id().2
    }

    /// Acquires the lock, blocking as long as it takes.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] (holding the guard: the lock *is* acquired) if a previous
    /// owner died holding it and nobody declared the state consistent since.
    /// [`LockError::Broken`] (not acquired) if this thread already holds the lock, or if its
    /// shared state was overwritten by another process.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// let guard = lock.lock().or_else(multiproc::LockError::make_consistent)?;
    /// # drop(guard);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "acquire")]
    #[inline]
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        acquire::lock(&self.cell, LockGuard)
    }

    /// As [`lock`](Self::lock), with the guard turned into the caller's by `guard` (also
    /// inside an `OwnerDied`): the guards of `Value` and `Array` hold a `LockGuard`.
    #[inline]
    pub(super) fn lock_into<'a, G>(
        &'a self,
        guard: impl FnOnce(LockGuard<'a>) -> G,
    ) -> LockResult<G> {
        acquire::lock(&self.cell, |held| guard(LockGuard(held)))
    }

    /// As [`try_lock`](Self::try_lock), with the guard turned into the caller's by `guard`.
    pub(super) fn try_lock_into<'a, G>(
        &'a self,
        guard: impl FnOnce(LockGuard<'a>) -> G,
    ) -> TryLockResult<G> {
        acquire::try_lock(&self.cell, |held| guard(LockGuard(held)))
    }

    /// As [`lock_deadline`](Self::lock_deadline) (`None`: no deadline, yet with the errors of a
    /// timed lock), with the guard turned into the caller's by `guard`.
    pub(super) fn lock_until_into<'a, G>(
        &'a self,
        deadline: Option<Instant>,
        guard: impl FnOnce(LockGuard<'a>) -> G,
    ) -> LockTimeoutResult<G> {
        acquire::lock_until(&self.cell, deadline, |held| guard(LockGuard(held)))
    }

    /// Acquires the lock if it is free, without blocking.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] if it is held (this thread's own hold included);
    /// [`TryLockError::OwnerDied`] and [`TryLockError::Broken`] as for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// assert!(lock.try_lock().is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "acquire")]
    pub fn try_lock(&self) -> TryLockResult<LockGuard<'_>> {
        acquire::try_lock(&self.cell, LockGuard)
    }

    /// Declares the state consistent without taking a guard: acquires, clears the owner-died
    /// indication, releases.
    ///
    /// A lock that this thread holds, or whose shared state is broken, is left as it is.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// lock.clear_owner_died();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn clear_owner_died(&self) {
        // A broken lock has no state to declare consistent: it is left as it is.
        if let Ok(guard) = self.lock().or_else(LockError::into_inner) {
            guard.mark_consistent();
        }
    }
}

/// A fresh, unlocked cell in a free slot of this process's arena.
fn new_cell(kind: Kind, recursive: bool) -> Result<Shared<LockCell>> {
    Shared::create_in_arena(kind, NO_TYPE_TAG, |p| {
        // SAFETY: `create_in_arena` passes fresh, aligned memory sized for a LockCell.
        unsafe { LockCell::init(p, recursive) }
    })
}

impl<'a> LockGuard<'a> {
    /// The identity of the guarded lock's segment (see [`Lock::id`]).
    pub(crate) fn lock_id(&self) -> (u64, u64, usize) {
        self.0.cell().id()
    }

    /// Gives up the guard without unlocking: the caller takes over the held mutex (a condition
    /// variable releases it while it sleeps) and rebuilds a guard with [`rebuild`](Self::rebuild).
    pub(crate) fn into_held(self) -> &'a Shared<LockCell> {
        self.0.into_held()
    }

    /// A guard for a mutex that the calling thread holds (see [`into_held`](Self::into_held)).
    ///
    /// # Safety
    /// The calling thread holds `lock`'s mutex, and no other guard stands for that hold.
    pub(crate) unsafe fn rebuild(lock: &'a Shared<LockCell>) -> LockGuard<'a> {
        // SAFETY: forwarded from the caller.
        LockGuard(unsafe { CellGuard::adopt(lock) })
    }
}

/// Objects (segments or arena slots) that start with a non-recursive `LockCell`.
pub(crate) const LOCK_KINDS: &[Kind] = &[Kind::Lock, Kind::Value, Kind::Array];

shared_handle!(
    /// A lock travels as its segment's descriptor and its arena slot's offset.
    [] Lock, cell, u32,
    |this| this.cell.slot_wire(),
    |fd, offset| Shared::open_slot(fd, offset, LOCK_KINDS, LOCK_KINDS, 0).map(Lock::from_cell),
);

/// A recursive lock shared between processes, that survives its holder's death.
///
/// Python's `multiprocessing.RLock`: the thread that holds it may lock it again; it is free
/// again when every guard is dropped. Owner death is handled as for [`Lock`].
///
/// # Examples
///
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let outer = rlock.lock().unwrap();
/// let inner = rlock.lock().unwrap();
/// drop(inner);
/// drop(outer);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    cell: Shared<LockCell>,
}

/// One level of an [`RLock`] held by this thread.
///
/// # Examples
///
/// ```
/// let rlock = multiproc::RLock::new()?;
/// let _g: multiproc::RLockGuard<'_> = rlock.lock().unwrap();
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct RLockGuard<'a>(CellGuard<'a, Shared<LockCell>, true>);

impl RLock {
    /// Creates an unlocked recursive lock in a free slot of this process's arena.
    ///
    /// # Errors
    /// As [`Lock::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<RLock> {
        Ok(RLock {
            cell: new_cell(Kind::RLock, true)?,
        })
    }

    /// Acquires one level, blocking as long as it takes.
    ///
    /// # Errors
    /// [`LockError::OwnerDied`] as for [`Lock::lock`];
    /// [`LockError::Broken`] if the recursion count would overflow `u32`, or the lock's shared
    /// state was overwritten.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let _g = rlock.lock().unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "acquire")]
    pub fn lock(&self) -> LockResult<RLockGuard<'_>> {
        acquire::lock(&self.cell, RLockGuard)
    }

    /// Acquires one level if the lock is free or already held by this thread.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] if another thread holds it; otherwise as
    /// [`Lock::try_lock`].
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// let _a = rlock.try_lock().unwrap();
    /// let _b = rlock.try_lock().unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<RLockGuard<'_>> {
        acquire::try_lock(&self.cell, RLockGuard)
    }
}

shared_handle!(
    /// As a [`Lock`]: the descriptor and the arena slot's offset.
    [] RLock, cell, u32,
    |this| this.cell.slot_wire(),
    |fd, offset| Shared::open_slot(fd, offset, &[Kind::RLock], &[Kind::RLock], 0).map(|cell| RLock { cell }),
);
