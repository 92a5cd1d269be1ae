//! Links to peers: one task per peer keeps its link (handshake, peer sharing, sync when it
//! has more work, a regular check, reconnection with backoff), and the node learns peers
//! from `--peer`, the registry, handshakes and peer lists.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::core::Node;
use super::peers::normalize_addr;
use crate::message::ErrorCode;

/// How often a link is checked and peer lists are exchanged.
const KEEPALIVE: Duration = Duration::from_secs(2);
/// Longest wait between two reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Connects to the configured peers and to the registry's `entries` (read by the caller).
pub fn start(node: &Arc<Node>, entries: Option<Result<Vec<(u16, String)>, String>>) {
    for addr in &node.config.peers {
        node.learn_peer(addr);
    }
    match entries {
        Some(Ok(entries)) => {
            for (port, host) in entries {
                node.learn_peer(&format!("{host}:{port}"));
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
                        node.learn_peer(&p);
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
    /// Learns the address of a peer and, if it is new, starts keeping the link to it.
    pub fn learn_peer(self: &Arc<Self>, addr: &str) {
        let Some(stop) = self.peers.learn(addr, &self.listen_addr(), &self.shutdown) else {
            return;
        };
        tracing::info!(peer = %addr, "new peer");
        let (node, addr) = (self.clone(), addr.to_owned());
        self.tasks
            .spawn(async move { keep_link(node, addr, stop).await });
    }

    /// Adds a peer by address (`host:port`, an `http://` prefix tolerated).
    pub fn add_peer(self: &Arc<Self>, addr: &str) -> Result<(), String> {
        let addr = normalize_addr(addr)?;
        if addr == self.listen_addr() {
            return Err(format!("{addr} is this node itself"));
        }
        self.peers.unban(&addr);
        self.learn_peer(&addr);
        Ok(())
    }
}
