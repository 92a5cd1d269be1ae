//! Simulates a powchain network of many nodes on one thread, deterministically: the real
//! node code on turmoil's simulated hosts and TCP (see `powchain_testkit::sim`).
//!
//! ```text
//! cargo run --release --example simulate -- --nodes 1000 --seed 42 --minutes 10 \
//!     --block-interval 10s --latency 20ms..300ms --loss 0.01
//! cargo run --release --example simulate -- --nodes 200 --minutes 5 \
//!     --bandwidth 10Mbit..100Mbit --block-size 1MB
//! cargo run --release --example simulate -- --scenario examples/scenarios/selfish.toml \
//!     --report target/report/selfish
//! ```
//!
//! Prints one JSON summary on stdout (the same, byte for byte, for the same options and
//! seed) and the run's wall-clock figures on stderr; with `--scenario`, one JSON line per
//! run and a table of the sweep on stderr. `--report DIR` writes JSON, CSV and SVG plots
//! (`powchain_testkit::report`). Exits 1 when an invariant breaks, naming the seed that
//! replays it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::{CommandFactory, FromArgMatches, Parser};
use powchain_testkit::report::{self, Outcome};
use powchain_testkit::scenario::{Flags, Run, Scenario};
use powchain_testkit::sim;
use serde_json::{Value, json};

// Thousands of simulated nodes make millions of small allocations on one thread; glibc's
// allocator spent 97% of a 10,000-node run searching its bins, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulate a powchain network (the real node code on a simulated network).
#[derive(Debug, Parser)]
#[command(name = "simulate", args_override_self = true)]
struct Args {
    #[command(flatten)]
    flags: Flags,
    /// A scenario file (TOML): the flags by name, and a `[sweep]` of `seeds` and one or
    /// two flags (see examples/scenarios). Flags given here override the file's settings.
    #[arg(long, value_name = "FILE")]
    scenario: Option<PathBuf>,
    /// Write the runs' summaries (JSON, CSV), the sweep's means (CSV) and plots (SVG) here.
    #[arg(long, value_name = "DIR")]
    report: Option<PathBuf>,
    /// Runs of a scenario simulated at once (each on one thread); all cores by default.
    #[arg(long)]
    jobs: Option<usize>,
}

fn main() -> ExitCode {
    let matches = Args::command().get_matches();
    let args = match Args::from_arg_matches(&matches) {
        Ok(args) => args,
        Err(e) => e.exit(),
    };
    // The nodes' logs, on stderr, when RUST_LOG asks for them (e.g. RUST_LOG=info): each
    // line stamped with the simulated time and in the span of its host (`node{name="n3"}`,
    // which the simulator opens around every host's step; enabled whatever RUST_LOG says,
    // while the simulator's own events stay under RUST_LOG's control).
    if std::env::var_os("RUST_LOG").is_some() {
        let filter = tracing_subscriber::EnvFilter::from_default_env()
            .add_directive("turmoil::sim=info".parse().expect("a valid directive"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_timer(SimulatedTime)
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init();
    }
    let Some(path) = &args.scenario else {
        return single(&args);
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let scenario = match Scenario::parse(&text) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    let runs = match scenario.runs(&Flags::given(&matches)) {
        Ok(runs) => runs,
        Err(e) => {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(2);
        }
    };
    sweep(&args, &scenario, runs)
}

/// One run from the flags, as always.
fn single(args: &Args) -> ExitCode {
    let options = match args.flags.options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = match sim::run(&options) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report.summary).unwrap_or_default()
            );
            eprintln!("{}", report.speed);
            Outcome {
                point: Vec::new(),
                seed: options.seed,
                summary: report.summary,
                series: Some(report.series),
                error: None,
            }
        }
        Err(failure) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&failure.summary).unwrap_or_default()
            );
            eprintln!("error: {failure}");
            Outcome {
                point: Vec::new(),
                seed: options.seed,
                summary: failure.summary.clone(),
                series: None,
                error: Some(failure.to_string()),
            }
        }
    };
    if let Some(dir) = &args.report
        && let Err(e) = report::write(dir, &[], std::slice::from_ref(&outcome), None)
    {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    if outcome.error.is_some() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Every run of a scenario, `--jobs` at a time; one JSON line per run on stdout, in the
/// scenario's order, and the sweep's table on stderr.
fn sweep(args: &Args, scenario: &Scenario, mut runs: Vec<Run>) -> ExitCode {
    let total = runs.len();
    // Runs at once must not share a store directory.
    if let Some(dir) = &args.flags.data_dir {
        for (i, run) in runs.iter_mut().enumerate() {
            run.flags.data_dir = Some(dir.join(format!("run-{i}")));
        }
    }
    let jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .clamp(1, total.max(1));
    eprintln!(
        "scenario {}: {total} runs, {jobs} at a time",
        scenario.name.as_deref().unwrap_or("(unnamed)")
    );
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; total]);
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(run) = runs.get(i) else { return };
                    let outcome = run_one(run);
                    eprintln!(
                        "run {}/{total} ({}seed {}): {}",
                        i + 1,
                        run.point
                            .iter()
                            .map(|(k, v)| format!("{k} {v}, "))
                            .collect::<String>(),
                        run.flags.seed,
                        outcome.error.as_deref().unwrap_or("ok"),
                    );
                    done.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(outcome);
                }
            });
        }
    });
    let outcomes: Vec<Outcome> = done
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .flatten()
        .collect();
    for o in &outcomes {
        let line = json!({
            "point": o.point.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "seed": o.seed,
            "ok": o.error.is_none(),
            "summary": o.summary,
        });
        println!("{line}");
    }
    let swept: Vec<String> = scenario.swept.iter().map(|(k, _)| k.clone()).collect();
    eprint!(
        "{}",
        report::table(&swept, &outcomes, scenario.published.as_ref())
    );
    if let Some(dir) = &args.report {
        match report::write(dir, &swept, &outcomes, scenario.published.as_ref()) {
            Ok(files) => eprintln!("report: {} files in {}", files.len(), dir.display()),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let failed = outcomes.iter().filter(|o| o.error.is_some()).count();
    if failed > 0 {
        eprintln!("error: {failed} of {total} runs failed (their lines say how)");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

fn run_one(run: &Run) -> Outcome {
    let options = match run.flags.options() {
        Ok(o) => o,
        Err(e) => {
            return Outcome {
                point: run.point.clone(),
                seed: run.flags.seed,
                summary: Value::Null,
                series: None,
                error: Some(e),
            };
        }
    };
    match sim::run(&options) {
        Ok(r) => Outcome {
            point: run.point.clone(),
            seed: options.seed,
            summary: r.summary,
            series: Some(r.series),
            error: None,
        },
        Err(f) => Outcome {
            point: run.point.clone(),
            seed: options.seed,
            summary: f.summary.clone(),
            series: None,
            error: Some(f.to_string()),
        },
    }
}

/// Log timestamps in simulated seconds since the run began (`sim 12.340s`); the wall
/// clock outside the simulated hosts.
struct SimulatedTime;

impl tracing_subscriber::fmt::time::FormatTime for SimulatedTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        match sim::simulated_elapsed() {
            Some(t) => write!(w, "sim {:>9.3}s", t.as_secs_f64()),
            None => tracing_subscriber::fmt::time::SystemTime.format_time(w),
        }
    }
}
