//! The child bootstrap, run in odd ways: foreign and stale `MULTIPROC_CHILD` values, an
//! explicit dynamic loader, a setuid copy, closed standard descriptors, the child's arguments.
//! They all run `start_one` (src/bin/start_one.rs). The two-copies, plugin and late-constructor
//! cases need builds of their own: see ipc-tests/fixtures/.

use std::io::Read;
use std::os::unix::net::UnixStream;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "bootstrap::foreign_child_values_are_ignored",
            foreign_child_values_are_ignored,
        ),
        ("bootstrap::broken_starts_say_why", broken_starts_say_why),
        (
            "bootstrap::explicit_loader_is_a_clear_error",
            explicit_loader_is_a_clear_error,
        ),
        (
            "bootstrap::secure_execution_never_acts_as_a_child",
            secure_execution_never_acts_as_a_child,
        ),
        (
            "bootstrap::child_gets_the_parents_arguments",
            child_gets_the_parents_arguments,
        ),
        (
            "bootstrap::closed_stdio_is_sanitized_in_the_child",
            closed_stdio_is_sanitized_in_the_child,
        ),
        ("bootstrap::stack_overflow_says_so", stack_overflow_says_so),
        (
            "bootstrap::child_main_thread_is_named_main",
            child_main_thread_is_named_main,
        ),
        (
            "bootstrap::child_threads_keep_the_parents_cpu_affinity",
            child_threads_keep_the_parents_cpu_affinity,
        ),
        (
            "bootstrap::a_replaced_executable_file_still_starts_the_running_build",
            a_replaced_executable_file_still_starts_the_running_build,
        ),
        (
            "bootstrap::a_program_started_on_some_cpus_keeps_them_in_its_child",
            a_program_started_on_some_cpus_keeps_them_in_its_child,
        ),
        (
            "bootstrap::a_descendant_that_reuses_the_childs_pid_can_fork",
            a_descendant_that_reuses_the_childs_pid_can_fork,
        ),
    ]
}

const START_ONE: &str = env!("CARGO_BIN_EXE_start_one");

/// Runs `cmd` to completion within a minute (killed and reaped otherwise).
fn output(mut cmd: Command) -> Result<Output, String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx("spawn")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if child.try_wait().ctx("wait")?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{cmd:?} did not finish within a minute"));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut out = Output {
        status: child.wait().ctx("wait")?,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let Some(mut s) = child.stdout.take() {
        s.read_to_end(&mut out.stdout).ctx("read stdout")?;
    }
    if let Some(mut s) = child.stderr.take() {
        s.read_to_end(&mut out.stderr).ctx("read stderr")?;
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The value of `MULTIPROC_CHILD` that `start_one` gives its children; its copy tag is the same
/// for every run of that file.
fn start_one_env() -> Result<String, String> {
    let mut cmd = Command::new(START_ONE);
    cmd.arg("tag");
    let out = output(cmd)?;
    let stdout = text(&out.stdout);
    let value = stdout
        .lines()
        .find_map(|l| l.strip_prefix("tag "))
        .ctx("start_one printed no tag")?;
    ensure!(value.starts_with("3:"), "unexpected value {value:?}");
    Ok(value.to_string())
}

/// `value` with its parent pid replaced.
fn addressed_to(value: &str, parent: u32) -> String {
    let mut parts = value.splitn(3, ':');
    let (version, _, tag) = (parts.next(), parts.next(), parts.next());
    format!("{}:{parent}:{}", version.unwrap_or(""), tag.unwrap_or(""))
}

fn start_one_with_env(value: &str, stdin: Stdio) -> Result<Output, String> {
    let mut cmd = Command::new(START_ONE);
    cmd.arg("run").env("MULTIPROC_CHILD", value).stdin(stdin);
    output(cmd)
}

fn foreign_child_values_are_ignored() -> Result<(), String> {
    let ours = start_one_env()?;
    // Garbage, the first protocol's format, another copy of the crate, and a value addressed to
    // another parent with a terminal-like stdin: none is addressed to this process, so `main`
    // runs (and starts its own child, which works).
    let other_copy = format!("{}:{}:0123456789abcdef42", 2, std::process::id());
    let stale = addressed_to(&ours, 1);
    for value in ["garbage", "1:1", other_copy.as_str(), stale.as_str()] {
        let out = start_one_with_env(value, Stdio::null())?;
        let stdout = text(&out.stdout);
        ensure!(
            out.status.success() && stdout.contains("main ran") && stdout.contains("result 42"),
            "MULTIPROC_CHILD={value}: {:?}, stdout {stdout:?}, stderr {:?}",
            out.status,
            text(&out.stderr)
        );
    }
    Ok(())
}

fn broken_starts_say_why() -> Result<(), String> {
    let ours = start_one_env()?;
    // Addressed to this process (we are its parent), but standard input is not a socket.
    let value = addressed_to(&ours, std::process::id());
    let out = start_one_with_env(&value, Stdio::null())?;
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(3), "status {:?}", out.status);
    ensure!(
        stderr.contains("standard input") && stderr.contains("not the control socket"),
        "stderr: {stderr:?}"
    );
    ensure!(!text(&out.stdout).contains("main ran"), "main ran");
    // A socket on stdin, but a parent that is not ours: the parent is gone.
    let (mine, theirs) = UnixStream::pair().ctx("socketpair")?;
    let value = addressed_to(&ours, 1);
    let out = start_one_with_env(&value, Stdio::from(std::os::fd::OwnedFd::from(theirs)))?;
    drop(mine);
    let stderr = text(&out.stderr);
    ensure!(out.status.code() == Some(3), "status {:?}", out.status);
    ensure!(
        stderr.contains("as this child's parent"),
        "stderr: {stderr:?}"
    );
    Ok(())
}

/// The program interpreter named in an ELF file's PT_INTERP header.
fn interpreter(path: &str) -> Result<String, String> {
    let elf = std::fs::read(path).ctx("read the binary")?;
    let u16_at = |i: usize| u16::from_le_bytes([elf[i], elf[i + 1]]) as usize;
    let u64_at = |i: usize| {
        let mut b = [0; 8];
        b.copy_from_slice(&elf[i..i + 8]);
        u64::from_le_bytes(b) as usize
    };
    ensure!(
        elf.len() > 64 && &elf[..4] == b"\x7fELF" && elf[4] == 2,
        "not ELF64"
    );
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    for i in 0..phnum {
        let h = phoff + i * phentsize;
        if u32::from_le_bytes([elf[h], elf[h + 1], elf[h + 2], elf[h + 3]]) == 3 {
            let (off, size) = (u64_at(h + 8), u64_at(h + 32));
            let name = &elf[off..off + size];
            return Ok(text(name.strip_suffix(b"\0").unwrap_or(name)));
        }
    }
    Err("no PT_INTERP".into())
}

fn explicit_loader_is_a_clear_error() -> Result<(), String> {
    let loader = interpreter(START_ONE)?;
    let mut cmd = Command::new(&loader);
    cmd.arg(START_ONE).arg("run");
    let out = output(cmd)?;
    let stdout = text(&out.stdout);
    ensure!(
        out.status.success(),
        "{:?} {:?}",
        out.status,
        text(&out.stderr)
    );
    ensure!(stdout.contains("main ran"), "stdout: {stdout:?}");
    ensure!(
        stdout.contains("error BuildMismatch") && stdout.contains("explicit dynamic loader"),
        "stdout: {stdout:?}"
    );
    Ok(())
}

fn secure_execution_never_acts_as_a_child() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "bootstrap::secure_execution_never_acts_as_a_child: needs root to make a setuid copy; not run"
        );
        return Ok(());
    }
    let ours = start_one_env()?;
    let dir = std::env::temp_dir().join(format!("multiproc-setuid-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).ctx("create the directory")?;
    let result = (|| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).ctx("chmod dir")?;
        let copy = dir.join("start_one");
        std::fs::copy(START_ONE, &copy).ctx("copy start_one")?;
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o4755)).ctx("setuid")?;
        let as_nobody = |value: Option<&str>, stdin: Stdio| {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&copy)
                .arg("run")
                .stdin(stdin);
            if let Some(v) = value {
                cmd.env("MULTIPROC_CHILD", v);
            }
            output(cmd)
        };
        // As a parent: spawning is refused with a clear error.
        let out = as_nobody(None, Stdio::null())?;
        let stdout = text(&out.stdout);
        ensure!(
            stdout.contains("error PermissionDenied") && stdout.contains("setuid"),
            "{:?} stdout {stdout:?} stderr {:?}",
            out.status,
            text(&out.stderr)
        );
        // As a child: a value addressed to it, with a socket on stdin, is refused on stderr
        // and `main` runs as in any setuid program.
        let (mine, theirs) = UnixStream::pair().ctx("socketpair")?;
        let value = addressed_to(&ours, std::process::id());
        let out = as_nobody(
            Some(&value),
            Stdio::from(std::os::fd::OwnedFd::from(theirs)),
        )?;
        drop(mine);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        ensure!(
            stderr.contains("ignoring MULTIPROC_CHILD") && stdout.contains("main ran"),
            "{:?} stdout {stdout:?} stderr {stderr:?}",
            out.status
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn child_gets_the_parents_arguments() -> Result<(), String> {
    let mut cmd = Command::new(START_ONE);
    cmd.args(["args", "--flag", "two words"]);
    let out = output(cmd)?;
    let stdout = text(&out.stdout);
    let expected = format!("args {:?}", [START_ONE, "args", "--flag", "two words"]);
    ensure!(
        stdout.contains(&expected),
        "stdout {stdout:?}, expected {expected:?}"
    );
    Ok(())
}

fn closed_stdio_is_sanitized_in_the_child() -> Result<(), String> {
    // Both, or one: each closed one is reopened on `/dev/null`, inheritable as a standard
    // descriptor is (the open lands on the closed number itself, close-on-exec as std opens).
    for mode in ["closed-stdio", "closed-stdout", "closed-stderr"] {
        let mut cmd = Command::new(START_ONE);
        cmd.arg(mode);
        let out = output(cmd)?;
        ensure!(
            out.status.code() == Some(0),
            "{mode}: the child found stdout or stderr closed or close-on-exec: {:?}",
            out.status
        );
    }
    Ok(())
}

fn stack_overflow_says_so() -> Result<(), String> {
    let mut cmd = Command::new(START_ONE);
    cmd.arg("overflow");
    let out = output(cmd)?;
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    ensure!(
        stderr.contains("thread 'main' has overflowed its stack"),
        "stderr {stderr:?}, stdout {stdout:?}"
    );
    // std's runtime aborts after the message: the parent sees SIGABRT, not SIGSEGV.
    ensure!(
        stdout.contains("error Signaled") && stdout.contains("SIGABRT"),
        "stdout {stdout:?}"
    );
    Ok(())
}

/// Sends its standard error to the file at `path`, then panics with the name of the thread it
/// runs on and the name of its process.
fn panics_naming_the_thread(path: String) -> u8 {
    let file = std::fs::File::create(&path).expect("create the stderr file");
    // SAFETY: dup2 puts the file on descriptor 2; `file` stays open until the panic unwinds.
    unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&file), 2) };
    let thread = std::thread::current().name().map(str::to_string);
    let process = multiproc::current_process().name().to_string();
    panic!("thread name {thread:?} in {process}")
}

fn child_main_thread_is_named_main() -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("multiproc-stderr-{}", std::process::id()));
    let result = (|| {
        let mut p = multiproc::Process::new(
            panics_naming_the_thread,
            path.to_string_lossy().into_owned(),
        )
        .with_name("named-child");
        p.start().ctx("start")?;
        let err = p.join().err().ctx("join must fail")?;
        ensure!(
            err.kind() == multiproc::ErrorKind::Panicked,
            "kind {:?}",
            err.kind()
        );
        // The child's function runs on a thread named as std names a main thread.
        ensure!(
            err.panic_message() == Some("thread name Some(\"main\") in named-child"),
            "message {:?}",
            err.panic_message()
        );
        let location = err.panic_location().ctx("location")?;
        ensure!(location.contains("bootstrap.rs:"), "location {location}");
        ensure!(p.exitcode() == Some(1), "exitcode {:?}", p.exitcode());
        // std's panic message, as printed on the child's stderr (std adds the thread's id in
        // parentheses after its name).
        let stderr = std::fs::read_to_string(&path).ctx("read the child's stderr")?;
        ensure!(
            stderr
                .lines()
                .any(|l| l.starts_with("thread 'main'") && l.contains(" panicked at ")),
            "stderr {stderr:?}"
        );
        Ok(())
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// The affinity of the thread this runs on, and of its process's main thread.
fn child_affinities(_: ()) -> (Vec<usize>, Vec<usize>) {
    (
        ipc_tests::affinity(0),
        ipc_tests::affinity(std::process::id() as i32),
    )
}

/// The bootstrap creates the work thread on one CPU (the main thread's affinity is narrowed
/// for the creation): both threads must be given the program's mask back.
fn child_threads_keep_the_parents_cpu_affinity() -> Result<(), String> {
    // A spawned child inherits the mask of the thread that creates it: this one's, when the
    // harness leaves affinity alone (it does).
    let parent = ipc_tests::affinity(0);
    ensure!(!parent.is_empty(), "sched_getaffinity failed");
    for _ in 0..3 {
        let mut p = multiproc::Process::new(child_affinities, ());
        p.start().ctx("start")?;
        let (work, main) = p.join().ctx("join")?;
        ensure!(work == parent, "work thread {work:?}, parent {parent:?}");
        ensure!(main == parent, "main thread {main:?}, parent {parent:?}");
    }
    Ok(())
}

fn square(x: u64) -> u64 {
    x * x
}

/// Why the process that reuses the spawned child's pid number could not fork, as an exit status.
mod reuse {
    pub const NOT_PERMITTED: i32 = 100;
    pub const OK: i32 = 0;
    pub const THREADED_FORK: i32 = 23;
}

/// Run in a spawned child: a process in a new pid namespace is given this child's pid number
/// (and inherits its memory: the bootstrap's record of which pid has an idle main thread), then
/// starts a process with the fork start method. Returns that process's exit status.
fn fork_from_a_process_with_our_pid(_: ()) -> i32 {
    // The main thread is in its join by now (as a fork through multiproc would have waited for).
    std::thread::sleep(Duration::from_millis(100));
    // SAFETY: getpid, unshare, fork, open, write, waitpid and _exit on local values; between a
    // fork and an _exit only those, and multiproc's start in a single-threaded process.
    unsafe {
        let me = libc::getpid();
        if libc::unshare(libc::CLONE_NEWPID) != 0 {
            return reuse::NOT_PERMITTED;
        }
        let init = libc::fork();
        if init == 0 {
            // Pid 1 of the new namespace: the next number it hands out is `me`.
            let last = format!("{}", me - 1);
            let fd = libc::open(c"/proc/sys/kernel/ns_last_pid".as_ptr(), libc::O_WRONLY);
            if fd < 0 || libc::write(fd, last.as_ptr().cast(), last.len()) != last.len() as isize {
                libc::_exit(reuse::NOT_PERMITTED);
            }
            libc::close(fd);
            let d = libc::fork();
            if d == 0 {
                if libc::getpid() != me {
                    libc::_exit(21);
                }
                let mut p = multiproc::Process::new(square, 7u64)
                    .with_start_method(multiproc::StartMethod::Fork);
                let code = match p.start() {
                    Ok(()) => match p.join() {
                        Ok(49) => reuse::OK,
                        _ => 22,
                    },
                    Err(e) if e.kind() == multiproc::ErrorKind::ThreadedFork => {
                        reuse::THREADED_FORK
                    }
                    Err(_) => 24,
                };
                libc::_exit(code);
            }
            let mut status = 0;
            if d < 0 || libc::waitpid(d, &mut status, 0) != d || !libc::WIFEXITED(status) {
                libc::_exit(25);
            }
            libc::_exit(libc::WEXITSTATUS(status));
        }
        let mut status = 0;
        if init < 0 || libc::waitpid(init, &mut status, 0) != init || !libc::WIFEXITED(status) {
            return 26;
        }
        libc::WEXITSTATUS(status)
    }
}

/// A process forked (however) from a spawned child inherits the bootstrap's note of the pid
/// whose main thread waits idle; pid numbers are reused (pid_max is 32768 here), and a
/// descendant given the child's number must not count a waiting main thread it does not have
/// (a fork refused as threaded), nor wait for one forever.
fn a_descendant_that_reuses_the_childs_pid_can_fork() -> Result<(), String> {
    let mut p = multiproc::Process::new(fork_from_a_process_with_our_pid, ());
    p.start().ctx("start")?;
    let code = p.join().ctx("join")?;
    if code == reuse::NOT_PERMITTED {
        // No new pid namespace (or no ns_last_pid) without privileges: nothing to check.
        return Ok(());
    }
    ensure!(
        code == reuse::OK,
        "the fork from the process with the child's pid ended with {code} (23: refused as a \
         threaded fork)"
    );
    Ok(())
}

/// A program whose file is deleted and replaced by another after it started: a child runs the
/// program's own (deleted) file, and the build pin, taken through `/proc/self/exe` in both,
/// agrees.
fn a_replaced_executable_file_still_starts_the_running_build() -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("multiproc-replaced-{}", std::process::id()));
    std::fs::create_dir_all(&dir).ctx("create dir")?;
    let copy = dir.join("start_one");
    let result = (|| {
        std::fs::copy(START_ONE, &copy).ctx("copy start_one")?;
        // A descriptor of the copy open for writing may be inherited by a child another test
        // forks meanwhile (ETXTBSY): retry.
        let mut tries = 0;
        let out = loop {
            let mut cmd = Command::new(&copy);
            cmd.arg("replaced");
            match output(cmd) {
                Err(e) if e.contains("Text file busy") && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other?,
            }
        };
        let stdout = text(&out.stdout);
        ensure!(
            out.status.success() && stdout.contains("result 42 45"),
            "status {:?}, stdout {stdout:?}, stderr {:?}",
            out.status,
            text(&out.stderr)
        );
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// As `taskset -c <cpus> program`: the program and its child's two threads keep those CPUs,
/// one CPU (which the bootstrap leaves alone) or several (which it narrows for a moment).
fn a_program_started_on_some_cpus_keeps_them_in_its_child() -> Result<(), String> {
    use std::os::unix::process::CommandExt;
    let all = ipc_tests::affinity(0);
    let mut masks: Vec<Vec<usize>> = all.iter().map(|&c| vec![c]).collect();
    masks.push(all.clone());
    if all.len() > 2 {
        masks.push(all[1..].to_vec());
    }
    for cpus in masks {
        let mut cmd = Command::new(START_ONE);
        cmd.arg("affinity");
        let set = cpus.clone();
        // SAFETY: sched_setaffinity on a local set, in the forked child before exec.
        unsafe {
            cmd.pre_exec(move || {
                let mut mask: libc::cpu_set_t = std::mem::zeroed();
                for &c in &set {
                    libc::CPU_SET(c, &mut mask);
                }
                if libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &mask) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let out = output(cmd)?;
        let stdout = text(&out.stdout);
        let want = format!("affinity {cpus:?} {cpus:?} {cpus:?}");
        ensure!(
            stdout.contains(&want),
            "on CPUs {cpus:?}: stdout {stdout:?} (want {want:?}), stderr {:?}",
            text(&out.stderr)
        );
    }
    Ok(())
}
