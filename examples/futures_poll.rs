//! The seed's polling program: 3 workers, 6 calls that sleep 2 s, a loop that polls `done()`
//! every 0.6 s and tries `cancel()` on each, then shutdown. `--threads` (the default) or
//! `--processes` picks the executor: the program is written against `Executor`, and the one
//! line that builds the executor is the only difference.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use multiproc::{Executor, ProcessPoolExecutor, ThreadPoolExecutor};

fn now() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let s = t.as_secs() % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        t.subsec_millis()
    )
}

fn who() -> String {
    let p = multiproc::current_process();
    match std::thread::current().name() {
        Some(t) if !t.starts_with("main") => format!("thread {t}"),
        _ => format!("process {} (pid {})", p.name(), std::process::id()),
    }
}

fn work(i: u32) -> u32 {
    println!("{} I am working: task {i} in {}", now(), who());
    std::thread::sleep(Duration::from_secs(2));
    i
}

fn run(ex: &impl Executor) -> multiproc::Result<()> {
    let fs = (0..6)
        .map(|i| ex.submit(work, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    let start = Instant::now();
    while !fs.iter().all(|f| f.done()) {
        std::thread::sleep(Duration::from_millis(600));
        let done: Vec<bool> = fs.iter().map(|f| f.done()).collect();
        let cancelled: Vec<bool> = fs.iter().map(|f| f.cancel()).collect();
        println!(
            "{} after {:.1}s done: {done:?} cancel(): {cancelled:?}",
            now(),
            start.elapsed().as_secs_f64()
        );
    }
    ex.shutdown(true, false);
    for (i, f) in fs.iter().enumerate() {
        match f.result() {
            Ok(v) => println!("task {i}: {v}"),
            Err(e) => println!("task {i}: {e}"),
        }
    }
    println!("{} done my work", now());
    Ok(())
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    if std::env::args().any(|a| a == "--processes") {
        run(&ProcessPoolExecutor::new(3)?)
    } else {
        run(&ThreadPoolExecutor::new(3)?)
    }
}
