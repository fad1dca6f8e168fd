//! A mapped segment with our header: the storage under `SharedMemory` and every sync object.

use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, ErrorKind, Result};
use crate::sys;

/// "MPSHMSEG" read as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MPSHMSEG");
/// Bumped whenever the header or a shared state layout changes.
pub(crate) const VERSION: u32 = 1;
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
    /// A hash of the Rust type stored (for `Value<T>`, `Array<T>`, queues), 0 for none.
    type_tag: u64,
    creator_pid: i32,
    /// Set when the creator chose to leave a named segment behind on purpose.
    pub(crate) persistent: AtomicU32,
    /// The creator's start time (see `sys::process_start_time`), to tell it from a reused pid.
    creator_start: u64,
}

impl Header {
    /// Creator pid, creator start time, and whether the segment was made persistent.
    pub(crate) fn creator_info(&self) -> (i32, u64, bool) {
        (
            self.creator_pid,
            self.creator_start,
            self.persistent.load(Ordering::Acquire) != 0,
        )
    }
}

const _: () = assert!(std::mem::size_of::<Header>() <= HEADER_LEN);

/// One mapping of a segment: its descriptor, its address, and its validated header.
pub(crate) struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    map_len: usize,
    data_len: usize,
}

// SAFETY: the region is plain shared memory; every access to its contents goes through atomics,
// process-shared mutexes, or `unsafe` APIs whose callers take responsibility.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

/// A stable 64-bit hash of a type's name (FNV-1a), to recognise the type in another process of
/// the same build.
pub(crate) fn type_tag<T: ?Sized>() -> u64 {
    std::any::type_name::<T>()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
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
        let ptr = sys::map_shared(fd.as_fd(), map_len, true)
            .map_err(|e| Error::os("cannot map a shared memory segment", e))?;
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
            persistent: AtomicU32::new(0),
            creator_start: sys::process_start_time(pid).unwrap_or(0),
        };
        // SAFETY: the mapping is at least HEADER_LEN bytes, page-aligned, and not yet visible to
        // any other process or any Rust reference.
        unsafe { ptr.cast::<Header>().as_ptr().write(header) };
        Ok(Region {
            fd,
            ptr,
            map_len,
            data_len,
        })
    }

    /// A new anonymous (memfd) segment.
    pub(crate) fn anonymous(kind: Kind, data_len: usize, type_tag: u64) -> Result<Region> {
        let name = CString::new(format!("multiproc-{kind:?}")).expect("no NUL in the name");
        let fd = sys::memfd(&name).map_err(|e| Error::os("cannot create shared memory", e))?;
        Region::init(fd, kind, data_len, type_tag)
    }

    /// Maps a segment someone else created, checking that it is of `kind` (and `type_tag`, if
    /// not 0) and not truncated.
    pub(crate) fn open(fd: OwnedFd, kind: Kind, type_tag: u64) -> Result<Region> {
        Region::open_any(fd, &[kind], type_tag)
    }

    /// Like [`open`](Self::open), accepting any of `kinds`.
    pub(crate) fn open_any(fd: OwnedFd, kinds: &[Kind], type_tag: u64) -> Result<Region> {
        let info = sys::file_info(fd.as_fd())
            .map_err(|e| Error::os("cannot inspect a shared memory segment", e))?;
        if info.len < HEADER_LEN {
            return Err(Error::new(
                ErrorKind::BadHeader,
                format!(
                    "the segment is {} bytes, too short for a multiproc header: \
                     not a multiproc segment, or truncated",
                    info.len
                ),
            ));
        }
        let ptr = sys::map_shared(fd.as_fd(), info.len, true)
            .map_err(|e| Error::os("cannot map a shared memory segment", e))?;
        let region = Region {
            fd,
            ptr,
            map_len: info.len,
            data_len: 0,
        };
        let h = region.header();
        let data_len = h.data_len as usize;
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
        } else if !kinds.iter().any(|&k| k as u32 == h.kind) {
            Some(format!(
                "it holds object type #{}, not a {:?}",
                h.kind, kinds[0]
            ))
        } else if type_tag != 0 && h.type_tag != type_tag {
            Some("it holds values of another Rust type".to_string())
        } else if h.data_len > (info.len - HEADER_LEN) as u64 {
            Some(format!(
                "it is truncated: the header announces {} data bytes, the file has {}",
                h.data_len,
                info.len - HEADER_LEN
            ))
        } else {
            None
        };
        match problem {
            Some(p) => Err(Error::new(
                ErrorKind::BadHeader,
                format!("cannot open the shared memory segment: {p}"),
            )),
            None => {
                let mut region = region;
                region.data_len = data_len;
                Ok(region)
            }
        }
    }

    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the mapping starts with a Header (written by `init`, or checked in `open` to
        // be at least HEADER_LEN bytes long); its fields other than the atomic are never written
        // after the segment is shared.
        unsafe { self.ptr.cast::<Header>().as_ref() }
    }

    /// Start of the data, `HEADER_LEN` bytes into the mapping (128-byte aligned).
    pub(crate) fn data(&self) -> NonNull<u8> {
        // SAFETY: the mapping is at least HEADER_LEN bytes long.
        unsafe { self.ptr.add(HEADER_LEN) }
    }

    /// Bytes of data (the segment's size minus the header).
    pub(crate) fn data_len(&self) -> usize {
        self.data_len
    }

    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    pub(crate) fn set_persistent(&self, on: bool) {
        self.header()
            .persistent
            .store(u32::from(on), Ordering::Release);
    }

    pub(crate) fn is_persistent(&self) -> bool {
        self.header().persistent.load(Ordering::Acquire) != 0
    }
}

impl Drop for Region {
    fn drop(&mut self) {
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
