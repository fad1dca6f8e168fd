//! Hostile peers: a child that scribbles random bytes over the segments of a `Lock`, a
//! `Semaphore`, an `Event`, a `Condition` and a `Barrier` while the parent uses them. Every
//! operation must return (deadlines bound the waits) with a typed result: never a crash, a
//! panic or a hang.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use multiproc::{
    Barrier, Condition, ConditionTimeoutError, Event, Lock, LockError, LockTimeoutError, Process,
    Semaphore, TryLockError,
};

use crate::{Context, ensure};

/// Segment names: locks live in arena chunks, the others in segments of their own.
const KINDS: [&str; 5] = ["Arena", "Semaphore", "Event", "Condition", "Barrier"];

/// Maps every multiproc sync segment this process holds a descriptor of, through
/// `/proc/self/fd` (as any process of the user could), and overwrites random bytes of them
/// for `ms` milliseconds. Returns how many places it scribbled over.
fn scribble(args: (Lock, Semaphore, Event, Condition, Barrier, u64)) -> usize {
    let ms = args.5;
    // (start, len) of the memory to scribble over.
    let mut maps: Vec<(*mut u8, usize)> = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd")
        .expect("list fds")
        .flatten()
    {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let target = target.to_string_lossy().into_owned();
        if !KINDS
            .iter()
            .any(|k| target.contains(&format!("memfd:multiproc-{k} ")))
        {
            continue;
        }
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(entry.path())
        else {
            continue;
        };
        let len = file.metadata().expect("stat").len() as usize;
        // SAFETY: a new shared mapping of the whole file, used only through raw pointers.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        let p = p.cast::<u8>();
        if !target.contains("multiproc-Arena") {
            maps.push((p, len));
            continue;
        }
        // An arena chunk also holds the test process's other locks: find our two locks' slots
        // (their futex word holds our thread id while we hold them) and scribble only those.
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u32;
        for lock in [&args.0, args.3.get_lock()] {
            let Ok(_held) = lock.lock_timeout(Duration::from_secs(30)) else {
                continue;
            };
            for off in (0..len).step_by(4) {
                // SAFETY: inside the mapping, 4-aligned.
                let w = unsafe {
                    (*p.add(off).cast::<std::sync::atomic::AtomicU32>()).load(Ordering::Relaxed)
                };
                if w & 0x3fff_ffff == tid && off >= 16 {
                    // The slot: its 16-byte header, then the lock.
                    // SAFETY: inside the mapping.
                    maps.push((unsafe { p.add(off - 16) }, 64.min(len - (off - 16))));
                }
            }
        }
    }
    let mut x = 0x9e37_79b9_7f4a_7c15_u64 ^ u64::from(std::process::id());
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let end = std::time::Instant::now() + Duration::from_millis(ms);
    while std::time::Instant::now() < end {
        for &(p, len) in &maps {
            for _ in 0..8 {
                let r = next();
                // Mostly the first 256 bytes (header and state), sometimes anywhere.
                let span = if r & 3 == 0 { len } else { len.min(256) };
                let off = (r >> 8) as usize % span;
                // SAFETY: inside our own mapping; a hostile write is the point of the test.
                unsafe { p.add(off).write_volatile((r >> 40) as u8) };
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    maps.len()
}

/// Counts of outcomes, to show that the scribbles had effects and everything returned.
#[derive(Default)]
struct Tally {
    ops: AtomicU64,
    broken: AtomicU64,
}

pub fn scribbled_segments_give_typed_errors() -> Result<(), String> {
    let lock = Lock::new().ctx("lock")?;
    let sem = Semaphore::new(2).ctx("sem")?;
    let ev = Event::new().ctx("event")?;
    let cond = Condition::new().ctx("condition")?;
    let barrier = Barrier::new(2).ctx("barrier")?;
    let mut p = Process::new(
        scribble,
        (
            lock.clone(),
            sem.clone(),
            ev.clone(),
            cond.clone(),
            barrier.clone(),
            1500,
        ),
    );
    p.start().ctx("start")?;
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let short = Duration::from_millis(5);
    let mut threads = Vec::new();
    {
        let (lock, stop, tally) = (lock.clone(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tally.ops.fetch_add(1, Ordering::Relaxed);
                match lock.lock_timeout(short) {
                    Ok(g) => drop(g),
                    Err(LockTimeoutError::Timeout) => {}
                    Err(LockTimeoutError::OwnerDied(d)) => drop(d.make_consistent()),
                    Err(LockTimeoutError::Broken(_)) => {
                        tally.broken.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tally.ops.fetch_add(1, Ordering::Relaxed);
                match lock.try_lock() {
                    Ok(g) => drop(g),
                    Err(TryLockError::WouldBlock) => {}
                    Err(TryLockError::OwnerDied(d)) => drop(d.make_consistent()),
                    Err(TryLockError::Broken(_)) => {
                        tally.broken.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let _ = lock.is_locked();
            }
        }));
    }
    {
        let (sem, ev, stop, tally) = (sem.clone(), ev.clone(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tally.ops.fetch_add(1, Ordering::Relaxed);
                if sem.acquire_timeout(short).is_ok() {
                    let _ = sem.release();
                }
                drop(sem.try_permit());
                let _ = sem.release_n(1);
                let _ = sem.try_acquire();
                let _ = sem.value();
                ev.set();
                let _ = ev.wait_timeout(short);
                ev.clear();
                let _ = ev.wait_timeout(short);
                let _ = ev.is_set();
            }
        }));
    }
    {
        let (cond, barrier, stop, tally) =
            (cond.clone(), barrier.clone(), stop.clone(), tally.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                tally.ops.fetch_add(1, Ordering::Relaxed);
                let g = match cond.get_lock().lock_timeout(short) {
                    Ok(g) => Some(g),
                    Err(LockTimeoutError::OwnerDied(d)) => Some(d.make_consistent()),
                    Err(_) => None,
                };
                if let Some(g) = g {
                    match cond.wait_timeout(g, short) {
                        Ok(g) | Err(ConditionTimeoutError::Timeout(g)) => drop(g),
                        Err(ConditionTimeoutError::Lock(LockError::OwnerDied(d))) => {
                            drop(d.into_inner())
                        }
                        Err(ConditionTimeoutError::Lock(LockError::Broken(_))) => {
                            tally.broken.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                cond.notify(1);
                cond.notify_all();
                let _ = barrier.wait_timeout(short);
                let _ = barrier.n_waiting();
                if barrier.is_broken() {
                    barrier.reset();
                }
            }
        }));
    }
    let found = p.join().ctx("join the scribbler");
    stop.store(true, Ordering::Relaxed);
    let finished = ipc_tests::eventually(Duration::from_secs(60), || {
        threads.iter().all(std::thread::JoinHandle::is_finished)
    });
    ensure!(finished, "an operation hung on a scribbled segment");
    for t in threads {
        if t.join().is_err() {
            return Err("an operation panicked on a scribbled segment".into());
        }
    }
    let found = found?;
    // The semaphore's, event's, condition's and barrier's segments, and the two locks' slots.
    ensure!(
        found >= 6,
        "the scribbler found only {found} places to scribble over"
    );
    ensure!(
        tally.ops.load(Ordering::Relaxed) > 0,
        "no operation ran while the scribbler worked"
    );
    Ok(())
}
