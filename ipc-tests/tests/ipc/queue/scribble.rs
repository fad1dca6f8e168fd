//! A process scribbling over a queue's shared state and ring while others use it.

use super::*;

/// Writes random bytes over the queue's shared state (its two locks included) and its ring for
/// 2 s, once `attached` says that every process of the test has opened the queue (the segment's
/// own header, before the state, is left alone: it is read only when a handle is opened).
fn scribble_ring(args: (Queue<ByteBuf>, u64, Event)) -> u64 {
    use std::os::unix::fs::FileExt;
    let (_q, cap, attached) = args;
    assert!(
        attached.wait_timeout(Duration::from_secs(60)).is_ok(),
        "the consumer never said it attached"
    );
    let file = std::fs::read_dir("/proc/self/fd")
        .expect("fd list")
        .filter_map(|e| e.ok())
        .find(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy().contains("memfd:multiproc-Queue"))
        })
        .map(|e| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(e.path())
                .expect("reopen the segment")
        })
        .expect("the queue's segment among the descriptors");
    let len = file.metadata().expect("segment size").len();
    let ring = len - cap;
    // The segment header's size (`HEADER_LEN` in src/shm/region.rs): the state follows it.
    const STATE_AT: u64 = 128;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let end = Instant::now() + Duration::from_secs(2);
    let mut writes = 0;
    while Instant::now() < end {
        let junk = next().to_le_bytes();
        let n = 1 + (next() % 8) as usize;
        let at = if next() % 3 == 0 {
            STATE_AT + next() % (ring - STATE_AT - 8)
        } else {
            ring + next() % (cap - 8)
        };
        file.write_at(&junk[..n], at).expect("scribble");
        writes += 1;
        if writes % 64 == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    writes
}

/// Gets with short deadlines for two seconds; returns how many messages and errors it saw.
fn get_for_a_while(q: Queue<ByteBuf>) -> (u64, u64) {
    q.close();
    let end = Instant::now() + Duration::from_secs(2);
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < end {
        match q.get_timeout(Duration::from_millis(5)) {
            Ok(m) => {
                assert!(m.len() <= 1 << 20, "a message over the limit came out");
                ok += 1;
            }
            Err(GetTimeoutError::Failed(_)) => failed += 1,
            Err(_) => {}
        }
    }
    (ok, failed)
}

fn consume_for_a_while(args: (Queue<ByteBuf>, Event)) -> (u64, u64) {
    let (q, attached) = args;
    attached.set();
    get_for_a_while(q)
}

pub(super) fn scribbled_state_and_ring_give_typed_errors() -> Result<(), String> {
    let q = Queue::<ByteBuf>::builder()
        .capacity(64 << 10)
        .max_message(1 << 20)
        .build()
        .ctx("queue")?;
    let cap = q.capacity() as u64;
    let attached = Event::new().ctx("event")?;
    let mut scribbler = Process::new(scribble_ring, (q.clone(), cap, attached.clone()));
    let mut consumer = Process::new(consume_for_a_while, (q.clone(), attached));
    scribbler.start().ctx("start scribbler")?;
    consumer.start().ctx("start consumer")?;
    let producer = {
        let q = q.clone();
        std::thread::spawn(move || {
            let end = Instant::now() + Duration::from_secs(2);
            let mut i = 0usize;
            while Instant::now() < end {
                let len = (i * 7919) % (200 << 10);
                let _ = q.put_timeout(ByteBuf::from(vec![i as u8; len]), Duration::from_millis(5));
                i += 1;
            }
        })
    };
    let (ok, failed) = get_for_a_while(q.clone());
    producer.join().map_err(|_| "producer panicked")?;
    let writes = scribbler.join().ctx("scribbler")?;
    let (c_ok, c_failed) = consumer.join().ctx("consumer (it must not crash)")?;
    eprintln!(
        "queue::scribbled: {writes} random writes over the state and ring; {} messages taken, \
         {} typed errors",
        ok + c_ok,
        failed + c_failed
    );
    ensure!(writes > 0, "the scribbler wrote nothing");
    Ok(())
}
