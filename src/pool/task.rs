//! A task as the engine keeps it until it is resolved, and why one can fail without a result.

use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use super::result::Sink;
use super::wire::{Bytes, TaskMsg};
use crate::error::{Error, ErrorKind, Result};
use crate::handles::Transits;
use crate::process::{Outcome, Ran, Target};
use crate::sys::Exit;

/// A task the caller has encoded, ready to submit.
pub(crate) struct NewTask {
    pub(crate) target: Target,
    pub(crate) data: Bytes,
    pub(crate) ends: Vec<u32>,
    /// The descriptors of the handles in the arguments (one list for all items, each
    /// descriptor once), and how many each item added to it.
    pub(crate) fds: Vec<OwnedFd>,
    pub(crate) fd_counts: Vec<u32>,
    /// The handles in the arguments that want to know which worker receives them.
    pub(crate) transits: Transits,
    pub(crate) sink: Arc<dyn Sink>,
    /// Index of the task's first item in its job.
    pub(crate) first: usize,
    /// Its caller collects the result itself (see `TaskMsg::Run::direct`).
    pub(crate) direct: bool,
}

/// Why a task failed without a result of its own.
#[derive(Clone)]
pub(crate) enum Why {
    Died {
        pid: u32,
        exit: Option<Exit>,
        why: Option<String>,
    },
    TimedOut {
        pid: u32,
        after: Duration,
    },
    Cancelled(&'static str),
    /// A worker died of SIGINT (a Ctrl-C): the pool stopped.
    Interrupted {
        pid: u32,
    },
    Broken(ErrorKind, String),
}

impl Why {
    pub(crate) fn error(&self) -> Error {
        match self {
            Why::Died { pid, exit, why } => {
                let mut how = match exit {
                    Some(Exit::Signal(s)) => format!("was killed by signal {s}"),
                    Some(Exit::Code(c)) => format!("exited with status {c}"),
                    None => "ended".to_string(),
                };
                if let Some(why) = why {
                    how = format!("{how} ({why})");
                }
                let e = Error::new(
                    ErrorKind::WorkerDied,
                    format!("the pool worker running the task {how}"),
                )
                .with_pid(*pid);
                match exit {
                    Some(x) => e.with_exit(*x),
                    None => e,
                }
            }
            Why::TimedOut { pid, after } => Error::new(
                ErrorKind::TaskTimeout,
                format!("the task ran longer than {after:?}; its worker was killed and replaced"),
            )
            .with_pid(*pid),
            Why::Cancelled(why) => Error::new(ErrorKind::Cancelled, *why),
            Why::Interrupted { pid } => Error::new(
                ErrorKind::Interrupted,
                format!(
                    "the pool was interrupted: its worker {pid} was killed by SIGINT (a Ctrl-C \
                     reaches the terminal's whole process group), so the pool stopped its \
                     workers and cancelled every unfinished task"
                ),
            )
            .with_pid(*pid)
            .with_exit(Exit::Signal(2)),
            Why::Broken(kind, why) => Error::new(*kind, why.clone()),
        }
    }
}

/// A task the pool still owes a result for. Dropped unresolved, it resolves as cancelled:
/// whatever path loses a task, its results never hang.
pub(crate) struct Task {
    pub(crate) msg: TaskMsg,
    /// Descriptors sent with the task to whichever worker takes it (kept for a re-dispatch).
    pub(crate) fds: Vec<OwnedFd>,
    /// The handles in the arguments that are told which worker receives them, and the last
    /// worker they were told of (announced once per worker, before it can decode them).
    pub(crate) transits: Transits,
    pub(crate) announced_to: Option<u32>,
    /// The size of the task's arguments, in bytes.
    pub(crate) size: usize,
    pub(crate) count: usize,
    pub(crate) first: usize,
    pub(crate) sink: Arc<dyn Sink>,
    pub(crate) resolved: bool,
}

impl Task {
    pub(crate) fn fail(mut self, why: &Why) {
        self.resolved = true;
        for i in 0..self.count {
            self.sink.deliver(self.first + i, Err(why.error()));
        }
    }

    /// Hands each item's outcome to the sink, all at once.
    pub(crate) fn finish(
        mut self,
        pid: u32,
        failed: Vec<(u32, Outcome)>,
        data: &[u8],
        lens: &[u32],
    ) {
        self.resolved = true;
        if failed.is_empty()
            && lens.len() == self.count
            && lens.iter().map(|&l| l as usize).sum::<usize>() == data.len()
        {
            self.sink.deliver_ok(self.first, data, lens);
            return;
        }
        let mut results: Vec<Result<&[u8]>> = Vec::with_capacity(self.count);
        let mut failed = failed.into_iter().peekable();
        let mut lens = lens.iter();
        let mut offset = 0usize;
        for i in 0..self.count as u32 {
            let outcome = match failed.next_if(|(at, _)| *at == i) {
                Some((_, outcome)) => outcome,
                None => Outcome::Returned,
            };
            results.push(outcome.check(pid, Ran::Task).and_then(|()| {
                let bytes = lens.next().and_then(|&len| {
                    let b = data.get(offset..offset + len as usize);
                    offset += len as usize;
                    b
                });
                bytes.ok_or_else(|| {
                    Error::new(ErrorKind::Codec, "the worker sent a malformed result").with_pid(pid)
                })
            }));
        }
        self.sink.deliver_many(self.first, results);
    }
}

impl Drop for Task {
    fn drop(&mut self) {
        if !self.resolved {
            let why = Why::Cancelled("the pool dropped the task before it ran");
            for i in 0..self.count {
                self.sink.deliver(self.first + i, Err(why.error()));
            }
        }
    }
}
