//! The worker's side of the pool: a long-lived function that runs tasks from its own queue.
//!
//! A pool worker is an ordinary [`Process`](crate::Process) running [`worker_main`], whose
//! argument carries its two queue handles. It consumes only its own task queue (so nothing it
//! holds can wedge another worker when it dies) and puts results on the queue shared by all.

use serde::{Deserialize, Serialize};

use super::wire::{Bytes, InitArg, Msg, TaskMsg};
use crate::Queue;
use crate::process::{CallError, Outcome, Target};

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
                failed: (0..count as u32)
                    .map(|i| (i, Outcome::BadResult(why.clone())))
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

thread_local! {
    /// Where the last panic on this thread happened, recorded by the hook below.
    static PANICKED_AT: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Wraps the panic hook once so that a task's panic records its location here; the previous
/// hook still prints the usual message on the worker's stderr.
fn capture_panic_locations() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let at = info
                .location()
                .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
            PANICKED_AT.with(|slot| *slot.borrow_mut() = at);
            previous(info);
        }));
    });
}

/// Runs one item: the function's trampoline decodes the argument, calls, encodes the result.
fn run_item(target: Target, item: &[u8]) -> Result<Vec<u8>, Outcome> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| target.invoke(item))) {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(CallError::Arguments(e))) => Err(Outcome::BadArguments(e.to_string())),
        Ok(Err(CallError::Result(e))) => Err(Outcome::BadResult(e.to_string())),
        Err(payload) => Err(Outcome::Panicked {
            message: super::result::panic_message(&payload),
            location: PANICKED_AT.with(|slot| slot.borrow_mut().take()),
        }),
    }
}

/// Runs every item of one task and gathers the results.
fn run_task(worker: u64, id: u64, target: Target, data: &[u8], ends: &[u32], rss: bool) -> Msg {
    capture_panic_locations();
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut out = Vec::new();
    let mut lens = Vec::with_capacity(ends.len());
    let mut start = 0usize;
    for (i, &end) in ends.iter().enumerate() {
        let i = i as u32;
        let end = end as usize;
        let Some(item) = data.get(start..end) else {
            failed.push((
                i,
                Outcome::BadArguments("the task's item boundaries are out of range".into()),
            ));
            continue;
        };
        start = end;
        match run_item(target, item) {
            Ok(bytes) => match u32::try_from(bytes.len()) {
                Ok(len) => {
                    lens.push(len);
                    out.extend_from_slice(&bytes);
                }
                Err(_) => failed.push((
                    i,
                    Outcome::BadResult(format!(
                        "a result of {} bytes is too large for a pool task",
                        bytes.len()
                    )),
                )),
            },
            Err(outcome) => failed.push((i, outcome)),
        }
    }
    Msg::Done {
        worker,
        id,
        failed,
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
