//! Hostile peers and dead processes: scribbled lock words, state and ring; claims and messages
//! left by processes that died.

use super::*;

/// The lock word of a side's lock (the owner's thread id and a waiters bit: the first word of a
/// `LockCell`).
fn lock_word(cell: &LockCell) -> &std::sync::atomic::AtomicU32 {
    assert!(std::mem::size_of::<LockCell>() >= std::mem::size_of::<u32>());
    // SAFETY: a LockCell starts with the robust lock, whose first field is its 32-bit word; it
    // lives in the mapped segment for as long as `cell` is borrowed.
    unsafe { &*(cell as *const LockCell as *const std::sync::atomic::AtomicU32) }
}

#[test]
fn a_lost_lock_wake_delays_a_consumer_but_never_wedges_it() {
    // The state a waiter is left in when a wake never comes: the lock is held by a live thread
    // (this one, by its id), then freed without a wake. The sleeper must find out by itself.
    let q = Queue::<u32>::new().unwrap();
    q.put(8).unwrap();
    let word = lock_word(&q.st().cons.lock);
    assert_eq!(word.load(Ordering::Acquire), 0);
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() } as u32;
    word.store(me, Ordering::Release);
    let consumer = {
        let q = q.clone();
        spawn_bounded(move || q.get_timeout(BOUND))
    };
    std::thread::sleep(Duration::from_millis(50)); // the consumer is asleep on the lock
    // Still ours: a live owner is not taken over.
    assert_eq!(word.load(Ordering::Acquire) & 0x3fff_ffff, me);
    word.store(0, Ordering::Release);
    assert_eq!(consumer.join().unwrap(), 8);
}

#[test]
fn a_side_lock_naming_this_thread_fails_the_operation_with_a_typed_error() {
    // A peer wrote our own thread id into both lock words: every operation of this thread
    // must fail with a typed error (not panic, not wait), and work again once the word is free.
    let q = Queue::<u32>::new().unwrap();
    q.put(1).unwrap();
    let st = q.st();
    let me = crate::sys::gettid() as u32;
    for word in [lock_word(&st.prod.lock), lock_word(&st.cons.lock)] {
        word.store(me, Ordering::Release);
    }
    let deadlock = |e: &crate::Error| {
        e.io_error().and_then(std::io::Error::raw_os_error) == Some(libc::EDEADLK)
    };
    match q.put_timeout(2, Duration::from_millis(50)) {
        Err(PutTimeoutError::Failed(e)) => assert!(deadlock(&e.error), "{}", e.error),
        r => panic!("{r:?}"),
    }
    match q.get_timeout(Duration::from_millis(50)) {
        Err(GetTimeoutError::Failed(e)) => assert!(deadlock(&e), "{e}"),
        r => panic!("{r:?}"),
    }
    // A try_ operation sees a lock held (by this thread, as far as it can tell): it is busy.
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    for word in [lock_word(&st.prod.lock), lock_word(&st.cons.lock)] {
        word.store(0, Ordering::Release);
    }
    q.put(4).unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), 1);
    assert_eq!(q.get_timeout(BOUND).unwrap(), 4);
}

/// A tiny deterministic generator for the scribbler.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn a_peer_scribbling_over_the_state_and_ring_causes_typed_errors_only() {
    // Threads put and get (with deadlines; values from empty to several rings) while another
    // writes random bytes over the shared state (the two side locks included) and over the
    // ring. Nothing may panic, hang or allocate past the message limit.
    const LIMIT: usize = 256 << 10;
    let q = Queue::<Vec<u8>>::builder()
        .capacity(16 << 10)
        .max_message(LIMIT)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let short = Duration::from_millis(5);
    let workers: Vec<_> = (0..4u64)
        .map(|w| {
            let q = q.clone();
            let stop = stop.clone();
            spawn_bounded(move || {
                let mut rng = XorShift(w * 7919 + 1);
                let mut ops = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if w % 2 == 0 {
                        let len = (rng.next() % (100 << 10)) as usize;
                        let _ = q.put_timeout(vec![w as u8; len], short);
                        let _ = q.try_put(vec![1; 10]);
                    } else {
                        if let Ok(v) = q.get_timeout(short) {
                            assert!(v.len() <= LIMIT);
                        }
                        let _ = q.try_get();
                        let _ = (q.qsize(), q.is_full(), q.lost_messages());
                    }
                    ops += 1;
                }
                let scratch = q.scratch.lock().unwrap().capacity();
                assert!(scratch <= 2 * LIMIT, "reassembly grew to {scratch} bytes");
                ops
            })
        })
        .collect();
    let st: &State = q.st();
    let base = st as *const State as usize;
    let ring = q.seg.ring.ptr.as_ptr() as usize;
    let cap = q.seg.cap as usize;
    let mut rng = XorShift(0x5eed);
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end {
        for _ in 0..64 {
            let r = rng.next();
            let addr = if r.is_multiple_of(3) {
                ring + (rng.next() as usize) % cap
            } else {
                base + (rng.next() as usize) % std::mem::size_of::<State>()
            };
            // SAFETY: a byte inside the mapped state or ring, written atomically: what a
            // hostile process holding the segment can do at any time.
            let byte = unsafe { &*(addr as *const std::sync::atomic::AtomicU8) };
            byte.store(rng.next() as u8, Ordering::Relaxed);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    stop.store(true, Ordering::Relaxed);
    let ops: u64 = workers.into_iter().map(Bounded::join).sum();
    assert!(ops > 0);
}

/// The pid of a process that has ended and been reaped.
fn dead_pid() -> i32 {
    let mut c = std::process::Command::new("true").spawn().unwrap();
    let pid = c.id() as i32;
    c.wait().unwrap();
    pid
}

#[test]
fn claims_left_by_dead_processes_are_taken_over() {
    let q = Queue::<u8>::new().unwrap();
    let st = q.st();
    let dead = dead_pid();
    // A process killed while claiming a slot leaves its claim marker behind.
    st.slots[layout::SLOTS - 1]
        .pid
        .store(-dead, Ordering::Release);
    q.close();
    assert!(matches!(
        q.get_timeout(BOUND),
        Err(GetTimeoutError::Disconnected)
    ));
    // A table full of such claims still has room for a new handle.
    for s in &st.slots {
        let _ = s
            .pid
            .compare_exchange(0, -dead, Ordering::AcqRel, Ordering::Relaxed);
    }
    let h = q.clone();
    assert!(h.slot.is_some(), "stale claims must be reclaimable");
    assert_eq!(st.counts.untracked.load(Ordering::Acquire), 0);
}

#[test]
fn every_message_a_dead_process_held_is_counted() {
    // Two consumer threads of one process each hold a message (taken, not yet returned) when
    // it dies: both are lost, and both are counted.
    let q = Queue::<u8>::new().unwrap();
    let st = q.st();
    let s = &st.slots[layout::SLOTS - 1];
    s.start.store(1, Ordering::Release);
    s.taken.store(5, Ordering::Release);
    s.returned.store(3, Ordering::Release);
    s.pid.store(dead_pid(), Ordering::Release);
    assert_eq!(q.lost_messages(), 2);
    assert_eq!(q.lost_messages(), 2, "counted once");
    assert_eq!(s.pid.load(Ordering::Acquire), 0, "the slot is free again");

    // Live threads of this process: what they took and returned balances.
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            q.close();
            spawn_bounded(move || {
                let mut n = 0;
                while q.get_timeout(BOUND).is_ok() {
                    n += 1;
                }
                n
            })
        })
        .collect();
    for i in 0..3000u32 {
        q.put((i % 251) as u8).unwrap();
    }
    q.close();
    let total: u32 = consumers.into_iter().map(Bounded::join).sum();
    assert_eq!(total, 3000);
    let mine = &st.slots[q.slot.unwrap()];
    assert_eq!(
        mine.taken.load(Ordering::Acquire),
        mine.returned.load(Ordering::Acquire)
    );
    assert_eq!(q.lost_messages(), 2);
}

#[test]
fn scribbled_cpu_masks_cost_speed_never_a_message() {
    // Each side's CPU mask is a hint that decides only whether a waiter spins. Masks that claim
    // one CPU for both sides (no spin), all CPUs, or garbage, rewritten while a producer and a
    // consumer on two threads exchange messages through a ring small enough to make both wait:
    // every message arrives once, in order, and nobody hangs.
    let q = Queue::<u64>::with_capacity(4096).unwrap();
    let (tx, rx) = (q.clone(), q.clone());
    let stop = Arc::new(AtomicBool::new(false));
    let scribbler = {
        let (q, stop) = (q.clone(), stop.clone());
        spawn_bounded(move || {
            let values = [1, 1 << 5, u64::MAX, 0, 0xDEAD_BEEF];
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                q.st().prod.cpus.store(values[i % 5], Ordering::Relaxed);
                q.st()
                    .cons
                    .cpus
                    .store(values[(i / 5) % 5], Ordering::Relaxed);
                i += 1;
                std::thread::yield_now();
            }
        })
    };
    const N: u64 = 50_000;
    let producer = spawn_bounded(move || {
        for i in 0..N {
            tx.put(i).unwrap();
        }
    });
    let got = within(move || {
        (0..N)
            .map(|_| rx.get_timeout(BOUND).unwrap())
            .collect::<Vec<_>>()
    });
    producer.join();
    stop.store(true, Ordering::Relaxed);
    scribbler.join();
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}
