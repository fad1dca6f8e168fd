//! Helpers shared by the integration tests: a watchdog for every test that could hang, and the
//! end-of-suite check that nothing was left behind (children, zombies, `/dev/shm` entries).

use std::collections::BTreeSet;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs `body` on its own thread and fails if it has not finished within `limit`.
///
/// A hung body cannot be stopped from outside; its thread is left behind, the test is reported
/// as failed, and the suite's final leak check kills whatever children it had started.
pub fn watchdog<F>(limit: Duration, body: F) -> Result<(), String>
where
    F: FnOnce() -> Result<(), String> + Send + 'static,
{
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("test-body".into())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body));
            let _ = tx.send(outcome);
        })
        .map_err(|e| format!("cannot start the test thread: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(result)) => result,
        Ok(Err(panic)) => Err(panic_text(&panic)),
        Err(_) => Err(format!(
            "watchdog: the test did not finish within {limit:?} (hang)"
        )),
    }
}

fn panic_text(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panicked: {s}")
    } else {
        "panicked".into()
    }
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Clone, Debug)]
pub struct ProcEntry {
    pub pid: i32,
    pub ppid: i32,
    pub state: char,
}

/// The processes whose parent is `parent`.
pub fn children_of(parent: i32) -> Vec<ProcEntry> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(proc_entry)
        .filter(|p| p.ppid == parent)
        .collect()
}

/// Reads one process's state and parent, if it still exists.
pub fn proc_entry(pid: i32) -> Option<ProcEntry> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some(ProcEntry { pid, ppid, state })
}

/// True if `pid` no longer runs (gone, or a zombie waiting to be reaped).
pub fn is_gone(pid: i32) -> bool {
    proc_entry(pid).is_none_or(|p| p.state == 'Z' || p.state == 'X')
}

/// Polls `cond` every few milliseconds until it holds or `limit` passes.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The entries of `/dev/shm` now.
pub fn shm_entries() -> BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Prefixes of the `/dev/shm` names multiproc gives (`create_unique`'s `mp-<pid>-…`, the
/// temporary `.multiproc-<pid>-…` of a segment being built) and that the suite's tests give
/// (`mp-test-…-<pid>`).
const SUITE_PREFIXES: [&str; 2] = ["mp-", ".multiproc-"];

/// True if `name` is a segment this suite could have made: one of our prefixes, and the suite's
/// pid among its dash-separated parts. Other programs on the machine — another checkout's test
/// suite included, which uses the same prefixes — create and remove segments during our run;
/// they are none of our business.
pub fn is_suite_segment(name: &str, suite_pid: u32) -> bool {
    let pid = suite_pid.to_string();
    SUITE_PREFIXES
        .iter()
        .any(|p| name.trim_start_matches('/').starts_with(p))
        && name.split('-').any(|part| part == pid)
}

/// What the suite left behind: children still running or unreaped, and `/dev/shm` entries that
/// were not there at the start and that the suite could have made (see [`is_suite_segment`]). Stragglers are killed and reaped so that nothing outlives the
/// suite even when the check fails.
pub fn leak_check(shm_before: &BTreeSet<String>) -> Vec<String> {
    let me = std::process::id() as i32;
    let mut problems = Vec::new();
    // Detached children are reaped by a background thread: give it a moment.
    eventually(Duration::from_secs(10), || children_of(me).is_empty());
    for child in children_of(me) {
        problems.push(format!(
            "child process {} left behind (state {})",
            child.pid, child.state
        ));
        // SAFETY: plain signal and wait calls on a pid that is our own child.
        unsafe {
            libc::kill(child.pid, libc::SIGKILL);
            libc::waitpid(child.pid, std::ptr::null_mut(), 0);
        }
    }
    let suite = std::process::id();
    for name in shm_entries()
        .difference(shm_before)
        .filter(|n| is_suite_segment(n, suite))
    {
        problems.push(format!("/dev/shm/{name} left behind"));
    }
    problems
}

/// Makes this process the reaper of orphaned descendants, so that tests can observe (and reap)
/// grandchildren whose parent was killed.
pub fn become_subreaper() {
    // SAFETY: PR_SET_CHILD_SUBREAPER takes a boolean flag.
    unsafe {
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0);
    }
}

/// Standard error of the whole suite (and of every child it starts, which inherit it), held
/// in an unlinked temporary file until the end: children that panic on purpose stay quiet when
/// everything passes, and everything is shown when a test failed.
pub struct StderrCapture {
    saved: std::os::fd::OwnedFd,
    file: std::fs::File,
}

impl StderrCapture {
    /// Points descriptor 2 at a fresh temporary file. `None` (and nothing changed) if that
    /// cannot be done.
    pub fn start() -> Option<StderrCapture> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        let path = std::env::temp_dir().join(format!("ipc-tests-stderr-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .ok()?;
        let _ = std::fs::remove_file(&path);
        // SAFETY: F_DUPFD_CLOEXEC duplicates descriptor 2 onto a fresh descriptor we then own.
        let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
        if saved < 0 {
            return None;
        }
        // SAFETY: `saved` was just created and is owned by nobody else.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both descriptors are valid; dup2 atomically replaces descriptor 2.
        if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
            return None;
        }
        Some(StderrCapture { saved, file })
    }

    /// Puts the real standard error back; with `show`, first copies what was captured to it.
    pub fn finish(self, show: bool) {
        use std::io::{Read, Seek, Write};
        use std::os::fd::AsRawFd;
        let _ = std::io::stderr().flush();
        // SAFETY: both descriptors are valid; dup2 atomically replaces descriptor 2.
        unsafe { libc::dup2(self.saved.as_raw_fd(), 2) };
        if show {
            let mut file = self.file;
            let mut text = Vec::new();
            if file.rewind().is_ok() && file.read_to_end(&mut text).is_ok() && !text.is_empty() {
                let mut err = std::io::stderr().lock();
                let _ =
                    err.write_all(b"\n---- standard error of the suite and its children ----\n");
                let _ = err.write_all(&text);
            }
        }
    }
}

/// The CPUs thread `tid` (0: the calling thread) may run on; empty if they cannot be read.
///
/// ```
/// assert!(!ipc_tests::affinity(0).is_empty());
/// ```
pub fn affinity(tid: i32) -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is an empty set for sched_getaffinity to fill; CPU_ISSET reads
    // that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(tid, size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// Never returns: waits for signals with every signal blocked (it shares the process's signal
/// handlers and the main thread's TLS, so it must run no handler and touch no errno).
extern "C" fn idle_raw_thread(_: *mut libc::c_void) -> libc::c_int {
    loop {
        // SAFETY: pause takes no arguments; with every signal blocked it never returns.
        unsafe { libc::syscall(libc::SYS_pause) };
    }
}

/// Adds a thread to this process with clone(2) itself, not pthread_create, as a runtime that
/// does not use pthreads would (Go's without cgo, a hand-made sandbox helper). It idles until
/// the process ends. Returns the new thread's id.
///
/// # Panics
/// When clone fails.
pub fn raw_clone_thread() -> i32 {
    const STACK: usize = 64 * 1024;
    let stack = Box::leak(vec![0u8; STACK].into_boxed_slice());
    // SAFETY: a new stack of our own, leaked; the new thread runs `idle_raw_thread` only, which
    // never returns and uses neither TLS nor the heap. Every signal is blocked across the clone
    // so that the new thread starts (and stays) with all of them blocked.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let top = stack.as_mut_ptr().add(STACK).cast::<libc::c_void>();
        let flags = libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM;
        let tid = libc::clone(idle_raw_thread, top, flags, std::ptr::null_mut());
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        assert!(tid > 0, "clone failed");
        tid
    }
}

/// The start routine of [`dlmopen_thread`]: waits for signals forever with every signal
/// blocked, by a system call made inline (its TLS is the other C library's: it must not touch
/// errno, or anything else of ours).
extern "C" fn idle_foreign_thread(_: *mut libc::c_void) -> *mut libc::c_void {
    loop {
        // SAFETY: pause(2) takes no arguments and touches no memory.
        #[cfg(not(target_arch = "x86_64"))]
        unsafe {
            libc::syscall(libc::SYS_pause);
        }
        // SAFETY: as above.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            std::arch::asm!(
                "syscall",
                inlateout("rax") libc::SYS_pause => _,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
    }
}

/// Adds a thread made by a second copy of the C library, loaded with `dlmopen(LM_ID_NEWLM)`
/// (as a plugin isolated in a namespace of its own would): a thread the main copy of glibc
/// does not know about. It idles until the process ends.
///
/// # Panics
/// When the copy cannot be loaded or the thread made.
pub fn dlmopen_thread() {
    type Create = unsafe extern "C" fn(
        *mut libc::pthread_t,
        *const libc::pthread_attr_t,
        extern "C" fn(*mut libc::c_void) -> *mut libc::c_void,
        *mut libc::c_void,
    ) -> libc::c_int;
    // SAFETY: loads a second libc in a namespace of its own and calls its pthread_create with
    // a start routine that makes system calls only; every signal is blocked across the call
    // so that the thread starts with all of them blocked.
    unsafe {
        let h = libc::dlmopen(libc::LM_ID_NEWLM, c"libc.so.6".as_ptr(), libc::RTLD_NOW);
        assert!(!h.is_null(), "dlmopen failed");
        let sym = libc::dlsym(h, c"pthread_create".as_ptr());
        assert!(!sym.is_null(), "no pthread_create in the copy");
        let create: Create = std::mem::transmute(sym);
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        let mut t: libc::pthread_t = 0;
        let r = create(
            &mut t,
            std::ptr::null(),
            idle_foreign_thread,
            std::ptr::null_mut(),
        );
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        assert!(r == 0, "pthread_create of the copy failed: {r}");
    }
    // Until the thread shows in /proc/self/task.
    eventually(Duration::from_secs(5), || thread_count() >= 2);
}

/// The threads of this process: the link count of `/proc/self/task` minus two.
pub fn thread_count() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/task").map_or(0, |m| m.nlink() - 2)
}

#[cfg(test)]
mod tests {
    use super::is_suite_segment;

    #[test]
    fn only_the_suites_own_segments_count() {
        assert!(is_suite_segment("mp-4242-3-0000abcd", 4242));
        assert!(is_suite_segment("mp-test-live-4242", 4242));
        assert!(is_suite_segment(".multiproc-4242-7", 4242));
        // Another program's segment, or another suite's (same prefix, other pid).
        assert!(!is_suite_segment("mp-999-1-00000000", 4242));
        assert!(!is_suite_segment("pulse-shm-4242", 4242));
        assert!(!is_suite_segment("mp-42420-1-0", 4242));
    }
}
