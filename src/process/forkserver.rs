//! The forkserver start method: a small server process, started from a fresh exec of this
//! program, that forks each new child on request.
//!
//! ```text
//! parent (any number of threads)              server (one thread)          child
//!   ForkRequest + args, SCM_RIGHTS: ─────────▶  fork() ──────────────────▶  runs the call,
//!     [child's control socket, handles…]                                     talks to the parent
//!             ◀──────────────────────────── Reply::Forked { pid } + pidfd    over its own socket
//!             ◀──────────────────────────── Reply::Exited { pid, status }  (once it has reaped it)
//! ```
//!
//! - **Who can talk to the server.** Only the process that started it: the control channel is
//!   the socketpair it inherited as descriptor 0, never a named or abstract socket.
//! - **Single-threaded by construction.** The server is this executable started again, taken over
//!   before `main` (see `bootstrap`), so none of the parent's threads, and none of their locks,
//!   exist in it; it runs the preload calls, then only polls, forks and reaps.
//! - **Lifetimes.** The server dies with the parent (parent-death signal), and each child dies
//!   with the server (the same signal, set towards the server): killing either ends them all.
//!   The server reaps its children and reports each exit status; the parent keeps the reports it
//!   has not been asked for yet in a table (a detached child's report is dropped on arrival).
//! - **Ctrl-C.** The server ignores SIGINT, which a terminal sends to its whole process group:
//!   its children (which get back the disposition it had) die of it and are reported as
//!   such, instead of all dying with their server, their exit statuses lost.
//! - **Failures.** A server found dead is reaped and replaced at the next start. A start in
//!   flight when it dies fails with [`ErrorKind::Bootstrap`]; its child, if one was made, dies
//!   with the server. When the server dies, the exit statuses of its running children go with
//!   it: their `exitcode` is then inferred from what they reported, as when a status is
//!   collected elsewhere (or read directly, if this process is a subreaper and so inherited them).

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::channel::Channel;
use super::child::Child;
use super::function::Target;
use super::launch::{self, SpawnJob};
use super::protocol::Identity;
use crate::error::{Error, ErrorKind, Result};
use crate::handles::Transits;
use crate::sys::{self, Exit};

mod server;

pub(crate) use server::serve;

/// How long a start may wait for the server (including starting it) before giving up.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments up to this size go through the server with the request; larger ones go straight
/// to the child once it runs.
const EAGER_ARGS: usize = 32 * 1024;

/// What a forked child does.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ForkedJob {
    /// Run this once with the arguments that follow, sending back a result of at most this
    /// many bytes.
    Call(Target, u64),
    /// Serve worker requests.
    Worker,
}

/// Parent to server: make a child. Followed by a frame with the arguments; carries
/// `1 + handles` descriptors: the child's control socket, then the handles' descriptors.
#[derive(Debug, Serialize, Deserialize)]
struct ForkRequest {
    me: Identity,
    parent_pid: u32,
    parent_name: String,
    job: ForkedJob,
    handles: u32,
    /// The arguments come from the parent over the child's own socket (large ones: they need
    /// not pass through the server); the frame after the request is then empty.
    args_follow: bool,
}

/// Server to parent.
#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    /// The child runs; a pidfd for it is attached.
    Forked { pid: i32 },
    /// No child was made.
    Failed { threaded: bool, why: String },
    /// A child ended and was reaped.
    Exited { pid: i32, code: i32, signaled: bool },
}

struct Server {
    child: Child,
    /// Which server this is, of those this process started: a child's report can only come
    /// from the server that made it.
    generation: u64,
    /// A duplicate of the server's socket: polled by threads that wait for a report or a reply
    /// without holding the registry's lock, and written by the start whose turn it is.
    watch: Arc<OwnedFd>,
    /// Requests sent so far: the next request's ticket. The server answers each with one
    /// `Forked` or `Failed`, in order.
    sent: u64,
    /// Answers taken in so far: the ticket of the next one to arrive.
    answered: u64,
    /// Answers taken in (by whichever thread read the socket) and not yet collected by the
    /// start that waits for them, by ticket; a `Forked` with its pidfd.
    answers: HashMap<u64, (Reply, Option<OwnedFd>)>,
}

struct Registry {
    /// The process this registry belongs to (a forked child's copy is its parent's).
    owner: i32,
    server: Option<Server>,
    /// Reports not yet asked for, by server generation and pid.
    statuses: HashMap<(u64, i32), Exit>,
    /// Children whose handle is gone: their reports are dropped.
    detached: HashSet<(u64, i32)>,
    generations: u64,
    preload: Vec<(Target, Vec<u8>)>,
    /// A start is starting the server or writing its request: the others wait for their turn
    /// (on [`TURN`], never holding the lock).
    busy: bool,
}

/// The registry. Never held across a wait: a start waits for its turn, for a new server's
/// hello and for the server's answer with the lock released, so that another thread's join
/// (which reads the reports under it) keeps its deadline even when the server is stalled.
static REGISTRY: Mutex<Option<Registry>> = Mutex::new(None);

/// Signalled when a start gives up its turn.
static TURN: Condvar = Condvar::new();

/// This process's registry, made on first use (and anew in a forked child).
fn registry() -> MutexGuard<'static, Option<Registry>> {
    let mut guard = REGISTRY.lock().unwrap_or_else(|p| p.into_inner());
    let me = sys::getpid();
    if guard.as_ref().is_none_or(|r| r.owner != me) {
        // A copy made by fork describes the parent's server, which is not ours to use. It is
        // abandoned, not dropped: its descriptor numbers may have been closed in this child
        // (a safe fork keeps only what it needs) and reused for something else since.
        let preload = match guard.take() {
            Some(old) => {
                let preload = old.preload.clone();
                std::mem::forget(old);
                preload
            }
            None => Vec::new(),
        };
        *guard = Some(Registry {
            owner: me,
            server: None,
            statuses: HashMap::new(),
            detached: HashSet::new(),
            generations: 0,
            preload,
            busy: false,
        });
    }
    guard
}

fn with_registry<T>(f: impl FnOnce(&mut Registry) -> T) -> T {
    let mut guard = registry();
    match guard.as_mut() {
        Some(reg) => f(reg),
        // `registry` always leaves one in place.
        None => unreachable!("the registry was just made"),
    }
}

impl Registry {
    /// Takes in every report that has arrived, and notices a dead server.
    fn absorb(&mut self) {
        let Some(server) = &mut self.server else {
            return;
        };
        let drained = server.child.chan.drain();
        loop {
            match server.child.chan.take::<Reply>() {
                Ok(Some(reply @ Reply::Exited { .. })) => record(
                    &mut self.statuses,
                    &mut self.detached,
                    server.generation,
                    reply,
                ),
                Ok(Some(answer)) => {
                    // A `Forked` carries its pidfd, the first descriptor not yet taken (the
                    // server attaches nothing else).
                    let pidfd = match answer {
                        Reply::Forked { .. } => server.child.chan.take_first_fd(),
                        _ => None,
                    };
                    server.answers.insert(server.answered, (answer, pidfd));
                    server.answered += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    // Gibberish from the server: it is no longer trusted.
                    self.lose_server();
                    return;
                }
            }
        }
        let dead = drained.is_err()
            || server.child.chan.is_closed()
            || !matches!(server.child.poll_exit(), Ok(None));
        if dead {
            self.lose_server();
        }
    }

    fn lose_server(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.child.kill_and_reap();
            // Reports for the dead server's children will never come.
            self.detached.retain(|(g, _)| *g != server.generation);
        }
    }
}

fn record(
    statuses: &mut HashMap<(u64, i32), Exit>,
    detached: &mut HashSet<(u64, i32)>,
    generation: u64,
    reply: Reply,
) {
    if let Reply::Exited {
        pid,
        code,
        signaled,
    } = reply
        && !detached.remove(&(generation, pid))
    {
        let exit = if signaled {
            Exit::Signal(code)
        } else {
            Exit::Code(code)
        };
        statuses.insert((generation, pid), exit);
    }
}

/// A start's turn to start the server or write to it (see [`Registry::busy`]); given back on
/// drop, however the start ends.
struct Turn;

impl Turn {
    /// Waits for the turn until `deadline`; `None` if another start kept it that long.
    fn take(deadline: Instant) -> Option<Turn> {
        let mut guard = registry();
        loop {
            let reg = guard.as_mut()?;
            if !reg.busy {
                reg.busy = true;
                return Some(Turn);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            guard = TURN
                .wait_timeout(guard, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        with_registry(|reg| reg.busy = false);
        TURN.notify_one();
    }
}

/// The running server's socket, generation and pid, and a ticket for one request: the server
/// is started first if there is none (with the lock released: only `_turn`'s holder does it).
fn server_for_request(_turn: &Turn, parent_name: &str) -> Result<(Arc<OwnedFd>, u64, u32, u64)> {
    let preload = with_registry(|reg| {
        reg.absorb();
        reg.server.is_none().then(|| reg.preload.clone())
    });
    if let Some(preload) = preload {
        let me = Identity {
            name: "ForkServer".to_string(),
            path: Vec::new(),
        };
        let mut child = launch::spawn(me, parent_name.to_string(), SpawnJob::Forkserver(preload))?;
        let watch = match sys::dup_cloexec(child.chan.socket()) {
            Ok(watch) => Arc::new(watch),
            Err(e) => {
                child.kill_and_reap();
                return Err(Error::io("cannot duplicate the forkserver's socket", e));
            }
        };
        with_registry(|reg| {
            reg.generations += 1;
            reg.server = Some(Server {
                child,
                generation: reg.generations,
                watch,
                sent: 0,
                answered: 0,
                answers: HashMap::new(),
            });
        });
    }
    with_registry(|reg| match reg.server.as_mut() {
        Some(server) => {
            let ticket = server.sent;
            server.sent += 1;
            Ok((
                server.watch.clone(),
                server.generation,
                server.child.pid(),
                ticket,
            ))
        }
        // Only the holder of the turn starts or replaces a server, and a server found dead
        // is dropped only by `absorb`, which ran above.
        None => Err(Error::new(
            ErrorKind::Bootstrap,
            "the forkserver ended as soon as it had started",
        )),
    })
}

/// Drops the server of `generation` (stalled, or its stream broken), if it is still the one.
fn lose_server_of(generation: u64) {
    with_registry(|reg| {
        if reg
            .server
            .as_ref()
            .is_some_and(|s| s.generation == generation)
        {
            reg.lose_server();
        }
    });
}

/// Has the forkserver (started now if needed) fork a child that runs `job`.
///
/// The registry's lock is only held for moments: the start waits for its turn, for a new
/// server, for its request to be written and for the answer without it, so that a stalled
/// server holds up the starts (each until its own deadline) and never another thread's join.
pub(crate) fn start(
    me: Identity,
    parent_name: String,
    job: ForkedJob,
    args: Vec<u8>,
    fds: Vec<OwnedFd>,
    transits: Transits,
) -> Result<Child> {
    launch::ensure_initialized()?;
    let deadline = Instant::now() + START_TIMEOUT;
    let (ours, theirs) =
        sys::stream_socketpair().map_err(|e| Error::io("cannot create the control socket", e))?;
    // Handles that want to know their receiver are told before the child can decode them: their
    // arguments follow once the child's pid is known.
    let args_follow = args.len() > EAGER_ARGS || !transits.is_empty();
    let request = ForkRequest {
        me,
        parent_pid: sys::getpid() as u32,
        parent_name: parent_name.clone(),
        job,
        handles: fds.len() as u32,
        args_follow,
    };
    let mut passed = Vec::with_capacity(1 + fds.len());
    passed.push(theirs);
    passed.extend(fds);

    let Some(turn) = Turn::take(deadline) else {
        return Err(Error::new(
            ErrorKind::Bootstrap,
            format!(
                "another start kept the forkserver busy for {START_TIMEOUT:?} (the server is \
                 stalled or starting slowly)"
            ),
        ));
    };
    let (watch, generation, server_pid, ticket) = server_for_request(&turn, &parent_name)?;
    let died = |how: String| -> Error {
        Error::new(
            ErrorKind::Bootstrap,
            format!(
                "the forkserver (pid {server_pid}) {how} while starting the child; the next \
                 start will start a new server"
            ),
        )
    };
    let eager: &[u8] = if args_follow { &[] } else { &args };
    // Written with the turn held (requests must not interleave), the lock released.
    let sent = super::channel::send_message_on(
        watch.as_fd(),
        &request,
        Some(eager),
        &passed,
        Some(deadline),
    );
    drop(turn);
    // Only the server (and then the child) holds the child's end now.
    drop(passed);
    if let Err(e) = sent {
        lose_server_of(generation);
        return Err(died(format!("stopped reading ({e})")));
    }
    let (answer, pidfd) = loop {
        let answer = with_registry(|reg| {
            reg.absorb();
            match reg.server.as_mut().filter(|s| s.generation == generation) {
                Some(server) => Ok(server.answers.remove(&ticket)),
                None => Err(()),
            }
        });
        match answer {
            Ok(Some(answer)) => break answer,
            Ok(None) => {}
            Err(()) => return Err(died("ended or sent garbage".into())),
        }
        let now = Instant::now();
        if now >= deadline {
            lose_server_of(generation);
            return Err(died(format!("did not answer within {START_TIMEOUT:?}")));
        }
        // Another thread may take the answer in for us (a join reads the server's reports):
        // look again soon rather than wait for data that may already be gone.
        let until = deadline.min(now + Duration::from_millis(10));
        sys::wait_fd(watch.as_fd(), sys::POLLIN, Some(until))
            .map_err(|e| Error::io("waiting for the forkserver failed", e))?;
    };
    match answer {
        Reply::Forked { pid } => {
            let Some(pidfd) = pidfd else {
                lose_server_of(generation);
                return Err(died("sent no pidfd".into()));
            };
            let mut child = Child::new_remote(pid, pidfd, generation, Channel::new(ours));
            transits.handed_to(pid);
            if args_follow
                && let Err(e) = child
                    .chan
                    .send_bytes_with_fds_until(&args, &[], Some(deadline))
            {
                child.kill_and_reap();
                return Err(Error::new(
                    ErrorKind::Bootstrap,
                    format!("the child did not read its arguments: {e}"),
                )
                .with_pid(pid as u32));
            }
            Ok(child)
        }
        Reply::Failed { threaded, why } => {
            let kind = if threaded {
                ErrorKind::ThreadedFork
            } else {
                ErrorKind::Io
            };
            Err(Error::new(
                kind,
                format!("the forkserver could not fork: {why}"),
            ))
        }
        // `absorb` records reports; it never files one as an answer.
        Reply::Exited { .. } => Err(died("sent a report as an answer".into())),
    }
}

/// How the forkserver's child `pid` ended, waiting until `deadline` (`None`: as long as it
/// takes) for it to end and for the report. `ECHILD` when the report is lost with the server.
pub(crate) fn exit_status(
    pid: i32,
    pidfd: BorrowedFd<'_>,
    generation: u64,
    deadline: Option<Instant>,
) -> std::io::Result<Option<Exit>> {
    loop {
        let ended = sys::wait_fd(pidfd, sys::POLLIN, Some(Instant::now()))?;
        let watch = with_registry(|reg| {
            reg.absorb();
            if let Some(exit) = reg.statuses.remove(&(generation, pid)) {
                return Err(Ok(Some(exit)));
            }
            match reg.server.as_ref().filter(|s| s.generation == generation) {
                Some(server) => Ok(Some(server.watch.clone())),
                // The report died with the server. A subreaper inherited the child: reap it.
                None if ended => match sys::wait_pidfd(pidfd, false) {
                    Ok(Some(exit)) => Err(Ok(Some(exit))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(Err(e)),
                },
                None => Ok(None),
            }
        });
        let watch = match watch {
            Ok(watch) => watch,
            Err(answer) => return answer,
        };
        let now = Instant::now();
        if deadline.is_some_and(|d| d <= now) {
            return Ok(None);
        }
        // Ended: the report is on its way, and another thread may take it in for us, so look
        // again soon. Running: wait for the end.
        let until = if ended {
            let soon = now + Duration::from_millis(10);
            Some(deadline.map_or(soon, |d| d.min(soon)))
        } else {
            deadline
        };
        let mut fds = Vec::with_capacity(1);
        match (&watch, ended) {
            (_, false) => fds.push(sys::pollfd(pidfd, sys::POLLIN)),
            (Some(watch), true) => fds.push(sys::pollfd(watch.as_fd(), sys::POLLIN)),
            // A subreaper waiting for the orphan to be handed over.
            (None, true) => {}
        }
        if fds.is_empty() {
            std::thread::sleep(Duration::from_millis(1));
        } else {
            sys::poll(&mut fds, until)?;
        }
    }
}

/// The handle on the forkserver's child `pid` is gone: drop its report when it comes.
pub(crate) fn forget(pid: i32, generation: u64) {
    with_registry(|reg| {
        reg.absorb();
        let alive = reg
            .server
            .as_ref()
            .is_some_and(|s| s.generation == generation);
        if reg.statuses.remove(&(generation, pid)).is_none() && alive {
            reg.detached.insert((generation, pid));
        }
    });
}

/// Has the forkserver run `f(arg)` once when it starts, before it forks any child (Python's
/// `set_forkserver_preload`): children then start with whatever it set up — loaded tables,
/// warmed caches — already in memory. Applies to servers started afterwards (see
/// [`stop_forkserver`] to restart a running one); calls run in the order they were added.
///
/// A preload call that panics or fails is reported on stderr and skipped. It must not leave
/// threads running: a server with more than one thread refuses to fork (each start then fails
/// with [`ErrorKind::ThreadedFork`]).
///
/// # Errors
/// [`ErrorKind::Codec`] if `arg` does not serialize or contains a handle;
/// [`ErrorKind::BuildMismatch`] if `f` is not in the main executable.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Process, StartMethod};
///
/// fn warm_up(entries: usize) {
///     // e.g. build a lookup table that every child reads
///     std::hint::black_box(vec![0u8; entries]);
/// }
/// fn work(x: u32) -> u32 { x + 1 }
///
/// multiproc::init();
/// multiproc::add_forkserver_preload(warm_up, 1 << 20).unwrap();
/// let mut p = Process::new(work, 1).with_start_method(StartMethod::Forkserver);
/// p.start().unwrap();
/// assert_eq!(p.join().unwrap(), 2);
/// ```
pub fn add_forkserver_preload<A, R>(f: fn(A) -> R, arg: A) -> Result<()>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    let target = Target::of(f)?;
    let (args, fds, transits) = crate::handles::encode_with_handles(&arg)
        .map_err(|e| Error::codec("the preload call's argument", e))?;
    if !fds.is_empty() || !transits.is_empty() {
        return Err(Error::new(
            ErrorKind::Codec,
            "a preload call cannot take handles: the server outlives them",
        ));
    }
    with_registry(|reg| reg.preload.push((target, args)));
    Ok(())
}

/// The forkserver's pid, if it runs.
///
/// # Examples
///
/// ```
/// // Nothing has used the forkserver in this process yet.
/// assert_eq!(multiproc::forkserver_pid(), None);
/// ```
pub fn forkserver_pid() -> Option<u32> {
    with_registry(|reg| {
        reg.absorb();
        reg.server.as_ref().map(|s| s.child.pid())
    })
}

/// Ends the forkserver, if it runs (the next forkserver start makes a new one). The children
/// it is running end with it, killed; their exit statuses are lost with it (see
/// [`Process::exitcode`](crate::Process::exitcode) for what is reported then).
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Process, StartMethod};
/// fn id(x: u8) -> u8 { x }
/// multiproc::init();
/// let mut p = Process::new(id, 1).with_start_method(StartMethod::Forkserver);
/// p.start().unwrap();
/// p.join().unwrap();
/// multiproc::stop_forkserver();
/// assert_eq!(multiproc::forkserver_pid(), None);
/// ```
pub fn stop_forkserver() {
    with_registry(Registry::lose_server);
}
