//! Starting processes from ordinary `#[test]` functions, under the default test harness.
//!
//! Nothing special is needed besides calling `multiproc::init()` at the top of each test: the
//! children are taken over before the harness's `main` runs, so no test runs twice.

use std::time::Duration;

use multiproc::{ErrorKind, Process, Worker};

fn triple(x: i32) -> i32 {
    x * 3
}

fn fail(_: ()) -> i32 {
    // An expected panic stays out of a clean run's output: this child's standard error goes to
    // /dev/null (the message still reaches the parent, which the test checks).
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 onto descriptor 2 of this child process; `null` is open for the call.
        unsafe { libc::dup2(null.as_raw_fd(), 2) };
    }
    panic!("from a #[test] child")
}

/// Joins with a generous bound: a hang fails the test instead of stalling the run.
fn join_bounded<R: serde::Serialize + serde::de::DeserializeOwned>(
    p: &mut Process<R>,
) -> multiproc::Result<R> {
    match p.join_timeout(Duration::from_secs(60)) {
        Ok(v) => Ok(v),
        Err(multiproc::JoinTimeoutError::Failed(e)) => Err(e),
        Err(multiproc::JoinTimeoutError::Timeout) => {
            let _ = p.kill();
            panic!("watchdog: child did not finish within 60 s");
        }
    }
}

#[test]
fn spawn_from_a_test() {
    multiproc::init();
    let mut p = Process::new(triple, 14);
    p.start().unwrap();
    assert_eq!(join_bounded(&mut p).unwrap(), 42);
}

#[test]
fn panics_come_back_in_a_test() {
    multiproc::init();
    let mut p = Process::new(fail, ());
    p.start().unwrap();
    let err = join_bounded(&mut p).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(err.panic_message(), Some("from a #[test] child"));
}

#[test]
fn workers_in_a_test() {
    multiproc::init();
    let mut w = Worker::start().unwrap();
    for i in 0..50 {
        assert_eq!(
            w.call_timeout(triple, i, Duration::from_secs(60)).unwrap(),
            3 * i
        );
    }
    w.shutdown().unwrap();
}
