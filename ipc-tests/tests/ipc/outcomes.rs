//! How a child's end is reported when the usual signs are missing or misleading: SIGCHLD
//! ignored, a foreign `waitpid(-1)`, a kill in the middle of a large result, a garbage report.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use multiproc::{ErrorKind, Process, StartMethod, Worker};
use serde::{Deserialize, Serialize};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "outcomes::sigchld_ignored_join_and_shutdown",
            sigchld_ignored_join_and_shutdown,
        ),
        (
            "outcomes::foreign_waitpid_does_not_lose_results",
            foreign_waitpid_does_not_lose_results,
        ),
        (
            "outcomes::kill_during_large_result_is_signaled",
            kill_during_large_result_is_signaled,
        ),
        (
            "outcomes::garbage_report_is_a_codec_error",
            garbage_report_is_a_codec_error,
        ),
        (
            "outcomes::result_over_the_limit_is_a_codec_error",
            result_over_the_limit_is_a_codec_error,
        ),
    ]
}

/// `n` bytes of sevens: encoded, `n` plus a length prefix (two bytes below 16 KiB).
fn sevens(n: usize) -> Vec<u8> {
    vec![7; n]
}

/// A result over the limit set with `with_max_result` is a codec error of that call, not a
/// dead child: the worker goes on serving (and its process is the same one), and
/// `Process::join` says so with exit code 1. At the limit exactly, the result arrives.
fn result_over_the_limit_is_a_codec_error() -> Result<(), String> {
    const LIMIT: usize = 4096;
    // 4094 bytes plus a two-byte length prefix: exactly the limit.
    let at_limit = LIMIT - 2;
    for method in [StartMethod::Spawn, StartMethod::Forkserver] {
        let mut w = Worker::start_with(method)
            .ctx("start worker")?
            .with_max_result(LIMIT);
        let pid = w.pid();
        let err = w
            .call(sevens, at_limit + 1)
            .err()
            .ctx("a result one byte over the limit must fail")?;
        ensure!(
            err.kind() == ErrorKind::Codec,
            "{method:?} worker: kind {:?}: {err}",
            err.kind()
        );
        ensure!(
            err.to_string().contains("4096"),
            "{method:?} worker: the message does not name the limit: {err}"
        );
        ensure!(
            w.is_alive(),
            "{method:?}: the worker died over a large result"
        );
        let v = w.call(sevens, at_limit).ctx("a result at the limit")?;
        ensure!(
            v.len() == at_limit,
            "{method:?}: {} bytes came back",
            v.len()
        );
        let v = w.call(square, 12).ctx("the next call")?;
        ensure!(v == 144, "{method:?}: square gave {v}");
        ensure!(w.pid() == pid, "{method:?}: another process answered");
        let err = w
            .call(sevens, 1 << 20)
            .err()
            .ctx("a 1 MiB result must fail")?;
        ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
        w.shutdown().ctx("shutdown")?;

        let mut p = Process::new(sevens, 1 << 20)
            .with_start_method(method)
            .with_max_result(LIMIT);
        p.start().ctx("start process")?;
        let err = p
            .join()
            .err()
            .ctx("join of a result over the limit must fail")?;
        ensure!(
            err.kind() == ErrorKind::Codec,
            "{method:?} process: kind {:?}: {err}",
            err.kind()
        );
        ensure!(p.exitcode() == Some(1), "exitcode {:?}", p.exitcode());
        let mut p = Process::new(sevens, at_limit)
            .with_start_method(method)
            .with_max_result(LIMIT);
        p.start().ctx("start process at the limit")?;
        let v = p.join().ctx("join at the limit")?;
        ensure!(v.len() == at_limit, "{} bytes came back", v.len());
    }
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

/// What the SIGCHLD-ignoring child saw.
#[derive(Serialize, Deserialize, Debug)]
struct Seen {
    value: Result<u64, String>,
    exitcode: Option<i32>,
    lost: Result<(), (String, String)>,
    worker: Result<u64, String>,
    shutdown: Result<(), String>,
}

/// Runs in a spawned child with SIGCHLD ignored (as under `trap '' CHLD`): the kernel reaps
/// its children itself, and no wait can return their status.
fn with_sigchld_ignored(_: ()) -> Seen {
    // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let mut p = Process::new(square, 6);
    let value = p.start().and_then(|()| p.join()).map_err(|e| e.to_string());
    let exitcode = p.exitcode();
    let mut q = Process::new(exit_with, 4);
    let lost = match q.start().and_then(|()| q.join()) {
        Ok(()) => Ok(()),
        Err(e) => Err((format!("{:?}", e.kind()), e.to_string())),
    };
    let (worker, shutdown) = match Worker::start() {
        Ok(mut w) => (
            w.call(square, 9).map_err(|e| e.to_string()),
            w.shutdown().map_err(|e| e.to_string()),
        ),
        Err(e) => (Err(e.to_string()), Ok(())),
    };
    Seen {
        value,
        exitcode,
        lost,
        worker,
        shutdown,
    }
}

fn sigchld_ignored_join_and_shutdown() -> Result<(), String> {
    let mut p = Process::new(with_sigchld_ignored, ());
    p.start().ctx("start")?;
    let seen = p.join().ctx("join")?;
    ensure!(seen.value == Ok(36), "join: {seen:?}");
    ensure!(seen.exitcode == Some(0), "exitcode: {seen:?}");
    match &seen.lost {
        Err((kind, msg)) => ensure!(
            kind == "Exited" && msg.contains("collected elsewhere"),
            "a lost status must say so: {seen:?}"
        ),
        Ok(()) => return Err(format!("exit(4) reported as success: {seen:?}")),
    }
    ensure!(seen.worker == Ok(81), "worker call: {seen:?}");
    ensure!(seen.shutdown == Ok(()), "worker shutdown: {seen:?}");
    Ok(())
}

/// Runs in a spawned child, where a thread keeps collecting any child's status, as a library
/// calling `waitpid(-1)` would.
fn beside_a_foreign_reaper(n: u64) -> Result<u64, String> {
    let stop = Arc::new(AtomicBool::new(false));
    let reaper = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                // Blocks until any child ends and collects it at once (ECHILD when there is
                // none). SAFETY: waitpid with a null status pointer is allowed.
                let r = unsafe { libc::waitpid(-1, std::ptr::null_mut(), 0) };
                if r <= 0 {
                    std::thread::yield_now();
                }
            }
        })
    };
    let mut total = 0;
    let mut failure = None;
    for i in 0..n {
        let mut p = Process::new(square, i);
        match p.start().and_then(|()| p.join()) {
            Ok(v) => total += v,
            Err(e) => {
                failure = Some(format!("process {i}: {e}"));
                break;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = reaper.join();
    failure.map_or(Ok(total), Err)
}

fn foreign_waitpid_does_not_lose_results() -> Result<(), String> {
    let mut p = Process::new(beside_a_foreign_reaper, 30);
    p.start().ctx("start")?;
    let total = p.join().ctx("join")??;
    let expected: u64 = (0..30u64).map(|x| x * x).sum();
    ensure!(total == expected, "sum {total} != {expected}");
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Blob(#[serde(with = "serde_bytes")] Vec<u8>);

/// Announces (by a file) that it is about to return 64 MiB, which it then sends to a parent
/// that does not read yet.
fn large_result(flag: std::path::PathBuf) -> Blob {
    let blob = Blob(vec![7; 64 << 20]);
    std::fs::write(&flag, b"returning").expect("flag");
    blob
}

fn kill_during_large_result_is_signaled() -> Result<(), String> {
    let flag = std::env::temp_dir().join(format!(
        "multiproc-large-{}-{:?}",
        std::process::id(),
        Instant::now()
    ));
    let mut p = Process::new(large_result, flag.clone());
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")? as i32;
    ensure!(
        ipc_tests::eventually(Duration::from_secs(60), || flag.exists()),
        "the child never got to its result"
    );
    let _ = std::fs::remove_file(&flag);
    // Blocked in the middle of the result: the socket is full and we are not reading.
    ensure!(
        ipc_tests::eventually(Duration::from_secs(60), || {
            ipc_tests::proc_entry(pid).is_some_and(|e| e.state == 'S')
        }),
        "the child never blocked sending its result"
    );
    p.kill().ctx("kill")?;
    let err = match p.join() {
        Ok(_) => return Err("join returned a value after a kill mid-result".into()),
        Err(e) => e,
    };
    ensure!(
        err.kind() == ErrorKind::Signaled && err.signal() == Some(9),
        "a kill mid-result must be reported as the signal: {:?}: {err}",
        err.kind()
    );
    ensure!(p.exitcode() == Some(-9), "exitcode {:?}", p.exitcode());
    Ok(())
}

/// Writes a frame that is no report at all on every socket it has (its control socket among
/// them), then exits 0.
fn write_garbage_report(_: ()) {
    for fd in 3..64 {
        // SAFETY: an all-zero `stat` is a valid value to be overwritten.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat on any number is harmless (EBADF when it is not open); `st` is valid.
        let is_socket = unsafe { libc::fstat(fd, &mut st) } == 0
            && (st.st_mode & libc::S_IFMT) == libc::S_IFSOCK;
        if is_socket {
            let garbage = [1u8, 0, 0, 0, 0xff];
            // SAFETY: writing 5 bytes from a local array to an open socket.
            unsafe { libc::write(fd, garbage.as_ptr().cast(), garbage.len()) };
        }
    }
    std::process::exit(0)
}

fn garbage_report_is_a_codec_error() -> Result<(), String> {
    let mut p = Process::new(write_garbage_report, ());
    p.start().ctx("start")?;
    let err = p.join().err().ctx("join must fail")?;
    ensure!(
        err.kind() == ErrorKind::Codec && err.to_string().contains("malformed"),
        "a garbage report must be a codec error from the child: {:?}: {err}",
        err.kind()
    );
    Ok(())
}
