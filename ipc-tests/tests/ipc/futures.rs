//! concurrent.futures with real processes: worker deaths, shutdown, `.await`.

use std::future::Future as StdFuture;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex};
use std::task::{Context as TaskContext, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use multiproc::{
    ErrorKind, Executor, MapTimeoutError, ProcessPoolExecutor, Value, as_completed_timeout,
};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("futures::process_submit_map_states", states),
        ("futures::sigkilled_workers_during_map", killed_during_map),
        ("futures::shutdown_cancel_futures_bounded", shutdown_cancel),
        ("futures::await_future_whose_worker_dies", await_dies),
        ("futures::thousand_futures_awaited", thousand_awaited),
        ("futures::cancel_running_kills_and_replaces", cancel_running),
        ("futures::builder_options", builder_options),
        (
            "futures::map_timeout_chunked_cancels_and_the_executor_goes_on",
            map_timeout_chunked,
        ),
        (
            "futures::map_dropped_halfway_cancels_the_rest",
            map_dropped_halfway,
        ),
    ]
}

fn square(x: u64) -> u64 {
    x * x
}

fn nap_pid(ms: u64) -> u32 {
    std::thread::sleep(Duration::from_millis(ms));
    std::process::id()
}

fn kill(pid: u32) {
    // SAFETY: signalling a worker of our own executor.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
}

const BOUND: Duration = Duration::from_secs(60);

fn wait_running(f: &multiproc::Future<u32>) -> Result<(), String> {
    let start = Instant::now();
    while !f.running() {
        ensure!(start.elapsed() < BOUND, "never reported running");
        ensure!(!f.done(), "finished before running was seen");
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

struct Unpark(Mutex<bool>, Condvar);

impl Wake for Unpark {
    fn wake(self: Arc<Self>) {
        *self.0.lock().unwrap() = true;
        self.1.notify_one();
    }
}

/// Drives `fut` on this thread, failing after `BOUND`.
fn block_on<F: StdFuture>(fut: F) -> Result<F::Output, String> {
    let mut fut = std::pin::pin!(fut);
    let unpark = Arc::new(Unpark(Mutex::new(false), Condvar::new()));
    let waker = Waker::from(unpark.clone());
    let mut cx = TaskContext::from_waker(&waker);
    let start = Instant::now();
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return Ok(v);
        }
        let mut woken = unpark.0.lock().unwrap();
        while !*woken {
            ensure!(start.elapsed() < BOUND, "block_on: no wake-up");
            woken = unpark.1.wait_timeout(woken, BOUND).unwrap().0;
        }
        *woken = false;
    }
}

fn states() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(1).ctx("executor")?;
    ensure!(
        ex.submit(square, 7).ctx("submit")?.result().ctx("result")? == 49,
        "submit"
    );
    let m: Vec<u64> = ex
        .map_chunked(square, 0..200u64, 7)
        .ctx("map")?
        .collect::<Result<_, _>>()
        .ctx("map items")?;
    ensure!(
        m == (0..200u64).map(|x| x * x).collect::<Vec<_>>(),
        "map order"
    );
    // A timed map across processes: the first result not ready is `Timeout`, and it ends.
    let mut timed = ex
        .map_timeout(nap_pid, [300u64, 0, 0], Duration::from_millis(30), 1)
        .ctx("map_timeout")?;
    ensure!(
        matches!(timed.next(), Some(Err(MapTimeoutError::Timeout))),
        "map_timeout: no timeout"
    );
    ensure!(
        timed.next().is_none(),
        "map_timeout goes on after its timeout"
    );
    drop(timed);
    let busy = ex.submit(nap_pid, 400).ctx("busy")?;
    wait_running(&busy)?;
    ensure!(!busy.cancel(), "a running call is not cancelled");
    std::thread::sleep(Duration::from_millis(30));
    let queued = ex.submit(nap_pid, 0).ctx("queued")?;
    ensure!(!queued.running(), "a queued call is not running");
    ensure!(queued.cancel(), "a waiting call is cancelled");
    ensure!(queued.cancelled() && queued.done(), "cancelled state");
    let e = queued.result().err().ctx("cancelled result")?;
    ensure!(e.kind() == ErrorKind::Cancelled, "{e}");
    busy.result().ctx("busy result")?;
    ensure!(!busy.running() && busy.done(), "finished state");
    ex.shutdown(true, false);
    let e = ex.submit(square, 1).err().ctx("after shutdown")?;
    ensure!(e.kind() == ErrorKind::Closed, "{e}");
    let e = ProcessPoolExecutor::new(0).err().ctx("zero workers")?;
    ensure!(e.kind() == ErrorKind::InvalidArgument, "{e}");
    Ok(())
}

fn killed_during_map() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(2).ctx("executor")?;
    let killer_pids = ex.pids();
    let mut it = ex
        .map(nap_pid, std::iter::repeat_n(150u64, 20))
        .ctx("map")?;
    let first = it.next().ctx("first")?.ctx("first item")?;
    let victim = *killer_pids
        .iter()
        .find(|p| **p != first)
        .ctx("other worker")?;
    kill(first);
    kill(victim);
    let mut failed = 0;
    let mut ok = 0;
    for r in it {
        match r {
            Ok(_) => ok += 1,
            Err(e) => {
                ensure!(e.kind() == ErrorKind::WorkerDied, "{e}");
                ensure!(e.signal() == Some(9), "signal {:?}", e.signal());
                failed += 1;
            }
        }
    }
    // Each killed worker held at most the one call it was running.
    ensure!((1..=2).contains(&failed), "{failed} failed, {ok} ok");
    ensure!(ok == 19 - failed, "{failed} failed, {ok} ok");
    ensure!(
        ex.submit(square, 12)
            .ctx("after")?
            .result()
            .ctx("after result")?
            == 144,
        "after"
    );
    Ok(())
}

fn shutdown_cancel() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(2).ctx("executor")?;
    let running: Vec<_> = (0..2)
        .map(|_| ex.submit(nap_pid, 300))
        .collect::<Result<_, _>>()
        .ctx("running")?;
    for f in &running {
        wait_running(f)?;
    }
    std::thread::sleep(Duration::from_millis(30));
    let queued: Vec<_> = (0..20)
        .map(|_| ex.submit(nap_pid, 300))
        .collect::<Result<_, _>>()
        .ctx("queued")?;
    let start = Instant::now();
    ex.shutdown(true, true);
    ensure!(
        start.elapsed() < Duration::from_secs(20),
        "shutdown took {:?}",
        start.elapsed()
    );
    for f in &running {
        ensure!(f.done() && !f.cancelled(), "running calls finish");
        f.result().ctx("running result")?;
    }
    ensure!(queued.iter().all(|f| f.done()), "every future is done");
    let cancelled = queued.iter().filter(|f| f.cancelled()).count();
    ensure!(cancelled >= 16, "only {cancelled} cancelled");
    Ok(())
}

fn await_dies() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(1).ctx("executor")?;
    let f = ex.submit(nap_pid, 60_000).ctx("submit")?;
    wait_running(&f)?;
    let pid = *ex.pids().first().ctx("pid")?;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        kill(pid);
    });
    let e = block_on(f)?.err().ctx("must fail")?;
    killer.join().map_err(|_| "killer panicked")?;
    ensure!(e.kind() == ErrorKind::WorkerDied, "{e}");
    ensure!(e.pid() == Some(pid), "pid {:?}", e.pid());
    ensure!(
        ex.submit(square, 3)
            .ctx("after")?
            .result()
            .ctx("after result")?
            == 9,
        "after"
    );
    Ok(())
}

fn thousand_awaited() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(2).ctx("executor")?;
    let fs: Vec<_> = (0..1000u64)
        .map(|i| ex.submit(square, i))
        .collect::<Result<_, _>>()
        .ctx("submit")?;
    let mut slots: Vec<Option<multiproc::Future<u64>>> = fs.into_iter().map(Some).collect();
    let mut out = vec![0u64; slots.len()];
    let mut left = slots.len();
    block_on(std::future::poll_fn(|cx| {
        for (i, s) in slots.iter_mut().enumerate() {
            if let Some(f) = s
                && let Poll::Ready(v) = Pin::new(f).poll(cx)
            {
                out[i] = v.unwrap_or(u64::MAX);
                *s = None;
                left -= 1;
            }
        }
        if left == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }))?;
    ensure!(
        out == (0..1000u64).map(|x| x * x).collect::<Vec<_>>(),
        "values"
    );
    let fs: Vec<_> = (0..100u64)
        .map(|i| ex.submit(square, i))
        .collect::<Result<_, _>>()
        .ctx("submit again")?;
    let n = as_completed_timeout(&fs, BOUND)
        .map(|f| f.map(|_| ()))
        .collect::<Result<Vec<_>, _>>();
    ensure!(n.ctx("as_completed")?.len() == 100, "as_completed count");
    Ok(())
}

fn cancel_running() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(1).ctx("executor")?;
    let before = ex.pids();
    let f = ex.submit(nap_pid, 60_000).ctx("submit")?;
    wait_running(&f)?;
    ensure!(f.cancel_running(), "cancel_running");
    ensure!(f.cancelled(), "cancelled");
    ensure!(
        ex.submit(square, 5)
            .ctx("after")?
            .result()
            .ctx("after result")?
            == 25,
        "after"
    );
    ensure!(
        ex.pids() != before,
        "replaced: {:?} vs {before:?}",
        ex.pids()
    );
    Ok(())
}

fn set_marker(v: u64) {
    MARK.store(v, std::sync::atomic::Ordering::SeqCst);
}

static MARK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn marker(_: ()) -> (u64, u32) {
    (
        MARK.load(std::sync::atomic::Ordering::SeqCst),
        std::process::id(),
    )
}

fn builder_options() -> Result<(), String> {
    let ex = ProcessPoolExecutor::builder()
        .max_workers(1)
        .initializer(set_marker, 77)
        .max_tasks_per_child(1)
        .task_timeout(Duration::from_millis(300))
        .build()
        .ctx("build")?;
    let (m1, p1) = ex
        .submit(marker, ())
        .ctx("first")?
        .result()
        .ctx("first result")?;
    let (m2, p2) = ex
        .submit(marker, ())
        .ctx("second")?
        .result()
        .ctx("second result")?;
    ensure!(m1 == 77 && m2 == 77, "initializer ran: {m1} {m2}");
    ensure!(p1 != p2, "max_tasks_per_child(1): a fresh worker per call");
    let e = ex
        .submit(nap_pid, 60_000)
        .ctx("slow")?
        .result()
        .err()
        .ctx("timeout")?;
    ensure!(e.kind() == ErrorKind::TaskTimeout, "{e}");
    Ok(())
}

/// Naps, then counts itself in `count` (the executors here have one worker: no race).
fn nap_count(args: (Value<u64>, u64)) -> u64 {
    let (count, ms) = args;
    std::thread::sleep(Duration::from_millis(ms));
    let n = count.get().expect("read the count");
    count.set(n + 1).expect("write the count");
    ms
}

/// The same executor serves plain calls and maps after a map that stopped early.
fn still_serves(ex: &ProcessPoolExecutor) -> Result<(), String> {
    let f = ex.submit(square, 7).ctx("submit after the map")?;
    ensure!(
        f.result().ctx("result after the map")? == 49,
        "submit after the map"
    );
    let v: Vec<u64> = ex
        .map_chunked(square, 0..10u64, 3)
        .ctx("map after the map")?
        .collect::<Result<_, _>>()
        .ctx("results after the map")?;
    ensure!(v == (0..10).map(|x| x * x).collect::<Vec<_>>(), "{v:?}");
    Ok(())
}

/// Hostile: a timed map of two-item chunks (which travel as one task each, with a handle in
/// every item) times out on its first chunk while the others are in flight. The chunks not
/// started are cancelled, not run to the end unobserved, and the executor is reused.
fn map_timeout_chunked() -> Result<(), String> {
    let ex = ProcessPoolExecutor::new(1).ctx("executor")?;
    let count = Value::new(0u64).ctx("value")?;
    let items = [1500u64, 0, 0, 0, 0, 0, 0, 0].map(|ms| (count.clone(), ms));
    let mut m = ex
        .map_timeout(nap_count, items, Duration::from_millis(300), 2)
        .ctx("map_timeout")?;
    ensure!(
        matches!(m.next(), Some(Err(MapTimeoutError::Timeout))),
        "no timeout"
    );
    ensure!(m.next().is_none(), "the map goes on after its timeout");
    drop(m);
    still_serves(&ex)?;
    ex.shutdown(true, false);
    let ran = count.get().ctx("count")?;
    // The running chunk and at most one more already in the worker's queue.
    ensure!(
        ran <= 4,
        "{ran} of 8 calls ran after the map gave up on the first"
    );
    Ok(())
}

/// Hostile: a map (one item per task, then two) dropped after two results cancels the calls
/// not started; the executor is reused.
fn map_dropped_halfway() -> Result<(), String> {
    for chunk in [1, 2] {
        let ex = ProcessPoolExecutor::new(1).ctx("executor")?;
        let count = Value::new(0u64).ctx("value")?;
        let items: Vec<_> = (0..16).map(|_| (count.clone(), 100u64)).collect();
        let mut m = ex.map_chunked(nap_count, items, chunk).ctx("map")?;
        for _ in 0..2 {
            ensure!(
                m.next().transpose().ctx("a result")? == Some(100),
                "a result"
            );
        }
        drop(m);
        still_serves(&ex)?;
        ex.shutdown(true, false);
        let ran = count.get().ctx("count")?;
        ensure!(
            ran <= 2 + 3 * chunk as u64,
            "chunks of {chunk}: {ran} of 16 calls ran for a map dropped after 2"
        );
    }
    Ok(())
}
