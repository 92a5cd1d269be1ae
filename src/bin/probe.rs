//! `probe`: the HTTP API and dashboard over local nodes. Parses flags, sets up logging,
//! optionally spawns nodes, binds, announces, serves.

use std::net::IpAddr;

use clap::Parser;
use powchain::block::MAX_DIFFICULTY;
use powchain::cli::LogFormat;
use powchain::params::DEFAULT_DIFFICULTY;
use powchain::probe::{self, ProbeState, spawn};
use tokio::net::TcpListener;

/// HTTP API and live dashboard over powchain nodes.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// HTTP port.
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Address to serve HTTP on.
    #[arg(long, visible_alias = "host", default_value = "127.0.0.1")]
    bind: IpAddr,
    /// The powchain home: the registry, and nodes' data directories (cookies) [default: ~/.powchain].
    #[arg(long, env = "POWCHAIN_HOME", value_name = "DIR")]
    home: Option<std::path::PathBuf>,
    /// The only host nodes are reached on; a path names a port, never a host.
    #[arg(long, default_value = "127.0.0.1")]
    node_host: IpAddr,
    /// Start N local nodes (ports 5001..) and stop them on exit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    spawn: usize,
    /// Difficulty of spawned nodes.
    #[arg(long, default_value_t = DEFAULT_DIFFICULTY, value_parser = clap::value_parser!(u32).range(0..=MAX_DIFFICULTY as i64))]
    difficulty: u32,
    /// A host name the probe answers to besides its addresses and localhost (repeatable);
    /// other names are refused, against DNS rebinding.
    #[arg(long = "allow-host", value_name = "NAME")]
    allow_hosts: Vec<String>,
    /// Seconds between two samples of every node's status for the dashboard's history
    /// (`GET /history`, ten minutes kept); 0 turns sampling off.
    #[arg(long, value_name = "SECS", default_value_t = 2)]
    sample_every: u64,
    /// Follow the network beyond the registry: walk the nodes' address books (`get_addr`)
    /// from the registry's nodes and these seeds (`host:port`, comma-separated or repeated;
    /// none: the registry's alone), and show every node found (at most 4,096) on the
    /// dashboard and in `GET /nodes`. Admin requests still reach only registry nodes.
    #[arg(long, value_name = "ADDR", num_args = 0.., value_delimiter = ',')]
    crawl: Option<Vec<String>>,
    /// Log format on stderr: text, or json (one object per event).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `probe __node PORT [flags]` is a node: what `--spawn` starts when no `node` binary
    // sits next to the probe (as after `cargo run --bin probe`).
    if std::env::args().nth(1).as_deref() == Some(spawn::NODE_MODE) {
        let args = powchain::cli::NodeArgs::parse_from(std::env::args().skip(1));
        powchain::cli::init_logging(args.log_format);
        return powchain::cli::node_main(args).await;
    }
    let args = Args::parse();
    powchain::cli::init_logging(args.log_format);
    // Taken before any node is spawned or anything announced: a stop at any moment from
    // here on is graceful and stops the spawned nodes too.
    let stop = powchain::cli::shutdown_signal();
    let listener = match TcpListener::bind((args.bind, args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}:{}: {e}", args.bind, args.port);
            return std::process::ExitCode::FAILURE;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        return std::process::ExitCode::FAILURE;
    };
    let home = args.home.clone().unwrap_or_else(powchain::home::home);
    let nodes = if args.spawn > 0 {
        let node_args = vec![
            "--difficulty".to_owned(),
            args.difficulty.to_string(),
            "--home".to_owned(),
            home.display().to_string(),
        ];
        let params = powchain::ChainParams::with_difficulty(args.difficulty);
        match spawn::spawn_nodes(args.spawn, &node_args, &home, &params).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("error: could not start nodes: {e}");
                return std::process::ExitCode::FAILURE;
            }
        }
    } else {
        Vec::new()
    };
    println!("listening on http://{addr}");
    if let Some(first) = nodes.first() {
        let port = first.addr.rsplit(':').next().unwrap_or("5001");
        for n in &nodes {
            let moved = n
                .moved_from
                .map(|p| format!(", port {p} was taken"))
                .unwrap_or_default();
            println!("node on {} (data: {}{moved})", n.addr, n.data_dir.display());
        }
        println!("dashboard: http://{addr}/");
        println!("try:");
        println!(
            "  curl -X POST http://{addr}/mine_block/{port} -H 'Content-Type: application/json' \\\n    -d '[{{\"transaction\":{{\"from\":\"alice\",\"to\":\"bob\",\"amount\":5}}}}]'"
        );
        println!("  curl http://{addr}/get_chain/{port}");
        println!("  curl http://{addr}/validate/{port}");
    }
    let mut state = ProbeState::for_hosts(args.node_host, home, args.allow_hosts)
        .with_sample_interval(std::time::Duration::from_secs(args.sample_every));
    if let Some(seeds) = args.crawl {
        state = state.with_crawl(seeds);
    }
    match powchain::metrics::install() {
        Ok(handle) => state = state.with_metrics(handle),
        Err(e) => tracing::warn!("no metrics: {e}"),
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let trigger = shutdown.clone();
    tokio::spawn(async move {
        stop.await;
        trigger.cancel();
    });
    let served = probe::serve(listener, state, shutdown).await;
    spawn::stop_nodes(nodes).await;
    match served {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
