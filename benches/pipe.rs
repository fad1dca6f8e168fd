//! `pipe_*`: Connection round trip and throughput against a raw socketpair, in the same run.
//!
//! Round trips are measured with both processes unpinned, pinned to the same CPU, and pinned to
//! different CPUs (when there are two), because on these machines a wake-up across CPUs costs
//! ~33 µs one way whatever the primitive. The raw floor is a `UnixStream` pair with blocking
//! `write_all` / `read_exact` and the same 4 MiB socket buffers our connections ask for.
//!
//! CPython's `multiprocessing.Pipe` runs in the same shapes when `python3` is on the PATH
//! (`benches/python/pipe.py`; skipped with a note otherwise).
//!
//! Throughput is measured twice for us: `multiproc` receives into one reused buffer
//! (`recv_bytes_into`, like the raw loop's `read_exact`), `multiproc_new_vec` returns a new
//! vector per message (`recv_bytes`), which pays the first touch of fresh pages (~1.55 µs per
//! 4 KiB page here) on every large message.
//!
//! Run with `cargo bench --bench pipe`.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use multiproc::{Connection, Process};

const SMALL: usize = 16;

#[path = "common/affinity.rs"]
mod affinity;
use affinity::{pin, placements};

fn set_buffers(s: &UnixStream) {
    let v: libc::c_int = 4 << 20;
    for opt in [libc::SO_SNDBUF, libc::SO_RCVBUF] {
        // SAFETY: a valid socket and a c_int option value.
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                4,
            );
        }
    }
}

/// The raw floor's partner: a forked child running `body` on one end of a bare socketpair with
/// 4 MiB buffers; returns the other end.
fn raw_child<F>(body: F) -> (UnixStream, Process<()>)
where
    F: FnOnce(UnixStream) + Send + 'static,
{
    let (a, b_end) = UnixStream::pair().unwrap();
    set_buffers(&a);
    set_buffers(&b_end);
    let a_fd = a.as_raw_fd();
    // SAFETY: this benchmark process is single-threaded when it forks; the child only moves
    // bytes on its socket and closes the copy of ours (else it would never see end-of-stream).
    let mut raw = unsafe {
        Process::new_fork_unchecked(move || {
            libc::close(a_fd);
            body(b_end)
        })
    };
    raw.start().unwrap();
    (a, raw)
}

#[path = "common/python.rs"]
mod python_script;

/// CPython's side of a shape (`benches/python/pipe.py`), `iters` times.
fn python(args: &[String], iters: u64) -> Option<Duration> {
    python_script::run("pipe.py", args, iters)
}

fn python_present() -> bool {
    let found = python(&["rt".into(), "16".into(), "unpinned".into()], 1).is_some();
    if !found {
        eprintln!("pipe python_*: skipped (python3 not found or failed)");
    }
    found
}

/// Echoes messages until the other end closes.
fn echo(arg: (Connection<()>, Option<usize>)) {
    pin(arg.1);
    while let Ok(m) = arg.0.recv_bytes() {
        if arg.0.send_bytes(&m).is_err() {
            break;
        }
    }
}

/// Receives messages until the other end closes; answers each `ack_every`-th with one byte.
/// With `reuse`, into one buffer of `size` bytes (`recv_bytes_into`, as the raw loop does);
/// else as a new vector per message (`recv_bytes`).
fn sink(arg: (Connection<()>, u64, usize, bool)) {
    let (conn, ack_every, size, reuse) = arg;
    let mut buf = vec![0u8; if reuse { size } else { 0 }];
    let mut receive = || {
        if reuse {
            conn.recv_bytes_into(&mut buf).is_ok()
        } else {
            conn.recv_bytes().is_ok()
        }
    };
    let mut n = 0u64;
    while receive() {
        n += 1;
        if n.is_multiple_of(ack_every) && conn.send_bytes(&[1]).is_err() {
            break;
        }
    }
}

fn round_trip(c: &mut Criterion) {
    multiproc::init();
    let with_python = python_present();
    let mut g = c.benchmark_group("pipe_round_trip_16B");
    g.measurement_time(Duration::from_secs(3));
    for (name, parent_cpu, child_cpu) in placements() {
        // Ours: a forked child echoing through a Connection.
        let (ours, theirs) = multiproc::pipe::<()>().unwrap();
        // Spawned, not forked: a forked child would inherit `ours` too and never see the end.
        let mut p = Process::new(echo, (theirs, child_cpu));
        p.start().unwrap();
        pin(parent_cpu);
        let msg = [7u8; SMALL];
        g.bench_with_input(BenchmarkId::new("multiproc", name), &(), |b, _| {
            b.iter(|| {
                ours.send_bytes(&msg).unwrap();
                ours.recv_bytes().unwrap()
            })
        });
        drop(ours);
        p.join().unwrap();

        // Raw: the same exchange on a bare socketpair.
        let (mut a, mut raw) = raw_child(move |mut s| {
            pin(child_cpu);
            let mut buf = [0u8; SMALL];
            while s.read_exact(&mut buf).is_ok() {
                if s.write_all(&buf).is_err() {
                    break;
                }
            }
        });
        pin(parent_cpu);
        let mut buf = [0u8; SMALL];
        g.bench_with_input(BenchmarkId::new("raw_socketpair", name), &(), |b, _| {
            b.iter(|| {
                a.write_all(&msg).unwrap();
                a.read_exact(&mut buf).unwrap();
            })
        });
        drop(a);
        raw.join().unwrap();
        pin(None);

        if with_python {
            let args = ["rt".to_string(), SMALL.to_string(), name.to_string()];
            g.bench_with_input(BenchmarkId::new("python", name), &(), |b, _| {
                b.iter_custom(|iters| python(&args, iters).expect("python run failed"))
            });
        }
    }
    g.finish();
}

fn throughput(c: &mut Criterion) {
    multiproc::init();
    let with_python = python_present();
    for (size, label, batch) in [(1usize << 20, "1MiB", 64u64), (64 << 20, "64MiB", 2)] {
        let mut g = c.benchmark_group(format!("pipe_throughput_{label}"));
        g.throughput(Throughput::Bytes(size as u64 * batch))
            .sample_size(10)
            .measurement_time(Duration::from_secs(5));
        let payload = vec![5u8; size];

        for (name, reuse) in [("multiproc", true), ("multiproc_new_vec", false)] {
            let (ours, theirs) = multiproc::pipe::<()>().unwrap();
            let mut p = Process::new(sink, (theirs, batch, size, reuse));
            p.start().unwrap();
            g.bench_function(name, |b| {
                b.iter(|| {
                    for _ in 0..batch {
                        ours.send_bytes(&payload).unwrap();
                    }
                    ours.recv_bytes().unwrap()
                })
            });
            drop(ours);
            p.join().unwrap();
        }

        let n = size;
        let (mut a, mut raw) = raw_child(move |mut s| {
            let mut buf = vec![0u8; n];
            let mut count = 0u64;
            while s.read_exact(&mut buf).is_ok() {
                count += 1;
                if count.is_multiple_of(batch) && s.write_all(&[1]).is_err() {
                    break;
                }
            }
        });
        let mut ack = [0u8; 1];
        g.bench_function("raw_socketpair", |b| {
            b.iter(|| {
                for _ in 0..batch {
                    a.write_all(&payload).unwrap();
                }
                a.read_exact(&mut ack).unwrap();
            })
        });
        drop(a);
        raw.join().unwrap();

        if with_python {
            let args = ["tp".to_string(), size.to_string(), batch.to_string()];
            g.bench_function("python", |b| {
                b.iter_custom(|iters| python(&args, iters).expect("python run failed"))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, round_trip, throughput);
criterion_main!(benches);
