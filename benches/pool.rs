//! `pool_*`: the Pool against CPython's `multiprocessing.Pool` (and `ProcessPoolExecutor`) in
//! the same run, 2 workers each.
//!
//! - `pool_apply_async`: unbatched `apply_async` of a trivial task, then every `get`
//!   (throughput per task).
//! - `pool_map_1M`: one `map` of a trivial function over 1,000,000 integers, CPython's
//!   default chunk size on both sides (throughput per item).
//! - `pool_apply`: one `apply` round trip (latency), unpinned, with the parent and its one
//!   worker pinned to one CPU and to two; the floor is a bare futex ping-pong between two
//!   processes in the same placement (`raw_futex`). Compare medians (p50).
//! - `pool_cpu_map`: `map` of 10 ms CPU-bound tasks on 2 workers, against running them in
//!   sequence in this process (the speed-up).
//! - `pool_replace`: SIGKILL a worker and time until the pool has answered a task from its
//!   replacement, with spawned and with forkserver workers, against a bare `Process` start +
//!   join and the raw `fork` + `_exit` + `waitpid` floor.
//!
//! CPython runs the same shapes (`benches/python/pool.py`) when `python3` is on the PATH.
//!
//! Run with `cargo bench --bench pool`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Pool, Process, StartMethod};

#[path = "common/affinity.rs"]
mod affinity;
#[path = "common/futex.rs"]
mod futex;
#[path = "common/python.rs"]
mod python_script;

use affinity::{pin, placements};

fn python(shape: &str, n: u64) -> Option<Duration> {
    python_script::run("pool.py", &[shape.to_string()], n)
}

/// CPython's time for `iters`, measured over at least `min` of them and scaled back.
fn python_scaled(shape: &str, iters: u64, min: u64) -> Option<Duration> {
    let n = iters.max(min);
    python(shape, n).map(|d| d.mul_f64(iters as f64 / n as f64))
}

fn trivial(x: u64) -> u64 {
    x + 1
}

fn apply_async(c: &mut Criterion) {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group("pool_apply_async");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("multiproc", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            let rs: Vec<_> = (0..iters)
                .map(|i| pool.apply_async(trivial, i).unwrap())
                .collect();
            for r in rs {
                black_box(r.get().unwrap());
            }
            t.elapsed()
        })
    });
    if python("apply_async", 100).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| {
                python_scaled("apply_async", iters, 20_000).expect("python run failed")
            })
        });
        g.bench_function("python_ppe", |b| {
            b.iter_custom(|iters| {
                python_scaled("ppe_submit", iters, 10_000).expect("python run failed")
            })
        });
    } else {
        eprintln!("pool python: skipped (python3 not found or failed)");
    }
    g.finish();
}

fn map_1m(c: &mut Criterion) {
    multiproc::init();
    const N: u64 = 1_000_000;
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group("pool_map_1M");
    g.throughput(Throughput::Elements(N))
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    g.bench_function("multiproc", |b| {
        b.iter(|| black_box(pool.map(trivial, 0..N).unwrap()))
    });
    if python("map", 1000).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += python("map", N).expect("python run failed");
                }
                total
            })
        });
    }
    g.finish();
}

/// A pool worker's initializer: pins it to `cpu` (None: anywhere).
fn pin_worker(cpu: Option<usize>) {
    pin(cpu);
}

fn apply_latency(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("pool_apply");
    g.measurement_time(Duration::from_secs(5));
    for (name, parent_cpu, child_cpu) in placements() {
        // The floor first, while this process is single-threaded (it forks).
        pin(parent_cpu);
        let w = futex::SharedWord::new();
        let echo = futex::echo_child(&w, move || pin(child_cpu));
        g.bench_with_input(BenchmarkId::new("raw_futex", name), &(), |b, _| {
            b.iter(|| futex::round_trip(&w))
        });
        futex::stop(echo);
        // The pool's threads inherit the parent's placement; its worker pins itself.
        let pool = Pool::builder()
            .processes(1)
            .initializer(pin_worker, child_cpu)
            .build()
            .unwrap();
        g.bench_with_input(BenchmarkId::new("multiproc", name), &(), |b, _| {
            b.iter(|| black_box(pool.apply(trivial, 1).unwrap()))
        });
        drop(pool);
        pin(None);
    }
    if python("apply", 10).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| python_scaled("apply", iters, 2000).expect("python run failed"))
        });
    }
    g.finish();
}

/// About 10 ms of arithmetic.
fn burn(seed: u64) -> u64 {
    let t = Instant::now();
    let mut x = seed | 1;
    while t.elapsed() < Duration::from_millis(10) {
        for _ in 0..1000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
        }
    }
    x
}

fn cpu_map(c: &mut Criterion) {
    multiproc::init();
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group("pool_cpu_map");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.bench_function("multiproc_2_workers", |b| {
        b.iter(|| black_box(pool.map_chunked(burn, 0..40u64, 1).unwrap()))
    });
    g.bench_function("sequential", |b| {
        b.iter(|| black_box((0..40u64).map(burn).collect::<Vec<_>>()))
    });
    g.finish();
}

fn noop(_: ()) {}

/// Time from a worker's SIGKILL until the pool has answered tasks with its replacement there.
fn kill_until_serving(pool: &Pool, iters: u64) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let before = pool.pids();
        let t = Instant::now();
        // SAFETY: signalling a worker of our own pool.
        unsafe { libc::kill(before[0] as i32, libc::SIGKILL) };
        // Serving again: a task answered by a worker that was not there before.
        loop {
            let pids = pool.pids();
            if pids.len() == 2 && !pids.contains(&before[0]) {
                pool.map(trivial, 0..4).unwrap();
                break;
            }
            std::thread::yield_now();
        }
        total += t.elapsed();
    }
    total
}

#[path = "common/raw_fork.rs"]
mod raw_fork_floor;
use raw_fork_floor::raw_fork;

fn replace(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("pool_replace");
    g.sample_size(20).measurement_time(Duration::from_secs(5));
    for (name, method) in [
        ("kill_until_serving", StartMethod::Spawn),
        ("kill_until_serving_forkserver", StartMethod::Forkserver),
    ] {
        let pool = Pool::builder()
            .processes(2)
            .start_method(method)
            .build()
            .unwrap();
        g.bench_function(name, |b| {
            b.iter_custom(|iters| kill_until_serving(&pool, iters))
        });
    }
    g.bench_function("process_start_join", |b| {
        b.iter(|| {
            let mut p = Process::new(noop, ());
            p.start().unwrap();
            p.join().unwrap();
        })
    });
    g.bench_function("raw_fork", |b| b.iter(raw_fork));
    g.finish();
}

criterion_group!(
    benches,
    apply_async,
    map_1m,
    apply_latency,
    cpu_map,
    replace
);
criterion_main!(benches);
