//! The local fast path: a request/response slot in shared memory, one per connection.
//!
//! After authentication, a client on a Unix socket (whose uid the server checked) asks for a
//! slot; the server creates an anonymous, size-sealed segment and hands it over as a descriptor
//! (`SCM_RIGHTS`) in an authenticated reply. From then on requests and replies are copied
//! through the segment, and the socket stays as the doorbell and the liveness channel:
//!
//! - The slot belongs to one side at a time. `turn` counts hand-overs: even, the client's;
//!   odd, the server's. Each side keeps its own count and accepts only `mine + 1` from the
//!   peer, so a scribbled `turn` is an error, never a misread.
//! - A message is copied in chunks of at most [`SLOT_DATA`] bytes, each with a header word
//!   (its length, and whether more follow); the receiver hands the slot back to ask for the next.
//! - A side that waits for its turn spins for a while (yielding the CPU), then sleeps on the
//!   socket: it raises its `sleeping` word and reads a frame. A side that hands over clears the
//!   peer's `sleeping` word with a compare-and-swap and, if it did, rings: an empty
//!   authenticated frame. Whoever wins that swap decides whether a ring is sent, so every
//!   ring is read exactly once, and the socket carries nothing else while a request is served
//!   (the server's check that a waiting client is still there relies on it).
//! - A peer that dies ends the socket: a side that sleeps wakes with end of stream, a side that
//!   spins sleeps after its spin. Nothing waits forever on the memory alone.
//!
//! The memory is reachable only through the two processes' descriptors, so whoever can write
//! it could read the key from either process's memory anyway (docs/reliability.md): the slot's
//! messages carry no MAC. Everything read from the slot is checked (turn, lengths, the size
//! limit) and then decoded like a frame, so garbage gives a typed error.

use crate::atomic::Ordering;
use std::io::{self, Read};
use std::time::{Duration, Instant};

use super::auth::{Session, Stream};
use crate::shm::SharedMemory;

/// Bytes of message per chunk.
pub(crate) const SLOT_DATA: usize = 64 << 10;
/// Where the chunk's bytes start (the words before it are each on a cache line of their own).
const DATA_OFFSET: usize = 256;
/// The size of a slot's segment.
pub(crate) const SLOT_LEN: usize = DATA_OFFSET + SLOT_DATA;

/// Word indices (8-byte words) of the control block.
const TURN: usize = 0;
const SLEEPING: [usize; 2] = [8, 16];
const HEADER: usize = 24;
/// In the header word: more chunks of this message follow.
const MORE: u64 = 1 << 63;

/// How long a side spins for its turn before it sleeps on the socket.
const SPIN: Duration = Duration::from_micros(50);
/// How long the spin keeps its CPU (a peer on the other CPU answers within it) before it
/// starts yielding (so that a peer on the same CPU can run).
const BUSY: Duration = Duration::from_micros(3);
/// At most this many yields: on a loaded machine one yield can give the CPU away for a whole
/// time slice, and sleeping on the socket is then faster (a woken thread runs soon).
const YIELDS: u32 = 2;
/// Checks between two looks at the clock.
const CHECKS_PER_CLOCK: u32 = 32;

/// Which end of the slot this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client = 0,
    Server = 1,
}

/// The socket's part in the slot protocol.
pub(crate) trait Bell {
    /// Wakes the peer (it sleeps on the socket).
    fn ring(&mut self) -> io::Result<()>;
    /// Sleeps until the peer rings; an error at end of stream or for any other frame.
    fn wait(&mut self) -> io::Result<()>;
}

/// The bell of a manager connection: a ring is an empty authenticated frame.
pub(crate) struct SocketBell<'a, R> {
    pub(crate) session: &'a mut Session,
    pub(crate) reader: &'a mut R,
    pub(crate) stream: &'a Stream,
    pub(crate) scratch: &'a mut Vec<u8>,
}

impl<R: Read> Bell for SocketBell<'_, R> {
    fn ring(&mut self) -> io::Result<()> {
        self.session.send(&mut &*self.stream, &[])
    }

    fn wait(&mut self) -> io::Result<()> {
        self.session.recv(self.reader, self.scratch)?;
        if self.scratch.is_empty() {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "a message on the socket of a connection that uses a shared slot",
            ))
        }
    }
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the manager's shared slot is corrupt: {what}"),
    )
}

/// One end of a slot.
pub(crate) struct Slot {
    shm: SharedMemory,
    side: Side,
    /// The hand-overs seen so far (ours and the peer's).
    seq: u64,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("side", &self.side)
            .field("seq", &self.seq)
            .finish()
    }
}

impl Slot {
    /// A fresh slot's segment (the server's side creates it).
    pub(crate) fn create() -> crate::Result<SharedMemory> {
        SharedMemory::new(SLOT_LEN)
    }

    /// One end over `shm`, which must be an anonymous segment of at least [`SLOT_LEN`] bytes.
    pub(crate) fn new(shm: SharedMemory, side: Side) -> io::Result<Slot> {
        if shm.len() < SLOT_LEN || shm.name().is_some() {
            return Err(corrupt("the segment is named or too small"));
        }
        Ok(Slot { shm, side, seq: 0 })
    }

    /// The segment (tests scribble on it).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> &SharedMemory {
        &self.shm
    }

    fn word(&self, i: usize) -> &std::sync::atomic::AtomicU64 {
        &self.shm.atomic_u64s()[i]
    }

    fn peer(&self) -> usize {
        1 - self.side as usize
    }

    /// Gives the slot to the peer, waking it if it sleeps.
    fn hand_over(&mut self, bell: &mut dyn Bell) -> io::Result<()> {
        self.seq += 1;
        self.word(TURN).store(self.seq, Ordering::SeqCst);
        let theirs = self.word(SLEEPING[self.peer()]);
        if theirs
            .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
        {
            bell.ring()?;
        }
        Ok(())
    }

    /// Whether the peer handed the slot back (an error if `turn` is neither its value nor ours).
    fn mine(&self) -> io::Result<bool> {
        match self.word(TURN).load(Ordering::SeqCst) {
            t if t == self.seq + 1 => Ok(true),
            t if t == self.seq => Ok(false),
            _ => Err(corrupt("the turn counter jumped")),
        }
    }

    /// Waits until the peer hands the slot back: spins, then sleeps on the socket.
    fn await_turn(&mut self, bell: &mut dyn Bell) -> io::Result<()> {
        let start = Instant::now();
        let mut checks = 0u32;
        let mut yields = 0u32;
        loop {
            if self.mine()? {
                self.seq += 1;
                return Ok(());
            }
            checks += 1;
            if !checks.is_multiple_of(CHECKS_PER_CLOCK) {
                std::hint::spin_loop();
                continue;
            }
            let spent = start.elapsed();
            if spent >= SPIN || yields >= YIELDS {
                break;
            }
            if spent >= BUSY {
                yields += 1;
                std::thread::yield_now();
            }
        }
        let flag = self.word(SLEEPING[self.side as usize]);
        loop {
            flag.store(1, Ordering::SeqCst);
            if self.mine()? {
                if flag
                    .compare_exchange(1, 0, Ordering::SeqCst, Ordering::SeqCst)
                    .is_err()
                {
                    // The peer cleared it first: its ring is on the way, and is ours to read.
                    bell.wait()?;
                }
                self.seq += 1;
                return Ok(());
            }
            bell.wait()?;
            if self.mine()? {
                self.seq += 1;
                return Ok(());
            }
            // A ring without a hand-over (only a misbehaving peer sends one): sleep again.
        }
    }

    /// Sends one message (the slot must be ours: before the first request, or after a recv).
    pub(crate) fn send(&mut self, msg: &[u8], bell: &mut dyn Bell) -> io::Result<()> {
        let mut rest = msg;
        loop {
            let n = rest.len().min(SLOT_DATA);
            let (chunk, after) = rest.split_at(n);
            self.shm.write_at(DATA_OFFSET, chunk);
            let more = if after.is_empty() { 0 } else { MORE };
            self.word(HEADER).store(n as u64 | more, Ordering::Relaxed);
            self.hand_over(bell)?;
            if after.is_empty() {
                return Ok(());
            }
            self.await_turn(bell)?;
            rest = after;
        }
    }

    /// Hands over a chunk with any header a scribbler likes (tests of the server's checks).
    #[cfg(test)]
    pub(crate) fn send_raw(&mut self, header: u64, data: &[u8], bell: &mut dyn Bell) {
        self.shm
            .write_at(DATA_OFFSET, &data[..data.len().min(SLOT_DATA)]);
        self.word(HEADER).store(header, Ordering::Relaxed);
        let _ = self.hand_over(bell);
    }

    /// Waits for the receiver to ask for the next chunk (tests).
    #[cfg(test)]
    pub(crate) fn recv_ack(&mut self, bell: &mut dyn Bell) -> io::Result<()> {
        self.await_turn(bell)
    }

    /// The header of a chunk of `n` bytes, with more to follow or not (tests).
    #[cfg(test)]
    pub(crate) fn header(n: usize, more: bool) -> u64 {
        n as u64 | if more { MORE } else { 0 }
    }

    /// Receives one message of at most `max` bytes into `buf`.
    pub(crate) fn recv(
        &mut self,
        buf: &mut Vec<u8>,
        max: usize,
        bell: &mut dyn Bell,
    ) -> io::Result<()> {
        buf.clear();
        loop {
            self.await_turn(bell)?;
            let header = self.word(HEADER).load(Ordering::Relaxed);
            let n = usize::try_from(header & !MORE).unwrap_or(usize::MAX);
            if n > SLOT_DATA {
                return Err(corrupt("a chunk is longer than the slot"));
            }
            if buf.len() + n > max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("a message above the limit of {max} bytes"),
                ));
            }
            let at = buf.len();
            buf.resize(at + n, 0);
            self.shm.read_at(DATA_OFFSET, &mut buf[at..]);
            if header & MORE == 0 {
                return Ok(());
            }
            self.hand_over(bell)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::thread;

    use super::*;

    /// A bell of one byte per ring on a socket pair (the manager's rings are frames).
    struct ByteBell(UnixStream);

    impl Bell for ByteBell {
        fn ring(&mut self) -> io::Result<()> {
            self.0.write_all(&[1])
        }
        fn wait(&mut self) -> io::Result<()> {
            let mut b = [0u8; 1];
            match self.0.read(&mut b)? {
                0 => Err(io::ErrorKind::UnexpectedEof.into()),
                _ => Ok(()),
            }
        }
    }

    fn pair() -> ((Slot, ByteBell), (Slot, ByteBell)) {
        let shm = Slot::create().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        (
            (Slot::new(shm.clone(), Side::Client).unwrap(), ByteBell(a)),
            (Slot::new(shm, Side::Server).unwrap(), ByteBell(b)),
        )
    }

    #[test]
    fn messages_of_every_size_go_both_ways_with_sleeps_between() {
        let ((mut c, mut cb), (mut s, mut sb)) = pair();
        let server = thread::spawn(move || {
            let mut buf = Vec::new();
            for i in 0..6 {
                s.recv(&mut buf, 1 << 20, &mut sb).unwrap();
                if i % 2 == 1 {
                    // Let the client fall asleep on the socket.
                    thread::sleep(Duration::from_millis(5));
                }
                buf.reverse();
                s.send(&buf, &mut sb).unwrap();
            }
        });
        let mut buf = Vec::new();
        for (i, len) in [0usize, 1, 100, SLOT_DATA, SLOT_DATA + 1, 3 * SLOT_DATA + 7]
            .into_iter()
            .enumerate()
        {
            if i == 4 {
                // Let the server fall asleep on the socket.
                thread::sleep(Duration::from_millis(5));
            }
            let msg: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            c.send(&msg, &mut cb).unwrap();
            c.recv(&mut buf, 1 << 20, &mut cb).unwrap();
            let mut want = msg.clone();
            want.reverse();
            assert_eq!(buf, want, "message {i} of {len} bytes");
        }
        server.join().unwrap();
    }

    #[test]
    fn a_scribbled_turn_or_length_is_an_error_not_a_misread() {
        let ((mut c, mut cb), (mut s, mut sb)) = pair();
        c.send(b"hello", &mut cb).unwrap();
        // The peer scribbles the length past the slot.
        c.shm.atomic_u64s()[HEADER].store(SLOT_DATA as u64 + 1, Ordering::SeqCst);
        let mut buf = Vec::new();
        let e = s.recv(&mut buf, 1 << 20, &mut sb).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        let ((mut c, mut cb), (mut s, mut sb)) = pair();
        c.send(b"hello", &mut cb).unwrap();
        c.shm.atomic_u64s()[TURN].store(u64::MAX, Ordering::SeqCst);
        let e = s.recv(&mut buf, 1 << 20, &mut sb).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        // A message above the receiver's limit, in chunks, is refused before it is all read.
        let ((mut c, mut cb), (mut s, mut sb)) = pair();
        let sender = thread::spawn(move || {
            let r = c.send(&vec![0u8; 3 * SLOT_DATA], &mut cb);
            drop(cb);
            r
        });
        let e = s.recv(&mut buf, SLOT_DATA + 10, &mut sb).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(buf.len() <= SLOT_DATA);
        drop(sb);
        assert!(sender.join().unwrap().is_err());
    }

    #[test]
    fn a_dead_peer_ends_the_wait() {
        let ((mut c, mut cb), (s, sb)) = pair();
        c.send(b"anyone?", &mut cb).unwrap();
        drop((s, sb)); // the server dies without a reply
        let mut buf = Vec::new();
        let e = c.recv(&mut buf, 1024, &mut cb).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn a_named_or_small_segment_is_refused() {
        assert!(Slot::new(SharedMemory::new(64).unwrap(), Side::Client).is_err());
    }
}
