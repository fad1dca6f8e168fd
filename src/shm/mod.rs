//! Shared memory segments: anonymous (memfd, the default) or named (`/dev/shm`).

mod arena;
mod copy;
mod region;
mod shared;
#[cfg(all(test, not(loom)))]
mod tests;

use crate::atomic::Ordering;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};

use crate::error::{Error, ErrorKind, Result};
use crate::handles::{self, Handle};
use crate::sys;

pub(crate) use arena::{note_fork, note_whole_fork};
pub(crate) use region::{HEADER_LEN, Kind, NO_TYPE_TAG, Region, Sealing, type_tag};
pub(crate) use shared::{SLOT_ALIGN, SLOT_PAYLOAD, Shared};

/// Prefix of the temporary names under which named segments are built before they are published.
const TEMP_PREFIX: &str = ".multiproc-";

/// A block of memory shared between processes, like Python's
/// `multiprocessing.shared_memory.SharedMemory`.
///
/// - **Anonymous** ([`SharedMemory::new`], the default) segments live in a `memfd`: they have no
///   name, reach children as [`Process`](crate::Process) arguments, and the kernel frees them with
///   the last handle, even after a crash. Nothing can leak into `/dev/shm`.
/// - **Named** ([`SharedMemory::create`], [`SharedMemory::open`]) segments live in `/dev/shm`
///   so that unrelated processes can meet. They are created with `O_EXCL` and mode `0600`
///   (unreadable to other users). The creator owns the name and removes it when its last handle
///   is dropped, unless [`persist`](Self::persist) was called; attachers never remove it.
///
/// Every segment starts with a small header (magic number, layout version, size, creator) that
/// [`open`](Self::open) checks, so opening a foreign or truncated segment is an
/// [`ErrorKind::BadHeader`] error, not garbage.
///
/// Cloning gives another handle to the same mapping.
///
/// # Accessing the bytes
///
/// Other processes may write the memory at any moment, so there is no safe `&[u8]` over it.
/// [`read_at`](Self::read_at) and [`write_at`](Self::write_at) copy in and out (a `memcpy`);
/// [`atomic_u64s`](Self::atomic_u64s) and [`atomic_u32s`](Self::atomic_u32s) view it as
/// atomics; [`as_slice`](Self::as_slice) and [`as_mut_slice`](Self::as_mut_slice) are `unsafe`
/// and leave the coordination to you (typically a [`Lock`](crate::Lock)). For typed values with a
/// lock, use [`Value`](crate::Value) and [`Array`](crate::Array).
///
/// # Examples
///
/// ```
/// use multiproc::SharedMemory;
///
/// let shm = SharedMemory::new(4096)?;
/// shm.write_at(0, b"hello");
/// let mut buf = [0u8; 5];
/// shm.read_at(0, &mut buf);
/// assert_eq!(&buf, b"hello");
/// # Ok::<(), multiproc::Error>(())
/// ```
#[derive(Clone)]
pub struct SharedMemory {
    inner: Arc<Inner>,
}

struct Inner {
    region: Region,
    /// The name without the leading `/`, for named segments.
    name: Option<String>,
    /// This handle's process created the name and removes it on drop.
    owner: bool,
    unlinked: AtomicBool,
}

impl SharedMemory {
    /// Creates an anonymous segment of `size` bytes, zero-filled.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] if `size` cannot be mapped; [`ErrorKind::Io`] if the OS
    /// refuses (out of memory, descriptor limit).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(1 << 20)?;
    /// assert_eq!(shm.len(), 1 << 20);
    /// assert_eq!(shm.name(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn new(size: usize) -> Result<SharedMemory> {
        let region = Region::anonymous(Kind::Bytes, size, 0)?;
        Ok(SharedMemory::from_parts(region, None, false))
    }

    /// Creates the named segment `name` of `size` bytes, zero-filled; fails if the name exists.
    ///
    /// Names are 1 to 200 characters from `A-Z a-z 0-9 . _ -`, not starting with `.`; a leading
    /// `/` (POSIX style) is accepted and dropped. The segment is built under a temporary name
    /// and published under `name` in one step, so an attacher never sees it half-initialized.
    ///
    /// # Errors
    /// [`ErrorKind::AlreadyExists`] if the name is taken, [`ErrorKind::InvalidArgument`] for a
    /// bad name or size, [`ErrorKind::PermissionDenied`] or [`ErrorKind::Io`] from the OS.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    ///
    /// let name = format!("doc-create-{}", std::process::id());
    /// let shm = SharedMemory::create(&name, 64)?;
    /// assert_eq!(shm.name(), Some(name.as_str()));
    /// let again = SharedMemory::create(&name, 64).unwrap_err();
    /// assert_eq!(again.kind(), ErrorKind::AlreadyExists);
    /// // Dropping the creator's last handle removes the name.
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create(name: &str, size: usize) -> Result<SharedMemory> {
        let name = validate_name(name)?;
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let temp = format!(
            "{TEMP_PREFIX}{}-{}",
            sys::getpid(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let temp_c = posix_name(&temp);
        let fd = sys::shm_create_exclusive(&temp_c)
            .map_err(|e| Error::os("cannot create a shared memory segment", e))?;
        let built = Region::init(fd, Kind::Bytes, size, 0);
        let published = built.and_then(|region| {
            sys::shm_link(&temp, name)
                .map_err(|e| {
                    Error::os(
                        format!("cannot create the shared memory segment {name:?}"),
                        e,
                    )
                })
                .map(|()| region)
        });
        let _ = sys::shm_unlink(&temp_c);
        Ok(SharedMemory::from_parts(
            published?,
            Some(name.to_string()),
            true,
        ))
    }

    /// Creates a named segment under a fresh unique name (like Python's `SharedMemory(create=True)`
    /// without a name); [`name`](Self::name) tells it.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create_unique(128)?;
    /// assert!(shm.name().unwrap().starts_with("mp-"));
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn create_unique(size: usize) -> Result<SharedMemory> {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "mp-{}-{}-{nanos:08x}",
                sys::getpid(),
                COUNTER.fetch_add(1, Ordering::Relaxed)
            );
            match SharedMemory::create(&name, size) {
                Err(e) if e.kind() == ErrorKind::AlreadyExists => continue,
                r => return r,
            }
        }
    }

    /// Attaches to the named segment `name`. The attacher never removes the name.
    ///
    /// # Errors
    /// [`ErrorKind::NotFound`] if there is no such segment, [`ErrorKind::PermissionDenied`] if
    /// it belongs to another user, [`ErrorKind::BadHeader`] if it is not a multiproc segment
    /// (or of another version) or is truncated, [`ErrorKind::InvalidArgument`] for a bad name.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    ///
    /// let name = format!("doc-open-{}", std::process::id());
    /// let creator = SharedMemory::create(&name, 16)?;
    /// creator.write_at(0, &[7; 16]);
    /// let attached = SharedMemory::open(&name)?;
    /// let mut buf = [0; 16];
    /// attached.read_at(0, &mut buf);
    /// assert_eq!(buf, [7; 16]);
    /// assert_eq!(SharedMemory::open("no-such-segment").unwrap_err().kind(), ErrorKind::NotFound);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<SharedMemory> {
        let name = validate_name(name)?;
        let fd = sys::shm_open_existing(&posix_name(name), true)
            .map_err(|e| Error::os(format!("cannot open the shared memory segment {name:?}"), e))?;
        let region = Region::open(fd, Kind::Bytes, 0, Sealing::NotAvailable)?;
        Ok(SharedMemory::from_parts(
            region,
            Some(name.to_string()),
            false,
        ))
    }

    fn from_parts(region: Region, name: Option<String>, owner: bool) -> SharedMemory {
        SharedMemory {
            inner: Arc::new(Inner {
                region,
                name,
                owner,
                unlinked: AtomicBool::new(false),
            }),
        }
    }

    /// The segment's size in bytes (without the header), as requested at creation.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::new(10)?.len(), 10);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.inner.region.data_len()
    }

    /// True for a segment of size 0.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::SharedMemory::new(0)?.is_empty());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of a named segment (without a leading `/`); `None` for an anonymous one.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::SharedMemory::new(1)?.name(), None);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// True if this process created the (named) segment and so owns its name.
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create_unique(1)?;
    /// assert!(shm.is_owner());
    /// assert!(!multiproc::SharedMemory::open(shm.name().unwrap())?.is_owner());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn is_owner(&self) -> bool {
        self.inner.owner
    }

    /// Removes the name of a named segment now; the memory stays mapped in every process that
    /// has it. Idempotent: returns `Ok(true)` if this call removed the name, `Ok(false)` if it
    /// was already gone (or the segment is anonymous).
    ///
    /// # Errors
    /// [`ErrorKind::NotOwner`] when called on a handle that attached to the segment rather than
    /// creating it: attachers never remove a name (use [`unlink_name`](Self::unlink_name) to do
    /// so on purpose).
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    ///
    /// let shm = SharedMemory::create_unique(8)?;
    /// let name = shm.name().unwrap().to_string();
    /// let attached = SharedMemory::open(&name)?;
    /// assert_eq!(attached.unlink().unwrap_err().kind(), ErrorKind::NotOwner);
    /// assert!(shm.unlink()?);
    /// assert!(!shm.unlink()?);
    /// assert_eq!(SharedMemory::open(&name).unwrap_err().kind(), ErrorKind::NotFound);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink(&self) -> Result<bool> {
        let Some(name) = &self.inner.name else {
            return Ok(false);
        };
        if !self.inner.owner {
            return Err(Error::new(
                ErrorKind::NotOwner,
                format!(
                    "only the creator of the shared memory segment {name:?} removes its name; \
                     this handle attached to it"
                ),
            ));
        }
        if self.inner.unlinked.swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        match sys::shm_unlink(&posix_name(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => {
                self.inner.unlinked.store(false, Ordering::Release);
                Err(Error::os(
                    format!("cannot remove the shared memory segment {name:?}"),
                    e,
                ))
            }
        }
    }

    /// Removes the named segment `name`, whoever created it. Returns `Ok(false)` if it did not
    /// exist. For cleaning up on purpose; handles keep their mappings.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidArgument`] for a bad name, [`ErrorKind::PermissionDenied`] or
    /// [`ErrorKind::Io`] from the OS.
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::create_unique(8)?;
    /// shm.persist()?;
    /// let name = shm.name().unwrap().to_string();
    /// drop(shm);
    /// assert!(multiproc::SharedMemory::unlink_name(&name)?);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn unlink_name(name: &str) -> Result<bool> {
        let name = validate_name(name)?;
        match sys::shm_unlink(&posix_name(name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(Error::os(
                format!("cannot remove the shared memory segment {name:?}"),
                e,
            )),
        }
    }

    /// Keeps a named segment after its creator's handles are gone (and after the creator
    /// exits): the name is no longer removed on drop, and [`remove_stale`](Self::remove_stale)
    /// leaves it alone. No effect on anonymous segments.
    ///
    /// # Errors
    /// [`ErrorKind::NotOwner`] on a handle that attached to the segment: only its creator
    /// decides whether the name outlives it.
    ///
    /// # Examples
    ///
    /// ```
    /// use multiproc::{ErrorKind, SharedMemory};
    ///
    /// let shm = SharedMemory::create_unique(8)?;
    /// let name = shm.name().unwrap().to_string();
    /// let attached = SharedMemory::open(&name)?;
    /// assert_eq!(attached.persist().unwrap_err().kind(), ErrorKind::NotOwner);
    /// shm.persist()?;
    /// drop((shm, attached));
    /// let again = SharedMemory::open(&name)?;
    /// SharedMemory::unlink_name(&name)?;
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn persist(&self) -> Result<()> {
        let Some(name) = &self.inner.name else {
            return Ok(());
        };
        if !self.inner.owner {
            return Err(Error::new(
                ErrorKind::NotOwner,
                format!(
                    "only the creator of the shared memory segment {name:?} can make it \
                     persistent; this handle attached to it"
                ),
            ));
        }
        self.inner.region.set_persistent(true);
        Ok(())
    }

    /// Removes named segments of this user whose creator process has died without removing
    /// them (a crash, a SIGKILL), and leftovers of creations interrupted the same way.
    /// Segments marked with [`persist`](Self::persist), segments of live creators and files that
    /// are not multiproc segments are left alone. Returns the names removed.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] if `/dev/shm` cannot be listed.
    ///
    /// # Examples
    ///
    /// ```
    /// let removed = multiproc::SharedMemory::remove_stale()?;
    /// println!("removed {} stale segments", removed.len());
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn remove_stale() -> Result<Vec<String>> {
        let dir =
            std::fs::read_dir("/dev/shm").map_err(|e| Error::os("cannot list /dev/shm", e))?;
        let me = sys::geteuid();
        let mut removed = Vec::new();
        for entry in dir.flatten() {
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if is_stale(&name, me) && sys::shm_unlink(&posix_name(&name)).is_ok() {
                removed.push(name);
            }
        }
        Ok(removed)
    }

    /// Address of the first byte. Reading or writing through it is up to you (see
    /// [`as_mut_slice`](Self::as_mut_slice) for the rules).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(8)?;
    /// assert_eq!(shm.as_ptr() as usize % 64, 0);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn as_ptr(&self) -> *mut u8 {
        self.inner.region.data().as_ptr()
    }

    /// The segment as a byte slice.
    ///
    /// # Safety
    /// While the slice lives, no process may write the bytes it covers (coordinate with a
    /// [`Lock`](crate::Lock) or another protocol).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(4)?;
    /// // SAFETY: nobody else has this segment.
    /// assert_eq!(unsafe { shm.as_slice() }, &[0, 0, 0, 0]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping holds `len` readable bytes for as long as `self`; the caller rules
        // out concurrent writes.
        unsafe { std::slice::from_raw_parts(self.as_ptr(), self.len()) }
    }

    /// The segment as a mutable byte slice.
    ///
    /// # Safety
    /// While the slice lives, no other process or thread may read or write the bytes it covers,
    /// and no other slice from `as_slice`/`as_mut_slice` may overlap it.
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(4)?;
    /// // SAFETY: nobody else has this segment.
    /// unsafe { shm.as_mut_slice() }.copy_from_slice(&[1, 2, 3, 4]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice(&self) -> &mut [u8] {
        // SAFETY: the mapping holds `len` writable bytes for as long as `self`; the caller
        // guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.as_ptr(), self.len()) }
    }

    /// Copies `buf.len()` bytes starting at `offset` into `buf`.
    ///
    /// The segment's bytes are read as (relaxed) atomic 8-byte words, so a concurrent write by
    /// another process, [`write_at`](Self::write_at) or an [`atomic_u64s`](Self::atomic_u64s)
    /// view is not a data race. If one happens, `buf` may hold a mix of old and new bytes (use
    /// a [`Lock`](crate::Lock) to prevent it); it never holds anything else.
    ///
    /// # Panics
    /// If `offset + buf.len()` exceeds [`len`](Self::len).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(8)?;
    /// shm.write_at(4, &[9, 9]);
    /// let mut buf = [0; 3];
    /// shm.read_at(3, &mut buf);
    /// assert_eq!(buf, [0, 9, 9]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) {
        self.check_range(offset, buf.len());
        // SAFETY: the range is inside the data (checked), which starts 128-aligned, so every
        // 8-byte word overlapping it is in a mapped page while `self` lives; the safe API only
        // ever accesses the segment as 8-byte atomics (`atomic_u32s` is unsafe for that reason).
        unsafe { copy::copy_out(self.as_ptr().add(offset), buf) };
    }

    /// Copies `data` into the segment starting at `offset`.
    ///
    /// The bytes are stored as (relaxed) atomic 8-byte words (a word shared with bytes outside
    /// the range is updated with a compare-and-swap), so concurrent readers and writers are
    /// not a data race; they may see a mix of old and new bytes (use a [`Lock`](crate::Lock)
    /// to prevent it).
    ///
    /// # Panics
    /// If `offset + data.len()` exceeds [`len`](Self::len).
    ///
    /// # Examples
    ///
    /// ```
    /// let shm = multiproc::SharedMemory::new(2)?;
    /// shm.write_at(0, &[1, 2]);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn write_at(&self, offset: usize, data: &[u8]) {
        self.check_range(offset, data.len());
        // SAFETY: as in `read_at`.
        unsafe { copy::copy_in(data, self.as_ptr().add(offset)) };
    }

    fn check_range(&self, offset: usize, len: usize) {
        let end = offset.checked_add(len);
        assert!(
            end.is_some_and(|e| e <= self.len()),
            "range {offset}..{offset}+{len} is outside a shared memory segment of {} bytes",
            self.len()
        );
    }

    /// The segment as 64-bit atomics (its first `len / 8` words): safe to use from any process
    /// at any time, together with [`read_at`](Self::read_at) and [`write_at`](Self::write_at),
    /// which access the segment as the same 8-byte atomic words.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = multiproc::SharedMemory::new(64)?;
    /// shm.atomic_u64s()[1].fetch_add(5, Ordering::SeqCst);
    /// assert_eq!(shm.atomic_u64s()[1].load(Ordering::SeqCst), 5);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub fn atomic_u64s(&self) -> &[AtomicU64] {
        // SAFETY: the data is 128-byte aligned and `len / 8` words fit in it; atomics may alias
        // memory that other processes access atomically.
        unsafe {
            std::slice::from_raw_parts(
                self.as_ptr().cast(),
                self.len() / std::mem::size_of::<AtomicU64>(),
            )
        }
    }

    /// The segment as 32-bit atomics (its first `len / 4` words).
    ///
    /// # Safety
    /// While the slice is used, no access of another size may race with it on the same bytes
    /// in this process: [`read_at`](Self::read_at), [`write_at`](Self::write_at) and
    /// [`atomic_u64s`](Self::atomic_u64s) access the segment as 8-byte atomic words, and Rust's
    /// memory model leaves racing atomic accesses of different sizes undefined. Use the bytes
    /// a 32-bit view covers only through 32-bit views (other processes are not bound by this
    /// process's memory model, but keep to one size there too).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::atomic::Ordering;
    /// let shm = multiproc::SharedMemory::new(8)?;
    /// // SAFETY: this segment is only ever accessed as 32-bit atomics.
    /// let words = unsafe { shm.atomic_u32s() };
    /// words[0].store(3, Ordering::Release);
    /// assert_eq!(words.len(), 2);
    /// # Ok::<(), multiproc::Error>(())
    /// ```
    pub unsafe fn atomic_u32s(&self) -> &[AtomicU32] {
        // SAFETY: as in `atomic_u64s`.
        unsafe {
            std::slice::from_raw_parts(
                self.as_ptr().cast(),
                self.len() / std::mem::size_of::<AtomicU32>(),
            )
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(name) = &self.name
            && self.owner
            && !self.region.is_persistent()
            && !self.unlinked.load(Ordering::Acquire)
        {
            let _ = sys::shm_unlink(&posix_name(name));
        }
    }
}

impl std::fmt::Debug for SharedMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemory")
            .field("name", &self.inner.name)
            .field("len", &self.len())
            .field("owner", &self.inner.owner)
            .finish()
    }
}

/// The longest segment name accepted (without the leading `/`), well below the 255 bytes a
/// file name in `/dev/shm` may have, leaving room for the temporary names of `create`.
const MAX_NAME_LEN: usize = 200;

/// Checks a user-supplied segment name and strips a leading `/`.
fn validate_name(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let ok = !bare.is_empty()
        && bare.len() <= MAX_NAME_LEN
        && !bare.starts_with('.')
        && bare
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(bare)
    } else {
        Err(Error::new(
            ErrorKind::InvalidArgument,
            format!(
                "invalid shared memory name {name:?}: use 1 to {MAX_NAME_LEN} characters from \
                 A-Z a-z 0-9 . _ -, not starting with '.'"
            ),
        ))
    }
}

/// Copies `dst.len()` bytes out of the shared words `src` (the bytes in memory order), as
/// [`SharedMemory::read_at`] does: for the crate's own layouts whose data is a run of words.
///
/// # Panics
/// If `dst` is longer than the words.
pub(crate) fn read_words(src: &[AtomicU64], dst: &mut [u8]) {
    assert!(
        dst.len() <= std::mem::size_of_val(src),
        "a read past the words"
    );
    // SAFETY: the words are mapped while borrowed and, being `AtomicU64`s, accessed as 8-byte
    // atomics by this process (other processes are not bound by its memory model).
    unsafe { copy::copy_out(src.as_ptr().cast(), dst) };
}

/// Copies `src` into the shared words `dst` (the bytes in memory order), as
/// [`SharedMemory::write_at`] does.
///
/// # Panics
/// If `src` is longer than the words.
pub(crate) fn write_words(dst: &[AtomicU64], src: &[u8]) {
    assert!(
        src.len() <= std::mem::size_of_val(dst),
        "a write past the words"
    );
    // SAFETY: as in `read_words`; `copy_in` writes only through the atomics.
    unsafe { copy::copy_in(src, dst.as_ptr().cast_mut().cast()) };
}

fn posix_name(name: &str) -> CString {
    CString::new(format!("/{name}")).expect("validated names contain no NUL")
}

/// A segment is stale if its creator (pid and start time) no longer exists and it was not made
/// persistent; a temporary name is stale if the process that made it is gone.
///
/// Nothing found in `/dev/shm` is trusted: the entry is opened without following links and
/// without blocking (a FIFO would wait for a writer forever), its type and owner are checked
/// before anything is read, and the header is read with `pread` (a file truncated meanwhile
/// gives a short read, where a mapping would give SIGBUS).
fn is_stale(name: &str, uid: u32) -> bool {
    let alive = |pid: i32, start: u64| {
        sys::process_start_time(pid).is_some_and(|s| start == 0 || s == start)
    };
    if let Some(rest) = name.strip_prefix(TEMP_PREFIX) {
        let pid = rest.split('-').next().and_then(|p| p.parse::<i32>().ok());
        return pid.is_some_and(|p| !alive(p, 0));
    }
    let Ok(fd) = sys::shm_open_inspect(&posix_name(name)) else {
        return false;
    };
    let Ok(info) = sys::file_info(fd.as_fd()) else {
        return false;
    };
    if !info.regular || info.uid != uid {
        return false;
    }
    let Some(header) = region::read_header(fd.as_fd()) else {
        return false;
    };
    let (pid, start, persistent) = header.creator_info();
    header.is_ours() && !persistent && !alive(pid, start)
}

/// A segment travels as its descriptor and its name (a named segment cannot be sealed; an
/// anonymous one must be).
impl Handle for SharedMemory {
    type Wire = Option<String>;
    fn descriptor(&self) -> BorrowedFd<'_> {
        self.inner.region.fd().as_fd()
    }
    fn wire(&self) -> std::result::Result<Option<String>, String> {
        Ok(self.inner.name.clone())
    }
    fn import(fd: OwnedFd, name: Option<String>) -> Result<Self> {
        let sealing = if name.is_some() {
            Sealing::NotAvailable
        } else {
            Sealing::Required
        };
        let region = Region::open(fd, Kind::Bytes, 0, sealing)?;
        Ok(SharedMemory::from_parts(region, name, false))
    }
}
handles::handle_serde!([] SharedMemory);
