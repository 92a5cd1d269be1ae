//! `Node`: what every task of a node shares (its config and the owners of its parts), and
//! opening it: each owner is made with the collaborators it uses, none with the node.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, MutexGuard};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::admin::Admin;
use super::jobs::Jobs;
use super::links::{self, Links};
use super::miner::MineError;
use super::peers::{Limits, PeerSet};
use super::relay::Relay;
use super::state::ChainState;
use super::strategy::Strategy;
use super::sync::{OnApplied, Syncer};

use crate::chain::Blockchain;
use crate::env::Env;
use crate::message::Hello;
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
    /// Blocks with less data than this are pushed whole; bigger ones are announced to peers
    /// that take announcements (`--push-below`).
    pub push_below: usize,
    /// How much of the stored chain to check at start (`--reverify`: all of it).
    pub verify: crate::store::Verify,
    /// redb's page cache for the store, in bytes ([`crate::store::CACHE_BYTES`]).
    pub store_cache: usize,
    /// How the node publishes the blocks it mines (`--strategy`).
    pub strategy: Strategy,
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
            push_below: super::limits::DEFAULT_PUSH_BELOW,
            verify: crate::store::Verify::Recent,
            store_cache: crate::store::CACHE_BYTES,
            strategy: Strategy::Honest,
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

/// What every task of a node shares: its config and the owners of its parts.
///
/// | field | owner of |
/// |---|---|
/// | `state` | the chain in memory and in its store ([`ChainState`]) |
/// | `peers` | links, what each peer holds, strikes, the address book ([`PeerSet`]) |
/// | `links` | dialling and keeping links, handshakes, pings ([`Links`]) |
/// | `relay` | sending a new block to the peers without it ([`Relay`]) |
/// | `sync` | offered blocks, pushed chains, locator sync ([`Syncer`]) |
/// | `jobs` | mining, and mining again what a reorg left behind ([`Jobs`]) |
/// | `admin` | the cookie and the check of admin requests ([`Admin`]) |
pub struct Node {
    pub(super) config: Config,
    pub(super) listen: SocketAddr,
    pub(super) state: Arc<ChainState>,
    pub(super) peers: Arc<PeerSet>,
    pub(super) links: Arc<Links>,
    pub(super) sync: Arc<Syncer>,
    pub(super) jobs: Arc<Jobs>,
    pub(super) admin: Admin,
    pub(super) shutdown: CancellationToken,
    pub(super) tasks: TaskTracker,
    pub(super) registry: Option<Registry>,
    /// Numbers accepted connections, so an inbound link knows the one that opened it.
    pub(super) next_conn: AtomicU64,
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
        let (dir, params, verify, cache, env) = (
            config.data_dir.clone(),
            config.params.clone(),
            config.verify,
            config.store_cache,
            config.env.clone(),
        );
        let started = std::time::Instant::now();
        let (state, admin) = config
            .env
            .blocking
            .run(move || {
                let state = ChainState::open(&dir, &params, verify, cache, env)?;
                let admin = Admin::write(&dir)?;
                Ok::<_, NodeError>((state, admin))
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
        let state = Arc::new(state);
        let advertised = config
            .advertise
            .clone()
            .unwrap_or_else(|| listen.to_string());
        let mut own = vec![listen.to_string()];
        own.extend(config.advertise.clone());
        let greeting: crate::client::Greeting = {
            let (state, advertised) = (state.clone(), advertised.clone());
            Arc::new(move || crate::message::Request::Hello(links::hello(&state, &advertised)))
        };
        let peers = Arc::new(
            PeerSet::new(config.limits, own, Some(greeting))
                .with_env(config.env.net.clone(), config.env.seed),
        );
        let tasks = TaskTracker::new();
        let relay = Arc::new(Relay::new(peers.clone(), tasks.clone(), config.push_below));
        let jobs = Arc::new(Jobs::new(
            state.clone(),
            relay.clone(),
            config.env.clone(),
            (
                config.params.max_block_size,
                config.threads,
                config.strategy,
            ),
            shutdown.clone(),
            tasks.clone(),
        ));
        let on_applied: OnApplied = {
            let jobs = jobs.clone();
            Arc::new(move |applied| jobs.follow_up(applied))
        };
        let sync = Arc::new(Syncer {
            state: state.clone(),
            peers: peers.clone(),
            relay,
            env: config.env.clone(),
            params: config.params.clone(),
            max_frame: config.max_frame,
            shutdown: shutdown.clone(),
            on_applied,
            tasks: tasks.clone(),
            marks: Default::default(),
        });
        let links = Arc::new(Links {
            peers: peers.clone(),
            sync: sync.clone(),
            state: state.clone(),
            registry: registry.clone(),
            env: config.env.clone(),
            seeds: config.peers.clone(),
            listen,
            advertised,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
        });
        Ok(Arc::new(Node {
            state,
            peers,
            links,
            sync,
            jobs,
            admin,
            shutdown,
            tasks,
            registry,
            listen,
            config,
            next_conn: AtomicU64::new(0),
        }))
    }

    /// Locks the in-memory chain; never held across an `.await`.
    pub(super) fn chain(&self) -> MutexGuard<'_, Blockchain> {
        self.state.chain()
    }

    /// Returns the address peers should dial: `--advertise`, else the bound address.
    pub(crate) fn listen_addr(&self) -> String {
        self.config
            .advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Returns this node's handshake values.
    pub fn hello(&self) -> Hello {
        self.links.hello()
    }

    /// Mines a block with `data` on the current tip; returns it once stored. A new tip
    /// cancels the attempt and restarts it on the new tip with the same data.
    pub async fn mine(&self, data: serde_json::Value) -> Result<crate::block::Block, MineError> {
        self.jobs.mine(data).await
    }

    /// Adds a peer by address (`host:port`, an `http://` prefix tolerated): a manual link,
    /// kept and re-dialled until removed.
    pub fn add_peer(&self, addr: &str) -> Result<(), String> {
        self.links.add_peer(addr)
    }

    /// Sets the metrics read from the node's state (height, work, peers, address book,
    /// hash rate), before a scrape renders them.
    pub(crate) fn record_gauges(&self) {
        use crate::metrics as m;
        {
            let chain = self.chain();
            metrics::gauge!(m::HEIGHT).set(chain.height() as f64);
            metrics::gauge!(m::TIP_WORK).set(chain.work() as f64);
        }
        metrics::gauge!(m::PEERS, "direction" => "outbound")
            .set(self.peers.outbound().len() as f64);
        metrics::gauge!(m::PEERS, "direction" => "inbound").set(self.peers.inbound().len() as f64);
        metrics::gauge!(m::ADDRESS_BOOK).set(self.peers.book_len() as f64);
        metrics::gauge!(m::HASH_RATE).set(self.jobs.miner().hash_rate());
    }
}

/// What the simulator and the fuzzer read of a running node (the `testkit` feature, which
/// the `powchain-testkit` crate and the fuzz crate turn on); a node's users read it by
/// its `status` request.
#[cfg(feature = "testkit")]
impl Node {
    /// Returns a copy of the node's chain, genesis first.
    pub fn chain_blocks(&self) -> Vec<crate::block::Block> {
        self.chain().to_vec()
    }

    /// Returns the height and hash of the node's tip.
    pub fn tip(&self) -> (u64, crate::block::BlockHash) {
        let chain = self.chain();
        (chain.height(), chain.tip().hash)
    }

    /// Returns how a selfish miner's races ended; `None` for an honest miner or while a
    /// change to its branch is under way.
    pub fn selfish_races(&self) -> Option<super::strategy::Races> {
        self.jobs.races()
    }

    /// Returns the addresses of the node's outbound links and of its inbound ones.
    pub fn links(&self) -> (Vec<String>, Vec<String>) {
        (self.peers.outbound(), self.peers.inbound())
    }

    /// Returns the number of addresses in the node's address book.
    pub fn address_book_len(&self) -> usize {
        self.peers.book_len()
    }

    /// Returns the data in the remine queue (left behind by reorgs, or withheld and given up).
    /// Blocking: reads the store.
    pub fn remine_queue(&self) -> Result<Vec<crate::block::BlockData>, StoreError> {
        Ok(self
            .state
            .store()
            .remine_queue()?
            .into_iter()
            .map(|(_, data)| data)
            .collect())
    }
}
