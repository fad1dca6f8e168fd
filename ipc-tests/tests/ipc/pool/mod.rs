//! Pool: the API, and every way a task, a callback or a worker can fail, with real processes
//! and real signals.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::{Callbacks, ErrorKind, Pool};
use serde::{Deserialize, Serialize};

mod chaos;
mod collect;
mod handles;
mod lifecycle;

use crate::{Context, TestFn, ensure};
use chaos::{chaos, chaos_deep, ctrl_c, ctrl_c_handled, ctrl_c_handled_forkserver, lock};
use handles::{
    imap_handles, initializer_handles, many_items_share_handles, sigkilled_worker_holding_locks,
    task_handles,
};
use lifecycle::{
    cancel, exit_in_task, failing_initializer, failing_replacement_initializer, max_memory,
    max_tasks_per_child, task_timeout,
};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("pool::apply_map_imap", apply_map_imap),
        ("pool::zero_processes_is_an_error", zero_processes),
        ("pool::closed_pool_rules", closed_pool_rules),
        ("pool::callbacks_once_and_panics_caught", callbacks),
        ("pool::panicking_task_fails_alone", panicking_task),
        ("pool::serialization_failures", serialization_failures),
        (
            "pool::forkserver_workers_are_replaced_after_sigkill",
            forkserver_workers,
        ),
        (
            "pool::sigkilled_worker_fails_only_its_task",
            sigkilled_worker,
        ),
        ("pool::failing_initializer_is_bounded", failing_initializer),
        (
            "pool::failing_replacement_initializer_no_respawn_loop",
            failing_replacement_initializer,
        ),
        ("pool::exit_in_a_task_fails_it", exit_in_task),
        ("pool::initializer_receives_handles", initializer_handles),
        ("pool::handles_as_task_arguments", task_handles),
        ("pool::handles_in_imap_items", imap_handles),
        (
            "pool::a_thousand_items_share_one_set_of_handles",
            many_items_share_handles,
        ),
        (
            "pool::sigkilled_worker_mid_task_with_locks",
            sigkilled_worker_holding_locks,
        ),
        ("pool::task_timeout_kills_and_replaces", task_timeout),
        ("pool::cancel_waiting_and_running_tasks", cancel),
        ("pool::max_tasks_per_child_gh115634", max_tasks_per_child),
        ("pool::max_memory_per_child_recycles", max_memory),
        ("pool::imap_backpressure", imap_backpressure),
        (
            "pool::imap_used_on_after_its_input_panicked",
            imap_after_input_panic,
        ),
        ("pool::large_tasks_and_results", large_values),
        ("pool::terminate_while_running", terminate_while_running),
        ("pool::drop_finishes_outstanding_work", drop_finishes_work),
        (
            "pool::last_handle_dropped_in_a_callback",
            dropped_in_callback,
        ),
        ("pool::chaos_1000_tasks_50_kills", chaos),
        (
            "pool::apply_caller_collects_worker_killed",
            collect::killed_while_caller_collects,
        ),
        (
            "pool::apply_caller_collects_random_kills",
            collect::kills_during_quick_applies,
        ),
        (
            "pool::apply_caller_collects_beside_callbacks",
            collect::callbacks_once_beside_direct_applies,
        ),
        (
            "pool::apply_caller_collects_terminate",
            collect::terminate_while_caller_collects,
        ),
        (
            "pool::apply_caller_collects_bad_result_frames",
            collect::bad_result_frames_are_typed,
        ),
        (
            "pool::apply_inside_a_callback_is_typed",
            collect::apply_inside_a_callback_is_typed,
        ),
        (
            "pool::apply_caller_collects_random_kills_16_threads",
            collect::kills_during_applies_16_threads,
        ),
        (
            "pool::apply_caller_collects_panic_under_the_gate",
            collect::panic_while_holding_the_gate,
        ),
        (
            "pool::apply_caller_collects_at_the_edges",
            collect::apply_at_the_edges,
        ),
        (
            "pool::terminate_and_panics_inside_a_big_batch",
            collect::terminate_and_panics_inside_a_big_batch,
        ),
        ("pool::chaos_deep_prefetch", chaos_deep),
        ("pool::ctrl_c_during_map_ends_everything", ctrl_c),
        (
            "pool::ctrl_c_handled_by_the_program_is_a_typed_error",
            ctrl_c_handled,
        ),
        (
            "pool::ctrl_c_handled_with_forkserver_workers",
            ctrl_c_handled_forkserver,
        ),
    ]
}

fn square(x: u64) -> u64 {
    x * x
}

fn add(p: (u64, u64)) -> u64 {
    p.0 + p.1
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

/// Sleeps `ms` and says which worker ran it.
fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn kill(pid: u32) {
    // SAFETY: signalling a worker of our own pool.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

fn apply_map_imap() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    ensure!(pool.processes() == 2, "processes");
    ensure!(pool.pids().len() == 2, "pids {:?}", pool.pids());
    ensure!(pool.apply(square, 7).ctx("apply")? == 49, "apply");
    let rs: Vec<_> = (0..100)
        .map(|i| pool.apply_async(square, i))
        .collect::<Result<_, _>>()
        .ctx("apply_async")?;
    for (i, r) in rs.iter().enumerate() {
        ensure!(r.get().ctx("get")? == (i * i) as u64, "apply_async {i}");
        ensure!(r.successful().ctx("successful")?, "successful");
        let again = r.get().err().ctx("second get")?;
        ensure!(again.kind() == ErrorKind::ResultTaken, "{again}");
    }
    let m = pool.map(square, 0..1000u64).ctx("map")?;
    ensure!(m == (0..1000u64).map(|x| x * x).collect::<Vec<_>>(), "map");
    let m = pool.map_chunked(square, 0..100u64, 7).ctx("map_chunked")?;
    ensure!(m.len() == 100 && m[99] == 9801, "map_chunked");
    ensure!(
        pool.map(square, Vec::new()).ctx("empty map")?.is_empty(),
        "empty"
    );
    let s = pool.starmap(add, [(1, 2), (3, 4)]).ctx("starmap")?;
    ensure!(s == [3, 7], "starmap {s:?}");
    let ordered: Vec<u64> = pool
        .imap(square, 0..50u64)
        .ctx("imap")?
        .collect::<Result<_, _>>()
        .ctx("imap items")?;
    ensure!(
        ordered == (0..50u64).map(|x| x * x).collect::<Vec<_>>(),
        "imap order"
    );
    let mut unordered: Vec<u64> = pool
        .imap_unordered_chunked(square, 0..50u64, 4)
        .ctx("imap_unordered")?
        .collect::<Result<_, _>>()
        .ctx("imap_unordered items")?;
    unordered.sort();
    ensure!(unordered == ordered, "imap_unordered set");
    let mut it = pool.imap(nap, [300u64]).ctx("imap nap")?;
    let early = it.next_timeout(Duration::from_millis(1)).ctx("early")?;
    ensure!(
        early
            .as_ref()
            .is_err_and(|e| e.kind() == ErrorKind::Timeout),
        "next_timeout before the result: {early:?}"
    );
    ensure!(it.next().ctx("late")?.ctx("late value")? == 300, "late");
    ensure!(it.next().is_none(), "end");
    let r = pool.apply_async(nap, 300).ctx("nap")?;
    let e = r
        .get_timeout(Duration::from_millis(1))
        .err()
        .ctx("timeout")?;
    ensure!(matches!(e, multiproc::AsyncGetTimeoutError::Timeout), "{e}");
    ensure!(
        r.wait_timeout(Duration::from_millis(1)).is_err() || r.ready(),
        "wait"
    );
    ensure!(
        r.successful().is_err() || r.ready(),
        "successful before ready must be an error"
    );
    ensure!(r.get().ctx("after timeout")? == 300, "value after timeout");
    let p = pool.progress();
    ensure!(
        p.failed == 0 && p.completed == p.submitted,
        "progress {p:?}"
    );
    pool.close();
    pool.join().ctx("join")?;
    Ok(())
}

fn zero_processes() -> Result<(), String> {
    let e = Pool::new(0).err().ctx("0 must fail")?;
    ensure!(e.kind() == ErrorKind::InvalidArgument, "{e}");
    let e = Pool::builder()
        .max_tasks_per_child(0)
        .build()
        .err()
        .ctx("max_tasks 0")?;
    ensure!(e.kind() == ErrorKind::InvalidArgument, "{e}");
    // The pool runs threads of its own: a checked fork of its workers is refused, clearly.
    let e = Pool::builder()
        .processes(1)
        .start_method(multiproc::StartMethod::Fork)
        .build()
        .err()
        .ctx("fork pool")?;
    ensure!(e.kind() == ErrorKind::ThreadedFork, "{e}");
    Ok(())
}

fn closed_pool_rules() -> Result<(), String> {
    let pool = Pool::new(1).ctx("pool")?;
    let e = pool.join().err().ctx("join while running")?;
    ensure!(e.kind() == ErrorKind::InvalidState, "{e}");
    let pending = pool.apply_async(nap, 200).ctx("nap")?;
    pool.close();
    for e in [
        pool.apply(square, 1).err(),
        pool.map(square, [1]).err(),
        pool.imap(square, [1]).err(),
    ] {
        let e = e.ctx("call on a closed pool")?;
        ensure!(e.kind() == ErrorKind::Closed, "{e}");
    }
    pool.join().ctx("join")?;
    ensure!(
        pending.get().ctx("close lets work finish")? == 200,
        "pending"
    );
    ensure!(pool.pids().is_empty(), "workers left: {:?}", pool.pids());
    Ok(())
}

fn boom_on_13(x: u64) -> u64 {
    if x == 13 {
        panic!("unlucky {x}");
    }
    x
}

fn callbacks() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let ok = Arc::new(AtomicUsize::new(0));
    let err = Arc::new(AtomicUsize::new(0));
    let mut results = Vec::new();
    for i in 0..40u64 {
        let (o, e) = (ok.clone(), err.clone());
        let cbs = Callbacks::new()
            .on_success(move |v: &u64| {
                o.fetch_add(1, Ordering::SeqCst);
                if v.is_multiple_of(10) {
                    panic!("callback panics on {v}");
                }
            })
            .on_error(move |_| {
                e.fetch_add(1, Ordering::SeqCst);
                panic!("error callback panics too");
            });
        results.push(pool.apply_async_with(boom_on_13, i, cbs).ctx("submit")?);
    }
    for (i, r) in results.iter().enumerate() {
        r.wait();
        if i == 13 {
            ensure!(r.get().is_err(), "13 must fail");
            ensure!(
                r.callback_panic().is_some(),
                "error callback panic reported"
            );
        } else {
            ensure!(r.get().ctx("value")? == i as u64, "value {i}");
            ensure!(
                r.callback_panic().is_some() == (i % 10 == 0),
                "callback panic {i}: {:?}",
                r.callback_panic()
            );
        }
    }
    ensure!(ok.load(Ordering::SeqCst) == 39, "on_success ran {:?}", ok);
    ensure!(err.load(Ordering::SeqCst) == 1, "on_error ran {:?}", err);
    // The pool is unharmed: an unrelated task goes through.
    ensure!(pool.apply(square, 3).ctx("after")? == 9, "after callbacks");
    Ok(())
}

fn panicking_task() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let pids = pool.pids();
    let e = pool.apply(boom_on_13, 13).err().ctx("13 must fail")?;
    ensure!(e.kind() == ErrorKind::Panicked, "{e}");
    ensure!(
        e.panic_message() == Some("unlucky 13"),
        "{:?}",
        e.panic_message()
    );
    ensure!(e.panic_location().is_some(), "location");
    let e = pool.map(boom_on_13, 0..100).err().ctx("map with 13")?;
    ensure!(e.kind() == ErrorKind::Panicked, "{e}");
    let items: Vec<_> = pool.imap(boom_on_13, 10..16).ctx("imap")?.collect();
    ensure!(items.len() == 6, "imap len");
    for (k, r) in items.iter().enumerate() {
        ensure!(r.is_err() == (k == 3), "imap item {k}: {r:?}");
    }
    ensure!(pool.pids() == pids, "a panic must not replace the worker");
    Ok(())
}

struct Refuses(bool);

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 {
            Err(serde::ser::Error::custom("refuses to serialize"))
        } else {
            s.serialize_bool(false)
        }
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bool::deserialize(d).map(Refuses)
    }
}

fn takes_refuses(_: Refuses) -> u8 {
    1
}

fn returns_refuses(bad: bool) -> Refuses {
    Refuses(bad)
}

fn serialization_failures() -> Result<(), String> {
    let pool = Pool::new(1).ctx("pool")?;
    let e = pool
        .apply_async(takes_refuses, Refuses(true))
        .err()
        .ctx("argument must fail at submission")?;
    ensure!(e.kind() == ErrorKind::Codec, "{e}");
    let e = pool
        .apply(returns_refuses, true)
        .err()
        .ctx("result must fail")?;
    ensure!(e.kind() == ErrorKind::Codec, "{e}");
    ensure!(!pool.apply(returns_refuses, false).ctx("good")?.0, "good");
    let items: Vec<_> = pool
        .imap(
            takes_refuses,
            [Refuses(false), Refuses(true), Refuses(false)],
        )
        .ctx("imap")?
        .collect();
    ensure!(
        items.len() == 3 && items[0].is_ok() && items[1].is_err() && items[2].is_ok(),
        "imap items {items:?}"
    );
    ensure!(pool.progress().workers_replaced == 0, "no worker replaced");
    Ok(())
}

fn sigkilled_worker() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let before = pool.pids();
    // One long task, and quick ones alongside it on the other worker.
    let victim = pool.apply_async(nap_pid, 60_000).ctx("victim")?;
    std::thread::sleep(Duration::from_millis(100));
    let quick: Vec<_> = (0..20)
        .map(|i| pool.apply_async(square, i))
        .collect::<Result<_, _>>()
        .ctx("quick")?;
    for (i, r) in quick.iter().enumerate() {
        ensure!(r.get().ctx("quick get")? == (i * i) as u64, "quick {i}");
    }
    // The victim's worker is the one that did not answer the quick tasks.
    let busy: Vec<u32> = before.clone();
    let answered: HashSet<u32> = (0..4)
        .map(|_| pool.apply(my_pid, ()))
        .collect::<Result<_, _>>()
        .ctx("who answers")?;
    let holder = *busy
        .iter()
        .find(|p| !answered.contains(p))
        .ctx("the busy worker")?;
    kill(holder);
    let e = victim.get().err().ctx("victim must fail")?;
    ensure!(e.kind() == ErrorKind::WorkerDied, "{e}");
    ensure!(e.signal() == Some(9), "signal {:?}", e.signal());
    ensure!(e.pid() == Some(holder), "pid {:?} vs {holder}", e.pid());
    // Replaced, and usable.
    ensure!(pool.apply(square, 12).ctx("after")? == 144, "after");
    ensure!(
        ipc_tests::eventually(Duration::from_secs(20), || pool.pids().len() == 2
            && !pool.pids().contains(&holder)),
        "replacement: {:?}",
        pool.pids()
    );
    ensure!(
        pool.progress().workers_replaced == 1,
        "{:?}",
        pool.progress()
    );
    Ok(())
}

/// A pool whose workers come from the forkserver: a SIGKILLed worker fails its task with its
/// signal and is replaced through the server, from this multi-threaded process.
fn forkserver_workers() -> Result<(), String> {
    let pool = Pool::builder()
        .processes(2)
        .start_method(multiproc::StartMethod::Forkserver)
        .build()
        .ctx("forkserver pool")?;
    ensure!(pool.apply(square, 7).ctx("first")? == 49, "first");
    let victim = pool.apply_async(nap_pid, 60_000).ctx("victim")?;
    std::thread::sleep(Duration::from_millis(100));
    let answered: HashSet<u32> = (0..4)
        .map(|_| pool.apply(my_pid, ()))
        .collect::<Result<_, _>>()
        .ctx("who answers")?;
    let holder = *pool
        .pids()
        .iter()
        .find(|p| !answered.contains(p))
        .ctx("the busy worker")?;
    let server = multiproc::forkserver_pid().ctx("the forkserver runs")?;
    ensure!(holder != server, "a worker is not the server");
    kill(holder);
    let e = victim.get().err().ctx("victim must fail")?;
    ensure!(e.kind() == ErrorKind::WorkerDied, "{e}");
    ensure!(e.pid() == Some(holder), "pid {:?} vs {holder}", e.pid());
    // The server reports the status a moment after the pidfd shows the death: the pool
    // waits for that report, so the signal is always known.
    ensure!(e.signal() == Some(9), "signal {:?}", e.signal());
    ensure!(pool.apply(square, 12).ctx("after")? == 144, "after");
    ensure!(
        ipc_tests::eventually(Duration::from_secs(20), || pool.pids().len() == 2
            && !pool.pids().contains(&holder)),
        "replacement: {:?}",
        pool.pids()
    );
    ensure!(
        multiproc::forkserver_pid() == Some(server),
        "the same server made the replacement"
    );
    pool.close();
    pool.join().ctx("join")?;
    Ok(())
}

fn imap_backpressure() -> Result<(), String> {
    let pool = Pool::builder().processes(2).window(8).build().ctx("pool")?;
    let pulled = Arc::new(AtomicUsize::new(0));
    let p = pulled.clone();
    let endless = (0u64..).inspect(move |_| {
        p.fetch_add(1, Ordering::SeqCst);
    });
    let mut it = pool.imap(square, endless).ctx("imap")?;
    for i in 0..100u64 {
        ensure!(it.next().ctx("next")?.ctx("value")? == i * i, "item {i}");
    }
    let n = pulled.load(Ordering::SeqCst);
    ensure!(
        n <= 100 + 8,
        "pulled {n} items for 100 results with a window of 8"
    );
    drop(it);
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

fn checksum(b: Blob) -> (usize, u64) {
    (b.0.len(), b.0.iter().map(|&x| x as u64).sum())
}

fn make_blob(len: usize) -> Blob {
    Blob((0..len).map(|i| i as u8).collect())
}

fn large_values() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    for len in [0usize, 1 << 16, 3 << 20, 9 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let expected = (len, data.iter().map(|&x| x as u64).sum());
        let rs: Vec<_> = (0..3)
            .map(|_| pool.apply_async(checksum, Blob(data.clone())))
            .collect::<Result<_, _>>()
            .ctx("submit")?;
        for r in rs {
            ensure!(r.get().ctx("checksum")? == expected, "checksum {len}");
        }
        let Blob(back) = pool.apply(make_blob, len).ctx("make_blob")?;
        ensure!(
            back.len() == len && back.iter().enumerate().all(|(i, &b)| b == i as u8),
            "blob {len}"
        );
    }
    Ok(())
}

fn terminate_while_running() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let rs: Vec<_> = (0..50)
        .map(|_| pool.apply_async(nap, 60_000))
        .collect::<Result<_, _>>()
        .ctx("submit")?;
    let imap = pool.imap(nap, [60_000u64; 4]).ctx("imap")?;
    std::thread::sleep(Duration::from_millis(100));
    let pids = pool.pids();
    let t = Instant::now();
    pool.terminate();
    pool.join().ctx("join")?;
    let took = t.elapsed();
    ensure!(
        took < Duration::from_secs(1),
        "terminate+join took {took:?}"
    );
    for r in &rs {
        ensure!(r.ready(), "a result is unresolved after terminate");
        let e = r.get().err().ctx("must be cancelled")?;
        ensure!(e.kind() == ErrorKind::Cancelled, "{e}");
    }
    let items: Vec<_> = imap.collect();
    ensure!(
        items.len() == 4 && items.iter().all(|r| r.is_err()),
        "{items:?}"
    );
    for pid in pids {
        ensure!(ipc_tests::is_gone(pid as i32), "worker {pid} still there");
    }
    Ok(())
}

fn drop_finishes_work() -> Result<(), String> {
    let pool = Pool::new(2).ctx("pool")?;
    let rs: Vec<_> = (0..10)
        .map(|i| pool.apply_async(nap, 20 + i))
        .collect::<Result<_, _>>()
        .ctx("submit")?;
    drop(pool);
    for (i, r) in rs.iter().enumerate() {
        ensure!(r.ready(), "dropping the pool must finish the work first");
        ensure!(r.get().ctx("value")? == 20 + i as u64, "value {i}");
    }
    Ok(())
}

fn dropped_in_callback() -> Result<(), String> {
    let pool = Arc::new(Pool::new(1).ctx("pool")?);
    let pids = pool.pids();
    let last = Mutex::new(Some(pool.clone()));
    let cbs = Callbacks::new().on_success(move |_: &u64| {
        // The last handle on the pool goes away in the pool's own collector thread.
        lock(&last).take();
    });
    let r = pool.apply_async_with(nap, 50, cbs).ctx("submit")?;
    drop(pool);
    ensure!(r.get().ctx("value")? == 50, "value");
    for pid in pids {
        ensure!(
            ipc_tests::eventually(Duration::from_secs(20), || ipc_tests::is_gone(pid as i32)),
            "worker {pid} still running"
        );
    }
    Ok(())
}

/// Panics while serialized.
struct Boom;
impl Serialize for Boom {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        panic!("a Serialize that panics");
    }
}
impl<'de> Deserialize<'de> for Boom {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Boom, D::Error> {
        Ok(Boom)
    }
}

fn first_of(p: (u64, Option<Boom>)) -> u64 {
    p.0
}

/// Hostile: an item's `Serialize` panics while `next` pulls the input, after the items before
/// it in its chunk were encoded (a caller would catch the panic and go on). The items before
/// it arrive (none lost, no wait for items pulled but never submitted), it fails at its place
/// with `Panicked`, and the input ends there (Python's `imap` whose input raises).
fn imap_after_input_panic() -> Result<(), String> {
    let pool = Pool::builder().processes(1).window(1).build().ctx("pool")?;
    let input = (0..12u64).map(|x| (x, (x == 7).then_some(Boom)));
    let mut it = pool.imap_chunked(first_of, input, 3).ctx("imap")?;
    let mut got = Vec::new();
    while got.len() < 12 {
        let next = || it.next_timeout(Duration::from_secs(20));
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(next)) {
            Ok(Some(Err(e))) if e.kind() == ErrorKind::Timeout => {
                return Err(format!("waits for items never submitted, after {got:?}"));
            }
            Ok(Some(r)) => got.push(r.map_err(|e| e.kind())),
            Ok(None) => break,
            Err(_) => {}
        }
    }
    let want: Vec<_> = (0..8u64)
        .map(|x| {
            if x == 7 {
                Err(ErrorKind::Panicked)
            } else {
                Ok(x)
            }
        })
        .collect();
    ensure!(got == want, "{got:?}");
    Ok(())
}
