//! A worker's life: an initializer that fails (at start and on replacement), a task that
//! exits the worker, per-task timeouts, cancelling a running task, and recycling by task count
//! and by memory.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use multiproc::{ErrorKind, Pool};

use super::{kill, nap, nap_pid, square};
use crate::{Context, ensure};

fn failing_init(_: ()) {
    panic!("initializer refuses");
}

pub fn failing_initializer() -> Result<(), String> {
    let started = Instant::now();
    let e = Pool::builder()
        .processes(2)
        .initializer(failing_init, ())
        .build()
        .err()
        .ctx("the pool must not start")?;
    ensure!(e.kind() == ErrorKind::Initializer, "{e}");
    ensure!(e.to_string().contains("initializer refuses"), "{e}");
    // Bounded: a few attempts, not a respawn loop (the watchdog would catch a loop; this
    // only reports how long it took).
    eprintln!("failing initializer reported after {:?}", started.elapsed());
    Ok(())
}

/// Succeeds for the first two workers, then panics: a replacement that can never start.
fn init_twice(starts: multiproc::Value<u32>) {
    let n = {
        let mut g = starts
            .lock()
            .or_else(|e| e.into_inner())
            .expect("the lock is broken");
        *g += 1;
        *g
    };
    if n > 2 {
        panic!("worker start {n} refused");
    }
}

pub fn failing_replacement_initializer() -> Result<(), String> {
    let starts = multiproc::Value::new(0u32).ctx("value")?;
    let pool = Pool::builder()
        .processes(2)
        .initializer(init_twice, starts.clone())
        .build()
        .ctx("pool")?;
    let victim = pool.pids()[0];
    kill(victim);
    // The pool tries a bounded number of replacements, then runs on with one worker.
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || *starts
            .lock()
            .or_else(|e| e.into_inner())
            .expect("the lock is broken")
            >= 5),
        "replacement attempts: {}",
        *starts
            .lock()
            .or_else(|e| e.into_inner())
            .expect("the lock is broken")
    );
    for i in 0..10 {
        ensure!(
            pool.apply(square, i).ctx("one worker left")? == i * i,
            "apply {i}"
        );
    }
    // The last refused replacement is dropped from the pool once its death is seen, which on
    // a loaded machine can take a while: wait for it, then check no further attempt was made.
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || pool.pids().len() == 1),
        "the refused replacement is still listed: {:?}",
        pool.pids()
    );
    std::thread::sleep(Duration::from_millis(300));
    let attempts = *starts
        .lock()
        .or_else(|e| e.into_inner())
        .expect("the lock is broken");
    ensure!(
        attempts == 5,
        "2 starts + 3 failed replacements, not a loop: {attempts}"
    );
    ensure!(pool.pids().len() == 1, "{:?}", pool.pids());
    Ok(())
}

fn exit_now(code: i32) -> u8 {
    std::process::exit(code)
}

pub fn exit_in_task() -> Result<(), String> {
    let pool = Pool::new(1).ctx("pool")?;
    let e = pool.apply(exit_now, 4).err().ctx("must fail")?;
    ensure!(e.kind() == ErrorKind::WorkerDied, "{e}");
    ensure!(e.exit_code() == Some(4), "exit code {:?}", e.exit_code());
    ensure!(pool.apply(square, 3).ctx("after")? == 9, "after");
    Ok(())
}

pub fn task_timeout() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(2)
        .task_timeout(Duration::from_millis(300))
        .build()
        .ctx("pool")?;
    let before = pool.pids();
    let slow = pool.apply_async(nap, 60_000).ctx("slow")?;
    let fast = pool.apply_async(nap, 10).ctx("fast")?;
    let e = slow.get().err().ctx("slow must time out")?;
    ensure!(e.kind() == ErrorKind::TaskTimeout, "{e}");
    ensure!(
        e.pid().is_some_and(|p| before.contains(&p)),
        "pid {:?}",
        e.pid()
    );
    ensure!(fast.get().ctx("fast")? == 10, "fast");
    ensure!(pool.apply(square, 5).ctx("after")? == 25, "after");
    ensure!(
        ipc_tests::eventually(Duration::from_secs(20), || pool.pids().len() == 2),
        "replaced: {:?}",
        pool.pids()
    );
    Ok(())
}

pub fn cancel() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(1)
        .prefetch(1)
        .build()
        .ctx("pool")?;
    let before = pool.pids();
    let running = pool.apply_async(nap_pid, 60_000).ctx("running")?;
    let waiting = pool.apply_async(nap_pid, 60_000).ctx("waiting")?;
    std::thread::sleep(Duration::from_millis(50));
    ensure!(waiting.cancel(), "cancel a waiting task");
    let e = waiting.get().err().ctx("waiting must be cancelled")?;
    ensure!(e.kind() == ErrorKind::Cancelled, "{e}");
    ensure!(
        pool.pids() == before,
        "cancelling a waiting task kills nothing"
    );
    ensure!(running.cancel(), "cancel a running task");
    let e = running.get().err().ctx("running must be cancelled")?;
    ensure!(e.kind() == ErrorKind::Cancelled, "{e}");
    ensure!(!running.cancel(), "a second cancel finds it finished");
    // Its worker was killed and replaced; the pool goes on.
    ensure!(pool.apply(square, 6).ctx("after")? == 36, "after");
    ensure!(
        ipc_tests::eventually(Duration::from_secs(20), || {
            let now = pool.pids();
            now.len() == 1 && now != before
        }),
        "replacement: {:?} (before {before:?})",
        pool.pids()
    );
    let done = pool.apply_async(square, 2).ctx("done")?;
    done.wait();
    ensure!(!done.cancel(), "a finished task cannot be cancelled");
    ensure!(done.get().ctx("done")? == 4, "done value");
    Ok(())
}

pub fn max_tasks_per_child() -> Result<(), String> {
    // CPython's gh-115634 shape: 1 < max_tasks_per_child < tasks / workers.
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(2)
        .build()
        .ctx("pool")?;
    let rs: Vec<_> = (0..20)
        .map(|_| pool.apply_async(nap_pid, 5))
        .collect::<Result<_, _>>()
        .ctx("submit")?;
    let mut per_pid = std::collections::HashMap::<u32, usize>::new();
    for r in &rs {
        *per_pid.entry(r.get().ctx("get")?).or_default() += 1;
    }
    ensure!(
        per_pid.len() == 10,
        "10 workers should have run 2 tasks each: {per_pid:?}"
    );
    ensure!(per_pid.values().all(|&n| n == 2), "{per_pid:?}");
    // A map counts chunks as tasks.
    let m = pool.map_chunked(square, 0..100u64, 10).ctx("map")?;
    ensure!(m.len() == 100, "map");
    pool.close();
    pool.join().ctx("join")?;
    Ok(())
}

pub fn max_memory() -> Result<(), String> {
    // Every worker is over a 1-byte limit after its first task: each retires after the
    // tasks it holds, and a fresh one takes over. No task fails for it.
    let pool = Pool::builder()
        .processes(2)
        .prefetch(1)
        .max_memory_per_child(1)
        .build()
        .ctx("pool")?;
    let pids: Vec<u32> = (0..6)
        .map(|_| pool.apply(nap_pid, 1))
        .collect::<Result<_, _>>()
        .ctx("tasks")?;
    let distinct: HashSet<u32> = pids.iter().copied().collect();
    ensure!(
        distinct.len() == 6,
        "every task on a fresh worker: {pids:?}"
    );
    ensure!(
        pool.progress().workers_replaced == 0,
        "{:?}",
        pool.progress()
    );
    Ok(())
}
