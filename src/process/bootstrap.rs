//! The child's side: how a started executable finds out that it is a child, and what it does.
//!
//! A spawned child is the parent's executable started again with [`CHILD_ENV`] set and its
//! control socket on descriptor 0. It is caught before `main` by a constructor in the
//! `.init_array` section (so neither the user's `main` nor a test harness runs in the child), or,
//! should that constructor not run on some platform, by [`init`] at the top of `main`.
//!
//! The rules a program's image must follow, and what the hook does about each:
//! - **Which copy.** The variable names the copy of this crate that started the child (a hash of
//!   its version and source path, and its hook's offset in its object): a program that links two
//!   versions has two hooks, and each leaves alone a child that the other started.
//! - **Addressed to this process.** A value from another protocol version or another copy is
//!   ignored. A value that names another parent, with a standard input that is not a socket, is
//!   an inherited leftover: ignored too, and `main` runs. A value that names our parent while
//!   standard input is no socket, or that names a parent that is gone while standard input is a
//!   socket, is a broken start: a line on stderr, then exit status 3.
//! - **Secure execution.** In a setuid, setgid or file-capability program (`AT_SECURE`), the
//!   variable is ignored with a line on stderr: it and standard input come from a less
//!   privileged caller, who must not choose which code runs.
//! - **Constructors.** Before taking over, the hook calls the `.init_array` entries that come
//!   after it in the executable, as the loader would have before `main` (so registrations made
//!   with `ctor`-style crates or C++ static initialisers linked after this crate run once in the
//!   child too). Constructors before it, and those of shared libraries, ran already.
//! - **Runtime.** The hook runs before std's `main` set-up, which is what names the main thread
//!   `main` (std cannot rename a running thread). So the child's work runs on a std thread named
//!   `main`, with a main thread's stack size, while the real main thread (which holds the
//!   parent-death signal) only waits for it; a panic says `thread 'main'` as in the parent. That
//!   is one thread creation (~0.1 ms) per start; if it fails, the work runs on the unnamed
//!   main thread. What else std would have done is done here: a stack overflow prints std's
//!   message and aborts (instead of a silent SIGSEGV), standard input is `/dev/null`, and
//!   closed standard output or error descriptors are opened on `/dev/null`. `std::env::args()`
//!   holds the parent's arguments, as Python's spawn restores `sys.argv`.

use crate::atomic::Ordering;
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32};

use super::channel::Channel;
use super::function::{CallError, Target};
use super::identity::set_child_identity;
use super::panics::{capture_in_child, panicked};
use super::protocol::{
    Bootstrap, CHILD_ENV, ChildEnv, Hello, Job, Outcome, PROTOCOL_VERSION, Request,
};
use crate::sys::{self, InitFn};

/// Set once `init()` ran in this process, or this process is a child (which is initialised by
/// construction).
static INITIALIZED: AtomicBool = AtomicBool::new(false);

pub(crate) fn is_initialized() -> bool {
    INITIALIZED.load(Ordering::Acquire)
}

/// The pid of the spawned child whose main thread has started (or is starting) the thread that
/// runs its work (see `run_spawned_child`); any other value when there is no such thread in
/// this process. A process forked from the work thread inherits the value, not the thread: the
/// child side of every fork clears it (`forget_idle_main_thread`), as pid numbers are reused
/// and a descendant may be given this very pid.
static WORK_THREAD_IN: AtomicI32 = AtomicI32::new(0);

/// The same pid once that main thread is about to wait for the work thread, holding no lock.
static MAIN_WAITS_IN: AtomicI32 = AtomicI32::new(0);

/// Runs in the child of every fork from a spawned child (see `run_spawned_child`): the child
/// has none of the bootstrap's threads but the one that forked. Async-signal-safe (two stores).
extern "C" fn forget_idle_main_thread() {
    WORK_THREAD_IN.store(0, Ordering::Relaxed);
    MAIN_WAITS_IN.store(0, Ordering::Relaxed);
}

/// How many threads of this process the bootstrap keeps idle: 1 in a child taken over before
/// `main`, whose main thread only waits (in `pthread_join`, holding no lock), else 0. The fork
/// start method counts it with multiproc's own threads.
///
/// The work thread does not wait for its main thread to reach that join before it starts the
/// child's work (a wait there would cost a futex wake and two context switches per start, as
/// the new thread usually runs first); a fork made right away waits here instead, for the few
/// microseconds the main thread needs to get there.
pub(crate) fn idle_threads() -> usize {
    let me = sys::getpid();
    if WORK_THREAD_IN.load(Ordering::Acquire) != me {
        return 0;
    }
    let mut yields = 0;
    while MAIN_WAITS_IN.load(Ordering::Acquire) != me {
        // A yield never lets a thread of lower priority run (a work thread made real-time by
        // the user, on a busy CPU): after a few, sleep, which does.
        if yields < IDLE_YIELDS {
            yields += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(std::time::Duration::from_micros(50));
        }
    }
    1
}

/// Yields of [`idle_threads`] before it sleeps between looks.
const IDLE_YIELDS: u32 = 64;

/// Exit status of a child whose function panicked or whose call failed.
const EXIT_FAILED: i32 = 1;
/// Exit status of a child that refused to run (wrong build, broken bootstrap).
const EXIT_REFUSED: i32 = 3;

/// Runs before `main` in every program that links this crate. It does nothing unless this
/// process was started as a child by this copy of the crate, in which case it never returns.
extern "C" fn child_hook(
    argc: std::ffi::c_int,
    argv: *const *const std::ffi::c_char,
    envp: *const *const std::ffi::c_char,
) {
    if std::env::var_os(CHILD_ENV).is_none() {
        return;
    }
    if let Some(parent) = claim() {
        // SAFETY: `CHILD_HOOK` is the `.init_array` entry that the loader is running now, with
        // these arguments, and `run_spawned_child` never returns.
        unsafe { sys::run_constructors_after(&CHILD_HOOK, argc, argv, envp) };
        run_spawned_child(parent, true);
    }
}

// The pointer in `.init_array` makes the dynamic loader call `child_hook` before `main`.
// `used` keeps it through optimisation; `hook_anchor` keeps its object file in the link.
#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_HOOK: InitFn = child_hook;

/// This copy of the crate, as the environment names it: a hash of its version and source path
/// (two copies in one program differ in one or the other), and the offset of its hook in the
/// object that holds it (two copies are two hooks).
pub(crate) fn copy_tag() -> &'static str {
    const SOURCE: u64 = fnv1a(concat!(env!("CARGO_PKG_VERSION"), "@", file!()).as_bytes());
    static TAG: OnceLock<String> = OnceLock::new();
    TAG.get_or_init(|| {
        let hook = child_hook as InitFn as usize;
        let offset = sys::object_base(hook).map_or(0, |base| hook.wrapping_sub(base));
        format!("{SOURCE:016x}{offset:x}")
    })
}

const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut i = 0;
    while i < bytes.len() {
        hash = (hash ^ bytes[i] as u64).wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

/// The value of [`CHILD_ENV`] for a child of this process.
pub(crate) fn child_env_value() -> String {
    ChildEnv::format(sys::getpid(), copy_tag())
}

/// Decides whether [`CHILD_ENV`] makes this process a child of this copy of the crate: returns
/// the parent's pid if so. Values that are not addressed to this process are left alone; a
/// start that is addressed to it but broken is reported on stderr and ends the process.
fn claim() -> Option<i32> {
    let value = std::env::var_os(CHILD_ENV)?;
    let env = ChildEnv::parse(value.to_str()?)?;
    if env.version != PROTOCOL_VERSION || env.copy != copy_tag() {
        // Another copy of the crate in this program, or another version: not ours to act on.
        return None;
    }
    if sys::is_secure_execution() {
        say(format_args!(
            "ignoring {CHILD_ENV}: this is a setuid, setgid or file-capability program, which \
             never acts as a child (its environment comes from a less privileged caller)"
        ));
        return None;
    }
    let stdin_is_socket = sys::is_socket(std::io::stdin().as_fd());
    let ppid = sys::getppid();
    match (ppid == env.parent, stdin_is_socket) {
        (true, true) => Some(env.parent),
        // An inherited leftover, not addressed to this process: run as a normal program.
        (false, false) => None,
        (true, false) => {
            say(format_args!(
                "{CHILD_ENV} makes this process a child of process {}, but its standard input \
                 is not the control socket; exiting with status {EXIT_REFUSED}",
                env.parent
            ));
            sys::exit_immediately(EXIT_REFUSED)
        }
        (false, true) => {
            say(format_args!(
                "{CHILD_ENV} names process {} as this child's parent, but its parent is process \
                 {ppid} (the parent exited while the child started?); exiting with status \
                 {EXIT_REFUSED}",
                env.parent
            ));
            sys::exit_immediately(EXIT_REFUSED)
        }
    }
}

/// One line on stderr, whatever state stderr is in.
fn say(what: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr(), "multiproc: {what}");
}

/// Referenced from the start path, so that any program able to start a child links the hook.
pub(crate) fn hook_anchor() {
    std::hint::black_box(&CHILD_HOOK);
}

/// Marks the start of the program proper; in a child, runs the child's work instead.
///
/// Make it the first statement of `main` — the counterpart of Python's
/// `if __name__ == "__main__":`. In the parent it returns at once and enables
/// [`Process::start`](crate::Process::start); starting a process without it is an
/// [`ErrorKind::NotInitialized`](crate::ErrorKind::NotInitialized) error, never a hang.
///
/// On Linux a child is normally taken over before `main` even begins, so code in `main` — before
/// or after `init()` — does not run again in children. Should that early hook be unavailable,
/// `init()` is where the child takes over instead, and code placed before it would run again in
/// every child: keep it the first statement.
///
/// In a test under the default `#[test]` harness, call `init()` at the top of each test that
/// starts processes: the children are taken over before the harness's `main`, so no test runs
/// twice. Calling `init()` more than once is harmless.
///
/// # Examples
///
/// ```no_run
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() {
///     multiproc::init();
///     let mut p = multiproc::Process::new(square, 12);
///     p.start().unwrap();
///     assert_eq!(p.join().unwrap(), 144);
/// }
/// ```
pub fn init() {
    if std::env::var_os(CHILD_ENV).is_some()
        && let Some(parent) = claim()
    {
        run_spawned_child(parent, false);
    }
    hook_anchor();
    INITIALIZED.store(true, Ordering::Release);
}

/// The life of a spawned child of `parent`, from the environment variable to its exit;
/// `pre_main` when std's runtime set-up has not run (taken over by the hook).
fn run_spawned_child(parent: i32, pre_main: bool) -> ! {
    // SAFETY: this runs before `main` (or first thing in it, per `init`'s contract), when no
    // other thread of this program reads or writes the environment.
    unsafe { std::env::remove_var(CHILD_ENV) };
    // Die with the parent. The signal follows the thread that created us, which the parent
    // keeps alive for its whole life (see `launch`). If the parent died since `claim` looked,
    // we are already an orphan and the signal will never come: check again.
    let _ = sys::set_parent_death_signal(sys::SIGKILL);
    if sys::getppid() != parent {
        sys::exit_immediately(EXIT_REFUSED);
    }
    // As std does before `main`: standard output and error are never left closed, so that no
    // file opened later takes their numbers (one poll(2) for both, as std does).
    for (fd, closed) in [1, 2].into_iter().zip(sys::closed_fds([1, 2])) {
        if closed {
            let _ = sys::redirect_to_devnull(fd);
        }
    }
    sys::ignore_sigpipe();
    INITIALIZED.store(true, Ordering::Release);
    if pre_main {
        // std names the main thread `main` in its set-up before `main`, which has not run here
        // (and cannot be named afterwards): the work runs on a thread of that name instead, with
        // a main thread's stack size, while this thread waits. It keeps the parent-death signal
        // set above (the kernel checks every thread of the child for it).
        //
        // The new thread goes where the scheduler puts it: making it on this CPU (narrowing
        // this thread's affinity for the creation, then putting the mask back) was measured
        // faster under load, and not kept: since Linux 6.2 a mask set with sched_setaffinity
        // is remembered as the thread's own request, so the child would no longer follow its
        // cpuset when a container's CPUs widen (docs/benchmarks.md, process start).
        let pid = sys::getpid();
        // Without it, a descendant given our pid number would count (or wait for) an idle main
        // thread it does not have; should it fail (no memory), the main thread is not counted
        // as idle, and a fork from here is refused as threaded rather than wrongly allowed.
        let forgets = sys::on_fork_in_child(forget_idle_main_thread).is_ok();
        WORK_THREAD_IN.store(if forgets { pid } else { 0 }, Ordering::Release);
        let work = std::thread::Builder::new()
            .name("main".into())
            .stack_size(sys::main_stack_size())
            .spawn(move || {
                // std watches its threads' stacks only once its set-up ran.
                sys::report_thread_stack_overflow();
                child_work(parent)
            });
        match work {
            // `child_work` ends the process; joining returns only if it unwound.
            Ok(thread) => {
                MAIN_WAITS_IN.store(pid, Ordering::Release);
                let _ = thread.join();
                finish(EXIT_FAILED)
            }
            // No thread to be had: the work runs on this unnamed one.
            Err(_) => {
                WORK_THREAD_IN.store(0, Ordering::Release);
                sys::report_stack_overflow()
            }
        }
    }
    child_work(parent)
}

/// The child's work once its process is set up: the bootstrap message, then the call or the
/// worker loop. Ends the process.
fn child_work(parent: i32) -> ! {
    let stdin = std::io::stdin();
    let fd0: BorrowedFd<'_> = stdin.as_fd();
    let sock = match sys::dup_cloexec(fd0) {
        Ok(s) => s,
        Err(_) => sys::exit_immediately(EXIT_REFUSED),
    };
    // Descriptor 0 was only a way in; leave the child a harmless stdin, as Python does.
    let _ = sys::redirect_to_devnull(0);
    let mut chan = Channel::new(sock);

    let boot: Bootstrap = match chan.recv_frame_blocking() {
        Ok(Some(frame)) => match crate::codec::decode(&frame) {
            Ok(b) => b,
            Err(e) => refuse(&chan, format!("unreadable bootstrap message: {e}")),
        },
        _ => sys::exit_immediately(EXIT_REFUSED),
    };
    if let Err(why) = boot.build.verify() {
        refuse(&chan, why);
    }
    set_child_identity(boot.me, parent as u32, boot.parent_name);
    if chan
        .send(&Hello::Ready {
            pid: sys::getpid() as u32,
        })
        .is_err()
    {
        sys::exit_immediately(EXIT_REFUSED);
    }
    match boot.job {
        Job::Call(target, max_result) => {
            let args = match chan.recv_frame_blocking() {
                Ok(Some(a)) => a,
                _ => sys::exit_immediately(EXIT_REFUSED),
            };
            let fds = chan.take_fds();
            let code = run_once(&chan, target, &args, fds, max_result);
            finish(code)
        }
        Job::Worker => {
            serve(&mut chan);
            finish(0)
        }
        Job::Forkserver(preload) => super::forkserver::serve(chan, preload),
    }
}

fn refuse(chan: &Channel, why: String) -> ! {
    let _ = chan.send(&Hello::Refused(why));
    sys::exit_immediately(EXIT_REFUSED)
}

/// Flushes what the child printed and exits with `code`, running exit handlers.
pub(crate) fn finish(code: i32) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code)
}

/// Runs one call and reports how it went (a result over `max_result` bytes as a failure to
/// serialize it); returns the exit status to use.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn run_once(
    chan: &Channel,
    target: Target,
    args: &[u8],
    fds: Vec<OwnedFd>,
    max_result: u64,
) -> i32 {
    let (outcome, result) = execute(target, args, fds);
    report(chan, &outcome, result.as_deref(), max_result).unwrap_or(EXIT_FAILED)
}

/// Runs a closure-made result (unsafe fork) and reports it like a call.
pub(crate) fn run_closure(
    chan: &Channel,
    f: Box<dyn FnOnce() -> Result<Vec<u8>, crate::codec::CodecError>>,
    max_result: u64,
) -> i32 {
    capture_in_child(false);
    let (outcome, result) = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(bytes)) => (Outcome::Returned, Some(bytes)),
        Ok(Err(e)) => (Outcome::BadResult(e.to_string()), None),
        Err(payload) => (panicked(payload), None),
    };
    report(chan, &outcome, result.as_deref(), max_result).unwrap_or(EXIT_FAILED)
}

/// `Outcome::Returned` as the codec encodes it (its variant index; checked by a test).
const RETURNED_ENCODED: &[u8] = &[0];

/// Sends the outcome (and result) to the parent; returns the exit status that goes with it,
/// or `Err` when the parent can no longer be told.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn report(
    chan: &Channel,
    outcome: &Outcome,
    result: Option<&[u8]>,
    max_result: u64,
) -> Result<i32, ()> {
    // Too large: a codec failure of this call, reported as such (a worker stays usable), not a
    // dead child. Never more than one frame can carry, whatever the limit asked for.
    let limit = max_result.min(crate::codec::MAX_FRAME_LIMIT as u64);
    if let Some(r) = result.filter(|r| r.len() as u64 > limit) {
        let why = format!(
            "the result is {} bytes, more than the limit of {limit} bytes{}",
            r.len(),
            if limit == crate::codec::MAX_FRAME_LIMIT as u64 {
                " that one frame can carry"
            } else {
                " set by with_max_result"
            }
        );
        return report(chan, &Outcome::BadResult(why), None, max_result);
    }
    // One system call for both frames: the parent wakes once, usually after we have exited.
    match outcome {
        // Its encoding is a constant: no serde code to run (or, forked, to fault in).
        Outcome::Returned => chan.send_encoded(RETURNED_ENCODED, result),
        _ => chan.send_message(outcome, result, &[]),
    }
    .map_err(drop)?;
    Ok(match outcome {
        Outcome::Returned => 0,
        _ => EXIT_FAILED,
    })
}

/// Serves worker requests until told to exit or the parent goes away.
pub(crate) fn serve(chan: &mut Channel) {
    loop {
        let request = match chan.recv_frame_blocking() {
            Ok(Some(frame)) => match crate::codec::decode::<Request>(&frame) {
                Ok(r) => r,
                Err(_) => return,
            },
            _ => return,
        };
        match request {
            Request::Exit => return,
            Request::Call(target, max_result) => {
                let Ok(Some(args)) = chan.recv_frame_blocking() else {
                    return;
                };
                let fds = chan.take_fds();
                let (outcome, result) = execute(target, &args, fds);
                if report(chan, &outcome, result.as_deref(), max_result).is_err() {
                    return;
                }
            }
        }
    }
}

/// Calls `target` with `args` (whose handles take their descriptors from `fds`), catching a
/// panic.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
fn execute(target: Target, args: &[u8], fds: Vec<OwnedFd>) -> (Outcome, Option<Vec<u8>>) {
    capture_in_child(false);
    // Installed even when empty: a forked child's memory may hold its parent's list of
    // received descriptors, which the call's handles must never resolve against.
    let call = || crate::handles::with_incoming(fds, || target.invoke(args));
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(bytes)) => (Outcome::Returned, Some(bytes)),
        Ok(Err(CallError::Arguments(e))) => (Outcome::BadArguments(e.to_string()), None),
        Ok(Err(CallError::Result(e))) => (Outcome::BadResult(e.to_string()), None),
        Err(payload) => (panicked(payload), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_constant_report_is_what_the_codec_makes() {
        let encoded = crate::codec::encode(&Outcome::Returned).unwrap();
        assert_eq!(encoded, RETURNED_ENCODED);
        let decoded: Outcome = crate::codec::decode(RETURNED_ENCODED).unwrap();
        assert!(matches!(decoded, Outcome::Returned));
    }
}
