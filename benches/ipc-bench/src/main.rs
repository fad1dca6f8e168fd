//! ipc-bench: for a message size, which transport to use, how fast it is on this machine, and
//! how it compares with the OS floor and with Python's multiprocessing, in one run.
//!
//! Measures multiproc's Queue, Pipe and SharedMemory (a region handed over with two semaphores,
//! copied in and out, and a zero-copy variant that checks the bytes in place) at several sizes:
//! one-way throughput and round-trip latency (p50, p99), with both processes on one CPU and on
//! two. The raw floor runs in the same process, in Rust: `memcpy`, a bare socketpair
//! (`write_all`/`read_exact`), a bare futex ping-pong, and a bare single-producer
//! single-consumer ring in shared memory (`raw-ring`: the floor of a queue). CPython's Queue, Pipe and shared_memory
//! run the same shapes through `benches/python/ipc_bench.py` when `python3` is on the PATH.
//!
//! On a shared machine the speed drifts by more than the differences measured, so ours and the
//! floors of one size and placement are never measured one after the other: all their children
//! stay up, and short rounds alternate between them (see [`run_cell`]); a ratio is the ratio of
//! the medians over the rounds, printed with the range of the per-round ratios.
//!
//! `cargo run --release -p ipc-bench -- --help` lists the options.

mod pools;
mod report;
mod transports;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use transports::{Mode, Rep, Session};

/// The transports, named as they appear in the JSON output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Transport {
    Queue,
    Pipe,
    Shm,
    ShmZeroCopy,
    RawMemcpy,
    RawSocketpair,
    RawFutex,
    RawRing,
    PythonQueue,
    PythonPipe,
    PythonShm,
}

impl Transport {
    pub const ALL: [Transport; 11] = [
        Transport::Queue,
        Transport::Pipe,
        Transport::Shm,
        Transport::ShmZeroCopy,
        Transport::RawMemcpy,
        Transport::RawSocketpair,
        Transport::RawFutex,
        Transport::RawRing,
        Transport::PythonQueue,
        Transport::PythonPipe,
        Transport::PythonShm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Transport::Queue => "queue",
            Transport::Pipe => "pipe",
            Transport::Shm => "shm",
            Transport::ShmZeroCopy => "shm-zerocopy",
            Transport::RawMemcpy => "raw-memcpy",
            Transport::RawSocketpair => "raw-socketpair",
            Transport::RawFutex => "raw-futex",
            Transport::RawRing => "raw-ring",
            Transport::PythonQueue => "python-queue",
            Transport::PythonPipe => "python-pipe",
            Transport::PythonShm => "python-shm",
        }
    }

    fn python(self) -> Option<&'static str> {
        match self {
            Transport::PythonQueue => Some("queue"),
            Transport::PythonPipe => Some("pipe"),
            Transport::PythonShm => Some("shm"),
            _ => None,
        }
    }

    /// CPython's counterpart of one of ours.
    pub fn python_twin(self) -> Option<Transport> {
        match self {
            Transport::Queue => Some(Transport::PythonQueue),
            Transport::Pipe => Some(Transport::PythonPipe),
            Transport::Shm | Transport::ShmZeroCopy => Some(Transport::PythonShm),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Placement {
    SameCpu,
    CrossCpu,
    Unpinned,
}

impl Placement {
    pub fn name(self) -> &'static str {
        match self {
            Placement::SameCpu => "same-cpu",
            Placement::CrossCpu => "cross-cpu",
            Placement::Unpinned => "unpinned",
        }
    }

    /// (parent's CPU, child's CPU).
    fn cpus(self) -> (Option<usize>, Option<usize>) {
        match self {
            Placement::SameCpu => (Some(0), Some(0)),
            Placement::CrossCpu => (Some(0), Some(1)),
            Placement::Unpinned => (None, None),
        }
    }
}

/// One number: what the JSON output holds, one object each.
#[derive(Clone, Debug)]
pub struct Measurement {
    pub transport: Transport,
    pub size: usize,
    pub placement: Placement,
    pub metric: &'static str,
    pub value: f64,
}

struct Options {
    quick: bool,
    sizes: Vec<usize>,
    transports: Vec<Transport>,
    placements: Vec<Placement>,
    python: bool,
    /// Which groups run: the transports, the pools.
    transports_group: bool,
    pool_group: bool,
    json: Option<PathBuf>,
    out: Option<PathBuf>,
    /// Repetitions and their length for what is measured alone (the pools, CPython, memcpy,
    /// the futex floor).
    reps: usize,
    target: Duration,
    /// Rounds and their length for the transports of a cell, which alternate.
    rounds: usize,
    round_target: Duration,
}

const HELP: &str = "\
ipc-bench: queue vs pipe vs shared memory, against the OS floor and CPython

USAGE: ipc-bench [OPTIONS]

  --quick               fewer, shorter repetitions (under 45 s)
  --rounds N            alternating rounds per size and placement (default 9, --quick 5)
  --sizes LIST          message sizes, e.g. 16,1KiB,64KiB,1MiB,16MiB (the default)
  --transports LIST     any of queue,pipe,shm,shm-zerocopy,raw-memcpy,raw-socketpair,raw-futex,
                        raw-ring,python-queue,python-pipe,python-shm (default: all)
  --placement LIST      same-cpu,cross-cpu,unpinned (default: same-cpu,cross-cpu; cross-cpu
                        needs two CPUs)
  --no-python           skip CPython
  --no-pool             skip the pool group (Pool, ThreadPool, the executors, CPython's)
  --pool-only           run only the pool group
  --json FILE           write every measurement as JSON
  --out DIR             write DIR/report.md and DIR/throughput.svg
  --help                this text
";

fn parse_size(s: &str) -> Result<usize, String> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("MiB") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("KiB") {
        (n, 1 << 10)
    } else if let Some(n) = s.strip_suffix('B') {
        (n, 1)
    } else {
        (s, 1)
    };
    num.trim()
        .parse::<usize>()
        .map(|n| n * mult)
        .map_err(|_| format!("bad size {s:?}"))
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        quick: false,
        sizes: vec![16, 1 << 10, 64 << 10, 1 << 20, 16 << 20],
        transports: Transport::ALL.to_vec(),
        placements: vec![Placement::SameCpu, Placement::CrossCpu],
        python: true,
        transports_group: true,
        pool_group: true,
        json: None,
        out: None,
        reps: 7,
        target: Duration::from_millis(100),
        rounds: 9,
        round_target: Duration::from_millis(50),
    };
    let mut rounds = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => {
                let n = value()?;
                rounds = Some(
                    n.parse::<usize>()
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("bad round count {n:?}"))?,
                );
            }
            "--no-python" => o.python = false,
            "--no-pool" => o.pool_group = false,
            "--pool-only" => o.transports_group = false,
            "--sizes" => {
                o.sizes = value()?
                    .split(',')
                    .map(parse_size)
                    .collect::<Result<_, _>>()?
            }
            "--transports" => {
                o.transports = value()?
                    .split(',')
                    .map(|t| {
                        Transport::ALL
                            .into_iter()
                            .find(|x| x.name() == t.trim())
                            .ok_or_else(|| format!("unknown transport {t:?}"))
                    })
                    .collect::<Result<_, _>>()?
            }
            "--placement" => {
                o.placements = value()?
                    .split(',')
                    .map(|p| match p.trim() {
                        "same-cpu" => Ok(Placement::SameCpu),
                        "cross-cpu" => Ok(Placement::CrossCpu),
                        "unpinned" => Ok(Placement::Unpinned),
                        other => Err(format!("unknown placement {other:?}")),
                    })
                    .collect::<Result<_, _>>()?
            }
            "--json" => o.json = Some(value()?.into()),
            "--out" => o.out = Some(value()?.into()),
            "--help" | "-h" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option {other:?} (see --help)")),
        }
    }
    if o.quick {
        o.reps = 3;
        o.target = Duration::from_millis(10);
        o.rounds = 5;
        o.round_target = Duration::from_millis(10);
    }
    if let Some(n) = rounds {
        o.rounds = n;
    }
    Ok(o)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(sorted: &[u64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)] as f64
}

/// How many messages make a repetition of about `target`, after `warm_up` took its time.
fn count_for(warm_up: &Rep, target: Duration) -> u64 {
    let per = warm_up.elapsed.as_secs_f64() / warm_up.n as f64;
    ((target.as_secs_f64() / per.max(1e-9)) as u64).clamp(2, 5_000_000)
}

/// The repetition policy of what is measured alone: a warm-up of `start_n` messages
/// (discarded; it also estimates the time per message), then `reps` repetitions of about
/// `target` each.
fn policy(o: &Options, start_n: u64) -> impl FnMut(Option<&Rep>) -> Option<u64> {
    let (reps, target) = (o.reps, o.target);
    let mut done = 0usize;
    let mut n = 0u64;
    move |prev: Option<&Rep>| {
        match prev {
            None => return Some(start_n),
            Some(r) if done == 0 => n = count_for(r, target),
            Some(_) => {}
        }
        done += 1;
        (done <= reps).then_some(n)
    }
}

/// Drops the warm-up repetition.
fn timed_reps(mut reps: Vec<Rep>) -> Vec<Rep> {
    reps.remove(0);
    reps
}

fn throughput(reps: &[Rep]) -> f64 {
    median(
        reps.iter()
            .map(|r| r.n as f64 / r.elapsed.as_secs_f64())
            .collect(),
    )
}

fn latencies(reps: Vec<Rep>) -> (f64, f64) {
    let mut samples: Vec<u64> = reps.into_iter().flat_map(|r| r.samples).collect();
    samples.sort_unstable();
    (percentile(&samples, 50), percentile(&samples, 99))
}

fn push(
    out: &mut Vec<Measurement>,
    transport: Transport,
    size: usize,
    placement: Placement,
    metric: &'static str,
    value: f64,
) {
    out.push(Measurement {
        transport,
        size,
        placement,
        metric,
        value,
    });
}

/// The smallest, the median and the largest of `v` (not empty).
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

/// Whether `t` is measured in `mode` in a cell of `size`.
fn in_cell(t: Transport, size: usize, mode: Mode) -> bool {
    match t {
        Transport::Queue
        | Transport::Pipe
        | Transport::Shm
        | Transport::ShmZeroCopy
        | Transport::RawSocketpair => true,
        Transport::RawRing => mode == Mode::Throughput && transports::raw_ring_fits(size),
        _ => false,
    }
}

fn open_session(t: Transport, size: usize, cpus: transports::Cpus, mode: Mode) -> Session {
    match t {
        Transport::Queue => transports::queue(size, cpus, mode),
        Transport::Pipe => transports::stream(size, cpus, mode, false),
        Transport::Shm => transports::shm(size, cpus, mode, false),
        Transport::ShmZeroCopy => transports::shm(size, cpus, mode, true),
        Transport::RawSocketpair => transports::stream(size, cpus, mode, true),
        Transport::RawRing => transports::raw_ring(size, cpus),
        _ => unreachable!("{t:?} is not measured in a cell"),
    }
}

/// One cell: the transports `ts` (ours and the floors) at one size and placement, for each mode
/// in alternating rounds. Every transport's child stays up for the whole mode; after a warm-up
/// of each, every round runs each transport once for about `round_target`, in turn (the order
/// reversed every other round, so that a drift of the machine weighs on all alike). Each
/// transport's figure is the median over the rounds (a round trip's p50 is the median of the
/// rounds' p50s, its p99 taken over every sample). For ours, the ratio against a floor is also
/// taken round by round (both measured in the same round): its smallest, median and largest
/// value are recorded (`*_min`, `*_paired`, `*_max`). The ratio of the medians always lies
/// between the smallest and the largest.
fn run_cell(o: &Options, ts: &[Transport], size: usize, pl: Placement, out: &mut Vec<Measurement>) {
    let cpus = pl.cpus();
    for mode in [Mode::Throughput, Mode::RoundTrip] {
        let here: Vec<Transport> = ts
            .iter()
            .copied()
            .filter(|&t| in_cell(t, size, mode))
            .collect();
        if here.is_empty() {
            continue;
        }
        let mut sessions: Vec<Session> = here
            .iter()
            .map(|&t| open_session(t, size, cpus, mode))
            .collect();
        let start_n = ((4usize << 20) / size.max(1)).clamp(2, 1000) as u64;
        let start_n = if mode == Mode::RoundTrip {
            start_n.min(50)
        } else {
            start_n
        };
        let counts: Vec<u64> = sessions
            .iter_mut()
            .map(|s| count_for(&s.rep(start_n), o.round_target))
            .collect();
        let mut reps: Vec<Vec<Rep>> = here.iter().map(|_| Vec::new()).collect();
        for round in 0..o.rounds {
            let mut order: Vec<usize> = (0..here.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                reps[i].push(sessions[i].rep(counts[i]));
            }
        }
        for s in sessions {
            s.finish();
        }
        // Per transport, the figure of each round.
        let per_round: Vec<Vec<f64>> = reps
            .iter()
            .map(|rs| {
                rs.iter()
                    .map(|r| match mode {
                        Mode::Throughput => r.n as f64 / r.elapsed.as_secs_f64(),
                        Mode::RoundTrip => {
                            let mut s = r.samples.clone();
                            s.sort_unstable();
                            percentile(&s, 50)
                        }
                    })
                    .collect()
            })
            .collect();
        let floor_of = |f: Transport| here.iter().position(|&t| t == f);
        for (i, &t) in here.iter().enumerate() {
            match mode {
                Mode::Throughput => {
                    let rate = median(per_round[i].clone());
                    push(out, t, size, pl, "msgs_per_s", rate);
                    push(out, t, size, pl, "bytes_per_s", rate * size as f64);
                }
                Mode::RoundTrip => {
                    let mut all: Vec<u64> =
                        reps[i].iter().flat_map(|r| r.samples.clone()).collect();
                    all.sort_unstable();
                    push(out, t, size, pl, "rtt_p50_ns", median(per_round[i].clone()));
                    push(out, t, size, pl, "rtt_p99_ns", percentile(&all, 99));
                }
            }
            if matches!(t, Transport::RawSocketpair | Transport::RawRing) {
                continue;
            }
            let floors: &[(Transport, [&'static str; 3])] = match mode {
                Mode::Throughput => &[
                    (
                        Transport::RawSocketpair,
                        ["tp_vs_raw_min", "tp_vs_raw_paired", "tp_vs_raw_max"],
                    ),
                    (
                        Transport::RawRing,
                        ["tp_vs_ring_min", "tp_vs_ring_paired", "tp_vs_ring_max"],
                    ),
                ],
                Mode::RoundTrip => &[(
                    Transport::RawSocketpair,
                    ["rtt_vs_raw_min", "rtt_vs_raw_paired", "rtt_vs_raw_max"],
                )],
            };
            for &(f, names) in floors {
                let Some(j) = floor_of(f) else { continue };
                let ratios: Vec<f64> = per_round[i]
                    .iter()
                    .zip(&per_round[j])
                    .map(|(a, b)| a / b)
                    .filter(|r| r.is_finite())
                    .collect();
                if ratios.is_empty() {
                    continue;
                }
                let (lo, mid, hi) = spread(ratios);
                push(out, t, size, pl, names[0], lo);
                push(out, t, size, pl, names[1], mid);
                push(out, t, size, pl, names[2], hi);
            }
        }
    }
}

/// Measures one of our pool rows: throughput or map rate, or round-trip percentiles.
fn run_pool_row(o: &Options, row: pools::Row, out: &mut Vec<pools::PoolMeasurement>) {
    let shape = row.shape();
    let reps = timed_reps(pools::run_ours(row, &mut policy(o, pools::start_n(shape))));
    let mut push = |metric, value| out.push(pools::PoolMeasurement { row, metric, value });
    if shape == pools::Shape::RoundTrip {
        let (p50, p99) = latencies(reps);
        push("rtt_p50_ns", p50);
        push("rtt_p99_ns", p99);
    } else {
        push("tasks_per_s", throughput(&reps));
    }
}

fn python_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../python/ipc_bench.py")
}

/// Runs CPython's side; `Err` with the reason if it could not.
fn run_python(
    o: &Options,
    t: Transport,
    size: usize,
    pl: Placement,
    out: &mut Vec<Measurement>,
) -> Result<(), String> {
    let res = Command::new("python3")
        .arg(python_script())
        .args([
            t.python().expect("a python transport"),
            &size.to_string(),
            pl.name(),
            &o.reps.to_string(),
            &o.target.as_secs_f64().to_string(),
        ])
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
    let text = String::from_utf8_lossy(&res.stdout);
    let field = |key: &str| -> Result<f64, String> {
        let at = text
            .find(&format!("\"{key}\": "))
            .ok_or_else(|| format!("python3 printed no {key}"))?;
        let rest = &text[at + key.len() + 4..];
        let end = rest.find([',', '}']).unwrap_or(rest.len());
        rest[..end]
            .trim()
            .parse()
            .map_err(|_| format!("bad {key} from python3"))
    };
    let rate = field("msgs_per_s")?;
    push(out, t, size, pl, "msgs_per_s", rate);
    push(out, t, size, pl, "bytes_per_s", rate * size as f64);
    push(out, t, size, pl, "rtt_p50_ns", field("rtt_p50_ns")?);
    push(out, t, size, pl, "rtt_p99_ns", field("rtt_p99_ns")?);
    Ok(())
}

fn main() {
    multiproc::init();
    let o = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("ipc-bench: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let mut notes: Vec<String> = Vec::new();
    let mut placements = o.placements.clone();
    if transports::num_cpus() < 2 && placements.contains(&Placement::CrossCpu) {
        placements.retain(|&p| p != Placement::CrossCpu);
        notes.push("cross-cpu skipped: this machine has one CPU".into());
    }
    let wants_python =
        o.pool_group || (o.transports_group && o.transports.iter().any(|t| t.python().is_some()));
    let mut python = o.python && wants_python;
    if python
        && Command::new("python3")
            .arg("--version")
            .output()
            .map_or(true, |r| !r.status.success())
    {
        python = false;
        notes.push("CPython skipped: python3 is not on the PATH".into());
    } else if !o.python {
        notes.push("CPython skipped (--no-python)".into());
    }

    // The plan, so that progress can say "k of n": per placement and size, one cell (ours and
    // the floors, alternating), then what is measured alone.
    let mut plan: Vec<(Option<Transport>, usize, Placement)> = Vec::new();
    for &pl in placements.iter().filter(|_| o.transports_group) {
        for &size in &o.sizes {
            let cell = o
                .transports
                .iter()
                .any(|&t| in_cell(t, size, Mode::Throughput) || in_cell(t, size, Mode::RoundTrip));
            if cell {
                plan.push((None, size, pl));
            }
            for &t in &o.transports {
                let wanted = match t {
                    Transport::RawMemcpy => pl == placements[0],
                    Transport::RawFutex => size == o.sizes[0],
                    t if t.python().is_some() => python,
                    _ => false,
                };
                if wanted {
                    plan.push((Some(t), size, pl));
                }
            }
        }
    }
    let pool_plan: Vec<pools::Row> = if o.pool_group {
        pools::Row::OURS.to_vec()
    } else {
        Vec::new()
    };
    let steps = plan.len() + pool_plan.len() + usize::from(o.pool_group && python);
    let cell_names: Vec<&str> = o
        .transports
        .iter()
        .filter(|&&t| in_cell(t, 1, Mode::Throughput) || in_cell(t, 1, Mode::RoundTrip))
        .map(|t| t.name())
        .collect();
    let cell_names = cell_names.join(",");
    let mut results = Vec::new();
    for (k, &(t, size, pl)) in plan.iter().enumerate() {
        eprintln!(
            "[{:>3}/{}] {:<15} {:>9} {:<9} ({:.0?} so far)",
            k + 1,
            steps,
            t.map_or(cell_names.as_str(), |t| t.name()),
            report::size_label(size),
            pl.name(),
            started.elapsed()
        );
        match t {
            None => run_cell(&o, &o.transports, size, pl, &mut results),
            Some(Transport::RawMemcpy) => {
                let rate = throughput(&timed_reps(transports::memcpy(size, &mut policy(&o, 16))));
                // A local copy has no placement; it is reported once, as unpinned.
                let (t, pl) = (Transport::RawMemcpy, Placement::Unpinned);
                push(&mut results, t, size, pl, "msgs_per_s", rate);
                push(&mut results, t, size, pl, "bytes_per_s", rate * size as f64);
            }
            Some(Transport::RawFutex) => {
                let reps = transports::futex_round_trip(pl.cpus(), &mut policy(&o, 50));
                let (p50, p99) = latencies(timed_reps(reps));
                let t = Transport::RawFutex;
                push(&mut results, t, 0, pl, "rtt_p50_ns", p50);
                push(&mut results, t, 0, pl, "rtt_p99_ns", p99);
            }
            Some(t) => {
                if let Err(e) = run_python(&o, t, size, pl, &mut results) {
                    notes.push(format!(
                        "{} {} {}: {e}",
                        t.name(),
                        report::size_label(size),
                        pl.name()
                    ));
                }
            }
        }
    }
    let mut pool_results = Vec::new();
    for (k, &row) in pool_plan.iter().enumerate() {
        eprintln!(
            "[{:>3}/{}] {:<36} ({:.0?} so far)",
            plan.len() + k + 1,
            steps,
            row.name(),
            started.elapsed()
        );
        run_pool_row(&o, row, &mut pool_results);
    }
    if o.pool_group && python {
        eprintln!(
            "[{:>3}/{}] {:<36} ({:.0?} so far)",
            steps,
            steps,
            "python-pool-group",
            started.elapsed()
        );
        match pools::run_python(o.reps, o.target.as_secs_f64()) {
            Ok(m) => pool_results.extend(m),
            Err(e) => notes.push(format!("CPython's pool group: {e}")),
        }
    }
    let elapsed = started.elapsed();
    eprintln!("done in {elapsed:.1?}");

    let mut table = if o.transports_group {
        report::table(&results, &o.sizes, &placements)
    } else {
        String::new()
    };
    if o.pool_group {
        table.push_str(&report::pool_table(&pool_results));
    }
    print!("{table}");
    for n in &notes {
        println!("note: {n}");
    }
    if let Some(path) = &o.json {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        if let Err(e) = std::fs::write(path, report::json(&results, &pool_results)) {
            eprintln!("ipc-bench: cannot write {}: {e}", path.display());
            std::process::exit(1);
        }
    }
    if let Some(dir) = &o.out {
        let written = std::fs::create_dir_all(dir)
            .and_then(|()| {
                std::fs::write(
                    dir.join("report.md"),
                    report::markdown(
                        &results,
                        &pool_results,
                        &o.sizes,
                        &placements,
                        &notes,
                        elapsed,
                        o.quick,
                    ),
                )
            })
            .and_then(|()| {
                std::fs::write(
                    dir.join("throughput.svg"),
                    report::svg(&results, &placements),
                )
            });
        if let Err(e) = written {
            eprintln!("ipc-bench: cannot write to {}: {e}", dir.display());
            std::process::exit(1);
        }
    }
}
