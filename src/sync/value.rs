//! `Value<T>` and `Array<T>`: plain data in shared memory with a lock.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use std::os::fd::OwnedFd;

use crate::handles::shared_handle;

use super::error::{LockError, LockResult, LockTimeoutResult, Recover, TryLockResult, sealed};
use super::lock::{Lock, LockCell, LockGuard, deadline_after};
use crate::atomic::{AtomicU64, Ordering};
use crate::error::{Error, ErrorKind, Result};
use crate::shm::{Kind, SLOT_ALIGN, SLOT_PAYLOAD, Shared, type_tag};

/// Plain-old-data: a type that can live in shared memory and be copied in and out as bytes.
///
/// # Safety
/// Implementors must be `Copy`, contain no pointers, references or handles (they mean nothing in
/// another process), have no padding bytes, and be valid for every bit pattern. Primitive
/// integers, floats and arrays of `Pod` qualify; a `#[repr(C)]` struct of `Pod` fields without
/// padding does too.
///
/// # Examples
///
/// ```
/// #[derive(Clone, Copy)]
/// #[repr(C)]
/// struct Point {
///     x: f64,
///     y: f64,
/// }
/// // SAFETY: two f64s, no padding, every bit pattern is valid.
/// unsafe impl multiproc::Pod for Point {}
///
/// let p = multiproc::Value::new(Point { x: 1.0, y: 2.0 })?;
/// assert_eq!(p.get()?.y, 2.0);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub unsafe trait Pod: Copy + Send + Sync + 'static {}

macro_rules! pod {
    ($($t:ty),*) => { $(
        // SAFETY: a primitive number: no padding, no pointers, every bit pattern valid.
        unsafe impl Pod for $t {}
    )* };
}
pod!(
    u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, f32, f64
);
// SAFETY: an array of Pod has no padding between elements and inherits the rest.
unsafe impl<T: Pod, const N: usize> Pod for [T; N] {}

/// A [`Pod`] integer with a matching atomic type, for lock-free access to a [`Value`] or
/// [`Array`](crate::Array).
///
/// # Examples
///
/// ```
/// use std::sync::atomic::Ordering;
/// let hits = multiproc::Value::new(0u64)?;
/// // SAFETY: `hits` is only accessed atomically while `counter` is in use.
/// let counter = unsafe { hits.atomic() };
/// counter.fetch_add(1, Ordering::Relaxed);
/// assert_eq!(counter.load(Ordering::Relaxed), 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub trait AtomicPod: Pod + sealed::Sealed {
    /// The `std::sync::atomic` type of the same size and layout.
    type Atomic: Send + Sync;
}

macro_rules! atomic_pod {
    ($($t:ty => $a:ty),*) => { $(
        impl sealed::Sealed for $t {}
        impl AtomicPod for $t {
            type Atomic = $a;
        }
        const _: () = assert!(
            std::mem::size_of::<$t>() == std::mem::size_of::<$a>()
                && std::mem::align_of::<$t>() == std::mem::align_of::<$a>()
        );
    )* };
}
atomic_pod!(
    u8 => std::sync::atomic::AtomicU8, u16 => std::sync::atomic::AtomicU16,
    u32 => std::sync::atomic::AtomicU32, u64 => std::sync::atomic::AtomicU64,
    usize => std::sync::atomic::AtomicUsize, i8 => std::sync::atomic::AtomicI8,
    i16 => std::sync::atomic::AtomicI16, i32 => std::sync::atomic::AtomicI32,
    i64 => std::sync::atomic::AtomicI64, isize => std::sync::atomic::AtomicIsize
);

/// A lock followed by the data: at a 64-byte boundary in a segment of its own, right after the
/// head (aligned for `T`) in an arena slot. A value or array whose data fits in a slot lives in
/// the arena (like a `Lock`: no descriptor or mapping of its own); a larger one gets a segment.
#[repr(C)]
pub(crate) struct Head {
    lock: LockCell,
    /// Elements; written once by the creator. Handles read it once, when they are opened.
    len: AtomicU64,
}

/// Where the data of an object with a segment of its own starts, at the latest: a cache line
/// boundary, so that the lock and the data do not share a line.
const SEGMENT_DATA_ALIGN: usize = 64;

/// Offset of the first element from the head's start, for `T`, in an arena slot or not.
pub(super) const fn data_offset<T>(in_arena: bool) -> usize {
    let head = std::mem::size_of::<Head>();
    let align = if in_arena || std::mem::align_of::<T>() > SEGMENT_DATA_ALIGN {
        std::mem::align_of::<T>()
    } else {
        SEGMENT_DATA_ALIGN
    };
    head.div_ceil(align) * align
}

/// Bytes from the head's start to the end of `len` elements, in an arena slot or not.
fn object_bytes<T>(len: usize, in_arena: bool) -> Option<usize> {
    std::mem::size_of::<T>()
        .checked_mul(len)?
        .checked_add(data_offset::<T>(in_arena))
}

/// Whether `len` elements of `T` fit in an arena slot.
fn fits_arena<T>(len: usize) -> bool {
    std::mem::align_of::<T>() <= SLOT_ALIGN
        && object_bytes::<T>(len, true).is_some_and(|n| n <= SLOT_PAYLOAD)
}

pub(super) fn create<T: Pod>(
    kind: Kind,
    len: usize,
    fill: impl Fn(*mut T),
) -> Result<Shared<Head>> {
    let init = |p: *mut Head| {
        // SAFETY: both creators pass fresh (or freed), aligned memory sized for the head and
        // the elements, which nobody else uses yet.
        unsafe {
            LockCell::init(&raw mut (*p).lock, false)?;
            (&raw mut (*p).len).write(AtomicU64::new(len as u64));
        }
        Ok(())
    };
    let shared = if fits_arena::<T>(len) {
        Shared::create_in_arena(kind, type_tag::<T>(), init)?
    } else {
        let bytes = object_bytes::<T>(len, false)
            .map(|b| b - std::mem::size_of::<Head>())
            .ok_or_else(|| Error::new(ErrorKind::InvalidArgument, "array too large"))?;
        Shared::create(kind, type_tag::<T>(), bytes, init)?
    };
    fill(first_element::<T>(&shared).as_ptr());
    Ok(shared)
}

/// The first element of the object behind `shared`.
fn first_element<T>(shared: &Shared<Head>) -> NonNull<T> {
    shared.ptr_at_offset(data_offset::<T>(shared.in_arena()))
}

/// The lock and the data of a [`Value`] (`S` is `T`) or an [`Array`](crate::Array) (`S` is
/// `[T]`): what the two do alike, written once. Each handle has one (beside the `Shared` that
/// keeps the mapping alive); its public methods forward here.
pub(super) struct LockedData<S: ?Sized> {
    lock: Lock,
    ptr: NonNull<S>,
}

// SAFETY: the data is only accessed under the process-shared lock, by copy, or through atomics;
// `S` (a `Pod` or a slice of them) is `Send` and `Sync` itself.
unsafe impl<S: ?Sized + Send + Sync> Send for LockedData<S> {}
// SAFETY: as above.
unsafe impl<S: ?Sized + Send + Sync> Sync for LockedData<S> {}

impl<T: Pod> LockedData<T> {
    /// The single element of a `Value`'s object.
    pub(super) fn one(shared: &Shared<Head>) -> LockedData<T> {
        LockedData::new(shared, first_element(shared))
    }
}

impl<T: Pod> LockedData<[T]> {
    /// The `len` elements of an `Array`'s object (checked at creation or open).
    pub(super) fn many(shared: &Shared<Head>, len: usize) -> LockedData<[T]> {
        LockedData::new(
            shared,
            NonNull::slice_from_raw_parts(first_element(shared), len),
        )
    }
}

impl<S: ?Sized> LockedData<S> {
    fn new(shared: &Shared<Head>, ptr: NonNull<S>) -> LockedData<S> {
        LockedData {
            lock: Lock::from_cell(shared.handle_on_prefix()),
            ptr,
        }
    }

    /// The data, for atomic access.
    pub(super) fn ptr(&self) -> NonNull<S> {
        self.ptr
    }

    pub(super) fn get_lock(&self) -> &Lock {
        &self.lock
    }

    fn guard<'a>(&'a self, lock: LockGuard<'a>) -> DataGuard<'a, S> {
        DataGuard {
            _lock: lock,
            ptr: self.ptr,
            _marker: PhantomData,
        }
    }

    pub(super) fn lock(&self) -> LockResult<DataGuard<'_, S>> {
        self.lock.lock_into(|g| self.guard(g))
    }

    pub(super) fn try_lock(&self) -> TryLockResult<DataGuard<'_, S>> {
        self.lock.try_lock_into(|g| self.guard(g))
    }

    pub(super) fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<DataGuard<'_, S>> {
        self.lock_until(deadline_after(timeout))
    }

    pub(super) fn lock_until(
        &self,
        deadline: Option<Instant>,
    ) -> LockTimeoutResult<DataGuard<'_, S>> {
        self.lock.lock_until_into(deadline, |g| self.guard(g))
    }

    /// The guard for `get`/`set`-style accessors: a dead owner's state is accepted as it is
    /// (the indication stays for `lock`), a broken lock is the accessor's error.
    pub(super) fn locked(&self) -> Result<DataGuard<'_, S>> {
        self.lock().or_else(LockError::into_inner)
    }
}

/// Opens a `Value` (`kind` `Value`: exactly one element, whatever the shared length says) or an
/// `Array` (its length, read once here). The segment must hold that many elements; the length
/// returned is the one checked, never re-read from shared memory.
pub(super) fn open<T: Pod>(fd: OwnedFd, offset: u32, kind: Kind) -> Result<(Shared<Head>, usize)> {
    let shared: Shared<Head> = Shared::open_slot(fd, offset, &[kind], &[kind], type_tag::<T>())?;
    let len = if kind == Kind::Value {
        1
    } else {
        usize::try_from(shared.len.load(Ordering::Relaxed)).unwrap_or(usize::MAX)
    };
    let arena = shared.in_arena();
    let need = object_bytes::<T>(len, arena);
    if (arena && std::mem::align_of::<T>() > SLOT_ALIGN)
        || need.is_none_or(|n| n > shared.object_len())
    {
        return Err(Error::new(
            ErrorKind::BadHeader,
            "the shared value's segment is smaller than its elements need",
        ));
    }
    Ok((shared, len))
}

/// A `T` in shared memory with a lock: Python's `multiprocessing.Value`.
///
/// [`lock`](Self::lock) gives a guard that dereferences to the value (Python's
/// `with v.get_lock(): v.value += 1`); [`get`](Self::get) and [`set`](Self::set) each take the
/// lock once, as Python's `.value` does, so `v.set(v.get()? + 1)` is a race, exactly as there.
/// For integers, [`atomic`](Self::atomic) gives lock-free access.
///
/// If a process dies holding the lock, the next [`lock`](Self::lock) returns
/// [`LockError::OwnerDied`] with the guard (see [`Lock`]). `get`/`set` do not report it; they
/// see whatever was last written. All of them report a broken lock (its shared state
/// overwritten by another process, or this thread holding it already) as an error.
///
/// Clones are handles to the same value; pass one to a child as (part of) its
/// [`Process`](crate::Process) arguments.
///
/// # Examples
///
/// ```
/// let counter = multiproc::Value::new(0i64)?;
/// {
///     let mut n = counter.lock().unwrap();
///     *n += 1;
/// }
/// assert_eq!(counter.get()?, 1);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Value<T: Pod> {
    shared: Shared<Head>,
    data: LockedData<T>,
}

impl<T: Pod> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value::from_shared(self.shared.clone())
    }
}

/// Exclusive access to the data of a [`Value`] (`S` is its `T`) or an
/// [`Array`](crate::Array) (`S` is `[T]`) while its lock is held; it dereferences to `S`.
/// Usually named by its aliases [`ValueGuard`] and [`ArrayGuard`](crate::ArrayGuard).
///
/// # Examples
///
/// ```
/// let v = multiproc::Value::new(1u8)?;
/// let a = multiproc::Array::new(2, 1u8)?;
/// let g: multiproc::DataGuard<'_, u8> = v.lock().unwrap();
/// let h: multiproc::DataGuard<'_, [u8]> = a.lock().unwrap();
/// assert_eq!(*g, h[1]);
/// # Ok::<(), multiproc::Error>(())
/// ```
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct DataGuard<'a, S: ?Sized> {
    _lock: LockGuard<'a>,
    ptr: NonNull<S>,
    _marker: PhantomData<&'a mut S>,
}

/// Exclusive access to a [`Value`]'s data while the lock is held.
///
/// # Examples
///
/// ```
/// let v = multiproc::Value::new([0u8; 4])?;
/// let mut g: multiproc::ValueGuard<'_, [u8; 4]> = v.lock().unwrap();
/// g[2] = 9;
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type ValueGuard<'a, T> = DataGuard<'a, T>;

impl<T: Pod> Value<T> {
    /// The segment's descriptor (tests reopen it as other objects).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.shared.fd()
    }
    /// Puts `value` in shared memory with its own lock: in a free slot of this process's arena
    /// if it is small (up to 72 bytes), in an anonymous segment of its own otherwise.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if the segment cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(2.5f64)?;
    /// assert_eq!(v.get()?, 2.5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(value: T) -> Result<Value<T>> {
        let shared = create::<T>(Kind::Value, 1, |p| {
            // SAFETY: `create` sized the data for one T at this aligned address.
            unsafe { p.write(value) }
        })?;
        Ok(Value::from_shared(shared))
    }

    fn from_shared(shared: Shared<Head>) -> Value<T> {
        let data = LockedData::one(&shared);
        Value { shared, data }
    }

    /// The value's lock (Python's `get_lock()`), for example to build a
    /// [`Condition`](crate::Condition) over it. Locking it does not give access to the value:
    /// use [`lock`](Self::lock) for that.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(0u8)?;
    /// assert!(!v.get_lock().is_locked());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        self.data.get_lock()
    }

    /// Takes the lock and gives access to the value.
    ///
    /// # Errors
    /// As [`Lock::lock`]: [`LockError::OwnerDied`] (holding the guard) if a previous owner died
    /// holding the lock, [`LockError::Broken`] if this thread holds it already or its shared
    /// state was overwritten.
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32)?;
    /// *v.lock().unwrap() *= 10;
    /// assert_eq!(v.get()?, 10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ValueGuard<'_, T>> {
        self.data.lock()
    }

    /// Takes the lock if free.
    ///
    /// # Errors
    /// As [`Lock::try_lock`].
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32)?;
    /// assert_eq!(*v.try_lock().unwrap(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<ValueGuard<'_, T>> {
        self.data.try_lock()
    }

    /// Takes the lock, waiting at most `timeout`.
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// let v = multiproc::Value::new(1u32)?;
    /// assert_eq!(*v.lock_timeout(Duration::from_millis(1)).unwrap(), 1);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<ValueGuard<'_, T>> {
        self.data.lock_timeout(timeout)
    }

    /// Takes the lock, waiting until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(1u32)?;
    /// assert!(v.lock_deadline(std::time::Instant::now()).is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_deadline(&self, deadline: Instant) -> LockTimeoutResult<ValueGuard<'_, T>> {
        self.data.lock_until(Some(deadline))
    }

    /// Reads the value under the lock (Python's `v.value`). A previous owner's death is not
    /// reported (see [`lock`](Self::lock) for that): the value is whatever it last wrote.
    ///
    /// # Errors
    /// The error of [`LockError::Broken`]: this thread holds the lock already, or another
    /// process overwrote its shared state.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Value::new(7u16)?.get()?, 7);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self) -> Result<T> {
        self.data.locked().map(|g| *g)
    }

    /// Writes the value under the lock (Python's `v.value = x`).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    ///
    /// # Examples
    ///
    /// ```
    /// let v = multiproc::Value::new(0u16)?;
    /// v.set(3)?;
    /// assert_eq!(v.get()?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, value: T) -> Result<()> {
        *self.data.locked()? = value;
        Ok(())
    }
}

impl<T: AtomicPod> Value<T> {
    /// The value as an atomic, bypassing the lock: Python's `Value(..., lock=False)`.
    ///
    /// # Safety
    /// While the returned reference is used, nothing may access the value non-atomically, in
    /// any thread of any process: no [`ValueGuard`] of it may be alive and no
    /// [`get`](Self::get)/[`set`](Self::set) may run (those read and write it as a plain `T`,
    /// and mixing plain and atomic accesses is a data race). Holding the lock does not help:
    /// atomic users do not take it. Use the value either only through atomics (for example a
    /// counter every process `fetch_add`s) or only through the lock.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let v = multiproc::Value::new(5i32)?;
    /// // SAFETY: this value is only ever accessed through atomics after this point.
    /// let a = unsafe { v.atomic() };
    /// assert_eq!(a.swap(6, Ordering::AcqRel), 5);
    /// assert_eq!(a.load(Ordering::Acquire), 6);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub unsafe fn atomic(&self) -> &T::Atomic {
        // SAFETY: T and T::Atomic have the same size and alignment (checked at compile time);
        // the caller rules out non-atomic accesses while the reference is used.
        unsafe { self.data.ptr().cast::<T::Atomic>().as_ref() }
    }
}

impl<S: ?Sized> sealed::Sealed for DataGuard<'_, S> {}
impl<S: ?Sized> Recover for DataGuard<'_, S> {
    fn mark_consistent(&self) {
        self._lock.mark_consistent();
    }
}

impl<S: ?Sized> Deref for DataGuard<'_, S> {
    type Target = S;
    fn deref(&self) -> &S {
        // SAFETY: the lock is held, so no process writes the data through this API meanwhile;
        // the pointer covers the object's elements (checked at creation or open).
        unsafe { self.ptr.as_ref() }
    }
}

impl<S: ?Sized> DerefMut for DataGuard<'_, S> {
    fn deref_mut(&mut self) -> &mut S {
        // SAFETY: the lock is held, and the guard is borrowed mutably.
        unsafe { self.ptr.as_mut() }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.get() {
            Ok(v) => f.debug_struct("Value").field("value", &v).finish(),
            Err(_) => f.debug_struct("Value").finish_non_exhaustive(),
        }
    }
}

impl<S: ?Sized + fmt::Debug> fmt::Debug for DataGuard<'_, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

shared_handle!(
    /// A value travels as its segment's descriptor and its arena slot's offset.
    [T: Pod] Value<T>, shared, u32,
    |this| this.shared.slot_wire(),
    |fd, offset| {
        let (shared, _) = open::<T>(fd, offset, Kind::Value)?;
        Ok(Value::from_shared(shared))
    },
);
