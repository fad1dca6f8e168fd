//! Pipe and Connection between real processes.

use std::os::fd::AsFd;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use multiproc::{
    Connection, ErrorKind, Process, RecvError, RecvIntoError, RecvTimeoutError, SendError,
    StartMethod,
};

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "pipe::sizes_0_to_64mib_through_a_child",
            sizes_through_a_child,
        ),
        (
            "pipe::simultaneous_64mib_both_ways",
            simultaneous_large_both_ways,
        ),
        (
            "pipe::killed_peer_is_disconnected",
            killed_peer_is_disconnected,
        ),
        ("pipe::garbage_length_breaks_the_connection", garbage_length),
        ("pipe::truncated_frame_is_an_error", truncated_frame),
        ("pipe::peer_dies_mid_frame", peer_dies_mid_frame),
        (
            "pipe::wait_on_connections_and_sentinels",
            wait_on_connections_and_sentinels,
        ),
        ("pipe::passes_to_forked_child", passes_to_forked_child),
        ("pipe::threads_share_one_end", threads_share_one_end),
        (
            "pipe::blocked_receiver_does_not_block_sender",
            blocked_receiver_does_not_block_sender,
        ),
        ("pipe::simplex_and_bytes_api", simplex_and_bytes_api),
        (
            "pipe::unserializable_send_sends_nothing",
            unserializable_send_sends_nothing,
        ),
    ]
}

/// Echoes every message back until the other end closes.
fn echo(conn: Connection<Vec<u8>>) -> u64 {
    let mut n = 0;
    while let Ok(msg) = conn.recv_bytes() {
        conn.send_bytes(&msg).expect("echo send");
        n += 1;
    }
    n
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn sizes_through_a_child() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<Vec<u8>>().ctx("pipe")?;
    let mut p = Process::new(echo, theirs);
    p.start().ctx("start")?;
    let sizes = [0usize, 1, 64 << 10, 1 << 20, 64 << 20];
    for (i, &len) in sizes.iter().enumerate() {
        let msg = pattern(len, i as u8);
        ours.send_bytes(&msg).ctx("send")?;
        let back = ours.recv_bytes().ctx("recv")?;
        ensure!(back == msg, "echo of {len} bytes differs");
    }
    // The typed API over the same connection.
    ours.send(&vec![1, 2, 3]).ctx("typed send")?;
    let typed = ours.recv().ctx("typed recv")?;
    ensure!(typed == vec![1, 2, 3], "typed echo {typed:?}");
    drop(ours);
    ensure!(
        p.join().ctx("join")? == sizes.len() as u64 + 1,
        "echo count"
    );
    Ok(())
}

/// Sends 64 MiB and receives 64 MiB at the same time as its parent does the same.
fn send_while_peer_sends(conn: Connection<Vec<u8>>) -> bool {
    let out = pattern(64 << 20, 1);
    conn.send_bytes(&out).expect("child send");
    let got = conn.recv_bytes().expect("child recv");
    got == pattern(64 << 20, 2)
}

fn simultaneous_large_both_ways() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<Vec<u8>>().ctx("pipe")?;
    let mut p = Process::new(send_while_peer_sends, theirs);
    p.start().ctx("start")?;
    let out = pattern(64 << 20, 2);
    ours.send_bytes(&out).ctx("parent send")?; // would deadlock without draining while sending
    let got = ours.recv_bytes().ctx("parent recv")?;
    ensure!(got == pattern(64 << 20, 1), "parent received wrong data");
    ensure!(p.join().ctx("join")?, "child received wrong data");
    Ok(())
}

fn hang(_conn: Connection<u32>) {
    std::thread::sleep(Duration::from_secs(120));
}

fn killed_peer_is_disconnected() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<u32>().ctx("pipe")?;
    let mut p = Process::new(hang, theirs);
    p.start().ctx("start")?;
    let pid = p.pid().ctx("pid")? as i32;
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let err = ours.recv().err().ctx("recv must fail")?;
    ensure!(matches!(err, RecvError::Disconnected), "{err:?}");
    let err = ours
        .recv_timeout(Duration::from_secs(5))
        .err()
        .ctx("again")?;
    ensure!(
        matches!(err, RecvTimeoutError::Disconnected),
        "again {err:?}"
    );
    // Sending to a dead peer is Disconnected too, not SIGPIPE.
    let err = ours.send(&1).err().ctx("send must fail")?;
    ensure!(matches!(err, SendError::Disconnected), "send {err:?}");
    let _ = p.join();
    Ok(())
}

/// The fault inside a receive that failed (not one that found the peer gone).
fn failed(e: RecvError) -> Result<multiproc::Error, String> {
    match e {
        RecvError::Failed(e) => Ok(e),
        RecvError::Disconnected => Err("expected a failed receive, got Disconnected".into()),
    }
}

/// Writes raw bytes on the connection's socket, then exits.
fn write_raw(arg: (Connection<u32>, Vec<u8>)) {
    let (conn, bytes) = arg;
    // SAFETY: writing a local buffer to a descriptor we own.
    let n = unsafe { libc::write(conn.as_fd().as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
    assert_eq!(n as usize, bytes.len());
}

fn garbage_length() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<u32>().ctx("pipe")?;
    ours.set_max_frame(1 << 20);
    let mut p = Process::new(write_raw, (theirs, vec![0xff, 0xff, 0xff, 0x7f, 1, 2, 3]));
    p.start().ctx("start")?;
    p.join().ctx("join")?;
    let err = failed(ours.recv().err().ctx("recv must fail")?)?;
    ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
    ensure!(
        matches!(
            err.codec_error(),
            Some(multiproc::codec::CodecError::Oversized { .. })
        ),
        "codec error {:?}",
        err.codec_error()
    );
    // Broken for good, with the same error.
    let again = failed(ours.recv().err().ctx("again")?)?;
    ensure!(
        again.kind() == ErrorKind::Codec,
        "kind again {:?}",
        again.kind()
    );
    Ok(())
}

fn truncated_frame() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<u32>().ctx("pipe")?;
    // Announces 100 bytes, sends 3, exits.
    let mut p = Process::new(write_raw, (theirs, vec![100, 0, 0, 0, 9, 9, 9]));
    p.start().ctx("start")?;
    p.join().ctx("join")?;
    let err = failed(ours.recv().err().ctx("recv must fail")?)?;
    ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
    ensure!(
        err.codec_error() == Some(&multiproc::codec::CodecError::Truncated),
        "codec error {:?}",
        err.codec_error()
    );
    // A frame of the wrong type is a codec error too, and only for that message.
    let (a, b) = multiproc::pipe::<u32>().ctx("pipe 2")?;
    a.send_bytes(&[1, 2, 3]).ctx("send bytes")?;
    a.send(&5).ctx("send")?;
    ensure!(
        matches!(b.recv(), Err(RecvError::Failed(e)) if e.kind() == ErrorKind::Codec),
        "wrong type"
    );
    ensure!(b.recv().ctx("next")? == 5, "next message lost");
    Ok(())
}

/// Starts sending a 512 MiB frame and is killed in the middle.
fn send_forever(conn: Connection<Vec<u8>>) {
    let big = vec![7u8; 512 << 20];
    let _ = conn.send_bytes(&big);
}

fn peer_dies_mid_frame() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<Vec<u8>>().ctx("pipe")?;
    let mut p = Process::new(send_forever, theirs);
    p.start().ctx("start")?;
    // Wait until the first bytes are readable, with a raw poll(2) that does not consume them
    // (wait() and poll() report whole messages only, reading until one is in), then kill the
    // sender in the middle of its frame.
    let mut pfd = libc::pollfd {
        fd: std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(&ours)),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for the duration of the call.
    let ready = unsafe { libc::poll(&mut pfd, 1, 60_000) };
    ensure!(ready == 1, "nothing arrived");
    p.kill().ctx("kill")?;
    let _ = p.join();
    let t = Instant::now();
    let got = ours.recv_bytes();
    if let Ok(m) = &got {
        return Err(format!("received a whole frame of {} bytes", m.len()));
    }
    let err = failed(got.err().ctx("recv must fail")?)?;
    ensure!(
        err.kind() == ErrorKind::Codec,
        "kind {:?}: {err}",
        err.kind()
    );
    ensure!(
        err.codec_error() == Some(&multiproc::codec::CodecError::Truncated),
        "{err}"
    );
    ensure!(
        t.elapsed() < Duration::from_secs(60),
        "took {:?}",
        t.elapsed()
    );
    Ok(())
}

fn reply_after(arg: (Connection<u32>, u64)) {
    std::thread::sleep(Duration::from_millis(arg.1));
    arg.0.send(&(arg.1 as u32)).expect("send");
}

fn nap(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

fn wait_on_connections_and_sentinels() -> Result<(), String> {
    let (a, a_child) = multiproc::pipe::<u32>().ctx("pipe a")?;
    let (b, b_child) = multiproc::pipe::<u32>().ctx("pipe b")?;
    let mut pa = Process::new(reply_after, (a_child, 2_000));
    let mut pb = Process::new(reply_after, (b_child, 50));
    let mut sleeper = Process::new(nap, 150);
    pa.start().ctx("start a")?;
    pb.start().ctx("start b")?;
    sleeper.start().ctx("start sleeper")?;
    let ready = multiproc::wait(&[&a, &b], Some(Duration::from_secs(60))).ctx("wait")?;
    ensure!(ready == [1], "ready {ready:?}");
    ensure!(b.recv().ctx("recv b")? == 50, "b");
    let s = sleeper.sentinel().ctx("sentinel")?;
    let ready = multiproc::wait(&[&a, &s], Some(Duration::from_secs(60))).ctx("wait 2")?;
    ensure!(ready == [1], "sentinel not first: {ready:?}");
    let nothing = multiproc::wait(&[&a], Some(Duration::from_millis(10))).ctx("wait 3")?;
    ensure!(nothing.is_empty(), "timeout returned {nothing:?}");
    sleeper.join().ctx("join sleeper")?;
    ensure!(a.recv().ctx("recv a")? == 2_000, "a");
    pa.join().ctx("join a")?;
    pb.join().ctx("join b")?;
    Ok(())
}

/// Adds one to each number until it gets 0. (A forked child inherits a copy of every
/// descriptor, the parent's end of this pipe included, so it would never see end-of-stream:
/// with fork, end loops with a message.)
fn add_one(conn: Connection<u64>) {
    while let Ok(v) = conn.recv() {
        if v == 0 {
            break;
        }
        conn.send(&(v + 1)).expect("send");
    }
}

/// Runs in a single-threaded spawned child: forks a grandchild that gets a connection.
fn fork_with_connection(_: ()) -> u64 {
    let (ours, theirs) = multiproc::pipe::<u64>().expect("pipe");
    let mut p = Process::new(add_one, theirs).with_start_method(StartMethod::Fork);
    p.start().expect("fork");
    ours.send(&41).expect("send");
    let v = ours.recv().expect("recv");
    ours.send(&0).expect("stop");
    p.join().expect("join");
    v
}

fn passes_to_forked_child() -> Result<(), String> {
    let mut p = Process::new(fork_with_connection, ());
    p.start().ctx("start")?;
    ensure!(p.join().ctx("join")? == 42, "value");
    Ok(())
}

/// Counts messages from two senders and checks each one arrived whole.
fn count_whole(conn: Connection<Vec<u8>>) -> (u32, u32) {
    let (mut good, mut bad) = (0, 0);
    while let Ok(m) = conn.recv_bytes() {
        let whole = m.len() == 10_000 && m.iter().all(|&b| b == m[0]);
        if whole { good += 1 } else { bad += 1 }
    }
    (good, bad)
}

fn threads_share_one_end() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<Vec<u8>>().ctx("pipe")?;
    let mut p = Process::new(count_whole, theirs);
    p.start().ctx("start")?;
    let ours = std::sync::Arc::new(ours);
    let senders: Vec<_> = (0..2u8)
        .map(|t| {
            let c = ours.clone();
            std::thread::spawn(move || {
                for _ in 0..500 {
                    c.send_bytes(&[t + 1; 10_000]).expect("send");
                }
            })
        })
        .collect();
    for s in senders {
        s.join().map_err(|_| "sender panicked")?;
    }
    drop(ours);
    let (good, bad) = p.join().ctx("join")?;
    ensure!(
        good == 1000 && bad == 0,
        "good {good}, bad {bad}: frames interleaved"
    );
    Ok(())
}

fn simplex_and_bytes_api() -> Result<(), String> {
    let (reader, writer) = multiproc::simplex::<String>().ctx("simplex")?;
    let mut p = Process::new(
        |w: Connection<String, multiproc::Nothing>| {
            w.send(&"from child".to_string()).expect("send")
        },
        writer,
    );
    p.start().ctx("start")?;
    ensure!(reader.recv().ctx("recv")? == "from child", "message");
    p.join().ctx("join")?;
    ensure!(matches!(reader.recv(), Err(RecvError::Disconnected)), "eof");
    let (a, b) = multiproc::pipe::<()>().ctx("pipe")?;
    a.send_bytes(b"hello world").ctx("send")?;
    let mut small = [0u8; 5];
    match b.recv_bytes_into(&mut small) {
        Err(RecvIntoError::BufferTooShort(m)) => ensure!(m == b"hello world", "message {m:?}"),
        other => return Err(format!("expected BufferTooShort, got {other:?}")),
    }
    a.send_bytes(b"hi").ctx("send 2")?;
    ensure!(
        b.recv_bytes_into(&mut small).ctx("into")? == 2 && &small[..2] == b"hi",
        "into"
    );
    ensure!(
        !b.poll(Some(Duration::ZERO)).ctx("poll")?,
        "poll with nothing"
    );
    Ok(())
}

struct Refuses;

impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("no"))
    }
}

fn unserializable_send_sends_nothing() -> Result<(), String> {
    let (a, b) = multiproc::pipe_typed::<Refuses, u8>().ctx("pipe")?;
    let err = match a.send(&Refuses) {
        Err(SendError::Failed(e)) => e,
        other => return Err(format!("send must fail, got {other:?}")),
    };
    ensure!(err.kind() == ErrorKind::Codec, "kind {:?}", err.kind());
    ensure!(
        !b.poll(Some(Duration::from_millis(20))).ctx("poll")?,
        "something reached the wire"
    );
    // A connection cannot be sent through a pipe (only passed as process arguments).
    let (c, _d) = multiproc::pipe::<Connection<u8>>().ctx("pipe 2")?;
    let (x, _y) = multiproc::pipe::<u8>().ctx("pipe 3")?;
    ensure!(
        matches!(c.send(&x), Err(SendError::Failed(e)) if e.kind() == ErrorKind::Codec),
        "connection over a pipe"
    );
    Ok(())
}

fn blocked_receiver_does_not_block_sender() -> Result<(), String> {
    let (ours, theirs) = multiproc::pipe::<u64>().ctx("pipe")?;
    let mut p = Process::new(add_one, theirs);
    p.start().ctx("start")?;
    let ours = std::sync::Arc::new(ours);
    let receiver = {
        let c = ours.clone();
        std::thread::spawn(move || c.recv())
    };
    // Let the receiver block first, then send on the same end from this thread: the reply it
    // waits for only comes if this send is not held up by its receive.
    std::thread::sleep(Duration::from_millis(100));
    ours.send(&41).ctx("send while another thread receives")?;
    let got = receiver
        .join()
        .map_err(|_| "receiver panicked")?
        .ctx("recv")?;
    ensure!(got == 42, "got {got}");
    ours.send(&0).ctx("stop")?;
    p.join().ctx("join")?;
    Ok(())
}
