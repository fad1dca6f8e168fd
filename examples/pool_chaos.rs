//! Workers killed while a map runs: the map finishes, the failures are reported, and only the
//! tasks the dead workers held are affected. (CPython's Pool hangs forever here.)
//!
//! A killer thread SIGKILLs a random worker every few milliseconds while `imap` runs 400
//! tasks. Every result is either a value or `WorkerDied` with the pid and the signal; the
//! failed items are then run again, and the pool is still whole at the end.
//!
//! Run with `cargo run --example pool_chaos`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use multiproc::{ErrorKind, Pool};

fn work(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(2));
    x * 2
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();
    let pool = Arc::new(Pool::new(2)?);
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (pool, stop) = (pool.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut kills = 0u32;
            while !stop.load(Ordering::Relaxed) && kills < 20 {
                std::thread::sleep(Duration::from_millis(25));
                if let Some(pid) = pool.pids().get(kills as usize % 2) {
                    let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                    kills += 1;
                }
            }
            kills
        })
    };
    let mut failed = Vec::new();
    let mut ok = 0;
    for (i, r) in pool.imap(work, 0..400)?.enumerate() {
        match r {
            Ok(v) => {
                assert_eq!(v, 2 * i as u64);
                ok += 1;
            }
            Err(e) if e.kind() == ErrorKind::WorkerDied => {
                println!(
                    "item {i}: worker {} died (signal {:?})",
                    e.pid().unwrap_or(0),
                    e.signal()
                );
                failed.push(i as u64);
            }
            Err(e) => return Err(e),
        }
    }
    stop.store(true, Ordering::Relaxed);
    let kills = killer.join().unwrap_or(0);
    println!(
        "{ok} items done, {} failed with WorkerDied, {kills} workers killed",
        failed.len()
    );
    let redo = pool.map(work, failed.clone())?;
    println!("re-ran {} failed items: {:?}", redo.len(), redo);
    let p = pool.progress();
    println!(
        "workers replaced: {}; pool still has {} workers",
        p.workers_replaced,
        pool.pids().len()
    );
    Ok(())
}
