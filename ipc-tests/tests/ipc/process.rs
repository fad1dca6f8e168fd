//! Process: arguments and results, exit codes, timeouts, signals, start methods, cleanup.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use multiproc::{ErrorKind, JoinTimeoutError, Process, StartMethod, TryJoinError};
use serde::{Deserialize, Serialize};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("process::small_values_round_trip", small_values_round_trip),
        ("process::sixteen_mib_round_trip", sixteen_mib_round_trip),
        (
            "process::short_joins_on_a_child_blocked_writing_its_result",
            short_joins_on_a_blocked_writer,
        ),
        ("process::exit_code_return_is_0", exit_code_return_is_0),
        (
            "process::exit_code_from_exit_call",
            exit_code_from_exit_call,
        ),
        (
            "process::panic_reports_message_location_and_1",
            panic_reports_message_location_and_1,
        ),
        (
            "process::terminate_gives_minus_15",
            terminate_gives_minus_15,
        ),
        ("process::kill_gives_minus_9", kill_gives_minus_9),
        (
            "process::join_timeout_on_sleeping_child",
            join_timeout_on_sleeping_child,
        ),
        ("process::two_hundred_processes", two_hundred_processes),
        (
            "process::child_killed_while_parent_waits",
            child_killed_while_parent_waits,
        ),
        (
            "process::parent_killed_children_exit",
            parent_killed_children_exit,
        ),
        (
            "process::missing_init_is_a_clear_error",
            missing_init_is_a_clear_error,
        ),
        (
            "process::fork_refused_with_threads",
            fork_refused_with_threads,
        ),
        (
            "process::fork_in_single_threaded_child",
            fork_in_single_threaded_child,
        ),
        ("process::fork_unchecked_closure", fork_unchecked_closure),
        ("process::names_and_parents", names_and_parents),
        ("process::misuse_is_typed", misuse_is_typed),
        ("process::drop_daemon_kills", drop_daemon_kills),
        (
            "process::drop_non_daemon_detaches_and_reaps",
            drop_non_daemon_detaches_and_reaps,
        ),
        (
            "process::start_from_short_lived_thread",
            start_from_short_lived_thread,
        ),
        (
            "process::unserializable_argument_fails_at_start",
            unserializable_argument_fails_at_start,
        ),
    ]
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Order {
    id: u64,
    item: String,
    qty: Vec<u32>,
    note: Option<String>,
}

fn process_order(o: Order) -> (u64, String, u32) {
    (o.id * 2, o.item.to_uppercase(), o.qty.iter().sum())
}

fn small_values_round_trip() -> Result<(), String> {
    let order = Order {
        id: 21,
        item: "widget".into(),
        qty: vec![1, 2, 3],
        note: None,
    };
    let mut p = Process::new(process_order, order);
    p.start().ctx("start")?;
    let got = p.join().ctx("join")?;
    ensure!(got == (42, "WIDGET".to_string(), 6), "got {got:?}");
    ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
    Ok(())
}

/// Deterministic bytes so both sides can check them.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

#[derive(Serialize, Deserialize)]
struct Blob(Vec<u8>);

fn reverse_blob(b: Blob) -> Blob {
    let mut v = b.0;
    v.reverse();
    Blob(v)
}

fn sixteen_mib_round_trip() -> Result<(), String> {
    const LEN: usize = 16 << 20;
    let input = pattern(LEN, 7);
    let mut p = Process::new(reverse_blob, Blob(input.clone()));
    p.start().ctx("start")?;
    let Blob(out) = p.join().ctx("join")?;
    ensure!(out.len() == LEN, "length {}", out.len());
    ensure!(out.iter().eq(input.iter().rev()), "contents differ");
    Ok(())
}

fn make_blob((len, seed, made): (usize, u8, multiproc::Event)) -> Blob {
    let blob = Blob(pattern(len, seed));
    made.set();
    blob
}

/// A child whose result (64 MiB) is far larger than the socket's buffer blocks writing it until
/// the parent reads. A join with a deadline shorter than the first, quiet, wait on the pidfd
/// alone (1 ms) comes back with `Timeout` (64 MiB cannot cross in 200 µs: `Ok` would mean the
/// deadline was not kept), and so do the ones after it, each reading what has arrived, until
/// the last gets all of it.
fn short_joins_on_a_blocked_writer() -> Result<(), String> {
    const LEN: usize = 64 << 20;
    let made = multiproc::Event::new().ctx("event")?;
    let mut p = Process::new(make_blob, (LEN, 3, made.clone()));
    p.start().ctx("start")?;
    ensure!(
        made.wait_timeout(Duration::from_secs(60)).is_ok(),
        "the child never made its result"
    );
    // Let it fill the socket and block.
    std::thread::sleep(Duration::from_millis(50));
    let first = p.join_timeout(Duration::from_micros(200));
    ensure!(
        matches!(first, Err(JoinTimeoutError::Timeout)),
        "the first short join gave {:?}",
        first.map(|b| b.0.len())
    );
    let mut joins = 1u32;
    let t = Instant::now();
    let Blob(out) = loop {
        joins += 1;
        match p.join_timeout(Duration::from_micros(200)) {
            Ok(b) => break b,
            Err(JoinTimeoutError::Timeout) => {}
            Err(JoinTimeoutError::Failed(e)) => return Err(format!("join: {e}")),
        }
        ensure!(
            t.elapsed() < Duration::from_secs(60),
            "no end after {joins} joins"
        );
    };
    ensure!(out.len() == LEN, "length {}", out.len());
    ensure!(out == pattern(LEN, 3), "contents differ");
    Ok(())
}

fn identity(x: i64) -> i64 {
    x
}

fn exit_code_return_is_0() -> Result<(), String> {
    let mut p = Process::new(identity, -5);
    ensure!(p.exitcode().is_none(), "exitcode before start");
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")? == -5, "value");
    ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
    Ok(())
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn exit_code_from_exit_call() -> Result<(), String> {
    let mut p = Process::new(exit_with, 7);
    p.start().ctx("start")?;
    let err = p.join().err().ctx("join must fail")?;
    ensure!(err.kind() == ErrorKind::Exited, "kind {:?}", err.kind());
    ensure!(
        err.exit_code() == Some(7),
        "exit_code {:?}",
        err.exit_code()
    );
    ensure!(p.exitcode() == Some(7), "exitcode {:?}", p.exitcode());
    Ok(())
}

fn panics(msg: String) -> u8 {
    panic!("custom failure: {msg}")
}

fn panic_reports_message_location_and_1() -> Result<(), String> {
    let mut p = Process::new(panics, "abc".to_string());
    p.start().ctx("start")?;
    let err = p.join().err().ctx("join must fail")?;
    ensure!(err.kind() == ErrorKind::Panicked, "kind {:?}", err.kind());
    ensure!(
        err.panic_message() == Some("custom failure: abc"),
        "message {:?}",
        err.panic_message()
    );
    let loc = err.panic_location().ctx("location")?;
    ensure!(loc.contains("process.rs:"), "location {loc}");
    ensure!(p.exitcode() == Some(1), "exitcode {:?}", p.exitcode());
    ensure!(
        err.to_string().contains("custom failure: abc"),
        "display: {err}"
    );
    // The failure can be read again; it is not consumed.
    ensure!(
        p.join().err().map(|e| e.kind()) == Some(ErrorKind::Panicked),
        "second join"
    );
    Ok(())
}

fn spin(_: ()) {
    loop {
        std::hint::spin_loop();
    }
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn terminate_gives_minus_15() -> Result<(), String> {
    let mut p = Process::new(spin, ());
    p.start().ctx("start")?;
    p.terminate().ctx("terminate")?;
    let err = p.join().err().ctx("join must fail")?;
    ensure!(err.kind() == ErrorKind::Signaled, "kind {:?}", err.kind());
    ensure!(err.signal() == Some(15), "signal {:?}", err.signal());
    ensure!(p.exitcode() == Some(-15), "exitcode {:?}", p.exitcode());
    // Signalling a finished process is not an error.
    p.terminate().ctx("terminate after exit")?;
    Ok(())
}

fn kill_gives_minus_9() -> Result<(), String> {
    let mut p = Process::new(sleep_ms, 60_000);
    p.start().ctx("start")?;
    p.kill().ctx("kill")?;
    let err = p.join().err().ctx("join must fail")?;
    ensure!(err.signal() == Some(9), "signal {:?}", err.signal());
    ensure!(p.exitcode() == Some(-9), "exitcode {:?}", p.exitcode());
    Ok(())
}

fn join_timeout_on_sleeping_child() -> Result<(), String> {
    let mut p = Process::new(sleep_ms, 60_000);
    p.start().ctx("start")?;
    let t = Instant::now();
    let r = p.join_timeout(Duration::from_millis(200));
    ensure!(
        matches!(r, Err(JoinTimeoutError::Timeout)),
        "join_timeout gave {r:?}"
    );
    ensure!(
        t.elapsed() >= Duration::from_millis(200),
        "returned early: {:?}",
        t.elapsed()
    );
    ensure!(p.is_alive(), "not alive");
    ensure!(p.exitcode().is_none(), "exitcode {:?}", p.exitcode());
    let r = p.try_join();
    ensure!(
        matches!(r, Err(TryJoinError::Running)),
        "try_join gave {r:?}"
    );
    p.kill().ctx("kill")?;
    let r = p.join_timeout(Duration::from_secs(30));
    ensure!(
        matches!(&r, Err(JoinTimeoutError::Failed(e)) if e.kind() == ErrorKind::Signaled),
        "join after kill must fail with the signal: {r:?}"
    );
    ensure!(!p.is_alive(), "still alive");
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

fn two_hundred_processes() -> Result<(), String> {
    let mut total = 0;
    for batch in 0..20u64 {
        let mut procs: Vec<_> = (0..10u64)
            .map(|i| Process::new(square, batch * 10 + i))
            .collect();
        for p in &mut procs {
            p.start().ctx("start")?;
        }
        for p in &mut procs {
            total += p.join().ctx("join")?;
            ensure!(p.exitcode() == Some(0), "exitcode");
        }
    }
    let expected: u64 = (0..200u64).map(|x| x * x).sum();
    ensure!(total == expected, "sum {total} != {expected}");
    Ok(())
}

fn child_killed_while_parent_waits() -> Result<(), String> {
    let mut p = Process::new(sleep_ms, 60_000);
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")? as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let err = p.join().err().ctx("join must fail")?;
    killer.join().map_err(|_| "killer thread panicked")?;
    ensure!(err.kind() == ErrorKind::Signaled, "kind {:?}", err.kind());
    ensure!(err.signal() == Some(9), "signal {:?}", err.signal());
    ensure!(err.pid() == Some(pid as u32), "pid {:?}", err.pid());
    Ok(())
}

/// Starts a grandchild that sleeps, writes its pid to `path`, then sleeps itself.
fn parent_of_sleeper(path: PathBuf) {
    let mut g = Process::new(sleep_ms, 120_000);
    g.start().expect("grandchild start");
    std::fs::write(&path, g.pid().unwrap().to_string()).expect("write pid");
    std::thread::sleep(Duration::from_secs(120));
}

fn parent_killed_children_exit() -> Result<(), String> {
    let path = std::env::temp_dir().join(format!(
        "multiproc-gc-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let mut p = Process::new(parent_of_sleeper, path.clone());
    p.start().ctx("start")?;
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || path.exists()),
        "grandchild pid never written"
    );
    let text = std::fs::read_to_string(&path).ctx("read pid")?;
    let _ = std::fs::remove_file(&path);
    let grandchild: i32 = text.trim().parse().ctx("parse pid")?;
    ensure!(!ipc_tests::is_gone(grandchild), "grandchild not running");
    p.kill().ctx("kill parent")?;
    let _ = p.join();
    // The grandchild must die of its parent-death signal. We are the subreaper: it becomes our
    // child, and we reap it.
    let mut status = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // SAFETY: waiting on a specific pid, with a valid status pointer.
        let r = unsafe { libc::waitpid(grandchild, &mut status, libc::WNOHANG) };
        if r == grandchild {
            break;
        }
        if r == -1 && ipc_tests::is_gone(grandchild) {
            // Reaped by someone else (not our child after all): it is gone, which is the point.
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "grandchild {grandchild} still alive after its parent was killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    ensure!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL,
        "grandchild status {status:#x}"
    );
    Ok(())
}

fn missing_init_is_a_clear_error() -> Result<(), String> {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_no_init"))
        .output()
        .ctx("run no_init")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(out.status.success(), "no_init failed: {out:?}");
    ensure!(stdout.starts_with("NotInitialized:"), "stdout: {stdout}");
    ensure!(
        stdout.contains("multiproc::init()"),
        "message does not say what to do: {stdout}"
    );
    Ok(())
}

fn fork_refused_with_threads() -> Result<(), String> {
    // This test runs on a watchdog thread, so the process has several threads.
    let mut p = Process::new(square, 3).with_start_method(StartMethod::Fork);
    let err = p.start().err().ctx("fork must be refused")?;
    ensure!(
        err.kind() == ErrorKind::ThreadedFork,
        "kind {:?}",
        err.kind()
    );
    ensure!(err.to_string().contains("spawn"), "message: {err}");
    ensure!(p.pid().is_none(), "a child was created");
    Ok(())
}

/// Runs in a spawned child, which has a single thread: there, fork is allowed.
fn fork_twice(x: u64) -> (u64, i32, String) {
    let mut p = Process::new(square, x).with_start_method(StartMethod::Fork);
    p.start().expect("fork start");
    let v = p.join().expect("fork join");
    let mut q = Process::new(exit_with, 3).with_start_method(StartMethod::Fork);
    q.start().expect("fork start 2");
    let code = match q.join() {
        Err(e) => e.exit_code().unwrap_or(-1000),
        Ok(()) => -2000,
    };
    let mut r = Process::new(panics, "forked".into()).with_start_method(StartMethod::Fork);
    r.start().expect("fork start 3");
    let msg = r
        .join()
        .err()
        .and_then(|e| e.panic_message().map(str::to_string))
        .unwrap_or_default();
    (v, code, msg)
}

fn fork_in_single_threaded_child() -> Result<(), String> {
    let mut p = Process::new(fork_twice, 12);
    p.start().ctx("start")?;
    let (v, code, msg) = p.join().ctx("join")?;
    ensure!(v == 144, "value {v}");
    ensure!(code == 3, "exit code {code}");
    ensure!(msg == "custom failure: forked", "panic message {msg:?}");
    Ok(())
}

fn fork_unchecked_closure() -> Result<(), String> {
    let data: Vec<u64> = (1..=100).collect();
    // SAFETY: the other threads of this test process (libtest-mimic's and the watchdog's) hold
    // no lock that the closure needs: it sums a vector it owns and returns.
    let mut p = unsafe { Process::new_fork_unchecked(move || data.iter().sum::<u64>()) };
    ensure!(p.start_method() == StartMethod::Fork, "method");
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")? == 5050, "sum");
    Ok(())
}

fn who_am_i(_: ()) -> (String, u32, Option<(String, u32)>, String) {
    let me = multiproc::current_process();
    let parent = multiproc::parent_process().map(|p| (p.name().to_string(), p.pid()));
    // A grandchild's default name extends ours.
    let mut g = Process::new(identity, 1);
    let gname = g.name().to_string();
    g.start().expect("grandchild");
    g.join().expect("grandchild join");
    (me.name().to_string(), me.pid(), parent, gname)
}

fn names_and_parents() -> Result<(), String> {
    ensure!(
        multiproc::current_process().name() == "MainProcess",
        "main name"
    );
    ensure!(multiproc::parent_process().is_none(), "main has no parent");
    let mut p = Process::new(who_am_i, ());
    let default_name = p.name().to_string();
    ensure!(
        default_name.starts_with("Process-"),
        "default name {default_name}"
    );
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")?;
    let (name, child_pid, parent, grandchild_name) = p.join().ctx("join")?;
    ensure!(name == default_name, "child name {name} vs {default_name}");
    ensure!(child_pid == pid, "pid {child_pid} vs {pid}");
    ensure!(
        parent == Some(("MainProcess".to_string(), std::process::id())),
        "parent {parent:?}"
    );
    ensure!(
        grandchild_name == format!("{default_name}:1"),
        "grandchild name {grandchild_name}"
    );

    let mut named = Process::new(who_am_i, ()).with_name("pro-7");
    named.start().ctx("start named")?;
    ensure!(
        named.join().ctx("join named")?.0 == "pro-7",
        "custom name not seen by the child"
    );
    Ok(())
}

fn misuse_is_typed() -> Result<(), String> {
    let mut p = Process::new(identity, 1);
    ensure!(
        p.join().err().map(|e| e.kind()) == Some(ErrorKind::NotStarted),
        "join before start"
    );
    ensure!(
        p.terminate().err().map(|e| e.kind()) == Some(ErrorKind::NotStarted),
        "terminate before start"
    );
    ensure!(!p.is_alive(), "alive before start");
    p.start().ctx("start")?;
    ensure!(
        p.start().err().map(|e| e.kind()) == Some(ErrorKind::AlreadyStarted),
        "second start"
    );
    ensure!(p.join().ctx("join")? == 1, "value");
    ensure!(
        p.join().err().map(|e| e.kind()) == Some(ErrorKind::ResultTaken),
        "second join"
    );
    ensure!(p.exitcode() == Some(0), "exitcode still readable");
    Ok(())
}

fn drop_daemon_kills() -> Result<(), String> {
    let mut p = Process::new(sleep_ms, 60_000).with_daemon(true);
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")? as i32;
    drop(p);
    // Killed and reaped synchronously by the drop.
    ensure!(
        ipc_tests::proc_entry(pid).is_none(),
        "daemon child {pid} still exists after drop"
    );
    Ok(())
}

fn touch_after(arg: (PathBuf, u64)) {
    std::thread::sleep(Duration::from_millis(arg.1));
    std::fs::write(&arg.0, b"done").expect("write");
}

fn drop_non_daemon_detaches_and_reaps() -> Result<(), String> {
    let path = std::env::temp_dir().join(format!(
        "multiproc-detach-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let mut p = Process::new(touch_after, (path.clone(), 300));
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")? as i32;
    drop(p);
    ensure!(
        !ipc_tests::is_gone(pid),
        "detached child was killed by the drop"
    );
    ensure!(
        ipc_tests::eventually(Duration::from_secs(30), || path.exists()),
        "detached child never finished"
    );
    let _ = std::fs::remove_file(&path);
    // Reaped by the service thread: no zombie remains.
    ensure!(
        ipc_tests::eventually(Duration::from_secs(10), || ipc_tests::proc_entry(pid)
            .is_none()),
        "detached child {pid} was not reaped: {:?}",
        ipc_tests::proc_entry(pid)
    );
    Ok(())
}

fn start_from_short_lived_thread() -> Result<(), String> {
    // The child is created on behalf of a thread that ends right away; it must survive that
    // (the parent-death signal follows the creating thread).
    let handle = std::thread::spawn(|| {
        let mut p = Process::new(sleep_ms, 300);
        p.start().map(|()| p)
    });
    let mut p = handle.join().map_err(|_| "thread panicked")?.ctx("start")?;
    std::thread::sleep(Duration::from_millis(50));
    ensure!(p.is_alive(), "child died with the thread that started it");
    p.join().ctx("join")?;
    ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
    Ok(())
}

struct NotSerializable;

impl Serialize for NotSerializable {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(
            "this value refuses to be serialized",
        ))
    }
}

impl<'de> Deserialize<'de> for NotSerializable {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(NotSerializable)
    }
}

fn takes_unserializable(_: NotSerializable) -> u8 {
    0
}

fn unserializable_argument_fails_at_start() -> Result<(), String> {
    let mut p = Process::new(takes_unserializable, NotSerializable);
    let err = p.start().err().ctx("start must fail")?;
    ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
    ensure!(
        err.to_string().contains("could not be serialized"),
        "message: {err}"
    );
    ensure!(p.pid().is_none(), "a child was created");
    Ok(())
}
