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

/// What the suite left behind: children still running or unreaped, and `/dev/shm` entries that
/// were not there at the start. Stragglers are killed and reaped so that nothing outlives the
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
    for name in shm_entries().difference(shm_before) {
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
