//! [`wait`] and [`as_completed`] over many futures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::future::{Future, Signal, timeout_error};
use crate::error::Result;
use crate::pool::result::{lock, wait_until};

/// When [`wait`] returns: Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`.
///
/// # Examples
///
/// ```
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, futures::wait};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs = vec![ex.submit_closure(|| 1)?, ex.submit_closure(|| 2)?];
/// let (done, not_done) = wait(&fs, None, ReturnWhen::AllCompleted);
/// assert_eq!((done.len(), not_done.len()), (2, 0));
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// As soon as any future is done (or cancelled).
    FirstCompleted,
    /// As soon as any future fails; all completed if none does.
    FirstException,
    /// Once every future is done.
    #[default]
    AllCompleted,
}

/// The distinct futures of `fs` (a future given twice counts once), in first-seen order.
fn distinct<'a, R>(fs: impl IntoIterator<Item = &'a Future<R>>) -> Vec<&'a Future<R>>
where
    R: 'a,
{
    let mut out: Vec<&Future<R>> = Vec::new();
    for f in fs {
        if !out.iter().any(|g| g.same(f)) {
            out.push(f);
        }
    }
    out
}

/// Waits for the futures `fs` (Python's `concurrent.futures.wait`) until `return_when` holds
/// or `timeout` (measured from the call) has passed; returns `(done, not_done)`. A future
/// given twice appears once.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, futures::wait};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fast = ex.submit_closure(|| 1)?;
/// let slow = ex.submit_closure(|| std::thread::sleep(Duration::from_millis(300)))?;
/// let (done, _) = wait([&fast, &fast], Some(Duration::from_secs(10)), ReturnWhen::FirstCompleted);
/// assert_eq!(done.len(), 1);
/// # drop(slow);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> (Vec<&'a Future<R>>, Vec<&'a Future<R>>) {
    let deadline = timeout.map(|t| Instant::now() + t);
    let fs = distinct(fs);
    let signal = Signal::new();
    let mut is_done: Vec<bool> = fs
        .iter()
        .enumerate()
        .map(|(i, f)| f.inner.watch(i, &signal))
        .collect();
    loop {
        {
            let mut arrived = lock(&signal.done);
            for i in arrived.drain(..) {
                is_done[i] = true;
            }
        }
        let done_count = is_done.iter().filter(|d| **d).count();
        let met = match return_when {
            ReturnWhen::AllCompleted => done_count == fs.len(),
            ReturnWhen::FirstCompleted => done_count > 0 || fs.is_empty(),
            ReturnWhen::FirstException => {
                done_count == fs.len()
                    || fs.iter().zip(&is_done).any(|(f, d)| *d && f.inner.failed())
            }
        };
        if met {
            break;
        }
        let st = lock(&signal.done);
        if !st.is_empty() {
            continue;
        }
        let (mut arrived, timed_out) = wait_until(&signal.cv, st, deadline);
        if timed_out {
            for i in arrived.drain(..) {
                is_done[i] = true;
            }
            break;
        }
    }
    let mut done = Vec::new();
    let mut not_done = Vec::new();
    for (f, d) in fs.into_iter().zip(is_done) {
        if d { done.push(f) } else { not_done.push(f) }
    }
    (done, not_done)
}

/// The futures of [`as_completed`], yielded as they finish.
///
/// # Examples
///
/// ```
/// let ex = multiproc::ThreadPoolExecutor::new(1)?;
/// let fs = [ex.submit_closure(|| 1)?];
/// let mut it = multiproc::as_completed(&fs, None);
/// assert_eq!(it.next().unwrap()?.result()?, 1);
/// assert!(it.next().is_none());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsCompleted<'a, R> {
    fs: Vec<&'a Future<R>>,
    yielded: Vec<bool>,
    ready: std::collections::VecDeque<usize>,
    signal: Arc<Signal>,
    deadline: Option<Instant>,
    left: usize,
    failed: bool,
}

impl<R> std::fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.left)
            .finish()
    }
}

/// Yields the futures `fs` as they finish (Python's `concurrent.futures.as_completed`):
/// those already done first, a future given twice once. With a `timeout` (measured from the
/// call), the iterator yields an [`ErrorKind::Timeout`](crate::ErrorKind::Timeout) error if
/// some are still unfinished then, and ends.
///
/// # Examples
///
/// ```
/// use multiproc::{ThreadPoolExecutor, as_completed};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs: Vec<_> = (0..4).map(|i| ex.submit_closure(move || i * 10)).collect::<Result<_, _>>()?;
/// let mut sum = 0;
/// for f in as_completed(&fs, None) {
///     sum += f?.result()?;
/// }
/// assert_eq!(sum, 60);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn as_completed<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Option<Duration>,
) -> AsCompleted<'a, R> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let fs = distinct(fs);
    let signal = Signal::new();
    let mut ready = std::collections::VecDeque::new();
    for (i, f) in fs.iter().enumerate() {
        if f.inner.watch(i, &signal) {
            ready.push_back(i);
        }
    }
    AsCompleted {
        yielded: vec![false; fs.len()],
        left: fs.len(),
        fs,
        ready,
        signal,
        deadline,
        failed: false,
    }
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = Result<&'a Future<R>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 || self.failed {
            return None;
        }
        loop {
            while let Some(i) = self.ready.pop_front() {
                if !self.yielded[i] {
                    self.yielded[i] = true;
                    self.left -= 1;
                    return Some(Ok(self.fs[i]));
                }
            }
            let mut st = lock(&self.signal.done);
            if st.is_empty() {
                let timed_out;
                (st, timed_out) = wait_until(&self.signal.cv, st, self.deadline);
                if timed_out && st.is_empty() {
                    self.failed = true;
                    return Some(Err(timeout_error()));
                }
            }
            self.ready.extend(st.drain(..));
        }
    }
}
