//! Fork starts with SIGCHLD ignored or handled with `SA_NOCLDWAIT`, when the kernel reaps
//! children itself: no start may fail, no result be lost, no action change, no zombie stay.

use multiproc::{ErrorKind, Process, StartMethod};

use super::{fork_many_sizes, sizes, square};
use crate::{Context, TestFn, ensure};

pub(super) fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "fork_hostile::own_children_beside_fork_starts_with_sigchld_ignored",
            own_children_beside_fork_starts_with_sigchld_ignored,
        ),
        (
            "fork_hostile::sigchld_ignored_from_the_forkserver",
            sigchld_ignored_from_the_forkserver,
        ),
        (
            "fork_hostile::sigchld_handler_with_nocldwait_is_kept",
            sigchld_handler_with_nocldwait_is_kept,
        ),
        (
            "fork_hostile::sigchld_ignored_survives_a_refused_fork",
            sigchld_ignored_survives_a_refused_fork,
        ),
        (
            "fork_hostile::worker_with_sigchld_ignored",
            worker_with_sigchld_ignored,
        ),
        (
            "fork_hostile::quick_children_with_sigchld_ignored_leave_no_zombie",
            quick_children_with_sigchld_ignored_leave_no_zombie,
        ),
    ]
}

/// The same sizes from children of the forkserver, with SIGCHLD ignored before the server is
/// started (it inherits the disposition across its exec).
fn sigchld_ignored_from_the_forkserver() -> Result<(), String> {
    let mut p = Process::new(fork_many_sizes, (sizes(), true, true));
    p.start().ctx("start")?;
    let bad = p.join().ctx("join")?;
    ensure!(bad.is_empty(), "results lost or wrong: {bad:?}");
    Ok(())
}

/// How many times [`count_sigchld`] ran.
static SIGCHLD_SEEN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

extern "C" fn count_sigchld(_: libc::c_int) {
    SIGCHLD_SEEN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// SIGCHLD's action as (handler, flags, whether SIGUSR1 and SIGUSR2 are in its mask).
fn sigchld_action() -> (usize, i32, bool, bool) {
    // SAFETY: a query into a zeroed structure.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGCHLD, std::ptr::null(), &mut old);
        (
            old.sa_sigaction,
            old.sa_flags,
            libc::sigismember(&old.sa_mask, libc::SIGUSR1) == 1,
            libc::sigismember(&old.sa_mask, libc::SIGUSR2) == 1,
        )
    }
}

/// Runs in a forked child: its own SIGCHLD action, as it starts its work.
fn report_sigchld_action(_: ()) -> (usize, i32, bool, bool) {
    sigchld_action()
}

/// Whether a child made with a raw fork(2) that ends at once is reaped by the kernel (waitpid
/// then finds no child) rather than left a zombie.
fn raw_child_is_auto_reaped() -> bool {
    // SAFETY: the child only calls _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe.
        unsafe { libc::_exit(0) };
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    let mut status = 0;
    // SAFETY: waits for our own child only.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ECHILD)
}

/// In a spawned child: a SIGCHLD handler with SA_NOCLDWAIT, SA_RESTART and a mask; forked
/// children see exactly that action, the parent has it back after `start` and after `join`,
/// the handler ran, and children are still reaped by the kernel.
fn nocldwait_handler_kept(_: ()) -> Result<(), String> {
    // SAFETY: installs an async-signal-safe handler.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = count_sigchld as *const () as usize;
        act.sa_flags = libc::SA_NOCLDWAIT | libc::SA_RESTART;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaddset(&mut act.sa_mask, libc::SIGUSR1);
        libc::sigaction(libc::SIGCHLD, &act, std::ptr::null_mut());
    }
    let before = sigchld_action();
    for i in 0..20 {
        let mut p = Process::new(report_sigchld_action, ()).with_start_method(StartMethod::Fork);
        p.start().ctx("start")?;
        let after_start = sigchld_action();
        ensure!(
            after_start == before,
            "run {i}: after start {after_start:?}, before {before:?}"
        );
        let seen = p.join().ctx("join")?;
        ensure!(
            seen == before,
            "run {i}: child saw {seen:?}, parent had {before:?}"
        );
        ensure!(sigchld_action() == before, "run {i}: changed after join");
    }
    ensure!(
        ipc_tests::eventually(std::time::Duration::from_secs(5), || {
            SIGCHLD_SEEN.load(std::sync::atomic::Ordering::Relaxed) > 0
        }),
        "the SIGCHLD handler never ran"
    );
    ensure!(
        raw_child_is_auto_reaped(),
        "children are no longer reaped by the kernel"
    );
    Ok(())
}

fn sigchld_handler_with_nocldwait_is_kept() -> Result<(), String> {
    let mut p = Process::new(nocldwait_handler_kept, ());
    p.start().ctx("start")?;
    p.join().ctx("join")?
}

/// In a spawned child: SIGCHLD ignored, a thread beside; the refused fork leaves the
/// disposition ignored, and so does a fork start once the thread is gone.
fn refused_fork_keeps_sig_ign(_: ()) -> Result<(), String> {
    // SAFETY: no preconditions.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let before = sigchld_action();
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _ = rx.recv();
    });
    let mut p = Process::new(square, 3).with_start_method(StartMethod::Fork);
    match p.start() {
        Err(e) if e.kind() == ErrorKind::ThreadedFork => {}
        other => return Err(format!("expected ThreadedFork, got {:?}", other.err())),
    }
    ensure!(sigchld_action() == before, "changed by a refused fork");
    drop(tx);
    t.join().map_err(|_| "thread panicked".to_string())?;
    let mut p = Process::new(square, 3).with_start_method(StartMethod::Fork);
    p.start().ctx("start")?;
    ensure!(sigchld_action() == before, "changed after start");
    ensure!(p.join().ctx("join")? == 9, "wrong result");
    ensure!(sigchld_action() == before, "changed after join");
    ensure!(
        raw_child_is_auto_reaped(),
        "children are no longer reaped by the kernel"
    );
    Ok(())
}

fn sigchld_ignored_survives_a_refused_fork() -> Result<(), String> {
    let mut p = Process::new(refused_fork_keeps_sig_ign, ());
    p.start().ctx("start")?;
    p.join().ctx("join")?
}

/// In a spawned child, SIGCHLD ignored: forked workers, called, shut down, killed; none left.
fn workers_under_sig_ign(_: ()) -> Result<(), String> {
    // SAFETY: no preconditions.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let me = std::process::id() as i32;
    for round in 0..10 {
        let mut w = multiproc::Worker::start_with(StartMethod::Fork).ctx("worker start")?;
        for n in 0..20u64 {
            let r = w.call(square, n).ctx("call")?;
            ensure!(r == n * n, "round {round}: square({n}) = {r}");
        }
        ensure!(w.is_alive(), "round {round}: worker not alive");
        if round % 2 == 0 {
            w.shutdown().ctx("shutdown")?;
        } else {
            w.kill();
            ensure!(
                ipc_tests::eventually(std::time::Duration::from_secs(5), || !w.is_alive()),
                "round {round}: killed worker still alive"
            );
            drop(w);
        }
    }
    ensure!(
        ipc_tests::eventually(std::time::Duration::from_secs(5), || {
            ipc_tests::children_of(me).is_empty()
        }),
        "children left: {:?}",
        ipc_tests::children_of(me)
    );
    Ok(())
}

fn worker_with_sigchld_ignored() -> Result<(), String> {
    let mut p = Process::new(workers_under_sig_ign, ());
    p.start().ctx("start")?;
    p.join().ctx("join")?
}

/// Runs in a forked child: sleeps `ms` milliseconds, returns it.
fn nap(ms: u64) -> u64 {
    std::thread::sleep(std::time::Duration::from_millis(ms));
    ms
}

/// In a spawned child, SIGCHLD ignored: many forked children that end at staggered times
/// (some inside the next start's window), polled, joined in reverse or dropped; every result
/// comes back, the exit code is the inferred 0, and no zombie is left.
fn many_quick_under_sig_ign(_: ()) -> Result<(), String> {
    // SAFETY: no preconditions.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let me = std::process::id() as i32;
    let before = sigchld_action();
    for round in 0..4u64 {
        let mut ps = Vec::new();
        for i in 0..40u64 {
            let ms = (i * 7 + round) % 4;
            let mut p = Process::new(nap, ms).with_start_method(StartMethod::Fork);
            p.start().ctx("start")?;
            ps.push((ms, p));
        }
        ensure!(sigchld_action() == before, "disposition changed");
        for (k, (ms, mut p)) in ps.into_iter().rev().enumerate() {
            match k % 3 {
                0 => {
                    while p.is_alive() {
                        std::thread::yield_now();
                    }
                    let v = p.join().ctx("join")?;
                    ensure!(v == ms, "got {v}, wanted {ms}");
                    ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
                }
                1 => {
                    let v = p.join().ctx("join")?;
                    ensure!(v == ms, "got {v}, wanted {ms}");
                    ensure!(p.exitcode() == Some(0), "exitcode {:?}", p.exitcode());
                }
                _ => drop(p),
            }
        }
    }
    let zombies = || {
        ipc_tests::children_of(me)
            .into_iter()
            .filter(|c| c.state == 'Z')
            .map(|c| c.pid)
            .collect::<Vec<_>>()
    };
    ensure!(
        ipc_tests::eventually(std::time::Duration::from_secs(5), || zombies().is_empty()),
        "zombies left: {:?}",
        zombies()
    );
    Ok(())
}

fn quick_children_with_sigchld_ignored_leave_no_zombie() -> Result<(), String> {
    let mut p = Process::new(many_quick_under_sig_ign, ());
    p.start().ctx("start")?;
    p.join().ctx("join")?
}

/// In a spawned child, SIGCHLD ignored: children of its own (raw fork(2), never waited for, as
/// a program that ignores SIGCHLD does) end while fork starts run. Returns the zombies left.
fn own_children_beside_starts(_: ()) -> Vec<i32> {
    // SAFETY: no preconditions.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    let me = std::process::id() as i32;
    for i in 0..100u32 {
        // SAFETY: the child only calls async-signal-safe functions.
        if unsafe { libc::fork() } == 0 {
            unsafe {
                libc::usleep(i * 1000);
                libc::_exit(0)
            };
        }
    }
    let end = std::time::Instant::now() + std::time::Duration::from_millis(150);
    while std::time::Instant::now() < end {
        let mut p = Process::new(square, 2).with_start_method(StartMethod::Fork);
        if p.start().is_ok() {
            let _ = p.join();
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(100));
    let zombies: Vec<i32> = ipc_tests::children_of(me)
        .into_iter()
        .filter(|c| c.state == 'Z')
        .map(|c| c.pid)
        .collect();
    for &z in &zombies {
        // SAFETY: reaps our own zombie child.
        unsafe { libc::waitpid(z, std::ptr::null_mut(), 0) };
    }
    zombies
}

/// A program's own children, which it never waits for since it ignores SIGCHLD, are not left
/// zombies by fork starts beside them. (It failed while a fork start set SIGCHLD to its default
/// until the child's pidfd was open: ~15 zombies of 100 children ending during 150 ms of
/// starts. The child now waits for the parent's byte instead, SIGCHLD untouched.)
fn own_children_beside_fork_starts_with_sigchld_ignored() -> Result<(), String> {
    let mut p = Process::new(own_children_beside_starts, ());
    p.start().ctx("start")?;
    let zombies = p.join().ctx("join")?;
    ensure!(
        zombies.is_empty(),
        "{} zombies left: {zombies:?}",
        zombies.len()
    );
    Ok(())
}
