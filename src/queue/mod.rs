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
//! The ring carries chunks: a 16-byte header ([`layout::ChunkHeader`]: magic, flags, payload
//! length, message sequence number) and the payload, padded to 16 bytes. A message that fits in the ring is one chunk
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
//!
//! # Files
//!
//! `layout.rs` (the shared state and the chunk header), `put.rs` (the put path and its
//! streaming flavor), `get.rs` (the get path), `recovery.rs` (repairs after a death or an
//! unwind), `registry.rs` (the process table: disconnection and lost messages), `ring.rs` (the
//! cursors' sleep/wake protocol), `api.rs` (`Queue`'s public methods), `builder.rs`,
//! `simple.rs`, `joinable.rs`, `error.rs`.

mod api;
mod builder;
mod error;
mod get;
mod joinable;
mod layout;
mod put;
mod recovery;
mod registry;
mod ring;
mod simple;

#[cfg(all(test, loom))]
mod model_tests;

use std::fmt;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use builder::QueueBuilder;
pub use error::{
    GetError, GetTimeoutError, PutError, PutTimeoutError, QueueJoinTimeoutError, TaskDoneError,
    TryGetError, TryPutError,
};
pub use joinable::JoinableQueue;
pub use simple::SimpleQueue;

use layout::{Mirror, Segment, State};
use registry::{Hold, QueueTransit, me};

use crate::atomic::Ordering;
use crate::codec::{self, CodecError};
use crate::error::{Error, ErrorKind, Result};
use crate::handles::{self, Handle, handle_serde};
use crate::shm::{Kind, Shared, type_tag};
use crate::sync::spin::Spin;
use crate::sync::{Acquired, CellGuard, LockCell};
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

/// How often a blocked consumer looks for producers that died without a word, and a blocked
/// `join` for a producer that died between counting a task and publishing it.
const POLL: Duration = Duration::from_millis(100);

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
    /// Not at all (the `try_` forms).
    Now,
    /// As long as it takes (the blocking forms).
    Never,
    /// Until then (the `_timeout` and `_deadline` forms).
    At(Instant),
}

impl Deadline {
    /// `None` (a timeout too long to represent) waits for ever.
    fn until(at: Option<Instant>) -> Deadline {
        at.map_or(Deadline::Never, Deadline::At)
    }

    /// The instant to sleep until; `None` for ever.
    fn instant(self) -> Option<Instant> {
        match self {
            Deadline::Now => Some(Instant::now()),
            Deadline::Never => None,
            Deadline::At(at) => Some(at),
        }
    }

    fn passed(self) -> bool {
        match self {
            Deadline::Now => true,
            Deadline::Never => false,
            Deadline::At(at) => Instant::now() >= at,
        }
    }
}

/// Why a put did not happen.
enum PutFail {
    /// Its deadline (now, for `try_put`) came before it could go in: no room, too many items,
    /// or the put lock held by another producer.
    OutOfTime,
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

/// Takes a side's lock. A blocked acquisition never sleeps longer than [`POLL`] at a time: a
/// robust futex's wake can be lost for good (a waiter that the kernel woke is killed before it
/// takes the lock, and another process takes it first, clearing the "waiters" bit; the other
/// sleepers are then woken by nobody). Waking up to try again turns that into a short delay.
///
/// The guard that releases it, and how it was acquired; `Ok(None)` when the deadline passed;
/// an error when the lock cannot be used (its word was overwritten, e.g. with this thread's own
/// id, or this thread is already inside an operation on this side of the queue, as a
/// `Serialize` that puts into the queue it is put into).
fn lock_side(cell: &LockCell, d: Deadline) -> Result<Option<(SideGuard<'_>, Acquired)>> {
    let acquired = acquire_side(cell, d)?;
    // SAFETY: `acquire_side` has just acquired the lock for this thread, and only this guard
    // stands for that hold.
    Ok(acquired.map(|a| (unsafe { SideGuard::adopt(cell) }, a)))
}

fn acquire_side(cell: &LockCell, d: Deadline) -> Result<Option<Acquired>> {
    if let Some(a) = cell.try_lock().map_err(broken_side)? {
        return Ok(Some(a));
    }
    let at = match d {
        Deadline::Now => return Ok(None),
        Deadline::Never => None,
        Deadline::At(at) => Some(at),
    };
    loop {
        let tick = Instant::now() + POLL;
        let until = at.map_or(tick, |a| a.min(tick));
        if let Some(a) = cell.lock(Some(until)).map_err(broken_side)? {
            return Ok(Some(a));
        }
        if at.is_some_and(|a| Instant::now() >= a) {
            return Ok(None);
        }
    }
}

/// A side lock that cannot be taken, as the queue operation's error (`ErrorKind::Io`, with
/// the lock's OS error as its source: `EDEADLK` for a word naming this thread).
fn broken_side(e: Error) -> Error {
    let source = match e.io_error() {
        Some(io) => io.raw_os_error().map_or_else(
            || std::io::Error::new(io.kind(), io.to_string()),
            std::io::Error::from_raw_os_error,
        ),
        None => std::io::Error::other(e.to_string()),
    };
    Error::os(
        "the queue's lock cannot be taken: its shared state is corrupt, or this thread is \
         already inside an operation on this side of the queue (a Serialize or Deserialize \
         that uses the same queue)",
        source,
    )
}

/// Releases a side's lock.
type SideGuard<'a> = CellGuard<'a>;

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
/// A handle passed in a [`Process`](crate::Process)'s arguments counts from the moment the child
/// is started; a forked child counts for every queue its parent had open, until it exits. At
/// most 128 processes are tracked; see docs/reliability.md for what happens beyond.
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
    /// Tells this handle apart from the others of its process (see `Consumer::part_owner`).
    id: u64,
    closed: AtomicBool,
    /// Reassembly buffer for streamed messages; used only by the get-lock holder.
    scratch: Mutex<Vec<u8>>,
    _type: PhantomData<fn(T) -> T>,
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

    /// Maps the ring of a segment whose state is already mapped, and registers a handle. What
    /// bounds our accesses (the ring's size, the message limit) is read here, once.
    fn attach(state: Shared<State>) -> Result<Queue<T>> {
        let cap = state.capacity;
        let off = state.ring_offset;
        let max_message = state.max_message;
        let max_items = state.max_items;
        let joinable = state.joinable != 0;
        let page = sys::page_size() as u64;
        let fits = off
            .checked_add(cap)
            .and_then(|end| end.checked_sub(crate::shm::HEADER_LEN as u64))
            .is_some_and(|end| end <= state.data_len() as u64);
        if cap == 0
            || !cap.is_multiple_of(page)
            || !off.is_multiple_of(page)
            || !fits
            || max_message > u64::from(u32::MAX)
        {
            return Err(Error::new(
                ErrorKind::BadHeader,
                "the queue's segment does not hold the ring its header describes",
            ));
        }
        let ptr = sys::map_mirrored(state.fd().as_fd(), off as usize, cap as usize)
            .map_err(|e| Error::os("cannot map the queue's ring", e))?;
        let seg = Arc::new(Segment {
            state,
            ring: Mirror {
                ptr,
                len: cap as usize,
            },
            cap,
            max_message: max_message as usize,
            max_items,
            joinable,
            local_open: AtomicUsize::new(0),
            put_spin: Spin::new(),
            get_spin: Spin::new(),
            join_spin: Spin::new(),
        });
        let aware: Arc<dyn handles::ForkAware> = seg.clone();
        handles::register_fork_aware(&aware);
        Ok(Queue::handle(seg))
    }

    fn handle(seg: Arc<Segment>) -> Queue<T> {
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let (pid, start) = me();
        let slot = seg.state.hold_or_untracked(pid, start, Hold::Handle);
        seg.local_open.fetch_add(1, Ordering::AcqRel);
        Queue {
            seg,
            cache: Cache::default(),
            slot,
            pid,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            closed: AtomicBool::new(false),
            scratch: Mutex::new(Vec::new()),
            _type: PhantomData,
        }
    }
}

impl<T> Queue<T> {
    fn st(&self) -> &State {
        &self.seg.state
    }

    /// Stops counting this handle as a possible producer, and wakes a blocked consumer so that
    /// it can notice if it was the last.
    fn unregister(&self) {
        if self.pid != sys::getpid() {
            return; // a forked copy: the registration belongs to the parent
        }
        let st: &State = &self.seg.state;
        self.seg.local_open.fetch_sub(1, Ordering::AcqRel);
        match self.slot {
            Some(i) => {
                let _ =
                    st.slots[i]
                        .handles
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
            None => {
                let _ =
                    st.counts
                        .untracked
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            }
        }
        st.data.notify_all_unconditionally();
    }
}

impl<T> Drop for Queue<T> {
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
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
            .field("capacity", &self.seg.cap)
            .field(
                "qsize",
                &st.prod
                    .puts
                    .load(Ordering::Relaxed)
                    .saturating_sub(st.cons.gets.load(Ordering::Relaxed)),
            )
            .field("closed", &self.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Only as (part of) a child process's arguments: the segment's descriptor alone. The child
/// that receives the handle counts as a producer from the moment it is started (see
/// `registry.rs`).
impl<T: Serialize + DeserializeOwned> Handle for Queue<T> {
    type Wire = ();
    fn descriptor(&self) -> BorrowedFd<'_> {
        self.seg.state.fd().as_fd()
    }
    fn wire(&self) -> std::result::Result<(), String> {
        handles::export_transit(Box::new(QueueTransit(self.seg.clone())))
    }
    fn import(fd: OwnedFd, (): ()) -> Result<Self> {
        let state: Shared<State> = Shared::open(fd, &[Kind::Queue], type_tag::<T>(), 0)?;
        let q = Queue::attach(state)?;
        if let Some(i) = q.slot {
            // The handle has arrived: it no longer counts as on its way (see `registry.rs`).
            let _ =
                q.st().slots[i]
                    .pending
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
        Ok(q)
    }
}
handle_serde!([T: Serialize + DeserializeOwned] Queue<T>);

#[cfg(all(test, not(loom)))]
mod tests;
