//! Unit tests of segments against hostile files and peers: truncation, FIFOs, leaked guards.

use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use super::{Kind, Region, Sealing, SharedMemory};
use crate::{ErrorKind, Lock};

#[test]
fn a_leaked_guard_leaves_nothing_that_writes_into_later_memory() {
    let lock = Lock::new().unwrap();
    let page = std::ptr::from_ref(lock.cell()) as usize & !4095;
    std::mem::forget(lock.lock().unwrap());
    drop(lock);
    // Fresh segments may land where the lock was; taking and releasing other locks, and
    // leaked guards of them, must not write into them (glibc's robust list did: it linked the
    // leaked mutex and wrote through that link on the next lock operation).
    let fresh: Vec<SharedMemory> = (0..8).map(|_| SharedMemory::new(4096).unwrap()).collect();
    let reused = fresh
        .iter()
        .any(|s| s.as_ptr() as usize & !4095 == page + 4096 || s.as_ptr() as usize & !4095 == page);
    for _ in 0..3 {
        let other = Lock::new().unwrap();
        drop(other.lock().unwrap());
        std::mem::forget(other.lock().unwrap());
    }
    for shm in &fresh {
        let mut buf = vec![0u8; 4096];
        shm.read_at(0, &mut buf);
        assert!(
            buf.iter().all(|&b| b == 0),
            "a fresh segment was written (reused: {reused})"
        );
    }
}

#[test]
fn a_lock_leaked_by_a_thread_that_ended_is_reported_owner_died() {
    let lock = Lock::new().unwrap();
    let l2 = lock.clone();
    std::thread::spawn(move || std::mem::forget(l2.lock().unwrap()))
        .join()
        .unwrap();
    assert!(lock.is_locked());
    match lock.lock_timeout(Duration::from_secs(30)) {
        Err(crate::LockTimeoutError::OwnerDied(d)) => drop(d.make_consistent()),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    assert!(!lock.is_locked());
    drop(lock.try_lock().unwrap());
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

/// Drops an attacher, then the creator of the segment `name`, and checks that the creator's
/// drop removed the name.
fn assert_name_removed_with(creator: SharedMemory, attached: SharedMemory, name: &str) {
    drop(attached);
    drop(creator);
    assert_eq!(
        SharedMemory::open(name).unwrap_err().kind(),
        ErrorKind::NotFound
    );
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
    assert_name_removed_with(shm, attached, &name);
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
    // The creator's cleanup still runs.
    assert_name_removed_with(shm, attached, &name);
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

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn a_hundred_thousand_locks_take_a_few_descriptors_and_freed_slots_are_reused() {
    let before = open_fds();
    let locks: Vec<Lock> = (0..100_000).map(|_| Lock::new().unwrap()).collect();
    let after = open_fds();
    // One descriptor per 4096 locks (25 here); other tests running meanwhile open a few.
    assert!(
        after < before + 200,
        "{} descriptors for 100,000 locks",
        after.saturating_sub(before)
    );
    for l in locks.iter().step_by(997) {
        drop(l.try_lock().unwrap());
    }
    // Locks are distinct objects even when they share a chunk.
    let g = locks[0].lock().unwrap();
    assert!(!locks[1].is_locked());
    assert!(locks[0].is_locked());
    drop(g);
    let high = super::arena::chunk_count();
    drop(locks);
    let again: Vec<Lock> = (0..100_000).map(|_| Lock::new().unwrap()).collect();
    // Tests running meanwhile take a few slots more: at most one more chunk.
    let now = super::arena::chunk_count();
    assert!(
        now <= high + 1,
        "{now} chunks after {high}: slots were not reused"
    );
    drop(again);
}
