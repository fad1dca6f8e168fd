//! Futexes and robust process-shared pthread mutexes, with deadlines on `CLOCK_MONOTONIC`.

// Under loom the sync module uses its models instead.
#![cfg_attr(loom, allow(dead_code))]

use std::cell::UnsafeCell;
use std::io;
use std::sync::atomic::AtomicU32;
use std::time::Instant;

/// The absolute `CLOCK_MONOTONIC` time of `deadline`, normalized (`0 <= tv_nsec < 1e9`).
/// Rust's `Instant` is `CLOCK_MONOTONIC` on Linux, but opaque: the remaining time is added to the
/// clock read now. A deadline too far away to represent saturates. See clock_gettime(2).
// `time_t` and `c_long` are i64 here but narrower on 32-bit targets: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn monotonic_timespec(deadline: Instant) -> libc::timespec {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is writable memory for one timespec; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let left = deadline.saturating_duration_since(Instant::now());
    let mut sec = now.tv_sec as i64;
    let mut nsec = now.tv_nsec as i64 + i64::from(left.subsec_nanos());
    if nsec >= 1_000_000_000 {
        nsec -= 1_000_000_000;
        sec = sec.saturating_add(1);
    }
    sec = sec.saturating_add(i64::try_from(left.as_secs()).unwrap_or(i64::MAX));
    libc::timespec {
        tv_sec: sec as libc::time_t,
        tv_nsec: nsec as _,
    }
}

/// How a futex wait ended. Spurious returns are possible: callers re-check their condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FutexWait {
    /// Woken, or the word no longer held the expected value.
    Returned,
    /// The deadline passed.
    TimedOut,
}

/// Sleeps while `word` holds `expected`, until woken or `deadline`. Shared between processes (not
/// `FUTEX_PRIVATE_FLAG`); the deadline is absolute on `CLOCK_MONOTONIC` (`FUTEX_WAIT_BITSET`), so
/// an `EINTR` retry keeps it. See futex(2).
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, deadline: Option<Instant>) -> FutexWait {
    let ts = deadline.map(monotonic_timespec);
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    loop {
        // SAFETY: `word` is a live, aligned 32-bit atomic for the duration of the call; the
        // timespec pointer is null or points at `ts`, which outlives the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_futex,
                word.as_ptr(),
                libc::FUTEX_WAIT_BITSET,
                expected,
                ts_ptr,
                std::ptr::null::<u32>(),
                libc::FUTEX_BITSET_MATCH_ANY,
            )
        };
        if r == 0 {
            return FutexWait::Returned;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ETIMEDOUT) => return FutexWait::TimedOut,
            // EAGAIN: the value changed before we slept. Anything else cannot happen with valid
            // arguments; returning lets the caller re-check rather than spin here.
            _ => return FutexWait::Returned,
        }
    }
}

/// Wakes up to `count` sleepers on `word` (in any process); returns how many woke. See futex(2).
pub(crate) fn futex_wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE reads nothing else.
    let r = unsafe { libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, count) };
    usize::try_from(r).unwrap_or(0)
}

unsafe extern "C" {
    // glibc 2.30 and later; the libc crate does not declare it.
    fn pthread_mutex_clocklock(
        mutex: *mut libc::pthread_mutex_t,
        clock: libc::clockid_t,
        abstime: *const libc::timespec,
    ) -> libc::c_int;
}

/// A robust, process-shared, error-checking pthread mutex, to be placed in shared memory.
///
/// glibc keeps every robust mutex a thread holds on the kernel's robust list for that thread;
/// when the thread dies, the kernel marks each such mutex "owner died" and wakes a waiter, whose
/// lock call then returns `EOWNERDEAD`. See pthread_mutexattr_setrobust(3).
#[repr(C)]
pub(crate) struct RobustMutex {
    inner: UnsafeCell<libc::pthread_mutex_t>,
}

// SAFETY: a process-shared pthread mutex is designed to be used from any thread of any process.
unsafe impl Sync for RobustMutex {}
// SAFETY: as above; the mutex has no thread affinity while unlocked.
unsafe impl Send for RobustMutex {}

/// What a successful lock found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The mutex was released normally.
    Clean,
    /// The previous owner died holding it; it has already been made consistent again.
    OwnerDied,
}

/// Why a lock attempt failed.
#[derive(Debug)]
pub(crate) enum LockFailed {
    /// `try_lock` found it held, or the deadline passed.
    Busy,
    /// The calling thread already holds this (non-recursive) mutex.
    Deadlock,
    /// Anything else the C library reported (for example the recursion counter overflowed).
    Os(io::Error),
}

impl RobustMutex {
    /// Initializes a mutex in place.
    ///
    /// # Safety
    /// `this` points to writable memory for a `RobustMutex` (suitably aligned) that no process
    /// is using as a mutex yet.
    pub(crate) unsafe fn init(this: *mut RobustMutex, recursive: bool) -> io::Result<()> {
        let check = |r: libc::c_int| {
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(r))
            }
        };
        let mut attr = std::mem::MaybeUninit::<libc::pthread_mutexattr_t>::uninit();
        // SAFETY: `attr` is writable; initialized by the call before any other use.
        check(unsafe { libc::pthread_mutexattr_init(attr.as_mut_ptr()) })?;
        let kind = if recursive {
            libc::PTHREAD_MUTEX_RECURSIVE
        } else {
            libc::PTHREAD_MUTEX_ERRORCHECK
        };
        let attr_ptr = attr.as_mut_ptr();
        // SAFETY: `attr_ptr` was initialized above and the setters only write it; `this` is
        // valid writable memory for a mutex (the caller's contract).
        let set = unsafe {
            check(libc::pthread_mutexattr_setpshared(
                attr_ptr,
                libc::PTHREAD_PROCESS_SHARED,
            ))
            .and_then(|()| {
                check(libc::pthread_mutexattr_setrobust(
                    attr_ptr,
                    libc::PTHREAD_MUTEX_ROBUST,
                ))
            })
            .and_then(|()| check(libc::pthread_mutexattr_settype(attr_ptr, kind)))
            .and_then(|()| {
                check(libc::pthread_mutex_init(
                    UnsafeCell::raw_get(&raw const (*this).inner),
                    attr_ptr,
                ))
            })
        };
        // SAFETY: `attr_ptr` is an initialized attribute object, destroyed once.
        unsafe { libc::pthread_mutexattr_destroy(attr_ptr) };
        set
    }

    fn finish(&self, r: libc::c_int) -> Result<Locked, LockFailed> {
        match r {
            0 => Ok(Locked::Clean),
            libc::EOWNERDEAD => {
                // SAFETY: we hold the mutex (EOWNERDEAD means acquired) and make it usable again.
                unsafe { libc::pthread_mutex_consistent(self.inner.get()) };
                Ok(Locked::OwnerDied)
            }
            libc::EBUSY | libc::ETIMEDOUT => Err(LockFailed::Busy),
            libc::EDEADLK => Err(LockFailed::Deadlock),
            e => Err(LockFailed::Os(io::Error::from_raw_os_error(e))),
        }
    }

    /// Locks, waiting until `deadline` (forever if `None`). `EINTR` is never returned by these
    /// calls (they restart internally).
    #[inline]
    pub(crate) fn lock(&self, deadline: Option<Instant>) -> Result<Locked, LockFailed> {
        let r = match deadline {
            // SAFETY: the mutex was initialized by `init` (the caller's type guarantees it) and
            // lives in memory mapped for as long as `self` is borrowed.
            None => unsafe { libc::pthread_mutex_lock(self.inner.get()) },
            Some(d) => {
                let ts = monotonic_timespec(d);
                // SAFETY: as above; `ts` outlives the call.
                unsafe { pthread_mutex_clocklock(self.inner.get(), libc::CLOCK_MONOTONIC, &ts) }
            }
        };
        self.finish(r)
    }

    /// Locks if free, without waiting.
    #[inline]
    pub(crate) fn try_lock(&self) -> Result<Locked, LockFailed> {
        // SAFETY: as in `lock`.
        let r = unsafe { libc::pthread_mutex_trylock(self.inner.get()) };
        self.finish(r)
    }

    /// Whether the mutex is held now, by any thread of any process (a snapshot). A mutex whose
    /// owner died and that nobody took since is free.
    pub(crate) fn is_held(&self) -> bool {
        if cfg!(target_env = "gnu") {
            self.owner_tid() != 0
        } else {
            match self.try_lock() {
                Ok(_) => {
                    // SAFETY: acquired just above by this thread.
                    unsafe { self.unlock() };
                    false
                }
                Err(_) => true,
            }
        }
    }

    /// The owner's thread id from the futex word (glibc only: see `may_be_held_here`).
    fn owner_tid(&self) -> u32 {
        const FUTEX_TID_MASK: u32 = 0x3fff_ffff;
        // SAFETY: the first 4 bytes of an initialized glibc mutex are its futex word, only
        // ever accessed atomically; the memory is mapped while `self` is borrowed.
        let word = unsafe { &*self.inner.get().cast::<AtomicU32>() };
        word.load(std::sync::atomic::Ordering::Acquire) & FUTEX_TID_MASK
    }

    /// Whether a thread of this process may hold the mutex now (and so may still link it in
    /// its robust list, which the C library and the kernel will write through). Conservative:
    /// `true` whenever in doubt.
    ///
    /// A robust mutex's futex word is the kernel's robust-futex ABI: the owner's thread id in
    /// its low 30 bits (0 when free or when the owner died). glibc keeps it in the first word of
    /// `pthread_mutex_t`; elsewhere we answer `true` unless the mutex is free. See
    /// set_robust_list(2), futex(7).
    pub(crate) fn may_be_held_here(&self) -> bool {
        if cfg!(target_env = "gnu") {
            let tid = self.owner_tid();
            tid != 0 && super::is_own_thread(tid as i32)
        } else {
            match self.try_lock() {
                Ok(_) => {
                    // SAFETY: acquired just above by this thread.
                    unsafe { self.unlock() };
                    false
                }
                Err(_) => true,
            }
        }
    }

    /// Unlocks.
    ///
    /// # Safety
    /// The calling thread holds the mutex.
    #[inline]
    pub(crate) unsafe fn unlock(&self) {
        // SAFETY: the caller holds the mutex, which was initialized.
        unsafe { libc::pthread_mutex_unlock(self.inner.get()) };
    }
}
