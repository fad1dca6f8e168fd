//! `queue_*`: Queue throughput and round trip against the raw OS floor and CPython's
//! `multiprocessing.Queue`, in the same run.
//!
//! - `queue_spsc_small`: one producer process → the consumer (this process), small messages
//!   (a u64 and 16 bytes, ~25 bytes serialized).
//! - `queue_mpmc_2x2_small`: two producer processes → two consumer processes; the clock runs
//!   from a common start (a `Barrier`) until both consumers are done.
//! - `queue_throughput_1MiB` / `_16MiB`: one producer → the consumer, byte payloads
//!   (`serde_bytes`), the default 4 MiB ring (16 MiB messages are streamed through it).
//! - `queue_round_trip_small`: a message to a child and back through two queues, unpinned,
//!   pinned to one CPU and to two; the floor is a bare futex ping-pong between two processes
//!   on a shared word, in the same placement.
//!
//! Producers are long-lived children driven by a command queue, so no process start is timed.
//! CPython runs the same shapes (`benches/python/mp_queue.py`) when `python3` is on the PATH.
//!
//! Run with `cargo bench --bench queue`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Barrier, Process, Queue, Value};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

#[path = "common/affinity.rs"]
mod affinity;
#[path = "common/futex.rs"]
mod futex;
#[path = "common/python.rs"]
mod python_script;

use affinity::{pin, placements};

/// A small message: a number and 16 bytes (as Python's `(i, bytes)`; `serde_bytes` makes the
/// bytes one slice rather than 16 separate elements, as a Python `bytes` object is one).
#[derive(Serialize, Deserialize, Clone, Copy)]
struct Small {
    seq: u64,
    #[serde(with = "serde_bytes")]
    payload: [u8; 16],
}

fn small(seq: u64) -> Small {
    Small {
        seq,
        payload: [7; 16],
    }
}

/// CPython's time for `iters` iterations of a shape, measured over at least `min` of them
/// (scaled back) so that its fixed start-up of the timed part does not count per message.
fn python_scaled(args: &[&str], iters: u64, min: u64) -> Option<Duration> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let n = iters.max(min);
    python_script::run("mp_queue.py", &args, n).map(|d| d.mul_f64(iters as f64 / n as f64))
}

fn python(args: &[&str], iters: u64) -> Option<Duration> {
    python_scaled(args, iters, 1)
}

/// Puts `n` small messages for every command `n` (0 ends it).
fn small_producer(args: (Queue<Small>, Queue<u64>)) {
    let (q, cmd) = args;
    while let Ok(n) = cmd.get() {
        if n == 0 {
            break;
        }
        for i in 0..n {
            q.put_ref(&small(i)).unwrap();
        }
    }
}

fn spsc_small(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("queue_spsc_small");
    g.throughput(Throughput::Elements(1))
        .measurement_time(Duration::from_secs(5));
    let q = Queue::<Small>::new().unwrap();
    let cmd = Queue::<u64>::new().unwrap();
    let mut p = Process::new(small_producer, (q.clone(), cmd.clone()));
    p.start().unwrap();
    q.close();
    g.bench_function("multiproc", |b| {
        b.iter_custom(|iters| {
            cmd.put(iters).unwrap();
            let t = Instant::now();
            for i in 0..iters {
                let m = q.get().unwrap();
                debug_assert_eq!(m.seq, i);
                std::hint::black_box(m);
            }
            t.elapsed()
        })
    });
    cmd.put(0).unwrap();
    p.join().unwrap();
    if python(&["spsc"], 1000).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| {
                python_scaled(&["spsc"], iters, 50_000).expect("python run failed")
            })
        });
    } else {
        eprintln!("queue python: skipped (python3 not found or failed)");
    }
    g.finish();
}

/// One party of the 2×2 run: each round, wait at the barrier, produce or consume the round's
/// share, wait at the barrier again. Each producer ends its share with a sentinel
/// (`seq == u64::MAX`); each consumer stops at the first sentinel it gets, so the two sentinels
/// stop the two consumers once every message is taken.
fn mpmc_party(args: (Queue<Small>, Value<u64>, Barrier, bool)) {
    let (q, todo, barrier, producer) = args;
    if !producer {
        q.close();
    }
    loop {
        barrier.wait().unwrap();
        let n = todo.get().unwrap();
        if n == 0 {
            return;
        }
        if producer {
            for i in 0..n / 2 {
                q.put(small(i)).unwrap();
            }
            q.put(small(u64::MAX)).unwrap();
        } else {
            while q.get().unwrap().seq != u64::MAX {}
        }
        barrier.wait().unwrap();
    }
}

fn mpmc_small(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("queue_mpmc_2x2_small");
    g.throughput(Throughput::Elements(1))
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    let q = Queue::<Small>::new().unwrap();
    let todo = Value::new(0u64).unwrap();
    let barrier = Barrier::new(5).unwrap();
    let mut ps: Vec<_> = [true, true, false, false]
        .into_iter()
        .map(|producer| {
            Process::new(
                mpmc_party,
                (q.clone(), todo.clone(), barrier.clone(), producer),
            )
        })
        .collect();
    for p in &mut ps {
        p.start().unwrap();
    }
    q.close();
    g.bench_function("multiproc", |b| {
        b.iter_custom(|iters| {
            let n = iters.max(2);
            todo.set(n).unwrap();
            barrier.wait().unwrap();
            let t = Instant::now();
            barrier.wait().unwrap();
            t.elapsed().mul_f64(iters as f64 / (n - n % 2) as f64)
        })
    });
    todo.set(0).unwrap();
    barrier.wait().unwrap();
    for p in &mut ps {
        p.join().unwrap();
    }
    if python(&["mpmc"], 1000).is_some() {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| {
                python_scaled(&["mpmc"], iters, 50_000).expect("python run failed")
            })
        });
    }
    g.finish();
}

/// Puts `n` messages of `size` bytes for every command `n` (0 ends it).
fn bytes_producer(args: (Queue<ByteBuf>, Queue<u64>, usize)) {
    let (q, cmd, size) = args;
    let body = ByteBuf::from(vec![5u8; size]);
    while let Ok(n) = cmd.get() {
        if n == 0 {
            break;
        }
        for _ in 0..n {
            q.put_ref(&body).unwrap();
        }
    }
}

fn throughput(c: &mut Criterion) {
    multiproc::init();
    for (size, label) in [(1usize << 20, "1MiB"), (16 << 20, "16MiB")] {
        let mut g = c.benchmark_group(format!("queue_throughput_{label}"));
        g.throughput(Throughput::Bytes(size as u64))
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        let q = Queue::<ByteBuf>::new().unwrap();
        let cmd = Queue::<u64>::new().unwrap();
        let mut p = Process::new(bytes_producer, (q.clone(), cmd.clone(), size));
        p.start().unwrap();
        q.close();
        g.bench_function("multiproc", |b| {
            b.iter_custom(|iters| {
                cmd.put(iters).unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    let m = q.get().unwrap();
                    assert_eq!(m.len(), size);
                }
                t.elapsed()
            })
        });
        cmd.put(0).unwrap();
        p.join().unwrap();
        let s = size.to_string();
        if python(&["tp", &s], 1).is_some() {
            g.bench_function("python", |b| {
                b.iter_custom(|iters| {
                    python_scaled(&["tp", &s], iters, 20).expect("python run failed")
                })
            });
        }
        g.finish();
    }
}

/// Echoes small messages from `a` to `b` until `a` is disconnected.
fn echo(args: (Queue<Small>, Queue<Small>, Option<usize>)) {
    let (a, b, cpu) = args;
    pin(cpu);
    a.close();
    while let Ok(m) = a.get() {
        b.put(m).unwrap();
    }
}

fn round_trip(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("queue_round_trip_small");
    g.measurement_time(Duration::from_secs(3));
    for (name, parent_cpu, child_cpu) in placements() {
        let there = Queue::<Small>::new().unwrap();
        let back = Queue::<Small>::new().unwrap();
        let mut p = Process::new(echo, (there.clone(), back.clone(), child_cpu));
        p.start().unwrap();
        back.close();
        pin(parent_cpu);
        g.bench_with_input(BenchmarkId::new("multiproc", name), &(), |b, _| {
            b.iter(|| {
                there.put(small(1)).unwrap();
                back.get().unwrap()
            })
        });
        drop(there);
        p.join().unwrap();

        // The floor: a futex ping-pong (1 → 2 → 1 ...) with a forked child.
        let w = futex::SharedWord::new();
        let raw = futex::echo_child(&w, move || pin(child_cpu));
        pin(parent_cpu);
        g.bench_with_input(BenchmarkId::new("raw_futex", name), &(), |b, _| {
            b.iter(|| futex::round_trip(&w))
        });
        futex::stop(raw);
        pin(None);

        if python(&["rt", name], 10).is_some() {
            g.bench_with_input(BenchmarkId::new("python", name), &(), |b, _| {
                b.iter_custom(|iters| {
                    python_scaled(&["rt", name], iters, 500).expect("python run failed")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, spsc_small, mpmc_small, throughput, round_trip);
criterion_main!(benches);
