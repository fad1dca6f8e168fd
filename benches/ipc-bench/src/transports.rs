//! What each transport does in a child process and in the parent, for one repetition.
//!
//! Every repetition starts a fresh child (not timed): it pins itself, prepares, raises `ready`,
//! and waits for `go`; the parent pins itself, starts the clock, raises `go`, and receives. The
//! payload is the same bytes for every transport ([`payload`]); the receiver checks the length
//! and 18 sampled bytes of every message ([`check`]).

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{Connection, Event, Process, Queue, Semaphore, SharedMemory};
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
            assert_eq!(buf[i], byte_at(i), "byte {i} of a {size}-byte message differs");
        }
    }
}

/// Pins the calling process to `cpu` (None: anywhere).
pub fn pin(cpu: Option<usize>) {
    // SAFETY: a zeroed cpu_set_t is an empty set; the calls only read/write that local set.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => {
                for c in 0..num_cpus() {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
    }
}

pub fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// What a repetition measures.
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
    pub n: u64,
    pub cpu: Option<usize>,
    pub mode: Mode,
    pub ready: Event,
    pub go: Event,
}

impl Common {
    fn start(&self) {
        pin(self.cpu);
        self.ready.set();
        self.go.wait();
    }
}

/// The result of one repetition: the time the parent measured, and for round trips each one.
pub struct Rep {
    pub elapsed: Duration,
    pub samples: Vec<u64>,
}

/// Runs one repetition: starts `child` with `arg`, waits until it is ready, and times `body`.
fn run<A: Serialize + for<'de> Deserialize<'de>>(
    child: fn(A),
    arg: A,
    common: &Common,
    parent_cpu: Option<usize>,
    body: impl FnOnce(&mut Vec<u64>),
) -> Rep {
    let mut p = Process::new(child, arg);
    p.start().expect("start a child");
    assert!(
        common.ready.wait_timeout(Duration::from_secs(60)),
        "a child did not start"
    );
    pin(parent_cpu);
    let mut samples = Vec::new();
    let t = Instant::now();
    common.go.set();
    body(&mut samples);
    let elapsed = t.elapsed();
    pin(None);
    p.join().expect("a child failed");
    Rep { elapsed, samples }
}

fn common(size: usize, n: u64, cpu: Option<usize>, mode: Mode) -> Common {
    Common {
        size,
        n,
        cpu,
        mode,
        ready: Event::new().expect("event"),
        go: Event::new().expect("event"),
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
    c.start();
    match c.mode {
        Mode::Throughput => {
            for _ in 0..c.n {
                data.put_ref(&body).expect("queue put");
            }
        }
        Mode::RoundTrip => {
            for _ in 0..c.n {
                let m = data.get().expect("queue get");
                back.put(m).expect("queue put");
            }
        }
    }
}

/// The objects a measurement reuses across its repetitions (so that rings, regions and socket
/// buffers are warm after the warm-up); each repetition starts a new child with clones.
pub enum Setup {
    Queue(Queue<ByteBuf>, Queue<ByteBuf>),
    /// A socket pair is cheap and holds no pages of ours: a new one per repetition; the
    /// parent's receive buffer is what is reused.
    Pipe(std::cell::RefCell<Vec<u8>>),
    Shm(SharedMemory, [Semaphore; 4], std::cell::RefCell<Vec<u8>>),
    Socketpair(std::cell::RefCell<Vec<u8>>),
    Futex(SharedMemory),
}

impl Setup {
    pub fn queue() -> Setup {
        let data = Queue::<ByteBuf>::new().expect("queue");
        let back = Queue::<ByteBuf>::new().expect("queue");
        Setup::Queue(data, back)
    }

    pub fn pipe(size: usize) -> Setup {
        Setup::Pipe(std::cell::RefCell::new(touched(size)))
    }

    pub fn socketpair(size: usize) -> Setup {
        Setup::Socketpair(std::cell::RefCell::new(touched(size)))
    }

    pub fn shm(size: usize) -> Setup {
        let sem = |v| Semaphore::new(v).expect("semaphore");
        Setup::Shm(
            SharedMemory::new(size.max(1)).expect("shared memory"),
            [sem(1), sem(0), sem(0), sem(0)],
            std::cell::RefCell::new(touched(size)),
        )
    }

    pub fn futex() -> Setup {
        Setup::Futex(SharedMemory::new(64).expect("shared memory"))
    }
}

pub fn queue(setup: &Setup, size: usize, n: u64, cpus: (Option<usize>, Option<usize>), mode: Mode) -> Rep {
    let Setup::Queue(data, back) = setup else {
        unreachable!()
    };
    let c = common(size, n, cpus.1, mode);
    let body = ByteBuf::from(payload(size));
    let arg = (data.clone(), back.clone(), clone_common(&c));
    run(queue_child, arg, &c, cpus.0, |samples| match mode {
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

/// Handles are clones: the child and the parent share the events.
fn clone_common(c: &Common) -> Common {
    Common {
        size: c.size,
        n: c.n,
        cpu: c.cpu,
        mode: c.mode,
        ready: c.ready.clone(),
        go: c.go.clone(),
    }
}

// ----- pipe -----

fn pipe_child(arg: (Connection<()>, Common)) {
    let (conn, c) = arg;
    let body = payload(c.size);
    let mut buf = touched(c.size);
    c.start();
    for _ in 0..c.n {
        if c.mode == Mode::RoundTrip {
            let k = conn.recv_bytes_into(&mut buf).expect("pipe recv");
            conn.send_bytes(&buf[..k]).expect("pipe send");
        } else {
            conn.send_bytes(&body).expect("pipe send");
        }
    }
}

pub fn pipe(setup: &Setup, size: usize, n: u64, cpus: (Option<usize>, Option<usize>), mode: Mode) -> Rep {
    let Setup::Pipe(buf) = setup else {
        unreachable!()
    };
    let mut buf = buf.borrow_mut();
    let (ours, theirs) = multiproc::pipe::<()>().expect("pipe");
    let c = common(size, n, cpus.1, mode);
    let body = payload(size);
    run(pipe_child, (theirs, clone_common(&c)), &c, cpus.0, |samples| {
        for _ in 0..n {
            if mode == Mode::RoundTrip {
                timed(samples, || {
                    ours.send_bytes(&body).expect("pipe send");
                    let k = ours.recv_bytes_into(&mut buf).expect("pipe recv");
                    check(&buf[..k], size);
                });
            } else {
                let k = ours.recv_bytes_into(&mut buf).expect("pipe recv");
                check(&buf[..k], size);
            }
        }
    })
}

// ----- shared memory with a semaphore handoff -----

/// `a` and `b` are the handoff semaphores: for throughput "empty" (1) and "full" (0); for round
/// trips "request" (0) and "reply" (0).
fn shm_child(arg: (SharedMemory, Semaphore, Semaphore, bool, Common)) {
    let (shm, a, b, zero_copy, c) = arg;
    let body = payload(c.size);
    let mut buf = touched(c.size);
    c.start();
    for _ in 0..c.n {
        match c.mode {
            Mode::Throughput => {
                a.acquire();
                shm.write_at(0, &body);
                b.release();
            }
            Mode::RoundTrip => {
                a.acquire();
                if zero_copy {
                    // SAFETY: the parent does not touch the region between its release of the
                    // request and its acquire of the reply.
                    check(&unsafe { shm.as_slice() }[..c.size], c.size);
                } else {
                    shm.read_at(0, &mut buf);
                    check(&buf, c.size);
                    shm.write_at(0, &buf);
                }
                b.release();
            }
        }
    }
}

pub fn shm(
    setup: &Setup,
    size: usize,
    n: u64,
    cpus: (Option<usize>, Option<usize>),
    mode: Mode,
    zero_copy: bool,
) -> Rep {
    let Setup::Shm(region, [empty, full, req, rep], buf) = setup else {
        unreachable!()
    };
    let mut buf = buf.borrow_mut();
    // Each repetition leaves them as it found them: empty 1, full 0; request 0, reply 0.
    let (a, b) = match mode {
        Mode::Throughput => (empty, full),
        Mode::RoundTrip => (req, rep),
    };
    let c = common(size, n, cpus.1, mode);
    let body = payload(size);
    let arg = (region.clone(), a.clone(), b.clone(), zero_copy, clone_common(&c));
    run(shm_child, arg, &c, cpus.0, |samples| {
        for _ in 0..n {
            match mode {
                Mode::Throughput => {
                    b.acquire();
                    if zero_copy {
                        // SAFETY: the child writes only after we release `a`.
                        check(&unsafe { region.as_slice() }[..size], size);
                    } else {
                        region.read_at(0, &mut buf);
                        check(&buf, size);
                    }
                    a.release();
                }
                Mode::RoundTrip => timed(samples, || {
                    region.write_at(0, &body);
                    a.release();
                    b.acquire();
                    if zero_copy {
                        // SAFETY: the child is done with the region until the next request.
                        check(&unsafe { region.as_slice() }[..size], size);
                    } else {
                        region.read_at(0, &mut buf);
                        check(&buf, size);
                    }
                }),
            }
        }
    })
}

// ----- raw floors -----

/// The connection's socket as a plain file: no framing, no locks, `write_all`/`read_exact`.
fn raw_socket(conn: &Connection<()>) -> std::fs::File {
    std::fs::File::from(conn.as_fd().try_clone_to_owned().expect("dup"))
}

fn socketpair_child(arg: (Connection<()>, Common)) {
    let (conn, c) = arg;
    let mut s = raw_socket(&conn);
    let body = payload(c.size);
    let mut buf = touched(c.size);
    c.start();
    for _ in 0..c.n {
        if c.mode == Mode::RoundTrip {
            s.read_exact(&mut buf).expect("read");
            s.write_all(&buf).expect("write");
        } else {
            s.write_all(&body).expect("write");
        }
    }
}

pub fn socketpair(setup: &Setup, size: usize, n: u64, cpus: (Option<usize>, Option<usize>), mode: Mode) -> Rep {
    let Setup::Socketpair(buf) = setup else {
        unreachable!()
    };
    let mut buf = buf.borrow_mut();
    let (ours, theirs) = multiproc::pipe::<()>().expect("socketpair");
    let mut s = raw_socket(&ours);
    let c = common(size, n, cpus.1, mode);
    let body = payload(size);
    run(socketpair_child, (theirs, clone_common(&c)), &c, cpus.0, |samples| {
        for _ in 0..n {
            if mode == Mode::RoundTrip {
                timed(samples, || {
                    s.write_all(&body).expect("write");
                    s.read_exact(&mut buf).expect("read");
                    check(&buf, size);
                });
            } else {
                s.read_exact(&mut buf).expect("read");
                check(&buf, size);
            }
        }
    })
}

fn futex(word: &std::sync::atomic::AtomicU32, op: libc::c_int, val: u32) {
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

/// Waits (asleep) until `word == want`.
fn futex_wait_for(word: &std::sync::atomic::AtomicU32, want: u32) {
    loop {
        let v = word.load(Ordering::Acquire);
        if v == want {
            return;
        }
        futex(word, libc::FUTEX_WAIT, v);
    }
}

fn futex_set(word: &std::sync::atomic::AtomicU32, v: u32) {
    word.store(v, Ordering::Release);
    futex(word, libc::FUTEX_WAKE, 1);
}

fn futex_child(arg: (SharedMemory, Common)) {
    let (shm, c) = arg;
    let word = &shm.atomic_u32s()[0];
    c.start();
    for _ in 0..c.n {
        futex_wait_for(word, 1);
        futex_set(word, 2);
    }
}

/// The bare futex ping-pong: no payload, the floor of any blocking round trip.
pub fn futex_round_trip(setup: &Setup, n: u64, cpus: (Option<usize>, Option<usize>)) -> Rep {
    let Setup::Futex(shm) = setup else {
        unreachable!()
    };
    let c = common(0, n, cpus.1, Mode::RoundTrip);
    let word = &shm.atomic_u32s()[0];
    run(futex_child, (shm.clone(), clone_common(&c)), &c, cpus.0, |samples| {
        for _ in 0..n {
            timed(samples, || {
                futex_set(word, 1);
                futex_wait_for(word, 2);
            });
        }
    })
}

/// `memcpy` of `size` bytes between two warm private buffers, `n` times.
pub fn memcpy(size: usize, n: u64) -> Rep {
    let src = payload(size);
    let mut dst = vec![0u8; size];
    dst.copy_from_slice(&src);
    let t = Instant::now();
    for _ in 0..n {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    }
    let elapsed = t.elapsed();
    check(&dst, size);
    Rep {
        elapsed,
        samples: Vec::new(),
    }
}
