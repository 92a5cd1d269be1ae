//! `Syncer`: taking blocks from peers and clients. An offered block is appended (and
//! relayed), ignored, or makes the node sync with the peer that sent it; a locator sync
//! fetches a peer's chain batch by batch (from several peers at once on a long catch-up),
//! holding a competing branch within caps until it outweighs ours; a pushed whole chain
//! (the original's protocol) is adopted if it has more work.
//!
//! It sees the [`ChainState`], the [`PeerSet`] and the [`Relay`], and reports every change
//! it made to the chain through `on_applied` (the node hands those to its mining jobs, which
//! mine again the data a reorg left behind).

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

// tokio's clock: the real one in the binary, the simulated one under simulation.
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use super::branch::CompetingBranch;
use super::limits::{
    MAX_ANNOUNCERS, MAX_DEFERRED_SYNCS, MAX_FETCH_BYTES, MAX_FETCHES, MAX_HANDLING,
    MAX_SYNC_SOURCES, RANGES_PER_SOURCE, SYNC_BATCH, SYNC_DURABLE_EVERY, UNLINKED_SYNC_INTERVAL,
};
use super::peers::{PeerSet, SyncLimiter};
use super::relay::Relay;
use super::state::{Applied, ApplyError, ChainState, WriterGuard};
use crate::block::{Block, BlockHash, PrevHash, Timestamp};
use crate::client::{ClientError, NodeClient};
use crate::env::{Env, Event};
use crate::message::{BlockOutcome, Header};
use crate::metrics as m;
use crate::params::{ChainParams, MAX_FUTURE_SECS};
use crate::pow::meets_difficulty;
use crate::rules::{check_branch, expected_difficulty, median_time_past};

/// Told of every change a sync or an offered block made to the chain.
pub(super) type OnApplied = Arc<dyn Fn(&Applied) + Send + Sync>;

/// Marks a block as being handled until dropped.
struct Handling<'a> {
    set: &'a Mutex<HashSet<BlockHash>>,
    hash: BlockHash,
    marked: bool,
}

impl<'a> Handling<'a> {
    /// Marks `hash`; `None` when it is being handled already.
    fn start(set: &'a Mutex<HashSet<BlockHash>>, hash: BlockHash) -> Option<Self> {
        let mut held = set.lock().unwrap_or_else(|e| e.into_inner());
        if held.contains(&hash) {
            return None;
        }
        let marked = held.len() < MAX_HANDLING && held.insert(hash);
        Some(Handling { set, hash, marked })
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        if self.marked {
            let mut held = self.set.lock().unwrap_or_else(|e| e.into_inner());
            held.remove(&self.hash);
        }
    }
}

/// Takes blocks from peers and clients into the chain.
pub(super) struct Syncer {
    pub(super) state: Arc<ChainState>,
    pub(super) peers: Arc<PeerSet>,
    pub(super) relay: Arc<Relay>,
    pub(super) env: Env,
    pub(super) params: ChainParams,
    pub(super) max_frame: usize,
    pub(super) shutdown: CancellationToken,
    pub(super) on_applied: OnApplied,
    pub(super) tasks: TaskTracker,
    pub(super) marks: Marks,
}

/// What a [`Syncer`] keeps of its own.
#[derive(Debug, Default)]
pub(super) struct Marks {
    /// When each peer last made us sync (an unlinked block, a claim of more work).
    limiter: SyncLimiter,
    /// Blocks being handled right now: the same block from another peer meanwhile is
    /// ignored instead of handled twice.
    handling: Mutex<HashSet<BlockHash>>,
    /// Set while one sync fetches from several peers at once (one such sync at a time).
    fetching: AtomicBool,
    /// Peers owed a sync: a block of theirs did not link while the limiter held us back.
    deferred: Mutex<HashSet<String>>,
    /// Announced blocks being fetched, each with the announcers still to ask.
    fetches: Mutex<HashMap<BlockHash, VecDeque<String>>>,
}

/// How long one announcer is given to serve a body of `size` bytes: 2 s, plus its size at
/// 1 Mbit/s, at most 60 s.
fn fetch_timeout(size: usize) -> Duration {
    (Duration::from_secs(2) + Duration::from_secs_f64(size as f64 * 8.0 / 1e6))
        .min(Duration::from_secs(60))
}

impl std::fmt::Debug for Syncer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Syncer")
            .field("marks", &self.marks)
            .finish_non_exhaustive()
    }
}

impl Syncer {
    /// Marks a sync from several peers as running (for tests of what that changes).
    #[cfg(test)]
    pub(super) fn set_fetching(&self, on: bool) {
        self.marks.fetching.store(on, Ordering::Release);
    }

    /// Tells whether `peer` may make us sync now, at most once per `interval`.
    pub(super) fn allow(&self, peer: &str, interval: std::time::Duration) -> bool {
        self.marks
            .limiter
            .allow_every(peer, Instant::now(), interval)
    }

    /// Tells whether our chain has less work than `work` (a peer's, as a decimal string).
    pub(super) fn has_less_work_than(&self, work: &str) -> bool {
        work.parse::<u128>()
            .is_ok_and(|theirs| theirs > self.state.chain().work())
    }

    /// Applies `blocks` above `fork` (the caller holds the writer lock) and follows up;
    /// `deferred`: a full batch extending the tip, committed without an fsync
    /// ([`ChainState::extend_deferred`]).
    async fn apply(
        &self,
        writer: &WriterGuard<'_>,
        fork: u64,
        blocks: Vec<Block>,
        deferred: bool,
    ) -> Result<(), ApplyError> {
        let applied = if deferred {
            self.state.extend_deferred(writer, fork, blocks).await?
        } else {
            self.state.apply(writer, fork, blocks, None).await?
        };
        (self.on_applied)(&applied);
        Ok(())
    }

    /// Extends the tip with `block` if it links to it and reports the change; `None` when
    /// it does not link.
    async fn try_extend(&self, block: &Block) -> Option<Result<(), ApplyError>> {
        let result = self.state.extend(block, None).await?;
        Some(result.map(|applied| (self.on_applied)(&applied)))
    }

    /// Handles a block from a peer (`from`, its listen address) or a client: append and
    /// relay, ignore, or, for a peer's block that does not link, sync with that peer (at
    /// most once per `UNLINKED_SYNC_INTERVAL`). A client's block that does not link is
    /// refused: a client is nobody to sync with, and syncing with every peer on its word
    /// would let any client make the node flood its peers.
    pub(crate) async fn offer_block(
        self: &Arc<Self>,
        block: Block,
        from: Option<String>,
    ) -> (BlockOutcome, Option<String>) {
        let (outcome, reason) = self.take_block(block, from).await;
        metrics::counter!(m::BLOCKS_RECEIVED, "outcome" => outcome_name(outcome)).increment(1);
        (outcome, reason)
    }

    async fn take_block(
        self: &Arc<Self>,
        block: Block,
        from: Option<String>,
    ) -> (BlockOutcome, Option<String>) {
        if let Some(peer) = &from {
            self.peers.mark_known(peer, block.hash);
        }
        // The same block from several peers at once is handled once.
        let Some(_handling) = Handling::start(&self.marks.handling, block.hash) else {
            return (
                BlockOutcome::Ignored,
                Some(format!("block {} is being handled already", block.index)),
            );
        };
        {
            let chain = self.state.chain();
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
                if from.is_some()
                    && let crate::block::Timestamp::Unix(t) = block.timestamp
                {
                    let age = (self.env.wall_clock)().saturating_sub(t).max(0);
                    metrics::histogram!(m::PROPAGATION).record(age as f64);
                }
                self.relay.send(&block, from.as_deref());
                (BlockOutcome::Appended, None)
            }
            Some(Err(e)) => {
                let reason = e.to_string();
                metrics::counter!(m::BLOCKS_REJECTED, "rule" => rule_name(&e)).increment(1);
                if let Some(peer) = &from {
                    self.peers.strike(peer, &reason);
                }
                (BlockOutcome::Rejected, Some(reason))
            }
            None => {
                self.on_unlinked(block.index, &block.prev_hash, from.as_deref())
                    .await
            }
        }
    }

    /// Answers a block (or header) at `index` above our height whose parent `prev` is not
    /// our tip.
    async fn on_unlinked(
        self: &Arc<Self>,
        index: u64,
        prev: &PrevHash,
        from: Option<&str>,
    ) -> (BlockOutcome, Option<String>) {
        let parent: String = prev.to_string().chars().take(16).collect();
        let Some(peer) = from.filter(|p| self.peers.client(p).is_some()) else {
            let reason = format!(
                "block {} links to unknown parent {parent}, not to our tip; only a peer's \
                 block makes the node sync (ask it to sync instead)",
                index
            );
            return (BlockOutcome::Rejected, Some(reason));
        };
        if self.marks.fetching.load(Ordering::Acquire) {
            // The sync that runs fetches from this peer too: its block is no fault of its own.
            let reason = format!(
                "block {} does not link yet; a sync from several peers is running",
                index
            );
            return (BlockOutcome::Ignored, Some(reason));
        }
        if !self.marks.limiter.allow(peer, Instant::now()) {
            // Not dropped: the block may end a chain with more work (a branch published at
            // once, as a selfish miner does). One sync is owed and runs when allowed.
            self.defer_sync(peer);
            let reason = format!(
                "block {} does not link; a sync with {peer} ran less than {} ms ago, and \
                 runs again when that much time has passed",
                index,
                UNLINKED_SYNC_INTERVAL.as_millis()
            );
            return (BlockOutcome::Ignored, Some(reason));
        }
        if self.sync_with(peer).await {
            (BlockOutcome::Synced, None)
        } else {
            let reason = format!(
                "block {} links to unknown parent {parent} and {peer} has no chain with more work",
                index
            );
            (BlockOutcome::Rejected, Some(reason))
        }
    }

    /// Syncs with `peer` once [`UNLINKED_SYNC_INTERVAL`] has passed (one owed sync per
    /// peer at a time, at most [`MAX_DEFERRED_SYNCS`] peers), unless a sync with it ran
    /// meanwhile or it is gone.
    fn defer_sync(self: &Arc<Self>, peer: &str) {
        {
            let mut owed = self
                .marks
                .deferred
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            if owed.len() >= MAX_DEFERRED_SYNCS || !owed.insert(peer.to_owned()) {
                return;
            }
        }
        let (syncer, peer) = (self.clone(), peer.to_owned());
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = syncer.shutdown.cancelled() => {}
                _ = tokio::time::sleep(UNLINKED_SYNC_INTERVAL) => {
                    syncer
                        .marks
                        .deferred
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&peer);
                    if syncer.peers.client(&peer).is_some()
                        && syncer.marks.limiter.allow(&peer, Instant::now())
                    {
                        syncer.sync_with(&peer).await;
                    }
                }
            }
        });
    }

    /// Answers a peer's announcement of a block: `None` when it will be fetched (from this
    /// peer, or from the one asked before it, with this one next in line), else ignored
    /// (held, not above our height, being fetched by too many) or rejected (a header that
    /// cannot be a block on our tip: wrong difficulty, a hash short of it, a bad time, too
    /// big), with the reason. A header that does not link to our tip makes us sync with
    /// its sender, as an unlinked `new_block` does.
    pub(super) async fn on_announce(
        self: &Arc<Self>,
        header: Header,
        from: Option<String>,
    ) -> Option<(BlockOutcome, Option<String>)> {
        let Some(peer) = from.filter(|p| self.peers.client(p).is_some()) else {
            return Some((
                BlockOutcome::Rejected,
                Some(
                    "an announcement is taken from a linked peer only (send hello first),                      or send the block itself with new_block"
                        .to_owned(),
                ),
            ));
        };
        self.peers.mark_known(&peer, header.hash);
        let links = {
            let chain = self.state.chain();
            if chain.height_of(&header.hash).is_some() {
                let reason = format!("block {} is already held", header.index);
                return Some((BlockOutcome::Ignored, Some(reason)));
            }
            if header.index <= chain.height() {
                let reason = format!(
                    "block {} is not above our height {}",
                    header.index,
                    chain.height()
                );
                return Some((BlockOutcome::Ignored, Some(reason)));
            }
            let links =
                header.index == chain.height() + 1 && header.prev_hash.is(&chain.tip().hash);
            if links && let Err(why) = self.check_header(&chain, &header) {
                drop(chain);
                let reason = format!("announced block {}: {why}", header.index);
                self.peers.strike(&peer, &reason);
                return Some((BlockOutcome::Rejected, Some(reason)));
            }
            links
        };
        if !links {
            return Some(
                self.on_unlinked(header.index, &header.prev_hash, Some(&peer))
                    .await,
            );
        }
        {
            let mut fetches = self.marks.fetches.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(next) = fetches.get_mut(&header.hash) {
                if next.len() < MAX_ANNOUNCERS && !next.contains(&peer) {
                    next.push_back(peer);
                }
                return None;
            }
            if fetches.len() >= MAX_FETCHES {
                let reason = format!(
                    "{MAX_FETCHES} announced blocks are being fetched already; block {} is not",
                    header.index
                );
                return Some((BlockOutcome::Ignored, Some(reason)));
            }
            fetches.insert(header.hash, VecDeque::from([peer]));
        }
        let sync = self.clone();
        self.tasks.spawn(async move { sync.fetch(header).await });
        None
    }

    /// What can be checked of a header on our tip before its body is fetched.
    fn check_header(
        &self,
        chain: &crate::chain::Blockchain,
        header: &Header,
    ) -> Result<(), String> {
        let expected = expected_difficulty(chain);
        if header.difficulty != expected {
            return Err(format!(
                "difficulty {} where {expected} is due",
                header.difficulty
            ));
        }
        if !meets_difficulty(&header.hash, header.difficulty) {
            return Err(format!(
                "hash {} does not meet its difficulty {}",
                header.hash.short(),
                header.difficulty
            ));
        }
        let Timestamp::Unix(time) = header.timestamp else {
            return Err("timestamp is not in the canonical form".to_owned());
        };
        if time < median_time_past(chain) {
            return Err("timestamp is before the median of the last blocks".to_owned());
        }
        if time > (self.env.wall_clock)() + MAX_FUTURE_SECS {
            return Err("timestamp is more than two hours ahead".to_owned());
        }
        if header.size.saturating_add(400) >= self.params.max_block_size {
            return Err(format!(
                "its {} bytes of data do not fit in a block of at most {} bytes",
                header.size, self.params.max_block_size
            ));
        }
        Ok(())
    }

    /// Fetches an announced body from its announcers, one at a time, each given
    /// [`fetch_timeout`] for its size; the first that matches the header is offered as if
    /// its announcer had sent it (checked by every rule, then relayed). One that does not
    /// match is a lie: its sender is struck and the next announcer asked.
    async fn fetch(self: Arc<Self>, header: Header) {
        let hash = header.hash;
        loop {
            if self.shutdown.is_cancelled() || self.state.chain().height_of(&hash).is_some() {
                break;
            }
            let next = {
                let mut fetches = self.marks.fetches.lock().unwrap_or_else(|e| e.into_inner());
                fetches.get_mut(&hash).and_then(VecDeque::pop_front)
            };
            let Some(peer) = next else { break };
            let Some(client) = self.peers.client(&peer) else {
                continue;
            };
            let reply =
                tokio::time::timeout(fetch_timeout(header.size), client.get_block(hash)).await;
            let block = match reply {
                Ok(Ok(Some(block))) => block,
                Ok(Ok(None)) => {
                    metrics::counter!(m::FETCHES, "result" => "failed").increment(1);
                    tracing::debug!(peer = %peer, height = header.index, "announced block no longer held by its announcer");
                    continue;
                }
                Ok(Err(e)) => {
                    metrics::counter!(m::FETCHES, "result" => "failed").increment(1);
                    self.strike_if_malformed(&peer, &e);
                    tracing::debug!(peer = %peer, height = header.index, "fetching an announced block failed: {e}");
                    continue;
                }
                Err(_) => {
                    metrics::counter!(m::FETCHES, "result" => "failed").increment(1);
                    tracing::debug!(peer = %peer, height = header.index, "fetching an announced block timed out");
                    continue;
                }
            };
            if !header.matches(&block) {
                metrics::counter!(m::FETCHES, "result" => "mismatch").increment(1);
                self.peers.strike(
                    &peer,
                    &format!(
                        "the body of block {} does not match its announcement",
                        header.index
                    ),
                );
                continue;
            }
            match self.offer_block(block, Some(peer)).await {
                (BlockOutcome::Rejected, _) => {
                    metrics::counter!(m::FETCHES, "result" => "refused").increment(1);
                    continue;
                }
                _ => {
                    metrics::counter!(m::FETCHES, "result" => "taken").increment(1);
                    break;
                }
            }
        }
        self.marks
            .fetches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&hash);
    }

    /// Adopts a whole pushed chain if it is valid and has more work (legacy push).
    pub(crate) async fn adopt_chain(&self, blocks: Vec<Block>, from: Option<String>) -> bool {
        match self.state.adopt_chain(blocks).await {
            Ok(applied) => {
                (self.on_applied)(&applied);
                self.relay_tip(from.as_deref());
                true
            }
            Err(e) => {
                tracing::info!("pushed chain refused: {e}");
                false
            }
        }
    }

    /// Strikes `peer` when its reply to a block request did not read as one (a damaged
    /// binary list, a reply of the wrong kind): that is a peer's fault, as an invalid block
    /// is, where a timeout or a lost connection is not.
    fn strike_if_malformed(&self, peer: &str, e: &ClientError) {
        if let ClientError::Unexpected { reply, .. } = e {
            self.peers.strike(
                peer,
                &format!("a reply of blocks that does not read: {reply}"),
            );
        }
    }

    /// Relays our tip to every peer but `except`.
    fn relay_tip(&self, except: Option<&str>) {
        let tip = self.state.chain().tip().clone();
        self.relay.send(&tip, except);
    }

    /// Catches up with `addr` through block locators; true when our chain changed.
    ///
    /// Blocks that extend our tip are applied batch by batch. A competing branch is checked
    /// batch by batch for what needs no chain below it, held within caps of blocks, bytes
    /// and work (`CompetingBranch`), and adopted as soon as it has more work than ours above
    /// the fork, so a peer cannot make us hold a long worthless branch.
    pub(crate) async fn sync_with(&self, addr: &str) -> bool {
        let changed = self.sync_batches(addr).await;
        if let Err(e) = self.state.flush().await {
            tracing::error!(peer = %addr, "synced blocks could not be made durable: {e}");
        }
        changed
    }

    /// The sync itself: full batches that extend the tip are committed without an fsync
    /// (every [`SYNC_DURABLE_EVERY`]th durably); [`Syncer::sync_with`] makes them durable.
    async fn sync_batches(&self, addr: &str) -> bool {
        if self.marks.fetching.load(Ordering::Acquire) {
            // A sync fetching from several peers at once runs and asks this peer too; the
            // link asks again soon (every 2 s while the peer claims more work).
            tracing::debug!(peer = %addr, "sync deferred: another sync fetches from every peer");
            return false;
        }
        let client = self
            .peers
            .client(addr)
            .unwrap_or_else(|| Arc::new(NodeClient::new(addr).with_net(self.env.net.clone())));
        let mut changed = false;
        let mut branch = CompetingBranch::default();
        let mut fork = 0u64;
        // The next batch and who sent it, asked for while the one before was being applied.
        let mut prefetched: Option<(String, Result<Vec<Block>, ClientError>)> = None;
        // Height ranges asked of several peers at once, oldest first (see `fill_ranges`).
        let mut ranges = VecDeque::new();
        let mut fetch: Option<ParallelFetch> = None;
        // Batches in a row that held only blocks we already have (another sync got them).
        let mut stale = 0;
        // Batches committed so far (every SYNC_DURABLE_EVERY-th is durable).
        let mut committed = 0usize;
        loop {
            if self.shutdown.is_cancelled() {
                return changed;
            }
            let (source, fetched) = match prefetched.take() {
                Some(fetched) => fetched,
                None => {
                    let mut locator = self.state.chain().locator();
                    if let Some(last) = branch.last() {
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
                    self.strike_if_malformed(&source, &e);
                    tracing::debug!(peer = %source, "sync stopped: {e}");
                    break;
                }
            };
            if batch.is_empty() {
                break;
            }
            if branch.is_empty() {
                // Blocks we hold already (another sync applied them meanwhile) are no
                // competing branch: skip them, and ask again from our tip if that was all.
                let held = {
                    let chain = self.state.chain();
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
                let chain = self.state.chain();
                let at = chain.height_of(&parent_hash);
                (at, chain.height(), at.and_then(|h| chain.get(h).cloned()))
            };
            if branch.is_empty() && known == Some(height) {
                let writer = self.state.writer().await;
                if self.state.chain().height() != height {
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
                    let mut locator = self.state.chain().locator();
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
                let batch_len = batch.len();
                committed += 1;
                let deferred = full && !committed.is_multiple_of(SYNC_DURABLE_EVERY);
                let apply = async move {
                    let applied = self.apply(&writer, height, batch, deferred).await;
                    drop(writer);
                    applied
                };
                let blocks = batch_len;
                let (applied, next) = tokio::join!(apply, ask_next);
                match applied {
                    Ok(_) => {
                        changed = true;
                        metrics::counter!(m::SYNC_BATCHES).increment(1);
                        metrics::counter!(m::SYNC_BLOCKS).increment(blocks as u64);
                    }
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
            let parent = match (branch.last(), parent) {
                (Some(last), _) if last.hash == parent_hash => last.clone(),
                (None, Some(p)) => {
                    fork = p.index;
                    p
                }
                _ => break,
            };
            let params = self.params.clone();
            let work = match check_branch(&params, &parent, &batch) {
                Ok(work) => work,
                Err(e) => {
                    self.peers
                        .strike(&source, &format!("competing branch: {e}"));
                    return changed;
                }
            };
            let ours = self.state.chain().work_above(fork);
            if let Err(e) = branch.push(batch, work, ours) {
                tracing::warn!(peer = %addr, "sync abandoned: {e}");
                return changed;
            }
            let (blocks, bytes) = branch.size();
            self.env.tell(Event::Branch { blocks, bytes });
            if branch.outweighs(self.state.chain().work_above(fork)) {
                let writer = self.state.writer().await;
                match self.apply(&writer, fork, branch.take(), false).await {
                    Ok(_) => changed = true,
                    Err(e) => {
                        tracing::debug!(peer = %addr, "competing branch not adopted: {e}");
                        return changed;
                    }
                }
            }
        }
        if changed {
            // Durable before it says so: `synced` means the blocks survive a crash.
            if let Err(e) = self.state.flush().await {
                tracing::error!(peer = %addr, "synced blocks could not be made durable: {e}");
                return changed;
            }
            let tip = self.state.chain().tip().clone();
            let sources = fetch.as_ref().map_or(1, |f| f.used.len().max(1));
            tracing::info!(peer = %addr, height = tip.index, sources, "synced");
            self.relay.send(&tip, Some(addr));
        }
        changed
    }

    /// Syncs with every known peer; true when our chain changed.
    ///
    /// Every known peer is tried, not only those whose handshake has completed: a peer
    /// added a moment ago is synced with at once.
    pub(crate) async fn sync_all(&self) -> bool {
        let mut changed = false;
        for addr in self.peers.known() {
            changed |= self.sync_with(&addr).await;
        }
        changed
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
struct ParallelFetch<'a> {
    sync: &'a Syncer,
    sources: Vec<(String, Arc<NodeClient>)>,
    /// Whether this sync holds the node's mark (and fetches from several peers).
    on: bool,
    /// Ranges asked so far, to choose the next source round robin.
    asked: usize,
    /// The peers whose blocks were applied, for the log.
    used: BTreeSet<String>,
}

impl<'a> ParallelFetch<'a> {
    fn start(sync: &'a Syncer, addr: &str, client: &Arc<NodeClient>) -> Self {
        let on = sync
            .marks
            .fetching
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        let mut fetch = ParallelFetch {
            sync,
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
        for peer in self.sync.peers.connected() {
            if self.sources.len() >= MAX_SYNC_SOURCES {
                break;
            }
            if self.sources.iter().all(|(a, _)| *a != peer)
                && let Some(c) = self.sync.peers.client(&peer)
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
            self.sync.marks.fetching.store(false, Ordering::Release);
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
        let window = (MAX_FETCH_BYTES / self.sync.max_frame.max(1))
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

impl Drop for ParallelFetch<'_> {
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

/// An outcome's name, as a metric label.
fn outcome_name(outcome: BlockOutcome) -> &'static str {
    match outcome {
        BlockOutcome::Appended => "appended",
        BlockOutcome::Ignored => "ignored",
        BlockOutcome::Synced => "synced",
        BlockOutcome::Rejected => "rejected",
    }
}

/// The rule a refused block broke, as a metric label.
fn rule_name(e: &ApplyError) -> &'static str {
    match e {
        ApplyError::Invalid(crate::chain::ChainError::Block(b)) => b.code(),
        ApplyError::Invalid(_) => "chain",
        ApplyError::Store(_) => "store",
        ApplyError::Task(_) => "task",
    }
}
