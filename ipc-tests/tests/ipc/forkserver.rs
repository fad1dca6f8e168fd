//! The forkserver start method: children from a multi-threaded parent, exit codes, handles,
//! workers, preload, and the server's death between and during starts, and the parent's.
//!
//! The tests share one server (it serves the whole process), and some kill it: they run one at
//! a time behind `SERIAL`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use multiproc::{Connection, ErrorKind, JoinTimeoutError, Process, Queue, StartMethod, Worker};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "forkserver::from_a_multi_threaded_parent",
            from_a_multi_threaded_parent,
        ),
        ("forkserver::two_hundred_children", two_hundred_children),
        ("forkserver::exit_codes", exit_codes),
        ("forkserver::handles_as_arguments", handles_as_arguments),
        ("forkserver::large_arguments", large_arguments),
        ("forkserver::worker", worker),
        ("forkserver::worker_start_methods", worker_start_methods),
        (
            "forkserver::forked_child_has_its_own_server",
            forked_child_has_its_own_server,
        ),
        ("forkserver::preload_runs_once", preload_runs_once),
        (
            "forkserver::server_killed_between_starts",
            server_killed_between_starts,
        ),
        (
            "forkserver::server_killed_during_a_start",
            server_killed_during_a_start,
        ),
        (
            "forkserver::concurrent_starts_while_the_server_is_killed",
            concurrent_starts_while_the_server_is_killed,
        ),
        (
            "forkserver::stalled_server_does_not_hold_up_a_join",
            stalled_server_does_not_hold_up_a_join,
        ),
        (
            "forkserver::server_killed_children_end",
            server_killed_children_end,
        ),
        (
            "forkserver::parent_killed_everything_ends",
            parent_killed_everything_ends,
        ),
    ]
}

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn fs<R>(p: Process<R>) -> Process<R> {
    p.with_start_method(StartMethod::Forkserver)
}

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn boom(_: ()) {
    panic!("forkserver boom")
}

fn who(_: ()) -> (String, Option<u32>, u32) {
    let me = multiproc::current_process();
    (
        me.name().to_string(),
        multiproc::parent_process().map(|p| p.pid()),
        me.pid(),
    )
}

/// Waits until `pid` is gone, reaping it if it became our child (we are the subreaper).
fn reap_gone(pid: i32, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        // SAFETY: waiting on one specific pid; a null status pointer is allowed.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        if r == pid || (r == -1 && ipc_tests::proc_entry(pid).is_none()) {
            return Ok(());
        }
        ensure!(Instant::now() < deadline, "process {pid} still there");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn from_a_multi_threaded_parent() -> Result<(), String> {
    let _s = serial();
    let stop = Arc::new(AtomicBool::new(false));
    let spins = Arc::new(AtomicU64::new(0));
    let shared = Arc::new(Mutex::new(Vec::<u64>::new()));
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let (stop, spins, shared) = (stop.clone(), spins.clone(), shared.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    // Locks and allocations held all the time: a plain fork would copy them.
                    let mut v = shared.lock().unwrap_or_else(|p| p.into_inner());
                    v.push(i);
                    if v.len() > 1000 {
                        v.clear();
                    }
                    drop(v);
                    let _ = std::io::stdout().lock();
                    spins.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let result = (|| {
        for i in 0..20u64 {
            let mut p = fs(Process::new(square, i)).with_name(format!("fs-{i}"));
            p.start().ctx("start")?;
            ensure!(p.join().ctx("join")? == i * i, "value");
            ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
        }
        let mut p = fs(Process::new(who, ())).with_name("asked");
        p.start().ctx("start who")?;
        let pid = p.pid().ctx("pid")?;
        let (name, parent, own) = p.join().ctx("join who")?;
        ensure!(name == "asked", "name {name}");
        ensure!(parent == Some(std::process::id()), "parent {parent:?}");
        ensure!(own == pid, "pid {own} != {pid}");
        ensure!(multiproc::forkserver_pid().is_some(), "server pid");
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "hammer panicked")?;
    }
    ensure!(spins.load(Ordering::Relaxed) > 0, "threads never ran");
    result
}

fn two_hundred_children() -> Result<(), String> {
    let _s = serial();
    let mut total = 0;
    for batch in 0..20u64 {
        let mut procs: Vec<_> = (0..10u64)
            .map(|i| fs(Process::new(square, batch * 10 + i)))
            .collect();
        for p in &mut procs {
            p.start().ctx("start")?;
        }
        for p in &mut procs {
            total += p.join().ctx("join")?;
            ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
        }
    }
    let expected: u64 = (0..200u64).map(|x| x * x).sum();
    ensure!(total == expected, "sum {total} != {expected}");
    Ok(())
}

fn exit_codes() -> Result<(), String> {
    let _s = serial();
    let mut ok = fs(Process::new(square, 3));
    ok.start().ctx("start 0")?;
    ensure!(ok.join().ctx("join 0")? == 9, "value");
    ensure!(ok.exitcode() == Some(0), "exitcode 0: {:?}", ok.exitcode());

    let mut seven = fs(Process::new(exit_with, 7));
    seven.start().ctx("start 7")?;
    let err = seven.join().err().ctx("exit 7 must fail")?;
    ensure!(err.kind() == ErrorKind::Exited, "kind {:?}", err.kind());
    ensure!(
        err.exit_code() == Some(7),
        "exit_code {:?}",
        err.exit_code()
    );
    ensure!(
        seven.exitcode() == Some(7),
        "exitcode 7: {:?}",
        seven.exitcode()
    );

    let mut panics = fs(Process::new(boom, ()));
    panics.start().ctx("start panic")?;
    let err = panics.join().err().ctx("panic must fail")?;
    ensure!(err.kind() == ErrorKind::Panicked, "kind {:?}", err.kind());
    ensure!(
        err.panic_message() == Some("forkserver boom"),
        "message {:?}",
        err.panic_message()
    );
    ensure!(
        panics.exitcode() == Some(1),
        "exitcode {:?}",
        panics.exitcode()
    );

    for (signal, code) in [(libc::SIGTERM, -15), (libc::SIGKILL, -9)] {
        let mut p = fs(Process::new(sleep_ms, 60_000));
        p.start().ctx("start sleeper")?;
        let early = p.join_timeout(Duration::from_millis(20));
        ensure!(
            matches!(early, Err(JoinTimeoutError::Timeout)),
            "sleeper's join_timeout gave {early:?}"
        );
        ensure!(p.is_alive(), "sleeper not alive");
        if signal == libc::SIGTERM {
            p.terminate().ctx("terminate")?;
        } else {
            p.kill().ctx("kill")?;
        }
        let err = p.join().err().ctx("killed join must fail")?;
        ensure!(err.kind() == ErrorKind::Signaled, "kind {:?}", err.kind());
        ensure!(p.exitcode() == Some(code), "exitcode {:?}", p.exitcode());
    }
    Ok(())
}

fn echo_plus_one(conn: Connection<u64>) -> u64 {
    let v = conn.recv().expect("recv");
    conn.send(&(v + 1)).expect("send");
    v
}

fn handles_as_arguments() -> Result<(), String> {
    let _s = serial();
    let (ours, theirs) = multiproc::pipe::<u64>().ctx("pipe")?;
    let mut p = fs(Process::new(echo_plus_one, theirs));
    p.start().ctx("start")?;
    ours.send(&41).ctx("send")?;
    ensure!(ours.recv().ctx("recv")? == 42, "reply");
    ensure!(p.join().ctx("join")? == 41, "result");
    // The child had only its copy of the other end: it is gone now.
    let err = ours.recv().err().ctx("recv after the child ended")?;
    ensure!(matches!(err, multiproc::RecvError::Disconnected), "{err:?}");

    // A queue (a handle that is told which child receives it) both ways.
    let there = Queue::<u64>::new().ctx("queue")?;
    let back = Queue::<u64>::new().ctx("queue back")?;
    let mut p = fs(Process::new(queue_double, (there.clone(), back.clone())));
    p.start().ctx("start queue child")?;
    for i in 1..=100u64 {
        there.put(i).ctx("put")?;
    }
    there.put(0).ctx("put end")?;
    let mut sum = 0;
    for _ in 0..100 {
        sum += back.get().ctx("get")?;
    }
    ensure!(sum == 2 * 5050, "sum {sum}");
    ensure!(p.join().ctx("join queue child")? == 100, "count");
    Ok(())
}

fn queue_double((there, back): (Queue<u64>, Queue<u64>)) -> u64 {
    let mut n = 0;
    while let Ok(v) = there.get() {
        if v == 0 {
            break;
        }
        back.put(2 * v).expect("put");
        n += 1;
    }
    n
}

fn checksum(data: Vec<u8>) -> (usize, u64) {
    (data.len(), data.iter().map(|&b| b as u64).sum())
}

fn large_arguments() -> Result<(), String> {
    let _s = serial();
    for len in [0usize, 32 * 1024, 32 * 1024 + 1, 4 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        let expected = (len, data.iter().map(|&b| b as u64).sum::<u64>());
        let mut p = fs(Process::new(checksum, data));
        p.start().ctx("start")?;
        ensure!(p.join().ctx("join")? == expected, "checksum of {len} bytes");
    }
    Ok(())
}

fn worker() -> Result<(), String> {
    let _s = serial();
    let mut w = Worker::start_with(StartMethod::Forkserver).ctx("start")?;
    ensure!(w.call(square, 12).ctx("call")? == 144, "value");
    let err = w.call(boom, ()).err().ctx("panicking call")?;
    ensure!(err.kind() == ErrorKind::Panicked, "kind {:?}", err.kind());
    ensure!(w.call(square, 5).ctx("call after panic")? == 25, "value");
    w.shutdown().ctx("shutdown")?;
    // A killed worker's call fails with the signal.
    let mut w = Worker::start_with(StartMethod::Forkserver).ctx("start 2")?;
    let pid = w.pid() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: signalling a process we started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let err = w.call(sleep_ms, 60_000).err().ctx("killed call")?;
    killer.join().map_err(|_| "killer panicked")?;
    ensure!(err.kind() == ErrorKind::Signaled, "kind {:?}", err.kind());
    ensure!(err.signal() == Some(9), "signal {:?}", err.signal());
    Ok(())
}

/// In a single-threaded spawned child: a worker of each start method.
fn workers_of_each_method(_: ()) -> Vec<u64> {
    let methods = [
        StartMethod::Spawn,
        StartMethod::Fork,
        StartMethod::Forkserver,
    ];
    let mut values = Vec::new();
    for m in methods {
        let mut w = Worker::start_with(m).expect("worker start");
        values.push(w.call(square, 3).expect("call"));
        w.shutdown().expect("shutdown");
    }
    // Our server would otherwise outlive us for a moment, orphaned to the suite (a subreaper)
    // as a zombie it knows nothing of.
    multiproc::stop_forkserver();
    values
}

fn worker_start_methods() -> Result<(), String> {
    let _s = serial();
    // This suite has several threads: a forked worker is refused, the others work.
    let err = Worker::start_with(StartMethod::Fork)
        .err()
        .ctx("a forked worker in a threaded process")?;
    ensure!(
        err.kind() == ErrorKind::ThreadedFork,
        "kind {:?}",
        err.kind()
    );
    let mut p = Process::new(workers_of_each_method, ());
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")? == vec![9, 9, 9], "values");
    Ok(())
}

/// In a forked child: a forkserver start of its own; returns the value and the server's pid.
fn square_through_own_server(x: u64) -> (u64, u32) {
    let mut p = fs(Process::new(square, x));
    p.start().expect("start");
    let v = p.join().expect("join");
    let server = multiproc::forkserver_pid().expect("server");
    multiproc::stop_forkserver();
    (v, server)
}

/// In a single-threaded spawned child: uses the forkserver, then forks a child that does too.
fn forkserver_then_fork(_: ()) -> (u64, u64, bool) {
    let mut p = fs(Process::new(square, 2));
    p.start().expect("start");
    let a = p.join().expect("join");
    let ours = multiproc::forkserver_pid().expect("server");
    let mut f = Process::new(square_through_own_server, 3).with_start_method(StartMethod::Fork);
    f.start().expect("fork");
    let (b, theirs) = f.join().expect("join fork");
    // Ours still serves after the fork child made and stopped its own.
    let mut q = fs(Process::new(square, 4));
    q.start().expect("start again");
    let c = q.join().expect("join again");
    let same = multiproc::forkserver_pid() == Some(ours);
    multiproc::stop_forkserver();
    (a + c, b, same && theirs != ours)
}

fn forked_child_has_its_own_server() -> Result<(), String> {
    let _s = serial();
    let mut p = Process::new(forkserver_then_fork, ());
    p.start().ctx("start")?;
    let (a, b, distinct) = p.join().ctx("join")?;
    ensure!(a == 20 && b == 9, "values {a} {b}");
    ensure!(
        distinct,
        "the forked child used its parent's server, or ours was replaced"
    );
    Ok(())
}

/// Set by the preload call in the server; children inherit it.
static PRELOADED: AtomicU64 = AtomicU64::new(0);

fn preload(v: u64) {
    PRELOADED.fetch_add(v, Ordering::Relaxed);
}

fn read_preloaded(_: ()) -> (u64, u32) {
    (PRELOADED.load(Ordering::Relaxed), std::process::id())
}

fn preload_runs_once() -> Result<(), String> {
    let _s = serial();
    multiproc::add_forkserver_preload(preload, 40).ctx("preload")?;
    multiproc::add_forkserver_preload(preload, 2).ctx("preload 2")?;
    // Servers started from now on run the preload: restart the one that may be running.
    multiproc::stop_forkserver();
    for _ in 0..3 {
        let mut p = fs(Process::new(read_preloaded, ()));
        p.start().ctx("start")?;
        let (v, _) = p.join().ctx("join")?;
        ensure!(v == 42, "preloaded value {v}");
    }
    // Not in this process: the preload runs in the server only.
    ensure!(PRELOADED.load(Ordering::Relaxed) == 0, "ran in the parent");
    let (ours, _theirs) = multiproc::pipe::<u8>().ctx("pipe")?;
    let err = multiproc::add_forkserver_preload(drop_conn, ours)
        .err()
        .ctx("a handle in a preload call")?;
    ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
    Ok(())
}

fn drop_conn(_: Connection<u8>) {}

fn kill_server() -> Result<i32, String> {
    let server = multiproc::forkserver_pid().ctx("server pid")? as i32;
    // SAFETY: signalling the forkserver, our own child.
    unsafe { libc::kill(server, libc::SIGKILL) };
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || all_threads_gone(server)),
        "server {server} survived SIGKILL"
    );
    Ok(server)
}

/// True once `pid` is gone or a zombie with no thread left but its first. The server runs its
/// work on a second thread, which may still be ending (its descriptors still open) while the
/// first already shows as a zombie; a start made then reaches a server that is dying.
fn all_threads_gone(pid: i32) -> bool {
    ipc_tests::is_gone(pid)
        && std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |d| d.count() <= 1)
}

fn server_killed_between_starts() -> Result<(), String> {
    let _s = serial();
    let mut p = fs(Process::new(square, 2));
    p.start().ctx("start 1")?;
    ensure!(p.join().ctx("join 1")? == 4, "value 1");
    let old = kill_server()?;
    let mut p = fs(Process::new(square, 3));
    p.start().ctx("start after the server died")?;
    ensure!(p.join().ctx("join 2")? == 9, "value 2");
    let new = multiproc::forkserver_pid().ctx("new server")? as i32;
    ensure!(new != old, "the server was not replaced");
    // The dead server was reaped, not left a zombie.
    ensure!(
        ipc_tests::eventually(Duration::from_secs(10), || ipc_tests::proc_entry(old)
            .is_none()),
        "old server {old} not reaped"
    );
    Ok(())
}

fn server_killed_during_a_start() -> Result<(), String> {
    let _s = serial();
    // A request the server never answers: it is stopped, then killed while the start waits.
    let mut wait = Duration::from_millis(100);
    for _ in 0..10 {
        let mut warm = fs(Process::new(square, 1));
        warm.start().ctx("warm start")?;
        warm.join().ctx("warm join")?;
        let server = multiproc::forkserver_pid().ctx("server pid")? as i32;
        // SAFETY: signalling the forkserver, our own child.
        unsafe { libc::kill(server, libc::SIGSTOP) };
        let starter = std::thread::spawn(|| {
            let mut p = fs(Process::new(square, 5));
            let started = p.start();
            let joined = started.as_ref().ok().map(|_| p.join());
            (
                started.map_err(|e| (e.kind(), e.to_string())),
                joined.map(|j| j.is_ok()),
            )
        });
        std::thread::sleep(wait);
        // SAFETY: as above.
        unsafe { libc::kill(server, libc::SIGKILL) };
        let (started, _) = starter.join().map_err(|_| "starter panicked")?;
        match started {
            Err((kind, msg)) => {
                ensure!(kind == ErrorKind::Bootstrap, "kind {kind:?}: {msg}");
                ensure!(msg.contains("forkserver"), "message {msg}");
                ensure!(
                    ipc_tests::eventually(Duration::from_secs(10), || {
                        ipc_tests::proc_entry(server).is_none()
                    }),
                    "killed server {server} not reaped"
                );
                // The request never reached the stopped server: no child was made (the
                // suite's leak check would see one).
                let mut p = fs(Process::new(square, 6));
                p.start().ctx("start after")?;
                ensure!(p.join().ctx("join after")? == 36, "value after");
                return Ok(());
            }
            // The kill came before the request was sent: the start found the server dead and
            // made a new one. Try again, leaving the start more time to get there.
            Ok(()) => wait *= 2,
        }
    }
    Err("the start never got in before the kill".into())
}

/// Six threads start and join forkserver children as fast as they can, taking turns and
/// tickets, while the server is SIGKILLed under them: every start and every join returns (a
/// start with the right value or a `Bootstrap` error), no answer is filed under the wrong
/// ticket (a wrong value), and the next start makes a new server.
fn concurrent_starts_while_the_server_is_killed() -> Result<(), String> {
    let _s = serial();
    let mut warm = fs(Process::new(square, 1));
    warm.start().ctx("warm start")?;
    warm.join().ctx("warm join")?;
    let server = multiproc::forkserver_pid().ctx("server pid")? as i32;
    let go = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..6u64)
        .map(|t| {
            let go = go.clone();
            std::thread::spawn(move || {
                let mut pids = Vec::new();
                let mut outcomes = Vec::new();
                while !go.load(Ordering::SeqCst) {
                    std::thread::yield_now();
                }
                for i in 0..8u64 {
                    let x = t * 100 + i;
                    let mut p = fs(Process::new(square, x));
                    match p.start() {
                        Ok(()) => {
                            pids.push(p.pid().unwrap_or(0) as i32);
                            match p.join() {
                                Ok(v) if v == x * x => outcomes.push(Ok(true)),
                                Ok(v) => outcomes.push(Err(format!("{x}: got {v}"))),
                                // Its child was killed with the server.
                                Err(_) => outcomes.push(Ok(false)),
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::Bootstrap => outcomes.push(Ok(false)),
                        Err(e) => outcomes.push(Err(format!("{x}: start: {e}"))),
                    }
                }
                (pids, outcomes)
            })
        })
        .collect();
    go.store(true, Ordering::SeqCst);
    std::thread::sleep(Duration::from_millis(30));
    // Stopped first, so that the children it made are known, also those whose answer never
    // reaches us: they all end up orphaned to the suite (a subreaper), to be reaped here.
    // SAFETY: signalling the forkserver, our own child.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    ensure!(
        ipc_tests::eventually(Duration::from_secs(10), || {
            ipc_tests::proc_entry(server).is_none_or(|p| p.state == 'T')
        }),
        "server {server} did not stop"
    );
    let mut pids: Vec<i32> = ipc_tests::children_of(server)
        .iter()
        .map(|c| c.pid)
        .collect();
    // SAFETY: as above.
    unsafe { libc::kill(server, libc::SIGKILL) };
    let mut good = 0;
    for t in threads {
        let (mut started, outcomes) = t.join().map_err(|_| "a starting thread panicked")?;
        pids.append(&mut started);
        for o in outcomes {
            good += usize::from(o?);
        }
    }
    eprintln!("concurrent starts: {good} of 48 gave their value");
    // Children of the killed server are orphaned to the suite (a subreaper).
    for pid in pids {
        reap_gone(pid, Duration::from_secs(10))?;
    }
    // A start made while the killed server is still dying may fail (it is one of the
    // concurrent case's outcomes above); once it is dead, the next start makes a new server.
    ensure!(
        ipc_tests::eventually(Duration::from_secs(10), || {
            ipc_tests::proc_entry(server).is_none_or(|p| p.state == 'Z')
        }),
        "server {server} did not die"
    );
    let mut p = fs(Process::new(square, 7));
    p.start().ctx("start after")?;
    ensure!(p.join().ctx("join after")? == 49, "value after");
    Ok(())
}

/// Continues a stopped server however the test ends.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        // SAFETY: signalling the forkserver, our own child.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// A start waits on a stalled (SIGSTOPped) server; meanwhile another thread's `join_timeout`
/// on a forkserver child keeps its own deadline instead of waiting behind the start (it used to
/// wait for the registry's lock, which the start held for up to 60 s, and the start then gave
/// up and killed the server).
fn stalled_server_does_not_hold_up_a_join() -> Result<(), String> {
    let _s = serial();
    let mut sleeper = fs(Process::new(sleep_ms, 60_000));
    sleeper.start().ctx("start sleeper")?;
    let server = multiproc::forkserver_pid().ctx("server pid")? as i32;
    // SAFETY: signalling the forkserver, our own child; `Resume` continues it.
    unsafe { libc::kill(server, libc::SIGSTOP) };
    let resume = Resume(server);
    let in_flight = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let starter = {
        let (in_flight, done) = (in_flight.clone(), done.clone());
        std::thread::spawn(move || {
            let mut p = fs(Process::new(square, 5));
            in_flight.store(true, Ordering::SeqCst);
            let r = p.start().and_then(|()| p.join());
            done.store(true, Ordering::SeqCst);
            r.map_err(|e| e.to_string())
        })
    };
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || in_flight.load(Ordering::SeqCst)),
        "the starting thread never ran"
    );
    // Let the start send its request and settle into waiting for the answer.
    std::thread::sleep(Duration::from_millis(200));
    let early = sleeper.join_timeout(Duration::from_millis(100));
    ensure!(
        matches!(early, Err(JoinTimeoutError::Timeout)),
        "the sleeper's join_timeout gave {early:?}"
    );
    // The join came back while the start still waited on the stopped server.
    ensure!(
        !done.load(Ordering::SeqCst),
        "the join returned only after the start had given up"
    );
    drop(resume);
    let value = starter.join().map_err(|_| "starter panicked")?;
    ensure!(
        value == Ok(25),
        "the start on the resumed server gave {value:?}"
    );
    sleeper.kill().ctx("kill sleeper")?;
    let err = sleeper
        .join()
        .err()
        .ctx("the killed sleeper's join must fail")?;
    ensure!(err.kind() == ErrorKind::Signaled, "kind {:?}", err.kind());
    Ok(())
}

fn server_killed_children_end() -> Result<(), String> {
    let _s = serial();
    let mut p = fs(Process::new(sleep_ms, 60_000));
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")? as i32;
    kill_server()?;
    // A new server runs by the time we ask about the old one's child.
    let mut q = fs(Process::new(square, 4));
    q.start().ctx("start on a new server")?;
    ensure!(q.join().ctx("join on a new server")? == 16, "value");
    // The child dies with its server; join reports it (with the signal: this suite is a
    // subreaper, so it inherits the orphan and reads its status).
    let err = p.join().err().ctx("join must fail")?;
    ensure!(
        matches!(err.kind(), ErrorKind::Signaled | ErrorKind::Exited),
        "kind {:?}",
        err.kind()
    );
    reap_gone(pid, Duration::from_secs(30))?;
    Ok(())
}

/// In a spawned child: starts a forkserver child that sleeps, writes "server child" pids to
/// `path`, then sleeps until killed.
fn forkserver_parent(path: PathBuf) {
    let mut g = Process::new(sleep_ms, 120_000).with_start_method(StartMethod::Forkserver);
    g.start().expect("forkserver start");
    let server = multiproc::forkserver_pid().expect("server");
    std::fs::write(&path, format!("{server} {}", g.pid().unwrap())).expect("write pids");
    std::thread::sleep(Duration::from_secs(120));
}

fn parent_killed_everything_ends() -> Result<(), String> {
    let _s = serial();
    let path = std::env::temp_dir().join(format!(
        "multiproc-fs-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let mut p = Process::new(forkserver_parent, path.clone());
    p.start().ctx("start")?;
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || std::fs::read_to_string(&path)
            .is_ok_and(|t| t.split_whitespace().count() == 2)),
        "pids never written"
    );
    let text = std::fs::read_to_string(&path).ctx("read pids")?;
    let _ = std::fs::remove_file(&path);
    let pids: Vec<i32> = text
        .split_whitespace()
        .map(|t| t.parse().map_err(|e| format!("pid {t}: {e}")))
        .collect::<Result<_, _>>()?;
    for &pid in &pids {
        ensure!(!ipc_tests::is_gone(pid), "{pid} not running");
    }
    p.kill().ctx("kill parent")?;
    let _ = p.join();
    // Server and child die of their parent-death signals; we inherit and reap them.
    for &pid in &pids {
        reap_gone(pid, Duration::from_secs(30))?;
    }
    Ok(())
}
