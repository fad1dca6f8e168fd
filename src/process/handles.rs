//! Passing handles (connections, shared memory, locks) to children as arguments.
//!
//! A handle is a file descriptor. While a process's arguments are being serialized, a handle's
//! `Serialize` impl calls [`export_fd`]: the descriptor is duplicated into a per-thread list and
//! the handle is written as its index in that list. The list travels beside the encoded bytes:
//! as SCM_RIGHTS ancillary data on the control socket (spawn), or in memory (fork). On the other
//! side, [`with_incoming`] installs the received descriptors while the arguments are decoded, and the handle's `Deserialize`
//! impl takes its own back with [`import_fd`]. Outside those two moments, exporting or importing
//! a handle is an error: descriptors never travel by a guessed number.

use std::cell::RefCell;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::Serialize;

use crate::codec::{self, CodecError};
use crate::sys;

thread_local! {
    static OUTGOING: RefCell<Option<Vec<OwnedFd>>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Encodes `value`, collecting the descriptors of the handles inside it.
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>), CodecError> {
    let saved = OUTGOING.with(|o| o.replace(Some(Vec::new())));
    let encoded = codec::encode(value);
    let fds = OUTGOING.with(|o| std::mem::replace(&mut *o.borrow_mut(), saved));
    let fds = fds.unwrap_or_default();
    if fds.len() > sys::MAX_FDS_PER_MESSAGE {
        return Err(CodecError::Encode(format!(
            "{} handles in one message; at most {} can be passed",
            fds.len(),
            sys::MAX_FDS_PER_MESSAGE
        )));
    }
    encoded.map(|bytes| (bytes, fds))
}

/// Runs `f` (which decodes) with `fds` available to the handles being decoded. Descriptors no
/// handle claimed are closed afterwards.
pub(crate) fn with_incoming<T>(fds: Vec<OwnedFd>, f: impl FnOnce() -> T) -> T {
    let saved = INCOMING.with(|i| i.replace(Some(fds.into_iter().map(Some).collect())));
    let out = f();
    INCOMING.with(|i| *i.borrow_mut() = saved);
    out
}

/// For a handle's `Serialize`: registers a duplicate of `fd` and returns its index.
///
/// # Errors
/// When no process arguments are being serialized (a handle sent through a pipe or queue, or
/// encoded by hand), or when the descriptor cannot be duplicated.
pub(crate) fn export_fd(fd: BorrowedFd<'_>) -> Result<u32, String> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let list = o.as_mut().ok_or_else(|| {
            "a handle can only be passed to a child process as (part of) its arguments".to_string()
        })?;
        let dup = sys::dup_cloexec(fd).map_err(|e| format!("cannot duplicate the handle: {e}"))?;
        list.push(dup);
        Ok((list.len() - 1) as u32)
    })
}

/// For a handle's `Deserialize`: takes the descriptor registered at `index`.
///
/// # Errors
/// When no descriptors were received with the message, or `index` names none (or one that was
/// already taken).
pub(crate) fn import_fd(index: u32) -> Result<OwnedFd, String> {
    INCOMING.with(|i| {
        let mut i = i.borrow_mut();
        let list = i
            .as_mut()
            .ok_or_else(|| "a handle can only be received as a process argument".to_string())?;
        list.get_mut(index as usize)
            .and_then(Option::take)
            .ok_or_else(|| format!("handle #{index} did not arrive with the message"))
    })
}
