//! Starting workers, and giving up when they cannot start: bounded attempts, never a
//! respawn loop.

use std::collections::VecDeque;
use std::time::Instant;

use super::{Engine, MAX_INIT_ATTEMPTS, Slot, State, Status, TASK_RING};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::child::{WorkerArgs, worker_main};
use crate::pool::task::{Task, Why};
use crate::pool::wire::{FdSocket, TaskMsg};
use crate::sys;
use crate::{Process, Queue};

impl Engine {
    /// Starts one worker process. Slow (a process start): never called under the lock.
    fn spawn_worker(&self, id: u64, name: u64) -> Result<Slot> {
        let tasks = Queue::<TaskMsg>::with_capacity(TASK_RING)?;
        let (fd_socket, theirs) = sys::stream_socketpair()
            .map_err(|e| Error::io("cannot create a pool worker's descriptor socket", e))?;
        let args = WorkerArgs {
            fd_socket: FdSocket(theirs),
            worker: id,
            tasks: tasks.clone(),
            results: self.results.clone(),
            direct: self.direct.clone(),
            init: self.cfg.init.clone(),
            report_rss: self.cfg.max_rss.is_some(),
        };
        let mut process = Process::new(worker_main, args)
            .with_name(format!("{}-{}", self.cfg.name_prefix, name))
            .with_daemon(true)
            .with_start_method(self.cfg.method);
        process.start()?;
        let pid = process.pid().unwrap_or(0);
        let pidfd = sys::pidfd_open(pid as i32)
            .map_err(|e| Error::io("cannot open a pidfd for a pool worker", e))?;
        self.watch.add(id, pidfd);
        Ok(Slot {
            id,
            process,
            pid,
            tasks,
            in_flight: VecDeque::new(),
            ready: false,
            accepting: true,
            exit_sent: false,
            dispatched: 0,
            busy_since: Instant::now(),
            killed: None,
            streaming: None,
            fd_socket,
            stopped: None,
        })
    }

    /// Whether another worker should be started now.
    fn wants_worker(&self, st: &State) -> bool {
        let active = st.workers.iter().filter(|w| w.accepting).count() + st.starting;
        let work_left =
            st.status == Status::Running || (st.status == Status::Closed && !st.tasks.is_empty());
        work_left
            && st.broken.is_none()
            && active < self.cfg.processes
            && st.init_failures < MAX_INIT_ATTEMPTS
    }

    /// Starts the workers the pool is missing, one at a time.
    pub(super) fn spawn_missing(&self) {
        loop {
            let (id, name) = {
                let mut st = self.state();
                if !self.wants_worker(&st) {
                    self.check_broken(&mut st);
                    self.release(st);
                    return;
                }
                st.starting += 1;
                st.next_worker += 1;
                st.next_name += 1;
                (st.next_worker, st.next_name)
            };
            let started = self.spawn_worker(id, name);
            let mut st = self.state();
            st.starting -= 1;
            match started {
                Ok(slot) => {
                    if st.status == Status::Terminated {
                        drop(st);
                        drop(slot); // a daemon: killed and reaped
                        return;
                    }
                    st.workers.push(slot);
                }
                Err(e) => {
                    st.init_failures += 1;
                    st.last_init_error =
                        Some((e.kind(), format!("a pool worker could not start: {e}")));
                }
            }
        }
    }

    /// No worker can be started any more: at startup, or later with no worker left, the
    /// pool is broken, and every task it holds fails with the reason.
    pub(super) fn check_broken(&self, st: &mut State) {
        if st.broken.is_some() || st.init_failures < MAX_INIT_ATTEMPTS {
            return;
        }
        if st.started && (st.workers.iter().any(|w| w.ready) || st.starting > 0) {
            return;
        }
        let (kind, last) = st
            .last_init_error
            .clone()
            .unwrap_or((ErrorKind::Initializer, "unknown".into()));
        let why = Why::Broken(
            kind,
            format!(
                "the pool's workers failed to start {} times in a row; the last time: {last}",
                st.init_failures
            ),
        );
        st.broken = Some(why.clone());
        st.started = true;
        st.pending.clear();
        let tasks: Vec<Task> = st.tasks.drain().map(|(_, t)| t).collect();
        st.doomed
            .extend(tasks.into_iter().map(|t| (t, why.clone())));
        self.changed.notify_all();
    }
}
