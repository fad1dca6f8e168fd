//! How values cross a process boundary: serde with postcard, in length-prefixed frames.
//!
//! A *value* is encoded with [postcard], a compact, non-self-describing format: the sender and the
//! receiver must agree on the type, which the typed APIs of this crate guarantee. A *frame* is a
//! 4-byte little-endian length followed by that many payload bytes.
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
//! Memory used while decoding is bounded by the payload: postcard checks every length prefix
//! against the bytes that are actually present, and serde caps the capacity it reserves ahead.
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

pub(crate) mod frame;

pub use frame::{FrameDecoder, HEADER_LEN, encode_frame_header};

/// The largest frame accepted unless configured otherwise: 1 GiB.
///
/// Every channel in this crate takes its own limit; this is where they start.
pub const DEFAULT_MAX_FRAME: usize = 1 << 30;

/// The largest frame that the 4-byte header can describe.
pub const MAX_FRAME_LIMIT: usize = u32::MAX as usize;

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
    /// did not announce its length). Nothing was sent.
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
            CodecError::Oversized { len, limit } => {
                write!(f, "frame of {len} bytes exceeds the limit of {limit} bytes")
            }
        }
    }
}

impl std::error::Error for CodecError {}

fn decode_error(e: postcard::Error) -> CodecError {
    match e {
        postcard::Error::DeserializeUnexpectedEnd => CodecError::Truncated,
        other => CodecError::Invalid(other.to_string()),
    }
}

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
        CodecError::Encode(e.to_string())
    })
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
/// [`CodecError::Truncated`], [`CodecError::Invalid`] or [`CodecError::TrailingBytes`]; never a
/// panic, whatever the input.
///
/// # Examples
///
/// ```
/// let v: Vec<u8> = multiproc::codec::decode(&[3, 1, 2, 3]).unwrap();
/// assert_eq!(v, [1, 2, 3]);
/// ```
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(decode_error)?;
    if !rest.is_empty() {
        return Err(CodecError::TrailingBytes { extra: rest.len() });
    }
    Ok(value)
}

#[cfg(test)]
mod tests;
