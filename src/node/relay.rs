//! `Relay`: sending a block the node took on to the peers that do not hold it yet.
//!
//! It sees only the [`PeerSet`] (who is linked, what each is known to hold, how many relays
//! to each are in flight) and the node's task tracker; whoever changed the chain tells it
//! what to send and to whom not.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::peers::PeerSet;
use crate::block::Block;

/// Sends blocks to peers without waiting for them.
#[derive(Debug)]
pub(super) struct Relay {
    peers: Arc<PeerSet>,
    tasks: TaskTracker,
}

impl Relay {
    pub(super) fn new(peers: Arc<PeerSet>, tasks: TaskTracker) -> Self {
        Relay { peers, tasks }
    }

    /// Sends `block` to every connected peer but `except` and those known to hold it; a
    /// peer whose relay fails is marked lost (its link pings it at once).
    pub(super) fn send(&self, block: &Block, except: Option<&str>) {
        for (addr, client, guard) in self.peers.relay_targets(block.hash, except) {
            let block = block.clone();
            let peers = self.peers.clone();
            self.tasks.spawn(async move {
                let _counted = guard;
                if let Err(e) = client.new_block(block).await {
                    tracing::debug!(peer = %addr, "relay failed: {e}");
                    peers.mark_lost(&addr);
                }
            });
        }
    }
}
