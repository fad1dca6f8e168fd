//! Whether a lock's owner thread still lives: the stamp each owner leaves beside the word
//! (its tid and start time), and the checks a waiter makes on it (see the lock's module docs).

use std::cell::Cell;
use std::io;

use super::TID_MASK;

thread_local! {
    /// This thread's stamp, cached: its tid in the high 32 bits, the low 32 bits of its start
    /// time in the low ones (0: not looked up yet). Reset in a forked child, whose thread has
    /// a new tid and start time.
    static STAMP: Cell<u64> = const { Cell::new(0) };
}

extern "C" fn forget_tid_after_fork() {
    STAMP.with(|t| t.set(0));
}

/// The tid in a stamp.
pub(super) fn stamp_tid(stamp: u64) -> u32 {
    (stamp >> 32) as u32
}

/// This thread's stamp (see [`STAMP`]); its tid is [`stamp_tid`] of it.
#[inline]
pub(super) fn my_stamp() -> u64 {
    let stamp = STAMP.with(Cell::get);
    if stamp != 0 {
        return stamp;
    }
    look_up_my_stamp()
}

#[cold]
fn look_up_my_stamp() -> u64 {
    static AT_FORK: std::sync::Once = std::sync::Once::new();
    AT_FORK.call_once(|| {
        // SAFETY: registers a handler that only resets a thread-local cell.
        unsafe { libc::pthread_atfork(None, None, Some(forget_tid_after_fork)) };
    });
    let tid = (crate::sys::gettid() as u32) & TID_MASK;
    // Without /proc the start time reads as 0: reuse then goes undetected (the lock looks held
    // until the new thread of that tid ends), which is never unsound.
    let start = thread_stat(&format!("/proc/self/task/{tid}/stat")).map_or(0, |(_, start)| start);
    let stamp = (u64::from(tid) << 32) | u64::from(start);
    STAMP.with(|t| t.set(stamp));
    stamp
}

/// The state letter and the low 32 bits of the start time of the thread whose `stat` file is
/// at `path` (`None` if it cannot be read). See proc_pid_stat(5): the state is field 3, the
/// start time field 22, both after the command name, which is in parentheses.
pub(super) fn thread_stat(path: &str) -> Option<(u8, u32)> {
    let s = std::fs::read_to_string(path).ok()?;
    let mut fields = s[s.rfind(')')? + 1..].split_ascii_whitespace();
    let state = *fields.next()?.as_bytes().first()?;
    let start: u64 = fields.nth(22 - 4)?.parse().ok()?;
    Some((state, start as u32))
}

/// Whether no thread `tid` exists in our pid namespace (one system call). A thread we may not
/// signal (another user's) exists. See tkill(2).
pub(super) fn thread_is_gone(tid: u32) -> bool {
    // SAFETY: signal 0 sends nothing: the call only checks that the thread exists.
    let r = unsafe { libc::syscall(libc::SYS_tkill, tid as libc::c_int, 0) };
    r != 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// Whether thread `tid` is dead: gone, or a zombie (a killed or exited process's main thread
/// lingers until its parent reaps it). See proc_pid_stat(5).
///
/// `stamp` is the lock's stamp (see the module docs): if it names `tid` with a start time other
/// than that of the thread now called `tid`, the owner was an earlier thread of that tid, which
/// has ended.
pub(super) fn thread_is_dead(tid: u32, stamp: u64) -> bool {
    if thread_is_gone(tid) {
        return true;
    }
    match thread_stat(&format!("/proc/{tid}/stat")) {
        // Gone between the two checks.
        None => true,
        Some((state, start)) => {
            matches!(state, b'Z' | b'X' | b'x')
                || (stamp_tid(stamp) == tid && stamp as u32 != start)
        }
    }
}
