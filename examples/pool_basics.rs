//! A pool of worker processes: Python's `multiprocessing.Pool` idioms, one after another.
//!
//! Python:
//! ```python
//! with Pool(2) as pool:
//!     print(pool.apply(square, (7,)))
//!     r = pool.apply_async(square, (8,), callback=print)
//!     print(pool.map(square, range(10)))
//!     for i, n in enumerate(pool.imap(count_primes, ranges)):
//!         print(f"\r{i + 1}/{len(ranges)}", end="")
//!     pool.close(); pool.join()
//! ```
//!
//! Run with `cargo run --example pool_basics`.

use std::time::Duration;

use multiproc::{Callbacks, Pool};

fn square(x: u64) -> u64 {
    x * x
}

fn count_primes(range: (u64, u64)) -> u64 {
    (range.0..range.1)
        .filter(|&n| n > 1 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0))
        .count() as u64
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init(); // must come first: in a worker, this is where the work runs
    let pool = Pool::builder().processes(2).build()?;
    println!("workers: {:?}", pool.pids());

    // apply: one call, waits for the result.
    println!("apply(square, 7) = {}", pool.apply(square, 7)?);

    // apply_async with a callback, run in the parent when the result is in.
    let cbs = Callbacks::new().on_success(|v: &u64| println!("callback got {v}"));
    let r = pool.apply_async_with(square, 8, cbs)?;
    println!("apply_async(square, 8).get() = {}", r.get()?);

    // map: results in order; CPython's default chunk size.
    println!("map(square, 0..10) = {:?}", pool.map(square, 0..10)?);

    // imap with a progress line: results as they come, the input pulled lazily.
    let ranges: Vec<(u64, u64)> = (0..40).map(|i| (i * 5_000, (i + 1) * 5_000)).collect();
    let n = ranges.len();
    let mut total = 0;
    for (i, primes) in pool.imap(count_primes, ranges)?.enumerate() {
        total += primes?;
        let p = pool.progress();
        eprint!(
            "\rprogress: {}/{n} (pool: {}/{} done)",
            i + 1,
            p.completed,
            p.submitted
        );
    }
    eprintln!();
    println!("primes below 200000: {total}");

    // A result with a timeout.
    let r = pool.apply_async(square, 9)?;
    println!("get_timeout = {}", r.get_timeout(Duration::from_secs(10))?);

    pool.close();
    pool.join()?;
    println!("closed and joined; workers left: {:?}", pool.pids());
    Ok(())
}
