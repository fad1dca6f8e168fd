//! Objects that a forked child holds a copy of, told about each new child by the parent.

use crate::atomic::Ordering;
use std::sync::atomic::AtomicPtr;
use std::sync::{Arc, Mutex, Weak};

use crate::sys;

/// Shared state that a forked child holds a copy of.
pub(crate) trait ForkAware: Send + Sync {
    /// This process was just copied into the child `pid`.
    fn forked(&self, pid: i32);
}

/// The live [`ForkAware`] objects of one process. A forked child that registers objects of its
/// own starts a fresh list (the parent's may have been locked by another thread at the fork).
struct Registry {
    pid: i32,
    list: Mutex<Vec<Weak<dyn ForkAware>>>,
}

static REGISTRY: AtomicPtr<Registry> = AtomicPtr::new(std::ptr::null_mut());

/// This process's registry; `None` if it has none yet and `create` is false.
fn registry(create: bool) -> Option<&'static Registry> {
    let pid = sys::getpid();
    let current = REGISTRY.load(Ordering::Acquire);
    // SAFETY: a non-null REGISTRY points to a leaked (never freed) Registry.
    if let Some(r) = unsafe { current.as_ref() }
        && r.pid == pid
    {
        return Some(r);
    }
    if !create {
        return None;
    }
    let fresh = Box::into_raw(Box::new(Registry {
        pid,
        list: Mutex::new(Vec::new()),
    }));
    match REGISTRY.compare_exchange(current, fresh, Ordering::AcqRel, Ordering::Acquire) {
        // The replaced one (if any) was a parent's, copied by fork: leaked on purpose.
        // SAFETY: just leaked.
        Ok(_) => Some(unsafe { &*fresh }),
        Err(winner) => {
            // SAFETY: `fresh` was never shared; `winner` is a leaked Registry.
            unsafe {
                drop(Box::from_raw(fresh));
                winner.as_ref()
            }
            .filter(|r| r.pid == pid)
        }
    }
}

/// Registers `object` to be told about forked children for as long as it lives.
pub(crate) fn register_fork_aware(object: &Arc<dyn ForkAware>) {
    if let Some(r) = registry(true) {
        let mut list = r.list.lock().unwrap_or_else(|e| e.into_inner());
        list.retain(|w| w.strong_count() > 0);
        list.push(Arc::downgrade(object));
    }
}

/// In the parent, right after `fork()` returned `pid`: tells every live registered object.
pub(crate) fn forked(pid: i32) {
    let Some(r) = registry(false) else { return };
    let live: Vec<Arc<dyn ForkAware>> = {
        let list = r.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().filter_map(Weak::upgrade).collect()
    };
    for object in live {
        object.forked(pid);
    }
}
