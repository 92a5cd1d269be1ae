//! `node PORT`: a powchain peer. Parses flags, sets up logging, binds, announces, runs.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use powchain::chain::{ChainParams, DEFAULT_MAX_BLOCK_SIZE, Retarget};
use powchain::node::{self, Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// A powchain node: keeps, mines, stores and gossips the chain.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// TCP port to listen on (0 picks a free one).
    port: u16,
    /// Address to bind (loopback by default; anything else exposes the node).
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// A peer to connect to, as HOST:PORT (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    peers: Vec<String>,
    /// Where the chain and cookie live [default: $POWCHAIN_HOME/nodes/<port>].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Starting difficulty in leading zero bits (part of the network's identity).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(0..=64))]
    difficulty: u32,
    /// Retarget the difficulty every N blocks (off by default; part of the network's identity).
    #[arg(long, value_name = "N", requires = "retarget_secs", value_parser = clap::value_parser!(u64).range(2..))]
    retarget_interval: Option<u64>,
    /// Target seconds per block when retargeting.
    #[arg(long, value_name = "SECS", requires = "retarget_interval", value_parser = clap::value_parser!(u64).range(1..))]
    retarget_secs: Option<u64>,
    /// Mining threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Largest frame payload accepted, in bytes.
    #[arg(long, default_value_t = powchain::frame::DEFAULT_MAX_FRAME)]
    max_frame: usize,
    /// Largest block accepted, in bytes of JSON.
    #[arg(long, default_value_t = DEFAULT_MAX_BLOCK_SIZE)]
    max_block: usize,
    /// Most connections open at once.
    #[arg(long, default_value_t = 1024)]
    max_connections: usize,
    /// Seconds after which an idle connection is closed.
    #[arg(long, default_value_t = 120)]
    idle_timeout: u64,
    /// Refuse the bare SHUTDOWN command even from loopback.
    #[arg(long)]
    strict_admin: bool,
    /// Do not join the shared registry ($POWCHAIN_HOME/nodes.json).
    #[arg(long)]
    no_registry: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    powchain::cli::init_logging();
    let listener = match TcpListener::bind((args.host, args.port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}:{}: {e}", args.host, args.port);
            return std::process::ExitCode::FAILURE;
        }
    };
    let Ok(addr) = listener.local_addr() else {
        eprintln!("error: bound socket has no address");
        return std::process::ExitCode::FAILURE;
    };
    if !args.host.is_loopback() {
        tracing::warn!(
            "listening on non-loopback {}: anyone who can reach it may read the chain, submit \
             blocks and ask for mining; shutdown and peer changes need the cookie",
            args.host
        );
    }
    let retarget = args
        .retarget_interval
        .zip(args.retarget_secs)
        .map(|(interval, target_secs)| Retarget {
            interval,
            target_secs,
        });
    let mut config = Config::new(
        args.data_dir
            .unwrap_or_else(|| powchain::home::node_dir(addr.port())),
    );
    config.params = ChainParams {
        difficulty: args.difficulty,
        retarget,
        max_block_size: args.max_block,
    };
    config.peers = args.peers;
    config.registry = (!args.no_registry).then(|| {
        powchain::registry::Registry::in_home(&powchain::home::home())
            .path()
            .to_path_buf()
    });
    config.threads = args.threads.unwrap_or(config.threads).max(1);
    config.max_frame = args.max_frame;
    config.max_connections = args.max_connections.max(1);
    config.idle_timeout = Duration::from_secs(args.idle_timeout.max(1));
    config.strict_admin = args.strict_admin || !args.host.is_loopback();

    let shutdown = CancellationToken::new();
    let node = match node::Node::open(config, addr, shutdown.clone()) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    println!("listening on {addr}");
    tokio::spawn(async move {
        powchain::cli::shutdown_signal().await;
        shutdown.cancel();
    });
    node::serve(node, listener).await;
    std::process::ExitCode::SUCCESS
}
