//! `Shared<T>`: a per-process handle on a `T` that lives at the start of a segment's data.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::Arc;

use super::arena::{self, SlotClaim};
use super::{Kind, NO_TYPE_TAG, Region, Sealing};
use crate::error::{Error, ErrorKind, Result};

/// A handle on shared state of type `T` placed at the start of a segment's data, followed by
/// `extra` bytes the owner uses as it likes. Cloning shares the mapping.
///
/// `T` must be made only of atomics, process-shared mutexes and data accessed under them: the
/// handle hands out `&T` to every process at once.
pub(crate) struct Shared<T> {
    region: Arc<Region>,
    ptr: NonNull<T>,
    /// For an object in an arena slot: this process's claim on the slot.
    claim: Option<Arc<SlotClaim>>,
}

// SAFETY: `T` is shared state designed for concurrent use from many processes (see above), so
// it is also fine to use from many threads; the region is Send + Sync.
unsafe impl<T: Sync> Send for Shared<T> {}
// SAFETY: as above.
unsafe impl<T: Sync> Sync for Shared<T> {}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared {
            region: self.region.clone(),
            ptr: self.ptr,
            claim: self.claim.clone(),
        }
    }
}

const fn fits<T>() {
    assert!(std::mem::align_of::<T>() <= super::region::HEADER_LEN);
}

/// The slot offset in a handle of an object that has a segment of its own (no slot).
const OWN_SEGMENT: u32 = u32::MAX;

/// The bytes of an object in an arena slot.
pub(crate) const SLOT_PAYLOAD: usize = arena::SLOT - arena::PAYLOAD_AT;

/// The alignment an arena slot's object can count on.
pub(crate) const SLOT_ALIGN: usize = arena::PAYLOAD_AT;

const fn fits_slot<T>() {
    assert!(std::mem::align_of::<T>() <= arena::PAYLOAD_AT);
    assert!(std::mem::size_of::<T>() <= arena::SLOT - arena::PAYLOAD_AT);
}

impl<T> Shared<T> {
    /// A new anonymous segment of `kind` holding a `T` (initialized in place by `init`) and
    /// `extra` more bytes.
    pub(crate) fn create(
        kind: Kind,
        type_tag: u64,
        extra: usize,
        init: impl FnOnce(*mut T) -> std::io::Result<()>,
    ) -> Result<Shared<T>> {
        const { fits::<T>() };
        let len = std::mem::size_of::<T>()
            .checked_add(extra)
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "shared object too large"))?;
        let region = Region::anonymous(kind, len, type_tag)?;
        let ptr = region.data().cast::<T>();
        init(ptr.as_ptr()).map_err(|e| Error::os("cannot initialize a shared object", e))?;
        Ok(Shared {
            region: Arc::new(region),
            ptr,
            claim: None,
        })
    }

    /// [`create`](Self::create) with the `T` given as a value (for a state without
    /// process-shared mutexes, which must be initialized in place).
    pub(crate) fn create_value(
        kind: Kind,
        type_tag: u64,
        extra: usize,
        value: T,
    ) -> Result<Shared<T>> {
        Shared::create(kind, type_tag, extra, |p: *mut T| {
            // SAFETY: `create` passes fresh memory, aligned and sized for a `T`.
            unsafe { p.write(value) };
            Ok(())
        })
    }

    /// A `T` in a slot of this process's arena (initialized in place by `init`): no segment,
    /// descriptor or mapping of its own. `type_tag` is checked when a handle is opened
    /// ([`NO_TYPE_TAG`]: no type to check).
    pub(crate) fn create_in_arena(
        kind: Kind,
        type_tag: u64,
        init: impl FnOnce(*mut T) -> std::io::Result<()>,
    ) -> Result<Shared<T>> {
        const { fits_slot::<T>() };
        let claim = arena::alloc(kind, type_tag, |p| init(p.cast()))?;
        Ok(Shared::from_claim(claim))
    }

    fn from_claim(claim: SlotClaim) -> Shared<T> {
        let region = claim.region().clone();
        // SAFETY: the payload offset is inside the chunk's data (checked at alloc or open).
        let ptr = unsafe { region.data().add(claim.payload_offset()) }.cast();
        Shared {
            region,
            ptr,
            claim: Some(Arc::new(claim)),
        }
    }

    /// Maps the segment behind `fd`, checking its kind (one of `kinds`), type tag and size.
    pub(crate) fn open(
        fd: OwnedFd,
        kinds: &[Kind],
        type_tag: u64,
        extra: usize,
    ) -> Result<Shared<T>> {
        let region = Region::open_any(fd, kinds, type_tag, Sealing::Required)?;
        if region.data_len() < std::mem::size_of::<T>().saturating_add(extra) {
            return Err(Error::new(
                ErrorKind::BadHeader,
                "the shared object's segment is smaller than its type needs",
            ));
        }
        let ptr = region.data().cast::<T>();
        Ok(Shared {
            region: Arc::new(region),
            ptr,
            claim: None,
        })
    }

    /// A handle on the `U` that the object starts with (`U` must be a prefix of `T`, as a
    /// `LockCell` is of a `Value`'s state): the same mapping, viewed as a `U`.
    pub(crate) fn handle_on_prefix<U>(&self) -> Shared<U> {
        const { fits::<U>() };
        debug_assert!(std::mem::size_of::<U>() <= std::mem::size_of::<T>());
        Shared {
            region: self.region.clone(),
            ptr: self.ptr.cast(),
            claim: self.claim.clone(),
        }
    }

    /// A pointer to a `U` at `offset` bytes from the object's start (in the `extra` bytes
    /// after the `T`), which must be aligned for `U`.
    pub(crate) fn ptr_at_offset<U>(&self, offset: usize) -> NonNull<U> {
        debug_assert!(offset.is_multiple_of(std::mem::align_of::<U>()));
        // SAFETY: callers pass offsets inside the object they sized at creation (checked again
        // at open through the size check).
        unsafe { self.ptr.cast::<u8>().add(offset).cast() }
    }

    /// `count` shared 8-byte words at `offset` bytes from the object's start (in the `extra`
    /// bytes after the `T`), for data that the owner copies in and out as words
    /// ([`read_words`](super::read_words), [`write_words`](super::write_words)).
    ///
    /// # Panics
    /// If `offset` is not a multiple of 8 or the words are not all inside the object.
    pub(crate) fn words_at(&self, offset: usize, count: usize) -> &[std::sync::atomic::AtomicU64] {
        let end = count.checked_mul(8).and_then(|n| n.checked_add(offset));
        assert!(
            offset.is_multiple_of(8)
                && (self.ptr.as_ptr() as usize).is_multiple_of(8)
                && end.is_some_and(|e| e <= self.object_len()),
            "{count} words at {offset} of an object of {} bytes",
            self.object_len()
        );
        let first = self.ptr_at_offset::<std::sync::atomic::AtomicU64>(offset);
        // SAFETY: the words are inside the object (checked above against what its segment or
        // slot holds), 8-aligned and mapped while `self` lives; any bits are valid atomics, and
        // atomics may alias memory that other processes access.
        unsafe { std::slice::from_raw_parts(first.as_ptr(), count) }
    }

    /// Whether the object is in an arena slot (rather than a segment of its own).
    pub(crate) fn in_arena(&self) -> bool {
        self.claim.is_some()
    }

    /// The bytes available to the object from its start: its slot's, or its segment's data.
    pub(crate) fn object_len(&self) -> usize {
        if self.in_arena() {
            SLOT_PAYLOAD
        } else {
            self.region.data_len()
        }
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        self.region.fd()
    }

    pub(crate) fn data_len(&self) -> usize {
        self.region.data_len()
    }

    /// The object's identity: its segment's (device, inode) and its offset in the segment's
    /// data, the same for every mapping of it in every process.
    pub(crate) fn id(&self) -> (u64, u64, usize) {
        let (dev, ino) = self.region.id();
        let offset = self.ptr.as_ptr() as usize - self.region.data().as_ptr() as usize;
        (dev, ino, offset)
    }

    /// What travels beside the descriptor of an object that may live in an arena slot (see
    /// [`Handle`](crate::handles::Handle)): the slot's offset, or [`OWN_SEGMENT`] for an object with
    /// a segment of its own. An arena slot counts one more holder for the handle on its way.
    pub(crate) fn slot_wire(&self) -> std::result::Result<u32, String> {
        match &self.claim {
            Some(claim) => {
                let offset = u32::try_from(claim.payload_offset()).map_err(|e| e.to_string())?;
                claim.export()?;
                Ok(offset)
            }
            None => Ok(OWN_SEGMENT),
        }
    }

    /// The holder count of the object's arena slot, `None` outside the arena (for tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn slot_refs(&self) -> Option<u32> {
        self.claim.as_ref().map(|c| c.refs())
    }

    /// Opens what [`slot_wire`](Self::slot_wire) described: an arena slot of one of
    /// `slot_kinds` at `offset`, or a segment of one of `kinds`, holding type `type_tag` ([`NO_TYPE_TAG`]:
    /// any).
    pub(crate) fn open_slot(
        fd: OwnedFd,
        offset: u32,
        slot_kinds: &[Kind],
        kinds: &[Kind],
        type_tag: u64,
    ) -> Result<Shared<T>> {
        const { fits_slot::<T>() };
        if offset == OWN_SEGMENT {
            return Shared::open(fd, kinds, type_tag, 0);
        }
        let tag = (type_tag != NO_TYPE_TAG).then_some(type_tag);
        arena::open(fd, offset as usize, slot_kinds, tag).map(Shared::from_claim)
    }
}

impl<T> std::ops::Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the pointer is into the region's data, initialized (by `create`, or by the
        // creator before the descriptor was shared), aligned, and mapped while `region` lives.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T> std::fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.region.fmt(f)
    }
}
