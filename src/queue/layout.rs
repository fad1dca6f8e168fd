//! The shared layout: the state at the start of the segment, the ring's chunk header, and the
//! per-handle view of both (with the bounds snapshotted at attach time).
//!
//! Everything in the segment can be written by any process that holds it, including a buggy or
//! hostile one. What bounds our memory accesses is therefore never read from it after attach:
//! the ring's size and the message limit are copied into the [`Segment`] when it is mapped, every
//! length read from a chunk header is checked against them and against the published bytes, and
//! cursor arithmetic wraps instead of overflowing.

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicI32, AtomicUsize};

use crate::atomic::{AtomicU32, AtomicU64};
use crate::shm::Shared;
use crate::sync::LockCell;
use crate::sync::spin::Spin;
use crate::sync::wait_word::WaitWord;
use crate::sys;

/// Size of a chunk header; chunks start at multiples of it.
pub(super) const HDR: usize = 16;
/// The process table's size: processes beyond it are "untracked" (see `registry.rs`).
pub(super) const SLOTS: usize = 128;

/// A chunk's total size in the ring: header plus payload padded to 16 bytes.
pub(super) fn padded(len: usize) -> usize {
    HDR + len.next_multiple_of(16)
}

/// Chunk flags.
pub(super) mod flags {
    /// The first chunk of a message.
    pub(crate) const FIRST: u16 = 1;
    /// The last chunk of a message (`FIRST | LAST`: a message in one piece).
    pub(crate) const LAST: u16 = 2;
    /// The message this chunk belongs to was cut short: drop what came of it.
    pub(crate) const ABORT: u16 = 4;
}

/// The 16 bytes before every chunk's payload: magic, flags, payload length, message number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct ChunkHeader {
    pub(super) flags: u16,
    pub(super) len: u32,
    pub(super) seq: u64,
}

const MAGIC: u16 = 0x5143;

impl ChunkHeader {
    pub(super) fn encode(self) -> [u8; HDR] {
        let mut h = [0u8; HDR];
        h[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        h[2..4].copy_from_slice(&self.flags.to_le_bytes());
        h[4..8].copy_from_slice(&self.len.to_le_bytes());
        h[8..16].copy_from_slice(&self.seq.to_le_bytes());
        h
    }

    /// `None` if the magic is wrong.
    pub(super) fn decode(h: &[u8; HDR]) -> Option<ChunkHeader> {
        let [m0, m1, f0, f1, l0, l1, l2, l3, s @ ..] = *h;
        (u16::from_le_bytes([m0, m1]) == MAGIC).then(|| ChunkHeader {
            flags: u16::from_le_bytes([f0, f1]),
            len: u32::from_le_bytes([l0, l1, l2, l3]),
            seq: u64::from_le_bytes(s),
        })
    }
}

/// A value on its own 128-byte line (two cache lines: the adjacent-line prefetcher pairs them).
#[repr(C, align(128))]
pub(super) struct CachePadded<T>(pub(super) T);

impl<T> Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// `Producer::busy` values.
pub(super) mod put_state {
    /// No put in progress.
    pub(crate) const IDLE: u32 = 0;
    /// Writing a message: nothing of it is counted.
    pub(crate) const WRITING: u32 = 1;
    /// Counted (`puts`, `unfinished`); its final chunk, at `busy_tail`, may not be published.
    pub(crate) const PUBLISHING: u32 = 2;
}

/// `Consumer::skip` values.
pub(super) mod skip_state {
    /// Nothing to skip.
    pub(crate) const NONE: u32 = 0;
    /// Skip the chunks of `skip_seq`; count it lost at its last chunk.
    pub(crate) const COUNT_AT_END: u32 = 1;
    /// Skip them; already counted.
    pub(crate) const COUNTED: u32 = 2;
}

/// `Consumer::busy` values.
pub(super) mod get_state {
    /// No get in progress.
    pub(crate) const IDLE: u32 = 0;
    /// Taking message `busy_seq`.
    pub(crate) const TAKING: u32 = 1;
}

/// `Consumer::busy_head` of a message resumed after a deadline, whose first chunks are gone.
pub(super) const RESUMED: u64 = u64::MAX;
/// `Consumer::busy_slot` of a consumer without a process-table slot.
pub(super) const NO_SLOT: u32 = u32::MAX;
/// `Consumer::part_owner` when no half-received message is waiting for its handle.
pub(super) const NO_PART_OWNER: u64 = 0;

/// Written by the put-lock holder.
#[repr(C)]
pub(super) struct Producer {
    pub(super) tail: AtomicU64,
    /// Complete messages published.
    pub(super) puts: AtomicU64,
    pub(super) next_seq: AtomicU64,
    /// One of [`put_state`].
    pub(super) busy: AtomicU32,
    /// Chunks of message `stream_seq` are out, its last is not.
    pub(super) stream_open: AtomicU32,
    /// With `PUBLISHING`: the tail before the final chunk.
    pub(super) busy_tail: AtomicU64,
    pub(super) busy_puts: AtomicU64,
    pub(super) stream_seq: AtomicU64,
    pub(super) lock: LockCell,
    /// The CPU mask of the last producer that published it, a hint (see `crate::sync::spin`).
    pub(super) cpus: std::sync::atomic::AtomicU64,
}

/// Written by the get-lock holder.
#[repr(C)]
pub(super) struct Consumer {
    pub(super) head: AtomicU64,
    /// Complete messages taken (or skipped as lost).
    pub(super) gets: AtomicU64,
    /// One of [`get_state`]: with `TAKING`, message `busy_seq` started at `busy_head`
    /// ([`RESUMED`]: a message resumed after a deadline, whose first chunks are gone already).
    pub(super) busy: AtomicU32,
    /// One of [`skip_state`].
    pub(super) skip: AtomicU32,
    pub(super) busy_head: AtomicU64,
    pub(super) busy_gets: AtomicU64,
    pub(super) busy_seq: AtomicU64,
    pub(super) skip_seq: AtomicU64,
    /// The process-table slot of the consumer taking `busy_seq` ([`NO_SLOT`]: none), and that
    /// slot's `taken` count when it started.
    pub(super) busy_slot: AtomicU32,
    pub(super) busy_taken: AtomicU64,
    /// A streamed message left half-received by a get whose deadline passed: its number and
    /// the handle that holds its first part ([`NO_PART_OWNER`]: none). Only that handle can finish it; any
    /// other get skips it and counts it lost.
    pub(super) part_seq: AtomicU64,
    pub(super) part_owner: AtomicU64,
    pub(super) lock: LockCell,
    /// The CPU mask of the last consumer that published it, a hint (see `crate::sync::spin`).
    pub(super) cpus: std::sync::atomic::AtomicU64,
}

/// The queue's bookkeeping that belongs to neither side: messages lost, tasks not yet done,
/// handles not tracked, and the wake word `join` sleeps on.
#[repr(C)]
pub(super) struct Counts {
    pub(super) lost: AtomicU64,
    pub(super) unfinished: AtomicU64,
    pub(super) join: WaitWord,
    /// Handles that could not get a slot (more than `SLOTS` processes): never known gone.
    pub(super) untracked: AtomicU32,
}

/// A process holding handles. `pid` is 0 for a free slot, and `-claimer` while the process
/// `claimer` fills it in.
#[repr(C)]
pub(super) struct Slot {
    pub(super) pid: AtomicI32,
    /// Handles of this process that are open.
    pub(super) handles: AtomicU32,
    pub(super) start: AtomicU64,
    /// Handles handed to this process (as a child's arguments) that it has not decoded yet.
    pub(super) pending: AtomicU32,
    /// Messages this process took from the ring, and how many of those its `get`s returned;
    /// if it dies, the difference is lost with it. `taken` is written under the get lock.
    pub(super) taken: AtomicU64,
    pub(super) returned: AtomicU64,
}

/// Everything shared, at the start of the segment's data; the ring follows at `ring_offset`.
#[repr(C)]
pub(crate) struct State {
    pub(super) capacity: u64,
    pub(super) max_items: u64,
    pub(super) max_message: u64,
    /// Offset of the ring from the start of the file (page-aligned).
    pub(super) ring_offset: u64,
    pub(super) joinable: u32,
    pub(super) prod: CachePadded<Producer>,
    pub(super) cons: CachePadded<Consumer>,
    pub(super) data: CachePadded<WaitWord>,
    pub(super) space: CachePadded<WaitWord>,
    pub(super) counts: CachePadded<Counts>,
    pub(super) slots: [Slot; SLOTS],
}

/// The ring's double mapping.
pub(super) struct Mirror {
    pub(super) ptr: NonNull<u8>,
    pub(super) len: usize,
}

// SAFETY: shared memory whose accesses follow the queue protocol (see the module docs).
unsafe impl Send for Mirror {}
// SAFETY: as above.
unsafe impl Sync for Mirror {}

impl Drop for Mirror {
    fn drop(&mut self) {
        // SAFETY: the 2 * len range made by `map_mirrored`; no reference into it outlives the
        // queue handles, which own this mapping through an Arc.
        unsafe { sys::unmap(self.ptr, 2 * self.len) };
    }
}

/// One mapping of a queue in this process, with what bounds it, as read once at attach time.
pub(super) struct Segment {
    pub(super) state: Shared<State>,
    pub(super) ring: Mirror,
    /// The ring's size (= `ring.len`): never re-read from shared memory.
    pub(super) cap: u64,
    pub(super) max_message: usize,
    pub(super) max_items: u64,
    pub(super) joinable: bool,
    /// Open (not closed) handles of this process on this mapping: a forked child holds copies.
    pub(super) local_open: AtomicUsize,
    /// Whether this process's waits for space, for data and in `join` spin before they sleep.
    pub(super) put_spin: Spin,
    pub(super) get_spin: Spin,
    pub(super) join_spin: Spin,
}

impl Segment {
    /// `len` bytes of the ring starting at cursor `at` (contiguous thanks to the mirror).
    ///
    /// # Safety
    /// The caller has the right to the range under the protocol (free space for the put-lock
    /// holder, published bytes for the get-lock holder). `len <= cap` is checked.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn ring(&self, at: u64, len: usize) -> &mut [u8] {
        assert!(len as u64 <= self.cap, "a ring access longer than the ring");
        let off = (at % self.cap) as usize;
        // SAFETY: `off < cap` and `len <= cap`, so the range is inside the 2 * cap mirror;
        // exclusivity is the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ring.ptr.as_ptr().add(off), len) }
    }

    pub(super) fn write_header(&self, at: u64, h: ChunkHeader) {
        // SAFETY: the header's 16 bytes are part of the space the put-lock holder reserved.
        unsafe { self.ring(at, HDR) }.copy_from_slice(&h.encode());
    }

    pub(super) fn read_header(&self, at: u64) -> Option<ChunkHeader> {
        let mut h = [0u8; HDR];
        // SAFETY: published bytes at the head belong to the get-lock holder.
        h.copy_from_slice(unsafe { self.ring(at, HDR) });
        ChunkHeader::decode(&h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_headers_round_trip_and_reject_bad_magic() {
        let h = ChunkHeader {
            flags: flags::FIRST | flags::LAST,
            len: 0xDEAD_BEEF,
            seq: u64::MAX - 3,
        };
        let bytes = h.encode();
        assert_eq!(ChunkHeader::decode(&bytes), Some(h));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(ChunkHeader::decode(&bad), None);
        assert_eq!(padded(0), 16);
        assert_eq!(padded(1), 32);
        assert_eq!(padded(16), 32);
    }

    #[test]
    fn shared_lines_do_not_share_cache_lines() {
        assert_eq!(std::mem::align_of::<CachePadded<u8>>(), 128);
        assert_eq!(std::mem::offset_of!(State, prod) % 128, 0);
        assert_ne!(
            std::mem::offset_of!(State, prod) / 128,
            std::mem::offset_of!(State, cons) / 128
        );
    }
}
