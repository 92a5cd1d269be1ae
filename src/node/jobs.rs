//! `Jobs`: mining. A job mines its data on the current tip, starts again on a new tip, and
//! commits and relays its block; data that a reorg left behind is mined again by a job of
//! its own (queued in the store, so a restart resumes it). The [`Miner`] runs the
//! proof-of-work threads; this owner hands it templates and commits what it finds, or,
//! for a selfish miner ([`Strategy::Selfish`]), withholds it and publishes by the rules of
//! [`super::strategy`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{RECENT_SCAN, REMINE_DELAY_OTHERS};
use super::miner::{MineError, Miner};
use super::relay::Relay;
use super::state::{Applied, ApplyError, ChainState};
use super::strategy::{Move, Private, Strategy, on_public};
use crate::block::{Block, BlockData};
use crate::env::{Env, Event};

/// The node's mining jobs.
#[derive(Debug)]
pub(super) struct Jobs {
    state: Arc<ChainState>,
    miner: Miner,
    relay: Arc<Relay>,
    env: Env,
    max_block_size: usize,
    threads: usize,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    /// A selfish miner's withheld blocks; `None` for an honest one.
    private: Option<tokio::sync::Mutex<Private>>,
    /// How many blocks are withheld, as of the last change (for `status`).
    withheld: std::sync::atomic::AtomicUsize,
}

impl Jobs {
    pub(super) fn new(
        state: Arc<ChainState>,
        relay: Arc<Relay>,
        env: Env,
        (max_block_size, threads, strategy): (usize, usize, Strategy),
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        let private = (strategy == Strategy::Selfish).then(|| {
            let chain = state.chain();
            tokio::sync::Mutex::new(Private {
                seen: (chain.height(), chain.tip().hash),
                ..Private::default()
            })
        });
        Jobs {
            state,
            miner: Miner::default(),
            relay,
            env,
            max_block_size,
            threads,
            shutdown,
            tasks,
            private,
            withheld: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Starts what runs beside the jobs: a selfish miner answers every new public tip,
    /// whether or not a job is mining.
    pub(super) fn start(self: &Arc<Self>) {
        if self.private.is_none() {
            return;
        }
        let jobs = self.clone();
        let mut tip = self.state.subscribe_tip();
        self.tasks.spawn(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = jobs.shutdown.cancelled() => return,
                    changed = tip.changed() => if changed.is_err() { return },
                }
                jobs.answer_public().await;
            }
        });
    }

    /// Returns how many blocks this node withholds; `None` for an honest miner.
    pub(super) fn withheld_now(&self) -> Option<u32> {
        self.private.as_ref().map(|_| {
            let n = self.withheld.load(std::sync::atomic::Ordering::Relaxed);
            u32::try_from(n).unwrap_or(u32::MAX)
        })
    }

    fn note_withheld(&self, private: &Private) {
        self.withheld
            .store(private.len(), std::sync::atomic::Ordering::Relaxed);
    }

    /// Returns how a selfish miner's races ended; `None` for an honest miner or while a
    /// change is under way.
    #[cfg(feature = "testkit")]
    pub(super) fn races(&self) -> Option<super::strategy::Races> {
        Some(self.private.as_ref()?.try_lock().ok()?.races)
    }

    /// The proof-of-work runs (their rate, and cancelling them at shutdown).
    pub(super) fn miner(&self) -> &Miner {
        &self.miner
    }

    /// Follows up a change: logs a reorg and mines again the data it left behind.
    pub(super) fn follow_up(self: &Arc<Self>, applied: &Applied) {
        if !applied.left.is_empty() {
            metrics::counter!(crate::metrics::REORGS).increment(1);
            metrics::histogram!(crate::metrics::REORG_DEPTH).record(applied.left.len() as f64);
            tracing::warn!(
                fork = applied.fork,
                left_behind = applied.left.len(),
                remine = applied.remine.len(),
                new_height = self.state.chain().height(),
                "reorg to a chain with more work"
            );
        }
        for (id, block) in &applied.remine {
            let delay = if self.miner.is_mined_here(&block.hash) {
                Duration::ZERO
            } else {
                REMINE_DELAY_OTHERS
            };
            self.spawn_remine(*id, block.data.clone(), delay);
        }
    }

    /// Mines again, in the background, data that a reorg left behind (remine queue entry `id`).
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
        let jobs = self.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                biased;
                _ = jobs.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
            if let Err(e) = jobs.mine_job(data, Some(id)).await {
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

    /// Commits a block this node mined (for queue entry `job`, if any); false when the tip
    /// moved meanwhile.
    async fn commit_mined(
        self: &Arc<Self>,
        block: &Block,
        job: Option<u64>,
    ) -> Result<bool, ApplyError> {
        match self.try_extend(block, job).await {
            Some(Ok(())) => {
                tracing::info!(height = block.index, hash = %block.hash.short(), "mined block stored");
                metrics::counter!(crate::metrics::BLOCKS_MINED).increment(1);
                self.env.tell(Event::Mined { block });
                self.relay.send(block, None);
                Ok(true)
            }
            Some(Err(e)) => Err(e),
            None => Ok(false),
        }
    }

    /// Mines a block with `data` on the current tip; returns it once stored. A new tip
    /// cancels the attempt and restarts it on the new tip with the same data.
    pub(super) async fn mine(self: &Arc<Self>, data: Value) -> Result<Block, MineError> {
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
        let max = self.max_block_size;
        // The block adds its fixed fields (under 400 bytes) to the data.
        if data.as_str().len() + 400 >= max {
            return Err(MineError::TooLarge {
                size: data.as_str().len(),
                max,
            });
        }
        let _turn = self.miner.turn().await;
        loop {
            if self.shutdown.is_cancelled() {
                return Err(MineError::ShuttingDown);
            }
            // A selfish miner answers the public tip first, then mines on its own branch.
            let withheld = match &self.private {
                Some(p) => {
                    self.answer_public().await;
                    p.lock()
                        .await
                        .branch
                        .as_ref()
                        .map(|b| b.template(data.clone()))
                }
                None => None,
            };
            let tip = self.state.subscribe_tip();
            let (template, held) = {
                let chain = self.state.chain();
                let held =
                    job.is_some() && chain.iter().rev().take(RECENT_SCAN).any(|b| b.data == data);
                (
                    withheld.unwrap_or_else(|| chain.template(data.clone())),
                    held,
                )
            };
            if let (true, Some(id)) = (held, job) {
                tracing::info!(
                    job = id,
                    "data left behind is in the chain again; not mining it"
                );
                let store = self.state.store().clone();
                let dropped = self
                    .env
                    .blocking
                    .run(move || store.drop_remine(id).map_err(|e| e.to_string()))
                    .await
                    .and_then(|r| r);
                if let Err(e) = dropped {
                    tracing::warn!(job = id, "could not drop the queue entry: {e}");
                }
                return Ok(None);
            }
            let threads = self.threads;
            let Some(block) = self
                .miner
                .run(template, threads, tip, &self.shutdown, &self.env)
                .await
            else {
                continue;
            };
            // Recorded first: a reorg right after the commit must know the block is ours.
            self.miner.record_mined(block.hash);
            let committed = if self.private.is_some() {
                self.withhold(&block, job).await
            } else {
                self.commit_mined(&block, job).await
            };
            match committed {
                Ok(true) => return Ok(Some(block)),
                Ok(false) => continue,
                Err(e) => return Err(MineError::Failed(e)),
            }
        }
    }
}

impl Jobs {
    /// A selfish miner's answer to the public chain as it is now: publish withheld blocks,
    /// give them up, or nothing (see [`on_public`]). Each public tip is answered once.
    async fn answer_public(self: &Arc<Self>) {
        let Some(lock) = &self.private else {
            return;
        };
        let mut private = lock.lock().await;
        let (height, tip, fork_held) = {
            let chain = self.state.chain();
            let fork_held = private
                .branch
                .as_ref()
                .is_none_or(|b| chain.get(b.fork()).map(|x| x.hash) == Some(b.parent().hash));
            (chain.height(), chain.tip().hash, fork_held)
        };
        if (height, tip) == private.seen {
            return;
        }
        let grew = height > private.seen.0;
        private.seen = (height, tip);
        if let Some((at, ours)) = private.racing.take() {
            // A public block ended our race: mined on our block, or on the other one.
            let on_ours = self.state.chain().get(at).is_some_and(|b| b.hash == ours);
            if on_ours {
                private.races.honest_on_pool += 1;
            } else {
                private.races.honest_on_honest += 1;
            }
        }
        let Some(branch) = &private.branch else {
            return;
        };
        let decided = if !fork_held {
            Move::Abandon
        } else if grew {
            on_public(
                branch.fork(),
                branch.blocks().len(),
                private.published,
                height,
            )
        } else {
            Move::Nothing
        };
        match decided {
            Move::Nothing => {}
            Move::Abandon => self.abandon(&mut private).await,
            Move::Publish { count, race } => {
                if self.publish(&mut private, count).await && race {
                    let chain = self.state.chain();
                    private.racing = Some((chain.height(), chain.tip().hash));
                }
            }
        }
        self.note_withheld(&private);
    }

    /// Publishes the branch's first `count` blocks: into our chain (taking them in a tie)
    /// and, those not published before, to the peers. False (and the branch given up) if
    /// they no longer fit.
    async fn publish(self: &Arc<Self>, private: &mut Private, count: usize) -> bool {
        let Some(branch) = private.branch.as_ref() else {
            return false;
        };
        let blocks = branch.blocks();
        let count = count.min(blocks.len());
        let fresh = blocks[private.published.min(count)..count].to_vec();
        let writer = self.state.writer().await;
        // Blocks of the prefix our chain holds already (published before) stay as they are.
        let (fork, out) = {
            let chain = self.state.chain();
            let held = blocks[..count]
                .iter()
                .take_while(|b| chain.get(b.index).is_some_and(|x| x.hash == b.hash))
                .count();
            (branch.fork() + held as u64, blocks[held..count].to_vec())
        };
        let published = if out.is_empty() {
            Ok(None)
        } else {
            self.state.publish(&writer, fork, out).await.map(Some)
        };
        drop(writer);
        match published {
            Ok(applied) => {
                tracing::info!(
                    blocks = fresh.len(),
                    height = fork + 1,
                    still_withheld = blocks.len() - count,
                    "selfish mining: publishing withheld blocks"
                );
                if let Some(applied) = applied {
                    self.follow_up(&applied);
                }
                for block in &fresh {
                    self.relay.send(block, None);
                }
                // Published, the blocks are in the store: their queue entries go.
                let from = private.published.min(count);
                let ids: Vec<u64> = private.remine_ids
                    [from.min(private.remine_ids.len())..count.min(private.remine_ids.len())]
                    .iter()
                    .flatten()
                    .copied()
                    .collect();
                self.drop_entries(ids).await;
                if count == blocks.len() {
                    private.branch = None;
                    private.published = 0;
                    private.remine_ids.clear();
                } else {
                    private.published = count;
                }
                let chain = self.state.chain();
                private.seen = (chain.height(), chain.tip().hash);
                true
            }
            Err(e) => {
                tracing::warn!("selfish mining: withheld blocks no longer fit the chain: {e}");
                self.abandon(private).await;
                false
            }
        }
    }

    /// Gives the withheld blocks up; their data, queued since they were mined, is mined
    /// again.
    async fn abandon(self: &Arc<Self>, private: &mut Private) {
        let Some(branch) = private.branch.take() else {
            return;
        };
        // Published blocks our chain left behind were queued as any block left behind is.
        let published = std::mem::take(&mut private.published);
        let queued = std::mem::take(&mut private.remine_ids);
        tracing::info!(
            blocks = branch.blocks().len(),
            "selfish mining: the public chain overtook the withheld blocks; giving them up"
        );
        for (block, id) in branch.blocks().iter().zip(queued).skip(published) {
            if let Some(id) = id {
                self.spawn_remine(id, block.data.clone(), Duration::ZERO);
            }
        }
    }

    /// Drops queue entries (of withheld blocks now published).
    async fn drop_entries(&self, ids: Vec<u64>) {
        if ids.is_empty() {
            return;
        }
        let store = self.state.store().clone();
        let dropped = self
            .env
            .blocking
            .run(move || {
                ids.iter()
                    .try_for_each(|id| store.drop_remine(*id))
                    .map_err(|e| e.to_string())
            })
            .await
            .and_then(|r| r);
        if let Err(e) = dropped {
            tracing::warn!("could not drop the queue entries of published blocks: {e}");
        }
    }

    /// Returns the queue entry that keeps a withheld block's data: its job's, or a new
    /// one for data mined on request; `None` for empty data or when the store fails
    /// (then the data is in memory only, and logged).
    async fn keep_in_remine_queue(&self, data: &BlockData, job: Option<u64>) -> Option<u64> {
        if job.is_some() || data.is_empty() {
            return job;
        }
        let store = self.state.store().clone();
        let data = data.clone();
        let queued = self
            .env
            .blocking
            .run(move || store.queue_remine(&[data]).map_err(|e| e.to_string()))
            .await
            .and_then(|r| r);
        match queued {
            Ok(ids) => ids.first().copied(),
            Err(e) => {
                tracing::warn!("could not queue a withheld block's data: {e}");
                None
            }
        }
    }

    /// A selfish miner's block: published at once in a race, else withheld. False when it
    /// no longer extends what it was mined on.
    async fn withhold(
        self: &Arc<Self>,
        block: &Block,
        job: Option<u64>,
    ) -> Result<bool, ApplyError> {
        let Some(lock) = &self.private else {
            return self.commit_mined(block, job).await;
        };
        let mut private = lock.lock().await;
        let now = (self.env.wall_clock)();
        let racing = private.racing.is_some();
        match &mut private.branch {
            Some(branch) => {
                if !block.prev_hash.is(&branch.tip().hash)
                    || branch.extend(vec![block.clone()], now).is_err()
                {
                    return Ok(false);
                }
            }
            None if racing => {
                // Our block ties a public one: this one makes our branch win.
                let committed = self.commit_mined(block, job).await;
                if let (Ok(true), Some(_)) = (&committed, private.racing.take()) {
                    private.races.pool_won += 1;
                }
                private.seen = {
                    let chain = self.state.chain();
                    (chain.height(), chain.tip().hash)
                };
                self.note_withheld(&private);
                return committed;
            }
            None => {
                let branch = {
                    let chain = self.state.chain();
                    if !block.prev_hash.is(&chain.tip().hash) {
                        return Ok(false);
                    }
                    chain.branch_at(chain.height())
                };
                let Ok(mut branch) = branch else {
                    return Ok(false);
                };
                if branch.extend(vec![block.clone()], now).is_err() {
                    return Ok(false);
                }
                private.branch = Some(branch);
                private.remine_ids.clear();
            }
        }
        // Until it is published, the block's data stays queued in the store.
        let id = self.keep_in_remine_queue(&block.data, job).await;
        private.remine_ids.push(id);
        tracing::info!(height = block.index, hash = %block.hash.short(), withheld = private.len(), "selfish mining: block withheld");
        metrics::counter!(crate::metrics::BLOCKS_MINED).increment(1);
        self.env.tell(Event::Mined { block });
        self.note_withheld(&private);
        Ok(true)
    }
}
