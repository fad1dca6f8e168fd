//! [`JoinableQueue`]: a [`Queue`] that counts unfinished tasks (Python's
//! `multiprocessing.JoinableQueue`).

use std::ops::Deref;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ring::read;
use super::{POLL, Queue, QueueJoinTimeoutError, TaskDoneError};
use crate::atomic::Ordering;
use crate::error::Result;
use crate::sync::wait_word::Waited;

/// A [`Queue`] that also counts unfinished tasks: Python's `multiprocessing.JoinableQueue`.
///
/// Every `put` adds a task; a consumer calls [`task_done`](Self::task_done) when it has
/// finished with a message it took; [`join`](Self::join) waits until every task is done. All of
/// [`Queue`]'s methods are available through `Deref`.
///
/// A consumer that dies between `get` and `task_done` leaves its task unfinished forever, as in
/// Python: use [`join_timeout`](Self::join_timeout) where that matters.
///
/// # Examples
///
/// ```
/// let q = multiproc::JoinableQueue::new()?;
/// q.put(1u32).unwrap();
/// let _job = q.get().unwrap();
/// q.task_done().unwrap();
/// q.join();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct JoinableQueue<T> {
    pub(super) queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Creates a joinable queue with the default settings; see [`Queue::builder`] and
    /// [`QueueBuilder::build_joinable`](super::QueueBuilder::build_joinable) for others.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<String>::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<JoinableQueue<T>> {
        Queue::builder().build_joinable()
    }

    /// Marks one task (one message taken with `get`) as done.
    ///
    /// # Errors
    /// [`TaskDoneError`] if every task is already done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// q.get().unwrap();
    /// assert!(q.task_done().is_ok());
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> std::result::Result<(), TaskDoneError> {
        let counts = &self.queue.st().counts;
        let before = counts
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map_err(|_| TaskDoneError)?;
        if before == 1 {
            counts.join.notify_all_unconditionally();
        }
        Ok(())
    }

    /// The number of tasks put and not yet marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> u64 {
        self.queue.repair_dead_producer();
        self.queue.st().counts.unfinished.load(Ordering::Acquire)
    }

    /// Waits until every task put so far is done.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::JoinableQueue::<u8>::new()?.join(); // nothing put: returns at once
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) {
        self.join_until(None);
    }

    /// Like [`join`](Self::join), giving up after `timeout`.
    ///
    /// # Errors
    /// [`QueueJoinTimeoutError`] if some task was not marked done by then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// assert!(q.join_timeout(Duration::from_millis(1)).is_err());
    /// q.get().unwrap();
    /// q.task_done().unwrap();
    /// assert_eq!(q.join_timeout(Duration::from_millis(1)), Ok(()));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), QueueJoinTimeoutError> {
        match Instant::now().checked_add(timeout) {
            Some(deadline) => self.join_deadline(deadline),
            // Past what an `Instant` can hold: no deadline.
            None => {
                self.join();
                Ok(())
            }
        }
    }

    /// Like [`join`](Self::join), giving up at `deadline`.
    ///
    /// # Errors
    /// [`QueueJoinTimeoutError`] if some task was not marked done by then.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::{Duration, Instant};
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// let deadline = Instant::now() + Duration::from_millis(1);
    /// assert_eq!(q.join_deadline(deadline), Err(multiproc::QueueJoinTimeoutError));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_deadline(&self, deadline: Instant) -> Result<(), QueueJoinTimeoutError> {
        if self.join_until(Some(deadline)) {
            Ok(())
        } else {
            Err(QueueJoinTimeoutError)
        }
    }

    fn join_until(&self, deadline: Option<Instant>) -> bool {
        let st = self.queue.st();
        let counts = &st.counts;
        // The joiner waits for the consumers' `task_done`: whether spinning can pay depends on
        // where they run. Its own mask is not published (the producers' word is theirs).
        let mine = std::sync::atomic::AtomicU64::new(0);
        self.queue.seg.join_spin.tick(&mine, &st.cons.cpus);
        loop {
            // Wake up now and then: a producer that died between counting a task and
            // publishing it is found and undone by `repair_dead_producer`.
            let tick = Instant::now() + POLL;
            let until = deadline.map_or(tick, |d| d.min(tick));
            let waited = counts.join.wait_until(
                &self.queue.seg.join_spin,
                Some(until),
                |sync| read(&counts.unfinished, sync) == 0,
                || false,
            );
            if waited == Waited::Ready {
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            self.queue.repair_dead_producer();
        }
    }

    pub(super) fn from_queue(queue: Queue<T>) -> Self {
        JoinableQueue { queue }
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}
