use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
enum Shape {
    Empty,
    Point(i64, i64),
    Named { name: String, tags: Vec<String> },
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Message {
    id: u64,
    ratio: f64,
    flag: bool,
    body: Vec<u8>,
    shapes: Vec<Shape>,
    index: BTreeMap<String, u32>,
    maybe: Option<(u8, char)>,
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        (any::<i64>(), any::<i64>()).prop_map(|(a, b)| Shape::Point(a, b)),
        (".{0,12}", prop::collection::vec(".{0,6}", 0..4))
            .prop_map(|(name, tags)| Shape::Named { name, tags }),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    (
        any::<u64>(),
        any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()),
        any::<bool>(),
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(shape(), 0..6),
        prop::collection::btree_map(".{0,8}", any::<u32>(), 0..5),
        any::<Option<(u8, char)>>(),
    )
        .prop_map(|(id, ratio, flag, body, shapes, index, maybe)| Message {
            id,
            ratio,
            flag,
            body,
            shapes,
            index,
            maybe,
        })
}

/// Frames `payloads` into one byte stream.
fn stream(payloads: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        out.extend_from_slice(&encode_frame_header(p.len(), DEFAULT_MAX_FRAME).unwrap());
        out.extend_from_slice(p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn values_round_trip(m in message()) {
        let bytes = encode(&m).unwrap();
        prop_assert_eq!(decode::<Message>(&bytes).unwrap(), m);
    }

    /// The serializer that keeps failure messages forwards every call: a value that encodes
    /// encodes through it too, with no failure recorded.
    #[test]
    fn the_message_keeping_pass_agrees_with_postcard(m in message()) {
        prop_assert!(encode(&m).is_ok());
        prop_assert_eq!(keep::failure_of(&m), None);
    }

    #[test]
    fn every_strict_prefix_is_an_error(m in message()) {
        let bytes = encode(&m).unwrap();
        for cut in 0..bytes.len() {
            prop_assert!(decode::<Message>(&bytes[..cut]).is_err(), "prefix of {} decoded", cut);
        }
    }

    #[test]
    fn trailing_bytes_are_refused(m in message(), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let mut bytes = encode(&m).unwrap();
        bytes.extend_from_slice(&extra);
        prop_assert_eq!(
            decode::<Message>(&bytes).unwrap_err(),
            CodecError::TrailingBytes { extra: extra.len() }
        );
    }

    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        // Any outcome but a panic (or an abort from a huge allocation) is fine.
        let _ = decode::<Message>(&bytes);
        let _ = decode::<Vec<Vec<String>>>(&bytes);
        let _ = decode::<(u128, Option<Shape>, BTreeMap<u8, Vec<u64>>)>(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(m in message(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6)) {
        let mut bytes = encode(&m).unwrap();
        if bytes.is_empty() { return Ok(()); }
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        let _ = decode::<Message>(&bytes);
    }

    #[test]
    fn frames_survive_any_split(payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..8),
                                cuts in prop::collection::vec(1usize..64, 1..40)) {
        let bytes = stream(&payloads);
        let mut dec = FrameDecoder::new(1024);
        let mut got = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        while at < bytes.len() {
            let n = (*cut.next().unwrap()).min(bytes.len() - at);
            // Alternate between the two ways of feeding the decoder.
            if at % 2 == 0 {
                dec.push(&bytes[at..at + n]);
            } else {
                let spare = dec.spare(n);
                spare[..n].copy_from_slice(&bytes[at..at + n]);
                dec.commit(n);
            }
            at += n;
            while let Some(frame) = dec.next_frame().unwrap() {
                got.push(frame);
            }
        }
        prop_assert_eq!(got, payloads);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn oversized_headers_are_refused_before_allocation(len in 1025u32.., junk in prop::collection::vec(any::<u8>(), 0..16)) {
        let mut dec = FrameDecoder::new(1024);
        dec.push(&len.to_le_bytes());
        dec.push(&junk);
        let err = dec.next_frame().unwrap_err();
        prop_assert_eq!(err.clone(), CodecError::Oversized { len: len as usize, limit: 1024 });
        // Poisoned for good: the stream cannot be resynchronised.
        dec.push(&[0, 0, 0, 0]);
        prop_assert_eq!(dec.next_frame().unwrap_err(), err);
        // It never reserved room for the announced length.
        prop_assert!(dec.capacity() < 4096);
    }
}

#[test]
fn a_huge_announced_length_inside_a_value_does_not_allocate() {
    // A Vec<u64> claiming 2^62 elements, followed by nothing.
    let mut bytes = Vec::new();
    let mut n: u64 = 1 << 62;
    while n >= 0x80 {
        bytes.push((n as u8) | 0x80);
        n >>= 7;
    }
    bytes.push(n as u8);
    assert!(decode::<Vec<u64>>(&bytes).is_err());
    assert!(decode::<String>(&bytes).is_err());
}

#[test]
fn spare_reserves_at_most_one_step_ahead() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.push(&(512u32 << 20).to_le_bytes()); // announces 512 MiB
    let spare = dec.spare(1).len();
    assert!(
        spare <= RESERVE_STEP_FOR_TESTS,
        "reserved {spare} bytes ahead"
    );
}

const RESERVE_STEP_FOR_TESTS: usize = 1 << 20;

#[test]
fn encode_failure_leaves_the_buffer_untouched() {
    struct Fails;
    impl Serialize for Fails {
        fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
            Err(serde::ser::Error::custom("refused"))
        }
    }
    let mut buf = vec![1, 2, 3];
    let err = encode_into(&(5u8, Fails), &mut buf).unwrap_err();
    assert!(matches!(err, CodecError::Encode(ref why) if why.contains("refused")));
    assert_eq!(buf, [1, 2, 3]);
}

/// A `Serialize` that fails with a message, deep inside other values.
struct Refuses(&'static str);
impl Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom(self.0))
    }
}

#[derive(Serialize)]
struct Job {
    id: u32,
    parts: Vec<Option<Refuses>>,
}

#[derive(Serialize)]
enum Wrapped {
    Job(Job),
}

#[test]
fn a_failed_serialize_keeps_its_message_and_names_the_type_that_failed() {
    // The value itself: its message, once (the caller knows the type it encoded).
    let err = encode(&Refuses("no thanks")).unwrap_err();
    assert_eq!(err, CodecError::Encode("no thanks".into()));
    assert_eq!(err.to_string(), "value could not be serialized: no thanks");
    // Deep inside: the message and the type whose Serialize failed.
    let job = Wrapped::Job(Job {
        id: 1,
        parts: vec![None, Some(Refuses("part 2 is poisoned"))],
    });
    let CodecError::Encode(why) = encode(&job).unwrap_err() else {
        panic!("an encode error");
    };
    assert_eq!(why.matches("part 2 is poisoned").count(), 1, "{why}");
    assert!(why.contains("Refuses"), "{why}");
    // A map's value that fails, right after an earlier encoding's failure: only this one's.
    let mut map = BTreeMap::new();
    map.insert(7u8, Refuses("bad entry"));
    let CodecError::Encode(why) = encode(&map).unwrap_err() else {
        panic!("an encode error");
    };
    assert!(why.starts_with("bad entry ("), "{why}");
    assert!(!why.contains("poisoned"), "{why}");
    // Postcard's own refusals still say what they are.
    struct NoLen;
    impl Serialize for NoLen {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeSeq;
            s.serialize_seq(None)?.end()
        }
    }
    let CodecError::Encode(why) = encode(&NoLen).unwrap_err() else {
        panic!("an encode error");
    };
    assert!(!why.is_empty());
    // And a value that serializes is unaffected by the last failure.
    let fine = BTreeMap::from([(1u8, "one".to_string())]);
    assert_eq!(
        encode(&fine).unwrap(),
        postcard::to_allocvec(&fine).unwrap()
    );
}

thread_local! {
    /// Where in the stack each call of a [`Probe`] ran.
    static PROBES: std::cell::RefCell<Vec<usize>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A `Serialize` that fails, noting how deep in the stack it was called.
struct Probe;
impl Serialize for Probe {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        let here = 0u8;
        PROBES.with(|p| p.borrow_mut().push(std::ptr::addr_of!(here) as usize));
        Err(serde::ser::Error::custom("the leaf refuses"))
    }
}

/// A value nested far deeper than any decodable one, failing at its leaf.
#[derive(Serialize)]
enum Chain {
    Link(Box<Chain>),
    End(Probe),
}

#[test]
fn keeping_a_message_needs_little_more_stack_than_the_failed_encoding() {
    // The failed encoding went this deep without overflowing: the pass that recovers its
    // message must not need much more, or a deep value that fails becomes a stack overflow
    // (an abort of the whole process) instead of an error.
    let run = |depth: usize| {
        let mut chain = Chain::End(Probe);
        for _ in 0..depth {
            chain = Chain::Link(Box::new(chain));
        }
        let top = 0u8;
        let top = std::ptr::addr_of!(top) as usize;
        PROBES.with(|p| p.borrow_mut().clear());
        let err = encode(&chain).unwrap_err();
        let probes = PROBES.with(|p| p.borrow_mut().split_off(0));
        // Unlink iteratively (the recursive drop of 20,000 boxes is deep too).
        let mut next = Some(chain);
        while let Some(Chain::Link(inner)) = next.take() {
            next = Some(*inner);
        }
        (err, top, probes)
    };
    let (err, top, probes) = std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || run(20_000))
        .unwrap()
        .join()
        .unwrap();
    assert!(matches!(err, CodecError::Encode(_)), "{err:?}");
    let [plain, keeping] = probes[..] else {
        panic!("the leaf ran {} times, not twice", probes.len());
    };
    let (plain, keeping) = (top.abs_diff(plain), top.abs_diff(keeping));
    assert!(
        keeping <= plain + plain / 4,
        "the failed encoding used {plain} bytes of stack, the message-keeping pass {keeping}"
    );
    // So a value whose encoding takes 60% of a thread's stack fails with an error there, not
    // with an overflow that aborts the process.
    let stack = 2 << 20;
    let depth = stack * 6 / 10 / (plain / 20_000);
    let (err, _, _) = std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || run(depth))
        .unwrap()
        .join()
        .unwrap();
    assert!(matches!(err, CodecError::Encode(_)), "{err:?}");
}

#[test]
fn frame_header_respects_limit() {
    assert_eq!(
        encode_frame_header(11, 10),
        Err(CodecError::Oversized { len: 11, limit: 10 })
    );
    assert_eq!(
        encode_frame_header(usize::MAX, usize::MAX),
        Err(CodecError::Oversized {
            len: usize::MAX,
            limit: MAX_FRAME_LIMIT
        })
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Large frames (assembled apart, handed out without a copy) mixed with small ones, fed in
    /// arbitrary pieces, taken alternately by value and by reference.
    #[test]
    fn large_and_small_frames_survive_any_split(
        sizes in prop::collection::vec(prop_oneof![0usize..100, 60_000usize..300_000], 1..6),
        cuts in prop::collection::vec(1usize..200_000, 1..12),
        by_ref in any::<bool>(),
    ) {
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| (0..n).map(|j| (j as u8).wrapping_add(i as u8 * 7)).collect())
            .collect();
        let bytes = stream(&payloads);
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
        let mut got: Vec<Vec<u8>> = Vec::new();
        let mut at = 0;
        let mut cut = cuts.iter().cycle();
        let mut take_ref = by_ref;
        while at < bytes.len() {
            let n = (*cut.next().unwrap()).min(bytes.len() - at);
            if at % 3 == 0 {
                dec.push(&bytes[at..at + n]);
            } else {
                let spare = dec.spare(n);
                let k = n.min(spare.len());
                spare[..k].copy_from_slice(&bytes[at..at + k]);
                dec.commit(k);
                at += k;
                continue;
            }
            at += n;
            // Memory stays within twice what arrived plus one step.
            prop_assert!(dec.capacity() <= 2 * bytes.len() + (2 << 20));
            loop {
                take_ref = !take_ref;
                let next = if take_ref {
                    dec.next_frame_ref().unwrap().map(<[u8]>::to_vec)
                } else {
                    dec.next_frame().unwrap()
                };
                match next {
                    Some(f) => got.push(f),
                    None => break,
                }
            }
        }
        while let Some(f) = dec.next_frame().unwrap() {
            got.push(f);
        }
        prop_assert_eq!(got.len(), payloads.len());
        for (g, p) in got.iter().zip(&payloads) {
            prop_assert!(g == p, "a frame of {} bytes came back different", p.len());
        }
        prop_assert_eq!(dec.buffered(), 0);
    }
}

#[test]
fn a_large_frame_reserves_with_what_arrives() {
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.push(&(512u32 << 20).to_le_bytes());
    dec.push(&[1; 100_000]); // a large frame starts: 100 kB of 512 MiB
    let spare = dec.spare(1).len();
    assert!(spare <= 1 << 20, "offered {spare} bytes");
    assert!(dec.capacity() <= 4 << 20, "holds {} bytes", dec.capacity());
}

/// A varint as postcard writes it.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

fn budget_for(len: usize) -> usize {
    DECODE_AMPLIFICATION * len + DECODE_SLACK
}

#[test]
fn a_sequence_of_nones_cannot_amplify() {
    // The reported case: 200,003 bytes that would build 1.6 GB of `Option<[[u64; 32]; 32]>`.
    let mut bytes = varint(200_000);
    bytes.resize(bytes.len() + 200_000, 0);
    assert_eq!(bytes.len(), 200_003);
    assert_eq!(
        decode::<Vec<Option<[[u64; 32]; 32]>>>(&bytes).unwrap_err(),
        CodecError::OverBudget {
            budget: budget_for(200_003)
        }
    );
    // The same bytes are a perfectly good `Vec<Option<u8>>`.
    assert_eq!(decode::<Vec<Option<u8>>>(&bytes).unwrap().len(), 200_000);
}

#[test]
fn zero_sized_elements_are_bounded() {
    // Nine bytes announcing 2^62 units: refused at once, not counted through.
    let bytes = varint(1 << 62);
    assert_eq!(bytes.len(), 9);
    assert_eq!(
        decode::<Vec<()>>(&bytes).unwrap_err(),
        CodecError::OverBudget {
            budget: budget_for(9)
        }
    );
    assert!(matches!(
        decode::<std::collections::HashSet<()>>(&bytes),
        Err(CodecError::OverBudget { .. })
    ));
    // The budget holds across the whole payload, not per collection: 100 inner vectors of a
    // million units each, in a few hundred bytes.
    let mut bytes = varint(100);
    for _ in 0..100 {
        bytes.extend(varint(1_000_000));
    }
    assert!(matches!(
        decode::<Vec<Vec<()>>>(&bytes),
        Err(CodecError::OverBudget { .. })
    ));
    // Within the slack, zero-sized elements are fine.
    let ok = encode(&vec![(); 1000]).unwrap();
    assert_eq!(decode::<Vec<()>>(&ok).unwrap().len(), 1000);
}

#[test]
fn maps_cannot_amplify() {
    // Distinct keys, one byte each after the first 128, values `None`: 2–3 bytes an entry for
    // 2 KiB of memory.
    let n = 100_000u64;
    let mut bytes = varint(n);
    for k in 0..n {
        bytes.extend(varint(k));
        bytes.push(0);
    }
    let err = decode::<BTreeMap<u64, Option<[[u64; 32]; 8]>>>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::OverBudget { .. }), "{err}");
    let err = decode::<std::collections::HashMap<u64, Option<[[u64; 32]; 8]>>>(&bytes).unwrap_err();
    assert!(matches!(err, CodecError::OverBudget { .. }), "{err}");
    // Zero-sized keys and values still count one byte an entry.
    let bytes = varint(1 << 40);
    assert!(matches!(
        decode::<BTreeMap<(), ()>>(&bytes),
        Err(CodecError::OverBudget { .. })
    ));
    // Ordinary maps decode.
    let m: BTreeMap<u64, Option<[u64; 4]>> = (0..1000).map(|k| (k, Some([k; 4]))).collect();
    assert_eq!(
        decode::<BTreeMap<u64, Option<[u64; 4]>>>(&encode(&m).unwrap()).unwrap(),
        m
    );
}

#[test]
fn options_and_nested_arrays_cannot_amplify() {
    // `Some` of a vector of Nones, inside a fixed array of vectors.
    let mut inner = varint(50_000);
    inner.resize(inner.len() + 50_000, 0);
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&inner);
    assert!(matches!(
        decode::<Option<Vec<Option<[[u64; 32]; 16]>>>>(&bytes),
        Err(CodecError::OverBudget { .. })
    ));
    let mut bytes = Vec::new();
    for _ in 0..4 {
        bytes.extend_from_slice(&inner);
    }
    assert!(matches!(
        decode::<[Vec<Option<[[u32; 16]; 16]>>; 4]>(&bytes),
        Err(CodecError::OverBudget { .. })
    ));
    // A fixed array is paid for by its own bytes: big ones decode.
    let big = vec![[[3u32; 16]; 16]; 100];
    assert_eq!(
        decode::<Vec<[[u32; 16]; 16]>>(&encode(&big).unwrap()).unwrap(),
        big
    );
}

#[test]
fn recursion_is_bounded() {
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    enum Tree {
        Leaf,
        Node(Box<Tree>, Box<Tree>),
    }
    // A million levels of `Node(Node(...` would overflow any stack.
    let bytes = vec![1u8; 1_000_000];
    assert_eq!(
        decode::<Tree>(&bytes).unwrap_err(),
        CodecError::TooDeep { limit: MAX_DEPTH }
    );
    // Shallow trees are fine.
    let mut t = Tree::Leaf;
    for _ in 0..20 {
        t = Tree::Node(Box::new(t), Box::new(Tree::Leaf));
    }
    assert_eq!(decode::<Tree>(&encode(&t).unwrap()).unwrap(), t);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// The decoder reads exactly what postcard's own reads, and fails where it fails.
    #[test]
    fn agrees_with_postcard(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        type T = (u16, i32, Option<i64>, u128, i128, char, bool, f32, Vec<String>);
        let ours = decode::<T>(&bytes);
        let theirs = postcard::take_from_bytes::<T>(&bytes);
        match (&ours, &theirs) {
            (Ok(a), Ok((b, []))) => {
                prop_assert_eq!(format!("{a:?}"), format!("{b:?}"))
            }
            (Err(CodecError::TrailingBytes { extra }), Ok((_, rest))) => {
                prop_assert_eq!(*extra, rest.len())
            }
            (Err(CodecError::Truncated), Err(postcard::Error::DeserializeUnexpectedEnd)) => {}
            (Err(CodecError::Invalid(_)), Err(e)) if *e != postcard::Error::DeserializeUnexpectedEnd => {}
            _ => prop_assert!(false, "ours {:?}, postcard's {:?}", ours, theirs),
        }
    }
}

#[test]
fn a_poisoned_decoder_holds_nothing_more() {
    let mut dec = FrameDecoder::new(1024);
    dec.push(&u32::MAX.to_le_bytes());
    assert!(matches!(
        dec.next_frame(),
        Err(CodecError::Oversized { .. })
    ));
    // 64 MiB more, by every way in: none of it is kept.
    let chunk = vec![7u8; 1 << 20];
    for i in 0..64 {
        if i % 2 == 0 {
            dec.push(&chunk);
        } else {
            let spare = dec.spare(chunk.len());
            spare[..chunk.len()].copy_from_slice(&chunk);
            dec.commit(chunk.len());
        }
        assert!(dec.capacity() <= 4 << 20, "holds {} bytes", dec.capacity());
        assert!(matches!(
            dec.next_frame(),
            Err(CodecError::Oversized { .. })
        ));
    }
}

#[test]
fn a_large_frame_reserves_at_most_what_arrived_ahead() {
    let len = 128usize << 20;
    let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME);
    dec.push(&(len as u32).to_le_bytes());
    let mut arrived = 0usize;
    let chunk = vec![1u8; 64 * 1024];
    while arrived < 40 << 20 {
        let spare = dec.spare(1);
        let n = spare.len().min(chunk.len());
        spare[..n].copy_from_slice(&chunk[..n]);
        dec.commit(n);
        arrived += n;
        let ahead = dec.capacity().saturating_sub(arrived);
        assert!(
            ahead <= arrived.max(RESERVE_STEP_FOR_TESTS) + READ_CHUNK_FOR_TESTS,
            "{ahead} bytes reserved ahead after {arrived}"
        );
    }
}

const READ_CHUNK_FOR_TESTS: usize = 64 * 1024;
