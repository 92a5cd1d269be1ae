//! The node: shared state, the accept loop and graceful shutdown.
//!
//! `run(listener, config, shutdown)` serves until `shutdown` is cancelled (by the caller, or by
//! a `shutdown` request), then stops accepting, cancels mining, lets in-flight replies finish,
//! leaves the registry and closes the store.

mod chainops;
mod connection;
mod handler;
mod miner;
mod peers;
pub mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::block::BlockHash;
use crate::chain::Blockchain;
use crate::params::ChainParams;
use crate::registry::Registry;
use crate::store::StoreError;
use state::ChainState;

pub use miner::Miner;
pub use peers::{PeerSet, normalize_addr};

/// Everything a node is told at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// The network's rules.
    pub params: ChainParams,
    /// Where the chain and the cookie live.
    pub data_dir: PathBuf,
    /// The shared registry of running nodes (`$POWCHAIN_HOME/nodes.json`), if any.
    pub registry: Option<PathBuf>,
    /// Peers to connect to at start.
    pub peers: Vec<String>,
    /// Mining threads.
    pub threads: usize,
    /// Cap on a frame's payload.
    pub max_frame: usize,
    /// Cap on open connections.
    pub max_connections: usize,
    /// Connections idle this long are closed.
    pub idle_timeout: Duration,
    /// Refuse the bare `SHUTDOWN` even from loopback.
    pub strict_admin: bool,
}

impl Config {
    /// Returns a config with defaults for everything but the data directory.
    pub fn new(data_dir: PathBuf) -> Self {
        Config {
            params: ChainParams::default(),
            data_dir,
            registry: None,
            peers: Vec::new(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
            max_connections: 1024,
            idle_timeout: Duration::from_secs(120),
            strict_admin: false,
        }
    }
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// The store could not be opened or is of another network.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The data directory or cookie could not be written.
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Opening the store failed unexpectedly.
    #[error("could not open the store: {0}")]
    Task(String),
}

/// The state every task of a node shares.
pub struct Node {
    config: Config,
    listen: SocketAddr,
    state: Arc<ChainState>,
    peers: PeerSet,
    unlinked_syncs: chainops::SyncLimiter,
    mining: Miner,
    cookie: String,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    registry: Option<Registry>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Opens the store and writes the cookie, off the async runtime (loading a long chain
    /// takes a while); the node does not serve yet.
    pub async fn open(
        config: Config,
        listen: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<Arc<Node>, NodeError> {
        let (dir, params) = (config.data_dir.clone(), config.params.clone());
        let (state, cookie) = tokio::task::spawn_blocking(move || {
            let state = ChainState::open(&dir, &params)?;
            let cookie = write_cookie(&dir)?;
            Ok::<_, NodeError>((state, cookie))
        })
        .await
        .map_err(|e| NodeError::Task(e.to_string()))??;
        let registry = config.registry.clone().map(Registry::new);
        {
            let chain = state.chain();
            tracing::info!(
                height = chain.height(),
                tip = %chain.tip().hash.short(),
                genesis = %chain.genesis().hash.short(),
                data_dir = %config.data_dir.display(),
                "chain loaded and validated"
            );
        }
        Ok(Arc::new(Node {
            state: Arc::new(state),
            peers: PeerSet::default(),
            unlinked_syncs: chainops::SyncLimiter::default(),
            mining: Miner::default(),
            cookie,
            shutdown,
            tasks: TaskTracker::new(),
            registry,
            listen,
            config,
        }))
    }

    /// Locks the in-memory chain; never held across an `.await`.
    fn chain(&self) -> MutexGuard<'_, Blockchain> {
        self.state.chain()
    }

    /// Returns the address the node listens on, as peers should dial it.
    pub fn listen_addr(&self) -> String {
        self.listen.to_string()
    }

    /// Returns the node's genesis hash.
    pub fn genesis_hash(&self) -> BlockHash {
        self.chain().genesis().hash
    }
}

fn write_cookie(dir: &std::path::Path) -> Result<String, NodeError> {
    use rand::Rng;
    let err = |source| NodeError::DataDir {
        path: dir.to_path_buf(),
        source,
    };
    let bytes: [u8; 32] = rand::rng().random();
    let cookie = hex::encode(bytes);
    let path = dir.join(crate::client::COOKIE_FILE);
    let tmp = dir.join(".cookie.tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&tmp).map_err(err)?;
    std::io::Write::write_all(&mut file, cookie.as_bytes()).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)?;
    Ok(cookie)
}

/// Serves `listener` until `shutdown` is cancelled; returns once everything is closed.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), NodeError> {
    let listen = listener.local_addr().map_err(|source| NodeError::DataDir {
        path: config.data_dir.clone(),
        source,
    })?;
    let node = Node::open(config, listen, shutdown.clone()).await?;
    serve(node, listener).await;
    Ok(())
}

/// Runs an opened node on `listener` until its shutdown token is cancelled.
pub async fn serve(node: Arc<Node>, listener: TcpListener) {
    let permits = Arc::new(Semaphore::new(node.config.max_connections));
    // The registry and the store are files under locks: touched off the runtime.
    let (port, host) = (node.listen.port(), node.listen.ip().to_string());
    let (registry, store) = (node.registry.clone(), node.state.store().clone());
    let (entries, queued) = tokio::task::spawn_blocking(move || {
        let entries = registry.map(|r| {
            if let Err(e) = r.add(port, &host) {
                tracing::warn!("could not register in {}: {e}", r.path().display());
            }
            r.entries()
                .map_err(|e| format!("could not read the registry {}: {e}", r.path().display()))
        });
        (entries, store.pending())
    })
    .await
    .unwrap_or_else(|e| (Some(Err(e.to_string())), Ok(Vec::new())));
    peers::start(&node, entries);
    match queued {
        Ok(queued) => {
            for (id, data) in queued {
                node.spawn_remine(id, data, chainops::REMINE_DELAY_STARTUP);
            }
        }
        Err(e) => tracing::warn!("could not read data queued for mining again: {e}"),
    }
    loop {
        // Taking the permit before accept caps open connections without refusing in a loop.
        let permit = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = node.shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let node2 = node.clone();
                node.tasks.spawn(async move {
                    connection::serve(node2, stream, peer).await;
                    drop(permit);
                });
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    tracing::info!("shutting down: no longer accepting connections");
    drop(listener);
    node.mining.cancel_all();
    node.tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), node.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 5 s; closing them");
    }
    if let Some(registry) = node.registry.clone() {
        let left = tokio::task::spawn_blocking(move || registry.remove(port)).await;
        if let Ok(Err(e)) = left {
            tracing::warn!("could not leave the registry: {e}");
        }
    }
    tracing::info!("store closed, bye");
}
