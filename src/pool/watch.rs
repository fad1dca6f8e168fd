//! The watcher thread: it sleeps in `poll` on the workers' pidfds and reports each death on
//! the results queue, after whatever the worker managed to put there.

use crate::atomic::Ordering;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::result::lock;
use super::wire::Msg;
use crate::Queue;
use crate::sys;

/// The watcher's list of pidfds to wait on.
pub(crate) struct Watch {
    pub(crate) wake: OwnedFd,
    pub(crate) list: Mutex<Vec<(u64, Arc<OwnedFd>)>>,
    pub(crate) stop: AtomicBool,
}

impl Watch {
    pub(crate) fn add(&self, worker: u64, pidfd: OwnedFd) {
        lock(&self.list).push((worker, Arc::new(pidfd)));
        let _ = sys::eventfd_signal(self.wake.as_fd());
    }

    pub(crate) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        let _ = sys::eventfd_signal(self.wake.as_fd());
    }
}

/// The watcher thread: waits on the workers' pidfds and reports each death on the results
/// queue.
pub(crate) fn watch_loop(watch: &Watch, results: &Queue<Msg>) {
    loop {
        if watch.stop.load(Ordering::Acquire) {
            return;
        }
        let list: Vec<(u64, Arc<OwnedFd>)> = lock(&watch.list).clone();
        let mut fds = Vec::with_capacity(list.len() + 1);
        fds.push(sys::pollfd(watch.wake.as_fd(), sys::POLLIN));
        fds.extend(
            list.iter()
                .map(|(_, fd)| sys::pollfd(fd.as_fd(), sys::POLLIN)),
        );
        if sys::poll(&mut fds, None).is_err() {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        if fds[0].revents != 0 {
            sys::eventfd_drain(watch.wake.as_fd());
        }
        let ended: Vec<u64> = list
            .iter()
            .zip(&fds[1..])
            .filter(|(_, p)| p.revents != 0)
            .map(|((id, _), _)| *id)
            .collect();
        if ended.is_empty() {
            continue;
        }
        lock(&watch.list).retain(|(id, _)| !ended.contains(id));
        for worker in ended {
            if results.put(Msg::Died { worker }).is_err() {
                return;
            }
        }
    }
}
