//! Hostile tests of the fork start method's fast paths: the C library's single-thread flag in
//! front of the thread count, and the drain that stops at the first short read once the child
//! has ended.

use multiproc::{ErrorKind, Process, StartMethod};

use crate::{Context, TestFn, ensure};

mod sigchld;

pub fn tests() -> Vec<(&'static str, TestFn)> {
    let mut tests: Vec<(&'static str, TestFn)> = vec![
        (
            "fork_hostile::refused_beside_a_thread_made_without_pthread",
            refused_beside_a_thread_made_without_pthread,
        ),
        (
            "fork_hostile::refused_in_a_program_beside_a_thread_made_without_pthread",
            refused_in_a_program_beside_a_thread_made_without_pthread,
        ),
        (
            "fork_hostile::refused_in_a_program_beside_a_thread_of_a_dlmopen_libc",
            refused_in_a_program_beside_a_thread_of_a_dlmopen_libc,
        ),
        (
            "fork_hostile::descriptors_closed_without_close_range",
            descriptors_closed_without_close_range,
        ),
        (
            "fork_hostile::a_forged_handle_in_a_forked_grandchild_is_refused",
            a_forged_handle_in_a_forked_grandchild_is_refused,
        ),
        (
            "fork_hostile::results_around_the_buffer_sizes",
            results_around_the_buffer_sizes,
        ),
        (
            "fork_hostile::results_around_the_buffer_sizes_with_sigchld_ignored",
            results_around_the_buffer_sizes_with_sigchld_ignored,
        ),
        (
            "fork_hostile::results_around_the_buffer_sizes_from_the_forkserver",
            results_around_the_buffer_sizes_from_the_forkserver,
        ),
        (
            "fork_hostile::worker_calls_with_small_results",
            worker_calls_with_small_results,
        ),
        (
            "fork_hostile::join_with_a_grandchild_holding_the_socket",
            join_with_a_grandchild_holding_the_socket,
        ),
        (
            "fork_hostile::a_result_with_a_handle_is_a_typed_error",
            a_result_with_a_handle_is_a_typed_error,
        ),
        (
            "fork_hostile::killed_mid_send_is_killed",
            killed_mid_send_is_killed,
        ),
    ];
    tests.extend(sigchld::tests());
    tests
}

fn square(x: u64) -> u64 {
    x * x
}

/// glibc's flag, as this process sees it.
fn libc_single_threaded() -> bool {
    unsafe extern "C" {
        static __libc_single_threaded: libc::c_char;
    }
    // SAFETY: a byte of glibc's that lives as long as the process.
    unsafe { std::ptr::read_volatile(&raw const __libc_single_threaded) != 0 }
}

/// Adds a thread with clone(2) itself, as a runtime that does not use pthreads would (Go's
/// without cgo, a hand-made sandbox helper), then asks for a checked fork. Returns (threads
/// seen, glibc's flag, what the fork did).
fn fork_beside_raw_thread() -> (u64, bool, String) {
    ipc_tests::raw_clone_thread();
    let seen = ipc_tests::thread_count();
    let flag = libc_single_threaded();
    let mut p = Process::new(square, 5).with_start_method(StartMethod::Fork);
    let what = match p.start() {
        Err(e) if e.kind() == ErrorKind::ThreadedFork => "refused".to_string(),
        Err(e) => format!("failed otherwise: {e}"),
        Ok(()) => format!("forked, joined {:?}", p.join().map_err(|e| e.to_string())),
    };
    // The extra thread ends with this process (its exit ends every thread).
    (seen, flag, what)
}

/// In a spawned child (its work thread and its idle main thread): the same.
fn fork_beside_raw_thread_in_a_child(_: ()) -> (u64, bool, String) {
    fork_beside_raw_thread()
}

/// A checked fork must be refused while another thread exists, whoever made it: the copy would
/// have one thread, and whatever the other held stays held. Here in a spawned child, beside the
/// library's own threads (not in a fork of this threaded test process: the library's code in
/// such a copy may wait on a lock another thread of the suite held at the fork). See
/// bootstrap's `start_one raw-thread-fork` for a process where glibc's flag says one thread.
fn refused_beside_a_thread_made_without_pthread() -> Result<(), String> {
    let mut p = Process::new(fork_beside_raw_thread_in_a_child, ());
    p.start().ctx("start")?;
    let (seen, flag, what) = p.join().ctx("join")?;
    ensure!(
        seen >= 2,
        "the child should have two threads or more, has {seen}"
    );
    ensure!(
        what == "refused",
        "a fork beside a second thread was not refused: {what} (threads {seen}, glibc's \
         single-thread flag {flag})"
    );
    Ok(())
}

fn bytes_of(n: u64) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

/// In a spawned child: forks children returning byte strings of `sizes` lengths and checks
/// each comes back whole (children of the forkserver if asked), with SIGCHLD ignored if asked (the kernel then reaps them itself, and
/// their status is lost). Every other one is polled with `is_alive` until it has ended, the
/// others joined after they had time to end. Returns the sizes that did not come back whole.
fn fork_many_sizes(
    (sizes, ignore_sigchld, forkserver): (Vec<u64>, bool, bool),
) -> Vec<(u64, String)> {
    if ignore_sigchld {
        // SAFETY: setting a signal's disposition to SIG_IGN has no preconditions.
        unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    }
    let mut bad = Vec::new();
    for (i, n) in sizes.into_iter().enumerate() {
        let method = if forkserver {
            StartMethod::Forkserver
        } else {
            StartMethod::Fork
        };
        let mut p = Process::new(bytes_of, n).with_start_method(method);
        if let Err(e) = p.start() {
            bad.push((n, format!("start: {e}")));
            continue;
        }
        if i % 2 == 0 {
            // Let the child end before the parent reads anything: the whole report is then
            // read by the drain after the end.
            std::thread::sleep(std::time::Duration::from_millis(2));
        } else {
            while p.is_alive() {
                std::thread::yield_now();
            }
        }
        match p.join() {
            Ok(v) if v == bytes_of(n) => {}
            Ok(v) => bad.push((n, format!("{} bytes back", v.len()))),
            Err(e) => bad.push((n, e.to_string())),
        }
    }
    if forkserver {
        // Ended and reaped here: once this child is gone, an orphaned server would end as a
        // zombie of the suite.
        multiproc::stop_forkserver();
    }
    bad
}

fn sizes() -> Vec<u64> {
    let mut sizes: Vec<u64> = (0..8).chain(220..260).chain(4060..4110).collect();
    sizes.extend([8192, 65_536, 212_992, 1 << 20]);
    sizes
}

/// Results whose report is just under, at and just over the 256-byte send buffer and the
/// 4 KiB first read, and a few large ones, each read after the child ended.
fn results_around_the_buffer_sizes() -> Result<(), String> {
    let mut p = Process::new(fork_many_sizes, (sizes(), false, false));
    p.start().ctx("start")?;
    let bad = p.join().ctx("join")?;
    ensure!(bad.is_empty(), "results lost or wrong: {bad:?}");
    Ok(())
}

/// The same with SIGCHLD ignored: the status is lost, the result must not be.
fn results_around_the_buffer_sizes_with_sigchld_ignored() -> Result<(), String> {
    let mut p = Process::new(fork_many_sizes, (sizes(), true, false));
    p.start().ctx("start")?;
    let bad = p.join().ctx("join")?;
    ensure!(bad.is_empty(), "results lost or wrong: {bad:?}");
    Ok(())
}

/// The same sizes from children of the forkserver.
fn results_around_the_buffer_sizes_from_the_forkserver() -> Result<(), String> {
    let mut p = Process::new(fork_many_sizes, (sizes(), false, true));
    p.start().ctx("start")?;
    let bad = p.join().ctx("join")?;
    ensure!(bad.is_empty(), "results lost or wrong: {bad:?}");
    Ok(())
}

/// In a spawned child: one forked worker, called with every size in turn (each result travels
/// in the report's buffer when it fits). Returns the sizes that did not come back whole.
fn worker_sizes(sizes: Vec<u64>) -> Vec<(u64, String)> {
    let mut w = match multiproc::Worker::start_with(StartMethod::Fork) {
        Ok(w) => w,
        Err(e) => return vec![(0, format!("start: {e}"))],
    };
    let mut bad = Vec::new();
    for n in sizes {
        match w.call(bytes_of, n) {
            Ok(v) if v == bytes_of(n) => {}
            Ok(v) => bad.push((n, format!("{} bytes back", v.len()))),
            Err(e) => bad.push((n, e.to_string())),
        }
    }
    if let Err(e) = w.shutdown() {
        bad.push((u64::MAX, format!("shutdown: {e}")));
    }
    bad
}

/// Repeated calls of one forked worker with small results, every size up to past the buffer.
fn worker_calls_with_small_results() -> Result<(), String> {
    let all: Vec<u64> = (0..300).chain(4060..4110).collect();
    let mut p = Process::new(worker_sizes, all);
    p.start().ctx("start")?;
    let bad = p.join().ctx("join")?;
    ensure!(bad.is_empty(), "results lost or wrong: {bad:?}");
    Ok(())
}

/// Runs in a forked child: forks a grandchild with fork(2) itself, which keeps the report
/// socket open for half a second after we returned; returns its pid.
fn leave_a_grandchild_holding_the_socket(_: ()) -> i32 {
    // SAFETY: this child has one thread; the grandchild only sleeps and ends with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: as above.
        unsafe {
            libc::usleep(500_000);
            libc::_exit(0)
        }
    }
    pid
}

/// In a spawned child: joins a forked child that left a grandchild holding its socket, then
/// waits for the grandchild to end and reaps it (this process is its subreaper: orphaned, it
/// would otherwise end as a zombie of whichever ancestor is, the suite's). Returns (the join,
/// whether the grandchild was still alive when the join returned).
fn join_beside_grandchild(_: ()) -> (Result<i32, String>, bool) {
    // SAFETY: a process attribute; no memory is passed.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) };
    let mut p = Process::new(leave_a_grandchild_holding_the_socket, ())
        .with_start_method(StartMethod::Fork);
    if let Err(e) = p.start() {
        return (Err(format!("start: {e}")), false);
    }
    let joined = p.join().map_err(|e| e.to_string());
    let alive = joined.as_ref().is_ok_and(|&pid| !ipc_tests::is_gone(pid));
    if let Ok(&pid) = joined.as_ref() {
        ipc_tests::eventually(std::time::Duration::from_secs(10), || {
            let mut status = 0;
            // SAFETY: reaps only `pid`, this process's adopted grandchild; WNOHANG never blocks.
            unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) == pid }
        });
    }
    (joined, alive)
}

/// The report arrives whole although a grandchild keeps the socket open (no end of stream):
/// the join neither waits for the grandchild nor loses the result.
fn join_with_a_grandchild_holding_the_socket() -> Result<(), String> {
    let mut p = Process::new(join_beside_grandchild, ());
    p.start().ctx("start")?;
    let (joined, _alive) = p.join().ctx("join")?;
    ensure!(matches!(joined, Ok(pid) if pid > 0), "join: {joined:?}");
    Ok(())
}

/// Runs in a forked child: returns a handle, which a result cannot carry.
fn return_a_connection(_: ()) -> multiproc::Connection<u8> {
    multiproc::pipe::<u8>().expect("pipe").0
}

/// In a spawned child: what joining a forked child that returned a handle says.
fn join_a_handle_result(_: ()) -> String {
    let mut p = Process::new(return_a_connection, ()).with_start_method(StartMethod::Fork);
    if let Err(e) = p.start() {
        return format!("start: {e}");
    }
    match p.join() {
        Ok(_) => "Ok".to_string(),
        Err(e) => format!("{:?}: {e}", e.kind()),
    }
}

/// A result with a handle in it: a typed error that says why, not a lost report.
fn a_result_with_a_handle_is_a_typed_error() -> Result<(), String> {
    let mut p = Process::new(join_a_handle_result, ());
    p.start().ctx("start")?;
    let said = p.join().ctx("join")?;
    ensure!(said.contains("argument"), "join said {said}");
    Ok(())
}

/// In a spawned child: forks a child whose 4 MiB result fills the socket, kills it while it
/// is blocked sending, and joins. Returns what the join said.
fn kill_mid_send(_: ()) -> String {
    let mut p = Process::new(bytes_of, 4 << 20).with_start_method(StartMethod::Fork);
    if let Err(e) = p.start() {
        return format!("start: {e}");
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    if let Err(e) = p.kill() {
        return format!("kill: {e}");
    }
    match p.join() {
        Ok(v) => format!("Ok({} bytes)", v.len()),
        Err(e) => format!("{:?} {:?}", e.kind(), e.signal()),
    }
}

/// A child killed half-way through its result: the join says killed, never a result.
fn killed_mid_send_is_killed() -> Result<(), String> {
    let mut p = Process::new(kill_mid_send, ());
    p.start().ctx("start")?;
    let said = p.join().ctx("join")?;
    ensure!(
        said == "Signaled Some(9)",
        "join of a killed child said {said}"
    );
    Ok(())
}

/// Runs `start_one mode` to completion within a minute; its standard output.
fn start_one(mode: &str) -> Result<String, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_start_one"))
        .arg(mode)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ctx("spawn start_one")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().ctx("wait")?.is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("start_one {mode} did not finish within a minute"));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let mut out = String::new();
    if let Some(mut s) = child.stdout.take() {
        s.read_to_string(&mut out).ctx("read stdout")?;
    }
    Ok(out)
}

/// A program that never made a pthread (glibc's single-thread flag still set) adds a thread
/// with clone(2): its checked fork must be refused all the same, as the count of
/// `/proc/self/task` would refuse it.
fn refused_in_a_program_beside_a_thread_made_without_pthread() -> Result<(), String> {
    let plain = start_one("fork")?;
    ensure!(
        plain.contains("result 42"),
        "the plain fork failed: {plain}"
    );
    let out = start_one("raw-thread-fork")?;
    ensure!(
        out.contains("error ThreadedFork"),
        "a fork beside a second thread was not refused: {out}"
    );
    Ok(())
}

/// The same with a thread made by a second glibc, loaded with dlmopen(3) in a namespace of its
/// own: that copy clears its own flag, not the main copy's.
fn refused_in_a_program_beside_a_thread_of_a_dlmopen_libc() -> Result<(), String> {
    let out = start_one("dlmopen-thread-fork")?;
    ensure!(
        out.contains("error ThreadedFork"),
        "a fork beside a second thread was not refused: {out}"
    );
    Ok(())
}

/// Runs in a forked child: the descriptors it has open.
fn open_fds(_: ()) -> Vec<i32> {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// In a spawned child: makes close_range(2) fail with ENOSYS (a seccomp filter, as on a kernel
/// before 5.9 or in a sandbox that does not know it), opens a pipe, and forks a child that
/// lists its descriptors. Returns (what close_range now does, the pipe's ends, the child's
/// descriptors).
fn fork_without_close_range(_: ()) -> Result<(i32, [i32; 2], Vec<i32>), String> {
    let filter = [
        // The system call's number.
        libc::sock_filter {
            code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        },
        libc::sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: libc::SYS_close_range as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32,
        },
        libc::sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: libc::SECCOMP_RET_ALLOW,
        },
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_ptr().cast_mut(),
    };
    let mut ends = [-1; 2];
    // SAFETY: the filter only makes close_range fail; the pipe's ends are ours.
    let errno = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &raw const prog,
            ) != 0
        {
            return Err(format!("seccomp: {}", std::io::Error::last_os_error()));
        }
        let r = libc::syscall(libc::SYS_close_range, 100_000, 100_000, 0);
        let errno = if r == 0 {
            0
        } else {
            std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
        };
        if libc::pipe(ends.as_mut_ptr()) != 0 {
            return Err(format!("pipe: {}", std::io::Error::last_os_error()));
        }
        errno
    };
    let mut p = Process::new(open_fds, ()).with_start_method(StartMethod::Fork);
    let got = p.start().and_then(|()| p.join()).map_err(|e| e.to_string());
    // SAFETY: our own pipe's ends.
    unsafe {
        libc::close(ends[0]);
        libc::close(ends[1]);
    }
    Ok((errno, ends, got?))
}

/// Without close_range (the kernel says ENOSYS), a forked child still closes what it was not
/// given, one by one, and still reports through its socket.
fn descriptors_closed_without_close_range() -> Result<(), String> {
    let mut p = Process::new(fork_without_close_range, ());
    p.start().ctx("start")?;
    let (errno, ends, fds) = p.join().ctx("join")??;
    ensure!(
        errno == libc::ENOSYS,
        "close_range gave errno {errno}, not ENOSYS"
    );
    ensure!(
        !fds.contains(&ends[0]) && !fds.contains(&ends[1]),
        "the forked child kept the pipe {ends:?}: it has {fds:?}"
    );
    Ok(())
}

/// Sends the wire form of a `Lock` at descriptor index 0 (and slot 0) through a pipe of locks,
/// as raw bytes, and says what receiving it gave: a handle can only arrive as an argument.
fn receive_a_forged_lock(_: ()) -> String {
    // A lock of our own first: its segment takes the lowest free descriptor number.
    let _own = multiproc::Lock::new();
    let (a, b) = match multiproc::pipe::<multiproc::Lock>() {
        Ok(p) => p,
        Err(e) => return format!("pipe: {e}"),
    };
    if let Err(e) = a.send_bytes(&[0, 0]) {
        return format!("send: {e}");
    }
    match b.recv() {
        Ok(_) => "decoded".to_string(),
        Err(e) => format!("refused: {e}"),
    }
}

/// In a spawned child that was given a lock (its descriptors are installed while it runs):
/// what a forked child of it, given no handle, makes of a forged lock.
fn forge_in_a_forked_grandchild(_lock: multiproc::Lock) -> String {
    let mut p = Process::new(receive_a_forged_lock, ()).with_start_method(StartMethod::Fork);
    match p.start().and_then(|()| p.join()) {
        Ok(s) => s,
        Err(e) => format!("join: {e}"),
    }
}

/// A forked child given no handle decodes none: the descriptors its parent received (still in
/// the copy of the parent's memory) are not its to take.
fn a_forged_handle_in_a_forked_grandchild_is_refused() -> Result<(), String> {
    let lock = multiproc::Lock::new().ctx("lock")?;
    let mut p = Process::new(forge_in_a_forked_grandchild, lock);
    p.start().ctx("start")?;
    let said = p.join().ctx("join")?;
    ensure!(
        said.contains("did not arrive") || said.contains("only be received as a process argument"),
        "a forged lock in a forked child gave: {said}"
    );
    Ok(())
}
