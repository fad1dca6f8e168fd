//! [`ThreadImap`]: `imap` on a thread pool, the input pulled a bounded window ahead.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Call, Shared};
use crate::error::Result;
use crate::pool::engine::Status;
use crate::pool::imap::{ImapSink, Lazy};
use crate::pool::result::{Complete, lock};

/// The iterator of [`ThreadPool::imap`](crate::ThreadPool::imap) and
/// [`ThreadPool::imap_unordered`](crate::ThreadPool::imap_unordered).
///
/// # Examples
///
/// ```
/// let pool = multiproc::ThreadPool::new(2)?;
/// let mut it = pool.imap(|x: u32| x * 10, [1, 2])?;
/// assert_eq!(it.next().unwrap()?, 10);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct ThreadImap<'a, A, R> {
    pub(super) shared: Arc<Shared>,
    pub(super) f: Arc<dyn Fn(A) -> R + Send + Sync>,
    pub(super) input: Box<dyn Iterator<Item = A> + 'a>,
    pub(super) sink: Arc<ImapSink<R>>,
    pub(super) window: usize,
    pub(super) pulled: usize,
    pub(super) yielded: usize,
    pub(super) input_done: bool,
}

impl<A, R> std::fmt::Debug for ThreadImap<'_, A, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadImap")
            .field("pulled", &self.pulled)
            .field("yielded", &self.yielded)
            .finish_non_exhaustive()
    }
}

impl<A: Send + 'static, R: Send + 'static> ThreadImap<'_, A, R> {
    pub(super) fn fill(&mut self) {
        while !self.input_done && self.pulled - self.yielded < self.window {
            let Some(a) = self.input.next() else {
                self.input_done = true;
                break;
            };
            let f = self.f.clone();
            let job = Box::new(Call {
                f: move || f(a),
                index: self.pulled,
                sink: self.sink.clone() as Arc<dyn Complete<R>>,
            });
            self.pulled += 1;
            let mut st = lock(&self.shared.st);
            if st.status != Status::Running {
                drop(st);
                self.sink
                    .complete(self.pulled - 1, Err(crate::pool::closed_error()));
                self.input_done = true;
                break;
            }
            st.queue.push_back(job);
            drop(st);
            self.shared.work.notify_one();
        }
    }

    /// Like `next`, waiting at most `timeout` (`Some(Err)` with [`ErrorKind::Timeout`](crate::ErrorKind::Timeout)).
    ///
    /// # Examples
    ///
    /// ```
    /// let pool = multiproc::ThreadPool::new(1)?;
    /// let mut it = pool.imap(|x: u8| x, [1])?;
    /// assert_eq!(it.next_timeout(std::time::Duration::from_secs(10)).unwrap()?, 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn next_timeout(&mut self, timeout: Duration) -> Option<Result<R>> {
        self.next_lazy(Instant::now().checked_add(timeout))
    }
}

impl<A: Send + 'static, R: Send + 'static> Iterator for ThreadImap<'_, A, R> {
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.next_lazy(None)
    }
}

impl<A: Send + 'static, R: Send + 'static> Lazy<R> for ThreadImap<'_, A, R> {
    fn fill(&mut self) {
        ThreadImap::fill(self);
    }

    fn cursor(&mut self) -> (&ImapSink<R>, &mut usize, bool) {
        let exhausted = self.input_done && self.yielded == self.pulled;
        (&self.sink, &mut self.yielded, exhausted)
    }
}
