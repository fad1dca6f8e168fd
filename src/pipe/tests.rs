use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use super::*;

/// Runs a test body that blocks on pipes with a bound: a hang fails the test instead of
/// stalling the suite (the stuck thread is abandoned).
fn bounded(body: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let worker = std::thread::spawn(move || {
        body();
        let _ = tx.send(());
    });
    match rx.recv_timeout(std::time::Duration::from_secs(60)) {
        Ok(()) => worker.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic here.
            if let Err(p) = worker.join() {
                std::panic::resume_unwind(p);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("watchdog: the test hung for 60 s")
        }
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(seed))
        .collect()
}

/// A connection whose peer is a plain socket we can write anything to.
fn with_raw_peer() -> (Connection<()>, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    let fd = OwnedFd::from(a);
    (Connection::new(fd, true, true), b)
}

#[test]
fn recv_bytes_round_trips_every_size() {
    bounded(|| {
        let (a, b) = pipe::<()>().unwrap();
        let b = std::sync::Arc::new(b);
        for (i, len) in [0usize, 1, 4, 65_535, 65_536, 1 << 20, 5 << 20]
            .into_iter()
            .enumerate()
        {
            let msg = pattern(len, i as u8);
            let sender = {
                let m = msg.clone();
                let b = b.clone();
                std::thread::spawn(move || b.send_bytes(&m).unwrap())
            };
            assert_eq!(a.recv_bytes().unwrap(), msg, "size {len}");
            sender.join().unwrap();
        }
    });
}

#[test]
fn large_frames_go_straight_into_the_callers_buffer() {
    bounded(|| {
        let (a, b) = pipe::<()>().unwrap();
        let msgs: Vec<Vec<u8>> = [3 << 20, 100, 200_000, 0, 1 << 20]
            .iter()
            .enumerate()
            .map(|(i, &n)| pattern(n, i as u8))
            .collect();
        let to_send = msgs.clone();
        let sender = std::thread::spawn(move || {
            for m in &to_send {
                b.send_bytes(m).unwrap();
            }
        });
        let mut buf = vec![0u8; 4 << 20];
        for m in &msgs {
            let n = a.recv_bytes_into(&mut buf).unwrap();
            assert_eq!(&buf[..n], &m[..], "message of {} bytes", m.len());
        }
        sender.join().unwrap();
    });
}

#[test]
fn a_large_frame_too_big_for_the_buffer_comes_back_whole() {
    bounded(|| {
        let (a, b) = pipe::<()>().unwrap();
        let msg = pattern(300_000, 9);
        let m = msg.clone();
        let sender = std::thread::spawn(move || b.send_bytes(&m).unwrap());
        let mut small = vec![0u8; 100_000];
        match a.recv_bytes_into(&mut small) {
            Err(RecvIntoError::BufferTooShort(whole)) => assert_eq!(whole, msg),
            other => panic!("expected BufferTooShort, got {other:?}"),
        }
        sender.join().unwrap();
    });
}

#[test]
fn peer_closing_mid_frame_is_truncated_on_the_direct_path() {
    bounded(|| {
        let (a, mut raw) = with_raw_peer();
        raw.write_all(&(1_000_000u32).to_le_bytes()).unwrap();
        // 100 kB: past the large-frame threshold, and within what the socket holds unread.
        raw.write_all(&[7u8; 100_000]).unwrap();
        drop(raw);
        let mut buf = vec![0u8; 2_000_000];
        match a.recv_bytes_into(&mut buf) {
            Err(RecvIntoError::Failed(e)) => {
                assert_eq!(e.codec_error(), Some(&CodecError::Truncated), "{e}");
            }
            other => panic!("expected a truncated frame, got {other:?}"),
        }
        // Broken for good.
        assert_eq!(
            a.recv_bytes().unwrap_err().codec_error(),
            Some(&CodecError::Truncated)
        );
    });
}

#[test]
fn peer_closing_mid_frame_is_truncated_on_the_decoder_path() {
    bounded(|| {
        let (a, mut raw) = with_raw_peer();
        raw.write_all(&(1_000_000u32).to_le_bytes()).unwrap();
        // 100 kB: past the large-frame threshold, and within what the socket holds unread.
        raw.write_all(&[7u8; 100_000]).unwrap();
        drop(raw);
        assert_eq!(
            a.recv_bytes().unwrap_err().codec_error(),
            Some(&CodecError::Truncated)
        );
    });
}

#[test]
fn limit_is_read_without_the_receive_lock() {
    bounded(|| {
        let (a, _b) = pipe::<u8>().unwrap();
        let _receiving = lock(&a.recv);
        // Would deadlock if `max_frame` (used by every send) took the receive lock.
        assert_eq!(a.max_frame(), DEFAULT_PIPE_FRAME_LIMIT);
        assert!(a.as_fd().as_raw_fd() >= 0);
    });
}
