//! In-process unit tests: handles decoded as the wrong object, layout, deadlines.

use crate::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::codec;
use crate::handles;
use crate::{Array, Barrier, ErrorKind, Event, Lock, RLock, Semaphore, Value};

/// Encodes `value` as a process argument and decodes it as a `U`, as a child would.
fn pass_as<T: serde::Serialize, U: serde::de::DeserializeOwned>(
    value: &T,
) -> Result<U, codec::CodecError> {
    let (bytes, fds) = handles::encode_with_fds(value).expect("encode");
    handles::with_incoming(fds, || codec::decode::<U>(&bytes))
}

#[test]
fn a_handle_decodes_as_its_own_type() {
    let v = Value::new(5u32).unwrap();
    let back: Value<u32> = pass_as(&v).unwrap();
    back.set(6).unwrap();
    assert_eq!(v.get().unwrap(), 6);
    let l = Lock::new().unwrap();
    let back: Lock = pass_as(&l).unwrap();
    let _g = back.lock().unwrap();
    assert!(l.is_locked());
}

/// Reopens a descriptor the way a handle's `Deserialize` does, as one of `kinds` with `tag`,
/// and returns the refusal.
fn refusal(fd: &std::os::fd::OwnedFd, kinds: &[crate::shm::Kind], tag: u64) -> crate::Error {
    use crate::shm::{Region, Sealing};
    let dup = crate::sys::dup_cloexec(std::os::fd::AsFd::as_fd(fd)).unwrap();
    Region::open_any(dup, kinds, tag, Sealing::Required).unwrap_err()
}

#[test]
fn a_handle_decoded_as_another_object_is_refused() {
    use crate::shm::{Kind, type_tag};
    let lock = Lock::new().unwrap();
    // Through the codec the refusal is a decoding error (postcard drops the message)...
    assert!(matches!(
        pass_as::<_, Semaphore>(&lock),
        Err(codec::CodecError::Invalid(_))
    ));
    assert!(pass_as::<_, RLock>(&lock).is_err());
    // ...which is the segment's header check, refusing for the reason it names.
    let sem_tag = type_tag::<Semaphore>();
    let e = refusal(lock.segment_fd(), &[Kind::Semaphore], sem_tag);
    assert_eq!(e.kind(), ErrorKind::BadHeader);
    assert!(e.to_string().contains("not a Semaphore"), "{e}");
    let e = refusal(lock.segment_fd(), &[Kind::RLock], 0);
    assert!(e.to_string().contains("not a RLock"), "{e}");
    let sem = Semaphore::new(1).unwrap();
    let e = refusal(sem.segment_fd(), &[Kind::Event], 0);
    assert!(e.to_string().contains("not a Event"), "{e}");
    // A bounded semaphore's segment is a semaphore of another Rust type.
    let e = refusal(
        sem.segment_fd(),
        &[Kind::Semaphore],
        type_tag::<crate::BoundedSemaphore>(),
    );
    assert!(e.to_string().contains("another Rust type"), "{e}");
    let ev = Event::new().unwrap();
    let e = refusal(ev.segment_fd(), &[Kind::Barrier], 0);
    assert!(e.to_string().contains("not a Barrier"), "{e}");
    // A Value's lock is a Lock; a Value of another type is not the same Value.
    // Small ones live in arena slots, which carry the kind and the element type.
    let v = Value::new(1u32).unwrap();
    let as_lock: Lock = pass_as(&Value::new(1u8).unwrap()).unwrap();
    drop(as_lock.lock().unwrap());
    let refused = |r: Result<_, codec::CodecError>, why: &str| match r {
        Err(codec::CodecError::Invalid(m)) => assert!(m.contains(why), "{m}"),
        Err(e) => panic!("expected Invalid({why}), got {e:?}"),
        Ok(()) => panic!("expected Invalid({why}), got Ok"),
    };
    refused(pass_as::<_, Value<u64>>(&v).map(drop), "another type");
    refused(pass_as::<_, Value<i32>>(&v).map(drop), "another type");
    let small = Array::new(4, 0u8).unwrap();
    refused(pass_as::<_, Array<u16>>(&small).map(drop), "another type");
    refused(pass_as::<_, Value<u8>>(&small).map(drop), "not a Value");
    refused(pass_as::<_, Array<u32>>(&v).map(drop), "not a Array");
    // Large ones have a segment of their own, whose header says the same.
    let a = Array::new(1000, 0u8).unwrap();
    let e = refusal(a.segment_fd(), &[Kind::Array], type_tag::<u16>());
    assert!(e.to_string().contains("another Rust type"), "{e}");
    let e = refusal(a.segment_fd(), &[Kind::Value], type_tag::<u8>());
    assert!(e.to_string().contains("not a Value"), "{e}");
    assert!(pass_as::<_, Value<u8>>(&a).is_err());
    assert!(pass_as::<_, Array<u16>>(&a).is_err());
}

#[test]
fn bad_header_errors_are_typed() {
    use crate::shm::{Kind, Region};
    let region = Region::anonymous(Kind::Lock, 64, 0).unwrap();
    let fd = crate::sys::dup_cloexec(std::os::fd::AsFd::as_fd(region.fd())).unwrap();
    let err = Region::open(fd, Kind::Event, 0, crate::shm::Sealing::Required).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadHeader);
    let memfd = crate::sys::memfd(c"empty").unwrap();
    let err = Region::open(memfd, Kind::Bytes, 0, crate::shm::Sealing::NotAvailable).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::BadHeader);
}

#[test]
fn values_are_aligned_and_zero_sized_arrays_work() {
    #[derive(Clone, Copy, Debug, PartialEq)]
    #[repr(C, align(128))]
    struct Wide([u64; 16]);
    // SAFETY: sixteen u64s, no padding.
    unsafe impl crate::Pod for Wide {}
    let v = Value::new(Wide([3; 16])).unwrap();
    assert_eq!(v.get().unwrap(), Wide([3; 16]));
    assert_eq!(v.lock().unwrap().0.as_ptr() as usize % 128, 0);
    let empty = Array::<u64>::new(0, 0).unwrap();
    assert!(empty.is_empty() && empty.to_vec().unwrap().is_empty());
}

/// Runs `wait` in a thread and checks that it is still waiting a while later (an overflowing
/// timeout taken as "now" would have returned), then that `release` ends it with `true`.
fn waits_until_released(wait: impl FnOnce() -> bool + Send + 'static, release: impl FnOnce()) {
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || tx.send(wait()).unwrap());
    assert_eq!(
        rx.recv_timeout(Duration::from_millis(200)),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout),
        "an overflowing timeout returned instead of waiting"
    );
    release();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)), Ok(true));
    t.join().unwrap();
}

#[test]
fn timeouts_that_overflow_mean_forever_and_zero_means_now() {
    // Contended objects: a timeout that overflows an Instant must wait, not give up.
    let lock = Lock::new().unwrap();
    let held = lock.lock().unwrap();
    let l2 = lock.clone();
    waits_until_released(
        move || l2.lock_timeout(Duration::MAX).is_ok(),
        move || drop(held),
    );
    let sem = Semaphore::new(0).unwrap();
    let s2 = sem.clone();
    waits_until_released(
        move || s2.acquire_timeout(Duration::MAX).is_ok(),
        || sem.release().unwrap(),
    );
    let ev = Event::new().unwrap();
    let e2 = ev.clone();
    waits_until_released(move || e2.wait_timeout(Duration::MAX).is_ok(), || ev.set());
    let barrier = Barrier::new(2).unwrap();
    let b2 = barrier.clone();
    waits_until_released(
        move || b2.wait_timeout(Duration::MAX).is_ok(),
        move || assert!(barrier.wait().is_ok()),
    );
    // Zero means now, and a deadline in the past too.
    let sem = Semaphore::new(0).unwrap();
    assert_eq!(
        sem.acquire_timeout(Duration::ZERO),
        Err(crate::AcquireTimeoutError::Timeout)
    );
    let ev = Event::new().unwrap();
    assert_eq!(
        ev.wait_deadline(Instant::now() - Duration::from_secs(1)),
        Err(crate::EventTimeoutError::Timeout)
    );
    let lock = Lock::new().unwrap();
    let _held = lock.lock().unwrap();
    let l2 = lock.clone();
    std::thread::spawn(move || {
        assert!(matches!(
            l2.lock_timeout(Duration::ZERO),
            Err(crate::LockTimeoutError::Timeout)
        ));
    })
    .join()
    .unwrap();
}

#[test]
fn monotonic_timespecs_are_normalized() {
    for ms in [0u64, 1, 999, 1000, 1001, 123_456_789] {
        let ts = crate::sys::monotonic_timespec(Instant::now() + Duration::from_millis(ms));
        assert!(
            (0..1_000_000_000).contains(&ts.tv_nsec),
            "{ms}: {}",
            ts.tv_nsec
        );
        assert!(ts.tv_sec >= 0);
    }
    let far = crate::sys::monotonic_timespec(Instant::now() + Duration::from_secs(u64::MAX / 4));
    assert!(far.tv_sec > 0 && (0..1_000_000_000).contains(&far.tv_nsec));
}

#[test]
fn condition_wait_rejects_a_foreign_guard() {
    let cond = crate::Condition::new().unwrap();
    let other = Lock::new().unwrap();
    let g = other.lock().unwrap();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = cond.wait_timeout(g, Duration::ZERO);
    }));
    assert!(r.is_err());
}

#[test]
fn condition_accepts_a_guard_from_another_mapping_of_its_lock() {
    // A child that receives `(cond, lock)` maps the lock twice: once inside the condition,
    // once as the argument. Both mappings are the same lock.
    let cond = crate::Condition::new().unwrap();
    let (cond2, lock2): (crate::Condition, Lock) =
        pass_as(&(cond.clone(), cond.get_lock().clone())).unwrap();
    let g = lock2.lock().unwrap();
    let g = match cond2.wait_timeout(g, Duration::from_millis(1)) {
        Err(crate::ConditionTimeoutError::Timeout(g)) => g,
        Ok(_) => panic!("nobody notified: the wait must time out"),
        Err(e) => panic!("{e}"),
    };
    assert!(cond.get_lock().is_locked());
    drop(g);
    assert!(!cond.get_lock().is_locked());
    // And the wait really releases the lock through the guard's mapping.
    let g = lock2.lock().unwrap();
    let t = std::thread::spawn(move || {
        let _g = cond.lock().unwrap();
        cond.notify_all();
    });
    let g = cond2.wait(g).unwrap();
    drop(g);
    t.join().unwrap();
}

/// Writes `value` at `offset` bytes into the data of the segment behind `fd`, through a mapping
/// of its own, as another process would.
fn poke(fd: &std::os::fd::OwnedFd, offset: usize, value: u32) {
    use std::os::fd::AsFd;
    let len = crate::shm::HEADER_LEN + offset + 4;
    let p = crate::sys::map_shared(fd.as_fd(), len, true).unwrap();
    // SAFETY: inside the mapping just made; the word is 4-aligned (offsets used are).
    unsafe {
        (*p.as_ptr()
            .add(crate::shm::HEADER_LEN + offset)
            .cast::<std::sync::atomic::AtomicU32>())
        .store(value, Ordering::SeqCst);
        crate::sys::unmap(p, len);
    }
}

#[test]
fn a_lock_scribbled_with_our_own_thread_id_is_a_typed_error_not_a_panic() {
    let lock = Lock::new().unwrap();
    poke(
        lock.segment_fd(),
        lock.data_offset(),
        crate::sys::gettid() as u32,
    );
    match lock.lock() {
        Err(crate::LockError::Broken(e)) => {
            assert_eq!(
                e.io_error().and_then(std::io::Error::raw_os_error),
                Some(libc::EDEADLK)
            );
        }
        other => panic!("expected Broken, got {other:?}"),
    }
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(1)),
        Err(crate::LockTimeoutError::Broken(_))
    ));
    assert!(matches!(
        lock.try_lock(),
        Err(crate::TryLockError::WouldBlock)
    ));
    // Once the scribble is undone, the lock works again.
    poke(lock.segment_fd(), lock.data_offset(), 0);
    drop(lock.lock().unwrap());
}

/// Whether `r` failed with `EDEADLK` (a lock word naming this thread).
fn is_edeadlk<T: std::fmt::Debug>(r: crate::Result<T>) -> bool {
    match r {
        Err(e) => e.io_error().and_then(std::io::Error::raw_os_error) == Some(libc::EDEADLK),
        Ok(v) => panic!("expected EDEADLK, got Ok({v:?})"),
    }
}

#[test]
fn value_and_array_accessors_report_a_broken_lock_as_an_error() {
    let v = Value::new(1u64).unwrap();
    let a = Array::new(3, 2u16).unwrap();
    // This thread holding the lock already is one way; a peer writing our id into the word
    // is the other.
    {
        let _held = v.lock().unwrap();
        assert!(is_edeadlk(v.get()));
        assert!(is_edeadlk(v.set(5)));
        let _held = a.lock().unwrap();
        assert!(is_edeadlk(a.get(0)));
        assert!(is_edeadlk(a.set(0, 1)));
        assert!(is_edeadlk(a.to_vec()));
        assert!(is_edeadlk(a.copy_from_slice(&[1, 2, 3])));
    }
    let me = crate::sys::gettid() as u32;
    poke(v.segment_fd(), v.get_lock().data_offset(), me);
    poke(a.segment_fd(), a.get_lock().data_offset(), me);
    assert!(is_edeadlk(v.get()));
    assert!(is_edeadlk(v.set(5)));
    assert!(is_edeadlk(a.get(2)));
    assert!(is_edeadlk(a.set(2, 1)));
    assert!(is_edeadlk(a.to_vec()));
    assert!(is_edeadlk(a.copy_from_slice(&[1, 2, 3])));
    assert!(format!("{v:?}").contains("Value"));
    poke(v.segment_fd(), v.get_lock().data_offset(), 0);
    poke(a.segment_fd(), a.get_lock().data_offset(), 0);
    v.set(5).unwrap();
    assert_eq!(v.get().unwrap(), 5);
    a.copy_from_slice(&[4, 5, 6]).unwrap();
    assert_eq!(a.to_vec().unwrap(), [4, 5, 6]);
}

#[test]
fn a_lock_scribbled_with_a_dead_owner_is_taken_over_as_owner_died() {
    let lock = Lock::new().unwrap();
    // Thread ids are below 2^22 on Linux: this one exists nowhere.
    poke(lock.segment_fd(), lock.data_offset(), 0x3fff_fff0);
    assert!(lock.is_locked());
    match lock.lock_timeout(Duration::from_secs(30)) {
        Err(crate::LockTimeoutError::OwnerDied(d)) => drop(d.make_consistent()),
        other => panic!("expected OwnerDied, got {other:?}"),
    }
    drop(lock.try_lock().unwrap());
}

#[test]
fn layout_facts_are_read_once_at_open() {
    let a = Array::new(4, 7u32).unwrap();
    let back: Array<u32> = pass_as(&a).unwrap();
    // A peer rewrites the shared length (the word after the lock cell) after we opened.
    let len_at = a.get_lock().data_offset()
        + std::mem::size_of::<super::lock::LockCell>().next_multiple_of(8);
    poke(a.segment_fd(), len_at, 1 << 30);
    assert_eq!(back.len(), 4);
    assert_eq!(back.clone().len(), 4);
    assert_eq!(back.to_vec().unwrap(), [7; 4]);
    // Opening now sees a length the segment cannot hold.
    assert!(pass_as::<_, Array<u32>>(&a).is_err());
    // A bounded semaphore keeps the maximum it opened with.
    let b = crate::BoundedSemaphore::new(1).unwrap();
    let b2: crate::BoundedSemaphore = pass_as(&b).unwrap();
    poke(b.segment_fd(), 8, u32::MAX - 1);
    assert_eq!(b2.release(), Err(crate::OverRelease));
    // A barrier keeps its party count.
    let bar = Barrier::new(1).unwrap();
    let bar2: Barrier = pass_as(&bar).unwrap();
    assert_eq!(bar2.wait(), Ok(0));
}

#[test]
fn the_families_are_even() {
    // Array: try_lock and lock_deadline, like Value.
    let a = Array::new(2, 0u8).unwrap();
    let g = a.try_lock().unwrap();
    let a2 = a.clone();
    std::thread::spawn(move || {
        assert!(matches!(
            a2.try_lock(),
            Err(crate::TryLockError::WouldBlock)
        ));
        assert!(matches!(
            a2.lock_deadline(Instant::now() + Duration::from_millis(5)),
            Err(crate::LockTimeoutError::Timeout)
        ));
    })
    .join()
    .unwrap();
    drop(g);
    assert!(a.lock_deadline(Instant::now()).is_ok());
    // RLock::is_locked, held by this thread, recursively.
    let r = RLock::new().unwrap();
    assert!(!r.is_locked());
    let g1 = r.lock().unwrap();
    let g2 = r.try_lock().unwrap();
    assert!(r.is_locked());
    drop(g2);
    assert!(r.is_locked());
    drop(g1);
    assert!(!r.is_locked());
    // Semaphore: RAII permits and release(n).
    let s = Semaphore::new(2).unwrap();
    let p1 = s.permit();
    let p2 = s.try_permit().unwrap();
    assert_eq!(
        s.try_permit().unwrap_err(),
        crate::TryAcquireError::NoPermit
    );
    assert_eq!(
        s.permit_timeout(Duration::from_millis(1)).unwrap_err(),
        crate::AcquireTimeoutError::Timeout
    );
    drop((p1, p2));
    assert_eq!(s.value(), 2);
    s.permit().forget();
    assert_eq!(s.value(), 1);
    s.release_n(5).unwrap();
    assert_eq!(s.value(), 6);
    let b = crate::BoundedSemaphore::new(3).unwrap();
    assert!(b.try_acquire().is_ok() && b.try_acquire().is_ok());
    assert_eq!(b.release_n(3), Err(crate::OverRelease));
    assert_eq!(b.value(), 1, "an over-release changes nothing");
    b.release_n(2).unwrap();
    assert_eq!(b.value(), 3);
}

#[test]
fn short_timeouts_still_see_a_dead_owner() {
    let lock = Lock::new().unwrap();
    let l2 = lock.clone();
    std::thread::spawn(move || std::mem::forget(l2.lock().unwrap()))
        .join()
        .unwrap();
    // Each attempt gives up long before a 10 ms sleep slice ends.
    let mut seen = false;
    for _ in 0..3 {
        match lock.lock_timeout(Duration::from_micros(100)) {
            Err(crate::LockTimeoutError::OwnerDied(d)) => {
                drop(d.make_consistent());
                seen = true;
                break;
            }
            Err(crate::LockTimeoutError::Timeout) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(seen, "a dead owner's lock stayed taken for short timeouts");
}

#[test]
fn try_lock_polling_sees_a_killed_unreaped_owner() {
    // A forked child that locks and is killed, but not reaped: its thread is a zombie.
    let lock = Lock::new().unwrap();
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let (r, w) = (fds[0], fds[1]);
    // SAFETY: the child only locks, writes one byte and sleeps (async-signal-safe enough for
    // a test: no allocation, no other lock).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        std::mem::forget(lock.lock());
        // SAFETY: writing one byte to our pipe end.
        unsafe { libc::write(w, [1u8].as_ptr().cast(), 1) };
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    let mut b = [0u8; 1];
    // SAFETY: reading one byte into `b`, then closing our two descriptors.
    unsafe {
        libc::close(w);
        assert_eq!(libc::read(r, b.as_mut_ptr().cast(), 1), 1);
        libc::close(r);
    }
    // SAFETY: our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = false;
    while Instant::now() < deadline {
        if let Err(crate::TryLockError::OwnerDied(d)) = lock.try_lock() {
            drop(d.make_consistent());
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    // SAFETY: reaping our own child.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    assert!(seen, "try_lock never noticed the killed owner");
}

#[test]
fn a_scribbled_recursion_flag_never_gives_one_thread_two_guards() {
    // A peer writes "recursive" and a recursion depth into a Value's lock (offsets 16 and 4 of
    // the robust lock). The handle knows it is not recursive: the second lock in the same
    // thread is refused, and one unlock releases it whatever the depth says.
    let v = Value::new([0u64; 16]).unwrap();
    let lock_at = v.get_lock().data_offset();
    poke(v.segment_fd(), lock_at + 16, 1);
    poke(v.segment_fd(), lock_at + 4, 5);
    let g1 = v.lock().unwrap();
    assert!(
        v.lock().is_err(),
        "a second ValueGuard was handed out while the first is alive"
    );
    assert!(matches!(v.try_lock(), Err(crate::TryLockError::WouldBlock)));
    drop(g1);
    assert!(
        !v.get_lock().is_locked(),
        "one unlock releases a non-recursive lock"
    );
}

/// Runs `f` in another thread (a lock held here is "held by someone else" there).
fn elsewhere<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    std::thread::spawn(f).join().unwrap()
}

#[test]
fn would_block_and_timeout_are_told_apart_for_every_lock() {
    use crate::{LockTimeoutError, TryLockError};
    let short = Duration::from_millis(2);
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let v = Value::new(0u32).unwrap();
    let a = Array::new(3, 0u8).unwrap();
    let held = (
        lock.lock().unwrap(),
        rlock.lock().unwrap(),
        v.lock().unwrap(),
        a.lock().unwrap(),
    );
    let (l2, r2, v2, a2) = (lock.clone(), rlock.clone(), v.clone(), a.clone());
    elsewhere(move || {
        let past = Instant::now() - Duration::from_secs(1);
        // The four handles have no trait in common: the same checks, once per handle.
        macro_rules! held_elsewhere {
            ($($handle:expr),*) => { $(
                assert!(matches!($handle.try_lock(), Err(TryLockError::WouldBlock)));
                let r = $handle.lock_timeout(short);
                assert!(matches!(r, Err(LockTimeoutError::Timeout)));
                let r = $handle.lock_deadline(past);
                assert!(matches!(r, Err(LockTimeoutError::Timeout)));
            )* };
        }
        held_elsewhere!(l2, r2, v2, a2);
    });
    // This thread's own hold: `try_lock` says it would block, the timed and blocking locks
    // say the lock cannot be used (EDEADLK), never that time ran out.
    assert!(matches!(lock.try_lock(), Err(TryLockError::WouldBlock)));
    match lock.lock_timeout(short) {
        Err(LockTimeoutError::Broken(e)) => assert_eq!(
            e.io_error().and_then(std::io::Error::raw_os_error),
            Some(libc::EDEADLK)
        ),
        other => panic!("expected Broken, got {other:?}"),
    }
    // The recursive lock is this thread's to take again, in every form.
    drop(rlock.try_lock().unwrap());
    drop(rlock.lock_timeout(short).unwrap());
    drop(held);
    assert!(!lock.is_locked() && !rlock.is_locked());
    assert!(!v.get_lock().is_locked() && !a.get_lock().is_locked());
}

#[test]
fn the_timeout_errors_say_what_happened() {
    use crate::{LockTimeoutError, TryLockError};
    let t: TryLockError<()> = TryLockError::WouldBlock;
    let l: LockTimeoutError<()> = LockTimeoutError::Timeout;
    assert_eq!(format!("{t:?}"), "WouldBlock");
    assert_eq!(format!("{l:?}"), "Timeout");
    assert!(t.to_string().contains("held"), "{t}");
    assert!(l.to_string().contains("deadline"), "{l}");
    let b = crate::BarrierTimeoutError::Timeout;
    assert!(b.to_string().contains("timed out"), "{b}");
    assert_eq!(crate::BrokenBarrier::from(b), crate::BrokenBarrier);
}

#[test]
fn a_guard_dropped_by_a_panic_unlocks_cleanly() {
    // A thread that panics while holding a guard unwinds through the one unlocker: the lock is
    // free and clean (no owner died), for a Lock, an RLock held twice, a Value and an Array.
    let lock = Lock::new().unwrap();
    let rlock = RLock::new().unwrap();
    let v = Value::new(1u64).unwrap();
    let a = Array::new(2, 1u16).unwrap();
    let (l2, r2, v2, a2) = (lock.clone(), rlock.clone(), v.clone(), a.clone());
    let panicked = std::thread::spawn(move || {
        let _l = l2.lock().unwrap();
        let _r1 = r2.lock().unwrap();
        let _r2 = r2.try_lock().unwrap();
        let mut g = v2.lock().unwrap();
        *g = 2;
        let mut h = a2.lock().unwrap();
        h[1] = 2;
        panic!("half-way");
    })
    .join();
    assert!(panicked.is_err());
    assert!(!lock.is_locked() && !lock.is_owner_died());
    assert!(!rlock.is_locked() && !rlock.is_owner_died());
    assert_eq!(*v.try_lock().unwrap(), 2);
    assert_eq!(*a.try_lock().unwrap(), [1, 2]);
}

#[test]
fn a_barrier_wait_that_times_out_says_so_and_breaks_it_for_the_others() {
    use crate::{BarrierTimeoutError, BrokenBarrier};
    let b = Barrier::new(3).unwrap();
    let b2 = b.clone();
    let (arrived_tx, arrived_rx) = std::sync::mpsc::channel();
    let patient = std::thread::spawn(move || {
        arrived_tx.send(()).unwrap();
        b2.wait_timeout(Duration::from_secs(60))
    });
    arrived_rx.recv().unwrap();
    while b.n_waiting() == 0 {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(
        b.wait_timeout(Duration::from_millis(5)),
        Err(BarrierTimeoutError::Timeout)
    );
    assert_eq!(patient.join().unwrap(), Err(BarrierTimeoutError::Broken));
    // Broken until reset, in every form; the untimed wait says `BrokenBarrier`.
    assert_eq!(b.wait(), Err(BrokenBarrier));
    assert_eq!(
        b.wait_deadline(Instant::now() + Duration::from_secs(60)),
        Err(BarrierTimeoutError::Broken)
    );
    // A default timeout running out is a broken barrier to `wait`, as in Python.
    b.reset();
    let b3 = b.clone().with_timeout(Duration::from_millis(5));
    assert_eq!(b3.wait(), Err(BrokenBarrier));
    assert!(b.is_broken());
    b.reset();
    let one = Barrier::new(1).unwrap();
    assert_eq!(
        one.wait_deadline(Instant::now() - Duration::from_secs(1)),
        Ok(0)
    );
}

/// Four waiters, one `notify(1)` per token, each token added under the lock: the real kernel
/// wakes one sleeper per call (the loom model wakes all), and `notify` advances the sequence
/// only when someone is registered. A waiter between registering and sleeping, or a wake that
/// lands on a waiter that then finds no token, must never leave a token with every waiter
/// asleep: each wait has a deadline, and timing out with a token left is the failure.
#[test]
fn condition_notify_one_per_token_leaves_no_token_behind() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as O};

    const TOKENS: u64 = 20_000;
    let cond = crate::Condition::new().unwrap();
    let tokens = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let waiters: Vec<_> = (0..4)
        .map(|_| {
            let (cond, tokens, done) = (cond.clone(), tokens.clone(), done.clone());
            std::thread::spawn(move || {
                let mut taken = 0u64;
                let mut g = cond.lock().unwrap();
                loop {
                    while tokens.load(O::Relaxed) == 0 && !done.load(O::Relaxed) {
                        g = match cond.wait_timeout(g, Duration::from_secs(20)) {
                            Ok(g) => g,
                            Err(crate::ConditionTimeoutError::Timeout(g)) => {
                                // Nothing wakes a waiter for 20 s unless a wake was lost.
                                let left = tokens.load(O::Relaxed);
                                assert_eq!(left, 0, "a waiter slept through {left} tokens");
                                g
                            }
                            Err(e) => panic!("{e}"),
                        };
                    }
                    if tokens.load(O::Relaxed) > 0 {
                        tokens.fetch_sub(1, O::Relaxed);
                        taken += 1;
                    } else {
                        return taken;
                    }
                }
            })
        })
        .collect();
    for i in 0..TOKENS {
        {
            let _g = cond.lock().unwrap();
            tokens.fetch_add(1, O::Relaxed);
        }
        cond.notify(1);
        if i % 64 == 0 {
            std::thread::yield_now();
        }
    }
    // Every token is taken before the end is told.
    let t = Instant::now();
    while tokens.load(O::Relaxed) > 0 {
        assert!(t.elapsed() < Duration::from_secs(30), "tokens left unseen");
        std::thread::sleep(Duration::from_millis(1));
    }
    {
        let _g = cond.lock().unwrap();
        done.store(true, O::Relaxed);
    }
    cond.notify_all();
    let taken: u64 = waiters.into_iter().map(|w| w.join().unwrap()).sum();
    assert_eq!(taken, TOKENS);
}
