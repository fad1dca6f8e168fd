//! Queues between real processes: sizes, the 4×4 stress test (with and without a consumer
//! SIGKILLed midway), producers and consumers killed in the middle of a streamed message,
//! disconnection, JoinableQueue and SimpleQueue.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use multiproc::{
    Array, Event, GetError, GetTimeoutError, JoinableQueue, Process, Queue, SimpleQueue,
    StartMethod, TaskDoneError,
};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::{Context, TestFn, ensure};

mod scribble;

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
        (
            "queue::handles_that_never_reach_a_child",
            handles_that_never_reach_a_child,
        ),
        (
            "queue::forked_producer_keeps_the_queue_connected",
            forked_producer_keeps_the_queue_connected,
        ),
        (
            "queue::scribbled_state_and_ring_give_typed_errors",
            scribble::scribbled_state_and_ring_give_typed_errors,
        ),
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
        seen: seen.to_vec().ctx("read the seen counts")?,
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

/// A large byte sequence whose serialization stops half-way until told to go on: it lets the
/// test kill a consumer (or the producer) while it is certainly in the middle of the message.
/// It is received as its length.
///
/// A `put` of a value larger than the ring serializes it up to four times: into the free space
/// (once or twice; these stop early), to measure it, and streaming it. Only the second pass
/// that gets half-way (the streaming one) stalls.
struct Stalling {
    len: usize,
    stall: Option<(Event, Event)>,
    halfway: std::cell::Cell<u32>,
}

impl Stalling {
    fn new(len: usize, stall: Option<(Event, Event)>) -> Stalling {
        Stalling {
            len,
            stall,
            halfway: std::cell::Cell::new(0),
        }
    }
}

impl Serialize for Stalling {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        for i in 0..self.len {
            if i == self.len / 2 {
                let n = self.halfway.get();
                self.halfway.set(n + 1);
                if n == 1
                    && let Some((reached, resume)) = &self.stall
                {
                    reached.set();
                    let _ = resume.wait_timeout(PATIENCE);
                }
            }
            seq.serialize_element(&(i as u8))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Stalling {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        Ok(Stalling::new(bytes.len(), None))
    }
}

#[derive(Serialize, Deserialize)]
enum Streamed {
    Big(Stalling),
    Small(u32),
}

/// Puts one message too big for the ring and stalls half-way through streaming it (signalling
/// `reached`); killed there.
fn put_big(args: (Queue<Streamed>, Event)) {
    let (q, reached) = args;
    let never = Event::new().expect("event");
    let _ = q.put(Streamed::Big(Stalling::new(
        8 << 20,
        Some((reached, never)),
    )));
}

/// Starts `put_big` and kills it once it is half-way through its stream (a consumer must read
/// meanwhile for it to get there: this one does, with short deadlines).
fn kill_mid_stream(q: &Queue<Streamed>) -> Result<(), String> {
    let reached = Event::new().ctx("event")?;
    let mut p = Process::new(put_big, (q.clone(), reached.clone()));
    p.start().ctx("start")?;
    let end = Instant::now() + PATIENCE;
    while !reached.is_set() {
        ensure!(Instant::now() < end, "the producer never got half-way");
        match q.get_timeout(Duration::from_millis(20)) {
            Err(GetTimeoutError::Timeout) => {}
            Ok(_) => return Err("a message came out of a half-put stream".into()),
            Err(e) => return Err(format!("pulling: {e}")),
        }
    }
    p.kill().ctx("kill")?;
    let _ = p.join();
    Ok(())
}

fn producer_killed_mid_stream() -> Result<(), String> {
    // The producer dies half-way through a stream; a new producer arrives, closes the broken
    // stream, and its message is the one delivered.
    let q = Queue::<Streamed>::with_capacity(1 << 20).ctx("queue")?;
    kill_mid_stream(&q)?;
    let consumer = {
        let q = q.clone();
        std::thread::spawn(move || match q.get_timeout(PATIENCE) {
            Ok(Streamed::Small(n)) => Ok(n),
            Ok(Streamed::Big(b)) => Err(format!("a Big of {} bytes came out", b.len)),
            Err(e) => Err(e.to_string()),
        })
    };
    q.put(Streamed::Small(7)).ctx("put after")?;
    let got = consumer.join().map_err(|_| "consumer panicked")??;
    ensure!(got == 7, "got Small({got})");
    ensure!(q.lost_messages() == 1, "lost {}", q.lost_messages());

    // With nobody else: the blocked consumer itself notices the dead producer.
    let q = Queue::<Streamed>::with_capacity(1 << 20).ctx("queue")?;
    q.close();
    kill_mid_stream(&q)?;
    let r = q.get_timeout(PATIENCE);
    ensure!(
        matches!(r, Err(GetTimeoutError::Disconnected)),
        "expected Disconnected, got {}",
        match r {
            Ok(_) => "a message".to_string(),
            Err(e) => e.to_string(),
        }
    );
    ensure!(q.lost_messages() == 1, "lost {}", q.lost_messages());
    Ok(())
}

/// Sleeps until killed (or for two minutes), holding its handle.
fn hold_forever(q: Queue<u32>) {
    let _q = q;
    std::thread::sleep(Duration::from_secs(120));
}

/// Puts `n` messages.
fn put_n(args: (Queue<u32>, u32)) {
    let (q, n) = args;
    for i in 0..n {
        q.put(i).expect("put");
    }
}

fn expect_disconnected(q: &Queue<u32>, what: &str) -> Result<(), String> {
    match q.get_timeout(PATIENCE) {
        Err(GetTimeoutError::Disconnected) => Ok(()),
        Ok(m) => Err(format!("{what}: got message {m}")),
        Err(e) => Err(format!("{what}: expected Disconnected, got {e}")),
    }
}

fn handles_that_never_reach_a_child() -> Result<(), String> {
    // A process dropped before start(): its arguments never reach anybody.
    let q = Queue::<u32>::new().ctx("queue")?;
    q.close();
    drop(Process::new(hold_forever, q.clone()));
    expect_disconnected(&q, "dropped before start")?;

    // A start that fails (the checked fork refuses in this multi-threaded process).
    let mut p = Process::new(hold_forever, q.clone()).with_start_method(StartMethod::Fork);
    ensure!(
        p.start().is_err(),
        "a checked fork started in a threaded process"
    );
    drop(p);
    expect_disconnected(&q, "failed start")?;

    // Children killed right after start(), again and again (a supervisor replacing workers).
    for round in 0..5 {
        let mut p = Process::new(hold_forever, q.clone());
        p.start().ctx("start")?;
        p.kill().ctx("kill")?;
        let _ = p.join();
        expect_disconnected(&q, &format!("killed at start, round {round}"))?;
    }

    // A child that does receive its handle is a producer until it is done.
    let mut p = Process::new(put_n, (q.clone(), 50));
    p.start().ctx("start")?;
    let mut got = 0;
    while let Ok(m) = q.get_timeout(PATIENCE) {
        ensure!(m == got, "message {m} out of order (expected {got})");
        got += 1;
    }
    p.join().ctx("join")?;
    ensure!(got == 50, "got {got} of 50 messages");
    Ok(())
}

fn forked_producer_keeps_the_queue_connected() -> Result<(), String> {
    let q = Queue::<u32>::new().ctx("queue")?;
    let go = Event::new().ctx("event")?;
    let mut p = {
        let (q, go) = (q.clone(), go.clone());
        // SAFETY: the closure only waits on an Event and puts into the queue: it takes no lock
        // that another thread of this test process could have held at the fork.
        unsafe {
            Process::new_fork_unchecked(move || {
                let _ = go.wait_timeout(PATIENCE);
                for i in 0..20 {
                    q.put(i).expect("forked put");
                }
            })
        }
    };
    p.start().ctx("start")?;
    // Only the forked child can put now.
    q.close();
    go.set();
    let mut got = Vec::new();
    let end = loop {
        match q.get_timeout(PATIENCE) {
            Ok(m) => got.push(m),
            Err(e) => break e,
        }
    };
    p.join().ctx("join")?;
    ensure!(
        matches!(end, GetTimeoutError::Disconnected),
        "ended with {end}"
    );
    ensure!(got == (0..20).collect::<Vec<_>>(), "got {got:?}");
    Ok(())
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
    ensure!(
        started.wait_timeout(PATIENCE).is_ok(),
        "the consumer never started"
    );
    let (reached, resume) = (Event::new().ctx("event")?, Event::new().ctx("event")?);
    let producer = {
        let q = q.clone();
        let stall = Some((reached.clone(), resume.clone()));
        std::thread::spawn(move || {
            // 8 MiB through a 1 MiB ring: when the producer stalls half-way, the consumer has
            // taken at least 3 MiB of it and waits for the rest.
            q.put(Streamed::Big(Stalling::new(8 << 20, stall)))
                .map_err(|e| e.to_string())?;
            q.put(Streamed::Small(9)).map_err(|e| e.to_string())
        })
    };
    ensure!(
        reached.wait_timeout(PATIENCE).is_ok(),
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
    ensure!(
        ready.wait_timeout(PATIENCE).is_ok(),
        "producer never started"
    );
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
        q.join_timeout(PATIENCE).is_ok(),
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
