//! The parent's handle on one running child: its pid, a pidfd, and the control channel.

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::channel::{Channel, Ready};
use super::service;
use crate::error::{Error, ErrorKind, Result};
use crate::sys::{self, Exit};

pub(crate) struct Child {
    pid: i32,
    pidfd: OwnedFd,
    pub(crate) chan: Channel,
    exit: Option<Exit>,
    /// A child of the forkserver (of this generation), not of this process: its exit status
    /// comes from the server.
    remote: Option<u64>,
    /// `wait_exit` has had its one quiet wait on the pidfd alone (see there).
    waited_quietly: bool,
    /// Freed with this handle (see [`Held`]).
    _held: Held,
}

/// Memory of the parent that a forked child was made with, freed only with the child's handle.
///
/// While the child lives, every page the parent writes is one it shares with the child, so the
/// write is a copy-on-write fault that copies the page; freeing a block writes the allocator's
/// lists and the block itself. Freed right after the fork, these cost the parent a few page
/// copies on the path of every start; freed with the handle (once the child has usually
/// ended), they cost nothing of the kind. Only plain memory is held: descriptors and values
/// whose drop others can observe are never delayed.
#[derive(Default)]
pub(crate) struct Held {
    /// The identity the child published (the parent's copy).
    pub(crate) _identity: Option<super::identity::Prepared>,
    /// The encoded arguments, when small (`launch::HELD_ARGS_MAX`).
    pub(crate) _args: Vec<u8>,
    /// The emptied list of the arguments' descriptors (closed already).
    pub(crate) _fds: Vec<OwnedFd>,
}

/// How long the first wait for a child's end watches its pidfd alone (see `Child::wait_exit`).
const QUIET_WAIT: Duration = Duration::from_millis(1);

/// What `wait_frame` found.
pub(crate) enum FrameWait {
    Frame(Vec<u8>),
    /// The child ended (or closed its channel and then ended) without sending one.
    Ended(Exit),
    Timeout,
}

impl Child {
    pub(crate) fn new(pid: i32, pidfd: OwnedFd, chan: Channel) -> Child {
        Child {
            pid,
            pidfd,
            chan,
            exit: None,
            remote: None,
            waited_quietly: false,
            _held: Held::default(),
        }
    }

    /// A forked child, with what of the parent's memory to free only with this handle.
    pub(crate) fn new_forked(pid: i32, pidfd: OwnedFd, chan: Channel, held: Held) -> Child {
        Child {
            _held: held,
            ..Child::new(pid, pidfd, chan)
        }
    }

    /// A child that the forkserver made for us (see `forkserver`).
    pub(crate) fn new_remote(pid: i32, pidfd: OwnedFd, generation: u64, chan: Channel) -> Child {
        Child {
            remote: Some(generation),
            ..Child::new(pid, pidfd, chan)
        }
    }

    /// How the child ended, waiting for it until `deadline`: our own child is reaped, the
    /// forkserver's is asked about.
    fn collect(&self, deadline: Option<Instant>) -> std::io::Result<Option<Exit>> {
        if let Some(generation) = self.remote {
            super::forkserver::exit_status(self.pid, self.pidfd.as_fd(), generation, deadline)
        } else {
            let block = deadline.is_none();
            sys::wait_pidfd(self.pidfd.as_fd(), block)
        }
    }

    /// The pidfd: it becomes readable when the child ends, and stays so.
    pub(crate) fn pidfd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.pidfd.as_fd()
    }

    pub(crate) fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// How the child ended, if it has (reaps it if it just did).
    pub(crate) fn poll_exit(&mut self) -> Result<Option<Exit>> {
        if self.exit.is_none() {
            self.exit = self
                .collect(Some(Instant::now()))
                .map_err(|e| Error::io("waiting for a child process failed", e))?;
        }
        Ok(self.exit)
    }

    /// Waits for the child to end, reading its messages meanwhile so that it can never block
    /// on a full socket. `Ok(None)` when the deadline passed first.
    ///
    /// The first wait watches the pidfd alone, for at most [`QUIET_WAIT`]: a child that ends
    /// meanwhile (as a short job does) wakes us once, at its exit, instead of a first time when
    /// its report arrives and again when it exits (one context switch each, on a start path
    /// that costs a few of them in all). A report too large for the socket's buffer blocks its
    /// child for that long at most, once; from then on the socket is read as data arrives.
    pub(crate) fn wait_exit(&mut self, deadline: Option<Instant>) -> Result<Option<Exit>> {
        if !self.waited_quietly && self.exit.is_none() {
            self.waited_quietly = true;
            let quiet = Instant::now() + QUIET_WAIT;
            let until = deadline.map_or(quiet, |d| d.min(quiet));
            sys::wait_fd(self.pidfd.as_fd(), sys::POLLIN, Some(until))
                .map_err(|e| Error::io("waiting for a child process failed", e))?;
        }
        loop {
            if let Some(exit) = self.poll_exit()? {
                self.chan.drain_ended()?;
                return Ok(Some(exit));
            }
            match self.chan.wait(Some(self.pidfd.as_fd()), deadline, false)? {
                Ready::Timeout => return Ok(None),
                // Ended; the forkserver's report of how follows shortly.
                Ready::Other if self.remote.is_some() => {
                    self.exit = self
                        .collect(deadline)
                        .map_err(|e| Error::io("waiting for a child process failed", e))?;
                    if self.exit.is_none() {
                        return Ok(None);
                    }
                }
                Ready::Other | Ready::Closed | Ready::Frame => {}
            }
        }
    }

    /// Waits for the next frame from the child.
    pub(crate) fn wait_frame(&mut self, deadline: Option<Instant>) -> Result<FrameWait> {
        loop {
            if let Some(frame) = self.chan.take_frame()? {
                return Ok(FrameWait::Frame(frame));
            }
            match self.chan.wait(Some(self.pidfd.as_fd()), deadline, true)? {
                Ready::Frame => continue,
                Ready::Timeout => return Ok(FrameWait::Timeout),
                Ready::Other | Ready::Closed => {
                    // The child ended or closed its end, which it does only when ending.
                    match self.wait_exit(deadline)? {
                        Some(exit) => {
                            if let Some(frame) = self.chan.take_frame()? {
                                return Ok(FrameWait::Frame(frame));
                            }
                            return Ok(FrameWait::Ended(exit));
                        }
                        None => return Ok(FrameWait::Timeout),
                    }
                }
            }
        }
    }

    /// Sends `signal` to the child unless it has already been reaped.
    pub(crate) fn signal(&mut self, signal: i32) -> Result<()> {
        if self.exit.is_some() {
            return Ok(());
        }
        sys::pidfd_send_signal(self.pidfd.as_fd(), signal)
            .map_err(|e| Error::io("signalling a child process failed", e))
    }

    /// Kills the child and reaps it. Never fails: used on drop and on errors.
    pub(crate) fn kill_and_reap(&mut self) {
        if self.exit.is_none() {
            let _ = sys::pidfd_send_signal(self.pidfd.as_fd(), sys::SIGKILL);
            // The forkserver reports at once; should it be stopped, give up after a while (it
            // reaps the child itself, or dies and takes it along).
            let deadline = self
                .remote
                .map(|_| Instant::now() + std::time::Duration::from_secs(10));
            match (self.collect(deadline), self.remote) {
                (Ok(Some(exit)), _) => self.exit = Some(exit),
                (_, Some(generation)) => super::forkserver::forget(self.pid, generation),
                _ => {}
            }
        }
    }

    /// Gives up the handle: a child still running is reaped by the service thread when it ends.
    pub(crate) fn detach(mut self) {
        if let Ok(None) = self.poll_exit() {
            if let Some(generation) = self.remote {
                // The forkserver reaps it; only its report is to be dropped.
                super::forkserver::forget(self.pid, generation);
            } else {
                service::reap_later(self.pid, self.pidfd);
            }
        }
    }
}

/// The error for a child that ended without delivering what was expected of it.
pub(crate) fn ended_error(kind: ErrorKind, what: &str, pid: u32, exit: Exit) -> Error {
    let how = match exit {
        Exit::Code(c) => format!("exited with status {c}"),
        Exit::Signal(s) => format!("was killed by {}", signal_name(s)),
    };
    let kind = match (kind, exit) {
        (ErrorKind::Exited, Exit::Signal(_)) => ErrorKind::Signaled,
        (k, _) => k,
    };
    Error::new(kind, format!("{what} {how}"))
        .with_pid(pid)
        .with_exit(exit)
}

/// A readable name for the common signals.
pub(crate) fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("{name} (signal {signal})")
}
