//! `Node`: what every task of a node shares (its config, chain state, peers, miner and
//! shutdown), and opening it. The behaviour lives in the modules beside this one.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::miner::Miner;
use super::peers::{Limits, PeerSet, SyncLimiter};
use super::state::ChainState;
use crate::block::BlockHash;
use crate::chain::Blockchain;
use crate::env::Env;
use crate::message::{Hello, PROTOCOL_VERSION};
use crate::params::ChainParams;
use crate::registry::Registry;
use crate::store::StoreError;

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
    /// How many links to dial and to accept.
    pub limits: Limits,
    /// The address peers should dial (`--advertise`), when the bound one is not it.
    pub advertise: Option<String>,
    /// How much of the stored chain to check at start (`--reverify`: all of it).
    pub verify: crate::store::Verify,
    /// What the node takes from its environment (network, clocks, threads, mining).
    pub env: Env,
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
            max_connections: super::limits::DEFAULT_MAX_CONNECTIONS,
            idle_timeout: Duration::from_secs(super::limits::DEFAULT_IDLE_TIMEOUT_SECS),
            strict_admin: false,
            limits: Limits::default(),
            advertise: None,
            verify: crate::store::Verify::Recent,
            env: Env::default(),
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
    pub(super) config: Config,
    pub(super) listen: SocketAddr,
    pub(super) state: Arc<ChainState>,
    pub(super) peers: PeerSet,
    pub(super) unlinked_syncs: SyncLimiter,
    pub(super) mining: Miner,
    pub(super) cookie: String,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    pub(super) registry: Option<Registry>,
    /// Numbers accepted connections, so an inbound link knows the one that opened it.
    pub(super) next_conn: AtomicU64,
    /// Blocks being handled right now: the same block from another peer meanwhile is
    /// ignored instead of handled twice.
    pub(super) handling: Mutex<HashSet<BlockHash>>,
    /// Set while one sync fetches from several peers at once (one such sync at a time).
    pub(super) fetching: std::sync::atomic::AtomicBool,
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
        let (dir, params, verify, env) = (
            config.data_dir.clone(),
            config.params.clone(),
            config.verify,
            config.env.clone(),
        );
        let started = std::time::Instant::now();
        let (state, cookie) = config
            .env
            .blocking
            .run(move || {
                let state = ChainState::open(&dir, &params, verify, env)?;
                let cookie = write_cookie(&dir)?;
                Ok::<_, NodeError>((state, cookie))
            })
            .await
            .map_err(NodeError::Task)??;
        let registry = config.registry.clone().map(Registry::new);
        {
            let chain = state.chain();
            tracing::info!(
                height = chain.height(),
                tip = %chain.tip().hash.short(),
                genesis = %chain.genesis().hash.short(),
                data_dir = %config.data_dir.display(),
                checked = %match config.verify {
                    crate::store::Verify::Recent => format!(
                        "hashes, links and proof of work of every block; every rule for the newest {}",
                        crate::store::RECHECK_AT_START
                    ),
                    crate::store::Verify::Full => "every rule of every block".to_owned(),
                },
                millis = started.elapsed().as_millis() as u64,
                "chain loaded"
            );
        }
        let mut own = vec![listen.to_string()];
        own.extend(config.advertise.clone());
        let limits = config.limits;
        Ok(Arc::new_cyclic(|weak: &Weak<Node>| {
            let weak = weak.clone();
            let greeting: crate::client::Greeting = Arc::new(move || {
                crate::message::Request::Hello(match weak.upgrade() {
                    Some(node) => node.hello(),
                    None => Hello {
                        version: PROTOCOL_VERSION,
                        genesis: BlockHash::default(),
                        listen: String::new(),
                        height: 0,
                        tip: BlockHash::default(),
                        work: "0".into(),
                    },
                })
            });
            Node {
                state: Arc::new(state),
                peers: PeerSet::new(limits, own, Some(greeting))
                    .with_env(config.env.net.clone(), config.env.seed),
                unlinked_syncs: SyncLimiter::default(),
                mining: Miner::default(),
                cookie,
                shutdown,
                tasks: TaskTracker::new(),
                registry,
                listen,
                config,
                next_conn: AtomicU64::new(0),
                handling: Mutex::new(HashSet::new()),
                fetching: std::sync::atomic::AtomicBool::new(false),
            }
        }))
    }

    /// Locks the in-memory chain; never held across an `.await`.
    pub(super) fn chain(&self) -> MutexGuard<'_, Blockchain> {
        self.state.chain()
    }

    /// Returns the address peers should dial: `--advertise`, else the bound address.
    pub fn listen_addr(&self) -> String {
        self.config
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Returns this node's handshake values.
    pub fn hello(&self) -> Hello {
        let chain = self.chain();
        Hello {
            version: PROTOCOL_VERSION,
            genesis: chain.genesis().hash,
            listen: self.listen_addr(),
            height: chain.height(),
            tip: chain.tip().hash,
            work: chain.work().to_string(),
        }
    }

    /// Returns a copy of the node's chain, genesis first.
    pub fn chain_blocks(&self) -> Vec<crate::block::Block> {
        self.chain().to_vec()
    }

    /// Returns the height and hash of the node's tip.
    pub fn tip(&self) -> (u64, BlockHash) {
        let chain = self.chain();
        (chain.height(), chain.tip().hash)
    }

    /// Returns the number of addresses in the node's address book.
    pub fn address_book_len(&self) -> usize {
        self.peers.book_len()
    }

    /// Returns the data queued in the store to be mined again (left behind by reorgs).
    /// Blocking: reads the store.
    pub fn queued_data(&self) -> Result<Vec<crate::block::BlockData>, StoreError> {
        Ok(self
            .state
            .store()
            .pending()?
            .into_iter()
            .map(|(_, data)| data)
            .collect())
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
