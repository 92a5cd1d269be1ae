//! Changing the chain: offered blocks, pushed chains, locator sync and reorgs, each committed
//! to the store before it is acknowledged.

use std::sync::Arc;

use super::Node;
use std::collections::HashSet;
use std::time::Duration;

use crate::block::{Block, BlockData, BlockHash};
use crate::client::NodeClient;
use crate::message::BlockOutcome;
use crate::rules::check_branch;

/// How long a node waits before mining again data of a block it did not mine itself.
pub const REMINE_DELAY_OTHERS: Duration = Duration::from_secs(10);
/// How long queued data waits after a restart (time for the first sync to bring it in).
pub const REMINE_DELAY_STARTUP: Duration = Duration::from_secs(3);

/// Blocks asked for per `get_blocks` round trip.
pub const SYNC_BATCH: usize = 5000;
/// Most blocks of a competing branch held in memory while it is fetched.
const MAX_PENDING: usize = 500_000;

impl Node {
    /// Applies `blocks` above `fork` (an extension or a reorg) in memory and in one store
    /// transaction, which also queues the data of blocks left behind to be mined again and
    /// drops the queue entry `job` whose data these blocks carry. Returns the blocks left
    /// behind. The caller holds the writer lock.
    async fn apply(
        self: &Arc<Self>,
        fork: u64,
        blocks: Vec<Block>,
        job: Option<u64>,
    ) -> Result<Vec<Block>, String> {
        let (left, (requeue, ours)) = {
            let mut chain = self.chain();
            let left = chain
                .replace_from(fork, blocks.clone())
                .map_err(|e| e.to_string())?;
            if left.is_empty() {
                (left, (Vec::new(), Vec::new()))
            } else {
                let kept: HashSet<&str> = chain
                    .iter()
                    .skip(fork as usize + 1)
                    .map(|b| b.data.as_str())
                    .collect();
                let (requeue, ours): (Vec<BlockData>, Vec<bool>) = left
                    .iter()
                    .filter(|b| !b.data.is_empty() && !kept.contains(b.data.as_str()))
                    .map(|b| (b.data.clone(), self.mining.is_mined_here(&b.hash)))
                    .unzip();
                (left, (requeue, ours))
            }
        };
        let node = self.clone();
        let tip = blocks.last().map(|b| b.hash);
        let queued = requeue.clone();
        let committed =
            tokio::task::spawn_blocking(move || node.store.commit(fork, &blocks, &queued, job))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string()));
        let ids = match committed {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!("store commit failed, chain change undone: {e}");
                self.chain().rewind(fork, left);
                return Err(format!("could not store the block: {e}"));
            }
        };
        if let Some(tip) = tip {
            self.tip.send_replace(tip);
        }
        if !left.is_empty() {
            let height = self.chain().height();
            tracing::warn!(
                fork,
                left_behind = left.len(),
                requeued = ids.len(),
                new_height = height,
                "reorg to a chain with more work"
            );
        }
        for ((id, data), ours) in ids.into_iter().zip(requeue).zip(ours) {
            let delay = if ours {
                Duration::ZERO
            } else {
                REMINE_DELAY_OTHERS
            };
            self.spawn_remine(id, data, delay);
        }
        Ok(left)
    }

    /// Mines again, in the background, data that a reorg left behind (queue entry `id`).
    ///
    /// Every node that held the block queues its data, but only the node that mined it
    /// mines it again at once; the others wait `delay` and mine it only if it is still
    /// missing, so that several nodes do not race to include the same data (which would
    /// leave equal-work tips that stay apart until a next block).
    pub(super) fn spawn_remine(self: &Arc<Self>, id: u64, data: BlockData, delay: Duration) {
        tracing::info!(
            data = %data.as_str().chars().take(80).collect::<String>(),
            delay_secs = delay.as_secs(),
            "mining again the data of a block left behind"
        );
        let node = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if let Err(e) = node.mine_job(data, Some(id)).await {
                tracing::warn!("could not mine again data left behind (kept queued): {e}");
            }
        });
    }

    /// Extends the tip with `block` if it links to it; `None` when it does not link.
    async fn try_extend(
        self: &Arc<Self>,
        block: &Block,
        job: Option<u64>,
    ) -> Option<Result<(), String>> {
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
        Some(self.apply(height, vec![block.clone()], job).await.map(drop))
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
        match self.try_extend(&block, None).await {
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

    /// Commits a block this node mined (for queue entry `job`, if any); false when the tip
    /// moved meanwhile.
    pub(super) async fn commit_mined(
        self: &Arc<Self>,
        block: &Block,
        job: Option<u64>,
    ) -> Result<bool, String> {
        match self.try_extend(block, job).await {
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
        for (addr, client, guard) in self.peers.relay_targets(except) {
            let block = block.clone();
            let node = self.clone();
            self.tasks.spawn(async move {
                let _counted = guard;
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
        match self.apply(fork, rest, None).await {
            Ok(_) => {
                drop(writer);
                self.relay_tip(from.as_deref());
                true
            }
            Err(e) => {
                tracing::info!("pushed chain refused: {e}");
                false
            }
        }
    }

    /// Relays our tip to every peer but `except`.
    fn relay_tip(self: &Arc<Self>, except: Option<&str>) {
        let tip = self.chain().tip().clone();
        self.relay(&tip, except);
    }

    /// Catches up with `addr` through block locators; true when our chain changed.
    ///
    /// Blocks that extend our tip are applied batch by batch. A competing branch is checked
    /// batch by batch for what needs no chain below it, and adopted as soon as it has more
    /// work than ours above the fork, so a peer cannot make us hold a long worthless branch.
    pub async fn sync_with(self: &Arc<Self>, addr: &str) -> bool {
        let client = self
            .peers
            .client(addr)
            .unwrap_or_else(|| Arc::new(NodeClient::new(addr)));
        let mut changed = false;
        let mut pending: Vec<Block> = Vec::new();
        let mut pending_work = 0u128;
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
            let Ok(parent_hash) = first.prev_hash.parse::<BlockHash>() else {
                break;
            };
            let (known, height, parent) = {
                let chain = self.chain();
                let at = chain.height_of(&parent_hash);
                (at, chain.height(), at.and_then(|h| chain.get(h).cloned()))
            };
            if pending.is_empty() && known == Some(height) {
                let writer = self.writer.lock().await;
                if self.chain().height() != height {
                    continue;
                }
                match self.apply(height, batch, None).await {
                    Ok(_) => changed = true,
                    Err(e) => {
                        drop(writer);
                        self.peers.strike(addr, &e);
                        break;
                    }
                }
                continue;
            }
            let parent = match (pending.last(), parent) {
                (Some(last), _) if last.hash == parent_hash => last.clone(),
                (None, Some(p)) => {
                    fork = p.index;
                    p
                }
                _ => break,
            };
            match check_branch(&self.config.params, &parent, &batch) {
                Ok(work) => pending_work += work,
                Err(e) => {
                    self.peers.strike(addr, &format!("competing branch: {e}"));
                    return changed;
                }
            }
            pending.extend(batch);
            if pending_work > self.chain().work_above(fork) {
                let _writer = self.writer.lock().await;
                match self.apply(fork, std::mem::take(&mut pending), None).await {
                    Ok(_) => {
                        changed = true;
                        pending_work = 0;
                    }
                    Err(e) => {
                        tracing::debug!(peer = %addr, "competing branch not adopted: {e}");
                        return changed;
                    }
                }
            } else if pending.len() > MAX_PENDING {
                tracing::warn!(peer = %addr, "competing branch too long without more work; sync abandoned");
                return changed;
            }
        }
        if changed {
            let tip = self.chain().tip().clone();
            tracing::info!(peer = %addr, height = tip.index, "synced");
            self.relay(&tip, Some(addr));
        }
        changed
    }

    /// Syncs with every known peer; true when our chain changed.
    ///
    /// Every known peer is tried, not only those whose handshake has completed: a peer
    /// added a moment ago is synced with at once.
    pub async fn sync_all(self: &Arc<Self>) -> bool {
        let mut changed = false;
        for addr in self.peers.known() {
            changed |= self.sync_with(&addr).await;
        }
        changed
    }
}
