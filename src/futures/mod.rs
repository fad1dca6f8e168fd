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

pub use error::{AsCompletedTimeoutError, ResultTimeoutError, WaitTimeoutError};
pub use executor::{Executor, Map};
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

/// The futures an executor has handed out and not seen dropped, so that
/// `shutdown(cancel_futures)` can cancel the ones no worker has started.
#[derive(Default)]
pub(crate) struct Outstanding(Mutex<Vec<Weak<dyn Cancel>>>);

impl std::fmt::Debug for Outstanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = crate::pool::result::lock(&self.0).len();
        f.debug_struct("Outstanding").field("tracked", &n).finish()
    }
}

impl Outstanding {
    /// Remembers `fs` (weakly: a dropped future is forgotten).
    pub(crate) fn track<R: Send + 'static>(&self, fs: &[Arc<Inner<R>>]) {
        let mut out = crate::pool::result::lock(&self.0);
        // Drops the entries of futures that are gone, when the list has grown.
        if out.len() >= 64 && out.len().is_power_of_two() {
            out.retain(|w| w.strong_count() > 0);
        }
        for f in fs {
            let weak: Weak<dyn Cancel> = Arc::downgrade(&(f.clone() as Arc<dyn Cancel>));
            out.push(weak);
        }
    }

    /// Cancels every remembered future that no worker has started, and forgets them all.
    pub(crate) fn cancel_all(&self) {
        let out: Vec<_> = crate::pool::result::lock(&self.0).drain(..).collect();
        for w in out {
            if let Some(c) = w.upgrade() {
                c.cancel_waiting_arc();
            }
        }
    }
}

#[cfg(all(test, loom))]
mod model_tests;
#[cfg(all(test, not(loom)))]
mod tests;
