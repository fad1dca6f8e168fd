//! A long-lived child that runs many calls, one at a time: what pools are built from.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::channel::is_timeout;
use super::child::{Child, FrameWait, ended_error};
use super::function::Target;
use super::launch::{self, ForkJob, SpawnJob};
use super::protocol::{Outcome, Ran, Request};
use super::{CallTimeoutError, StartMethod, forkserver};
use super::{current_process, next_identity};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// How long [`Worker::shutdown`] waits for the worker to exit before killing it.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// A child process that stays up and runs function calls sent to it, one after another.
///
/// Each [`call`](Self::call) sends a function and its argument, and waits for the result. A call
/// that panics fails with [`ErrorKind::Panicked`] and the worker carries on with the next one. If
/// the worker dies during a call (killed, crashed, `exit()` called), that call fails with
/// [`ErrorKind::Signaled`] or [`ErrorKind::Exited`] carrying the pid and the signal or status, and
/// every later call fails with [`ErrorKind::Disconnected`]: start a new worker.
///
/// Dropping a `Worker` kills its child and reaps it; [`shutdown`](Self::shutdown) lets it exit
/// cleanly instead.
///
/// # Examples
///
/// ```no_run
/// use multiproc::Worker;
///
/// fn square(x: u64) -> u64 { x * x }
/// fn shout(s: String) -> String { s.to_uppercase() }
///
/// fn main() -> Result<(), multiproc::Error> {
///     multiproc::init();
///     let mut w = Worker::start()?;
///     assert_eq!(w.call(square, 9)?, 81);
///     assert_eq!(w.call(shout, "hi".to_string())?, "HI");
///     w.shutdown()
/// }
/// ```
#[derive(Debug)]
pub struct Worker {
    name: String,
    child: Option<Child>,
    /// Why the worker can no longer be used, once it cannot.
    broken: Option<String>,
    /// The largest encoded result a call may send back.
    max_result: u64,
}

impl std::fmt::Debug for Child {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child").field("pid", &self.pid()).finish()
    }
}

impl Worker {
    /// Starts a worker process (spawn method), named `Worker-N`.
    ///
    /// # Errors
    /// As [`Process::start`](crate::Process::start).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let w = multiproc::Worker::start().unwrap();
    /// assert!(w.pid() > 0);
    /// ```
    pub fn start() -> Result<Worker> {
        Worker::start_with(StartMethod::Spawn)
    }

    /// Starts a worker process with the given start method, named `Worker-N`. With
    /// [`StartMethod::Fork`] it is refused in a multi-threaded process; with
    /// [`StartMethod::Forkserver`] the forkserver makes it (cheap from any thread; what pools
    /// use to replace workers).
    ///
    /// # Errors
    /// As [`Process::start`](crate::Process::start).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// multiproc::init();
    /// let mut w = multiproc::Worker::start_with(multiproc::StartMethod::Forkserver).unwrap();
    /// assert_eq!(w.call(square, 7).unwrap(), 49);
    /// ```
    pub fn start_with(method: StartMethod) -> Result<Worker> {
        let identity = next_identity("Worker");
        let name = identity.name.clone();
        let parent = current_process().name;
        let child = match method {
            StartMethod::Spawn => launch::spawn(identity, parent, SpawnJob::Worker)?,
            StartMethod::Fork => launch::fork(identity, parent, ForkJob::Worker, true)?,
            StartMethod::Forkserver => forkserver::start(
                identity,
                parent,
                forkserver::ForkedJob::Worker,
                Vec::new(),
                Vec::new(),
                Default::default(),
            )?,
        };
        Ok(Worker {
            name,
            child: Some(child),
            broken: None,
            max_result: codec::MAX_FRAME_LIMIT as u64,
        })
    }

    /// Sets the largest result, in encoded bytes, that each later call may send back; by
    /// default the most one frame can carry
    /// ([`MAX_FRAME_LIMIT`](crate::codec::MAX_FRAME_LIMIT), also the ceiling of what can be set).
    ///
    /// A larger result is not sent: that call fails with [`ErrorKind::Codec`], and the worker
    /// stays usable for the next one.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{ErrorKind, Worker};
    /// fn big(n: usize) -> Vec<u8> { vec![7; n] }
    /// multiproc::init();
    /// let mut w = Worker::start().unwrap().with_max_result(4096);
    /// assert_eq!(w.call(big, 1 << 20).unwrap_err().kind(), ErrorKind::Codec);
    /// assert_eq!(w.call(big, 3).unwrap(), vec![7; 3]); // still usable
    /// ```
    pub fn with_max_result(mut self, bytes: usize) -> Self {
        self.max_result = (bytes as u64).min(codec::MAX_FRAME_LIMIT as u64);
        self
    }

    /// The worker's name.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let w = multiproc::Worker::start().unwrap();
    /// assert!(w.name().starts_with("Worker-"));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The worker's pid.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let w = multiproc::Worker::start().unwrap();
    /// assert_ne!(w.pid(), std::process::id());
    /// ```
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::pid)
    }

    /// Runs `f(arg)` in the worker and returns its result.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if the argument does not serialize (nothing is sent, the worker stays
    /// usable) or the result does not cross back; [`ErrorKind::Panicked`] if `f` panicked (the
    /// worker stays usable); [`ErrorKind::Signaled`] / [`ErrorKind::Exited`] if the worker died;
    /// [`ErrorKind::Disconnected`] if it had died before.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let mut w = multiproc::Worker::start().unwrap();
    /// assert_eq!(w.call(inc, 1).unwrap(), 2);
    /// ```
    pub fn call<A, R>(&mut self, f: fn(A) -> R, arg: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.call_until(f, arg, None)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Io,
                "the call returned before the worker answered",
            )
        })
    }

    /// Like [`call`](Self::call), giving up after `timeout` (a timeout too large for an
    /// `Instant` means forever). The deadline bounds every phase of the call: the send of the
    /// argument to a worker that stopped reading, the run, and the result's arrival.
    ///
    /// # Errors
    /// [`CallTimeoutError::Timeout`] if the result has not arrived by the deadline: the worker
    /// is in the middle of the call and cannot be reused, so it is killed and reaped, and later
    /// calls fail with [`ErrorKind::Disconnected`]. [`CallTimeoutError::Failed`] with the error
    /// [`call`](Self::call) would have returned.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::CallTimeoutError;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// multiproc::init();
    /// let mut w = multiproc::Worker::start().unwrap();
    /// assert_eq!(w.call_timeout(nap, 1, Duration::from_secs(10)).unwrap(), 1);
    /// let late = w.call_timeout(nap, 10_000, Duration::from_millis(10));
    /// assert!(matches!(late, Err(CallTimeoutError::Timeout)));
    /// assert!(!w.is_alive());
    /// ```
    pub fn call_timeout<A, R>(
        &mut self,
        f: fn(A) -> R,
        arg: A,
        timeout: Duration,
    ) -> std::result::Result<R, CallTimeoutError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.call_deadline(f, arg, deadline),
            None => self.call(f, arg).map_err(CallTimeoutError::Failed),
        }
    }

    /// Like [`call_timeout`](Self::call_timeout), with the deadline as an instant.
    ///
    /// # Errors
    /// As [`call_timeout`](Self::call_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let mut w = multiproc::Worker::start().unwrap();
    /// let deadline = Instant::now() + Duration::from_secs(10);
    /// assert_eq!(w.call_deadline(inc, 1, deadline).unwrap(), 2);
    /// assert_eq!(w.call_deadline(inc, 2, deadline).unwrap(), 3);
    /// ```
    pub fn call_deadline<A, R>(
        &mut self,
        f: fn(A) -> R,
        arg: A,
        deadline: Instant,
    ) -> std::result::Result<R, CallTimeoutError>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        match self.call_until(f, arg, Some(deadline)) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(CallTimeoutError::Timeout),
            Err(e) => Err(CallTimeoutError::Failed(e)),
        }
    }

    /// The one call: `Ok(None)` when `deadline` passed (the worker is then killed).
    fn call_until<A, R>(
        &mut self,
        f: fn(A) -> R,
        arg: A,
        deadline: Option<Instant>,
    ) -> Result<Option<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        let target = Target::of(f)?;
        let (args, fds, transits) = crate::handles::encode_with_handles(&arg).map_err(|e| {
            Error::codec(
                format!("the call's argument ({})", std::any::type_name::<A>()),
                e,
            )
        })?;
        let max_result = self.max_result;
        let child = self.usable()?;
        let pid = child.pid();
        transits.handed_to(pid as i32);
        // The deadline bounds every phase of the call, the send included (a worker that stops
        // reading cannot hold us past it).
        let sent = child.chan.send_message_until(
            &Request::Call(target, max_result),
            Some(&args),
            &fds,
            deadline,
        );
        match sent {
            Ok(()) => {}
            Err(e) if is_timeout(&e) => {
                self.timed_out();
                return Ok(None);
            }
            Err(e) => return Err(self.died(e)),
        }
        let outcome: Outcome = match self.next_frame(deadline)? {
            Some(frame) => codec::decode(&frame)
                .map_err(|e| self.broke(Error::codec("the worker sent a malformed reply", e)))?,
            None => return Ok(None),
        };
        outcome.check(pid, Ran::Call)?;
        let Some(bytes) = self.next_frame(deadline)? else {
            return Ok(None);
        };
        codec::decode(&bytes).map(Some).map_err(|e| {
            Error::codec("the worker's result could not be deserialized", e).with_pid(pid)
        })
    }

    /// The next frame from the worker; `Ok(None)` on timeout (the worker is then killed).
    fn next_frame(&mut self, deadline: Option<Instant>) -> Result<Option<Vec<u8>>> {
        let child = self.usable()?;
        let pid = child.pid();
        match child.wait_frame(deadline) {
            Ok(FrameWait::Frame(frame)) => Ok(Some(frame)),
            Ok(FrameWait::Ended(exit)) => {
                let err = ended_error(
                    ErrorKind::Exited,
                    "the worker process died during the call: it",
                    pid,
                    exit,
                );
                Err(self.broke(err))
            }
            Ok(FrameWait::Timeout) => {
                self.timed_out();
                Ok(None)
            }
            Err(e) if e.io_error().is_some_and(sys::is_status_lost) => Err(self.broke(
                Error::new(
                    ErrorKind::Exited,
                    "the worker process died during the call (its exit status was collected \
                     elsewhere: SIGCHLD is ignored, or something called waitpid(-1))",
                )
                .with_pid(pid),
            )),
            Err(e) => Err(self.broke(e)),
        }
    }

    /// A call's deadline passed: the worker is in the middle of it and cannot be reused.
    fn timed_out(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill_and_reap();
        }
        self.broken = Some("it was killed after a call timed out".into());
    }

    fn usable(&mut self) -> Result<&mut Child> {
        if let Some(why) = &self.broken {
            return Err(Error::new(
                ErrorKind::Disconnected,
                format!("the worker {:?} can no longer be used: {why}", self.name),
            ));
        }
        self.child
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Disconnected, "the worker was shut down"))
    }

    /// Marks the worker unusable after `err`, making sure its process is gone and reaped.
    fn broke(&mut self, err: Error) -> Error {
        if let Some(child) = &mut self.child {
            child.kill_and_reap();
        }
        self.broken = Some(err.to_string());
        err
    }

    /// A send failed: the worker is gone. Report how it ended, if it did.
    fn died(&mut self, err: Error) -> Error {
        let Some(child) = &mut self.child else {
            return err;
        };
        let pid = child.pid();
        let err = match child.wait_exit(Some(Instant::now() + Duration::from_secs(5))) {
            Ok(Some(exit)) => {
                ended_error(ErrorKind::Exited, "the worker process died: it", pid, exit)
            }
            _ => err,
        };
        self.broke(err)
    }

    /// True while the worker process runs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let mut w = multiproc::Worker::start().unwrap();
    /// assert!(w.is_alive());
    /// ```
    pub fn is_alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.poll_exit(), Ok(None)))
    }

    /// Kills the worker process (SIGKILL) and reaps it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let mut w = multiproc::Worker::start().unwrap();
    /// w.kill();
    /// assert!(!w.is_alive());
    /// ```
    pub fn kill(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill_and_reap();
        }
        self.broken.get_or_insert_with(|| "it was killed".into());
    }

    /// Asks the worker to exit and waits for it (up to 10 s, then kills it).
    ///
    /// # Errors
    /// [`ErrorKind::Exited`] / [`ErrorKind::Signaled`] if it did not exit cleanly.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// multiproc::Worker::start().unwrap().shutdown().unwrap();
    /// ```
    pub fn shutdown(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        // A worker that stopped reading cannot hold us: the send has the same deadline.
        let _ = child
            .chan
            .send_message_until(&Request::Exit, None, &[], Some(deadline));
        let pid = child.pid();
        // However the wait ends, the child is reaped or killed and reaped before we return.
        match child.wait_exit(Some(deadline)) {
            Ok(Some(sys::Exit::Code(0))) => Ok(()),
            Ok(Some(exit)) => Err(ended_error(
                ErrorKind::Exited,
                "the worker process",
                pid,
                exit,
            )),
            // It ended after being asked to; its status was collected elsewhere (SIGCHLD
            // ignored, or a waitpid(-1) in this program).
            Err(e) if e.io_error().is_some_and(sys::is_status_lost) => Ok(()),
            Ok(None) => {
                child.kill_and_reap();
                Err(Error::new(
                    ErrorKind::Exited,
                    format!("the worker did not exit within {SHUTDOWN_TIMEOUT:?} and was killed"),
                )
                .with_pid(pid))
            }
            Err(e) => {
                child.kill_and_reap();
                Err(e)
            }
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            child.kill_and_reap();
        }
    }
}
