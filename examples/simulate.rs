//! Simulates a powchain network of many nodes on one thread, deterministically: the real
//! node code on turmoil's simulated hosts and TCP (see `powchain_testkit::sim`).
//!
//! ```text
//! cargo run --release --example simulate -- --nodes 1000 --seed 42 --minutes 10 \
//!     --block-interval 10s --latency 20ms..300ms --loss 0.01
//! cargo run --release --example simulate -- --nodes 200 --minutes 5 \
//!     --bandwidth 10Mbit..100Mbit --block-size 1MB
//! ```
//!
//! Prints one JSON summary on stdout (the same, byte for byte, for the same options and
//! seed) and the run's wall-clock figures on stderr. Exits 1 when an invariant breaks,
//! naming the seed that replays it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use powchain_testkit::sim::{self, Options, Partition};

// Thousands of simulated nodes make millions of small allocations on one thread; glibc's
// allocator spent 97% of a 10,000-node run searching its bins, mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Simulate a powchain network (the real node code on a simulated network).
#[derive(Debug, Parser)]
#[command(name = "simulate")]
struct Args {
    /// Nodes in the network.
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    /// Seed of every random choice (the same seed gives the same output).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated minutes of mining.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Mean time between blocks of the whole network (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = sim::parse_duration)]
    block_interval: Duration,
    /// One-way message latency range (e.g. 20ms..300ms).
    #[arg(long, default_value = "20ms..300ms", value_parser = sim::parse_latency)]
    latency: (Duration, Duration),
    /// Per-node upload and download capacity, drawn per node from a range or one value for
    /// all (e.g. 10Mbit..100Mbit); unlimited (latency only) when not given.
    #[arg(long, value_parser = sim::parse_bandwidth)]
    bandwidth: Option<(f64, f64)>,
    /// Bytes of data in each mined block (e.g. 250, 100KB, 1MB).
    #[arg(long, default_value = "0", value_parser = sim::parse_size)]
    block_size: usize,
    /// Blocks with less data than this many bytes are pushed whole, bigger ones announced
    /// and fetched (the node's --push-below; 16384 by default). A huge value (e.g.
    /// 1000000000) pushes every block whole to every peer, as protocol version 1 nodes do.
    #[arg(long)]
    push_below: Option<usize>,
    /// Fraction of TCP writes lost (each is retransmitted after a timeout).
    #[arg(long, default_value_t = 0.0)]
    loss: f64,
    /// Split the network in two halves at a time for a while: halves@120s+60s.
    #[arg(long)]
    partition: Option<Partition>,
    /// Fraction of nodes that crash and restart at random times.
    #[arg(long, default_value_t = 0.0)]
    churn: f64,
    /// Nodes that mine (sharing the hash power equally); all by default.
    #[arg(long)]
    miners: Option<usize>,
    /// A selfish miner: node 0 mines with this share of the hash power (e.g. 0.4) and
    /// withholds its blocks by Eyal and Sirer's rules; the other miners share the rest.
    #[arg(long, value_name = "ALPHA")]
    selfish: Option<f64>,
    /// Links each node dials.
    #[arg(long, default_value_t = 8)]
    max_outbound: usize,
    /// Simulation step (resolution of message delivery and timers).
    #[arg(long, default_value = "10ms", value_parser = sim::parse_duration)]
    tick: Duration,
    /// Proof-of-work difficulty of the simulated blocks.
    #[arg(long, default_value_t = 4)]
    difficulty: u32,
    /// Deadline for agreement once mining stopped and every fault healed.
    #[arg(long, default_value = "120s", value_parser = sim::parse_duration)]
    settle: Duration,
    /// Where the nodes' stores go (default: a temporary directory, on /dev/shm if any).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Start of the simulated wall clock, in Unix seconds (2026-01-01T00:00:00Z by default).
    #[arg(long, default_value_t = sim::EPOCH_SECS)]
    epoch: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The nodes' logs, on stderr, when RUST_LOG asks for them (e.g. RUST_LOG=info).
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    if !(0.0..=1.0).contains(&args.loss) || !(0.0..=1.0).contains(&args.churn) {
        eprintln!("error: --loss and --churn are fractions between 0 and 1");
        return ExitCode::from(2);
    }
    if args.selfish.is_some_and(|a| !(a > 0.0 && a < 1.0)) {
        eprintln!("error: --selfish is a share of the hash power, above 0 and below 1");
        return ExitCode::from(2);
    }
    if args.tick.is_zero() || !args.minutes.is_finite() || args.minutes <= 0.0 {
        eprintln!("error: --tick and --minutes must be above zero");
        return ExitCode::from(2);
    }
    let options = Options {
        nodes: args.nodes,
        seed: args.seed,
        duration: Duration::from_secs_f64(args.minutes * 60.0),
        block_interval: args.block_interval,
        latency: args.latency,
        bandwidth: args.bandwidth,
        block_size: args.block_size,
        push_below: args.push_below,
        loss: args.loss,
        partition: args.partition,
        churn: args.churn,
        miners: args.miners,
        selfish: args.selfish,
        max_outbound: args.max_outbound,
        tick: args.tick,
        difficulty: args.difficulty,
        settle: args.settle,
        data_dir: args.data_dir,
        epoch_secs: args.epoch,
    };
    match sim::run(&options) {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report.summary).unwrap_or_default()
            );
            eprintln!("{}", report.speed);
            ExitCode::SUCCESS
        }
        Err(failure) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&failure.summary).unwrap_or_default()
            );
            eprintln!("error: {failure}");
            ExitCode::FAILURE
        }
    }
}
