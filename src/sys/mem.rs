//! Shared memory: memfd, POSIX shm objects, mappings.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

use rustix::fs::{FileType, MemfdFlags, Mode, OFlags, SealFlags};
use rustix::io::Errno;

use super::einval;

/// An anonymous memory file, freed by the kernel with its last descriptor and mapping.
/// Close-on-exec, and open to seals (see [`seal_size`]). See memfd_create(2).
pub(crate) fn memfd(name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::memfd_create(
        name,
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?)
}

/// Creates the POSIX shared memory object `name` (which starts with `/`), failing if it exists.
/// Mode 0600, close-on-exec. See shm_open(3).
pub(crate) fn shm_create_exclusive(name: &CStr) -> io::Result<OwnedFd> {
    shm_open(name, OFlags::CREATE | OFlags::EXCL | OFlags::RDWR)
}

/// Opens the existing POSIX shared memory object `name` for reading and writing. See shm_open(3).
pub(crate) fn shm_open_existing(name: &CStr, write: bool) -> io::Result<OwnedFd> {
    shm_open(name, if write { OFlags::RDWR } else { OFlags::RDONLY })
}

/// The file behind shared memory object `name`, as glibc's shm_open(3) and shm_unlink(3) find
/// it: leading slashes dropped, then `/dev/shm/<rest>`; `EINVAL` for a name that is empty, `.`,
/// `..` or holds another slash, `ENAMETOOLONG` past NAME_MAX.
fn shm_path(name: &CStr) -> io::Result<CString> {
    const NAME_MAX: usize = 255;
    let bytes = name.to_bytes();
    let rest = &bytes[bytes.iter().take_while(|&&b| b == b'/').count()..];
    if rest.is_empty() || rest == b"." || rest == b".." || rest.contains(&b'/') {
        return Err(einval());
    }
    if rest.len() > NAME_MAX {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    let mut path = b"/dev/shm/".to_vec();
    path.extend_from_slice(rest);
    // `rest` comes from a `CStr`: it holds no NUL.
    CString::new(path).map_err(|_| einval())
}

/// Opens shared memory object `name` as glibc's shm_open(3) does: never through a symbolic
/// link, close-on-exec, mode 0600 if created.
fn shm_open(name: &CStr, flags: OFlags) -> io::Result<OwnedFd> {
    let path = shm_path(name)?;
    let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    loop {
        match rustix::fs::open(path.as_c_str(), flags, Mode::from_raw_mode(0o600)) {
            Err(Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// Removes the name of a POSIX shared memory object. See shm_unlink(3).
pub(crate) fn shm_unlink(name: &CStr) -> io::Result<()> {
    Ok(rustix::fs::unlink(shm_path(name)?.as_c_str())?)
}

/// Gives the file `/dev/shm/<from>` the further name `/dev/shm/<to>`, failing with `EEXIST` if
/// taken: an atomic publication of a fully initialized object. See link(2).
pub(crate) fn shm_link(from: &str, to: &str) -> io::Result<()> {
    std::fs::hard_link(format!("/dev/shm/{from}"), format!("/dev/shm/{to}"))
}

/// Sets the size of a file. See ftruncate(2).
pub(crate) fn set_len(fd: BorrowedFd<'_>, len: usize) -> io::Result<()> {
    // Past i64::MAX the kernel would read a negative size.
    let len = i64::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        match rustix::fs::ftruncate(fd, len as u64) {
            Err(Errno::INTR) => continue,
            other => return Ok(other?),
        }
    }
}

/// The seals that make a file's size final: it can neither shrink nor grow, and no seal can be
/// added or removed any more.
pub(crate) const SIZE_SEALS: u32 =
    (libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL) as u32;

/// Seals the size of a memfd made by [`memfd`] ([`SIZE_SEALS`]): from now on no process can
/// truncate it under a mapping (which would kill whoever touches the lost pages with SIGBUS).
/// See memfd_create(2), "File sealing".
pub(crate) fn seal_size(fd: BorrowedFd<'_>) -> io::Result<()> {
    Ok(rustix::fs::fcntl_add_seals(
        fd,
        SealFlags::from_bits_retain(SIZE_SEALS),
    )?)
}

/// The seals of a file (`EINVAL` for a file that cannot be sealed). See fcntl(2), F_GET_SEALS.
pub(crate) fn seals(fd: BorrowedFd<'_>) -> io::Result<u32> {
    Ok(rustix::fs::fcntl_get_seals(fd)?.bits())
}

/// What fstat(2) says about a file that matters for shared memory.
pub(crate) struct FileInfo {
    /// Size in bytes.
    pub len: usize,
    /// Owner's user id.
    pub uid: u32,
    /// A regular file (not a FIFO, socket, device or directory).
    pub regular: bool,
    /// The device and inode: which file this is, however many times it is opened or mapped.
    pub id: (u64, u64),
}

/// The size, owner, type and identity of a file. See fstat(2).
// `dev_t` and `ino_t` are u64 here but narrower on some targets: the casts are for those.
#[allow(clippy::unnecessary_cast)]
pub(crate) fn file_info(fd: BorrowedFd<'_>) -> io::Result<FileInfo> {
    let st = rustix::fs::fstat(fd)?;
    Ok(FileInfo {
        len: usize::try_from(st.st_size).unwrap_or(0),
        uid: st.st_uid,
        regular: FileType::from_raw_mode(st.st_mode) == FileType::RegularFile,
        id: (st.st_dev as u64, st.st_ino as u64),
    })
}

/// Reads up to `buf.len()` bytes of `fd` at `offset` (fewer at the end of the file), without
/// mapping it: a file truncated meanwhile gives a short read, never SIGBUS. See pread(2).
pub(crate) fn read_file_at(fd: BorrowedFd<'_>, offset: usize, buf: &mut [u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let off = i64::try_from(offset + done)
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        match rustix::io::pread(fd, &mut buf[done..], off as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(done)
}

/// Opens `/dev/shm/<name>` read-only to look at it, whatever it turns out to be: without
/// following a symbolic link, and without blocking (a FIFO would otherwise wait for a writer
/// forever). Check its type with [`file_info`] before reading. See shm_open(3), open(2).
pub(crate) fn shm_open_inspect(name: &CStr) -> io::Result<OwnedFd> {
    shm_open(name, OFlags::RDONLY | OFlags::NONBLOCK)
}

/// The effective user id of the caller. See geteuid(2).
pub(crate) fn geteuid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Maps `len` bytes of `fd` from offset 0, shared, readable and (if `write`) writable.
/// See mmap(2).
pub(crate) fn map_shared(fd: BorrowedFd<'_>, len: usize, write: bool) -> io::Result<NonNull<u8>> {
    let prot = if write {
        libc::PROT_READ | libc::PROT_WRITE
    } else {
        libc::PROT_READ
    };
    // SAFETY: a new mapping chosen by the kernel; it aliases no Rust object.
    let ptr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    if ptr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(ptr.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// Removes a mapping made by [`map_shared`].
///
/// # Safety
/// `ptr` and `len` describe exactly one live mapping from [`map_shared`], and nothing refers to
/// its memory any more. See munmap(2).
pub(crate) unsafe fn unmap(ptr: NonNull<u8>, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { libc::munmap(ptr.as_ptr().cast(), len) };
}

/// The start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// which with the pid identifies one process even after the pid is reused. `None` when the
/// process no longer exists. See proc_pid_stat(5).
pub(crate) fn process_start_time(pid: i32) -> Option<u64> {
    process_stat(pid).map(|(_, start)| start)
}

/// Like [`process_start_time`], but `None` also for a process that has ended and not been
/// reaped yet (a zombie): it will never act again.
pub(crate) fn running_process_start_time(pid: i32) -> Option<u64> {
    process_stat(pid)
        .and_then(|(state, start)| (!matches!(state, 'Z' | 'X' | 'x')).then_some(start))
}

/// The state letter and start time of `pid`, from `/proc/<pid>/stat`. See proc_pid_stat(5).
fn process_stat(pid: i32) -> Option<(char, u64)> {
    if pid <= 0 {
        return None;
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may contain anything: parse after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    Some((state, fields.nth(18)?.parse().ok()?))
}

/// Maps `len` bytes of `fd` from `offset` twice, back to back, so that a ring buffer of `len`
/// bytes can be read and written across its end as one contiguous range. `len` and `offset`
/// are multiples of the page size. Returns the start of the `2 * len` range. See mmap(2).
pub(crate) fn map_mirrored(
    fd: BorrowedFd<'_>,
    offset: usize,
    len: usize,
) -> io::Result<NonNull<u8>> {
    let total = len
        .checked_mul(2)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let off =
        libc::off_t::try_from(offset).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: reserves fresh address space that no Rust object uses.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            total,
            libc::PROT_NONE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    for half in [0, len] {
        // SAFETY: MAP_FIXED over our own reservation, which nothing else uses.
        let p = unsafe {
            libc::mmap(
                base.cast::<u8>().add(half).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                off,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: the reservation made above, not yet handed out.
            unsafe { libc::munmap(base, total) };
            return Err(e);
        }
    }
    NonNull::new(base.cast()).ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))
}

/// The page size. See sysconf(3).
pub(crate) fn page_size() -> usize {
    rustix::param::page_size().max(4096)
}
