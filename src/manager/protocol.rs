//! The requests a manager understands and its replies: a closed set of typed messages.
//!
//! Values of the built-in objects travel as their own encoding (`Bytes`): the server stores and
//! compares them as bytes and never decodes a user's type. A custom object's requests are
//! decoded by the server as that registered type's `Request`, and nothing else.

use serde::{Deserialize, Serialize};

/// One encoded value.
pub(crate) type Bytes = Vec<u8>;

/// A client's request.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Request {
    /// Creates an object; the reply is `Created(id)`.
    Create(Kind),
    Dict(u64, DictOp),
    List(u64, ListOp),
    Namespace(u64, NsOp),
    Lock(u64, LockOp),
    Event(u64, EventOp),
    Queue(u64, QueueOp),
    /// An encoded `Request` of the custom object `id`'s registered type.
    Custom(u64, Bytes),
    /// Gives up an exclusive hold (of `update_with`) without changing anything.
    Unhold(u64),
    /// Asks for a shared-memory slot for the requests that follow (`manager/slot.rs`); the
    /// reply is `Slot`, or a refusal where there is none (TCP, or slots turned off).
    Slot,
}

/// What to create.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Kind {
    Dict,
    List,
    Namespace(Bytes),
    Lock,
    Event,
    /// A queue with an optional bound on its length.
    Queue(Option<u64>),
    /// A registered type by name, with its encoded initial value.
    Custom(String, Bytes),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum DictOp {
    Get(Bytes),
    Insert(Bytes, Bytes),
    Remove(Bytes),
    Contains(Bytes),
    Len,
    Keys,
    Values,
    Items,
    Update(Vec<(Bytes, Bytes)>),
    Clear,
    /// Holds the dict for this connection (waiting for another holder) and returns the entry.
    Hold(Bytes),
    /// Sets (or removes, with `None`) the entry and ends the hold.
    Commit(Bytes, Option<Bytes>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ListOp {
    Push(Bytes),
    Pop,
    Get(u64),
    Set(u64, Bytes),
    Len,
    Extend(Vec<Bytes>),
    Insert(u64, Bytes),
    Remove(u64),
    Snapshot,
    Clear,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum NsOp {
    Get,
    Set(Bytes),
    Hold,
    Commit(Bytes),
}

/// Timeouts are in microseconds; `None` waits for as long as it takes.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum LockOp {
    Acquire(Option<u64>),
    Release,
    IsLocked,
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum EventOp {
    Set,
    Clear,
    IsSet,
    Wait(Option<u64>),
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum QueueOp {
    Put(Bytes, Option<u64>),
    Get(Option<u64>),
    Len,
}

/// The server's answer.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum Reply {
    Done,
    Created(u64),
    Bool(bool),
    Len(u64),
    Value(Option<Bytes>),
    Values(Vec<Bytes>),
    Pairs(Vec<(Bytes, Bytes)>),
    /// A custom object's encoded `Reply`.
    Custom(Bytes),
    /// A blocking request's timeout passed first.
    Timeout,
    /// The request was refused (it did not decode, names no object of that kind, ...).
    Refused(Refusal, String),
    /// The slot's segment, as an encoded handle whose descriptor came with the frame.
    Slot(Bytes),
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Refusal {
    /// The request did not decode as a request (or as the object's `Request`).
    Undecodable,
    /// No object of that id and kind, or no registered type of that name.
    NotFound,
    /// An index out of range, or a similar bad argument.
    InvalidArgument,
    /// Releasing a lock this connection does not hold.
    NotOwner,
}
