//! An array in shared memory filled by several processes, each its own slice, then summed;
//! and a raw `SharedMemory` block passed by name to a process that attaches to it.
//!
//! Run with `cargo run --example shared_array`.

use multiproc::{Array, LockError, Process, SharedMemory};

const LEN: usize = 1 << 20;
const WORKERS: usize = 4;

/// Fills its quarter of the array with squares (mod 2^32), under the lock once.
fn fill(args: (Array<u32>, usize)) {
    let (array, part) = args;
    let chunk = array.len() / WORKERS;
    let mut all = array
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    for (i, x) in all[part * chunk..(part + 1) * chunk].iter_mut().enumerate() {
        let n = (part * chunk + i) as u32;
        *x = n.wrapping_mul(n);
    }
}

/// Attaches to a named segment and returns the sum of its bytes.
fn sum_named(name: String) -> u64 {
    let shm = SharedMemory::open(&name).expect("attach");
    let mut buf = vec![0u8; shm.len()];
    shm.read_at(0, &mut buf);
    buf.iter().map(|&b| u64::from(b)).sum()
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();

    let array = Array::new(LEN, 0u32)?;
    let mut ps: Vec<_> = (0..WORKERS)
        .map(|part| Process::new(fill, (array.clone(), part)))
        .collect();
    for p in &mut ps {
        p.start()?;
    }
    for p in &mut ps {
        p.join()?;
    }
    let values = array.to_vec()?;
    let expected = (0..LEN as u32).map(|n| n.wrapping_mul(n));
    assert!(values.iter().copied().eq(expected));
    println!(
        "{WORKERS} processes filled {LEN} elements; sum = {}",
        values.iter().map(|&x| u64::from(x)).sum::<u64>()
    );

    // A named block: the creator owns the name, the attacher only reads.
    let shm = SharedMemory::create_unique(4096)?;
    shm.write_at(0, &[1u8; 4096]);
    let mut p = Process::new(sum_named, shm.name().unwrap().to_string());
    p.start()?;
    let sum = p.join()?;
    println!(
        "a process attached to {:?} and summed {sum}",
        shm.name().unwrap()
    );
    assert_eq!(sum, 4096);
    // Dropping the creator's handle removes the name from /dev/shm.
    Ok(())
}
