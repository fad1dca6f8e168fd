//! Locks and friends between real processes, including holders and waiters killed with SIGKILL.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{
    Array, Barrier, BarrierTimeoutError, BoundedSemaphore, Condition, ConditionTimeoutError, Event,
    Lock, LockError, LockTimeoutError, Process, RLock, Semaphore, TryLockError, Value,
};

use crate::{Context, TestFn, ensure};

#[path = "sync_hostile.rs"]
mod hostile;

#[path = "sync_forged.rs"]
mod forged;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("sync::holder_sigkilled_100_rounds", holder_killed_rounds),
        (
            "sync::lock_timeout_while_child_holds",
            lock_timeout_while_held,
        ),
        (
            "sync::value_locked_increments_two_processes",
            value_increments,
        ),
        ("sync::array_shared_with_child", array_shared),
        ("sync::semaphores_across_processes", semaphores),
        ("sync::event_wakes_every_child", event_wakes_children),
        ("sync::condition_across_processes", condition_across),
        ("sync::barrier_across_processes", barrier_across),
        (
            "sync::barrier_dead_party_breaks_within_timeout",
            barrier_dead_party,
        ),
        ("sync::killed_waiters_harm_no_one", killed_waiters),
        (
            "sync::a_notification_outlives_the_waiter_it_woke",
            notification_outlives_its_waiter,
        ),
        (
            "sync::scribbled_segments_give_typed_errors",
            hostile::scribbled_segments_give_typed_errors,
        ),
        (
            "sync::condition_and_its_lock_as_two_arguments",
            condition_and_lock_as_two_arguments,
        ),
        (
            "sync::peer_filled_semaphore_release_is_overrelease",
            peer_filled_semaphore,
        ),
        (
            "sync::hundred_thousand_locks_and_values_under_ulimit_1024_and_1000_to_a_child",
            many_locks_under_ulimit,
        ),
        (
            "sync::thousand_locks_handed_to_one_child",
            many_locks_to_child,
        ),
        (
            "sync::forged_duplicated_reference_is_refused_and_frees_nothing",
            forged::a_duplicated_reference_is_refused_and_frees_nothing,
        ),
        (
            "sync::forged_duplicated_reference_in_a_pool_task_is_refused",
            forged::a_duplicated_reference_in_a_pool_task_is_refused,
        ),
        (
            "sync::forged_reference_to_an_unsent_slot_is_refused",
            forged::a_reference_to_an_unsent_slot_is_refused,
        ),
        (
            "sync::an_unstarted_process_gives_its_arena_slots_back",
            forged::an_unstarted_process_gives_its_slots_back,
        ),
        (
            "sync::forked_copies_neither_free_nor_reuse_a_live_slot",
            forged::forked_copies_neither_free_nor_reuse_a_live_slot,
        ),
    ]
}

const PATIENCE: Duration = Duration::from_secs(30);

/// The lock-holding objects a child can die holding.
#[derive(serde::Serialize, serde::Deserialize)]
enum Held {
    Lock(Lock),
    RLock(RLock),
    Value(Value<u64>),
    Condition(Condition),
}

/// Takes the lock, half-updates the value if there is one, reports, and waits to be killed.
fn hold_forever(args: (Held, Event)) {
    let (held, ready) = args;
    match &held {
        Held::Lock(l) => {
            let g = l.lock().or_else(LockError::make_consistent).expect("lock");
            ready.set();
            std::thread::sleep(Duration::from_secs(120));
            drop(g);
        }
        Held::RLock(l) => {
            let g1 = l.lock().or_else(LockError::make_consistent).expect("lock");
            let g2 = l.lock().or_else(LockError::make_consistent).expect("lock");
            ready.set();
            std::thread::sleep(Duration::from_secs(120));
            drop((g2, g1));
        }
        Held::Value(v) => {
            let mut g = v.lock().or_else(LockError::make_consistent).expect("lock");
            *g = u64::MAX; // "half-updated"
            ready.set();
            std::thread::sleep(Duration::from_secs(120));
        }
        Held::Condition(c) => {
            let g = c.lock().or_else(LockError::make_consistent).expect("lock");
            ready.set();
            std::thread::sleep(Duration::from_secs(120));
            drop(g);
        }
    }
}

/// Acquires `held` with a deadline; `Ok(true)` if the owner-died indication came with it, after
/// which the state is declared consistent.
fn acquire_after_death(held: &Held) -> Result<bool, String> {
    fn settle<G: multiproc::Recover>(r: Result<G, LockTimeoutError<G>>) -> Result<bool, String> {
        match r {
            Ok(_) => Ok(false),
            Err(LockTimeoutError::OwnerDied(d)) => {
                drop(d.make_consistent());
                Ok(true)
            }
            Err(LockTimeoutError::Timeout) => Err("still locked after the holder died".into()),
            Err(LockTimeoutError::Broken(e)) => Err(format!("the lock broke: {e}")),
        }
    }
    match held {
        Held::Lock(l) => settle(l.lock_timeout(PATIENCE)),
        Held::RLock(l) => settle(l.lock_timeout(PATIENCE)),
        Held::Value(v) => match v.lock_timeout(PATIENCE) {
            Err(LockTimeoutError::OwnerDied(mut d)) => {
                if **d.get_ref() != u64::MAX {
                    return Err("the dead holder's write is not visible".into());
                }
                **d.get_mut() = 0; // repair
                drop(d.make_consistent());
                Ok(true)
            }
            Ok(_) => Ok(false),
            Err(LockTimeoutError::Timeout) => Err("still locked after the holder died".into()),
            Err(LockTimeoutError::Broken(e)) => Err(format!("the lock broke: {e}")),
        },
        Held::Condition(c) => settle(c.get_lock().lock_timeout(PATIENCE)),
    }
}

/// Waits (at most `PATIENCE`) until thread `tid` of this process is asleep: for a thread that
/// is acquiring a held lock, that is the lock's futex wait (the only place its path sleeps).
/// See proc_pid_stat(5): the state is the field after the parenthesized command name.
fn wait_until_asleep(tid: i32) -> bool {
    let end = Instant::now() + PATIENCE;
    while Instant::now() < end {
        let stat =
            std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
        let state = stat
            .rfind(')')
            .and_then(|at| stat[at + 1..].split_ascii_whitespace().next());
        if state == Some("S") {
            return true;
        }
        std::thread::yield_now();
    }
    false
}

fn holder_killed_rounds() -> Result<(), String> {
    let lock = Lock::new().ctx("lock")?;
    let rlock = RLock::new().ctx("rlock")?;
    let value = Value::new(0u64).ctx("value")?;
    let cond = Condition::new().ctx("condition")?;
    let started = Instant::now();
    for round in 0..100 {
        let held = match round % 4 {
            0 => Held::Lock(lock.clone()),
            1 => Held::RLock(rlock.clone()),
            2 => Held::Value(value.clone()),
            _ => Held::Condition(cond.clone()),
        };
        let ready = Event::new().ctx("event")?;
        let mut p = Process::new(hold_forever, (held, ready.clone()));
        p.start().ctx("start")?;
        ensure!(
            ready.wait_timeout(PATIENCE).is_ok(),
            "round {round}: child never locked"
        );
        let held = match round % 4 {
            0 => Held::Lock(lock.clone()),
            1 => Held::RLock(rlock.clone()),
            2 => Held::Value(value.clone()),
            _ => Held::Condition(cond.clone()),
        };
        // On odd rounds the next acquirer is already blocked when the holder dies; on even
        // rounds it arrives afterwards.
        let died = if round % 2 == 1 {
            let (tid_tx, tid_rx) = std::sync::mpsc::channel();
            let waiter = std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                let _ = tid_tx.send(unsafe { libc::gettid() });
                acquire_after_death(&held)
            });
            let tid = tid_rx.recv().map_err(|_| "the waiter never started")?;
            ensure!(
                wait_until_asleep(tid),
                "round {round}: the waiter never went to sleep on the lock"
            );
            p.kill().ctx("kill")?;
            waiter.join().map_err(|_| "waiter panicked")??
        } else {
            p.kill().ctx("kill")?;
            acquire_after_death(&held)?
        };
        let _ = p.join();
        ensure!(died, "round {round}: no owner-died indication");
        // Declared consistent: the next acquisition is clean.
        let clean = acquire_after_death(&match round % 4 {
            0 => Held::Lock(lock.clone()),
            1 => Held::RLock(rlock.clone()),
            2 => Held::Value(value.clone()),
            _ => Held::Condition(cond.clone()),
        })?;
        ensure!(
            !clean,
            "round {round}: indication persisted after make_consistent"
        );
    }
    eprintln!(
        "sync::holder_sigkilled_100_rounds: 100 recoveries in {:?}",
        started.elapsed()
    );
    Ok(())
}

fn hold_until_event(args: (Lock, Event, Event)) {
    let (lock, locked, release) = args;
    let _g = lock
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    locked.set();
    let _ = release.wait_timeout(PATIENCE);
}

fn lock_timeout_while_held() -> Result<(), String> {
    let lock = Lock::new().ctx("lock")?;
    let (locked, release) = (Event::new().ctx("ev")?, Event::new().ctx("ev")?);
    let mut p = Process::new(
        hold_until_event,
        (lock.clone(), locked.clone(), release.clone()),
    );
    p.start().ctx("start")?;
    ensure!(locked.wait_timeout(PATIENCE).is_ok(), "child never locked");
    ensure!(lock.is_locked(), "is_locked while a child holds it");
    ensure!(
        matches!(lock.try_lock(), Err(TryLockError::WouldBlock)),
        "try_lock must fail"
    );
    let t = Instant::now();
    ensure!(
        matches!(
            lock.lock_timeout(Duration::from_millis(50)),
            Err(LockTimeoutError::Timeout)
        ),
        "lock_timeout must time out"
    );
    ensure!(t.elapsed() >= Duration::from_millis(50), "returned early");
    release.set();
    p.join().ctx("join")?;
    ensure!(
        lock.lock_timeout(PATIENCE).is_ok(),
        "free after a clean release"
    );
    Ok(())
}

fn increment(args: (Value<u64>, u32, bool)) {
    let (v, n, atomic) = args;
    for _ in 0..n {
        if atomic {
            // SAFETY: in an atomic run, every process touches the value only atomically (the
            // parent reads it with `get` after joining them).
            unsafe { v.atomic() }.fetch_add(1, Ordering::Relaxed);
        } else {
            *v.lock().or_else(LockError::make_consistent).expect("lock") += 1;
        }
    }
}

fn value_increments() -> Result<(), String> {
    for atomic in [false, true] {
        let v = Value::new(0u64).ctx("value")?;
        let mut ps: Vec<_> = (0..2)
            .map(|_| Process::new(increment, (v.clone(), 100_000, atomic)))
            .collect();
        for p in &mut ps {
            p.start().ctx("start")?;
        }
        for p in &mut ps {
            p.join().ctx("join")?;
        }
        let n = v.get().ctx("read the count")?;
        ensure!(n == 200_000, "atomic={atomic}: {n} increments");
    }
    Ok(())
}

fn fill_squares(a: Array<u32>) -> u64 {
    let mut g = a.lock().or_else(LockError::make_consistent).expect("lock");
    for (i, x) in g.iter_mut().enumerate() {
        *x = (i * i) as u32;
    }
    g.len() as u64
}

fn array_shared() -> Result<(), String> {
    let a = Array::new(10_000, 0u32).ctx("array")?;
    let mut p = Process::new(fill_squares, a.clone());
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")? == 10_000, "child saw another length");
    let v = a.to_vec().ctx("read the array")?;
    ensure!(
        v.iter().enumerate().all(|(i, &x)| x == (i * i) as u32),
        "wrong contents"
    );
    Ok(())
}

/// Acquires twice (waiting for the parent's releases), then over-releases the bounded one.
fn semaphore_child(args: (Semaphore, BoundedSemaphore)) -> (bool, bool) {
    let (sem, bounded) = args;
    let got = sem.acquire_timeout(PATIENCE).is_ok() && sem.acquire_timeout(PATIENCE).is_ok();
    bounded.acquire();
    let back = bounded.release().is_ok();
    let over = bounded.release().is_err();
    (got, back && over)
}

fn semaphores() -> Result<(), String> {
    let sem = Semaphore::new(0).ctx("sem")?;
    let bounded = BoundedSemaphore::new(1).ctx("bounded")?;
    let mut p = Process::new(semaphore_child, (sem.clone(), bounded.clone()));
    p.start().ctx("start")?;
    std::thread::sleep(Duration::from_millis(20));
    sem.release_n(2).map_err(|e| e.to_string())?;
    let (got, bounded_ok) = p.join().ctx("join")?;
    ensure!(got, "child did not get both permits");
    ensure!(bounded_ok, "bounded semaphore semantics in the child");
    ensure!(sem.value() == 0 && bounded.value() == 1, "final values");
    Ok(())
}

fn wait_event(ev: Event) -> bool {
    ev.wait_timeout(PATIENCE).is_ok()
}

fn event_wakes_children() -> Result<(), String> {
    let ev = Event::new().ctx("event")?;
    let mut ps: Vec<_> = (0..3)
        .map(|_| Process::new(wait_event, ev.clone()))
        .collect();
    for p in &mut ps {
        p.start().ctx("start")?;
    }
    std::thread::sleep(Duration::from_millis(20));
    ev.set();
    for p in &mut ps {
        ensure!(p.join().ctx("join")?, "a child timed out");
    }
    Ok(())
}

/// Waits for the value to become positive, then doubles it and notifies back.
fn consume(args: (Condition, Value<u64>)) -> u64 {
    let (cond, v) = args;
    // SAFETY: both processes access this value only through atomics.
    let v = unsafe { v.atomic() };
    let g = cond
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    let g = match cond.wait_for_timeout(g, PATIENCE, || v.load(Ordering::Acquire) > 0) {
        Ok(g) => g,
        Err(ConditionTimeoutError::Timeout(_)) => return 0,
        Err(ConditionTimeoutError::Lock(e)) => e.make_consistent().expect("lock"),
    };
    let seen = v.load(Ordering::Acquire);
    v.store(seen * 2, Ordering::Release);
    cond.notify_all();
    drop(g);
    seen
}

fn condition_across() -> Result<(), String> {
    let cond = Condition::new().ctx("condition")?;
    let value = Value::new(0u64).ctx("value")?;
    let mut p = Process::new(consume, (cond.clone(), value.clone()));
    p.start().ctx("start")?;
    // SAFETY: both processes access this value only through atomics.
    let v = unsafe { value.atomic() };
    std::thread::sleep(Duration::from_millis(20));
    {
        let _g = cond.lock().map_err(|_| "owner died")?;
        v.store(21, Ordering::Release);
        cond.notify(1);
    }
    let g = cond.lock().map_err(|_| "owner died")?;
    let r = cond.wait_for_timeout(g, PATIENCE, || v.load(Ordering::Acquire) == 42);
    ensure!(
        !matches!(r, Err(ConditionTimeoutError::Timeout(_))),
        "the child's notification never came"
    );
    let _g = r.map_err(|_| "owner died")?;
    ensure!(p.join().ctx("join")? == 21, "child saw another value");
    Ok(())
}

fn barrier_party(b: Barrier) -> Result<Vec<u32>, BarrierTimeoutError> {
    (0..3).map(|_| b.wait_timeout(PATIENCE)).collect()
}

fn barrier_across() -> Result<(), String> {
    let b = Barrier::new(3).ctx("barrier")?;
    let mut ps: Vec<_> = (0..2)
        .map(|_| Process::new(barrier_party, b.clone()))
        .collect();
    for p in &mut ps {
        p.start().ctx("start")?;
    }
    let mine = barrier_party(b.clone()).map_err(|e| e.to_string())?;
    let mut all = vec![mine];
    for p in &mut ps {
        all.push(p.join().ctx("join")?.map_err(|e| e.to_string())?);
    }
    for round in 0..3 {
        let mut idx: Vec<u32> = all.iter().map(|v| v[round]).collect();
        idx.sort_unstable();
        ensure!(idx == [0, 1, 2], "round {round}: indexes {idx:?}");
    }
    Ok(())
}

fn wait_once(args: (Barrier, Duration)) -> Result<u32, BarrierTimeoutError> {
    args.0.wait_timeout(args.1)
}

/// A party that would arrive much later; it is killed first.
fn arrive_late(b: Barrier) {
    std::thread::sleep(Duration::from_secs(3600));
    let _ = b.wait();
}

fn barrier_dead_party() -> Result<(), String> {
    let b = Barrier::new(3).ctx("barrier")?;
    // One party waits in a child; another party is a child killed before it arrives.
    let mut waiter = Process::new(wait_once, (b.clone(), PATIENCE));
    waiter.start().ctx("start waiter")?;
    let mut doomed = Process::new(arrive_late, b.clone());
    doomed.start().ctx("start doomed")?;
    doomed.kill().ctx("kill doomed")?;
    let _ = doomed.join();
    ensure!(
        ipc_tests::eventually(PATIENCE, || b.n_waiting() == 1),
        "the waiter never arrived"
    );
    let t = Instant::now();
    let r = b.wait_timeout(Duration::from_millis(300));
    ensure!(r == Err(BarrierTimeoutError::Timeout), "parent: {r:?}");
    ensure!(
        t.elapsed() < PATIENCE,
        "the parent's wait overran its timeout"
    );
    let w = waiter.join().ctx("join waiter")?;
    ensure!(
        w == Err(BarrierTimeoutError::Broken),
        "the waiting child got {w:?}"
    );
    ensure!(b.is_broken(), "broken after a timeout");
    b.reset();
    ensure!(!b.is_broken() && b.n_waiting() == 0, "reset");

    // A party killed while it waits counted as arrived: the others still pass.
    let b = Barrier::new(2).ctx("barrier")?;
    let mut sleeper = Process::new(wait_once, (b.clone(), Duration::from_secs(3600)));
    sleeper.start().ctx("start")?;
    ensure!(
        ipc_tests::eventually(PATIENCE, || b.n_waiting() == 1),
        "the sleeper never arrived"
    );
    sleeper.kill().ctx("kill")?;
    let _ = sleeper.join();
    ensure!(b.wait_timeout(PATIENCE).is_ok(), "the barrier did not pass");
    Ok(())
}

/// Blocks on everything in turn, each with a long timeout; it is killed during the first.
fn block_on(args: (Lock, Semaphore, Event, Condition)) {
    let (lock, sem, ev, cond) = args;
    let _ = lock.lock_timeout(PATIENCE);
    let _ = sem.acquire_timeout(PATIENCE);
    let _ = ev.wait_timeout(PATIENCE);
    let g = cond
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    let _ = cond.wait_timeout(g, PATIENCE);
}

fn killed_waiters() -> Result<(), String> {
    let lock = Lock::new().ctx("lock")?;
    let sem = Semaphore::new(0).ctx("sem")?;
    let ev = Event::new().ctx("event")?;
    let cond = Condition::new().ctx("cond")?;
    let args = (lock.clone(), sem.clone(), ev.clone(), cond.clone());
    // Killed while blocked on the lock (held here).
    let guard = lock.lock().map_err(|_| "owner died")?;
    let mut ps: Vec<_> = (0..3)
        .map(|_| Process::new(block_on, args.clone()))
        .collect();
    for p in &mut ps {
        p.start().ctx("start")?;
    }
    std::thread::sleep(Duration::from_millis(50));
    for p in &mut ps {
        p.kill().ctx("kill")?;
        let _ = p.join();
    }
    drop(guard);
    // Nothing is wedged: a fresh child gets through every primitive.
    let mut p = Process::new(block_on, args);
    p.start().ctx("start")?;
    std::thread::sleep(Duration::from_millis(20));
    sem.release().map_err(|e| e.to_string())?;
    ev.set();
    let t = Instant::now();
    loop {
        match p.join_timeout(Duration::from_millis(10)) {
            Ok(v) => break v,
            Err(multiproc::JoinTimeoutError::Timeout) => {}
            Err(multiproc::JoinTimeoutError::Failed(e)) => return Err(format!("join: {e}")),
        }
        cond.notify_all();
        ensure!(t.elapsed() < PATIENCE, "the fresh child is stuck");
    }
    ensure!(lock.try_lock().is_ok(), "lock free at the end");
    Ok(())
}

/// Waits once on the condition (no predicate), after saying it holds the lock; true if the wait
/// ended before the timeout.
fn condition_wait_once(args: (Condition, Event)) -> bool {
    let (cond, ready) = args;
    let g = cond
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    ready.set();
    cond.wait_timeout(g, PATIENCE).is_ok()
}

/// Two children asleep on a condition; `notify(1)` while the parent holds the lock, so the
/// woken child is stuck re-taking it; one child is killed. Whichever one it was, the other's wait
/// ends: a waiter asleep before a notify sees the sequence moved when its sleep slice ends. (When
/// the killed child was the one woken, the notification used to die with it.)
fn notification_outlives_its_waiter() -> Result<(), String> {
    let cond = Condition::new().ctx("condition")?;
    let mut ps = Vec::new();
    for _ in 0..2 {
        let ready = Event::new().ctx("event")?;
        let mut p = Process::new(condition_wait_once, (cond.clone(), ready.clone()));
        p.start().ctx("start")?;
        ensure!(ready.wait_timeout(PATIENCE).is_ok(), "a child never locked");
        ps.push(p);
    }
    // Both children released the lock inside `wait`: both are registered.
    let g = cond.lock().map_err(|_| "owner died")?;
    cond.notify(1);
    std::thread::sleep(Duration::from_millis(50));
    let mut doomed = ps.remove(0);
    doomed.kill().ctx("kill")?;
    let _ = doomed.join();
    drop(g);
    let mut survivor = ps.remove(0);
    ensure!(
        survivor.join().ctx("join")?,
        "the surviving waiter slept through the notification"
    );
    Ok(())
}

/// Receives a condition and its lock as two arguments (so the lock is mapped twice), waits on
/// the condition with a guard of the separately received lock, and reports what it saw.
fn wait_with_separate_lock(args: (Condition, Lock, Event)) -> bool {
    let (cond, lock, ready) = args;
    let g = lock
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    ready.set();
    cond.wait_timeout(g, PATIENCE).is_ok()
}

fn condition_and_lock_as_two_arguments() -> Result<(), String> {
    let cond = Condition::new().ctx("condition")?;
    let ready = Event::new().ctx("event")?;
    let mut p = Process::new(
        wait_with_separate_lock,
        (cond.clone(), cond.get_lock().clone(), ready.clone()),
    );
    p.start().ctx("start")?;
    ensure!(
        ready.wait_timeout(PATIENCE).is_ok(),
        "the child never locked"
    );
    // Taking the lock proves the child's wait released it; notifying under it wakes the child.
    let g = cond.lock().map_err(|e| e.to_string())?;
    cond.notify_all();
    drop(g);
    ensure!(
        p.join().ctx("join")?,
        "the child's wait did not end by notification"
    );
    Ok(())
}

/// Releases `sem` until it is full (as a hostile or buggy peer may).
fn fill_semaphore(sem: Semaphore) -> u32 {
    let mut n = 0;
    while sem.release_n(1 << 20).is_ok() {
        n += 1;
    }
    while sem.release().is_ok() {}
    n
}

fn peer_filled_semaphore() -> Result<(), String> {
    let sem = Semaphore::new(u32::MAX - 1 - (8 << 20)).ctx("sem")?;
    let mut p = Process::new(fill_semaphore, sem.clone());
    p.start().ctx("start")?;
    p.join().ctx("join")?;
    ensure!(sem.value() == u32::MAX - 1, "not full: {}", sem.value());
    ensure!(
        sem.release() == Err(multiproc::OverRelease),
        "releasing a full semaphore must be OverRelease"
    );
    ensure!(sem.try_acquire().is_ok(), "a permit is there");
    sem.release().map_err(|e| e.to_string())?;
    Ok(())
}

/// Under the default soft limit of 1024 descriptors, makes `n` locks and `n` values and uses
/// each, then hands
/// 1,000 of them (every other one held here) to a child in one message, which inherits the
/// limit.
fn make_many_locks(n: u32) -> Result<u32, String> {
    let lim = libc::rlimit {
        rlim_cur: 1024,
        rlim_max: 1024,
    };
    // SAFETY: a plain setrlimit with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err("setrlimit".into());
    }
    let locks: Vec<Lock> = (0..n)
        .map(|i| Lock::new().map_err(|e| format!("lock #{i}: {e}")))
        .collect::<Result<_, _>>()?;
    let mut ok = 0;
    for l in &locks {
        if l.try_lock().is_ok() {
            ok += 1;
        }
    }
    // As many values (small ones live in the same arena), each written and read back.
    let values: Vec<Value<u64>> = (0..n)
        .map(|i| Value::new(u64::from(i)).map_err(|e| format!("value #{i}: {e}")))
        .collect::<Result<_, _>>()?;
    for (i, v) in values.iter().enumerate() {
        v.set(v.get().ctx("get")? + 1).ctx("set")?;
        ensure!(
            v.get().ctx("get")? == i as u64 + 1,
            "value #{i} lost its write"
        );
    }
    let some: Vec<Lock> = locks.iter().step_by(97).take(1000).cloned().collect();
    check_locks_in_a_child(&some)?;
    Ok(ok)
}

/// Hands `locks` to a child in one message, every other one held here; the child must see
/// exactly those held, and keep few descriptors.
fn check_locks_in_a_child(locks: &[Lock]) -> Result<(), String> {
    let held: Vec<_> = locks.iter().step_by(2).map(|l| l.lock()).collect();
    ensure!(held.iter().all(Result::is_ok), "locking in the parent");
    let mut p = Process::new(try_all, locks.to_vec());
    p.start().ctx("start")?;
    let (got, fds) = p.join().ctx("join")?;
    drop(held);
    ensure!(
        got.len() == locks.len(),
        "the child got {} locks",
        got.len()
    );
    for (i, g) in got.iter().enumerate() {
        ensure!(
            *g == (i % 2 == 1),
            "lock {i}: the child's try_lock gave {g}"
        );
    }
    // One descriptor per arena chunk travelled, and the child mapped each chunk once.
    ensure!(fds < 100, "the child holds {fds} descriptors");
    Ok(())
}

fn many_locks_under_ulimit() -> Result<(), String> {
    let mut p = Process::new(make_many_locks, 100_000);
    p.start().ctx("start")?;
    let made = p.join().ctx("join")??;
    ensure!(made == 100_000, "only {made} locks usable");
    Ok(())
}

/// Receives `locks`, tries each, and reports which it got and how many descriptors it has.
fn try_all(locks: Vec<Lock>) -> (Vec<bool>, usize) {
    let got = locks.iter().map(|l| l.try_lock().is_ok()).collect();
    let fds = std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count);
    (got, fds)
}

fn many_locks_to_child() -> Result<(), String> {
    // A message carries at most 253 descriptors, but the same one (an arena chunk) exported
    // again travels once: 1,000 locks in one go.
    let locks: Vec<Lock> = (0..1000)
        .map(|_| Lock::new())
        .collect::<Result<_, _>>()
        .ctx("locks")?;
    check_locks_in_a_child(&locks)?;
    // Dropping every handle (here and in the child) frees the slots for reuse.
    drop(locks);
    Ok(())
}
