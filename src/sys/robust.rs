//! A robust, process-shared futex lock that trusts nothing in shared memory.
//!
//! The lock is one 32-bit word: the owner's thread id (kernel tid, unique across the processes
//! of one pid namespace) in the low 30 bits, and a "someone may be sleeping" bit. Locking is a
//! compare-and-swap from "no owner" to our tid; unlocking swaps in 0 and wakes a sleeper if the
//! bit was set. Recursion (for `RLock`) is counted in a second word, touched only by the owner.
//!
//! **Owner death** is detected by the waiters, not by the kernel's robust list: a waiter sleeps
//! in slices of at most [`CHECK_EVERY`], and after each one asks whether the owner thread still
//! exists (tkill(2) with signal 0, and its `/proc` state: a killed process's main thread lingers
//! as a zombie until reaped). If it does not, the waiter takes the word over with a
//! compare-and-swap and reports [`Locked::OwnerDied`].
//!
//! **Thread-id reuse.** Tids are recycled (pid_max is often 32768), so a dead owner's tid may
//! name an unrelated live thread by the time a waiter looks. Beside the word, the owner keeps a
//! *stamp*: its tid and the low 32 bits of its thread's start time (proc_pid_stat(5) field 22),
//! written right after it acquires and cleared before it releases the word. A waiter that finds
//! the word held by tid `T` also declares the owner dead when the stamp names `T` with a start
//! time other than that of the thread now called `T`. Such a stamp belongs to the current
//! holding (every release clears the stamp first, and a takeover writes its own after its
//! compare-and-swap), so it was written by a thread `T` that has since ended. A stamp of 0 (the
//! owner has not written it yet) or of another tid proves nothing, and a live owner is never
//! declared dead: if its stamp is there, it carries its own start time.
//!
//! Why not glibc's robust pthread mutex, which we used before: it links every held mutex into a
//! per-thread list *through pointers stored in the mutex*, and unlocking follows them. Another
//! process that scribbles over the segment (or a segment unmapped while a leaked guard still
//! linked it) turned that into writes at arbitrary addresses of our process. Here shared memory
//! holds only numbers; the worst a scribbler can do is make the lock look held (a deadline
//! bounds the wait), free (no mutual exclusion against the scribbler, who could write the
//! protected data anyway), or owned by a dead thread (reported as `OwnerDied`). It also needs no
//! `pthread_mutex_clocklock` (glibc 2.30): deadlines are futex waits on `CLOCK_MONOTONIC`.

// Under loom the sync module uses its model mutex instead.
#![cfg_attr(loom, allow(dead_code))]

use crate::atomic::Ordering;
use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::time::{Duration, Instant};

use super::futex::{FutexWait, futex_wait, futex_wake};

mod owner;

use owner::{my_stamp, stamp_tid, thread_is_dead, thread_is_gone};

/// Low 30 bits of the word: the owner's tid (0: free).
const TID_MASK: u32 = 0x3fff_ffff;
/// A waiter may be asleep on the word: the unlocker must wake one.
const WAITERS: u32 = 0x8000_0000;

/// How long a waiter sleeps before checking that the owner is still alive. Bounds how long a
/// dead owner's lock stays taken while others wait for it.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(10);

thread_local! {
    /// The last lock (address and word) this thread's `try_lock` found held, and since when:
    /// rate-limits the expensive liveness check.
    static SUSPECT: Cell<Option<(usize, u32, Instant)>> = const { Cell::new(None) };
}

/// Polls `ready` a little before a sleep: a few dozen checks, then a few yields (the same
/// shape as the sync layer's spin, which sits above this module).
fn spin(mut ready: impl FnMut() -> bool) -> bool {
    for i in 0..68 {
        if ready() {
            return true;
        }
        if i < 64 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
        }
    }
    ready()
}

/// A robust, process-shared, error-checking (or recursive) lock, to be placed in shared memory.
#[repr(C)]
pub(crate) struct RobustMutex {
    word: AtomicU32,
    /// Extra levels held by the owner of a recursive lock (0 for one level); only the owner
    /// reads or writes it.
    depth: AtomicU32,
    /// The owner's stamp (see the module docs), 0 while it is not written or the lock is free.
    stamp: AtomicU64,
    /// 1 for a recursive lock. Written once at creation, for diagnostics only: whether a lock
    /// is recursive is the handle's own knowledge (an `RLock` or not), passed to every call.
    /// Trusting this word would let a scribbler turn a `Lock` recursive and hand one thread
    /// two guards (two `&mut` to the same data).
    recursive: AtomicU32,
}

/// What a successful lock found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Locked {
    /// The lock was released normally.
    Clean,
    /// Its previous owner died holding it; we took it over.
    OwnerDied,
}

/// Why a lock attempt failed.
#[derive(Debug)]
pub(crate) enum LockFailed {
    /// `try_lock` found it held, or the deadline passed.
    Busy,
    /// The calling thread already holds this (non-recursive) lock.
    Deadlock,
    /// The recursion count would overflow.
    Os(io::Error),
}

impl LockFailed {
    /// The OS error that [`Deadlock`](Self::Deadlock) stands for, `EDEADLK`, for callers
    /// outside `sys/` that report it.
    pub(crate) fn deadlock_os_error() -> io::Error {
        io::Error::from_raw_os_error(libc::EDEADLK)
    }
}

impl RobustMutex {
    /// Initializes a lock in place.
    ///
    /// # Safety
    /// `this` points to writable memory for a `RobustMutex` (suitably aligned) that no process
    /// is using as a lock yet.
    pub(crate) unsafe fn init(this: *mut RobustMutex, recursive: bool) -> io::Result<()> {
        // SAFETY: guaranteed by the caller.
        unsafe {
            this.write(RobustMutex {
                word: AtomicU32::new(0),
                depth: AtomicU32::new(0),
                stamp: AtomicU64::new(0),
                recursive: AtomicU32::new(u32::from(recursive)),
            })
        };
        Ok(())
    }

    /// One attempt without sleeping: `Ok` if decided (taken, or this thread's own lock),
    /// `Err(word)` if another thread holds it. After a sleep, `waited` keeps the waiters bit
    /// set on the taken lock, since other waiters may still be asleep.
    #[inline]
    fn attempt(
        &self,
        me: u64,
        waited: bool,
        recursive: bool,
    ) -> Result<Result<Locked, LockFailed>, u32> {
        let tid = stamp_tid(me);
        let mine = if waited { tid | WAITERS } else { tid };
        match self
            .word
            .compare_exchange(0, mine, Ordering::Acquire, Ordering::Relaxed)
        {
            Ok(_) => {
                self.stamp.store(me, Ordering::Relaxed);
                Ok(Ok(Locked::Clean))
            }
            Err(cur) => self.held(me, cur, recursive),
        }
    }

    #[cold]
    fn held(
        &self,
        me_stamp: u64,
        cur: u32,
        recursive: bool,
    ) -> Result<Result<Locked, LockFailed>, u32> {
        let me = stamp_tid(me_stamp);
        let owner = cur & TID_MASK;
        if owner == 0 {
            // Free, with the waiters bit (or a scribbler's garbage) in the other bits: take it
            // with the bit set, so that our unlock wakes the sleepers.
            return match self.word.compare_exchange(
                cur,
                me | WAITERS,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.stamp.store(me_stamp, Ordering::Relaxed);
                    Ok(Ok(Locked::Clean))
                }
                Err(now) => Err(now),
            };
        }
        if owner != me {
            return Err(cur);
        }
        if !recursive {
            return Ok(Err(LockFailed::Deadlock));
        }
        let d = self.depth.load(Ordering::Relaxed);
        Ok(match d.checked_add(1) {
            Some(d) => {
                self.depth.store(d, Ordering::Relaxed);
                Ok(Locked::Clean)
            }
            None => Err(LockFailed::Os(io::Error::new(
                io::ErrorKind::QuotaExceeded,
                "the recursive lock is held too many times",
            ))),
        })
    }

    /// Whether the owner named in `cur` (the word as this thread last saw it) is dead: gone,
    /// a zombie, or an earlier thread of the same tid (see the module docs). `false` if the
    /// word changed meanwhile.
    fn owner_is_dead(&self, cur: u32) -> bool {
        // Acquire: if the word is still `cur`, the stamp read below is no older than the clear
        // that came before the current holding.
        if self.word.load(Ordering::Acquire) != cur {
            return false;
        }
        let stamp = self.stamp.load(Ordering::Relaxed);
        thread_is_dead(cur & TID_MASK, stamp)
    }

    /// Takes over the lock from a dead owner whose word was `cur`.
    fn take_over(&self, me: u64, cur: u32) -> bool {
        let ok = self
            .word
            .compare_exchange(
                cur,
                stamp_tid(me) | WAITERS,
                Ordering::Acquire,
                Ordering::Relaxed,
            )
            .is_ok();
        if ok {
            self.stamp.store(me, Ordering::Relaxed);
            self.depth.store(0, Ordering::Relaxed);
        }
        ok
    }

    /// Locks, waiting until `deadline` (forever if `None`).
    #[inline]
    pub(crate) fn lock(
        &self,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Locked, LockFailed> {
        let me = my_stamp();
        match self.attempt(me, false, recursive) {
            Ok(r) => r,
            Err(_) => self.lock_slow(me, deadline, recursive),
        }
    }

    #[cold]
    fn lock_slow(
        &self,
        me: u64,
        deadline: Option<Instant>,
        recursive: bool,
    ) -> Result<Locked, LockFailed> {
        // A short spin first: the owner may be about to release (see `spin`).
        if spin(|| self.word.load(Ordering::Relaxed) & TID_MASK == 0)
            && let Ok(r) = self.attempt(me, false, recursive)
        {
            return r;
        }
        let mut waited = false;
        loop {
            let cur = match self.attempt(me, waited, recursive) {
                Ok(r) => return r,
                Err(cur) => cur,
            };
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                // Before giving up, look once at the owner: a short deadline must not keep a
                // dead owner's lock taken forever.
                if self.owner_is_dead(cur) && self.take_over(me, cur) {
                    return Ok(Locked::OwnerDied);
                }
                return Err(LockFailed::Busy);
            }
            // Announce a sleeper, then sleep while the word stays as announced.
            let want = cur | WAITERS;
            if cur != want
                && self
                    .word
                    .compare_exchange(cur, want, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            let slice_end = now + CHECK_EVERY;
            let until = deadline.map_or(slice_end, |d| d.min(slice_end));
            let r = futex_wait(&self.word, want, Some(until));
            waited = true;
            // A whole slice passed and the same owner still holds it: is it still alive?
            if r == FutexWait::TimedOut
                && until == slice_end
                && self.owner_is_dead(want)
                && self.take_over(me, want)
            {
                return Ok(Locked::OwnerDied);
            }
        }
    }

    /// For `try_lock`: whether the owner in `cur` is dead. One system call each time (a thread
    /// that no longer exists); the closer look for a zombie (a `/proc` read) only when this
    /// thread has found the same word for [`CHECK_EVERY`], so that polling stays cheap.
    fn owner_looks_dead(&self, cur: u32) -> bool {
        let owner = cur & TID_MASK;
        if thread_is_gone(owner) {
            return true;
        }
        let here = std::ptr::from_ref(self) as usize;
        SUSPECT.with(|s| {
            let now = Instant::now();
            match s.get() {
                Some((addr, word, since)) if addr == here && word == cur => {
                    if now.duration_since(since) < CHECK_EVERY {
                        return false;
                    }
                    s.set(Some((here, cur, now)));
                    self.owner_is_dead(cur)
                }
                _ => {
                    s.set(Some((here, cur, now)));
                    false
                }
            }
        })
    }

    /// Locks if free, without waiting. A lock whose owner thread no longer exists is taken
    /// over at once; one held by a killed process that is not reaped yet (a zombie), once this
    /// thread has seen it held by that owner for [`CHECK_EVERY`].
    #[inline]
    pub(crate) fn try_lock(&self, recursive: bool) -> Result<Locked, LockFailed> {
        let me = my_stamp();
        match self.attempt(me, false, recursive) {
            Ok(r) => r,
            Err(cur) => {
                if self.owner_looks_dead(cur) && self.take_over(me, cur) {
                    Ok(Locked::OwnerDied)
                } else {
                    Err(LockFailed::Busy)
                }
            }
        }
    }

    /// Whether the lock is held now, by any thread of any process (a snapshot; a dead owner's
    /// lock counts as held until someone takes it over).
    pub(crate) fn is_held(&self) -> bool {
        self.word.load(Ordering::Relaxed) & TID_MASK != 0
    }

    /// Unlocks (one level of a recursive lock).
    ///
    /// # Safety
    /// The calling thread holds the lock.
    #[inline]
    pub(crate) unsafe fn unlock(&self, recursive: bool) {
        if recursive {
            let d = self.depth.load(Ordering::Relaxed);
            if d > 0 {
                self.depth.store(d - 1, Ordering::Relaxed);
                return;
            }
        }
        // The stamp goes first: a stamp is only ever seen with the holding that wrote it.
        self.stamp.store(0, Ordering::Relaxed);
        if self.word.swap(0, Ordering::Release) & WAITERS != 0 {
            futex_wake(&self.word, 1);
        }
    }
}

#[cfg(test)]
mod tests;
