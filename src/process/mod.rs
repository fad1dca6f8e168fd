//! Child processes: [`Process`], start methods, and who-am-I functions.

use crate::atomic::Ordering;
use std::marker::PhantomData;
use std::sync::atomic::AtomicU32;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

mod bootstrap;
mod channel;
mod child;
mod error;
mod finished;
mod forkserver;
mod function;
mod identity;
mod info;
mod launch;
mod panics;
mod protocol;
mod service;
mod worker;

pub use bootstrap::init;
pub use error::{CallTimeoutError, JoinTimeoutError, TryJoinError};
pub use forkserver::{add_forkserver_preload, forkserver_pid, stop_forkserver};
pub use info::{ProcessInfo, current_process, parent_process};
pub use worker::Worker;

// For the pool engine (`pool/`): how a worker process runs one task and reports it.
pub(crate) use function::{CallError, Target};
pub(crate) use panics::payload_text;
pub(crate) use protocol::{Outcome, Ran};

use child::Child;
use finished::Finished;
use function::Call;
use launch::{ForkJob, SpawnJob};
use protocol::Identity;

use crate::codec::{self, CodecError};
use crate::error::{Error, ErrorKind, Result};
use crate::sys::{self, Exit};

/// How a child process is created.
///
/// # Examples
///
/// ```
/// use multiproc::StartMethod;
/// assert_eq!(StartMethod::default(), StartMethod::Spawn);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StartMethod {
    /// Run this program's executable again and send it the function and arguments: safe in a
    /// multi-threaded program, about one `posix_spawn` plus an exec. The default.
    #[default]
    Spawn,
    /// Copy this process with `fork()`: cheaper, and the child sees the parent's memory as it
    /// was, but refused (with [`ErrorKind::ThreadedFork`]) unless this process has one thread
    /// (multiproc's own service thread does not count: it is parked outside every lock while
    /// the fork is made), because a lock held by another thread at the moment of the fork stays
    /// locked forever in the child. The child keeps stdin, stdout, stderr and the handles
    /// passed in its arguments; every other descriptor is closed in it, as a spawned child never
    /// gets them. [`Process::new_fork_unchecked`] lifts the thread check for callers who accept
    /// its contract.
    Fork,
    /// Ask the forkserver to fork the child: safe in a multi-threaded program, like spawn, and
    /// nearly as cheap as a fork. The server is a small single-threaded process, started from a
    /// fresh exec of this program on first use, that lives until this process ends (or
    /// [`stop_forkserver`]). It runs no code of `main`: children see the state the program has
    /// before `main` (and after [`add_forkserver_preload`] calls), not the parent's memory.
    /// The child is killed when this process ends and when the server is killed; its
    /// `exitcode` is the one the server reports. A start in flight when the server dies fails
    /// with [`ErrorKind::Bootstrap`]; the next start starts a new server.
    Forkserver,
}

/// Counts the children this process has made, for default names (Python's `_identity`).
static CHILD_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A forked child starts its own count, as its name's path shows.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn reset_child_counter() {
    CHILD_COUNTER.store(0, Ordering::Relaxed);
}

/// This process's identity path: empty in the main process.
fn own_path() -> Vec<u32> {
    identity::child_identity()
        .map(|c| c.me.path.clone())
        .unwrap_or_default()
}

/// A fresh identity for a new child, named `<prefix>-<path>` (e.g. `Process-2:1`).
fn next_identity(prefix: &str) -> Identity {
    let mut path = own_path();
    path.push(CHILD_COUNTER.fetch_add(1, Ordering::Relaxed) + 1);
    let joined: Vec<String> = path.iter().map(u32::to_string).collect();
    Identity {
        name: format!("{prefix}-{}", joined.join(":")),
        path,
    }
}

/// What a not-yet-started process will run.
enum Job {
    Call(Result<Call>),
    Closure(Box<dyn FnOnce() -> std::result::Result<Vec<u8>, CodecError> + Send>),
}

/// Where a process is in its life.
enum State {
    Created(Job),
    /// Between taking the job and having a child (only if `start` failed).
    Failed,
    Running(Child),
    Finished(Finished),
}

/// A function running in a child process, like Python's `multiprocessing.Process` — and, like
/// `std::thread::JoinHandle`, it hands back the function's return value.
///
/// Make one with [`Process::new`] from a function `fn(A) -> R` (a plain function or a closure
/// that captures nothing) and its argument `A`; both `A` and `R` cross the process boundary with
/// serde. Then [`start`](Self::start) it and [`join`](Self::join) it.
///
/// # Dropping a `Process`
/// - A child that has ended is reaped; nothing is left behind.
/// - A running **daemon** child (see [`with_daemon`](Self::with_daemon)) is killed (SIGKILL) and
///   reaped.
/// - A running **non-daemon** child is detached: it runs to completion, and an internal thread
///   reaps it when it ends, so it never lingers as a zombie. Its result is discarded.
///
/// Whatever the flag, every child is killed when its parent process ends, even by SIGKILL
/// (the kernel's parent-death signal; unlike Python, a parent never waits at exit for children it
/// did not join, and never leaves orphans). Join the children you want to finish.
///
/// # Errors and outcomes
/// [`join`](Self::join) returns the value, or an [`Error`] whose kind says what happened:
/// [`Panicked`](ErrorKind::Panicked) (with the message and location; exit code 1),
/// [`Exited`](ErrorKind::Exited) (the child called `std::process::exit` in the function),
/// [`Signaled`](ErrorKind::Signaled) (killed: [`exitcode`](Self::exitcode) is minus the signal,
/// as in Python).
///
/// # Examples
///
/// ```no_run
/// use multiproc::Process;
///
/// fn add_up(range: (u64, u64)) -> u64 {
///     (range.0..range.1).sum()
/// }
///
/// fn main() -> Result<(), multiproc::Error> {
///     multiproc::init();
///     let mut p = Process::new(add_up, (0, 1_000)).with_name("adder");
///     p.start()?;
///     assert_eq!(p.join()?, 499_500);
///     assert_eq!(p.exitcode(), Some(0));
///     Ok(())
/// }
/// ```
pub struct Process<R> {
    name: String,
    identity: Identity,
    daemon: bool,
    method: StartMethod,
    /// The largest encoded result the child may send back.
    max_result: u64,
    state: State,
    _result: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Process<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Created(_) => "created",
            State::Failed => "failed to start",
            State::Running(_) => "started",
            State::Finished(_) => "finished",
        };
        f.debug_struct("Process")
            .field("name", &self.name)
            .field("pid", &self.pid())
            .field("daemon", &self.daemon)
            .field("state", &state)
            .finish()
    }
}

impl<R> Process<R> {
    /// A process that will run `f(arg)`, named `Process-N`, non-daemon, with the spawn method.
    ///
    /// The argument is serialized here (what the child gets is `arg` as it is now); a
    /// serialization error is reported by [`start`](Self::start).
    ///
    /// # Examples
    ///
    /// ```
    /// fn greet(who: String) -> String {
    ///     format!("hello {who}")
    /// }
    /// let p = multiproc::Process::new(greet, "world".to_string());
    /// assert!(p.name().starts_with("Process-"));
    /// assert_eq!(p.pid(), None);
    /// ```
    pub fn new<A>(f: fn(A) -> R, arg: A) -> Process<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Process::with_job(Job::Call(Call::new(f, &arg)))
    }

    /// A process that will run the closure `f` in a forked copy of this process, even if this
    /// process has several threads.
    ///
    /// The closure is not serialized: the child is a copy of this process and finds it in
    /// memory. Its result is serialized back.
    ///
    /// The child is a copy of the thread that forks it, alone: every other thread of this
    /// process is absent from it, and any lock one of them held at the moment of the fork stays
    /// locked there forever. multiproc's own code in the child — before and after `f` — takes
    /// no such lock: it records the child's identity lock-free, uses the panic hook installed by
    /// the parent, sends the result with plain system calls, and ends with `_exit` (no exit
    /// handlers, no destructors of statics, and stdout and stderr are not flushed).
    ///
    /// # Safety
    /// The caller guarantees that `f`, and everything it calls, is sound in such a copy:
    /// - it acquires no lock that another thread of this process could hold at the moment of
    ///   [`start`](Self::start), and reads no data another thread could be half-way through
    ///   updating. This includes `Mutex`es and `RwLock`s of your code and of libraries, std's
    ///   stdout and stderr (`print!`, `println!`, `eprintln!`, `dbg!`; write to descriptor 1 or
    ///   2 directly instead), and the environment (`std::env::var` takes a lock that
    ///   `set_var` holds);
    /// - the memory allocator is fork-safe (glibc's and musl's are; so is any allocator that
    ///   resets its locks in a `pthread_atfork` child handler) — multiproc's own code allocates;
    /// - if `f` may panic, no other thread is inside `std::panic::set_hook` or `take_hook` at
    ///   the moment of the fork (a panic reads the hook under std's lock). The panic is caught
    ///   and reported by [`join`](Self::join); the child writes its message to stderr with one
    ///   raw `write(2)` and does not run the panic hook.
    ///
    /// What `f` captures is moved into the child's copy and dropped there; the parent's copy is
    /// dropped when `start` returns. The child keeps every descriptor of this process (a
    /// closure may capture any of them): a [`Connection`](crate::Connection) end it does not
    /// need stays open in the child, and its peer sees [`Disconnected`](ErrorKind::Disconnected)
    /// only once the child has ended too. The safe [`StartMethod::Fork`] has no such caveat:
    /// its child keeps only stdio and the handles passed as arguments.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// let data = vec![1u64, 2, 3];
    /// // SAFETY: the closure sums a vector it owns: it takes no lock and does not print.
    /// let mut p = unsafe { multiproc::Process::new_fork_unchecked(move || data.iter().sum::<u64>()) };
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 6);
    /// ```
    pub unsafe fn new_fork_unchecked<F>(f: F) -> Process<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Serialize,
    {
        let job = Job::Closure(Box::new(move || codec::encode(&f())));
        let mut p = Process::with_job(job);
        p.method = StartMethod::Fork;
        p
    }

    fn with_job(job: Job) -> Process<R> {
        let identity = next_identity("Process");
        Process {
            name: identity.name.clone(),
            identity,
            daemon: false,
            method: StartMethod::Spawn,
            max_result: codec::MAX_FRAME_LIMIT as u64,
            state: State::Created(job),
            _result: PhantomData,
        }
    }

    /// Sets the name (Python's `name`); it has no effect on the OS.
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let p = multiproc::Process::new(id, 1).with_name("pro-0");
    /// assert_eq!(p.name(), "pro-0");
    /// ```
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self.identity.name = self.name.clone();
        self
    }

    /// Sets the daemon flag: a daemon child is killed when its `Process` is dropped; a
    /// non-daemon child is detached (see the type's docs).
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// let p = multiproc::Process::new(id, 1).with_daemon(true);
    /// assert!(p.is_daemon());
    /// ```
    pub fn with_daemon(mut self, daemon: bool) -> Self {
        self.daemon = daemon;
        self
    }

    /// Sets the largest result, in encoded bytes, that the child may send back; by default
    /// the most one frame can carry ([`MAX_FRAME_LIMIT`](crate::codec::MAX_FRAME_LIMIT),
    /// which is also the ceiling of what can be set).
    ///
    /// A larger result is not sent: the child reports it, and [`join`](Self::join) fails with
    /// [`ErrorKind::Codec`] (the child's exit code is 1), as for a result that does not
    /// serialize. Use it to bound the memory a join may take.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{ErrorKind, Process};
    /// fn big(n: usize) -> Vec<u8> { vec![7; n] }
    /// multiproc::init();
    /// let mut p = Process::new(big, 1 << 20).with_max_result(4096);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap_err().kind(), ErrorKind::Codec);
    /// ```
    pub fn with_max_result(mut self, bytes: usize) -> Self {
        self.max_result = (bytes as u64).min(codec::MAX_FRAME_LIMIT as u64);
        self
    }

    /// Chooses how the child is created.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Process, StartMethod};
    /// fn id(x: u8) -> u8 { x }
    /// let p = Process::new(id, 1).with_start_method(StartMethod::Fork);
    /// assert_eq!(p.start_method(), StartMethod::Fork);
    /// ```
    pub fn with_start_method(mut self, method: StartMethod) -> Self {
        if !matches!(self.state, State::Created(Job::Closure(_))) {
            self.method = method;
        }
        self
    }

    /// The process's name.
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// assert!(multiproc::Process::new(id, 1).name().starts_with("Process-"));
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether this is a daemon process.
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// assert!(!multiproc::Process::new(id, 1).is_daemon());
    /// ```
    pub fn is_daemon(&self) -> bool {
        self.daemon
    }

    /// The start method that [`start`](Self::start) will use (or used).
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// assert_eq!(multiproc::Process::new(id, 1).start_method(), multiproc::StartMethod::Spawn);
    /// ```
    pub fn start_method(&self) -> StartMethod {
        self.method
    }

    /// The child's pid once started (`None` before).
    ///
    /// # Examples
    ///
    /// ```
    /// fn id(x: u8) -> u8 { x }
    /// assert_eq!(multiproc::Process::new(id, 1).pid(), None);
    /// ```
    pub fn pid(&self) -> Option<u32> {
        match &self.state {
            State::Running(c) => Some(c.pid()),
            State::Finished(f) => Some(f.pid),
            _ => None,
        }
    }

    /// A handle for [`wait`](crate::wait) that becomes ready when the child ends (Python's
    /// `sentinel`); `None` before `start`.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(id, 1);
    /// assert!(p.sentinel().is_none());
    /// p.start().unwrap();
    /// multiproc::wait(&[&p.sentinel().unwrap()], None).unwrap();
    /// assert_eq!(p.join().unwrap(), 1);
    /// ```
    pub fn sentinel(&self) -> Option<crate::Sentinel<'_>> {
        match &self.state {
            State::Running(c) => Some(crate::Sentinel {
                pidfd: Some(c.pidfd()),
            }),
            State::Finished(_) => Some(crate::Sentinel { pidfd: None }),
            _ => None,
        }
    }

    /// Starts the child. It returns once the child is running (for spawn: once it has checked
    /// that it runs the same build and is about to call the function).
    ///
    /// # Errors
    /// - [`ErrorKind::AlreadyStarted`] on a second call;
    /// - [`ErrorKind::NotInitialized`] if [`init`] was not called in this process (spawn);
    /// - [`ErrorKind::Codec`] if the argument could not be serialized;
    /// - [`ErrorKind::ThreadedFork`] for the fork method in a multi-threaded process;
    /// - [`ErrorKind::BuildMismatch`] if the child does not run the same build, or the function
    ///   is not in the main executable;
    /// - [`ErrorKind::Bootstrap`] if the child ended or hung before it was running, or (forkserver)
    ///   if the server died or stopped answering during the start;
    /// - [`ErrorKind::Io`] if the OS refused to create it.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(id, 7);
    /// p.start().unwrap();
    /// assert_eq!(p.start().unwrap_err().kind(), multiproc::ErrorKind::AlreadyStarted);
    /// # p.join().unwrap();
    /// ```
    pub fn start(&mut self) -> Result<()> {
        let job = match std::mem::replace(&mut self.state, State::Failed) {
            State::Created(job) => job,
            other => {
                self.state = other;
                return Err(Error::new(
                    ErrorKind::AlreadyStarted,
                    format!("cannot start process {:?} twice", self.name),
                ));
            }
        };
        let parent_name = current_process().name;
        let max_result = self.max_result;
        let job = match job {
            Job::Call(call) => Job::Call(call.map(|call| Call { max_result, ..call })),
            closure => closure,
        };
        let started = match (job, self.method) {
            (Job::Call(call), StartMethod::Spawn) => call.and_then(|call| {
                launch::spawn(self.identity.clone(), parent_name, SpawnJob::Call(call))
            }),
            (Job::Call(call), StartMethod::Fork) => call.and_then(|call| {
                launch::fork(
                    self.identity.clone(),
                    parent_name,
                    ForkJob::Call(call),
                    true,
                )
            }),
            (Job::Call(call), StartMethod::Forkserver) => call.and_then(|call| {
                forkserver::start(
                    self.identity.clone(),
                    parent_name,
                    forkserver::ForkedJob::Call(call.target, call.max_result),
                    call.args,
                    call.fds,
                    call.transits,
                )
            }),
            (Job::Closure(f), _) => launch::fork(
                self.identity.clone(),
                parent_name,
                ForkJob::Closure(f, max_result),
                false,
            ),
        };
        self.state = State::Running(started?);
        Ok(())
    }

    /// Waits for the child to end and returns what its function returned.
    ///
    /// Reads the child's output while it waits, so a child sending a large result never
    /// blocks on its parent (the deadlock of Python's "joining processes that use queues").
    ///
    /// # Errors
    /// [`ErrorKind::NotStarted`]; [`ErrorKind::ResultTaken`] if an earlier join already returned
    /// the value; otherwise how the child failed: see the type's docs.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn double(x: i32) -> i32 { 2 * x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(double, 21);
    /// p.start().unwrap();
    /// assert_eq!(p.join().unwrap(), 42);
    /// ```
    pub fn join(&mut self) -> Result<R>
    where
        R: DeserializeOwned,
    {
        match self.join_until(None)? {
            Some(r) => Ok(r),
            // Without a deadline the wait only ends when the child has ended.
            None => Err(Error::new(
                ErrorKind::Io,
                "join returned before the child ended",
            )),
        }
    }

    /// Waits at most `timeout` for the child to end, and returns what its function returned.
    /// A timeout too large for an `Instant` means forever.
    ///
    /// # Errors
    /// [`JoinTimeoutError::Timeout`] if the child is still running at the deadline (it is left
    /// running and can be joined again); [`JoinTimeoutError::Failed`] with the error
    /// [`join`](Self::join) would have returned.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::JoinTimeoutError;
    /// fn nap(ms: u64) { std::thread::sleep(Duration::from_millis(ms)) }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(nap, 10_000);
    /// p.start().unwrap();
    /// let early = p.join_timeout(Duration::from_millis(50));
    /// assert!(matches!(early, Err(JoinTimeoutError::Timeout)));
    /// assert!(p.is_alive());
    /// p.kill().unwrap();
    /// ```
    pub fn join_timeout(&mut self, timeout: Duration) -> std::result::Result<R, JoinTimeoutError>
    where
        R: DeserializeOwned,
    {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.join_deadline(deadline),
            None => self.join().map_err(JoinTimeoutError::Failed),
        }
    }

    /// Like [`join_timeout`](Self::join_timeout), with the deadline as an instant.
    ///
    /// # Errors
    /// As [`join_timeout`](Self::join_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(id, 3);
    /// p.start().unwrap();
    /// assert_eq!(p.join_deadline(Instant::now() + Duration::from_secs(60)).unwrap(), 3);
    /// ```
    pub fn join_deadline(&mut self, deadline: Instant) -> std::result::Result<R, JoinTimeoutError>
    where
        R: DeserializeOwned,
    {
        match self.join_until(Some(deadline)) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(JoinTimeoutError::Timeout),
            Err(e) => Err(JoinTimeoutError::Failed(e)),
        }
    }

    /// Like [`join`](Self::join) but never waits.
    ///
    /// # Errors
    /// [`TryJoinError::Running`] while the child runs; [`TryJoinError::Failed`] with the error
    /// [`join`](Self::join) would have returned.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::TryJoinError;
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(id, 1);
    /// p.start().unwrap();
    /// let value = loop {
    ///     match p.try_join() {
    ///         Ok(v) => break v,
    ///         Err(TryJoinError::Running) => std::thread::yield_now(),
    ///         Err(TryJoinError::Failed(e)) => panic!("{e}"),
    ///     }
    /// };
    /// assert_eq!(value, 1);
    /// ```
    pub fn try_join(&mut self) -> std::result::Result<R, TryJoinError>
    where
        R: DeserializeOwned,
    {
        match self.join_until(Some(Instant::now())) {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(TryJoinError::Running),
            Err(e) => Err(TryJoinError::Failed(e)),
        }
    }

    /// The one join: `Ok(None)` while the child runs at `deadline` (`None`: forever).
    fn join_until(&mut self, deadline: Option<Instant>) -> Result<Option<R>>
    where
        R: DeserializeOwned,
    {
        self.wait_and_finish(deadline)?;
        match &mut self.state {
            State::Created(_) | State::Failed => Err(Error::new(
                ErrorKind::NotStarted,
                format!("process {:?} was never started", self.name),
            )),
            State::Running(_) => Ok(None),
            State::Finished(f) => f.result::<R>().map(Some),
        }
    }

    /// Moves a child that has ended to `Finished`, decoding its report. `exit` is `None` when
    /// its status was collected elsewhere (SIGCHLD ignored, a foreign `waitpid(-1)`).
    fn finish(&mut self, exit: Option<Exit>) {
        if let State::Running(child) = &mut self.state {
            self.state = State::Finished(Finished::from_child(child, exit));
        }
    }

    /// Waits for the child to end (see `Child::wait_exit`) and moves it to `Finished` if it did.
    fn wait_and_finish(&mut self, deadline: Option<Instant>) -> Result<()> {
        let State::Running(child) = &mut self.state else {
            return Ok(());
        };
        match child.wait_exit(deadline) {
            Ok(None) => Ok(()),
            Ok(Some(exit)) => {
                self.finish(Some(exit));
                Ok(())
            }
            // The child has ended but its status is gone: what it sent decides.
            Err(e) if e.io_error().is_some_and(sys::is_status_lost) => {
                self.finish(None);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// True while the child runs (reaps it as soon as it has ended).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(id, 1);
    /// assert!(!p.is_alive());
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert!(!p.is_alive());
    /// ```
    pub fn is_alive(&mut self) -> bool {
        if let State::Running(child) = &mut self.state {
            // Read what has arrived so a chatty child is never blocked by our not reading.
            let _ = child.chan.drain();
            match child.poll_exit() {
                Ok(Some(exit)) => self.finish(Some(exit)),
                Err(e) if e.io_error().is_some_and(sys::is_status_lost) => self.finish(None),
                _ => {}
            }
        }
        matches!(self.state, State::Running(_))
    }

    /// Python's `exitcode`: `None` while running or before start, else the exit status, or
    /// minus the signal number if the child was killed (`-15` after `terminate`, `-9` after
    /// `kill`).
    ///
    /// If the child's status was collected by someone else (SIGCHLD ignored, or a
    /// `waitpid(-1)` elsewhere in the program), it is inferred from what the child reported — 0
    /// after a result, 1 after a panic or a codec failure — and is `None` if it reported nothing.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(id, 1);
    /// assert_eq!(p.exitcode(), None);
    /// p.start().unwrap();
    /// p.join().unwrap();
    /// assert_eq!(p.exitcode(), Some(0));
    /// ```
    pub fn exitcode(&mut self) -> Option<i32> {
        self.is_alive();
        match &self.state {
            State::Finished(f) => f.exit.map(Exit::exitcode),
            _ => None,
        }
    }

    /// Sends SIGTERM (Python's `terminate()`). The child's destructors do not run.
    ///
    /// # Errors
    /// [`ErrorKind::NotStarted`], or [`ErrorKind::Io`] if the signal could not be sent. A child
    /// that has already ended is not an error.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn spin(_: ()) { loop { std::hint::spin_loop() } }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(spin, ());
    /// p.start().unwrap();
    /// p.terminate().unwrap();
    /// let _ = p.join();
    /// assert_eq!(p.exitcode(), Some(-15));
    /// ```
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(sys::SIGTERM)
    }

    /// Sends SIGKILL (Python's `kill()`).
    ///
    /// # Errors
    /// As [`terminate`](Self::terminate).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn spin(_: ()) { loop { std::hint::spin_loop() } }
    /// multiproc::init();
    /// let mut p = multiproc::Process::new(spin, ());
    /// p.start().unwrap();
    /// p.kill().unwrap();
    /// assert_eq!(p.join().unwrap_err().signal(), Some(9));
    /// ```
    pub fn kill(&mut self) -> Result<()> {
        self.signal(sys::SIGKILL)
    }

    fn signal(&mut self, signal: i32) -> Result<()> {
        match &mut self.state {
            State::Running(child) => child.signal(signal),
            State::Finished(_) => Ok(()),
            State::Created(_) | State::Failed => Err(Error::new(
                ErrorKind::NotStarted,
                format!("process {:?} was never started", self.name),
            )),
        }
    }
}

impl<R> Drop for Process<R> {
    fn drop(&mut self) {
        if let State::Running(child) = std::mem::replace(&mut self.state, State::Failed) {
            let mut child = child;
            if self.daemon {
                child.kill_and_reap();
            } else {
                child.detach();
            }
        }
    }
}
