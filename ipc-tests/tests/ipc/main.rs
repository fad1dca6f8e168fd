//! The integration suite: every test here spawns real processes.
//!
//! It runs under libtest-mimic (`harness = false`) so that `multiproc::init()` is the first
//! statement of `main`, as in a user's program. Every test runs behind a watchdog, and the suite
//! ends by checking that no child process, zombie or `/dev/shm` entry was left behind.
//!
//! Standard error (ours and our children's: several tests make a child panic on purpose) is
//! captured and shown only if a test failed, so that a real failure stands out.

use std::time::Duration;

use libtest_mimic::{Arguments, Failed, Trial};

mod bootstrap;
mod fork;
mod fork_hostile;
mod forkserver;
mod futures;
mod manager;
mod outcomes;
mod pipe;
mod pool;
mod process;
mod queue;
mod shm;
mod sync;
mod worker;

/// How long one test may take before the watchdog fails it.
const LIMIT: Duration = Duration::from_secs(120);

type TestFn = fn() -> Result<(), String>;

fn trial(name: &'static str, f: TestFn) -> Trial {
    Trial::test(name, move || {
        ipc_tests::watchdog(LIMIT, f).map_err(Failed::from)
    })
}

fn main() {
    multiproc::init();
    ipc_tests::become_subreaper();
    let shm_before = ipc_tests::shm_entries();
    let args = Arguments::from_args();

    let mut trials = Vec::new();
    trials.extend(process::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(fork::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(fork_hostile::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(outcomes::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(pipe::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(worker::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(shm::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(sync::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(queue::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(futures::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(pool::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(manager::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(bootstrap::tests().into_iter().map(|(n, f)| trial(n, f)));
    trials.extend(forkserver::tests().into_iter().map(|(n, f)| trial(n, f)));

    let listing = args.list;
    // Children that panic on purpose print to stderr: keep it until we know whether to show it.
    let capture = if listing {
        None
    } else {
        ipc_tests::StderrCapture::start()
    };
    let conclusion = libtest_mimic::run(&args, trials);
    if let Some(capture) = capture {
        capture.finish(conclusion.has_failed());
    }
    if !listing {
        multiproc::stop_forkserver();
        let problems = ipc_tests::leak_check(&shm_before);
        if !problems.is_empty() {
            eprintln!("\nleak check FAILED:");
            for p in &problems {
                eprintln!("  - {p}");
            }
            std::process::exit(101);
        }
        eprintln!("leak check: no child process, zombie or /dev/shm entry left behind");
    }
    conclusion.exit();
}

/// `ensure!(cond, "format", args)`: fail the test with a message unless `cond` holds.
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($msg)+)));
        }
    };
}

/// Turns any displayable error into the test's `String` error, with the call site.
pub trait Context<T> {
    fn ctx(self, what: &str) -> Result<T, String>;
}

impl<T, E: std::fmt::Display> Context<T> for Result<T, E> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.map_err(|e| format!("{what}: {e}"))
    }
}

impl<T> Context<T> for Option<T> {
    fn ctx(self, what: &str) -> Result<T, String> {
        self.ok_or_else(|| format!("{what}: nothing there"))
    }
}
