//! Unit tests of segments against hostile files and peers: truncation, FIFOs, leaked guards.

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use super::{Kind, Region, Sealing, SharedMemory};
use crate::{ErrorKind, Lock};

/// Whether the page at `addr` is mapped in this process (mincore(2) fails with ENOMEM on an
/// unmapped page).
fn is_mapped(addr: usize) -> bool {
    let page = addr & !(crate::sys::page_size() - 1);
    let mut vec = 0u8;
    // SAFETY: mincore only reads the page tables and writes one byte into `vec`.
    unsafe { libc::mincore(page as *mut libc::c_void, 1, &mut vec) == 0 }
}

#[test]
fn a_leaked_guard_leaks_the_mapping_not_the_memory_behind_it() {
    let lock = Lock::new().unwrap();
    let addr = std::ptr::from_ref(lock.cell()) as usize;
    std::mem::forget(lock.lock().unwrap());
    drop(lock);
    // The thread's robust list still links the mutex: its memory must stay ours.
    assert!(is_mapped(addr), "the mapping of a held lock was removed");
    // Fresh segments land elsewhere, and locking another lock (which writes the robust list)
    // leaves them untouched.
    let fresh: Vec<SharedMemory> = (0..8).map(|_| SharedMemory::new(4096).unwrap()).collect();
    let other = Lock::new().unwrap();
    drop(other.lock().unwrap());
    for shm in &fresh {
        assert_ne!(shm.as_ptr() as usize & !4095, addr & !4095);
        let mut buf = [0u8; 64];
        shm.read_at(0, &mut buf);
        assert_eq!(
            buf, [0; 64],
            "a fresh segment was written by the robust list"
        );
    }
}

#[test]
fn a_lock_is_seen_held_here_exactly_while_a_thread_of_ours_holds_it() {
    let lock = Lock::new().unwrap();
    // SAFETY: a Lock's data starts with its robust mutex.
    let mutex = unsafe { &*std::ptr::from_ref(lock.cell()).cast::<crate::sys::RobustMutex>() };
    assert!(!mutex.may_be_held_here());
    let g = lock.lock().unwrap();
    assert!(mutex.may_be_held_here());
    drop(g);
    assert!(!mutex.may_be_held_here());
    // Held by a thread that then exited: the kernel marked it owner-dead, nothing links it.
    let l2 = lock.clone();
    std::thread::spawn(move || std::mem::forget(l2.lock().unwrap()))
        .join()
        .unwrap();
    assert!(!mutex.may_be_held_here());
    assert!(lock.lock().is_err(), "the dead thread's hold is reported");
}

#[test]
fn anonymous_segments_cannot_be_resized() {
    let shm = SharedMemory::new(4096).unwrap();
    let fd = shm.inner.region.fd().as_fd();
    for len in [0, 64, 1 << 20] {
        let err = crate::sys::set_len(fd, len).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPERM), "resizing to {len}");
    }
    shm.write_at(4000, &[1; 96]);
}

#[test]
fn an_unsealed_memfd_is_refused_where_a_sealed_one_is_required() {
    let region = Region::anonymous(Kind::Lock, 64, 0).unwrap();
    // Build the same bytes in an unsealed memfd.
    let plain = crate::sys::memfd(c"unsealed").unwrap();
    let mut header = vec![0u8; super::HEADER_LEN + 64];
    crate::sys::read_file_at(region.fd().as_fd(), 0, &mut header).unwrap();
    crate::sys::set_len(plain.as_fd(), header.len()).unwrap();
    let dup = crate::sys::dup_cloexec(plain.as_fd()).unwrap();
    let map = crate::sys::map_shared(plain.as_fd(), header.len(), true).unwrap();
    // SAFETY: a private mapping of `header.len()` bytes that nothing else uses.
    unsafe {
        std::ptr::copy_nonoverlapping(header.as_ptr(), map.as_ptr(), header.len());
        crate::sys::unmap(map, header.len());
    }
    let err = Region::open(dup, Kind::Lock, 0, Sealing::Required).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadHeader);
    assert!(err.to_string().contains("not sealed"), "{err}");
    assert!(Region::open(plain, Kind::Lock, 0, Sealing::NotAvailable).is_ok());
}

#[test]
fn a_truncated_named_segment_is_dropped_and_refused_without_sigbus() {
    let shm = SharedMemory::create_unique(1 << 16).unwrap();
    let name = shm.name().unwrap().to_string();
    let attached = SharedMemory::open(&name).unwrap();
    crate::sys::set_len(attached.inner.region.fd().as_fd(), 0).unwrap();
    // Opening again sees the truncation.
    let err = SharedMemory::open(&name).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadHeader);
    // Dropping the creator reads nothing through the mapping (that would be SIGBUS).
    drop(attached);
    drop(shm);
    assert_eq!(
        SharedMemory::open(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn a_segment_is_mapped_at_its_announced_size_not_the_file_size() {
    let shm = SharedMemory::create_unique(100).unwrap();
    let name = shm.name().unwrap().to_string();
    crate::sys::set_len(shm.inner.region.fd().as_fd(), 1 << 20).unwrap();
    let attached = SharedMemory::open(&name).unwrap();
    assert_eq!(attached.len(), 100);
    assert_eq!(attached.inner.region.map_len(), super::HEADER_LEN + 100);
}

#[test]
fn persist_on_an_attacher_is_not_owner_and_changes_nothing() {
    let shm = SharedMemory::create_unique(8).unwrap();
    let name = shm.name().unwrap().to_string();
    let attached = SharedMemory::open(&name).unwrap();
    assert_eq!(attached.persist().unwrap_err().kind(), ErrorKind::NotOwner);
    drop(attached);
    drop(shm);
    // The creator's cleanup still ran.
    assert_eq!(
        SharedMemory::open(&name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
}

#[test]
fn remove_stale_skips_a_fifo_without_blocking() {
    let name = format!("mp-fifo-{}", std::process::id());
    let path = std::ffi::CString::new(format!("/dev/shm/{name}")).unwrap();
    // SAFETY: a NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(path.as_ptr(), 0o600) }, 0);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(SharedMemory::remove_stale());
    });
    let result = rx.recv_timeout(Duration::from_secs(30));
    // Remove the FIFO first: if remove_stale hangs opening it, this open (for writing) lets it go.
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(format!("/dev/shm/{name}"));
    std::fs::remove_file(format!("/dev/shm/{name}")).unwrap();
    let removed = result.expect("remove_stale blocked on a FIFO").unwrap();
    assert!(!removed.contains(&name));
}
