//! `shm_copy_64MiB`: 64 MiB copied into and out of a warm `SharedMemory` segment, against a
//! plain `memcpy` between two warm private buffers and CPython's `SharedMemory` in the same run.
//!
//! All buffers are touched before timing, so no page faults are measured (a fresh shared page
//! costs ~1.55 µs here; see `docs/benchmarks.md`).
//!
//! Run with `cargo bench --bench shm`.

use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc::SharedMemory;

#[path = "common/python.rs"]
mod python_script;

const SIZE: usize = 64 << 20;

fn copy_64mib(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("shm_copy_64MiB");
    g.throughput(Throughput::Bytes(SIZE as u64))
        .sample_size(20)
        .measurement_time(Duration::from_secs(5));
    let shm = SharedMemory::new(SIZE).unwrap();
    let src = vec![7u8; SIZE];
    let mut dst = vec![1u8; SIZE];
    shm.write_at(0, &src);
    shm.read_at(0, &mut dst);

    g.bench_function("multiproc_in", |b| b.iter(|| shm.write_at(0, &src)));
    g.bench_function("multiproc_out", |b| b.iter(|| shm.read_at(0, &mut dst)));
    g.bench_function("raw_memcpy", |b| b.iter(|| dst.copy_from_slice(&src)));
    assert!(dst.iter().all(|&x| x == 7));

    let size = SIZE.to_string();
    if python_script::run("shm.py", &["in".into(), size.clone()], 1).is_some() {
        for mode in ["in", "out"] {
            g.bench_function(format!("python_{mode}"), |b| {
                b.iter_custom(|iters| {
                    python_script::run("shm.py", &[mode.into(), size.clone()], iters)
                        .expect("python run failed")
                })
            });
        }
    } else {
        eprintln!("shm python: skipped (python3 not found or failed)");
    }
    g.finish();
}

criterion_group!(benches, copy_64mib);
criterion_main!(benches);
