//! Changing the chain: offered blocks, pushed chains, locator sync and mining jobs, each
//! applied through [`ChainState`](super::state::ChainState) and followed by what a change
//! implies (relay, mining left-behind data again). Mining itself is the
//! [`Miner`](super::miner::Miner)'s; this module hands it templates and commits its blocks.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
// tokio's clock: the real one in the binary, the simulated one under simulation.
use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use super::limits::{
    MAX_FETCH_BYTES, MAX_HANDLING, MAX_PENDING_BLOCKS, MAX_PENDING_BYTES, MAX_SYNC_SOURCES,
    RANGES_PER_SOURCE, RECENT_SCAN, REMINE_DELAY_OTHERS, SYNC_BATCH, UNLINKED_SYNC_INTERVAL,
};
use super::miner::MineError;
use super::shared::Node;
use super::state::{Applied, ApplyError, WriterGuard};
use crate::block::{Block, BlockData, BlockHash, PrevHash};
use crate::client::{ClientError, NodeClient};
use crate::env::Event;
use crate::message::BlockOutcome;
use crate::rules::check_branch;

/// Marks a block as being handled until dropped.
struct Handling<'a> {
    node: &'a Node,
    hash: BlockHash,
    marked: bool,
}

impl<'a> Handling<'a> {
    /// Marks `hash`; `None` when it is being handled already.
    fn start(node: &'a Node, hash: BlockHash) -> Option<Self> {
        let mut set = node.handling.lock().unwrap_or_else(|e| e.into_inner());
        if set.contains(&hash) {
            return None;
        }
        let marked = set.len() < MAX_HANDLING && set.insert(hash);
        Some(Handling { node, hash, marked })
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        if self.marked {
            let mut set = self.node.handling.lock().unwrap_or_else(|e| e.into_inner());
            set.remove(&self.hash);
        }
    }
}

/// Why a competing branch being fetched was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PendingError {
    /// It holds too many blocks or bytes without outweighing our chain.
    #[error("competing branch of {blocks} blocks ({bytes} bytes) does not outweigh ours")]
    TooLarge { blocks: usize, bytes: usize },
    /// At its current difficulty it cannot outweigh ours within the caps.
    #[error(
        "competing branch cannot outweigh ours: it needs {needed} more work at {per_block} per \
         block, but only {room} more blocks fit"
    )]
    TooLight {
        needed: u128,
        per_block: u128,
        room: u128,
    },
}

/// A competing branch held while it is fetched, bounded in blocks, bytes and by work.
#[derive(Debug, Default)]
pub struct PendingBranch {
    blocks: Vec<Block>,
    bytes: usize,
    work: u128,
}

impl PendingBranch {
    /// Adds a checked batch of `work`; fails when the branch outgrows the caps, or when at
    /// the batch's difficulty it could not gain `ours` (our work above the fork) within them.
    pub fn push(&mut self, batch: Vec<Block>, work: u128, ours: u128) -> Result<(), PendingError> {
        let last_work = batch.last().map_or(1, Block::work).max(1);
        self.bytes += batch
            .iter()
            .map(|b| b.data.as_str().len() + 240)
            .sum::<usize>();
        self.blocks.extend(batch);
        self.work += work;
        if self.work > ours {
            return Ok(());
        }
        if self.blocks.len() > MAX_PENDING_BLOCKS || self.bytes > MAX_PENDING_BYTES {
            return Err(PendingError::TooLarge {
                blocks: self.blocks.len(),
                bytes: self.bytes,
            });
        }
        let per = self.bytes / self.blocks.len().max(1);
        let room = (MAX_PENDING_BLOCKS - self.blocks.len())
            .min((MAX_PENDING_BYTES - self.bytes) / per.max(1)) as u128;
        let needed = ours - self.work + 1;
        if needed.div_ceil(last_work) > room {
            return Err(PendingError::TooLight {
                needed,
                per_block: last_work,
                room,
            });
        }
        Ok(())
    }

    /// Tells whether the branch outweighs `ours`.
    pub fn outweighs(&self, ours: u128) -> bool {
        self.work > ours
    }

    /// Returns the newest block held.
    pub fn last(&self) -> Option<&Block> {
        self.blocks.last()
    }

    /// Takes the blocks out, leaving the branch empty.
    pub fn take(&mut self) -> Vec<Block> {
        self.bytes = 0;
        self.work = 0;
        std::mem::take(&mut self.blocks)
    }

    /// Tells whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

impl Node {
    /// Follows up a change: logs a reorg and mines again the data it left behind.
    fn follow_up(self: &Arc<Self>, applied: &Applied) {
        if !applied.left.is_empty() {
            tracing::warn!(
                fork = applied.fork,
                left_behind = applied.left.len(),
                requeued = applied.requeued.len(),
                new_height = self.chain().height(),
                "reorg to a chain with more work"
            );
        }
        for (id, block) in &applied.requeued {
            let delay = if self.mining.is_mined_here(&block.hash) {
                Duration::ZERO
            } else {
                REMINE_DELAY_OTHERS
            };
            self.spawn_remine(*id, block.data.clone(), delay);
        }
    }

    /// Applies `blocks` above `fork` (the caller holds the writer lock) and follows up.
    async fn apply(
        self: &Arc<Self>,
        writer: &WriterGuard<'_>,
        fork: u64,
        blocks: Vec<Block>,
    ) -> Result<(), ApplyError> {
        let applied = self.state.apply(writer, fork, blocks, None).await?;
        self.follow_up(&applied);
        Ok(())
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
                biased;
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if let Err(e) = node.mine_job(data, Some(id)).await {
                tracing::warn!("could not mine again data left behind (kept queued): {e}");
            }
        });
    }

    /// Extends the tip with `block` (for queue entry `job`, if any) if it links to it and
    /// follows up; `None` when it does not link.
    async fn try_extend(
        self: &Arc<Self>,
        block: &Block,
        job: Option<u64>,
    ) -> Option<Result<(), ApplyError>> {
        let result = self.state.extend(block, job).await?;
        Some(result.map(|applied| self.follow_up(&applied)))
    }

    /// Handles a block from a peer (`from`, its listen address) or a client: append and
    /// relay, ignore, or, for a peer's block that does not link, sync with that peer (at
    /// most once per `UNLINKED_SYNC_INTERVAL`). A client's block that does not link is
    /// refused: a client is nobody to sync with, and syncing with every peer on its word
    /// would let any client make the node flood its peers.
    pub async fn offer_block(
        self: &Arc<Self>,
        block: Block,
        from: Option<String>,
    ) -> (BlockOutcome, Option<String>) {
        if let Some(peer) = &from {
            self.peers.mark_known(peer, block.hash);
        }
        // The same block from several peers at once is handled once.
        let Some(_handling) = Handling::start(self, block.hash) else {
            return (
                BlockOutcome::Ignored,
                Some(format!("block {} is being handled already", block.index)),
            );
        };
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
            Some(Err(e)) => {
                let reason = e.to_string();
                if let Some(peer) = &from {
                    self.peers.strike(peer, &reason);
                }
                (BlockOutcome::Rejected, Some(reason))
            }
            None => self.on_unlinked(&block, from.as_deref()).await,
        }
    }

    /// Answers a block above our height that does not link to our tip.
    async fn on_unlinked(
        self: &Arc<Self>,
        block: &Block,
        from: Option<&str>,
    ) -> (BlockOutcome, Option<String>) {
        let parent: String = block.prev_hash.to_string().chars().take(16).collect();
        let Some(peer) = from.filter(|p| self.peers.client(p).is_some()) else {
            let reason = format!(
                "block {} links to unknown parent {parent}, not to our tip; only a peer's \
                 block makes the node sync (ask it to sync instead)",
                block.index
            );
            return (BlockOutcome::Rejected, Some(reason));
        };
        if self.fetching.load(Ordering::Acquire) {
            // The sync that runs fetches from this peer too: its block is no fault of its own.
            let reason = format!(
                "block {} does not link yet; a sync from several peers is running",
                block.index
            );
            return (BlockOutcome::Ignored, Some(reason));
        }
        if !self.unlinked_syncs.allow(peer, Instant::now()) {
            let reason = format!(
                "block {} does not link; a sync with {peer} ran less than {} ms ago",
                block.index,
                UNLINKED_SYNC_INTERVAL.as_millis()
            );
            return (BlockOutcome::Ignored, Some(reason));
        }
        if self.sync_with(peer).await {
            (BlockOutcome::Synced, None)
        } else {
            let reason = format!(
                "block {} links to unknown parent {parent} and {peer} has no chain with more work",
                block.index
            );
            (BlockOutcome::Rejected, Some(reason))
        }
    }

    /// Commits a block this node mined (for queue entry `job`, if any); false when the tip
    /// moved meanwhile.
    pub(super) async fn commit_mined(
        self: &Arc<Self>,
        block: &Block,
        job: Option<u64>,
    ) -> Result<bool, ApplyError> {
        match self.try_extend(block, job).await {
            Some(Ok(())) => {
                tracing::info!(height = block.index, hash = %block.hash.short(), "mined block stored");
                self.config.env.tell(Event::Mined { block });
                self.relay(block, None);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    /// Sends `block` to every connected peer but `except` and those known to hold it,
    /// without waiting for them.
    fn relay(self: &Arc<Self>, block: &Block, except: Option<&str>) {
        for (addr, client, guard) in self.peers.relay_targets(block.hash, except) {
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
        match self.state.adopt_chain(blocks).await {
            Ok(applied) => {
                self.follow_up(&applied);
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
    /// batch by batch for what needs no chain below it, held within caps of blocks, bytes
    /// and work (`PendingBranch`), and adopted as soon as it has more work than ours above
    /// the fork, so a peer cannot make us hold a long worthless branch.
    pub async fn sync_with(self: &Arc<Self>, addr: &str) -> bool {
        if self.fetching.load(Ordering::Acquire) {
            // A sync fetching from several peers at once runs and asks this peer too; the
            // link asks again soon (every 2 s while the peer claims more work).
            tracing::debug!(peer = %addr, "sync deferred: another sync fetches from every peer");
            return false;
        }
        let client = self.peers.client(addr).unwrap_or_else(|| {
            Arc::new(NodeClient::new(addr).with_net(self.config.env.net.clone()))
        });
        let mut changed = false;
        let mut pending = PendingBranch::default();
        let mut fork = 0u64;
        // The next batch and who sent it, asked for while the one before was being applied.
        let mut prefetched: Option<(String, Result<Vec<Block>, ClientError>)> = None;
        // Height ranges asked of several peers at once, oldest first (see `fill_ranges`).
        let mut ranges = VecDeque::new();
        let mut fetch: Option<ParallelFetch> = None;
        // Batches in a row that held only blocks we already have (another sync got them).
        let mut stale = 0;
        loop {
            if self.shutdown.is_cancelled() {
                return changed;
            }
            let (source, fetched) = match prefetched.take() {
                Some(fetched) => fetched,
                None => {
                    let mut locator = self.chain().locator();
                    if let Some(last) = pending.last() {
                        locator.insert(0, last.hash);
                    }
                    (
                        addr.to_owned(),
                        client.get_blocks(locator, SYNC_BATCH).await,
                    )
                }
            };
            let mut batch = match fetched {
                // An address that answers a sync as a node is one (a `hello`'s claim of
                // work is not): it may make us sync every second from now on.
                Ok(b) => {
                    self.peers.served(&source);
                    b
                }
                Err(e) => {
                    tracing::debug!(peer = %source, "sync stopped: {e}");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            if pending.is_empty() {
                // Blocks we hold already (another sync applied them meanwhile) are no
                // competing branch: skip them, and ask again from our tip if that was all.
                let held = {
                    let chain = self.chain();
                    batch
                        .iter()
                        .take_while(|b| chain.height_of(&b.hash) == Some(b.index))
                        .count()
                };
                if held == batch.len() {
                    stale += 1;
                    if stale > 3 {
                        break;
                    }
                    ranges.clear();
                    continue;
                }
                batch.drain(..held);
            }
            stale = 0;
            let Some(first) = batch.first() else { break };
            let PrevHash::Block(parent_hash) = first.prev_hash else {
                break;
            };
            let (known, height, parent) = {
                let chain = self.chain();
                let at = chain.height_of(&parent_hash);
                (at, chain.height(), at.and_then(|h| chain.get(h).cloned()))
            };
            if pending.is_empty() && known == Some(height) {
                let writer = self.state.writer().await;
                if self.chain().height() != height {
                    ranges.clear();
                    continue;
                }
                let full = batch.len() == SYNC_BATCH;
                let last = batch.last().map(|b| (b.index, b.hash));
                // A full batch that extends our tip: the chain goes on, and where other peers
                // are linked its next parts are asked of all of them at once, by height.
                if full && fetch.is_none() {
                    let f = ParallelFetch::start(self, addr, &client);
                    if !f.on {
                        // Syncs started together (links made at once): the one fetching from
                        // every peer does the rest; this peer's link asks again soon.
                        tracing::debug!(peer = %addr, "sync left to the one fetching from every peer");
                        drop(writer);
                        break;
                    }
                    fetch = Some(f);
                }
                let parallel = full && fetch.as_mut().is_some_and(ParallelFetch::is_on);
                if let (true, Some(f), Some((index, _))) = (parallel, fetch.as_mut(), last) {
                    f.fill_ranges(&mut ranges, index + 1);
                } else {
                    ranges.clear();
                }
                // Pipelined from one peer: the blocks after this batch are asked for while it
                // is checked and committed.
                let next = (full && !parallel).then(|| {
                    let mut locator = self.chain().locator();
                    if let Some((_, hash)) = last {
                        locator.insert(0, hash);
                    }
                    locator
                });
                let ask_next = async {
                    match next {
                        Some(locator) => Some((
                            addr.to_owned(),
                            client.get_blocks(locator, SYNC_BATCH).await,
                        )),
                        None => None,
                    }
                };
                // The writer lock is let go as soon as the batch is applied, not when the next
                // batch has arrived: a block mined meanwhile does not wait on the peer.
                let apply = async move {
                    let applied = self.apply(&writer, height, batch).await;
                    drop(writer);
                    applied
                };
                let (applied, next) = tokio::join!(apply, ask_next);
                match applied {
                    Ok(_) => changed = true,
                    Err(e) => {
                        self.peers.strike(&source, &e.to_string());
                        break;
                    }
                }
                if let Some(f) = fetch.as_mut() {
                    f.used.insert(source);
                }
                prefetched = next;
                if parallel && let Some((index, hash)) = last {
                    prefetched = next_range(&mut ranges, index + 1, hash).await;
                    if prefetched.is_none() {
                        // A part that failed or does not follow: the rest comes from `addr`.
                        ranges.clear();
                        if let Some(f) = fetch.as_mut() {
                            f.stop();
                        }
                    }
                }
                continue;
            }
            ranges.clear();
            let parent = match (pending.last(), parent) {
                (Some(last), _) if last.hash == parent_hash => last.clone(),
                (None, Some(p)) => {
                    fork = p.index;
                    p
                }
                _ => break,
            };
            let params = self.config.params.clone();
            let work = match check_branch(&params, &parent, &batch) {
                Ok(work) => work,
                Err(e) => {
                    self.peers
                        .strike(&source, &format!("competing branch: {e}"));
                    return changed;
                }
            };
            let ours = self.chain().work_above(fork);
            if let Err(e) = pending.push(batch, work, ours) {
                tracing::warn!(peer = %addr, "sync abandoned: {e}");
                return changed;
            }
            self.config.env.tell(Event::Pending {
                blocks: pending.blocks.len(),
                bytes: pending.bytes,
            });
            if pending.outweighs(self.chain().work_above(fork)) {
                let writer = self.state.writer().await;
                match self.apply(&writer, fork, pending.take()).await {
                    Ok(_) => changed = true,
                    Err(e) => {
                        tracing::debug!(peer = %addr, "competing branch not adopted: {e}");
                        return changed;
                    }
                }
            }
        }
        if changed {
            let tip = self.chain().tip().clone();
            let sources = fetch.as_ref().map_or(1, |f| f.used.len().max(1));
            tracing::info!(peer = %addr, height = tip.index, sources, "synced");
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

impl Node {
    /// Mines a block with `data` on the current tip; returns it once stored. A new tip
    /// cancels the attempt and restarts it on the new tip with the same data.
    pub async fn mine(self: &Arc<Self>, data: Value) -> Result<Block, MineError> {
        loop {
            // Without a queue entry nothing ends the job but a block (or an error).
            if let Some(block) = self.mine_job(BlockData::new(&data), None).await? {
                return Ok(block);
            }
        }
    }

    /// Mines `data`; returns the block once stored. With `job` (a queue entry of data left
    /// behind by a reorg) the job ends without mining, returning `None`, once the chain
    /// holds that data again, and the block that carries it drops the entry in the same
    /// transaction.
    pub(super) async fn mine_job(
        self: &Arc<Self>,
        data: BlockData,
        job: Option<u64>,
    ) -> Result<Option<Block>, MineError> {
        let max = self.config.params.max_block_size;
        // The block adds its fixed fields (under 400 bytes) to the data.
        if data.as_str().len() + 400 >= max {
            return Err(MineError::TooLarge {
                size: data.as_str().len(),
                max,
            });
        }
        let _turn = self.mining.turn().await;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(MineError::ShuttingDown);
            }
            let (template, held) = {
                let chain = self.chain();
                let held =
                    job.is_some() && chain.iter().rev().take(RECENT_SCAN).any(|b| b.data == data);
                (chain.template(data.clone()), held)
            };
            if let (true, Some(id)) = (held, job) {
                tracing::info!(
                    job = id,
                    "data left behind is in the chain again; not mining it"
                );
                let store = self.state.store().clone();
                let dropped = self
                    .config
                    .env
                    .blocking
                    .run(move || store.drop_pending(id).map_err(|e| e.to_string()))
                    .await
                    .and_then(|r| r);
                if let Err(e) = dropped {
                    tracing::warn!(job = id, "could not drop the queue entry: {e}");
                }
                return Ok(None);
            }
            let tip = self.state.subscribe_tip();
            let threads = self.config.threads;
            let Some(block) = self
                .mining
                .run(template, threads, tip, &self.shutdown, &self.config.env)
                .await
            else {
                continue;
            };
            // Recorded first: a reorg right after the commit must know the block is ours.
            self.mining.record_mined(block.hash);
            match self.commit_mined(&block, job).await {
                Ok(true) => return Ok(Some(block)),
                Ok(false) => continue,
                Err(e) => return Err(MineError::Failed(e)),
            }
        }
    }
}

/// A range of heights asked of one peer while syncing.
struct RangeFetch {
    from: u64,
    source: String,
    reply: AbortOnDropHandle<Result<Vec<Block>, ClientError>>,
}

/// The peers one sync fetches from at once: the peer synced with first, then up to three
/// other linked peers. Only one sync of the node does this at a time (the others fetch from
/// their one peer); the mark is released when the sync ends.
struct ParallelFetch {
    node: Arc<Node>,
    sources: Vec<(String, Arc<NodeClient>)>,
    /// Whether this sync holds the node's mark (and fetches from several peers).
    on: bool,
    /// Ranges asked so far, to choose the next source round robin.
    asked: usize,
    /// The peers whose blocks were applied, for the log.
    used: BTreeSet<String>,
}

impl ParallelFetch {
    fn start(node: &Arc<Node>, addr: &str, client: &Arc<NodeClient>) -> Self {
        let on = node
            .fetching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let mut fetch = ParallelFetch {
            node: node.clone(),
            on,
            used: BTreeSet::new(),
            asked: 0,
            sources: vec![(addr.to_owned(), client.clone())],
        };
        fetch.add_sources();
        fetch
    }

    /// Adds linked peers (up to [`MAX_SYNC_SOURCES`] in all), so peers that connect while a
    /// long sync runs share it.
    fn add_sources(&mut self) {
        if !self.on {
            return;
        }
        for peer in self.node.peers.connected() {
            if self.sources.len() >= MAX_SYNC_SOURCES {
                break;
            }
            if self.sources.iter().all(|(a, _)| *a != peer)
                && let Some(c) = self.node.peers.client(&peer)
            {
                self.sources.push((peer, c));
            }
        }
    }

    /// Tells whether there is more than one peer to fetch from (looking for new ones).
    fn is_on(&mut self) -> bool {
        self.add_sources();
        self.on && self.sources.len() > 1
    }

    /// Gives up fetching from several peers for the rest of this sync.
    fn stop(&mut self) {
        if std::mem::take(&mut self.on) {
            self.node.fetching.store(false, Ordering::Release);
        }
    }

    /// Keeps up to `RANGES_PER_SOURCE` ranges per source in flight, within
    /// [`MAX_FETCH_BYTES`] of replies at the frame cap, the first from height `from` on
    /// (ranges already asked from there are kept).
    fn fill_ranges(&mut self, ranges: &mut VecDeque<RangeFetch>, from: u64) {
        if ranges.front().is_some_and(|r| r.from != from) {
            ranges.clear();
        }
        let mut next = ranges.back().map_or(from, |r| r.from + SYNC_BATCH as u64);
        let window = (MAX_FETCH_BYTES / self.node.config.max_frame.max(1))
            .clamp(1, RANGES_PER_SOURCE * self.sources.len());
        while ranges.len() < window {
            let (source, client) = self.sources[self.asked % self.sources.len()].clone();
            self.asked += 1;
            let reply = AbortOnDropHandle::new(tokio::spawn(async move {
                client.get_range(next, SYNC_BATCH).await
            }));
            ranges.push_back(RangeFetch {
                from: next,
                source,
                reply,
            });
            next += SYNC_BATCH as u64;
        }
    }
}

impl Drop for ParallelFetch {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits for the oldest range in flight, which must start at height `from` right after the
/// block `parent`: its source and blocks, or `None` when it failed, came back empty, or
/// does not follow (its peer is behind, on another branch, or older than `get_range`).
async fn next_range(
    ranges: &mut VecDeque<RangeFetch>,
    from: u64,
    parent: BlockHash,
) -> Option<(String, Result<Vec<Block>, ClientError>)> {
    let range = ranges.pop_front()?;
    if range.from != from {
        return None;
    }
    let blocks = match range.reply.await {
        Ok(Ok(blocks)) => blocks,
        Ok(Err(e)) => {
            tracing::debug!(peer = %range.source, "range from {from} failed: {e}");
            return None;
        }
        Err(_) => return None,
    };
    let first = blocks.first()?;
    (first.index == from && first.prev_hash.is(&parent)).then_some((range.source, Ok(blocks)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::{Blockchain, mine_next};
    use crate::params::ChainParams;
    use serde_json::json;

    fn blocks(difficulty: u32, n: usize, pad: usize) -> Vec<Block> {
        let mut c = Blockchain::new(ChainParams::with_difficulty(difficulty));
        for i in 0..n {
            let data = BlockData::new(&json!({ "i": i, "pad": "x".repeat(pad) }));
            c.push(mine_next(&c, data, 1)).unwrap();
        }
        c.blocks_from(1)
    }

    /// A branch that outweighs ours is accepted whatever its size.
    #[test]
    fn pending_branch_that_outweighs_ours_is_kept() {
        let mut p = PendingBranch::default();
        let batch = blocks(0, 10, 0);
        assert_eq!(p.push(batch, 10, 9), Ok(()));
        assert!(p.outweighs(9));
        assert_eq!(p.take().len(), 10);
        assert!(p.is_empty());
    }

    /// A branch of big blocks is given up by bytes long before the block cap.
    #[test]
    fn pending_branch_is_bounded_in_bytes() {
        let mut p = PendingBranch::default();
        let batch = blocks(0, 40, 1_000_000);
        let mut result = Ok(());
        for _ in 0..10 {
            result = p.push(batch.clone(), 40, u128::MAX - 1);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(
                result,
                Err(PendingError::TooLarge { .. } | PendingError::TooLight { .. })
            ),
            "{result:?}"
        );
        assert!(p.bytes <= MAX_PENDING_BYTES + 40 * 1_000_300);
    }

    /// A branch whose difficulty walked down (as retargeting allows) is given up as soon as
    /// it could not outweigh ours within the caps, not after filling them.
    #[test]
    fn pending_branch_too_light_to_ever_win_is_given_up_early() {
        let mut p = PendingBranch::default();
        // Ours above the fork: 2^40 of work; theirs: difficulty-0 blocks (work 1 each).
        let err = p.push(blocks(0, 100, 0), 100, 1 << 40).unwrap_err();
        assert!(
            matches!(err, PendingError::TooLight { per_block: 1, .. }),
            "{err}"
        );
        // The same branch against a chain it can still overtake within the caps is kept.
        let mut q = PendingBranch::default();
        assert_eq!(q.push(blocks(0, 100, 0), 100, 10_000), Ok(()));
    }
}
