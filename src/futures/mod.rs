//! Python's `concurrent.futures`: the [`Executor`] trait, [`ThreadPoolExecutor`],
//! [`ProcessPoolExecutor`] (a second face of the pool engine), [`Future`], [`wait`],
//! [`wait_timeout`] and [`as_completed`].
//!
//! [`Future`] here is `multiproc::Future`, the result of a submitted call; it implements
//! [`std::future::Future`], so it can be `.await`ed in any async executor.

#![forbid(unsafe_code)]

mod error;
mod executor;
mod future;
mod process;
mod shim;
mod thread;
mod wait;

use std::sync::{Arc, Mutex, Weak};

pub use error::{AsCompletedTimeoutError, MapTimeoutError, ResultTimeoutError, WaitTimeoutError};
pub use executor::{Executor, Map, MapTimeout};
pub use future::Future;
pub use process::{ProcessPoolExecutor, ProcessPoolExecutorBuilder};
pub use thread::{ThreadPoolExecutor, ThreadPoolExecutorBuilder};
pub use wait::{
    AsCompleted, AsCompletedTimeout, ReturnWhen, as_completed, as_completed_deadline,
    as_completed_timeout, wait, wait_deadline, wait_timeout,
};

use future::Inner;

/// A future of any result type, as an executor's shutdown cancels it.
pub(crate) trait Cancel: Send + Sync {
    fn cancel_waiting_arc(self: Arc<Self>) -> bool;
}

impl<R: Send + 'static> Cancel for Inner<R> {
    fn cancel_waiting_arc(self: Arc<Self>) -> bool {
        Future::from_inner(self).cancel()
    }
}

/// What an executor needs of the pool under it to shut down.
pub(crate) trait Shut {
    fn close(&self);
    fn join(&self) -> crate::Result<()>;
}

impl Shut for crate::Pool {
    fn close(&self) {
        crate::Pool::close(self)
    }
    fn join(&self) -> crate::Result<()> {
        crate::Pool::join(self)
    }
}

impl Shut for crate::ThreadPool {
    fn close(&self) {
        crate::ThreadPool::close(self)
    }
    fn join(&self) -> crate::Result<()> {
        crate::ThreadPool::join(self)
    }
}

/// What both executors keep: the pool that runs their calls, its size, and the futures handed
/// out and not seen dropped (so that `shutdown(cancel_futures)` can cancel the ones no worker
/// has started). Dropping it is `shutdown(true, false)`, like leaving Python's `with` block.
pub(crate) struct Base<P: Shut> {
    pub(crate) pool: P,
    pub(crate) workers: usize,
    outstanding: Mutex<Vec<Weak<dyn Cancel>>>,
}

impl<P: Shut> Base<P> {
    pub(crate) fn new(pool: P, workers: usize) -> Base<P> {
        Base {
            pool,
            workers,
            outstanding: Mutex::new(Vec::new()),
        }
    }

    /// Remembers `fs` (weakly: a dropped future is forgotten).
    pub(crate) fn track<R: Send + 'static>(&self, fs: &[Arc<Inner<R>>]) {
        let mut out = crate::pool::result::lock(&self.outstanding);
        // Drops the entries of futures that are gone, when the list has grown.
        if out.len() >= 64 && out.len().is_power_of_two() {
            out.retain(|w| w.strong_count() > 0);
        }
        for f in fs {
            let weak: Weak<dyn Cancel> = Arc::downgrade(&(f.clone() as Arc<dyn Cancel>));
            out.push(weak);
        }
    }

    /// [`Executor::shutdown`]: with `cancel_futures`, cancels every remembered future that no
    /// worker has started; closes the pool; with `wait`, joins it.
    pub(crate) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        if cancel_futures {
            let out: Vec<_> = crate::pool::result::lock(&self.outstanding)
                .drain(..)
                .collect();
            for w in out {
                if let Some(c) = w.upgrade() {
                    c.cancel_waiting_arc();
                }
            }
        }
        self.pool.close();
        if wait {
            let _ = self.pool.join();
        }
    }
}

impl<P: Shut + std::fmt::Debug> std::fmt::Debug for Base<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("pool", &self.pool)
            .field("max_workers", &self.workers)
            .finish_non_exhaustive()
    }
}

impl<P: Shut> Drop for Base<P> {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

#[cfg(all(test, loom))]
mod model_tests;
#[cfg(all(test, not(loom)))]
mod tests;
