//! The raw floor of a cross-process round trip: two processes ping-pong on one futex word in
//! a shared anonymous mapping (1 → 2 → 1 ...), sleeping in FUTEX_WAIT as a blocking primitive
//! does. Include with `#[path = "common/futex.rs"] mod futex;`.

use std::sync::atomic::{AtomicU32, Ordering};

use multiproc::Process;

/// A futex word in a shared anonymous mapping.
pub struct SharedWord(*mut AtomicU32);

// SAFETY: the word is an atomic in memory shared by the two processes.
unsafe impl Send for SharedWord {}

impl SharedWord {
    pub fn new() -> SharedWord {
        // SAFETY: a fresh shared anonymous page; an all-zero AtomicU32 is valid.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        SharedWord(p.cast())
    }

    pub fn word(&self) -> &AtomicU32 {
        // SAFETY: the mapping lives for the whole benchmark process.
        unsafe { &*self.0 }
    }

    /// Waits until the word is `want` (sleeping on the futex).
    pub fn wait_for(&self, want: u32) {
        loop {
            let v = self.word().load(Ordering::Acquire);
            if v == want {
                return;
            }
            // SAFETY: a futex wait on a live shared word.
            unsafe {
                libc::syscall(
                    libc::SYS_futex,
                    self.0,
                    libc::FUTEX_WAIT,
                    v,
                    std::ptr::null::<libc::timespec>(),
                )
            };
        }
    }

    pub fn set(&self, v: u32) {
        self.word().store(v, Ordering::Release);
        // SAFETY: a futex wake on a live shared word.
        unsafe { libc::syscall(libc::SYS_futex, self.0, libc::FUTEX_WAKE, 1) };
    }
}

/// A forked child that answers every 1 with a 2 on the word, after `place` (say, pinning it to
/// a CPU), until [`stop`]ped. Fork while this process is single-threaded.
pub fn echo_child(w: &SharedWord, place: impl FnOnce() + Send + 'static) -> Process<()> {
    let child_word = SharedWord(w.0);
    // SAFETY: the benchmark calls this while it is single-threaded; the child only pins itself
    // and touches the shared word.
    let mut raw = unsafe {
        Process::new_fork_unchecked(move || {
            place();
            loop {
                child_word.wait_for(1);
                child_word.set(2);
            }
        })
    };
    raw.start().unwrap();
    raw
}

/// One round trip through the echo child.
pub fn round_trip(w: &SharedWord) {
    w.set(1);
    w.wait_for(2);
}

/// Ends the echo child (it sleeps on the word: only a signal ends it) and reaps it.
pub fn stop(mut child: Process<()>) {
    child.kill().unwrap();
    let _ = child.join();
}
