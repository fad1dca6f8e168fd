use super::owner::thread_stat;
use super::*;

/// A live thread parked until the returned sender drops, and its stamp.
fn live_thread() -> (
    std::sync::mpsc::Sender<()>,
    std::thread::JoinHandle<()>,
    u64,
) {
    let (stamp_tx, stamp_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        stamp_tx.send(my_stamp()).unwrap();
        let _ = stop_rx.recv();
    });
    let stamp = stamp_rx.recv().unwrap();
    (stop_tx, t, stamp)
}

fn forged(word: u32, stamp: u64) -> RobustMutex {
    RobustMutex {
        word: AtomicU32::new(word),
        depth: AtomicU32::new(0),
        stamp: AtomicU64::new(stamp),
        recursive: AtomicU32::new(0),
    }
}

#[test]
fn own_stamp_names_this_thread_and_its_start_time() {
    let stamp = my_stamp();
    let tid = stamp_tid(stamp);
    assert_eq!(tid, (super::super::gettid() as u32) & TID_MASK);
    let (_, start) = thread_stat(&format!("/proc/{tid}/stat")).unwrap();
    assert_eq!(stamp as u32, start);
}

#[test]
fn an_owner_whose_tid_was_reused_by_a_live_thread_is_taken_over() {
    let (stop, t, stamp) = live_thread();
    let tid = stamp_tid(stamp);
    // The word names a live thread, but the stamp says the holder started at another time:
    // an earlier thread of that tid, now gone.
    let reused = stamp ^ 1;
    let m = forged(tid, reused);
    let r = m.lock(Some(Instant::now() + Duration::from_secs(10)), false);
    assert!(matches!(r, Ok(Locked::OwnerDied)), "{r:?}");
    assert_eq!(
        m.word.load(Ordering::Relaxed) & TID_MASK,
        stamp_tid(my_stamp())
    );
    assert_eq!(m.stamp.load(Ordering::Relaxed), my_stamp());
    // SAFETY: held just above.
    unsafe { m.unlock(false) };
    assert_eq!(m.stamp.load(Ordering::Relaxed), 0);

    // `try_lock` sees it too, once it has looked for CHECK_EVERY.
    let m = forged(tid, reused);
    let give_up = Instant::now() + Duration::from_secs(10);
    let r = loop {
        match m.try_lock(false) {
            Err(LockFailed::Busy) if Instant::now() < give_up => {
                std::thread::sleep(Duration::from_millis(2));
            }
            r => break r,
        }
    };
    assert!(matches!(r, Ok(Locked::OwnerDied)), "{r:?}");
    drop(stop);
    t.join().unwrap();
}

#[test]
fn a_live_owner_is_never_taken_over_stamped_or_not() {
    let (stop, t, stamp) = live_thread();
    let tid = stamp_tid(stamp);
    // Not stamped yet (between its compare-and-swap and its stamp), stamped, and a stamp
    // of another tid (left by a scribbler): none proves the owner dead.
    for s in [0, stamp, (u64::from(tid ^ 1) << 32) | 7] {
        let m = forged(tid, s);
        let r = m.lock(Some(Instant::now() + 3 * CHECK_EVERY), false);
        assert!(matches!(r, Err(LockFailed::Busy)), "stamp {s:#x}: {r:?}");
        let until = Instant::now() + 3 * CHECK_EVERY;
        while Instant::now() < until {
            let r = m.try_lock(false);
            assert!(matches!(r, Err(LockFailed::Busy)), "stamp {s:#x}: {r:?}");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    drop(stop);
    t.join().unwrap();
}

#[test]
fn release_clears_the_stamp_and_recursion_keeps_it() {
    let m = forged(0, 0);
    assert!(matches!(m.lock(None, true), Ok(Locked::Clean)));
    assert!(matches!(m.try_lock(true), Ok(Locked::Clean)));
    // SAFETY: held twice just above.
    unsafe { m.unlock(true) };
    assert_eq!(m.stamp.load(Ordering::Relaxed), my_stamp());
    // SAFETY: as above.
    unsafe { m.unlock(true) };
    assert_eq!(m.stamp.load(Ordering::Relaxed), 0);
    assert_eq!(m.word.load(Ordering::Relaxed), 0);
}
