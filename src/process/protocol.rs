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

/// Bumped whenever a message below changes shape.
pub(crate) const PROTOCOL_VERSION: u32 = 1;

/// The environment variable that tells a starting executable it is a multiproc child.
/// Its value is `<protocol version>:<parent pid>`; the control socket is descriptor 0.
pub(crate) const CHILD_ENV: &str = "MULTIPROC_CHILD";

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
    /// Run this once; its arguments follow in the next frame.
    Call(Target),
    /// Serve `Request`s until told to exit.
    Worker,
}

/// The child's answer to `Bootstrap`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Hello {
    Ready { pid: u32 },
    Refused(String),
}

/// A request to a long-lived worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Run this; its arguments follow in the next frame.
    Call(Target),
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
