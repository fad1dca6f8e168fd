//! `Lock` and `RLock`: robust locks in shared memory.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::handles::{Handle, handle_serde};

use super::error::{
    LockError, LockResult, OwnerDied, Recover, TryLockError, TryLockResult, sealed,
};
use super::shim::{AtomicU32, LockFailed, Locked, Mutex, Ordering};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Kind, Shared};

/// A robust mutex plus the "owner died and nobody declared the state consistent yet" flag.
/// Placed at the start of every segment that has a lock (a `Lock`, `RLock`, `Value`, `Array`,
/// and the internals of other primitives).
#[repr(C)]
pub(crate) struct LockCell {
    mutex: Mutex,
    owner_died: AtomicU32,
}

/// How an acquisition went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Acquired {
    Clean,
    /// Acquired; an owner died holding it and the state was not declared consistent since.
    OwnerDied,
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
            (&raw mut (*this).owner_died).write(AtomicU32::new(0));
        }
        Ok(())
    }

    /// What a lock attempt means: acquired (and how), not available (`Ok(None)`), or a fault
    /// of a lock that cannot be used, as a typed error (never a panic: a peer that scribbles
    /// over the mutex can cause any of them).
    fn settle(&self, r: Result<Locked, LockFailed>) -> Result<Option<Acquired>, Error> {
        match r {
            Ok(Locked::Clean) if self.owner_died.load(Ordering::Relaxed) == 0 => {
                Ok(Some(Acquired::Clean))
            }
            Ok(_) => {
                self.owner_died.store(1, Ordering::Relaxed);
                Ok(Some(Acquired::OwnerDied))
            }
            Err(LockFailed::Busy) => Ok(None),
            Err(LockFailed::Deadlock) => Err(Error::os(
                "the lock is already held by this thread (or its shared state was overwritten \
                 with this thread's id)",
                std::io::Error::from_raw_os_error(libc_edeadlk()),
            )),
            Err(LockFailed::Os(e)) => Err(Error::os(
                "the lock cannot be used: its shared state is corrupt",
                e,
            )),
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
        match self.settle(self.mutex.try_lock(recursive)) {
            Err(e)
                if e.io_error().and_then(std::io::Error::raw_os_error) == Some(libc_edeadlk()) =>
            {
                Ok(None)
            }
            r => r,
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
        self.owner_died.store(0, Ordering::Relaxed);
    }

    /// Whether an owner died and the state was not declared consistent since (a snapshot).
    pub(crate) fn owner_died(&self) -> bool {
        self.owner_died.load(Ordering::Relaxed) != 0
    }
}

/// `EDEADLK`, without naming libc outside `sys/`.
fn libc_edeadlk() -> i32 {
    std::io::Error::from(std::io::ErrorKind::Deadlock)
        .raw_os_error()
        .unwrap_or(35)
}

/// Turns an acquisition into a guard, wrapped in `OwnerDied` if it applies.
pub(crate) fn wrap<G>(acquired: Acquired, guard: G) -> LockResult<G> {
    match acquired {
        Acquired::Clean => Ok(guard),
        Acquired::OwnerDied => Err(LockError::OwnerDied(OwnerDied::new(guard))),
    }
}

/// A blocking acquisition (no deadline) as a guard.
pub(crate) fn wrap_lock<G>(
    r: Result<Option<Acquired>, Error>,
    guard: impl FnOnce() -> G,
) -> LockResult<G> {
    match r {
        Ok(Some(a)) => wrap(a, guard()),
        // Without a deadline the C library waits; a `None` here can only be a peer's doing.
        Ok(None) => Err(LockError::Broken(Error::new(
            ErrorKind::Io,
            "an untimed lock gave up: its shared state is corrupt",
        ))),
        Err(e) => Err(LockError::Broken(e)),
    }
}

fn wrap_try<G>(r: Result<Option<Acquired>, Error>, guard: impl FnOnce() -> G) -> TryLockResult<G> {
    match r {
        Ok(None) => Err(TryLockError::WouldBlock),
        Ok(Some(a)) => wrap(a, guard()).map_err(TryLockError::from),
        Err(e) => Err(TryLockError::Broken(e)),
    }
}

/// `Instant::now() + timeout`, or `None` (forever) when that overflows.
pub(crate) fn deadline_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// A mutual-exclusion lock shared between processes, that survives its holder's death.
///
/// Python's `multiprocessing.Lock`, as a Rust guard API: [`lock`](Self::lock) blocks,
/// [`try_lock`](Self::try_lock) never does, [`lock_timeout`](Self::lock_timeout) and
/// [`lock_deadline`](Self::lock_deadline) give up at a time. The guard unlocks on drop.
///
/// If a process (or thread) dies holding the lock, the next acquirer gets it with an
/// [`OwnerDied`] error (inside [`LockError`] or [`TryLockError`]) that carries the guard, as with `std::sync::PoisonError`; it can repair
/// the protected state and call [`OwnerDied::make_consistent`]. Until someone does, every
/// acquirer is told. Python's lock, an owner-less semaphore, stays locked forever instead.
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
pub struct LockGuard<'a> {
    lock: &'a Shared<LockCell>,
    /// Guards release in the thread that acquired (a pthread mutex requires it).
    _not_send: PhantomData<*const ()>,
}

// SAFETY: sharing `&LockGuard` between threads only allows `mark_consistent`, an atomic store.
unsafe impl Sync for LockGuard<'_> {}

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
        let cell = Shared::create_in_arena(Kind::Lock, 0, |p| {
            // SAFETY: `create` passes fresh, aligned memory sized for a LockCell.
            unsafe { LockCell::init(p, false) }
        })?;
        Ok(Lock { cell })
    }

    pub(crate) fn from_cell(cell: Shared<LockCell>) -> Lock {
        Lock { cell }
    }

    #[cfg(all(test, not(loom)))]
    pub(crate) fn cell(&self) -> &LockCell {
        &self.cell
    }

    fn guard(&self) -> LockGuard<'_> {
        LockGuard {
            lock: &self.cell,
            _not_send: PhantomData,
        }
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
    pub fn lock(&self) -> LockResult<LockGuard<'_>> {
        wrap_lock(self.cell.lock(None), || self.guard())
    }

    /// Acquires the lock if it is free, without blocking.
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] if it is held; [`TryLockError::OwnerDied`] as for
    /// [`lock`](Self::lock).
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
        wrap_try(self.cell.try_lock(), || self.guard())
    }

    /// Acquires the lock, waiting at most `timeout` (Python's `acquire(timeout=...)`).
    ///
    /// # Errors
    /// [`TryLockError::WouldBlock`] if the lock stayed held; [`TryLockError::OwnerDied`] and
    /// [`TryLockError::Broken`] as for [`lock`](Self::lock).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let lock = multiproc::Lock::new()?;
    /// let _g = lock.lock_timeout(Duration::from_millis(10)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<LockGuard<'_>> {
        self.lock_until(deadline_after(timeout))
    }

    /// Acquires the lock, waiting until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`lock_timeout`](Self::lock_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let lock = multiproc::Lock::new()?;
    /// let _g = lock.lock_deadline(Instant::now() + Duration::from_secs(1)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_deadline(&self, deadline: Instant) -> TryLockResult<LockGuard<'_>> {
        self.lock_until(Some(deadline))
    }

    fn lock_until(&self, deadline: Option<Instant>) -> TryLockResult<LockGuard<'_>> {
        wrap_try(self.cell.lock(deadline), || self.guard())
    }

    /// Whether the lock is held right now (by anyone, this thread included). A snapshot, for
    /// diagnostics.
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// assert!(!lock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.cell.is_locked()
    }

    /// Whether a previous owner died holding the lock and nobody declared the state consistent
    /// since (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// let lock = multiproc::Lock::new()?;
    /// assert!(!lock.is_owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_owner_died(&self) -> bool {
        self.cell.owner_died()
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

impl sealed::Sealed for LockGuard<'_> {}
impl Recover for LockGuard<'_> {
    fn mark_consistent(&self) {
        self.lock.mark_consistent();
    }
}

impl<'a> LockGuard<'a> {
    /// The identity of the guarded lock's segment (see [`Lock::id`]).
    pub(crate) fn lock_id(&self) -> (u64, u64, usize) {
        self.lock.id()
    }

    /// Gives up the guard without unlocking: the caller takes over the held mutex (a condition
    /// variable releases it while it sleeps) and rebuilds a guard with [`rebuild`](Self::rebuild).
    pub(crate) fn into_held(self) -> &'a Shared<LockCell> {
        let lock = self.lock;
        std::mem::forget(self);
        lock
    }

    /// A guard for a mutex that the calling thread holds (see [`into_held`](Self::into_held)).
    ///
    /// # Safety
    /// The calling thread holds `lock`'s mutex, and no other guard stands for that hold.
    pub(crate) unsafe fn rebuild(lock: &'a Shared<LockCell>) -> LockGuard<'a> {
        LockGuard {
            lock,
            _not_send: PhantomData,
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while its thread holds the mutex.
        unsafe { self.lock.release() };
    }
}

impl fmt::Debug for Lock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock")
            .field("owner_died", &self.is_owner_died())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockGuard").finish_non_exhaustive()
    }
}

/// Objects (segments or arena slots) that start with a non-recursive `LockCell`.
pub(crate) const LOCK_KINDS: &[Kind] = &[Kind::Lock, Kind::Value, Kind::Array];

/// A lock travels as its segment's descriptor and its arena slot's offset.
impl Handle for Lock {
    type Wire = u32;
    fn descriptor(&self) -> BorrowedFd<'_> {
        self.cell.fd().as_fd()
    }
    fn wire(&self) -> std::result::Result<u32, String> {
        self.cell.slot_wire()
    }
    fn import(fd: OwnedFd, offset: u32) -> Result<Self> {
        Shared::open_slot(fd, offset, LOCK_KINDS, LOCK_KINDS, 0).map(Lock::from_cell)
    }
}
handle_serde!([] Lock);

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
pub struct RLockGuard<'a> {
    cell: &'a LockCell,
    _not_send: PhantomData<*const ()>,
}

// SAFETY: as for LockGuard.
unsafe impl Sync for RLockGuard<'_> {}

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
        let cell = Shared::create_in_arena(Kind::RLock, 0, |p| {
            // SAFETY: `create` passes fresh, aligned memory sized for a LockCell.
            unsafe { LockCell::init(p, true) }
        })?;
        Ok(RLock { cell })
    }

    fn guard(&self) -> RLockGuard<'_> {
        RLockGuard {
            cell: &self.cell,
            _not_send: PhantomData,
        }
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
        wrap_lock(self.cell.lock_as(None, true), || self.guard())
    }

    /// Acquires one level if the lock is free or already held by this thread.
    ///
    /// # Errors
    /// As [`Lock::try_lock`].
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
        wrap_try(self.cell.try_lock_as(true), || self.guard())
    }

    /// Acquires one level, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let rlock = multiproc::RLock::new()?;
    /// let _g = rlock.lock_timeout(Duration::from_millis(5)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> TryLockResult<RLockGuard<'_>> {
        wrap_try(self.cell.lock_as(deadline_after(timeout), true), || {
            self.guard()
        })
    }

    /// Acquires one level, waiting until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let rlock = multiproc::RLock::new()?;
    /// let _g = rlock.lock_deadline(Instant::now() + Duration::from_millis(5)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_deadline(&self, deadline: Instant) -> TryLockResult<RLockGuard<'_>> {
        wrap_try(self.cell.lock_as(Some(deadline), true), || self.guard())
    }

    /// Whether the lock is held right now (by anyone, this thread included). A snapshot, for
    /// diagnostics.
    ///
    /// # Examples
    ///
    /// ```
    /// let rlock = multiproc::RLock::new()?;
    /// assert!(!rlock.is_locked());
    /// let _g = rlock.lock().unwrap();
    /// assert!(rlock.is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_locked(&self) -> bool {
        self.cell.is_locked()
    }

    /// Whether a previous owner died holding the lock and nobody declared the state consistent
    /// since (a snapshot).
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::RLock::new()?.is_owner_died());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_owner_died(&self) -> bool {
        self.cell.owner_died()
    }
}

impl sealed::Sealed for RLockGuard<'_> {}
impl Recover for RLockGuard<'_> {
    fn mark_consistent(&self) {
        self.cell.mark_consistent();
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a guard exists only while its thread holds (one level of) the mutex.
        unsafe { self.cell.release_as(true) };
    }
}

impl fmt::Debug for RLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLock")
            .field("owner_died", &self.is_owner_died())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for RLockGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RLockGuard").finish_non_exhaustive()
    }
}

/// As a [`Lock`]: the descriptor and the arena slot's offset.
impl Handle for RLock {
    type Wire = u32;
    fn descriptor(&self) -> BorrowedFd<'_> {
        self.cell.fd().as_fd()
    }
    fn wire(&self) -> std::result::Result<u32, String> {
        self.cell.slot_wire()
    }
    fn import(fd: OwnedFd, offset: u32) -> Result<Self> {
        Shared::open_slot(fd, offset, &[Kind::RLock], &[Kind::RLock], 0).map(|cell| RLock { cell })
    }
}
handle_serde!([] RLock);
