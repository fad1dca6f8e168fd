//! Creating a child: spawn (run this executable again) or fork (copy this process).

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::bootstrap;
use super::channel::Channel;
use super::child::{Child, FrameWait, Held, ended_error};
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

/// The largest encoded arguments a fork start keeps until the child's handle is dropped (see
/// `child::Held`); larger ones are freed at once. Below glibc's default mmap threshold (128 KiB),
/// so that what is held is heap memory whose free would write shared pages.
const HELD_ARGS_MAX: usize = 64 * 1024;

/// Copies this process; the copy runs `job` and exits.
///
/// With `checked`, refuses unless this process has exactly one thread besides the library's own
/// service thread (which is parked outside every lock for the duration of the fork). Without
/// it, the caller has accepted the contract of `Process::new_fork_unchecked`.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
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
    // The executable's descriptor, opened now if it was not (before the socket pair, so that
    // a first fork puts it below the pair): a child of a checked fork that starts processes of
    // its own needs it, and it survives that child's descriptor cleanup.
    let exe = if checked {
        function::exe().ok().map(|fd| fd.as_raw_fd())
    } else {
        None
    };
    let parent = sys::getpid();
    let mut identity = Some(identity::Prepared::new(me, parent as u32, parent_name));
    let (one, other) =
        sys::stream_socketpair().map_err(|e| Error::io("cannot create the control socket", e))?;
    // The child's end is the lower number of the pair, next to the executable's descriptor
    // when that was opened early: the child's descriptor cleanup is then one system call
    // instead of two (the ends are alike).
    let (ours, theirs) = if one.as_raw_fd() < other.as_raw_fd() {
        (other, one)
    } else {
        (one, other)
    };
    let ours_raw = ours.as_raw_fd();
    // With SIGCHLD ignored (or `SA_NOCLDWAIT`) the kernel reaps a child the moment it ends: one
    // that ended before its pidfd is open below would be gone (and its pid free for another
    // process). Such a child waits for a byte from us before it exits. A worker never ends
    // before a request, which comes after the pidfd is open.
    let hold_exit = !matches!(job, ForkJob::Worker) && sys::children_reaped_by_kernel();
    let forked = if checked {
        let (gate, owned) = service::hold_for_fork();
        // A spawned child's main thread, which only waits for the thread that runs its work.
        let owned = owned + super::bootstrap::idle_threads();
        // The kernel's count, not glibc's `__libc_single_threaded`: that flag misses threads
        // made by a raw clone(2) or by a second glibc loaded with dlmopen (tests in
        // ipc-tests' fork_hostile), and a fork beside one of those could deadlock the child.
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
        // Both steps of the fork count at once: no claim can be made while it is under way
        // (the service thread is held), so neither this process nor the copy writes the
        // count's page after the fork (a page copy each).
        crate::shm::note_whole_fork();
        // SAFETY: this process has one thread besides the service thread (and, in a spawned
        // child, its main thread, asleep in pthread_join holding no lock), and `gate` keeps
        // the service thread asleep in poll(2), holding no lock and inside no allocation, until
        // the fork is done: the child inherits no lock held by another thread. The child never returns
        // into the caller's frames (it ends in _exit), so `gate` is not released there.
        let forked = unsafe {
            fork_into_run(
                &mut identity,
                parent,
                &mut job,
                theirs,
                ours_raw,
                exe,
                hold_exit,
            )
        };
        drop(gate);
        let mut held = Held {
            _identity: identity.take(),
            ..Held::default()
        };
        if let ForkJob::Call(call) = &mut job {
            // The parent's copies of the handles' descriptors: closed now (the child has its
            // own); the emptied list and the encoded arguments are held.
            call.fds.drain(..).for_each(drop);
            held._fds = std::mem::take(&mut call.fds);
            // Only small arguments: a large buffer is the allocator's own mapping, which it
            // gives back with munmap (no shared page written), and holding it would keep that
            // much memory for the child's whole life.
            if call.args.len() <= HELD_ARGS_MAX {
                held._args = std::mem::take(&mut call.args);
            }
        }
        Some((forked, held))
    } else {
        service::on_long_lived_thread(move || {
            crate::shm::note_fork();
            // SAFETY: the caller of the unsafe constructor took on the obligation that nothing
            // the closure does needs a lock another thread may hold; the child's own path below
            // takes none. The child never returns into the caller's frames: it ends in _exit.
            let forked = unsafe {
                fork_into_run(
                    &mut identity,
                    parent,
                    &mut job,
                    theirs,
                    ours_raw,
                    None,
                    hold_exit,
                )
            };
            crate::shm::note_fork();
            // The closure's captures are the caller's values: dropped now, as they would be
            // without a fork (only plain memory is held, see `Held`).
            drop(job);
            let held = Held {
                _identity: identity.take(),
                ..Held::default()
            };
            (forked, held)
        })
    };
    let (pid, held) = match forked {
        Some((Ok(pid), held)) => {
            // The copy holds copies of this process's handles (the child itself does nothing).
            crate::handles::forked(pid);
            transits.handed_to(pid);
            (pid, held)
        }
        Some((Err(e), _)) => return Err(Error::io("fork failed", e)),
        None => {
            return Err(Error::io(
                "fork failed",
                std::io::Error::other("the thread that forks panicked"),
            ));
        }
    };
    let pidfd = pidfd_or_kill(pid)?;
    if hold_exit {
        // Whatever happens to this byte, the child ends: a failed send means it is gone.
        let _ = sys::send_nonblocking(std::os::fd::AsFd::as_fd(&ours), &[0]);
    }
    // The identity and the arguments are freed with the handle, once the child has (usually)
    // ended, not now while each freed block is a page the child shares (see `Held`).
    Ok(Child::new_forked(pid, pidfd, Channel::new(ours), held))
}

/// fork(2): returns the child's pid in this process; the copy goes on into [`run_forked`] and
/// never returns. `theirs` is closed here once the copy exists (only the copy needs it).
///
/// # Safety
/// As [`sys::fork`]: the caller has made sure that the copy's path takes no lock another thread
/// may hold at the fork (a process with no other thread, or the unchecked fork's contract).
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
unsafe fn fork_into_run(
    identity: &mut Option<identity::Prepared>,
    parent: i32,
    job: &mut ForkJob,
    theirs: OwnedFd,
    ours: RawFd,
    exe: Option<RawFd>,
    hold_exit: bool,
) -> std::io::Result<i32> {
    // SAFETY: as the caller promised.
    match unsafe { sys::fork() } {
        Ok(0) => run_forked(identity, parent, job, theirs, ours, exe, hold_exit),
        other => other,
    }
}

/// The descriptors a forked child keeps, in the common case: few enough for a list on the
/// stack that is filled without a `memset` call (a code page to fault in).
const FEW_FDS: usize = 8;

/// Closes every descriptor above stdio but `keep` and `fds` (at most `N` in all). The list is
/// on the stack: every heap page written here would be copied for this child.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn close_all_but<const N: usize>(keep: [RawFd; 2], fds: &[OwnedFd], ours: RawFd) {
    let mut list = [-1 as RawFd; N];
    list[..2].copy_from_slice(&keep);
    for (slot, fd) in list[2..].iter_mut().zip(fds) {
        *slot = fd.as_raw_fd();
    }
    let used = 2 + fds.len().min(N - 2);
    debug_assert!(!list[..used].contains(&ours));
    sys::close_all_except(&mut list[..used]);
}

/// [`close_all_but`] for a child given many handles: out of line, so that its kilobyte of
/// list is not in the stack frame of every forked child (a page the child would copy).
#[cold]
#[inline(never)]
fn close_all_but_many(keep: [RawFd; 2], fds: &[OwnedFd], ours: RawFd) {
    close_all_but::<{ sys::MAX_FDS_PER_MESSAGE + 2 }>(keep, fds, ours);
}

/// The forked child's life. Never returns.
///
/// Takes no lock that another thread of the parent may have held at the fork: the identity is
/// stored lock-free, the panic hook was installed by the parent, and (unchecked) stdout and
/// stderr are not flushed — the closure's own `println!` output has gone out line by line
/// already. `exe` is given for a checked fork, whose child closes every descriptor it does not
/// need; an unchecked child keeps them all (its closure may use any of them).
///
/// `job` is borrowed, not moved: a move of it is a `memcpy` call, whose code page in libc this
/// copy would otherwise fault in for nothing. It stays in the frame of `fork`, which this copy
/// never returns to, and is never dropped here.
///
/// The code this copy runs of ours is kept together: `fork` copies no page-table entries of
/// file-backed code, so the child faults in every 64 KiB window of code it runs (the kernel
/// maps the window around a faulting page), at several microseconds each. The functions of its
/// path carry `link_section = "multiproc_forked"`, which the linker gathers into one output
/// section of about 12 KiB instead of leaving them spread over the crate's code. The user's
/// function and its trampoline stay with the user's code, std's stdout flush with std's.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn run_forked(
    identity: &mut Option<identity::Prepared>,
    parent: i32,
    job: &mut ForkJob,
    theirs: OwnedFd,
    ours: RawFd,
    exe: Option<RawFd>,
    hold_exit: bool,
) -> ! {
    let checked = !matches!(job, ForkJob::Closure(..));
    // The fork is over in this copy: claims made from now on are this child's own (a checked
    // fork counted it whole before).
    if !checked {
        crate::shm::note_fork();
    }
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
        let fds: &[OwnedFd] = match &*job {
            ForkJob::Call(call) => &call.fds,
            _ => &[],
        };
        // Only what a spawned child would have: stdio, the control socket, the handles passed
        // as arguments, and the executable's descriptor (kept open for the crate's use). The
        // parent's end of the socket is not kept: closing it makes our exit an end of stream.
        let keep = [theirs.as_raw_fd(), exe.unwrap_or(-1)];
        if fds.len() + keep.len() <= FEW_FDS {
            close_all_but::<FEW_FDS>(keep, fds, ours);
        } else {
            close_all_but_many(keep, fds, ours);
        }
    }
    panics::capture_in_child(!checked);
    super::reset_child_counter();
    if let Some(identity) = identity.take() {
        identity.publish();
    }
    let mut chan = Channel::new(theirs);
    let code = match job {
        ForkJob::Worker => {
            bootstrap::serve(&mut chan);
            0
        }
        // The handles' descriptors were duplicated before the fork: this copy owns them.
        ForkJob::Call(call) => bootstrap::run_once(
            &chan,
            call.target,
            &call.args,
            std::mem::take(&mut call.fds),
            call.max_result,
        ),
        ForkJob::Closure(f, max_result) => {
            // A closure that captures nothing: boxing it allocates nothing.
            let f = std::mem::replace(f, Box::new(|| Ok(Vec::new())));
            bootstrap::run_closure(&chan, f, *max_result)
        }
    };
    if checked {
        // One thread at the fork: nobody else can hold stdout's lock. (Stderr has no buffer.)
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    if hold_exit {
        // Until the parent has our pidfd (see `fork`): its byte, or the end of its stream.
        sys::await_byte(chan.socket());
    }
    sys::exit_immediately(code)
}
