//! An arena of small shared objects: many locks (and small values) in one segment, so that a
//! program can have 100,000 of them without 100,000 descriptors, mappings and pages.
//!
//! A chunk is one anonymous segment (`Kind::Arena`) cut into [`SLOT`]-byte slots. Each slot
//! starts with a small header, `refs` (how many processes hold a handle on the object, 0 when
//! free), `kind` and `tag` (the element type of a value, 0 for others), followed by the object. Only the process that made a chunk allocates from
//! it (its free-slot search is private); any process that holds a handle counts in `refs` and
//! gives its count back when its last handle drops, which frees the slot for reuse.
//!
//! A handle on its way to another process is counted twice in the chunk: once in its slot's
//! `refs` (so the slot stays allocated while it travels) and once in the slot's *in-flight*
//! count, a word per slot after the slots. A receiver adopts a count only by taking one from
//! the in-flight word: the bytes of a message are written by user code (a hand-written
//! `Serialize` can write any index and offset, or one handle's twice), so a reference in them
//! proves nothing, but every in-flight unit was put there by the library along with a unit of
//! `refs`. A reference that finds no unit in flight is refused, so a receiver never holds (or
//! later gives back) a count that nobody gave it, and `refs` is never below the number of live
//! claims plus the units in flight. A forged reference can at worst take the unit of another
//! handle to the same slot that is in flight at that moment; that handle's receiver is then
//! refused in turn, and the counts still balance. A process
//! that dies holding handles never gives them back: the slot stays allocated (a leak bounded by
//! the chunk, never an object reused under a live handle). Everything in the slot header is a
//! number, so a peer scribbling over it can make slots leak or be reused early (two objects then
//! share a lock, which a scribbler can achieve anyway), never make us touch memory outside the
//! chunk: offsets come from handles and are checked against the chunk's size at open.
//!
//! A process that receives many handles on one chunk maps it once: mappings are shared by
//! segment identity (device, inode) process-wide, and the extra descriptors are closed.

use crate::atomic::Ordering;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::{Arc, Mutex, Weak};

use super::{Kind, Region, Sealing};
use crate::error::{Error, ErrorKind, Result};
use crate::handles;

/// Bytes per slot: the header and up to `SLOT - PAYLOAD_AT` bytes of object.
pub(crate) const SLOT: usize = 128;
/// Offset of the object in its slot.
pub(crate) const PAYLOAD_AT: usize = 16;
/// Slots per chunk (512 KiB of slots).
const SLOTS: usize = 4096;
/// A chunk's data: the slots, then one in-flight count (`u32`) per slot.
const CHUNK_LEN: usize = SLOTS * SLOT + SLOTS * 4;
/// At least this many allocations pass between two rechecks of the pending slots, however few
/// are pending (a recheck reads every pending slot's header).
const MIN_RECHECK_INTERVAL: usize = 64;

#[repr(C)]
struct SlotHeader {
    refs: AtomicU32,
    kind: AtomicU32,
    tag: AtomicU64,
}

const _: () = assert!(std::mem::size_of::<SlotHeader>() <= PAYLOAD_AT);

struct Chunk {
    region: Arc<Region>,
}

/// The allocator of this process's chunks. Every allocation is confirmed by a compare-and-swap
/// of the slot's `refs` from 0 to 1, so a stale entry (or a forked child allocating from the
/// same chunks) can never hand one slot out twice.
struct State {
    chunks: Vec<Chunk>,
    /// Slots given back by this process with no other holder left: reusable.
    free: Vec<(usize, usize)>,
    /// Slots this process gave back while another process still held them: reusable once
    /// their `refs` reaches 0, which only that process sees happen. Rechecked now and then.
    pending: Vec<(usize, usize)>,
    /// Allocations until `pending` is rechecked (keeps the recheck amortized O(1)).
    recheck_in: usize,
    /// Never-used slots start at (last chunk, `fresh`).
    fresh: usize,
}

static STATE: Mutex<State> = Mutex::new(State {
    chunks: Vec::new(),
    free: Vec::new(),
    pending: Vec::new(),
    recheck_in: 0,
    fresh: SLOTS,
});

/// Chunks this process has mapped, by identity, so that each is mapped once.
static MAPPED: Mutex<Option<Mapped>> = Mutex::new(None);

/// Live mappings of chunks, by segment identity.
type Mapped = HashMap<(u64, u64), Weak<Region>>;

fn state() -> std::sync::MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn header(region: &Region, slot: usize) -> &SlotHeader {
    // SAFETY: `slot` is below SLOTS (checked by every caller); the chunk's data holds SLOTS
    // slots (checked at open); the header is atomics only.
    unsafe { region.data().add(slot * SLOT).cast::<SlotHeader>().as_ref() }
}

/// How many handles on `slot` are on their way to a receiver (see the module's docs).
fn in_flight(region: &Region, slot: usize) -> &AtomicU32 {
    // SAFETY: `slot` is below SLOTS (checked by every caller); the chunk's data holds SLOTS
    // in-flight words after the slots (checked at open); the word is an atomic.
    unsafe {
        region
            .data()
            .add(SLOTS * SLOT + slot * 4)
            .cast::<AtomicU32>()
            .as_ref()
    }
}

/// Puts one unit of `refs` and one unit in flight on `slot`, for a handle being sent.
fn send_one(region: &Region, slot: usize) -> std::result::Result<(), String> {
    let full = || "the shared object's holder count is full (a peer scribbled over it)".to_string();
    let refs = &header(region, slot).refs;
    refs.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| r.checked_add(1))
        .map_err(|_| full())?;
    if in_flight(region, slot)
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_add(1))
        .is_err()
    {
        let _ = refs.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| r.checked_sub(1));
        return Err(full());
    }
    Ok(())
}

/// Takes back one unit in flight on `slot`, and its unit of `refs` (only if there was one in
/// flight: never a unit that some receiver already adopted).
fn cancel_one(region: &Region, slot: usize) {
    if take_in_flight(region, slot) {
        let _ = header(region, slot)
            .refs
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| r.checked_sub(1));
    }
}

/// Takes one unit in flight on `slot`, if there is one.
fn take_in_flight(region: &Region, slot: usize) -> bool {
    in_flight(region, slot)
        .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1))
        .is_ok()
}

/// One process's claim on a slot: gives it back when the last handle of this process drops.
pub(crate) struct SlotClaim {
    region: Arc<Region>,
    slot: usize,
    /// Index of the chunk in this process's allocator, if this process made it.
    chunk: Option<usize>,
    /// The process the claim counts for, and how many times it had forked when the claim was
    /// made (see [`Drop`](#impl-Drop-for-SlotClaim)).
    pid: i32,
    forks: u64,
}

/// Forks of this process through the library, counted twice each: odd while one is under way
/// (from just before the `fork` until the parent is back, and in the child until its first
/// step; a checked fork, during which no other thread runs, counts both before the `fork`). A forked child gets a copy of every claim without a count of its own (a copy of
/// memory is not a message), so:
/// - the copy's drop in the child gives nothing back (its `pid` is not the child's);
/// - a claim gives its count back only if no fork started since it was made (`forks` even and
///   unchanged): otherwise a child may still use its copy, and the slot leaks rather than being
///   reused under a live handle.
static FORKS: AtomicU64 = AtomicU64::new(0);

/// A fork through the library is about to start, or is over in this process (in the parent
/// once `fork` returned, in the child as its first step): see [`FORKS`]. Lock-free, so that a
/// forked child may call it whatever another thread of its parent was doing.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn note_fork() {
    FORKS.fetch_add(1, Ordering::AcqRel);
}

/// Both steps of [`note_fork`] at once, before a fork during which no claim can be made (no
/// other thread runs): the parent is then back, and the child past its first step, with nothing
/// more to count.
pub(crate) fn note_whole_fork() {
    FORKS.fetch_add(2, Ordering::AcqRel);
}

/// This process's id and fork count, for a new claim.
fn claimant() -> (i32, u64) {
    (crate::sys::getpid(), FORKS.load(Ordering::Acquire))
}

impl SlotClaim {
    /// The chunk and the object's offset from the start of the chunk's data.
    pub(crate) fn region(&self) -> &Arc<Region> {
        &self.region
    }

    pub(crate) fn payload_offset(&self) -> usize {
        self.slot * SLOT + PAYLOAD_AT
    }

    /// Counts one more holder for a handle being sent to another process, and puts the count
    /// in flight: the receiver adopts it when it opens the handle (so the slot stays
    /// allocated while the handle travels, whatever the sender does meanwhile). The message
    /// being encoded gives the count back if it is abandoned (see [`handles::Taken`]), and so
    /// does a complete one that is never handed to a child; one handed to a child that dies
    /// before decoding it leaks the slot.
    ///
    /// # Errors
    /// When no process arguments are being encoded, or the slot's counts are full (a
    /// scribbler); nothing is counted then.
    pub(crate) fn export(self: &Arc<Self>) -> std::result::Result<(), String> {
        let exported = Box::new(Exported(self.clone()));
        send_one(&self.region, self.slot)?;
        handles::export_taken(exported).map_err(|(exported, why)| {
            handles::Taken::give_back(exported);
            why
        })
    }

    /// The slot's holder count (for tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn refs(&self) -> u32 {
        header(&self.region, self.slot).refs.load(Ordering::Acquire)
    }
}

/// The count one [`SlotClaim::export`] added, until its message is complete.
struct Exported(Arc<SlotClaim>);

impl handles::Taken for Exported {
    fn give_back(self: Box<Self>) {
        // Our own claim still counts, so this never frees the slot.
        cancel_one(&self.0.region, self.0.slot);
    }
}

impl Drop for SlotClaim {
    fn drop(&mut self) {
        // A forked child's copy never had a count; a claim older than our latest fork may
        // have a copy in a child that still uses it (see `FORKS`).
        if crate::sys::getpid() != self.pid
            || !self.forks.is_multiple_of(2)
            || FORKS.load(Ordering::Acquire) != self.forks
        {
            return;
        }
        let h = header(&self.region, self.slot);
        // Never below 0, whatever a scribbler wrote.
        let before = h
            .refs
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| r.checked_sub(1));
        if let Some(chunk) = self.chunk {
            let mut st = state();
            if before == Ok(1) {
                st.free.push((chunk, self.slot));
            } else {
                st.pending.push((chunk, self.slot));
            }
        }
    }
}

/// Allocates a free slot for an object of `kind` with type tag `tag` (whose size must fit a
/// slot) and lets `init` initialize it in place (at the returned claim's payload offset).
pub(crate) fn alloc(
    kind: Kind,
    tag: u64,
    init: impl FnOnce(*mut u8) -> std::io::Result<()>,
) -> Result<SlotClaim> {
    let claim = {
        let mut st = state();
        let (chunk, slot) = take_slot(&mut st)?;
        let (pid, forks) = claimant();
        SlotClaim {
            region: st.chunks[chunk].region.clone(),
            slot,
            chunk: Some(chunk),
            pid,
            forks,
        }
    };
    let h = header(&claim.region, claim.slot);
    h.tag.store(tag, Ordering::Release);
    h.kind.store(kind as u32, Ordering::Release);
    // SAFETY: the payload is inside the chunk and ours alone until a handle is shared.
    let p = unsafe { claim.region.data().add(claim.payload_offset()) };
    init(p.as_ptr()).map_err(|e| Error::os("cannot initialize a shared object", e))?;
    Ok(claim)
}

/// Claims a slot (its `refs` set to 1): a freed one, a pending one that became free, a fresh
/// one, or the first of a new chunk.
fn take_slot(st: &mut State) -> Result<(usize, usize)> {
    let claim = |st: &State, (c, s): (usize, usize)| {
        header(&st.chunks[c].region, s)
            .refs
            .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    };
    while let Some(cs) = st.free.pop() {
        if claim(st, cs) {
            return Ok(cs);
        }
    }
    if st.recheck_in == 0 && !st.pending.is_empty() {
        let pending = std::mem::take(&mut st.pending);
        let (now_free, still): (Vec<_>, Vec<_>) = pending
            .into_iter()
            .partition(|&(c, s)| header(&st.chunks[c].region, s).refs.load(Ordering::Acquire) == 0);
        st.recheck_in = still.len().max(MIN_RECHECK_INTERVAL);
        st.pending = still;
        st.free = now_free;
        while let Some(cs) = st.free.pop() {
            if claim(st, cs) {
                return Ok(cs);
            }
        }
    }
    st.recheck_in = st.recheck_in.saturating_sub(1);
    while st.fresh < SLOTS {
        let cs = (st.chunks.len() - 1, st.fresh);
        st.fresh += 1;
        if claim(st, cs) {
            return Ok(cs);
        }
    }
    let region = Arc::new(Region::anonymous(Kind::Arena, CHUNK_LEN, 0)?);
    remember(&region);
    st.chunks.push(Chunk { region });
    st.fresh = 0;
    let cs = (st.chunks.len() - 1, 0);
    st.fresh = 1;
    if claim(st, cs) {
        Ok(cs)
    } else {
        Err(Error::new(
            ErrorKind::Io,
            "a fresh arena chunk is already in use",
        ))
    }
}

fn remember(region: &Arc<Region>) {
    let mut m = MAPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let m = m.get_or_insert_with(HashMap::new);
    m.retain(|_, w| w.strong_count() > 0);
    m.insert(region.id(), Arc::downgrade(region));
}

/// Opens the object at `payload` (an offset into the chunk's data, from a handle) in the chunk
/// behind `fd`, checking that it is a slot's object of one of `kinds` (with type tag `tag`, if
/// given), and takes a claim on it.
pub(crate) fn open(
    fd: OwnedFd,
    payload: usize,
    kinds: &[Kind],
    tag: Option<u64>,
) -> Result<SlotClaim> {
    let bad = |what: &str| {
        Error::new(
            ErrorKind::BadHeader,
            format!("cannot open the shared object: {what}"),
        )
    };
    let info = crate::sys::file_info(std::os::fd::AsFd::as_fd(&fd))
        .map_err(|e| Error::os("cannot inspect a shared memory segment", e))?;
    let existing = MAPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .as_ref()
        .and_then(|m| m.get(&info.id))
        .and_then(Weak::upgrade);
    let region = match existing {
        // Mapped already: the new descriptor is not needed.
        Some(r) => r,
        None => {
            let r = Arc::new(Region::open(fd, Kind::Arena, 0, Sealing::Required)?);
            if r.data_len() < CHUNK_LEN {
                return Err(bad("the arena segment is too small"));
            }
            remember(&r);
            r
        }
    };
    if payload < PAYLOAD_AT
        || !(payload - PAYLOAD_AT).is_multiple_of(SLOT)
        || payload >= SLOTS * SLOT
    {
        return Err(bad("the handle names no slot of the arena"));
    }
    let slot = payload / SLOT;
    let h = header(&region, slot);
    // A handle sent as another object than it is received as: its count goes back (if one
    // is in flight at all: a forged reference may name any slot), rather than leak the slot.
    let refuse = |why: &str| {
        cancel_one(&region, slot);
        Err(bad(why))
    };
    let kind = h.kind.load(Ordering::Acquire);
    if !kinds.iter().any(|&k| k as u32 == kind) {
        return refuse(&format!(
            "it holds object type #{kind}, not a {:?}",
            kinds[0]
        ));
    }
    if let Some(tag) = tag
        && h.tag.load(Ordering::Acquire) != tag
    {
        return refuse("it holds values of another type");
    }
    // A count at 0 means a scribbler: refuse rather than revive a free slot.
    if h.refs.load(Ordering::Acquire) == 0 {
        return Err(bad("the slot is free"));
    }
    // The sender counted this handle when it wrote it (`SlotClaim::export`) and put the count
    // in flight: we adopt it by taking it from there. None in flight: the reference was not
    // written by the library (a forged, copied or replayed one), and there is no count of ours.
    if !take_in_flight(&region, slot) {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            "cannot open the shared object: no handle on its slot was sent (the reference was \
             forged or copied)",
        ));
    }
    let (pid, forks) = claimant();
    Ok(SlotClaim {
        region,
        slot,
        chunk: None,
        pid,
        forks,
    })
}

/// How many chunks this process has made (for tests).
#[cfg(all(test, not(loom)))]
pub(crate) fn chunk_count() -> usize {
    state().chunks.len()
}
