//! What both binaries share: logging setup, the shutdown signal, and the node's command
//! line (the probe runs it too, so `--spawn` works with the probe binary alone).

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::block::MAX_DIFFICULTY;
use crate::node::{self, Config, limits};
use crate::params::{ChainParams, DEFAULT_DIFFICULTY, DEFAULT_MAX_BLOCK_SIZE, Retarget};

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), coloured only
/// on a terminal.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => log
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // One object per line: timestamp, level, target, and the event's fields
        // (`message` and the rest) under "fields", as tracing-subscriber writes them.
        LogFormat::Json => log.json().with_ansi(false).init(),
    }
}

/// How the binaries write their log to stderr (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people (colours on a terminal).
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

/// Takes over SIGINT and SIGTERM at once (from this call on neither kills the process) and
/// returns a future that resolves on the first of them (Ctrl-C elsewhere). Call it before
/// announcing the address: a supervisor that stops the process as soon as it has read the
/// announcement must get a graceful stop, not the signal's default death.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let signals = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        );
        async move {
            let (Ok(mut term), Ok(mut int)) = signals else {
                return;
            };
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// A powchain node: keeps, mines, stores and gossips the chain.
#[derive(Debug, Parser)]
#[command(name = "node", version, about)]
pub struct NodeArgs {
    /// TCP port to listen on (0 picks a free one).
    pub port: u16,
    /// Address to bind (loopback by default; anything else exposes the node).
    #[arg(long, visible_alias = "bind", default_value = "127.0.0.1")]
    pub host: IpAddr,
    /// The powchain home: the registry, and nodes' data directories [default: ~/.powchain].
    #[arg(long, env = "POWCHAIN_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// A peer to connect to, as HOST:PORT (repeatable).
    #[arg(long = "peer", value_name = "HOST:PORT")]
    pub peers: Vec<String>,
    /// Where the chain and cookie live [default: <home>/nodes/<port> for the default network,
    /// <home>/networks/<name>/nodes/<port> for others, e.g. networks/d8].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Starting difficulty in leading zero bits (part of the network's identity).
    #[arg(long, default_value_t = DEFAULT_DIFFICULTY, value_parser = clap::value_parser!(u32).range(0..=MAX_DIFFICULTY as i64))]
    pub difficulty: u32,
    /// Retarget the difficulty every N blocks (off by default; part of the network's identity).
    #[arg(long, value_name = "N", requires = "retarget_secs", value_parser = clap::value_parser!(u64).range(2..))]
    pub(crate) retarget_interval: Option<u64>,
    /// Target seconds per block when retargeting.
    #[arg(long, value_name = "SECS", requires = "retarget_interval", value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) retarget_secs: Option<u64>,
    /// Mining threads [default: all cores].
    #[arg(long)]
    pub threads: Option<usize>,
    /// Largest frame payload accepted, in bytes.
    #[arg(long, default_value_t = crate::frame::DEFAULT_MAX_FRAME)]
    pub(crate) max_frame: usize,
    /// Size cap: every block must be smaller than this many bytes of compact JSON
    /// (PROTOCOL.md rule 8; a block of exactly this size is refused).
    #[arg(long, default_value_t = DEFAULT_MAX_BLOCK_SIZE)]
    pub(crate) max_block: usize,
    /// Most connections open at once.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_CONNECTIONS)]
    pub(crate) max_connections: usize,
    /// Seconds after which an idle connection is closed.
    #[arg(long, default_value_t = limits::DEFAULT_IDLE_TIMEOUT_SECS)]
    pub idle_timeout: u64,
    /// Refuse the bare SHUTDOWN command even from loopback.
    #[arg(long)]
    pub strict_admin: bool,
    /// Do not join the shared registry ($POWCHAIN_HOME/nodes.json).
    #[arg(long)]
    pub(crate) no_registry: bool,
    /// Re-check every stored block against every rule at start, as for a chain from a peer
    /// (by default every block's hash, link and proof of work are checked, and all rules
    /// only for the newest 1,000 blocks).
    #[arg(long)]
    pub reverify: bool,
    /// Most links this node dials itself (replaced from the address book when lost).
    #[arg(long, default_value_t = limits::DEFAULT_MAX_OUTBOUND)]
    pub max_outbound: usize,
    /// Most links other nodes may open to this one.
    #[arg(long, default_value_t = limits::DEFAULT_MAX_INBOUND)]
    pub(crate) max_inbound: usize,
    /// The address other nodes should dial, IP:PORT, when the bound one is not it
    /// (a node bound to 0.0.0.0, or behind a forwarded port). An address, not a name:
    /// peers refuse a `hello` naming a host they would have to resolve.
    #[arg(long, value_name = "IP:PORT")]
    pub advertise: Option<String>,
    /// Blocks with less data than this many bytes are relayed whole; bigger ones are
    /// announced by header to peers that fetch them (version 2), so each peer downloads a
    /// block once. 0 announces every block; a huge value pushes every block whole.
    #[arg(long, value_name = "BYTES", default_value_t = limits::DEFAULT_PUSH_BELOW)]
    pub push_below: usize,
    /// How to publish mined blocks: honest (at once), or selfish (withhold them in a
    /// private branch and release them by Eyal and Sirer's selfish-mining rules, to study
    /// the attack on a test network).
    #[arg(long, value_name = "STRATEGY", default_value_t = crate::node::Strategy::Honest)]
    pub strategy: crate::node::Strategy,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9101; port 0
    /// picks one, logged at start). Off by default.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// Log format on stderr: text, or json (one object per event).
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// Runs a node with `args` until it is shut down: the whole of `node PORT [flags]`.
pub async fn node_main(args: NodeArgs) -> std::process::ExitCode {
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
    let home = args.home.clone().unwrap_or_else(crate::home::home);
    let params = ChainParams {
        difficulty: args.difficulty,
        retarget,
        max_block_size: args.max_block,
    };
    // Each network its own directory, so nodes of other rules never meet one another's stores.
    let mut config = Config::new(
        args.data_dir
            .unwrap_or_else(|| crate::home::node_dir_for(&home, &params, addr.port())),
    );
    config.params = params;
    config.peers = args.peers;
    config.registry = (!args.no_registry).then(|| {
        crate::registry::Registry::in_home(&home)
            .path()
            .to_path_buf()
    });
    config.threads = args.threads.unwrap_or(config.threads).max(1);
    config.max_frame = args.max_frame;
    config.max_connections = args.max_connections.max(1);
    config.idle_timeout = Duration::from_secs(args.idle_timeout.max(1));
    config.strict_admin = args.strict_admin || !args.host.is_loopback();
    config.push_below = args.push_below;
    config.strategy = args.strategy;
    if args.reverify {
        config.verify = crate::store::Verify::Full;
    }
    config.limits = crate::node::Limits {
        max_outbound: args.max_outbound,
        max_inbound: args.max_inbound,
    };
    if let Some(advertise) = &args.advertise {
        match crate::node::dial_addr(advertise, None) {
            Some(a) => config.advertise = Some(a),
            None => {
                eprintln!(
                    "error: --advertise {advertise:?} is not IP:PORT (a numeric address \
                     other nodes can dial, e.g. 192.0.2.7:5001)"
                );
                return std::process::ExitCode::FAILURE;
            }
        }
    }

    let shutdown = CancellationToken::new();
    let node = match node::Node::open(config, addr, shutdown.clone()).await {
        Ok(n) => n,
        Err(e) => {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    if let Some(at) = args.metrics {
        let served = match crate::metrics::install() {
            Ok(handle) => crate::metrics::bind(at).await.map(|l| (handle, l)),
            Err(e) => Err(format!("cannot install the metrics recorder: {e}")),
        };
        let (handle, listener) = match served {
            Ok(done) => done,
            Err(e) => {
                eprintln!("error: --metrics: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        if let Ok(local) = listener.local_addr() {
            tracing::info!("metrics on http://{local}/metrics");
        }
        let (watched, stop) = (node.clone(), shutdown.clone());
        tokio::spawn(async move {
            let refresh = move || watched.record_gauges();
            let stopped = async move { stop.cancelled().await };
            if let Err(e) = crate::metrics::serve(listener, handle, refresh, stopped).await {
                tracing::warn!("metrics listener failed: {e}");
            }
        });
    }
    let stop = crate::cli::shutdown_signal();
    // In the registry before the announcement: whoever waits for the line finds it there.
    node::join(&node).await;
    println!("listening on {addr}");
    tokio::spawn(async move {
        stop.await;
        shutdown.cancel();
    });
    node::accept(node, listener).await;
    std::process::ExitCode::SUCCESS
}
