//! [`ThreadPool`]: the Pool's API on threads of this process, for closures.
//!
//! Python's `multiprocessing.pool.ThreadPool`. Nothing is serialized: tasks are closures and
//! values move. The results are the same [`AsyncResult`]s; a panicking task fails alone.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

mod imap;

pub use imap::ThreadImap;

use super::builder::available_cpus;
use super::engine::Status;
use super::error::{PoolJoinTimeoutError, joined};
use super::imap::ImapSink;
use super::result::{
    AsyncResult, Callbacks, Cell, Complete, MapSink, lock, panic_message, wait_until,
};
use crate::error::{Error, ErrorKind, Result};

/// A queued task: runs, or is cancelled (and then resolves as such).
pub(crate) trait Job: Send {
    fn run(self: Box<Self>);
    fn cancel(self: Box<Self>);
}

struct Call<F, R> {
    f: F,
    index: usize,
    sink: Arc<dyn Complete<R>>,
}

impl<F: FnOnce() -> R + Send, R: Send> Job for Call<F, R> {
    fn run(self: Box<Self>) {
        let Call { f, index, sink } = *self;
        let outcome = catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
            Error::new(ErrorKind::Panicked, "the task panicked in its thread")
                .with_panic(panic_message(&p), None)
        });
        sink.complete(index, outcome);
    }

    fn cancel(self: Box<Self>) {
        self.sink.complete(
            self.index,
            Err(Error::new(
                ErrorKind::Cancelled,
                "the thread pool was terminated before the task ran",
            )),
        );
    }
}

struct Shared {
    st: Mutex<ThreadState>,
    work: Condvar,
    ended: Condvar,
}

struct ThreadState {
    status: Status,
    queue: VecDeque<Box<dyn Job>>,
    /// Threads still running.
    live: usize,
    /// Threads that finished their initializer (or failed it).
    initialized: usize,
    init_error: Option<String>,
}

/// Settings for a new [`ThreadPool`].
///
/// # Examples
///
/// ```
/// let pool = multiproc::ThreadPool::builder()
///     .threads(2)
///     .name_prefix("io")
///     .initializer(|| println!("thread up"))
///     .build()?;
/// assert_eq!(pool.threads(), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ThreadPoolBuilder {
    threads: Option<usize>,
    prefix: String,
    init: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl std::fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("threads", &self.threads)
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl ThreadPoolBuilder {
    /// The number of threads (default: the CPUs this process may use; `0` is an error).
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiproc::ThreadPool::builder().threads(0).build().unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::InvalidArgument);
    /// ```
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = Some(n);
        self
    }

    /// Names the threads `<prefix>-1`, `<prefix>-2`, ... (default `ThreadPoolWorker`).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::builder().threads(1).name_prefix("net").build()?;
    /// let name = pool.apply(|_: ()| std::thread::current().name().map(str::to_string), ())?;
    /// assert_eq!(name.as_deref(), Some("net-1"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Runs `f` in each thread when it starts. If it panics, [`build`](Self::build) fails with
    /// [`ErrorKind::Initializer`].
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiproc::ThreadPool::builder().initializer(|| panic!("no")).build().unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::Initializer);
    /// ```
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.init = Some(Arc::new(f));
        self
    }

    /// Starts the threads; returns once each has run the initializer.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for 0 threads; [`ErrorKind::Initializer`] if the
    /// initializer panicked; [`ErrorKind::Io`] if a thread could not be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::builder().threads(3).build()?;
    /// assert_eq!(pool.threads(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<ThreadPool> {
        let n = self.threads.unwrap_or_else(available_cpus);
        if n == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a thread pool needs at least 1 thread",
            ));
        }
        let shared = Arc::new(Shared {
            st: Mutex::new(ThreadState {
                status: Status::Running,
                queue: VecDeque::new(),
                live: 0,
                initialized: 0,
                init_error: None,
            }),
            work: Condvar::new(),
            ended: Condvar::new(),
        });
        let pool = ThreadPool {
            shared: shared.clone(),
            handles: Mutex::new(Vec::new()),
            threads: n,
        };
        for k in 1..=n {
            let s = shared.clone();
            let init = self.init.clone();
            lock(&shared.st).live += 1;
            let spawned = std::thread::Builder::new()
                .name(format!("{}-{k}", self.prefix))
                .spawn(move || serve(&s, init));
            match spawned {
                Ok(h) => lock(&pool.handles).push(h),
                Err(e) => {
                    lock(&shared.st).live -= 1;
                    pool.terminate();
                    return Err(Error::io("cannot start a pool thread", e));
                }
            }
        }
        let mut st = lock(&shared.st);
        while st.initialized < n {
            st = shared.ended.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        if let Some(why) = st.init_error.clone() {
            drop(st);
            pool.terminate();
            return Err(Error::new(
                ErrorKind::Initializer,
                format!("the thread pool's initializer panicked: {why}"),
            ));
        }
        drop(st);
        Ok(pool)
    }
}

/// One pool thread's life.
fn serve(shared: &Shared, init: Option<Arc<dyn Fn() + Send + Sync>>) {
    let failed = init.and_then(|f| catch_unwind(AssertUnwindSafe(|| f())).err());
    {
        let mut st = lock(&shared.st);
        st.initialized += 1;
        if let Some(p) = failed {
            st.init_error = Some(panic_message(&p));
            st.status = Status::Terminated;
        }
        shared.ended.notify_all();
    }
    loop {
        let job = {
            let mut st = lock(&shared.st);
            loop {
                if st.status == Status::Terminated {
                    break None;
                }
                if let Some(job) = st.queue.pop_front() {
                    break Some(job);
                }
                if st.status == Status::Closed {
                    break None;
                }
                st = shared.work.wait(st).unwrap_or_else(|p| p.into_inner());
            }
        };
        match job {
            Some(job) => job.run(),
            None => break,
        }
    }
    let mut st = lock(&shared.st);
    st.live -= 1;
    shared.ended.notify_all();
    if st.status == Status::Closed && st.queue.is_empty() {
        shared.work.notify_all();
    }
}

/// A pool of threads with the [`Pool`](crate::Pool)'s API, running closures: Python's
/// `multiprocessing.pool.ThreadPool`.
///
/// A panicking task fails alone ([`ErrorKind::Panicked`]); callbacks run in the thread that
/// ran the task, caught. [`terminate`](Self::terminate) cancels the tasks not yet started
/// ([`ErrorKind::Cancelled`]); threads cannot be killed, so running tasks finish. **Dropping
/// a `ThreadPool` closes and joins it.**
///
/// # Examples
///
/// ```
/// use multiproc::ThreadPool;
///
/// let pool = ThreadPool::new(2)?;
/// let offset = 10;
/// assert_eq!(pool.apply(move |x: i32| x + offset, 5)?, 15);
/// assert_eq!(pool.map(|x: u32| x * x, 1..=3)?, [1, 4, 9]);
/// pool.close();
/// pool.join()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ThreadPool {
    shared: Arc<Shared>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    threads: usize,
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

impl ThreadPool {
    /// A pool of `threads` threads.
    ///
    /// # Errors
    /// As [`ThreadPoolBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// # drop(pool);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(threads: usize) -> Result<ThreadPool> {
        ThreadPool::builder().threads(threads).build()
    }

    /// Settings for a thread pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::builder().build()?;
    /// # drop(pool);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder {
            threads: None,
            prefix: "ThreadPoolWorker".into(),
            init: None,
        }
    }

    /// The number of threads.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::ThreadPool::new(2)?.threads(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn threads(&self) -> usize {
        self.threads
    }

    pub(crate) fn push(&self, jobs: Vec<Box<dyn Job>>) -> Result<()> {
        let mut st = lock(&self.shared.st);
        if st.status != Status::Running {
            return Err(super::closed_error());
        }
        let n = jobs.len();
        st.queue.extend(jobs);
        drop(st);
        if n == 1 {
            self.shared.work.notify_one();
        } else {
            self.shared.work.notify_all();
        }
        Ok(())
    }

    /// Runs `f(arg)` in a pool thread and waits for it.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] on a closed pool; [`ErrorKind::Panicked`] if `f` panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// assert_eq!(pool.apply(|s: &str| s.len(), "four")?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply<A, R, F>(&self, f: F, arg: A) -> Result<R>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.apply_async(f, arg)?.get()
    }

    /// Submits `f(arg)` and returns at once.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] on a closed pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// let r = pool.apply_async(|x: u64| x * 3, 3)?;
    /// assert_eq!(r.get()?, 9);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async<A, R, F>(&self, f: F, arg: A) -> Result<AsyncResult<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        self.apply_async_with(f, arg, Callbacks::new())
    }

    /// [`apply_async`](Self::apply_async) with callbacks.
    ///
    /// # Errors
    /// As [`apply_async`](Self::apply_async).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// let cbs = multiproc::Callbacks::new().on_success(|v: &u64| assert_eq!(*v, 4));
    /// pool.apply_async_with(|x: u64| x * 2, 2, cbs)?.wait();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn apply_async_with<A, R, F>(
        &self,
        f: F,
        arg: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>>
    where
        F: FnOnce(A) -> R + Send + 'static,
        A: Send + 'static,
        R: Send + 'static,
    {
        let cell = Arc::new(Cell::new(callbacks));
        let job = Call {
            f: move || f(arg),
            index: 0,
            sink: cell.clone() as Arc<dyn Complete<R>>,
        };
        self.push(vec![Box::new(job)])?;
        Ok(AsyncResult::new(cell))
    }

    /// Applies `f` to every item and returns the results in order; the first failure fails
    /// the call.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] on a closed pool; [`ErrorKind::Panicked`] if a call panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// assert_eq!(pool.map(|x: i32| -x, [1, 2])?, [-1, -2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map<A, R, F, I>(&self, f: F, iterable: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async(f, iterable)?.get()
    }

    /// Submits a [`map`](Self::map) and returns at once.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] on a closed pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// assert_eq!(pool.map_async(|x: i32| x + 1, [1])?.get()?, [2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn map_async<A, R, F, I>(&self, f: F, iterable: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        let items: Vec<A> = iterable.into_iter().collect();
        let out = Arc::new(Cell::new(Callbacks::new()));
        let sink: Arc<dyn Complete<R>> = Arc::new(MapSink::new(items.len(), out.clone()));
        let f = Arc::new(f);
        let jobs: Vec<Box<dyn Job>> = items
            .into_iter()
            .enumerate()
            .map(|(index, a)| {
                let f = f.clone();
                Box::new(Call {
                    f: move || f(a),
                    index,
                    sink: sink.clone(),
                }) as Box<dyn Job>
            })
            .collect();
        if !jobs.is_empty() {
            self.push(jobs)?;
        }
        Ok(AsyncResult::new(out))
    }

    /// Python's `starmap`: [`map`](Self::map) over tuples.
    ///
    /// # Errors
    /// As [`map`](Self::map).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// assert_eq!(pool.starmap(|(a, b): (i32, i32)| a * b, [(2, 3)])?, [6]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn starmap<A, R, F, I>(&self, f: F, iterable: I) -> Result<Vec<R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map(f, iterable)
    }

    /// Results in input order as they come; the input is pulled lazily, at most `window`
    /// items ahead of the caller (4 per thread).
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] on a closed pool.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// let v: Vec<u64> = pool.imap(|x: u64| x + 1, 0..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(v, [1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap<'a, A, R, F, I>(&self, f: F, iterable: I) -> Result<ThreadImap<'a, A, R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_inner(f, iterable, true)
    }

    /// Like [`imap`](Self::imap), in the order results finish.
    ///
    /// # Errors
    /// As [`imap`](Self::imap).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(2)?;
    /// assert_eq!(pool.imap_unordered(|x: u64| x, 0..10)?.count(), 10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn imap_unordered<'a, A, R, F, I>(&self, f: F, iterable: I) -> Result<ThreadImap<'a, A, R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        self.imap_inner(f, iterable, false)
    }

    fn imap_inner<'a, A, R, F, I>(
        &self,
        f: F,
        iterable: I,
        in_order: bool,
    ) -> Result<ThreadImap<'a, A, R>>
    where
        F: Fn(A) -> R + Send + Sync + 'static,
        A: Send + 'static,
        R: Send + 'static,
        I: IntoIterator<Item = A>,
        I::IntoIter: 'a,
    {
        if lock(&self.shared.st).status != Status::Running {
            return Err(super::closed_error());
        }
        let mut it = ThreadImap {
            shared: self.shared.clone(),
            f: Arc::new(f),
            input: Box::new(iterable.into_iter()),
            sink: Arc::new(ImapSink::new(in_order)),
            window: 4 * self.threads,
            pulled: 0,
            yielded: 0,
            input_done: false,
        };
        it.fill();
        Ok(it)
    }

    /// Accepts no more tasks; the threads end once the queue is empty.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// pool.close();
    /// assert_eq!(pool.apply(|x: u8| x, 1).unwrap_err().kind(), multiproc::ErrorKind::Closed);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        let mut st = lock(&self.shared.st);
        if st.status == Status::Running {
            st.status = Status::Closed;
        }
        drop(st);
        self.shared.work.notify_all();
    }

    /// Cancels every task not yet started ([`ErrorKind::Cancelled`]); running tasks finish.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// pool.terminate();
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn terminate(&self) {
        let jobs: Vec<Box<dyn Job>> = {
            let mut st = lock(&self.shared.st);
            st.status = Status::Terminated;
            st.queue.drain(..).collect()
        };
        self.shared.work.notify_all();
        for j in jobs {
            j.cancel();
        }
    }

    /// Waits for every thread to end after [`close`](Self::close) or
    /// [`terminate`](Self::terminate).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidState`] while the pool is running.
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// assert!(pool.join().is_err());
    /// pool.close();
    /// pool.join()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) -> Result<()> {
        self.join_until(None).map(drop)
    }

    /// Like [`join`](Self::join), waiting at most `timeout`.
    ///
    /// # Errors
    /// [`PoolJoinTimeoutError::Timeout`] if a thread is still running a task;
    /// [`PoolJoinTimeoutError::Failed`] as [`join`](Self::join).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// pool.close();
    /// pool.join_timeout(std::time::Duration::from_secs(10))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> std::result::Result<(), PoolJoinTimeoutError> {
        joined(self.join_until(Instant::now().checked_add(timeout)))
    }

    /// Like [`join_timeout`](Self::join_timeout), with a deadline.
    ///
    /// # Errors
    /// As [`join_timeout`](Self::join_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// pool.terminate();
    /// pool.join_deadline(Instant::now() + Duration::from_secs(10))?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_deadline(
        &self,
        deadline: Instant,
    ) -> std::result::Result<(), PoolJoinTimeoutError> {
        joined(self.join_until(Some(deadline)))
    }

    fn join_until(&self, deadline: Option<Instant>) -> Result<bool> {
        let mut st = lock(&self.shared.st);
        if st.status == Status::Running {
            return Err(Error::new(
                ErrorKind::InvalidState,
                "the pool is still running: call close() or terminate() before join()",
            ));
        }
        let me = std::thread::current().id();
        if lock(&self.handles).iter().any(|h| h.thread().id() == me) {
            // Called from one of the pool's own tasks: that thread cannot wait for itself.
            return Ok(false);
        }
        while st.live > 0 {
            let timed_out;
            (st, timed_out) = wait_until(&self.shared.ended, st, deadline);
            if timed_out && st.live > 0 {
                return Ok(false);
            }
        }
        drop(st);
        let me = std::thread::current().id();
        for h in lock(&self.handles).drain(..) {
            if h.thread().id() != me {
                let _ = h.join();
            }
        }
        Ok(true)
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.close();
        let _ = self.join();
    }
}

#[cfg(test)]
mod tests;
