//! Who this process is, when it is a child: set once after the bootstrap message or right after
//! a fork, read by [`current_process`](crate::current_process) from any thread.
//!
//! Lock-free on purpose. A forked child replaces the identity it copied from its parent; had
//! that copy been guarded by a mutex, another thread of the parent reading its own identity at
//! the moment of the fork would leave the mutex locked forever in the child.

use crate::atomic::Ordering;
use std::sync::atomic::AtomicPtr;

use super::protocol::Identity;

pub(crate) struct ChildIdentity {
    pub(crate) me: Identity,
    pub(crate) parent_pid: u32,
    pub(crate) parent_name: String,
}

/// Null in the main process; else a leaked `ChildIdentity` (a process sets it once, and a
/// forked child once more: the copy it inherited is never freed, since another thread of the
/// parent may have been reading it when the memory was copied).
static ME: AtomicPtr<ChildIdentity> = AtomicPtr::new(std::ptr::null_mut());

/// This process's identity as a child, or `None` in the main process.
pub(crate) fn child_identity() -> Option<&'static ChildIdentity> {
    let ptr = ME.load(Ordering::Acquire);
    // SAFETY: a non-null pointer in `ME` comes from `Box::leak` in `set_child_identity` (the
    // Release store pairs with the Acquire load above) and is never freed: it is valid for
    // 'static and never mutated after publication.
    unsafe { ptr.as_ref() }
}

/// Records who this process is. Takes no lock and may run in a forked child.
pub(crate) fn set_child_identity(me: Identity, parent_pid: u32, parent_name: String) {
    let leaked = Box::leak(Box::new(ChildIdentity {
        me,
        parent_pid,
        parent_name,
    }));
    ME.store(leaked, Ordering::Release);
}

/// An identity made ready before a fork, so that the child only has to publish it: the
/// allocation (and the pages it writes) happen in the parent, and the child writes one word.
/// The parent drops its copy after the fork.
pub(crate) struct Prepared(Box<ChildIdentity>);

impl Prepared {
    pub(crate) fn new(me: Identity, parent_pid: u32, parent_name: String) -> Prepared {
        Prepared(Box::new(ChildIdentity {
            me,
            parent_pid,
            parent_name,
        }))
    }

    /// Makes this the process's identity (in the forked child). Takes no lock, allocates nothing.
    #[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
    pub(crate) fn publish(self) {
        ME.store(Box::leak(self.0), Ordering::Release);
    }
}
