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

/// The `(descriptor index, slot offset)` a lock is written as, from a message that is then
/// dropped unsent (which gives its count back).
fn wire_of(lock: &Lock) -> (u32, u32) {
    let mut message = crate::handles::Message::default();
    let bytes = message.encode(lock).unwrap();
    drop(message);
    crate::codec::decode(&bytes).unwrap()
}

/// Decodes `forged` (bytes a hand-written `Serialize` could write) as a `U`, with the
/// descriptors of a real message that carried `sent`.
fn decode_forged<U: serde::de::DeserializeOwned>(
    sent: &Lock,
    forged: &impl serde::Serialize,
) -> Result<U, crate::codec::CodecError> {
    let (_, fds) = crate::handles::encode_with_fds(sent).unwrap();
    let bytes = crate::codec::encode(forged).unwrap();
    crate::handles::with_incoming(fds, || crate::codec::decode::<U>(&bytes))
}

#[test]
fn a_reference_written_twice_adopts_one_count() {
    let lock = Lock::new().unwrap();
    let (bytes, fds) = crate::handles::encode_with_fds(&lock).unwrap();
    assert_eq!(lock.slot_refs(), Some(2), "one count on its way");
    let wire: (u32, u32) = crate::codec::decode(&bytes).unwrap();
    let twice = crate::codec::encode(&(wire, wire)).unwrap();
    let r = crate::handles::with_incoming(fds, || crate::codec::decode::<(Lock, Lock)>(&twice));
    let Err(e) = r else {
        panic!("the second reference has no count")
    };
    assert!(
        e.to_string().contains("no handle on its slot was sent"),
        "{e}"
    );
    // The first one adopted the count sent and gave it back when the decode failed.
    assert_eq!(lock.slot_refs(), Some(1));
    assert!(lock.try_lock().is_ok());
}

#[test]
fn a_reference_replayed_from_an_earlier_message_is_refused() {
    let lock = Lock::new().unwrap();
    let (bytes, fds) = crate::handles::encode_with_fds(&lock).unwrap();
    let copy: Vec<_> = fds
        .iter()
        .map(|f| crate::sys::dup_cloexec(f.as_fd()).unwrap())
        .collect();
    let back: Lock = crate::handles::with_incoming(fds, || crate::codec::decode(&bytes)).unwrap();
    assert_eq!(lock.slot_refs(), Some(2));
    // The same bytes and descriptors again: nothing is on its way any more.
    let again = crate::handles::with_incoming(copy, || crate::codec::decode::<Lock>(&bytes));
    assert!(again.is_err());
    assert_eq!(lock.slot_refs(), Some(2));
    drop(back);
    assert_eq!(lock.slot_refs(), Some(1));
}

#[test]
fn a_reference_to_a_slot_nobody_sent_is_refused_and_counts_nothing() {
    let sent = Lock::new().unwrap();
    let other = Lock::new().unwrap();
    let (_, other_offset) = wire_of(&other);
    assert_eq!(
        other.slot_refs(),
        Some(1),
        "an unsent message gives its count back"
    );
    let (index, _) = wire_of(&sent);
    // Another live lock of the chunk, named on the sent lock's descriptor (both lie in this
    // process's arena; if they are in two chunks, the forged reference names a slot of the
    // sent lock's chunk that may be free or hold anything: refused all the same).
    let r = decode_forged::<Lock>(&sent, &(index, other_offset));
    assert!(r.is_err());
    assert_eq!(
        other.slot_refs(),
        Some(1),
        "the refusal took no count of it"
    );
    assert!(other.try_lock().is_ok());
    // A freed slot.
    let gone = Lock::new().unwrap();
    let (_, gone_offset) = wire_of(&gone);
    drop(gone);
    assert!(decode_forged::<Lock>(&sent, &(index, gone_offset)).is_err());
    // Garbage: past the slots, inside a slot, the in-flight words.
    for offset in [u32::MAX - 1, 17, 4096 * 128, 4096 * 128 + 16] {
        assert!(decode_forged::<Lock>(&sent, &(index, offset)).is_err());
    }
}

#[test]
fn a_message_given_back_unsent_cannot_be_adopted() {
    let lock = Lock::new().unwrap();
    let mut message = crate::handles::Message::default();
    let bytes = message.encode(&lock).unwrap();
    // Its descriptor, as the message would carry it.
    let fd = crate::sys::dup_cloexec(crate::handles::Handle::descriptor(&lock)).unwrap();
    drop(message);
    assert_eq!(lock.slot_refs(), Some(1));
    let r = crate::handles::with_incoming(vec![fd], || crate::codec::decode::<Lock>(&bytes));
    assert!(r.is_err(), "its count went back: nothing to adopt");
    assert_eq!(lock.slot_refs(), Some(1));
}

#[test]
fn a_handle_decoded_as_another_object_gives_its_count_back() {
    let lock = Lock::new().unwrap();
    let (bytes, fds) = crate::handles::encode_with_fds(&lock).unwrap();
    assert_eq!(lock.slot_refs(), Some(2));
    let r =
        crate::handles::with_incoming(fds, || crate::codec::decode::<crate::Value<u32>>(&bytes));
    assert!(r.is_err(), "a lock is not a value");
    assert_eq!(
        lock.slot_refs(),
        Some(1),
        "the refused handle's count went back"
    );
}
