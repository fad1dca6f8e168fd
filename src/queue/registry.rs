//! The process table: which processes hold handles on a queue (so that consumers can tell
//! "no producer is left" and return `Disconnected`), and which messages each has taken (so
//! that a consumer's death is counted in `lost_messages`).
//!
//! A process holds a slot while it has open handles (`handles`), while handles handed to it as
//! a child's arguments are on their way (`pending`, raised by the parent once the child exists
//! and lowered by the child's decoding), and for as long as it lives if it is a forked copy of
//! a process that had open handles (the copy's handles cannot unregister). A slot whose
//! process is dead (its pid gone, or reused by a process with another start time) is cleared
//! by whoever looks: blocked consumers every [`POLL`](super::POLL), and any new registration.
//!
//! Slots are claimed by writing `-claimer` into `pid` with a compare-and-swap, filling the
//! slot, then publishing the pid; a claim whose claimer died is taken over.

use std::sync::Arc;
use std::sync::atomic::AtomicI32 as StdAtomicI32;

use super::layout::{NO_SLOT, SLOTS, Segment, Slot, State, get_state};
use crate::atomic::Ordering;
use crate::handles::{ForkAware, Transit};
use crate::sys;

/// This process's (pid, start time), recomputed after a fork. Lock-free: a forked child may
/// call it while a thread of its parent was in the middle of it.
pub(super) fn me() -> (i32, u64) {
    static PID: StdAtomicI32 = StdAtomicI32::new(0);
    static START: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let pid = sys::getpid();
    if PID.load(Ordering::Acquire) == pid {
        return (pid, START.load(Ordering::Acquire));
    }
    let start = sys::process_start_time(pid).unwrap_or(0);
    START.store(start, Ordering::Release);
    PID.store(pid, Ordering::Release);
    (pid, start)
}

/// Whether the process `pid` that started at `start` (0: unknown) is gone.
fn dead(pid: i32, start: u64) -> bool {
    sys::running_process_start_time(pid).is_none_or(|t| start != 0 && t != start)
}

/// Whether a claim marker's claimer is gone (or the marker is garbage).
fn stale_claim(marker: i32) -> bool {
    marker
        .checked_neg()
        .is_none_or(|claimer| sys::running_process_start_time(claimer).is_none())
}

/// What a process holds that keeps its slot.
#[derive(Clone, Copy)]
pub(super) enum Hold {
    /// An open handle (lowered by close or drop).
    Handle,
    /// A handle on its way to it (lowered when it decodes the handle).
    Pending,
}

impl Hold {
    fn counter(self, s: &Slot) -> &crate::atomic::AtomicU32 {
        match self {
            Hold::Handle => &s.handles,
            Hold::Pending => &s.pending,
        }
    }
}

impl State {
    /// True while the get lock's last owner died taking a message for slot `i` and nobody
    /// has recovered yet: the slot's counts must wait for that recovery.
    fn recovery_pending(&self, i: usize) -> bool {
        let c = &self.cons;
        c.busy.load(Ordering::Acquire) == get_state::TAKING
            && c.busy_slot.load(Ordering::Acquire) as usize == i
    }

    /// Counts what the dead process of a slot we own exclusively (its pid is our claim marker)
    /// had taken and not returned.
    fn settle(&self, s: &Slot) {
        let taken = s.taken.load(Ordering::Acquire);
        let returned = s.returned.swap(taken, Ordering::AcqRel);
        let lost = taken.saturating_sub(returned);
        if lost > 0 {
            self.counts.lost.fetch_add(lost, Ordering::AcqRel);
        }
    }

    fn reclaimable(&self, i: usize, current: i32) -> bool {
        let s = &self.slots[i];
        match current {
            0 => true,
            c if c < 0 => stale_claim(c),
            c => !self.recovery_pending(i) && dead(c, s.start.load(Ordering::Acquire)),
        }
    }

    /// Finds or claims the slot of process (`pid`, `start`) and raises its `what` count.
    /// `None` if every slot is in use by a live process.
    pub(super) fn hold(&self, pid: i32, start: u64, what: Hold) -> Option<usize> {
        for (i, s) in self.slots.iter().enumerate() {
            if s.pid.load(Ordering::Acquire) == pid && s.start.load(Ordering::Acquire) == start {
                what.counter(s).fetch_add(1, Ordering::AcqRel);
                return Some(i);
            }
        }
        let (my_pid, _) = me();
        for (i, s) in self.slots.iter().enumerate() {
            let current = s.pid.load(Ordering::Acquire);
            if !self.reclaimable(i, current)
                || s.pid
                    .compare_exchange(current, -my_pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            self.settle(s);
            s.start.store(start, Ordering::Release);
            s.taken.store(0, Ordering::Release);
            s.returned.store(0, Ordering::Release);
            s.handles
                .store(u32::from(matches!(what, Hold::Handle)), Ordering::Release);
            s.pending
                .store(u32::from(matches!(what, Hold::Pending)), Ordering::Release);
            s.pid.store(pid, Ordering::Release);
            return Some(i);
        }
        None
    }

    /// Like [`hold`](Self::hold); a process that cannot get a slot is counted as untracked
    /// (it keeps the queue connected for good).
    pub(super) fn hold_or_untracked(&self, pid: i32, start: u64, what: Hold) -> Option<usize> {
        let slot = self.hold(pid, start, what);
        if slot.is_none() {
            self.counts.untracked.fetch_add(1, Ordering::AcqRel);
        }
        slot
    }

    /// Whether any process may still put: one holding or about to receive a handle, or one
    /// that could not be tracked.
    pub(super) fn may_have_producers(&self) -> bool {
        if self.counts.untracked.load(Ordering::Acquire) > 0 {
            return true;
        }
        self.slots.iter().any(|s| {
            let pid = s.pid.load(Ordering::Acquire);
            if pid < 0 {
                return !stale_claim(pid);
            }
            pid != 0
                && (s.handles.load(Ordering::Acquire) > 0 || s.pending.load(Ordering::Acquire) > 0)
        })
    }

    /// Clears the slots of processes that died (and stale claims), counting the messages they
    /// died holding. Wakes blocked consumers if anything changed.
    pub(super) fn reap_dead(&self) {
        let (my_pid, _) = me();
        let mut changed = false;
        for (i, s) in self.slots.iter().enumerate() {
            let pid = s.pid.load(Ordering::Acquire);
            if pid == 0 || pid == my_pid {
                continue;
            }
            let gone = if pid < 0 {
                stale_claim(pid)
            } else {
                let idle = s.handles.load(Ordering::Acquire) == 0
                    && s.pending.load(Ordering::Acquire) == 0
                    && s.taken.load(Ordering::Acquire) == s.returned.load(Ordering::Acquire);
                !idle && !self.recovery_pending(i) && dead(pid, s.start.load(Ordering::Acquire))
            };
            if !gone
                || s.pid
                    .compare_exchange(pid, -my_pid, Ordering::AcqRel, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            self.settle(s);
            s.handles.store(0, Ordering::Release);
            s.pending.store(0, Ordering::Release);
            s.pid.store(0, Ordering::Release);
            changed = true;
        }
        if changed {
            self.data.notify_all_unconditionally();
        }
    }

    /// The slot index as stored in `Consumer::busy_slot`.
    pub(super) fn slot_word(slot: Option<usize>) -> u32 {
        slot.map_or(NO_SLOT, |i| i as u32)
    }

    pub(super) fn slot(&self, word: u32) -> Option<&Slot> {
        self.slots.get(word as usize)
    }
}

const _: () = assert!(SLOTS < NO_SLOT as usize);

/// A queue handle inside a child's encoded arguments.
pub(super) struct QueueTransit(pub(super) Arc<Segment>);

impl Transit for QueueTransit {
    fn handed_to(&self, pid: i32) {
        let start = sys::process_start_time(pid).unwrap_or(0);
        self.0.state.hold_or_untracked(pid, start, Hold::Pending);
    }
}

impl ForkAware for Segment {
    fn forked(&self, pid: i32) {
        if self.local_open.load(Ordering::Acquire) == 0 {
            return; // every handle of ours is closed: so are the child's copies
        }
        let start = sys::process_start_time(pid).unwrap_or(0);
        self.state.hold_or_untracked(pid, start, Hold::Handle);
    }
}
