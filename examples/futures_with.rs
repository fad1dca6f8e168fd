//! The seed's context-manager program: the executor's scope does the shutdown (dropping an
//! executor waits for its calls, like leaving Python's `with` block). `--processes` switches
//! from threads to processes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

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

fn work(i: u32) -> u32 {
    let name = std::thread::current().name().map(str::to_string);
    let who = match name {
        Some(t) if !t.starts_with("main") => format!("thread {t}"),
        _ => format!("process {}", std::process::id()),
    };
    println!("{} I am working: task {i} in {who}", now());
    std::thread::sleep(Duration::from_secs(2));
    i * 10
}

fn run(ex: impl Executor) -> multiproc::Result<Vec<multiproc::Future<u32>>> {
    let fs = (0..6)
        .map(|i| ex.submit(work, i))
        .collect::<multiproc::Result<Vec<_>>>()?;
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(600));
        let cancelled: Vec<bool> = fs.iter().map(|f| f.cancel()).collect();
        println!("{} cancel(): {cancelled:?}", now());
    }
    Ok(fs)
    // `ex` is dropped here: shutdown(wait = true).
}

fn main() -> multiproc::Result<()> {
    multiproc::init();
    let fs = if std::env::args().any(|a| a == "--processes") {
        run(ProcessPoolExecutor::new(3)?)?
    } else {
        run(ThreadPoolExecutor::new(3)?)?
    };
    assert!(fs.iter().all(|f| f.done()));
    for f in &fs {
        println!("{:?}", f.result().map_err(|e| e.kind()));
    }
    println!("{} done my work", now());
    Ok(())
}
