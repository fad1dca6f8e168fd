//! In-process unit tests: handles decoded as the wrong object, layout, deadlines.

use std::time::{Duration, Instant};

use crate::codec;
use crate::process::handles;
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
    back.set(6);
    assert_eq!(v.get(), 6);
    let l = Lock::new().unwrap();
    let back: Lock = pass_as(&l).unwrap();
    let _g = back.lock().unwrap();
    assert!(l.is_locked());
}

#[test]
fn a_handle_decoded_as_another_object_is_refused() {
    let lock = Lock::new().unwrap();
    // (postcard reduces the handle's own message to a generic decoding error.)
    assert!(pass_as::<_, Semaphore>(&lock).is_err());
    assert!(pass_as::<_, RLock>(&lock).is_err());
    assert!(pass_as::<_, Event>(&Semaphore::new(1).unwrap()).is_err());
    assert!(pass_as::<_, Barrier>(&Event::new().unwrap()).is_err());
    // A Value's lock is a Lock; a Value of another type is not the same Value.
    assert!(pass_as::<_, Lock>(&Value::new(1u8).unwrap()).is_ok());
    assert!(pass_as::<_, Value<u64>>(&Value::new(1u32).unwrap()).is_err());
    assert!(pass_as::<_, Array<u16>>(&Array::new(4, 0u8).unwrap()).is_err());
    assert!(pass_as::<_, Value<u8>>(&Array::new(1, 0u8).unwrap()).is_err());
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
    assert_eq!(v.get(), Wide([3; 16]));
    assert_eq!(v.lock().unwrap().0.as_ptr() as usize % 128, 0);
    let empty = Array::<u64>::new(0, 0).unwrap();
    assert!(empty.is_empty() && empty.to_vec().is_empty());
}

#[test]
fn timeouts_that_overflow_mean_forever_and_zero_means_now() {
    let lock = Lock::new().unwrap();
    drop(lock.lock_timeout(Duration::MAX).unwrap());
    let sem = Semaphore::new(1).unwrap();
    assert!(sem.acquire_timeout(Duration::MAX));
    let t = Instant::now();
    assert!(!sem.acquire_timeout(Duration::ZERO));
    assert!(!sem.acquire_timeout(Duration::from_millis(20)));
    assert!(t.elapsed() >= Duration::from_millis(20));
    let ev = Event::new().unwrap();
    assert!(!ev.wait_deadline(Instant::now() - Duration::from_secs(1)));
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
    let (g, res) = cond2.wait_timeout(g, Duration::from_millis(1)).unwrap();
    assert!(res.timed_out());
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
