//! The worker's side of the pool: a long-lived function that runs tasks from its own queue.
//!
//! A pool worker is an ordinary [`Process`](crate::Process) running [`worker_main`], whose
//! argument carries its two queue handles. It consumes only its own task queue (so nothing it
//! holds can wedge another worker when it dies) and puts results on the queue shared by all
//! (or, for a `direct` task, on the direct queue its caller reads).

use serde::{Deserialize, Serialize};

use super::wire::{Bytes, FdSocket, InitArg, Msg, TaskMsg, U32s};
use crate::process::{CallError, Outcome, Target};
use crate::{GetError, Queue};

/// What a pool worker process is started with.
#[derive(Serialize, Deserialize)]
pub(crate) struct WorkerArgs {
    pub(crate) worker: u64,
    pub(crate) tasks: Queue<TaskMsg>,
    pub(crate) results: Queue<Msg>,
    /// Where the results of tasks marked `direct` go (read by the callers waiting for them).
    pub(crate) direct: Queue<Msg>,
    /// The initializer and its encoded argument.
    pub(crate) init: Option<(Target, InitArg)>,
    /// Report the resident set size after each task (memory-based recycling).
    pub(crate) report_rss: bool,
    /// Where the descriptors of handles in task arguments arrive.
    pub(crate) fd_socket: FdSocket,
}

/// The body of a pool worker: initializer, `Ready`, then tasks until told to exit.
pub(crate) fn worker_main(args: WorkerArgs) {
    let WorkerArgs {
        worker,
        tasks,
        results,
        direct,
        init,
        report_rss,
        fd_socket,
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
    loop {
        let msg = match tasks.get() {
            Ok(m) => m,
            Err(GetError::Disconnected) => return,
            Err(GetError::Failed(e)) => {
                // Say why before leaving: the tasks this worker holds fail with the reason.
                let why = format!("its task queue failed: {e}");
                let _ = results.put(Msg::Stopped { worker, why });
                return;
            }
        };
        let TaskMsg::Run {
            id,
            target,
            data,
            ends,
            fds,
            direct: to_caller,
        } = msg
        else {
            return;
        };
        let out = if to_caller { &direct } else { &results };
        let handles = if fds.is_empty() {
            Ok(Vec::new())
        } else {
            receive_fds(&fd_socket, id, &fds)
        };
        let done = match handles {
            Ok(handles) => run_task(worker, id, target, &data, &ends, handles, report_rss),
            Err(why) => Msg::Done {
                worker,
                id,
                failed: (0..ends.len() as u32)
                    .map(|i| (i, Outcome::BadArguments(why.clone())))
                    .collect(),
                data: Bytes::default(),
                lens: U32s::default(),
                rss: None,
                busy_ns: 0,
            },
        };
        let count = ends.len();
        if let Err(e) = out.put(done) {
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
                lens: U32s::default(),
                rss: None,
                busy_ns: 0,
            };
            if out.put(failed).is_err() {
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

/// Reads the descriptors of task `id` from the descriptor socket: one list for the whole task
/// (`counts` says how many each item added; an item's handles may name any of them).
fn receive_fds(
    socket: &FdSocket,
    id: u64,
    counts: &[u32],
) -> Result<Vec<std::os::fd::OwnedFd>, String> {
    use std::os::fd::AsFd;
    let mut header = Vec::with_capacity(8);
    let mut fds = Vec::new();
    while header.len() < 8 {
        let want = 8 - header.len();
        let n = crate::sys::recv_append(socket.0.as_fd(), &mut header, want, Some(&mut fds), false)
            .map_err(|e| format!("the task's handles could not be received: {e}"))?;
        if n == 0 {
            return Err("the parent closed the descriptor socket".into());
        }
    }
    let got = u64::from_le_bytes(header[..8].try_into().unwrap_or([0; 8]));
    if got != id {
        return Err(format!("the handles of task {got} came for task {id}"));
    }
    let want: usize = counts.iter().map(|&c| c as usize).sum();
    if fds.len() != want {
        return Err(format!("{} descriptors came for {want} handles", fds.len()));
    }
    Ok(fds)
}

/// Runs every item of one task and gathers the results.
fn run_task(
    worker: u64,
    id: u64,
    target: Target,
    data: &[u8],
    ends: &[u32],
    handles: Vec<std::os::fd::OwnedFd>,
    rss: bool,
) -> Msg {
    capture_panic_locations();
    let started = std::time::Instant::now();
    let mut failed = Vec::new();
    let mut out = Vec::new();
    let mut lens = Vec::with_capacity(ends.len());
    if handles.is_empty() {
        run_chunk(target, data, ends, &mut out, &mut lens, &mut failed);
    } else {
        run_items(
            target,
            data,
            ends,
            handles,
            &mut out,
            &mut lens,
            &mut failed,
        );
    }
    Msg::Done {
        worker,
        id,
        failed,
        data: Bytes(out.into()),
        lens: U32s(lens),
        rss: if rss { resident_bytes() } else { None },
        busy_ns: started.elapsed().as_nanos().min(u64::MAX as u128) as u64,
    }
}

/// Runs the items of a task that holds no handle through the function's chunk trampoline:
/// results straight into `out`, no allocation per item. A failing or panicking item is
/// recorded and the chunk goes on after it.
fn run_chunk(
    target: Target,
    data: &[u8],
    ends: &[u32],
    out: &mut Vec<u8>,
    lens: &mut Vec<u32>,
    failed: &mut Vec<(u32, Outcome)>,
) {
    let mut next = 0usize;
    while next < ends.len() {
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            target.invoke_chunk(data, ends, &mut next, out, lens)
        }));
        let at = next.saturating_sub(1) as u32;
        match ran {
            Ok(Ok(())) => return,
            Ok(Err(CallError::Arguments(e))) => {
                failed.push((at, Outcome::BadArguments(e.to_string())))
            }
            Ok(Err(CallError::Result(e))) => failed.push((at, Outcome::BadResult(e.to_string()))),
            Err(payload) => {
                // A panic inside a result's encoding may have left part of it behind.
                out.truncate(lens.iter().map(|&l| l as usize).sum());
                failed.push((
                    at,
                    Outcome::Panicked {
                        message: super::result::panic_message(&payload),
                        location: PANICKED_AT.with(|slot| slot.borrow_mut().take()),
                    },
                ));
            }
        }
    }
}

/// Runs the items of a task one by one, with the task's descriptors at hand for the handles
/// in any of them.
fn run_items(
    target: Target,
    data: &[u8],
    ends: &[u32],
    handles: Vec<std::os::fd::OwnedFd>,
    out: &mut Vec<u8>,
    lens: &mut Vec<u32>,
    failed: &mut Vec<(u32, Outcome)>,
) {
    crate::handles::with_incoming(handles, || {
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
    });
}

/// This process's resident set size, from `/proc/self/statm` (pages; 4 KiB assumed when the
/// page size cannot be read).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::os::fd::{AsFd, OwnedFd};

    use super::{FdSocket, receive_fds};
    use crate::sys;

    /// Sends task `id`'s descriptor message (`n` eventfds) the way the engine does.
    fn send(ours: &OwnedFd, id: u64, n: usize) {
        let fds: Vec<OwnedFd> = (0..n).map(|_| sys::eventfd().expect("eventfd")).collect();
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        sys::sendmsg(ours.as_fd(), &[&id.to_le_bytes()], &borrowed, false).expect("sendmsg");
    }

    /// Hostile: a task whose per-item descriptor counts are forged (more than arrived, a sum
    /// that overflows 32 bits, counts that do not add up, handles for another task) gets a
    /// typed error, never a panic or a descriptor that arrived for something else.
    #[test]
    fn forged_descriptor_counts_are_refused() {
        let (ours, theirs) = sys::stream_socketpair().expect("socketpair");
        let socket = FdSocket(theirs);
        send(&ours, 1, 2);
        assert_eq!(receive_fds(&socket, 1, &[1, 1]).expect("honest").len(), 2);
        for forged in [
            &[3][..],
            &[u32::MAX, 1],
            &[u32::MAX, u32::MAX, 4],
            &[0, 1],
            &[],
        ] {
            send(&ours, 2, 2);
            let e = receive_fds(&socket, 2, forged).expect_err("forged counts");
            assert!(e.contains("descriptors came for"), "{forged:?}: {e}");
        }
        send(&ours, 3, 1);
        let e = receive_fds(&socket, 4, &[1]).expect_err("another task's handles");
        assert!(e.contains("task 3"), "{e}");
        drop(ours);
        let e = receive_fds(&socket, 5, &[1]).expect_err("closed");
        assert!(e.contains("closed"), "{e}");
    }
}
