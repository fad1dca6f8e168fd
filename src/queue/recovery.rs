//! Repairing the shared state after a process died in the middle of a put or a get, or a
//! thread unwound out of one.
//!
//! Each side records what it is doing before it does it (see `layout.rs`): the next holder of
//! the lock, told by the robust lock that the previous owner died (or finding the side marked
//! busy after an unwind), tells "nothing happened" from "counted but not published" from "half
//! a stream is out", and repairs. Consumers do not wait for a producer to come: a consumer
//! blocked mid-stream, `qsize`, and `join` look at the put lock themselves.

use super::layout::{get_state, put_state, skip_state};
use super::{Deadline, PutFail, Queue, SideGuard};
use crate::atomic::Ordering;
use crate::sync::Acquired;

impl<T> Queue<T> {
    /// With the put lock held, after "owner died" (`died`) or with the producer side found
    /// busy: finishes what the previous holder left.
    pub(super) fn recover_put(&self, d: Deadline, died: bool) -> std::result::Result<(), PutFail> {
        let st = self.st();
        let p = &st.prod;
        let tail = p.tail.load(Ordering::Relaxed);
        if p.busy.load(Ordering::Relaxed) == put_state::PUBLISHING {
            if tail == p.busy_tail.load(Ordering::Relaxed) {
                // Counted but never published: uncount.
                p.puts
                    .store(p.busy_puts.load(Ordering::Relaxed), Ordering::Relaxed);
                if self.seg.joinable {
                    let before = st.counts.unfinished.fetch_update(
                        Ordering::AcqRel,
                        Ordering::Acquire,
                        |n| n.checked_sub(1),
                    );
                    if before == Ok(1) {
                        st.counts.join.notify_all_unconditionally();
                    }
                }
            } else {
                // Published: a stream it ended is closed.
                p.stream_open.store(0, Ordering::Relaxed);
            }
        }
        let had_stream = p.stream_open.load(Ordering::Relaxed) != 0;
        if !self.abort_open_stream(d) {
            // Leave the side marked: the next holder tries again.
            return Err(PutFail::OutOfTime);
        }
        if had_stream && died {
            st.counts.lost.fetch_add(1, Ordering::AcqRel);
        }
        p.busy.store(put_state::IDLE, Ordering::Relaxed);
        if died {
            p.lock.mark_consistent();
        }
        Ok(())
    }

    /// If a put seems to be in progress, checks that its producer is alive; if it died (or
    /// unwound and left its state), repairs the producer side. Never blocks.
    pub(super) fn repair_dead_producer(&self) {
        let p = &self.st().prod;
        if p.busy.load(Ordering::Acquire) == put_state::IDLE
            && p.stream_open.load(Ordering::Acquire) == 0
            && !p.lock.owner_died()
        {
            return;
        }
        // A broken lock is left alone: the next put reports it.
        if let Ok(Some((_g, a))) = SideGuard::try_lock(&p.lock) {
            let died = a == Acquired::OwnerDied;
            if died
                || p.busy.load(Ordering::Relaxed) != put_state::IDLE
                || p.stream_open.load(Ordering::Relaxed) != 0
            {
                let _ = self.recover_put(Deadline::Now, died);
            }
        }
    }

    /// With the get lock held, after "owner died": works out what the dead consumer had taken.
    pub(super) fn recover_get(&self) {
        let st = self.st();
        let c = &st.cons;
        if c.busy.load(Ordering::Relaxed) == get_state::TAKING {
            let busy_gets = c.busy_gets.load(Ordering::Relaxed);
            let seq = c.busy_seq.load(Ordering::Relaxed);
            let slot = st.slot(c.busy_slot.load(Ordering::Relaxed));
            // Did it mark the message as in its hands (`taken`) before it died?
            let marked = slot.is_some_and(|s| {
                s.taken.load(Ordering::Acquire) != c.busy_taken.load(Ordering::Relaxed)
            });
            if c.head.load(Ordering::Relaxed) == c.busy_head.load(Ordering::Relaxed) {
                // Nothing was consumed: the message is still there for us.
                c.gets.store(busy_gets, Ordering::Relaxed);
                if let (Some(s), true) = (slot, marked) {
                    s.taken.fetch_sub(1, Ordering::AcqRel);
                }
            } else {
                let counted = c.gets.load(Ordering::Relaxed) != busy_gets;
                if counted && !marked {
                    // Taken whole by a process that could not record it: count it here (a
                    // marked one is counted when its process is found dead).
                    st.counts.lost.fetch_add(1, Ordering::AcqRel);
                }
                c.skip_seq.store(seq, Ordering::Relaxed);
                c.skip.store(
                    if counted {
                        skip_state::COUNTED
                    } else {
                        skip_state::COUNT_AT_END
                    },
                    Ordering::Relaxed,
                );
            }
            c.busy.store(get_state::IDLE, Ordering::Release);
        }
        c.lock.mark_consistent();
        st.reap_dead();
    }
}
