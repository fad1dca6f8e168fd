//! The crate's one spelling of the atomics, below every other module (`sys/` included).
//!
//! [`Ordering`] is std's in every build: loom re-exports the same type, so the layers that the
//! loom models never reach (`sys/`, `shm/`, `process/`) and the ones they do (`sync/`, `queue/`,
//! `futures/`) name it alike. [`AtomicU32`] and [`AtomicU64`] are the words of the shared state
//! that the model tests check: std's in normal builds, loom's under `--cfg loom` (the rest of the
//! loom shim, futex and mutex, is in `sync/shim.rs`). Code whose words the kernel or another
//! process reads directly and that no model covers (the futex wrappers, the robust lock, segment
//! headers) keeps std's atomic types under their own names.

pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU32, AtomicU64};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64};
