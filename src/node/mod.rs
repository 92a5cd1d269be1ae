//! The node: shared state, the accept loop and graceful shutdown.
//!
//! `run(listener, config, shutdown)` serves until `shutdown` is cancelled (by the caller, or by
//! a `shutdown` request), then stops accepting, cancels mining, lets in-flight replies finish,
//! leaves the registry and closes the store. `serve` is [`join`] (into the registry, links
//! started) then [`accept`]; the `node` binary prints `listening on ADDR` between the two,
//! so a node that has announced itself is already in the registry.
//!
//! Each part is an owner with its own state, made with the collaborators it uses (never the
//! whole node); the `Node` holds them and the handler dispatches requests to them.
//!
//! | module | owns | works with |
//! |---|---|---|
//! | `shared` | `Node` (the owners, wired together), `Config`, opening a node | |
//! | [`limits`] | every cap and interval of the node, and the command line's defaults | |
//! | [`state`] | `ChainState`: the chain in memory and in its store, changed one at a time | the store, `Env` |
//! | `sync` | `Syncer`: offered blocks, pushed chains, locator sync (one peer or several) | `ChainState`, `PeerSet`, `Relay` |
//! | `branch` | `CompetingBranch`: a fork held while it is fetched, within caps | |
//! | `relay` | `Relay`: sending a new block to the peers without it | `PeerSet` |
//! | `jobs` | `Jobs`: mining jobs, and mining again the data a reorg left behind | `ChainState`, `Miner`, `Relay` |
//! | `strategy` | what a selfish miner withholds and when it publishes | |
//! | `miner` | `Miner`: proof-of-work runs and their cancellation | `Env` |
//! | `links` | `Links`: dialling and keeping links, handshakes, pings | `PeerSet`, `Syncer`, `ChainState` |
//! | `peers`, `addrbook` | the peer set and the address book of candidates | `Env`'s network |
//! | `admin` | `Admin`: the cookie and the check of admin requests | |
//! | `connection` | one connection's framing loop and its time limits | `Node` |
//! | `handler` | from a request to its reply; one identity per connection | `Node` |

mod addrbook;
mod admin;
mod branch;
mod connection;
mod handler;
mod jobs;
pub mod limits;
mod links;
mod miner;
mod peers;
mod relay;
mod shared;
pub mod state;
mod strategy;
mod sync;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::env::Listener;
use tokio_util::sync::CancellationToken;

pub use self::shared::{Config, Node, NodeError};
pub use limits::{MAX_ADDRS, MAX_BRANCH_BLOCKS, MAX_BRANCH_BYTES, SYNC_BATCH};
pub(crate) use links::dial_addr;
pub use miner::Miner;
pub use peers::Limits;
pub(crate) use peers::normalize_addr;
pub use strategy::{Races, Strategy};

/// Serves `listener` until `shutdown` is cancelled; returns once everything is closed.
pub async fn run<L: Listener>(
    listener: L,
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
pub async fn serve<L: Listener>(node: Arc<Node>, listener: L) {
    join(&node).await;
    accept(node, listener).await;
}

/// Makes an opened node findable: adds it to the registry, starts its links (configured
/// peers and the registry's nodes) and the mining of data queued before a restart. Its
/// listener is already bound, so peers that dial it at once wait in the backlog.
pub async fn join(node: &Arc<Node>) {
    // The registry and the store are files under locks: touched off the runtime.
    // The registry is this machine's: a node bound to every interface is found on loopback.
    let ip = node.listen.ip();
    let host = if ip.is_unspecified() {
        "127.0.0.1".to_owned()
    } else {
        ip.to_string()
    };
    let port = node.listen.port();
    let (registry, store) = (node.registry.clone(), node.state.store().clone());
    let (entries, queued) = node
        .config
        .env
        .blocking
        .run(move || {
            let entries = registry.map(|r| {
                if let Err(e) = r.add(port, &host) {
                    tracing::warn!("could not register in {}: {e}", r.path().display());
                }
                r.entries()
                    .map_err(|e| format!("could not read the registry {}: {e}", r.path().display()))
            });
            (entries, store.remine_queue())
        })
        .await
        .unwrap_or_else(|e| (Some(Err(e)), Ok(Vec::new())));
    links::start(&node.links, entries);
    node.jobs.start();
    match queued {
        Ok(queued) => {
            for (id, data) in queued {
                node.jobs
                    .spawn_remine(id, data, limits::REMINE_DELAY_STARTUP);
            }
        }
        Err(e) => tracing::warn!("could not read data queued for mining again: {e}"),
    }
}

/// Accepts connections on `listener` for a node that has [`join`]ed until its shutdown
/// token is cancelled, then shuts it down: no new connections, mining cancelled, in-flight
/// replies given 5 s, out of the registry.
pub async fn accept<L: Listener>(node: Arc<Node>, mut listener: L) {
    let permits = Arc::new(Semaphore::new(node.config.max_connections));
    let port = node.listen.port();
    loop {
        // Taking the permit before accept caps open connections without refusing in a loop.
        let permit = tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            biased;
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
    node.jobs.miner().cancel_all();
    node.tasks.close();
    if tokio::time::timeout(Duration::from_secs(5), node.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not finish within 5 s; closing them");
    }
    // A sync cut short by the shutdown may leave batches committed without an fsync.
    if let Err(e) = node.state.flush().await {
        tracing::error!("synced blocks could not be made durable: {e}");
    }
    if let Some(registry) = node.registry.clone() {
        let left = node
            .config
            .env
            .blocking
            .run(move || registry.remove(port))
            .await;
        if let Ok(Err(e)) = left {
            tracing::warn!("could not leave the registry: {e}");
        }
    }
    tracing::info!("store closed, bye");
}
