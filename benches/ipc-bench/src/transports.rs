//! What each transport does in the child process and in the parent.
//!
//! Each measurement is a [`Session`]: one child serves every repetition of it, the warm-up
//! included, so that both sides are warm (rings and buffers faulted in, allocator settled) when
//! the timed repetitions run, and several sessions can stay open at once, so that their
//! repetitions alternate (see `main.rs`). For each repetition the child raises `ready`; the
//! parent writes the message count, starts the clock and raises `go`; the child runs, the parent
//! receives and stops the clock. Between repetitions a child sleeps on `go`.
//! The payload is the same bytes for every transport ([`payload`]); the receiver checks the
//! length and 18 sampled bytes of every message ([`check`]).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use multiproc::{Connection, Event, Process, Queue, Semaphore, SharedMemory, Value};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

/// Byte `i` of every payload.
pub fn byte_at(i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7) & 0xFF) as u8
}

pub fn payload(size: usize) -> Vec<u8> {
    (0..size).map(byte_at).collect()
}

/// A buffer whose pages are already faulted in (a fresh page costs ~1.5 µs to touch).
pub fn touched(size: usize) -> Vec<u8> {
    vec![1u8; size]
}

/// Checks the length and 18 bytes spread over the message.
pub fn check(buf: &[u8], size: usize) {
    assert_eq!(buf.len(), size, "a message of the wrong length arrived");
    if size > 0 {
        for k in 0..18 {
            let i = (size - 1) * k / 17;
            assert_eq!(
                buf[i],
                byte_at(i),
                "byte {i} of a {size}-byte message differs"
            );
        }
    }
}

#[path = "../../common/affinity.rs"]
#[allow(dead_code)]
mod affinity;
pub use affinity::{num_cpus, pin};

/// What a measurement times.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// The child sends `n` messages; the parent receives them.
    Throughput,
    /// The parent sends, the child sends back, `n` times.
    RoundTrip,
}

/// What every child gets besides its transport.
#[derive(Serialize, Deserialize)]
pub struct Common {
    pub size: usize,
    pub cpu: Option<usize>,
    pub mode: Mode,
    pub n: Value<u64>,
    pub ready: Event,
    pub go: Event,
}

impl Common {
    fn new(size: usize, cpu: Option<usize>, mode: Mode) -> Common {
        Common {
            size,
            cpu,
            mode,
            n: Value::new(0).expect("value"),
            ready: Event::new().expect("event"),
            go: Event::new().expect("event"),
        }
    }

    /// Handles are clones: the child and the parent share the value and the events.
    fn share(&self) -> Common {
        Common {
            size: self.size,
            cpu: self.cpu,
            mode: self.mode,
            n: self.n.clone(),
            ready: self.ready.clone(),
            go: self.go.clone(),
        }
    }

    /// The child's loop: `body(n)` for each repetition, until `n` is 0.
    fn serve(&self, mut body: impl FnMut(u64)) {
        pin(self.cpu);
        loop {
            self.ready.set();
            self.go.wait();
            self.go.clear();
            let n = self.n.get().unwrap();
            if n == 0 {
                return;
            }
            body(n);
        }
    }
}

/// One repetition: its message count, the time the parent measured, and for round trips
/// each one (ns).
pub struct Rep {
    pub n: u64,
    pub elapsed: Duration,
    pub samples: Vec<u64>,
}

/// Asked before each repetition with the previous one; answers the next count, or `None`.
pub type Next<'a> = &'a mut dyn FnMut(Option<&Rep>) -> Option<u64>;

pub type Cpus = (Option<usize>, Option<usize>);

/// The parent's side of one repetition: receive (or send and receive) `n` messages, pushing the
/// round trips' times into the vector.
type Body = Box<dyn FnMut(u64, &mut Vec<u64>)>;

/// A child serving one measurement, and the parent's side of it, for as many repetitions as
/// asked. Dropped without [`finish`](Self::finish), the child is killed.
pub struct Session {
    process: Process<()>,
    common: Common,
    parent_cpu: Option<usize>,
    body: Body,
}

impl Session {
    /// Starts `child` with `arg`; `body` is the parent's side of a repetition.
    fn start<A: Serialize + for<'de> Deserialize<'de>>(
        child: fn(A),
        arg: A,
        common: Common,
        parent_cpu: Option<usize>,
        body: impl FnMut(u64, &mut Vec<u64>) + 'static,
    ) -> Session {
        let mut process = Process::new(child, arg).with_daemon(true);
        process.start().expect("start a child");
        Session {
            process,
            common,
            parent_cpu,
            body: Box::new(body),
        }
    }

    fn wait_ready(&self) {
        assert!(
            self.common
                .ready
                .wait_timeout(Duration::from_secs(120))
                .is_ok(),
            "a benchmark child stopped answering"
        );
        self.common.ready.clear();
    }

    /// One repetition of `n` messages, timed.
    pub fn rep(&mut self, n: u64) -> Rep {
        assert!(n > 0, "a repetition moves at least one message");
        self.wait_ready();
        self.common.n.set(n).unwrap();
        pin(self.parent_cpu);
        let mut samples = Vec::new();
        let t = Instant::now();
        self.common.go.set();
        (self.body)(n, &mut samples);
        let elapsed = t.elapsed();
        pin(None);
        Rep {
            n,
            elapsed,
            samples,
        }
    }

    /// Repetitions while `next` asks for more, then [`finish`](Self::finish).
    pub fn run(mut self, next: Next<'_>) -> Vec<Rep> {
        let mut reps: Vec<Rep> = Vec::new();
        while let Some(n) = next(reps.last()) {
            reps.push(self.rep(n));
        }
        self.finish();
        reps
    }

    /// Stops the child and joins it.
    pub fn finish(mut self) {
        self.wait_ready();
        self.common.n.set(0).unwrap();
        self.common.go.set();
        self.process.join().expect("a benchmark child failed");
    }
}

fn timed(samples: &mut Vec<u64>, f: impl FnOnce()) {
    let t = Instant::now();
    f();
    samples.push(t.elapsed().as_nanos() as u64);
}

// ----- queue -----

fn queue_child(arg: (Queue<ByteBuf>, Queue<ByteBuf>, Common)) {
    let (data, back, c) = arg;
    let body = ByteBuf::from(payload(c.size));
    c.serve(|n| match c.mode {
        Mode::Throughput => {
            for _ in 0..n {
                data.put_ref(&body).expect("queue put");
            }
        }
        Mode::RoundTrip => {
            for _ in 0..n {
                let m = data.get().expect("queue get");
                back.put(m).expect("queue put");
            }
        }
    });
}

pub fn queue(size: usize, cpus: Cpus, mode: Mode) -> Session {
    let data = Queue::<ByteBuf>::new().expect("queue");
    let back = Queue::<ByteBuf>::new().expect("queue");
    let c = Common::new(size, cpus.1, mode);
    let body = ByteBuf::from(payload(size));
    let arg = (data.clone(), back.clone(), c.share());
    Session::start(queue_child, arg, c, cpus.0, move |n, samples| match mode {
        Mode::Throughput => {
            for _ in 0..n {
                check(&data.get().expect("queue get"), size);
            }
        }
        Mode::RoundTrip => {
            for _ in 0..n {
                timed(samples, || {
                    data.put_ref(&body).expect("queue put");
                    check(&back.get().expect("queue get"), size);
                });
            }
        }
    })
}

// ----- pipe, and the bare socketpair under it -----

/// One end of a socket pair, used through our `Connection` (framed messages) or as a bare
/// stream (`write_all`/`read_exact` on the same socket: the floor).
enum End {
    Framed(Box<Connection<()>>),
    Raw(std::fs::File),
}

impl End {
    fn new(conn: Connection<()>, raw: bool) -> End {
        if raw {
            End::Raw(std::fs::File::from(
                conn.as_fd().try_clone_to_owned().expect("dup"),
            ))
        } else {
            End::Framed(Box::new(conn))
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        match self {
            End::Framed(c) => c.send_bytes(bytes).expect("pipe send"),
            End::Raw(f) => f.write_all(bytes).expect("write"),
        }
    }

    /// Receives one message into `buf`; its length.
    fn recv(&mut self, buf: &mut [u8]) -> usize {
        match self {
            End::Framed(c) => c.recv_bytes_into(buf).expect("pipe recv"),
            End::Raw(f) => {
                f.read_exact(buf).expect("read");
                buf.len()
            }
        }
    }
}

fn stream_child(arg: (Connection<()>, bool, Common)) {
    let (conn, raw, c) = arg;
    let mut end = End::new(conn, raw);
    let body = payload(c.size);
    let mut buf = touched(c.size);
    c.serve(|n| {
        for _ in 0..n {
            if c.mode == Mode::RoundTrip {
                let k = end.recv(&mut buf);
                end.send(&buf[..k]);
            } else {
                end.send(&body);
            }
        }
    });
}

/// `Pipe` (`raw == false`), or the bare stream socketpair under it with the same 4 MiB
/// buffers (`raw == true`).
pub fn stream(size: usize, cpus: Cpus, mode: Mode, raw: bool) -> Session {
    let (ours, theirs) = multiproc::pipe::<()>().expect("pipe");
    let mut end = End::new(ours, raw);
    let c = Common::new(size, cpus.1, mode);
    let body = payload(size);
    let mut buf = touched(size);
    let arg = (theirs, raw, c.share());
    Session::start(stream_child, arg, c, cpus.0, move |n, samples| {
        for _ in 0..n {
            if mode == Mode::RoundTrip {
                timed(samples, || {
                    end.send(&body);
                    let k = end.recv(&mut buf);
                    check(&buf[..k], size);
                });
            } else {
                let k = end.recv(&mut buf);
                check(&buf[..k], size);
            }
        }
    })
}

// ----- shared memory with a semaphore handoff -----

/// `a` and `b` are the handoff semaphores: for throughput "empty" (1) and "full" (0); for round
/// trips "request" (0) and "reply" (0). One message is in flight at a time.
fn shm_child(arg: (SharedMemory, Semaphore, Semaphore, bool, Common)) {
    let (shm, a, b, zero_copy, c) = arg;
    let body = payload(c.size);
    let mut buf = touched(c.size);
    c.serve(|n| {
        for _ in 0..n {
            a.acquire();
            match c.mode {
                Mode::Throughput => shm.write_at(0, &body),
                Mode::RoundTrip if zero_copy => {
                    // SAFETY: the parent does not touch the region between its release of the
                    // request and its acquire of the reply.
                    check(&unsafe { shm.as_slice() }[..c.size], c.size);
                }
                Mode::RoundTrip => {
                    shm.read_at(0, &mut buf);
                    check(&buf, c.size);
                    shm.write_at(0, &buf);
                }
            }
            b.release().expect("release");
        }
    });
}

pub fn shm(size: usize, cpus: Cpus, mode: Mode, zero_copy: bool) -> Session {
    let region = SharedMemory::new(size.max(1)).expect("shared memory");
    let first = if mode == Mode::Throughput { 1 } else { 0 };
    let a = Semaphore::new(first).expect("semaphore");
    let b = Semaphore::new(0).expect("semaphore");
    let c = Common::new(size, cpus.1, mode);
    let body = payload(size);
    let mut buf = touched(size);
    let arg = (region.clone(), a.clone(), b.clone(), zero_copy, c.share());
    let read = move |region: &SharedMemory, buf: &mut Vec<u8>| {
        if zero_copy {
            // SAFETY: the child does not write the region until we release `a`.
            check(&unsafe { region.as_slice() }[..size], size);
        } else {
            region.read_at(0, buf);
            check(buf, size);
        }
    };
    Session::start(shm_child, arg, c, cpus.0, move |n, samples| {
        for _ in 0..n {
            match mode {
                Mode::Throughput => {
                    b.acquire();
                    read(&region, &mut buf);
                    a.release().expect("release");
                }
                Mode::RoundTrip => timed(samples, || {
                    region.write_at(0, &body);
                    a.release().expect("release");
                    b.acquire();
                    read(&region, &mut buf);
                }),
            }
        }
    })
}

// ----- raw floors -----

fn futex(word: &AtomicU32, op: libc::c_int, val: u32) {
    // SAFETY: a futex call on a live, aligned, shared 32-bit word.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            op,
            val,
            std::ptr::null::<libc::timespec>(),
        )
    };
}

/// Waits, asleep, until `word == want`.
fn futex_wait_for(word: &AtomicU32, want: u32) {
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want {
            return;
        }
        futex(word, libc::FUTEX_WAIT, v);
    }
}

fn futex_set(word: &AtomicU32, v: u32) {
    word.store(v, Ordering::Release);
    futex(word, libc::FUTEX_WAKE, 1);
}

fn futex_child(arg: (SharedMemory, Common)) {
    let (shm, c) = arg;
    // SAFETY: this segment is only ever accessed as 32-bit atomics.
    let word = &unsafe { shm.atomic_u32s() }[0];
    c.serve(|n| {
        for _ in 0..n {
            futex_wait_for(word, 1);
            futex_set(word, 2);
        }
    });
}

/// The bare futex ping-pong, no payload: the floor of any blocking round trip.
pub fn futex_round_trip(cpus: Cpus, next: Next<'_>) -> Vec<Rep> {
    let shm = SharedMemory::new(64).expect("shared memory");
    let c = Common::new(0, cpus.1, Mode::RoundTrip);
    let arg = (shm.clone(), c.share());
    let session = Session::start(futex_child, arg, c, cpus.0, move |n, samples| {
        // SAFETY: this segment is only ever accessed as 32-bit atomics.
        let word = &unsafe { shm.atomic_u32s() }[0];
        for _ in 0..n {
            timed(samples, || {
                futex_set(word, 1);
                futex_wait_for(word, 2);
            });
        }
    });
    session.run(next)
}

/// `memcpy` of `size` bytes between two warm private buffers.
pub fn memcpy(size: usize, next: Next<'_>) -> Vec<Rep> {
    let src = payload(size);
    let mut dst = touched(size);
    let mut reps: Vec<Rep> = Vec::new();
    while let Some(n) = next(reps.last()) {
        let t = Instant::now();
        for _ in 0..n {
            dst.copy_from_slice(std::hint::black_box(&src));
            std::hint::black_box(&mut dst);
        }
        let elapsed = t.elapsed();
        check(&dst, size);
        reps.push(Rep {
            n,
            elapsed,
            samples: Vec::new(),
        });
    }
    reps
}

// ----- the bare ring: the floor of a queue in shared memory -----

/// The bare ring's data size (the Queue's default ring).
const RING: usize = 4 << 20;
/// Where the data starts: after the head and the tail, each on its own 128-byte line.
const RING_DATA: usize = 256;

/// A single-producer single-consumer byte ring in shared memory: no lock, no serialization,
/// no sleeping (a spin that yields the CPU), a length word before each message. What a queue
/// between two processes cannot beat.
struct RawRing<'a> {
    head: &'a std::sync::atomic::AtomicU64,
    tail: &'a std::sync::atomic::AtomicU64,
    data: *mut u8,
}

impl RawRing<'_> {
    fn new(shm: &SharedMemory) -> RawRing<'_> {
        let words = shm.atomic_u64s();
        RawRing {
            head: &words[0],
            tail: &words[16],
            // SAFETY: the region is RING_DATA + RING bytes long; `data` stays inside it.
            data: unsafe { shm.as_ptr().add(RING_DATA) },
        }
    }

    fn wait(mut ready: impl FnMut() -> bool) {
        let mut spins = 0u32;
        while !ready() {
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Copies `bytes` in at ring offset `at`, wrapping.
    fn copy_in(&self, at: u64, bytes: &[u8]) {
        let off = (at % RING as u64) as usize;
        let first = bytes.len().min(RING - off);
        // SAFETY: both ranges are inside the ring's data, which only this producer writes
        // between the tail and the head.
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.data.add(off), first);
            std::ptr::copy_nonoverlapping(bytes[first..].as_ptr(), self.data, bytes.len() - first);
        }
    }

    fn copy_out(&self, at: u64, out: &mut [u8]) {
        let off = (at % RING as u64) as usize;
        let first = out.len().min(RING - off);
        // SAFETY: published bytes, which the producer does not touch until the head passes.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data.add(off), out.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(self.data, out[first..].as_mut_ptr(), out.len() - first);
        }
    }

    fn send(&self, body: &[u8]) {
        let need = (8 + body.len()).next_multiple_of(8) as u64;
        assert!(
            need <= RING as u64,
            "raw-ring messages must fit in the ring"
        );
        let tail = self.tail.load(Ordering::Relaxed);
        Self::wait(|| tail + need - self.head.load(Ordering::Acquire) <= RING as u64);
        self.copy_in(tail, &(body.len() as u64).to_le_bytes());
        self.copy_in(tail + 8, body);
        self.tail.store(tail + need, Ordering::Release);
    }

    fn recv(&self, buf: &mut Vec<u8>) {
        let head = self.head.load(Ordering::Relaxed);
        Self::wait(|| self.tail.load(Ordering::Acquire) > head);
        let mut len = [0u8; 8];
        self.copy_out(head, &mut len);
        let len = u64::from_le_bytes(len) as usize;
        buf.resize(len, 0);
        self.copy_out(head + 8, buf);
        self.head.store(
            head + (8 + len).next_multiple_of(8) as u64,
            Ordering::Release,
        );
    }
}

fn raw_ring_child(arg: (SharedMemory, Common)) {
    let (shm, c) = arg;
    let ring = RawRing::new(&shm);
    let body = payload(c.size);
    c.serve(|n| {
        for _ in 0..n {
            ring.send(&body);
        }
    });
}

/// One-way throughput through the bare ring (messages up to the ring's size).
pub fn raw_ring(size: usize, cpus: Cpus) -> Session {
    let shm = SharedMemory::new(RING_DATA + RING).expect("shared memory");
    let c = Common::new(size, cpus.1, Mode::Throughput);
    let arg = (shm.clone(), c.share());
    let mut buf = Vec::new();
    Session::start(raw_ring_child, arg, c, cpus.0, move |n, _| {
        let ring = RawRing::new(&shm);
        for _ in 0..n {
            ring.recv(&mut buf);
            check(&buf, size);
        }
    })
}

/// Whether the bare ring can carry `size`-byte messages.
pub fn raw_ring_fits(size: usize) -> bool {
    8 + size <= RING
}
