//! Changing the chain: offered blocks, pushed chains, locator sync and reorgs, each committed
//! to the store before it is acknowledged.

use std::sync::Arc;

use super::Node;
use crate::block::{Block, BlockHash};
use crate::client::NodeClient;
use crate::message::BlockOutcome;

/// Blocks asked for per `get_blocks` round trip.
pub const SYNC_BATCH: usize = 5000;
/// Most blocks of a competing branch held in memory while it is fetched.
const MAX_PENDING: usize = 2_000_000;

impl Node {
    /// Applies `blocks` above `fork` (an extension or a reorg) in memory and in one store
    /// transaction; returns the blocks left behind. The caller holds the writer lock.
    async fn apply(self: &Arc<Self>, fork: u64, blocks: Vec<Block>) -> Result<Vec<Block>, String> {
        let left = self
            .chain()
            .replace_from(fork, blocks.clone())
            .map_err(|e| e.to_string())?;
        let node = self.clone();
        let tip = blocks.last().map(|b| b.hash);
        let committed = tokio::task::spawn_blocking(move || node.store.replace_from(fork, &blocks))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        if let Err(e) = committed {
            tracing::error!("store commit failed, chain change undone: {e}");
            self.chain().rewind(fork, left);
            return Err(format!("could not store the block: {e}"));
        }
        if let Some(tip) = tip {
            self.tip.send_replace(tip);
        }
        Ok(left)
    }

    /// Extends the tip with `block` if it links to it; `None` when it does not link.
    async fn try_extend(self: &Arc<Self>, block: &Block) -> Option<Result<(), String>> {
        let _writer = self.writer.lock().await;
        let height = {
            let chain = self.chain();
            if block.index != chain.height() + 1 || block.prev_hash != chain.tip().hash.to_hex() {
                return None;
            }
            if let Err(e) = chain.check_next(block) {
                return Some(Err(e.to_string()));
            }
            chain.height()
        };
        Some(self.apply(height, vec![block.clone()]).await.map(drop))
    }

    /// Handles a block from a peer (`from`) or a user: append and relay, ignore, or sync.
    pub async fn offer_block(
        self: &Arc<Self>,
        block: Block,
        from: Option<String>,
    ) -> (BlockOutcome, Option<String>) {
        {
            let chain = self.chain();
            if chain.height_of(&block.hash).is_some() {
                return (
                    BlockOutcome::Ignored,
                    Some(format!("block {} is already held", block.index)),
                );
            }
            if block.index <= chain.height() {
                let reason = format!(
                    "block {} is not above our height {}",
                    block.index,
                    chain.height()
                );
                return (BlockOutcome::Ignored, Some(reason));
            }
        }
        match self.try_extend(&block).await {
            Some(Ok(())) => {
                tracing::info!(height = block.index, hash = %block.hash.short(), from = from.as_deref().unwrap_or("client"), "block appended");
                self.relay(&block, from.as_deref());
                (BlockOutcome::Appended, None)
            }
            Some(Err(reason)) => {
                if let Some(peer) = &from {
                    self.peers.strike(peer, &reason);
                }
                (BlockOutcome::Rejected, Some(reason))
            }
            None => {
                let changed = match &from {
                    Some(peer) => self.sync_with(peer).await,
                    None => self.sync_all().await,
                };
                if changed {
                    (BlockOutcome::Synced, None)
                } else {
                    let reason = format!(
                        "block {} links to unknown parent {} and no peer has a chain with more work",
                        block.index,
                        block.prev_hash.chars().take(16).collect::<String>()
                    );
                    (BlockOutcome::Rejected, Some(reason))
                }
            }
        }
    }

    /// Commits a block this node mined; false when the tip moved meanwhile.
    pub(super) async fn commit_mined(self: &Arc<Self>, block: &Block) -> Result<bool, String> {
        match self.try_extend(block).await {
            Some(Ok(())) => {
                tracing::info!(height = block.index, hash = %block.hash.short(), "mined block stored");
                self.relay(block, None);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    /// Sends `block` to every connected peer but `except`, without waiting for them.
    fn relay(self: &Arc<Self>, block: &Block, except: Option<&str>) {
        for (addr, client) in self.peers.clients_except(except) {
            let block = block.clone();
            let node = self.clone();
            self.tasks.spawn(async move {
                if let Err(e) = client.new_block(block).await {
                    tracing::debug!(peer = %addr, "relay failed: {e}");
                    node.peers.mark_lost(&addr);
                }
            });
        }
    }

    /// Adopts a whole pushed chain if it is valid and has more work (legacy push).
    pub async fn adopt_chain(self: &Arc<Self>, blocks: Vec<Block>, from: Option<String>) -> bool {
        let writer = self.writer.lock().await;
        let common = {
            let chain = self.chain();
            blocks
                .iter()
                .zip(chain.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        if common == 0 {
            return false;
        }
        let fork = (common - 1) as u64;
        let rest: Vec<Block> = blocks.into_iter().skip(common).collect();
        match self.apply(fork, rest).await {
            Ok(left) => {
                drop(writer);
                self.after_change(left, fork, from.as_deref());
                true
            }
            Err(e) => {
                tracing::info!("pushed chain refused: {e}");
                false
            }
        }
    }

    /// After a change: relay the new tip and mine again the data of blocks left behind.
    fn after_change(self: &Arc<Self>, left: Vec<Block>, fork: u64, from: Option<&str>) {
        let (tip, kept): (Block, Vec<String>) = {
            let chain = self.chain();
            let kept = chain
                .iter()
                .skip(fork as usize + 1)
                .map(|b| b.data.as_str().to_owned())
                .collect();
            (chain.tip().clone(), kept)
        };
        self.relay(&tip, from);
        if left.is_empty() {
            return;
        }
        tracing::warn!(
            fork,
            left_behind = left.len(),
            new_height = tip.index,
            "reorg to a chain with more work"
        );
        for block in left {
            if block.data.is_empty() || kept.iter().any(|d| d == block.data.as_str()) {
                continue;
            }
            tracing::info!(old_index = block.index, data = %block.data.as_str().chars().take(80).collect::<String>(), "mining again the data of a block left behind");
            let node = self.clone();
            let data = block.data.to_value();
            self.tasks.spawn(async move {
                if let Err(e) = node.mine(data).await {
                    tracing::warn!("could not mine again data left behind: {e}");
                }
            });
        }
    }

    /// Catches up with `addr` through block locators; true when our chain changed.
    pub async fn sync_with(self: &Arc<Self>, addr: &str) -> bool {
        let client = self
            .peers
            .client(addr)
            .unwrap_or_else(|| Arc::new(NodeClient::new(addr)));
        let mut changed = false;
        let mut pending: Vec<Block> = Vec::new();
        let mut fork = 0u64;
        loop {
            if self.shutdown.is_cancelled() {
                return changed;
            }
            let mut locator = self.chain().locator();
            if let Some(last) = pending.last() {
                locator.insert(0, last.hash);
            }
            let batch = match client.get_blocks(locator, SYNC_BATCH).await {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(peer = %addr, "sync stopped: {e}");
                    break;
                }
            };
            let Some(first) = batch.first() else { break };
            let Ok(parent) = first.prev_hash.parse::<BlockHash>() else {
                break;
            };
            if let Some(last) = pending.last() {
                if parent != last.hash {
                    break;
                }
                pending.extend(batch);
                if pending.len() > MAX_PENDING {
                    tracing::warn!(peer = %addr, "competing branch too long to hold; sync abandoned");
                    return changed;
                }
                continue;
            }
            let (known, height) = {
                let chain = self.chain();
                (chain.height_of(&parent), chain.height())
            };
            let Some(at) = known else { break };
            if at == height {
                let writer = self.writer.lock().await;
                if self.chain().height() != height {
                    continue;
                }
                match self.apply(at, batch).await {
                    Ok(_) => changed = true,
                    Err(e) => {
                        drop(writer);
                        self.peers.strike(addr, &e);
                        break;
                    }
                }
            } else {
                fork = at;
                pending = batch;
            }
        }
        if !pending.is_empty() {
            let writer = self.writer.lock().await;
            match self.apply(fork, pending).await {
                Ok(left) => {
                    drop(writer);
                    self.after_change(left, fork, Some(addr));
                    return true;
                }
                Err(e) => tracing::debug!(peer = %addr, "competing branch not adopted: {e}"),
            }
        }
        if changed {
            let tip = self.chain().tip().clone();
            tracing::info!(peer = %addr, height = tip.index, "synced");
            self.relay(&tip, Some(addr));
        }
        changed
    }

    /// Syncs with every connected peer; true when our chain changed.
    pub async fn sync_all(self: &Arc<Self>) -> bool {
        let mut changed = false;
        for addr in self.peers.connected() {
            changed |= self.sync_with(&addr).await;
        }
        changed
    }
}
