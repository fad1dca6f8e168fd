//! The collector thread: it gets every message from the results queue, resolves tasks
//! (callbacks included, caught), hands the next tasks out, enforces task timeouts and, when a
//! worker dies, fails exactly what it had taken and puts the rest back in line.

use crate::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use super::{
    BATCH, DEATH_REPORT_WAIT, Engine, KILLS_PER_FAILURE, Kill, SIGINT, SIGKILL, Slot, State,
    Status, TICK,
};
use crate::error::ErrorKind;
use crate::pool::task::Why;
use crate::pool::wire::{Msg, TaskMsg};
use crate::process::Outcome;
use crate::sys::Exit;
use crate::{GetTimeoutError, Process, Queue};

/// When [`Engine::handle_then`] hands out the tasks a result made room for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Then {
    /// At once.
    Now,
    /// The caller dispatches after it has handled more messages.
    Later,
}

impl Engine {
    /// The collector thread's loop.
    pub(super) fn collect(self: Arc<Self>, rx: Queue<Msg>) {
        loop {
            self.spawn_missing();
            let deadline = {
                let mut st = self.state();
                if self.maybe_finish(&mut st) {
                    break;
                }
                self.next_deadline(&st)
            };
            match rx.get_deadline(deadline) {
                Ok(msg) => {
                    // Whatever else has arrived, before looking at the clock again. The tasks
                    // the results made room for are handed out once, after the batch: a
                    // worker that waits for its next task is then woken once for all of them,
                    // not once per result (a wake is a system call on this thread, which
                    // every result goes through).
                    self.handle_then(msg, Then::Later);
                    for _ in 0..BATCH {
                        match rx.try_get() {
                            Ok(msg) => self.handle_then(msg, Then::Later),
                            Err(_) => break,
                        }
                    }
                    let mut st = self.state();
                    self.dispatch(&mut st);
                    self.release(st);
                }
                Err(GetTimeoutError::Timeout) => {}
                Err(GetTimeoutError::Disconnected) => break,
                Err(GetTimeoutError::Failed(_)) => {
                    // A message a dying worker tore is repaired by the queue; anything else
                    // undecodable is dropped. Its task, if any, resolves when its worker ends.
                }
            }
            self.enforce_timeouts();
        }
        self.watch.stop();
        let mut st = self.state();
        st.finished = true;
        st.started = true;
        drop(st);
        self.changed.notify_all();
    }

    /// When the collector must next look at the clock.
    fn next_deadline(&self, st: &State) -> Instant {
        let mut at = Instant::now() + TICK;
        if let Some(limit) = self.cfg.task_timeout {
            for w in &st.workers {
                if !w.in_flight.is_empty() && w.killed.is_none() {
                    at = at.min(w.busy_since + limit);
                }
            }
        }
        at
    }

    fn enforce_timeouts(&self) {
        let Some(limit) = self.cfg.task_timeout else {
            return;
        };
        let now = Instant::now();
        let mut st = self.state();
        for w in st.workers.iter_mut() {
            if let Some(&front) = w.in_flight.front()
                && w.killed.is_none()
                && now >= w.busy_since + limit
            {
                w.killed = Some(Kill::TimedOut(front));
                w.accepting = false;
                let _ = w.process.kill();
            }
        }
    }

    /// Ends the collector when there is nothing left to do. Sends `Exit` to idle workers of a
    /// closed pool.
    fn maybe_finish(&self, st: &mut State) -> bool {
        match st.status {
            Status::Running => false,
            Status::Terminated => st.starting == 0,
            Status::Closed => {
                if !st.tasks.is_empty() && st.broken.is_none() {
                    return false;
                }
                for w in st.workers.iter_mut() {
                    if !w.exit_sent && w.in_flight.is_empty() && w.streaming.is_none() {
                        w.exit_sent = w.tasks.try_put(TaskMsg::Exit).is_ok();
                        w.accepting = false;
                    }
                }
                st.workers.is_empty() && st.starting == 0
            }
        }
    }

    /// Handles one message, handing out at once the tasks a result made room for.
    pub(super) fn handle(&self, msg: Msg) {
        self.handle_then(msg, Then::Now);
    }

    /// Handles one message; a result's room is filled now, or by the caller's `dispatch`
    /// after more messages (`Then::Later`).
    fn handle_then(&self, msg: Msg, then: Then) {
        match msg {
            Msg::Done {
                worker,
                id,
                failed,
                data,
                lens,
                rss,
                busy_ns,
            } => {
                let mut st = self.state();
                st.avg_task_ns = if st.avg_task_ns <= 0.0 {
                    busy_ns as f64
                } else {
                    0.8 * st.avg_task_ns + 0.2 * busy_ns as f64
                };
                let mut pid = 0;
                if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker) {
                    pid = w.pid;
                    if let Some(pos) = w.in_flight.iter().position(|&t| t == id) {
                        w.in_flight.remove(pos);
                    }
                    w.busy_since = Instant::now();
                    if let (Some(limit), Some(rss)) = (self.cfg.max_rss, rss)
                        && rss > limit
                    {
                        w.accepting = false;
                    }
                    self.retire_if_done(w);
                }
                let task = st.tasks.remove(&id);
                if then == Then::Now {
                    self.dispatch(&mut st);
                }
                self.release(st);
                if let Some(task) = task {
                    self.counters
                        .completed
                        .fetch_add(task.count as u64, Ordering::Relaxed);
                    self.counters
                        .failed
                        .fetch_add(failed.len() as u64, Ordering::Relaxed);
                    task.finish(pid, failed, &data, &lens);
                }
            }
            Msg::Ready { worker } => {
                let mut st = self.state();
                if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker) {
                    w.ready = true;
                    w.busy_since = Instant::now();
                }
                st.init_failures = 0;
                st.start_kills = 0;
                if !st.started
                    && st.workers.iter().filter(|w| w.ready).count() >= self.cfg.processes
                {
                    st.started = true;
                    self.changed.notify_all();
                }
                self.dispatch(&mut st);
                self.release(st);
            }
            Msg::InitFailed { worker, outcome } => {
                let mut st = self.state();
                st.init_failures += 1;
                let why = match outcome {
                    Outcome::Panicked { message, location } => match location {
                        Some(l) => format!("the initializer panicked: {message} at {l}"),
                        None => format!("the initializer panicked: {message}"),
                    },
                    Outcome::BadArguments(w) => {
                        format!("the initializer's argument did not deserialize: {w}")
                    }
                    Outcome::BadResult(w) => format!("the initializer failed: {w}"),
                    Outcome::Returned => "the initializer failed".to_string(),
                };
                st.last_init_error = Some((ErrorKind::Initializer, why));
                if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker) {
                    w.accepting = false;
                }
            }
            Msg::Died { worker } => self.on_died(worker),
            Msg::Stopped { worker, why } => {
                let mut st = self.state();
                if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker) {
                    w.stopped = Some(why);
                    w.accepting = false;
                }
            }
            Msg::Streamed { worker } => {
                let mut st = self.state();
                if let Some(w) = st.workers.iter_mut().find(|w| w.id == worker) {
                    w.streaming = None;
                }
                self.dispatch(&mut st);
                self.release(st);
            }
            Msg::Wake => {}
        }
    }

    /// A retiring worker that holds nothing more is told to exit.
    fn retire_if_done(&self, w: &mut Slot) {
        if !w.accepting && !w.exit_sent && w.in_flight.is_empty() && w.killed.is_none() {
            w.exit_sent = w.tasks.try_put(TaskMsg::Exit).is_ok();
        }
    }

    fn on_died(&self, worker: u64) {
        // Whatever this worker put on the direct queue came before its death: handle it first.
        self.drain_direct();
        let mut slot = {
            let mut st = self.state();
            let Some(pos) = st.workers.iter().position(|w| w.id == worker) else {
                return;
            };
            st.workers.remove(pos)
        };
        if let Some(flag) = &slot.streaming {
            flag.store(true, Ordering::Release);
        }
        // Out of the lock: a forkserver worker's status comes from the server, which may
        // report it a moment after its pidfd told us of the death.
        let exit = exit_status(&mut slot.process);
        if exit == Some(Exit::Signal(SIGINT)) && slot.killed.is_none() {
            // A Ctrl-C: the terminal sends SIGINT to the whole process group, and this
            // program survived it (it handles SIGINT). Stop everything rather than start
            // replacements that would go on with the work.
            self.stop(Why::Interrupted { pid: slot.pid });
            drop(slot);
            return;
        }
        let mut st = self.state();
        // Tasks still in its queue were never taken: they go back to the front of the line.
        let untaken = slot.tasks.qsize().min(slot.in_flight.len());
        let taken = slot.in_flight.len() - untaken;
        let back: Vec<u64> = slot.in_flight.split_off(taken).into_iter().collect();
        for id in back.into_iter().rev() {
            if st.tasks.contains_key(&id) {
                st.pending.push_front(id);
            }
        }
        let mut failed = Vec::new();
        for id in slot.in_flight.drain(..) {
            if let Some(task) = st.tasks.remove(&id) {
                let why = match slot.killed {
                    Some(Kill::TimedOut(t)) if t == id => Why::TimedOut {
                        pid: slot.pid,
                        after: self.cfg.task_timeout.unwrap_or_default(),
                    },
                    _ => Why::Died {
                        pid: slot.pid,
                        exit,
                        why: slot.stopped.clone(),
                    },
                };
                failed.push((task, why));
            }
        }
        if !slot.ready && slot.accepting {
            // Died before it was ready, without a word from its initializer: a failed start.
            // A SIGKILL the pool did not send (an operator, a chaos test, the OOM killer) is
            // not the initializer's doing: it counts for a fraction of a failure, so that a
            // few unlucky kills do not break the pool, while a start that is killed every
            // time still ends the respawning (after `KILLS_PER_FAILURE` times as many).
            if exit == Some(Exit::Signal(SIGKILL)) && slot.killed.is_none() {
                st.start_kills += 1;
                if st.start_kills.is_multiple_of(KILLS_PER_FAILURE) {
                    st.init_failures += 1;
                }
            } else {
                st.init_failures += 1;
            }
            let how = Why::Died {
                pid: slot.pid,
                exit,
                why: slot.stopped.clone(),
            }
            .error();
            st.last_init_error = Some((
                ErrorKind::Initializer,
                format!("a pool worker died while starting: {how}"),
            ));
        }
        if slot.ready && !slot.exit_sent {
            self.counters.replaced.fetch_add(1, Ordering::Relaxed);
        }
        st.doomed.extend(failed);
        self.check_broken(&mut st);
        self.dispatch(&mut st);
        self.release(st);
        drop(slot);
    }
}

/// How a worker that has ended ended: at once for a child of ours, after the server's report
/// (at most [`DEATH_REPORT_WAIT`]) for one the forkserver made.
fn exit_status(process: &mut Process<()>) -> Option<Exit> {
    let code = match process.exitcode() {
        Some(c) => Some(c),
        None => {
            let _ = process.join_timeout(DEATH_REPORT_WAIT);
            process.exitcode()
        }
    };
    code.map(|c| {
        if c < 0 {
            Exit::Signal(-c)
        } else {
            Exit::Code(c)
        }
    })
}
