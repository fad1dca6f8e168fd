//! A program that forgets `multiproc::init()`: starting a process must fail with a clear error.

fn double(x: u32) -> u32 {
    x * 2
}

fn main() {
    let mut p = multiproc::Process::new(double, 21);
    match p.start() {
        Ok(()) => {
            println!("started");
            let _ = p.join();
        }
        Err(e) => println!("{:?}: {e}", e.kind()),
    }
}
