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
//!
//! # Forks
//! The thread holds its *gate* (a mutex) whenever it does anything but sleep in poll(2), and
//! builds everything that poll needs before letting go of it. A safe fork takes the gate first:
//! while the forking thread holds it, this thread provably holds no lock and is inside no
//! allocation, so it does not make the fork unsafe (see [`hold_for_fork`]).
//!
//! A forked child inherits a copy of this state but not the thread. The state records the pid
//! of the process that made it; a child sees a foreign pid and makes its own service on demand,
//! without touching the copied mutexes (which another thread may have held at the fork).

use crate::atomic::Ordering;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicI32, AtomicPtr};
use std::sync::{Mutex, MutexGuard, mpsc};

use crate::sys;

/// A job for the service thread.
enum Request {
    /// Run this closure (it creates a child) and send back its result itself.
    Run(Box<dyn FnOnce() + Send>),
    /// Reap this child when it exits.
    Reap { pid: i32, pidfd: OwnedFd },
}

struct Service {
    /// The process this service (and its thread) belongs to.
    pid: i32,
    wake: OwnedFd,
    inbox: Mutex<Vec<Request>>,
    /// Held by the service thread except while it sleeps in poll(2).
    gate: Mutex<()>,
}

/// Null, or a leaked `Service` (services are never freed: a forked child's copy of its
/// parent's may be in any state, and is simply abandoned).
static SERVICE: AtomicPtr<Service> = AtomicPtr::new(std::ptr::null_mut());

/// The pid of a process whose thread is creating its service, else 0 (or a parent's pid copied
/// by a fork, which counts as free).
static CREATING: AtomicI32 = AtomicI32::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// This process's service, if it has one already.
fn existing() -> Option<&'static Service> {
    let ptr = SERVICE.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in SERVICE comes from `Box::leak` in `service` (published with
    // Release, read with Acquire) and is never freed or mutated through the pointer.
    let svc = unsafe { ptr.as_ref() }?;
    (svc.pid == sys::getpid()).then_some(svc)
}

/// This process's service, started on first use; `None` if no thread could be started.
fn service() -> Option<&'static Service> {
    if let Some(svc) = existing() {
        return Some(svc);
    }
    let me = sys::getpid();
    // A tiny spin lock keyed by pid: a value copied from a parent by fork is not ours.
    loop {
        let holder = CREATING.load(Ordering::Acquire);
        if holder != me
            && CREATING
                .compare_exchange(holder, me, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            break;
        }
        std::thread::yield_now();
    }
    let made = existing().or_else(|| create(me));
    CREATING.store(0, Ordering::Release);
    made
}

fn create(pid: i32) -> Option<&'static Service> {
    let wake = sys::eventfd().ok()?;
    let svc: &'static Service = Box::leak(Box::new(Service {
        pid,
        wake,
        inbox: Mutex::new(Vec::new()),
        gate: Mutex::new(()),
    }));
    let (ready_tx, ready_rx) = mpsc::sync_channel(1);
    let started = std::thread::Builder::new()
        .name("multiproc-service".into())
        .spawn(move || run(svc, ready_tx));
    // Wait until the thread holds its gate: from then on it is never anywhere but in poll(2)
    // without it.
    if started.is_err() || ready_rx.recv().is_err() {
        return None;
    }
    SERVICE.store(svc as *const Service as *mut Service, Ordering::Release);
    Some(svc)
}

fn submit(request: Request) -> Result<(), Request> {
    let Some(svc) = service() else {
        return Err(request);
    };
    lock(&svc.inbox).push(request);
    // An eventfd write cannot fail in a way that loses the wake-up (see eventfd_signal).
    let _ = sys::eventfd_signal(svc.wake.as_fd());
    Ok(())
}

/// Parks the service thread for as long as the returned guard lives, and says how many threads
/// the library owns in this process (0 or 1). While the guard is held, that thread is asleep in
/// poll(2) holding no lock, so a fork made meanwhile copies nothing half-done of it. The guard
/// must not be dropped in a forked child (it never returns into its parent's frames).
pub(crate) fn hold_for_fork() -> (Option<MutexGuard<'static, ()>>, usize) {
    match existing() {
        Some(svc) => (Some(lock(&svc.gate)), 1),
        None => (None, 0),
    }
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
    if let Err(Request::Reap { pidfd, .. }) = submit(Request::Reap { pid, pidfd }) {
        // No service thread: the best we can do is to reap it now if it has already ended.
        let _ = sys::wait_pidfd(pidfd.as_fd(), false);
    }
}

fn run(svc: &'static Service, ready: mpsc::SyncSender<()>) {
    let mut gate = lock(&svc.gate);
    let _ = ready.send(());
    drop(ready);
    let mut children: Vec<(i32, OwnedFd)> = Vec::new();
    let mut fds = Vec::new();
    loop {
        // Everything poll needs is built with the gate held; without it, only poll runs.
        fds.clear();
        fds.push(sys::pollfd(svc.wake.as_fd(), sys::POLLIN));
        fds.extend(
            children
                .iter()
                .map(|(_, fd)| sys::pollfd(fd.as_fd(), sys::POLLIN)),
        );
        drop(gate);
        let polled = sys::poll(&mut fds, None);
        gate = lock(&svc.gate);
        if polled.is_err() {
            // poll only fails on bad arguments or lack of memory; try again shortly.
            std::thread::sleep(std::time::Duration::from_millis(10));
            continue;
        }
        if fds[0].revents != 0 {
            sys::eventfd_drain(svc.wake.as_fd());
            let requests = std::mem::take(&mut *lock(&svc.inbox));
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
        // Reap whatever has ended (cheap: one WNOHANG wait per detached child). A child whose
        // status someone else collected (SIGCHLD ignored, a foreign waitpid) is dropped too.
        children.retain(|(_, fd)| matches!(sys::wait_pidfd(fd.as_fd(), false), Ok(None)));
    }
}
