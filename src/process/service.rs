//! One internal thread per process, started on first need, with two jobs.
//!
//! 1. **Creating children for other threads.** A child's parent-death signal fires when the
//!    *thread* that created it ends, not the process. A child created by a short-lived thread
//!    would be killed with that thread. So children are created either by the main thread (which
//!    lives as long as the process) or by this thread (which is never stopped).
//! 2. **Reaping detached children.** A [`Process`](crate::Process) handle dropped while its child
//!    runs hands the child here; this thread waits on the child's pidfd and reaps it the moment
//!    it exits, so no zombie is left behind.
//!
//! The thread runs no user code and does nothing that can panic on a peer's behalf: it polls
//! descriptors and makes system calls.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Mutex, OnceLock, mpsc};

use crate::sys;

/// A job for the service thread.
enum Request {
    /// Run this closure (it creates a child) and send back its result itself.
    Run(Box<dyn FnOnce() + Send>),
    /// Reap this child when it exits.
    Reap { pid: i32, pidfd: OwnedFd },
}

struct Service {
    wake: OwnedFd,
    inbox: Mutex<Vec<Request>>,
}

fn service() -> Option<&'static Service> {
    static SERVICE: OnceLock<Option<Service>> = OnceLock::new();
    SERVICE
        .get_or_init(|| {
            let wake = sys::eventfd().ok()?;
            let started = std::thread::Builder::new()
                .name("multiproc-service".into())
                .spawn(run);
            started.ok().map(|_| Service {
                wake,
                inbox: Mutex::new(Vec::new()),
            })
        })
        .as_ref()
}

fn submit(request: Request) -> Result<(), Request> {
    let Some(svc) = service() else {
        return Err(request);
    };
    svc.inbox
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(request);
    // An eventfd write cannot fail in a way that loses the wake-up (see eventfd_signal).
    let _ = sys::eventfd_signal(svc.wake.as_fd());
    Ok(())
}

/// Runs `f` on a thread that lives as long as the process: the main thread if the caller is
/// the main thread, else the service thread. Children created inside `f` are killed only when
/// the whole process ends. `None` if `f` panicked.
pub(crate) fn on_long_lived_thread<T, F>(f: F) -> Option<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    if sys::is_main_thread() {
        return Some(f());
    }
    let (tx, rx) = mpsc::sync_channel(1);
    let job: Box<dyn FnOnce() + Send> = Box::new(move || {
        let _ = tx.send(f());
    });
    match submit(Request::Run(job)) {
        Ok(()) => rx.recv().ok(),
        // No service thread could be started: run here, which is still correct except that
        // the child will die with this thread.
        Err(Request::Run(job)) => {
            job();
            rx.recv().ok()
        }
        Err(Request::Reap { .. }) => None,
    }
}

/// Hands a still-running child over to be reaped when it exits.
pub(crate) fn reap_later(pid: i32, pidfd: OwnedFd) {
    if let Err(Request::Reap { pid, .. }) = submit(Request::Reap { pid, pidfd }) {
        // No service thread: the best we can do is to reap it now if it has already ended.
        let _ = sys::waitpid(pid, false);
    }
}

fn run() {
    // `service()` is still initialising when this thread starts; this call waits for it.
    let Some(svc) = service() else {
        return;
    };
    let mut children: Vec<(i32, OwnedFd)> = Vec::new();
    loop {
        let mut fds = Vec::with_capacity(children.len() + 1);
        fds.push(sys::pollfd(svc.wake.as_fd(), sys::POLLIN));
        fds.extend(
            children
                .iter()
                .map(|(_, fd)| sys::pollfd(fd.as_fd(), sys::POLLIN)),
        );
        if sys::poll(&mut fds, None).is_err() {
            // poll only fails on bad arguments or lack of memory; try again shortly.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        if fds[0].revents != 0 {
            sys::eventfd_drain(svc.wake.as_fd());
            let requests =
                std::mem::take(&mut *svc.inbox.lock().unwrap_or_else(|p| p.into_inner()));
            for request in requests {
                match request {
                    // A job that panics drops its reply sender; its caller sees that.
                    Request::Run(job) => {
                        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    }
                    Request::Reap { pid, pidfd } => children.push((pid, pidfd)),
                }
            }
        }
        // Reap whatever has ended (cheap: one WNOHANG wait per detached child).
        children.retain(|(pid, _)| !matches!(sys::waitpid(*pid, false), Ok(Some(_)) | Err(_)));
    }
}
