//! What decoding really allocates, measured by a counting allocator: hostile payloads of every
//! container shape stay within the documented budget (twice it, for collections' spare
//! capacity), and fail with `OverBudget`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use multiproc::codec::{self, CodecError, DECODE_AMPLIFICATION, DECODE_SLACK};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(live, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Tests run on threads of one process and the counters are global: each test holds this for
/// its whole run, so that no other test allocates while one measures.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner())
}

/// Decodes `bytes` as `T` and returns the result with the peak of extra memory it took.
fn measured<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> (Result<T, CodecError>, usize) {
    let before = LIVE.load(Ordering::Relaxed);
    PEAK.store(before, Ordering::Relaxed);
    let out = codec::decode::<T>(bytes);
    let peak = PEAK.load(Ordering::Relaxed) - before;
    (out, peak)
}

fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
    out
}

/// The documented bound, with room for spare capacity.
fn bound(len: usize) -> usize {
    2 * (DECODE_AMPLIFICATION * len + DECODE_SLACK) + len
}

fn assert_refused_within_bound<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) {
    let (out, peak) = measured::<T>(bytes);
    assert!(
        matches!(out, Err(CodecError::OverBudget { .. })),
        "{what}: {:?}",
        out.err()
    );
    assert_peak_within_bound(what, bytes, peak);
}

fn assert_peak_within_bound(what: &str, bytes: &[u8], peak: usize) {
    assert!(
        peak <= bound(bytes.len()),
        "{what}: {} bytes took {peak} bytes",
        bytes.len()
    );
}

#[test]
fn hostile_sequences() {
    let _serial = serial();
    let mut bytes = varint(200_000);
    bytes.resize(bytes.len() + 200_000, 0);
    assert_refused_within_bound::<Vec<Option<[[u64; 32]; 32]>>>("Vec of None", &bytes);
    // 24 bytes an element: within the budget, so it decodes, and stays within the bound.
    let (out, peak) = measured::<Vec<Option<Vec<u64>>>>(&bytes);
    assert_eq!(out.unwrap().len(), 200_000);
    assert_peak_within_bound("Vec of None vectors", &bytes, peak);
}

#[test]
fn hostile_maps() {
    let _serial = serial();
    let n = 200_000u64;
    let mut bytes = varint(n);
    for k in 0..n {
        bytes.extend(varint(k));
        bytes.push(0);
    }
    assert_refused_within_bound::<HashMap<u64, Option<[[u64; 32]; 4]>>>("HashMap", &bytes);
    assert_refused_within_bound::<BTreeMap<u64, Option<[[u64; 32]; 4]>>>("BTreeMap", &bytes);
}

#[test]
fn hostile_options_and_nested_arrays() {
    let _serial = serial();
    let mut inner = varint(100_000);
    inner.resize(inner.len() + 100_000, 0);
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(&inner);
    assert_refused_within_bound::<Option<Vec<Option<[[u64; 32]; 16]>>>>("Some(Vec)", &bytes);
    let mut bytes = Vec::new();
    for _ in 0..8 {
        bytes.extend_from_slice(&inner);
    }
    assert_refused_within_bound::<[Vec<Option<[[u32; 32]; 8]>>; 8]>("[Vec; 8]", &bytes);
}

#[test]
fn hostile_zero_sized_elements() {
    let _serial = serial();
    assert_refused_within_bound::<Vec<()>>("Vec<()>", &varint(1 << 62));
    let mut bytes = varint(1000);
    for _ in 0..1000 {
        bytes.extend(varint(1 << 20));
    }
    assert_refused_within_bound::<Vec<Vec<()>>>("Vec<Vec<()>>", &bytes);
}

#[test]
fn ordinary_values_decode_within_the_bound() {
    let _serial = serial();
    let v: Vec<Option<String>> = (0..100_000)
        .map(|i| (i % 3 == 0).then(String::new))
        .collect();
    let bytes = codec::encode(&v).unwrap();
    let (out, peak) = measured::<Vec<Option<String>>>(&bytes);
    assert_eq!(out.unwrap(), v);
    assert!(peak <= bound(bytes.len()), "{peak}");
}

/// Random buffers made of plausible pieces (small and huge varint lengths, zeros, option
/// tags), decoded as several container types: never more than the bound, whatever the outcome.
#[test]
fn random_hostile_buffers_stay_within_the_bound() {
    let _serial = serial();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for _ in 0..1500 {
        let mut bytes = Vec::new();
        let pieces = 1 + next() % 24;
        for _ in 0..pieces {
            match next() % 5 {
                0 => bytes.extend(varint(next() % 200_000)),
                1 => bytes.extend(varint(next() >> (next() % 64))),
                2 => bytes.resize(bytes.len() + (next() % 5000) as usize, 0),
                3 => bytes.push(1),
                _ => bytes.push(next() as u8),
            }
        }
        macro_rules! check {
            ($t:ty) => {{
                let (_, peak) = measured::<$t>(&bytes);
                assert_peak_within_bound(stringify!($t), &bytes, peak);
            }};
        }
        check!(Vec<Vec<Option<[u64; 16]>>>);
        check!(HashMap<u16, Vec<()>>);
        check!(BTreeMap<u32, Option<Vec<[u32; 8]>>>);
        check!(Option<Vec<(u8, Vec<String>)>>);
        check!((Vec<()>, Vec<Vec<()>>, [Vec<Option<u128>>; 3]));
    }
}

/// A large enum whose small variant encodes in one byte.
#[derive(serde::Deserialize)]
#[allow(dead_code, clippy::large_enum_variant)] // lopsided on purpose
enum Lopsided {
    Small,
    Large([[u64; 32]; 32], [[u64; 32]; 16]),
}

#[test]
fn hostile_boxed_options_and_enums() {
    // A collection of boxes is charged the pointers, but each box allocates its pointee: the
    // option or enum inside is charged its own size where it is decoded.
    let _serial = serial();
    let n = 5_000u64;
    let mut bytes = varint(n);
    bytes.extend(std::iter::repeat_n(0u8, n as usize));
    assert_refused_within_bound::<Vec<Box<Option<[[u64; 32]; 32]>>>>("Vec<Box<Option>>", &bytes);
    assert_refused_within_bound::<Vec<Box<Lopsided>>>("Vec<Box<enum>>", &bytes);
    assert_refused_within_bound::<HashMap<u8, Box<Option<[[u64; 32]; 32]>>>>("map of boxes", &{
        let mut b = varint(200);
        for k in 0..200u8 {
            b.push(k);
            b.push(0);
        }
        b
    });
}
