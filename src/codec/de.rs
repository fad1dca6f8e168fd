//! The decoder: postcard's wire format, read with a memory budget and a nesting limit.
//!
//! Postcard checks a string's or a byte array's length against the bytes present, but not a
//! sequence's: one byte per element is enough to make a `Vec<Option<[[u64; 32]; 32]>>` of `None`s
//! hold 8 KiB per byte received, and a `Vec<()>` of 2^62 elements fits in nine bytes. This
//! decoder reads the same format and charges every sequence and map against a budget that grows
//! with the frame (see [`DECODE_AMPLIFICATION`](super::DECODE_AMPLIFICATION)): a collection of
//! `n` elements of type `T` costs `n × max(size_of::<T>(), 1)`, charged in full when its first
//! element is requested — after serde's collections have reserved their (capped) read-ahead and
//! before any element is decoded — so a hostile length is refused at once. The two shapes whose
//! encoding can be one byte for a large type, an option and an enum, are also charged their own
//! size wherever they are decoded: a `Box` (or `Rc`, `Arc`) around one allocates all of it, while
//! a collection of boxes is charged only the pointers. Nesting is limited
//! (see [`MAX_DEPTH`](super::MAX_DEPTH)), so that a recursive type cannot overflow the stack.

use std::fmt;
use std::mem::size_of;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};

use super::CodecError;

/// A serde error that carries the crate's codec error. Boxed, so that every `Result` the
/// decoder returns stays two words wide (errors are rare; results are not).
#[derive(Debug)]
pub(super) struct DeError(pub(super) Box<CodecError>);

fn fail(e: CodecError) -> DeError {
    DeError(Box::new(e))
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        fail(CodecError::Invalid(msg.to_string()))
    }
}

type Result<T> = std::result::Result<T, DeError>;

#[cold]
fn truncated() -> DeError {
    fail(CodecError::Truncated)
}

#[cold]
fn invalid(why: &str) -> DeError {
    fail(CodecError::Invalid(why.to_string()))
}

/// Reads values from a slice, within a budget.
pub(super) struct Decoder<'de> {
    input: &'de [u8],
    /// How much of `input` has been read.
    pos: usize,
    /// Bytes of collection elements that may still be built.
    budget_left: usize,
    /// The whole budget, for the error message.
    budget: usize,
    /// Nesting levels that may still be entered.
    depth_left: usize,
}

impl<'de> Decoder<'de> {
    #[inline]
    pub(super) fn new(input: &'de [u8], budget: usize, depth: usize) -> Self {
        Decoder {
            input,
            pos: 0,
            budget_left: budget,
            budget,
            depth_left: depth,
        }
    }

    /// Bytes not yet consumed.
    #[inline]
    pub(super) fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// Charges `count` elements of `size` bytes each (at least one byte each, so that
    /// zero-sized elements are bounded too).
    #[inline]
    fn charge(&mut self, count: usize, size: usize) -> Result<()> {
        let cost = count.saturating_mul(size.max(1));
        if cost > self.budget_left {
            return Err(fail(CodecError::OverBudget {
                budget: self.budget,
            }));
        }
        self.budget_left -= cost;
        Ok(())
    }

    /// Runs `f` one nesting level deeper.
    #[inline]
    fn nested<R>(&mut self, f: impl FnOnce(&mut Self) -> Result<R>) -> Result<R> {
        if self.depth_left == 0 {
            return Err(fail(CodecError::TooDeep {
                limit: super::MAX_DEPTH,
            }));
        }
        self.depth_left -= 1;
        let out = f(self);
        self.depth_left += 1;
        out
    }

    #[inline(always)]
    fn pop(&mut self) -> Result<u8> {
        match self.input.get(self.pos) {
            Some(&b) => {
                self.pos += 1;
                Ok(b)
            }
            None => Err(truncated()),
        }
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        let input: &'de [u8] = self.input;
        match input.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(head) => {
                self.pos += n;
                Ok(head)
            }
            None => Err(truncated()),
        }
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    #[inline]
    fn len(&mut self) -> Result<usize> {
        usize::try_from(self.varint_u64()?).map_err(|_| invalid("a length does not fit usize"))
    }
}

/// Unsigned LEB128 as postcard writes it: at most `ceil(bits / 7)` bytes, and the last one may
/// not carry bits beyond the type's width.
macro_rules! varint {
    ($name:ident, $t:ty) => {
        #[inline(always)]
        fn $name(&mut self) -> Result<$t> {
            const BITS: usize = <$t>::BITS as usize;
            const MAX_BYTES: usize = BITS.div_ceil(7);
            const LAST_MAX: u8 = ((1u32 << (BITS % 7)) - 1) as u8;
            let mut out: $t = 0;
            for i in 0..MAX_BYTES {
                let byte = self.pop()?;
                out |= ((byte & 0x7f) as $t) << (7 * i);
                if byte & 0x80 == 0 {
                    if i == MAX_BYTES - 1 && byte > LAST_MAX {
                        break;
                    }
                    return Ok(out);
                }
            }
            Err(invalid("a varint is out of range"))
        }
    };
}

impl Decoder<'_> {
    varint!(varint_u16, u16);
    varint!(varint_u32, u32);
    varint!(varint_u64, u64);
    varint!(varint_u128, u128);
}

macro_rules! zigzag {
    ($u:expr, $i:ty) => {{
        let u = $u;
        ((u >> 1) as $i) ^ (-((u & 1) as $i))
    }};
}

/// The elements of a sequence (counted against the budget) or of a tuple or struct (whose
/// length comes from the type, not from the input).
struct Seq<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    /// Charge the whole sequence when its first element is requested.
    charge: bool,
}

impl<'de> de::SeqAccess<'de> for Seq<'_, 'de> {
    type Error = DeError;

    #[inline]
    fn next_element_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        if self.charge {
            self.charge = false;
            self.de.charge(self.left, size_of::<S::Value>())?;
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        // A length the remaining bytes cannot hold (even at one byte an element) is no hint.
        (self.left <= self.de.remaining()).then_some(self.left)
    }
}

/// The entries of a map, counted against the budget.
struct Map<'a, 'de> {
    de: &'a mut Decoder<'de>,
    left: usize,
    /// The whole map's size.
    len: usize,
    key_charged: bool,
    value_charged: bool,
}

impl<'de> de::MapAccess<'de> for Map<'_, 'de> {
    type Error = DeError;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if self.left == 0 {
            return Ok(None);
        }
        if !self.key_charged {
            self.key_charged = true;
            self.de.charge(self.len, size_of::<K::Value>())?;
        }
        self.left -= 1;
        seed.deserialize(&mut *self.de).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        if !self.value_charged {
            self.value_charged = true;
            // Keys already paid the per-entry minimum.
            let size = size_of::<V::Value>();
            if size > 0 {
                self.de.charge(self.len, size)?;
            }
        }
        seed.deserialize(&mut *self.de)
    }

    #[inline]
    fn size_hint(&self) -> Option<usize> {
        (self.left <= self.de.remaining()).then_some(self.left)
    }
}

impl<'de> de::EnumAccess<'de> for &mut Decoder<'de> {
    type Error = DeError;
    type Variant = Self;

    #[inline]
    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let index = self.varint_u32()?;
        let value = seed.deserialize(index.into_deserializer())?;
        Ok((value, self))
    }
}

impl<'de> de::VariantAccess<'de> for &mut Decoder<'de> {
    type Error = DeError;

    #[inline]
    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    #[inline]
    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self)
    }

    #[inline]
    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, len, visitor)
    }

    #[inline]
    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_tuple(self, fields.len(), visitor)
    }
}

impl<'de> de::Deserializer<'de> for &mut Decoder<'de> {
    type Error = DeError;

    #[inline]
    fn is_human_readable(&self) -> bool {
        false
    }

    #[inline]
    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(invalid(
            "the format is not self-describing: a type that needs deserialize_any cannot be decoded",
        ))
    }

    #[inline]
    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.pop()? {
            0 => visitor.visit_bool(false),
            1 => visitor.visit_bool(true),
            _ => Err(invalid("a bool is neither 0 nor 1")),
        }
    }

    #[inline]
    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i8(self.pop()? as i8)
    }

    #[inline]
    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i16(zigzag!(self.varint_u16()?, i16))
    }

    #[inline]
    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i32(zigzag!(self.varint_u32()?, i32))
    }

    #[inline]
    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i64(zigzag!(self.varint_u64()?, i64))
    }

    #[inline]
    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_i128(zigzag!(self.varint_u128()?, i128))
    }

    #[inline]
    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u8(self.pop()?)
    }

    #[inline]
    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u16(self.varint_u16()?)
    }

    #[inline]
    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u32(self.varint_u32()?)
    }

    #[inline]
    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u64(self.varint_u64()?)
    }

    #[inline]
    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_u128(self.varint_u128()?)
    }

    #[inline]
    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f32(f32::from_le_bytes(self.take_array()?))
    }

    #[inline]
    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_f64(f64::from_le_bytes(self.take_array()?))
    }

    #[inline]
    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        if len > 4 {
            return Err(invalid("a char is longer than 4 bytes"));
        }
        let c = std::str::from_utf8(self.take(len)?)
            .ok()
            .and_then(|s| s.chars().next())
            .ok_or_else(|| invalid("a char is not UTF-8"))?;
        visitor.visit_char(c)
    }

    #[inline]
    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        let s =
            std::str::from_utf8(self.take(len)?).map_err(|_| invalid("a string is not UTF-8"))?;
        visitor.visit_borrowed_str(s)
    }

    #[inline]
    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_str(visitor)
    }

    #[inline]
    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        visitor.visit_borrowed_bytes(self.take(len)?)
    }

    #[inline]
    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_bytes(visitor)
    }

    #[inline]
    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // One tag byte can stand for a large type, and a `Box` around it allocates all of it
        // (charged here, since a collection of boxes is charged only the pointers).
        self.charge(1, size_of::<V::Value>())?;
        match self.pop()? {
            0 => visitor.visit_none(),
            1 => self.nested(|de| visitor.visit_some(de)),
            _ => Err(invalid("an option's tag is neither 0 nor 1")),
        }
    }

    #[inline]
    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        visitor.visit_unit()
    }

    #[inline]
    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        visitor.visit_unit()
    }

    #[inline]
    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.nested(|de| visitor.visit_newtype_struct(de))
    }

    #[inline]
    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let left = self.len()?;
        self.nested(|de| {
            visitor.visit_seq(Seq {
                de,
                left,
                charge: true,
            })
        })
    }

    #[inline]
    fn deserialize_tuple<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value> {
        self.nested(|de| {
            visitor.visit_seq(Seq {
                de,
                left: len,
                charge: false,
            })
        })
    }

    #[inline]
    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(len, visitor)
    }

    #[inline]
    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let len = self.len()?;
        self.nested(|de| {
            visitor.visit_map(Map {
                de,
                left: len,
                len,
                key_charged: false,
                value_charged: false,
            })
        })
    }

    #[inline]
    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_tuple(fields.len(), visitor)
    }

    #[inline]
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _: &'static str,
        _: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        // As for an option: a one-byte variant of a large enum, perhaps behind a `Box`.
        self.charge(1, size_of::<V::Value>())?;
        self.nested(|de| visitor.visit_enum(de))
    }

    #[inline]
    fn deserialize_identifier<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(invalid("the format does not encode identifiers"))
    }

    #[inline]
    fn deserialize_ignored_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value> {
        Err(invalid("the format cannot skip a value of unknown type"))
    }
}
