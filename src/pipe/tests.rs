use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use serde::Serializer;

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
        // Around COPY_MAX the header and payload go out copied together or gathered.
        let sizes = [
            0usize,
            1,
            4,
            COPY_MAX,
            COPY_MAX + 1,
            65_535,
            65_536,
            1 << 20,
            5 << 20,
        ];
        for (i, len) in sizes.into_iter().enumerate() {
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
        match a.recv_bytes() {
            Err(RecvError::Failed(e)) => assert_eq!(e.codec_error(), Some(&CodecError::Truncated)),
            other => panic!("expected a broken stream, got {other:?}"),
        }
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
        match a.recv_bytes() {
            Err(RecvError::Failed(e)) => assert_eq!(e.codec_error(), Some(&CodecError::Truncated)),
            other => panic!("expected a truncated frame, got {other:?}"),
        }
    });
}

#[test]
fn limit_is_read_without_the_receive_lock() {
    bounded(|| {
        let (a, _b) = pipe::<u8>().unwrap();
        let _receiving = a.recv.try_take().expect("nobody else receives");
        // Would deadlock if `max_frame` (used by every send) took the receive lock.
        assert_eq!(a.max_frame(), DEFAULT_PIPE_FRAME_LIMIT);
        assert!(a.as_fd().as_raw_fd() >= 0);
    });
}

/// Waits until another thread has the receive state out (it is blocked receiving).
fn until_receiving<S, R>(c: &Connection<S, R>) {
    loop {
        match c.recv.try_take() {
            Some(st) => {
                drop(st);
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            None => return,
        }
    }
}

#[test]
fn receivers_waiting_on_one_end_each_get_a_message() {
    // Giving the receive state back wakes a waiter only when one is counted: a miscount would
    // leave a receiver asleep with messages buffered.
    bounded(|| {
        let (a, b) = pipe::<u32>().unwrap();
        let b = std::sync::Arc::new(b);
        let per = 200;
        let receivers: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..per).map(|_| b.recv().unwrap()).sum::<u32>())
            })
            .collect();
        for i in 0..4 * per {
            a.send(&i).unwrap();
        }
        let total: u32 = receivers.into_iter().map(|r| r.join().unwrap()).sum();
        assert_eq!(total, (0..4 * per).sum::<u32>());
    });
}

#[test]
fn try_and_timed_calls_never_wait_behind_a_blocking_recv() {
    bounded(|| {
        let (a, b) = pipe::<u8>().unwrap();
        let b = std::sync::Arc::new(b);
        let receiver = {
            let b = b.clone();
            std::thread::spawn(move || b.recv().unwrap())
        };
        until_receiving(&b);
        // Each of these took the receive lock and waited for the blocked `recv` before.
        assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
        assert!(matches!(
            b.recv_timeout(std::time::Duration::from_millis(20)),
            Err(RecvTimeoutError::Timeout)
        ));
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        assert!(matches!(
            b.recv_deadline(soon),
            Err(RecvTimeoutError::Timeout)
        ));
        assert!(!b.poll(Some(std::time::Duration::ZERO)).unwrap());
        b.set_max_frame(1 << 20);
        assert_eq!(b.max_frame(), 1 << 20);
        a.send(&5).unwrap();
        assert_eq!(receiver.join().unwrap(), 5);
    });
}

#[test]
fn deadlines_hold_while_a_large_frame_streams_in() {
    bounded(|| {
        let (a, b) = pipe::<()>().unwrap();
        let msg = pattern(64 << 20, 3);
        let m = msg.clone();
        let sender = std::thread::spawn(move || b.send_bytes(&m).unwrap());
        assert!(sys::wait_fd(a.as_fd(), sys::POLLIN, None).unwrap());
        // One read cannot complete a 64 MiB frame: a zero timeout must give up after it
        // instead of reading for as long as bytes keep coming.
        assert!(!a.poll(Some(std::time::Duration::ZERO)).unwrap());
        assert!(matches!(a.try_recv(), Err(TryRecvError::Empty)));
        assert_eq!(a.recv_bytes().unwrap(), msg);
        sender.join().unwrap();
    });
}

#[test]
fn a_blocked_sender_buffers_at_most_one_frame_of_its_peer() {
    bounded(|| {
        const FRAMES: usize = 40;
        const FRAME: usize = 1 << 20;
        let (a, b) = pipe::<()>().unwrap();
        let peer = std::thread::spawn(move || {
            for i in 0..FRAMES {
                b.send_bytes(&pattern(FRAME, i as u8)).unwrap();
            }
            b.recv_bytes().unwrap().len()
        });
        a.send_bytes(&pattern(8 << 20, 1)).unwrap();
        let held = a.recv.try_take().unwrap().decoder.buffered();
        assert!(
            held <= FRAME + HEADER_LEN + (128 << 10),
            "a blocked sender buffered {held} bytes of its peer's messages"
        );
        for i in 0..FRAMES {
            assert_eq!(a.recv_bytes().unwrap(), pattern(FRAME, i as u8));
        }
        assert_eq!(peer.join().unwrap(), 8 << 20);
    });
}

#[test]
fn a_non_blocking_descriptor_waits_instead_of_failing() {
    bounded(|| {
        let (a, mut raw) = with_raw_peer();
        sys::set_nonblocking(a.as_fd()).unwrap();
        let msg = pattern(1 << 20, 5);
        let m = msg.clone();
        let writer = std::thread::spawn(move || {
            raw.write_all(&(m.len() as u32).to_le_bytes()).unwrap();
            raw.write_all(&m[..100_000]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            raw.write_all(&m[100_000..]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(50));
            raw.write_all(&[1, 0, 0, 0, 9]).unwrap();
            raw
        });
        let mut buf = vec![0u8; 2 << 20];
        let n = a.recv_bytes_into(&mut buf).unwrap();
        assert_eq!(&buf[..n], &msg[..]);
        assert_eq!(a.recv_bytes().unwrap(), [9]);
        drop(writer.join().unwrap());
    });
}

#[test]
fn wait_on_a_simplex_writer_wakes_when_the_reader_is_gone() {
    bounded(|| {
        let (reader, writer) = simplex::<u8>().unwrap();
        assert!(
            crate::wait(&[&writer], Some(std::time::Duration::from_millis(10)))
                .unwrap()
                .is_empty()
        );
        drop(reader);
        assert_eq!(
            crate::wait(&[&writer], Some(std::time::Duration::from_secs(30))).unwrap(),
            [0]
        );
    });
}

#[test]
fn wait_does_not_report_a_header_alone() {
    bounded(|| {
        let (a, mut raw) = with_raw_peer();
        raw.write_all(&[3, 0, 0, 0]).unwrap();
        let short = std::time::Duration::from_millis(50);
        assert!(crate::wait(&[&a], Some(short)).unwrap().is_empty());
        raw.write_all(&[1, 2, 3]).unwrap();
        assert_eq!(
            crate::wait(&[&a], Some(std::time::Duration::from_secs(30))).unwrap(),
            [0]
        );
        assert_eq!(a.recv_bytes().unwrap(), [1, 2, 3]);
    });
}

/// A value whose `Serialize` refuses.
struct Refuses;

impl Serialize for Refuses {
    fn serialize<Z: Serializer>(&self, _: Z) -> std::result::Result<Z::Ok, Z::Error> {
        Err(serde::ser::Error::custom("refused"))
    }
}

#[test]
fn a_failed_serialize_names_the_type_and_says_so_once() {
    let (a, _b) = pipe::<Refuses>().unwrap();
    let Err(SendError::Failed(err)) = a.send(&Refuses) else {
        panic!("a refused value must fail the send");
    };
    let text = err.to_string();
    assert_eq!(err.kind(), ErrorKind::Codec);
    assert!(text.contains("Refuses"), "{text}");
    assert_eq!(text.matches("could not be serialized").count(), 1, "{text}");
    // The impl's own message, once (postcard alone would say "Serde Serialization Error").
    assert_eq!(text.matches("refused").count(), 1, "{text}");
    assert!(!text.contains("Serde Serialization Error"), "{text}");
}

#[test]
fn every_form_names_a_gone_peer_disconnected_after_what_it_sent() {
    bounded(|| {
        use std::time::Duration;
        let (a, b) = pipe::<u8>().unwrap();
        a.send(&1).unwrap();
        a.send_bytes(&[2]).unwrap();
        drop(a);
        // What was sent comes first, whatever the form.
        assert_eq!(b.try_recv().unwrap(), 1);
        assert_eq!(b.recv_deadline(Instant::now()).unwrap(), 2);
        assert!(matches!(b.recv(), Err(RecvError::Disconnected)));
        assert!(matches!(b.try_recv(), Err(TryRecvError::Disconnected)));
        assert!(matches!(
            b.recv_timeout(Duration::from_secs(5)),
            Err(RecvTimeoutError::Disconnected)
        ));
        // A timeout past what an Instant can hold waits forever, and still sees the end.
        assert!(matches!(
            b.recv_timeout(Duration::MAX),
            Err(RecvTimeoutError::Disconnected)
        ));
        assert!(matches!(
            b.recv_deadline(Instant::now()),
            Err(RecvTimeoutError::Disconnected)
        ));
        assert!(matches!(b.recv_bytes(), Err(RecvError::Disconnected)));
        let mut buf = [0u8; 4];
        assert!(matches!(
            b.recv_bytes_into(&mut buf),
            Err(RecvIntoError::Disconnected)
        ));
        assert!(matches!(b.send(&3), Err(SendError::Disconnected)));
        assert!(matches!(b.send_bytes(b"x"), Err(SendError::Disconnected)));
        // Through `?` the crate error keeps the kind.
        let e: Error = b.recv().unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::Disconnected);
        let e: Error = b.send(&4).unwrap_err().into();
        assert_eq!(e.kind(), ErrorKind::Disconnected);
    });
}

#[test]
fn a_broken_stream_is_failed_in_every_form() {
    bounded(|| {
        let (x, mut raw) = UnixStream::pair().unwrap();
        let a: Connection<(), u8> = Connection::new(OwnedFd::from(x), true, true);
        a.set_max_frame(16);
        raw.write_all(&[0xff, 0xff, 0xff, 0x7f]).unwrap();
        let oversized = |e: &Error| matches!(e.codec_error(), Some(CodecError::Oversized { .. }));
        match a.try_recv() {
            Err(TryRecvError::Failed(e)) => assert!(oversized(&e), "{e}"),
            other => panic!("{other:?}"),
        }
        match a.recv_timeout(std::time::Duration::from_secs(5)) {
            Err(RecvTimeoutError::Failed(e)) => assert!(oversized(&e), "{e}"),
            other => panic!("{other:?}"),
        }
        match a.recv_bytes() {
            Err(RecvError::Failed(e)) => assert!(oversized(&e), "{e}"),
            other => panic!("{other:?}"),
        }
        drop(raw);
        match a.recv() {
            Err(RecvError::Failed(e)) => assert!(oversized(&e), "{e}"),
            other => panic!("a broken stream stays broken after the peer left: {other:?}"),
        }
    });
}

#[test]
fn a_sender_waiting_for_room_gives_back_a_whole_frame_it_read() {
    // A sender blocked on a full socket borrows the receive state to read what the peer sends
    // meanwhile. Once it holds a whole frame it must give the state back before it waits on:
    // it kept it while it waited for room, so a receiving thread of the same end stayed
    // queued for the state, with its message buffered, for as long as the peer did not read.
    bounded(|| {
        let (a, mut raw) = with_raw_peer();
        let a = std::sync::Arc::new(a);
        raw.write_all(&[3, 0, 0, 0, 1, 2, 3]).unwrap();
        // Far more than a socket buffer holds; the peer never reads.
        let big = vec![7u8; 32 << 20];
        let sender = {
            let a = a.clone();
            std::thread::spawn(move || a.send_bytes(&big))
        };
        // Let the sender read the frame and settle into its wait for room.
        std::thread::sleep(std::time::Duration::from_millis(200));
        let (tx, rx) = std::sync::mpsc::channel();
        let receiver = {
            let a = a.clone();
            std::thread::spawn(move || tx.send(a.recv_bytes().map_err(|e| e.to_string())))
        };
        let got = rx.recv_timeout(std::time::Duration::from_secs(20));
        drop(raw);
        assert!(sender.join().unwrap().is_err(), "the peer left mid-send");
        assert_eq!(
            got.expect("a buffered frame waited behind a sender blocked for room"),
            Ok(vec![1, 2, 3])
        );
        receiver.join().unwrap().unwrap();
    });
}

#[test]
fn small_frames_around_the_copy_size_survive_partial_sends_on_a_non_blocking_descriptor() {
    // Frames just below, at and above the size that `send_bytes` copies behind its header
    // (one send(2) of one buffer) go out through a non-blocking socket whose peer reads
    // slowly: EAGAIN and partial sends in the middle of a frame must resume where they were.
    bounded(|| {
        let (a, b) = pipe::<()>().unwrap();
        sys::set_nonblocking(a.as_fd()).unwrap();
        sys::set_socket_buffers(a.as_fd(), 4096);
        sys::set_socket_buffers(b.as_fd(), 4096);
        let sizes = [0, 1, COPY_MAX - 1, COPY_MAX, COPY_MAX + 1, 3 * COPY_MAX + 5];
        let rounds = 200;
        let reader = std::thread::spawn(move || {
            for r in 0..rounds {
                if r % 50 == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                for (k, &n) in sizes.iter().enumerate() {
                    assert_eq!(
                        b.recv_bytes().unwrap(),
                        pattern(n, (r + k) as u8),
                        "{r} {n}"
                    );
                }
            }
        });
        for r in 0..rounds {
            for (k, &n) in sizes.iter().enumerate() {
                a.send_bytes(&pattern(n, (r + k) as u8)).unwrap();
            }
        }
        reader.join().unwrap();
    });
}

/// A message whose decoding panics when its value is 0.
#[derive(Debug)]
struct Bomb(u8);

impl<'de> serde::Deserialize<'de> for Bomb {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let v = u8::deserialize(d)?;
        assert!(v != 0, "a decoding that panics");
        Ok(Bomb(v))
    }
}

#[test]
fn a_receiver_that_panics_hands_the_state_to_the_next() {
    // A receiving thread panics inside `recv` (in the message's decoding) while another waits
    // for the receive state: the state comes back on unwinding and the waiter is woken.
    bounded(|| {
        let (x, mut raw) = UnixStream::pair().unwrap();
        let b: Connection<(), Bomb> = Connection::new(OwnedFd::from(x), true, true);
        let b = std::sync::Arc::new(b);
        let bomber = {
            let b = b.clone();
            std::thread::spawn(move || b.recv())
        };
        until_receiving(&b);
        let waiter = {
            let b = b.clone();
            std::thread::spawn(move || b.recv().map(|m| m.0).map_err(|e| e.to_string()))
        };
        // Let the waiter queue for the state behind the bomber.
        std::thread::sleep(std::time::Duration::from_millis(50));
        raw.write_all(&[1, 0, 0, 0, 0]).unwrap();
        assert!(bomber.join().is_err(), "the decoding panicked");
        raw.write_all(&[1, 0, 0, 0, 9]).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(9));
    });
}

#[test]
fn a_sender_stuck_mid_frame_is_disconnected_without_a_sigpipe_when_the_peer_goes() {
    // One frame (one buffer, the plain send(2) path) far larger than the socket holds; the peer
    // reads nothing and then closes. The sender must come back Disconnected, and raise no
    // SIGPIPE: blocked on this thread, one would stay pending where sigpending(2) sees it (a
    // blocked signal is queued even while it is ignored, as it is under the test harness).
    bounded(|| {
        // The bounded body has a thread of its own: no other test's mask changes.
        sys::block_sigpipe_on_this_thread();
        assert!(!sys::sigpipe_pending());
        let (a, raw) = UnixStream::pair().unwrap();
        let a = Connection::<Vec<u8>>::new(OwnedFd::from(a), true, true);
        sys::set_socket_buffers(a.as_fd(), 4096);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(100));
            drop(raw);
        });
        let err = a.send(&pattern(4 << 20, 3)).unwrap_err();
        assert!(matches!(err, SendError::Disconnected), "{err:?}");
        closer.join().unwrap();
        // And a small frame to the gone peer: one send(2) that fails at once.
        let err = a.send(&vec![1]).unwrap_err();
        assert!(matches!(err, SendError::Disconnected), "{err:?}");
        assert!(!sys::sigpipe_pending(), "a send raised SIGPIPE");
    });
}

fn yielded() -> u32 {
    io::YIELDED.with(|y| y.get())
}

#[test]
fn try_recv_and_a_zero_poll_look_without_yielding() {
    bounded(|| {
        let (a, b) = pipe::<u8>().unwrap();
        let before = yielded();
        assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
        assert!(!b.poll(Some(Duration::ZERO)).unwrap());
        let mut buf = [0u8; 8];
        assert!(!b.ready_now());
        assert_eq!(
            yielded(),
            before,
            "a call that only looks must not give the CPU away"
        );
        a.send(&7).unwrap();
        assert_eq!(b.try_recv().unwrap(), 7);
        a.send_bytes(&[1, 2]).unwrap();
        assert_eq!(b.recv_bytes_into(&mut buf).unwrap(), 2);
    });
}

#[test]
fn a_timed_receive_yields_a_bounded_number_of_times_and_still_times_out() {
    bounded(|| {
        let (_a, b) = pipe::<u8>().unwrap();
        let before = yielded();
        let timeout = Duration::from_millis(20);
        let start = Instant::now();
        assert!(matches!(
            b.recv_timeout(timeout),
            Err(RecvTimeoutError::Timeout)
        ));
        assert!(start.elapsed() >= timeout, "gave up before the deadline");
        let n = yielded() - before;
        assert!(n <= io::YIELDS, "{n} yields before one sleep");
        // A deadline already past: no yield at all.
        let before = yielded();
        let past = Instant::now() - Duration::from_millis(1);
        assert!(matches!(
            b.recv_deadline(past),
            Err(RecvTimeoutError::Timeout)
        ));
        assert_eq!(yielded(), before);
    });
}

#[test]
fn a_peer_that_goes_while_we_yield_is_disconnected_not_a_hang() {
    bounded(|| {
        // The peer sends and closes while the receiver is between its yields, its sleep, or
        // before either: every receive form must see the message, then the end.
        for round in 0..300u32 {
            let (a, b) = pipe::<u32>().unwrap();
            let peer = std::thread::spawn(move || {
                for _ in 0..round % 4 {
                    std::thread::yield_now();
                }
                a.send(&round).unwrap();
                drop(a);
            });
            match round % 3 {
                0 => {
                    assert_eq!(b.recv().unwrap(), round);
                    assert!(matches!(b.recv(), Err(RecvError::Disconnected)));
                }
                1 => {
                    let long = Duration::from_secs(30);
                    assert_eq!(b.recv_timeout(long).unwrap(), round);
                    assert!(matches!(
                        b.recv_timeout(long),
                        Err(RecvTimeoutError::Disconnected)
                    ));
                }
                _ => {
                    assert!(b.poll(None).unwrap());
                    assert_eq!(b.recv_bytes().unwrap(), codec::encode(&round).unwrap());
                    assert!(matches!(b.recv_bytes(), Err(RecvError::Disconnected)));
                }
            }
            peer.join().unwrap();
        }
    });
}

#[test]
fn a_receive_on_a_descriptor_the_user_made_non_blocking_yields_a_bounded_number_of_times() {
    use std::os::fd::AsFd;
    bounded(|| {
        // Made non-blocking through `AsFd`: the read meant to sleep returns EAGAIN at once;
        // the receive must then sleep in poll(2), not yield (or spin) until the sender comes.
        let (a, b) = pipe::<u32>().unwrap();
        sys::set_nonblocking(b.as_fd()).unwrap();
        let peer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            a.send(&5).unwrap();
            a
        });
        let before = yielded();
        assert_eq!(b.recv().unwrap(), 5);
        let n = yielded() - before;
        assert!(n <= io::YIELDS, "{n} yields in one receive");
        let a = peer.join().unwrap();
        // Timed, on the same descriptor: a timeout, then a late message, then the end.
        assert!(matches!(
            b.recv_timeout(Duration::from_millis(5)),
            Err(RecvTimeoutError::Timeout)
        ));
        assert!(matches!(b.try_recv(), Err(TryRecvError::Empty)));
        drop(a);
        assert!(matches!(b.recv(), Err(RecvError::Disconnected)));
    });
}
