//! `manager_*`: a manager proxy call against a Pipe round trip, and the dict get/set rate
//! against CPython's `multiprocessing.Manager()` dict, in the same run.
//!
//! - `manager_round_trip_16B`: `multiproc_pipe` is a 16-byte Connection echo with a spawned
//!   child; `multiproc_dict_get` is one `DictProxy::get` of a 16-byte value through the
//!   connection's shared-memory slot (the default for local clients), `multiproc_dict_get_socket`
//!   the same with slots turned off (a request and a reply on the socket, a MAC on each frame).
//!   Placements as in the pipe bench; every thread of the server process is pinned where the
//!   echo child is (the connection's thread, made after, inherits it).
//! - `manager_dict_set_get`: one `insert` plus one `get` of a small value, ours (slot, and
//!   socket only) against `benches/python/manager.py` (CPython's `Manager().dict()`,
//!   `d[k] = v; d[k]`) when `python3` is on the PATH.
//!
//! Run with `cargo bench --bench manager`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use multiproc::{Connection, Manager, Process};

#[path = "common/affinity.rs"]
mod affinity;
use affinity::{num_cpus, pin, placements};

#[path = "common/python.rs"]
mod python_script;

const SMALL: usize = 16;

/// Pins every thread of the process `pid` to `cpu`, and so every thread they create from now
/// on (a thread inherits its creator's mask). Every thread, not just the main one: the server
/// runs its accept loop in a thread of its own, and that thread creates the connections' threads.
fn pin_pid(pid: u32, cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET only writes that local set.
    let set = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => (0..num_cpus()).for_each(|c| libc::CPU_SET(c, &mut set)),
        }
        set
    };
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).expect("the server's threads");
    for tid in tasks.filter_map(|t| t.ok()?.file_name().to_str()?.parse::<i32>().ok()) {
        // SAFETY: the call only reads the local set; a thread that ended meanwhile makes it
        // fail, harmlessly.
        unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), &set) };
    }
}

fn echo(arg: (Connection<()>, Option<usize>)) {
    pin(arg.1);
    while let Ok(m) = arg.0.recv_bytes() {
        if arg.0.send_bytes(&m).is_err() {
            break;
        }
    }
}

fn round_trip(c: &mut Criterion) {
    multiproc::init();
    let mut g = c.benchmark_group("manager_round_trip_16B");
    g.measurement_time(Duration::from_secs(3));
    for (name, parent_cpu, child_cpu) in placements() {
        let (ours, theirs) = multiproc::pipe::<()>().unwrap();
        let mut p = Process::new(echo, (theirs, child_cpu));
        p.start().unwrap();
        pin(parent_cpu);
        let msg = [7u8; SMALL];
        g.bench_with_input(BenchmarkId::new("multiproc_pipe", name), &(), |b, _| {
            b.iter(|| {
                ours.send_bytes(&msg).unwrap();
                ours.recv_bytes().unwrap()
            })
        });
        drop(ours);
        p.join().unwrap();
        pin(None);

        for (row, slots) in [
            ("multiproc_dict_get", true),
            ("multiproc_dict_get_socket", false),
        ] {
            let m = Manager::builder().shared_memory(slots).start().unwrap();
            pin_pid(m.server_pid().unwrap(), child_cpu);
            // A connection made after pinning: its server thread inherits the placement.
            let client = Manager::connect(m.address(), m.authkey()).unwrap();
            let d = client.dict::<u8, [u8; SMALL]>().unwrap();
            d.insert(&1, &[7u8; SMALL]).unwrap();
            pin(parent_cpu);
            g.bench_with_input(BenchmarkId::new(row, name), &(), |b, _| {
                b.iter(|| d.get(&1).unwrap())
            });
            pin(None);
            drop(d);
            drop(client);
            m.shutdown().unwrap();
        }
    }
    g.finish();
}

fn set_get(c: &mut Criterion) {
    multiproc::init();
    let with_python = python_script::run("manager.py", &[], 10).is_some();
    if !with_python {
        eprintln!("manager python: skipped (python3 not found or failed)");
    }
    let mut g = c.benchmark_group("manager_dict_set_get");
    g.measurement_time(Duration::from_secs(3));
    let key = "k".to_string();
    for (row, slots) in [("multiproc", true), ("multiproc_socket", false)] {
        let m = Manager::builder().shared_memory(slots).start().unwrap();
        let d = m.dict::<String, u64>().unwrap();
        g.bench_function(row, |b| {
            let mut i = 0u64;
            b.iter(|| {
                i += 1;
                d.insert(&key, &i).unwrap();
                d.get(&key).unwrap()
            })
        });
        drop(d);
        m.shutdown().unwrap();
    }
    if with_python {
        g.bench_function("python", |b| {
            b.iter_custom(|iters| {
                let t = Instant::now();
                python_script::run("manager.py", &[], iters).unwrap_or_else(|| t.elapsed())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, round_trip, set_get);
criterion_main!(benches);
