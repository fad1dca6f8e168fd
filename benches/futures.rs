//! `futures_*`: the executors against CPython's `concurrent.futures` in the same run, 2
//! workers each.
//!
//! - `futures_ppe_submit`: unbatched `submit` of a trivial task on a `ProcessPoolExecutor`,
//!   then every `result` (throughput per future).
//! - `futures_ppe_rtt`: one `submit(...).result()` round trip (latency), against the Pool's
//!   `apply`.
//! - `futures_tpe_submit`: the same as the first on a `ThreadPoolExecutor`.
//!
//! CPython runs the same shapes (`benches/python/futures.py`) when `python3` is on the PATH.
//!
//! Run with `cargo bench --bench futures`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Executor, Pool, ProcessPoolExecutor, ThreadPoolExecutor};

#[path = "common/python.rs"]
mod python_script;

fn python(shape: &str, n: u64) -> Option<Duration> {
    python_script::run("futures.py", &[shape.to_string()], n)
}

fn python_scaled(shape: &str, iters: u64, min: u64) -> Option<Duration> {
    let n = iters.max(min);
    python(shape, n).map(|d| d.mul_f64(iters as f64 / n as f64))
}

fn trivial(x: u64) -> u64 {
    x + 1
}

fn submit_all(ex: &impl Executor, iters: u64) -> Duration {
    let t = Instant::now();
    let fs: Vec<_> = (0..iters).map(|i| ex.submit(trivial, i).unwrap()).collect();
    for f in fs {
        black_box(f.result().unwrap());
    }
    t.elapsed()
}

fn ppe_submit(c: &mut Criterion) {
    multiproc::init();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let mut g = c.benchmark_group("futures_ppe_submit");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("multiproc", |b| {
        b.iter_custom(|iters| submit_all(&ex, iters))
    });
    if python("ppe_submit", 100).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| python_scaled("ppe_submit", iters, 10_000).expect("python"))
        });
    }
    g.finish();
}

fn ppe_rtt(c: &mut Criterion) {
    multiproc::init();
    let ex = ProcessPoolExecutor::new(2).unwrap();
    let pool = Pool::new(2).unwrap();
    let mut g = c.benchmark_group("futures_ppe_rtt");
    g.bench_function("multiproc", |b| {
        b.iter(|| black_box(ex.submit(trivial, 1).unwrap().result().unwrap()))
    });
    g.bench_function("pool_apply", |b| {
        b.iter(|| black_box(pool.apply(trivial, 1).unwrap()))
    });
    if python("ppe_rtt", 10).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| python_scaled("ppe_rtt", iters, 2_000).expect("python"))
        });
    }
    g.finish();
}

fn tpe_submit(c: &mut Criterion) {
    let ex = ThreadPoolExecutor::new(2).unwrap();
    let mut g = c.benchmark_group("futures_tpe_submit");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5));
    g.bench_function("multiproc", |b| {
        b.iter_custom(|iters| submit_all(&ex, iters))
    });
    if python("tpe_submit", 100).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| python_scaled("tpe_submit", iters, 20_000).expect("python"))
        });
    }
    g.finish();
}

criterion_group!(benches, ppe_submit, ppe_rtt, tpe_submit);
criterion_main!(benches);
