//! The floor of starting any process, shared by the benches that compare against it.

/// Forks, has the copy exit at once, and reaps it.
pub fn raw_fork() {
    // SAFETY: the child only calls the async-signal-safe _exit, which is sound whatever
    // threads the parent has.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0);
        if pid == 0 {
            libc::_exit(0);
        }
        let mut status = 0;
        libc::waitpid(pid, &mut status, 0);
    }
}
