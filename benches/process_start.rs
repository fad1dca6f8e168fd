//! `process_start`: start and join a process whose function does nothing.
//!
//! Measures our spawn and fork start methods; the raw floor for each in the same run (`raw_exec`:
//! run this very executable and have it exit before `main`; `raw_fork`: `fork` + `_exit` +
//! `waitpid`); the forkserver, idle and from a parent with 8 busy threads (`*_8_busy`, beside
//! the raw fork floor under the same load, and a forkserver worker started and killed, as a pool
//! replaces one); and, when `python3` is on the PATH, CPython's
//! `fork`, `forkserver` and `spawn` in the same run (through `benches/python/process_start.py`),
//! so that the ratio is taken on the same machine at the same moment.
//!
//! Run with `cargo bench --bench process_start`.

use std::process::{Command, Stdio};
use std::time::Duration;

use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use multiproc::{ErrorKind, Process, StartMethod, Worker};

fn noop(_: ()) {}

/// The `MULTIPROC_CHILD` value this child was started with (the kernel's copy of the
/// environment keeps it after the bootstrap removed it from `std::env`).
fn child_env(_: ()) -> Option<String> {
    let environ = std::fs::read("/proc/self/environ").ok()?;
    environ
        .split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix("MULTIPROC_CHILD=").map(str::to_string))
}

fn start_join(method: StartMethod) -> multiproc::Result<()> {
    let mut p = Process::new(noop, ()).with_start_method(method);
    p.start()?;
    p.join()
}

#[path = "common/raw_fork.rs"]
mod raw_fork_floor;
use raw_fork_floor::raw_fork;

#[path = "common/filter.rs"]
mod filter;
#[path = "common/python.rs"]
mod python_script;

/// Runs CPython's loop of `iters` start+join cycles and returns the time it reported.
fn python(method: &str, iters: u64) -> Option<Duration> {
    python_script::run("process_start.py", &[method.to_string()], iters)
}

fn bench(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("process_start");
    g.sample_size(50).measurement_time(Duration::from_secs(5));

    g.bench_function("spawn", |b| {
        b.iter(|| start_join(StartMethod::Spawn).unwrap())
    });
    let exe = std::env::current_exe().expect("current_exe");
    // The value our children get, addressed to a child of this process; with no control socket
    // on stdin, the pre-main hook refuses it at once: exec + loader + hook + exit.
    let mut p = Process::new(child_env, ());
    p.start().unwrap();
    let value = p
        .join()
        .unwrap()
        .expect("MULTIPROC_CHILD in the child's environment");
    g.bench_function("raw_exec", |b| {
        b.iter(|| {
            let st = Command::new(&exe)
                .env("MULTIPROC_CHILD", &value)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap();
            assert_eq!(st.code(), Some(3));
        })
    });

    match start_join(StartMethod::Fork) {
        Ok(()) => {
            g.bench_function("fork", |b| {
                b.iter(|| start_join(StartMethod::Fork).unwrap())
            });
            g.bench_function("raw_fork", |b| b.iter(raw_fork));
        }
        Err(e) if e.kind() == ErrorKind::ThreadedFork => {
            eprintln!("process_start/fork skipped: {e}");
        }
        Err(e) => panic!("fork start failed: {e}"),
    }

    g.bench_function("forkserver", |b| {
        b.iter(|| start_join(StartMethod::Forkserver).unwrap())
    });
    // The busy threads and CPython's runs cost minutes: only for the benchmarks that need them.
    let busy_wanted = [
        "forkserver_8_busy",
        "raw_fork_8_busy",
        "forkserver_worker_replace_8_busy",
        "python_forkserver_8_busy",
    ]
    .iter()
    .any(|f| filter::selected(&format!("process_start/{f}")));
    if busy_wanted {
        let stop = Arc::new(AtomicBool::new(false));
        let busy: Vec<_> = (0..8)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    let mut v: Vec<u64> = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        v.push(v.len() as u64);
                        if v.len() > 4096 {
                            v = Vec::new();
                        }
                        std::hint::black_box(&v);
                    }
                })
            })
            .collect();
        g.bench_function("forkserver_8_busy", |b| {
            b.iter(|| start_join(StartMethod::Forkserver).unwrap())
        });
        g.bench_function("raw_fork_8_busy", |b| b.iter(raw_fork));
        g.bench_function("forkserver_worker_replace_8_busy", |b| {
            b.iter(|| {
                let mut w = Worker::start_with(StartMethod::Forkserver).unwrap();
                w.kill();
            })
        });
        // CPython under the same load (its processes compete with the same busy threads).
        if filter::selected("process_start/python_forkserver_8_busy")
            && python("forkserver", 1).is_some()
        {
            g.sample_size(10)
                .sampling_mode(SamplingMode::Flat)
                .warm_up_time(Duration::from_millis(500));
            g.bench_function("python_forkserver_8_busy", |b| {
                b.iter_custom(|iters| python("forkserver", iters).expect("python run failed"))
            });
        }
        stop.store(true, Ordering::Relaxed);
        for t in busy {
            t.join().unwrap();
        }
    }

    if !["fork", "forkserver", "spawn"]
        .iter()
        .any(|m| filter::selected(&format!("process_start/python_{m}")))
    {
        return;
    }
    if python("fork", 1).is_none() {
        eprintln!("process_start/python_*: skipped (python3 not found or failed)");
        return;
    }
    g.sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500));
    for method in ["fork", "forkserver", "spawn"] {
        g.bench_function(format!("python_{method}"), |b| {
            b.iter_custom(|iters| python(method, iters).expect("python run failed"))
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
