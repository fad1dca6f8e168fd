//! Stack overflows in a child taken over before `main`: std's runtime set-up, which has not run
//! there, is what makes an overflow print "has overflowed its stack" (for the main thread and
//! for every thread std starts); without it an overflow is a silent SIGSEGV. This arranges the
//! message for the one thread that runs the child's work, and sizes that thread's stack.

use crate::atomic::Ordering::Relaxed;
use std::ffi::{c_int, c_void};
use std::sync::atomic::AtomicUsize;

/// Where a fault means that the watched thread overflowed its stack: set once, read by the
/// handler.
static OVERFLOW_RANGE: [AtomicUsize; 2] = [AtomicUsize::new(0), AtomicUsize::new(0)];

/// The largest stack given to the thread that stands in for the main thread.
const MAX_MAIN_STACK: usize = 256 << 20;

/// The stack size of a main thread in this process: `RLIMIT_STACK` (what the kernel lets the
/// main thread's stack grow to), at most 256 MiB (also when the limit is infinite), at least
/// 1 MiB.
pub(crate) fn main_stack_size() -> usize {
    match stack_limit() {
        None => MAX_MAIN_STACK,
        Some(limit) => limit.clamp(1 << 20, MAX_MAIN_STACK),
    }
}

/// The soft `RLIMIT_STACK` in bytes; `None` when it is infinite. See getrlimit(2).
fn stack_limit() -> Option<usize> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Stack).current?;
    Some(usize::try_from(limit).unwrap_or(usize::MAX))
}

/// Makes a stack overflow of the calling thread, the main thread of a process whose `main` has
/// not run, print std's message and abort, as std's own runtime set-up would have arranged.
/// Must be called near the top of the stack (before `main`), where the address of a local tells
/// where the stack's limit lies.
pub(crate) fn report_stack_overflow() {
    // The stack may grow down to RLIMIT_STACK below its top, which lies a little above us;
    // below that limit the kernel keeps a guard gap (256 pages by default).
    let marker = std::hint::black_box(0u8);
    let here = std::hint::black_box(&marker) as *const u8 as usize;
    let Some(limit) = stack_limit().filter(|&limit| limit < here) else {
        return;
    };
    let floor = here - limit;
    watch(floor.saturating_sub(2 << 20), floor + (1 << 20));
}

/// The same for the calling thread, a thread started by `std::thread` in such a process (std
/// only watches its threads' guard pages once its runtime set-up ran): a fault in the guard
/// pages below its stack prints std's message for a thread named `main` and aborts.
pub(crate) fn report_thread_stack_overflow() {
    // SAFETY: an all-zero attribute object is valid storage for pthread_getattr_np to fill.
    let mut attr: libc::pthread_attr_t = unsafe { std::mem::zeroed() };
    // SAFETY: pthread_self is always valid; on success `attr` is initialised and destroyed
    // below.
    if unsafe { libc::pthread_getattr_np(libc::pthread_self(), &mut attr) } != 0 {
        return;
    }
    let (mut addr, mut size, mut guard) = (std::ptr::null_mut(), 0usize, 0usize);
    // SAFETY: `attr` was initialised above; the out-pointers are valid locals.
    let ok = unsafe {
        libc::pthread_attr_getstack(&attr, &mut addr, &mut size) == 0
            && libc::pthread_attr_getguardsize(&attr, &mut guard) == 0
    };
    // SAFETY: `attr` was initialised by pthread_getattr_np.
    unsafe { libc::pthread_attr_destroy(&mut attr) };
    if !ok || addr.is_null() {
        return;
    }
    // glibc reports the usable stack: its guard pages lie just below `addr`. A frame that
    // straddles the boundary may fault a little above it.
    let page = 4096;
    let low = addr as usize;
    watch(low.saturating_sub(guard.max(page)), low + page);
}

/// Installs the handler: a SIGSEGV or SIGBUS whose address lies in `[lo, hi)` is an overflow;
/// the calling thread gets an alternate signal stack to run the handler on.
fn watch(lo: usize, hi: usize) {
    const ALT_STACK: usize = 64 * 1024;
    OVERFLOW_RANGE[0].store(lo, Relaxed);
    OVERFLOW_RANGE[1].store(hi, Relaxed);
    // SAFETY: a fresh private anonymous mapping; on success it is ours for the process's life.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALT_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return;
    }
    let alt = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALT_STACK,
    };
    // SAFETY: `alt` describes the mapping above, which is never unmapped.
    if unsafe { libc::sigaltstack(&alt, std::ptr::null_mut()) } != 0 {
        return;
    }
    for signal in [libc::SIGSEGV, libc::SIGBUS] {
        // SAFETY: an all-zero sigaction is valid to fill in; the handler is async-signal-safe
        // and runs on the alternate stack installed above.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_fault as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

extern "C" fn on_fault(signal: c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let (lo, hi) = (
        OVERFLOW_RANGE[0].load(Relaxed),
        OVERFLOW_RANGE[1].load(Relaxed),
    );
    if addr >= lo && addr < hi {
        const MESSAGE: &[u8] = b"\nthread 'main' has overflowed its stack\nfatal runtime error: stack overflow, aborting\n";
        // SAFETY: write(2) and abort(3) are async-signal-safe.
        unsafe {
            libc::write(2, MESSAGE.as_ptr().cast(), MESSAGE.len());
            libc::abort();
        }
    }
    // Another fault: let it take its usual course when the instruction runs again.
    // SAFETY: restoring the default action is async-signal-safe.
    unsafe { libc::signal(signal, libc::SIG_DFL) };
}
