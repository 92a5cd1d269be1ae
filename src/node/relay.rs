//! `Relay`: sending a block the node took on to the peers that do not hold it yet.
//!
//! A block whose data is smaller than `push_below` bytes goes whole (`new_block`): one
//! message, no round trip. A bigger one is announced by its header (`announce`) to peers
//! of protocol version 2 or later, which fetch the body from one announcer at a time
//! (`get_block`), so each node downloads it about once instead of once per link; a peer of
//! version 1 gets it whole, as it always did.
//!
//! It sees only the [`PeerSet`] (who is linked, what each is known to hold, how many relays
//! to each are in flight) and the node's task tracker; whoever changed the chain tells it
//! what to send and to whom not.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use super::peers::PeerSet;
use crate::block::Block;
use crate::message::{ANNOUNCE_VERSION, Header};

/// Sends blocks to peers without waiting for them.
#[derive(Debug)]
pub(super) struct Relay {
    peers: Arc<PeerSet>,
    tasks: TaskTracker,
    /// Blocks with less data than this are pushed whole to every peer.
    push_below: usize,
}

impl Relay {
    pub(super) fn new(peers: Arc<PeerSet>, tasks: TaskTracker, push_below: usize) -> Self {
        Relay {
            peers,
            tasks,
            push_below,
        }
    }

    /// Sends `block` (or its header) to every connected peer but `except` and those known
    /// to hold it; a peer whose relay fails is marked lost (its link pings it at once).
    pub(super) fn send(&self, block: &Block, except: Option<&str>) {
        let announce = block.data.as_str().len() >= self.push_below;
        for target in self.peers.relay_targets(block.hash, except) {
            let peers = self.peers.clone();
            let sent = if announce && target.version >= ANNOUNCE_VERSION {
                Sent::Header(Header::of(block))
            } else {
                Sent::Block(block.clone())
            };
            let how = match sent {
                Sent::Header(_) => "announce",
                Sent::Block(_) => "push",
            };
            metrics::counter!(crate::metrics::BLOCKS_RELAYED, "how" => how).increment(1);
            self.tasks.spawn(async move {
                let _counted = target.guard;
                let result = match sent {
                    Sent::Header(header) => target.client.announce(header).await.map(drop),
                    Sent::Block(block) => target.client.new_block(block).await.map(drop),
                };
                if let Err(e) = result {
                    tracing::debug!(peer = %target.addr, "relay failed: {e}");
                    peers.mark_lost(&target.addr);
                }
            });
        }
    }
}

/// What a relay sends one peer.
enum Sent {
    Header(Header),
    Block(Block),
}
