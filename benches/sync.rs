//! `sync_*`: the robust lock uncontended, and a `Value` incremented under its lock by two
//! processes, against the raw floor and CPython in the same run.
//!
//! - `sync_lock_uncontended`: `Lock::lock` + drop; the floor is a bare robust, process-shared
//!   pthread mutex in a shared mapping (what `Lock` is built on), and `std::sync::Mutex` is
//!   shown for scale.
//! - `sync_value_increment_2proc`: two processes (unpinned) each add 1 to a `Value<u64>` under
//!   its lock, N/2 times; the clock runs from a common start (a `Barrier`) to both being done.
//!   `multiproc_atomic` uses `Value::atomic().fetch_add` instead of the lock. CPython's
//!   `with v.get_lock(): v.value += 1` runs in the same shape (`benches/python/sync.py`).
//!
//! Run with `cargo bench --bench sync`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Barrier, Lock, Process, Value};

#[path = "common/python.rs"]
mod python_script;

/// A bare robust, process-shared pthread mutex in a shared anonymous mapping.
struct RawRobust {
    m: *mut libc::pthread_mutex_t,
}

impl RawRobust {
    fn new() -> RawRobust {
        // SAFETY: a fresh shared mapping of one page, then standard attribute and mutex
        // initialization in it; every call's result is checked or harmless.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            let m = p.cast::<libc::pthread_mutex_t>();
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            libc::pthread_mutexattr_init(&mut attr);
            libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED);
            libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            assert_eq!(libc::pthread_mutex_init(m, &attr), 0);
            libc::pthread_mutexattr_destroy(&mut attr);
            RawRobust { m }
        }
    }

    fn lock_unlock(&self) {
        // SAFETY: an initialized mutex; locked and unlocked by this thread.
        unsafe {
            libc::pthread_mutex_lock(self.m);
            libc::pthread_mutex_unlock(self.m);
        }
    }
}

fn lock_uncontended(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("sync_lock_uncontended");
    g.measurement_time(Duration::from_secs(3));
    let lock = Lock::new().unwrap();
    g.bench_function("multiproc", |b| b.iter(|| drop(black_box(lock.lock()))));
    let raw = RawRobust::new();
    g.bench_function("raw_robust_pthread", |b| b.iter(|| raw.lock_unlock()));
    let std_mutex = std::sync::Mutex::new(());
    g.bench_function("std_mutex", |b| {
        b.iter(|| drop(black_box(std_mutex.lock())))
    });
    g.finish();
}

/// One incrementing party: each round, wait at the barrier, read how many increments to do
/// (0 = stop), do them, wait at the barrier again.
fn incrementer(args: (Value<u64>, Value<u64>, Barrier, bool)) {
    let (v, todo, barrier, atomic) = args;
    loop {
        barrier.wait().unwrap();
        let n = todo.get().unwrap();
        if n == 0 {
            return;
        }
        for _ in 0..n {
            if atomic {
                // SAFETY: in the atomic runs every process uses this value only atomically.
                unsafe { v.atomic() }.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            } else {
                *v.lock().unwrap() += 1;
            }
        }
        barrier.wait().unwrap();
    }
}

fn value_increment(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("sync_value_increment_2proc");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    for (name, atomic) in [("multiproc", false), ("multiproc_atomic", true)] {
        let v = Value::new(0u64).unwrap();
        let todo = Value::new(0u64).unwrap();
        let barrier = Barrier::new(3).unwrap();
        let mut ps: Vec<_> = (0..2)
            .map(|_| {
                Process::new(
                    incrementer,
                    (v.clone(), todo.clone(), barrier.clone(), atomic),
                )
            })
            .collect();
        for p in &mut ps {
            p.start().unwrap();
        }
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let each = iters.div_ceil(2);
                todo.set(each).unwrap();
                let before = v.get().unwrap();
                barrier.wait().unwrap();
                let t = Instant::now();
                barrier.wait().unwrap();
                let elapsed = t.elapsed();
                assert_eq!(v.get().unwrap() - before, 2 * each);
                elapsed.mul_f64(iters as f64 / (2 * each) as f64)
            })
        });
        todo.set(0).unwrap();
        barrier.wait().unwrap();
        for p in &mut ps {
            p.join().unwrap();
        }
    }
    let probe = python_script::run("sync.py", &["value".into(), "2".into()], 1000);
    if probe.is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| {
                python_script::run("sync.py", &["value".into(), "2".into()], iters)
                    .expect("python run failed")
            })
        });
    } else {
        eprintln!("sync python: skipped (python3 not found or failed)");
    }
    g.finish();
}

criterion_group!(benches, lock_uncontended, value_increment);
criterion_main!(benches);
