//! [`PoolBuilder`]: a pool's settings.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::api::Pool;
use super::engine::{Config, Engine};
use super::wire::InitArg;
use crate::StartMethod;
use crate::codec;
use crate::error::{Error, ErrorKind, Result};
use crate::process::Target;

/// Settings for a new [`Pool`]: Python's `Pool(processes, initializer, initargs,
/// maxtasksperchild, context)`, and what CPython lacks (task timeouts, memory recycling,
/// windows).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
///
/// fn setup(level: u8) { /* open files, load tables... */ let _ = level; }
///
/// multiproc::init();
/// let pool = multiproc::Pool::builder()
///     .processes(2)
///     .initializer(setup, 3)
///     .max_tasks_per_child(100)
///     .task_timeout(Duration::from_secs(30))
///     .name_prefix("crunch")
///     .build()?;
/// # drop(pool);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Debug)]
pub struct PoolBuilder {
    processes: Option<usize>,
    init: Option<Result<(Target, InitArg)>>,
    max_tasks_per_child: Option<u64>,
    max_memory_per_child: Option<u64>,
    task_timeout: Option<Duration>,
    method: StartMethod,
    name_prefix: String,
    prefetch: Option<usize>,
    window: Option<usize>,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            processes: None,
            init: None,
            max_tasks_per_child: None,
            max_memory_per_child: None,
            task_timeout: None,
            method: StartMethod::Spawn,
            name_prefix: "PoolWorker".into(),
            prefetch: None,
            window: None,
        }
    }
}

/// The number of CPUs this process may run on (Python's `os.process_cpu_count()`).
pub(crate) fn available_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl PoolBuilder {
    /// The number of worker processes (default: the CPUs this process may use). `0` makes
    /// [`build`](Self::build) fail with [`ErrorKind::InvalidArgument`].
    ///
    /// # Examples
    ///
    /// ```
    /// let err = multiproc::Pool::builder().processes(0).build().unwrap_err();
    /// assert_eq!(err.kind(), multiproc::ErrorKind::InvalidArgument);
    /// ```
    pub fn processes(mut self, n: usize) -> Self {
        self.processes = Some(n);
        self
    }

    /// Runs `f(arg)` in each worker when it starts (Python's `initializer` and `initargs`).
    /// Handles (queues, locks, shared memory, connections) may be part of `arg`. If it
    /// panics, the worker is not used; after a few failures in a row the pool does not start
    /// ([`ErrorKind::Initializer`]), or, later, stops replacing workers.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// fn hello(who: String) { eprintln!("worker for {who} ready"); }
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().initializer(hello, "me".to_string()).build()?;
    /// # drop(pool);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "initargs")]
    pub fn initializer<A>(mut self, f: fn(A), arg: A) -> Self
    where
        A: Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let init = Target::of(f).and_then(|target| {
            // Serialize once now, so that an argument that cannot be serialized fails here.
            crate::handles::encode_with_handles(&arg).map_err(|e| {
                Error::codec("the initializer's argument could not be serialized", e)
            })?;
            let encode = move || codec::encode(&arg);
            Ok((target, InitArg::Value(Arc::new(encode))))
        });
        self.init = Some(init);
        self
    }

    /// Replaces each worker after it has run `n` tasks (Python's `maxtasksperchild`; a chunk
    /// of a `map` counts as one task). The parent never hands a worker more than its
    /// allowance, so no task is stranded on a retiring worker (the shape of CPython's
    /// gh-115634). `0` makes [`build`](Self::build) fail.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().max_tasks_per_child(10);
    /// # drop(b);
    /// ```
    #[doc(alias = "maxtasksperchild")]
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// Replaces a worker, after the task it is running, once its resident memory exceeds
    /// `bytes` (loky's memory leak protection).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().max_memory_per_child(512 << 20);
    /// # drop(b);
    /// ```
    pub fn max_memory_per_child(mut self, bytes: u64) -> Self {
        self.max_memory_per_child = Some(bytes);
        self
    }

    /// Gives every task at most `limit` to run: past it, its worker is killed and replaced,
    /// and the task fails with [`ErrorKind::TaskTimeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().task_timeout(std::time::Duration::from_secs(5));
    /// # drop(b);
    /// ```
    pub fn task_timeout(mut self, limit: Duration) -> Self {
        self.task_timeout = Some(limit);
        self
    }

    /// How workers are started (Python's `context`). [`StartMethod::Spawn`] (the default) and
    /// [`StartMethod::Forkserver`] (the cheapest way to replace a worker from this
    /// multi-threaded parent) both work; a checked fork is refused, since the pool runs threads
    /// of its own (the pool's start then fails with [`ErrorKind::ThreadedFork`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().start_method(multiproc::StartMethod::Spawn);
    /// # drop(b);
    /// ```
    #[doc(alias = "context")]
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.method = method;
        self
    }

    /// Names the workers `<prefix>-1`, `<prefix>-2`, ... (default `PoolWorker`).
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().name_prefix("resize");
    /// # drop(b);
    /// ```
    pub fn name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.name_prefix = prefix.into();
        self
    }

    /// How many tasks a worker holds at once: the one it runs and those queued behind it
    /// (at least 1). By default the depth adapts: about 2 ms of work, measured on the tasks
    /// run so far, between 2 and 64 tasks — deep for tiny tasks (which hides the hand-over
    /// between tasks), shallow for long ones. In any case a task is queued behind another only
    /// if that one started less than 5 ms ago. `prefetch(1)` keeps every task in the parent
    /// until a worker is free.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().prefetch(1);
    /// # drop(b);
    /// ```
    pub fn prefetch(mut self, tasks: usize) -> Self {
        self.prefetch = Some(tasks.max(1));
        self
    }

    /// How many tasks an `imap` keeps in flight or waiting to be taken (default: 64 per
    /// worker). The input is pulled no faster than that.
    ///
    /// # Examples
    ///
    /// ```
    /// let b = multiproc::Pool::builder().window(8);
    /// # drop(b);
    /// ```
    #[doc(alias = "buffersize")]
    pub fn window(mut self, tasks: usize) -> Self {
        self.window = Some(tasks.max(1));
        self
    }

    /// Starts the workers; returns once every one of them has run its initializer.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for 0 processes or `max_tasks_per_child(0)`;
    /// [`ErrorKind::Codec`] if the initializer's argument does not serialize;
    /// [`ErrorKind::Initializer`] if the initializer keeps failing; what
    /// [`Process::start`](crate::Process::start) returns if workers cannot start (for
    /// example [`ErrorKind::NotInitialized`] without [`init`](crate::init)).
    ///
    /// # Examples
    ///
    /// ```no_run
    /// multiproc::init();
    /// let pool = multiproc::Pool::builder().processes(2).build()?;
    /// assert_eq!(pool.processes(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<Pool> {
        let processes = self.processes.unwrap_or_else(available_cpus);
        if processes == 0 {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a pool needs at least 1 process",
            ));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "max_tasks_per_child must be at least 1",
            ));
        }
        let init = self.init.transpose()?;
        let window = self.window.unwrap_or_else(|| 64 * processes);
        let engine = Engine::start(Config {
            processes,
            prefetch: self.prefetch,
            max_tasks_per_child: self.max_tasks_per_child,
            max_rss: self.max_memory_per_child,
            task_timeout: self.task_timeout,
            init,
            method: self.method,
            name_prefix: self.name_prefix,
        })?;
        Ok(Pool { engine, window })
    }
}
