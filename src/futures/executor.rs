//! The [`Executor`] trait both executors implement, and its lazy, bounded [`Map`].

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

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
        self.map_with(f, iterable, None, 1)
    }

    /// [`map`](Self::map) with a `timeout` measured from this call (a result not ready by
    /// then is an [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) item) and a `chunksize`
    /// (items per task, for processes; `0` counts as 1).
    ///
    /// # Errors
    /// As [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{Executor, ThreadPoolExecutor};
    /// let ex = ThreadPoolExecutor::new(2)?;
    /// let v: Vec<u8> = ex.map_with(|x: u8| x, 0..4, Some(std::time::Duration::from_secs(30)), 2)?.collect::<Result<_, _>>()?;
    /// assert_eq!(v, [0, 1, 2, 3]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    fn map_with<'a, A, R>(
        &'a self,
        f: fn(A) -> R,
        iterable: impl IntoIterator<Item = A, IntoIter: 'a>,
        timeout: Option<Duration>,
        chunksize: usize,
    ) -> Result<Map<'a, R>>
    where
        Self: Sized,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let chunk = chunksize.max(1);
        let mut items = iterable.into_iter();
        let window = (4 * self.max_workers()).max(2) * chunk;
        let submit = Box::new(move || -> Option<Result<Vec<Future<R>>>> {
            let args: Vec<A> = items.by_ref().take(chunk).collect();
            if args.is_empty() {
                return None;
            }
            Some(self.submit_chunk(f, args))
        });
        let mut m = Map {
            submit,
            queue: VecDeque::new(),
            window,
            deadline: timeout.map(|t| Instant::now() + t),
            exhausted: false,
            error: None,
        };
        m.fill();
        if let Some(e) = m.error.take() {
            return Err(e);
        }
        Ok(m)
    }
}

type Submitter<'a, R> = Box<dyn FnMut() -> Option<Result<Vec<Future<R>>>> + 'a>;

/// The results of [`Executor::map`], in input order.
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
pub struct Map<'a, R> {
    submit: Submitter<'a, R>,
    queue: VecDeque<Future<R>>,
    window: usize,
    deadline: Option<Instant>,
    exhausted: bool,
    error: Option<crate::Error>,
}

impl<R> std::fmt::Debug for Map<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.queue.len())
            .finish()
    }
}

impl<R> Map<'_, R> {
    fn fill(&mut self) {
        while !self.exhausted && self.error.is_none() && self.queue.len() < self.window {
            match (self.submit)() {
                None => self.exhausted = true,
                Some(Ok(fs)) => self.queue.extend(fs),
                Some(Err(e)) => self.error = Some(e),
            }
        }
    }
}

impl<R> Iterator for Map<'_, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.fill();
        match self.queue.pop_front() {
            Some(f) => Some(f.result_until(self.deadline).map_err(crate::Error::from)),
            None => self.error.take().map(Err),
        }
    }
}

impl<R> Drop for Map<'_, R> {
    /// Cancels the calls not yet started (what Python does when its `map` generator closes).
    fn drop(&mut self) {
        for f in &self.queue {
            f.cancel();
        }
    }
}
