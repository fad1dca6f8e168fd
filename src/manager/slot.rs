//! The local fast path: a request/response slot in shared memory, one per connection.
//!
//! After authentication, a client on a Unix socket (whose uid the server checked) asks for a
//! slot; the server creates an anonymous, size-sealed segment and hands it over as a descriptor
//! (`SCM_RIGHTS`) in an authenticated reply. From then on requests and replies are copied
//! through the segment, and the socket only tells each side whether the other is still there.
//! The segment is of its own kind, checked with its size when the client opens it; its state is
//! a [`SlotState`] at the start (laid out as a Rust type, as `Semaphore`'s and `Event`'s are, so
//! that it builds under loom too), and the chunk's bytes follow, copied as 8-byte words:
//!
//! - The slot belongs to one side at a time. `turn`, the futex word of a [`WaitWord`], counts
//!   hand-overs: even, the client's; odd, the server's. Each side keeps its own count and
//!   accepts only `mine + 1` from the peer, so a scribbled `turn` is an error, never a misread.
//! - A message is copied in chunks of at most [`SLOT_DATA`] bytes, each with a header word
//!   (its length, and whether more follow); the receiver hands the slot back to ask for the next.
//! - A side hands over by storing the next count with a read-modify-write and
//!   [`WaitWord::wake_all`]; a side that waits for its turn spins briefly, then sleeps on `turn`
//!   through [`WaitWord::sleep`] (the crate's one futex protocol).
//! - The spin is bounded ([`SPIN`]) and only tried where it can win: never when the two sides'
//!   CPU masks leave them one CPU between them (each side publishes its mask, a hint), and, after
//!   a spin that ended in a sleep anyway, not again for a number of waits that doubles with every
//!   miss in a row (a peer on a busy machine, or asleep, answers slower than a spin lasts).
//! - A peer that dies cannot wake anyone, so every sleep has a deadline: a tick that starts at
//!   [`TICK_FIRST`] and doubles up to [`TICK_MAX`]. At each tick the sleeper polls the socket,
//!   which carries nothing while the slot is in use: readable means the peer closed it (or broke
//!   the protocol), and the wait ends with an error. Nothing waits forever on the memory alone.
//!
//! The memory is reachable only through the two processes' descriptors, so whoever can write
//! it could read the key from either process's memory anyway (docs/reliability.md): the slot's
//! messages carry no MAC. Everything read from the slot is checked (turn, lengths, the size
//! limit) and then decoded like a frame, so garbage gives a typed error; a scribbled sleeper
//! count or CPU mask only costs time (a wake found at the next tick, a spin in vain).

use crate::atomic::Ordering;
use std::io;
use std::os::fd::BorrowedFd;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use crate::handles::shared_handle;
use crate::shm::{Kind, Shared};
use crate::sync::wait_word::{Slept, WaitWord};

/// Bytes of message per chunk.
pub(crate) const SLOT_DATA: usize = 64 << 10;
/// In the header word: more chunks of this message follow.
const MORE: u64 = 1 << 63;

/// The words of a slot, at the start of its segment's data; the chunk's bytes follow at
/// [`DATA_OFFSET`]. A `WaitWord` is the crate's atomics (the model's under loom), so the
/// state is laid out as a Rust type in the segment, as `Semaphore`'s and `Event`'s are, not
/// read as raw words.
#[repr(C)]
pub(crate) struct SlotState {
    /// Counts the hand-overs (see the module docs): the futex word of a [`WaitWord`].
    turn: WaitWord,
    /// Each side's published CPU mask, indexed by [`Side`] (0: not published yet).
    masks: [AtomicU64; 2],
    /// The chunk's length, and [`MORE`].
    header: AtomicU64,
}

impl SlotState {
    fn new() -> SlotState {
        SlotState {
            turn: WaitWord::new(0),
            masks: [AtomicU64::new(0), AtomicU64::new(0)],
            header: AtomicU64::new(0),
        }
    }
}

/// Where the chunk's bytes start, from the start of the state (its own cache lines).
const DATA_OFFSET: usize = std::mem::size_of::<SlotState>().next_multiple_of(128);
/// The bytes of a slot's segment after the state.
const EXTRA: usize = DATA_OFFSET - std::mem::size_of::<SlotState>() + SLOT_DATA;

/// A slot's segment, as the server creates it and hands it to the client (its descriptor
/// alone travels; the kind and size are checked when it is opened).
#[derive(Clone)]
pub(crate) struct SlotMemory {
    state: Shared<SlotState>,
}

impl SlotMemory {
    /// The chunk's bytes, as shared 8-byte words.
    fn data(&self) -> &[AtomicU64] {
        self.state.words_at(DATA_OFFSET, SLOT_DATA / 8)
    }
}

shared_handle!(
    /// A slot travels as its segment's descriptor alone.
    [] SlotMemory, state, (),
    |_| Ok(()),
    |fd, ()| Shared::open(fd, &[Kind::ManagerSlot], 0, EXTRA).map(|state| SlotMemory { state }),
);

/// The longest a side spins for its turn before it sleeps: a peer that is running answers a
/// small request well within it; a peer that must first be woken (tens of microseconds across
/// CPUs here) is caught by it often enough to bring two sides back to answering each other
/// without sleeping.
const SPIN: Duration = Duration::from_micros(40);
/// Checks between two looks at the clock.
const CHECKS_PER_CLOCK: u32 = 32;
/// After this many misses in a row, a side spins only once per this many waits.
const MAX_SKIP: u32 = 64;
/// A sleeping side reads the CPU masks again at least once per this many sleeps.
const REFRESH_EVERY: u32 = 64;
/// The first liveness check of a sleep, and the longest gap between two.
pub(crate) const TICK_FIRST: Duration = Duration::from_millis(2);
pub(crate) const TICK_MAX: Duration = Duration::from_millis(200);

/// Which end of the slot this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client = 0,
    Server = 1,
}

fn corrupt(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the manager's shared slot is corrupt: {what}"),
    )
}

/// Whether the peer closed its end of the socket (or wrote on it, which it never does while
/// the slot is in use): either way nobody will hand the slot back.
fn peer_gone(peer: BorrowedFd<'_>) -> bool {
    crate::sys::wait_fd(peer, crate::sys::POLLIN, Some(Instant::now())).unwrap_or(true)
}

/// When a side spins (see the module docs).
#[derive(Debug)]
struct SpinPolicy {
    /// The two sides' CPU masks hold at least two CPUs: both can run at once.
    shared_cpus: bool,
    /// Waits left before the next spin.
    skip: u32,
    /// What the next miss sets `skip` to.
    penalty: u32,
    /// Sleeps so far.
    sleeps: u32,
    /// The last wait spun in vain.
    missed: bool,
}

/// One end of a slot.
pub(crate) struct Slot {
    mem: SlotMemory,
    side: Side,
    /// The hand-overs seen so far (ours and the peer's), modulo 2^32.
    seq: u32,
    spin: SpinPolicy,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot")
            .field("side", &self.side)
            .field("seq", &self.seq)
            .field("spin", &self.spin)
            .finish()
    }
}

impl Slot {
    /// A fresh slot's segment (the server's side creates it).
    pub(crate) fn create() -> crate::Result<SlotMemory> {
        let state = Shared::create_value(Kind::ManagerSlot, 0, EXTRA, SlotState::new())?;
        Ok(SlotMemory { state })
    }

    /// One end over `mem` (the segment's kind and size were checked when it was opened).
    pub(crate) fn new(mem: SlotMemory, side: Side) -> Slot {
        let mut slot = Slot {
            mem,
            side,
            seq: 0,
            spin: SpinPolicy {
                shared_cpus: true,
                skip: 0,
                penalty: 1,
                sleeps: 0,
                missed: false,
            },
        };
        slot.refresh_cpus();
        slot
    }

    fn state(&self) -> &SlotState {
        &self.mem.state
    }

    fn turn(&self) -> &WaitWord {
        &self.state().turn
    }

    /// Stores `value` in the turn word as a scribbler would, waking nobody (tests).
    #[cfg(test)]
    pub(crate) fn scribble_turn(&self, value: u32) {
        self.turn().word().store(value, Ordering::SeqCst);
    }

    /// The segment (tests scribble on it).
    #[cfg(test)]
    pub(crate) fn memory(&self) -> &SlotMemory {
        &self.mem
    }

    /// Publishes this thread's CPU mask and decides from both sides' whether spinning can pay.
    fn refresh_cpus(&mut self) {
        let mine = crate::sys::cpu_mask();
        let masks = &self.state().masks;
        masks[self.side as usize].store(mine, Ordering::Relaxed);
        let theirs = match masks[1 - self.side as usize].load(Ordering::Relaxed) {
            0 => u64::MAX, // not published yet
            m => m,
        };
        self.spin.shared_cpus = (mine | theirs).count_ones() >= 2;
    }

    /// Gives the slot to the peer, waking it if it sleeps.
    fn hand_over(&mut self) {
        self.seq = self.seq.wrapping_add(1);
        let turn = self.turn();
        // The read-modify-write that `WaitWord::sleep`'s re-check pairs with; it also
        // releases the chunk written before it.
        turn.word().swap(self.seq, Ordering::AcqRel);
        turn.wake_all();
    }

    /// Whether the turn value `t` says the peer handed the slot back (an error if it is
    /// neither its value nor ours).
    fn mine(&self, t: u32) -> io::Result<bool> {
        if t == self.seq.wrapping_add(1) {
            Ok(true)
        } else if t == self.seq {
            Ok(false)
        } else {
            Err(corrupt("the turn counter jumped"))
        }
    }

    /// Spins for the turn, if the policy says a spin can win; true if the turn came.
    fn spin_for_turn(&mut self) -> io::Result<bool> {
        if !self.spin.shared_cpus {
            return Ok(false);
        }
        if self.spin.skip > 0 {
            self.spin.skip -= 1;
            return Ok(false);
        }
        let turn = self.turn().word();
        let until = Instant::now() + SPIN;
        let mut checks = 0u32;
        loop {
            if self.mine(turn.load(Ordering::Acquire))? {
                self.spin.penalty = 1;
                return Ok(true);
            }
            checks += 1;
            if checks.is_multiple_of(CHECKS_PER_CLOCK) && Instant::now() >= until {
                self.spin.skip = self.spin.penalty;
                self.spin.missed = true;
                self.spin.penalty = (self.spin.penalty * 2).min(MAX_SKIP);
                return Ok(false);
            }
            std::hint::spin_loop();
        }
    }

    /// Waits until the peer hands the slot back: spins (maybe), then sleeps on the turn word,
    /// checking at every tick that the peer is still there.
    fn await_turn(&mut self, peer: BorrowedFd<'_>) -> io::Result<()> {
        if self.spin_for_turn()? {
            self.seq = self.seq.wrapping_add(1);
            return Ok(());
        }
        // Look at the CPU masks again now and then (a side pinned after it connected): after
        // a spin in vain, and every so many sleeps.
        self.spin.sleeps = self.spin.sleeps.wrapping_add(1);
        if std::mem::take(&mut self.spin.missed) || self.spin.sleeps.is_multiple_of(REFRESH_EVERY) {
            self.refresh_cpus();
        }
        // The next look at the socket, kept across sleeps: a sleep ends at a futex slice
        // (reported as a wake) sooner than a long tick, and must not push the look back.
        let mut tick = TICK_FIRST;
        let mut check = Instant::now() + tick;
        loop {
            let mut ended = None;
            let slept = self.turn().sleep(Some(check), |w| {
                let t = w.fetch_add(0, Ordering::AcqRel);
                match self.mine(t) {
                    Ok(false) => Some(t),
                    other => {
                        ended = Some(other);
                        None
                    }
                }
            });
            match ended {
                Some(Ok(_)) => break,
                Some(Err(e)) => return Err(e),
                None => {}
            }
            if slept == Slept::TimedOut || Instant::now() >= check {
                // A peer may hand the turn over and then go (a last reply, then exit): the
                // turn is looked at once more after the socket says it is gone.
                if peer_gone(peer) && !self.mine(self.turn().word().load(Ordering::Acquire))? {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the other end of the manager's connection is gone",
                    ));
                }
                tick = (tick * 2).min(TICK_MAX);
                check = Instant::now() + tick;
            }
        }
        self.seq = self.seq.wrapping_add(1);
        Ok(())
    }

    /// Sends one message (the slot must be ours: before the first request, or after a recv).
    pub(crate) fn send(&mut self, msg: &[u8], peer: BorrowedFd<'_>) -> io::Result<()> {
        let mut rest = msg;
        loop {
            let n = rest.len().min(SLOT_DATA);
            let (chunk, after) = rest.split_at(n);
            crate::shm::write_words(self.mem.data(), chunk);
            let more = if after.is_empty() { 0 } else { MORE };
            self.state()
                .header
                .store(n as u64 | more, Ordering::Relaxed);
            self.hand_over();
            if after.is_empty() {
                return Ok(());
            }
            self.await_turn(peer)?;
            rest = after;
        }
    }

    /// Hands over a chunk with any header a scribbler likes (tests of the server's checks).
    #[cfg(test)]
    pub(crate) fn send_raw(&mut self, header: u64, data: &[u8]) {
        crate::shm::write_words(self.mem.data(), &data[..data.len().min(SLOT_DATA)]);
        self.state().header.store(header, Ordering::Relaxed);
        self.hand_over();
    }

    /// Waits for the receiver to ask for the next chunk (tests).
    #[cfg(test)]
    pub(crate) fn recv_ack(&mut self, peer: BorrowedFd<'_>) -> io::Result<()> {
        self.await_turn(peer)
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
        peer: BorrowedFd<'_>,
    ) -> io::Result<()> {
        buf.clear();
        loop {
            self.await_turn(peer)?;
            let header = self.state().header.load(Ordering::Relaxed);
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
            crate::shm::read_words(self.mem.data(), &mut buf[at..]);
            if header & MORE == 0 {
                return Ok(());
            }
            self.hand_over();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixStream;
    use std::thread;

    use super::*;

    /// Two ends of one slot, each with its end of a socket pair (the liveness channel).
    fn pair() -> ((Slot, UnixStream), (Slot, UnixStream)) {
        let shm = Slot::create().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        (
            (Slot::new(shm.clone(), Side::Client), a),
            (Slot::new(shm, Side::Server), b),
        )
    }

    #[test]
    fn messages_of_every_size_go_both_ways_with_sleeps_between() {
        let ((mut c, cs), (mut s, ss)) = pair();
        let server = thread::spawn(move || {
            let mut buf = Vec::new();
            for i in 0..6 {
                s.recv(&mut buf, 1 << 20, ss.as_fd()).unwrap();
                if i % 2 == 1 {
                    // Let the client fall asleep on the turn word.
                    thread::sleep(Duration::from_millis(5));
                }
                buf.reverse();
                s.send(&buf, ss.as_fd()).unwrap();
            }
        });
        let mut buf = Vec::new();
        for (i, len) in [0usize, 1, 100, SLOT_DATA, SLOT_DATA + 1, 3 * SLOT_DATA + 7]
            .into_iter()
            .enumerate()
        {
            if i == 4 {
                // Let the server fall asleep on the turn word.
                thread::sleep(Duration::from_millis(5));
            }
            let msg: Vec<u8> = (0..len).map(|j| (j * 7 + i) as u8).collect();
            c.send(&msg, cs.as_fd()).unwrap();
            c.recv(&mut buf, 1 << 20, cs.as_fd()).unwrap();
            let mut want = msg.clone();
            want.reverse();
            assert_eq!(buf, want, "message {i} of {len} bytes");
        }
        server.join().unwrap();
    }

    #[test]
    fn a_last_reply_from_a_peer_that_then_goes_is_received() {
        // The peer hands its reply over and closes its socket at once, about when the waiter's
        // first liveness check is due: the waiter finds the socket gone, and must still take
        // the reply that came first.
        for round in 0..150u32 {
            let ((mut c, cs), (mut s, ss)) = pair();
            let server = thread::spawn(move || {
                let mut buf = Vec::new();
                s.recv(&mut buf, 1 << 10, ss.as_fd()).unwrap();
                // Around TICK_FIRST, a little earlier or later from round to round.
                thread::sleep(TICK_FIRST + Duration::from_micros(u64::from(round % 30) * 20));
                s.send(&buf, ss.as_fd()).unwrap();
                drop(ss);
            });
            let mut buf = Vec::new();
            c.send(&round.to_le_bytes(), cs.as_fd()).unwrap();
            c.recv(&mut buf, 1 << 10, cs.as_fd())
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(buf, round.to_le_bytes());
            server.join().unwrap();
        }
    }

    #[test]
    fn many_round_trips_between_threads_lose_no_wake() {
        // Both sides alternate between spinning and sleeping (the policy backs off after
        // misses); every hand-over must still be seen.
        let ((mut c, cs), (mut s, ss)) = pair();
        let server = thread::spawn(move || {
            let mut buf = Vec::new();
            while s.recv(&mut buf, 1 << 10, ss.as_fd()).is_ok() {
                if buf.is_empty() {
                    return;
                }
                buf[0] = buf[0].wrapping_add(1);
                s.send(&buf, ss.as_fd()).unwrap();
            }
        });
        let mut buf = Vec::new();
        for i in 0..20_000u32 {
            if i % 5_000 == 0 {
                thread::sleep(Duration::from_millis(1));
            }
            c.send(&i.to_le_bytes(), cs.as_fd()).unwrap();
            c.recv(&mut buf, 1 << 10, cs.as_fd()).unwrap();
            let mut want = i.to_le_bytes();
            want[0] = want[0].wrapping_add(1);
            assert_eq!(buf, want);
        }
        c.send(&[], cs.as_fd()).unwrap();
        server.join().unwrap();
    }

    #[test]
    fn a_scribbled_turn_or_length_is_an_error_not_a_misread() {
        let ((mut c, cs), (mut s, ss)) = pair();
        c.send(b"hello", cs.as_fd()).unwrap();
        // The peer scribbles the length past the slot.
        c.state()
            .header
            .store(SLOT_DATA as u64 + 1, Ordering::SeqCst);
        let mut buf = Vec::new();
        let e = s.recv(&mut buf, 1 << 20, ss.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        let ((mut c, cs), (mut s, ss)) = pair();
        c.send(b"hello", cs.as_fd()).unwrap();
        c.scribble_turn(u32::MAX);
        let e = s.recv(&mut buf, 1 << 20, ss.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");

        // A message above the receiver's limit, in chunks, is refused before it is all read.
        let ((mut c, cs), (mut s, ss)) = pair();
        let sender = thread::spawn(move || {
            let r = c.send(&vec![0u8; 3 * SLOT_DATA], cs.as_fd());
            drop(cs);
            r
        });
        let e = s.recv(&mut buf, SLOT_DATA + 10, ss.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        assert!(buf.len() <= SLOT_DATA);
        drop(ss);
        assert!(sender.join().unwrap().is_err());
    }

    #[test]
    fn a_turn_scribbled_while_the_peer_sleeps_ends_its_wait() {
        // The sleeper is not woken by the scribbler (it does not know the protocol): the
        // re-check at a tick finds the jump.
        let ((c, _cs), (mut s, ss)) = pair();
        let server = thread::spawn(move || {
            let mut buf = Vec::new();
            s.recv(&mut buf, 1 << 20, ss.as_fd())
        });
        thread::sleep(Duration::from_millis(20));
        c.scribble_turn(77);
        let e = server.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }

    #[test]
    fn a_dead_peer_ends_the_wait() {
        // The server dies without a reply: asleep on the futex, the client finds the socket
        // closed at its next tick.
        let ((mut c, cs), (s, ss)) = pair();
        c.send(b"anyone?", cs.as_fd()).unwrap();
        drop((s, ss));
        let mut buf = Vec::new();
        let e = c.recv(&mut buf, 1024, cs.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);

        // Also when it dies while the client already sleeps.
        let ((mut c, cs), (s, ss)) = pair();
        c.send(b"anyone?", cs.as_fd()).unwrap();
        let killer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(30));
            drop((s, ss));
        });
        let e = c.recv(&mut buf, 1024, cs.as_fd()).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        killer.join().unwrap();
    }

    #[test]
    fn a_peer_that_dies_after_a_long_wait_still_ends_it() {
        // Past the ticks shorter than a futex slice (2 + 4 + ... + 64 ms): the wait used to
        // renew its tick's deadline at every slice and so never looked at the socket again.
        let ((mut c, cs), (s, ss)) = pair();
        c.send(b"anyone?", cs.as_fd()).unwrap();
        let killer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(600));
            drop((s, ss));
        });
        let (tx, rx) = std::sync::mpsc::channel();
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = tx.send(c.recv(&mut buf, 1024, cs.as_fd()).map_err(|e| e.kind()));
        });
        let got = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("the wait did not end after the peer died");
        assert_eq!(got, Err(io::ErrorKind::UnexpectedEof));
        killer.join().unwrap();
    }

    #[test]
    fn one_cpu_between_the_two_sides_means_no_spin_and_misses_back_off() {
        thread::spawn(|| {
            let cpu = crate::sys::cpu_mask().trailing_zeros() as usize;
            let mut set = rustix::thread::CpuSet::new();
            set.set(cpu);
            rustix::thread::sched_setaffinity(None, &set).unwrap();
            let ((mut c, _cs), (_s, _ss)) = pair();
            c.state().masks[Side::Server as usize].store(1 << cpu, Ordering::Relaxed);
            c.refresh_cpus();
            assert!(!c.spin.shared_cpus, "{:?}", c.spin);
            assert!(!c.spin_for_turn().unwrap());
            assert_eq!((c.spin.skip, c.spin.penalty), (0, 1), "no spin, no penalty");

            // The peer on another CPU: spinning can pay, and each miss in a row skips twice
            // as many waits, up to MAX_SKIP.
            c.state().masks[Side::Server as usize].store(1 << ((cpu + 1) % 64), Ordering::Relaxed);
            c.refresh_cpus();
            assert!(c.spin.shared_cpus);
            let mut skips = Vec::new();
            for _ in 0..8 {
                assert!(!c.spin_for_turn().unwrap()); // a miss: nobody hands over
                skips.push(c.spin.skip);
                while c.spin.skip > 0 {
                    assert!(!c.spin_for_turn().unwrap()); // skipped
                }
            }
            assert_eq!(skips, [1, 2, 4, 8, 16, 32, 64, 64]);
        })
        .join()
        .unwrap();
    }

    /// Sends `value`'s descriptor and opens it as a slot, as the client does with the server's.
    fn open_as_slot<T: serde::Serialize>(value: &T) -> crate::Result<SlotMemory> {
        let (bytes, fds, _) = crate::handles::encode_with_handles(value).unwrap();
        crate::handles::with_incoming(fds, || crate::codec::decode::<SlotMemory>(&bytes))
            .map_err(|e| crate::Error::new(crate::ErrorKind::Codec, e.to_string()))
    }

    #[test]
    fn a_segment_of_another_kind_or_too_small_is_refused() {
        let mem = Slot::create().unwrap();
        assert!(open_as_slot(&mem).is_ok());
        // Plain shared memory of the slot's size.
        let plain = crate::SharedMemory::new(2 * SLOT_DATA).unwrap();
        assert!(open_as_slot(&plain).is_err());
        // A slot's kind with no room for the data.
        let small = SlotMemory {
            state: Shared::create_value(Kind::ManagerSlot, 0, 0, SlotState::new()).unwrap(),
        };
        assert!(open_as_slot(&small).is_err());
    }
}
