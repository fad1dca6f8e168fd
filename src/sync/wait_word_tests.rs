//! Hostile tests of the `WaitWord` users (`Semaphore`, `Event`, `Condition`): the sleepers word
//! scribbled by a peer, or left behind by a sleeper killed while asleep.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU32;
use std::sync::mpsc::{RecvTimeoutError, channel};
use std::time::Duration;

use crate::atomic::Ordering;
use crate::shm::HEADER_LEN;
use crate::{Condition, Event, Semaphore};

/// Where a `WaitWord`'s `sleepers` lies in each object's state: the word at 0, `sleepers` after it.
const SLEEPERS: usize = 4;

/// Runs `f` on the `u32` at `offset` bytes into the data of the segment behind `fd`, through a
/// mapping of its own, as another process would.
fn with_word<R>(fd: &OwnedFd, offset: usize, f: impl FnOnce(&AtomicU32) -> R) -> R {
    let len = HEADER_LEN + offset + 4;
    let p = crate::sys::map_shared(fd.as_fd(), len, true).unwrap();
    // SAFETY: inside the mapping just made; the offsets used are 4-aligned. The mapping is
    // unmapped only after `f` is done with the reference.
    unsafe {
        let r = f(&*p.as_ptr().add(HEADER_LEN + offset).cast::<AtomicU32>());
        crate::sys::unmap(p, len);
        r
    }
}

fn peek(fd: &OwnedFd, offset: usize) -> u32 {
    with_word(fd, offset, |w| w.load(Ordering::SeqCst))
}

fn poke(fd: &OwnedFd, offset: usize, value: u32) {
    with_word(fd, offset, |w| w.store(value, Ordering::SeqCst));
}

/// Starts `wait` (untimed) in a thread, lets it fall asleep, scribbles its registration away
/// (`sleepers` = 0, as a peer could), then `post`s once, as a correct peer would: the wait must
/// end. Before sleeps were bounded, the post skipped its wake and the waiter slept for good.
fn post_reaches_a_waiter_whose_registration_was_scribbled(
    fd: &OwnedFd,
    wait: impl FnOnce() + Send + 'static,
    post: impl FnOnce(),
) {
    let (tx, rx) = channel();
    let t = std::thread::spawn(move || {
        wait();
        tx.send(()).unwrap();
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(300)),
        Err(RecvTimeoutError::Timeout),
        "the wait ended before anything was posted"
    );
    assert_ne!(peek(fd, SLEEPERS), 0, "the waiter did not register");
    poke(fd, SLEEPERS, 0);
    post();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(30)),
        Ok(()),
        "a waiter slept through a post because its registration was scribbled"
    );
    t.join().unwrap();
}

#[test]
fn a_scribbled_sleepers_word_cannot_hang_a_semaphore_acquire() {
    let sem = Semaphore::new(0).unwrap();
    let s2 = sem.clone();
    post_reaches_a_waiter_whose_registration_was_scribbled(
        sem.segment_fd(),
        move || s2.acquire(),
        || sem.release().unwrap(),
    );
}

#[test]
fn a_scribbled_sleepers_word_cannot_hang_an_event_wait() {
    let ev = Event::new().unwrap();
    let e2 = ev.clone();
    post_reaches_a_waiter_whose_registration_was_scribbled(
        ev.segment_fd(),
        move || e2.wait(),
        || ev.set(),
    );
}

#[test]
fn a_scribbled_sleepers_word_cannot_hang_a_condition_wait() {
    let cond = Condition::new().unwrap();
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (c2, f2) = (cond.clone(), flag.clone());
    post_reaches_a_waiter_whose_registration_was_scribbled(
        cond.segment_fd(),
        move || {
            let mut g = c2.lock().unwrap();
            while !f2.load(Ordering::Acquire) {
                g = c2.wait(g).unwrap();
            }
        },
        || {
            let _g = cond.lock().unwrap();
            flag.store(true, Ordering::Release);
            cond.notify(1);
        },
    );
}

/// A sleeper killed while asleep leaves its registration behind (`sleepers` = 1, nobody
/// asleep). For an `Event`, whose `set` wakes everyone, the next post must clear it: one wasted
/// `FUTEX_WAKE`, not one on every post for good. (A `Semaphore` keeps a count, see
/// `WaitWord::sleep_counted`: there the stale registration costs a wake call per release.)
#[test]
fn an_event_sleeper_killed_asleep_costs_one_wake_not_one_per_set() {
    let ev = Event::new().unwrap();
    // Any value a peer may write means "wake", and is cleared by that wake.
    for left in [1, 2, 0x8000_0000, u32::MAX] {
        poke(ev.segment_fd(), SLEEPERS, left);
        ev.set();
        assert_eq!(peek(ev.segment_fd(), SLEEPERS), 0, "{left:#x} stayed");
        ev.clear();
    }
}

/// The layout these tests rely on: each object's state starts with its `WaitWord`.
#[test]
fn the_wait_word_is_where_these_tests_look() {
    let sem = Semaphore::new(5).unwrap();
    assert_eq!(peek(sem.segment_fd(), 0), 5);
    let ev = Event::new().unwrap();
    ev.set();
    assert_eq!(peek(ev.segment_fd(), 0) & 1, 1);
    let cond = Condition::new().unwrap();
    cond.notify_all();
    assert_ne!(
        peek(cond.segment_fd(), 0),
        0,
        "notify advances the sequence"
    );
}

/// CPU time the calling thread has used.
fn thread_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(
        u64::try_from(t.tv_sec).unwrap(),
        u32::try_from(t.tv_nsec).unwrap(),
    )
}

/// Runs `wait` in a thread and returns what it returned, how long it took and how much CPU it
/// used.
fn timed<R: Send + 'static>(wait: impl FnOnce() -> R + Send + 'static) -> (R, Duration, Duration) {
    std::thread::spawn(move || {
        let (cpu, start) = (thread_cpu(), std::time::Instant::now());
        let r = wait();
        (r, start.elapsed(), thread_cpu() - cpu)
    })
    .join()
    .unwrap()
}

/// Every word of each object's state scribbled (the state word and `sleepers`), then a timed
/// wait that nobody ends: it must end in `Timeout`, not before its deadline, and sleep rather
/// than spin through its slices (a spinning wait would use about as much CPU as wall time).
#[test]
fn a_timed_wait_on_scribbled_words_times_out_asleep() {
    const WAIT: Duration = Duration::from_millis(450);
    let check = |what: &str, timed_out: bool, took: Duration, cpu: Duration| {
        assert!(timed_out, "{what}: the wait did not time out");
        assert!(took >= WAIT, "{what}: timed out early, after {took:?}");
        assert!(cpu < WAIT / 4, "{what}: used {cpu:?} of CPU in {took:?}");
    };
    let sem = Semaphore::new(0).unwrap();
    poke(sem.segment_fd(), SLEEPERS, u32::MAX);
    let s2 = sem.clone();
    let (r, took, cpu) = timed(move || s2.acquire_timeout(WAIT));
    check("semaphore", r.is_err(), took, cpu);

    let ev = Event::new().unwrap();
    poke(ev.segment_fd(), 0, 0xfffe);
    poke(ev.segment_fd(), SLEEPERS, u32::MAX);
    let e2 = ev.clone();
    let (r, took, cpu) = timed(move || e2.wait_timeout(WAIT));
    check("event", r.is_err(), took, cpu);

    let cond = Condition::new().unwrap();
    poke(cond.segment_fd(), 0, u32::MAX);
    poke(cond.segment_fd(), SLEEPERS, u32::MAX);
    let c2 = cond.clone();
    let (r, took, cpu) = timed(move || {
        let g = c2.lock().unwrap();
        c2.wait_timeout(g, WAIT).is_err()
    });
    check("condition", r, took, cpu);
}

/// Waits until `n` sleepers are registered in the `sleepers` word at `fd` over `base`.
fn until_registered(fd: &OwnedFd, base: u32, n: u32) {
    let start = std::time::Instant::now();
    while peek(fd, SLEEPERS).wrapping_sub(base) < n {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "waiters never slept"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two sleepers on one `Event`, one `set`: both wake. Then set / clear / set with a sleeper
/// between each: every wait ends.
#[test]
fn one_set_wakes_two_event_sleepers_and_set_clear_set_loses_none() {
    let ev = Event::new().unwrap();
    let (tx, rx) = channel();
    for _ in 0..2 {
        let (e2, tx) = (ev.clone(), tx.clone());
        std::thread::spawn(move || {
            e2.wait();
            tx.send(()).unwrap();
        });
    }
    std::thread::sleep(Duration::from_millis(150));
    ev.set();
    for _ in 0..2 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(()));
    }
    for _ in 0..50 {
        ev.clear();
        let e2 = ev.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            e2.wait();
            tx.send(()).unwrap();
        });
        ev.set();
        ev.clear();
        ev.set();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(()));
    }
}

/// Three sleepers on a `Semaphore` whose count of sleepers is too high (waiters killed asleep
/// left their registrations behind) or scribbled to 0: one `release_n(3)` lets all three through.
#[test]
fn release_n_reaches_every_sleeper_past_stale_or_scribbled_registrations() {
    for scribble in [None, Some(0)] {
        let sem = Semaphore::new(0).unwrap();
        poke(sem.segment_fd(), SLEEPERS, 5);
        let (tx, rx) = channel();
        for _ in 0..3 {
            let (s2, tx) = (sem.clone(), tx.clone());
            std::thread::spawn(move || {
                s2.acquire();
                tx.send(()).unwrap();
            });
        }
        until_registered(sem.segment_fd(), 5, 3);
        if let Some(v) = scribble {
            poke(sem.segment_fd(), SLEEPERS, v);
        }
        sem.release_n(3).unwrap();
        for _ in 0..3 {
            assert_eq!(
                rx.recv_timeout(Duration::from_secs(30)),
                Ok(()),
                "{scribble:?}"
            );
        }
        assert_eq!(sem.value(), 0);
    }
}

/// What `Condition`'s docs say of `notify(1)` with two waiters asleep: one wait ends at once,
/// the other when its sleep slice ends (it cannot tell a wake meant for the first from one a
/// scribble made the notifier skip). Neither may sleep on for good.
#[test]
fn notify_one_with_two_waiters_ends_both_waits() {
    let cond = Condition::new().unwrap();
    let (tx, rx) = channel();
    for _ in 0..2 {
        let (c2, tx) = (cond.clone(), tx.clone());
        std::thread::spawn(move || {
            let g = c2.lock().unwrap();
            drop(c2.wait(g).unwrap());
            tx.send(()).unwrap();
        });
    }
    until_registered(cond.segment_fd(), 0, 2);
    // Once this thread holds the lock, both waiters have read the sequence and released it.
    let g = cond.lock().unwrap();
    cond.notify(1);
    drop(g);
    for _ in 0..2 {
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)), Ok(()));
    }
}
