//! Worker: many calls through one long-lived child, and what happens when one goes wrong.

use std::time::Duration;

use multiproc::{CallTimeoutError, ErrorKind, Worker};
use serde::{Deserialize, Serialize};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        ("worker::many_calls_one_process", many_calls_one_process),
        (
            "worker::panic_fails_only_that_call",
            panic_fails_only_that_call,
        ),
        ("worker::killed_mid_call", killed_mid_call),
        ("worker::exit_mid_call", exit_mid_call),
        ("worker::call_timeout_kills", call_timeout_kills),
        ("worker::large_values", large_values),
        (
            "worker::bad_argument_keeps_worker",
            bad_argument_keeps_worker,
        ),
        (
            "worker::call_timeout_bounds_the_send_to_a_stopped_worker",
            call_timeout_bounds_the_send_to_a_stopped_worker,
        ),
    ]
}

fn square(x: u64) -> u64 {
    x * x
}

fn concat(parts: Vec<String>) -> String {
    parts.concat()
}

fn my_pid(_: ()) -> u32 {
    std::process::id()
}

fn many_calls_one_process() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    let pid = w.call(my_pid, ()).ctx("pid call")?;
    ensure!(pid == w.pid(), "worker pid {pid} vs {}", w.pid());
    for i in 0..2000u64 {
        ensure!(w.call(square, i).ctx("square")? == i * i, "square({i})");
        if i % 100 == 0 {
            let s = w
                .call(concat, vec!["a".into(), i.to_string()])
                .ctx("concat")?;
            ensure!(s == format!("a{i}"), "concat {s}");
        }
    }
    ensure!(
        w.call(my_pid, ()).ctx("pid call")? == pid,
        "a different process answered"
    );
    w.shutdown().ctx("shutdown")?;
    Ok(())
}

fn boom(x: u32) -> u32 {
    if x == 13 {
        panic!("unlucky {x}");
    }
    x
}

fn panic_fails_only_that_call() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    ensure!(w.call(boom, 1).ctx("call 1")? == 1, "1");
    let err = w.call(boom, 13).err().ctx("13 must fail")?;
    ensure!(err.kind() == ErrorKind::Panicked, "kind {:?}", err.kind());
    ensure!(
        err.panic_message() == Some("unlucky 13"),
        "message {:?}",
        err.panic_message()
    );
    ensure!(w.call(boom, 2).ctx("call after panic")? == 2, "2");
    ensure!(w.is_alive(), "worker died");
    w.shutdown().ctx("shutdown")?;
    Ok(())
}

fn nap(ms: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    ms
}

fn killed_mid_call() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    let pid = w.pid() as i32;
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let err = w.call(nap, 60_000).err().ctx("call must fail")?;
    killer.join().map_err(|_| "killer panicked")?;
    ensure!(
        err.kind() == ErrorKind::Signaled,
        "kind {:?}: {err}",
        err.kind()
    );
    ensure!(err.signal() == Some(9), "signal {:?}", err.signal());
    ensure!(err.pid() == Some(pid as u32), "pid {:?}", err.pid());
    let again = w.call(square, 2).err().ctx("later call must fail")?;
    ensure!(
        again.kind() == ErrorKind::Disconnected,
        "later kind {:?}",
        again.kind()
    );
    ensure!(!w.is_alive(), "alive");
    Ok(())
}

fn exit_now(code: i32) -> u8 {
    std::process::exit(code)
}

fn exit_mid_call() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    let err = w.call(exit_now, 4).err().ctx("call must fail")?;
    ensure!(err.kind() == ErrorKind::Exited, "kind {:?}", err.kind());
    ensure!(err.exit_code() == Some(4), "code {:?}", err.exit_code());
    Ok(())
}

fn call_timeout_kills() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    ensure!(
        w.call_timeout(nap, 1, Duration::from_secs(30))
            .ctx("quick")?
            == 1,
        "quick call"
    );
    let r = w.call_timeout(nap, 60_000, Duration::from_millis(100));
    ensure!(
        matches!(r, Err(CallTimeoutError::Timeout)),
        "slow call gave {r:?}"
    );
    ensure!(!w.is_alive(), "worker still alive after timeout");
    let err = w.call(square, 1).err().ctx("call after timeout")?;
    ensure!(
        err.kind() == ErrorKind::Disconnected,
        "kind {:?}",
        err.kind()
    );
    Ok(())
}

#[derive(Serialize, Deserialize)]
struct Blob(Vec<u8>);

fn checksum(b: Blob) -> (usize, u64) {
    (b.0.len(), b.0.iter().map(|&x| x as u64).sum())
}

fn make_blob(len: usize) -> Blob {
    Blob((0..len).map(|i| i as u8).collect())
}

fn large_values() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    for len in [0usize, 1, 65_536, 4 << 20] {
        let data: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
        let expected = (len, data.iter().map(|&x| x as u64).sum());
        ensure!(
            w.call(checksum, Blob(data)).ctx("checksum")? == expected,
            "checksum {len}"
        );
        let Blob(back) = w.call(make_blob, len).ctx("make_blob")?;
        ensure!(
            back.len() == len && back.iter().enumerate().all(|(i, &b)| b == i as u8),
            "blob {len}"
        );
    }
    w.shutdown().ctx("shutdown")?;
    Ok(())
}

struct Refuses;

impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("nope"))
    }
}

impl<'de> Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(_: D) -> Result<Self, D::Error> {
        Ok(Refuses)
    }
}

fn takes_refuses(_: Refuses) -> u8 {
    1
}

fn returns_refuses(_: ()) -> Refuses {
    Refuses
}

fn bad_argument_keeps_worker() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    let err = w.call(takes_refuses, Refuses).err().ctx("must fail")?;
    ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
    let err = w.call(returns_refuses, ()).err().ctx("must fail")?;
    ensure!(
        err.kind() == ErrorKind::Codec,
        "result kind {:?}",
        err.kind()
    );
    ensure!(
        w.call(square, 3).ctx("after")? == 9,
        "worker unusable after codec errors"
    );
    w.shutdown().ctx("shutdown")?;
    Ok(())
}

/// A worker that stops reading (SIGSTOP) while a large argument is being sent: the call's
/// deadline bounds the send too.
fn call_timeout_bounds_the_send_to_a_stopped_worker() -> Result<(), String> {
    let mut w = Worker::start().ctx("start")?;
    let pid = w.pid() as i32;
    // SAFETY: stopping our own child; it is killed (SIGKILL works on a stopped process) below.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let r = w.call_timeout(checksum, make_blob(64 << 20), Duration::from_millis(300));
        let r = match r {
            Ok(v) => Ok(Some(v)),
            Err(CallTimeoutError::Timeout) => Ok(None),
            Err(CallTimeoutError::Failed(e)) => Err(e.to_string()),
        };
        let _ = tx.send((r, w.is_alive()));
    });
    let (r, alive) = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(got) => got,
        Err(_) => {
            // SAFETY: killing our own stopped child so that nothing is left behind.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            return Err("call_timeout(300 ms) was still sending after 60 s".into());
        }
    };
    ensure!(r == Ok(None), "call_timeout gave {r:?}");
    ensure!(!alive, "the worker was not killed after the timeout");
    Ok(())
}
