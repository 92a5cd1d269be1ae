//! Writes `docs/benchmarks.md` from the last `cargo bench`: criterion's estimates under
//! `target/criterion/` and the figures the benches print (lines `group/name: ...` in the
//! log `scripts/bench-report` keeps). Run through `scripts/bench-report`, which runs the
//! benches first:
//!
//! ```sh
//! scripts/bench-report              # cargo bench, then docs/benchmarks.md
//! scripts/bench-report --no-run     # only rewrite it from the last run
//! cargo run --example bench_report -- target/criterion target/bench-report.log
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// One bench's estimate.
struct Estimate {
    /// Median time per iteration, ns.
    median: f64,
    /// The median's 95% interval, ns.
    low: f64,
    high: f64,
    /// Elements (or bytes) per iteration, where the bench declares a throughput.
    elements: Option<f64>,
    /// Whether `elements` counts bytes.
    bytes: bool,
    /// When criterion wrote it.
    written: std::time::SystemTime,
}

/// What a figure must be: below or above a bound, as the issues that set them asked.
enum Target {
    TimeBelow(&'static str, f64),
    /// `a`'s rate over `b`'s at least this.
    RatioAtLeast(&'static str, &'static str, f64),
}

const TARGETS: &[Target] = &[
    Target::RatioAtLeast("pow/mine_2_threads", "pow/mine_1_thread", 1.85),
    Target::TimeBelow("chain/validate_100k", 150e6),
    Target::TimeBelow("node/startup_100k", 1e9),
    Target::TimeBelow("net/sync_100k", 2e9),
    Target::TimeBelow("net/propagation_8", 50e6),
];

fn read_estimates(root: &Path) -> BTreeMap<String, Estimate> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path.file_name().is_some_and(|n| n == "new") {
                    if let Some((id, e)) = read_one(&path) {
                        out.insert(id, e);
                    }
                } else if path.file_name().is_some_and(|n| n != "report") {
                    stack.push(path);
                }
            }
        }
    }
    out
}

fn read_one(dir: &Path) -> Option<(String, Estimate)> {
    let json = |name: &str| -> Option<Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
    };
    let bench = json("benchmark.json")?;
    let est = json("estimates.json")?;
    let id = bench["full_id"].as_str()?.to_owned();
    let median = &est["median"];
    let bytes = bench["throughput"]["Bytes"].as_f64();
    let elements = bench["throughput"]["Elements"].as_f64().or(bytes);
    let written = std::fs::metadata(dir.join("estimates.json"))
        .and_then(|m| m.modified())
        .ok()?;
    Some((
        id,
        Estimate {
            median: median["point_estimate"].as_f64()?,
            low: median["confidence_interval"]["lower_bound"].as_f64()?,
            high: median["confidence_interval"]["upper_bound"].as_f64()?,
            elements,
            bytes: bytes.is_some(),
            written,
        },
    ))
}

fn time(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}

fn rate(per_second: f64, bytes: bool) -> String {
    let unit = if bytes { "B/s" } else { "/s" };
    if per_second >= 1e9 {
        format!("{:.2} G{unit}", per_second / 1e9)
    } else if per_second >= 1e6 {
        format!("{:.2} M{unit}", per_second / 1e6)
    } else if per_second >= 1e3 {
        format!("{:.1} k{unit}", per_second / 1e3)
    } else {
        format!("{per_second:.1} {unit}")
    }
}

/// The family of a bench whose name ends in a number (`pow_offset/17`: `pow_offset/N`).
fn family(id: &str) -> String {
    let stem = id.trim_end_matches(|c: char| c.is_ascii_digit());
    if stem.len() < id.len() && (stem.ends_with('/') || stem.ends_with('_')) {
        format!("{stem}N")
    } else {
        id.to_owned()
    }
}

/// Families of at least this many benches are one row of the table.
const FAMILY_ROW: usize = 5;

/// The lines the benches print besides criterion's: `group/name[ what]: figure`.
fn printed(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let Some((head, rest)) = l.split_once(": ") else {
                return false;
            };
            let id = head.split(' ').next().unwrap_or("");
            // criterion's own `id   time:   [...]` lines are in the table already.
            let word = head.rsplit(' ').next().unwrap_or("");
            !rest.is_empty()
                && !["time", "thrpt", "change"].contains(&word)
                && id.contains('/')
                && !id.starts_with('/')
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c))
        })
        .map(str::to_owned)
        .collect()
}

fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cores} cores ({model})")
}

fn main() -> std::process::ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let (Some(root), log) = (args.first(), args.get(1)) else {
        eprintln!("usage: bench_report CRITERION_DIR [BENCH_LOG]  (writes the page to stdout)");
        return std::process::ExitCode::from(2);
    };
    let estimates = read_estimates(root);
    if estimates.is_empty() {
        eprintln!(
            "error: no criterion estimates under {}: run `cargo bench` first",
            root.display()
        );
        return std::process::ExitCode::FAILURE;
    }
    let log = log
        .and_then(|p| std::fs::read_to_string(p).ok())
        .unwrap_or_default();
    let newest = estimates.values().map(|e| e.written).max();
    let day = newest
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .format("%Y-%m-%d")
                .to_string()
        })
        .unwrap_or_default();

    let mut page = String::new();
    let _ = writeln!(
        page,
        "# Benchmarks\n\n\
         Written by `scripts/bench-report` from the last `cargo bench` ({day}, {}): criterion's\n\
         estimates in `target/criterion/` and the figures the benches print. Do not edit by\n\
         hand; run `scripts/bench-report` to measure again, on your machine. Absolute times on\n\
         a shared machine move by up to 2x from day to day: compare figures of one run.\n",
        machine()
    );
    let _ = writeln!(page, "## Targets\n");
    let _ = writeln!(
        page,
        "| figure | target | measured | met |\n|---|---|---|---|"
    );
    for t in TARGETS {
        match t {
            Target::TimeBelow(id, bound) => {
                if let Some(e) = estimates.get(*id) {
                    let _ = writeln!(
                        page,
                        "| `{id}` | < {} | {} | {} |",
                        time(*bound),
                        time(e.median),
                        if e.median < *bound { "yes" } else { "**no**" }
                    );
                }
            }
            Target::RatioAtLeast(a, b, bound) => {
                if let (Some(x), Some(y)) = (estimates.get(*a), estimates.get(*b)) {
                    let rate_of = |e: &Estimate| e.elements.unwrap_or(1.0) / e.median;
                    let ratio = rate_of(x) / rate_of(y);
                    let _ = writeln!(
                        page,
                        "| `{a}` / `{b}` (rates) | ≥ {bound:.2}x | {ratio:.2}x | {} |",
                        if ratio >= *bound { "yes" } else { "**no**" }
                    );
                }
            }
        }
    }
    let _ = writeln!(
        page,
        "\n## Every bench\n\nMedian time per iteration and its 95% interval; the rate where the \
         bench counts elements (hashes, frames, requests).\n"
    );
    let _ = writeln!(
        page,
        "| bench | median | 95% interval | rate |\n|---|---|---|---|"
    );
    let mut families: BTreeMap<String, Vec<&Estimate>> = BTreeMap::new();
    for (id, e) in &estimates {
        families.entry(family(id)).or_default().push(e);
    }
    for (name, members) in &families {
        let rate_of = |e: &Estimate| e.elements.map(|n| n * 1e9 / e.median);
        if members.len() >= FAMILY_ROW {
            let mut medians: Vec<f64> = members.iter().map(|e| e.median).collect();
            medians.sort_by(f64::total_cmp);
            let mid = medians[medians.len() / 2];
            let rates: Vec<f64> = members.iter().filter_map(|e| rate_of(e)).collect();
            let bytes = members.iter().any(|e| e.bytes);
            let rate = match (
                rates.iter().copied().reduce(f64::min),
                rates.iter().copied().reduce(f64::max),
            ) {
                (Some(lo), Some(hi)) => format!("{} – {}", rate(lo, bytes), rate(hi, bytes)),
                _ => String::new(),
            };
            let _ = writeln!(
                page,
                "| `{name}` ({} benches: the median of their medians; lowest – highest) | {} | {} – {} | {rate} |",
                members.len(),
                time(mid),
                time(medians[0]),
                time(medians[medians.len() - 1])
            );
        } else {
            for (id, e) in estimates.iter().filter(|(id, _)| family(id) == *name) {
                let rate = rate_of(e).map(|r| rate(r, e.bytes)).unwrap_or_default();
                let _ = writeln!(
                    page,
                    "| `{id}` | {} | {} – {} | {rate} |",
                    time(e.median),
                    time(e.low),
                    time(e.high)
                );
            }
        }
    }
    let lines = printed(&log);
    if !lines.is_empty() {
        let _ = writeln!(
            page,
            "\n## Printed by the benches\n\nFigures criterion does not keep (sizes, memory, CPU, \
             propagation read from the nodes' logs), as the benches printed them:\n"
        );
        for l in lines {
            let _ = writeln!(page, "- `{l}`");
        }
    }
    let _ = write!(
        page,
        "\n## Reading them\n\n\
         - `pow/compress256_one_block` is the ceiling: one SHA-256 compression of a block hidden\n  \
           from the optimizer (`black_box`), which the miner's one-compression attempts approach.\n\
         - `pow_offset/*` is the miner's first layout at each offset of the nonce in the last\n  \
           64-byte block; `spill_*` the two-compression layout used once a tail range is spent.\n\
         - `net/*` run real node processes on this machine: the nodes and the bench share its\n  \
           cores, so figures of many nodes are bounds of a crowded machine, not of a network.\n\
         - `POWCHAIN_CHAIN_BLOCKS=1000000` runs the chain benches on a million blocks;\n  \
           `POWCHAIN_SCALE` sets the sizes of `net/scale`; `POWCHAIN_DASHBOARD_NODES` the\n  \
           dashboard's network.\n"
    );
    print!("{page}");
    std::process::ExitCode::SUCCESS
}
