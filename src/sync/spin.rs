//! [`Spin`]: whether a waiter of [`WaitWord::wait_until`](super::wait_word::WaitWord::wait_until)
//! polls before it sleeps, decided per side of a queue in the waiter's own memory.
//!
//! Before a futex sleep a waiter may poll its condition: first a few dozen checks with a pause
//! between them (the *spin*, ~2.5 µs here), then a few `sched_yield`s. Across CPUs the spin
//! catches a peer that is about to act without a futex round trip (a wake-up there costs tens
//! of microseconds); the yields hand the CPU to a peer that waits for it on ours. The spin only
//! pays when the peer can run meanwhile, so it is skipped when this side and its peer have one
//! CPU between them, or the machine has one CPU online: on one CPU, two spins in vain per round
//! trip cost more than the whole futex round trip. Each side publishes its CPU mask in the
//! shared state; [`Spin::tick`], once per operation, now and then refreshes ours and reads the
//! peer's (a `sched_getaffinity` per [`REFRESH_EVERY`] operations, and after every poll that
//! ended in a sleep, so that a re-pin is seen soon).
//!
//! The yields stay either way: on one CPU they are what hands the CPU to the peer without a
//! futex round trip, and where nothing else wants our CPU a yield returns at once.
//!
//! No back-off after spins in vain: measured on the pool's `apply` across CPUs, skipping the
//! spin after a miss made a round trip that one miss had slowed stay slow (a peer that sleeps
//! misses the next spin too), while a spin in vain costs ~2.5 µs against a sleep's tens.
//!
//! Everything here is a hint kept in relaxed atomics: a mask a peer scribbled, a stale one
//! after a re-pin, or two threads racing on the counter costs a spin in vain or a sleep that a
//! spin would have spared, never a wake: the sleep/wake protocol after it is the same.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// Pause-separated checks in one spin.
#[cfg(not(loom))]
const CHECKS: u32 = 64;
/// `sched_yield`s after the spin.
#[cfg(not(loom))]
const YIELDS: u32 = 4;
/// The CPU masks are read again at least once per this many ticks (a `sched_getaffinity`
/// system call each time), and at the first tick after a sleep.
const REFRESH_EVERY: u32 = 256;

/// One side's spin policy (see the module docs). Lives in process memory, shared by the
/// threads that use the same mapping.
#[derive(Debug, Default)]
pub(crate) struct Spin {
    /// The last refresh found one CPU between this side and its peer.
    one_cpu: AtomicBool,
    /// Ticks left before the masks are read again (0: at the next tick).
    until_refresh: AtomicU32,
}

impl Spin {
    /// A policy that spins, and reads the masks at its first tick.
    pub(crate) const fn new() -> Spin {
        Spin {
            one_cpu: AtomicBool::new(false),
            until_refresh: AtomicU32::new(0),
        }
    }

    /// Once per operation of this side (a put, a get): now and then, publishes this thread's
    /// CPU mask in `mine` and decides from it and the peer's, `theirs`, whether spinning can
    /// pay. Costs two relaxed accesses to process memory otherwise.
    #[inline]
    pub(crate) fn tick(&self, mine: &AtomicU64, theirs: &AtomicU64) {
        let left = self.until_refresh.load(Ordering::Relaxed);
        if left > 0 {
            self.until_refresh.store(left - 1, Ordering::Relaxed);
        } else {
            self.refresh(mine, theirs);
        }
    }

    #[cold]
    fn refresh(&self, mine: &AtomicU64, theirs: &AtomicU64) {
        self.until_refresh.store(REFRESH_EVERY, Ordering::Relaxed);
        let own = own_mask();
        // Only stored when it changed: the word shares a line with state the peer reads.
        if mine.load(Ordering::Relaxed) != own {
            mine.store(own, Ordering::Relaxed);
        }
        let peer = match theirs.load(Ordering::Relaxed) {
            0 => u64::MAX, // not published yet
            m => m,
        };
        self.one_cpu.store(
            one_cpu_online() || one_cpu_between(own, peer),
            Ordering::Relaxed,
        );
    }

    /// Whether a wait spins before it yields.
    #[cfg_attr(loom, allow(dead_code))]
    pub(crate) fn spins(&self) -> bool {
        !self.one_cpu.load(Ordering::Relaxed)
    }

    /// Polls `ready` before a sleep as the policy says (spin maybe, then yields); true if it
    /// held.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn before_sleep(&self, mut ready: impl FnMut() -> bool) -> bool {
        if ready() {
            return true;
        }
        if self.spins() {
            for _ in 0..CHECKS {
                std::hint::spin_loop();
                if ready() {
                    return true;
                }
            }
        }
        for _ in 0..YIELDS {
            std::thread::yield_now();
            if ready() {
                return true;
            }
        }
        // A sleep follows: maybe the peer moved to our CPU, or away from it; look at the
        // masks at the next tick.
        self.until_refresh.store(0, Ordering::Relaxed);
        false
    }

    /// Under loom, polling only multiplies the interleavings: check once.
    #[cfg(loom)]
    pub(crate) fn before_sleep(&self, mut ready: impl FnMut() -> bool) -> bool {
        ready()
    }
}

/// This thread's CPU mask (under loom, which makes no system calls: every CPU).
fn own_mask() -> u64 {
    #[cfg(not(loom))]
    {
        crate::sys::cpu_mask()
    }
    #[cfg(loom)]
    {
        u64::MAX
    }
}

/// Whether this machine has one CPU online (under loom: no).
fn one_cpu_online() -> bool {
    #[cfg(not(loom))]
    {
        crate::sys::one_cpu_online()
    }
    #[cfg(loom)]
    {
        false
    }
}

/// Whether two CPU masks (one bit per CPU, all bits: unknown) leave one CPU between them.
fn one_cpu_between(a: u64, b: u64) -> bool {
    (a | b).count_ones() < 2
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_between_two_masks() {
        assert!(one_cpu_between(0b10, 0b10));
        assert!(!one_cpu_between(0b01, 0b10));
        assert!(!one_cpu_between(0b01, u64::MAX));
        assert!(!one_cpu_between(u64::MAX, u64::MAX));
    }

    #[test]
    fn a_peer_on_our_one_cpu_means_no_spin() {
        let s = Spin::new();
        let cpu = crate::sys::cpu_mask().trailing_zeros();
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu as usize);
        let old = rustix::thread::sched_getaffinity(None).unwrap();
        rustix::thread::sched_setaffinity(None, &set).unwrap();
        let (mine, theirs) = (AtomicU64::new(0), AtomicU64::new(1 << cpu));
        s.tick(&mine, &theirs);
        assert_eq!(
            mine.load(Ordering::Relaxed),
            1 << cpu,
            "our mask is published"
        );
        assert!(!s.spins());
        // The peer published another CPU: the spin pays again after the next refresh, which
        // a poll that ends in a sleep brings forward.
        theirs.store(1 << ((cpu + 1) % 64), Ordering::Relaxed);
        s.tick(&mine, &theirs);
        assert!(!s.spins(), "not refreshed yet");
        assert!(!s.before_sleep(|| false));
        s.tick(&mine, &theirs);
        rustix::thread::sched_setaffinity(None, &old).unwrap();
        assert_eq!(s.spins(), !crate::sys::one_cpu_online());
    }

    #[test]
    fn a_scribbled_peer_mask_is_only_a_hint() {
        // Zero reads as "not published": every CPU.
        let s = Spin::new();
        s.tick(&AtomicU64::new(0), &AtomicU64::new(0));
        // A peer on every CPU shares none with us only if the machine has one: pinned to one
        // CPU ourselves (`taskset -c 0` over the whole suite), we still spin.
        assert_eq!(
            s.one_cpu.load(Ordering::Relaxed),
            crate::sys::one_cpu_online()
        );
        // A wait still finds a condition that holds, spin or not.
        let mut n = 0;
        assert!(s.before_sleep(|| {
            n += 1;
            n > 3
        }));
    }
}
