//! Task arguments as the engine sends them: items encoded back to back, where each ends, and
//! the descriptors of the handles inside them.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::Serialize;

use super::result::Sink;
use super::task::NewTask;
use super::wire::Bytes;
use crate::error::{Error, ErrorKind, Result};
use crate::handles::Transits;
use crate::process::Target;

/// The most descriptors one message can carry (SCM_MAX_FD).
const MAX_TASK_FDS: usize = 253;

/// Items encoded back to back, where each ends, and the descriptors of their handles.
#[derive(Default)]
pub(crate) struct Encoded {
    pub(crate) data: Bytes,
    pub(crate) ends: Vec<u32>,
    pub(crate) fds: Vec<OwnedFd>,
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

/// A task's arguments being gathered, one item at a time.
#[derive(Default)]
pub(crate) struct Batch {
    data: Vec<u8>,
    ends: Vec<u32>,
    fds: Vec<OwnedFd>,
    fd_counts: Vec<u32>,
    transits: Transits,
}

impl Batch {
    /// How many items it holds.
    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    /// Appends one item. On error the batch is left as it was.
    pub(crate) fn push<A: Serialize + ?Sized>(&mut self, item: &A) -> Result<()> {
        let start = self.data.len();
        // Most items hold no handle: encode them straight into the buffer. A handle refuses
        // to serialize outside a process argument's encoding, so an item that holds one (or
        // fails for any other reason) is encoded again below, where handles travel; the
        // failure's message is not wanted, so it is not recovered.
        if crate::codec::try_encode_into(item, &mut self.data) {
            return self.end_item(start, Vec::new(), Transits::default());
        }
        let (bytes, fds, transits) = crate::handles::encode_with_handles(item)
            .map_err(|e| Error::codec("the task's argument could not be serialized", e))?;
        if self.fds.len() + fds.len() > MAX_TASK_FDS {
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                format!(
                    "{} handles in one task; at most {MAX_TASK_FDS} can be passed (use a smaller chunksize)",
                    self.fds.len() + fds.len()
                ),
            ));
        }
        self.data.extend_from_slice(&bytes);
        self.end_item(start, fds, transits)
    }

    fn end_item(&mut self, start: usize, fds: Vec<OwnedFd>, transits: Transits) -> Result<()> {
        let Ok(end) = u32::try_from(self.data.len()) else {
            self.data.truncate(start);
            return Err(Error::new(
                ErrorKind::InvalidArgument,
                "a task's arguments exceed 4 GiB: use a smaller chunksize",
            ));
        };
        self.ends.push(end);
        self.fd_counts.push(fds.len() as u32);
        self.fds.extend(fds);
        self.transits.extend(transits);
        Ok(())
    }

    /// The encoded items (no per-item descriptor counts when no item has a handle).
    pub(crate) fn finish(mut self) -> Encoded {
        if self.fds.is_empty() {
            self.fd_counts.clear();
        }
        Encoded {
            data: Bytes(self.data.into()),
            ends: self.ends,
            fds: self.fds,
            fd_counts: self.fd_counts,
            transits: self.transits,
        }
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
}
