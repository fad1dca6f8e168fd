//! In-process tests of the queue (threads); `ipc-tests` has the multi-process ones.

use std::time::Duration;

use super::*;

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
        std::thread::spawn(move || {
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
    producer.join().unwrap();
    assert!(matches!(q.get(), Err(GetError::Disconnected)));
    assert_eq!(q.lost_messages(), 0);
    assert_eq!(q.qsize(), 0);
}

#[test]
fn many_threads_each_message_once() {
    let q = Queue::<(u32, u32)>::with_capacity(4096).unwrap();
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let q = q.clone();
            std::thread::spawn(move || {
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
            std::thread::spawn(move || {
                let mut got = Vec::new();
                while let Ok(m) = q.get() {
                    got.push(m);
                }
                got
            })
        })
        .collect();
    for p in producers {
        p.join().unwrap();
    }
    q.close();
    let mut all: Vec<(u32, u32)> = consumers
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
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
    assert_eq!(q.get().unwrap(), 1);
    q.try_put(3).unwrap();
    assert_eq!((q.get().unwrap(), q.get().unwrap()), (2, 3));
    assert!(matches!(q.try_get(), Err(TryGetError::Empty)));
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
    let t = std::thread::spawn(move || q2.put(vec![2; 3000]).unwrap());
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(q.get().unwrap().len(), 3000);
    t.join().unwrap();
    assert_eq!(q.get().unwrap(), vec![2; 3000]);
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
        std::thread::spawn(move || q.get().unwrap())
    };
    small.put(vec![5; 9000]).unwrap();
    assert_eq!(reader.join().unwrap(), vec![5; 9000]);
    assert!(small.is_empty());
    assert_eq!(small.lost_messages(), 0);

    let closed = Queue::<u8>::new().unwrap();
    closed.close();
    assert_eq!(closed.put(1).unwrap_err().kind(), ErrorKind::Closed);
}

#[test]
fn a_stream_that_fails_half_way_is_aborted_cleanly() {
    // A sequence whose Serialize fails after many bytes: the consumer must never see it.
    struct FailsLate(usize);
    impl Serialize for FailsLate {
        fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            let mut seq = s.serialize_seq(Some(self.0 + 1))?;
            for i in 0..self.0 {
                seq.serialize_element(&(i as u8))?;
            }
            Err(serde::ser::Error::custom("late failure"))
        }
    }
    impl<'de> Deserialize<'de> for FailsLate {
        fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
            Vec::<u8>::deserialize(d).map(|v| FailsLate(v.len()))
        }
    }
    let q = Queue::<FailsLate>::with_capacity(4096).unwrap();
    let consumer = {
        let q = q.clone();
        q.close();
        std::thread::spawn(move || q.get().map(|v| v.0))
    };
    assert!(q.put(FailsLate(100_000)).is_err());
    q.close();
    assert!(matches!(
        consumer.join().unwrap(),
        Err(GetError::Disconnected)
    ));
    assert_eq!(q.lost_messages(), 0);
}

#[test]
fn joinable_counts_tasks() {
    let q = JoinableQueue::<u8>::new().unwrap();
    q.put(1).unwrap();
    q.put(2).unwrap();
    assert_eq!(q.unfinished_tasks(), 2);
    let worker = {
        let q = q.clone();
        std::thread::spawn(move || {
            for _ in 0..2 {
                q.get().unwrap();
                std::thread::sleep(Duration::from_millis(5));
                q.task_done().unwrap();
            }
        })
    };
    assert!(q.join_timeout(Duration::from_secs(30)));
    worker.join().unwrap();
    assert_eq!(q.task_done(), Err(TaskDoneError));
}

#[test]
fn handles_pass_as_their_own_type_only() {
    use crate::process::handles;
    let q = Queue::<u32>::new().unwrap();
    let (bytes, fds) = handles::encode_with_fds(&q).unwrap();
    let back: Queue<u32> = handles::with_incoming(fds, || codec::decode(&bytes)).unwrap();
    back.put(9).unwrap();
    assert_eq!(q.get().unwrap(), 9);
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
        std::thread::spawn(move || q.get_timeout(Duration::from_secs(30)))
    };
    std::thread::sleep(Duration::from_millis(20));
    drop(producer);
    assert!(matches!(
        t.join().unwrap(),
        Err(GetTimeoutError::Disconnected)
    ));
}
