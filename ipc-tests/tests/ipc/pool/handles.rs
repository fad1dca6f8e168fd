//! Handles (queues, locks, shared values) in the pool's task arguments and initializer: they
//! arrive working in whichever worker runs the task, in `apply`, `map` and `imap` alike.

use std::collections::HashSet;
use std::sync::OnceLock;
use std::time::Duration;

use multiproc::{ErrorKind, Executor, Lock, Pool, ProcessPoolExecutor, Queue, Value};

use super::kill;
use crate::{Context, ensure};

static SINK: OnceLock<Queue<u32>> = OnceLock::new();

fn keep_queue(q: Queue<u32>) {
    let _ = SINK.set(q);
}

fn report_pid(_: ()) -> bool {
    SINK.get()
        .is_some_and(|q| q.put(std::process::id()).is_ok())
}

pub(super) fn initializer_handles() -> Result<(), String> {
    let q = Queue::<u32>::new().ctx("queue")?;
    let pool = Pool::builder()
        .processes(2)
        .initializer(keep_queue, q.clone())
        .build()
        .ctx("pool")?;
    for _ in 0..10 {
        ensure!(
            pool.apply(report_pid, ()).ctx("report")?,
            "put in the worker"
        );
    }
    let pids = pool.pids();
    for _ in 0..10 {
        let pid = q.get_timeout(Duration::from_secs(10)).ctx("get")?;
        ensure!(pids.contains(&pid), "pid {pid} not a worker");
    }
    Ok(())
}

fn put_into(args: (Queue<u64>, u64)) -> u32 {
    let (q, x) = args;
    q.put(x * 10).expect("put from the worker");
    std::process::id()
}

pub(super) fn task_handles() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let q = Queue::<u64>::new().ctx("queue")?;
    for i in 0..20u64 {
        let pid = pool
            .apply(put_into, (q.clone(), i))
            .ctx("apply with a handle")?;
        ensure!(pool.pids().contains(&pid), "pid {pid}");
    }
    let pids = pool
        .map_chunked(put_into, (20..60u64).map(|i| (q.clone(), i)), 7)
        .ctx("map with handles")?;
    ensure!(pids.len() == 40, "map");
    let mut got: Vec<u64> = (0..60)
        .map(|_| q.get_timeout(Duration::from_secs(10)))
        .collect::<Result<_, _>>()
        .ctx("get")?;
    got.sort();
    ensure!(
        got == (0..60u64).map(|i| i * 10).collect::<Vec<_>>(),
        "{got:?}"
    );
    Ok(())
}

/// Counts itself under the shared value's lock, then puts `x * 10` on the queue.
fn count_and_put(args: (Queue<u64>, Value<u64>, u64)) -> u32 {
    let (q, v, x) = args;
    *v.lock()
        .or_else(|e| e.into_inner())
        .expect("the value's lock is broken") += 1;
    q.put(x * 10).expect("put from the worker");
    std::process::id()
}

/// Tells its pid on `who` if it is to nap, naps `ms`, then puts `x` on `out`.
fn nap_then_put(args: (Queue<u32>, Queue<u64>, u64, u64)) -> u64 {
    let (who, out, ms, x) = args;
    if ms > 0 {
        who.put(std::process::id()).expect("tell the pid");
        std::thread::sleep(Duration::from_millis(ms));
    }
    out.put(x).expect("put from the worker");
    x
}

/// Handles inside `imap` items work as in `apply` and `map`, ordered or not, one item or a
/// chunk per task; a worker SIGKILLed while it holds such an item fails that item alone, and
/// the queue it held goes on working for everyone else.
pub(super) fn imap_handles() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let q = Queue::<u64>::new().ctx("queue")?;
    let v = Value::new(0u64).ctx("value")?;
    let items = |r: std::ops::Range<u64>| {
        let (q, v) = (q.clone(), v.clone());
        r.map(move |i| (q.clone(), v.clone(), i))
    };
    let mut pids: Vec<u32> = pool
        .imap(count_and_put, items(0..30))
        .ctx("imap")?
        .collect::<Result<_, _>>()
        .ctx("imap with handles")?;
    pids.extend(
        pool.imap_unordered_chunked(count_and_put, items(30..100), 7)
            .ctx("imap_unordered")?
            .collect::<Result<Vec<u32>, _>>()
            .ctx("imap_unordered with handles")?,
    );
    ensure!(pids.len() == 100, "{} results", pids.len());
    let workers = pool.pids();
    ensure!(
        pids.iter().all(|p| workers.contains(p)),
        "{pids:?} vs {workers:?}"
    );
    let mut got: Vec<u64> = (0..100)
        .map(|_| q.get_timeout(Duration::from_secs(10)))
        .collect::<Result<_, _>>()
        .ctx("get")?;
    got.sort();
    ensure!(
        got == (0..100).map(|i| i * 10).collect::<Vec<_>>(),
        "{got:?}"
    );
    ensure!(v.get().ctx("value")? == 100, "count {:?}", v.get());

    // One worker dies holding an item (and its queues); the other items all arrive.
    let who = Queue::<u32>::new().ctx("who")?;
    let out = Queue::<u64>::new().ctx("out")?;
    let jobs = std::iter::once((who.clone(), out.clone(), 60_000, 0))
        .chain((1..=10).map(|x| (who.clone(), out.clone(), 0, x)));
    let mut it = pool.imap_unordered(nap_then_put, jobs).ctx("imap")?;
    let holder = who
        .get_timeout(Duration::from_secs(30))
        .ctx("the holder's pid")?;
    kill(holder);
    let mut ok = HashSet::new();
    let mut died = 0;
    for r in it.by_ref() {
        match r {
            Ok(x) => {
                ensure!(ok.insert(x), "{x} twice");
            }
            Err(e) if e.kind() == ErrorKind::WorkerDied => {
                ensure!(e.pid() == Some(holder), "pid {:?} vs {holder}", e.pid());
                ensure!(e.signal() == Some(9), "{e}");
                died += 1;
            }
            Err(e) => return Err(format!("unexpected {e}")),
        }
    }
    ensure!(
        died == 1 && ok == (1..=10).collect(),
        "{died} died, ok {ok:?}"
    );
    let mut put: Vec<u64> = (0..10)
        .map(|_| out.get_timeout(Duration::from_secs(10)))
        .collect::<Result<_, _>>()
        .ctx("the survivors' puts")?;
    put.sort();
    ensure!(put == (1..=10).collect::<Vec<_>>(), "{put:?}");
    // The queue the dead worker held still serves a new worker and this process.
    let again: Vec<u64> = pool
        .imap(nap_then_put, [(who.clone(), out.clone(), 0, 77)])
        .ctx("imap after")?
        .collect::<Result<_, _>>()
        .ctx("after the death")?;
    ensure!(again == [77], "{again:?}");
    ensure!(
        out.get_timeout(Duration::from_secs(10)).ctx("77")? == 77,
        "77"
    );
    Ok(())
}

/// Counts itself under `lock` in `count`, and puts `x` on the queue every 100th item.
fn count_under_lock(args: (Lock, Value<u64>, Queue<u64>, u64)) -> u64 {
    let (lock, count, q, x) = args;
    {
        let _held = lock.lock().expect("the shared lock");
        let n = count.get().expect("read the count");
        count.set(n + 1).expect("write the count");
    }
    if x % 100 == 0 {
        q.put(x).expect("put from the worker");
    }
    x
}

/// A task whose 1,000 items all carry the same lock, value and queue is one message with
/// three descriptors (not 3,000: one message carries at most 253), in `map`, `imap` and an
/// executor's `map` alike.
pub(super) fn many_items_share_handles() -> Result<(), String> {
    let lock = Lock::new().ctx("lock")?;
    let count = Value::new(0u64).ctx("value")?;
    let q = Queue::<u64>::new().ctx("queue")?;
    let items = || (0..1000u64).map(|x| (lock.clone(), count.clone(), q.clone(), x));
    let drain = |what: &str| -> Result<(), String> {
        let mut got: Vec<u64> = (0..10)
            .map(|_| q.get_timeout(Duration::from_secs(30)))
            .collect::<Result<_, _>>()
            .ctx(what)?;
        got.sort();
        ensure!(
            got == (0..10).map(|i| i * 100).collect::<Vec<_>>(),
            "{what}: {got:?}"
        );
        Ok(())
    };
    let pool = Pool::new(2).ctx("pool")?;
    let xs = pool
        .map_chunked(count_under_lock, items(), 1000)
        .ctx("map, one task of 1,000 items")?;
    ensure!(xs == (0..1000).collect::<Vec<_>>(), "map results");
    drain("map")?;
    let xs: Vec<u64> = pool
        .imap_chunked(count_under_lock, items(), 1000)
        .ctx("imap")?
        .collect::<Result<_, _>>()
        .ctx("imap, one task of 1,000 items")?;
    ensure!(xs.len() == 1000, "imap results");
    drain("imap")?;
    drop(pool);
    let ex = ProcessPoolExecutor::new(2).ctx("executor")?;
    let xs: Vec<u64> = ex
        .map_chunked(count_under_lock, items(), 1000)
        .ctx("executor map")?
        .collect::<Result<_, _>>()
        .ctx("executor map, one task of 1,000 items")?;
    ensure!(xs.len() == 1000, "executor map results");
    drain("executor map")?;
    ensure!(count.get().ctx("count")? == 3000, "count {:?}", count.get());
    Ok(())
}

/// Takes `lock` once, then SIGKILLs its own worker at item `kill_at` (after the items before
/// it in its task decoded, took and dropped their locks; the items after it never decode).
fn lock_or_die(args: (Lock, u64, u64)) -> u64 {
    let (lock, x, kill_at) = args;
    drop(lock.lock().expect("the shared lock"));
    if x == kill_at {
        // SAFETY: signalling this very worker.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    x
}

/// Hostile: a worker is SIGKILLed in the middle of a task whose ten items carry one lock, with
/// more such tasks prefetched. Only that task fails; the tasks its queue still held run
/// elsewhere (their locks decoded once, not twice); and the lock's arena slot is never given
/// back while it is alive: with it held here, no fresh lock shares its slot (a count given
/// back twice would free the slot for reuse, two locks on one word).
pub(super) fn sigkilled_worker_holding_locks() -> Result<(), String> {
    let lock = Lock::new().ctx("lock")?;
    let pool = Pool::new(2).ctx("pool")?;
    for round in 0..2u64 {
        let kill_at = 25 + round * 100;
        let items: Vec<_> = (round * 100..round * 100 + 100)
            .map(|x| (lock.clone(), x, kill_at))
            .collect();
        let got: Vec<_> = pool
            .imap_chunked(lock_or_die, items, 10)
            .ctx("imap")?
            .collect();
        for (i, r) in got.iter().enumerate() {
            let x = round * 100 + i as u64;
            let in_killed_task = x / 10 == kill_at / 10;
            match r {
                Ok(v) => ensure!(!in_killed_task && *v == x, "item {x}: {v}"),
                Err(e) => ensure!(in_killed_task, "item {x} failed: {e}"),
            }
        }
    }
    drop(pool);
    let _held = lock.lock().ctx("the lock, after the deaths")?;
    let fresh: Vec<Lock> = (0..300)
        .map(|_| Lock::new())
        .collect::<Result<_, _>>()
        .ctx("fresh locks")?;
    for (i, l) in fresh.iter().enumerate() {
        ensure!(
            l.try_lock().is_ok(),
            "fresh lock {i} is held: it shares the live lock's slot"
        );
    }
    Ok(())
}
