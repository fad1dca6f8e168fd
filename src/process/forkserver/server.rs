//! The forkserver's own side: run the preload calls, then fork, reap and report until the
//! parent goes away.

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::panic::{self, AssertUnwindSafe};

use super::{ForkRequest, ForkedJob, Reply};
use crate::process::bootstrap;
use crate::process::channel::Channel;
use crate::process::function::{self, Target};
use crate::process::identity;
use crate::sys::{self, Exit};

/// Exit status of a server or child that cannot go on (as a spawned child's refusal).
const EXIT_REFUSED: i32 = 3;

/// The server's life, from the end of its bootstrap. Never returns: when the parent closes the
/// channel (or dies), the server exits and its children die with it.
pub(crate) fn serve(mut chan: Channel, preload: Vec<(Target, Vec<u8>)>) -> ! {
    for (target, args) in preload {
        match panic::catch_unwind(AssertUnwindSafe(|| target.invoke(&args))) {
            Ok(Ok(_)) => {}
            Ok(Err(_)) => say("a preload call's argument or result did not cross; skipped"),
            Err(_) => say("a preload call panicked; skipped"),
        }
    }
    // A Ctrl-C reaches the terminal's whole process group, the server included: the server
    // lives on (as CPython's does), so that the children, which get back the disposition the
    // server had, die of it themselves and it reports how. Were it to die of it, they would
    // die of their parent-death signal instead, and their exit statuses would go with it.
    let sigint = sys::ignore_signal(sys::SIGINT).ok();
    // A server started with SIGCHLD ignored (it keeps the disposition across its exec) would
    // have its children reaped by the kernel: a quick one would be gone before its pidfd is
    // open, and no exit status would ever be reported. The server reaps its children itself;
    // they get the disposition back, as they do SIGINT's.
    let sigchld = sys::keep_children_reapable().ok().flatten();
    // Counted once: the server itself makes no thread, so only a preload call could have. The
    // bootstrap's own main thread, idle in a join and holding no lock, does not count.
    let threads = sys::thread_count()
        .unwrap_or(0)
        .saturating_sub(crate::process::bootstrap::idle_threads());
    // Opened now, so that children that start processes of their own find it open.
    let exe = function::exe().ok().map(|fd| fd.as_raw_fd());
    let me = sys::getpid();
    let mut children: Vec<(i32, OwnedFd)> = Vec::new();
    let mut fds: VecDeque<OwnedFd> = VecDeque::new();
    let mut polled = Vec::new();
    loop {
        // Every complete request first (a read may have brought in more than one).
        loop {
            let frame = match chan.take_frame() {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => sys::exit_immediately(EXIT_REFUSED),
            };
            let Ok(request) = crate::codec::decode::<ForkRequest>(&frame) else {
                sys::exit_immediately(EXIT_REFUSED)
            };
            let Ok(Some(args)) = chan.recv_frame_blocking() else {
                sys::exit_immediately(0)
            };
            fds.extend(chan.take_fds());
            let n = (request.handles as usize + 1).min(fds.len());
            let passed: Vec<OwnedFd> = fds.drain(..n).collect();
            let (reply, pidfd) = if threads != 1 {
                let why = format!(
                    "the server has {threads} threads (a preload call started some); it only \
                     forks with one"
                );
                (
                    Reply::Failed {
                        threaded: true,
                        why,
                    },
                    None,
                )
            } else {
                fork_one(
                    request,
                    args,
                    passed,
                    me,
                    [sigint.as_ref(), sigchld.as_ref()],
                    exe,
                    &mut children,
                )
            };
            let attached: Vec<OwnedFd> = pidfd.into_iter().collect();
            if chan.send_message(&reply, None, &attached).is_err() {
                sys::exit_immediately(0);
            }
        }
        if chan.is_closed() {
            sys::exit_immediately(0);
        }
        polled.clear();
        polled.push(sys::pollfd(chan.socket(), sys::POLLIN));
        polled.extend(
            children
                .iter()
                .map(|(_, fd)| sys::pollfd(fd.as_fd(), sys::POLLIN)),
        );
        if sys::poll(&mut polled, None).is_err() {
            continue;
        }
        if polled[0].revents != 0 && chan.read_available().is_err() {
            sys::exit_immediately(0);
        }
        let mut ended = Vec::new();
        children.retain(|(pid, fd)| match sys::wait_pidfd(fd.as_fd(), false) {
            Ok(None) => true,
            Ok(Some(exit)) => {
                ended.push((*pid, exit));
                false
            }
            Err(_) => false,
        });
        for (pid, exit) in ended {
            let (code, signaled) = match exit {
                Exit::Code(c) => (c, false),
                Exit::Signal(s) => (s, true),
            };
            let report = Reply::Exited {
                pid,
                code,
                signaled,
            };
            if chan.send(&report).is_err() {
                sys::exit_immediately(0);
            }
        }
    }
}

fn say(what: &str) {
    let _ = writeln!(std::io::stderr(), "multiproc forkserver: {what}");
}

/// Forks one child; returns the reply and, for a child, a pidfd for the parent. `saved`: the
/// dispositions of SIGINT and SIGCHLD the server changed, which the child gets back.
fn fork_one(
    request: ForkRequest,
    args: Vec<u8>,
    mut passed: Vec<OwnedFd>,
    me: i32,
    saved: [Option<&sys::SavedAction>; 2],
    exe: Option<RawFd>,
    children: &mut Vec<(i32, OwnedFd)>,
) -> (Reply, Option<OwnedFd>) {
    let failed = |why: String| {
        (
            Reply::Failed {
                threaded: false,
                why,
            },
            None,
        )
    };
    if passed.is_empty() {
        return failed("the request carried no control socket".into());
    }
    let sock = passed.remove(0);
    let prepared = identity::Prepared::new(request.me, request.parent_pid, request.parent_name);
    // SAFETY: the server has one thread (checked by the caller), so the child inherits no lock
    // held by another thread; it never returns into this frame (it ends in `exit`).
    match unsafe { sys::fork() } {
        Ok(0) => {
            let job = (request.job, args, request.args_follow);
            // The child dies of a Ctrl-C as a spawned one does.
            if let Some(saved) = saved[0] {
                sys::restore_signal(sys::SIGINT, saved);
            }
            if let Some(saved) = saved[1] {
                sys::restore_signal(sys::SIGCHLD, saved);
            }
            run_child(prepared, job, sock, passed, me, exe)
        }
        Ok(pid) => {
            drop(sock);
            drop(passed);
            match sys::pidfd_open(pid) {
                Ok(pidfd) => match sys::dup_cloexec(pidfd.as_fd()) {
                    Ok(theirs) => {
                        children.push((pid, pidfd));
                        (Reply::Forked { pid }, Some(theirs))
                    }
                    Err(e) => {
                        let _ = sys::pidfd_send_signal(pidfd.as_fd(), sys::SIGKILL);
                        let _ = sys::wait_pidfd(pidfd.as_fd(), true);
                        failed(format!("cannot duplicate a pidfd: {e}"))
                    }
                },
                Err(e) => {
                    let _ = sys::kill(pid, sys::SIGKILL);
                    let _ = sys::waitpid(pid, true);
                    failed(format!("cannot open a pidfd for the child: {e}"))
                }
            }
        }
        Err(e) => failed(format!("fork failed: {e}")),
    }
}

/// The forked child's life. Never returns.
fn run_child(
    prepared: identity::Prepared,
    (job, args, args_follow): (ForkedJob, Vec<u8>, bool),
    sock: OwnedFd,
    handles: Vec<OwnedFd>,
    server: i32,
    exe: Option<RawFd>,
) -> ! {
    // Die with the server (which dies with the parent).
    let _ = sys::set_parent_death_signal(sys::SIGKILL);
    if sys::getppid() != server {
        sys::exit_immediately(EXIT_REFUSED);
    }
    // What a spawned child would have: stdio, its socket, its handles, the executable.
    let mut keep: Vec<RawFd> = Vec::with_capacity(2 + handles.len());
    keep.push(sock.as_raw_fd());
    keep.extend(exe);
    keep.extend(handles.iter().map(AsRawFd::as_raw_fd));
    sys::close_all_except(&mut keep);
    crate::process::reset_child_counter();
    prepared.publish();
    let mut chan = Channel::new(sock);
    let args = if args_follow {
        match chan.recv_frame_blocking() {
            Ok(Some(args)) => args,
            _ => sys::exit_immediately(EXIT_REFUSED),
        }
    } else {
        args
    };
    let code = match job {
        ForkedJob::Call(target, max_result) => {
            bootstrap::run_once(&chan, target, &args, handles, max_result)
        }
        ForkedJob::Worker => {
            bootstrap::serve(&mut chan);
            0
        }
    };
    bootstrap::finish(code)
}
