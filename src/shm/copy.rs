//! Copies in and out of memory that other processes may write at the same time.
//!
//! A plain `memcpy` racing with another process's writes (or with this process's atomics) is a
//! data race, undefined behaviour in Rust's memory model even for bytes. So is a race between
//! atomic accesses of different sizes to the same bytes. These copies therefore access the
//! shared side only as aligned 8-byte atomic words (relaxed), the one size every safe access to
//! a segment uses (`SharedMemory::atomic_u64s` too): a word only partly inside the range is
//! read whole, or updated with a compare-and-swap that changes only the bytes inside the range.
//! A racing write can still make a copy a mix of old and new bytes, which is a value like any
//! other. The private side is plain memory.

use crate::atomic::Ordering;
use std::sync::atomic::AtomicU64;

const WORD: usize = std::mem::size_of::<u64>();

/// The aligned word containing `addr`, and `addr`'s position in it.
fn word_of(addr: usize) -> (*const AtomicU64, usize) {
    ((addr & !(WORD - 1)) as *const AtomicU64, addr % WORD)
}

/// Copies `dst.len()` bytes from the shared memory at `src` into `dst`.
///
/// # Safety
/// Every aligned 8-byte word that overlaps `src..src + dst.len()` is mapped and readable for
/// the whole call, and accessed by others only as 8-byte atomics (or from other processes).
pub(crate) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    let out = dst.as_mut_ptr();
    let mut i = 0;
    // A leading partial word.
    let at = src as usize % WORD;
    if at != 0 && n > 0 {
        let take = (WORD - at).min(n);
        // SAFETY: the aligned word overlaps the range, so the caller vouches for it.
        let w = unsafe { (*word_of(src as usize).0).load(Ordering::Relaxed) }.to_ne_bytes();
        dst[..take].copy_from_slice(&w[at..at + take]);
        i = take;
    }
    // Whole words, in a loop the compiler can keep tight.
    let words = (n - i) / WORD;
    // SAFETY: `src + i` is 8-aligned here (or `words` is 0).
    let first = unsafe { src.add(i) }.cast::<AtomicU64>();
    for k in 0..words {
        // SAFETY: word `k` is inside the range; `out + i + 8k .. + 8` is inside `dst`.
        unsafe {
            let w = (*first.add(k)).load(Ordering::Relaxed);
            out.add(i + k * WORD).cast::<u64>().write_unaligned(w);
        }
    }
    i += words * WORD;
    // A trailing partial word.
    if i < n {
        // SAFETY: `src + i` is 8-aligned; the word overlaps the range.
        let w = unsafe { (*src.add(i).cast::<AtomicU64>()).load(Ordering::Relaxed) }.to_ne_bytes();
        dst[i..].copy_from_slice(&w[..n - i]);
    }
}

/// Copies `src` into the shared memory at `dst`.
///
/// # Safety
/// Every aligned 8-byte word that overlaps `dst..dst + src.len()` is mapped and writable for
/// the whole call, and accessed by others only as 8-byte atomics (or from other processes).
pub(crate) unsafe fn copy_in(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let from = src.as_ptr();
    // Changes only the bytes `at..at + bytes.len()` of a word shared with bytes outside the
    // range.
    let merge = |word: *const AtomicU64, at: usize, bytes: &[u8]| {
        // SAFETY: the word overlaps the range, so the caller vouches for it; it is aligned.
        let word = unsafe { &*word };
        let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
            let mut w = old.to_ne_bytes();
            w[at..at + bytes.len()].copy_from_slice(bytes);
            Some(u64::from_ne_bytes(w))
        });
    };
    let mut i = 0;
    let at = dst as usize % WORD;
    if at != 0 && n > 0 {
        let take = (WORD - at).min(n);
        merge(word_of(dst as usize).0, at, &src[..take]);
        i = take;
    }
    let words = (n - i) / WORD;
    // SAFETY: `dst + i` is 8-aligned here (or `words` is 0).
    let first = unsafe { dst.add(i) }.cast::<AtomicU64>();
    for k in 0..words {
        // SAFETY: `from + i + 8k .. + 8` is inside `src`; word `k` is inside the range.
        unsafe {
            let w = from.add(i + k * WORD).cast::<u64>().read_unaligned();
            (*first.add(k)).store(w, Ordering::Relaxed);
        }
    }
    i += words * WORD;
    if i < n {
        // SAFETY: `dst + i` is 8-aligned.
        merge(unsafe { dst.add(i) }.cast::<AtomicU64>(), 0, &src[i..]);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU64;

    #[test]
    fn copies_are_exact_at_every_alignment_and_length() {
        // Word-aligned backing store, as segments are.
        let backing: Vec<AtomicU64> = (0..8).map(|_| AtomicU64::new(0)).collect();
        let base = backing.as_ptr().cast::<u8>().cast_mut();
        let snapshot = || {
            let mut v = vec![0u8; 64];
            // SAFETY: the 64 bytes of `backing`, read as words.
            unsafe { super::copy_out(base, &mut v) };
            v
        };
        for off in 0..9 {
            for len in 0..40 {
                let src: Vec<u8> = (0..len as u8)
                    .map(|b| b.wrapping_mul(7) ^ off as u8)
                    .collect();
                for w in &backing {
                    w.store(0xAAAA_AAAA_AAAA_AAAA, crate::atomic::Ordering::Relaxed);
                }
                // SAFETY: inside `backing`.
                unsafe { super::copy_in(&src, base.add(off)) };
                let all = snapshot();
                assert!(all[..off].iter().all(|&b| b == 0xAA));
                assert_eq!(&all[off..off + len], &src[..]);
                assert!(all[off + len..].iter().all(|&b| b == 0xAA));
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { super::copy_out(base.add(off), &mut back) };
                assert_eq!(back, src);
            }
        }
    }
}
