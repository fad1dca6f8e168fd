//! Process basics: pid, exit codes, terminate, and join with a timeout.
//!
//! Run with `cargo run --example process_basics`.

use std::time::Duration;

use multiproc::{ErrorKind, Process};

fn greet(name: String) -> String {
    let me = multiproc::current_process();
    format!("hello {name}, from {} (pid {})", me.name(), me.pid())
}

fn exit_with(code: i32) {
    std::process::exit(code)
}

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms))
}

fn fail(why: String) -> u32 {
    panic!("{why}")
}

fn main() -> Result<(), multiproc::Error> {
    multiproc::init();

    // A value goes in, a value comes back.
    let mut p = Process::new(greet, "world".to_string());
    p.start()?;
    println!("started {} as pid {:?}", p.name(), p.pid());
    println!("{}", p.join()?);
    println!("exitcode = {:?}", p.exitcode());

    // An exit status, as Python reports it.
    let mut p = Process::new(exit_with, 7);
    p.start()?;
    let err = p.join().unwrap_err();
    println!("exit(7): kind={:?} exitcode={:?}", err.kind(), p.exitcode());

    // A panic comes back with its message and location.
    let mut p = Process::new(fail, "out of luck".to_string());
    p.start()?;
    let err = p.join().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    println!(
        "panic: {:?} at {:?}, exitcode={:?}",
        err.panic_message(),
        err.panic_location(),
        p.exitcode()
    );

    // join with a timeout, then terminate.
    let mut p = Process::new(sleep_ms, 60_000);
    p.start()?;
    let still_running = matches!(
        p.join_timeout(Duration::from_millis(100)),
        Err(multiproc::JoinTimeoutError::Timeout)
    );
    println!(
        "after 100 ms: still running = {still_running}, alive = {}",
        p.is_alive()
    );
    p.terminate()?;
    let err = p.join().unwrap_err();
    println!(
        "terminated: signal={:?} exitcode={:?}",
        err.signal(),
        p.exitcode()
    );
    Ok(())
}
