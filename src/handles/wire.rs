//! One way for every handle type to cross into a child: a descriptor plus plain data beside it.
//!
//! A handle type implements [`Handle`] — which descriptor carries it, what travels beside it,
//! and how the receiving side rebuilds it with every check — and gets its `Serialize` and
//! `Deserialize` from [`handle_serde!`](crate::handles::handle_serde). On the wire a handle is
//! the tuple `(index, wire)`: the index of its descriptor in the message's list (see
//! [`export_fd`](super::export_fd)), then [`Handle::Wire`]. A handle with nothing beside its
//! descriptor (`Wire = ()`) is just the index.

use std::os::fd::{BorrowedFd, OwnedFd};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::Error;

/// An object that a child receives as a descriptor plus [`Wire`](Self::Wire) data.
pub(crate) trait Handle: Sized {
    /// What travels beside the descriptor: sizes, flags, other handles.
    type Wire: Serialize + DeserializeOwned;

    /// The descriptor that carries the object.
    fn descriptor(&self) -> BorrowedFd<'_>;

    /// What travels beside the descriptor. Called once the descriptor is in the message's list,
    /// and only then: it may record that the object is on its way (an arena slot counts one
    /// more holder, a queue one more possible producer).
    ///
    /// # Errors
    /// A message for the serializer.
    fn wire(&self) -> Result<Self::Wire, String>;

    /// Rebuilds the object in the receiving process from its own copy of the descriptor,
    /// checking everything the sender could have got wrong or lied about (kind, type, sizes).
    ///
    /// # Errors
    /// The crate error that explains what does not match.
    fn import(fd: OwnedFd, wire: Self::Wire) -> Result<Self, Error>;
}

/// `Serialize` for a [`Handle`]: only inside a child's arguments (see [`super::export_fd`]).
pub(crate) fn serialize<H: Handle, S: Serializer>(h: &H, s: S) -> Result<S::Ok, S::Error> {
    use serde::ser::Error as _;
    let index = super::export_fd(h.descriptor()).map_err(S::Error::custom)?;
    let wire = h.wire().map_err(S::Error::custom)?;
    (index, wire).serialize(s)
}

/// `Deserialize` for a [`Handle`]: only while a child's arguments are decoded (see
/// [`super::import_fd`]).
pub(crate) fn deserialize<'de, H: Handle, D: Deserializer<'de>>(d: D) -> Result<H, D::Error> {
    use serde::de::Error as _;
    let (index, wire) = <(u32, H::Wire)>::deserialize(d)?;
    let fd = super::import_fd(index).map_err(D::Error::custom)?;
    H::import(fd, wire).map_err(D::Error::custom)
}

/// Implements `Serialize` and `Deserialize` for a [`Handle`] type through [`serialize`] and
/// [`deserialize`]: `handle_serde!([generics] Type)`, e.g. `handle_serde!([T: Pod] Value<T>)`
/// or `handle_serde!([] Lock)`.
macro_rules! handle_serde {
    ([$($gen:tt)*] $ty:ty) => {
        impl<$($gen)*> ::serde::Serialize for $ty {
            fn serialize<Z: ::serde::Serializer>(
                &self,
                s: Z,
            ) -> ::std::result::Result<Z::Ok, Z::Error> {
                $crate::handles::wire::serialize(self, s)
            }
        }

        impl<'de, $($gen)*> ::serde::Deserialize<'de> for $ty {
            fn deserialize<D: ::serde::Deserializer<'de>>(
                d: D,
            ) -> ::std::result::Result<Self, D::Error> {
                $crate::handles::wire::deserialize(d)
            }
        }
    };
}
pub(crate) use handle_serde;

/// Implements [`Handle`] and its serde for an object whose descriptor is that of a field
/// holding a segment (anything with `fd() -> &OwnedFd`, such as `Shared<T>`): the field, the
/// [`Handle::Wire`] type, how `wire` reads it and how `import` rebuilds the object are given.
///
/// ```text
/// shared_handle!(
///     /// A lock travels as its segment's descriptor and its arena slot's offset.
///     [] Lock, cell, u32,
///     |this| this.cell.slot_wire(),
///     |fd, offset| Shared::open_slot(fd, offset, LOCK_KINDS, LOCK_KINDS, 0).map(Lock::from_cell)
/// );
/// ```
macro_rules! shared_handle {
    (
        $(#[$attr:meta])*
        [$($gen:tt)*] $ty:ty, $field:ident, $wire:ty,
        |$this:pat_param| $wire_expr:expr,
        |$fd:pat_param, $w:pat_param| $import:expr $(,)?
    ) => {
        $(#[$attr])*
        impl<$($gen)*> $crate::handles::Handle for $ty {
            type Wire = $wire;
            fn descriptor(&self) -> ::std::os::fd::BorrowedFd<'_> {
                ::std::os::fd::AsFd::as_fd(self.$field.fd())
            }
            fn wire(&self) -> ::std::result::Result<$wire, ::std::string::String> {
                let $this = self;
                $wire_expr
            }
            fn import($fd: ::std::os::fd::OwnedFd, $w: $wire) -> $crate::error::Result<Self> {
                $import
            }
        }
        $crate::handles::handle_serde!([$($gen)*] $ty);
    };
}
pub(crate) use shared_handle;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::super::{encode_with_fds, with_incoming};
    use crate::codec;

    /// The wire shape is `(index, wire)`, the same bytes as before the one mechanism: a handle
    /// with nothing beside it is its index alone, and a connection is its index then its
    /// fields.
    #[test]
    fn a_handle_is_its_index_then_its_wire() {
        let event = crate::Event::new().unwrap();
        let (bytes, fds) = encode_with_fds(&(&event, &event)).unwrap();
        assert_eq!((bytes, fds.len()), (vec![0, 0], 1));

        let (a, _b) = crate::pipe::<u8>().unwrap();
        a.set_max_frame(5);
        let (bytes, fds) = encode_with_fds(&a).unwrap();
        assert_eq!(bytes, [0, 1, 1, 5]);
        let back: crate::Connection<u8> = with_incoming(fds, || codec::decode(&bytes)).unwrap();
        assert_eq!(back.max_frame(), 5);
    }

    /// Outside a child's arguments a handle neither encodes nor decodes.
    #[test]
    fn a_handle_outside_arguments_is_refused() {
        let event = crate::Event::new().unwrap();
        assert!(codec::encode(&event).is_err());
        assert!(codec::decode::<crate::Event>(&[0]).is_err());
    }
}
