//! Task arguments as the engine sends them: items encoded back to back, where each ends, and
//! the descriptors of the handles inside them.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::Serialize;

use super::result::Sink;
use super::task::NewTask;
use super::wire::Bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::handles::{Message, PartError, Transits};
use crate::process::Target;

/// Items encoded back to back, where each ends, and the descriptors of their handles.
#[derive(Default)]
pub(crate) struct Encoded {
    pub(crate) data: Bytes,
    pub(crate) ends: Vec<u32>,
    /// The task's descriptors: one list for all its items, each descriptor once however many
    /// items hold a handle on it.
    pub(crate) fds: Vec<OwnedFd>,
    /// How many descriptors each item added to `fds` (empty when the task has none).
    pub(crate) fd_counts: Vec<u32>,
    pub(crate) transits: Transits,
}

/// Encodes items into one buffer, back to back, recording where each ends; handles inside
/// them (queues, locks, shared memory, connections) travel as descriptors.
pub(crate) fn encode_items<'a, A: Serialize + 'a>(
    items: impl IntoIterator<Item = &'a A>,
) -> Result<Encoded> {
    let mut batch = Batch::default();
    for item in items {
        batch.push(item)?;
    }
    Ok(batch.finish())
}

/// A task's arguments being gathered, one item at a time. The task is one message: its items'
/// handles share one list of descriptors (see [`Message`]), so a thousand items that carry the
/// same lock or queue send its descriptor once.
#[derive(Default)]
pub(crate) struct Batch {
    data: Vec<u8>,
    ends: Vec<u32>,
    message: Message,
    fd_counts: Vec<u32>,
}

impl Batch {
    /// How many items it holds.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Appends one item. On error (or a panic in the item's `Serialize`) the batch is left as
    /// it was, and what the item's handles took is given back.
    pub(crate) fn push<A: Serialize + ?Sized>(&mut self, item: &A) -> Result<()> {
        let start = self.data.len();
        // Most items hold no handle: encode them straight into the buffer. A handle refuses
        // to serialize outside a process argument's encoding, so an item that holds one (or
        // fails for any other reason) is encoded again below, where handles travel; the
        // failure's message is not wanted, so it is not recovered.
        // An unwinding `Serialize` must not leave its first bytes in the buffer either: they
        // would become the start of the next item.
        let guard = TruncateOnUnwind(&mut self.data, start);
        let plain = crate::codec::try_encode_into(item, &mut *guard.0);
        std::mem::forget(guard);
        if plain {
            return self.end_item(start, 0);
        }
        let before = self.message.checkpoint();
        let had = self.message.fd_count();
        let bytes = self.message.encode(item).map_err(|e| match e {
            PartError::Codec(e) => Error::codec("the task's argument could not be serialized", e),
            PartError::TooManyFds(n) => Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{n} different handles in one task; at most {} can be passed (use a \
                     smaller chunksize)",
                    crate::sys::MAX_FDS_PER_MESSAGE
                ),
            ),
        })?;
        self.data.extend_from_slice(&bytes);
        let added = self.message.fd_count() - had;
        self.end_item(start, added as u32)
            .inspect_err(|_| self.message.rewind(before))
    }

    fn end_item(&mut self, start: usize, fds_added: u32) -> Result<()> {
        let Ok(end) = u32::try_from(self.data.len()) else {
            self.data.truncate(start);
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a task's arguments exceed 4 GiB: use a smaller chunksize",
            ));
        };
        self.ends.push(end);
        self.fd_counts.push(fds_added);
        Ok(())
    }

    /// The encoded items (no per-item descriptor counts when no item has a handle).
    pub(crate) fn finish(mut self) -> Encoded {
        let (fds, transits) = self.message.finish();
        if fds.is_empty() {
            self.fd_counts.clear();
        }
        Encoded {
            data: Bytes(self.data.into()),
            ends: self.ends,
            fds,
            fd_counts: self.fd_counts,
            transits,
        }
    }
}

/// Cuts a buffer back to a length when dropped: forgotten once the write it guards returned.
struct TruncateOnUnwind<'a>(&'a mut Vec<u8>, usize);

impl Drop for TruncateOnUnwind<'_> {
    fn drop(&mut self) {
        self.0.truncate(self.1);
    }
}

impl Encoded {
    /// The task that runs `target` on these items; item 0 is item `first` of its job.
    pub(crate) fn into_task(self, target: Target, sink: Arc<dyn Sink>, first: usize) -> NewTask {
        NewTask {
            target,
            data: self.data,
            ends: self.ends,
            fds: self.fds,
            fd_counts: self.fd_counts,
            transits: self.transits,
            sink,
            first,
            direct: false,
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Batch;

    /// `Batch::push` encodes without the handle machinery first: that is sound only while
    /// every handle refuses to serialize outside it, before any side effect.
    #[test]
    fn handles_refuse_a_plain_encoding() {
        let q = crate::Queue::<u8>::new().expect("queue");
        let lock = crate::Lock::new().expect("lock");
        let v = crate::Value::new(1u32).expect("value");
        assert!(crate::codec::encode(&q).is_err());
        assert!(crate::codec::encode(&lock).is_err());
        assert!(crate::codec::encode(&v).is_err());
        let mut batch = Batch::default();
        batch.push(&(7u8, q.clone())).expect("with handles");
        batch.push(&9u8).expect("plain");
        let e = batch.finish();
        assert_eq!(e.ends.len(), 2);
        assert_eq!(e.fd_counts, [1, 0]);
        assert_eq!(e.fds.len(), 1);
        assert!(!e.transits.is_empty());
    }

    /// Holds a lock, and counts how often it is serialized.
    struct Counted<'a>(&'a std::cell::Cell<u32>, &'a crate::Lock);
    impl serde::Serialize for Counted<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            self.0.set(self.0.get() + 1);
            self.1.serialize(s)
        }
    }

    /// The plain attempt's failure is expected and its message unused: it must not pay for a
    /// third pass (the one that recovers a failure's message), nor show a user's `Serialize`
    /// a third time.
    #[test]
    fn an_item_with_a_handle_is_serialized_twice_not_three_times() {
        let lock = crate::Lock::new().expect("lock");
        let n = std::cell::Cell::new(0);
        let mut batch = Batch::default();
        batch.push(&Counted(&n, &lock)).expect("with handles");
        assert_eq!(n.get(), 2, "a plain attempt, then one with handles");
        let e = batch.finish();
        assert_eq!((e.ends.len(), e.fds.len()), (1, 1));
    }

    /// A thousand items that carry the same lock and queue make one task: the two descriptors
    /// travel once, not once per item (which would pass the 253 of one message).
    #[test]
    fn items_that_share_handles_send_their_descriptors_once_per_task() {
        let lock = crate::Lock::new().expect("lock");
        let q = crate::Queue::<u8>::new().expect("queue");
        let items: Vec<_> = (0..1000u32).map(|i| (lock.clone(), q.clone(), i)).collect();
        let e = super::encode_items(&items).expect("one task");
        assert_eq!(e.fds.len(), 2);
        assert_eq!(e.fd_counts.len(), 1000);
        assert_eq!(e.fd_counts[..2], [2, 0]);
        assert!(e.fd_counts[1..].iter().all(|&c| c == 0));
        assert_eq!(
            lock.slot_refs(),
            Some(1001),
            "one count per item on its way"
        );
    }

    /// Fails after the handles before it were encoded.
    struct Fails;
    impl serde::Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }

    /// An item that fails part-way leaves the batch as it was and gives back what its lock
    /// took; the items before it still go.
    #[test]
    fn a_failing_item_gives_back_its_handles() {
        let lock = crate::Lock::new().expect("lock");
        let mut batch = Batch::default();
        batch.push(&(lock.clone(), 1u8)).expect("first");
        assert!(batch.push(&(lock.clone(), Fails)).is_err());
        assert_eq!(lock.slot_refs(), Some(2), "only the first item's count");
        batch.push(&2u8).expect("plain");
        let e = batch.finish();
        assert_eq!((e.ends.len(), e.fds.len()), (2, 1));
        assert_eq!(e.fd_counts, [1, 0]);
        // A batch dropped unsent keeps its counts, as any sent message would: its items are
        // complete and the engine owns them from here.
        drop(e);
    }

    /// Writes a byte, then panics: a `Serialize` that unwinds half-way through an item.
    struct PanicsAfterAByte;
    impl serde::Serialize for PanicsAfterAByte {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeTuple;
            let mut t = s.serialize_tuple(2)?;
            t.serialize_element(&7u8)?;
            panic!("a Serialize that unwinds after writing");
        }
    }

    /// Hostile: an item that unwinds after it wrote part of itself, with no handle (the
    /// plain path) or after a handle; the batch is used on afterwards (as `push` promises):
    /// the next item's bytes are its own, and the counts and descriptors stay consistent.
    #[test]
    fn an_item_that_unwinds_leaves_the_batch_as_it_was() {
        let lock = crate::Lock::new().expect("lock");
        let mut batch = Batch::default();
        batch.push(&(lock.clone(), 1u8)).expect("first");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batch.push(&PanicsAfterAByte)
        }));
        assert!(r.is_err());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            batch.push(&(lock.clone(), PanicsAfterAByte))
        }));
        assert!(r.is_err());
        assert_eq!(lock.slot_refs(), Some(2), "the unwound items gave back");
        batch.push(&9u8).expect("plain");
        let e = batch.finish();
        assert_eq!(e.ends.len(), 2);
        assert_eq!(e.fd_counts, [1, 0]);
        let second = &e.data.0[e.ends[0] as usize..e.ends[1] as usize];
        assert_eq!(second, [9], "the second item's bytes are its own");
    }

    /// Exports each of its descriptors as a handle.
    struct Fds<'a>(Vec<std::os::fd::BorrowedFd<'a>>);
    impl serde::Serialize for Fds<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let ids: Result<Vec<u32>, String> = self
                .0
                .iter()
                .map(|&fd| crate::handles::export_fd(fd))
                .collect();
            ids.map_err(serde::ser::Error::custom)?.serialize(s)
        }
    }

    /// Hostile: the first item fills the task to exactly 253 descriptors, the second would
    /// add one more. The second alone is refused (and gives back its lock's count); an item
    /// that only reuses the task's descriptors still fits; the counts add up to the list.
    #[test]
    fn the_item_past_the_descriptor_limit_is_refused_alone() {
        use std::os::fd::AsFd;
        let max = crate::sys::MAX_FDS_PER_MESSAGE;
        let lock = crate::Lock::new().expect("lock");
        let many: Vec<_> = (0..max)
            .map(|_| crate::sys::eventfd().expect("eventfd"))
            .collect();
        let mut batch = Batch::default();
        let first = Fds(many[..max - 1].iter().map(|f| f.as_fd()).collect());
        batch.push(&(first, lock.clone())).expect("253 descriptors");
        let over = (lock.clone(), Fds(vec![many[max - 1].as_fd()]));
        let e = batch.push(&over).expect_err("254 descriptors");
        assert_eq!(e.kind(), crate::ErrorKind::InvalidArgument, "{e}");
        assert_eq!(lock.slot_refs(), Some(2));
        batch
            .push(&(lock.clone(), Fds(vec![many[0].as_fd()])))
            .expect("only descriptors already in the task");
        let e = batch.finish();
        assert_eq!(e.fds.len(), max);
        assert_eq!(e.fd_counts, [max as u32, 0]);
        assert_eq!(lock.slot_refs(), Some(3));
    }
}
