//! Queues between real processes: sizes, the 4×4 stress test (with and without a consumer
//! SIGKILLed midway), producers and consumers killed in the middle of a streamed message,
//! disconnection, JoinableQueue and SimpleQueue.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{
    Array, Event, GetError, GetTimeoutError, JoinableQueue, Process, Queue, SimpleQueue,
    TaskDoneError,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{Context, TestFn, ensure};

pub fn tests() -> Vec<(&'static str, TestFn)> {
    vec![
        (
            "queue::sizes_0_to_64mib_through_a_child",
            sizes_through_a_child,
        ),
        (
            "queue::stress_4x4_random_sizes_exactly_once",
            stress_exactly_once,
        ),
        (
            "queue::stress_4x4_with_a_consumer_killed",
            stress_consumer_killed,
        ),
        (
            "queue::producer_killed_mid_stream",
            producer_killed_mid_stream,
        ),
        (
            "queue::consumer_killed_mid_stream",
            consumer_killed_mid_stream,
        ),
        (
            "queue::gone_producers_disconnect",
            gone_producers_disconnect,
        ),
        (
            "queue::joinable_across_processes",
            joinable_across_processes,
        ),
        ("queue::simple_queue_in_a_child", simple_queue_in_a_child),
    ]
}

const PATIENCE: Duration = Duration::from_secs(60);

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Echoes byte messages from `a` to `b` until `a` is disconnected; returns how many.
fn echo_bytes(args: (Queue<ByteBuf>, Queue<ByteBuf>)) -> u64 {
    let (a, b) = args;
    a.close();
    let mut n = 0;
    while let Ok(m) = a.get() {
        b.put(m).expect("echo put");
        n += 1;
    }
    n
}

fn sizes_through_a_child() -> Result<(), String> {
    let there = Queue::<ByteBuf>::new().ctx("queue")?;
    let back = Queue::<ByteBuf>::new().ctx("queue")?;
    let mut p = Process::new(echo_bytes, (there.clone(), back.clone()));
    p.start().ctx("start")?;
    back.close();
    let sizes = [
        0usize,
        1,
        17,
        64 << 10,
        (4 << 20) - 64,
        4 << 20,
        (16 << 20) + 3,
        64 << 20,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        let msg = pattern(len, i as u64);
        there.put(ByteBuf::from(msg.clone())).ctx("put")?;
        let got = back.get_timeout(PATIENCE).ctx("get")?;
        ensure!(
            got.as_slice() == msg.as_slice(),
            "echo of {len} bytes differs"
        );
    }
    drop(there);
    ensure!(p.join().ctx("join")? == sizes.len() as u64, "echo count");
    ensure!(back.lost_messages() == 0, "lost messages");
    Ok(())
}

/// One stress message: who sent it, its number, its bytes, and their checksum.
#[derive(Serialize, Deserialize)]
struct Stress {
    producer: u32,
    seq: u32,
    checksum: u64,
    body: ByteBuf,
}

/// A checksum that is fast enough for gigabytes: 64-bit words mixed by position, then the
/// tail bytes.
fn checksum(bytes: &[u8]) -> u64 {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    let mut h = words.enumerate().fold(bytes.len() as u64, |h, (i, w)| {
        let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
        h.wrapping_add(
            w.wrapping_mul((i as u64) << 1 | 1)
                .rotate_left((i % 63) as u32),
        )
    });
    for &b in tail {
        h = h.rotate_left(5) ^ u64::from(b);
    }
    h
}

/// A stress payload: cheap to make (a fill and a few stamped words), different per message.
fn stress_body(producer: u32, seq: u32) -> Vec<u8> {
    let len = stress_len(producer, seq);
    let mut body = vec![(seq as u8) ^ (producer as u8).rotate_left(4); len];
    let stamp = (u64::from(producer) << 32 | u64::from(seq)).to_le_bytes();
    for at in (0..len).step_by(4096) {
        let n = (len - at).min(8);
        body[at..at + n].copy_from_slice(&stamp[..n]);
    }
    body
}

/// Message sizes from 0 to 64 KiB, deterministic per (producer, seq).
fn stress_len(producer: u32, seq: u32) -> usize {
    let mut x = (u64::from(producer) << 32 | u64::from(seq)).wrapping_mul(0x2545_F491_4F6C_DD1D);
    x ^= x >> 29;
    (x % (64 * 1024 + 1)) as usize
}

const STRESS_PRODUCERS: u32 = 4;
const STRESS_CONSUMERS: usize = 4;
const STRESS_TOTAL: u32 = 250_000;

fn stress_produce(args: (Queue<Stress>, u32)) {
    let (q, producer) = args;
    for seq in 0..STRESS_TOTAL / STRESS_PRODUCERS {
        let body = stress_body(producer, seq);
        q.put(Stress {
            producer,
            seq,
            checksum: checksum(&body),
            body: ByteBuf::from(body),
        })
        .expect("stress put");
    }
}

/// Takes messages until the queue is disconnected; counts each (producer, seq) in `seen` and
/// returns how many failed their checks.
fn stress_consume(args: (Queue<Stress>, Array<u32>)) -> u64 {
    let (q, seen) = args;
    q.close();
    let per = STRESS_TOTAL / STRESS_PRODUCERS;
    let mut bad = 0;
    loop {
        let m = match q.get() {
            Ok(m) => m,
            Err(GetError::Disconnected) => return bad,
            Err(GetError::Failed(e)) => panic!("get failed: {e}"),
        };
        let slot = (m.producer * per + m.seq) as usize;
        // SAFETY: `seen` is only ever accessed through atomics.
        let slots = unsafe { seen.atomics() };
        slots[slot].fetch_add(1, Ordering::AcqRel);
        if m.body.len() != stress_len(m.producer, m.seq)
            || checksum(&m.body) != m.checksum
            || m.body[..] != stress_body(m.producer, m.seq)[..]
        {
            bad += 1;
        }
    }
}

struct StressRun {
    seen: Vec<u32>,
    bad: u64,
    lost: u64,
    elapsed: Duration,
}

fn run_stress(kill_one_consumer: bool) -> Result<StressRun, String> {
    let q = Queue::<Stress>::with_capacity(1 << 20).ctx("queue")?;
    let seen = Array::new(STRESS_TOTAL as usize, 0u32).ctx("array")?;
    let t = Instant::now();
    let mut consumers: Vec<_> = (0..STRESS_CONSUMERS)
        .map(|_| Process::new(stress_consume, (q.clone(), seen.clone())))
        .collect();
    for c in &mut consumers {
        c.start().ctx("start consumer")?;
    }
    let mut producers: Vec<_> = (0..STRESS_PRODUCERS)
        .map(|p| Process::new(stress_produce, (q.clone(), p)))
        .collect();
    for p in &mut producers {
        p.start().ctx("start producer")?;
    }
    // The parent only watches: it must not keep the queue connected.
    q.close();
    if kill_one_consumer {
        let half = u64::from(STRESS_TOTAL / 2);
        let delivered = || {
            // SAFETY: `seen` is only ever accessed through atomics.
            unsafe { seen.atomics() }
                .iter()
                .map(|a| u64::from(a.load(Ordering::Relaxed)))
                .sum::<u64>()
        };
        ensure!(
            ipc_tests::eventually(PATIENCE, || delivered() >= half),
            "half the messages never arrived"
        );
        consumers[0].kill().ctx("kill consumer")?;
    }
    for p in &mut producers {
        p.join().ctx("join producer")?;
    }
    let mut bad = 0;
    for (i, c) in consumers.iter_mut().enumerate() {
        match c.join() {
            Ok(b) => bad += b,
            Err(e) if kill_one_consumer && i == 0 => {
                ensure!(e.signal() == Some(9), "killed consumer: {e}");
            }
            Err(e) => return Err(format!("consumer {i}: {e}")),
        }
    }
    Ok(StressRun {
        seen: seen.to_vec(),
        bad,
        lost: q.lost_messages(),
        elapsed: t.elapsed(),
    })
}

fn stress_exactly_once() -> Result<(), String> {
    let r = run_stress(false)?;
    ensure!(
        r.bad == 0,
        "{} messages failed their checksum or length",
        r.bad
    );
    let wrong: Vec<_> = r
        .seen
        .iter()
        .enumerate()
        .filter(|&(_, &n)| n != 1)
        .take(5)
        .collect();
    ensure!(wrong.is_empty(), "delivered other than once: {wrong:?}");
    ensure!(r.lost == 0, "lost {}", r.lost);
    eprintln!(
        "queue::stress: {STRESS_TOTAL} messages (0 B to 64 KiB) from {STRESS_PRODUCERS} producers \
         to {STRESS_CONSUMERS} consumers in {:?}",
        r.elapsed
    );
    Ok(())
}

fn stress_consumer_killed() -> Result<(), String> {
    let r = run_stress(true)?;
    ensure!(
        r.bad == 0,
        "{} messages failed their checksum or length",
        r.bad
    );
    let dup = r.seen.iter().filter(|&&n| n > 1).count();
    let missing = r.seen.iter().filter(|&&n| n == 0).count();
    ensure!(dup == 0, "{dup} messages delivered twice");
    ensure!(missing <= 1, "{missing} messages lost");
    // A message the dead consumer had taken and not yet been handed by `get` is counted by the
    // queue. (One already returned to its code is not the queue's to count; the window between
    // `get` returning and the count below is a few instructions.)
    ensure!(
        r.lost as usize == missing,
        "the queue reports {} lost, {missing} missing",
        r.lost
    );
    eprintln!(
        "queue::stress with a consumer SIGKILLed at half-way: {missing} missing, {} reported \
         lost by the queue, 0 duplicated, in {:?}",
        r.lost, r.elapsed
    );
    Ok(())
}

#[derive(Serialize, Deserialize)]
enum Job {
    Big(ByteBuf),
    Small(u32),
}

/// Puts one message too big for the ring; killed while streaming it.
fn put_big(args: (Queue<Job>, Event)) {
    let (q, started) = args;
    started.set();
    let _ = q.put(Job::Big(ByteBuf::from(vec![1u8; 64 << 20])));
}

fn producer_killed_mid_stream() -> Result<(), String> {
    // The producer dies half-way through a stream; a consumer reads what there is; a new
    // producer arrives, closes the broken stream, and its message is the one delivered.
    let q = Queue::<Job>::with_capacity(1 << 20).ctx("queue")?;
    let started = Event::new().ctx("event")?;
    let mut p = Process::new(put_big, (q.clone(), started.clone()));
    p.start().ctx("start")?;
    ensure!(started.wait_timeout(PATIENCE), "the producer never started");
    // Nobody reads yet: the ring fills with the first megabyte and the producer waits.
    std::thread::sleep(Duration::from_millis(200));
    p.kill().ctx("kill")?;
    let _ = p.join();
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || match q.get_timeout(PATIENCE) {
            Ok(Job::Small(n)) => Ok(n),
            Ok(Job::Big(b)) => Err(format!("a Big of {} bytes came out", b.len())),
            Err(e) => Err(e.to_string()),
        })
    };
    q.put(Job::Small(7)).ctx("put after")?;
    let got = consumer.join().map_err(|_| "consumer panicked")??;
    ensure!(got == 7, "got Small({got})");
    ensure!(q.lost_messages() == 1, "lost {}", q.lost_messages());

    // With nobody else: the blocked consumer itself notices the dead producer.
    let q = Queue::<Job>::with_capacity(1 << 20).ctx("queue")?;
    let started = Event::new().ctx("event")?;
    let mut p = Process::new(put_big, (q.clone(), started.clone()));
    p.start().ctx("start")?;
    ensure!(started.wait_timeout(PATIENCE), "the producer never started");
    q.close();
    std::thread::sleep(Duration::from_millis(200)); // the ring fills; the producer waits
    p.kill().ctx("kill")?;
    let _ = p.join();
    let t = Instant::now();
    let r = q.get_timeout(PATIENCE);
    ensure!(
        matches!(r, Err(GetTimeoutError::Disconnected)),
        "expected Disconnected, got {}",
        match r {
            Ok(_) => "a message".to_string(),
            Err(e) => e.to_string(),
        }
    );
    ensure!(t.elapsed() < PATIENCE, "took the whole timeout");
    ensure!(q.lost_messages() == 1, "lost {}", q.lost_messages());
    Ok(())
}

/// A large byte sequence whose serialization stops half-way until told to go on: it lets the
/// test kill a consumer while it is certainly in the middle of receiving the message. It is
/// received as its length.
///
/// A `put` of a value larger than the free space serializes it three times: into the free
/// space (which fails), to measure it, and streaming it. Only the third pass stalls.
struct Stalling {
    len: usize,
    stall: Option<(Event, Event)>,
    passes: std::cell::Cell<u32>,
}

impl Serialize for Stalling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let pass = self.passes.get();
        self.passes.set(pass + 1);
        let mut seq = s.serialize_seq(Some(self.len))?;
        for i in 0..self.len {
            if i == self.len / 2
                && pass == 2
                && let Some((reached, resume)) = &self.stall
            {
                reached.set();
                resume.wait_timeout(PATIENCE);
            }
            seq.serialize_element(&(i as u8))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Stalling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        Ok(Stalling {
            len: bytes.len(),
            stall: None,
            passes: std::cell::Cell::new(0),
        })
    }
}

#[derive(Serialize, Deserialize)]
enum Streamed {
    Big(Stalling),
    Small(u32),
}

/// Gets one message; killed while receiving it.
fn get_one(args: (Queue<Streamed>, Event)) {
    let (q, started) = args;
    q.close();
    started.set();
    let _ = q.get();
}

fn consumer_killed_mid_stream() -> Result<(), String> {
    let q = Queue::<Streamed>::with_capacity(1 << 20).ctx("queue")?;
    let started = Event::new().ctx("event")?;
    let mut c = Process::new(get_one, (q.clone(), started.clone()));
    c.start().ctx("start")?;
    ensure!(started.wait_timeout(PATIENCE), "the consumer never started");
    let (reached, resume) = (Event::new().ctx("event")?, Event::new().ctx("event")?);
    let producer = {
        let q = q.clone();
        let stall = Some((reached.clone(), resume.clone()));
        std::thread::spawn(move || {
            // 8 MiB through a 1 MiB ring: when the producer stalls half-way, the consumer has
            // taken at least 3 MiB of it and waits for the rest.
            q.put(Streamed::Big(Stalling {
                len: 8 << 20,
                stall,
                passes: std::cell::Cell::new(0),
            }))
            .map_err(|e| e.to_string())?;
            q.put(Streamed::Small(9)).map_err(|e| e.to_string())
        })
    };
    ensure!(
        reached.wait_timeout(PATIENCE),
        "the producer never got half-way"
    );
    c.kill().ctx("kill")?;
    let _ = c.join();
    resume.set();
    // This process takes over as consumer: the rest of the big message is skipped.
    let got = q.get_timeout(PATIENCE).ctx("get")?;
    producer.join().map_err(|_| "producer panicked")??;
    match got {
        Streamed::Small(9) => {}
        Streamed::Big(b) => return Err(format!("a Big of {} bytes came out", b.len)),
        Streamed::Small(n) => return Err(format!("got Small({n})")),
    }
    ensure!(q.lost_messages() == 1, "lost {}", q.lost_messages());
    ensure!(q.is_empty(), "qsize {}", q.qsize());
    Ok(())
}

fn count_until_disconnected(q: Queue<u32>) -> u32 {
    q.close();
    let mut n = 0;
    while q.get().is_ok() {
        n += 1;
    }
    n
}

fn idle_producer(args: (Queue<u32>, Event)) {
    let (_q, ready) = args;
    ready.set();
    std::thread::sleep(Duration::from_secs(120));
}

fn gone_producers_disconnect() -> Result<(), String> {
    // Producers that close or drop their handles.
    let q = Queue::<u32>::new().ctx("queue")?;
    let mut c = Process::new(count_until_disconnected, q.clone());
    c.start().ctx("start")?;
    for i in 0..3 {
        q.put(i).ctx("put")?;
    }
    drop(q);
    ensure!(c.join().ctx("join")? == 3, "consumer count");

    // A producer that dies without a word (SIGKILL) while holding its handle.
    let q = Queue::<u32>::new().ctx("queue")?;
    let ready = Event::new().ctx("event")?;
    let mut p = Process::new(idle_producer, (q.clone(), ready.clone()));
    p.start().ctx("start")?;
    ensure!(ready.wait_timeout(PATIENCE), "producer never started");
    q.put(5).ctx("put")?;
    q.close();
    ensure!(q.get().ctx("get")? == 5, "first message");
    p.kill().ctx("kill")?;
    let _ = p.join();
    let t = Instant::now();
    let r = q.get_timeout(PATIENCE);
    ensure!(
        matches!(r, Err(GetTimeoutError::Disconnected)),
        "expected Disconnected after the producer's death, got {r:?}"
    );
    ensure!(
        t.elapsed() < Duration::from_secs(10),
        "slow: {:?}",
        t.elapsed()
    );
    Ok(())
}

fn joinable_worker(q: JoinableQueue<u32>) -> (u32, bool) {
    q.close();
    let mut n = 0;
    while let Ok(_job) = q.get() {
        n += 1;
        q.task_done().expect("task_done");
    }
    (n, q.task_done() == Err(TaskDoneError))
}

fn joinable_across_processes() -> Result<(), String> {
    let q = JoinableQueue::<u32>::new().ctx("queue")?;
    let mut ws: Vec<_> = (0..2)
        .map(|_| Process::new(joinable_worker, q.clone()))
        .collect();
    for w in &mut ws {
        w.start().ctx("start")?;
    }
    for i in 0..100 {
        q.put(i).ctx("put")?;
    }
    ensure!(
        q.join_timeout(PATIENCE),
        "join timed out with {} unfinished",
        q.unfinished_tasks()
    );
    q.close();
    let mut total = 0;
    for w in &mut ws {
        let (n, over) = w.join().ctx("join")?;
        ensure!(over, "an extra task_done must fail");
        total += n;
    }
    ensure!(total == 100, "workers did {total} jobs");
    Ok(())
}

fn simple_get(q: SimpleQueue<String>) -> String {
    q.get().expect("simple get")
}

fn simple_queue_in_a_child() -> Result<(), String> {
    let q = SimpleQueue::<String>::new().ctx("queue")?;
    let mut p = Process::new(simple_get, q.clone());
    p.start().ctx("start")?;
    q.put("hello".into()).ctx("put")?;
    ensure!(p.join().ctx("join")? == "hello", "child got another string");
    ensure!(q.is_empty(), "empty after");
    Ok(())
}
