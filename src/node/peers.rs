//! Peers: the set a node knows, one task per peer keeping the link alive, peer sharing,
//! backoff for lost peers and a temporary ban for peers that send invalid blocks.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::Node;
use crate::client::NodeClient;
use crate::message::ErrorCode;

/// Unanswered relays to one peer beyond which new blocks are not sent to it.
pub const MAX_RELAYS_IN_FLIGHT: usize = 4;

/// Counts one relay in flight until dropped.
#[derive(Debug)]
pub struct RelayGuard(Arc<AtomicUsize>);

impl Drop for RelayGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Invalid blocks from one peer before it is dropped.
const MAX_STRIKES: u32 = 5;
/// How long a dropped peer stays banned.
const BAN: Duration = Duration::from_secs(600);
/// How often a link is checked and peer lists are exchanged.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Debug)]
struct Entry {
    client: Arc<NodeClient>,
    /// Relays sent to this peer and not yet answered.
    relays: Arc<AtomicUsize>,
    connected: bool,
    strikes: u32,
    stop: CancellationToken,
}

/// The peers a node knows.
#[derive(Debug, Default)]
pub struct PeerSet {
    entries: Mutex<HashMap<String, Entry>>,
    banned: Mutex<HashMap<String, Instant>>,
}

impl PeerSet {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns every known peer, connected or being retried, sorted.
    pub fn known(&self) -> Vec<String> {
        let mut v: Vec<String> = self.lock().keys().cloned().collect();
        v.sort();
        v
    }

    /// Returns the peers currently connected, sorted.
    pub fn connected(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.connected)
            .map(|(a, _)| a.clone())
            .collect();
        v.sort();
        v
    }

    /// Returns the client of a known peer.
    pub fn client(&self, addr: &str) -> Option<Arc<NodeClient>> {
        self.lock().get(addr).map(|e| e.client.clone())
    }

    /// Returns the connected peers other than `except` that can take one more relay, each
    /// with its client and a guard that counts the relay until dropped. A peer with
    /// [`MAX_RELAYS_IN_FLIGHT`] unanswered relays is skipped: a slow or stalled peer costs
    /// bounded memory, and catches up through a locator sync once it answers again.
    pub fn relay_targets(
        &self,
        except: Option<&str>,
    ) -> Vec<(String, Arc<NodeClient>, RelayGuard)> {
        self.lock()
            .iter()
            .filter(|(a, e)| e.connected && Some(a.as_str()) != except)
            .filter_map(|(a, e)| {
                if e.relays.fetch_add(1, Ordering::AcqRel) >= MAX_RELAYS_IN_FLIGHT {
                    e.relays.fetch_sub(1, Ordering::AcqRel);
                    return None;
                }
                Some((a.clone(), e.client.clone(), RelayGuard(e.relays.clone())))
            })
            .collect()
    }

    /// Starts keeping a link to `addr` unless it is ourselves, known already or banned.
    pub fn learn(&self, node: &Arc<Node>, addr: &str) {
        if addr == node.listen_addr() || node.shutdown.is_cancelled() {
            return;
        }
        {
            let mut banned = self.banned.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(until) = banned.get(addr) {
                if Instant::now() < *until {
                    return;
                }
                banned.remove(addr);
            }
        }
        let stop = node.shutdown.child_token();
        {
            let mut entries = self.lock();
            if entries.contains_key(addr) {
                return;
            }
            let client = Arc::new(NodeClient::new(addr).with_timeout(Duration::from_secs(10)));
            entries.insert(
                addr.to_owned(),
                Entry {
                    client,
                    relays: Arc::new(AtomicUsize::new(0)),
                    connected: false,
                    strikes: 0,
                    stop: stop.clone(),
                },
            );
        }
        tracing::info!(peer = %addr, "new peer");
        let (node2, addr2) = (node.clone(), addr.to_owned());
        node.tasks
            .spawn(async move { keep_link(node2, addr2, stop).await });
    }

    /// Forgets a peer; false if it was not known.
    pub fn remove(&self, addr: &str) -> bool {
        match self.lock().remove(addr) {
            Some(e) => {
                e.stop.cancel();
                true
            }
            None => false,
        }
    }

    /// Marks a peer as lost; its task reconnects with backoff.
    pub fn mark_lost(&self, addr: &str) {
        if let Some(e) = self.lock().get_mut(addr) {
            e.connected = false;
        }
    }

    fn set_connected(&self, addr: &str, connected: bool) {
        if let Some(e) = self.lock().get_mut(addr) {
            e.connected = connected;
        }
    }

    /// Counts an invalid block against a peer; drops and bans it after too many.
    pub fn strike(&self, addr: &str, reason: &str) {
        let dropped = {
            let mut entries = self.lock();
            let Some(e) = entries.get_mut(addr) else {
                return;
            };
            e.strikes += 1;
            tracing::warn!(peer = %addr, strikes = e.strikes, "peer sent an invalid block: {reason}");
            e.strikes >= MAX_STRIKES
        };
        if dropped {
            self.ban(addr, "too many invalid blocks");
        }
    }

    fn ban(&self, addr: &str, why: &str) {
        tracing::warn!(peer = %addr, "dropping peer for {} s: {why}", BAN.as_secs());
        self.remove(addr);
        self.banned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(addr.to_owned(), Instant::now() + BAN);
    }
}

/// Connects to the configured peers and to the registry's `entries` (read by the caller).
pub fn start(node: &Arc<Node>, entries: Option<Result<Vec<(u16, String)>, String>>) {
    for addr in &node.config.peers {
        node.peers.learn(node, addr);
    }
    match entries {
        Some(Ok(entries)) => {
            for (port, host) in entries {
                node.peers.learn(node, &format!("{host}:{port}"));
            }
        }
        Some(Err(e)) => tracing::warn!("{e}"),
        None => {}
    }
}

/// Keeps the link to one peer: handshake, share peers, sync, then check it regularly;
/// reconnects with backoff when lost.
async fn keep_link(node: Arc<Node>, addr: String, stop: CancellationToken) {
    let Some(client) = node.peers.client(&addr) else {
        return;
    };
    let mut backoff = Duration::from_millis(250);
    let mut failures = 0u32;
    loop {
        match client.hello(node.hello()).await {
            Ok(theirs) if theirs.genesis != node.genesis_hash() => {
                let why = format!(
                    "another network: its genesis is {}, ours is {}",
                    theirs.genesis,
                    node.genesis_hash()
                );
                node.peers.ban(&addr, &why);
                return;
            }
            Ok(theirs) => {
                if failures > 0 || !node.peers.connected().contains(&addr) {
                    tracing::info!(peer = %addr, height = theirs.height, "peer connected");
                }
                failures = 0;
                backoff = Duration::from_millis(250);
                node.peers.set_connected(&addr, true);
                if let Ok(peers) = client.get_peers().await {
                    for p in peers {
                        node.peers.learn(&node, &p);
                    }
                }
                let ours: u128 = node.chain().work();
                if theirs.work.parse::<u128>().is_ok_and(|w| w > ours) {
                    node.sync_with(&addr).await;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(KEEPALIVE) => continue,
                }
            }
            Err(e) if e.error_code() == Some(ErrorCode::WrongNetwork) => {
                node.peers.ban(&addr, &e.to_string());
                return;
            }
            Err(e) => {
                failures += 1;
                node.peers.set_connected(&addr, false);
                if failures == 1 {
                    tracing::info!(peer = %addr, "peer unreachable, retrying with backoff: {e}");
                    prune_from_registry(&node, &addr).await;
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Removes a registry entry whose node does not answer (off the runtime: a file lock).
async fn prune_from_registry(node: &Node, addr: &str) {
    let Some(registry) = node.registry.clone() else {
        return;
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return;
    };
    let Ok(port) = port.parse::<u16>() else {
        return;
    };
    let host = host.to_owned();
    match tokio::task::spawn_blocking(move || registry.remove_if(port, &host)).await {
        Ok(Ok(true)) => tracing::info!(peer = %addr, "pruned dead node from the registry"),
        Ok(Ok(false)) => {}
        Ok(Err(e)) => tracing::debug!("registry prune failed: {e}"),
        Err(e) => tracing::debug!("registry prune failed: {e}"),
    }
}

impl Node {
    /// Adds a peer by address (`host:port`, an `http://` prefix tolerated).
    pub fn add_peer(self: &Arc<Self>, addr: &str) -> Result<(), String> {
        let addr = normalize_addr(addr)?;
        if addr == self.listen_addr() {
            return Err(format!("{addr} is this node itself"));
        }
        self.peers
            .banned
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&addr);
        self.peers.learn(self, &addr);
        Ok(())
    }
}

/// Checks and normalizes a peer address: `host:port`, an `http://` prefix and a trailing
/// slash tolerated.
pub fn normalize_addr(addr: &str) -> Result<String, String> {
    let a = addr.trim();
    let a = a.strip_prefix("http://").unwrap_or(a).trim_end_matches('/');
    let Some((host, port)) = a.rsplit_once(':') else {
        return Err(format!("peer address {addr:?} is not host:port"));
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("peer address {addr:?} has a bad port"))?;
    if host.is_empty() || port == 0 || host.contains(['/', ' ', '@']) {
        return Err(format!("peer address {addr:?} is not host:port"));
    }
    let host = if host == "localhost" {
        "127.0.0.1"
    } else {
        host
    };
    Ok(format!("{host}:{port}"))
}
