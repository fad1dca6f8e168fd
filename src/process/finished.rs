//! What a child left behind once it ended, and how that becomes `join`'s answer.
//!
//! The order of truth: a complete result is the value; a report of a panic or a codec failure
//! says what happened; otherwise a signal that killed the child is the cause (whatever half a
//! message it left); otherwise its exit status.

use serde::de::DeserializeOwned;

use super::child::{Child, ended_error};
use super::protocol::Outcome;
use crate::codec::{self, CodecError};
use crate::error::{Error, ErrorKind, Result};
use crate::sys::Exit;

/// Exit status of a child whose function panicked or whose call failed (see `bootstrap`).
const EXIT_FAILED: i32 = 1;

pub(super) struct Finished {
    pub(super) pid: u32,
    /// How it ended. When its status was collected elsewhere (SIGCHLD ignored, a foreign
    /// `waitpid(-1)`), inferred from its report, and `None` if it sent none.
    pub(super) exit: Option<Exit>,
    /// Its report (`Ok(None)`: none, or only part of one).
    outcome: Result<Option<Outcome>>,
    /// The encoded result after `Returned` (`Ok(None)`: it did not arrive whole), until `join`
    /// takes it.
    result: Result<Option<Vec<u8>>>,
    taken: bool,
}

impl Finished {
    /// Reads everything the ended child sent and keeps its report.
    pub(super) fn from_child(child: &mut Child, exit: Option<Exit>) -> Finished {
        // It has ended: whatever it sent is in the socket already.
        let drained = child.chan.drain_ended();
        let outcome = drained.and_then(|()| child.chan.take::<Outcome>());
        let result = match &outcome {
            Ok(Some(Outcome::Returned)) => child.chan.take_frame(),
            _ => Ok(None),
        };
        let exit = exit.or(match (&outcome, &result) {
            (Ok(Some(Outcome::Returned)), Ok(Some(_))) => Some(Exit::Code(0)),
            (Ok(Some(_)), _) => Some(Exit::Code(EXIT_FAILED)),
            _ => None,
        });
        Finished {
            pid: child.pid(),
            exit,
            outcome,
            result,
            taken: false,
        }
    }

    /// The value, or the error that describes how the child failed.
    pub(super) fn result<R: DeserializeOwned>(&mut self) -> Result<R> {
        let pid = self.pid;
        let exit = self.exit;
        let with_exit = |e: Error| match exit {
            Some(x) => e.with_pid(pid).with_exit(x),
            None => e.with_pid(pid),
        };
        if self.taken {
            return Err(Error::new(
                ErrorKind::ResultTaken,
                "the process's result was already returned by an earlier join",
            ));
        }
        if let (Ok(Some(Outcome::Returned)), Ok(result @ Some(_))) =
            (&self.outcome, &mut self.result)
        {
            let bytes = result.take().unwrap_or_default();
            self.taken = true;
            return codec::decode(&bytes).map_err(|e| {
                Error::codec("the child's result could not be deserialized", e).with_pid(pid)
            });
        }
        match (&self.outcome, &self.result) {
            (Ok(Some(Outcome::Panicked { message, location })), _) => Err(with_exit(
                Error::new(ErrorKind::Panicked, "the child process panicked")
                    .with_panic(message.clone(), location.clone()),
            )),
            (Ok(Some(Outcome::BadArguments(why))), _) => Err(with_exit(Error::codec(
                "the child could not deserialize its arguments",
                CodecError::Invalid(why.clone()),
            ))),
            (Ok(Some(Outcome::BadResult(why))), _) => Err(with_exit(Error::codec(
                "the child could not serialize its result",
                CodecError::Encode(why.clone()),
            ))),
            // Killed: the signal is the truth, whatever half a message it left behind.
            (_, _) if matches!(exit, Some(Exit::Signal(_))) => Err(ended_error(
                ErrorKind::Exited,
                "the child process ended before it delivered a result: it",
                pid,
                exit.unwrap_or(Exit::Signal(0)),
            )),
            (Err(e), _) | (Ok(Some(Outcome::Returned)), Err(e)) => Err(with_exit(Error::new(
                ErrorKind::Codec,
                format!("the child process sent a malformed report: {e}"),
            ))),
            (Ok(Some(Outcome::Returned)), Ok(_)) => Err(with_exit(Error::new(
                ErrorKind::Exited,
                "the child process ended before its whole result arrived",
            ))),
            (Ok(None), _) => match exit {
                Some(x) => Err(ended_error(
                    ErrorKind::Exited,
                    "the child process ended without a result: it",
                    pid,
                    x,
                )),
                None => Err(Error::new(
                    ErrorKind::Exited,
                    "the child process ended without a result, and its exit status was \
                     collected elsewhere (SIGCHLD is ignored, or something in this program \
                     called waitpid(-1)), so how it ended is unknown",
                )
                .with_pid(pid)),
            },
        }
    }
}
