//! Keeping the message of a failed `Serialize`.
//!
//! postcard turns every `serde::ser::Error::custom(msg)` into one fixed error and drops `msg`,
//! so a value that refuses to serialize would only say "Serde Serialization Error". When an
//! encoding fails, [`failure_of`] serializes the value once more through [`Keep`], a serializer
//! that forwards every call to postcard's (writing into nothing) but has an error type that
//! keeps the message ([`Kept`]). Every nested value, down to [`KEEP_DEPTH`] levels, goes through
//! [`Wrap`], so the innermost value whose `Serialize` failed is known by its type: the first
//! `Wrap` to see a kept message records it with its type's name in a per-thread slot. Deeper
//! values are serialized as in the failed encoding, so this pass needs at most a bounded margin
//! of stack more than it did. Successful encodings never come here (the wrapper costs about a
//! third more per value; measured).
//!
//! The second pass runs the value's `Serialize` again. For the handles of this crate that is
//! harmless (a descriptor exported again reuses its entry; what a failed encoding collected is
//! dropped) but for one thing: an arena slot's handle (a `Lock`, a small `Value`) counts its
//! receiver once more, and a count whose handle never arrives leaks the slot, as a failed
//! encoding's first count already did. A user's `Serialize` with side effects sees them twice,
//! on the failure path only.

use std::cell::RefCell;
use std::fmt;

use serde::Serialize;
use serde::ser::{self, Serializer};

thread_local! {
    /// The first failure of this encoding: the type whose `Serialize` failed, and its message.
    static FAILURE: RefCell<Option<(&'static str, String)>> = const { RefCell::new(None) };
}

/// Serializes `value` again through [`Keep`], into nothing: the type whose `Serialize` failed
/// and its message, if one failed with a message this time too.
pub(super) fn failure_of<T: Serialize + ?Sized>(value: &T) -> Option<(&'static str, String)> {
    FAILURE.with(|f| f.borrow_mut().take());
    // An encoding inside a `Serialize` gets its own depth count.
    let outer = Depth::enter(0);
    let _ = postcard::serialize_with_flavor(&Wrap(value), Nowhere);
    drop(outer);
    FAILURE.with(|f| f.borrow_mut().take())
}

/// How many values deep the pass goes through [`Wrap`]. Each wrapped level costs stack frames
/// the failed encoding did not need; below this depth, values are serialized as the failed
/// encoding did, so this pass needs at most a bounded margin more stack than it (a value that
/// failed deep down must not overflow the stack the second time). A failure below that depth
/// keeps postcard's message; such a value could not be decoded anyway ([`super::MAX_DEPTH`]).
const KEEP_DEPTH: usize = super::MAX_DEPTH;

thread_local! {
    /// The wrapped levels of the pass running on this thread.
    static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Sets this thread's depth, and puts the earlier one back when dropped (on unwind too).
struct Depth(usize);

impl Depth {
    fn enter(depth: usize) -> Depth {
        Depth(DEPTH.replace(depth))
    }
}

impl Drop for Depth {
    fn drop(&mut self) {
        DEPTH.set(self.0);
    }
}

/// A postcard output that keeps nothing.
struct Nowhere;

impl postcard::ser_flavors::Flavor for Nowhere {
    type Output = ();

    fn try_push(&mut self, _: u8) -> postcard::Result<()> {
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

fn record(ty: &'static str, msg: &str) {
    FAILURE.with(|f| {
        let mut f = f.borrow_mut();
        if f.is_none() {
            *f = Some((ty, msg.to_string()));
        }
    });
}

/// The error a wrapped serializer returns: the inner serializer's, or a message a `Serialize`
/// gave (kept whole).
enum Kept<E> {
    Inner(E),
    Custom(String),
}

impl<E: fmt::Display> fmt::Display for Kept<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Kept::Inner(e) => e.fmt(f),
            Kept::Custom(m) => f.write_str(m),
        }
    }
}

impl<E: fmt::Display> fmt::Debug for Kept<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<E: ser::Error> std::error::Error for Kept<E> {}

impl<E: ser::Error> ser::Error for Kept<E> {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Kept::Custom(msg.to_string())
    }
}

/// A value serialized through [`Keep`], so that its own errors keep their message. A failure
/// the value itself raised is recorded with its type.
struct Wrap<'a, T: ?Sized>(&'a T);

impl<T: Serialize + ?Sized> Serialize for Wrap<'_, T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let depth = DEPTH.get();
        if depth >= KEEP_DEPTH {
            return self.0.serialize(s);
        }
        let _deeper = Depth::enter(depth + 1);
        self.0.serialize(Keep(s)).map_err(|e| match e {
            Kept::Inner(e) => e,
            Kept::Custom(msg) => {
                record(std::any::type_name::<T>(), &msg);
                <S::Error as ser::Error>::custom(msg)
            }
        })
    }
}

/// A serializer (or one of its compound parts) that forwards to `S`.
struct Keep<S>(S);

fn inner<E>(e: E) -> Kept<E> {
    Kept::Inner(e)
}

macro_rules! forward_scalars {
    ($($method:ident($ty:ty)),* $(,)?) => {$(
        fn $method(self, v: $ty) -> Result<S::Ok, Kept<S::Error>> {
            self.0.$method(v).map_err(inner)
        }
    )*};
}

impl<S: Serializer> Serializer for Keep<S> {
    type Ok = S::Ok;
    type Error = Kept<S::Error>;
    type SerializeSeq = Keep<S::SerializeSeq>;
    type SerializeTuple = Keep<S::SerializeTuple>;
    type SerializeTupleStruct = Keep<S::SerializeTupleStruct>;
    type SerializeTupleVariant = Keep<S::SerializeTupleVariant>;
    type SerializeMap = Keep<S::SerializeMap>;
    type SerializeStruct = Keep<S::SerializeStruct>;
    type SerializeStructVariant = Keep<S::SerializeStructVariant>;

    forward_scalars!(
        serialize_bool(bool),
        serialize_i8(i8),
        serialize_i16(i16),
        serialize_i32(i32),
        serialize_i64(i64),
        serialize_i128(i128),
        serialize_u8(u8),
        serialize_u16(u16),
        serialize_u32(u32),
        serialize_u64(u64),
        serialize_u128(u128),
        serialize_f32(f32),
        serialize_f64(f64),
        serialize_char(char),
        serialize_str(&str),
        serialize_bytes(&[u8]),
    );

    fn serialize_none(self) -> Result<S::Ok, Self::Error> {
        self.0.serialize_none().map_err(inner)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, v: &T) -> Result<S::Ok, Self::Error> {
        self.0.serialize_some(&Wrap(v)).map_err(inner)
    }

    fn serialize_unit(self) -> Result<S::Ok, Self::Error> {
        self.0.serialize_unit().map_err(inner)
    }

    fn serialize_unit_struct(self, name: &'static str) -> Result<S::Ok, Self::Error> {
        self.0.serialize_unit_struct(name).map_err(inner)
    }

    fn serialize_unit_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
    ) -> Result<S::Ok, Self::Error> {
        self.0
            .serialize_unit_variant(name, index, variant)
            .map_err(inner)
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        v: &T,
    ) -> Result<S::Ok, Self::Error> {
        self.0
            .serialize_newtype_struct(name, &Wrap(v))
            .map_err(inner)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        v: &T,
    ) -> Result<S::Ok, Self::Error> {
        self.0
            .serialize_newtype_variant(name, index, variant, &Wrap(v))
            .map_err(inner)
    }

    fn serialize_seq(self, len: Option<usize>) -> Result<Self::SerializeSeq, Self::Error> {
        self.0.serialize_seq(len).map(Keep).map_err(inner)
    }

    fn serialize_tuple(self, len: usize) -> Result<Self::SerializeTuple, Self::Error> {
        self.0.serialize_tuple(len).map(Keep).map_err(inner)
    }

    fn serialize_tuple_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleStruct, Self::Error> {
        self.0
            .serialize_tuple_struct(name, len)
            .map(Keep)
            .map_err(inner)
    }

    fn serialize_tuple_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeTupleVariant, Self::Error> {
        self.0
            .serialize_tuple_variant(name, index, variant, len)
            .map(Keep)
            .map_err(inner)
    }

    fn serialize_map(self, len: Option<usize>) -> Result<Self::SerializeMap, Self::Error> {
        self.0.serialize_map(len).map(Keep).map_err(inner)
    }

    fn serialize_struct(
        self,
        name: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStruct, Self::Error> {
        self.0.serialize_struct(name, len).map(Keep).map_err(inner)
    }

    fn serialize_struct_variant(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Self::SerializeStructVariant, Self::Error> {
        self.0
            .serialize_struct_variant(name, index, variant, len)
            .map(Keep)
            .map_err(inner)
    }

    fn collect_str<T: fmt::Display + ?Sized>(self, v: &T) -> Result<S::Ok, Self::Error> {
        self.0.collect_str(v).map_err(inner)
    }

    fn is_human_readable(&self) -> bool {
        self.0.is_human_readable()
    }
}

/// The compound parts: each element goes through [`Wrap`].
macro_rules! forward_compound {
    ($trait:ident, $method:ident) => {
        impl<S: ser::$trait> ser::$trait for Keep<S> {
            type Ok = S::Ok;
            type Error = Kept<S::Error>;
            fn $method<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Self::Error> {
                self.0.$method(&Wrap(v)).map_err(inner)
            }
            fn end(self) -> Result<S::Ok, Self::Error> {
                self.0.end().map_err(inner)
            }
        }
    };
    ($trait:ident, $method:ident, named) => {
        impl<S: ser::$trait> ser::$trait for Keep<S> {
            type Ok = S::Ok;
            type Error = Kept<S::Error>;
            fn $method<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                v: &T,
            ) -> Result<(), Self::Error> {
                self.0.$method(key, &Wrap(v)).map_err(inner)
            }
            fn skip_field(&mut self, key: &'static str) -> Result<(), Self::Error> {
                self.0.skip_field(key).map_err(inner)
            }
            fn end(self) -> Result<S::Ok, Self::Error> {
                self.0.end().map_err(inner)
            }
        }
    };
}
forward_compound!(SerializeSeq, serialize_element);
forward_compound!(SerializeTuple, serialize_element);
forward_compound!(SerializeTupleStruct, serialize_field);
forward_compound!(SerializeTupleVariant, serialize_field);
forward_compound!(SerializeStruct, serialize_field, named);
forward_compound!(SerializeStructVariant, serialize_field, named);

impl<S: ser::SerializeMap> ser::SerializeMap for Keep<S> {
    type Ok = S::Ok;
    type Error = Kept<S::Error>;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, k: &T) -> Result<(), Self::Error> {
        self.0.serialize_key(&Wrap(k)).map_err(inner)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), Self::Error> {
        self.0.serialize_value(&Wrap(v)).map_err(inner)
    }
    fn serialize_entry<K: Serialize + ?Sized, V: Serialize + ?Sized>(
        &mut self,
        k: &K,
        v: &V,
    ) -> Result<(), Self::Error> {
        self.0.serialize_entry(&Wrap(k), &Wrap(v)).map_err(inner)
    }
    fn end(self) -> Result<S::Ok, Self::Error> {
        self.0.end().map_err(inner)
    }
}
