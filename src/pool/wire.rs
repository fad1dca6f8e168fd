//! What the parent and its pool workers say to each other, through shared-memory queues.
//!
//! ```text
//! parent                           worker (one task queue each)       all workers and the parent
//!   TaskMsg::Run{id, items} ──────▶  runs each item in turn ──────▶  Msg::Done{id, results}
//!   TaskMsg::Exit ────────────────▶  returns (exit status 0)          Msg::Ready / InitFailed
//!                                    watcher thread (parent) ─────▶  Msg::Died{worker}
//! ```
//! The results queue is shared: every worker, the parent's watcher thread (which sees worker
//! deaths on their pidfds) and the parent itself (to wake its collector) put into it, and only
//! the collector thread gets from it. A worker's result always precedes the `Died` that the
//! watcher posts after that worker's death, so results that made it out are never lost.
//! The result of a task marked `direct` (an `apply`) goes on the direct queue instead, which the
//! waiting caller reads, and which the collector empties before it handles a death (see
//! `engine/direct.rs`).

use std::sync::Arc;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::ser::Serializer;
use serde::{Deserialize, Serialize};

use crate::process::{Outcome, Target};

/// A byte string that serializes as one postcard byte string (a length and a `memcpy`), not as
/// a sequence of numbers. Shared so that a task kept for re-dispatch is not copied.
#[derive(Clone, Debug, Default)]
pub(crate) struct Bytes(pub(crate) Arc<[u8]>);

impl std::ops::Deref for Bytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(Arc::from(v)))
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(Arc::from(v)))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut v = Vec::new();
                while let Some(b) = seq.next_element::<u8>()? {
                    v.push(b);
                }
                Ok(Bytes(Arc::from(v)))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// A list of `u32` that serializes as one byte string of little-endian words (a length and a
/// `memcpy`), not as a sequence of varints: a map chunk's item boundaries and result sizes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct U32s(pub(crate) Vec<u32>);

impl std::ops::Deref for U32s {
    type Target = [u32];
    fn deref(&self) -> &[u32] {
        &self.0
    }
}

/// Lists of at most this many words serialize from a buffer on the stack: an `apply`'s one
/// item boundary and one result size, on the collector's path for every task.
const U32S_ON_STACK: usize = 16;

impl Serialize for U32s {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.len() <= U32S_ON_STACK {
            let mut buf = [0u8; 4 * U32S_ON_STACK];
            for (out, w) in buf.chunks_exact_mut(4).zip(&self.0) {
                out.copy_from_slice(&w.to_le_bytes());
            }
            return s.serialize_bytes(&buf[..4 * self.0.len()]);
        }
        let mut bytes = Vec::with_capacity(4 * self.0.len());
        for w in &self.0 {
            bytes.extend_from_slice(&w.to_le_bytes());
        }
        s.serialize_bytes(&bytes)
    }
}

impl<'de> Deserialize<'de> for U32s {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<U32s, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = U32s;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string of little-endian u32 words")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<U32s, E> {
                if !v.len().is_multiple_of(4) {
                    return Err(E::invalid_length(v.len(), &self));
                }
                Ok(U32s(
                    v.chunks_exact(4)
                        .map(|w| u32::from_le_bytes([w[0], w[1], w[2], w[3]]))
                        .collect(),
                ))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// Encodes a value on demand (the initializer's argument).
pub(crate) type Encoder = Arc<dyn Fn() -> Result<Vec<u8>, crate::codec::CodecError> + Send + Sync>;

/// The initializer's argument. The parent holds the value and encodes it while the worker's
/// start arguments are being serialized, so that handles inside it travel with them; the
/// worker receives the bytes and decodes them while those descriptors are still at hand.
#[derive(Clone)]
pub(crate) enum InitArg {
    Value(Encoder),
    Bytes(Bytes),
}

impl std::fmt::Debug for InitArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InitArg")
    }
}

impl Serialize for InitArg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            InitArg::Value(encode) => {
                let bytes = encode().map_err(serde::ser::Error::custom)?;
                s.serialize_bytes(&bytes)
            }
            InitArg::Bytes(b) => b.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for InitArg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<InitArg, D::Error> {
        Bytes::deserialize(d).map(InitArg::Bytes)
    }
}

/// One task for one worker: a function and the encoded arguments of one or more items (a map
/// chunk), back to back; `ends[i]` is where item `i` ends in `data`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum TaskMsg {
    Run {
        id: u64,
        target: Target,
        data: Bytes,
        ends: U32s,
        /// How many descriptors each item added to the task's one list (empty: none); an item's
        /// handles may name any descriptor of the list, a descriptor shared by many items comes
        /// once. They come on the worker's descriptor socket, in one message that starts with
        /// the task's id.
        fds: U32s,
        /// The caller waits for this task itself ([`Pool::apply`](crate::Pool::apply)): its
        /// `Done` goes on the pool's direct queue, which that caller reads, instead of the
        /// collector's.
        direct: bool,
    },
    /// Finish: the worker returns and its process exits with status 0.
    Exit,
}

/// Everything the collector thread receives.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Msg {
    /// The worker ran its initializer (if any) and waits for tasks.
    Ready { worker: u64 },
    /// The initializer failed; the worker exits.
    InitFailed { worker: u64, outcome: Outcome },
    /// A task finished. The items listed in `failed` (by index, in order) did not return; the
    /// results of all the others lie back to back in `data`, `lens` giving their sizes in
    /// order.
    Done {
        worker: u64,
        id: u64,
        failed: Vec<(u32, Outcome)>,
        data: Bytes,
        lens: U32s,
        /// The worker's resident set size after the task, when the pool recycles by memory.
        rss: Option<u64>,
        /// How long the task ran in the worker, in nanoseconds.
        busy_ns: u64,
    },
    /// The worker stops on a fault of its own (it exits next).
    Stopped { worker: u64, why: String },
    /// The worker's process has ended (posted by the parent's watcher thread).
    Died { worker: u64 },
    /// A large task has been streamed into this worker's queue (posted by the parent).
    Streamed { worker: u64 },
    /// Nothing: the parent wakes its collector to look at its state.
    Wake,
}

/// A socket end that travels to a worker as a handle (for the descriptors of the handles in
/// task arguments).
#[derive(Debug)]
pub(crate) struct FdSocket(pub(crate) std::os::fd::OwnedFd);

impl Serialize for FdSocket {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use std::os::fd::AsFd;
        let index = crate::handles::export_fd(self.0.as_fd()).map_err(serde::ser::Error::custom)?;
        s.serialize_u32(index)
    }
}

impl<'de> Deserialize<'de> for FdSocket {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<FdSocket, D::Error> {
        let index = u32::deserialize(d)?;
        crate::handles::import_fd(index)
            .map(FdSocket)
            .map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::U32s;

    #[test]
    fn u32s_round_trip_and_refuse_a_ragged_length() {
        let words = U32s(vec![0, 1, 0xdead_beef, u32::MAX]);
        let bytes = crate::codec::encode(&words).expect("encode");
        assert_eq!(bytes.len(), 1 + 16);
        assert_eq!(crate::codec::decode::<U32s>(&bytes).expect("decode"), words);
        // Longer than the stack buffer: the same encoding.
        let long = U32s(
            (0..=super::U32S_ON_STACK as u32)
                .map(|i| i * 0x0101_0101)
                .collect(),
        );
        let bytes = crate::codec::encode(&long).expect("encode");
        assert_eq!(bytes.len(), 1 + 4 * long.len());
        assert_eq!(crate::codec::decode::<U32s>(&bytes).expect("decode"), long);
        // At the stack buffer's edges (none, exactly full, one over): the bytes a `Vec` of
        // the words would serialize to, and back.
        for n in [0, 1, super::U32S_ON_STACK, super::U32S_ON_STACK + 1] {
            let words = U32s((0..n as u32).map(|i| i.wrapping_mul(0x9E37_79B9)).collect());
            let bytes = crate::codec::encode(&words).expect("encode");
            let plain: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
            let expected = crate::codec::encode(&serde_bytes::Bytes::new(&plain)).expect("encode");
            assert_eq!(bytes, expected, "{n} words");
            assert_eq!(crate::codec::decode::<U32s>(&bytes).expect("decode"), words);
        }
        let ragged = crate::codec::encode(&serde_bytes::Bytes::new(&[1, 2, 3])).expect("encode");
        assert!(crate::codec::decode::<U32s>(&ragged).is_err());
    }
}
