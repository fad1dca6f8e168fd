//! Locks and friends in shared memory: `Lock`, `RLock`, `Semaphore`, `BoundedSemaphore`,
//! `Event`, `Condition`, `Barrier`, `Value<T>` and `Array<T>`.
//!
//! `Lock` and `RLock` live in slots of a shared arena (4096 per segment); every other object has
//! its own small anonymous shared memory segment. Handles can be cloned and passed to child
//! processes as arguments. The locks are futex locks that keep only numbers in shared memory
//! (owner thread id, waiters bit); a waiter takes over from a dead owner with `OwnerDied`.
//! Everything that sleeps does so on a futex with an absolute `CLOCK_MONOTONIC` deadline. The sleep/wake protocols are model
//! checked with loom (`src/sync/model_tests.rs`).

/// `crate::error::message_error!` and `unless(done)` (`Ok(())` or `Err(Timeout)`) for an
/// error whose only variant is `Timeout`.
macro_rules! timeout_only {
    ($name:ident, $msg:literal) => {
        crate::error::message_error!($name, $msg);

        impl $name {
            /// `Ok(())` if the wait ended in time (`done`), else `Err(Timeout)`.
            fn unless(done: bool) -> std::result::Result<(), $name> {
                if done { Ok(()) } else { Err($name::Timeout) }
            }
        }
    };
}

mod array;
mod barrier;
mod condition;
mod error;
mod event;
mod lock;
mod semaphore;
pub(crate) mod shim;
pub(crate) mod spin;
mod value;
pub(crate) mod wait_word;

pub use array::{Array, ArrayGuard};
pub use barrier::Barrier;
pub use condition::{Condition, ConditionTimeoutError};
pub use error::{
    BarrierTimeoutError, BrokenBarrier, LockError, LockResult, LockTimeoutError, LockTimeoutResult,
    OverRelease, OwnerDied, Recover, TryLockError, TryLockResult,
};
pub use event::{Event, EventTimeoutError};
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{
    AcquireTimeoutError, BoundedSemaphore, Semaphore, SemaphorePermit, TryAcquireError,
};
pub use value::{AtomicPod, DataGuard, Pod, Value, ValueGuard};

#[allow(unused_imports)]
pub(crate) use lock::{Acquired, CellGuard, LockCell};

#[cfg(all(test, loom))]
mod model_tests;
#[cfg(all(test, not(loom)))]
mod tests;
#[cfg(all(test, not(loom)))]
mod wait_word_tests;
