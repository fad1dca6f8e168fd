//! Where results land: [`AsyncResult`], and the cells behind it, `map` and `imap`.
//!
//! The engine hands each finished item to a type-erased [`Sink`] as encoded bytes (or an
//! error); the sink decodes it and completes a typed cell. Thread pools complete the same
//! cells with values directly ([`Complete`]). A cell resolves exactly once; callbacks run in
//! the thread that resolves it, before waiters are released, inside `catch_unwind`.

use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::error::{AsyncGetTimeoutError, AsyncWaitTimeoutError};
use crate::codec;
use crate::error::{Error, ErrorKind, Result};

/// Receives the encoded outcome of item `index` of a job.
pub(crate) trait Sink: Send + Sync {
    fn deliver(&self, index: usize, outcome: Result<&[u8]>);

    /// Items `first`, `first + 1`, ... at once.
    fn deliver_many(&self, first: usize, outcomes: Vec<Result<&[u8]>>) {
        for (i, o) in outcomes.into_iter().enumerate() {
            self.deliver(first + i, o);
        }
    }

    /// Items `first`, `first + 1`, ... that all returned: their encoded results lie back to
    /// back in `data`, `lens` giving their sizes.
    fn deliver_ok(&self, first: usize, data: &[u8], lens: &[u32]) {
        self.deliver_many(first, split(data, lens).collect());
    }
}

/// The items of `data`, back to back, of the sizes in `lens`; an item past the end is an
/// error.
fn split<'a>(data: &'a [u8], lens: &'a [u32]) -> impl Iterator<Item = Result<&'a [u8]>> + 'a {
    let mut at = 0usize;
    lens.iter().map(move |&len| {
        let end = at.saturating_add(len as usize);
        let item = data.get(at..end);
        at = end;
        item.ok_or_else(|| Error::new(ErrorKind::Codec, "the worker sent a malformed result"))
    })
}

/// Receives the decoded outcome of item `index` of a job.
pub(crate) trait Complete<R>: Send + Sync {
    fn complete(&self, index: usize, outcome: Result<R>);

    /// Items `first`, `first + 1`, ... at once.
    fn complete_many(&self, first: usize, outcomes: Vec<Result<R>>) {
        for (i, o) in outcomes.into_iter().enumerate() {
            self.complete(first + i, o);
        }
    }

    /// Items `first`, `first + 1`, ... that all succeeded.
    fn complete_all(&self, first: usize, values: Vec<R>) {
        self.complete_many(first, values.into_iter().map(Ok).collect());
    }
}

/// A [`Sink`] that decodes into `R` and completes a typed cell.
pub(crate) struct Decode<R, C: ?Sized> {
    cell: Arc<C>,
    _r: PhantomData<fn() -> R>,
}

impl<R, C: ?Sized> Decode<R, C> {
    pub(crate) fn new(cell: Arc<C>) -> Decode<R, C> {
        Decode {
            cell,
            _r: PhantomData,
        }
    }
}

fn decoded<R: DeserializeOwned>(outcome: Result<&[u8]>) -> Result<R> {
    outcome.and_then(|bytes| {
        codec::decode(bytes)
            .map_err(|e| Error::codec("the task's result could not be deserialized", e))
    })
}

impl<R: DeserializeOwned, C: Complete<R> + ?Sized> Sink for Decode<R, C> {
    fn deliver(&self, index: usize, outcome: Result<&[u8]>) {
        self.cell.complete(index, decoded(outcome));
    }

    fn deliver_many(&self, first: usize, outcomes: Vec<Result<&[u8]>>) {
        if outcomes.len() == 1 {
            if let Some(o) = outcomes.into_iter().next() {
                self.cell.complete(first, decoded(o));
            }
            return;
        }
        let values = outcomes.into_iter().map(decoded).collect();
        self.cell.complete_many(first, values);
    }

    fn deliver_ok(&self, first: usize, data: &[u8], lens: &[u32]) {
        // Straight into the values while every item decodes; from the first that does not,
        // item by item with its error.
        let mut values = Vec::with_capacity(lens.len());
        let mut at = 0usize;
        for &len in lens {
            let end = at.saturating_add(len as usize);
            match data.get(at..end).map(codec::decode::<R>) {
                Some(Ok(v)) => values.push(v),
                _ => break,
            }
            at = end;
        }
        if values.len() == lens.len() {
            self.cell.complete_all(first, values);
            return;
        }
        let done = values.len();
        let mut outcomes: Vec<Result<R>> = values.into_iter().map(Ok).collect();
        outcomes.extend(split(data.get(at..).unwrap_or_default(), &lens[done..]).map(decoded));
        self.cell.complete_many(first, outcomes);
    }
}

thread_local! {
    /// This thread is a process pool's collector: it runs the callbacks, and it alone
    /// delivers results, so a wait without a deadline here would wait on itself.
    static ON_COLLECTOR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Marks the calling thread as a pool's collector (see [`AsyncResult::get`]).
pub(crate) fn mark_collector() {
    ON_COLLECTOR.with(|c| c.set(true));
}

/// Whether the calling thread is a pool's collector (a callback runs there).
pub(crate) fn on_collector() -> bool {
    ON_COLLECTOR.with(|c| c.get())
}

/// The error of a wait without a deadline made on a collector thread (from a callback).
pub(crate) fn in_callback_error() -> Error {
    Error::new(
        ErrorKind::InvalidState,
        "cannot wait for a pool result inside a pool callback: the callback runs on the \
         collector thread that delivers results (use apply_async with a callback, or a timeout)",
    )
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Waits on `cv` until notified or `deadline`; true if the deadline has passed.
pub(crate) fn wait_until<'a, T>(
    cv: &Condvar,
    guard: MutexGuard<'a, T>,
    deadline: Option<Instant>,
) -> (MutexGuard<'a, T>, bool) {
    match deadline {
        None => (cv.wait(guard).unwrap_or_else(|p| p.into_inner()), false),
        Some(at) => {
            let now = Instant::now();
            if now >= at {
                return (guard, true);
            }
            let (g, r) = cv
                .wait_timeout(guard, at - now)
                .unwrap_or_else(|p| p.into_inner());
            (g, r.timed_out() && Instant::now() >= at)
        }
    }
}

/// Runs a user callback; a panic is caught and returned as its message.
pub(crate) fn guarded(f: impl FnOnce()) -> Option<String> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(()) => None,
        Err(payload) => Some(panic_message(&payload)),
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    crate::process::payload_text(&**payload)
        .unwrap_or_else(|| "a panic payload that is not a string".to_string())
}

type OnSuccess<R> = Box<dyn FnOnce(&R) + Send>;
type OnError = Box<dyn FnOnce(&Error) + Send>;

/// The callbacks of an asynchronous call (Python's `callback` and `error_callback`). They run
/// in the parent, in the pool's collector thread, once the result is known and before
/// [`AsyncResult::get`] returns it. A panicking callback is caught: the result stays
/// available, [`AsyncResult::callback_panic`] reports the panic, and the pool goes on.
///
/// # Examples
///
/// ```
/// use multiproc::Callbacks;
/// let cbs = Callbacks::<u64>::new()
///     .on_success(|v| println!("got {v}"))
///     .on_error(|e| eprintln!("failed: {e}"));
/// # drop(cbs);
/// ```
pub struct Callbacks<R> {
    ok: Option<OnSuccess<R>>,
    err: Option<OnError>,
}

impl<R> Default for Callbacks<R> {
    fn default() -> Self {
        Callbacks {
            ok: None,
            err: None,
        }
    }
}

impl<R> std::fmt::Debug for Callbacks<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_success", &self.ok.is_some())
            .field("on_error", &self.err.is_some())
            .finish()
    }
}

impl<R> Callbacks<R> {
    /// No callbacks.
    ///
    /// # Examples
    ///
    /// ```
    /// let _none = multiproc::Callbacks::<u8>::new();
    /// ```
    pub fn new() -> Callbacks<R> {
        Callbacks::default()
    }

    /// Runs `f` with the value when the call succeeds (Python's `callback`).
    ///
    /// # Examples
    ///
    /// ```
    /// let _c = multiproc::Callbacks::<u8>::new().on_success(|v| assert!(*v < 10));
    /// ```
    pub fn on_success(mut self, f: impl FnOnce(&R) + Send + 'static) -> Self {
        self.ok = Some(Box::new(f));
        self
    }

    /// Runs `f` with the error when the call fails (Python's `error_callback`).
    ///
    /// # Examples
    ///
    /// ```
    /// let _c = multiproc::Callbacks::<u8>::new().on_error(|e| eprintln!("{e}"));
    /// ```
    pub fn on_error(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.err = Some(Box::new(f));
        self
    }
}

struct CellState<R> {
    value: Option<Result<R>>,
    /// Completion has begun (callbacks may be running).
    claimed: bool,
    done: bool,
    ok: bool,
    taken: bool,
    callbacks: Option<Callbacks<R>>,
    callback_panic: Option<String>,
    /// Threads blocked on the condition variable (a notify costs a system call: skip it when
    /// nobody waits).
    waiters: usize,
}

/// One value to come: the state behind an [`AsyncResult`].
pub(crate) struct Cell<R> {
    st: Mutex<CellState<R>>,
    cv: Condvar,
}

impl<R> Cell<R> {
    pub(crate) fn new(callbacks: Callbacks<R>) -> Cell<R> {
        Cell {
            st: Mutex::new(CellState {
                value: None,
                claimed: false,
                done: false,
                ok: false,
                taken: false,
                callbacks: Some(callbacks),
                callback_panic: None,
                waiters: 0,
            }),
            cv: Condvar::new(),
        }
    }

    /// Resolves the cell (the first call only), running the callbacks first.
    pub(crate) fn resolve(&self, outcome: Result<R>) {
        let callbacks = {
            let mut st = lock(&self.st);
            if st.claimed {
                return;
            }
            st.claimed = true;
            st.callbacks.take()
        };
        let mut panic = None;
        if let Some(cbs) = callbacks {
            panic = match &outcome {
                Ok(v) => cbs.ok.and_then(|f| guarded(|| f(v))),
                Err(e) => cbs.err.and_then(|f| guarded(|| f(e))),
            };
        }
        let mut st = lock(&self.st);
        st.ok = outcome.is_ok();
        st.value = Some(outcome);
        st.callback_panic = panic;
        st.done = true;
        let waiters = st.waiters;
        drop(st);
        if waiters > 0 {
            self.cv.notify_all();
        }
    }

    /// Waits until resolved or the deadline; true if resolved. On a collector thread a wait
    /// without a deadline does not wait (it could only end by this thread's own doing).
    fn wait_deadline(&self, deadline: Option<Instant>) -> bool {
        let mut st = lock(&self.st);
        if deadline.is_none() && !st.done && on_collector() {
            return false;
        }
        while !st.done {
            st.waiters += 1;
            let timed_out;
            (st, timed_out) = wait_until(&self.cv, st, deadline);
            st.waiters -= 1;
            if timed_out && !st.done {
                return false;
            }
        }
        true
    }

    /// The value (moved out), once resolved; `None` if `deadline` passed first.
    fn take(&self, deadline: Option<Instant>) -> Option<Result<R>> {
        if !self.wait_deadline(deadline) {
            return None;
        }
        let taken = || {
            Err(Error::new(
                ErrorKind::ResultTaken,
                "the result was already returned by an earlier get",
            ))
        };
        let mut st = lock(&self.st);
        if st.taken {
            return Some(taken());
        }
        st.taken = true;
        Some(st.value.take().unwrap_or_else(taken))
    }
}

impl<R: Send> Complete<R> for Cell<R> {
    fn complete(&self, _index: usize, outcome: Result<R>) {
        self.resolve(outcome);
    }
}

/// A result to come from a pool: Python's `AsyncResult` (`ApplyResult`, `MapResult`).
///
/// It resolves exactly once, with the task's value or with an [`Error`] that says what went
/// wrong: the task panicked ([`ErrorKind::Panicked`], with message and location), its worker
/// died ([`ErrorKind::WorkerDied`], with pid and signal), it ran past the pool's task timeout
/// ([`ErrorKind::TaskTimeout`]), its result could not cross back ([`ErrorKind::Codec`]) or the
/// pool was terminated first ([`ErrorKind::Cancelled`]). It never waits forever for a pool
/// that is gone: every way a pool ends resolves what it still held.
///
/// # Examples
///
/// ```no_run
/// fn square(x: u64) -> u64 { x * x }
///
/// multiproc::init();
/// let pool = multiproc::Pool::new(2)?;
/// let r = pool.apply_async(square, 7)?;
/// r.wait();
/// assert!(r.ready());
/// assert!(r.successful()?);
/// assert_eq!(r.get()?, 49);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsyncResult<R> {
    cell: Arc<Cell<R>>,
    cancel: Option<Canceller>,
}

/// Cancels the tasks behind a result; true if one was cancelled.
pub(crate) type Canceller = Box<dyn Fn() -> bool + Send + Sync>;

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    pub(crate) fn new(cell: Arc<Cell<R>>) -> AsyncResult<R> {
        AsyncResult { cell, cancel: None }
    }

    pub(crate) fn with_cancel(mut self, cancel: Canceller) -> AsyncResult<R> {
        self.cancel = Some(cancel);
        self
    }

    /// Cancels the call if it has not finished: a task still waiting is dropped; a task that
    /// is running has its worker killed and replaced (CPython cannot stop a running task).
    /// The result then resolves as [`ErrorKind::Cancelled`]. False if it had already
    /// finished (or, for a [`ThreadPool`](crate::ThreadPool), always: threads cannot be
    /// stopped).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(nap, 60_000)?;
    /// assert!(r.cancel());
    /// assert_eq!(r.get().unwrap_err().kind(), multiproc::ErrorKind::Cancelled);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn cancel(&self) -> bool {
        if self.ready() {
            return false;
        }
        self.cancel.as_ref().is_some_and(|c| c())
    }

    /// Waits for the result and returns it (the value moves out: a second `get` is an
    /// [`ErrorKind::ResultTaken`] error).
    ///
    /// Inside a process pool's callback (which runs on the collector thread, the one that
    /// delivers results) a result not yet ready is an [`ErrorKind::InvalidState`] error at
    /// once instead of a wait on itself; a timed get there can only time out.
    ///
    /// # Errors
    /// How the task failed (see the type's docs), [`ErrorKind::ResultTaken`], or
    /// [`ErrorKind::InvalidState`] inside a callback.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.apply_async(inc, 1)?.get()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<R> {
        // Without a deadline the wait ends only once the result is there.
        // Without a deadline the wait ends without the result only inside a callback.
        self.cell
            .take(None)
            .unwrap_or_else(|| Err(in_callback_error()))
    }

    /// Like [`get`](Self::get), giving up after `timeout` with
    /// [`AsyncGetTimeoutError::Timeout`] (the result stays to come: call again). A timeout
    /// too large for an `Instant` means forever. Python's `get(timeout)`.
    ///
    /// # Errors
    /// [`AsyncGetTimeoutError::Timeout`], or [`AsyncGetTimeoutError::Failed`] with what
    /// [`get`](Self::get) would return.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::AsyncGetTimeoutError;
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(nap, 500)?;
    /// assert!(matches!(r.get_timeout(Duration::from_millis(1)), Err(AsyncGetTimeoutError::Timeout)));
    /// assert_eq!(r.get_timeout(Duration::from_secs(60))?, 500);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> Result<R, AsyncGetTimeoutError> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    /// Like [`get_timeout`](Self::get_timeout), with a deadline.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(inc, 1)?;
    /// assert_eq!(r.get_deadline(Instant::now() + Duration::from_secs(60))?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_deadline(&self, deadline: Instant) -> Result<R, AsyncGetTimeoutError> {
        self.get_until(Some(deadline))
    }

    fn get_until(&self, deadline: Option<Instant>) -> Result<R, AsyncGetTimeoutError> {
        match self.cell.take(deadline) {
            None => Err(AsyncGetTimeoutError::Timeout),
            Some(r) => r.map_err(AsyncGetTimeoutError::Failed),
        }
    }

    /// Waits until the result is ready (inside a process pool's callback, returns at once:
    /// see [`get`](Self::get)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(inc, 1)?;
    /// r.wait();
    /// assert!(r.ready());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait(&self) {
        self.cell.wait_deadline(None);
    }

    /// Waits at most `timeout` for the result to be ready (Python's `wait(timeout)`, which
    /// returns `None` either way: here a timeout is an error). A timeout too large for an
    /// `Instant` means forever.
    ///
    /// # Errors
    /// [`AsyncWaitTimeoutError`] if the result was not ready in time.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(inc, 1)?;
    /// while r.wait_timeout(Duration::from_millis(10)).is_err() {}
    /// assert!(r.ready());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_timeout(&self, timeout: Duration) -> Result<(), AsyncWaitTimeoutError> {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    /// Like [`wait_timeout`](Self::wait_timeout), with a deadline.
    ///
    /// # Errors
    /// As [`wait_timeout`](Self::wait_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(inc, 1)?;
    /// r.wait_deadline(Instant::now() + Duration::from_secs(60))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn wait_deadline(&self, deadline: Instant) -> Result<(), AsyncWaitTimeoutError> {
        self.wait_until(Some(deadline))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> Result<(), AsyncWaitTimeoutError> {
        if self.cell.wait_deadline(deadline) {
            Ok(())
        } else {
            Err(AsyncWaitTimeoutError)
        }
    }

    /// Waits until the result is ready or `at`; whether it is ready.
    pub(crate) fn ready_by(&self, at: Instant) -> bool {
        self.cell.wait_deadline(Some(at))
    }

    /// Whether the result is ready (never waits).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(inc, 1)?;
    /// let _maybe = r.ready();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn ready(&self) -> bool {
        lock(&self.cell.st).done
    }

    /// Whether the task succeeded.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the result is not ready yet (Python's `ValueError`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(inc, 1)?;
    /// r.wait();
    /// assert!(r.successful()?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn successful(&self) -> Result<bool> {
        let st = lock(&self.cell.st);
        if !st.done {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the result is not ready yet",
            ));
        }
        Ok(st.ok)
    }

    /// The message of a panic in this result's callback, if it panicked.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn inc(x: i32) -> i32 { x + 1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let cbs = multiproc::Callbacks::new().on_success(|_: &i32| panic!("oops"));
    /// let r = pool.apply_async_with(inc, 1, cbs)?;
    /// assert_eq!(r.get()?, 2);
    /// assert_eq!(r.callback_panic().as_deref(), Some("oops"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn callback_panic(&self) -> Option<String> {
        lock(&self.cell.st).callback_panic.clone()
    }
}

struct MapState<R> {
    items: Vec<Option<R>>,
    left: usize,
    failed: bool,
}

/// The items of a `map`, gathered in order into one [`Cell`]. The first failure resolves it.
pub(crate) struct MapSink<R> {
    st: Mutex<MapState<R>>,
    out: Arc<Cell<Vec<R>>>,
}

impl<R> MapSink<R> {
    pub(crate) fn new(len: usize, out: Arc<Cell<Vec<R>>>) -> MapSink<R> {
        if len == 0 {
            out.resolve(Ok(Vec::new()));
        }
        MapSink {
            st: Mutex::new(MapState {
                items: (0..len).map(|_| None).collect(),
                left: len,
                failed: false,
            }),
            out,
        }
    }
}

impl<R> MapSink<R> {
    /// Resolves the list once every item is in.
    fn resolve_if_full(&self, mut st: MutexGuard<'_, MapState<R>>) {
        if st.left == 0 {
            let all: Vec<R> = std::mem::take(&mut st.items)
                .into_iter()
                .flatten()
                .collect();
            drop(st);
            self.out.resolve(Ok(all));
        }
    }
}

impl<R: Send> Complete<R> for MapSink<R> {
    fn complete_many(&self, first: usize, outcomes: Vec<Result<R>>) {
        let mut st = lock(&self.st);
        if st.failed {
            return;
        }
        let mut failure = None;
        for (i, outcome) in outcomes.into_iter().enumerate() {
            match outcome {
                Ok(v) => {
                    if let Some(slot) = st.items.get_mut(first + i)
                        && slot.replace(v).is_none()
                    {
                        st.left -= 1;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            st.failed = true;
            st.items.clear();
            drop(st);
            self.out.resolve(Err(e));
        } else {
            self.resolve_if_full(st);
        }
    }

    fn complete(&self, index: usize, outcome: Result<R>) {
        self.complete_many(index, vec![outcome]);
    }

    fn complete_all(&self, first: usize, values: Vec<R>) {
        let mut st = lock(&self.st);
        if st.failed {
            return;
        }
        let mut filled = 0;
        if let Some(slots) = st.items.get_mut(first..first + values.len()) {
            for (slot, v) in slots.iter_mut().zip(values) {
                if slot.replace(v).is_none() {
                    filled += 1;
                }
            }
        }
        st.left -= filled;
        self.resolve_if_full(st);
    }
}
