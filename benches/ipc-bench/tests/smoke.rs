//! CI's smoke test of ipc-bench: tiny sizes, `--quick`, and a check of the outputs' shape
//! (never of the speed). Runs the real binary, behind a watchdog.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const POOL_ROWS: [&str; 9] = [
    "pool-apply",
    "pool-apply-async",
    "pool-map",
    "threadpool-apply",
    "threadpool-apply-async",
    "threadpool-map",
    "ppe-submit",
    "ppe-submit-result",
    "tpe-submit",
];
const TRANSPORTS: [&str; 11] = [
    "queue",
    "pipe",
    "shm",
    "shm-zerocopy",
    "raw-memcpy",
    "raw-socketpair",
    "raw-futex",
    "raw-ring",
    "python-queue",
    "python-pipe",
    "python-shm",
];
const METRICS: [&str; 14] = [
    "msgs_per_s",
    "bytes_per_s",
    "rtt_p50_ns",
    "rtt_p99_ns",
    "tasks_per_s",
    "tp_vs_raw_min",
    "tp_vs_raw_paired",
    "tp_vs_raw_max",
    "tp_vs_ring_min",
    "tp_vs_ring_paired",
    "tp_vs_ring_max",
    "rtt_vs_raw_min",
    "rtt_vs_raw_paired",
    "rtt_vs_raw_max",
];

/// A pool row's JSON name: one of ours, or CPython's twin of one.
fn is_pool_row(t: &str) -> bool {
    POOL_ROWS.contains(&t.strip_prefix("python-").unwrap_or(t))
}

fn field<'a>(obj: &'a str, key: &str) -> &'a str {
    let at = obj
        .find(&format!("\"{key}\": "))
        .unwrap_or_else(|| panic!("no {key} in {obj}"));
    let rest = &obj[at + key.len() + 4..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().trim_matches('"')
}

#[test]
fn quick_run_has_the_expected_shape() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ipc-bench-smoke");
    let _ = std::fs::remove_dir_all(&dir);
    let json = dir.join("results.json");
    let python = Command::new("python3")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipc-bench"))
        .args([
            "--quick",
            "--sizes",
            "16,1KiB",
            "--placement",
            "same-cpu",
            "--json",
        ])
        .arg(&json)
        .arg("--out")
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ipc-bench");
    // The watchdog: a hang fails the test instead of stalling CI.
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > Duration::from_secs(240) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ipc-bench did not finish within 240 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().expect("output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "ipc-bench failed:\n{stderr}");
    assert!(
        stderr.contains("done in"),
        "no progress on stderr:\n{stderr}"
    );

    // The table.
    assert!(stdout.contains("== same-cpu =="), "{stdout}");
    assert!(stdout.contains("raw-futex round trip: p50"), "{stdout}");
    for header in [
        "msgs/s",
        "GB/s",
        "RTT p50",
        "RTT p99",
        "tp vs raw",
        "tp vs ring",
        "tp vs CPython",
    ] {
        assert!(stdout.contains(header), "no column {header}:\n{stdout}");
    }
    for t in [
        "queue",
        "pipe",
        "shm",
        "shm-zerocopy",
        "raw-socketpair",
        "raw-ring",
    ] {
        for size in ["16 B", "1 KiB"] {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("{t} ")) && l.contains(size)),
                "no row for {t} {size}:\n{stdout}"
            );
        }
    }
    assert!(stdout.contains("raw-memcpy: 16 B"), "{stdout}");

    // The pool group's table: every row of ours, and CPython's twin when python3 is here.
    assert!(
        stdout.contains("== pool (2 workers, unpinned) =="),
        "{stdout}"
    );
    assert!(
        stdout.contains("ProcessPoolExecutor submit().result() p50 ="),
        "{stdout}"
    );
    for row in POOL_ROWS {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("{row} "))),
            "no pool row {row}:\n{stdout}"
        );
        if python {
            assert!(
                stdout
                    .lines()
                    .any(|l| l.starts_with(&format!("python-{row} "))),
                "python3 is here but no row python-{row}:\n{stdout}"
            );
        }
    }

    // The JSON: every object has the five fields with allowed values.
    let text = std::fs::read_to_string(&json).expect("the JSON file");
    let objects: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .collect();
    assert!(
        objects.len() >= 5 * 2 * 4,
        "only {} measurements",
        objects.len()
    );
    let mut seen = std::collections::BTreeSet::new();
    for o in &objects {
        let t = field(o, "transport");
        assert!(TRANSPORTS.contains(&t) || is_pool_row(t), "transport {t}");
        let size: usize = field(o, "size_bytes").parse().expect("size_bytes");
        assert!([0, 16, 1024].contains(&size), "size {size}");
        let pl = field(o, "placement");
        assert!(["same-cpu", "unpinned"].contains(&pl), "placement {pl}");
        let m = field(o, "metric");
        assert!(METRICS.contains(&m), "metric {m}");
        assert_eq!(
            m == "tasks_per_s",
            is_pool_row(t) && !m.starts_with("rtt"),
            "metric {m} for {t}"
        );
        let v: f64 = field(o, "value").parse().expect("value");
        assert!(v.is_finite() && v > 0.0, "value {v} in {o}");
        seen.insert(t.to_string());
    }
    for t in [
        "queue",
        "pipe",
        "shm",
        "shm-zerocopy",
        "raw-memcpy",
        "raw-socketpair",
        "raw-futex",
    ] {
        assert!(seen.contains(t), "no measurement of {t}");
    }
    for row in POOL_ROWS {
        assert!(seen.contains(row), "no measurement of {row}");
    }
    if python {
        for t in ["python-queue", "python-pipe", "python-shm"] {
            assert!(seen.contains(t), "python3 is here but {t} was not measured");
        }
        for row in POOL_ROWS {
            let t = format!("python-{row}");
            assert!(
                seen.contains(&t),
                "python3 is here but {t} was not measured"
            );
        }
    }

    // The report and the chart.
    let report = std::fs::read_to_string(dir.join("report.md")).expect("report.md");
    assert!(report.contains("| transport | size |"), "{report}");
    assert!(report.contains("## pool (2 workers, unpinned)"), "{report}");
    assert!(report.contains("| row | what |"), "{report}");
    let svg = std::fs::read_to_string(dir.join("throughput.svg")).expect("throughput.svg");
    assert!(
        svg.starts_with("<svg") && svg.contains("<polyline"),
        "{svg}"
    );
}
