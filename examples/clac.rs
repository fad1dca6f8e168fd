//! The seed program: five processes, each adding 1 ten million times to its argument.
//!
//! Run with `cargo run --release --example clac`. The parent prints how long the five
//! processes took together, and how long the same work takes one after another in this process.

use std::hint::black_box;
use std::time::Instant;

use multiproc::Process;

/// Adds 1 to `start`, ten million times.
fn count_up(start: u64) -> u64 {
    let mut n = start;
    for _ in 0..10_000_000 {
        n = black_box(n) + 1;
    }
    n
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();

    let t = Instant::now();
    let mut procs: Vec<Process<u64>> = (0..5)
        .map(|i| Process::new(count_up, i).with_name(format!("pro-{i}")))
        .collect();
    for p in &mut procs {
        p.start()?;
    }
    for p in &mut procs {
        let total = p.join()?;
        println!("{} (pid {}) -> {total}", p.name(), p.pid().unwrap_or(0));
    }
    let parallel = t.elapsed();

    let t = Instant::now();
    for i in 0..5 {
        black_box(count_up(i));
    }
    let sequential = t.elapsed();

    println!("5 processes:        {:.3} s", parallel.as_secs_f64());
    println!("sequential (1 CPU): {:.3} s", sequential.as_secs_f64());
    Ok(())
}
