//! In-process tests of the queue (threads); `ipc-tests` has the multi-process ones.

use std::cell::Cell;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde::{Deserialize, Deserializer, Serializer};

use super::layout::put_state;
use super::*;

/// How long any blocking step of these tests may take before the test fails as hung.
const BOUND: Duration = Duration::from_secs(30);

/// Runs `f` on a thread and returns its result, failing the test if it takes more than BOUND.
fn within<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.recv_timeout(BOUND) {
        Ok(Ok(r)) => r,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(_) => panic!("hung: did not finish within {BOUND:?}"),
    }
}

/// A thread whose result is awaited with a bound.
struct Bounded<R>(mpsc::Receiver<std::thread::Result<R>>);

fn spawn_bounded<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Bounded<R> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    Bounded(rx)
}

impl<R> Bounded<R> {
    fn join(self) -> R {
        match self.0.recv_timeout(BOUND) {
            Ok(Ok(r)) => r,
            Ok(Err(panic)) => std::panic::resume_unwind(panic),
            Err(_) => panic!("hung: a thread did not finish within {BOUND:?}"),
        }
    }
}

fn bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

#[derive(Serialize, serde::Deserialize, PartialEq, Debug, Clone)]
struct Msg {
    seq: u64,
    #[serde(with = "serde_bytes_shim")]
    body: Vec<u8>,
}

/// `serde_bytes` semantics without the dependency: bytes as one slice, not element by element.
mod serde_bytes_shim {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
        }
        d.deserialize_bytes(V)
    }
}

#[test]
fn sizes_from_zero_to_several_rings_in_order() {
    let q = Queue::<Msg>::with_capacity(64 << 10).unwrap();
    let sizes = [
        0usize,
        1,
        15,
        16,
        17,
        4000,
        64 << 10,
        (64 << 10) - 40,
        200_000,
        1 << 20,
    ];
    let producer = {
        let q = q.clone();
        spawn_bounded(move || {
            for (i, &len) in sizes.iter().enumerate() {
                q.put(Msg {
                    seq: i as u64,
                    body: bytes(len, i as u8),
                })
                .unwrap();
            }
            q.close();
        })
    };
    q.close();
    for (i, &len) in sizes.iter().enumerate() {
        let m = q.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(m.seq, i as u64);
        assert!(
            m.body == bytes(len, i as u8),
            "message {i} of {len} bytes differs"
        );
    }
    producer.join();
    assert!(matches!(
        q.get_timeout(BOUND),
        Err(GetTimeoutError::Disconnected)
    ));
    assert_eq!(q.lost_messages(), 0);
    assert_eq!(q.qsize(), 0);
}

#[test]
fn many_threads_each_message_once() {
    let q = Queue::<(u32, u32)>::with_capacity(4096).unwrap();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let q = q.clone();
            spawn_bounded(move || {
                for i in 0..20_000 {
                    q.put((p, i)).unwrap();
                }
            })
        })
        .collect();
    let consumers: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            q.close();
            spawn_bounded(move || {
                let mut got = Vec::new();
                while let Ok(m) = q.get_timeout(BOUND) {
                    got.push(m);
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join();
    }
    q.close();
    let mut all: Vec<(u32, u32)> = consumers.into_iter().flat_map(|c| c.join()).collect();
    all.sort_unstable();
    let expected: Vec<(u32, u32)> = (0..3)
        .flat_map(|p| (0..20_000).map(move |i| (p, i)))
        .collect();
    assert_eq!(all, expected);
}

#[test]
fn item_limit_and_try_put() {
    let q = Queue::<u32>::builder().max_items(2).build().unwrap();
    q.try_put(1).unwrap();
    q.put(2).unwrap();
    assert!(q.is_full());
    assert!(matches!(q.try_put(3), Err(TryPutError::Full(3))));
    assert!(matches!(
        q.put_timeout(3, Duration::from_millis(10)),
        Err(PutTimeoutError::Timeout(3))
    ));
    assert_eq!(q.qsize(), 2);
    assert_eq!(q.get_timeout(BOUND).unwrap(), 1);
    q.try_put(3).unwrap();
    assert_eq!(
        (q.get_timeout(BOUND).unwrap(), q.get_timeout(BOUND).unwrap()),
        (2, 3)
    );
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
}

/// The pool's put of a message it keeps: the same outcomes as `try_put` (put, no room now, a
/// closed handle's error), the value left with the caller every time.
#[test]
fn try_put_ref_puts_a_borrowed_value_and_reports_no_room() {
    let q = Queue::<Vec<u8>>::with_capacity(4096).unwrap();
    let kept = vec![7; 3000];
    assert!(q.try_put_ref(&kept).unwrap(), "room: put");
    assert!(!q.try_put_ref(&kept).unwrap(), "no room now: not put");
    assert_eq!(q.try_get().unwrap(), kept);
    assert!(q.try_put_ref(&kept).unwrap(), "room again");
    assert_eq!(q.try_get().unwrap(), kept);
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    q.close();
    assert_eq!(
        q.try_put_ref(&kept).unwrap_err().kind(),
        ErrorKind::Closed,
        "a closed handle refuses it as try_put does"
    );
    assert_eq!(kept, vec![7; 3000]);
}

#[test]
fn byte_capacity_blocks_until_consumed() {
    let q = Queue::<Vec<u8>>::with_capacity(4096).unwrap();
    q.put(vec![1; 3000]).unwrap();
    assert!(matches!(
        q.try_put(vec![2; 3000]),
        Err(TryPutError::Full(_))
    ));
    let q2 = q.clone();
    let t = spawn_bounded(move || {
        q2.put_timeout(vec![2; 3000], BOUND).unwrap();
    });
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(q.get_timeout(BOUND).unwrap().len(), 3000);
    t.join();
    assert_eq!(q.get_timeout(BOUND).unwrap(), vec![2; 3000]);
}

#[test]
fn errors_are_returned_in_the_caller_with_the_value() {
    struct Unserializable;
    impl Serialize for Unserializable {
        fn serialize<S: Serializer>(&self, _: S) -> std::result::Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("no"))
        }
    }
    impl<'de> Deserialize<'de> for Unserializable {
        fn deserialize<D: Deserializer<'de>>(_: D) -> std::result::Result<Self, D::Error> {
            Ok(Unserializable)
        }
    }
    let q = Queue::<Unserializable>::new().unwrap();
    let e = q.put(Unserializable).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
    assert!(q.is_empty());

    let small = Queue::<Vec<u8>>::builder()
        .capacity(4096)
        .max_message(10_000)
        .build()
        .unwrap();
    let e = small.put(vec![0; 20_000]).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Codec);
    assert_eq!(e.into_inner().len(), 20_000);
    // Larger than the ring but within the limit: streamed to a consumer that reads meanwhile.
    let reader = {
        let q = small.clone();
        spawn_bounded(move || q.get_timeout(BOUND).unwrap())
    };
    small.put_timeout(vec![5; 9000], BOUND).unwrap();
    assert_eq!(reader.join(), vec![5; 9000]);
    assert!(small.is_empty());
    assert_eq!(small.lost_messages(), 0);

    let closed = Queue::<u8>::new().unwrap();
    closed.close();
    assert_eq!(closed.put(1).unwrap_err().kind(), ErrorKind::Closed);
}

/// A byte sequence serialized element by element. The `act_on`-th time a serialization gets
/// half-way (a `put` of a value larger than the ring tries the free space, which stops early,
/// then measures it: 0, then streams it: 1), it fails or panics, or signals `reached` and
/// waits for `resume`.
struct Late {
    len: usize,
    act_on: u32,
    act: Act,
    halfway: Cell<u32>,
}

enum Act {
    Fail,
    Panic,
    Stall(mpsc::Sender<()>, std::sync::Mutex<mpsc::Receiver<()>>),
    Nothing,
}

impl Late {
    fn new(len: usize, act_on: u32, act: Act) -> Late {
        Late {
            len,
            act_on,
            act,
            halfway: Cell::new(0),
        }
    }
}

impl Serialize for Late {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len))?;
        for i in 0..self.len {
            if i == self.len / 2 && {
                let n = self.halfway.get();
                self.halfway.set(n + 1);
                n == self.act_on
            } {
                match &self.act {
                    Act::Fail => return Err(serde::ser::Error::custom("late failure")),
                    Act::Panic => panic!("a Serialize that panics half-way"),
                    Act::Stall(reached, resume) => {
                        let _ = reached.send(());
                        let _ = resume.lock().unwrap().recv_timeout(BOUND);
                    }
                    Act::Nothing => {}
                }
            }
            seq.serialize_element(&(i as u8))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Late {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        Vec::<u8>::deserialize(d).map(|v| Late::new(v.len(), u32::MAX, Act::Nothing))
    }
}

#[derive(Serialize, Deserialize)]
enum Job {
    Big(Late),
    Small(u32),
}

fn small(r: std::result::Result<Job, GetTimeoutError>) -> std::result::Result<u32, String> {
    match r {
        Ok(Job::Small(n)) => Ok(n),
        Ok(Job::Big(b)) => Err(format!("a Big of {} bytes came out", b.len)),
        Err(e) => Err(e.to_string()),
    }
}

#[test]
fn a_stream_that_fails_half_way_is_aborted_cleanly() {
    // The failure comes in the streaming pass (the third), after chunks are out: the consumer,
    // reading meanwhile, must never see the message, and the next one arrives intact.
    let q = Queue::<Job>::with_capacity(4096).unwrap();
    let consumer = {
        let q = q.clone();
        q.close();
        spawn_bounded(move || (small(q.get_timeout(BOUND)), q.lost_messages()))
    };
    let e = q
        .put_timeout(Job::Big(Late::new(100_000, 1, Act::Fail)), BOUND)
        .unwrap_err();
    let PutTimeoutError::Failed(e) = e else {
        panic!("expected a codec failure")
    };
    assert_eq!(e.kind(), ErrorKind::Codec);
    let Job::Big(late) = e.into_inner() else {
        unreachable!()
    };
    assert_eq!(
        late.halfway.get(),
        2,
        "the failure must come while streaming"
    );
    q.put(Job::Small(3)).unwrap();
    assert_eq!(consumer.join(), (Ok(3), 0));
    assert!(q.is_empty());
}

#[test]
fn a_failed_try_put_of_a_large_message_leaves_the_queue_intact() {
    // Nobody reads: a try_put, put_timeout and put_deadline of more than the ring all fail, and
    // what was in the ring before (nothing, then one message) reads back intact.
    for unread in [false, true] {
        let q = Queue::<Vec<u8>>::with_capacity(4096).unwrap();
        if unread {
            q.put(vec![1; 100]).unwrap();
        }
        assert!(matches!(
            q.try_put(vec![7; 10_000]),
            Err(TryPutError::Full(_))
        ));
        assert!(matches!(
            q.put_timeout(vec![7; 10_000], Duration::from_millis(20)),
            Err(PutTimeoutError::Timeout(_))
        ));
        assert!(matches!(
            q.put_deadline(vec![7; 10_000], Instant::now() + Duration::from_millis(20)),
            Err(PutTimeoutError::Timeout(_))
        ));
        if unread {
            assert_eq!(q.get_timeout(BOUND).unwrap(), vec![1; 100]);
        }
        assert!(q.is_empty());
        // The timed-out streams left aborted chunks, which a get skips.
        assert!(matches!(
            q.get_timeout(Duration::from_millis(20)),
            Err(GetTimeoutError::Timeout)
        ));
        q.put_timeout(vec![2; 50], BOUND).unwrap();
        assert_eq!(q.get_timeout(BOUND).unwrap(), vec![2; 50]);
        // A streamed message still goes through to a reader.
        let reader = {
            let q = q.clone();
            spawn_bounded(move || q.get_timeout(BOUND).unwrap())
        };
        q.put_timeout(vec![3; 20_000], BOUND).unwrap();
        assert_eq!(reader.join(), vec![3; 20_000]);
        assert_eq!((q.qsize(), q.lost_messages()), (0, 0));
    }
}

#[test]
fn a_serialize_that_panics_mid_stream_wedges_nobody() {
    let q = Queue::<Job>::with_capacity(4096).unwrap();
    let consumer = {
        let q = q.clone();
        q.close();
        spawn_bounded(move || {
            // The stream starts, then its producer panics: this get's deadline still holds.
            let first = q.get_timeout(Duration::from_millis(300));
            let second = small(q.get_timeout(BOUND));
            (matches!(first, Err(GetTimeoutError::Timeout)), second)
        })
    };
    let producer = {
        let q = q.clone();
        spawn_bounded(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let _ = q.put_timeout(Job::Big(Late::new(100_000, 1, Act::Panic)), BOUND);
            }))
            .is_err()
        })
    };
    assert!(producer.join(), "the Serialize panicked");
    // Another consumer is not locked out while the first waits.
    let other = q.clone();
    other.close();
    assert!(matches!(
        other.get_timeout(Duration::from_millis(50)),
        Err(GetTimeoutError::Timeout)
    ));
    drop(other);
    std::thread::sleep(Duration::from_millis(400));
    q.put(Job::Small(5)).unwrap();
    assert_eq!(consumer.join(), (true, Ok(5)));
    assert_eq!(q.lost_messages(), 0);
    assert!(q.is_empty());
}

/// Gets with a short deadline until the producer says it is half-way; each must time out.
fn pull_until(reader: &Queue<Job>, reached: &mpsc::Receiver<()>) {
    let end = Instant::now() + BOUND;
    while reached.try_recv().is_err() {
        assert!(Instant::now() < end, "the producer never got half-way");
        assert!(matches!(
            reader.get_timeout(Duration::from_millis(20)),
            Err(GetTimeoutError::Timeout)
        ));
    }
}

/// Starts a producer that puts a 64 KiB message whose serialization stalls half-way (it says so
/// on `reached` and waits for `resume`), then `Small(next)`; it returns whether both puts
/// succeeded.
fn stalled_producer(
    q: &Queue<Job>,
    next: u32,
) -> (mpsc::Receiver<()>, mpsc::Sender<()>, Bounded<bool>) {
    let (reached_tx, reached) = mpsc::channel();
    let (resume, resume_rx) = mpsc::channel();
    let q = q.clone();
    let producer = spawn_bounded(move || {
        let stall = Act::Stall(reached_tx, std::sync::Mutex::new(resume_rx));
        q.put_timeout(Job::Big(Late::new(64 << 10, 1, stall)), BOUND)
            .is_ok()
            && q.put(Job::Small(next)).is_ok()
    });
    (reached, resume, producer)
}

#[test]
fn a_deadline_holds_mid_stream_and_the_message_is_finished_later() {
    let q = Queue::<Job>::with_capacity(4096).unwrap();
    let (reached, resume, producer) = stalled_producer(&q, 1);
    let reader = q.clone();
    reader.close();
    // Gets with short deadlines pull the stream until it stalls half-way: each gives up,
    // keeping what it has, and the next goes on from there.
    pull_until(&reader, &reached);
    assert!(matches!(reader.try_get(), Err(TryGetError::Empty)));
    resume.send(()).unwrap();
    // The same handle finishes the message.
    match reader.get_timeout(BOUND) {
        Ok(Job::Big(b)) => assert_eq!(b.len, 64 << 10),
        Ok(Job::Small(n)) => panic!("got Small({n})"),
        Err(e) => panic!("{e}"),
    }
    assert_eq!(small(reader.get_timeout(BOUND)), Ok(1));
    assert!(producer.join());
    assert_eq!(q.lost_messages(), 0);

    // Another handle cannot finish it: it skips it, counts it lost, and takes the next one.
    let (reached, resume, producer) = stalled_producer(&q, 2);
    pull_until(&reader, &reached);
    resume.send(()).unwrap();
    let other = q.clone();
    other.close();
    assert_eq!(small(other.get_timeout(BOUND)), Ok(2));
    assert!(producer.join());
    assert_eq!(q.lost_messages(), 1);
    assert!(q.is_empty());
}

/// Makes the put lock's owner die (a thread that ends holding a robust mutex) after it counted
/// a message (and a task) but before it published it.
fn die_after_counting<T: Serialize + DeserializeOwned + Send + 'static>(q: &Queue<T>) {
    let q = q.clone();
    // Joined (not just awaited) so that the thread has ended, and its lock is known dead.
    let dying = std::thread::spawn(move || {
        let st = q.st();
        let p = &st.prod;
        assert!(matches!(p.lock.lock(None), Ok(Some(_))));
        let puts = p.puts.load(Ordering::Relaxed);
        p.busy_puts.store(puts, Ordering::Relaxed);
        p.busy_tail
            .store(p.tail.load(Ordering::Relaxed), Ordering::Relaxed);
        if q.seg.joinable {
            st.counts.unfinished.fetch_add(1, Ordering::AcqRel);
        }
        p.puts.store(puts + 1, Ordering::Relaxed);
        p.busy.store(put_state::PUBLISHING, Ordering::Release);
        // The thread ends here, holding the lock.
    });
    within(move || dying.join().unwrap());
}

#[test]
fn a_producer_dead_between_counting_and_publishing_is_undone_without_a_producer() {
    let q = JoinableQueue::<u8>::new().unwrap();
    q.put(1).unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), 1);
    let joiner = {
        let q = q.clone();
        spawn_bounded(move || q.join_timeout(BOUND).is_ok())
    };
    die_after_counting(&q);
    q.task_done().unwrap();
    // The sleeping join is woken by the repair, with no producer coming.
    assert!(
        joiner.join(),
        "join never saw the dead producer's task undone"
    );
    assert_eq!((q.qsize(), q.unfinished_tasks()), (0, 0));

    let plain = Queue::<u8>::new().unwrap();
    die_after_counting(&plain);
    assert_eq!(plain.qsize(), 0);
    plain.put(4).unwrap();
    assert_eq!(plain.get_timeout(BOUND).unwrap(), 4);
    assert_eq!(plain.lost_messages(), 0);
}

#[test]
fn join_applies_the_one_cpu_spin_policy() {
    // The joiner's wait took the spin policy but never looked at the CPU masks: it spun before
    // every sleep even where the consumers that it waits for share its one CPU.
    std::thread::spawn(|| {
        let cpu = crate::sys::cpu_mask().trailing_zeros();
        let mut set = rustix::thread::CpuSet::new();
        set.set(cpu as usize);
        rustix::thread::sched_setaffinity(None, &set).unwrap();
        let q = JoinableQueue::<u8>::new().unwrap();
        q.queue
            .st()
            .cons
            .cpus
            .store(1 << cpu, std::sync::atomic::Ordering::Relaxed);
        q.join();
        assert!(!q.queue.seg.join_spin.spins(), "a join on one CPU spins");
    })
    .join()
    .unwrap();
}

#[test]
fn joinable_counts_tasks() {
    let q = JoinableQueue::<u8>::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    let worker = {
        let q = q.clone();
        spawn_bounded(move || {
            for _ in 0..2 {
                q.get_timeout(BOUND).unwrap();
                std::thread::sleep(Duration::from_millis(5));
                q.task_done().unwrap();
            }
        })
    };
    assert_eq!(q.join_timeout(BOUND), Ok(()));
    worker.join();
    assert_eq!(q.task_done(), Err(TaskDoneError));
}

#[test]
fn handles_pass_as_their_own_type_only() {
    use crate::handles;
    let q = Queue::<u32>::new().unwrap();
    let (bytes, fds) = handles::encode_with_fds(&q).unwrap();
    let back: Queue<u32> = handles::with_incoming(fds, || codec::decode(&bytes)).unwrap();
    back.put(9).unwrap();
    assert_eq!(q.get_timeout(BOUND).unwrap(), 9);
    let (bytes, fds) = handles::encode_with_fds(&q).unwrap();
    assert!(handles::with_incoming(fds, || codec::decode::<Queue<u64>>(&bytes)).is_err());
    let (bytes, fds) = handles::encode_with_fds(&q).unwrap();
    assert!(handles::with_incoming(fds, || codec::decode::<JoinableQueue<u32>>(&bytes)).is_err());
}

#[test]
fn disconnection_follows_handles() {
    let q = Queue::<u8>::new().unwrap();
    let producer = q.clone();
    q.close();
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
    let t = {
        let q = q.clone();
        q.close();
        spawn_bounded(move || q.get_timeout(Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(20));
    drop(producer);
    assert!(matches!(t.join(), Err(GetTimeoutError::Disconnected)));
}

mod hostile;
