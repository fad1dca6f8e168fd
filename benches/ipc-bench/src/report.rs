//! The outputs: the text table, JSON, report.md and the SVG chart.

use std::fmt::Write;
use std::time::Duration;

use crate::pools::{PoolMeasurement, Row, Shape};
use crate::{Measurement, Placement, Transport};

pub fn size_label(size: usize) -> String {
    if size >= 1 << 20 && size.is_multiple_of(1 << 20) {
        format!("{} MiB", size >> 20)
    } else if size >= 1 << 10 && size.is_multiple_of(1 << 10) {
        format!("{} KiB", size >> 10)
    } else {
        format!("{size} B")
    }
}

fn get(r: &[Measurement], t: Transport, size: usize, pl: Placement, metric: &str) -> Option<f64> {
    r.iter()
        .find(|m| m.transport == t && m.size == size && m.placement == pl && m.metric == metric)
        .map(|m| m.value)
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2} M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1} k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

fn gbps(v: f64) -> String {
    format!("{:.2}", v / 1e9)
}

fn micros(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.1} ms", ns / 1e6)
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "-".into(),
    }
}

/// A ratio, with the range of its per-round values when the run recorded them:
/// `0.95× (0.91–0.99)`.
fn ratio_spread(a: Option<f64>, b: Option<f64>, q: Option<(f64, f64)>) -> String {
    let r = ratio(a, b);
    match q {
        Some((lo, hi)) if r != "-" => format!("{r} ({lo:.2}–{hi:.2})"),
        _ => r,
    }
}

/// The rows of one placement: cells as strings, the first row the header.
fn rows(r: &[Measurement], sizes: &[usize], pl: Placement) -> Vec<Vec<String>> {
    let mut out = vec![
        [
            "transport",
            "size",
            "msgs/s",
            "GB/s",
            "RTT p50",
            "RTT p99",
            "tp vs raw",
            "tp vs ring",
            "RTT vs raw",
            "tp vs CPython",
            "RTT vs CPython",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for &size in sizes {
        for t in Transport::ALL {
            if matches!(t, Transport::RawMemcpy | Transport::RawFutex) {
                continue;
            }
            let tp = get(r, t, size, pl, "bytes_per_s");
            let msgs = get(r, t, size, pl, "msgs_per_s");
            let p50 = get(r, t, size, pl, "rtt_p50_ns");
            let p99 = get(r, t, size, pl, "rtt_p99_ns");
            if tp.is_none() && p50.is_none() {
                continue;
            }
            let ours = t.python().is_none();
            let raw_tp = get(r, Transport::RawSocketpair, size, pl, "bytes_per_s");
            let raw_rtt = get(r, Transport::RawSocketpair, size, pl, "rtt_p50_ns");
            let twin = t.python_twin();
            let py = |metric| twin.and_then(|tw| get(r, tw, size, pl, metric));
            let raw_row = matches!(t, Transport::RawSocketpair | Transport::RawRing);
            let ring_tp = get(r, Transport::RawRing, size, pl, "bytes_per_s");
            let spread = |name: &str| {
                let lo = get(r, t, size, pl, &format!("{name}_min"))?;
                Some((lo, get(r, t, size, pl, &format!("{name}_max"))?))
            };
            out.push(vec![
                t.name().to_string(),
                size_label(size),
                msgs.map_or("-".into(), rate),
                tp.map_or("-".into(), gbps),
                p50.map_or("-".into(), micros),
                p99.map_or("-".into(), micros),
                if raw_row {
                    "-".into()
                } else {
                    ratio_spread(tp, raw_tp, spread("tp_vs_raw"))
                },
                if raw_row || !ours {
                    "-".into()
                } else {
                    ratio_spread(tp, ring_tp, spread("tp_vs_ring"))
                },
                if raw_row {
                    "-".into()
                } else {
                    ratio_spread(p50, raw_rtt, spread("rtt_vs_raw"))
                },
                if ours {
                    ratio(tp, py("bytes_per_s"))
                } else {
                    "-".into()
                },
                if ours {
                    ratio(p50, py("rtt_p50_ns"))
                } else {
                    "-".into()
                },
            ]);
        }
    }
    out
}

fn memcpy_line(r: &[Measurement], sizes: &[usize]) -> Option<String> {
    let cells: Vec<String> = sizes
        .iter()
        .filter_map(|&s| {
            get(
                r,
                Transport::RawMemcpy,
                s,
                Placement::Unpinned,
                "bytes_per_s",
            )
            .map(|v| format!("{} {} GB/s", size_label(s), gbps(v)))
        })
        .collect();
    (!cells.is_empty()).then(|| format!("raw-memcpy: {}", cells.join(", ")))
}

fn futex_line(r: &[Measurement], pl: Placement) -> Option<String> {
    let p50 = get(r, Transport::RawFutex, 0, pl, "rtt_p50_ns")?;
    let p99 = get(r, Transport::RawFutex, 0, pl, "rtt_p99_ns")?;
    Some(format!(
        "raw-futex round trip: p50 {}, p99 {}",
        micros(p50),
        micros(p99)
    ))
}

const LEGEND: &str = "tp = one-way throughput. \"vs raw\": against a bare socketpair moving the \
same bytes (write_all/read_exact) in the same placement; \"vs ring\": against raw-ring, a bare \
single-producer single-consumer ring in shared memory (no lock, no serde, spinning) moving the \
same bytes in the same placement, the floor of any queue; \"vs CPython\": against CPython's \
counterpart (Queue, Pipe, shared_memory + semaphores). Throughput ratios: higher is better; \
RTT ratios (p50): lower is better. Ours and the floors of a size and placement run in \
alternating rounds (every transport once per round, the order reversed every other round); \
msgs/s and RTT p50 are medians over the rounds, RTT p99 is over every round trip, a ratio is \
the ratio of the medians, and (a–b) after it is the range of the per-round ratios (the \
JSON's *_paired is their median): a narrow range is a settled figure, a wide one a noisy \
machine. CPython runs apart. The raw-futex \
line is the floor of any blocking round trip.";

/// The text table printed on stdout.
pub fn table(r: &[Measurement], sizes: &[usize], placements: &[Placement]) -> String {
    let mut s = String::new();
    for &pl in placements {
        let rows = rows(r, sizes, pl);
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| {
                rows.iter()
                    .map(|row| row[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let _ = writeln!(s, "\n== {} ==", pl.name());
        if let Some(f) = futex_line(r, pl) {
            let _ = writeln!(s, "{f}");
        }
        for (i, row) in rows.iter().enumerate() {
            let line: Vec<String> = row
                .iter()
                .zip(&widths)
                .enumerate()
                .map(|(c, (cell, &w))| {
                    let pad = w - cell.chars().count();
                    if c < 2 {
                        format!("{cell}{}", " ".repeat(pad))
                    } else {
                        format!("{}{cell}", " ".repeat(pad))
                    }
                })
                .collect();
            let _ = writeln!(s, "{}", line.join("  "));
            if i == 0 {
                let _ = writeln!(
                    s,
                    "{}",
                    "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
                );
            }
        }
    }
    if let Some(m) = memcpy_line(r, sizes) {
        let _ = writeln!(s, "\n{m}");
    }
    let _ = writeln!(s, "{LEGEND}");
    s
}

/// Every measurement as a JSON array of objects; a pool row's is named in `transport`, with
/// size 0 and placement `unpinned`.
pub fn json(r: &[Measurement], pools: &[PoolMeasurement]) -> String {
    let objects: Vec<(&str, usize, &str, &str, f64)> = r
        .iter()
        .map(|m| {
            (
                m.transport.name(),
                m.size,
                m.placement.name(),
                m.metric,
                m.value,
            )
        })
        .chain(pools.iter().map(|m| {
            (
                m.row.name(),
                0,
                Placement::Unpinned.name(),
                m.metric,
                m.value,
            )
        }))
        .collect();
    let mut s = String::from("[\n");
    for (i, (transport, size, placement, metric, value)) in objects.iter().enumerate() {
        let _ = write!(
            s,
            "  {{\"transport\": \"{transport}\", \"size_bytes\": {size}, \"placement\": \"{placement}\", \"metric\": \"{metric}\", \"value\": {}}}",
            if value.is_finite() { *value } else { 0.0 }
        );
        s.push_str(if i + 1 < objects.len() { ",\n" } else { "\n" });
    }
    s.push_str("]\n");
    s
}

fn pool_get(r: &[PoolMeasurement], row: Row, metric: &str) -> Option<f64> {
    r.iter()
        .find(|m| m.row == row && m.metric == metric)
        .map(|m| m.value)
}

/// The pool group's rows: cells as strings, the first row the header.
fn pool_rows(r: &[PoolMeasurement]) -> Vec<Vec<String>> {
    let mut out = vec![
        [
            "row",
            "what",
            "tasks/s",
            "RTT p50",
            "RTT p99",
            "tp vs CPython",
            "RTT vs CPython",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for ours in Row::OURS {
        for row in [ours, ours.python_twin()] {
            let tp = pool_get(r, row, "tasks_per_s");
            let p50 = pool_get(r, row, "rtt_p50_ns");
            let p99 = pool_get(r, row, "rtt_p99_ns");
            if tp.is_none() && p50.is_none() {
                continue;
            }
            let twin = ours.python_twin();
            let mine = !row.is_python();
            out.push(vec![
                row.name().to_string(),
                format!("{}{}", if mine { "" } else { "CPython's " }, row.what()),
                tp.map_or("-".into(), rate),
                p50.map_or("-".into(), micros),
                p99.map_or("-".into(), micros),
                if mine {
                    ratio(tp, pool_get(r, twin, "tasks_per_s"))
                } else {
                    "-".into()
                },
                if mine {
                    ratio(p50, pool_get(r, twin, "rtt_p50_ns"))
                } else {
                    "-".into()
                },
            ]);
        }
    }
    out
}

/// The executor's round trip against the Pool's `apply` (issue: at most 2×).
fn pool_line(r: &[PoolMeasurement]) -> Option<String> {
    let ppe = pool_get(r, Row::PpeRtt, "rtt_p50_ns")?;
    let apply = pool_get(r, Row::PoolApply, "rtt_p50_ns")?;
    Some(format!(
        "ProcessPoolExecutor submit().result() p50 = {:.2}× Pool.apply p50",
        ppe / apply
    ))
}

const POOL_LEGEND: &str = "2 workers each, unpinned, a trivial task (x + 1 on an integer): \
the machinery's cost. tasks/s: calls (items, for a map) per second, the median of the \
repetitions; a map uses the pool's default chunking. \"vs CPython\": against the python- row \
below it, from the same run (throughput: higher is better; RTT p50: lower is better).";

fn pool_shape_note() -> String {
    let shapes: Vec<String> = Row::OURS
        .iter()
        .map(|r| {
            format!(
                "{}: {}",
                r.name(),
                match r.shape() {
                    Shape::RoundTrip => "round trip",
                    Shape::Throughput => "throughput",
                    Shape::Map => "map",
                }
            )
        })
        .collect();
    shapes.join(", ")
}

/// The pool group as text, for stdout.
pub fn pool_table(r: &[PoolMeasurement]) -> String {
    let rows = pool_rows(r);
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| {
            rows.iter()
                .map(|row| row[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::from("\n== pool (2 workers, unpinned) ==\n");
    for (i, row) in rows.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(c, (cell, &w))| {
                let pad = w - cell.chars().count();
                if c < 2 {
                    format!("{cell}{}", " ".repeat(pad))
                } else {
                    format!("{}{cell}", " ".repeat(pad))
                }
            })
            .collect();
        let _ = writeln!(s, "{}", line.join("  "));
        if i == 0 {
            let _ = writeln!(
                s,
                "{}",
                "-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1))
            );
        }
    }
    if let Some(l) = pool_line(r) {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "{POOL_LEGEND}");
    s
}

fn machine() -> String {
    let cpus = crate::transports::num_cpus();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs ({model}), Linux {}", kernel.trim())
}

/// report.md: the tables in Markdown, the notes, and the chart.
pub fn markdown(
    r: &[Measurement],
    pools: &[PoolMeasurement],
    sizes: &[usize],
    placements: &[Placement],
    notes: &[String],
    elapsed: Duration,
    quick: bool,
) -> String {
    let mut s = String::from("# ipc-bench report\n\n");
    let _ = writeln!(
        s,
        "{}; {} run in {:.0?}. Medians of alternating rounds after a warm-up.\n",
        machine(),
        if quick { "a --quick" } else { "a full" },
        elapsed
    );
    for &pl in placements {
        let _ = writeln!(s, "## {}\n", pl.name());
        if let Some(f) = futex_line(r, pl) {
            let _ = writeln!(s, "{f}.\n");
        }
        let rows = rows(r, sizes, pl);
        for (i, row) in rows.iter().enumerate() {
            let _ = writeln!(s, "| {} |", row.join(" | "));
            if i == 0 {
                let _ = writeln!(s, "|{}", "---|".repeat(row.len()));
            }
        }
        s.push('\n');
    }
    if let Some(m) = memcpy_line(r, sizes) {
        let _ = writeln!(s, "{m}.\n");
    }
    let _ = writeln!(s, "{LEGEND}\n");
    if !pools.is_empty() {
        let _ = writeln!(s, "## pool (2 workers, unpinned)\n");
        for (i, row) in pool_rows(pools).iter().enumerate() {
            let _ = writeln!(s, "| {} |", row.join(" | "));
            if i == 0 {
                let _ = writeln!(s, "|{}", "---|".repeat(row.len()));
            }
        }
        s.push('\n');
        if let Some(l) = pool_line(pools) {
            let _ = writeln!(s, "{l}.\n");
        }
        let _ = writeln!(s, "{POOL_LEGEND} Shapes: {}.\n", pool_shape_note());
    }
    for n in notes {
        let _ = writeln!(s, "- note: {n}");
    }
    let _ = writeln!(s, "\n![throughput by message size](throughput.svg)");
    s
}

/// One per transport, in `Transport::ALL`'s order.
const COLORS: [&str; Transport::ALL.len()] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#17becf", "#7f7f7f", "#8c564b", "#bcbd22", "#000000",
    "#d62728", "#9467bd", "#e377c2",
];

/// Throughput (bytes/s) by message size, log-log, one line per transport, one panel per
/// placement.
pub fn svg(r: &[Measurement], placements: &[Placement]) -> String {
    let (pw, ph, ml, mt, mb) = (460.0, 300.0, 70.0, 40.0, 50.0);
    let width = placements.len().max(1) as f64 * (pw + ml) + 200.0;
    let height = ph + mt + mb;
    let points = |t: Transport, pl: Placement| -> Vec<(f64, f64)> {
        let pl = if t == Transport::RawMemcpy {
            Placement::Unpinned
        } else {
            pl
        };
        let mut v: Vec<(f64, f64)> = r
            .iter()
            .filter(|m| {
                m.transport == t && m.placement == pl && m.metric == "bytes_per_s" && m.value > 0.0
            })
            .map(|m| ((m.size.max(1) as f64).log2(), m.value.log10()))
            .collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        v
    };
    let all: Vec<(f64, f64)> = Transport::ALL
        .iter()
        .flat_map(|&t| placements.iter().flat_map(move |&pl| points(t, pl)))
        .collect();
    let (x0, x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let (x0, x1) = if all.is_empty() {
        (0.0, 1.0)
    } else {
        (x0, x1.max(x0 + 1.0))
    };
    let (y0, y1) = if all.is_empty() {
        (6.0, 9.0)
    } else {
        (y0.floor(), y1.ceil().max(y0.floor() + 1.0))
    };
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (k, &pl) in placements.iter().enumerate() {
        let ox = ml + k as f64 * (pw + ml);
        let sx = |x: f64| ox + (x - x0) / (x1 - x0) * pw;
        let sy = |y: f64| mt + ph - (y - y0) / (y1 - y0) * ph;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"20\" font-size=\"13\" text-anchor=\"middle\">throughput, {}</text>",
            ox + pw / 2.0,
            pl.name()
        );
        let _ = writeln!(
            s,
            "<rect x=\"{ox}\" y=\"{mt}\" width=\"{pw}\" height=\"{ph}\" fill=\"none\" stroke=\"#999\"/>"
        );
        let mut y = y0;
        while y <= y1 + 1e-9 {
            let (right, yy, lx, ly) = (ox + pw, sy(y), ox - 4.0, sy(y) + 4.0);
            let label = human_bytes_per_s(10f64.powf(y));
            let _ = writeln!(
                s,
                "<line x1=\"{ox}\" x2=\"{right}\" y1=\"{yy}\" y2=\"{yy}\" stroke=\"#eee\"/>\
                 <text x=\"{lx}\" y=\"{ly}\" text-anchor=\"end\">{label}</text>"
            );
            y += 1.0;
        }
        let mut x = x0.ceil();
        while x <= x1 + 1e-9 {
            if (x as i64) % 2 == 0 || x1 - x0 < 8.0 {
                let _ = writeln!(
                    s,
                    "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
                    sx(x),
                    mt + ph + 16.0,
                    size_label(2f64.powf(x) as usize)
                );
            }
            x += 1.0;
        }
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">message size (log scale)</text>",
            ox + pw / 2.0,
            mt + ph + 36.0
        );
        for (i, &t) in Transport::ALL.iter().enumerate() {
            let pts = points(t, pl);
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let dash = if t.python().is_some() {
                " stroke-dasharray=\"5,3\""
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"{dash}/>",
                path.join(" "),
                COLORS[i]
            );
        }
    }
    let lx = placements.len().max(1) as f64 * (pw + ml) + 10.0;
    for (i, t) in Transport::ALL.iter().enumerate() {
        if *t == Transport::RawFutex {
            continue;
        }
        let y = mt + 14.0 * i as f64;
        let _ = writeln!(
            s,
            "<line x1=\"{lx}\" x2=\"{}\" y1=\"{y}\" y2=\"{y}\" stroke=\"{}\" stroke-width=\"2\"/><text x=\"{}\" y=\"{}\">{}</text>",
            lx + 20.0,
            COLORS[i],
            lx + 26.0,
            y + 4.0,
            t.name()
        );
    }
    s.push_str("</svg>\n");
    s
}

fn human_bytes_per_s(v: f64) -> String {
    if v >= 1e9 {
        format!("{:.0} GB/s", v / 1e9)
    } else if v >= 1e6 {
        format!("{:.0} MB/s", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.0} kB/s", v / 1e3)
    } else {
        format!("{v:.0} B/s")
    }
}
