//! Whether the command line's filter selects a benchmark id, so that a bench can skip an
//! expensive set-up (busy threads, CPython runs) that only filtered-out benchmarks need.
//!
//! Criterion applies its filter only when a benchmark is about to run; set-up code around
//! `bench_function` runs whatever the filter says. This reads the same filter the same way: the
//! first argument that is neither a flag nor a flag's value, as a regex, or as an exact id
//! with `--exact`.

/// Criterion's flags that take a value (the value is not the filter).
const WITH_VALUE: &[&str] = &[
    "--warm-up-time",
    "--measurement-time",
    "--profile-time",
    "--save-baseline",
    "--baseline",
    "--baseline-lenient",
    "--load-baseline",
    "--sample-size",
    "--nresamples",
    "--noise-threshold",
    "--confidence-level",
    "--significance-level",
    "--output-format",
    "--color",
    "--plotting-backend",
    "--format",
];

/// True when no filter is given or the filter selects `id` (`group/function`).
pub fn selected(id: &str) -> bool {
    let mut args = std::env::args().skip(1);
    let mut exact = false;
    let mut filter = None;
    while let Some(a) = args.next() {
        if a == "--exact" {
            exact = true;
        } else if WITH_VALUE.contains(&a.as_str()) {
            args.next();
        } else if !a.starts_with('-') && filter.is_none() {
            filter = Some(a);
        }
    }
    match filter {
        None => true,
        Some(f) if exact => f == id,
        // A filter that is not a valid regex selects nothing here, as criterion then fails.
        Some(f) => regex::Regex::new(&f).is_ok_and(|r| r.is_match(id)),
    }
}
