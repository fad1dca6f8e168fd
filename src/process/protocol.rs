//! The messages that parent and child exchange over their control channel.
//!
//! ```text
//! parent                                   child (spawn)
//!   Bootstrap ───────────────────────────▶   checks the build, records its identity
//!             ◀─────────────────────────── Hello::Ready / Hello::Refused
//!   [Job::Call]  args frame ─────────────▶   runs the function once
//!             ◀─────────────────────────── Outcome (+ result frame), then exits
//!   [Job::Worker] Request::Call + args ──▶   runs it, answers, waits for the next
//!             ◀─────────────────────────── Outcome (+ result frame)
//!                Request::Exit ──────────▶   exits 0 (so does end of stream)
//! ```
//! A forked child skips the bootstrap: it already has everything in memory.

use serde::{Deserialize, Serialize};

use super::function::{BuildId, Target};

/// Bumped whenever a message below, or the environment value, changes shape.
pub(crate) const PROTOCOL_VERSION: u32 = 3;

/// The environment variable that tells a starting executable it is a multiproc child.
/// Its value is `<protocol version>:<parent pid>:<copy tag>` (see [`ChildEnv`]); the control
/// socket is descriptor 0.
pub(crate) const CHILD_ENV: &str = "MULTIPROC_CHILD";

/// The parsed value of [`CHILD_ENV`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ChildEnv<'a> {
    pub(crate) version: u32,
    pub(crate) parent: i32,
    /// Which copy of this crate in the executable started the child (a program can link two
    /// semver-incompatible versions, each with its own pre-`main` hook).
    pub(crate) copy: &'a str,
}

impl<'a> ChildEnv<'a> {
    /// The value for a child of `parent` started by the copy `copy`.
    pub(crate) fn format(parent: i32, copy: &str) -> String {
        format!("{PROTOCOL_VERSION}:{parent}:{copy}")
    }

    /// Reads a value; `None` if it is not one of ours at all.
    pub(crate) fn parse(value: &'a str) -> Option<ChildEnv<'a>> {
        let mut parts = value.splitn(3, ':');
        let version = parts.next()?.parse().ok()?;
        let parent = parts.next()?.parse().ok()?;
        let copy = parts.next().unwrap_or("");
        Some(ChildEnv {
            version,
            parent,
            copy,
        })
    }
}

/// First message from the parent to a spawned child.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Bootstrap {
    pub(crate) build: BuildId,
    pub(crate) me: Identity,
    pub(crate) parent_name: String,
    pub(crate) job: Job,
}

/// Who a process is: Python's `name` and `_identity` (`Process-2:1` is the first child of the
/// second child of the main process).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Identity {
    pub(crate) name: String,
    pub(crate) path: Vec<u32>,
}

/// What the child is for.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Job {
    /// Run this once, sending back a result of at most this many bytes; its arguments follow
    /// in the next frame.
    Call(Target, u64),
    /// Serve `Request`s until told to exit.
    Worker,
    /// Be this process's forkserver: run these calls once, then fork children on request
    /// (see `forkserver`).
    Forkserver(Vec<(Target, Vec<u8>)>),
}

/// The child's answer to `Bootstrap`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Hello {
    Ready { pid: u32 },
    Refused(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_value_round_trips() {
        let value = ChildEnv::format(1234, "abc0");
        assert_eq!(
            ChildEnv::parse(&value),
            Some(ChildEnv {
                version: PROTOCOL_VERSION,
                parent: 1234,
                copy: "abc0"
            })
        );
        // The first protocol's value had no copy tag.
        assert_eq!(ChildEnv::parse("1:99").map(|e| e.copy), Some(""));
        assert_eq!(ChildEnv::parse("garbage"), None);
        assert_eq!(ChildEnv::parse(""), None);
    }
}

/// A request to a long-lived worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Run this, sending back a result of at most this many bytes; its arguments follow in
    /// the next frame.
    Call(Target, u64),
    /// Finish and exit with status 0.
    Exit,
}

/// How one call went. `Returned` is followed by a frame with the encoded result.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Outcome {
    Returned,
    Panicked {
        message: String,
        location: Option<String>,
    },
    /// The arguments did not decode in the child.
    BadArguments(String),
    /// The result did not encode in the child.
    BadResult(String),
}

/// What ran in the worker, as the errors of [`Outcome::check`] name it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Ran {
    /// A [`Worker`](crate::Worker) call.
    Call,
    /// A pool task.
    Task,
}

impl Outcome {
    /// `Ok(())` for `Returned` (its result follows); for any other outcome, the error that
    /// reports it, from the worker `pid`.
    pub(crate) fn check(self, pid: u32, ran: Ran) -> crate::Result<()> {
        let (panicked, arguments, result) = match ran {
            Ran::Call => (
                "the call panicked in the worker",
                "the worker could not deserialize the call's argument",
                "the worker could not serialize the call's result",
            ),
            Ran::Task => (
                "the task panicked in its worker",
                "the worker could not deserialize the task's argument",
                "the worker could not serialize the task's result",
            ),
        };
        let e = match self {
            Outcome::Returned => return Ok(()),
            Outcome::Panicked { message, location } => {
                crate::Error::new(crate::ErrorKind::Panicked, panicked)
                    .with_panic(message, location)
            }
            Outcome::BadArguments(why) => {
                crate::Error::codec(arguments, crate::codec::CodecError::Invalid(why))
            }
            Outcome::BadResult(why) => {
                crate::Error::codec(result, crate::codec::CodecError::Encode(why))
            }
        };
        Err(e.with_pid(pid))
    }
}
