//! Creating a child: spawn (run this executable again) or fork (copy this process).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bootstrap;
use super::channel::Channel;
use super::child::{Child, FrameWait, ended_error};
use super::function::{self, BuildId, Call};
use super::protocol::{Bootstrap, CHILD_ENV, Hello, Identity, Job, PROTOCOL_VERSION};
use super::service;
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
}

/// What a forked child should do.
pub(crate) enum ForkJob {
    Call(Call),
    Closure(Box<dyn FnOnce() -> std::result::Result<Vec<u8>, CodecError> + Send>),
}

fn ensure_initialized() -> Result<()> {
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
        .env(CHILD_ENV, format!("{PROTOCOL_VERSION}:{}", sys::getpid()))
        .stdin(Stdio::from(theirs));
    let pid = service::on_long_lived_thread(move || cmd.spawn().map(|c| c.id() as i32))
        .unwrap_or_else(|| {
            Err(std::io::Error::other(
                "the thread creating the child failed",
            ))
        })
        .map_err(|e| Error::io("cannot start the child process", e))?;
    // Our copy of `theirs` was moved into `cmd` and dropped with it: only the child holds it.
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = sys::kill(pid, sys::SIGKILL);
            let _ = sys::waitpid(pid, true);
            return Err(Error::io("cannot open a pidfd for the child", e));
        }
    };
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
        SpawnJob::Call(call) => (Job::Call(call.target), Some(call.args), call.fds),
        SpawnJob::Worker => (Job::Worker, None, Vec::new()),
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
    // Small arguments go with the bootstrap message, in the same system call; large ones only
    // once the child has said it is the right build and is reading.
    let eager = args.as_ref().is_some_and(|a| a.len() <= EAGER_ARGS);
    match args.as_deref().filter(|_| eager) {
        Some(a) => child.chan.send_message(&boot, Some(a), &fds),
        None => child.chan.send(&boot),
    }
    .map_err(gone)?;
    let deadline = Instant::now() + START_TIMEOUT;
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
        child.chan.send_bytes_with_fds(a, &fds).map_err(gone)?;
    }
    Ok(())
}

/// Copies this process; the copy runs `job` and exits.
///
/// With `checked`, refuses unless this process has exactly one thread. Without it, the caller
/// has accepted the risks of forking a multi-threaded process (see `Process::new_fork_unchecked`).
pub(crate) fn fork(
    me: Identity,
    parent_name: String,
    mut job: ForkJob,
    checked: bool,
) -> Result<Child> {
    bootstrap::hook_anchor();
    let transits = match &mut job {
        ForkJob::Call(call) => std::mem::take(&mut call.transits),
        ForkJob::Closure(_) => Default::default(),
    };
    if checked {
        let threads = sys::thread_count().map_err(|e| Error::io("cannot count threads", e))?;
        if threads != 1 {
            return Err(Error::new(
                ErrorKind::ThreadedFork,
                format!(
                    "the fork start method needs a single-threaded process, and this one has \
                     {threads} threads (a forked child could deadlock on a lock that another \
                     thread held); use the spawn start method"
                ),
            ));
        }
    }
    let (ours, theirs) =
        sys::stream_socketpair().map_err(|e| Error::io("cannot create the control socket", e))?;
    // Whatever sits in our output buffers would be printed twice, by us and by the copy.
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
    let parent = sys::getpid();
    let ours_raw = ours.as_raw_fd();
    let forked = service::on_long_lived_thread(move || {
        // SAFETY: with `checked`, this process has one thread, so the child inherits no lock
        // held by another thread. Without it, the caller of the unsafe constructor took on that
        // obligation. The child below never returns into the caller's frames: it ends in _exit.
        match unsafe { sys::fork() } {
            Ok(0) => run_forked(me, parent_name, parent, job, theirs, ours_raw),
            Ok(pid) => Ok(pid),
            Err(e) => Err(e),
        }
        // `theirs` is dropped here in the parent: only the child holds that end now.
    });
    let pid = match forked {
        Some(Ok(pid)) => {
            // The copy holds copies of this process's handles (the child itself does nothing).
            super::handles::forked(pid);
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
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = sys::kill(pid, sys::SIGKILL);
            let _ = sys::waitpid(pid, true);
            return Err(Error::io("cannot open a pidfd for the child", e));
        }
    };
    Ok(Child::new(pid, pidfd, Channel::new(ours)))
}

/// The forked child's life. Never returns.
fn run_forked(
    me: Identity,
    parent_name: String,
    parent: i32,
    job: ForkJob,
    theirs: OwnedFd,
    ours: RawFd,
) -> ! {
    // The parent's end, copied by fork: close it so that our exit is seen as end of stream.
    sys::close_raw(ours);
    let _ = sys::set_parent_death_signal(sys::SIGKILL);
    if sys::getppid() != parent {
        sys::exit_immediately(3);
    }
    super::reset_child_counter();
    bootstrap::set_child_identity(me, parent as u32, parent_name);
    let chan = Channel::new(theirs);
    let code = match job {
        // The handles' descriptors were duplicated before the fork: this copy owns them.
        ForkJob::Call(call) => bootstrap::run_once(&chan, call.target, &call.args, call.fds),
        ForkJob::Closure(f) => bootstrap::run_closure(&chan, f),
    };
    {
        use std::io::Write;
        let _ = std::io::stdout().flush();
        let _ = std::io::stderr().flush();
    }
    sys::exit_immediately(code)
}
