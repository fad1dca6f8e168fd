//! The [`Executor`] trait both executors implement, and its lazy, bounded [`Map`] and
//! [`MapTimeout`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::{MapTimeoutError, ResultTimeoutError};
use super::future::Future;
use crate::error::Result;

/// What Python's `concurrent.futures.Executor` offers, for [`ThreadPoolExecutor`] and
/// [`ProcessPoolExecutor`] alike: a program written against it switches between threads and
/// processes by one line.
///
/// Dropping an executor is `shutdown(true, false)`, like leaving Python's `with` block.
///
/// [`ThreadPoolExecutor`]: crate::ThreadPoolExecutor
/// [`ProcessPoolExecutor`]: crate::ProcessPoolExecutor
///
/// # Examples
///
/// ```
/// use multiproc::{Executor, ThreadPoolExecutor};
/// fn square(x: u64) -> u64 { x * x }
/// fn run(ex: &impl Executor) -> multiproc::Result<Vec<u64>> {
///     ex.map(square, 1..=4)?.collect()
/// }
/// let ex = ThreadPoolExecutor::new(2)?; // or ProcessPoolExecutor::new(2)?
/// assert_eq!(run(&ex)?, [1, 4, 9, 16]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait Executor {
    /// Schedules `f(arg)`; Python's `submit(fn, arg)`.
    ///
    /// # Errors
    /// [`ErrorKind::Closed`](crate::ErrorKind::Closed) after shutdown;
    /// [`ErrorKind::Codec`](crate::ErrorKind::Codec) if the argument does not serialize.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// assert_eq!(ex.submit(|x: u8| x + 1, 1)?.result()?, 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<Future<R>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// Submits items `chunk` at a time (a process executor sends each chunk as one task; a
    /// thread executor ignores the size).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// let fs = ex.submit_chunk(|x: u8| x * 2, vec![1, 2])?;
    /// assert_eq!(fs[1].result()?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn submit_chunk<A, R>(&self, f: fn(A) -> R, args: Vec<A>) -> Result<Vec<Future<R>>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        args.into_iter().map(|a| self.submit(f, a)).collect()
    }

    /// How many calls run at once.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// assert_eq!(ex.max_workers(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn max_workers(&self) -> usize;

    /// Stops taking new calls. With `cancel_futures`, every call no worker has started is
    /// cancelled; with `wait`, returns once every running (and remaining) call is done.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// let f = ex.submit(|x: u8| x, 1)?;
    /// ex.shutdown(true, false);
    /// assert!(f.done());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// Applies `f` to every item (Python's `map`): the results come in input order, as a
    /// lazy iterator that keeps at most a bounded number of calls in flight (so an endless
    /// iterator runs in bounded memory). The first error is yielded where it occurs.
    ///
    /// # Errors
    /// As [`submit`](Self::submit) (for the first call, made here).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// let firsts: Vec<u64> = ex.map(|x: u64| x * x, 1..)?.take(3).collect::<Result<_, _>>()?;
    /// assert_eq!(firsts, [1, 4, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn map<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A, IntoIter: 'a>,
    ) -> Result<Map<'a, R>>
    where
        Self: Sized,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_chunked(f, iterable, 1)
    }

    /// [`map`](Self::map) with `chunksize` items per task (for processes; a thread executor
    /// ignores it; `0` counts as 1).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// let v: Vec<u8> = ex.map_chunked(|x: u8| x, 0..4, 2)?.collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, 1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn map_chunked<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A, IntoIter: 'a>,
        chunksize: usize,
    ) -> Result<Map<'a, R>>
    where
        Self: Sized,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Mapping::start(self, f, iterable, None, chunksize).map(Map)
    }

    /// [`map_chunked`](Self::map_chunked) whose results must all be ready within `timeout`,
    /// measured from this call (Python's `map(..., timeout=)`): the first result not ready by
    /// then is a [`MapTimeoutError::Timeout`] item, the calls not started are cancelled and
    /// the iterator ends (Python raises `TimeoutError` from it).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use multiproc::{Executor, MapTimeoutError, ThreadPoolExecutor};
    /// fn nap(ms: u64) -> u64 { std::thread::sleep(Duration::from_millis(ms)); ms }
    /// let ex = ThreadPoolExecutor::new(1)?;
    /// let mut m = ex.map_timeout(nap, [0, 2_000, 0], Duration::from_millis(500), 1)?;
    /// assert_eq!(m.next().transpose()?, Some(0));
    /// assert!(matches!(m.next(), Some(Err(MapTimeoutError::Timeout))));
    /// assert!(m.next().is_none());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn map_timeout<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A, IntoIter: 'a>,
        timeout: Duration,
        chunksize: usize,
    ) -> Result<MapTimeout<'a, R>>
    where
        Self: Sized,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        // A timeout past what an `Instant` can hold is no deadline (never a panic).
        Mapping::start(
            self,
            f,
            iterable,
            Instant::now().checked_add(timeout),
            chunksize,
        )
        .map(|m| MapTimeout {
            mapping: m,
            timed_out: false,
        })
    }

    /// [`map_timeout`](Self::map_timeout) with a `deadline` instead of a timeout.
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// let by = Instant::now() + Duration::from_secs(30);
    /// let v: Vec<u8> = ex.map_deadline(|x: u8| x, 0..4, by, 2)?.collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, 1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn map_deadline<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A, IntoIter: 'a>,
        deadline: Instant,
        chunksize: usize,
    ) -> Result<MapTimeout<'a, R>>
    where
        Self: Sized,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Mapping::start(self, f, iterable, Some(deadline), chunksize).map(|m| MapTimeout {
            mapping: m,
            timed_out: false,
        })
    }
}

type Submitter<'a, R> = Box<dyn FnMut() -> Option<Result<Vec<Future<R>>>> + 'a>;

/// What [`Map`] and [`MapTimeout`] share: the calls in flight, in input order, and how to
/// submit more.
struct Mapping<'a, R> {
    submit: Submitter<'a, R>,
    queue: VecDeque<Future<R>>,
    window: usize,
    deadline: Option<Instant>,
    exhausted: bool,
    error: Option<crate::Error>,
}

impl<'a, R> Mapping<'a, R> {
    fn start<E, A>(
        ex: &'a E,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A, IntoIter: 'a>,
        deadline: Option<Instant>,
        chunksize: usize,
    ) -> Result<Mapping<'a, R>>
    where
        E: Executor + ?Sized,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let chunk = chunksize.max(1);
        let mut items = iterable.into_iter();
        let window = (4 * ex.max_workers()).max(2) * chunk;
        let submit = Box::new(move || -> Option<Result<Vec<Future<R>>>> {
            let args: Vec<A> = items.by_ref().take(chunk).collect();
            if args.is_empty() {
                return None;
            }
            Some(ex.submit_chunk(f, args))
        });
        let mut m = Mapping {
            submit,
            queue: VecDeque::new(),
            window,
            deadline,
            exhausted: false,
            error: None,
        };
        m.fill();
        if let Some(e) = m.error.take() {
            return Err(e);
        }
        Ok(m)
    }

    fn fill(&mut self) {
        while !self.exhausted && self.error.is_none() && self.queue.len() < self.window {
            match (self.submit)() {
                None => self.exhausted = true,
                Some(Ok(fs)) => self.queue.extend(fs),
                Some(Err(e)) => self.error = Some(e),
            }
        }
    }

    /// The next result in input order, waiting until the deadline (if any). A call that
    /// timed out stays first in the queue, for [`stop`](Self::stop) to cancel.
    fn next_result(&mut self) -> Option<std::result::Result<R, ResultTimeoutError>> {
        self.fill();
        match self.queue.front() {
            Some(f) => {
                let r = f.result_until(self.deadline);
                if !matches!(r, Err(ResultTimeoutError::Timeout)) {
                    self.queue.pop_front();
                }
                Some(r)
            }
            None => self
                .error
                .take()
                .map(|e| Err(ResultTimeoutError::Failed(e))),
        }
    }

    /// Cancels the calls not yet started and submits no more.
    fn stop(&mut self) {
        self.exhausted = true;
        // Every call in flight is abandoned, so a chunk's calls can go all together.
        for f in self.queue.drain(..) {
            f.cancel_with_its_chunk();
        }
    }
}

impl<R> Drop for Mapping<'_, R> {
    /// Cancels the calls not yet started (what Python does when its `map` generator closes).
    fn drop(&mut self) {
        self.stop();
    }
}

/// The results of [`Executor::map`] (and [`map_chunked`](Executor::map_chunked)), in input
/// order; dropping it cancels the calls not started.
///
/// # Examples
///
/// ```
/// use multiproc::{Executor, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let mut m = ex.map(|x: u8| x + 1, [1, 2])?;
/// assert_eq!(m.next().transpose()?, Some(2));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Map<'a, R>(Mapping<'a, R>);

/// The results of [`Executor::map_timeout`] (or [`map_deadline`](Executor::map_deadline)), in
/// input order, each a `Result<R, MapTimeoutError>`; after a
/// [`Timeout`](MapTimeoutError::Timeout) it ends. Dropping it cancels the calls not started.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{Executor, ThreadPoolExecutor};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let mut m = ex.map_timeout(|x: u8| x + 1, [1, 2], Duration::from_secs(30), 1)?;
/// assert_eq!(m.next().transpose()?, Some(2));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct MapTimeout<'a, R> {
    mapping: Mapping<'a, R>,
    timed_out: bool,
}

impl<R> std::fmt::Debug for Map<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.0.queue.len())
            .finish()
    }
}

impl<R> std::fmt::Debug for MapTimeout<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapTimeout")
            .field("in_flight", &self.mapping.queue.len())
            .field("timed_out", &self.timed_out)
            .finish()
    }
}

impl<R> Iterator for Map<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        // No deadline: `Timeout` cannot happen, and would become a plain error if it did.
        self.0.next_result().map(|r| r.map_err(crate::Error::from))
    }
}

impl<R> Iterator for MapTimeout<'_, R> {
    type Item = std::result::Result<R, MapTimeoutError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.timed_out {
            return None;
        }
        match self.mapping.next_result()? {
            Ok(v) => Some(Ok(v)),
            Err(ResultTimeoutError::Failed(e)) => Some(Err(MapTimeoutError::Failed(e))),
            Err(ResultTimeoutError::Timeout) => {
                self.timed_out = true;
                self.mapping.stop();
                Some(Err(MapTimeoutError::Timeout))
            }
        }
    }
}
