//! Loom models of the sleep/wake protocols: every interleaving (up to the preemption bound)
//! of the real state code, with a futex model in which only a wake ends a sleep. A lost wakeup
//! shows up as loom's deadlock error ("all threads blocked").
//!
//! Run with `RUSTFLAGS="--cfg loom" cargo test --lib --release model_tests` (CI does).

use loom::sync::Arc;
use loom::thread;

use super::barrier::BarrierState;
use super::condition::CondState;
use super::error::BarrierTimeoutError;
use super::event::EventState;
use super::lock::LockCell;
use super::semaphore::SemState;
use super::wait_word::{Slept, WaitWord, Waited};
use crate::atomic::{AtomicU32, Ordering};

fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(3);
    b.check(f);
}

/// Builds a value in place, as the real code does in shared memory.
fn in_place<T>(init: impl FnOnce(*mut T)) -> Arc<T> {
    let mut b = Box::<T>::new_uninit();
    init(b.as_mut_ptr());
    // SAFETY: `init` wrote every field.
    Arc::new(*unsafe { b.assume_init() })
}

/// The protocol itself, with the word as the state: two sleepers wait for a flag that one
/// `swap` raises, and a single `wake` must reach both.
#[test]
fn wait_word_state_word_wakes_every_sleeper() {
    model(|| {
        let w = Arc::new(WaitWord::new(0));
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let w = w.clone();
                thread::spawn(move || {
                    while w.word().load(Ordering::Acquire) == 0 {
                        w.sleep(None, |word| {
                            (word.fetch_add(0, Ordering::AcqRel) == 0).then_some(0)
                        });
                    }
                })
            })
            .collect();
        w.word().swap(1, Ordering::AcqRel);
        w.wake_all();
        for s in sleepers {
            s.join().unwrap();
        }
    });
}

/// The protocol with the word as a sequence for state kept elsewhere: two sleepers each take
/// one token; each token is published with its own `notify(1)`. A notification that slipped
/// between a sleeper's re-check and its sleep would leave one asleep for good.
#[test]
fn wait_word_sequence_word_loses_no_notification() {
    model(|| {
        let w = Arc::new(WaitWord::new(0));
        let tokens = Arc::new(AtomicU32::new(0));
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let (w, tokens) = (w.clone(), tokens.clone());
                thread::spawn(move || {
                    loop {
                        let t = tokens.load(Ordering::Acquire);
                        if t > 0
                            && tokens
                                .compare_exchange(t, t - 1, Ordering::AcqRel, Ordering::Acquire)
                                .is_ok()
                        {
                            return;
                        }
                        let slept = w.sleep_counted(None, |seq| {
                            let seen = seq.load(Ordering::Acquire);
                            (tokens.fetch_add(0, Ordering::AcqRel) == 0).then_some(seen)
                        });
                        assert_ne!(slept, Slept::TimedOut, "no deadline was given");
                    }
                })
            })
            .collect();
        for _ in 0..2 {
            tokens.fetch_add(1, Ordering::AcqRel);
            w.notify(1);
        }
        for s in sleepers {
            s.join().unwrap();
        }
        assert_eq!(tokens.load(Ordering::Relaxed), 0);
    });
}

/// The batched flavour: two sleepers of `wait_until` wait for two publications, each followed
/// by `notify_batched`. The second publication may find the word already disarmed (no wake
/// sent); a sleeper that armed after the first wake must still see it or be woken.
#[test]
fn wait_word_batched_wakes_reach_every_sleeper() {
    model(|| {
        let w = Arc::new(WaitWord::new(0));
        let count = Arc::new(AtomicU32::new(0));
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let (w, count) = (w.clone(), count.clone());
                thread::spawn(move || {
                    let waited = w.wait_until(
                        &crate::sync::spin::Spin::new(),
                        None,
                        |sync| {
                            let c = if sync {
                                count.fetch_add(0, Ordering::AcqRel)
                            } else {
                                count.load(Ordering::Acquire)
                            };
                            c == 2
                        },
                        || false,
                    );
                    assert_eq!(waited, Waited::Ready);
                })
            })
            .collect();
        for _ in 0..2 {
            count.fetch_add(1, Ordering::AcqRel);
            w.notify_batched();
        }
        for s in sleepers {
            s.join().unwrap();
        }
    });
}

#[test]
fn semaphore_two_waiters_two_releases() {
    model(|| {
        let sem = Arc::new(SemState::new(0, u32::MAX - 1));
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let s = sem.clone();
                thread::spawn(move || assert!(s.acquire(None)))
            })
            .collect();
        sem.release(1, u32::MAX - 1).unwrap();
        sem.release(1, u32::MAX - 1).unwrap();
        for w in waiters {
            w.join().unwrap();
        }
        assert_eq!(sem.value(), 0);
    });
}

#[test]
fn bounded_semaphore_never_exceeds_its_bound() {
    model(|| {
        let sem = Arc::new(SemState::new(1, 1));
        let s = sem.clone();
        let t = thread::spawn(move || {
            assert!(s.acquire(None));
            s.release(1, 1).unwrap();
        });
        let over = sem.release(1, 1);
        t.join().unwrap();
        // Either the release came while the permit was out (fine) or it was an over-release.
        assert!(sem.value() <= 1);
        if over.is_ok() {
            assert!(sem.try_acquire());
        }
    });
}

#[test]
fn event_waiter_survives_set_clear_set() {
    // Whenever the waiter starts, a set that it can observe follows, even with a clear
    // in between (a waiter that slept through set+clear must wake on the generation change).
    model(|| {
        let ev = Arc::new(EventState::new());
        let e = ev.clone();
        let waiter = thread::spawn(move || assert!(e.wait(None)));
        ev.set();
        ev.clear();
        ev.set();
        waiter.join().unwrap();
    });
}

#[test]
fn event_two_waiters() {
    model(|| {
        let ev = Arc::new(EventState::new());
        let ws: Vec<_> = (0..2)
            .map(|_| {
                let e = ev.clone();
                thread::spawn(move || assert!(e.wait(None)))
            })
            .collect();
        ev.set();
        for w in ws {
            w.join().unwrap();
        }
    });
}

struct CondModel {
    lock: LockCell,
    cond: CondState,
    ready: AtomicU32,
}

fn cond_model() -> Arc<CondModel> {
    in_place(|p: *mut CondModel| {
        // SAFETY: fresh memory for a CondModel.
        unsafe {
            LockCell::init(&raw mut (*p).lock, false).unwrap();
            (&raw mut (*p).cond).write(CondState::new());
            (&raw mut (*p).ready).write(AtomicU32::new(0));
        }
    })
}

#[test]
fn condition_notify_one_after_state_change_is_not_lost() {
    model(|| {
        let m = cond_model();
        let m2 = m.clone();
        let waiter = thread::spawn(move || {
            m2.lock.lock(None).unwrap().unwrap();
            while m2.ready.load(Ordering::Relaxed) == 0 {
                // SAFETY: held just above (and re-acquired by each wait).
                unsafe { m2.cond.wait(&m2.lock, None).0.unwrap() };
            }
            // SAFETY: held.
            unsafe { m2.lock.release() };
        });
        m.lock.lock(None).unwrap().unwrap();
        m.ready.store(1, Ordering::Relaxed);
        // SAFETY: held.
        unsafe { m.lock.release() };
        m.cond.notify(1);
        waiter.join().unwrap();
    });
}

#[test]
fn condition_two_waiters_notify_all() {
    model(|| {
        let m = cond_model();
        let ws: Vec<_> = (0..2)
            .map(|_| {
                let m2 = m.clone();
                thread::spawn(move || {
                    m2.lock.lock(None).unwrap().unwrap();
                    while m2.ready.load(Ordering::Relaxed) == 0 {
                        // SAFETY: held.
                        unsafe { m2.cond.wait(&m2.lock, None).0.unwrap() };
                    }
                    // SAFETY: held.
                    unsafe { m2.lock.release() };
                })
            })
            .collect();
        m.lock.lock(None).unwrap().unwrap();
        m.ready.store(1, Ordering::Relaxed);
        m.cond.notify(u32::MAX);
        // SAFETY: held.
        unsafe { m.lock.release() };
        for w in ws {
            w.join().unwrap();
        }
    });
}

fn barrier(parties: u32) -> Arc<BarrierState> {
    in_place(|p| {
        // SAFETY: fresh memory for a BarrierState.
        unsafe { BarrierState::init(p, parties).unwrap() }
    })
}

#[test]
fn barrier_two_parties_pass_with_distinct_indexes() {
    model(|| {
        let b = barrier(2);
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(2, None).unwrap());
        let mine = b.wait(2, None).unwrap();
        let theirs = t.join().unwrap();
        assert_eq!(mine + theirs, 1);
    });
}

#[test]
fn barrier_abort_releases_a_waiter() {
    model(|| {
        let b = barrier(2);
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(2, None));
        b.abort();
        assert_eq!(t.join().unwrap(), Err(BarrierTimeoutError::Broken));
    });
}

#[test]
fn barrier_reset_then_abort_releases_a_waiter_and_reopens() {
    model(|| {
        let b = barrier(2);
        let b2 = b.clone();
        let t = thread::spawn(move || b2.wait(2, None));
        // A waiter that arrived before the reset is released by it; one that arrives after
        // is released by the abort.
        b.reset();
        b.abort();
        assert_eq!(t.join().unwrap(), Err(BarrierTimeoutError::Broken));
        b.reset();
        assert!(!b.is_broken());
        assert_eq!(b.n_waiting(), 0);
    });
}

#[test]
fn futex_model_sanity() {
    use super::shim;
    model(|| {
        let w = Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let t = thread::spawn(move || {
            while w2.load(Ordering::Acquire) == 0 {
                shim::wait(&w2, 0, None);
            }
        });
        w.store(1, Ordering::Release);
        shim::wake(&w, 1);
        t.join().unwrap();
    });
}
