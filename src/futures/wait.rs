//! [`wait`] and [`as_completed`] over many futures.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::error::{AsCompletedTimeoutError, WaitTimeoutError};
use super::future::{Future, Signal};
use super::shim::{lock, wait_until};

/// When [`wait`] returns: Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION`, `ALL_COMPLETED`.
///
/// # Examples
///
/// ```
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, futures::wait};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs = vec![ex.submit_closure(|| 1)?, ex.submit_closure(|| 2)?];
/// let (done, not_done) = wait(&fs, ReturnWhen::AllCompleted);
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

/// The futures that are done and the others: `(done, not_done)`, as CPython's `wait` returns.
pub type Waited<'a, R> = (Vec<&'a Future<R>>, Vec<&'a Future<R>>);

/// Waits for the futures `fs` (Python's `concurrent.futures.wait` without a timeout) until
/// `return_when` holds; returns `(done, not_done)`. A future given twice appears once.
///
/// # Examples
///
/// ```
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, futures::wait};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fast = ex.submit_closure(|| 1)?;
/// let (done, not_done) = wait([&fast, &fast], ReturnWhen::FirstCompleted);
/// assert_eq!((done.len(), not_done.len()), (1, 0));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    return_when: ReturnWhen,
) -> Waited<'a, R> {
    match wait_until_met(fs, None, return_when) {
        Ok(w) => w,
        Err(WaitTimeoutError::Timeout { .. }) => unreachable!("no deadline"),
    }
}

/// [`wait`] for at most `timeout` (Python's `wait(fs, timeout, return_when)`).
///
/// # Errors
/// [`WaitTimeoutError::Timeout`], with both lists, if `return_when` did not hold in time.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, futures::wait_timeout};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fast = ex.submit_closure(|| 1)?;
/// let slow = ex.submit_closure(|| { std::thread::sleep(Duration::from_millis(300)); 2 })?;
/// let (done, _) = wait_timeout([&fast, &slow], Duration::from_secs(10), ReturnWhen::FirstCompleted)?;
/// assert!(!done.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait_timeout<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Duration,
    return_when: ReturnWhen,
) -> Result<Waited<'a, R>, WaitTimeoutError<'a, R>> {
    wait_until_met(fs, Some(Instant::now() + timeout), return_when)
}

/// [`wait`] until `deadline`.
///
/// # Errors
/// As [`wait_timeout`].
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// use multiproc::{ReturnWhen, ThreadPoolExecutor, futures::wait_deadline};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs = [ex.submit_closure(|| 1)?, ex.submit_closure(|| 2)?];
/// let (done, not_done) = wait_deadline(&fs, Instant::now() + Duration::from_secs(10), ReturnWhen::AllCompleted)?;
/// assert_eq!((done.len(), not_done.len()), (2, 0));
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn wait_deadline<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    deadline: Instant,
    return_when: ReturnWhen,
) -> Result<Waited<'a, R>, WaitTimeoutError<'a, R>> {
    wait_until_met(fs, Some(deadline), return_when)
}

fn wait_until_met<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    deadline: Option<Instant>,
    return_when: ReturnWhen,
) -> Result<Waited<'a, R>, WaitTimeoutError<'a, R>> {
    let fs = distinct(fs);
    let signal = Signal::new();
    let mut is_done: Vec<bool> = fs
        .iter()
        .enumerate()
        .map(|(i, f)| f.inner.watch(i, &signal))
        .collect();
    let met = loop {
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
            break true;
        }
        let st = lock(&signal.done);
        if !st.is_empty() {
            continue;
        }
        let (arrived, timed_out) = wait_until(&signal.cv, &signal.done, st, deadline);
        if timed_out && arrived.is_empty() {
            break false;
        }
    };
    let mut done = Vec::new();
    let mut not_done = Vec::new();
    for (f, d) in fs.into_iter().zip(is_done) {
        if d { done.push(f) } else { not_done.push(f) }
    }
    if met {
        Ok((done, not_done))
    } else {
        Err(WaitTimeoutError::Timeout { done, not_done })
    }
}

/// What [`AsCompleted`] and [`AsCompletedTimeout`] share: the futures, which are yielded, and
/// the signal their completions arrive on.
struct Completions<'a, R> {
    fs: Vec<&'a Future<R>>,
    yielded: Vec<bool>,
    ready: std::collections::VecDeque<usize>,
    signal: Arc<Signal>,
    left: usize,
}

impl<'a, R> Completions<'a, R> {
    fn new(fs: impl IntoIterator<Item = &'a Future<R>>) -> Completions<'a, R> {
        let fs = distinct(fs);
        let signal = Signal::new();
        let mut ready = std::collections::VecDeque::new();
        for (i, f) in fs.iter().enumerate() {
            if f.inner.watch(i, &signal) {
                ready.push_back(i);
            }
        }
        Completions {
            yielded: vec![false; fs.len()],
            left: fs.len(),
            fs,
            ready,
            signal,
        }
    }

    /// The next future to finish; `Err` with the unyielded futures if `deadline` passed first.
    fn next(
        &mut self,
        deadline: Option<Instant>,
    ) -> Option<Result<&'a Future<R>, AsCompletedTimeoutError<'a, R>>> {
        if self.left == 0 {
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
                (st, timed_out) = wait_until(&self.signal.cv, &self.signal.done, st, deadline);
                if timed_out && st.is_empty() {
                    drop(st);
                    let left = self
                        .fs
                        .iter()
                        .zip(&self.yielded)
                        .filter(|(_, y)| !**y)
                        .map(|(f, _)| *f)
                        .collect();
                    self.left = 0;
                    return Some(Err(AsCompletedTimeoutError::Timeout(left)));
                }
            }
            self.ready.extend(st.drain(..));
        }
    }
}

/// The futures of [`as_completed`], yielded as they finish.
///
/// # Examples
///
/// ```
/// let ex = multiproc::ThreadPoolExecutor::new(1)?;
/// let fs = [ex.submit_closure(|| 1)?];
/// let mut it = multiproc::as_completed(&fs);
/// assert_eq!(it.next().unwrap().result()?, 1);
/// assert!(it.next().is_none());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsCompleted<'a, R>(Completions<'a, R>);

/// The futures of [`as_completed_timeout`] (or `_deadline`), yielded as they finish, then
/// an error with the unfinished ones if the deadline passes first.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// let ex = multiproc::ThreadPoolExecutor::new(1)?;
/// let fs = [ex.submit_closure(|| 1)?];
/// let mut it = multiproc::as_completed_timeout(&fs, Duration::from_secs(10));
/// assert_eq!(it.next().unwrap()?.result()?, 1);
/// assert!(it.next().is_none());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct AsCompletedTimeout<'a, R> {
    inner: Completions<'a, R>,
    deadline: Instant,
}

impl<R> std::fmt::Debug for AsCompleted<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("left", &self.0.left)
            .finish()
    }
}

impl<R> std::fmt::Debug for AsCompletedTimeout<'_, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompletedTimeout")
            .field("left", &self.inner.left)
            .finish()
    }
}

/// Yields the futures `fs` as they finish (Python's `concurrent.futures.as_completed`):
/// those already done first, a future given twice once.
///
/// # Examples
///
/// ```
/// use multiproc::{ThreadPoolExecutor, as_completed};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs: Vec<_> = (0..4).map(|i| ex.submit_closure(move || i * 10)).collect::<Result<_, _>>()?;
/// let mut sum = 0;
/// for f in as_completed(&fs) {
///     sum += f.result()?;
/// }
/// assert_eq!(sum, 60);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn as_completed<'a, R: 'a>(fs: impl IntoIterator<Item = &'a Future<R>>) -> AsCompleted<'a, R> {
    AsCompleted(Completions::new(fs))
}

/// [`as_completed`] with a `timeout` measured from this call (Python's
/// `as_completed(fs, timeout)`): if futures are still unfinished then, the iterator yields an
/// [`AsCompletedTimeoutError::Timeout`] with them, and ends.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use multiproc::{ThreadPoolExecutor, as_completed_timeout};
/// let ex = ThreadPoolExecutor::new(2)?;
/// let fs: Vec<_> = (0..4).map(|i| ex.submit_closure(move || i * 10)).collect::<Result<_, _>>()?;
/// let mut sum = 0;
/// for f in as_completed_timeout(&fs, Duration::from_secs(30)) {
///     sum += f?.result()?;
/// }
/// assert_eq!(sum, 60);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn as_completed_timeout<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    timeout: Duration,
) -> AsCompletedTimeout<'a, R> {
    as_completed_deadline(fs, Instant::now() + timeout)
}

/// [`as_completed`] until `deadline`.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
/// let ex = multiproc::ThreadPoolExecutor::new(1)?;
/// let fs = [ex.submit_closure(|| 1)?];
/// let n = multiproc::as_completed_deadline(&fs, Instant::now() + Duration::from_secs(10)).count();
/// assert_eq!(n, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub fn as_completed_deadline<'a, R: 'a>(
    fs: impl IntoIterator<Item = &'a Future<R>>,
    deadline: Instant,
) -> AsCompletedTimeout<'a, R> {
    AsCompletedTimeout {
        inner: Completions::new(fs),
        deadline,
    }
}

impl<'a, R> Iterator for AsCompleted<'a, R> {
    type Item = &'a Future<R>;

    fn next(&mut self) -> Option<&'a Future<R>> {
        match self.0.next(None)? {
            Ok(f) => Some(f),
            Err(AsCompletedTimeoutError::Timeout(_)) => unreachable!("no deadline"),
        }
    }
}

impl<'a, R> Iterator for AsCompletedTimeout<'a, R> {
    type Item = Result<&'a Future<R>, AsCompletedTimeoutError<'a, R>>;

    fn next(&mut self) -> Option<Self::Item> {
        self.inner.next(Some(self.deadline))
    }
}
