//! `current_process` and `parent_process`: who this process is, and who started it.

use super::identity;
use crate::sys;

/// The name and pid of a process, as [`current_process`] and [`parent_process`] report them.
///
/// # Examples
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.pid(), std::process::id());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    pub(super) name: String,
    pub(super) pid: u32,
}

impl ProcessInfo {
    /// The process's name: `MainProcess` for the program itself, else the name it was given.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(multiproc::current_process().name(), "MainProcess");
    /// ```
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    ///
    /// # Examples
    ///
    /// ```
    /// assert!(multiproc::current_process().pid() > 0);
    /// ```
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

/// The process this code runs in: its name (`MainProcess` unless it is a child) and pid.
///
/// # Examples
///
/// ```
/// let me = multiproc::current_process();
/// assert_eq!(me.name(), "MainProcess");
/// ```
pub fn current_process() -> ProcessInfo {
    ProcessInfo {
        name: identity::child_identity()
            .map(|c| c.me.name.clone())
            .unwrap_or_else(|| "MainProcess".to_string()),
        pid: sys::getpid() as u32,
    }
}

/// The process that started this one, or `None` in the main process.
///
/// # Examples
///
/// ```
/// assert!(multiproc::parent_process().is_none());
/// ```
pub fn parent_process() -> Option<ProcessInfo> {
    identity::child_identity().map(|c| ProcessInfo {
        name: c.parent_name.clone(),
        pid: c.parent_pid,
    })
}
