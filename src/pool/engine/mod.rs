//! The pool engine: worker processes, who holds which task, and what a death does.
//!
//! Every worker has a task queue of its own (a shared-memory [`Queue`] that only the parent
//! puts into and only that worker gets from); all workers put their results on one shared
//! queue. The parent's state, behind one mutex, records which tasks each worker holds, in the
//! order it will run them. At most `prefetch` tasks are handed to a worker at a time; the rest
//! wait in the parent. Two threads run in the parent:
//!
//! - the **collector** gets results, resolves them (callbacks included, caught), hands the
//!   next tasks out, enforces task timeouts and starts replacement workers;
//! - the **watcher** sleeps in `poll` on the workers' pidfds and, when one ends, posts
//!   `Died` on the results queue — after anything that worker managed to put there.
//!
//! When a worker dies, the tasks still in its own queue (it never took them: the queue's exact
//! `qsize` says how many) go back to the front of the line; the ones it had taken fail with
//! [`ErrorKind::WorkerDied`] (or [`ErrorKind::TaskTimeout`] if the parent killed it for that).
//! Nothing a worker holds is shared with another worker, so no death can wedge the others.

use crate::atomic::Ordering;
use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod collector;
mod direct;
mod workers;

use super::result::{lock, wait_until};
pub(crate) use super::task::NewTask;
use super::task::{Task, Why};
use super::watch::{Watch, watch_loop};
use super::wire::{InitArg, Msg, TaskMsg, U32s};
use crate::error::{Error, ErrorKind, Result};
use crate::process::Target;
use crate::sys;
use crate::{Process, Queue, StartMethod};

/// Ring size of each worker's task queue. Larger tasks are streamed through it.
const TASK_RING: usize = 1 << 20;
/// Ring size of the shared results queue.
const RESULT_RING: usize = 4 << 20;
/// How many initializer failures in a row stop the pool from starting workers.
pub(crate) const MAX_INIT_ATTEMPTS: u32 = 3;
/// How many workers SIGKILLed from outside while starting count as one failed start.
const KILLS_PER_FAILURE: u32 = 4;
/// A worker gets a task queued behind the one it runs only if that one started less than
/// this long ago.
const PREFETCH_HORIZON: Duration = Duration::from_millis(5);
/// The adaptive depth queues about this much work behind a worker's current task.
const PREFETCH_BUDGET_NS: f64 = 2_000_000.0;
/// Bounds of the adaptive depth.
const MIN_DEPTH: usize = 2;
const MAX_DEPTH: usize = 64;
/// How many messages the collector handles in a row before it looks at timeouts and workers.
const BATCH: usize = 256;
/// The collector looks at its state at least this often.
const TICK: Duration = Duration::from_millis(200);

/// The settings the engine runs with.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) processes: usize,
    /// A fixed number of tasks per worker, or `None` for the adaptive depth.
    pub(crate) prefetch: Option<usize>,
    pub(crate) max_tasks_per_child: Option<u64>,
    pub(crate) max_rss: Option<u64>,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) init: Option<(Target, InitArg)>,
    pub(crate) method: StartMethod,
    pub(crate) name_prefix: String,
}

/// How long the collector waits for the status of a worker that has ended (a forkserver
/// worker's comes from the server, a moment after the death).
const DEATH_REPORT_WAIT: Duration = Duration::from_secs(2);

/// SIGINT's number on Linux (every architecture): what a Ctrl-C sends.
const SIGINT: i32 = 2;
/// SIGKILL: a worker killed from outside while it starts counts for less than a failed start.
const SIGKILL: i32 = 9;

/// Why the parent killed a worker.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kill {
    TimedOut(u64),
    Cancelled(u64),
}

/// One worker process and what it holds.
struct Slot {
    id: u64,
    process: Process<()>,
    pid: u32,
    tasks: Queue<TaskMsg>,
    /// Tasks handed to this worker, in the order it runs them.
    in_flight: VecDeque<u64>,
    ready: bool,
    /// False once the worker is being retired: it gets no new tasks.
    accepting: bool,
    exit_sent: bool,
    dispatched: u64,
    /// When the task at the front of `in_flight` started (at the latest).
    busy_since: Instant,
    killed: Option<Kill>,
    /// Set while a large task is being streamed into its queue by a helper thread.
    streaming: Option<Arc<AtomicBool>>,
    /// The parent's end of the socket that carries handles' descriptors to the worker.
    fd_socket: OwnedFd,
    /// Why the worker stopped, if it said.
    stopped: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Status {
    Running,
    Closed,
    Terminated,
}

/// Hashes the engine's own task ids (sequential `u64`s it hands out itself, never a peer's
/// input) with one multiply instead of SipHash: every task is inserted, looked up and removed
/// under the state lock, on the collector's path for every result.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Each byte mixed into the state so far (`write_u64` already folds in `self.0`).
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: sequential ids spread over both the low bits (the bucket) and
        // the high bits (hashbrown's tag).
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// The task table, keyed by id.
type TaskMap = HashMap<u64, Task, std::hash::BuildHasherDefault<IdHasher>>;

struct State {
    status: Status,
    tasks: TaskMap,
    pending: VecDeque<u64>,
    workers: Vec<Slot>,
    starting: usize,
    next_task: u64,
    next_worker: u64,
    next_name: u64,
    init_failures: u32,
    /// Workers SIGKILLed from outside before they were ready, since one last became ready.
    start_kills: u32,
    last_init_error: Option<(ErrorKind, String)>,
    broken: Option<Why>,
    /// Every first worker has become ready (or the pool is broken).
    started: bool,
    /// The collector has ended and every worker is gone.
    finished: bool,
    /// Tasks to fail once the lock is released (resolving runs user callbacks).
    doomed: Vec<(Task, Why)>,
    /// A moving average of how long tasks run in the workers (ns); 0 before the first.
    avg_task_ns: f64,
}

/// Completion counters (items), for progress reports.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) submitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) replaced: AtomicU64,
}

pub(crate) struct Engine {
    cfg: Config,
    st: Mutex<State>,
    changed: Condvar,
    results: Queue<Msg>,
    /// The results of `direct` tasks, read by the callers waiting for them (see `direct.rs`).
    direct: Queue<Msg>,
    direct_side: direct::Side,
    watch: Arc<Watch>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    pub(crate) counters: Counters,
}

impl Engine {
    /// Starts the engine's threads and its first workers; returns once every worker is ready.
    pub(crate) fn start(cfg: Config) -> Result<Arc<Engine>> {
        let results = Queue::<Msg>::with_capacity(RESULT_RING)?;
        let direct = Queue::<Msg>::with_capacity(RESULT_RING)?;
        let wake = sys::eventfd().map_err(|e| Error::io("cannot create an eventfd", e))?;
        let engine = Arc::new(Engine {
            cfg,
            st: Mutex::new(State {
                status: Status::Running,
                tasks: TaskMap::default(),
                pending: VecDeque::new(),
                workers: Vec::new(),
                starting: 0,
                next_task: 0,
                next_worker: 0,
                next_name: 0,
                init_failures: 0,
                start_kills: 0,
                last_init_error: None,
                broken: None,
                started: false,
                finished: false,
                doomed: Vec::new(),
                avg_task_ns: 0.0,
            }),
            changed: Condvar::new(),
            results,
            direct,
            direct_side: direct::Side::default(),
            watch: Arc::new(Watch {
                wake,
                list: Mutex::new(Vec::new()),
                stop: AtomicBool::new(false),
            }),
            threads: Mutex::new(Vec::new()),
            counters: Counters::default(),
        });
        let rx = engine.results.clone();
        let tx = engine.results.clone();
        let watch = engine.watch.clone();
        let watcher = std::thread::Builder::new()
            .name("multiproc-pool-watcher".into())
            .spawn(move || watch_loop(&watch, &tx))
            .map_err(|e| Error::io("cannot start the pool's watcher thread", e))?;
        lock(&engine.threads).push(watcher);
        let me = engine.clone();
        let collector = std::thread::Builder::new()
            .name("multiproc-pool-collector".into())
            .spawn(move || {
                super::result::mark_collector();
                me.collect(rx)
            });
        match collector {
            Ok(h) => lock(&engine.threads).push(h),
            Err(e) => {
                engine.watch.stop();
                return Err(Error::io("cannot start the pool's collector thread", e));
            }
        }
        let mut st = engine.state();
        while !st.started {
            st = engine.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(why) = st.broken.clone() {
            drop(st);
            engine.terminate();
            let _ = engine.join(None);
            return Err(why.error());
        }
        drop(st);
        Ok(engine)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.st)
    }

    pub(crate) fn config(&self) -> &Config {
        &self.cfg
    }

    /// Queues tasks (all or none) and hands out what the workers can take.
    pub(crate) fn submit(&self, tasks: Vec<NewTask>) -> Result<std::ops::Range<u64>> {
        let mut st = self.state();
        if st.status != Status::Running {
            return Err(Error::new(
                ErrorKind::Closed,
                "the pool is closed: no new tasks are accepted after close() or terminate()",
            ));
        }
        if let Some(why) = &st.broken {
            return Err(why.error());
        }
        let mut items = 0;
        let first_id = st.next_task;
        for t in tasks {
            let id = st.next_task;
            st.next_task += 1;
            let count = t.ends.len();
            items += count as u64;
            let task = Task {
                size: t.data.len() + 8 * count,
                msg: TaskMsg::Run {
                    id,
                    target: t.target,
                    data: t.data,
                    ends: U32s(t.ends),
                    fds: U32s(t.fd_counts),
                    direct: t.direct,
                },
                fds: t.fds,
                transits: t.transits,
                announced_to: None,
                count,
                first: t.first,
                sink: t.sink,
                resolved: false,
            };
            st.tasks.insert(id, task);
            st.pending.push_back(id);
        }
        self.counters.submitted.fetch_add(items, Ordering::Relaxed);
        let ids = first_id..st.next_task;
        self.dispatch(&mut st);
        self.release(st);
        Ok(ids)
    }

    /// Cancels the tasks `ids` that are not finished: a waiting one is dropped, a queued one
    /// is resolved now (its worker's run of it will be ignored), a running one has its
    /// worker killed and replaced. True if any task was cancelled.
    pub(crate) fn cancel(&self, ids: std::ops::Range<u64>) -> bool {
        let why = Why::Cancelled("the task was cancelled");
        let mut st = self.state();
        let mut any = false;
        for id in ids {
            let Some(task) = st.tasks.remove(&id) else {
                continue;
            };
            any = true;
            if let Some(pos) = st.pending.iter().position(|&p| p == id) {
                st.pending.remove(pos);
            } else if let Some(w) = st
                .workers
                .iter_mut()
                .find(|w| w.in_flight.front() == Some(&id))
                && w.killed.is_none()
            {
                // Running (or about to): only killing its worker ends it.
                w.killed = Some(Kill::Cancelled(id));
                w.accepting = false;
                let _ = w.process.kill();
            }
            st.doomed.push((task, why.clone()));
        }
        self.release(st);
        any
    }

    /// Cancels task `id` only if no worker has been handed it yet (CPython's `cancel`, which
    /// never stops what a worker may have started). True if it was cancelled.
    pub(crate) fn cancel_waiting(&self, id: u64) -> bool {
        let mut st = self.state();
        let Some(pos) = st.pending.iter().position(|&p| p == id) else {
            return false;
        };
        st.pending.remove(pos);
        if let Some(task) = st.tasks.remove(&id) {
            st.doomed
                .push((task, Why::Cancelled("the task was cancelled before it ran")));
        }
        self.release(st);
        true
    }

    /// Whether a worker has taken task `id` from its queue (and so has started it): the
    /// tasks a worker holds that are no longer in its queue are the ones it took.
    pub(crate) fn is_started(&self, id: u64) -> bool {
        let st = self.state();
        for w in &st.workers {
            if let Some(pos) = w.in_flight.iter().position(|&t| t == id) {
                let untaken = w.tasks.qsize().min(w.in_flight.len());
                return pos < w.in_flight.len() - untaken;
            }
        }
        false
    }

    /// Unlocks, then fails the tasks that were doomed under the lock. A thread that holds the
    /// direct queue's gate leaves them for when it has let go of it: failing runs callbacks,
    /// which must not run under the gate (one that calls `apply` would wait for it).
    fn release(&self, mut st: MutexGuard<'_, State>) {
        if st.doomed.is_empty() || direct::in_gate() {
            return;
        }
        let doomed = std::mem::take(&mut st.doomed);
        drop(st);
        for (task, why) in doomed {
            self.counters
                .completed
                .fetch_add(task.count as u64, Ordering::Relaxed);
            self.counters
                .failed
                .fetch_add(task.count as u64, Ordering::Relaxed);
            task.fail(&why);
        }
        // A caller collecting its own result may hold one of these.
        self.wake_direct();
    }

    /// Hands pending tasks to workers with room, least loaded first. Never blocks: a task too
    /// large for a worker's ring is streamed by a helper thread.
    fn dispatch(&self, st: &mut State) {
        let prefetch = self.depth(st);
        let now = Instant::now();
        while let Some(&id) = st.pending.front() {
            // A task is queued behind another only while that one is young: behind a long
            // task it would wait while another worker may soon be free.
            let pick = st
                .workers
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    w.ready
                        && w.accepting
                        && w.streaming.is_none()
                        && w.in_flight.len() < prefetch
                        && (w.in_flight.is_empty() || now < w.busy_since + PREFETCH_HORIZON)
                })
                .min_by_key(|(_, w)| w.in_flight.len())
                .map(|(i, _)| i);
            let Some(wi) = pick else { break };
            // One lookup per task handed out: the collector runs this for every result, under
            // the state lock the submitting thread also wants.
            let Some(task) = st.tasks.get_mut(&id) else {
                st.pending.pop_front();
                continue;
            };
            let large = task.size + 256 > TASK_RING;
            let has_fds = !task.fds.is_empty();
            let worker_pid = st.workers[wi].pid;
            if task.announced_to != Some(worker_pid) {
                // Before the worker can see the task: a queue handle in its arguments counts
                // this worker as a holder from now on (until it decodes it, or dies).
                task.transits.handed_to(worker_pid as i32);
                task.announced_to = Some(worker_pid);
            }
            let slot = &mut st.workers[wi];
            // A message larger than the ring is never offered to `try_put` (which would start
            // streaming it and give up halfway): it goes to a helper thread at once. The task
            // keeps its message (to send it again if this worker dies): it is put from where
            // it lies, not cloned for the put.
            let offered = if large {
                Ok(false)
            } else {
                slot.tasks.try_put_ref(&task.msg)
            };
            match offered {
                Ok(true) => {}
                Ok(false) => {
                    if !slot.in_flight.is_empty() {
                        // Room will come when the worker takes its next task.
                        break;
                    }
                    // Larger than the ring: stream it in, off this thread.
                    let msg = task.msg.clone();
                    let flag = Arc::new(AtomicBool::new(false));
                    slot.streaming = Some(flag.clone());
                    if !self.stream(slot.tasks.clone(), slot.id, msg, flag) {
                        // No helper thread: the task would never reach the worker. Killing
                        // the worker resolves it (as a worker death) instead of a hang.
                        let _ = slot.process.kill();
                    }
                }
                Err(e) => {
                    st.pending.pop_front();
                    let why = Why::Broken(
                        e.kind(),
                        format!("the task could not be sent to a worker: {e}"),
                    );
                    if let Some(task) = st.tasks.remove(&id) {
                        st.doomed.push((task, why));
                    }
                    continue;
                }
            }
            st.pending.pop_front();
            if has_fds && let Some(task) = st.tasks.get(&id) {
                // The worker reads these after it takes the task; a dead worker's socket
                // refuses them, and its death is handled like any other. If they cannot be
                // sent to a live worker (a full socket, a descriptor limit), the worker would
                // wait for them for good: it is killed, so that its tasks resolve as a death.
                let fds: Vec<_> = task.fds.iter().map(|f| f.as_fd()).collect();
                if sys::sendmsg(
                    st.workers[wi].fd_socket.as_fd(),
                    &[&id.to_le_bytes()],
                    &fds,
                    false,
                )
                .is_err()
                {
                    let _ = st.workers[wi].process.kill();
                }
            }
            let slot = &mut st.workers[wi];
            if slot.in_flight.is_empty() {
                slot.busy_since = Instant::now();
            }
            slot.in_flight.push_back(id);
            slot.dispatched += 1;
            if self
                .cfg
                .max_tasks_per_child
                .is_some_and(|max| slot.dispatched >= max)
            {
                // Its last task: retire it once done, and start its successor now.
                slot.accepting = false;
                let _ = self.results.try_put(Msg::Wake);
            }
        }
    }

    /// How many tasks a worker may hold: fixed, or enough to cover a couple of milliseconds
    /// of the tasks seen so far (deep for tiny tasks, shallow for long ones).
    fn depth(&self, st: &State) -> usize {
        if let Some(fixed) = self.cfg.prefetch {
            return fixed;
        }
        if st.avg_task_ns <= 0.0 {
            return MIN_DEPTH;
        }
        let covered = 1.0 + PREFETCH_BUDGET_NS / st.avg_task_ns;
        (covered as usize).clamp(MIN_DEPTH, MAX_DEPTH)
    }

    /// Streams a large task into a worker's queue on a helper thread.
    fn stream(&self, q: Queue<TaskMsg>, worker: u64, msg: TaskMsg, flag: Arc<AtomicBool>) -> bool {
        let wake = self.results.clone();
        let spawned = std::thread::Builder::new()
            .name("multiproc-pool-stream".into())
            .spawn(move || {
                let mut msg = msg;
                loop {
                    match q.put_timeout(msg, Duration::from_millis(100)) {
                        Ok(()) => break,
                        Err(crate::PutTimeoutError::Timeout(m)) => {
                            if flag.load(Ordering::Acquire) {
                                return; // the worker died meanwhile
                            }
                            msg = m;
                        }
                        Err(crate::PutTimeoutError::Failed(_)) => return,
                    }
                }
                let _ = wake.put(Msg::Streamed { worker });
            });
        spawned.is_ok()
    }

    /// Stops accepting tasks; the workers exit once every queued task is done.
    pub(crate) fn close(&self) {
        let mut st = self.state();
        if st.status == Status::Running {
            st.status = Status::Closed;
        }
        drop(st);
        let _ = self.results.try_put(Msg::Wake);
    }

    /// Stops now: kills every worker, fails every task it still holds as cancelled.
    pub(crate) fn terminate(&self) {
        self.stop(Why::Cancelled(
            "the pool was terminated before the task finished",
        ));
    }

    /// Kills every worker and fails every unfinished task with `why`; the pool is then
    /// terminated.
    fn stop(&self, why: Why) {
        let (slots, tasks) = {
            let mut st = self.state();
            st.status = Status::Terminated;
            st.pending.clear();
            let tasks: Vec<Task> = st.tasks.drain().map(|(_, t)| t).collect();
            let mut slots: Vec<Slot> = st.workers.drain(..).collect();
            for s in slots.iter_mut() {
                let _ = s.process.kill();
                if let Some(flag) = &s.streaming {
                    flag.store(true, Ordering::Release);
                }
            }
            (slots, tasks)
        };
        drop(slots); // daemons: killed and reaped
        for t in tasks {
            self.counters
                .failed
                .fetch_add(t.count as u64, Ordering::Relaxed);
            t.fail(&why);
        }
        self.wake_direct();
        let _ = self.results.try_put(Msg::Wake);
    }

    pub(crate) fn status(&self) -> Status {
        self.state().status
    }

    /// Waits for the collector to end and every worker to be gone; false on timeout.
    pub(crate) fn join(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut st = self.state();
        if st.status == Status::Running {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the pool is still running: call close() or terminate() before join()",
            ));
        }
        if self.on_own_thread() {
            // Called from a callback (say, dropping the last handle on the pool there): the
            // collector is this very thread, and it finishes once the callback returns.
            return Ok(false);
        }
        while !st.finished {
            let timed_out;
            (st, timed_out) = wait_until(&self.changed, st, deadline);
            if timed_out && !st.finished {
                return Ok(false);
            }
        }
        drop(st);
        let handles: Vec<JoinHandle<()>> = lock(&self.threads).drain(..).collect();
        for h in handles {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        Ok(true)
    }

    /// Whether the calling thread is one of the engine's own.
    fn on_own_thread(&self) -> bool {
        let me = std::thread::current().id();
        lock(&self.threads).iter().any(|h| h.thread().id() == me)
    }

    /// The pids of the live workers.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.state().workers.iter().map(|w| w.pid).collect()
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hasher};

    use super::IdHasher;

    fn hash_bytes(bytes: &[u8]) -> u64 {
        let mut h = IdHasher::default();
        h.write(bytes);
        h.finish()
    }

    /// The task table's hasher: every byte of a key hashed through `write` counts (not only
    /// the last), and sequential ids (the engine's own) land in distinct buckets of a small
    /// table and carry distinct high bits (hashbrown's tags).
    #[test]
    fn id_hasher_mixes_every_byte_and_spreads_sequential_ids() {
        assert_ne!(
            hash_bytes(&[1, 2]),
            hash_bytes(&[3, 2]),
            "the first byte counts"
        );
        assert_ne!(hash_bytes(&[0, 0, 7]), hash_bytes(&[9, 9, 7]));
        let build = std::hash::BuildHasherDefault::<IdHasher>::default();
        let hashes: Vec<u64> = (0..1024u64).map(|id| build.hash_one(id)).collect();
        let low: std::collections::HashSet<u64> = hashes.iter().map(|h| h & 1023).collect();
        assert_eq!(low.len(), 1024, "1024 sequential ids, 1024 buckets");
        let tags: std::collections::HashSet<u64> = hashes.iter().map(|h| h >> 57).collect();
        assert!(tags.len() > 64, "{} distinct tags", tags.len());
    }
}
