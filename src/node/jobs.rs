//! `Jobs`: mining. A job mines its data on the current tip, starts again on a new tip, and
//! commits and relays its block; data that a reorg left behind is mined again by a job of
//! its own (queued in the store, so a restart resumes it). The [`Miner`] runs the
//! proof-of-work threads; this owner hands it templates and commits what it finds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::limits::{RECENT_SCAN, REMINE_DELAY_OTHERS};
use super::miner::{MineError, Miner};
use super::relay::Relay;
use super::state::{Applied, ApplyError, ChainState};
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
}

impl Jobs {
    pub(super) fn new(
        state: Arc<ChainState>,
        relay: Arc<Relay>,
        env: Env,
        (max_block_size, threads): (usize, usize),
        shutdown: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        Jobs {
            state,
            miner: Miner::default(),
            relay,
            env,
            max_block_size,
            threads,
            shutdown,
            tasks,
        }
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
                requeued = applied.requeued.len(),
                new_height = self.state.chain().height(),
                "reorg to a chain with more work"
            );
        }
        for (id, block) in &applied.requeued {
            let delay = if self.miner.is_mined_here(&block.hash) {
                Duration::ZERO
            } else {
                REMINE_DELAY_OTHERS
            };
            self.spawn_remine(*id, block.data.clone(), delay);
        }
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
            let (template, held) = {
                let chain = self.state.chain();
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
            match self.commit_mined(&block, job).await {
                Ok(true) => return Ok(Some(block)),
                Ok(false) => continue,
                Err(e) => return Err(MineError::Failed(e)),
            }
        }
    }
}
