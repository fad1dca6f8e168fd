//! The get path: one message under the get lock, decoded in place when it is one chunk,
//! reassembled when it is streamed.
//!
//! Every length read from the ring is checked against the published bytes, the ring's size and
//! the message limit (all snapshotted or bounded locally); corrupt state is a typed error.
//! A deadline holds mid-stream too: the part received so far stays with this handle, which
//! finishes the message on its next get; any other get skips it and counts it lost.

use std::time::Instant;

use serde::de::DeserializeOwned;

use super::layout::{HDR, NO_PART_OWNER, RESUMED, flags, get_state, padded, put_state, skip_state};
use super::ring::{advance, read};
use super::{Deadline, GetFail, POLL, Queue, SideGuard, lock_side};
use crate::atomic::Ordering;
use crate::codec::{self, CodecError};
use crate::error::{Error, ErrorKind};
use crate::sync::Acquired;
use crate::sync::wait_word::Waited;
use crate::sys;

fn corrupt(what: &str) -> GetFail {
    GetFail::Error(Error::new(
        ErrorKind::Codec,
        format!("the queue's shared state is corrupt: {what}"),
    ))
}

/// How many chunks a get goes through between two looks at its deadline.
const DEADLINE_EVERY: u32 = 1024;

impl<T> Queue<T> {
    /// Published bytes after `head`: 0 if none, an error if the cursors are inconsistent.
    fn published(&self, head: u64) -> std::result::Result<u64, GetFail> {
        let cap = self.seg.cap;
        let cached = self.cache.tail.load(Ordering::Relaxed);
        let n = cached.wrapping_sub(head);
        if n != 0 && n <= cap {
            return Ok(n);
        }
        let t = self.st().prod.tail.load(Ordering::Acquire);
        self.cache.tail.store(t, Ordering::Relaxed);
        let n = t.wrapping_sub(head);
        if n > cap {
            return Err(corrupt("the tail is not within one ring of the head"));
        }
        Ok(n)
    }

    /// Who may finish a stream this handle left half-received (see `Consumer::part_owner`).
    fn owner_id(&self) -> u64 {
        ((sys::getpid() as u32 as u64) << 32) | (self.id & 0xffff_ffff) | 1
    }

    fn advance_head(&self, head: u64) {
        advance(&self.st().cons.head, head, &self.st().space);
    }
}

impl<T: DeserializeOwned> Queue<T> {
    pub(super) fn get_inner(&self, d: Deadline) -> std::result::Result<T, GetFail> {
        let mut taken = false;
        let r = self.get_locked(d, &mut taken);
        // The get lock is released: the message is ours alone now. Until this line, a death of
        // this process counts it as lost (see `Slot::taken`).
        if let (Some(slot), true) = (self.slot, taken) {
            self.st().slots[slot]
                .returned
                .fetch_add(1, Ordering::AcqRel);
        }
        r
    }

    fn get_locked(&self, d: Deadline, taken: &mut bool) -> std::result::Result<T, GetFail> {
        let seg = &*self.seg;
        let st = self.st();
        let c = &st.cons;
        seg.get_spin.tick(&c.cpus, &st.prod.cpus);
        let (_guard, acquired) = lock_side(&c.lock, d)
            .map_err(GetFail::Error)?
            .ok_or(GetFail::Nothing)?;
        if acquired == Acquired::OwnerDied {
            self.recover_get();
        }
        let mut head = c.head.load(Ordering::Relaxed);
        // The message being reassembled (streamed), by sequence number.
        let mut assembling: Option<u64> = None;
        let mut scratch = None;
        let owner = c.part_owner.load(Ordering::Relaxed);
        if owner != NO_PART_OWNER {
            let seq = c.part_seq.load(Ordering::Relaxed);
            c.part_owner.store(NO_PART_OWNER, Ordering::Relaxed);
            if owner == self.owner_id() {
                // Ours, left when a deadline passed: go on with it.
                scratch = Some(self.scratch.lock().unwrap_or_else(|e| e.into_inner()));
                assembling = Some(seq);
                self.mark_taking(seq, RESUMED);
            } else {
                c.skip_seq.store(seq, Ordering::Relaxed);
                c.skip.store(skip_state::COUNT_AT_END, Ordering::Relaxed);
            }
        }
        let mut chunks = 0u32;
        loop {
            chunks = chunks.wrapping_add(1);
            if chunks.is_multiple_of(DEADLINE_EVERY) && d.passed() {
                self.leave_part(assembling);
                return Err(GetFail::Nothing);
            }
            let avail = self.published(head)?;
            if avail == 0 {
                self.wait_data(head, d, &mut assembling)?;
                continue;
            }
            let h = seg
                .read_header(head)
                .ok_or_else(|| corrupt("a chunk header has a wrong magic"))?;
            let len = h.len as usize;
            let size = padded(len) as u64;
            if avail < HDR as u64 || size > avail {
                return Err(corrupt("a chunk is longer than what was published"));
            }
            let next = head.wrapping_add(size);
            let skip = c.skip.load(Ordering::Relaxed);
            if skip != skip_state::NONE && h.seq == c.skip_seq.load(Ordering::Relaxed) {
                // A chunk of a message a dead consumer had started: drop it.
                if h.flags & flags::LAST != 0 {
                    if skip == skip_state::COUNT_AT_END {
                        c.gets.fetch_add(1, Ordering::AcqRel);
                        st.counts.lost.fetch_add(1, Ordering::AcqRel);
                    }
                    c.skip.store(skip_state::NONE, Ordering::Relaxed);
                } else if h.flags & flags::ABORT != 0 {
                    c.skip.store(skip_state::NONE, Ordering::Relaxed);
                }
                head = next;
                self.advance_head(head);
                continue;
            }
            if h.flags & flags::ABORT != 0 {
                if assembling == Some(h.seq) {
                    assembling = None;
                    c.busy.store(get_state::IDLE, Ordering::Relaxed);
                }
                head = next;
                self.advance_head(head);
                continue;
            }
            // SAFETY: the payload is published (checked above) and ours until the head moves
            // past it.
            let payload = unsafe { seg.ring(head.wrapping_add(HDR as u64), len) };
            if h.flags & flags::FIRST != 0 {
                // A new message (if one was being reassembled, its producer vanished without an
                // ABORT, which recovery prevents; drop it all the same).
                self.mark_taking(h.seq, head);
                if h.flags & flags::LAST != 0 {
                    let value = codec::decode::<T>(payload);
                    return self.complete(next, value, taken);
                }
                let buf = scratch
                    .get_or_insert_with(|| self.scratch.lock().unwrap_or_else(|e| e.into_inner()));
                buf.clear();
                buf.extend_from_slice(payload);
                assembling = Some(h.seq);
                head = next;
                self.advance_head(head);
                continue;
            }
            if assembling == Some(h.seq) {
                let buf = scratch
                    .as_mut()
                    .expect("assembling implies a scratch buffer");
                if buf.len().saturating_add(len) > seg.max_message {
                    // A peer streamed more than the limit: drop the message.
                    c.skip_seq.store(h.seq, Ordering::Relaxed);
                    c.skip.store(skip_state::COUNT_AT_END, Ordering::Relaxed);
                    c.busy.store(get_state::IDLE, Ordering::Relaxed);
                    **buf = Vec::new();
                    return Err(corrupt("a streamed message is larger than the limit"));
                }
                buf.extend_from_slice(payload);
                head = next;
                if h.flags & flags::LAST != 0 {
                    let value = codec::decode::<T>(&buf[..]);
                    if buf.capacity() > (64usize << 20).max(4 * seg.cap as usize) {
                        // Do not keep a huge buffer around after a huge message.
                        **buf = Vec::new();
                    }
                    return self.complete(head, value, taken);
                }
                self.advance_head(head);
                continue;
            }
            // A continuation of a message we are not reading (garbage, or a stream whose start
            // was lost): skip it.
            head = next;
            self.advance_head(head);
        }
    }

    /// Records that this handle is taking message `seq`, whose first chunk was at `head`.
    fn mark_taking(&self, seq: u64, head: u64) {
        let st = self.st();
        let c = &st.cons;
        let word = super::layout::State::slot_word(self.slot);
        c.busy_head.store(head, Ordering::Relaxed);
        c.busy_gets
            .store(c.gets.load(Ordering::Relaxed), Ordering::Relaxed);
        c.busy_seq.store(seq, Ordering::Relaxed);
        c.busy_slot.store(word, Ordering::Relaxed);
        c.busy_taken.store(
            st.slot(word).map_or(0, |s| s.taken.load(Ordering::Relaxed)),
            Ordering::Relaxed,
        );
        c.busy.store(get_state::TAKING, Ordering::Release);
    }

    /// A deadline passed mid-stream: the part received so far stays with this handle.
    fn leave_part(&self, assembling: Option<u64>) {
        let c = &self.st().cons;
        if let Some(seq) = assembling {
            c.part_seq.store(seq, Ordering::Relaxed);
            c.part_owner.store(self.owner_id(), Ordering::Relaxed);
            c.busy.store(get_state::IDLE, Ordering::Release);
        }
    }

    /// Counts the message taken and moves the head past it.
    fn complete(
        &self,
        new_head: u64,
        value: std::result::Result<T, CodecError>,
        taken: &mut bool,
    ) -> std::result::Result<T, GetFail> {
        let st = self.st();
        let c = &st.cons;
        if let Some(slot) = self.slot {
            st.slots[slot].taken.fetch_add(1, Ordering::AcqRel);
            *taken = true;
        }
        c.gets.store(
            c.busy_gets.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        self.advance_head(new_head);
        c.busy.store(get_state::IDLE, Ordering::Release);
        value.map_err(|e| GetFail::Error(Error::codec("a queued message could not be decoded", e)))
    }

    /// Waits for bytes beyond `head`. Returns `Ok` to re-check, or how the get ends.
    fn wait_data(
        &self,
        head: u64,
        d: Deadline,
        assembling: &mut Option<u64>,
    ) -> std::result::Result<(), GetFail> {
        let st = self.st();
        let mid = assembling.is_some();
        if !mid && !st.may_have_producers() {
            return Err(GetFail::Disconnected);
        }
        if d.passed() {
            self.leave_part(*assembling);
            return Err(GetFail::Nothing);
        }
        let tick = Instant::now() + POLL;
        let until = match d.instant() {
            Some(at) if at < tick => at,
            _ => tick,
        };
        let waited = st.data.wait_until(
            &self.seg.get_spin,
            Some(until),
            |sync| read(&st.prod.tail, sync) != head,
            || !mid && !st.may_have_producers(),
        );
        match waited {
            Waited::Ready => Ok(()),
            Waited::Stopped => Err(GetFail::Disconnected),
            Waited::TimedOut => {
                st.reap_dead();
                if mid {
                    self.check_stream_writer(head, assembling);
                } else {
                    self.repair_dead_producer();
                }
                Ok(())
            }
        }
    }

    /// Mid-stream with nothing new: is the stream's producer still there? If the put lock is
    /// free, nobody is writing it: close it, and if nothing more can come, give it up (lost).
    fn check_stream_writer(&self, head: u64, assembling: &mut Option<u64>) {
        let st = self.st();
        let p = &st.prod;
        let Ok(Some((_g, a))) = SideGuard::try_lock(&p.lock) else {
            return; // a live producer holds it (or the lock is broken: the put fails then)
        };
        let died = a == Acquired::OwnerDied;
        if (died
            || p.busy.load(Ordering::Relaxed) != put_state::IDLE
            || p.stream_open.load(Ordering::Relaxed) != 0)
            && self.recover_put(Deadline::Now, died).is_err()
        {
            return;
        }
        if p.tail.load(Ordering::Acquire) == head {
            // Nobody writes, nothing is left to read, and the stream has no end.
            *assembling = None;
            st.cons.busy.store(get_state::IDLE, Ordering::Release);
            st.counts.lost.fetch_add(1, Ordering::AcqRel);
        }
    }
}
