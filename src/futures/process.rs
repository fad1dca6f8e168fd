//! [`ProcessPoolExecutor`]: Python's `concurrent.futures.ProcessPoolExecutor`, as a second
//! face of the pool engine (no pool of its own).

use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::Base;
use super::executor::Executor;
use super::future::{Control, FanOut, Future, Inner, One};
use crate::error::Result;
use crate::pool::api::encode_items;
use crate::pool::engine::Engine;
use crate::pool::result::Decode;
use crate::process::Target;
use crate::{Pool, PoolBuilder, StartMethod};

/// Settings for a [`ProcessPoolExecutor`].
///
/// # Examples
///
/// ```
/// let b = multiproc::ProcessPoolExecutor::builder().max_workers(2).max_tasks_per_child(100);
/// # drop(b);
/// ```
#[derive(Debug)]
pub struct ProcessPoolExecutorBuilder {
    pool: PoolBuilder,
    workers: Option<usize>,
}

impl ProcessPoolExecutorBuilder {
    /// The number of worker processes; CPython's default is the CPUs this process may use.
    /// `0` is an [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) error.
    ///
    /// # Examples
    ///
    /// ```
    /// let e = multiproc::ProcessPoolExecutor::builder().max_workers(0).build().unwrap_err();
    /// assert_eq!(e.kind(), multiproc::ErrorKind::InvalidArgument);
    /// ```
    pub fn max_workers(mut self, n: usize) -> Self {
        self.workers = Some(n);
        self
    }

    /// Runs `f(arg)` in each worker as it starts (Python's `initializer`, `initargs`).
    ///
    /// # Examples
    ///
    /// ```
    /// fn hello(_: ()) {}
    /// let b = multiproc::ProcessPoolExecutor::builder().initializer(hello, ());
    /// # drop(b);
    /// ```
    pub fn initializer<A>(mut self, f: fn(A), arg: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        self.pool = self.pool.initializer(f, arg);
        self
    }

    /// Replaces each worker after `n` calls (Python's `max_tasks_per_child`).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::ProcessPoolExecutor::builder().max_tasks_per_child(1);
    /// # drop(b);
    /// ```
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.pool = self.pool.max_tasks_per_child(n);
        self
    }

    /// How workers start (Python's `mp_context`).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::ProcessPoolExecutor::builder().start_method(multiproc::StartMethod::Spawn);
    /// # drop(b);
    /// ```
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.pool = self.pool.start_method(method);
        self
    }

    /// Beyond CPython: a call that runs longer than `limit` has its worker killed and
    /// replaced, and fails with [`ErrorKind::TaskTimeout`](crate::ErrorKind::TaskTimeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::ProcessPoolExecutor::builder().task_timeout(std::time::Duration::from_secs(5));
    /// # drop(b);
    /// ```
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.pool = self.pool.task_timeout(limit);
        self
    }

    /// Starts the workers.
    ///
    /// # Errors
    /// As [`PoolBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let ex = multiproc::ProcessPoolExecutor::builder().max_workers(2).build()?;
    /// # drop(ex);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<ProcessPoolExecutor> {
        let mut pool = self.pool;
        if let Some(n) = self.workers {
            pool = pool.processes(n);
        }
        let pool = pool.build()?;
        let workers = pool.processes();
        Ok(ProcessPoolExecutor {
            base: Base::new(pool, workers),
        })
    }
}

/// Python's `concurrent.futures.ProcessPoolExecutor`, on the pool engine: calls are
/// `fn(A) -> R` with serde types, as for [`Pool`].
///
/// **No `BrokenProcessPool`**: a worker that dies fails only the futures of the calls it had
/// started ([`ErrorKind::WorkerDied`](crate::ErrorKind::WorkerDied), with its pid and signal);
/// it is replaced and the executor goes on. [`Future::cancel_running`] ends a running call by
/// killing its worker.
///
/// # Examples
///
/// ```no_run
/// use multiproc::{Executor, ProcessPoolExecutor};
/// fn square(x: u64) -> u64 { x * x }
/// fn main() -> multiproc::Result<()> {
///     multiproc::init();
///     let ex = ProcessPoolExecutor::new(2)?;
///     assert_eq!(ex.submit(square, 7)?.result()?, 49);
///     let all: Vec<u64> = ex.map(square, 0..10)?.collect::<Result<_, _>>()?;
///     assert_eq!(all[9], 81);
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct ProcessPoolExecutor {
    base: Base<Pool>,
}

/// A future's hold on its engine task (weak: a future does not keep the workers alive).
struct Task {
    engine: Weak<Engine>,
    id: u64,
    /// Part of a multi-item chunk: only the whole task could be cancelled.
    chunked: bool,
}

impl Control for Task {
    fn cancel_waiting(&self) -> bool {
        !self.chunked
            && self
                .engine
                .upgrade()
                .is_some_and(|e| e.cancel_waiting(self.id))
    }

    fn cancel_task_waiting(&self) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|e| e.cancel_waiting(self.id))
    }

    fn started(&self) -> bool {
        self.engine.upgrade().is_some_and(|e| e.is_started(self.id))
    }

    fn kill(&self) -> bool {
        self.engine
            .upgrade()
            .is_some_and(|e| e.cancel(self.id..self.id + 1))
    }
}

impl ProcessPoolExecutor {
    /// An executor of `max_workers` processes.
    ///
    /// # Errors
    /// As [`ProcessPoolExecutorBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let ex = multiproc::ProcessPoolExecutor::new(3)?;
    /// # drop(ex);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(max_workers: usize) -> Result<ProcessPoolExecutor> {
        Self::builder().max_workers(max_workers).build()
    }

    /// Settings for an executor.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::ProcessPoolExecutor::builder();
    /// # drop(b);
    /// ```
    pub fn builder() -> ProcessPoolExecutorBuilder {
        ProcessPoolExecutorBuilder {
            pool: Pool::builder().name_prefix("ProcessPoolExecutor"),
            workers: None,
        }
    }

    /// The pids of the live workers.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let ex = multiproc::ProcessPoolExecutor::new(2)?;
    /// assert_eq!(ex.pids().len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn pids(&self) -> Vec<u32> {
        self.base.pool.pids()
    }

    /// Submits the items `args` as one engine task; `complete` resolves `inners` (the futures
    /// of its items: with more than one, only the whole task can be cancelled).
    fn submit_task<'a, A, R, C>(
        &self,
        f: fn(A) -> R,
        args: impl IntoIterator<Item = &'a A>,
        inners: &[Arc<Inner<R>>],
        complete: C,
    ) -> Result<()>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
        C: crate::pool::result::Complete<R> + 'static,
    {
        let target = Target::of(f)?;
        let e = encode_items(args)?;
        let sink = Arc::new(Decode::<R, C>::new(Arc::new(complete)));
        let engine = &self.base.pool.engine;
        let ids = engine.submit(vec![e.into_task(target, sink, 0)])?;
        for inner in inners {
            let _ = inner.control.set(Box::new(Task {
                engine: Arc::downgrade(engine),
                id: ids.start,
                chunked: inners.len() > 1,
            }));
        }
        self.base.track(inners);
        Ok(())
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let inner = Inner::<R>::new();
        let one = One(inner.clone());
        self.submit_task(f, std::iter::once(&arg), std::slice::from_ref(&inner), one)?;
        Ok(Future::from_inner(inner))
    }

    fn submit_chunk<A, R>(&self, f: fn(A) -> R, args: Vec<A>) -> Result<Vec<Future<R>>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if args.len() == 1 {
            return args.into_iter().map(|a| self.submit(f, a)).collect();
        }
        if args.is_empty() {
            return Ok(Vec::new());
        }
        let inners: Vec<Arc<Inner<R>>> = args.iter().map(|_| Inner::new()).collect();
        self.submit_task(f, args.iter(), &inners, FanOut(inners.clone()))?;
        Ok(inners.into_iter().map(Future::from_inner).collect())
    }

    fn max_workers(&self) -> usize {
        self.base.workers
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.base.shutdown(wait, cancel_futures)
    }
}
