//! Copies in and out of memory that other processes may write at the same time.
//!
//! A plain `memcpy` racing with another process's writes (or with this process's atomics) is a
//! data race, undefined behaviour in Rust's memory model even for bytes. These copies access the
//! shared side only through atomics (relaxed): 8-byte words where aligned, single bytes at the
//! ragged ends. A racing write can still make a copy a mix of old and new bytes, which is a
//! value like any other. The private side is plain memory.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

const WORD: usize = std::mem::size_of::<u64>();

/// Copies `dst.len()` bytes from the shared memory at `src` into `dst`.
///
/// # Safety
/// `src..src + dst.len()` is mapped and readable for the whole call, and only ever accessed
/// atomically or read by others (never written non-atomically by this process).
pub(crate) unsafe fn copy_out(src: *const u8, dst: &mut [u8]) {
    let n = dst.len();
    let mut i = 0;
    let byte = |i: usize| {
        // SAFETY: `i < n`, inside the range the caller vouches for; AtomicU8 has alignment 1.
        unsafe { (*src.add(i).cast::<AtomicU8>()).load(Ordering::Relaxed) }
    };
    while i < n && !(src as usize + i).is_multiple_of(WORD) {
        dst[i] = byte(i);
        i += 1;
    }
    let out = dst.as_mut_ptr();
    while i + WORD <= n {
        // SAFETY: `src + i` is 8-aligned (the loop above) and the word is inside the range;
        // `out + i .. out + i + 8` is inside `dst`, private memory (unaligned write).
        unsafe {
            let w = (*src.add(i).cast::<AtomicU64>()).load(Ordering::Relaxed);
            out.add(i).cast::<u64>().write_unaligned(w);
        }
        i += WORD;
    }
    while i < n {
        dst[i] = byte(i);
        i += 1;
    }
}

/// Copies `src` into the shared memory at `dst`.
///
/// # Safety
/// `dst..dst + src.len()` is mapped and writable for the whole call, and only ever accessed
/// atomically by others.
pub(crate) unsafe fn copy_in(src: &[u8], dst: *mut u8) {
    let n = src.len();
    let mut i = 0;
    let byte = |i: usize, b: u8| {
        // SAFETY: `i < n`, inside the range the caller vouches for; AtomicU8 has alignment 1.
        unsafe { (*dst.add(i).cast::<AtomicU8>()).store(b, Ordering::Relaxed) }
    };
    while i < n && !(dst as usize + i).is_multiple_of(WORD) {
        byte(i, src[i]);
        i += 1;
    }
    let from = src.as_ptr();
    while i + WORD <= n {
        // SAFETY: `from + i .. + 8` is inside `src` (unaligned read of private memory);
        // `dst + i` is 8-aligned (the loop above) and the word is inside the range.
        unsafe {
            let w = from.add(i).cast::<u64>().read_unaligned();
            (*dst.add(i).cast::<AtomicU64>()).store(w, Ordering::Relaxed);
        }
        i += WORD;
    }
    while i < n {
        byte(i, src[i]);
        i += 1;
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    #[test]
    fn copies_are_exact_at_every_alignment_and_length() {
        let mut shared = vec![0u8; 64];
        for off in 0..9 {
            for len in 0..40 {
                let src: Vec<u8> = (0..len as u8)
                    .map(|b| b.wrapping_mul(7) ^ off as u8)
                    .collect();
                shared.fill(0xAA);
                // SAFETY: a private buffer, inside its bounds.
                unsafe { super::copy_in(&src, shared.as_mut_ptr().add(off)) };
                assert!(shared[..off].iter().all(|&b| b == 0xAA));
                assert_eq!(&shared[off..off + len], &src[..]);
                assert!(shared[off + len..].iter().all(|&b| b == 0xAA));
                let mut back = vec![0u8; len];
                // SAFETY: as above.
                unsafe { super::copy_out(shared.as_ptr().add(off), &mut back) };
                assert_eq!(back, src);
            }
        }
    }
}
