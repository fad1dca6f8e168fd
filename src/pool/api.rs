//! [`Pool`]: Python's `multiprocessing.Pool`, on the pool engine.

use crate::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use super::builder::PoolBuilder;
pub(crate) use super::encode::encode_items;
use super::engine::{Engine, Status};
use super::error::{PoolJoinTimeoutError, joined};
use super::imap::Imap;
use super::result::{AsyncResult, Callbacks, Cell, Decode, MapSink, in_callback_error};
use crate::error::{Error, ErrorKind, Result};
use crate::process::Target;

/// Counts of a pool's work so far, in items (a `map` chunk counts its items).
///
/// # Examples
///
/// ```no_run
/// fn id(x: u32) -> u32 { x }
/// multiproc::init();
/// let pool = multiproc::Pool::new(2)?;
/// pool.map(id, 0..100)?;
/// let p = pool.progress();
/// assert_eq!((p.submitted, p.completed, p.failed), (100, 100, 0));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Items submitted.
    pub submitted: u64,
    /// Items finished, successfully or not.
    pub completed: u64,
    /// Items that failed (included in `completed`), or were cancelled.
    pub failed: u64,
    /// Workers that died unexpectedly and were replaced.
    pub workers_replaced: u64,
}

/// A pool of worker processes: Python's `multiprocessing.Pool`.
///
/// Tasks are `fn(A) -> R` with serde `A` and `R`, as for [`Process`](crate::Process). Each
/// worker is a long-lived child with a task queue of its own in shared memory; the parent
/// hands out at most [`prefetch`](PoolBuilder::prefetch) tasks per worker and knows at every
/// moment which worker holds which task.
///
/// # What can go wrong, and what happens then
/// - A task that panics fails alone ([`ErrorKind::Panicked`], message and location).
/// - A worker that dies (killed, crashed, `exit()`) fails only the tasks it had taken, with
///   [`ErrorKind::WorkerDied`] ([`Error::pid`], [`Error::signal`]); tasks it had not yet
///   taken are handed to another worker; it is replaced, and the pool goes on.
/// - An argument that does not serialize fails the call that submits it; a result that does
///   not serialize fails its own task ([`ErrorKind::Codec`]).
/// - A callback that panics is caught ([`AsyncResult::callback_panic`]); nothing else is
///   affected.
/// - With a [`task_timeout`](PoolBuilder::task_timeout), a task that runs too long has its
///   worker killed and replaced ([`ErrorKind::TaskTimeout`]).
/// - A Ctrl-C: a terminal sends SIGINT to the whole process group, the workers included.
///   A program that does not handle SIGINT ends, and its workers with it. In one that does,
///   the first worker found dead of SIGINT stops the pool as [`terminate`](Self::terminate)
///   would: every unfinished task fails with [`ErrorKind::Interrupted`] (so `map` returns
///   that error at once) and no worker is started again. A SIGINT sent to the parent alone
///   reaches only its handler, which may call `terminate` itself.
///
/// # Ending a pool
/// [`close`](Self::close) stops new tasks (the workers exit once everything submitted is
/// done); [`terminate`](Self::terminate) kills the workers now and fails every unfinished task
/// with [`ErrorKind::Cancelled`]; [`join`](Self::join) waits for the end of either (and is an
/// [`ErrorKind::InvalidState`] error before them, as in Python).
///
/// **Dropping a `Pool` closes and joins it**: everything submitted runs to completion first
/// (unlike CPython's `with Pool()`, which terminates and silently drops outstanding work).
/// Call [`terminate`](Self::terminate) first for the other behaviour. Either way, no
/// [`AsyncResult`] or [`Imap`] can wait forever once the pool is gone.
///
/// # Examples
///
/// ```no_run
/// use multiproc::Pool;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> Result<(), multiproc::Error> {
///     multiproc::init();
///     let pool = Pool::new(2)?;
///     assert_eq!(pool.apply(square, 4)?, 16);
///     assert_eq!(pool.map(square, 1..=3)?, [1, 4, 9]);
///     pool.close();
///     pool.join()?;
///     Ok(())
/// }
/// ```
pub struct Pool {
    pub(crate) engine: Arc<Engine>,
    pub(crate) window: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("processes", &self.processes())
            .field("status", &self.engine.status())
            .finish()
    }
}

impl Pool {
    /// What cancels tasks `ids` from an `AsyncResult` (which does not keep the pool alive).
    fn canceller(&self, ids: std::ops::Range<u64>) -> super::result::Canceller {
        let engine = Arc::downgrade(&self.engine);
        Box::new(move || engine.upgrade().is_some_and(|e| e.cancel(ids.clone())))
    }

    /// A pool of `processes` workers with the default settings.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`]; `0` is [`ErrorKind::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(4)?;
    /// assert_eq!(pool.processes(), 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(processes: usize) -> Result<Pool> {
        PoolBuilder::default().processes(processes).build()
    }

    /// Settings for a pool.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().build()?; // one worker per CPU
    /// # drop(pool);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    /// The number of worker processes the pool keeps running.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// assert_eq!(multiproc::Pool::new(3)?.processes(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn processes(&self) -> usize {
        self.engine.config().processes
    }

    /// The pids of the workers now running (for monitoring, or for tests that kill them).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.pids().len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pids(&self) -> Vec<u32> {
        self.engine.pids()
    }

    /// How much work the pool has done so far: a progress report without polling results.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.progress().completed, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn progress(&self) -> Progress {
        let c = &self.engine.counters;
        Progress {
            submitted: c.submitted.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            workers_replaced: c.replaced.load(Ordering::Relaxed),
        }
    }

    /// Runs `f(arg)` in a worker and waits for its result (Python's `apply`).
    ///
    /// Called inside one of this pool's callbacks (they run on its collector thread, which
    /// would have to deliver the result it waits for), it submits nothing and fails at once
    /// with [`ErrorKind::InvalidState`]: submit with [`apply_async_with`](Self::apply_async_with)
    /// there instead.
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async), then as [`AsyncResult::get`];
    /// [`ErrorKind::InvalidState`] inside a callback of this pool.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn add(p: (i32, i32)) -> i32 { p.0 + p.1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.apply(add, (2, 3))?, 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if !self.engine.may_collect() {
            // A callback of this pool: its thread is the one that would deliver the result.
            return Err(in_callback_error());
        }
        // This thread waits for the result anyway: it collects it itself, straight from the
        // worker, instead of waiting for the collector thread to pass it on.
        let target = Target::of(f)?;
        let e = encode_items(std::iter::once(&arg))?;
        let cell = Arc::new(Cell::new(Callbacks::new()));
        let sink = Arc::new(Decode::<R, Cell<R>>::new(cell.clone()));
        let mut task = e.into_task(target, sink, 0);
        task.direct = true;
        self.engine.submit(vec![task])?;
        let r = AsyncResult::new(cell);
        self.engine
            .collect_direct(&|| r.ready(), &|at| r.ready_by(at));
        r.get()
    }

    /// Submits `f(arg)` and returns at once (Python's `apply_async`).
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if `arg` does not serialize (nothing is submitted);
    /// [`ErrorKind::Closed`] after [`close`](Self::close) or [`terminate`](Self::terminate);
    /// [`ErrorKind::BuildMismatch`] if `f` cannot cross to another process.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let pending: Vec<_> = (0..10).map(|i| pool.apply_async(square, i)).collect::<Result<_, _>>()?;
    /// let total: u64 = pending.iter().map(|r| r.get()).sum::<Result<u64, _>>()?;
    /// assert_eq!(total, 285);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.apply_async_with(f, arg, Callbacks::new())
    }

    /// [`apply_async`](Self::apply_async) with a callback and an error callback, run in the
    /// parent when the result is known (Python's `callback=` and `error_callback=`).
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::sync::{Arc, atomic::{AtomicU64, Ordering}};
    /// fn square(x: u64) -> u64 { x * x }
    ///
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let sum = Arc::new(AtomicU64::new(0));
    /// let s = sum.clone();
    /// let cbs = multiproc::Callbacks::new().on_success(move |v: &u64| {
    ///     s.fetch_add(*v, Ordering::Relaxed);
    /// });
    /// pool.apply_async_with(square, 5, cbs)?.wait();
    /// assert_eq!(sum.load(Ordering::Relaxed), 25);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        arg: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let target = Target::of(f)?;
        let e = encode_items(std::iter::once(&arg))?;
        let cell = Arc::new(Cell::new(callbacks));
        let sink = Arc::new(Decode::<R, Cell<R>>::new(cell.clone()));
        let ids = self.engine.submit(vec![e.into_task(target, sink, 0)])?;
        Ok(AsyncResult::new(cell).with_cancel(self.canceller(ids)))
    }

    /// Applies `f` to every item, in parallel, and returns the results in order (Python's
    /// `map`). The input is collected first and cut into chunks of CPython's default size,
    /// `ceil(len / (4 × processes))`. The first failure fails the whole call.
    ///
    /// # Errors
    /// As [`map_async`](Self::map_async), then as [`AsyncResult::get`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn double(x: i64) -> i64 { 2 * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map(double, vec![1, 2, 3])?, [2, 4, 6]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, iterable, None, Callbacks::new())?
            .get()
    }

    /// [`map`](Self::map) with an explicit chunk size (items per task).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a chunk size of 0; otherwise as [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn double(x: i64) -> i64 { 2 * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.map_chunked(double, 0..1000, 100)?.len(), 1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_chunked<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: usize,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, iterable, Some(chunksize), Callbacks::new())?
            .get()
    }

    /// Submits a [`map`](Self::map) and returns at once; the result is the whole list.
    ///
    /// # Errors
    /// [`ErrorKind::Codec`] if an item does not serialize (nothing is submitted);
    /// [`ErrorKind::Closed`] on a closed pool.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn double(x: i64) -> i64 { 2 * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let r = pool.map_async(double, [5, 6])?;
    /// assert_eq!(r.get()?, [10, 12]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_with(f, iterable, None, Callbacks::new())
    }

    /// [`map_async`](Self::map_async) with a chunk size (`None`: CPython's default) and
    /// callbacks for the whole list.
    ///
    /// # Errors
    /// As [`map_async`](Self::map_async) and [`map_chunked`](Self::map_chunked).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn double(x: i64) -> i64 { 2 * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let cbs = multiproc::Callbacks::new().on_success(|v: &Vec<i64>| println!("{} results", v.len()));
    /// pool.map_async_with(double, 0..10, Some(3), cbs)?.wait();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        if chunksize == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "chunksize must be at least 1",
            ));
        }
        if self.engine.status() != Status::Running {
            return Err(super::closed_error());
        }
        let target = Target::of(f)?;
        let items: Vec<A> = iterable.into_iter().collect();
        let size =
            chunksize.unwrap_or_else(|| super::default_chunksize(items.len(), self.processes()));
        let out = Arc::new(Cell::new(callbacks));
        let sink = Arc::new(Decode::<R, MapSink<R>>::new(Arc::new(MapSink::new(
            items.len(),
            out.clone(),
        ))));
        let mut tasks = Vec::with_capacity(items.len().div_ceil(size));
        for (k, chunk) in items.chunks(size).enumerate() {
            tasks.push(encode_items(chunk)?.into_task(target, sink.clone(), k * size));
        }
        let mut result = AsyncResult::new(out);
        if !tasks.is_empty() {
            let ids = self.engine.submit(tasks)?;
            result = result.with_cancel(self.canceller(ids));
        }
        Ok(result)
    }

    /// Python's `starmap`: in Rust the function takes its arguments as one tuple, so this is
    /// [`map`](Self::map) over tuples.
    ///
    /// # Errors
    /// As [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn add(p: (u32, u32)) -> u32 { p.0 + p.1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map(f, iterable)
    }

    /// Python's `starmap_async`: [`map_async`](Self::map_async) over tuples.
    ///
    /// # Errors
    /// As [`map_async`](Self::map_async).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn add(p: (u32, u32)) -> u32 { p.0 + p.1 }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.starmap_async(add, [(1, 2)])?.get()?, [3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap_async<A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, iterable)
    }

    /// Applies `f` to every item, yielding results in input order as they come (Python's
    /// `imap`, chunk size 1). The input is pulled lazily, a bounded window ahead
    /// ([`PoolBuilder::window`]), so it may be endless.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] on a closed pool; items fail one by one inside the iterator.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let first: Vec<u64> = pool.imap(square, 0..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(first, [0, 1, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<'a, A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<Imap<'a, R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_chunked(f, iterable, 1)
    }

    /// [`imap`](Self::imap) with `chunksize` items per task.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a chunk size of 0; as [`imap`](Self::imap).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let n = pool.imap_chunked(square, 0..1000, 50)?.count();
    /// assert_eq!(n, 1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_chunked<'a, A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: usize,
    ) -> Result<Imap<'a, R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        Imap::new(&self.engine, f, iterable, chunksize, self.window, true)
    }

    /// Like [`imap`](Self::imap), yielding results in the order they finish (Python's
    /// `imap_unordered`).
    ///
    /// # Errors
    /// As [`imap`](Self::imap).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// let mut all: Vec<u64> = pool.imap_unordered(square, 0..4)?.collect::<Result<_, _>>()?;
    /// all.sort();
    /// assert_eq!(all, [0, 1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<'a, A, R, I>(&self, f: fn(A) -> R, iterable: I) -> Result<Imap<'a, R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_unordered_chunked(f, iterable, 1)
    }

    /// [`imap_unordered`](Self::imap_unordered) with `chunksize` items per task.
    ///
    /// # Errors
    /// As [`imap_chunked`](Self::imap_chunked).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn square(x: u64) -> u64 { x * x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(2)?;
    /// assert_eq!(pool.imap_unordered_chunked(square, 0..100, 10)?.count(), 100);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered_chunked<'a, A, R, I>(
        &self,
        f: fn(A) -> R,
        iterable: I,
        chunksize: usize,
    ) -> Result<Imap<'a, R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        Imap::new(&self.engine, f, iterable, chunksize, self.window, false)
    }

    /// Accepts no more tasks; the workers exit once everything submitted is done (Python's
    /// `close`). Idempotent.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn id(x: u8) -> u8 { x }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// pool.close();
    /// assert_eq!(pool.apply(id, 1).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.engine.close();
    }

    /// Kills the workers now (SIGKILL) and fails every unfinished task with
    /// [`ErrorKind::Cancelled`] (Python's `terminate`). Returns once the workers are reaped.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn nap(ms: u64) { std::thread::sleep(std::time::Duration::from_millis(ms)) }
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// let r = pool.apply_async(nap, 60_000)?;
    /// pool.terminate();
    /// assert_eq!(r.get().unwrap_err().kind(), multiproc::ErrorKind::Cancelled);
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) {
        self.engine.terminate();
    }

    /// Waits until the pool has ended after [`close`](Self::close) or
    /// [`terminate`](Self::terminate): every worker has exited and been reaped.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] if the pool is still running (Python's
    /// `ValueError('Pool is still running')`).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// assert_eq!(pool.join().unwrap_err().kind(), multiproc::ErrorKind::InvalidState);
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.engine.join(None).map(drop)
    }

    /// Like [`join`](Self::join), waiting at most `timeout` (a timeout too large for an
    /// `Instant` means forever).
    ///
    /// # Errors
    /// [`PoolJoinTimeoutError::Timeout`] if the pool is still winding down (call again);
    /// [`PoolJoinTimeoutError::Failed`] as [`join`](Self::join).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use multiproc::PoolJoinTimeoutError;
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// pool.close();
    /// while let Err(e) = pool.join_timeout(Duration::from_millis(100)) {
    ///     assert!(matches!(e, PoolJoinTimeoutError::Timeout), "{e}");
    /// }
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), PoolJoinTimeoutError> {
        joined(self.engine.join(Instant::now().checked_add(timeout)))
    }

    /// Like [`join_timeout`](Self::join_timeout), with a deadline.
    ///
    /// # Errors
    /// As [`join_timeout`](Self::join_timeout).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// use std::time::{Duration, Instant};
    /// multiproc::init();
    /// let pool = multiproc::Pool::new(1)?;
    /// pool.terminate();
    /// pool.join_deadline(Instant::now() + Duration::from_secs(60))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_deadline(&self, deadline: Instant) -> Result<(), PoolJoinTimeoutError> {
        joined(self.engine.join(Some(deadline)))
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.engine.close();
        let _ = self.engine.join(None);
    }
}
