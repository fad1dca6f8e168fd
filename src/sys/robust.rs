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

use std::cell::Cell;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::futex::{FutexWait, futex_wait, futex_wake};

/// Low 30 bits of the word: the owner's tid (0: free).
const TID_MASK: u32 = 0x3fff_ffff;
/// A waiter may be asleep on the word: the unlocker must wake one.
const WAITERS: u32 = 0x8000_0000;

/// How long a waiter sleeps before checking that the owner is still alive. Bounds how long a
/// dead owner's lock stays taken while others wait for it.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(10);

thread_local! {
    /// This thread's stamp, cached: its tid in the high 32 bits, the low 32 bits of its start
    /// time in the low ones (0: not looked up yet). Reset in a forked child, whose thread has
    /// a new tid and start time.
    static STAMP: Cell<u64> = const { Cell::new(0) };
}

thread_local! {
    /// The last lock (address and word) this thread's `try_lock` found held, and since when:
    /// rate-limits the expensive liveness check.
    static SUSPECT: Cell<Option<(usize, u32, Instant)>> = const { Cell::new(None) };
}

extern "C" fn forget_tid_after_fork() {
    STAMP.with(|t| t.set(0));
}

/// The tid in a stamp.
fn stamp_tid(stamp: u64) -> u32 {
    (stamp >> 32) as u32
}

/// This thread's stamp (see [`STAMP`]); its tid is [`stamp_tid`] of it.
#[inline]
fn my_stamp() -> u64 {
    let stamp = STAMP.with(Cell::get);
    if stamp != 0 {
        return stamp;
    }
    look_up_my_stamp()
}

#[cold]
fn look_up_my_stamp() -> u64 {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only resets a thread-local cell.
        unsafe { libc::pthread_atfork(None, None, Some(forget_tid_after_fork)) };
    });
    let tid = (super::gettid() as u32) & TID_MASK;
    // Without /proc the start time reads as 0: reuse then goes undetected (the lock looks held
    // until the new thread of that tid ends), which is never unsound.
    let start = thread_stat(&format!("/proc/self/task/{tid}/stat")).map_or(0, |(_, start)| start);
    let stamp = (u64::from(tid) << 32) | u64::from(start);
    STAMP.with(|t| t.set(stamp));
    stamp
}

/// The state letter and the low 32 bits of the start time of the thread whose `stat` file is
/// at `path` (`None` if it cannot be read). See proc_pid_stat(5): the state is field 3, the
/// start time field 22, both after the command name, which is in parentheses.
fn thread_stat(path: &str) -> Option<(u8, u32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut fields = s[s.rfind(')')? + 1..].split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let start: u64 = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start as u32))
}

/// Whether no thread `tid` exists in our pid namespace (one system call). A thread we may not
/// signal (another user's) exists. See tkill(2).
fn thread_is_gone(tid: u32) -> bool {
    // SAFETY: signal 0 sends nothing: the call only checks that the thread exists.
    let r = unsafe { libc::syscall(libc::SYS_tkill, tid as libc::c_int, 0) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether thread `tid` is dead: gone, or a zombie (a killed or exited process's main thread
/// lingers until its parent reaps it). See proc_pid_stat(5).
///
/// `stamp` is the lock's stamp (see the module docs): if it names `tid` with a start time other
/// than that of the thread now called `tid`, the owner was an earlier thread of that tid, which
/// has ended.
fn thread_is_dead(tid: u32, stamp: u64) -> bool {
    if thread_is_gone(tid) {
        return true;
    }
    match thread_stat(&format!("/proc/{tid}/stat")) {
        // Gone between the two checks.
        None => true,
        Some((state, start)) => {
            matches!(state, b'Z' | b'X' | b'x')
                || (stamp_tid(stamp) == tid && stamp as u32 != start)
        }
    }
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
mod tests {
    use super::*;

    /// A live thread parked until the returned sender drops, and its stamp.
    fn live_thread() -> (
        std::sync::mpsc::Sender<()>,
        std::thread::JoinHandle<()>,
        u64,
    ) {
        let (stamp_tx, stamp_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            stamp_tx.send(my_stamp()).unwrap();
            let _ = stop_rx.recv();
        });
        let stamp = stamp_rx.recv().unwrap();
        (stop_tx, t, stamp)
    }

    fn forged(word: u32, stamp: u64) -> RobustMutex {
        RobustMutex {
            word: AtomicU32::new(word),
            depth: AtomicU32::new(0),
            stamp: AtomicU64::new(stamp),
            recursive: AtomicU32::new(0),
        }
    }

    #[test]
    fn own_stamp_names_this_thread_and_its_start_time() {
        let stamp = my_stamp();
        let tid = stamp_tid(stamp);
        assert_eq!(tid, (super::super::gettid() as u32) & TID_MASK);
        let (_, start) = thread_stat(&format!("/proc/{tid}/stat")).unwrap();
        assert_eq!(stamp as u32, start);
    }

    #[test]
    fn an_owner_whose_tid_was_reused_by_a_live_thread_is_taken_over() {
        let (stop, t, stamp) = live_thread();
        let tid = stamp_tid(stamp);
        // The word names a live thread, but the stamp says the holder started at another time:
        // an earlier thread of that tid, now gone.
        let reused = stamp ^ 1;
        let m = forged(tid, reused);
        let r = m.lock(Some(Instant::now() + Duration::from_secs(10)), false);
        assert!(matches!(r, Ok(Locked::OwnerDied)), "{r:?}");
        assert_eq!(
            m.word.load(Ordering::Relaxed) & TID_MASK,
            stamp_tid(my_stamp())
        );
        assert_eq!(m.stamp.load(Ordering::Relaxed), my_stamp());
        // SAFETY: held just above.
        unsafe { m.unlock(false) };
        assert_eq!(m.stamp.load(Ordering::Relaxed), 0);

        // `try_lock` sees it too, once it has looked for CHECK_EVERY.
        let m = forged(tid, reused);
        let give_up = Instant::now() + Duration::from_secs(10);
        let r = loop {
            match m.try_lock(false) {
                Err(LockFailed::Busy) if Instant::now() < give_up => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                r => break r,
            }
        };
        assert!(matches!(r, Ok(Locked::OwnerDied)), "{r:?}");
        drop(stop);
        t.join().unwrap();
    }

    #[test]
    fn a_live_owner_is_never_taken_over_stamped_or_not() {
        let (stop, t, stamp) = live_thread();
        let tid = stamp_tid(stamp);
        // Not stamped yet (between its compare-and-swap and its stamp), stamped, and a stamp
        // of another tid (left by a scribbler): none proves the owner dead.
        for s in [0, stamp, (u64::from(tid ^ 1) << 32) | 7] {
            let m = forged(tid, s);
            let r = m.lock(Some(Instant::now() + 3 * CHECK_EVERY), false);
            assert!(matches!(r, Err(LockFailed::Busy)), "stamp {s:#x}: {r:?}");
            let until = Instant::now() + 3 * CHECK_EVERY;
            while Instant::now() < until {
                let r = m.try_lock(false);
                assert!(matches!(r, Err(LockFailed::Busy)), "stamp {s:#x}: {r:?}");
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        drop(stop);
        t.join().unwrap();
    }

    #[test]
    fn release_clears_the_stamp_and_recursion_keeps_it() {
        let m = forged(0, 0);
        assert!(matches!(m.lock(None, true), Ok(Locked::Clean)));
        assert!(matches!(m.try_lock(true), Ok(Locked::Clean)));
        // SAFETY: held twice just above.
        unsafe { m.unlock(true) };
        assert_eq!(m.stamp.load(Ordering::Relaxed), my_stamp());
        // SAFETY: as above.
        unsafe { m.unlock(true) };
        assert_eq!(m.stamp.load(Ordering::Relaxed), 0);
        assert_eq!(m.word.load(Ordering::Relaxed), 0);
    }
}
