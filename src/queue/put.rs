//! The put path: one message under the put lock, written in place into the ring's free space
//! in one chunk, or streamed through the ring in several when it is larger than the ring.
//!
//! Invariants that keep a failed put invisible to readers:
//! - nothing is published before the whole message is known to fit, except a stream's chunks;
//! - a streamed chunk never takes the last [`HDR`] bytes of the free space, so that an `ABORT`
//!   header can always follow what was published (a failed or timed-out stream, an unwinding
//!   `Serialize`);
//! - a `try_put` never starts a stream (it could not finish it without waiting).

use std::time::Instant;

use serde::Serialize;

use super::layout::{ChunkHeader, HDR, flags, padded, put_state};
use super::ring::advance;
use super::{Deadline, POLL, PutFail, Queue, encode_failed, lock_side, oversized};
use crate::atomic::Ordering;
use crate::error::{Error, ErrorKind};
use crate::sync::Acquired;

/// Cleans up after a `Serialize` that panicked while the put lock was held: closes an open
/// stream with an `ABORT` and marks the producer idle. Dropped before the lock guard.
struct PutUnwind<'q, T> {
    q: &'q Queue<T>,
    armed: bool,
}

impl<T> Drop for PutUnwind<'_, T> {
    fn drop(&mut self) {
        if self.armed {
            let p = &self.q.st().prod;
            // A stream that cannot be closed now stays marked open: the next holder of the put
            // lock, or a consumer waiting for its next chunk, closes it.
            if self.q.abort_open_stream(Deadline::Now) {
                p.busy.store(put_state::IDLE, Ordering::Relaxed);
            }
        }
    }
}

impl<T> Queue<T> {
    /// Free bytes after `tail`, from the cached head, refreshed if `want` does not fit. Never
    /// more than the ring's size, whatever the shared cursors say.
    pub(super) fn free(&self, tail: u64, want: u64) -> u64 {
        let cap = self.seg.cap;
        let mut head = self.cache.head.load(Ordering::Relaxed);
        // A stale cached head can be more than a ring behind: saturate.
        if cap.saturating_sub(tail.wrapping_sub(head)) < want {
            head = self.st().cons.head.load(Ordering::Acquire);
            self.cache.head.store(head, Ordering::Relaxed);
        }
        cap.saturating_sub(tail.wrapping_sub(head))
    }

    fn items_ok(&self) -> bool {
        let max = self.seg.max_items;
        if max == 0 {
            return true;
        }
        let puts = self.st().prod.puts.load(Ordering::Relaxed);
        let mut gets = self.cache.gets.load(Ordering::Relaxed);
        if puts.saturating_sub(gets) >= max {
            gets = self.st().cons.gets.load(Ordering::Acquire);
            self.cache.gets.store(gets, Ordering::Relaxed);
        }
        puts.saturating_sub(gets) < max
    }

    /// Waits (on the space wake) until `ok()`.
    pub(super) fn wait_space(&self, d: Deadline, mut ok: impl FnMut() -> bool) -> bool {
        if ok() {
            return true;
        }
        if matches!(d, Deadline::Now) {
            return false;
        }
        let head = &self.st().cons.head;
        let deadline = d.instant();
        loop {
            // Wake up now and then regardless: a consumer killed between moving the head and
            // waking us must not leave us asleep.
            let tick = Instant::now() + POLL;
            let until = deadline.map_or(tick, |at| at.min(tick));
            let waited = self.st().space.wait_until(
                &self.seg.put_spin,
                Some(until),
                |sync| {
                    // The read-modify-write pairs with the consumer's `advance` (see ring.rs);
                    // what `ok` reads after it is at least as new.
                    super::ring::read(head, sync);
                    ok()
                },
                || false,
            );
            if waited == crate::sync::wait_word::Waited::Ready {
                return true;
            }
            if deadline.is_some_and(|at| Instant::now() >= at) {
                return false;
            }
        }
    }

    /// With the put lock held: writes an `ABORT` after a stream left open, if there is room.
    /// True if no stream is open any more.
    pub(super) fn abort_open_stream(&self, d: Deadline) -> bool {
        let st = self.st();
        let p = &st.prod;
        if p.stream_open.load(Ordering::Relaxed) == 0 {
            return true;
        }
        let tail = p.tail.load(Ordering::Relaxed);
        if !self.wait_space(d, || self.free(tail, HDR as u64) >= HDR as u64) {
            return false;
        }
        let abort = ChunkHeader {
            flags: flags::ABORT,
            len: 0,
            seq: p.stream_seq.load(Ordering::Relaxed),
        };
        self.seg.write_header(tail, abort);
        advance(&p.tail, tail.wrapping_add(HDR as u64), &st.data);
        p.stream_open.store(0, Ordering::Relaxed);
        true
    }
}

impl<T: Serialize> Queue<T> {
    pub(super) fn put_inner(&self, value: &T, d: Deadline) -> std::result::Result<(), PutFail> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(PutFail::Error(Error::new(
                ErrorKind::Closed,
                "put on a closed queue handle",
            )));
        }
        let st = self.st();
        let p = &st.prod;
        self.seg.put_spin.tick(&p.cpus, &st.cons.cpus);
        let (_guard, acquired) = lock_side(&p.lock, d)
            .map_err(PutFail::Error)?
            .ok_or(PutFail::OutOfTime)?;
        if acquired == Acquired::OwnerDied
            || p.busy.load(Ordering::Relaxed) != put_state::IDLE
            || p.stream_open.load(Ordering::Relaxed) != 0
        {
            self.recover_put(d, acquired == Acquired::OwnerDied)?;
        }
        if !self.wait_space(d, || self.items_ok()) {
            return Err(PutFail::OutOfTime);
        }
        let tail = p.tail.load(Ordering::Relaxed);
        let seq = p.next_seq.load(Ordering::Relaxed);
        p.next_seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        p.busy_puts
            .store(p.puts.load(Ordering::Relaxed), Ordering::Relaxed);
        p.busy.store(put_state::WRITING, Ordering::Relaxed);
        let mut unwind = PutUnwind {
            q: self,
            armed: true,
        };
        let outcome = self.write_message(value, tail, seq, d);
        unwind.armed = false;
        if outcome.is_err() {
            p.busy.store(put_state::IDLE, Ordering::Relaxed);
        }
        outcome
    }

    fn write_message(
        &self,
        value: &T,
        tail: u64,
        seq: u64,
        d: Deadline,
    ) -> std::result::Result<(), PutFail> {
        let limit = self.seg.max_message;
        // Attempt 1: into whatever is free by the cached head; if that was too small and the
        // consumer has moved on since, once more with the fresh head.
        let mut tried = 0;
        for refresh in [false, true] {
            let free = if refresh {
                self.free(tail, u64::MAX)
            } else {
                self.free(tail, (HDR + 64) as u64)
            };
            if free <= tried {
                continue;
            }
            tried = free;
            if free as usize > HDR {
                // SAFETY: `free` bytes after the tail are ours (we hold the put lock).
                let room = unsafe {
                    self.seg
                        .ring(tail.wrapping_add(HDR as u64), free as usize - HDR)
                };
                match postcard::to_slice(value, room) {
                    Ok(used) => {
                        let len = used.len();
                        if len > limit {
                            // Written into free space only: nothing is published.
                            return Err(oversized(len, limit));
                        }
                        return self.finish_single(tail, seq, len);
                    }
                    Err(postcard::Error::SerializeBufferFull) => {}
                    Err(e) => return Err(encode_failed(e)),
                }
            }
        }
        // Attempt 2: it did not fit. How big is it?
        let size = postcard::experimental::serialized_size(value).map_err(encode_failed)?;
        if size > limit {
            return Err(oversized(size, limit));
        }
        let need = padded(size) as u64;
        if need <= self.seg.cap {
            if !self.wait_space(d, || self.free(tail, need) >= need) {
                return Err(PutFail::OutOfTime);
            }
            // SAFETY: `need` bytes after the tail are free and ours.
            let room = unsafe { self.seg.ring(tail.wrapping_add(HDR as u64), size) };
            let used = postcard::to_slice(value, room).map_err(encode_failed)?;
            return self.finish_single(tail, seq, used.len());
        }
        if matches!(d, Deadline::Now) {
            // Larger than the ring: it can only go in while a consumer makes room.
            return Err(PutFail::OutOfTime);
        }
        self.stream(value, tail, seq, d)
    }

    fn finish_single(&self, tail: u64, seq: u64, len: usize) -> std::result::Result<(), PutFail> {
        let h = ChunkHeader {
            flags: flags::FIRST | flags::LAST,
            len: len as u32,
            seq,
        };
        self.seg.write_header(tail, h);
        self.finish(tail, tail.wrapping_add(padded(len) as u64));
        Ok(())
    }

    /// Counts the message and publishes its final chunk (which starts at `before`).
    fn finish(&self, before: u64, new_tail: u64) {
        let st = self.st();
        let p = &st.prod;
        p.busy_tail.store(before, Ordering::Relaxed);
        // Counted before it is published, so that a consumer never takes (and marks done) a
        // task that is not counted yet; a death in between is undone by `recover_put`.
        if self.seg.joinable {
            st.counts.unfinished.fetch_add(1, Ordering::AcqRel);
        }
        p.puts.store(
            p.busy_puts.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        p.busy.store(put_state::PUBLISHING, Ordering::Release);
        advance(&p.tail, new_tail, &st.data);
        if p.stream_open.load(Ordering::Relaxed) != 0 {
            p.stream_open.store(0, Ordering::Relaxed);
        }
        p.busy.store(put_state::IDLE, Ordering::Release);
    }

    fn stream(
        &self,
        value: &T,
        tail: u64,
        seq: u64,
        d: Deadline,
    ) -> std::result::Result<(), PutFail> {
        let mut w = Streamer {
            q: self,
            seq,
            chunk_start: tail,
            chunk_len: 0,
            first: true,
            deadline: d,
            total: 0,
            fail: None,
        };
        if !w.open() {
            return Err(PutFail::OutOfTime);
        }
        match postcard::serialize_with_flavor::<T, _, ()>(value, StreamFlavor(&mut w)) {
            Ok(()) => {
                let start = w.chunk_start;
                let len = w.chunk_len;
                let h = ChunkHeader {
                    flags: if w.first {
                        flags::FIRST | flags::LAST
                    } else {
                        flags::LAST
                    },
                    len: len as u32,
                    seq,
                };
                self.seg.write_header(start, h);
                self.finish(start, start.wrapping_add(padded(len) as u64));
                Ok(())
            }
            Err(e) => {
                // The header space at `chunk_start` is reserved (by `open`, or by the previous
                // chunk leaving it free): turn it into an ABORT if anything of this message is
                // out already.
                if !w.first {
                    // Only a peer scribbling over the cursors can take that room away; then the
                    // stream stays marked open for the next holder of the lock to close.
                    let _ = self.abort_open_stream(Deadline::Now);
                }
                Err(w.fail.take().unwrap_or_else(|| encode_failed(e)))
            }
        }
    }
}

/// The streaming writer: fills chunks in the ring as serialization produces bytes, publishing
/// each full one and waiting for room for the next.
struct Streamer<'q, T> {
    q: &'q Queue<T>,
    seq: u64,
    chunk_start: u64,
    chunk_len: usize,
    first: bool,
    deadline: Deadline,
    total: usize,
    fail: Option<PutFail>,
}

impl<T> Streamer<'_, T> {
    /// Reserves a new chunk at `chunk_start`: waits for room for its header, some payload, and
    /// the header that may have to follow it.
    fn open(&mut self) -> bool {
        let want = (2 * HDR + (self.q.seg.cap as usize / 4).max(16)) as u64;
        let start = self.chunk_start;
        let q = self.q;
        if !q.wait_space(self.deadline, || q.free(start, want) >= want) {
            self.fail = Some(PutFail::OutOfTime);
            return false;
        }
        self.chunk_len = 0;
        true
    }

    /// Payload room left in the open chunk, keeping one header's room free after it (the
    /// free space is a multiple of 16, so the padded chunk fits too).
    fn room(&self) -> usize {
        let free = self
            .q
            .free(self.chunk_start, (2 * HDR + self.chunk_len + 16) as u64);
        let payload = (free as usize).saturating_sub(2 * HDR);
        payload
            .saturating_sub(self.chunk_len)
            .min(u32::MAX as usize - 16 - self.chunk_len)
    }

    /// Publishes the open chunk (not the last) and opens the next.
    fn flush(&mut self) -> bool {
        let q = self.q;
        let p = &q.st().prod;
        let h = ChunkHeader {
            flags: if self.first { flags::FIRST } else { 0 },
            len: self.chunk_len as u32,
            seq: self.seq,
        };
        q.seg.write_header(self.chunk_start, h);
        if self.first {
            // Marked before the first chunk is visible: recovery must close what it sees.
            p.stream_seq.store(self.seq, Ordering::Relaxed);
            p.stream_open.store(1, Ordering::Release);
            self.first = false;
        }
        self.chunk_start = self.chunk_start.wrapping_add(padded(self.chunk_len) as u64);
        advance(&p.tail, self.chunk_start, &q.st().data);
        self.open()
    }

    fn write(&mut self, mut data: &[u8]) -> postcard::Result<()> {
        self.total += data.len();
        let limit = self.q.seg.max_message;
        if self.total > limit {
            self.fail = Some(oversized(self.total, limit));
            return Err(postcard::Error::SerializeBufferFull);
        }
        while !data.is_empty() {
            let room = self.room();
            if room == 0 {
                if !self.flush() {
                    return Err(postcard::Error::SerializeBufferFull);
                }
                continue;
            }
            let n = room.min(data.len());
            let at = self.chunk_start.wrapping_add((HDR + self.chunk_len) as u64);
            // SAFETY: `n` bytes of free space the put-lock holder reserved.
            unsafe { self.q.seg.ring(at, n) }.copy_from_slice(&data[..n]);
            self.chunk_len += n;
            data = &data[n..];
        }
        Ok(())
    }
}

struct StreamFlavor<'a, 'q, T>(&'a mut Streamer<'q, T>);

impl<T> postcard::ser_flavors::Flavor for StreamFlavor<'_, '_, T> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.write(&[data])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.write(data)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}
