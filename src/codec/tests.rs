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
    assert!(
        matches!(err, CodecError::Encode(ref why) if why.contains("refused") || !why.is_empty())
    );
    assert_eq!(buf, [1, 2, 3]);
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
