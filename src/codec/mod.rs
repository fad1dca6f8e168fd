//! How values cross a process boundary: serde with postcard, in length-prefixed frames.
//!
//! A *value* is encoded with [postcard], a compact, non-self-describing format: the sender and the
//! receiver must agree on the type, which the typed APIs of this crate guarantee. Values are read
//! back by this module's own reader of postcard's format, which bounds what a payload may build
//! (below). A *frame* is a 4-byte little-endian length followed by that many payload bytes.
//!
//! Decoding is strict and never panics:
//! - a frame longer than the configured limit is refused from its header alone, before anything
//!   is allocated ([`CodecError::Oversized`]);
//! - a payload that ends early is [`CodecError::Truncated`];
//! - bytes that do not form a value of the expected type are [`CodecError::Invalid`];
//! - a value that does not consume its whole payload is [`CodecError::TrailingBytes`], because a
//!   shorter value hiding in a longer frame almost always means that the two sides disagree on
//!   the type.
//!
//! Memory used while decoding is bounded by the payload. Strings and byte arrays are checked
//! against the bytes actually present. Sequences and maps are charged against a budget of
//! [`DECODE_AMPLIFICATION`] bytes per payload byte plus [`DECODE_SLACK`]: a collection of `n`
//! elements of type `T` counts `n × max(size_of::<T>(), 1)` bytes, charged in full before its
//! first element is decoded, so a hostile length (a `Vec<()>` of 2^62 elements in nine bytes, a
//! `Vec<Option<[[u64; 32]; 32]>>` of `None`s at 8 KiB per byte) is [`CodecError::OverBudget`] at
//! once. Every option and enum is charged its own size too, wherever it is decoded: its
//! encoding can be one byte for a large type, and a `Box` around it allocates all of it (a
//! `Vec<Box<Option<[[u64; 32]; 32]>>>` of `None`s is refused like the unboxed one). Nesting
//! deeper than [`MAX_DEPTH`] is [`CodecError::TooDeep`], so a recursive type cannot overflow the
//! stack.
//!
//! What that bounds, exactly: the elements of all sequences and maps a payload of `N` bytes
//! decodes, plus every option and enum it holds, add up to at most
//! `DECODE_AMPLIFICATION × N + DECODE_SLACK` bytes, and strings and
//! byte arrays to at most `N` bytes. A collection may reserve up to about twice what it holds
//! (serde's `Vec` grows by doubling, a `HashMap` keeps spare buckets). Values outside collections
//! (struct fields, boxes of anything but an option or an enum) have sizes fixed by their types
//! and by the bytes that encode them.
//!
//! # Examples
//!
//! ```
//! use multiproc::codec::{self, CodecError};
//!
//! let bytes = codec::encode(&("job", 42u32)).unwrap();
//! let value: (String, u32) = codec::decode(&bytes).unwrap();
//! assert_eq!(value, ("job".to_string(), 42));
//!
//! // One byte short: a typed error, not a panic.
//! let err = codec::decode::<(String, u32)>(&bytes[..bytes.len() - 1]).unwrap_err();
//! assert!(matches!(err, CodecError::Truncated));
//! ```

use std::fmt;

use serde::Serialize;
use serde::de::DeserializeOwned;

mod de;
pub(crate) mod frame;
mod keep;

pub use frame::{FrameDecoder, HEADER_LEN, encode_frame_header};

/// The largest frame accepted unless configured otherwise: 1 GiB.
///
/// Every channel in this crate takes its own limit; this is where they start.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// The largest frame that the 4-byte header can describe.
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

/// Bytes of sequence and map elements that one payload byte may decode to.
///
/// A payload of `N` bytes may build `DECODE_AMPLIFICATION × N + DECODE_SLACK` bytes of
/// elements (each element counted at its in-memory size, at least one byte); beyond that,
/// decoding fails with [`CodecError::OverBudget`]. Ordinary data stays far below: a `Vec<u64>`
/// of small numbers builds 8 bytes per byte, a `Vec<String>` of empty strings 24.
///
/// # Examples
///
/// ```
/// use multiproc::codec::{self, CodecError, DECODE_AMPLIFICATION, DECODE_SLACK};
///
/// // A Vec<[u64; 32]> needs at least 32 payload bytes per element: always fine.
/// let bytes = codec::encode(&vec![[7u64; 32]; 1000]).unwrap();
/// assert!(codec::decode::<Vec<[u64; 32]>>(&bytes).is_ok());
///
/// // A Vec<Option<[[u64; 32]; 32]>> of Nones is 1 byte per 8 KiB element: refused. (Its encoding
/// // is that of any vector of Nones: a length, then one zero byte per element.)
/// let bytes = codec::encode(&vec![None::<u8>; 200_000]).unwrap();
/// let budget = DECODE_AMPLIFICATION * bytes.len() + DECODE_SLACK;
/// assert_eq!(
///     codec::decode::<Vec<Option<[[u64; 32]; 32]>>>(&bytes).unwrap_err(),
///     CodecError::OverBudget { budget }
/// );
/// ```
pub const DECODE_AMPLIFICATION: usize = 64;

/// Bytes of sequence and map elements that any payload may decode to, on top of
/// [`DECODE_AMPLIFICATION`] per payload byte: 1 MiB.
///
/// # Examples
///
/// ```
/// use multiproc::codec::{self, DECODE_SLACK};
///
/// // A `Vec<()>` of up to DECODE_SLACK elements is always accepted, whatever its length prefix.
/// let bytes = codec::encode(&vec![(); DECODE_SLACK]).unwrap();
/// assert_eq!(codec::decode::<Vec<()>>(&bytes).unwrap().len(), DECODE_SLACK);
/// ```
pub const DECODE_SLACK: usize = 1 << 20;

/// How deeply values may nest (each option, struct, tuple, enum, newtype, sequence and map is
/// a level).
///
/// # Examples
///
/// ```
/// use multiproc::codec::{self, CodecError, MAX_DEPTH};
///
/// // Nested options, one byte a level: too deep past the limit, whatever the type allows.
/// #[derive(serde::Deserialize)]
/// struct List(Option<Box<List>>);
/// let bytes = vec![1u8; 100_000];
/// assert_eq!(
///     codec::decode::<List>(&bytes).err(),
///     Some(CodecError::TooDeep { limit: MAX_DEPTH })
/// );
/// ```
pub const MAX_DEPTH: usize = 128;

/// Why a value could not be encoded or decoded.
///
/// # Examples
///
/// ```
/// use multiproc::codec::{self, CodecError};
///
/// // A u16 followed by an extra byte: the receiver expected something else.
/// let err = codec::decode::<u16>(&[1, 2]).unwrap_err();
/// assert_eq!(err, CodecError::TrailingBytes { extra: 1 });
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The value could not be serialized (a serde `Serialize` impl failed, or a map or sequence
    /// did not announce its length). Nothing was sent. The text is the failing impl's own
    /// message, with the name of the type that failed when it is not the value's own.
    Encode(String),
    /// The bytes ended before the value was complete.
    Truncated,
    /// The bytes are not an encoding of the expected type.
    Invalid(String),
    /// The value was complete before the payload ended.
    TrailingBytes {
        /// How many bytes were left over.
        extra: usize,
    },
    /// The value would hold more than its payload's budget: see [`DECODE_AMPLIFICATION`].
    OverBudget {
        /// The budget in bytes for this payload.
        budget: usize,
    },
    /// The value nests deeper than [`MAX_DEPTH`].
    TooDeep {
        /// The limit in force.
        limit: usize,
    },
    /// A frame announced a length above the limit.
    Oversized {
        /// The announced (or attempted) length.
        len: usize,
        /// The limit in force.
        limit: usize,
    },
}

impl fmt::Display for CodecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CodecError::Encode(why) => write!(f, "value could not be serialized: {why}"),
            CodecError::Truncated => f.write_str("encoded value is truncated"),
            CodecError::Invalid(why) => write!(f, "bytes are not a valid encoding: {why}"),
            CodecError::TrailingBytes { extra } => {
                write!(f, "{extra} unexpected byte(s) after the encoded value")
            }
            CodecError::OverBudget { budget } => write!(
                f,
                "the value would hold more than the {budget} bytes its payload may decode to \
                 (sequence or map lengths out of proportion with the bytes received)"
            ),
            CodecError::TooDeep { limit } => {
                write!(f, "the value nests deeper than {limit} levels")
            }
            CodecError::Oversized { len, limit } => {
                write!(f, "frame of {len} bytes exceeds the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for CodecError {}

/// Serializes `value` into a new buffer.
///
/// # Errors
/// [`CodecError::Encode`] if the value's `Serialize` implementation fails.
///
/// # Examples
///
/// ```
/// let bytes = multiproc::codec::encode(&vec![1u8, 2, 3]).unwrap();
/// assert_eq!(bytes, [3, 1, 2, 3]); // a length, then the elements
/// ```
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    let mut buf = Vec::new();
    encode_into(value, &mut buf)?;
    Ok(buf)
}

/// Serializes `value`, appending to `buf`. On error `buf` is left as it was.
///
/// # Errors
/// [`CodecError::Encode`] if the value's `Serialize` implementation fails.
///
/// # Examples
///
/// ```
/// let mut buf = vec![0xAA];
/// multiproc::codec::encode_into(&7u32, &mut buf).unwrap();
/// assert_eq!(buf, [0xAA, 7]);
/// ```
pub fn encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> Result<(), CodecError> {
    let start = buf.len();
    postcard::serialize_with_flavor(value, AppendTo(buf)).map_err(|e| {
        buf.truncate(start);
        // postcard keeps no message of a `Serialize` that failed: serialize once more, into
        // nothing, through `keep`, which does. Only a failure pays for it.
        CodecError::Encode(match keep::failure_of(value) {
            Some((ty, msg)) if ty == std::any::type_name::<T>() => msg,
            Some((ty, msg)) => format!("{msg} (in the Serialize of {ty})"),
            None => e.to_string(),
        })
    })
}

/// Serializes `value`, appending to `buf`, or leaves `buf` as it was and says `false`: for a
/// caller that expects some failures and handles them by encoding another way (the pool tries
/// a plain encoding before the one where handles travel), and so needs no message. A failure
/// costs no second pass (see `keep.rs`).
pub(crate) fn try_encode_into<T: Serialize + ?Sized>(value: &T, buf: &mut Vec<u8>) -> bool {
    let start = buf.len();
    let ok = postcard::serialize_with_flavor(value, AppendTo(buf)).is_ok();
    if !ok {
        buf.truncate(start);
    }
    ok
}

/// A postcard output that appends to a borrowed vector, so that buffers can be reused.
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Deserializes one value that must fill `bytes` exactly.
///
/// # Errors
/// [`CodecError::Truncated`], [`CodecError::Invalid`], [`CodecError::TrailingBytes`],
/// [`CodecError::OverBudget`] (collections out of proportion with `bytes`: see
/// [`DECODE_AMPLIFICATION`]) or [`CodecError::TooDeep`]; never a panic, whatever the input.
///
/// # Examples
///
/// ```
/// let v: Vec<u8> = multiproc::codec::decode(&[3, 1, 2, 3]).unwrap();
/// assert_eq!(v, [1, 2, 3]);
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let budget = bytes
        .len()
        .saturating_mul(DECODE_AMPLIFICATION)
        .saturating_add(DECODE_SLACK);
    let mut de = de::Decoder::new(bytes, budget, MAX_DEPTH);
    let value = T::deserialize(&mut de).map_err(|e| *e.0)?;
    match de.remaining() {
        0 => Ok(value),
        extra => Err(CodecError::TrailingBytes { extra }),
    }
}

#[cfg(test)]
mod tests;
