//! Creating a child: spawn (run this executable again) or fork (copy this process).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bootstrap;
use super::channel::Channel;
use super::child::{Child, FrameWait, ended_error};
use super::function::{self, BuildId, Call, Target};
use super::protocol::{Bootstrap, CHILD_ENV, Hello, Identity, Job};
use super::service;
use super::{identity, panics};
use crate::codec::CodecError;
use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// How long a spawned child may take to start and say hello before it is killed and `start()`
/// fails. Generous: a loaded CI machine can be slow to exec a large binary.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Arguments up to this size go out with the bootstrap message, before the child's hello.
const EAGER_ARGS: usize = 32 * 1024;

/// What a spawned child should do.
pub(crate) enum SpawnJob {
    Call(Call),
    Worker,
    /// A forkserver, with the calls it runs once before it forks anything.
    Forkserver(Vec<(Target, Vec<u8>)>),
}

/// What a forked child should do.
pub(crate) enum ForkJob {
    Call(Call),
    Worker,
    /// The closure, and the largest encoded result it may send back.
    Closure(
        Box<dyn FnOnce() -> std::result::Result<Vec<u8>, CodecError> + Send>,
        u64,
    ),
}

pub(crate) fn ensure_initialized() -> Result<()> {
    bootstrap::hook_anchor();
    if bootstrap::is_initialized() {
        Ok(())
    } else {
        Err(Error::new(
            ErrorKind::NotInitialized,
            "multiproc::init() was not called: make it the first statement of main \
             (or call it at the top of the #[test] that starts processes)",
        ))
    }
}

/// Starts this executable again as a child that runs `job`.
pub(crate) fn spawn(me: Identity, parent_name: String, job: SpawnJob) -> Result<Child> {
    ensure_initialized()?;
    let build = BuildId::current()?;
    let exe = function::exe().map_err(|e| Error::io("cannot open /proc/self/exe", e))?;
    let (ours, theirs) =
        sys::stream_socketpair().map_err(|e| Error::io("cannot create the control socket", e))?;

    let mut cmd = Command::new(format!("/proc/self/fd/{}", exe.as_raw_fd()));
    let arg0 = std::env::args_os()
        .next()
        .unwrap_or_else(|| "multiproc-child".into());
    cmd.arg0(arg0)
        .args(std::env::args_os().skip(1))
        .env(CHILD_ENV, bootstrap::child_env_value())
        .stdin(Stdio::from(theirs));
    let pid = service::on_long_lived_thread(move || cmd.spawn().map(|c| c.id() as i32))
        .unwrap_or_else(|| {
            Err(std::io::Error::other(
                "the thread creating the child failed",
            ))
        })
        .map_err(|e| Error::io("cannot start the child process", e))?;
    // Our copy of `theirs` was moved into `cmd` and dropped with it: only the child holds it.
    let pidfd = pidfd_or_kill(pid)?;
    if let SpawnJob::Call(call) = &job {
        // Before the arguments are sent: the child counts as holding their handles from now.
        call.transits.handed_to(pid);
    }
    let mut child = Child::new(pid, pidfd, Channel::new(ours));
    match handshake(&mut child, build, me, parent_name, job) {
        Ok(()) => Ok(child),
        Err(e) => {
            child.kill_and_reap();
            Err(e)
        }
    }
}

fn handshake(
    child: &mut Child,
    build: BuildId,
    me: Identity,
    parent_name: String,
    job: SpawnJob,
) -> Result<()> {
    let (job, args, fds) = match job {
        SpawnJob::Call(call) => (
            Job::Call(call.target, call.max_result),
            Some(call.args),
            call.fds,
        ),
        SpawnJob::Worker => (Job::Worker, None, Vec::new()),
        SpawnJob::Forkserver(preload) => (Job::Forkserver(preload), None, Vec::new()),
    };
    let boot = Bootstrap {
        build,
        me,
        parent_name,
        job,
    };
    let pid = child.pid();
    let gone = |e: Error| -> Error {
        if e.kind() == ErrorKind::Disconnected {
            Error::new(
                ErrorKind::Bootstrap,
                "the child process ended while starting",
            )
            .with_pid(pid)
        } else {
            e
        }
    };
    // One deadline for every phase: the bootstrap message, the hello, the arguments.
    let deadline = Instant::now() + START_TIMEOUT;
    let late = |e: Error| -> Error {
        if super::channel::is_timeout(&e) {
            Error::new(
                ErrorKind::Bootstrap,
                format!("the child process did not read its arguments within {START_TIMEOUT:?}"),
            )
            .with_pid(pid)
        } else {
            gone(e)
        }
    };
    // Small arguments go with the bootstrap message, in the same system call; large ones only
    // once the child has said it is the right build and is reading.
    let eager = args.as_ref().is_some_and(|a| a.len() <= EAGER_ARGS);
    match args.as_deref().filter(|_| eager) {
        Some(a) => child
            .chan
            .send_message_until(&boot, Some(a), &fds, Some(deadline)),
        None => child
            .chan
            .send_message_until(&boot, None, &[], Some(deadline)),
    }
    .map_err(late)?;
    match child.wait_frame(Some(deadline))? {
        FrameWait::Frame(frame) => match crate::codec::decode::<Hello>(&frame) {
            Ok(Hello::Ready { .. }) => {}
            Ok(Hello::Refused(why)) => {
                return Err(Error::new(
                    ErrorKind::BuildMismatch,
                    format!("the child refused to run: {why}"),
                )
                .with_pid(pid));
            }
            Err(e) => return Err(Error::codec("the child's hello was malformed", e)),
        },
        FrameWait::Ended(exit) => {
            return Err(ended_error(
                ErrorKind::Bootstrap,
                "the child process ended before it finished starting: it",
                pid,
                exit,
            ));
        }
        FrameWait::Timeout => {
            return Err(Error::new(
                ErrorKind::Bootstrap,
                format!("the child process did not start within {START_TIMEOUT:?}"),
            )
            .with_pid(pid));
        }
    }
    if let Some(a) = args.as_ref().filter(|_| !eager) {
        child
            .chan
            .send_bytes_with_fds_until(a, &fds, Some(deadline))
            .map_err(late)?;
    }
    Ok(())
}

/// A pidfd for our new child `pid`; without one the child cannot be watched, so it is killed
/// and reaped.
fn pidfd_or_kill(pid: i32) -> Result<OwnedFd> {
    sys::pidfd_open(pid).map_err(|e| {
        let _ = sys::kill(pid, sys::SIGKILL);
        let _ = sys::waitpid(pid, true);
        Error::io("cannot open a pidfd for the child", e)
    })
}

/// Copies this process; the copy runs `job` and exits.
///
/// With `checked`, refuses unless this process has exactly one thread besides the library's own
/// service thread (which is parked outside every lock for the duration of the fork). Without
/// it, the caller has accepted the contract of `Process::new_fork_unchecked`.
pub(crate) fn fork(
    me: Identity,
    parent_name: String,
    mut job: ForkJob,
    checked: bool,
) -> Result<Child> {
    bootstrap::hook_anchor();
    let transits = match &mut job {
        ForkJob::Call(call) => std::mem::take(&mut call.transits),
        ForkJob::Closure(..) | ForkJob::Worker => Default::default(),
    };
    // In place before the copy is made: the child never has to take the panic hook's lock.
    panics::install();
    // The thread-local list a child's handles are decoded from: touched here once, so that its
    // destructor is registered in the parent (glibc takes a loader lock for that, and writes
    // pages that every child would otherwise have to copy).
    crate::handles::with_incoming(Vec::new(), || ());
    // Whatever sits in stdout's buffer would be printed twice, by us and by the copy (stderr
    // has no buffer).
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    let identity = identity::Prepared::new(me, sys::getpid() as u32, parent_name);
    let (ours, theirs) =
        sys::stream_socketpair().map_err(|e| Error::io("cannot create the control socket", e))?;
    let parent = sys::getpid();
    let ours_raw = ours.as_raw_fd();
    let forked = if checked {
        // The executable's descriptor, opened now if it was not: a forked child that starts
        // processes of its own needs it, and it survives the child's descriptor cleanup.
        let exe = function::exe().ok().map(|fd| fd.as_raw_fd());
        let (gate, owned) = service::hold_for_fork();
        // A spawned child's main thread, which only waits for the thread that runs its work.
        let owned = owned + super::bootstrap::idle_threads();
        let threads = sys::thread_count().map_err(|e| Error::io("cannot count threads", e))?;
        if threads != 1 + owned {
            return Err(Error::new(
                ErrorKind::ThreadedFork,
                format!(
                    "the fork start method needs a single-threaded process, and this one has \
                     {} threads besides multiproc's own (a forked child could deadlock on a lock \
                     that another thread held); use the spawn start method",
                    threads - owned
                ),
            ));
        }
        crate::shm::note_fork();
        // SAFETY: this process has one thread besides the service thread (and, in a spawned
        // child, its main thread, asleep in pthread_join holding no lock), and `gate` keeps
        // the service thread asleep in poll(2), holding no lock and inside no allocation, until
        // the fork is done: the child inherits no lock held by another thread. The child never returns
        // into the caller's frames (it ends in _exit), so `gate` is not released there.
        let forked = match unsafe { sys::fork() } {
            Ok(0) => run_forked(identity, parent, job, theirs, ours_raw, exe),
            other => other,
        };
        crate::shm::note_fork();
        drop(gate);
        Some(forked)
    } else {
        service::on_long_lived_thread(move || {
            crate::shm::note_fork();
            // SAFETY: the caller of the unsafe constructor took on the obligation that nothing
            // the closure does needs a lock another thread may hold; the child's own path below
            // takes none. The child never returns into the caller's frames: it ends in _exit.
            let forked = match unsafe { sys::fork() } {
                Ok(0) => run_forked(identity, parent, job, theirs, ours_raw, None),
                other => other,
            };
            crate::shm::note_fork();
            forked
            // `theirs` is dropped here in the parent: only the child holds that end now.
        })
    };
    let pid = match forked {
        Some(Ok(pid)) => {
            // The copy holds copies of this process's handles (the child itself does nothing).
            crate::handles::forked(pid);
            transits.handed_to(pid);
            pid
        }
        Some(Err(e)) => return Err(Error::io("fork failed", e)),
        None => {
            return Err(Error::io(
                "fork failed",
                std::io::Error::other("the thread that forks panicked"),
            ));
        }
    };
    let pidfd = pidfd_or_kill(pid)?;
    Ok(Child::new(pid, pidfd, Channel::new(ours)))
}

/// The forked child's life. Never returns.
///
/// Takes no lock that another thread of the parent may have held at the fork: the identity is
/// stored lock-free, the panic hook was installed by the parent, and (unchecked) stdout and
/// stderr are not flushed — the closure's own `println!` output has gone out line by line
/// already. `exe` is given for a checked fork, whose child closes every descriptor it does not
/// need; an unchecked child keeps them all (its closure may use any of them).
fn run_forked(
    identity: identity::Prepared,
    parent: i32,
    job: ForkJob,
    theirs: OwnedFd,
    ours: RawFd,
    exe: Option<RawFd>,
) -> ! {
    // The fork is over in this copy: claims made from now on are this child's own.
    crate::shm::note_fork();
    let checked = !matches!(job, ForkJob::Closure(..));
    // The parent's end, copied by fork: closed so that our exit is seen as end of stream (by
    // the descriptor cleanup below in a checked child, which keeps only what it needs).
    if !checked {
        sys::close_raw(ours);
    }
    let _ = sys::set_parent_death_signal(sys::SIGKILL);
    if sys::getppid() != parent {
        sys::exit_immediately(3);
    }
    if checked {
        let fds: &[OwnedFd] = match &job {
            ForkJob::Call(call) => &call.fds,
            _ => &[],
        };
        // Only what a spawned child would have: stdio, the control socket, the handles passed
        // as arguments, and the executable's descriptor (kept open for the crate's use). The
        // parent's end of the socket is not kept: closing it makes our exit an end of stream.
        // On the stack: every heap page written here would be copied for this child; and
        // small when it can be, so that filling it calls no `memset` (a code page to fault in).
        let mut few = [-1 as RawFd; 8];
        let mut many;
        let keep: &mut [RawFd] = if fds.len() + 2 <= few.len() {
            &mut few
        } else {
            many = [-1 as RawFd; sys::MAX_FDS_PER_MESSAGE + 2];
            &mut many
        };
        keep[0] = theirs.as_raw_fd();
        keep[1] = exe.unwrap_or(-1);
        for (slot, fd) in keep[2..].iter_mut().zip(fds) {
            *slot = fd.as_raw_fd();
        }
        let used = 2 + fds.len().min(sys::MAX_FDS_PER_MESSAGE);
        debug_assert!(!keep[..used].contains(&ours));
        sys::close_all_except(&mut keep[..used]);
    }
    panics::capture_in_child(!checked);
    super::reset_child_counter();
    identity.publish();
    let mut chan = Channel::new(theirs);
    let code = match job {
        ForkJob::Worker => {
            bootstrap::serve(&mut chan);
            0
        }
        // The handles' descriptors were duplicated before the fork: this copy owns them.
        ForkJob::Call(call) => {
            bootstrap::run_once(&chan, call.target, &call.args, call.fds, call.max_result)
        }
        ForkJob::Closure(f, max_result) => bootstrap::run_closure(&chan, f, max_result),
    };
    if checked {
        // One thread at the fork: nobody else can hold stdout's lock. (Stderr has no buffer.)
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    sys::exit_immediately(code)
}
