//! Forks: the unchecked fork under threads that hold locks, the safe fork beside the library's
//! own thread, and what a forked child inherits.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use multiproc::{JoinTimeoutError, Process, StartMethod};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "fork::unchecked_1000_while_threads_hammer_locks",
            unchecked_1000_while_threads_hammer_locks,
        ),
        (
            "fork::allowed_after_service_thread_started",
            allowed_after_service_thread_started,
        ),
        (
            "fork::unchecked_from_thread_child_starts_from_thread",
            unchecked_from_thread_child_starts_from_thread,
        ),
        (
            "fork::child_closes_descriptors_it_does_not_need",
            child_closes_descriptors_it_does_not_need,
        ),
    ]
}

fn square(x: u64) -> u64 {
    x * x
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

/// Runs `body` on a thread named `name` until `stop` is set.
fn hammer(stop: &Arc<AtomicBool>, name: &str, body: fn(u64)) -> std::thread::JoinHandle<()> {
    let stop = stop.clone();
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                body(i);
                i = i.wrapping_add(1);
            }
        })
        .expect("hammer thread")
}

fn hammer_stdout(_: u64) {
    use std::io::Write;
    // Take and hold the locks (writing nothing, so the test output stays clean).
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(b"");
    let _ = out.flush();
    drop(out);
    let _ = std::io::stderr().lock().flush();
}

fn hammer_alloc(i: u64) {
    let v: Vec<u64> = (0..(i % 512)).collect();
    std::hint::black_box(&v);
    let s = format!("{i}{v:?}");
    std::hint::black_box(s);
}

fn hammer_identity(_: u64) {
    std::hint::black_box(multiproc::current_process().name().len());
}

fn hammer_panics(i: u64) {
    let _ = std::panic::catch_unwind(|| {
        if std::hint::black_box(i) != u64::MAX {
            panic!("hammered panic {i}");
        }
    });
}

/// Makes panics of the `hammer-panic` thread silent (others still reach the previous hook).
fn silence_hammer_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some("hammer-panic") {
                previous(info);
            }
        }));
    });
}

/// The fork hang: the library's own path in an unchecked-fork child took locks that other
/// threads hold (stdout's flush, the identity mutex, the panic hook). Here other threads keep
/// those locks (and the allocator's) busy while 1,000 children are forked.
fn unchecked_1000_while_threads_hammer_locks() -> Result<(), String> {
    silence_hammer_panics();
    let stop = Arc::new(AtomicBool::new(false));
    let threads = vec![
        hammer(&stop, "hammer-stdout", hammer_stdout),
        hammer(&stop, "hammer-alloc", hammer_alloc),
        hammer(&stop, "hammer-identity", hammer_identity),
        hammer(&stop, "hammer-panic", hammer_panics),
    ];
    let outcome = (|| {
        for i in 0..1_000u64 {
            let data: Vec<u64> = (0..=i).collect();
            // SAFETY: the closure sums a vector it owns, allocates (glibc's allocator is
            // fork-safe) and reads its identity (lock-free): it takes none of the locks the
            // hammering threads hold, does not print, and cannot panic.
            let mut p = unsafe {
                Process::new_fork_unchecked(move || {
                    let name_len = multiproc::current_process().name().len() as u64;
                    data.iter().sum::<u64>() + name_len
                })
            };
            let name_len = p.name().len() as u64;
            p.start().ctx("start")?;
            match p.join_timeout(Duration::from_secs(30)) {
                Ok(v) => ensure!(v == i * (i + 1) / 2 + name_len, "fork {i}: value {v}"),
                Err(JoinTimeoutError::Failed(e)) => return Err(format!("fork {i}: join: {e}")),
                Err(JoinTimeoutError::Timeout) => {
                    let _ = p.kill();
                    let _ = p.join();
                    return Err(format!("fork {i}: the child hung (no result within 30 s)"));
                }
            }
        }
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().map_err(|_| "a hammer thread panicked")?;
    }
    outcome
}

/// Runs in a spawned (single-threaded) child: a dropped running non-daemon process starts the
/// service thread, and the safe fork must still work afterwards.
fn fork_after_detach(x: u64) -> Result<u64, String> {
    let mut detached = Process::new(sleep_ms, 200);
    detached.start().map_err(|e| e.to_string())?;
    let pid = detached.pid().unwrap_or(0) as i32;
    drop(detached);
    // A start from another thread goes through the service thread too.
    let from_thread = std::thread::spawn(|| {
        let mut p = Process::new(square, 2);
        p.start().and_then(|()| p.join())
    })
    .join()
    .map_err(|_| "thread panicked".to_string())?
    .map_err(|e| e.to_string())?;
    let mut p = Process::new(square, x).with_start_method(StartMethod::Fork);
    p.start().map_err(|e| format!("fork start: {e}"))?;
    let v = p.join().map_err(|e| format!("fork join: {e}"))?;
    // Leave nothing behind: the detached child is reaped by the service thread.
    if !ipc_tests::eventually(Duration::from_secs(30), || {
        ipc_tests::proc_entry(pid).is_none()
    }) {
        return Err(format!("detached child {pid} was not reaped"));
    }
    Ok(v + from_thread)
}

fn allowed_after_service_thread_started() -> Result<(), String> {
    let mut p = Process::new(fork_after_detach, 5);
    p.start().ctx("start")?;
    let v = p.join().ctx("join")?;
    ensure!(v == Ok(29), "child said {v:?}");
    Ok(())
}

/// A child forked (unchecked) by a non-main thread starts a process from a thread of its own:
/// it needs a service thread of its own, not the copied state of its parent's.
fn unchecked_from_thread_child_starts_from_thread() -> Result<(), String> {
    // SAFETY: the closure starts a thread and a spawned process; the locks that takes (the
    // allocator's, which is fork-safe, and the environment's read lock, which no thread of this
    // suite holds for writing) are safe in the copy. It does not print.
    let mut p = unsafe {
        Process::new_fork_unchecked(|| {
            std::thread::spawn(|| {
                let mut q = Process::new(square, 7);
                q.start()?;
                let v = q.join_timeout(Duration::from_secs(30))?;
                Ok::<_, multiproc::Error>(v)
            })
            .join()
            .map_err(|_| "thread panicked".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()))
        })
    };
    p.start().ctx("start")?;
    match p.join_timeout(Duration::from_secs(60)) {
        Ok(v) => ensure!(v == Ok(49), "child said {v:?}"),
        Err(JoinTimeoutError::Failed(e)) => return Err(format!("join: {e}")),
        Err(JoinTimeoutError::Timeout) => {
            let _ = p.kill();
            let _ = p.join();
            return Err("the forked child hung starting a process from a thread".into());
        }
    }
    Ok(())
}

/// Runs in a spawned (single-threaded) child. A safe-fork sibling must not keep a copy of a
/// pipe end it was not given, while the handles it was given still work in it.
fn fork_sibling_and_pipe_ends(_: ()) -> Result<(bool, u64), String> {
    let (a, b) = multiproc::pipe::<u64>().map_err(|e| e.to_string())?;
    let mut sibling = Process::new(sleep_ms, 30_000).with_start_method(StartMethod::Fork);
    sibling.start().map_err(|e| e.to_string())?;
    drop(b);
    let seen = a.recv_timeout(Duration::from_secs(10));
    let _ = sibling.kill();
    let _ = sibling.join();
    let disconnected = matches!(&seen, Err(multiproc::RecvTimeoutError::Disconnected));
    // A handle passed as the argument survives the cleanup.
    let (c, d) = multiproc::pipe::<u64>().map_err(|e| e.to_string())?;
    let mut user = Process::new(send_back, d).with_start_method(StartMethod::Fork);
    user.start().map_err(|e| e.to_string())?;
    user.join().map_err(|e| e.to_string())?;
    let got = c
        .recv_timeout(Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    Ok((disconnected, got))
}

fn send_back(conn: multiproc::Connection<u64>) {
    conn.send(&42).expect("send from the forked child");
}

fn child_closes_descriptors_it_does_not_need() -> Result<(), String> {
    let mut p = Process::new(fork_sibling_and_pipe_ends, ());
    p.start().ctx("start")?;
    let (disconnected, got) = p.join().ctx("join")??;
    ensure!(
        disconnected,
        "a forked sibling kept the pipe end open: no Disconnected"
    );
    ensure!(got == 42, "the handle passed to the fork child gave {got}");
    Ok(())
}
