//! A mapped segment with our header: the storage under `SharedMemory` and every sync object.

use crate::atomic::Ordering;
use std::ffi::CString;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// "MPSHMSEG" read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MPSHMSEG");
/// Bumped whenever the header or a shared state layout changes.
pub(crate) const VERSION: u32 = 3;
/// Bytes before the data. A multiple of 128 so the data is aligned for anything we place there.
pub(crate) const HEADER_LEN: usize = 128;

/// What a segment holds; checked when a handle is opened so that a lock's segment cannot be read
/// as a semaphore's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Bytes = 1,
    Lock = 2,
    RLock = 3,
    Semaphore = 4,
    Event = 5,
    Condition = 6,
    Barrier = 7,
    Value = 8,
    Array = 9,
    Queue = 10,
    /// Many small objects, one per slot (`shm/arena.rs`).
    Arena = 11,
    /// A manager connection's request/response slot (`manager/slot.rs`).
    ManagerSlot = 12,
}

/// The first `HEADER_LEN` bytes of every segment. Fields are written once by the creator before
/// any other process can see the segment, except `persistent`.
#[repr(C)]
pub(crate) struct Header {
    magic: u64,
    version: u32,
    kind: u32,
    header_len: u32,
    _pad: u32,
    data_len: u64,
    /// A hash of the Rust type stored (for `Value<T>`, `Array<T>`, queues), [`NO_TYPE_TAG`]
    /// for none.
    type_tag: u64,
    creator_pid: i32,
    /// Set when the creator chose to leave a named segment behind on purpose.
    pub(crate) persistent: AtomicU32,
    /// The creator's start time (see `sys::process_start_time`), to tell it from a reused pid.
    creator_start: u64,
}

impl Header {
    /// Whether this is a multiproc header (magic number) of this layout version.
    pub(crate) fn is_ours(&self) -> bool {
        self.magic == MAGIC && self.version == VERSION
    }

    /// Creator pid, creator start time, and whether the segment was made persistent.
    pub(crate) fn creator_info(&self) -> (i32, u64, bool) {
        (
            self.creator_pid,
            self.creator_start,
            self.persistent.load(Ordering::Acquire) != NOT_PERSISTENT,
        )
    }
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

/// Offset of `Header::persistent`, for reading it from the file without a mapping.
const PERSISTENT_AT: usize = std::mem::offset_of!(Header, persistent);

/// `Header::persistent` of a segment whose name goes with its creator's last handle (any other
/// value: it stays, as `persist()` asked).
const NOT_PERSISTENT: u32 = 0;

/// Reads the header of the segment behind `fd` with `pread`: a truncated file gives `None`,
/// never SIGBUS. The copy is private, so peers writing the segment cannot change it under us.
pub(crate) fn read_header(fd: BorrowedFd<'_>) -> Option<Header> {
    let mut raw = [0u8; std::mem::size_of::<Header>()];
    match sys::read_file_at(fd, 0, &mut raw) {
        Ok(n) if n == raw.len() => {}
        _ => return None,
    }
    // SAFETY: `Header` is `repr(C)` of integers and an `AtomicU32`, for which every bit
    // pattern is valid; `raw` holds exactly one.
    Some(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<Header>()) })
}

/// Whether the segment behind `fd` is marked persistent, read from the file rather than a
/// mapping (so that a truncated named segment cannot kill us with SIGBUS).
pub(crate) fn read_persistent(fd: BorrowedFd<'_>) -> bool {
    let mut raw = [0u8; std::mem::size_of::<u32>()];
    matches!(sys::read_file_at(fd, PERSISTENT_AT, &mut raw), Ok(n) if n == raw.len())
        && u32::from_ne_bytes(raw) != NOT_PERSISTENT
}

/// One mapping of a segment: its descriptor, its address, and what its header said when it was
/// checked (a private snapshot: peers may scribble over the shared header afterwards).
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    map_len: usize,
    data_len: usize,
    id: (u64, u64),
}

// SAFETY: the region is plain shared memory; every access to its contents goes through atomics,
// process-shared mutexes, or `unsafe` APIs whose callers take responsibility.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// The type tag of an object that holds no Rust type to check (a lock, a semaphore, ...), and
/// the tag an opener passes to accept any.
pub(crate) const NO_TYPE_TAG: u64 = 0;

/// The 64-bit FNV-1a offset basis (the hash of nothing).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
/// The 64-bit FNV prime.
const FNV_PRIME: u64 = 0x0100_0000_01b3;

/// A stable 64-bit hash of a type's name (FNV-1a), to recognise the type in another process of
/// the same build.
pub(crate) fn type_tag<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(FNV_OFFSET_BASIS, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
        })
}

fn total_len(data_len: usize) -> Result<usize> {
    data_len
        .checked_add(HEADER_LEN)
        .filter(|&n| n <= isize::MAX as usize)
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InvalidArgument,
                format!("a segment of {data_len} bytes is too large"),
            )
        })
}

fn bad(problem: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::BadHeader,
        format!("cannot open the shared memory segment: {problem}"),
    )
}

/// Whether an opened segment must be a size-sealed memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Sealing {
    /// Anonymous segments: refused unless their size is sealed, so no peer can truncate them.
    Required,
    /// Named segments (a file in `/dev/shm` cannot be sealed): any process of the user can
    /// truncate them. The residual risk is documented on `SharedMemory`.
    NotAvailable,
}

impl Region {
    /// Sizes, maps and initializes the header of a new segment held by `fd`.
    pub(crate) fn init(fd: OwnedFd, kind: Kind, data_len: usize, type_tag: u64) -> Result<Region> {
        let map_len = total_len(data_len)?;
        sys::set_len(fd.as_fd(), map_len).map_err(|e| {
            Error::os(
                format!("cannot size a shared memory segment to {map_len} bytes"),
                e,
            )
        })?;
        let info = sys::file_info(fd.as_fd())
            .map_err(|e| Error::os("cannot inspect a shared memory segment", e))?;
        let region = Region::map(fd, data_len, info.id)?;
        let pid = sys::getpid();
        let header = Header {
            magic: MAGIC,
            version: VERSION,
            kind: kind as u32,
            header_len: HEADER_LEN as u32,
            _pad: 0,
            data_len: data_len as u64,
            type_tag,
            creator_pid: pid,
            persistent: AtomicU32::new(NOT_PERSISTENT),
            creator_start: sys::process_start_time(pid).unwrap_or(0),
        };
        // SAFETY: the mapping is at least HEADER_LEN bytes, page-aligned, and not yet visible to
        // any other process or any Rust reference.
        unsafe { region.ptr.cast::<Header>().as_ptr().write(header) };
        Ok(region)
    }

    /// Maps the header and `data_len` bytes of data of the segment behind `fd`, whose identity
    /// is `id`: exactly that much, whatever the file's size.
    fn map(fd: OwnedFd, data_len: usize, id: (u64, u64)) -> Result<Region> {
        let map_len = total_len(data_len)?;
        let ptr = sys::map_shared(fd.as_fd(), map_len, true)
            .map_err(|e| Error::os("cannot map a shared memory segment", e))?;
        Ok(Region {
            fd,
            ptr,
            map_len,
            data_len,
            id,
        })
    }

    /// A new anonymous (memfd) segment, its size sealed before anyone else can see it.
    pub(crate) fn anonymous(kind: Kind, data_len: usize, type_tag: u64) -> Result<Region> {
        let name = CString::new(format!("multiproc-{kind:?}")).expect("no NUL in the name");
        let fd = sys::memfd(&name).map_err(|e| Error::os("cannot create shared memory", e))?;
        let region = Region::init(fd, kind, data_len, type_tag)?;
        sys::seal_size(region.fd.as_fd())
            .map_err(|e| Error::os("cannot seal a shared memory segment", e))?;
        Ok(region)
    }

    /// Maps a segment someone else created, checking that it is of `kind` (and `type_tag`, if
    /// not 0) and not truncated.
    pub(crate) fn open(fd: OwnedFd, kind: Kind, type_tag: u64, sealing: Sealing) -> Result<Region> {
        Region::open_any(fd, &[kind], type_tag, sealing)
    }

    /// Like [`open`](Self::open), accepting any of `kinds`.
    ///
    /// The header is read from the file (not a mapping) and checked; then exactly the header
    /// and the announced data are mapped, never more, so the layout facts used afterwards are
    /// the ones checked here, whatever a peer writes into the shared header later.
    pub(crate) fn open_any(
        fd: OwnedFd,
        kinds: &[Kind],
        type_tag: u64,
        sealing: Sealing,
    ) -> Result<Region> {
        let info = sys::file_info(fd.as_fd())
            .map_err(|e| Error::os("cannot inspect a shared memory segment", e))?;
        if !info.regular {
            return Err(bad("it is not a regular file"));
        }
        if sealing == Sealing::Required {
            let seals = sys::seals(fd.as_fd()).unwrap_or(0);
            if seals & sys::SIZE_SEALS != sys::SIZE_SEALS {
                return Err(bad(
                    "its size is not sealed, so another process could truncate it under us",
                ));
            }
        }
        let Some(h) = read_header(fd.as_fd()) else {
            return Err(bad(format_args!(
                "it is {} bytes, too short for a multiproc header: \
                 not a multiproc segment, or truncated",
                info.len
            )));
        };
        let kind = kinds.iter().copied().find(|&k| k as u32 == h.kind);
        let problem = if h.magic != MAGIC {
            Some("it is not a multiproc segment (no magic number)".to_string())
        } else if h.version != VERSION {
            Some(format!(
                "it has layout version {}, this build uses {VERSION}",
                h.version
            ))
        } else if h.header_len as usize != HEADER_LEN {
            Some(format!(
                "its header is {} bytes, expected {HEADER_LEN}",
                h.header_len
            ))
        } else if kind.is_none() {
            Some(format!(
                "it holds object type #{}, not a {:?}",
                h.kind, kinds[0]
            ))
        } else if type_tag != NO_TYPE_TAG && h.type_tag != type_tag {
            Some("it holds values of another Rust type".to_string())
        } else if h.data_len > info.len.saturating_sub(HEADER_LEN) as u64 {
            Some(format!(
                "it is truncated: the header announces {} data bytes, the file has {}",
                h.data_len,
                info.len.saturating_sub(HEADER_LEN)
            ))
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(bad(p));
        }
        Region::map(fd, h.data_len as usize, info.id)
    }

    /// Start of the data, `HEADER_LEN` bytes into the mapping (128-byte aligned).
    pub(crate) fn data(&self) -> NonNull<u8> {
        // SAFETY: the mapping is at least HEADER_LEN bytes long.
        unsafe { self.ptr.add(HEADER_LEN) }
    }

    /// Bytes of data (the segment's size minus the header), as checked at open.
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Bytes mapped (header and data).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn map_len(&self) -> usize {
        self.map_len
    }

    /// The segment's identity (device, inode): equal for two mappings of the same segment,
    /// whichever process or handle made them.
    pub(crate) fn id(&self) -> (u64, u64) {
        self.id
    }

    fn persistent(&self) -> &AtomicU32 {
        // SAFETY: the mapping starts with a Header (validated at open); the field is an
        // atomic, which peers also only access atomically.
        unsafe { &(*self.ptr.cast::<Header>().as_ptr()).persistent }
    }

    pub(crate) fn set_persistent(&self, on: bool) {
        self.persistent().store(u32::from(on), Ordering::Release);
    }

    /// Whether the segment is marked persistent, read from the file: safe even if the segment
    /// was truncated under us.
    pub(crate) fn is_persistent(&self) -> bool {
        read_persistent(self.fd.as_fd())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // No lock keeps pointers into a segment (see `sys::RobustMutex`): even a guard leaked
        // with `mem::forget` leaves nothing that refers to the mapping, so it can always go.
        // SAFETY: `ptr`/`map_len` is our one mapping; every reference into it borrows `self`.
        unsafe { sys::unmap(self.ptr, self.map_len) };
    }
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("len", &self.data_len)
            .finish_non_exhaustive()
    }
}
