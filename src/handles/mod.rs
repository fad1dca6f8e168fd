//! Passing handles (connections, shared memory, locks, queues) to children as arguments.
//!
//! A handle is a file descriptor. While a process's arguments are being serialized, a handle's
//! `Serialize` impl calls [`export_fd`]: the descriptor is duplicated into a per-thread list and
//! the handle is written as its index in that list. The list travels beside the encoded bytes:
//! as SCM_RIGHTS ancillary data on the control socket (spawn), or in memory (fork). On the other
//! side, [`with_incoming`] installs the received descriptors while the arguments are decoded,
//! and the handle's `Deserialize` impl takes its own back with [`import_fd`]. Outside those two
//! moments, exporting or importing a handle is an error: descriptors never travel by a guessed
//! number. Both per-thread lists are put back as they were when encoding or decoding ends, by
//! return or by unwinding (a `Serialize` that panics must not leave the list armed).
//!
//! One descriptor exported several times in one message travels once: a thousand locks from one
//! arena chunk are one descriptor, not a thousand (see [`export_fd`]); every import of it gets
//! its own duplicate on the other side.
//!
//! A handle that needs to know *who* receives it (a queue counts its possible producers) also
//! registers a [`Transit`] with [`export_transit`]. The encoded arguments carry these beside the
//! descriptors ([`Transits`]); the process layer calls [`Transits::handed_to`] once a child with
//! a known pid is about to receive them. Arguments that never reach a child (a `Process`
//! dropped before `start()`, a start that failed before the child existed) drop their transits
//! unannounced. What the handles took for the trip ([`Taken`]: an arena slot's count) travels
//! in the same [`Transits`]: handed to a child, it is the child's to adopt; dropped
//! unannounced, it is given back.
//!
//! Every handle type says what it carries through one trait, [`Handle`], and gets its serde
//! impls from [`handle_serde!`]: one wire shape and one place for the checks (see `wire.rs`).
//!
//! A forked child is a copy of its parent and holds a copy of every handle the parent had:
//! [`forked`] tells every live [`ForkAware`] object of this process about the new child. The
//! child itself does nothing.
//!
//! This module sits below every handle type (`shm/`, `sync/`, `pipe/`, `queue/`) and above
//! `codec/` and `sys/` only: the process layer is its client, never the other way round.

use serde::Serialize;
use std::cell::RefCell;
use std::fmt;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

use crate::codec::{self, CodecError};
use crate::sys;

mod fork;
pub(crate) mod wire;

pub(crate) use fork::{ForkAware, forked, register_fork_aware};
pub(crate) use wire::{Handle, handle_serde, shared_handle};

/// A handle inside encoded arguments that wants to know which process receives it.
pub(crate) trait Transit: Send + Sync {
    /// The arguments are being handed to the (already created) process `pid`.
    fn handed_to(&self, pid: i32);
}

/// The transits collected while encoding one set of arguments, and what their handles took
/// for the trip: given back when dropped, unless [`handed_to`](Self::handed_to) a child first.
#[derive(Default)]
pub(crate) struct Transits(Vec<Box<dyn Transit>>, std::sync::Mutex<Vec<Box<dyn Taken>>>);

impl Transits {
    /// Announces every handle of the arguments to the child `pid` that receives them, and
    /// leaves what they took to that child. Call it after the child exists and before it can
    /// decode them.
    pub(crate) fn handed_to(&self, pid: i32) {
        for t in &self.0 {
            t.handed_to(pid);
        }
        self.keep_taken();
    }

    /// What the handles took is kept, not given back: the receiver adopts it.
    fn keep_taken(&self) {
        self.1
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    /// True when no handle asked to be told.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many handles asked to be told.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

impl Drop for Transits {
    fn drop(&mut self) {
        let taken = self
            .1
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for t in taken.drain(..) {
            t.give_back();
        }
    }
}

impl fmt::Debug for Transits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Transits({})", self.0.len())
    }
}

/// Something a handle took for its trip while being encoded (an arena slot counts one more
/// holder), to give back if the message is abandoned before it is complete: the encoding
/// failed or unwound, or the message grew past what one message can carry.
pub(crate) trait Taken: Send {
    /// The message this was taken for will never be sent: undo what was taken.
    fn give_back(self: Box<Self>);
}

/// What is collected while encoding.
#[derive(Default)]
struct Outgoing {
    fds: Vec<OwnedFd>,
    /// What each entry of `fds` was exported from: the descriptor number in this process and
    /// the file's (device, inode). Both must match for a later export to reuse the entry: the
    /// number alone could have been closed and reused meanwhile (our duplicate keeps the first
    /// file open, so its inode cannot be recycled), and the inode alone would merge the two
    /// ends of a pipe, which share one.
    exported: std::collections::HashMap<(RawFd, u64, u64), u32>,
    transits: Vec<Box<dyn Transit>>,
    /// Given back when dropped: only [`Message::finish`] keeps them (by forgetting them).
    taken: Vec<Box<dyn Taken>>,
}

/// How long each list of an [`Outgoing`] was before one part of a message was encoded.
#[derive(Clone, Copy)]
struct Mark {
    fds: usize,
    transits: usize,
    taken: usize,
}

impl Outgoing {
    fn mark(&self) -> Mark {
        Mark {
            fds: self.fds.len(),
            transits: self.transits.len(),
            taken: self.taken.len(),
        }
    }

    /// Undoes everything collected since `mark`: what was taken is given back, descriptors
    /// duplicated since are closed.
    fn roll_back(&mut self, mark: Mark) {
        for t in self.taken.drain(mark.taken..) {
            t.give_back();
        }
        self.fds.truncate(mark.fds);
        self.exported.retain(|_, &mut i| (i as usize) < mark.fds);
        self.transits.truncate(mark.transits);
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        for t in self.taken.drain(..) {
            t.give_back();
        }
    }
}

thread_local! {
    static OUTGOING: RefCell<Option<Outgoing>> = const { RefCell::new(None) };
    static INCOMING: RefCell<Option<Vec<Option<OwnedFd>>>> = const { RefCell::new(None) };
}

/// Puts a per-thread list back as it was when dropped, on return or unwind alike.
struct Restore<T: 'static> {
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    saved: Option<Option<T>>,
}

impl<T: 'static> Restore<T> {
    #[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
    fn install(key: &'static std::thread::LocalKey<RefCell<Option<T>>>, value: T) -> Self {
        let saved = key.with(|c| c.replace(Some(value)));
        Restore {
            key,
            saved: Some(saved),
        }
    }

    /// Takes what was collected and restores the earlier state.
    #[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
    fn finish(mut self) -> Option<T> {
        let saved = self.saved.take().unwrap_or(None);
        self.key.with(|c| c.replace(saved))
    }
}

impl<T: 'static> Drop for Restore<T> {
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            // Unwinding (or `finish` was not called): what was collected is dropped, which
            // closes its descriptors and gives back what was taken.
            let _ = self.key.try_with(|c| c.replace(saved));
        }
    }
}

/// One message being encoded in parts (a pool task's items): every part shares one list of
/// descriptors, so a descriptor that many parts export travels once for the whole message.
/// A part that fails, unwinds or would take the message past
/// [`MAX_FDS_PER_MESSAGE`](sys::MAX_FDS_PER_MESSAGE) descriptors leaves the message as it was
/// before it, having given back what it took.
#[derive(Default)]
pub(crate) struct Message {
    out: Outgoing,
}

/// A [`Message`] as it was at one point, to go back to.
pub(crate) struct Checkpoint(Mark);

/// Why a part of a [`Message`] was not added to it.
#[derive(Debug)]
pub(crate) enum PartError {
    /// Its `Serialize` failed.
    Codec(CodecError),
    /// With it, the message would carry this many descriptors: more than
    /// [`MAX_FDS_PER_MESSAGE`](sys::MAX_FDS_PER_MESSAGE).
    TooManyFds(usize),
}

impl From<PartError> for CodecError {
    fn from(e: PartError) -> CodecError {
        match e {
            PartError::Codec(e) => e,
            PartError::TooManyFds(n) => CodecError::Encode(format!(
                "{n} handles in one message; at most {} can be passed",
                sys::MAX_FDS_PER_MESSAGE
            )),
        }
    }
}

/// While one part of a [`Message`] is encoded: the message's lists are the thread's outgoing
/// ones. Dropped (on return or unwind), it moves them back into the message, and rolls the
/// part back unless told it completed.
struct Part<'a> {
    message: &'a mut Outgoing,
    saved: Option<Outgoing>,
    mark: Mark,
    complete: bool,
}

impl Drop for Part<'_> {
    fn drop(&mut self) {
        let saved = self.saved.take();
        let collected = OUTGOING
            .try_with(|c| c.replace(saved))
            .ok()
            .flatten()
            .unwrap_or_default();
        *self.message = collected;
        if !self.complete {
            self.message.roll_back(self.mark);
        }
    }
}

impl Message {
    /// Encodes one part of the message: its bytes, its descriptors added to the message's.
    ///
    /// # Errors
    /// The value's `Serialize` fails, or the message would carry more descriptors than one
    /// message can; the message is then as it was before.
    pub(crate) fn encode<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
    ) -> Result<Vec<u8>, PartError> {
        let mark = self.out.mark();
        let mut part = Part {
            saved: OUTGOING.with(|c| c.replace(Some(std::mem::take(&mut self.out)))),
            message: &mut self.out,
            mark,
            complete: false,
        };
        let encoded = codec::encode(value);
        part.complete = encoded.is_ok();
        drop(part);
        let bytes = encoded.map_err(PartError::Codec)?;
        let n = self.out.fds.len();
        if n > sys::MAX_FDS_PER_MESSAGE {
            self.out.roll_back(mark);
            return Err(PartError::TooManyFds(n));
        }
        Ok(bytes)
    }

    /// A point to [`rewind`](Self::rewind) to: the message as it is now.
    pub(crate) fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.out.mark())
    }

    /// Undoes every part encoded since `checkpoint` (what they took is given back).
    pub(crate) fn rewind(&mut self, checkpoint: Checkpoint) {
        self.out.roll_back(checkpoint.0);
    }

    /// How many descriptors the message carries so far.
    pub(crate) fn fd_count(&self) -> usize {
        self.out.fds.len()
    }

    /// The message is complete: its descriptors and transits. What its handles took now
    /// travels in the transits, given back unless they are handed to a child.
    pub(crate) fn finish(mut self) -> (Vec<OwnedFd>, Transits) {
        let fds = std::mem::take(&mut self.out.fds);
        let transits = std::mem::take(&mut self.out.transits);
        let taken = std::mem::take(&mut self.out.taken);
        (fds, Transits(transits, std::sync::Mutex::new(taken)))
    }
}

/// Encodes `value`, collecting the descriptors of the handles inside it, as if handed to a
/// child (what the handles took is for the receiver to adopt).
#[cfg(test)]
pub(crate) fn encode_with_fds<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>), CodecError> {
    encode_with_handles(value).map(|(bytes, fds, transits)| {
        transits.keep_taken();
        (bytes, fds)
    })
}

/// Encodes `value`, collecting the descriptors and the transits of the handles inside it. On
/// failure (or unwinding) nothing the handles took is kept.
pub(crate) fn encode_with_handles<T: Serialize + ?Sized>(
    value: &T,
) -> Result<(Vec<u8>, Vec<OwnedFd>, Transits), CodecError> {
    let mut message = Message::default();
    let bytes = message.encode(value)?;
    let (fds, transits) = message.finish();
    Ok((bytes, fds, transits))
}

/// Runs `f` (which decodes) with `fds` available to the handles being decoded. Descriptors no
/// handle claimed are closed afterwards.
#[cfg_attr(target_os = "linux", unsafe(link_section = "multiproc_forked"))]
pub(crate) fn with_incoming<T>(fds: Vec<OwnedFd>, f: impl FnOnce() -> T) -> T {
    let guard = Restore::install(&INCOMING, fds.into_iter().map(Some).collect());
    let out = f();
    drop(guard.finish());
    out
}

/// For a handle's `Serialize`: registers a duplicate of `fd` and returns its index. The same
/// descriptor exported again in the same message gets the same index (one duplicate, one
/// descriptor in transit).
///
/// # Errors
/// When no process arguments are being serialized (a handle sent through a pipe or queue, or
/// encoded by hand), or when the descriptor cannot be duplicated.
pub(crate) fn export_fd(fd: BorrowedFd<'_>) -> Result<u32, String> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        let out = o.as_mut().ok_or_else(not_as_argument)?;
        let (dev, ino) =
            sys::file_identity(fd).map_err(|e| format!("cannot inspect the handle: {e}"))?;
        let key = (fd.as_raw_fd(), dev, ino);
        if let Some(&index) = out.exported.get(&key) {
            return Ok(index);
        }
        let dup = sys::dup_cloexec(fd).map_err(|e| format!("cannot duplicate the handle: {e}"))?;
        out.fds.push(dup);
        let index = (out.fds.len() - 1) as u32;
        out.exported.insert(key, index);
        Ok(index)
    })
}

/// For a handle's `Serialize`, after [`export_fd`]: asks to be told which child receives it.
///
/// # Errors
/// When no process arguments are being serialized.
pub(crate) fn export_transit(t: Box<dyn Transit>) -> Result<(), String> {
    OUTGOING.with(|o| {
        let mut o = o.borrow_mut();
        o.as_mut().ok_or_else(not_as_argument)?.transits.push(t);
        Ok(())
    })
}

/// For a handle's `Serialize`, once it took something for its trip (see [`Taken`]): the
/// message gives it back if it is abandoned.
///
/// # Errors
/// When no process arguments are being serialized: `t` comes back, for the caller to give
/// back.
pub(crate) fn export_taken<T: Taken + 'static>(t: Box<T>) -> Result<(), (Box<T>, String)> {
    OUTGOING.with(|o| match o.borrow_mut().as_mut() {
        Some(out) => {
            out.taken.push(t);
            Ok(())
        }
        None => Err((t, not_as_argument())),
    })
}

fn not_as_argument() -> String {
    "a handle can only be passed to a child process as (part of) its arguments".to_string()
}

/// For a handle's `Deserialize`: a descriptor of its own on the one registered at `index` (a
/// duplicate: several handles of a message may name the same one; the received descriptors
/// are closed when decoding ends).
///
/// # Errors
/// When no descriptors were received with the message, `index` names none, or it cannot be
/// duplicated.
pub(crate) fn import_fd(index: u32) -> Result<OwnedFd, String> {
    INCOMING.with(|i| {
        let i = i.borrow();
        let list = i
            .as_ref()
            .ok_or_else(|| "a handle can only be received as a process argument".to_string())?;
        let fd = list
            .get(index as usize)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("handle #{index} did not arrive with the message"))?;
        sys::dup_cloexec(fd.as_fd()).map_err(|e| format!("cannot take handle #{index}: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    /// Exports a descriptor, then panics half-way through its serialization.
    struct PanicsAfterExport;
    impl Serialize for PanicsAfterExport {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            let fd = sys::eventfd().expect("eventfd");
            export_fd(fd.as_fd()).expect("inside encoding");
            panic!("a Serialize that panics");
        }
    }

    #[test]
    fn a_panicking_serialize_disarms_the_outgoing_list() {
        let r = std::panic::catch_unwind(|| encode_with_fds(&PanicsAfterExport));
        assert!(r.is_err());
        let fd = sys::eventfd().expect("eventfd");
        assert!(
            export_fd(fd.as_fd()).is_err(),
            "exporting outside arguments must fail after a panic"
        );
        assert!(export_transit(Box::new(Nobody)).is_err());
    }

    struct Nobody;
    impl Transit for Nobody {
        fn handed_to(&self, _: i32) {}
    }

    #[test]
    fn a_panicking_decode_disarms_the_incoming_list() {
        let fd = sys::eventfd().expect("eventfd");
        let r = std::panic::catch_unwind(|| {
            with_incoming(vec![fd], || -> u32 { panic!("a Deserialize that panics") })
        });
        assert!(r.is_err());
        assert!(
            import_fd(0).is_err(),
            "importing outside decoding must fail"
        );
    }

    /// Exports each descriptor of the list as a handle.
    struct Handles<'a>(Vec<BorrowedFd<'a>>);
    impl Serialize for Handles<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let ids: Result<Vec<u32>, String> = self.0.iter().map(|&fd| export_fd(fd)).collect();
            ids.map_err(serde::ser::Error::custom)?.serialize(s)
        }
    }

    #[test]
    fn one_descriptor_exported_many_times_travels_once() {
        let a = sys::eventfd().expect("eventfd");
        let b = sys::eventfd().expect("eventfd");
        let (r, w) = sys::stream_socketpair().expect("socketpair");
        let mut list = vec![a.as_fd(); 1000];
        list.extend([b.as_fd(), a.as_fd(), r.as_fd(), w.as_fd(), b.as_fd()]);
        let (bytes, fds, _) = encode_with_handles(&Handles(list)).expect("encode");
        assert_eq!(fds.len(), 4, "a, b and the two ends");
        let ids: Vec<u32> = codec::decode(&bytes).expect("decode");
        assert!(ids[..1000].iter().all(|&i| i == 0));
        assert_eq!(ids[1000..], [1, 0, 2, 3, 1]);
        // Each import of a shared entry gets a descriptor of its own, on the same file.
        let got = with_incoming(fds, || {
            ids.iter()
                .map(|&i| import_fd(i).expect("import"))
                .collect::<Vec<_>>()
        });
        assert_eq!(got.len(), 1005);
        let id = |fd: &OwnedFd| sys::file_identity(fd.as_fd()).unwrap();
        assert!(got[..1000].iter().all(|fd| id(fd) == id(&a)));
        assert_eq!(id(&got[1000]), id(&b));
        assert_ne!(got[0].as_raw_fd(), got[1].as_raw_fd());
    }

    #[test]
    fn nested_encodings_keep_their_own_lists() {
        struct Outer;
        impl Serialize for Outer {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let fd = sys::eventfd().expect("eventfd");
                let a = export_fd(fd.as_fd()).expect("outer export");
                let (_, inner, _) = encode_with_handles(&Inner).expect("inner encode");
                assert_eq!(inner.len(), 1);
                let b = export_fd(fd.as_fd()).expect("outer export after the inner one");
                // The same descriptor again: the same entry.
                assert_eq!(a, b);
                (a, b).serialize(s)
            }
        }
        struct Inner;
        impl Serialize for Inner {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let fd = sys::eventfd().expect("eventfd");
                export_fd(fd.as_fd())
                    .map_err(serde::ser::Error::custom)?
                    .serialize(s)
            }
        }
        // The inner message's descriptor stayed in the inner list.
        let (_, fds, transits) = encode_with_handles(&Outer).unwrap();
        assert_eq!((fds.len(), transits.len()), (1, 0));
    }

    /// A value whose `Serialize` fails (or panics) after the handles before it were encoded.
    struct Breaks {
        panic: bool,
    }
    impl Serialize for Breaks {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            if self.panic {
                panic!("a Serialize that panics after a handle");
            }
            Err(serde::ser::Error::custom(
                "a Serialize that fails after a handle",
            ))
        }
    }

    #[cfg(not(loom))] // `Lock::slot_refs` is not built under loom
    #[test]
    fn a_failed_encode_gives_back_the_arena_counts_it_took() {
        let lock = crate::Lock::new().expect("lock");
        assert_eq!(lock.slot_refs(), Some(1), "an arena lock");
        // Failing: the lock (twice) was counted for its trip before the failure.
        let value = (lock.clone(), lock.clone(), Breaks { panic: false });
        assert!(encode_with_handles(&value).is_err());
        assert_eq!(lock.slot_refs(), Some(1), "a failed encode gives back");
        // Panicking.
        let value = (lock.clone(), Breaks { panic: true });
        assert!(std::panic::catch_unwind(|| encode_with_handles(&value)).is_err());
        assert_eq!(lock.slot_refs(), Some(1), "an unwinding encode gives back");
        // A complete message handed over keeps its count: the receiver adopts it.
        let (bytes, fds) = encode_with_fds(&lock).expect("encode");
        assert_eq!(lock.slot_refs(), Some(2));
        let back: crate::Lock = with_incoming(fds, || codec::decode(&bytes)).expect("decode");
        drop(back);
        assert_eq!(
            lock.slot_refs(),
            Some(1),
            "the receiver gave its count back"
        );
    }

    #[cfg(not(loom))] // `Lock::slot_refs` is not built under loom
    #[test]
    fn a_failed_part_leaves_the_message_as_it_was() {
        let lock = crate::Lock::new().expect("lock");
        let other = sys::eventfd().expect("eventfd");
        let mut message = Message::default();
        message.encode(&lock).expect("first part");
        assert_eq!((message.fd_count(), lock.slot_refs()), (1, Some(2)));
        // A part that adds a descriptor and takes a count, then fails.
        let part = (
            Handles(vec![other.as_fd()]),
            lock.clone(),
            Breaks { panic: false },
        );
        assert!(matches!(message.encode(&part), Err(PartError::Codec(_))));
        assert_eq!((message.fd_count(), lock.slot_refs()), (1, Some(2)));
        let part = (
            Handles(vec![other.as_fd()]),
            lock.clone(),
            Breaks { panic: true },
        );
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| message.encode(&part)));
        assert!(r.is_err());
        assert_eq!((message.fd_count(), lock.slot_refs()), (1, Some(2)));
        // The message still works: the next part reuses the first part's descriptor.
        let bytes = message
            .encode(&(lock.clone(), Handles(vec![other.as_fd()])))
            .expect("part");
        assert_eq!((message.fd_count(), lock.slot_refs()), (2, Some(3)));
        assert_eq!(bytes[0], 0, "the lock's descriptor is the first part's");
        // Dropped unsent: every count comes back.
        drop(message);
        assert_eq!(lock.slot_refs(), Some(1));
    }

    #[cfg(not(loom))] // `Lock::slot_refs` is not built under loom
    #[test]
    fn a_part_past_the_descriptor_limit_is_refused_and_undone() {
        let lock = crate::Lock::new().expect("lock");
        let many: Vec<OwnedFd> = (0..sys::MAX_FDS_PER_MESSAGE)
            .map(|_| sys::eventfd().expect("eventfd"))
            .collect();
        let mut message = Message::default();
        message
            .encode(&Handles(
                many[..sys::MAX_FDS_PER_MESSAGE - 1]
                    .iter()
                    .map(|f| f.as_fd())
                    .collect(),
            ))
            .expect("252 descriptors");
        // One more descriptor, the lock's: 253 fit.
        message.encode(&lock).expect("253 descriptors");
        // Another new one does not; the lock again does (its descriptor is there).
        let part = (
            lock.clone(),
            Handles(vec![many[sys::MAX_FDS_PER_MESSAGE - 1].as_fd()]),
        );
        match message.encode(&part) {
            Err(PartError::TooManyFds(n)) => assert_eq!(n, sys::MAX_FDS_PER_MESSAGE + 1),
            other => panic!("{other:?}"),
        }
        assert_eq!((message.fd_count(), lock.slot_refs()), (253, Some(2)));
        message.encode(&lock).expect("the same lock again");
        let (fds, transits) = message.finish();
        assert_eq!((fds.len(), lock.slot_refs()), (253, Some(3)));
        drop(transits);
        assert_eq!(lock.slot_refs(), Some(1), "never handed over: given back");
    }

    fn keep_lock(_: crate::Lock) {}

    #[cfg(not(loom))] // `Lock::slot_refs` is not built under loom
    #[test]
    fn a_complete_message_never_handed_over_gives_its_counts_back() {
        let lock = crate::Lock::new().expect("lock");
        let (bytes, fds, transits) =
            encode_with_handles(&(lock.clone(), lock.clone())).expect("encode");
        assert_eq!(lock.slot_refs(), Some(3));
        drop(transits);
        assert_eq!(lock.slot_refs(), Some(1), "given back");
        // Nothing is left for a receiver to adopt.
        let r = with_incoming(fds, || codec::decode::<(crate::Lock, crate::Lock)>(&bytes));
        assert!(r.is_err());
        assert_eq!(lock.slot_refs(), Some(1));
        // Handed over, the counts stay for the receiver.
        let (bytes, fds, transits) = encode_with_handles(&lock).expect("encode");
        transits.handed_to(0);
        drop(transits);
        assert_eq!(lock.slot_refs(), Some(2));
        let back: crate::Lock = with_incoming(fds, || codec::decode(&bytes)).expect("decode");
        drop(back);
        assert_eq!(lock.slot_refs(), Some(1));
        // A `Process` dropped before `start()`.
        let p = crate::Process::new(keep_lock, lock.clone());
        assert_eq!(lock.slot_refs(), Some(2));
        drop(p);
        assert_eq!(lock.slot_refs(), Some(1), "an unstarted process gives back");
    }
}
