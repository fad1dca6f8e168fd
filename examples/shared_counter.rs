//! A counter shared by four processes: Python's `Value` and `get_lock()` idiom, and what
//! happens when a process dies holding the lock.
//!
//! Python:
//! ```python
//! with counter.get_lock():
//!     counter.value += 1
//! ```
//!
//! Run with `cargo run --example shared_counter`.

use std::time::Duration;

use multiproc::{Event, LockError, Process, Value};

/// Adds 1 to the counter `n` times, each under the lock.
fn add(args: (Value<u64>, u64)) {
    let (counter, n) = args;
    for _ in 0..n {
        // `lock()` is `with counter.get_lock():`; the guard derefs to the value.
        let mut value = counter
            .lock()
            .or_else(LockError::make_consistent)
            .expect("lock");
        *value += 1;
    }
}

/// Takes the lock, starts an update, and is killed before it finishes.
fn die_holding(args: (Value<u64>, Event)) {
    let (counter, locked) = args;
    let mut value = counter
        .lock()
        .or_else(LockError::make_consistent)
        .expect("lock");
    *value += 1_000_000; // a half-done update: it should have been undone later
    locked.set();
    std::thread::sleep(Duration::from_secs(60));
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();

    let counter = Value::new(0u64)?;
    let mut workers: Vec<_> = (0..4)
        .map(|_| Process::new(add, (counter.clone(), 25_000)))
        .collect();
    for w in &mut workers {
        w.start()?;
    }
    for w in &mut workers {
        w.join()?;
    }
    println!("4 processes x 25000 locked increments = {}", counter.get()?);
    assert_eq!(counter.get()?, 100_000);

    // The same counter, but its holder is SIGKILLed mid-update. With Python's Value the lock
    // would stay taken forever; here the next locker gets it, told that the owner died.
    let locked = Event::new()?;
    let mut doomed = Process::new(die_holding, (counter.clone(), locked.clone()));
    doomed.start()?;
    locked.wait();
    doomed.kill()?;
    let _ = doomed.join();
    match counter.lock() {
        Ok(_) => unreachable!("the owner died: the lock must say so"),
        Err(died) => {
            let mut value = died.into_inner()?;
            println!(
                "owner died holding the lock; the value was left at {}",
                *value
            );
            *value -= 1_000_000; // repair
            drop(value);
            counter.get_lock().clear_owner_died();
        }
    }
    println!("repaired: {}", counter.get()?);
    assert_eq!(counter.get()?, 100_000);
    assert!(counter.lock().is_ok());
    Ok(())
}
