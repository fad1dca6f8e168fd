//! The ring's cursors, kept apart from the bytes so that loom can check them with the real
//! sleep/wake protocol (`model_tests.rs`).
//!
//! One producer at a time (the holder of the put lock) advances the tail; one consumer at a time
//! (the holder of the get lock) advances the head. Each side sleeps, when it must, on a
//! [`WaitWord`] used as a sequence word ([`WaitWord::wait_until`]): the waker publishes its
//! cursor with a read-modify-write and calls [`WaitWord::notify_batched`]; the sleeper arms the
//! word and then re-reads the cursor with a read-modify-write (see `crate::sync::wait_word` for
//! why the two pairs cannot miss each other). While nobody sleeps, a waker's cost is one
//! read-modify-write of a line only sleepers write; while a woken sleeper gets up, no more
//! wakes are sent.

use crate::atomic::{AtomicU64, Ordering};
use crate::sync::wait_word::WaitWord;

/// Stores a new cursor value (the tail, after writing bytes; the head, after consuming them)
/// with a read-modify-write, and wakes the other side if it sleeps on `wake`.
#[inline]
pub(crate) fn advance(cursor: &AtomicU64, value: u64, wake: &WaitWord) {
    cursor.swap(value, Ordering::AcqRel);
    wake.notify_batched();
}

/// Reads a cursor; with `sync`, as a read-modify-write (see [`WaitWord::wait_until`]).
#[inline]
pub(crate) fn read(cursor: &AtomicU64, sync: bool) -> u64 {
    if sync {
        cursor.fetch_add(0, Ordering::AcqRel)
    } else {
        cursor.load(Ordering::Acquire)
    }
}
