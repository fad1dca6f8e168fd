//! Pool under fire: workers SIGKILLed at random while tasks run, and a SIGINT to a program
//! in the middle of a map.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use multiproc::{Callbacks, ErrorKind, Pool, Process, Queue, StartMethod};

use super::{kill, nap, square};
use crate::{Context, ensure};

/// Works a little, then answers with its input.
fn work(x: u64) -> u64 {
    std::thread::sleep(Duration::from_micros(500 + (x % 7) * 300));
    x
}

pub(super) fn chaos() -> Result<(), String> {
    chaos_with(work, 1000, 50)
}

/// Trivial tasks keep many tasks queued in each worker (the adaptive depth goes deep): a kill
/// must send every task its worker had not taken to another.
pub(super) fn chaos_deep() -> Result<(), String> {
    chaos_with(|x: u64| x, 20_000, 20)
}

fn chaos_with(f: fn(u64) -> u64, n: usize, max_kills: u32) -> Result<(), String> {
    let pool = Arc::new(Pool::new(2).ctx("pool")?);
    let calls = Arc::new(Mutex::new(vec![0u32; n]));
    let mut rs = Vec::new();
    for i in 0..n as u64 {
        let c = calls.clone();
        let cbs = Callbacks::new()
            .on_success(move |v: &u64| lock(&c)[*v as usize] += 1)
            .on_error({
                let c = calls.clone();
                move |_| lock(&c)[i as usize] += 1
            });
        rs.push(pool.apply_async_with(f, i, cbs).ctx("submit")?);
    }
    let killer = {
        let pool = pool.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            let mut seed = 0x9e37_79b9_u64;
            let t = Instant::now();
            while kills < max_kills && t.elapsed() < Duration::from_secs(60) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                std::thread::sleep(Duration::from_millis(2 + seed % 15));
                let pids = pool.pids();
                if pids.is_empty() {
                    continue;
                }
                kill(pids[(seed as usize / 7) % pids.len()]);
                kills += 1;
            }
            kills
        })
    };
    let mut ok = 0;
    let mut died = 0;
    for (i, r) in rs.iter().enumerate() {
        match r.get() {
            Ok(v) => {
                ensure!(v == i as u64, "value {v} for {i}");
                ok += 1;
            }
            Err(e) if e.kind() == ErrorKind::WorkerDied => {
                ensure!(e.signal() == Some(9), "{e}");
                died += 1;
            }
            Err(e) => return Err(format!("task {i}: unexpected {e}")),
        }
    }
    let kills = killer.join().map_err(|_| "killer panicked")?;
    eprintln!("chaos: {ok} ok, {died} WorkerDied, {kills} kills");
    ensure!(ok + died == n, "{ok} + {died}");
    ensure!(
        died <= kills as usize,
        "more failures ({died}) than kills ({kills})"
    );
    let calls = lock(&calls).clone();
    ensure!(calls.iter().all(|&n| n == 1), "callbacks not exactly once");
    // Usable afterwards.
    ensure!(
        pool.map(square, 0..100).ctx("map after")?.len() == 100,
        "after"
    );
    ensure!(
        ipc_tests::eventually(Duration::from_secs(20), || pool.pids().len() == 2),
        "workers: {:?}",
        pool.pids()
    );
    Ok(())
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A program that runs a long map on a pool, after telling its workers' pids.
fn program_with_pool(pids: Queue<u32>) {
    // A suite started in the background by a non-interactive shell (`cmd &`, `nohup`) runs
    // with SIGINT ignored, and every process it starts inherits that, as POSIX says: give this
    // program the disposition a terminal's program has, so that the test means the same
    // wherever it runs.
    // SAFETY: setting a signal's disposition to SIG_DFL has no preconditions.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_DFL) };
    let pool = Pool::new(2).expect("pool");
    for pid in pool.pids() {
        pids.put(pid).expect("put");
    }
    let _ = pool.map_chunked(nap, vec![60_000u64; 8], 1);
}

/// Waits until `pid` (an orphan that became our child, as the suite is a subreaper) has ended
/// and reaps it. Returns its wait status, or `None` if someone else reaped it.
fn reap_orphan(pid: u32, limit: Duration) -> Result<Option<i32>, String> {
    let deadline = Instant::now() + limit;
    loop {
        let mut status = 0;
        // SAFETY: waiting on a specific pid, with a valid status pointer.
        let r = unsafe { libc::waitpid(pid as i32, &mut status, libc::WNOHANG) };
        if r == pid as i32 {
            return Ok(Some(status));
        }
        if r == -1 && ipc_tests::is_gone(pid as i32) {
            return Ok(None);
        }
        ensure!(Instant::now() < deadline, "worker {pid} still alive");
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub(super) fn ctrl_c() -> Result<(), String> {
    let q = Queue::<u32>::new().ctx("queue")?;
    let mut program = Process::new(program_with_pool, q.clone());
    program.start().ctx("start")?;
    let workers = [
        q.get_timeout(Duration::from_secs(60)).ctx("pid 1")?,
        q.get_timeout(Duration::from_secs(60)).ctx("pid 2")?,
    ];
    std::thread::sleep(Duration::from_millis(100));
    // SIGINT to the program alone, as `kill -INT` does. (A terminal's Ctrl-C reaches the
    // workers too: they then die of the SIGINT themselves, silently, which changes nothing.)
    let pid = program.pid().ctx("pid")?;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    let e = program
        .join()
        .err()
        .ctx("the program must end by the signal")?;
    ensure!(e.signal() == Some(libc::SIGINT), "{e}");
    // Nothing is left running: the workers die with their parent.
    for w in workers {
        if let Some(status) = reap_orphan(w, Duration::from_secs(30))? {
            ensure!(libc::WIFSIGNALED(status), "worker {w} status {status:#x}");
        }
    }
    Ok(())
}

/// Set by the SIGINT handler of the program below.
static SIGINT_SEEN: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    SIGINT_SEEN.store(true, Ordering::SeqCst);
}

/// A program that handles SIGINT and leads a process group of its own (as a shell's job
/// does), then runs a long map on a pool (of forkserver workers if `forkserver`). It returns
/// what the map returned, whether its handler ran, and whether the pool then dropped within
/// the watchdog.
fn program_handling_sigint((pids, forkserver): (Queue<u32>, bool)) -> (String, bool, Vec<u32>) {
    // SAFETY: making this process a group leader, and installing a handler that only
    // stores to an atomic (async-signal-safe).
    unsafe {
        libc::setpgid(0, 0);
        libc::signal(
            libc::SIGINT,
            on_sigint as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let method = if forkserver {
        StartMethod::Forkserver
    } else {
        StartMethod::Spawn
    };
    // Workers retire after two tasks; callbacks and an imap are pending too.
    let pool = Pool::builder()
        .processes(2)
        .max_tasks_per_child(2)
        .start_method(method)
        .build()
        .expect("pool");
    let workers = pool.pids();
    for &pid in &workers {
        pids.put(pid).expect("put");
    }
    let calls = Arc::new(Mutex::new(Vec::new()));
    let pending: Vec<_> = (0..4)
        .map(|i| {
            let c = calls.clone();
            let cbs = Callbacks::new()
                .on_success({
                    let c = calls.clone();
                    move |_: &u64| lock(&c).push(format!("{i} ok"))
                })
                .on_error(move |e| lock(&c).push(format!("{i} {:?}", e.kind())));
            pool.apply_async_with(nap, 3_000, cbs).expect("apply_async")
        })
        .collect();
    let imap = pool.imap(nap, vec![3_000u64; 6]).expect("imap");
    // Long enough to be running when the signal comes; short enough that a pool which goes
    // on with the work after it still ends within the watchdog (and the test then fails on
    // what the map returned).
    let mut outcome = match pool.map_chunked(nap, vec![3_000u64; 8], 1) {
        Ok(v) => format!("Ok({} results)", v.len()),
        Err(e) => format!("{:?}|{:?}|{e}", e.kind(), e.signal()),
    };
    let kinds: Vec<_> = imap.map(|r| r.map_err(|e| e.kind())).collect();
    outcome += &format!("\nimap: {kinds:?}");
    for r in &pending {
        r.wait();
    }
    // Nothing may be left to wait for: dropping the pool joins it.
    drop(pool);
    // A forkserver would otherwise outlive us for a moment, orphaned to the suite.
    multiproc::stop_forkserver();
    let mut calls = lock(&calls).clone();
    calls.sort();
    outcome += &format!("\ncallbacks: {calls:?}");
    (outcome, SIGINT_SEEN.load(Ordering::SeqCst), workers)
}

/// A Ctrl-C reaches a program that handles SIGINT, and its workers (a terminal signals the
/// whole foreground process group): the map returns a typed error at once, the pool stops
/// instead of replacing its workers, and nothing is left running.
pub(super) fn ctrl_c_handled() -> Result<(), String> {
    ctrl_c_handled_with(false)
}

/// The same with forkserver workers: the server is in the process group too, and must
/// survive the Ctrl-C (as CPython's does, which ignores SIGINT) rather than take its children
/// and their exit statuses with it, which left the pool unable to tell a Ctrl-C from any
/// other death: it replaced the workers and went on with the map.
pub(super) fn ctrl_c_handled_forkserver() -> Result<(), String> {
    ctrl_c_handled_with(true)
}

fn ctrl_c_handled_with(forkserver: bool) -> Result<(), String> {
    let q = Queue::<u32>::new().ctx("queue")?;
    let mut program = Process::new(program_handling_sigint, (q.clone(), forkserver));
    program.start().ctx("start")?;
    for i in 0..2 {
        q.get_timeout(Duration::from_secs(60))
            .ctx(&format!("pid {i}"))?;
    }
    std::thread::sleep(Duration::from_millis(100));
    let pid = program.pid().ctx("pid")?;
    // SAFETY: signalling the process group that our own child leads, as a terminal does.
    let r = unsafe { libc::kill(-(pid as i32), libc::SIGINT) };
    ensure!(r == 0, "kill: {}", std::io::Error::last_os_error());
    let (outcome, seen, workers) = program.join().ctx("the program survives the signal")?;
    ensure!(seen, "the program's handler did not run");
    ensure!(
        outcome.starts_with("Interrupted|Some(2)|"),
        "the map returned {outcome}"
    );
    // Every imap item and every pending task ended, each callback once, with the Ctrl-C
    // (imap items the window had not yet submitted meet a stopped pool).
    let imap = outcome.lines().nth(1).unwrap_or("");
    ensure!(
        imap.contains("Err(Interrupted)") && !imap.contains("Ok("),
        "imap items: {outcome}"
    );
    let calls = outcome.lines().nth(2).unwrap_or("");
    let want = (0..4)
        .map(|i| format!("\"{i} Interrupted\""))
        .collect::<Vec<_>>()
        .join(", ");
    ensure!(calls == format!("callbacks: [{want}]"), "{outcome}");
    // A forkserver's children are orphaned to the suite (a subreaper) when their server ends.
    for w in workers {
        reap_orphan(w, Duration::from_secs(10))?;
    }
    Ok(())
}
