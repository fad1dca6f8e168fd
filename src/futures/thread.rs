//! [`ThreadPoolExecutor`]: Python's `concurrent.futures.ThreadPoolExecutor`, on the
//! [`ThreadPool`](crate::ThreadPool).

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Base;
use super::executor::Executor;
use super::future::{Future, Inner, cancelled_error};
use crate::error::{Error, ErrorKind, Result};
use crate::{ThreadPool, ThreadPoolBuilder};

/// Settings for a [`ThreadPoolExecutor`].
///
/// # Examples
///
/// ```
/// let ex = multiproc::ThreadPoolExecutor::builder()
///     .max_workers(2)
///     .thread_name_prefix("io")
///     .initializer(|| ())
///     .build()?;
/// assert_eq!(multiproc::Executor::max_workers(&ex), 2);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ThreadPoolExecutorBuilder {
    workers: Option<usize>,
    /// The thread name prefix and the initializer go straight to the pool's own builder.
    pool: ThreadPoolBuilder,
}

impl std::fmt::Debug for ThreadPoolExecutorBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolExecutorBuilder")
            .field("workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl ThreadPoolExecutorBuilder {
    /// The number of threads; CPython's default is `min(32, cpus + 4)`. `0` is an
    /// [`ErrorKind::InvalidArgument`] error.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiproc::ThreadPoolExecutor::builder().max_workers(0).build().unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::InvalidArgument);
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Names the threads `<prefix>-1`, `<prefix>-2`, ... (default `ThreadPoolExecutor`).
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::builder().max_workers(1).thread_name_prefix("w").build()?;
    /// let name = ex.submit_closure(|| std::thread::current().name().map(str::to_string))?.result()?;
    /// assert_eq!(name.as_deref(), Some("w-1"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.pool = self.pool.name_prefix(prefix);
        self
    }

    /// Runs `f` in each thread as it starts; a panic fails [`build`](Self::build) with
    /// [`ErrorKind::Initializer`].
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiproc::ThreadPoolExecutor::builder().initializer(|| panic!("x")).build().unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::Initializer);
    /// ```
    pub fn initializer(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.pool = self.pool.initializer(f);
        self
    }

    /// Starts the threads.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for 0 workers, [`ErrorKind::Initializer`], or a
    /// thread that cannot start.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::builder().build()?;
    /// # drop(ex);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<ThreadPoolExecutor> {
        let workers = self.workers.unwrap_or_else(|| {
            (std::thread::available_parallelism().map_or(1, |n| n.get()) + 4).min(32)
        });
        if workers == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max_workers must be greater than 0",
            ));
        }
        Ok(ThreadPoolExecutor {
            base: Base::new(self.pool.threads(workers).build()?, workers),
        })
    }
}

/// Python's `concurrent.futures.ThreadPoolExecutor`: calls run on threads of this process.
/// Besides [`Executor::submit`] (for `fn` items, so that the same program runs on
/// processes), it takes closures ([`submit_closure`](Self::submit_closure)).
///
/// # Examples
///
/// ```
/// use multiproc::{Executor, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(3)?;
/// let fs: Vec<_> = (0..6u64).map(|i| ex.submit(|x: u64| x + 1, i)).collect::<Result<_, _>>()?;
/// ex.shutdown(true, false);
/// assert!(fs.iter().all(|f| f.done()));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ThreadPoolExecutor {
    base: Base<ThreadPool>,
}

impl std::fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.base.workers)
            .finish()
    }
}

/// Resolves its future as cancelled if the job is dropped without running.
struct Job<R: Send + 'static>(Arc<Inner<R>>);

impl<R: Send + 'static> Drop for Job<R> {
    fn drop(&mut self) {
        self.0
            .finish(Err(cancelled_error("the executor dropped the call")));
    }
}

/// A call on its way to a pool thread.
struct Call<F, R: Send + 'static> {
    f: F,
    job: Job<R>,
}

impl<F: FnOnce() -> R + Send, R: Send + 'static> crate::pool::thread::Job for Call<F, R> {
    fn run(self: Box<Self>) {
        let Call { f, job } = *self;
        job.0.run(f);
    }

    fn cancel(self: Box<Self>) {
        // Dropping the job resolves its future as cancelled.
    }
}

impl ThreadPoolExecutor {
    /// An executor of `max_workers` threads.
    ///
    /// # Errors
    /// As [`ThreadPoolExecutorBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(3)?;
    /// # drop(ex);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(max_workers: usize) -> Result<ThreadPoolExecutor> {
        Self::builder().max_workers(max_workers).build()
    }

    /// Settings for an executor.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::builder().max_workers(1).build()?;
    /// # drop(ex);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> ThreadPoolExecutorBuilder {
        ThreadPoolExecutorBuilder {
            workers: None,
            pool: ThreadPool::builder().name_prefix("ThreadPoolExecutor"),
        }
    }

    /// Schedules the closure `f`.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`] after shutdown.
    ///
    /// # Examples
    ///
    /// ```
    /// let ex = multiproc::ThreadPoolExecutor::new(1)?;
    /// let v = vec![1, 2, 3];
    /// assert_eq!(ex.submit_closure(move || v.iter().sum::<i32>())?.result()?, 6);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn submit_closure<R, F>(&self, f: F) -> Result<Future<R>>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        let inner = Inner::<R>::new();
        self.base.pool.push(vec![Box::new(Call {
            f,
            job: Job(inner.clone()),
        })])?;
        self.base.track(std::slice::from_ref(&inner));
        Ok(Future::from_inner(inner))
    }
}

impl Executor for ThreadPoolExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_closure(move || f(arg))
    }

    fn max_workers(&self) -> usize {
        self.base.workers
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.base.shutdown(wait, cancel_futures)
    }
}
