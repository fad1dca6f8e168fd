//! The child's side: how a started executable finds out that it is a child, and what it does.
//!
//! A spawned child is the parent's executable started again with [`CHILD_ENV`] set and its
//! control socket on descriptor 0. It is caught before `main` by a constructor in the
//! `.init_array` section (so neither the user's `main` nor a test harness runs in the child), or,
//! should that constructor not run on some platform, by [`init`] at the top of `main`.

use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};

use super::channel::Channel;
use super::function::{CallError, Target};
use super::identity::set_child_identity;
use super::panics::{capture_in_child, panicked};
use super::protocol::{Bootstrap, CHILD_ENV, Hello, Job, Outcome, PROTOCOL_VERSION, Request};
use crate::sys;

/// Set once `init()` ran in this process, or this process is a child (which is initialised by
/// construction).
static INITIALIZED: AtomicBool = AtomicBool::new(false);

pub(crate) fn is_initialized() -> bool {
    INITIALIZED.load(Ordering::Acquire)
}

/// Exit status of a child whose function panicked or whose call failed.
const EXIT_FAILED: i32 = 1;
/// Exit status of a child that refused to run (wrong build, broken bootstrap).
const EXIT_REFUSED: i32 = 3;

/// Runs before `main` in every program that links this crate. It does nothing unless this
/// process was started as a multiproc child, in which case it never returns.
extern "C" fn child_hook() {
    if std::env::var_os(CHILD_ENV).is_some() {
        run_spawned_child();
    }
}

// The pointer in `.init_array` makes the dynamic loader call `child_hook` before `main`.
// `used` keeps it through optimisation; `hook_anchor` keeps its object file in the link.
#[used]
#[unsafe(link_section = ".init_array")]
static CHILD_HOOK: extern "C" fn() = child_hook;

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
    if std::env::var_os(CHILD_ENV).is_some() {
        run_spawned_child();
    }
    hook_anchor();
    INITIALIZED.store(true, Ordering::Release);
}

/// The life of a spawned child, from the environment variable to its exit.
fn run_spawned_child() -> ! {
    let value = std::env::var(CHILD_ENV).unwrap_or_default();
    // SAFETY: this runs before `main` (or first thing in it, per `init`'s contract), when no
    // other thread of this program reads or writes the environment.
    unsafe { std::env::remove_var(CHILD_ENV) };
    let parent_pid = parse_env(&value);
    // Die with the parent. The signal follows the thread that created us, which the parent
    // keeps alive for its whole life (see `launch`). If the parent died before this line, we
    // are already an orphan and the signal will never come: check.
    let _ = sys::set_parent_death_signal(sys::SIGKILL);
    match parent_pid {
        Some(pid) if sys::getppid() == pid => {}
        // Parent already gone, or a foreign value in our environment.
        _ => sys::exit_immediately(EXIT_REFUSED),
    }
    sys::ignore_sigpipe();
    INITIALIZED.store(true, Ordering::Release);

    let stdin = std::io::stdin();
    let fd0: BorrowedFd<'_> = stdin.as_fd();
    if !sys::is_socket(fd0) {
        sys::exit_immediately(EXIT_REFUSED);
    }
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
    set_child_identity(boot.me, parent_pid.unwrap_or(0) as u32, boot.parent_name);
    if chan
        .send(&Hello::Ready {
            pid: sys::getpid() as u32,
        })
        .is_err()
    {
        sys::exit_immediately(EXIT_REFUSED);
    }
    match boot.job {
        Job::Call(target) => {
            let args = match chan.recv_frame_blocking() {
                Ok(Some(a)) => a,
                _ => sys::exit_immediately(EXIT_REFUSED),
            };
            let fds = chan.take_fds();
            let code = run_once(&chan, target, &args, fds);
            finish(code)
        }
        Job::Worker => {
            serve(&mut chan);
            finish(0)
        }
    }
}

fn parse_env(value: &str) -> Option<i32> {
    let (version, pid) = value.split_once(':')?;
    if version.parse::<u32>().ok()? != PROTOCOL_VERSION {
        return None;
    }
    pid.parse().ok()
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

/// Runs one call and reports how it went; returns the exit status to use.
pub(crate) fn run_once(chan: &Channel, target: Target, args: &[u8], fds: Vec<OwnedFd>) -> i32 {
    let (outcome, result) = execute(target, args, fds);
    report(chan, &outcome, result.as_deref()).unwrap_or(EXIT_FAILED)
}

/// Runs a closure-made result (unsafe fork) and reports it like a call.
pub(crate) fn run_closure(
    chan: &Channel,
    f: Box<dyn FnOnce() -> Result<Vec<u8>, crate::codec::CodecError>>,
) -> i32 {
    capture_in_child(false);
    let (outcome, result) = match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(bytes)) => (Outcome::Returned, Some(bytes)),
        Ok(Err(e)) => (Outcome::BadResult(e.to_string()), None),
        Err(payload) => (panicked(payload), None),
    };
    report(chan, &outcome, result.as_deref()).unwrap_or(EXIT_FAILED)
}

/// Sends the outcome (and result) to the parent; returns the exit status that goes with it,
/// or `Err` when the parent can no longer be told.
fn report(chan: &Channel, outcome: &Outcome, result: Option<&[u8]>) -> Result<i32, ()> {
    // Too large for a frame: a codec failure of this call, reported as such (a worker stays
    // usable), not a dead child.
    if let Some(r) = result.filter(|r| r.len() > crate::codec::MAX_FRAME_LIMIT) {
        let why = format!(
            "the result is {} bytes, more than one frame can carry ({} bytes)",
            r.len(),
            crate::codec::MAX_FRAME_LIMIT
        );
        return report(chan, &Outcome::BadResult(why), None);
    }
    // One system call for both frames: the parent wakes once, usually after we have exited.
    chan.send_message(outcome, result, &[]).map_err(drop)?;
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
            Request::Call(target) => {
                let Ok(Some(args)) = chan.recv_frame_blocking() else {
                    return;
                };
                let fds = chan.take_fds();
                let (outcome, result) = execute(target, &args, fds);
                if report(chan, &outcome, result.as_deref()).is_err() {
                    return;
                }
            }
        }
    }
}

/// Calls `target` with `args` (whose handles take their descriptors from `fds`), catching a
/// panic.
fn execute(target: Target, args: &[u8], fds: Vec<OwnedFd>) -> (Outcome, Option<Vec<u8>>) {
    capture_in_child(false);
    let call = || super::handles::with_incoming(fds, || target.invoke(args));
    match panic::catch_unwind(AssertUnwindSafe(call)) {
        Ok(Ok(bytes)) => (Outcome::Returned, Some(bytes)),
        Ok(Err(CallError::Arguments(e))) => (Outcome::BadArguments(e.to_string()), None),
        Ok(Err(CallError::Result(e))) => (Outcome::BadResult(e.to_string()), None),
        Err(payload) => (panicked(payload), None),
    }
}
