//! A small program that starts one child, for the bootstrap tests (`tests/ipc/bootstrap.rs`),
//! which run it in odd ways: under an explicit loader, setuid, with a foreign environment.
//!
//! `start_one <mode>`: `run` starts a child that triples 14; `tag` prints the environment value
//! a child of this program receives; `args` prints the child's `env::args()`; `affinity`
//! prints its own CPU affinity and its child's threads'; `overflow` makes
//! the child overflow its stack; `closed-stdio` (`closed-stdout`, `closed-stderr`) closes
//! standard output and error (one of them), then exits 0 if the child found both open and
//! inheritable; `replaced`
//! replaces its own executable file by another before it starts two children; `fork` forks
//! a child (checked); `raw-thread-fork` adds a thread made with clone(2) first, `dlmopen-thread-fork` one made
//! by a copy of glibc loaded with dlmopen(3).

use std::io::Write;

use multiproc::Process;

fn triple(x: u32) -> u32 {
    x * 3
}

/// A checked fork of `triple` beside the threads this program now has: what it gave, with the
/// number of threads seen.
fn fork_beside_threads() -> multiproc::Result<String> {
    let threads = ipc_tests::thread_count();
    let mut p = Process::new(triple, 14).with_start_method(multiproc::StartMethod::Fork);
    p.start()
        .and_then(|()| p.join())
        .map(|v| format!("forked beside {threads} threads: result {v}"))
}

/// The child's `MULTIPROC_CHILD` as the kernel passed it (the process's original environment
/// block still holds it after the bootstrap removed it from `std::env`).
fn child_env(_: ()) -> Option<String> {
    let environ = std::fs::read("/proc/self/environ").ok()?;
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("MULTIPROC_CHILD=").map(str::to_string))
}

fn args(_: ()) -> Vec<String> {
    std::env::args().collect()
}

/// Whether standard output and error are open and inheritable (not close-on-exec: a program
/// this child executes gets them too).
fn stdio_open(_: ()) -> (bool, bool) {
    // SAFETY: F_GETFD only queries the descriptor table.
    let open = |fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } == 0;
    (open(1), open(2))
}

/// The affinity of the child's work thread and of its main thread.
fn affinities(_: ()) -> (Vec<usize>, Vec<usize>) {
    (
        ipc_tests::affinity(0),
        ipc_tests::affinity(std::process::id() as i32),
    )
}

/// Recurses until the stack overflows (the end is never reached).
fn overflow(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    let frame = std::hint::black_box([depth; 64]);
    overflow(frame[7] + 1) + std::hint::black_box(frame[3])
}

fn run<A, R>(f: fn(A) -> R, arg: A) -> Result<R, multiproc::Error>
where
    A: serde::Serialize + serde::de::DeserializeOwned,
    R: serde::Serialize + serde::de::DeserializeOwned,
{
    let mut p = Process::new(f, arg);
    p.start()?;
    p.join()
}

fn main() {
    multiproc::init();
    println!("main ran");
    let mode = std::env::args().nth(1).unwrap_or_default();
    let out = match mode.as_str() {
        "run" => run(triple, 14).map(|v| format!("result {v}")),
        "tag" => run(child_env, ()).map(|v| format!("tag {}", v.unwrap_or_default())),
        "args" => run(args, ()).map(|v| format!("args {v:?}")),
        "overflow" => run(overflow, 0).map(|v| format!("returned {v}")),
        "affinity" => run(affinities, ())
            .map(|(work, main)| format!("affinity {:?} {work:?} {main:?}", ipc_tests::affinity(0))),
        "closed-stdio" | "closed-stdout" | "closed-stderr" => {
            let _ = std::io::stdout().flush();
            let fds: &[i32] = match mode.as_str() {
                "closed-stdout" => &[1],
                "closed-stderr" => &[2],
                _ => &[1, 2],
            };
            // SAFETY: closing the standard descriptors; nothing else uses them from here on.
            for &fd in fds {
                unsafe {
                    libc::close(fd);
                }
            }
            let code = match run(stdio_open, ()) {
                Ok((true, true)) => 0,
                Ok(_) => 1,
                Err(_) => 2,
            };
            std::process::exit(code);
        }
        "replaced" => {
            // Our file is deleted and another takes its path before the first start: the child
            // must still run (and verify as) the file this process runs.
            let path = std::fs::read_link("/proc/self/exe").expect("read_link /proc/self/exe");
            std::fs::remove_file(&path).expect("remove our executable");
            std::fs::copy("/bin/true", &path).expect("put another file at its path");
            let first = run(triple, 14);
            let second = run(triple, 15);
            first.and_then(|a| second.map(|b| format!("result {a} {b}")))
        }
        // A second thread made with clone(2), not pthread_create, in a program that made no
        // other: a checked fork must still be refused.
        "raw-thread-fork" => {
            ipc_tests::raw_clone_thread();
            fork_beside_threads()
        }
        // A second thread made by a copy of glibc in a namespace of its own (dlmopen): the
        // main copy's single-thread flag stays set; a checked fork must still be refused.
        "dlmopen-thread-fork" => {
            ipc_tests::dlmopen_thread();
            fork_beside_threads()
        }
        // The same fork without the extra thread: allowed.
        "fork" => {
            let mut p = Process::new(triple, 14).with_start_method(multiproc::StartMethod::Fork);
            p.start()
                .and_then(|()| p.join())
                .map(|v| format!("result {v}"))
        }
        other => Ok(format!("unknown mode {other:?}")),
    };
    match out {
        Ok(line) => println!("{line}"),
        Err(e) => println!("error {:?}: {e}", e.kind()),
    }
}
