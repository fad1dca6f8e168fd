//! `Array`: a fixed-length array of plain-old-data in shared memory behind one lock. It shares
//! its layout, creation and opening with [`Value`](super::Value) (see `value.rs`).

use std::fmt;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;

use super::error::{LockResult, LockTimeoutResult, TryLockResult};
use super::lock::Lock;
use super::value::{AtomicPod, DataGuard, Head, LockedData, Pod, create, open};
use crate::error::Result;
use crate::shm::{Kind, Shared};

/// A fixed-length array of `T` in shared memory with one lock: Python's
/// `multiprocessing.Array`.
///
/// [`lock`](Self::lock) gives a guard that dereferences to `[T]`; [`get`](Self::get),
/// [`set`](Self::set), [`to_vec`](Self::to_vec) and [`copy_from_slice`](Self::copy_from_slice)
/// each take the lock once. For integers, [`atomics`](Self::atomics) gives lock-free access.
/// Owner death is reported by [`lock`](Self::lock) as for [`Value`](crate::Value).
///
/// # Examples
///
/// ```
/// let a = multiproc::Array::new(4, 0u32)?;
/// a.set(1, 5)?;
/// a.lock().unwrap()[2] = 6;
/// assert_eq!(a.to_vec()?, [0, 5, 6, 0]);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub struct Array<T: Pod> {
    shared: Shared<Head>,
    data: LockedData<[T]>,
}

impl<T: Pod> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array::from_shared(self.shared.clone(), self.len())
    }
}

/// Exclusive access to an [`Array`]'s elements while the lock is held.
///
/// # Examples
///
/// ```
/// let a = multiproc::Array::new(3, 1u8)?;
/// let g: multiproc::ArrayGuard<'_, u8> = a.lock().unwrap();
/// assert_eq!(g.iter().sum::<u8>(), 3);
/// # Ok::<(), multiproc::Error>(())
/// ```
pub type ArrayGuard<'a, T> = DataGuard<'a, [T]>;

impl<T: Pod> Array<T> {
    /// The segment's descriptor (tests reopen it as other objects).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn segment_fd(&self) -> &std::os::fd::OwnedFd {
        self.shared.fd()
    }
    /// An array of `len` copies of `fill`, with its own lock.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`](crate::ErrorKind::InvalidArgument) if the size overflows; [`ErrorKind::Io`](crate::ErrorKind::Io) if the segment
    /// cannot be created.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(1000, 0.0f32)?;
    /// assert_eq!(a.len(), 1000);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(len: usize, fill: T) -> Result<Array<T>> {
        let shared = create::<T>(Kind::Array, len, |p| {
            for i in 0..len {
                // SAFETY: `create` sized the data for `len` elements from this aligned address.
                unsafe { p.add(i).write(fill) }
            }
        })?;
        Ok(Array::from_shared(shared, len))
    }

    /// An array holding a copy of `items`.
    ///
    /// # Errors
    /// As [`new`](Self::new).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::from_slice(&[1u64, 2, 3])?;
    /// assert_eq!(a.get(2)?, 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn from_slice(items: &[T]) -> Result<Array<T>> {
        let shared = create::<T>(Kind::Array, items.len(), |p| {
            // SAFETY: `create` sized the data for `items.len()` elements; private source.
            unsafe { std::ptr::copy_nonoverlapping(items.as_ptr(), p, items.len()) }
        })?;
        Ok(Array::from_shared(shared, items.len()))
    }

    fn from_shared(shared: Shared<Head>, len: usize) -> Array<T> {
        let data = LockedData::many(&shared, len);
        Array { shared, data }
    }

    /// The number of elements.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Array::new(3, 0u8)?.len(), 3);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.data.ptr().len()
    }

    /// True for an empty array.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::Array::<u8>::new(0, 0)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The array's lock (Python's `get_lock()`).
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(1, 0u8)?;
    /// let _held = a.get_lock().lock().unwrap();
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get_lock(&self) -> &Lock {
        self.data.get_lock()
    }

    /// Takes the lock and gives access to the elements.
    ///
    /// # Errors
    /// As [`Lock::lock`]: [`LockError::OwnerDied`](crate::LockError::OwnerDied) (holding the guard) if a previous owner died
    /// holding the lock, [`LockError::Broken`](crate::LockError::Broken) if this thread holds it already or its shared
    /// state was overwritten.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(2, 0i8)?;
    /// a.lock().unwrap().copy_from_slice(&[-1, 1]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock(&self) -> LockResult<ArrayGuard<'_, T>> {
        self.data.lock()
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
    /// let a = multiproc::Array::new(2, 0i8)?;
    /// assert!(a.lock_timeout(Duration::from_millis(1)).is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_timeout(&self, timeout: Duration) -> LockTimeoutResult<ArrayGuard<'_, T>> {
        self.data.lock_timeout(timeout)
    }

    /// Takes the lock if free, without blocking.
    ///
    /// # Errors
    /// As [`Lock::try_lock`].
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(2, 0i8)?;
    /// let held = a.try_lock().unwrap();
    /// assert!(matches!(a.try_lock(), Err(multiproc::TryLockError::WouldBlock)));
    /// # drop(held);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn try_lock(&self) -> TryLockResult<ArrayGuard<'_, T>> {
        self.data.try_lock()
    }

    /// Takes the lock, waiting until `deadline` at the latest.
    ///
    /// # Errors
    /// As [`Lock::lock_timeout`].
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(2, 0i8)?;
    /// assert!(a.lock_deadline(std::time::Instant::now()).is_ok());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn lock_deadline(&self, deadline: Instant) -> LockTimeoutResult<ArrayGuard<'_, T>> {
        self.data.lock_until(Some(deadline))
    }

    fn locked(&self) -> Result<ArrayGuard<'_, T>> {
        self.data.locked()
    }

    /// Element `index`, read under the lock (a previous owner's death is not reported, as for
    /// [`Value::get`](crate::Value::get)).
    ///
    /// # Errors
    /// As [`Value::get`](crate::Value::get): the lock is broken.
    ///
    /// # Panics
    /// If `index >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Array::new(2, 4u8)?.get(1)?, 4);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Result<T> {
        Ok(self.locked()?[index])
    }

    /// Writes element `index` under the lock.
    ///
    /// # Errors
    /// As [`Value::get`](crate::Value::get): the lock is broken.
    ///
    /// # Panics
    /// If `index >= len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(2, 0u8)?;
    /// a.set(0, 1)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn set(&self, index: usize, value: T) -> Result<()> {
        self.locked()?[index] = value;
        Ok(())
    }

    /// A copy of all elements, taken under the lock.
    ///
    /// # Errors
    /// As [`Value::get`](crate::Value::get): the lock is broken.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::Array::new(2, 1u8)?.to_vec()?, [1, 1]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.locked()?.to_vec())
    }

    /// Overwrites all elements under the lock.
    ///
    /// # Errors
    /// As [`Value::get`](crate::Value::get): the lock is broken.
    ///
    /// # Panics
    /// If `items.len() != len()`.
    ///
    /// # Examples
    ///
    /// ```
    /// let a = multiproc::Array::new(2, 0u8)?;
    /// a.copy_from_slice(&[3, 4])?;
    /// assert_eq!(a.to_vec()?, [3, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn copy_from_slice(&self, items: &[T]) -> Result<()> {
        self.locked()?.copy_from_slice(items);
        Ok(())
    }
}

impl<T: AtomicPod> Array<T> {
    /// The elements as atomics, bypassing the lock.
    ///
    /// # Safety
    /// As for [`Value::atomic`](crate::Value::atomic): while the slice is used, no [`ArrayGuard`] of this array may
    /// be alive and no `get`/`set`/`to_vec`/`copy_from_slice` may run, in any thread of any
    /// process.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let a = multiproc::Array::new(4, 0u32)?;
    /// // SAFETY: the array is only ever accessed through atomics after this point.
    /// let slots = unsafe { a.atomics() };
    /// slots[3].fetch_add(2, Ordering::Relaxed);
    /// assert_eq!(slots[3].load(Ordering::Relaxed), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub unsafe fn atomics(&self) -> &[T::Atomic] {
        // SAFETY: as in `Value::atomic`, for `len` consecutive elements (checked at open).
        unsafe {
            std::slice::from_raw_parts(self.data.ptr().cast::<T::Atomic>().as_ptr(), self.len())
        }
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Array")
            .field("len", &self.len())
            .finish_non_exhaustive()
    }
}

shared_handle!(
    /// An array travels as its segment's descriptor and its arena slot's offset; its length is
    /// read back from the shared header and checked against the segment.
    [T: Pod] Array<T>, shared, u32,
    |this| this.shared.slot_wire(),
    |fd, offset| {
        let (shared, len) = open::<T>(fd, offset, Kind::Array)?;
        Ok(Array::from_shared(shared, len))
    },
);
