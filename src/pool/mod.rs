//! Pools of worker processes: [`Pool`] (Python's `multiprocessing.Pool`), its results
//! ([`AsyncResult`], [`Imap`]) and [`ThreadPool`], the same API on threads.
//!
//! One engine ([`engine`]) carries the pool: the parent knows which worker holds which task,
//! so a worker's death fails exactly the tasks it had taken, the worker is replaced and the
//! pool goes on. `concurrent.futures`' process executor is meant as a second face of the same
//! engine.

#![forbid(unsafe_code)]

pub(crate) mod api;
mod builder;
mod child;
mod encode;
pub(crate) mod engine;
mod error;
mod imap;
pub(crate) mod result;
mod task;
pub(crate) mod thread;
mod watch;
mod wire;

pub use api::{Pool, PoolBuilder, Progress};
pub use error::{AsyncGetTimeoutError, AsyncWaitTimeoutError, PoolJoinTimeoutError};
pub use imap::Imap;
pub use result::{AsyncResult, Callbacks};
pub use thread::{ThreadImap, ThreadPool, ThreadPoolBuilder};

use crate::error::{Error, ErrorKind};

/// The error of a call on a pool that no longer takes tasks.
pub(crate) fn closed_error() -> Error {
    Error::new(
        ErrorKind::Closed,
        "the pool is closed: no new tasks are accepted after close() or terminate()",
    )
}

/// CPython's default chunk size for `map`: `ceil(len / (4 × workers))`, at least 1.
pub(crate) fn default_chunksize(len: usize, workers: usize) -> usize {
    let per = 4 * workers.max(1);
    len.div_ceil(per).max(1)
}

#[cfg(test)]
mod tests {
    use super::default_chunksize;

    #[test]
    fn chunksize_follows_cpython() {
        // divmod(len, 4 * n), plus one if there is a remainder.
        assert_eq!(default_chunksize(0, 2), 1);
        assert_eq!(default_chunksize(1, 2), 1);
        assert_eq!(default_chunksize(8, 2), 1);
        assert_eq!(default_chunksize(9, 2), 2);
        assert_eq!(default_chunksize(1_000_000, 2), 125_000);
        assert_eq!(default_chunksize(1_000_001, 2), 125_001);
        assert_eq!(default_chunksize(10, 0), 3);
    }
}
