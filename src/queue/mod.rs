//! `Queue`, `SimpleQueue` and `JoinableQueue`: many producers and consumers across processes,
//! over a ring buffer in shared memory.
//!
//! # Layout
//!
//! One anonymous segment holds the shared [`State`] (cursors, counters, two robust locks, the
//! wake words, a table of the processes holding handles) and, at a page-aligned offset, the ring.
//! The ring is mapped twice back to back, so any run of up to `capacity` bytes starting inside
//! it is contiguous in memory: values are serialized straight into it and decoded straight out
//! of it, whatever the wrap-around.
//!
//! The ring carries chunks: a 16-byte header (magic, flags, payload length, message sequence
//! number) and the payload, padded to 16 bytes. A message that fits in the ring is one chunk
//! (`FIRST | LAST`). A larger one is streamed: `FIRST`, middle chunks, `LAST`, written while the
//! consumer reads the earlier ones. A stream cut short by a producer's death is closed with an
//! `ABORT` chunk by whoever recovers the put lock.
//!
//! # Locks and robustness
//!
//! Producers take the put lock for one message; consumers take the get lock for one message.
//! Both are robust mutexes ([`crate::Lock`]'s kind). Each side records what it is doing (the
//! cursor and counter values at the start of the message, the sequence number, whether a stream
//! is open) before it does it, so that the next holder, told by the lock that the previous one
//! died, can tell "nothing happened" from "the message was taken and went down with the dead
//! process" from "half a stream is out", and repair the state. What cannot be delivered is
//! counted in [`Queue::lost_messages`].

mod error;
mod ring;

#[cfg(all(test, loom))]
mod model_tests;

use std::fmt;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::AsFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicI32};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

pub use error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, TaskDoneError, TryGetError, TryPutError,
};
use ring::{Waited, Wake, advance, read};

use crate::codec::{self, CodecError};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Kind, Shared, type_tag};
use crate::sync::shim::{AtomicU32, AtomicU64, Ordering};
use crate::sync::{Acquired, LockCell};
use crate::sys;

/// The ring size of [`Queue::new`]: 4 MiB. Messages up to this size (minus a 16-byte header)
/// travel in one piece and are decoded in place; larger ones are streamed.
///
/// # Examples
///
/// ```
/// let q = multiproc::Queue::<u8>::new()?;
/// assert_eq!(q.capacity(), multiproc::DEFAULT_CAPACITY);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const DEFAULT_CAPACITY: usize = 4 << 20;

/// The default limit on one message: 1 GiB, as for pipes.
///
/// # Examples
///
/// ```
/// // Raise it (up to u32::MAX) or lower it per queue:
/// let q = multiproc::Queue::<Vec<u8>>::builder()
///     .max_message(multiproc::DEFAULT_MAX_MESSAGE / 4)
///     .build()?;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub const DEFAULT_MAX_MESSAGE: usize = codec::DEFAULT_MAX_FRAME;

const HDR: usize = 16;
const MAGIC: u16 = 0x5143;
const FIRST: u16 = 1;
const LAST: u16 = 2;
const ABORT: u16 = 4;
const SLOTS: usize = 64;
/// How often a blocked consumer looks for producers that died without a word.
const POLL: Duration = Duration::from_millis(100);
/// How long a handle on its way to a child counts as a producer before the child registers.
const TRANSIT_SECS: u64 = 120;

fn padded(len: usize) -> usize {
    HDR + len.next_multiple_of(16)
}

#[repr(C, align(128))]
struct Line<T>(T);

impl<T> Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Written by the put-lock holder.
#[repr(C)]
struct Producer {
    tail: AtomicU64,
    /// Complete messages published.
    puts: AtomicU64,
    next_seq: AtomicU64,
    /// 0: idle; 1: writing a message; 2: counted, final chunk not yet published.
    busy: AtomicU32,
    /// Chunks of message `stream_seq` are out, its last is not.
    stream_open: AtomicU32,
    /// With busy == 2: the tail before the final chunk.
    busy_tail: AtomicU64,
    busy_puts: AtomicU64,
    stream_seq: AtomicU64,
    lock: LockCell,
}

/// Written by the get-lock holder.
#[repr(C)]
struct Consumer {
    head: AtomicU64,
    /// Complete messages taken (or skipped as lost).
    gets: AtomicU64,
    /// 0: idle; 1: taking message `busy_seq`, which started at `busy_head`.
    busy: AtomicU32,
    /// 0: none; 1: skip the chunks of `skip_seq` and count it lost at its last chunk; 2: skip
    /// them, already counted.
    skip: AtomicU32,
    busy_head: AtomicU64,
    busy_gets: AtomicU64,
    busy_seq: AtomicU64,
    skip_seq: AtomicU64,
    /// The process-table slot of the consumer taking `busy_seq` (`u32::MAX`: none).
    busy_slot: AtomicU32,
    lock: LockCell,
}

#[repr(C)]
struct Misc {
    lost: AtomicU64,
    unfinished: AtomicU64,
    join: Wake,
    /// Handles that could not get a slot (more than `SLOTS` processes): never known gone.
    untracked: AtomicU32,
    /// Handles serialized for a child that has not registered them yet, and when (seconds of
    /// CLOCK_MONOTONIC) the last one left.
    in_transit: AtomicU32,
    transit_at: AtomicU64,
}

/// A process holding handles. `pid` is 0 for a free slot, -1 while being claimed.
#[repr(C)]
struct Slot {
    pid: AtomicI32,
    handles: AtomicU32,
    start: AtomicU64,
    /// `seq + 1` of a message this process has taken from the ring and whose `get` has not
    /// returned yet; 0 when none. If the process dies with it set, the message is lost with it.
    in_hand: AtomicU64,
}

/// Everything shared, at the start of the segment's data; the ring follows at `ring_offset`.
#[repr(C)]
pub(crate) struct State {
    capacity: u64,
    max_items: u64,
    max_message: u64,
    /// Offset of the ring from the start of the file (page-aligned).
    ring_offset: u64,
    joinable: u32,
    prod: Line<Producer>,
    cons: Line<Consumer>,
    data: Line<Wake>,
    space: Line<Wake>,
    misc: Line<Misc>,
    slots: [Slot; SLOTS],
}

/// The ring's double mapping.
struct Mirror {
    ptr: NonNull<u8>,
    len: usize,
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

struct Segment {
    state: Shared<State>,
    ring: Mirror,
}

/// Cursor values last seen by this handle: lower bounds of the shared ones (which only grow),
/// so that a producer reads the consumer's line only when it seems to be out of room, and vice
/// versa.
#[derive(Default)]
struct Cache {
    head: std::sync::atomic::AtomicU64,
    gets: std::sync::atomic::AtomicU64,
    tail: std::sync::atomic::AtomicU64,
}

/// How long an operation may wait.
#[derive(Clone, Copy)]
enum Deadline {
    Now,
    At(Option<Instant>),
}

impl Deadline {
    fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Now => Some(Instant::now()),
            Deadline::At(d) => d,
        }
    }

    fn passed(self) -> bool {
        match self {
            Deadline::Now => true,
            Deadline::At(d) => d.is_some_and(|d| Instant::now() >= d),
        }
    }
}

enum PutFail {
    NoRoom,
    Error(Error),
}

enum GetFail {
    Nothing,
    Disconnected,
    Error(Error),
}

fn encode_failed(e: postcard::Error) -> PutFail {
    PutFail::Error(Error::codec(
        "the value could not be serialized",
        CodecError::Encode(e.to_string()),
    ))
}

fn oversized(len: usize, limit: usize) -> PutFail {
    PutFail::Error(Error::codec(
        "the value is larger than the queue's message limit",
        CodecError::Oversized { len, limit },
    ))
}

fn lock_side(cell: &LockCell, d: Deadline) -> Option<Acquired> {
    match d {
        Deadline::Now => cell.try_acquire(),
        Deadline::At(at) => cell.acquire(at),
    }
}

/// Releases a side's lock; declares the state consistent first if the guard was told to.
struct SideGuard<'a> {
    cell: &'a LockCell,
}

impl Drop for SideGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: a SideGuard is made right after this thread acquired the lock.
        unsafe { self.cell.release() };
    }
}

/// Seconds on CLOCK_MONOTONIC, which (unlike `Instant`s) all processes share.
fn monotonic_secs() -> u64 {
    let ts = sys::monotonic_timespec(Instant::now());
    u64::try_from(ts.tv_sec).unwrap_or(0)
}

/// This process's (pid, start time), recomputed after a fork.
fn me() -> (i32, u64) {
    static ME: Mutex<(i32, u64)> = Mutex::new((0, 0));
    let pid = sys::getpid();
    let mut m = ME.lock().unwrap_or_else(|e| e.into_inner());
    if m.0 != pid {
        *m = (pid, sys::process_start_time(pid).unwrap_or(0));
    }
    *m
}

/// A queue shared between processes: Python's `multiprocessing.Queue`, over a ring buffer in
/// shared memory.
///
/// Any number of processes (and threads) can [`put`](Self::put) and [`get`](Self::get). Values
/// are serialized with postcard **in the caller**, straight into the ring: a value that cannot be
/// serialized fails its own `put`, and what travels is the value as it was at the call. There is
/// no feeder thread and nothing buffered in process memory, so nothing is lost when a process
/// exits after `put` returns. Messages larger than the ring are streamed through it in pieces, up
/// to [`max_message`](QueueBuilder::max_message).
///
/// The queue is bounded by its ring's size in bytes ([`Queue::with_capacity`], default
/// [`DEFAULT_CAPACITY`]) and optionally by a number of messages
/// ([`QueueBuilder::max_items`], Python's `maxsize`). [`qsize`](Self::qsize) is exact.
///
/// # Disconnection
///
/// Every handle counts as a possible producer until it is [closed](Self::close) or dropped, or
/// its process dies. A `get` on an empty queue with no possible producer left returns
/// [`GetError::Disconnected`] instead of waiting forever. As in Python, a process that only
/// consumes should `close()` its handle, or its own handle keeps the queue connected.
///
/// # Robustness
///
/// A producer or consumer killed in the middle of a `put` or `get` never wedges the others: the
/// locks are robust, and the next holder repairs the state. At most the dead process's own
/// message is lost, and such losses are counted in [`lost_messages`](Self::lost_messages).
///
/// # Examples
///
/// ```
/// let q = multiproc::Queue::<(u32, String)>::new()?;
/// q.put((1, "one".into())).unwrap();
/// assert_eq!(q.qsize(), 1);
/// assert_eq!(q.get().unwrap(), (1, "one".into()));
/// assert!(q.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Queue<T> {
    seg: Arc<Segment>,
    cache: Cache,
    /// Slot index in the process table, if one was free.
    slot: Option<usize>,
    /// The process that registered this handle (a forked copy must not unregister it).
    pid: i32,
    closed: AtomicBool,
    /// Reassembly buffer for streamed messages; used only by the get-lock holder.
    scratch: Mutex<Vec<u8>>,
    _type: PhantomData<fn(T) -> T>,
}

/// Settings for a new [`Queue`] (or [`JoinableQueue`]).
///
/// # Examples
///
/// ```
/// let q = multiproc::Queue::<u64>::builder()
///     .capacity(1 << 20)
///     .max_items(100)
///     .max_message(64 << 10)
///     .build()?;
/// assert_eq!(q.capacity(), 1 << 20);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct QueueBuilder<T> {
    capacity: usize,
    max_items: u64,
    max_message: usize,
    _type: PhantomData<fn(T) -> T>,
}

impl<T: Serialize + DeserializeOwned> QueueBuilder<T> {
    /// The ring's size in bytes, rounded up to a multiple of the page size (at least one page).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().capacity(1).build()?;
    /// assert_eq!(q.capacity(), 4096);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// At most this many messages in the queue (Python's `maxsize`); 0 for no limit (the
    /// default; the ring's size still bounds it).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().max_items(1).build()?;
    /// q.put(1).unwrap();
    /// assert!(q.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_items(mut self, n: u64) -> Self {
        self.max_items = n;
        self
    }

    /// The largest message accepted, in serialized bytes ([`DEFAULT_MAX_MESSAGE`] by default;
    /// at most `u32::MAX`). A larger value fails its `put` with [`ErrorKind::Codec`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::builder().max_message(16).build()?;
    /// assert!(q.put(vec![0; 100]).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Creates the queue.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for sizes that cannot be mapped; [`ErrorKind::Io`] if the
    /// segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build(self) -> Result<Queue<T>> {
        Queue::create(&self, false)
    }

    /// Creates a [`JoinableQueue`] with these settings.
    ///
    /// # Errors
    /// As [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().max_items(8).build_joinable()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn build_joinable(self) -> Result<JoinableQueue<T>> {
        Ok(JoinableQueue {
            queue: Queue::create(&self, true)?,
        })
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// A queue with a [`DEFAULT_CAPACITY`] ring and no limit on the number of messages.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the shared segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<String>::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<Queue<T>> {
        Queue::builder().build()
    }

    /// A queue with a ring of `bytes` (rounded up to whole pages).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::with_capacity(64 << 20)?;
    /// assert_eq!(q.capacity(), 64 << 20);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn with_capacity(bytes: usize) -> Result<Queue<T>> {
        Queue::builder().capacity(bytes).build()
    }

    /// Settings beyond the capacity.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::builder().max_items(10).build()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn builder() -> QueueBuilder<T> {
        QueueBuilder {
            capacity: DEFAULT_CAPACITY,
            max_items: 0,
            max_message: DEFAULT_MAX_MESSAGE,
            _type: PhantomData,
        }
    }

    fn create(b: &QueueBuilder<T>, joinable: bool) -> Result<Queue<T>> {
        let page = sys::page_size();
        let capacity = b
            .capacity
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "queue capacity too large"))?;
        let max_message = b.max_message.min(u32::MAX as usize);
        let state_end = crate::shm::HEADER_LEN + std::mem::size_of::<State>();
        let ring_offset = state_end.next_multiple_of(page);
        let extra = (ring_offset - state_end)
            .checked_add(capacity)
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "queue capacity too large"))?;
        let state = Shared::create(Kind::Queue, type_tag::<T>(), extra, |p: *mut State| {
            // SAFETY: `create` passes fresh, aligned, writable memory for a State. All-zero is
            // a valid value for every atomic in it; the locks are then initialized in place.
            unsafe {
                std::ptr::write_bytes(p, 0, 1);
                (&raw mut (*p).capacity).write(capacity as u64);
                (&raw mut (*p).max_items).write(b.max_items);
                (&raw mut (*p).max_message).write(max_message as u64);
                (&raw mut (*p).ring_offset).write(ring_offset as u64);
                (&raw mut (*p).joinable).write(u32::from(joinable));
                LockCell::init(&raw mut (*p).prod.0.lock, false)?;
                LockCell::init(&raw mut (*p).cons.0.lock, false)?;
            }
            Ok(())
        })?;
        Queue::attach(state)
    }

    /// Maps the ring of a segment whose state is already mapped, and registers a handle.
    fn attach(state: Shared<State>) -> Result<Queue<T>> {
        let cap = state.capacity as usize;
        let off = state.ring_offset as usize;
        let page = sys::page_size();
        let fits = off
            .checked_add(cap)
            .is_some_and(|end| end - crate::shm::HEADER_LEN <= state.data_len());
        if cap == 0 || !cap.is_multiple_of(page) || !off.is_multiple_of(page) || !fits {
            return Err(Error::new(
                ErrorKind::BadHeader,
                "the queue's segment does not hold the ring its header describes",
            ));
        }
        let ptr = sys::map_mirrored(state.fd().as_fd(), off, cap)
            .map_err(|e| Error::os("cannot map the queue's ring", e))?;
        let seg = Arc::new(Segment {
            state,
            ring: Mirror { ptr, len: cap },
        });
        Ok(Queue::handle(seg))
    }

    fn handle(seg: Arc<Segment>) -> Queue<T> {
        let slot = register(&seg.state);
        let q = Queue {
            seg,
            cache: Cache::default(),
            slot,
            pid: sys::getpid(),
            closed: AtomicBool::new(false),
            scratch: Mutex::new(Vec::new()),
            _type: PhantomData,
        };
        if slot.is_none() {
            q.st().misc.untracked.fetch_add(1, Ordering::AcqRel);
        }
        q
    }

    fn st(&self) -> &State {
        &self.seg.state
    }

    fn cap(&self) -> u64 {
        self.st().capacity
    }

    /// `len` bytes of the ring starting at cursor `at` (contiguous thanks to the mirror).
    ///
    /// # Safety
    /// `len <= capacity`, and the caller has the right to the range under the protocol (free
    /// space for the put-lock holder, published bytes for the get-lock holder).
    #[allow(clippy::mut_from_ref)]
    unsafe fn ring(&self, at: u64, len: usize) -> &mut [u8] {
        let off = (at % self.cap()) as usize;
        // SAFETY: `off + len <= 2 * capacity`, inside the double mapping; exclusivity is the
        // caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.seg.ring.ptr.as_ptr().add(off), len) }
    }

    // ----- put -----

    /// Free bytes after `tail`, from the cached head, refreshed if `want` does not fit.
    fn free(&self, tail: u64, want: u64) -> u64 {
        let cap = self.cap();
        let mut head = self.cache.head.load(std::sync::atomic::Ordering::Relaxed);
        // A stale cached head can be more than a ring behind: saturate.
        if cap.saturating_sub(tail - head) < want {
            head = self.st().cons.head.load(Ordering::Acquire);
            self.cache
                .head
                .store(head, std::sync::atomic::Ordering::Relaxed);
        }
        cap.saturating_sub(tail - head)
    }

    fn items_ok(&self) -> bool {
        let max = self.st().max_items;
        if max == 0 {
            return true;
        }
        let puts = self.st().prod.puts.load(Ordering::Relaxed);
        let mut gets = self.cache.gets.load(std::sync::atomic::Ordering::Relaxed);
        if puts - gets.min(puts) >= max {
            gets = self.st().cons.gets.load(Ordering::Acquire);
            self.cache
                .gets
                .store(gets, std::sync::atomic::Ordering::Relaxed);
        }
        puts.saturating_sub(gets) < max
    }

    /// Waits (on the space wake) until `ok()`.
    fn wait_space(&self, d: Deadline, mut ok: impl FnMut() -> bool) -> bool {
        if ok() {
            return true;
        }
        if matches!(d, Deadline::Now) {
            return false;
        }
        let head = &self.st().cons.head;
        self.st().space.wait_until(
            d.instant(),
            |sync| {
                // The read-modify-write pairs with the consumer's `advance` (see ring.rs); what
                // `ok` reads after it is at least as new.
                read(head, sync);
                ok()
            },
            || false,
        ) == Waited::Ready
    }

    fn put_inner(&self, value: &T, d: Deadline) -> std::result::Result<(), PutFail> {
        if self.closed.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(PutFail::Error(Error::new(
                ErrorKind::Closed,
                "put on a closed queue handle",
            )));
        }
        let st = self.st();
        let p = &st.prod;
        let acquired = lock_side(&p.lock, d).ok_or(PutFail::NoRoom)?;
        let _guard = SideGuard { cell: &p.lock };
        if acquired == Acquired::OwnerDied {
            self.recover_put(d)?;
        }
        if !self.wait_space(d, || self.items_ok()) {
            return Err(PutFail::NoRoom);
        }
        let tail = p.tail.load(Ordering::Relaxed);
        let seq = p.next_seq.load(Ordering::Relaxed);
        p.next_seq.store(seq + 1, Ordering::Relaxed);
        p.busy_puts
            .store(p.puts.load(Ordering::Relaxed), Ordering::Relaxed);
        p.busy.store(1, Ordering::Relaxed);
        let outcome = self.write_message(value, tail, seq, d);
        if outcome.is_err() {
            p.busy.store(0, Ordering::Relaxed);
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
                let room = unsafe { self.ring(tail + HDR as u64, free as usize - HDR) };
                match postcard::to_slice(value, room) {
                    Ok(used) => {
                        let len = used.len();
                        let limit = self.st().max_message as usize;
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
        let limit = self.st().max_message as usize;
        if size > limit {
            return Err(oversized(size, limit));
        }
        let need = padded(size) as u64;
        if need <= self.cap() {
            if !self.wait_space(d, || self.free(tail, need) >= need) {
                return Err(PutFail::NoRoom);
            }
            // SAFETY: `need` bytes after the tail are free and ours.
            let room = unsafe { self.ring(tail + HDR as u64, size) };
            let used = postcard::to_slice(value, room).map_err(encode_failed)?;
            return self.finish_single(tail, seq, used.len());
        }
        self.stream(value, tail, seq, d)
    }

    fn write_header(&self, at: u64, flags: u16, len: usize, seq: u64) {
        let mut h = [0u8; HDR];
        h[0..2].copy_from_slice(&MAGIC.to_le_bytes());
        h[2..4].copy_from_slice(&flags.to_le_bytes());
        h[4..8].copy_from_slice(&(len as u32).to_le_bytes());
        h[8..16].copy_from_slice(&seq.to_le_bytes());
        // SAFETY: the header's 16 bytes are part of the space the put-lock holder reserved.
        unsafe { self.ring(at, HDR) }.copy_from_slice(&h);
    }

    fn finish_single(&self, tail: u64, seq: u64, len: usize) -> std::result::Result<(), PutFail> {
        self.write_header(tail, FIRST | LAST, len, seq);
        self.finish(tail, tail + padded(len) as u64);
        Ok(())
    }

    /// Counts the message and publishes its final chunk (which starts at `before`).
    fn finish(&self, before: u64, new_tail: u64) {
        let st = self.st();
        let p = &st.prod;
        p.busy_tail.store(before, Ordering::Relaxed);
        if st.joinable != 0 {
            st.misc.unfinished.fetch_add(1, Ordering::AcqRel);
        }
        p.puts
            .store(p.busy_puts.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        p.busy.store(2, Ordering::Relaxed);
        advance(&p.tail, new_tail, &st.data);
        if p.stream_open.load(Ordering::Relaxed) != 0 {
            p.stream_open.store(0, Ordering::Relaxed);
        }
        p.busy.store(0, Ordering::Relaxed);
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
            return Err(PutFail::NoRoom);
        }
        match postcard::serialize_with_flavor::<T, _, ()>(value, StreamFlavor(&mut w)) {
            Ok(()) => {
                let start = w.chunk_start;
                let len = w.chunk_len;
                let flags = if w.first { FIRST | LAST } else { LAST };
                self.write_header(start, flags, len, seq);
                self.finish(start, start + padded(len) as u64);
                Ok(())
            }
            Err(e) => {
                // The open chunk's header space is reserved: turn it into an ABORT if anything
                // of this message is out already.
                let p = &self.st().prod;
                if !w.first {
                    self.write_header(w.chunk_start, ABORT, 0, seq);
                    advance(&p.tail, w.chunk_start + HDR as u64, &self.st().data);
                    p.stream_open.store(0, Ordering::Relaxed);
                }
                Err(w.fail.take().unwrap_or_else(|| encode_failed(e)))
            }
        }
    }

    /// The put lock came with "owner died": finish what the dead producer left.
    fn recover_put(&self, d: Deadline) -> std::result::Result<(), PutFail> {
        let st = self.st();
        let p = &st.prod;
        let tail = p.tail.load(Ordering::Relaxed);
        if p.busy.load(Ordering::Relaxed) == 2 {
            if tail == p.busy_tail.load(Ordering::Relaxed) {
                // Counted but never published: uncount.
                p.puts
                    .store(p.busy_puts.load(Ordering::Relaxed), Ordering::Relaxed);
                if st.joinable != 0 {
                    st.misc.unfinished.fetch_sub(1, Ordering::AcqRel);
                }
            } else {
                p.stream_open.store(0, Ordering::Relaxed);
            }
        }
        if p.busy.load(Ordering::Relaxed) != 0 && p.stream_open.load(Ordering::Relaxed) != 0 {
            // Half a stream is out: close it with an ABORT chunk.
            if !self.wait_space(d, || self.free(tail, HDR as u64) >= HDR as u64) {
                // Leave the lock marked: the next holder tries again.
                return Err(PutFail::NoRoom);
            }
            self.write_header(tail, ABORT, 0, p.stream_seq.load(Ordering::Relaxed));
            advance(&p.tail, tail + HDR as u64, &st.data);
            st.misc.lost.fetch_add(1, Ordering::AcqRel);
        }
        p.stream_open.store(0, Ordering::Relaxed);
        p.busy.store(0, Ordering::Relaxed);
        p.lock.mark_consistent();
        Ok(())
    }

    // ----- get -----

    fn tail_beyond(&self, head: u64) -> bool {
        if self.cache.tail.load(std::sync::atomic::Ordering::Relaxed) > head {
            return true;
        }
        let t = self.st().prod.tail.load(Ordering::Acquire);
        self.cache
            .tail
            .store(t, std::sync::atomic::Ordering::Relaxed);
        t > head
    }

    fn get_inner(&self, d: Deadline) -> std::result::Result<T, GetFail> {
        let mut taken = 0;
        let r = self.get_locked(d, &mut taken);
        // The get lock is released: the message is ours alone now. Until this line, a death of
        // this process counts it as lost (see `Slot::in_hand`). Another thread of this process
        // may have marked its own message since: clear only ours.
        if let (Some(slot), true) = (self.slot, taken != 0) {
            let _ = self.st().slots[slot].in_hand.compare_exchange(
                taken,
                0,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
        r
    }

    fn get_locked(&self, d: Deadline, taken: &mut u64) -> std::result::Result<T, GetFail> {
        let st = self.st();
        let c = &st.cons;
        let acquired = lock_side(&c.lock, d).ok_or(GetFail::Nothing)?;
        let _guard = SideGuard { cell: &c.lock };
        if acquired == Acquired::OwnerDied {
            self.recover_get();
        }
        let mut head = c.head.load(Ordering::Relaxed);
        // The message being reassembled (streamed), by sequence number.
        let mut assembling: Option<u64> = None;
        let mut scratch = None;
        loop {
            if !self.tail_beyond(head) {
                self.wait_data(head, d, assembling.is_some())?;
                continue;
            }
            // SAFETY: published bytes at the head belong to the get-lock holder.
            let h = unsafe { self.ring(head, HDR) };
            let flags = u16::from_le_bytes([h[2], h[3]]);
            let len = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
            let seq = u64::from_le_bytes(h[8..16].try_into().expect("8 bytes"));
            let size = padded(len) as u64;
            let tail = self.cache.tail.load(std::sync::atomic::Ordering::Relaxed);
            if u16::from_le_bytes([h[0], h[1]]) != MAGIC || size > tail - head {
                return Err(GetFail::Error(Error::new(
                    ErrorKind::Codec,
                    "the queue's ring holds a malformed chunk header",
                )));
            }
            let next = head + size;
            let skip = c.skip.load(Ordering::Relaxed);
            if skip != 0 && seq == c.skip_seq.load(Ordering::Relaxed) {
                // A chunk of a message a dead consumer had started: drop it.
                if flags & LAST != 0 {
                    if skip == 1 {
                        c.gets.fetch_add(1, Ordering::AcqRel);
                        st.misc.lost.fetch_add(1, Ordering::AcqRel);
                    }
                    c.skip.store(0, Ordering::Relaxed);
                } else if flags & ABORT != 0 {
                    c.skip.store(0, Ordering::Relaxed);
                }
                head = next;
                advance(&c.head, head, &st.space);
                continue;
            }
            if flags & ABORT != 0 {
                if assembling == Some(seq) {
                    assembling = None;
                    c.busy.store(0, Ordering::Relaxed);
                }
                head = next;
                advance(&c.head, head, &st.space);
                continue;
            }
            if flags & FIRST != 0 {
                // A new message (if one was being reassembled, its producer vanished without an
                // ABORT, which recovery prevents; drop it all the same).
                c.busy_head.store(head, Ordering::Relaxed);
                c.busy_gets
                    .store(c.gets.load(Ordering::Relaxed), Ordering::Relaxed);
                c.busy_seq.store(seq, Ordering::Relaxed);
                c.busy_slot
                    .store(self.slot.map_or(u32::MAX, |i| i as u32), Ordering::Relaxed);
                c.busy.store(1, Ordering::Relaxed);
                if flags & LAST != 0 {
                    // SAFETY: the payload is published and ours until the head moves past it.
                    let payload = unsafe { self.ring(head + HDR as u64, len) };
                    let value = codec::decode::<T>(payload);
                    return self.complete(next, value, taken);
                }
                let buf = scratch
                    .get_or_insert_with(|| self.scratch.lock().unwrap_or_else(|e| e.into_inner()));
                buf.clear();
                // SAFETY: as above.
                buf.extend_from_slice(unsafe { self.ring(head + HDR as u64, len) });
                assembling = Some(seq);
                head = next;
                advance(&c.head, head, &st.space);
                continue;
            }
            if assembling == Some(seq) {
                let buf = scratch
                    .as_mut()
                    .expect("assembling implies a scratch buffer");
                // SAFETY: as above.
                buf.extend_from_slice(unsafe { self.ring(head + HDR as u64, len) });
                head = next;
                if flags & LAST != 0 {
                    let value = codec::decode::<T>(&buf[..]);
                    if buf.capacity() > (64usize << 20).max(4 * self.cap() as usize) {
                        // Do not keep a huge buffer around after a huge message.
                        **buf = Vec::new();
                    }
                    return self.complete(head, value, taken);
                }
                advance(&c.head, head, &st.space);
                continue;
            }
            // A continuation of a message we are not reading (left by a consumer that died and
            // was recovered from before this rule existed for it): skip.
            head = next;
            advance(&c.head, head, &st.space);
        }
    }

    /// Counts the message taken and moves the head past it.
    fn complete(
        &self,
        new_head: u64,
        value: std::result::Result<T, CodecError>,
        taken: &mut u64,
    ) -> std::result::Result<T, GetFail> {
        let st = self.st();
        let c = &st.cons;
        if let Some(slot) = self.slot {
            *taken = c.busy_seq.load(Ordering::Relaxed) + 1;
            st.slots[slot].in_hand.store(*taken, Ordering::Release);
        }
        c.gets
            .store(c.busy_gets.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        advance(&c.head, new_head, &st.space);
        c.busy.store(0, Ordering::Relaxed);
        value.map_err(|e| GetFail::Error(Error::codec("a queued message could not be decoded", e)))
    }

    /// Waits for bytes beyond `head`. Returns `Ok` to re-check, or how the get ends.
    fn wait_data(
        &self,
        head: u64,
        d: Deadline,
        mid_message: bool,
    ) -> std::result::Result<(), GetFail> {
        let st = self.st();
        if !mid_message && !self.may_have_producers() {
            return Err(GetFail::Disconnected);
        }
        if matches!(d, Deadline::Now) && !mid_message {
            return Err(GetFail::Nothing);
        }
        let tick = Instant::now() + POLL;
        let until = match d.instant() {
            Some(at) if at < tick && !mid_message => at,
            _ => tick,
        };
        let waited = st.data.wait_until(
            Some(until),
            |sync| read(&st.prod.tail, sync) > head,
            || !mid_message && !self.may_have_producers(),
        );
        match waited {
            Waited::Ready => Ok(()),
            Waited::Stopped => Err(GetFail::Disconnected),
            Waited::TimedOut => {
                if !mid_message && d.passed() {
                    return Err(GetFail::Nothing);
                }
                self.reap_dead_producers();
                if mid_message {
                    // Is the producer of this stream still alive? Its put lock says.
                    if let Some(a) = st.prod.lock.try_acquire() {
                        let _g = SideGuard {
                            cell: &st.prod.lock,
                        };
                        if a == Acquired::OwnerDied {
                            let _ = self.recover_put(Deadline::Now);
                        }
                    }
                }
                Ok(())
            }
        }
    }

    /// The get lock came with "owner died": work out what the dead consumer had taken.
    fn recover_get(&self) {
        let st = self.st();
        let c = &st.cons;
        if c.busy.load(Ordering::Relaxed) == 1 {
            let busy_gets = c.busy_gets.load(Ordering::Relaxed);
            let seq = c.busy_seq.load(Ordering::Relaxed);
            let slot = st.slots.get(c.busy_slot.load(Ordering::Relaxed) as usize);
            if c.head.load(Ordering::Relaxed) == c.busy_head.load(Ordering::Relaxed) {
                // Nothing was consumed: the message is still there for us.
                c.gets.store(busy_gets, Ordering::Relaxed);
                if let Some(s) = slot {
                    let _ =
                        s.in_hand
                            .compare_exchange(seq + 1, 0, Ordering::AcqRel, Ordering::Relaxed);
                }
            } else {
                let counted = c.gets.load(Ordering::Relaxed) != busy_gets;
                if counted && slot.is_none() {
                    // Taken whole by a process without a slot: count it here (with a slot,
                    // its `in_hand` mark is counted when the process is found dead).
                    st.misc.lost.fetch_add(1, Ordering::AcqRel);
                }
                c.skip_seq.store(seq, Ordering::Relaxed);
                c.skip.store(if counted { 2 } else { 1 }, Ordering::Relaxed);
            }
            c.busy.store(0, Ordering::Relaxed);
        }
        c.lock.mark_consistent();
        self.reap_dead_producers();
    }

    // ----- producers bookkeeping -----

    fn may_have_producers(&self) -> bool {
        let st = self.st();
        if st.misc.untracked.load(Ordering::Acquire) > 0 {
            return true;
        }
        if st.misc.in_transit.load(Ordering::Acquire) > 0
            && monotonic_secs().saturating_sub(st.misc.transit_at.load(Ordering::Acquire))
                < TRANSIT_SECS
        {
            return true;
        }
        st.slots.iter().any(|s| {
            let pid = s.pid.load(Ordering::Acquire);
            pid == -1 || (pid != 0 && s.handles.load(Ordering::Acquire) > 0)
        })
    }

    /// Clears the slots of processes that died holding handles, and counts the messages they
    /// died holding (see `Slot::in_hand`).
    fn reap_dead_producers(&self) {
        let (my_pid, _) = me();
        let st = self.st();
        for s in &st.slots {
            let pid = s.pid.load(Ordering::Acquire);
            if pid <= 0 || pid == my_pid {
                continue;
            }
            if s.handles.load(Ordering::Acquire) == 0 && s.in_hand.load(Ordering::Acquire) == 0 {
                continue;
            }
            let start = s.start.load(Ordering::Acquire);
            let alive = sys::process_start_time(pid).is_some_and(|t| start == 0 || t == start);
            if !alive {
                if s.in_hand.swap(0, Ordering::AcqRel) != 0 {
                    st.misc.lost.fetch_add(1, Ordering::AcqRel);
                }
                s.handles.store(0, Ordering::Release);
                let _ = s
                    .pid
                    .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Relaxed);
                st.data.notify_all();
            }
        }
    }

    // ----- public API -----

    /// Puts `value`, waiting as long as it takes for room (Python's `put()`).
    ///
    /// # Errors
    /// [`PutError`] with the value: it cannot be serialized ([`ErrorKind::Codec`]), it is larger
    /// than the message limit, or this handle was closed ([`ErrorKind::Closed`]).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put([1u8, 2, 3]).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        match self.put_inner(&value, Deadline::At(None)) {
            Ok(()) => Ok(()),
            Err(PutFail::Error(error)) => Err(PutError { value, error }),
            Err(PutFail::NoRoom) => unreachable!("an untimed put waits for room"),
        }
    }

    /// Puts a copy of `*value`, waiting as long as it takes for room: the value is serialized
    /// into the ring and stays yours (Python's `put()` does not consume its argument either).
    ///
    /// # Errors
    /// As [`put`](Self::put), without the value: [`ErrorKind::Codec`] or [`ErrorKind::Closed`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<Vec<u8>>::new()?;
    /// let block = vec![1u8; 4096];
    /// for _ in 0..3 {
    ///     q.put_ref(&block)?; // no clone
    /// }
    /// assert_eq!(q.qsize(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_ref(&self, value: &T) -> Result<()> {
        match self.put_inner(value, Deadline::At(None)) {
            Ok(()) => Ok(()),
            Err(PutFail::Error(e)) => Err(e),
            Err(PutFail::NoRoom) => unreachable!("an untimed put waits for room"),
        }
    }

    /// Puts `value` if there is room now (Python's `put_nowait()`).
    ///
    /// # Errors
    /// [`TryPutError::Full`] with the value if there is no room (or another producer is
    /// putting); [`TryPutError::Failed`] as for [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.try_put(5u32).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "put_nowait")]
    pub fn try_put(&self, value: T) -> std::result::Result<(), TryPutError<T>> {
        match self.put_inner(&value, Deadline::Now) {
            Ok(()) => Ok(()),
            Err(PutFail::NoRoom) => Err(TryPutError::Full(value)),
            Err(PutFail::Error(error)) => Err(TryPutError::Failed(PutError { value, error })),
        }
    }

    /// Puts `value`, waiting at most `timeout` for room.
    ///
    /// # Errors
    /// [`PutTimeoutError::Timeout`] with the value; [`PutTimeoutError::Failed`] as for
    /// [`put`](Self::put).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::new()?;
    /// q.put_timeout('x', Duration::from_millis(10)).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_timeout(
        &self,
        value: T,
        timeout: Duration,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.put_until(value, Instant::now().checked_add(timeout))
    }

    /// Puts `value`, waiting until `deadline` at the latest for room.
    ///
    /// # Errors
    /// As [`put_timeout`](Self::put_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put_deadline(1i8, std::time::Instant::now()).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put_deadline(
        &self,
        value: T,
        deadline: Instant,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        self.put_until(value, Some(deadline))
    }

    fn put_until(
        &self,
        value: T,
        deadline: Option<Instant>,
    ) -> std::result::Result<(), PutTimeoutError<T>> {
        match self.put_inner(&value, Deadline::At(deadline)) {
            Ok(()) => Ok(()),
            Err(PutFail::NoRoom) => Err(PutTimeoutError::Timeout(value)),
            Err(PutFail::Error(error)) => Err(PutTimeoutError::Failed(PutError { value, error })),
        }
    }

    /// Takes the oldest message, waiting as long as it takes (Python's `get()`).
    ///
    /// # Errors
    /// [`GetError::Disconnected`] when the queue is empty and no handle that could put is left;
    /// [`GetError::Failed`] if a message cannot be decoded (it is consumed).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(7u64).unwrap();
    /// assert_eq!(q.get().unwrap(), 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.get_inner(Deadline::At(None)).map_err(|e| match e {
            GetFail::Nothing => unreachable!("an untimed get waits"),
            GetFail::Disconnected => GetError::Disconnected,
            GetFail::Error(e) => GetError::Failed(e),
        })
    }

    /// Takes the oldest message if there is one now (Python's `get_nowait()`).
    ///
    /// # Errors
    /// [`TryGetError::Empty`] if there is none (or another consumer is getting);
    /// [`TryGetError::Disconnected`] and [`TryGetError::Failed`] as for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.try_get().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "get_nowait")]
    pub fn try_get(&self) -> std::result::Result<T, TryGetError> {
        self.get_inner(Deadline::Now).map_err(|e| match e {
            GetFail::Nothing => TryGetError::Empty,
            GetFail::Disconnected => TryGetError::Disconnected,
            GetFail::Error(e) => TryGetError::Failed(e),
        })
    }

    /// Takes the oldest message, waiting at most `timeout`. A streamed message whose first
    /// piece arrived in time is received to the end.
    ///
    /// # Errors
    /// [`GetTimeoutError::Timeout`] if nothing came; the others as for [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.get_timeout(Duration::from_millis(1)).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_timeout(&self, timeout: Duration) -> std::result::Result<T, GetTimeoutError> {
        self.get_until(Instant::now().checked_add(timeout))
    }

    /// Takes the oldest message, waiting until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`get_timeout`](Self::get_timeout).
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// assert!(q.get_deadline(std::time::Instant::now()).is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_deadline(&self, deadline: Instant) -> std::result::Result<T, GetTimeoutError> {
        self.get_until(Some(deadline))
    }

    fn get_until(&self, deadline: Option<Instant>) -> std::result::Result<T, GetTimeoutError> {
        self.get_inner(Deadline::At(deadline)).map_err(|e| match e {
            GetFail::Nothing => GetTimeoutError::Timeout,
            GetFail::Disconnected => GetTimeoutError::Disconnected,
            GetFail::Error(e) => GetTimeoutError::Failed(e),
        })
    }

    /// The number of messages in the queue: exact (Python's is approximate), though it can
    /// change as soon as it is read. A message is counted once it is entirely in the queue.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::new()?;
    /// q.put(1u8).unwrap();
    /// q.put(2u8).unwrap();
    /// assert_eq!(q.qsize(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[doc(alias = "len")]
    pub fn qsize(&self) -> usize {
        let gets = self.st().cons.gets.load(Ordering::Acquire);
        let puts = self.st().prod.puts.load(Ordering::Acquire);
        puts.saturating_sub(gets) as usize
    }

    /// True when [`qsize`](Self::qsize) is 0.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::Queue::<u8>::new()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.qsize() == 0
    }

    /// True when the message limit is reached or the ring has no room for even an empty
    /// message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::Queue::<u8>::new()?.is_full());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_full(&self) -> bool {
        let st = self.st();
        let max = st.max_items;
        if max != 0 && self.qsize() as u64 >= max {
            return true;
        }
        let used = st.prod.tail.load(Ordering::Acquire) - st.cons.head.load(Ordering::Acquire);
        self.cap() - used.min(self.cap()) < HDR as u64
    }

    /// The ring's size in bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::new()?.capacity(), multiproc::DEFAULT_CAPACITY);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn capacity(&self) -> usize {
        self.cap() as usize
    }

    /// Messages known to be lost because a process died in the middle of putting or getting
    /// them: taken by a consumer that died before returning them, or cut short by a producer
    /// that died while streaming them. A `put` that had not returned when its process died is
    /// not counted: it was never accepted.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Queue::<u8>::new()?.lost_messages(), 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lost_messages(&self) -> u64 {
        self.reap_dead_producers();
        self.st().misc.lost.load(Ordering::Acquire)
    }

    /// Declares that this handle will put nothing more (Python's `close()`): later puts on it
    /// fail with [`ErrorKind::Closed`], and it no longer keeps the queue connected (see
    /// "Disconnection" above). Getting still works. Idempotent.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::Queue::<u8>::new()?;
    /// q.close();
    /// assert!(q.is_closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        if !self.closed.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.unregister();
        }
    }

    /// Whether [`close`](Self::close) was called on this handle.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(!multiproc::Queue::<u8>::new()?.is_closed());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// Registers a handle of this process in the segment's process table; `None` if it is full.
fn register(state: &State) -> Option<usize> {
    let (pid, start) = me();
    for (i, s) in state.slots.iter().enumerate() {
        if s.pid.load(Ordering::Acquire) == pid && s.start.load(Ordering::Acquire) == start {
            s.handles.fetch_add(1, Ordering::AcqRel);
            return Some(i);
        }
    }
    for (i, s) in state.slots.iter().enumerate() {
        let current = s.pid.load(Ordering::Acquire);
        let free = current == 0
            || (current > 0
                && s.handles.load(Ordering::Acquire) == 0
                && s.in_hand.load(Ordering::Acquire) == 0
                && sys::process_start_time(current)
                    .is_none_or(|t| t != s.start.load(Ordering::Acquire)));
        if free
            && s.pid
                .compare_exchange(current, -1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            if s.in_hand.swap(0, Ordering::AcqRel) != 0 {
                // The slot's previous process died holding a message.
                state.misc.lost.fetch_add(1, Ordering::AcqRel);
            }
            s.start.store(start, Ordering::Release);
            s.handles.store(1, Ordering::Release);
            s.pid.store(pid, Ordering::Release);
            return Some(i);
        }
    }
    None
}

impl<T> Queue<T> {
    /// Stops counting this handle as a possible producer, and wakes a blocked consumer so that
    /// it can notice if it was the last.
    fn unregister(&self) {
        if self.pid != sys::getpid() {
            return; // a forked copy: the registration belongs to the parent
        }
        let st: &State = &self.seg.state;
        match self.slot {
            Some(i) => {
                st.slots[i].handles.fetch_sub(1, Ordering::AcqRel);
            }
            None => {
                st.misc.untracked.fetch_sub(1, Ordering::AcqRel);
            }
        }
        st.data.notify_all();
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        if !self.closed.load(std::sync::atomic::Ordering::Acquire) {
            self.unregister();
        }
    }
}

impl<T: Serialize + DeserializeOwned> Clone for Queue<T> {
    /// Another handle on the same queue; it counts as a producer until closed or dropped.
    fn clone(&self) -> Self {
        Queue::handle(self.seg.clone())
    }
}

impl<T> fmt::Debug for Queue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st: &State = &self.seg.state;
        f.debug_struct("Queue")
            .field("capacity", &st.capacity)
            .field(
                "qsize",
                &st.prod
                    .puts
                    .load(Ordering::Relaxed)
                    .saturating_sub(st.cons.gets.load(Ordering::Relaxed)),
            )
            .field(
                "closed",
                &self.closed.load(std::sync::atomic::Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl<T: Serialize + DeserializeOwned> Serialize for Queue<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let misc = &self.st().misc;
        let r = self.seg.state.serialize_handle(s);
        if r.is_ok() {
            misc.transit_at.store(monotonic_secs(), Ordering::Release);
            misc.in_transit.fetch_add(1, Ordering::AcqRel);
        }
        r
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for Queue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let state: Shared<State> =
            Shared::deserialize_handle(d, &[Kind::Queue], type_tag::<T>(), 0)?;
        let q = Queue::attach(state).map_err(serde::de::Error::custom)?;
        let misc = &q.st().misc;
        let _ = misc
            .in_transit
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        Ok(q)
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

impl<T: Serialize + DeserializeOwned> Streamer<'_, T> {
    /// Reserves a new chunk at `chunk_start`: waits for room for its header and some payload.
    fn open(&mut self) -> bool {
        let want = (HDR + (self.q.cap() as usize / 4).max(16)) as u64;
        let start = self.chunk_start;
        let q = self.q;
        if !q.wait_space(self.deadline, || q.free(start, want) >= want) {
            self.fail = Some(PutFail::NoRoom);
            return false;
        }
        self.chunk_len = 0;
        true
    }

    /// Payload room left in the open chunk.
    fn room(&self) -> usize {
        let used = (HDR + self.chunk_len) as u64;
        let free = self.q.free(self.chunk_start, used + 16);
        (free.saturating_sub(used) as usize).min(u32::MAX as usize - self.chunk_len - 16)
    }

    /// Publishes the open chunk (not the last) and opens the next.
    fn flush(&mut self) -> bool {
        let q = self.q;
        let p = &q.st().prod;
        let flags = if self.first { FIRST } else { 0 };
        q.write_header(self.chunk_start, flags, self.chunk_len, self.seq);
        if self.first {
            p.stream_seq.store(self.seq, Ordering::Relaxed);
            p.stream_open.store(1, Ordering::Relaxed);
            self.first = false;
        }
        self.chunk_start += padded(self.chunk_len) as u64;
        advance(&p.tail, self.chunk_start, &q.st().data);
        self.open()
    }

    fn write(&mut self, mut data: &[u8]) -> postcard::Result<()> {
        self.total += data.len();
        let limit = self.q.st().max_message as usize;
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
            let at = self.chunk_start + (HDR + self.chunk_len) as u64;
            // SAFETY: `n` bytes of free space the put-lock holder reserved.
            unsafe { self.q.ring(at, n) }.copy_from_slice(&data[..n]);
            self.chunk_len += n;
            data = &data[n..];
        }
        Ok(())
    }
}

struct StreamFlavor<'a, 'q, T>(&'a mut Streamer<'q, T>);

impl<T: Serialize + DeserializeOwned> postcard::ser_flavors::Flavor for StreamFlavor<'_, '_, T> {
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

/// A queue without a size limit on the number of messages: Python's
/// `multiprocessing.SimpleQueue` (`put`, `get`, `is_empty`, `close`).
///
/// Internally a [`Queue`] with the default ring; `put` waits only when the ring's bytes are all
/// in use.
///
/// # Examples
///
/// ```
/// let q = multiproc::SimpleQueue::new()?;
/// q.put("hi".to_string()).unwrap();
/// assert_eq!(q.get().unwrap(), "hi");
/// assert!(q.is_empty());
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct SimpleQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> SimpleQueue<T> {
    /// Creates a simple queue.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::<u8>::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<SimpleQueue<T>> {
        Ok(SimpleQueue {
            queue: Queue::new()?,
        })
    }

    /// Puts `value`; see [`Queue::put`].
    ///
    /// # Errors
    /// As [`Queue::put`].
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::SimpleQueue::new()?.put(1u8).unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn put(&self, value: T) -> std::result::Result<(), PutError<T>> {
        self.queue.put(value)
    }

    /// Takes the oldest message; see [`Queue::get`].
    ///
    /// # Errors
    /// As [`Queue::get`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::SimpleQueue::new()?;
    /// q.put(1u8).unwrap();
    /// assert_eq!(q.get().unwrap(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> std::result::Result<T, GetError> {
        self.queue.get()
    }

    /// True when there is no message.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::SimpleQueue::<u8>::new()?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// See [`Queue::close`].
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::SimpleQueue::<u8>::new()?.close();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn close(&self) {
        self.queue.close();
    }
}

/// Clone, Debug and Serialize for a wrapper around a `queue: Queue<T>` field.
macro_rules! queue_wrapper {
    ($name:ident) => {
        impl<T: Serialize + DeserializeOwned> Clone for $name<T> {
            fn clone(&self) -> Self {
                $name {
                    queue: self.queue.clone(),
                }
            }
        }

        impl<T> fmt::Debug for $name<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_tuple(stringify!($name)).field(&self.queue).finish()
            }
        }

        impl<T: Serialize + DeserializeOwned> Serialize for $name<T> {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.queue.serialize(s)
            }
        }
    };
}
queue_wrapper!(SimpleQueue);
queue_wrapper!(JoinableQueue);

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for SimpleQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Ok(SimpleQueue {
            queue: Queue::deserialize(d)?,
        })
    }
}

/// A [`Queue`] that also counts unfinished tasks: Python's `multiprocessing.JoinableQueue`.
///
/// Every `put` adds a task; a consumer calls [`task_done`](Self::task_done) when it has
/// finished with a message it took; [`join`](Self::join) waits until every task is done. All of
/// [`Queue`]'s methods are available through `Deref`.
///
/// A consumer that dies between `get` and `task_done` leaves its task unfinished forever, as in
/// Python: use [`join_timeout`](Self::join_timeout) where that matters.
///
/// # Examples
///
/// ```
/// let q = multiproc::JoinableQueue::new()?;
/// q.put(1u32).unwrap();
/// let _job = q.get().unwrap();
/// q.task_done().unwrap();
/// q.join();
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Creates a joinable queue with the default settings; see [`Queue::builder`] and
    /// [`QueueBuilder::build_joinable`] for others.
    ///
    /// # Errors
    /// As [`Queue::new`].
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::<String>::new()?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new() -> Result<JoinableQueue<T>> {
        Queue::builder().build_joinable()
    }

    /// Marks one task (one message taken with `get`) as done.
    ///
    /// # Errors
    /// [`TaskDoneError`] if every task is already done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// q.get().unwrap();
    /// assert!(q.task_done().is_ok());
    /// assert!(q.task_done().is_err());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn task_done(&self) -> std::result::Result<(), TaskDoneError> {
        let misc = &self.queue.st().misc;
        let before = misc
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map_err(|_| TaskDoneError)?;
        if before == 1 {
            misc.join.notify_all();
        }
        Ok(())
    }

    /// The number of tasks put and not yet marked done.
    ///
    /// # Examples
    ///
    /// ```
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// assert_eq!(q.unfinished_tasks(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unfinished_tasks(&self) -> u64 {
        self.queue.st().misc.unfinished.load(Ordering::Acquire)
    }

    /// Waits until every task put so far is done.
    ///
    /// # Examples
    ///
    /// ```
    /// multiproc::JoinableQueue::<u8>::new()?.join(); // nothing put: returns at once
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join(&self) {
        self.join_until(None);
    }

    /// Like [`join`](Self::join), giving up after `timeout`; true if every task was done.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let q = multiproc::JoinableQueue::new()?;
    /// q.put(1u8).unwrap();
    /// assert!(!q.join_timeout(Duration::from_millis(1)));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn join_timeout(&self, timeout: Duration) -> bool {
        self.join_until(Instant::now().checked_add(timeout))
    }

    fn join_until(&self, deadline: Option<Instant>) -> bool {
        let misc = &self.queue.st().misc;
        misc.join
            .wait_until(deadline, |sync| read(&misc.unfinished, sync) == 0, || false)
            == Waited::Ready
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<'de, T: Serialize + DeserializeOwned> Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let queue = Queue::deserialize(d)?;
        if queue.st().joinable == 0 {
            return Err(serde::de::Error::custom(Error::new(
                ErrorKind::BadHeader,
                "a plain queue cannot be received as a JoinableQueue",
            )));
        }
        Ok(JoinableQueue { queue })
    }
}

#[cfg(all(test, not(loom)))]
mod tests;
