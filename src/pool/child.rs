//! The worker's side of the pool: a long-lived function that runs tasks from its own queue.
//!
//! A pool worker is an ordinary [`Process`](crate::Process) running [`worker_main`], whose
//! argument carries its two queue handles. It consumes only its own task queue (so nothing it
//! holds can wedge another worker when it dies) and puts results on the queue shared by all.

use serde::{Deserialize, Serialize};

use super::wire::{Bytes, InitArg, Msg, TaskMsg};
use crate::Queue;
use crate::process::{Outcome, Target, execute};

/// What a pool worker process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) worker: u64,
    pub(crate) tasks: Queue<TaskMsg>,
    pub(crate) results: Queue<Msg>,
    /// The initializer and its encoded argument.
    pub(crate) init: Option<(Target, InitArg)>,
    /// Report the resident set size after each task (memory-based recycling).
    pub(crate) report_rss: bool,
}

/// The body of a pool worker: initializer, `Ready`, then tasks until told to exit.
pub(crate) fn worker_main(args: WorkerArgs) {
    let WorkerArgs {
        worker,
        tasks,
        results,
        init,
        report_rss,
    } = args;
    // This process only consumes tasks: its handle must not keep the queue "connected", so
    // that a vanished parent reads as the end of the stream.
    tasks.close();
    if let Some((target, arg)) = init
        && let Err(outcome) = run_initializer(target, &arg)
    {
        let _ = results.put(Msg::InitFailed { worker, outcome });
        return;
    }
    if results.put(Msg::Ready { worker }).is_err() {
        return;
    }
    while let Ok(msg) = tasks.get() {
        let TaskMsg::Run {
            id,
            target,
            data,
            ends,
        } = msg
        else {
            return;
        };
        let done = run_task(worker, id, target, &data, &ends, report_rss);
        let count = ends.len();
        if let Err(e) = results.put(done) {
            // The result message itself could not be put (too large for the queue, say):
            // report that, so the task fails on its own instead of hanging.
            let why = e.error().to_string();
            let failed = Msg::Done {
                worker,
                id,
                outcomes: (0..count)
                    .map(|_| Outcome::BadResult(why.clone()))
                    .collect(),
                data: Bytes::default(),
                lens: Vec::new(),
                rss: None,
                busy_ns: 0,
            };
            if results.put(failed).is_err() {
                return;
            }
        }
    }
}

/// Runs the initializer. This runs while the worker's start arguments are being received, so
/// that the handles inside the initializer's argument find their descriptors: it is invoked
/// directly, not through `execute` (which would install descriptors of its own).
fn run_initializer(target: Target, arg: &InitArg) -> Result<(), Outcome> {
    let InitArg::Bytes(bytes) = arg else {
        return Err(Outcome::BadArguments(
            "the initializer's argument was not received".into(),
        ));
    };
    let run = std::panic::AssertUnwindSafe(|| target.invoke(bytes));
    match std::panic::catch_unwind(run) {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(Outcome::BadArguments(
            "the initializer's argument did not deserialize in the worker".into(),
        )),
        Err(payload) => Err(Outcome::Panicked {
            message: super::result::panic_message(&payload),
            location: None,
        }),
    }
}

/// Runs every item of one task and gathers the outcomes.
fn run_task(worker: u64, id: u64, target: Target, data: &[u8], ends: &[u32], rss: bool) -> Msg {
    let started = std::time::Instant::now();
    let mut outcomes = Vec::with_capacity(ends.len());
    let mut out = Vec::new();
    let mut lens = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for &end in ends {
        let end = end as usize;
        let Some(item) = data.get(start..end) else {
            outcomes.push(Outcome::BadArguments(
                "the task's item boundaries are out of range".into(),
            ));
            continue;
        };
        start = end;
        let (outcome, result) = execute(target, item, Vec::new());
        match (outcome, result) {
            (Outcome::Returned, Some(bytes)) => match u32::try_from(bytes.len()) {
                Ok(len) => {
                    lens.push(len);
                    out.extend_from_slice(&bytes);
                    outcomes.push(Outcome::Returned);
                }
                Err(_) => outcomes.push(Outcome::BadResult(format!(
                    "a result of {} bytes is too large for a pool task",
                    bytes.len()
                ))),
            },
            (Outcome::Returned, None) => {
                outcomes.push(Outcome::BadResult("no result was produced".into()))
            }
            (other, _) => outcomes.push(other),
        }
    }
    Msg::Done {
        worker,
        id,
        outcomes,
        data: Bytes(out.into()),
        lens,
        rss: if rss { resident_bytes() } else { None },
        busy_ns: started.elapsed().as_nanos().min(u64::MAX as u128) as u64,
    }
}

/// This process's resident set size, from `/proc/self/statm` (pages; 4 KiB assumed when the
/// page size cannot be read).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}
