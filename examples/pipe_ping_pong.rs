//! Ping-pong over a Pipe between two processes, then the failure cases a user meets.
//!
//! Run with `cargo run --release --example pipe_ping_pong`.

use std::time::{Duration, Instant};

use multiproc::{Connection, Process, RecvError, RecvTimeoutError};

/// Answers each ping with a pong carrying the same number, until the parent hangs up.
fn ponger(conn: Connection<(String, u32)>) -> u32 {
    let mut served = 0;
    while let Ok((word, n)) = conn.recv() {
        assert_eq!(word, "ping");
        conn.send(&("pong".to_string(), n)).expect("send pong");
        served += 1;
    }
    served
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();

    let (ours, theirs) = multiproc::pipe::<(String, u32)>()?;
    // The connection travels to the child as its argument.
    let mut child = Process::new(ponger, theirs).with_name("ponger");
    child.start()?;

    let rounds = 10_000;
    let t = Instant::now();
    for n in 0..rounds {
        ours.send(&("ping".to_string(), n))?;
        let (word, back) = ours.recv()?;
        assert_eq!((word.as_str(), back), ("pong", n));
    }
    let per = t.elapsed() / rounds;
    println!("{rounds} round trips, {per:?} each (unpinned)");

    // Wait for a message with a timeout, like Python's poll(timeout).
    assert!(!ours.poll(Some(Duration::from_millis(10)))?);

    // Hanging up ends the child's loop; it reports how many it served.
    drop(ours);
    println!("ponger served {}", child.join()?);

    // Waiting with a timeout: Timeout is its own error, not an empty success.
    let (a, b) = multiproc::pipe::<u8>()?;
    let err = a.recv_timeout(Duration::from_millis(10)).unwrap_err();
    assert!(matches!(err, RecvTimeoutError::Timeout));
    println!("with nothing sent: {err}");

    // A peer that is gone is Disconnected (Python's EOFError), never a hang.
    drop(b);
    let err = a.recv().unwrap_err();
    assert!(matches!(err, RecvError::Disconnected));
    println!("after the peer closed: {err}");
    Ok(())
}
