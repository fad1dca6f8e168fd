//! Python's `concurrent.futures`: the [`Executor`] trait, [`ThreadPoolExecutor`],
//! [`ProcessPoolExecutor`] (a second face of the pool engine), [`Future`], [`wait`] and
//! [`as_completed`].
//!
//! [`Future`] here is `multiproc::Future`, the result of a submitted call; it implements
//! [`std::future::Future`], so it can be `.await`ed in any async executor.

#![forbid(unsafe_code)]

mod executor;
mod future;
mod process;
mod thread;
mod wait;

use std::sync::{Arc, Weak};

pub use executor::{Executor, Map};
pub use future::Future;
pub use process::{ProcessPoolExecutor, ProcessPoolExecutorBuilder};
pub use thread::{ThreadPoolExecutor, ThreadPoolExecutorBuilder};
pub use wait::{AsCompleted, ReturnWhen, as_completed, wait};

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

/// Drops the entries of futures that are gone, when the list has grown.
pub(crate) fn prune(list: &mut Vec<Weak<dyn Cancel>>) {
    if list.len() >= 64 && list.len().is_power_of_two() {
        list.retain(|w| w.strong_count() > 0);
    }
}

#[cfg(test)]
mod tests;
