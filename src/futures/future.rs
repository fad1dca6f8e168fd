//! [`Future`]: the pending result of one submitted call, and its completion protocol.
//!
//! One mutex guards the state, the callbacks, the wakers of `.await`ers and the signals of
//! `wait`/`as_completed` calls. Whoever resolves the future takes all three lists under that
//! lock (so a waiter that registers afterwards sees the final state instead), then wakes and
//! calls them once the lock is released: every waiter is woken exactly once, every callback
//! runs exactly once.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::error::{ResultTimeoutError, timeout_error};
use super::shim::{Condvar, Mutex, MutexGuard, lock, wait_until};
use crate::error::{Error, ErrorKind, Result};
use crate::pool::result::{Complete, guarded, panic_message};

/// What an executor lets a future do to its task.
pub(crate) trait Control: Send + Sync {
    /// Cancels the task if no worker has it yet; true if it did.
    fn cancel_waiting(&self) -> bool;
    /// Whether a worker has started the task.
    fn started(&self) -> bool;
    /// Ends the task even if it runs (kills its worker); true if it did.
    fn kill(&self) -> bool;
    /// Cancels the whole task if no worker has it yet, every item of a chunk with it; true if
    /// it did. Only for an owner that abandons all of the task's items at once.
    fn cancel_task_waiting(&self) -> bool {
        self.cancel_waiting()
    }
}

enum State<R> {
    Pending,
    Running,
    /// `None` once the value has been taken.
    Done(Option<Result<R>>),
    Cancelled(Error),
}

type Callback<R> = Box<dyn FnOnce(&Future<R>) + Send>;

/// Where a `wait` or `as_completed` call learns that future `index` is done.
pub(crate) struct Signal {
    pub(crate) done: Mutex<VecDeque<usize>>,
    pub(crate) cv: Condvar,
}

impl Signal {
    pub(crate) fn new() -> Arc<Signal> {
        Arc::new(Signal {
            done: Mutex::new(VecDeque::new()),
            cv: Condvar::new(),
        })
    }
}

struct Slot<R> {
    state: State<R>,
    /// The outcome was an error (kept once the value is taken).
    failed: Option<Error>,
    callbacks: Vec<Callback<R>>,
    wakers: Vec<Waker>,
    watchers: Vec<(usize, Weak<Signal>)>,
    callback_panics: Vec<String>,
    /// Threads blocked on the condvar.
    blocked: usize,
}

pub(crate) struct Inner<R> {
    slot: Mutex<Slot<R>>,
    cv: Condvar,
    pub(crate) control: OnceLock<Box<dyn Control>>,
}

/// The pending result of a call submitted to an executor: Python's
/// `concurrent.futures.Future`.
///
/// It can be polled ([`done`](Self::done), [`running`](Self::running)), waited on from any
/// number of threads ([`result_timeout`](Self::result_timeout), [`wait`](crate::futures::wait)), given
/// callbacks, cancelled, and `.await`ed: it implements [`std::future::Future`] (whose name it
/// shares; write `multiproc::Future` or `std::future::Future` where both are in scope), with
/// no runtime of its own, so any executor (tokio, smol, a hand-written `block_on`) drives it.
///
/// The value moves out: [`result`](Self::result) (or `.await`) returns it once; a second call
/// is an [`ErrorKind::ResultTaken`] error, while [`exception`](Self::exception) keeps working.
///
/// # Examples
///
/// ```
/// use multiproc::{Executor, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let f = ex.submit_closure(|| 6 * 7)?;
/// assert_eq!(f.result()?, 42);
/// assert!(f.done() && !f.cancelled());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Future<R> {
    pub(crate) inner: Arc<Inner<R>>,
}

impl<R> std::fmt::Debug for Future<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let st = lock(&self.inner.slot);
        let state = match st.state {
            State::Pending => "pending",
            State::Running => "running",
            State::Done(_) => "finished",
            State::Cancelled(_) => "cancelled",
        };
        f.debug_struct("Future").field("state", &state).finish()
    }
}

impl<R> Inner<R> {
    pub(crate) fn new() -> Arc<Inner<R>> {
        Arc::new(Inner {
            slot: Mutex::new(Slot {
                state: State::Pending,
                failed: None,
                callbacks: Vec::new(),
                wakers: Vec::new(),
                watchers: Vec::new(),
                callback_panics: Vec::new(),
                blocked: 0,
            }),
            cv: Condvar::new(),
            control: OnceLock::new(),
        })
    }

    /// Marks the future as started, unless it was cancelled first (CPython's
    /// `set_running_or_notify_cancel`). True if the task should run.
    pub(crate) fn set_running(&self) -> bool {
        let mut st = lock(&self.slot);
        match st.state {
            State::Pending => {
                st.state = State::Running;
                true
            }
            _ => false,
        }
    }

    /// Runs the call `f` in this thread unless the future was cancelled first, and resolves
    /// the future with its value or its panic (a thread executor's worker).
    pub(crate) fn run(self: &Arc<Self>, f: impl FnOnce() -> R) {
        if self.set_running() {
            let outcome = catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
                Error::new(ErrorKind::Panicked, "the task panicked in its thread")
                    .with_panic(panic_message(&p), None)
            });
            self.finish(outcome);
        }
    }

    /// Resolves the future (once; later outcomes are ignored). An error of kind
    /// [`ErrorKind::Cancelled`] on a future that never started makes it cancelled.
    pub(crate) fn finish(self: &Arc<Self>, outcome: Result<R>) {
        let mut st = lock(&self.slot);
        match (&st.state, outcome) {
            (State::Done(_) | State::Cancelled(_), _) => return,
            (State::Pending, Err(e)) if e.kind() == ErrorKind::Cancelled => {
                st.state = State::Cancelled(e);
            }
            (_, outcome) => {
                if let Err(e) = &outcome {
                    st.failed = Some(e.duplicate());
                }
                st.state = State::Done(Some(outcome));
            }
        }
        self.resolved(st);
    }

    /// Cancels the future if no worker has started it, in one step under the lock: a worker
    /// starting it at the same moment either finds it cancelled or wins. True if it is
    /// (now) cancelled.
    pub(crate) fn cancel_pending(self: &Arc<Self>, why: &'static str) -> bool {
        let mut st = lock(&self.slot);
        match st.state {
            State::Pending => st.state = State::Cancelled(cancelled_error(why)),
            State::Cancelled(_) => return true,
            State::Running | State::Done(_) => return false,
        }
        self.resolved(st);
        true
    }

    /// The state has just become final: takes every waiter under the lock (so that one that
    /// registers afterwards sees the final state instead), then wakes and calls them with the
    /// lock released.
    fn resolved(self: &Arc<Self>, mut st: MutexGuard<'_, Slot<R>>) {
        let callbacks = std::mem::take(&mut st.callbacks);
        let wakers = std::mem::take(&mut st.wakers);
        let watchers = std::mem::take(&mut st.watchers);
        if st.blocked > 0 {
            self.cv.notify_all();
        }
        drop(st);
        for w in wakers {
            w.wake();
        }
        for (index, signal) in watchers {
            if let Some(s) = signal.upgrade() {
                lock(&s.done).push_back(index);
                s.cv.notify_all();
            }
        }
        let me = Future {
            inner: self.clone(),
        };
        for cb in callbacks {
            me.run_callback(cb);
        }
    }

    /// Registers a signal for `index` unless the future is done already (then true).
    pub(crate) fn watch(&self, index: usize, signal: &Arc<Signal>) -> bool {
        let mut st = lock(&self.slot);
        if matches!(st.state, State::Done(_) | State::Cancelled(_)) {
            return true;
        }
        st.watchers.retain(|(_, w)| w.strong_count() > 0);
        st.watchers.push((index, Arc::downgrade(signal)));
        false
    }

    /// Whether the future is done and failed (not cancelled).
    pub(crate) fn failed(&self) -> bool {
        let st = lock(&self.slot);
        matches!(st.state, State::Done(_)) && st.failed.is_some()
    }
}

/// Completes one future (an engine task of one item).
pub(crate) struct One<R>(pub(crate) Arc<Inner<R>>);

impl<R: Send> Complete<R> for One<R> {
    fn complete(&self, _index: usize, outcome: Result<R>) {
        self.0.finish(outcome);
    }
}

/// Completes the futures of a chunk: item `i` of the task is future `i`.
pub(crate) struct FanOut<R>(pub(crate) Vec<Arc<Inner<R>>>);

impl<R: Send> Complete<R> for FanOut<R> {
    fn complete(&self, index: usize, outcome: Result<R>) {
        if let Some(f) = self.0.get(index) {
            f.finish(outcome);
        }
    }
}

impl<R> Future<R> {
    pub(crate) fn from_inner(inner: Arc<Inner<R>>) -> Future<R> {
        Future { inner }
    }

    fn run_callback(&self, cb: Callback<R>) {
        if let Some(msg) = guarded(|| cb(self)) {
            eprintln!("multiproc: a future's done callback panicked: {msg}");
            lock(&self.inner.slot).callback_panics.push(msg);
        }
    }

    /// True once the future has a result, an error, or was cancelled.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 1)?;
    /// f.result()?;
    /// assert!(f.done());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn done(&self) -> bool {
        matches!(
            lock(&self.inner.slot).state,
            State::Done(_) | State::Cancelled(_)
        )
    }

    /// True if the future was cancelled (by [`cancel`](Self::cancel), by
    /// [`cancel_running`](Self::cancel_running) or by `shutdown(cancel_futures)`).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 1)?;
    /// f.result()?;
    /// assert!(!f.cancelled());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn cancelled(&self) -> bool {
        matches!(lock(&self.inner.slot).state, State::Cancelled(_))
    }

    /// True while a worker is actually running the task: a task still waiting in a queue,
    /// even a worker's own, is not running (CPython reports those as running).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| std::thread::sleep(std::time::Duration::from_millis(50)))?;
    /// while !f.running() && !f.done() { std::thread::yield_now(); }
    /// f.result()?;
    /// assert!(!f.running());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn running(&self) -> bool {
        match lock(&self.inner.slot).state {
            State::Running => return true,
            State::Pending => {}
            _ => return false,
        }
        self.inner.control.get().is_some_and(|c| c.started()) && !self.done()
    }

    /// Cancels the call if no worker has started it: CPython's meaning. True if the future is
    /// (now) cancelled; false if it runs or has finished.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let slow = ex.submit_closure(|| std::thread::sleep(std::time::Duration::from_millis(200)))?;
    /// let queued = ex.submit_closure(|| 1)?;
    /// assert!(queued.cancel());
    /// assert_eq!(queued.result().unwrap_err().kind(), multiproc::ErrorKind::Cancelled);
    /// slow.result()?;
    /// assert!(!slow.cancel());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        self.cancel_as(|c| c.cancel_waiting())
    }

    /// [`cancel`](Self::cancel), and for a call that is one item of a chunk, the whole chunk
    /// (which `cancel` refuses): for a map that abandons every call it has in flight, all the
    /// items of a chunk at once (a chunk's calls finish together: one unfinished means every
    /// one of them is still the map's).
    pub(crate) fn cancel_with_its_chunk(&self) -> bool {
        self.cancel_as(|c| c.cancel_task_waiting())
    }

    fn cancel_as(&self, cancel: fn(&dyn Control) -> bool) -> bool {
        match lock(&self.inner.slot).state {
            State::Cancelled(_) => return true,
            State::Pending => {}
            _ => return false,
        }
        match self.inner.control.get() {
            Some(c) => cancel(c.as_ref()) && self.cancelled(),
            None => self.inner.cancel_pending("the future was cancelled"),
        }
    }

    /// Beyond CPython: ends the call even if it is running. A process task has its worker
    /// killed and replaced; threads cannot be stopped, so on a thread executor this is
    /// [`cancel`](Self::cancel). True if the future is (now) cancelled.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use multiproc::{Executor, ProcessPoolExecutor};
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// multiproc::init();
    /// let ex = ProcessPoolExecutor::new(1)?;
    /// let f = ex.submit(nap, 60_000)?;
    /// while !f.running() { std::thread::sleep(std::time::Duration::from_millis(5)); }
    /// assert!(f.cancel_running());
    /// assert!(f.cancelled());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn cancel_running(&self) -> bool {
        if self.cancel() {
            return true;
        }
        if self.done() {
            return false;
        }
        match self.inner.control.get() {
            Some(c) => {
                c.kill();
                // The kill resolves the future as cancelled (unless it finished first).
                drop(self.wait_final(None));
                self.cancelled()
            }
            None => false,
        }
    }

    /// Waits until done; false if `deadline` passed first.
    /// The state once it is final, locked; `None` if `deadline` passed first.
    fn wait_final(&self, deadline: Option<Instant>) -> Option<MutexGuard<'_, Slot<R>>> {
        let mut st = lock(&self.inner.slot);
        loop {
            if matches!(st.state, State::Done(_) | State::Cancelled(_)) {
                return Some(st);
            }
            let timed_out;
            st.blocked += 1;
            (st, timed_out) = wait_until(&self.inner.cv, &self.inner.slot, st, deadline);
            st.blocked -= 1;
            if timed_out && !matches!(st.state, State::Done(_) | State::Cancelled(_)) {
                return None;
            }
        }
    }

    /// Waits for the call and returns its value (moved out: a second call is
    /// [`ErrorKind::ResultTaken`]).
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`], [`ErrorKind::Panicked`] (message and location),
    /// [`ErrorKind::WorkerDied`] (pid and signal), [`ErrorKind::Codec`], or
    /// [`ErrorKind::ResultTaken`].
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| -> u8 { panic!("no") })?;
    /// assert_eq!(f.result().unwrap_err().kind(), multiproc::ErrorKind::Panicked);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn result(&self) -> Result<R> {
        match self.wait_final(None) {
            Some(mut st) => take(&mut st.state),
            None => unreachable!("a wait without a deadline cannot time out"),
        }
    }

    /// [`result`](Self::result) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ResultTimeoutError::Timeout`] if the call has not finished by then (it goes on, and
    /// its value stays to be taken), or [`ResultTimeoutError::Failed`] with the error
    /// [`result`](Self::result) returns.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::ResultTimeoutError;
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| std::thread::sleep(Duration::from_millis(300)))?;
    /// assert!(matches!(f.result_timeout(Duration::from_millis(1)), Err(ResultTimeoutError::Timeout)));
    /// f.result()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn result_timeout(&self, timeout: Duration) -> std::result::Result<R, ResultTimeoutError> {
        self.result_deadline(Instant::now() + timeout)
    }

    /// [`result`](Self::result) waiting until `deadline`.
    ///
    /// # Errors
    /// As [`result_timeout`](Self::result_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 7)?;
    /// assert_eq!(f.result_deadline(Instant::now() + Duration::from_secs(30))?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn result_deadline(&self, deadline: Instant) -> std::result::Result<R, ResultTimeoutError> {
        self.result_until(Some(deadline))
    }

    /// [`result`](Self::result) with an optional deadline (a [`Map`](super::Map) item).
    pub(crate) fn result_until(
        &self,
        deadline: Option<Instant>,
    ) -> std::result::Result<R, ResultTimeoutError> {
        match self.wait_final(deadline) {
            Some(mut st) => take(&mut st.state).map_err(ResultTimeoutError::Failed),
            None => Err(ResultTimeoutError::Timeout),
        }
    }

    /// Waits for the call and returns its error, or `None` if it succeeded (the value stays).
    ///
    /// # Errors
    /// [`ErrorKind::Cancelled`] if the future was cancelled (Python raises
    /// `CancelledError` here too).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| -> u8 { panic!("no") })?;
    /// assert_eq!(f.exception()?.unwrap().kind(), multiproc::ErrorKind::Panicked);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exception(&self) -> Result<Option<Error>> {
        match self.wait_final(None) {
            Some(st) => exception_of(&st),
            None => unreachable!("a wait without a deadline cannot time out"),
        }
    }

    /// [`exception`](Self::exception) waiting at most `timeout`.
    ///
    /// # Errors
    /// [`ResultTimeoutError::Timeout`], or [`ResultTimeoutError::Failed`] with the
    /// [`ErrorKind::Cancelled`] error of a cancelled future.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 1)?;
    /// assert!(f.exception_timeout(std::time::Duration::from_secs(10))?.is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exception_timeout(
        &self,
        timeout: Duration,
    ) -> std::result::Result<Option<Error>, ResultTimeoutError> {
        self.exception_deadline(Instant::now() + timeout)
    }

    /// [`exception`](Self::exception) waiting until `deadline`.
    ///
    /// # Errors
    /// As [`exception_timeout`](Self::exception_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 1)?;
    /// assert!(f.exception_deadline(Instant::now() + Duration::from_secs(10))?.is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn exception_deadline(
        &self,
        deadline: Instant,
    ) -> std::result::Result<Option<Error>, ResultTimeoutError> {
        match self.wait_final(Some(deadline)) {
            Some(st) => exception_of(&st).map_err(ResultTimeoutError::Failed),
            None => Err(ResultTimeoutError::Timeout),
        }
    }

    /// Calls `f` with the future once it is done — at once, in this thread, if it already
    /// is; otherwise in the thread that completes it. A panic in `f` is caught, printed and
    /// kept ([`callback_panics`](Self::callback_panics)); it never affects anything else.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 1)?;
    /// f.result()?;
    /// let seen = Arc::new(AtomicBool::new(false));
    /// let s = seen.clone();
    /// f.add_done_callback(move |f| s.store(f.done(), Ordering::SeqCst));
    /// assert!(seen.load(Ordering::SeqCst));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn add_done_callback(&self, f: impl FnOnce(&Future<R>) + Send + 'static) {
        let mut st = lock(&self.inner.slot);
        if matches!(st.state, State::Done(_) | State::Cancelled(_)) {
            drop(st);
            self.run_callback(Box::new(f));
        } else {
            st.callbacks.push(Box::new(f));
        }
    }

    /// The messages of the done callbacks that panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let f = ex.submit_closure(|| 1)?;
    /// f.result()?;
    /// f.add_done_callback(|_| panic!("oops"));
    /// assert_eq!(f.callback_panics(), ["oops"]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn callback_panics(&self) -> Vec<String> {
        lock(&self.inner.slot).callback_panics.clone()
    }

    pub(crate) fn same(&self, other: &Future<R>) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Moves the value out of a final state.
fn take<R>(state: &mut State<R>) -> Result<R> {
    match state {
        State::Done(v) => v.take().unwrap_or_else(|| {
            Err(Error::new(
                ErrorKind::ResultTaken,
                "the future's result was already taken",
            ))
        }),
        State::Cancelled(e) => Err(e.duplicate()),
        State::Pending | State::Running => Err(timeout_error()),
    }
}

/// The error of a final state: `Err` if cancelled, else the call's error if it failed.
fn exception_of<R>(st: &Slot<R>) -> Result<Option<Error>> {
    match &st.state {
        State::Cancelled(e) => Err(e.duplicate()),
        _ => Ok(st.failed.as_ref().map(Error::duplicate)),
    }
}

pub(crate) fn cancelled_error(why: &'static str) -> Error {
    Error::new(ErrorKind::Cancelled, why)
}

impl<R> std::future::Future for Future<R> {
    type Output = Result<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<R>> {
        let mut st = lock(&self.inner.slot);
        if matches!(st.state, State::Done(_) | State::Cancelled(_)) {
            return Poll::Ready(take(&mut st.state));
        }
        if !st.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            st.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}
