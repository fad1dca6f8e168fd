//! Where a child's function panicked: a panic hook that records the location, installed in the
//! parent before any fork so that a forked child never has to touch the hook's lock.
//!
//! The hook wraps whatever hook was in place when the first process started, and in the parent it
//! only calls that hook: a program's own panic output is unchanged. In a child it first records
//! the location (for [`Outcome::Panicked`]), then:
//! - in a spawned or safely forked child, calls the previous hook (the usual message on stderr);
//! - in a child of [`Process::new_fork_unchecked`](crate::Process::new_fork_unchecked), writes the
//!   message itself with one raw `write(2)` to descriptor 2. The previous hook is not run: std's
//!   default hook takes a lock (for backtraces) and stderr's lock, either of which another thread
//!   of the parent may have held at the moment of the fork.

use crate::atomic::Ordering;
use std::panic::{self, PanicHookInfo};
use std::sync::Once;
use std::sync::atomic::{AtomicPtr, AtomicU8};

use super::protocol::Outcome;
use crate::sys;

/// This process is no child: the hook only forwards to the previous one.
const PARENT: u8 = 0;
/// A spawned or safely forked child: record, then forward.
const CHILD: u8 = 1;
/// A child of an unchecked fork: record, then write the message without any lock.
const FORKED_UNCHECKED: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(PARENT);

/// The last panic recorded in this child: which thread, and where.
struct Record {
    tid: i32,
    location: Option<String>,
}

/// Null, or a `Box<Record>` owned by whoever swaps it out.
static LAST: AtomicPtr<Record> = AtomicPtr::new(std::ptr::null_mut());

static INSTALLED: Once = Once::new();

/// Installs the recording hook (once per process). Called in the parent before it forks, so that
/// the `Once` is complete in the memory a forked child copies: there it returns at once.
pub(crate) fn install() {
    INSTALLED.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| match MODE.load(Ordering::Relaxed) {
            PARENT => previous(info),
            FORKED_UNCHECKED => {
                let location = record(info);
                write_raw(info, location.as_deref());
            }
            _ => {
                record(info);
                previous(info);
            }
        }));
    });
}

/// Marks this process as a child (`unchecked`: of an unchecked fork) and makes sure the hook is
/// in place. Never downgrades an unchecked-fork child.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn capture_in_child(unchecked: bool) {
    let mode = if unchecked { FORKED_UNCHECKED } else { CHILD };
    MODE.fetch_max(mode, Ordering::Relaxed);
    install();
}

/// Records the panic's location for this thread; returns it.
fn record(info: &PanicHookInfo<'_>) -> Option<String> {
    let location = info
        .location()
        .map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column()));
    let fresh = Box::into_raw(Box::new(Record {
        tid: sys::gettid(),
        location: location.clone(),
    }));
    let old = LAST.swap(fresh, Ordering::AcqRel);
    if !old.is_null() {
        // SAFETY: non-null pointers in `LAST` come from `Box::into_raw` above, and the swap gave
        // this thread sole ownership of the one it returned.
        drop(unsafe { Box::from_raw(old) });
    }
    location
}

/// The panic message, lock-free: formatted into memory, written with one system call.
fn write_raw(info: &PanicHookInfo<'_>, location: Option<&str>) {
    let text = format!(
        "process {} panicked at {}:\n{}\n",
        sys::getpid(),
        location.unwrap_or("an unknown location"),
        message_of(info.payload())
    );
    sys::write_all_raw(2, text.as_bytes());
}

fn message_of(payload: &(dyn std::any::Any + Send)) -> String {
    payload_text(payload)
        .unwrap_or_else(|| "Box<dyn Any> (a panic payload that is not a string)".to_string())
}

/// The text of a panic payload (`panic!` with a literal or a format), or `None` for any other
/// payload: each caller says that its own way.
pub(crate) fn payload_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    if let Some(s) = payload.downcast_ref::<&str>() {
        Some((*s).to_string())
    } else {
        payload.downcast_ref::<String>().cloned()
    }
}

/// The outcome for a caught panic: its message, and where it happened if this thread's hook
/// recorded it.
pub(crate) fn panicked(payload: Box<dyn std::any::Any + Send>) -> Outcome {
    let message = message_of(&*payload);
    let last = LAST.swap(std::ptr::null_mut(), Ordering::AcqRel);
    let location = if last.is_null() {
        None
    } else {
        // SAFETY: as in `record`: the swap made this thread the owner of a `Box<Record>`.
        let record = unsafe { Box::from_raw(last) };
        (record.tid == sys::gettid())
            .then_some(record.location)
            .flatten()
    };
    Outcome::Panicked { message, location }
}
