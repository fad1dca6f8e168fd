//! `apply`'s caller collects its own result straight from the worker (the direct queue): a
//! worker death, a terminate, a bad result and callbacks on other tasks, all while it does.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::{Callbacks, ErrorKind, Pool};
use serde::{Deserialize, Serialize};

use super::{kill, lock, nap, nap_pid, square};
use crate::{Context, ensure};

/// Waits (bounded) until `pool` has `n` workers, none of them in `not`.
fn workers_again(pool: &Pool, n: usize, not: &[u32]) -> bool {
    ipc_tests::eventually(Duration::from_secs(20), || {
        let pids = pool.pids();
        pids.len() == n && pids.iter().all(|p| !not.contains(p))
    })
}

/// The worker running an `apply` is SIGKILLed while its caller sleeps on the direct queue:
/// the call fails with `WorkerDied` (pid and signal), and the pool serves again.
pub fn killed_while_caller_collects() -> Result<(), String> {
    let pool = Pool::new(1).ctx("pool")?;
    let pid = pool.apply(nap_pid, 0).ctx("warm up")?;
    let outcome = std::thread::scope(|s| {
        let caller = s.spawn(|| pool.apply(nap_pid, 60_000));
        // Long enough for the worker to have taken the task.
        std::thread::sleep(Duration::from_millis(300));
        kill(pid);
        caller.join()
    });
    let e = outcome
        .map_err(|_| "the caller panicked".to_string())?
        .err()
        .ctx("apply must fail")?;
    ensure!(e.kind() == ErrorKind::WorkerDied, "{e}");
    ensure!(e.signal() == Some(9), "signal {:?}", e.signal());
    ensure!(e.pid() == Some(pid), "pid {:?} vs {pid}", e.pid());
    ensure!(pool.apply(square, 12).ctx("after")? == 144, "after");
    ensure!(
        workers_again(&pool, 1, &[pid]),
        "replacement {:?}",
        pool.pids()
    );
    Ok(())
}

/// Workers SIGKILLed at random moments while two threads `apply` quick tasks (so some deaths
/// land while a result is on its way, or being handled): every call returns its value or
/// `WorkerDied`, none hangs, and the pool serves afterwards.
pub fn kills_during_quick_applies() -> Result<(), String> {
    kills_during_applies(2)
}

/// As [`kills_during_quick_applies`], with 16 threads on 2 workers (callers queue at the gate
/// and keep off it while the collector drains).
pub fn kills_during_applies_16_threads() -> Result<(), String> {
    kills_during_applies(16)
}

fn kills_during_applies(threads: u64) -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let stop = AtomicUsize::new(0);
    let died = AtomicUsize::new(0);
    let bad = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for t in 0..threads {
            let (pool, stop, died, bad) = (&pool, &stop, &died, &bad);
            s.spawn(move || {
                let mut i = 0u64;
                while stop.load(Ordering::Relaxed) == 0 {
                    let x = t * 1_000_000 + i;
                    match pool.apply(square, x) {
                        Ok(v) if v == x * x => {}
                        Ok(v) => lock(bad).push(format!("{x} gave {v}")),
                        Err(e) if e.kind() == ErrorKind::WorkerDied => {
                            died.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => lock(bad).push(format!("{x}: {e}")),
                    }
                    i += 1;
                }
            });
        }
        for k in 0..12u64 {
            std::thread::sleep(Duration::from_millis(20 + (k * 37) % 60));
            if let Some(&p) = pool.pids().get((k % 2) as usize) {
                kill(p);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
        stop.store(1, Ordering::Relaxed);
    });
    let bad = lock(&bad);
    ensure!(
        bad.is_empty(),
        "wrong outcomes: {:?}",
        &bad[..bad.len().min(5)]
    );
    ensure!(pool.apply(square, 5).ctx("after")? == 25, "after");
    ensure!(workers_again(&pool, 2, &[]), "workers {:?}", pool.pids());
    Ok(())
}

/// `apply` callers collecting from the direct queue while `apply_async` tasks with callbacks
/// run through the collector: every callback runs exactly once, with its own value, and every
/// `apply` gets its own.
pub fn callbacks_once_beside_direct_applies() -> Result<(), String> {
    const N: u64 = 300;
    let pool = Pool::new(2).ctx("pool")?;
    let seen = Arc::new(Mutex::new(Vec::<u64>::new()));
    let runs = Arc::new(AtomicUsize::new(0));
    let direct_ok = std::thread::scope(|s| -> Result<(), String> {
        let appliers: Vec<_> = (0..2u64)
            .map(|t| {
                let pool = &pool;
                s.spawn(move || {
                    (0..N).all(|i| {
                        let x = 10_000 + t * N + i;
                        pool.apply(square, x).is_ok_and(|v| v == x * x)
                    })
                })
            })
            .collect();
        let rs: Vec<_> = (0..N)
            .map(|i| {
                let (seen, runs) = (seen.clone(), runs.clone());
                let cbs = Callbacks::new().on_success(move |v: &u64| {
                    runs.fetch_add(1, Ordering::Relaxed);
                    lock(&seen).push(*v);
                });
                pool.apply_async_with(square, i, cbs)
            })
            .collect::<Result<_, _>>()
            .ctx("submit")?;
        for (i, r) in rs.iter().enumerate() {
            ensure!(r.get().ctx("get")? == (i * i) as u64, "value {i}");
        }
        for a in appliers {
            ensure!(a.join().unwrap_or(false), "an apply got a wrong value");
        }
        Ok(())
    });
    direct_ok?;
    ensure!(
        runs.load(Ordering::Relaxed) == N as usize,
        "callbacks ran {} times",
        runs.load(Ordering::Relaxed)
    );
    let seen: HashSet<u64> = lock(&seen).iter().copied().collect();
    ensure!(
        seen == (0..N).map(|i| i * i).collect::<HashSet<_>>(),
        "callback values"
    );
    Ok(())
}

/// `terminate()` while one caller collects a running task and another waits for one still
/// queued: both calls return `Cancelled` promptly, and nothing is left running.
pub fn terminate_while_caller_collects() -> Result<(), String> {
    let pool = Pool::new(1).ctx("pool")?;
    let pids = pool.pids();
    let (a, b, took) = std::thread::scope(|s| {
        let running = s.spawn(|| pool.apply(nap, 60_000));
        std::thread::sleep(Duration::from_millis(200));
        let queued = s.spawn(|| pool.apply(nap, 60_000));
        std::thread::sleep(Duration::from_millis(200));
        let t = Instant::now();
        pool.terminate();
        let a = running.join();
        let b = queued.join();
        (a, b, t.elapsed())
    });
    for (what, r) in [("running", a), ("queued", b)] {
        let e = r
            .map_err(|_| format!("the {what} caller panicked"))?
            .err()
            .ctx(what)?;
        ensure!(e.kind() == ErrorKind::Cancelled, "{what}: {e}");
    }
    // Generous: a hang shows as many seconds (the wait's safety net would be 50 ms).
    ensure!(took < Duration::from_secs(5), "terminate took {took:?}");
    pool.join().ctx("join")?;
    for pid in pids {
        ensure!(ipc_tests::is_gone(pid as i32), "worker {pid} still there");
    }
    Ok(())
}

/// Serializes as a byte its own `Deserialize` rejects (a bool must be 0 or 1).
struct Garbled;

impl Serialize for Garbled {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(7)
    }
}

impl<'de> Deserialize<'de> for Garbled {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bool::deserialize(d).map(|_| Garbled)
    }
}

/// Serializes one number; deserializes expecting three (a frame cut short).
struct Truncated;

impl Serialize for Truncated {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(1)
    }
}

impl<'de> Deserialize<'de> for Truncated {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <(u64, u64, u64)>::deserialize(d).map(|_| Truncated)
    }
}

fn garbled(_: ()) -> Garbled {
    Garbled
}

fn truncated(_: ()) -> Truncated {
    Truncated
}

/// A result the caller cannot decode (garbage, or cut short) is a typed `Codec` error for that
/// call alone; the worker stays and the next call works.
pub fn bad_result_frames_are_typed() -> Result<(), String> {
    let pool = Pool::new(1).ctx("pool")?;
    let pids = pool.pids();
    let e = pool.apply(garbled, ()).err().ctx("garbled must fail")?;
    ensure!(e.kind() == ErrorKind::Codec, "garbled: {e}");
    let e = pool.apply(truncated, ()).err().ctx("truncated must fail")?;
    ensure!(e.kind() == ErrorKind::Codec, "truncated: {e}");
    ensure!(pool.apply(square, 3).ctx("after")? == 9, "after");
    ensure!(pool.pids() == pids, "no worker replaced: {:?}", pool.pids());
    Ok(())
}

/// What a blocking call made inside a callback returned, or `None` if it did not return
/// within ten seconds (it waits on the collector thread it runs on: a hang).
fn from_callback<T: Send + 'static>(
    pool: &Arc<Pool>,
    fail: bool,
    call: impl FnOnce(&Pool) -> T + Send + 'static,
) -> Result<Option<T>, String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pool.clone();
    let run = Mutex::new(Some((call, tx)));
    let go = move || {
        if let Some((call, tx)) = lock(&run).take() {
            let _ = tx.send(call(&p));
        }
    };
    if fail {
        let cbs = Callbacks::new().on_error(move |_| go());
        let _ = pool
            .apply_async_with(super::boom_on_13, 13, cbs)
            .ctx("submit")?;
    } else {
        let cbs = Callbacks::new().on_success(move |_: &u64| go());
        let _ = pool.apply_async_with(square, 3, cbs).ctx("submit")?;
    }
    Ok(rx.recv_timeout(Duration::from_secs(10)).ok())
}

/// `apply`, and a blocking `get`, called inside a callback or an error callback (which run on
/// the pool's collector thread, the one that would deliver their result): each returns at
/// once, with a typed `InvalidState` error, instead of waiting on itself forever; `get` with a
/// timeout stays bounded; the pool goes on serving.
pub fn apply_inside_a_callback_is_typed() -> Result<(), String> {
    let pool = Arc::new(Pool::new(1).ctx("pool")?);
    let mut hung = Vec::new();
    for fail in [false, true] {
        match from_callback(&pool, fail, |p| p.apply(square, 4))? {
            None => hung.push(format!("apply (error callback: {fail})")),
            Some(Ok(v)) => ensure!(v == 16, "apply gave {v}"),
            Some(Err(e)) => ensure!(e.kind() == ErrorKind::InvalidState, "apply: {e}"),
        }
        let get = |p: &Pool| p.apply_async(square, 5).map(|r| r.get());
        match from_callback(&pool, fail, get)? {
            None => hung.push(format!("get (error callback: {fail})")),
            Some(Err(e)) => return Err(format!("apply_async: {e}")),
            Some(Ok(Ok(v))) => ensure!(v == 25, "get gave {v}"),
            Some(Ok(Err(e))) => ensure!(e.kind() == ErrorKind::InvalidState, "get: {e}"),
        }
        let timed = |p: &Pool| {
            p.apply_async(square, 6)
                .map(|r| r.get_timeout(Duration::from_millis(200)).is_ok())
        };
        if from_callback(&pool, fail, timed)?.is_none() {
            hung.push(format!("get_timeout (error callback: {fail})"));
        }
    }
    if !hung.is_empty() {
        // The collector is stuck: dropping the pool would wait for it.
        std::mem::forget(pool);
        return Err(format!("hung inside a callback: {hung:?}"));
    }
    ensure!(pool.apply(square, 7).ctx("after")? == 49, "after");
    Ok(())
}

/// A result type whose decoding panics in the parent for 13.
#[derive(Serialize)]
pub struct Bomb(u64);

impl<'de> Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Bomb, D::Error> {
        let v = u64::deserialize(d)?;
        assert!(v != 13, "decoding 13 panics");
        Ok(Bomb(v))
    }
}

fn bomb(x: u64) -> Bomb {
    Bomb(x)
}

/// The caller's own thread decodes its result under the gate, and that decoding panics: the
/// panic (or a typed error) reaches that caller only; other threads' `apply` calls go on, and
/// none hangs on a gate left held.
pub fn panic_while_holding_the_gate() -> Result<(), String> {
    let pool = Arc::new(Pool::new(2).ctx("pool")?);
    let (tx, rx) = std::sync::mpsc::channel();
    let p = pool.clone();
    std::thread::spawn(move || {
        let mut outcomes = Vec::new();
        for round in 0..5u64 {
            let q = p.clone();
            let boom = std::thread::spawn(move || q.apply(bomb, 13).map(|b| b.0)).join();
            outcomes.push(match boom {
                Err(_) => "panicked".to_string(),
                Ok(Ok(v)) => format!("value {v}"),
                Ok(Err(e)) => format!("error {:?}", e.kind()),
            });
            let others: Vec<_> = (0..4u64)
                .map(|t| {
                    let q = p.clone();
                    std::thread::spawn(move || q.apply(square, round * 10 + t))
                })
                .collect();
            for (t, h) in others.into_iter().enumerate() {
                let x = round * 10 + t as u64;
                match h.join() {
                    Ok(Ok(v)) if v == x * x => {}
                    other => outcomes.push(format!("square {x}: {other:?}")),
                }
            }
        }
        let _ = tx.send(outcomes);
    });
    let Ok(outcomes) = rx.recv_timeout(Duration::from_secs(30)) else {
        std::mem::forget(pool);
        return Err("apply hung after a panic under the gate".into());
    };
    ensure!(
        outcomes
            .iter()
            .all(|o| o == "panicked" || o == "error Codec" || o == "error Panicked"),
        "{outcomes:?}"
    );
    ensure!(pool.apply(square, 9).ctx("after")? == 81, "after");
    Ok(())
}

/// `apply` around a pool's ends and its limits: with `max_tasks_per_child(1)` in a loop (a
/// successor per call), with a `task_timeout` it runs past, after `close` and `terminate`, and
/// racing `terminate` from another thread: each a value or a typed error, none a hang.
pub fn apply_at_the_edges() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(1)
        .max_tasks_per_child(1)
        .build()
        .ctx("recycling pool")?;
    let mut pids = HashSet::new();
    for i in 0..8u64 {
        ensure!(
            pool.apply(square, i).ctx("recycled apply")? == i * i,
            "value {i}"
        );
        pids.insert(pool.apply(nap_pid, 0).ctx("pid")?);
    }
    ensure!(pids.len() == 8, "one worker per task, got {}", pids.len());
    drop(pool);

    let pool = Pool::builder()
        .processes(1)
        .task_timeout(Duration::from_millis(200))
        .build()
        .ctx("timeout pool")?;
    let started = Instant::now();
    let e = pool.apply(nap, 60_000).err().ctx("must time out")?;
    ensure!(e.kind() == ErrorKind::TaskTimeout, "{e}");
    ensure!(started.elapsed() < Duration::from_secs(30), "late");
    ensure!(
        pool.apply(square, 3).ctx("after timeout")? == 9,
        "after timeout"
    );
    pool.close();
    let e = pool.apply(square, 3).err().ctx("after close")?;
    ensure!(e.kind() == ErrorKind::Closed, "after close: {e}");
    pool.terminate();
    let e = pool.apply(square, 3).err().ctx("after terminate")?;
    ensure!(e.kind() == ErrorKind::Closed, "after terminate: {e}");
    drop(pool);

    for _ in 0..3 {
        let pool = Arc::new(Pool::new(2).ctx("racing pool")?);
        let (tx, rx) = std::sync::mpsc::channel();
        for t in 0..4u64 {
            let (p, tx) = (pool.clone(), tx.clone());
            std::thread::spawn(move || {
                let mut bad = None;
                for i in 0..200u64 {
                    match p.apply(square, t * 1000 + i) {
                        Ok(v) if v == (t * 1000 + i).pow(2) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                ErrorKind::Closed | ErrorKind::Cancelled | ErrorKind::WorkerDied
                            ) => {}
                        other => bad = Some(format!("{other:?}")),
                    }
                }
                let _ = tx.send(bad);
            });
        }
        drop(tx);
        std::thread::sleep(Duration::from_millis(30));
        pool.terminate();
        drop(pool);
        for _ in 0..4 {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok(None) => {}
                Ok(Some(bad)) => return Err(format!("racing terminate: {bad}")),
                Err(_) => return Err("apply hung racing terminate".into()),
            }
        }
    }
    Ok(())
}

/// More results than one collector batch (600 tiny tasks on two workers, so that hundreds
/// arrive together), every 50th callback panicking and the pool terminated from inside the
/// 300th callback, mid-batch: every result resolves exactly once (a value, or `Cancelled` for
/// those the terminate caught), no callback runs twice, none waits forever.
pub fn terminate_and_panics_inside_a_big_batch() -> Result<(), String> {
    for round in 0..3 {
        let pool = Arc::new(Pool::new(2).ctx("pool")?);
        let runs = Arc::new(Mutex::new(vec![0u32; 600]));
        let rs: Vec<_> = (0..600u64)
            .map(|i| {
                let (runs, p) = (runs.clone(), Arc::downgrade(&pool));
                let cbs = Callbacks::new().on_success(move |v: &u64| {
                    lock(&runs)[i as usize] += 1;
                    assert_eq!(*v, i * i);
                    if i == 300
                        && let Some(p) = p.upgrade()
                    {
                        p.terminate();
                    }
                    if i % 50 == 0 {
                        panic!("callback {i} panics on purpose");
                    }
                });
                pool.apply_async_with(square, i, cbs)
            })
            .collect::<Result<_, _>>()
            .ctx("submit")?;
        let (mut cancelled, mut ok) = (0, 0);
        for (i, r) in rs.iter().enumerate() {
            match r.get_timeout(Duration::from_secs(30)) {
                Ok(v) => {
                    ensure!(v == (i * i) as u64, "round {round}: value {i}: {v}");
                    ensure!(
                        lock(&runs)[i] == 1,
                        "round {round}: {i}'s callback did not run"
                    );
                    ok += 1;
                }
                Err(multiproc::AsyncGetTimeoutError::Failed(e))
                    if e.kind() == ErrorKind::Cancelled =>
                {
                    cancelled += 1;
                }
                Err(e) => return Err(format!("round {round}: task {i}: {e}")),
            }
        }
        let runs = lock(&runs).clone();
        ensure!(
            runs.iter().all(|&n| n <= 1),
            "round {round}: a callback ran twice"
        );
        let ran = runs.iter().filter(|&&n| n == 1).count();
        ensure!(
            ok + cancelled == 600 && ran == ok && runs[300] == 1,
            "round {round}: {ok} values, {ran} callbacks, {cancelled} cancelled"
        );
        drop(pool);
    }
    Ok(())
}
