//! The pool group: multiproc's Pool, ThreadPool and the two executors against CPython's
//! `multiprocessing.Pool`, `multiprocessing.pool.ThreadPool` and `concurrent.futures`, in the
//! same run. Every row has 2 workers, unpinned, and runs the same trivial task (`x + 1` on an
//! integer), so what it measures is the machinery: submission, hand-off to a worker, the
//! result's way back. CPython's side is `benches/python/ipc_bench_pool.py`, one process for
//! every row, with the same repetition policy.

use std::hint::black_box;
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use multiproc::{Executor, Pool, ProcessPoolExecutor, ThreadPool, ThreadPoolExecutor};

use crate::transports::Rep;

/// One row of the pool group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Row {
    PoolApply,
    PoolApplyAsync,
    PoolMap,
    ThreadPoolApply,
    ThreadPoolApplyAsync,
    ThreadPoolMap,
    PpeSubmit,
    PpeRtt,
    TpeSubmit,
    PythonPoolApply,
    PythonPoolApplyAsync,
    PythonPoolMap,
    PythonThreadPoolApply,
    PythonThreadPoolApplyAsync,
    PythonThreadPoolMap,
    PythonPpeSubmit,
    PythonPpeRtt,
    PythonTpeSubmit,
}

/// What a row measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// One call after another, each timed: p50 and p99 of the round trip.
    RoundTrip,
    /// `n` calls submitted, then every result taken: calls per second.
    Throughput,
    /// One `map` over `n` integers (the pool's default chunking): items per second.
    Map,
}

impl Row {
    pub const OURS: [Row; 9] = [
        Row::PoolApply,
        Row::PoolApplyAsync,
        Row::PoolMap,
        Row::ThreadPoolApply,
        Row::ThreadPoolApplyAsync,
        Row::ThreadPoolMap,
        Row::PpeSubmit,
        Row::PpeRtt,
        Row::TpeSubmit,
    ];

    pub const ALL: [Row; 18] = [
        Row::PoolApply,
        Row::PoolApplyAsync,
        Row::PoolMap,
        Row::ThreadPoolApply,
        Row::ThreadPoolApplyAsync,
        Row::ThreadPoolMap,
        Row::PpeSubmit,
        Row::PpeRtt,
        Row::TpeSubmit,
        Row::PythonPoolApply,
        Row::PythonPoolApplyAsync,
        Row::PythonPoolMap,
        Row::PythonThreadPoolApply,
        Row::PythonThreadPoolApplyAsync,
        Row::PythonThreadPoolMap,
        Row::PythonPpeSubmit,
        Row::PythonPpeRtt,
        Row::PythonTpeSubmit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Row::PoolApply => "pool-apply",
            Row::PoolApplyAsync => "pool-apply-async",
            Row::PoolMap => "pool-map",
            Row::ThreadPoolApply => "threadpool-apply",
            Row::ThreadPoolApplyAsync => "threadpool-apply-async",
            Row::ThreadPoolMap => "threadpool-map",
            Row::PpeSubmit => "ppe-submit",
            Row::PpeRtt => "ppe-submit-result",
            Row::TpeSubmit => "tpe-submit",
            Row::PythonPoolApply => "python-pool-apply",
            Row::PythonPoolApplyAsync => "python-pool-apply-async",
            Row::PythonPoolMap => "python-pool-map",
            Row::PythonThreadPoolApply => "python-threadpool-apply",
            Row::PythonThreadPoolApplyAsync => "python-threadpool-apply-async",
            Row::PythonThreadPoolMap => "python-threadpool-map",
            Row::PythonPpeSubmit => "python-ppe-submit",
            Row::PythonPpeRtt => "python-ppe-submit-result",
            Row::PythonTpeSubmit => "python-tpe-submit",
        }
    }

    /// What the row does, for the table.
    pub fn what(self) -> &'static str {
        match self.ours() {
            Row::PoolApply => "Pool.apply round trip",
            Row::PoolApplyAsync => "Pool.apply_async, then every get",
            Row::PoolMap => "Pool.map over n integers",
            Row::ThreadPoolApply => "ThreadPool.apply round trip",
            Row::ThreadPoolApplyAsync => "ThreadPool.apply_async, then every get",
            Row::ThreadPoolMap => "ThreadPool.map over n integers",
            Row::PpeSubmit => "ProcessPoolExecutor.submit, then every result",
            Row::PpeRtt => "ProcessPoolExecutor submit().result() round trip",
            Row::TpeSubmit => "ThreadPoolExecutor.submit, then every result",
            _ => unreachable!("ours() is one of ours"),
        }
    }

    pub fn shape(self) -> Shape {
        match self.ours() {
            Row::PoolApply | Row::ThreadPoolApply | Row::PpeRtt => Shape::RoundTrip,
            Row::PoolMap | Row::ThreadPoolMap => Shape::Map,
            _ => Shape::Throughput,
        }
    }

    pub fn is_python(self) -> bool {
        self.name().starts_with("python-")
    }

    /// The row of ours that this one is, or is CPython's counterpart of.
    pub fn ours(self) -> Row {
        if self.is_python() {
            Row::OURS[Row::ALL.iter().position(|&r| r == self).unwrap() - Row::OURS.len()]
        } else {
            self
        }
    }

    /// CPython's counterpart of one of ours.
    pub fn python_twin(self) -> Row {
        Row::ALL[Row::OURS.iter().position(|&r| r == self).unwrap() + Row::OURS.len()]
    }
}

/// One number of the pool group: the metric is `tasks_per_s` (items per second for a map),
/// `rtt_p50_ns` or `rtt_p99_ns`.
#[derive(Clone, Debug)]
pub struct PoolMeasurement {
    pub row: Row,
    pub metric: &'static str,
    pub value: f64,
}

fn trivial(x: u64) -> u64 {
    x + 1
}

/// Runs repetitions while `next` asks for more, timing `body(n)` (which may record each
/// call's time in `samples`).
fn reps(
    next: &mut dyn FnMut(Option<&Rep>) -> Option<u64>,
    mut body: impl FnMut(u64, &mut Vec<u64>),
) -> Vec<Rep> {
    let mut out: Vec<Rep> = Vec::new();
    while let Some(n) = next(out.last()) {
        let mut samples = Vec::new();
        let t = Instant::now();
        body(n, &mut samples);
        out.push(Rep {
            n,
            elapsed: t.elapsed(),
            samples,
        });
    }
    out
}

/// `n` calls of `call`, each timed.
fn each_timed(n: u64, samples: &mut Vec<u64>, mut call: impl FnMut(u64) -> u64) {
    for i in 0..n {
        let t = Instant::now();
        let v = call(i);
        samples.push(t.elapsed().as_nanos() as u64);
        assert_eq!(v, i + 1, "a wrong result came back");
    }
}

fn check_all(n: u64, results: impl IntoIterator<Item = u64>) {
    let mut count = 0;
    for (i, v) in results.into_iter().enumerate() {
        assert_eq!(v, i as u64 + 1, "a wrong result came back");
        count += 1;
    }
    assert_eq!(count, n, "results are missing");
}

/// The first repetition's count (a warm-up, discarded) for each shape.
pub fn start_n(shape: Shape) -> u64 {
    match shape {
        Shape::RoundTrip => 50,
        Shape::Throughput => 1_000,
        Shape::Map => 10_000,
    }
}

/// Measures one of our rows with 2 workers.
pub fn run_ours(row: Row, next: &mut dyn FnMut(Option<&Rep>) -> Option<u64>) -> Vec<Rep> {
    match row {
        Row::PoolApply | Row::PoolApplyAsync | Row::PoolMap => {
            let pool = Pool::new(2).expect("a pool of 2");
            let r = reps(next, |n, s| match row {
                Row::PoolApply => each_timed(n, s, |i| pool.apply(trivial, i).expect("apply")),
                Row::PoolApplyAsync => {
                    let rs: Vec<_> = (0..n)
                        .map(|i| pool.apply_async(trivial, i).expect("apply_async"))
                        .collect();
                    check_all(n, rs.into_iter().map(|r| r.get().expect("get")));
                }
                _ => check_all(n, pool.map(trivial, 0..n).expect("map")),
            });
            pool.close();
            pool.join().expect("join the pool");
            r
        }
        Row::ThreadPoolApply | Row::ThreadPoolApplyAsync | Row::ThreadPoolMap => {
            let pool = ThreadPool::new(2).expect("a thread pool of 2");
            let r = reps(next, |n, s| match row {
                Row::ThreadPoolApply => {
                    each_timed(n, s, |i| pool.apply(trivial, i).expect("apply"))
                }
                Row::ThreadPoolApplyAsync => {
                    let rs: Vec<_> = (0..n)
                        .map(|i| pool.apply_async(trivial, i).expect("apply_async"))
                        .collect();
                    check_all(n, rs.into_iter().map(|r| r.get().expect("get")));
                }
                _ => check_all(n, pool.map(trivial, 0..n).expect("map")),
            });
            pool.close();
            pool.join().expect("join the thread pool");
            r
        }
        Row::PpeSubmit | Row::PpeRtt => {
            let ex = ProcessPoolExecutor::new(2).expect("an executor of 2 processes");
            reps(next, |n, s| {
                if row == Row::PpeRtt {
                    each_timed(n, s, |i| {
                        ex.submit(trivial, i)
                            .expect("submit")
                            .result()
                            .expect("result")
                    })
                } else {
                    submit_all(&ex, n)
                }
            })
        }
        Row::TpeSubmit => {
            let ex = ThreadPoolExecutor::new(2).expect("an executor of 2 threads");
            reps(next, |n, _| submit_all(&ex, n))
        }
        _ => unreachable!("CPython's rows run in python3"),
    }
}

fn submit_all(ex: &impl Executor, n: u64) {
    let fs: Vec<_> = (0..n)
        .map(|i| ex.submit(trivial, i).expect("submit"))
        .collect();
    check_all(
        n,
        fs.into_iter()
            .map(|f| black_box(f.result().expect("result"))),
    );
}

fn python_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/ipc_bench_pool.py")
}

/// Runs CPython's rows (every one in one python3 process); `Err` with the reason if it could
/// not. Each printed line is `ROW METRIC VALUE`.
pub fn run_python(reps: usize, target_s: f64) -> Result<Vec<PoolMeasurement>, String> {
    let res = Command::new("python3")
        .arg(python_script())
        .args([reps.to_string(), target_s.to_string()])
        .output()
        .map_err(|e| format!("python3 could not run: {e}"))?;
    if !res.status.success() {
        return Err(format!(
            "python3 failed: {}",
            String::from_utf8_lossy(&res.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let mut out = Vec::new();
    for line in String::from_utf8_lossy(&res.stdout).lines() {
        let mut parts = line.split_whitespace();
        let (Some(name), Some(metric), Some(value)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let row = Row::ALL
            .into_iter()
            .find(|r| r.name() == name && r.is_python())
            .ok_or_else(|| format!("python3 printed an unknown row {name:?}"))?;
        let metric = ["tasks_per_s", "rtt_p50_ns", "rtt_p99_ns"]
            .into_iter()
            .find(|m| *m == metric)
            .ok_or_else(|| format!("python3 printed an unknown metric {metric:?}"))?;
        let value = value
            .parse()
            .map_err(|_| format!("bad value {value:?} from python3"))?;
        out.push(PoolMeasurement { row, metric, value });
    }
    Ok(out)
}
