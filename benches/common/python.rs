//! Runs one of the CPython scripts in `benches/python/`, shared by the benches.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Runs `benches/python/<script>` with `args` and then `iters`, and returns the seconds it
/// printed (the time of its own timed part); `None` if python3 is missing or the run failed.
pub fn run(script: &str, args: &[String], iters: u64) -> Option<Duration> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/python")
        .join(script);
    let out = Command::new("python3")
        .arg(path)
        .args(args)
        .arg(iters.to_string())
        .output()
        .ok()?;
    let secs: f64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some(Duration::from_secs_f64(secs))
}
