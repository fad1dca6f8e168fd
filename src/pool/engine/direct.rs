//! The direct path: a caller of [`Pool::apply`](crate::Pool::apply) collects its own result.
//!
//! Through the collector, an `apply` costs three hand-offs: caller to worker, worker to
//! collector, collector to caller. On one CPU each is a context switch. A task marked `direct`
//! has its `Done` put on a second queue, the direct queue, which only callers waiting in
//! [`Engine::collect_direct`] read: the worker wakes its caller itself, and the caller handles
//! the message exactly as the collector would ([`Engine::handle`], under the same state lock),
//! so the task is resolved once, whoever gets there.
//!
//! Who may get from the direct queue is decided by the gate, a mutex held from a get until
//! what it got is handled. The collector never waits on the direct queue; it takes the gate in
//! two cases only:
//!
//! - a worker died: before it handles the death it takes the gate and handles whatever is on
//!   the direct queue (the results the worker managed to put came before its death, so none is
//!   failed as `WorkerDied`). A caller asleep on the queue is woken for it, and callers keep
//!   off the queue while the collector wants the gate.
//! - never otherwise: every other path that resolves a direct task (a death, a timeout, a
//!   terminate, a broken pool) puts a `Wake` on the direct queue when callers wait there, and
//!   a caller also looks at its result at least every [`SLICE`], so no path can leave one
//!   asleep.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::{Duration, Instant};

use super::Engine;
use crate::atomic::Ordering;
use crate::pool::result::lock;
use crate::pool::wire::Msg;
use crate::{GetTimeoutError, TryGetError};

/// The longest a caller sleeps on the direct queue before it looks at its result again.
const SLICE: Duration = Duration::from_millis(50);
/// How long a caller that keeps off the direct queue waits on its result before it looks
/// again.
const KEEP_OFF: Duration = Duration::from_millis(1);
/// At most this many messages handled per drain by the collector.
const DRAIN_MAX: usize = 4096;

thread_local! {
    /// This thread holds the gate: tasks failed meanwhile are failed (their callbacks run)
    /// only once it is released.
    static IN_GATE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread holds a gate (see `Engine::release`).
pub(super) fn in_gate() -> bool {
    IN_GATE.with(|g| g.get())
}

/// The gate, held; marks this thread as holding it.
struct Held<'a> {
    _guard: std::sync::MutexGuard<'a, ()>,
}

impl<'a> Held<'a> {
    fn take(gate: &'a Mutex<()>) -> Held<'a> {
        let g = lock(gate);
        IN_GATE.with(|f| f.set(true));
        Held { _guard: g }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        IN_GATE.with(|f| f.set(false));
    }
}

/// The direct queue's side of the engine.
#[derive(Default)]
pub(super) struct Side {
    /// Held by whoever gets from the direct queue, until what it got is handled.
    gate: Mutex<()>,
    /// Callers in `collect_direct`.
    waiters: AtomicUsize,
    /// The collector wants the gate: callers keep off the queue meanwhile.
    wanted: AtomicBool,
}

impl Engine {
    /// Whether a task submitted now from this thread may be `direct`: not from the
    /// collector's own thread (a callback), which must go on handling worker deaths.
    pub(crate) fn may_collect(&self) -> bool {
        !self.on_own_thread()
    }

    /// Waits until a `direct` task's result is resolved, getting and handling messages from
    /// the direct queue meanwhile. `done` says whether the result is resolved; `park(at)`
    /// waits for it on the result itself until `at` and says the same.
    pub(crate) fn collect_direct(&self, done: &dyn Fn() -> bool, park: &dyn Fn(Instant) -> bool) {
        let side = &self.direct_side;
        side.waiters.fetch_add(1, Ordering::SeqCst);
        loop {
            if done() {
                break;
            }
            if side.wanted.load(Ordering::SeqCst) {
                park(Instant::now() + KEEP_OFF);
                continue;
            }
            let gate = Held::take(&side.gate);
            if done() || side.wanted.load(Ordering::SeqCst) {
                continue;
            }
            match self.direct.get_deadline(Instant::now() + SLICE) {
                Ok(msg) => {
                    self.handle(msg);
                    drop(gate);
                    // What handling it failed, with callbacks run out of the gate.
                    self.release(self.state());
                }
                Err(GetTimeoutError::Disconnected) => {
                    drop(gate);
                    park(Instant::now() + KEEP_OFF);
                }
                // A torn message from a dying worker is repaired by the queue; its task
                // resolves when that worker's death is handled.
                Err(GetTimeoutError::Timeout | GetTimeoutError::Failed(_)) => {}
            }
        }
        side.waiters.fetch_sub(1, Ordering::SeqCst);
    }

    /// Gets a caller asleep on the direct queue up, if there is one.
    pub(super) fn wake_direct(&self) {
        if self.direct_side.waiters.load(Ordering::SeqCst) > 0 {
            let _ = self.direct.try_put(Msg::Wake);
        }
    }

    /// The collector's part: handles everything on the direct queue now (before a death).
    pub(super) fn drain_direct(&self) {
        let side = &self.direct_side;
        side.wanted.store(true, Ordering::SeqCst);
        self.wake_direct();
        let gate = Held::take(&side.gate);
        for _ in 0..DRAIN_MAX {
            match self.direct.try_get() {
                Ok(msg) => self.handle(msg),
                Err(TryGetError::Failed(_)) => {}
                Err(TryGetError::Empty | TryGetError::Disconnected) => break,
            }
        }
        side.wanted.store(false, Ordering::SeqCst);
        drop(gate);
        self.release(self.state());
    }
}
