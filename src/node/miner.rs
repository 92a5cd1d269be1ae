//! Mining jobs: one run at a time on all mining threads, restarted when the tip moves.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::Node;
use super::state::ApplyError;
use crate::block::{Block, BlockData, BlockHash};
use crate::message::ErrorCode;
use crate::pow::{self, MineControl};

/// Mining state shared with `status`.
#[derive(Debug, Default)]
pub struct MiningStats {
    active: AtomicUsize,
    rate_bits: AtomicU64,
    runs: Mutex<Vec<Arc<MineControl>>>,
    turn: tokio::sync::Mutex<()>,
    /// Blocks this node mined since it started (bounded), to tell whose data to re-mine.
    mined: Mutex<HashSet<BlockHash>>,
}

impl MiningStats {
    /// Tells whether a run is in progress.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed) > 0
    }

    /// Returns the attempts per second of the current or last run.
    pub fn hash_rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    fn set_rate(&self, rate: f64) {
        self.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// Tells whether this node mined the block `hash` since it started.
    pub fn is_mined_here(&self, hash: &BlockHash) -> bool {
        self.mined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(hash)
    }

    fn record_mined(&self, hash: BlockHash) {
        let mut mined = self.mined.lock().unwrap_or_else(|e| e.into_inner());
        if mined.len() >= MINED_MEMORY {
            mined.clear();
        }
        mined.insert(hash);
    }

    /// Cancels every run in progress.
    pub fn cancel_all(&self) {
        for c in self.runs.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            c.cancel.store(true, Ordering::Relaxed);
        }
    }
}

/// Why a `mine` request failed.
#[derive(Debug, thiserror::Error)]
pub enum MineError {
    /// The node is stopping.
    #[error("the node is shutting down; the block was not mined")]
    ShuttingDown,
    /// The data would make a block over the size cap.
    #[error("data of {size} bytes makes a block over the {max} byte cap")]
    TooLarge { size: usize, max: usize },
    /// The block could not be stored.
    #[error(transparent)]
    Failed(#[from] ApplyError),
}

impl MineError {
    /// Returns the protocol error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            MineError::ShuttingDown => ErrorCode::ShuttingDown,
            MineError::TooLarge { .. } => ErrorCode::TooLarge,
            MineError::Failed(_) => ErrorCode::Internal,
        }
    }
}

/// Most hashes of self-mined blocks remembered.
const MINED_MEMORY: usize = 100_000;
/// How many recent blocks a re-mining job searches for its data.
const RECENT_SCAN: usize = 10_000;
/// A run lasting longer than this logs its progress.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

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
        let _turn = self.mining.turn.lock().await;
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
                match tokio::task::spawn_blocking(move || store.drop_pending(id)).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(job = id, "could not drop the queue entry: {e}"),
                    Err(e) => tracing::warn!(job = id, "could not drop the queue entry: {e}"),
                }
                return Ok(None);
            }
            let Some(block) = self.run_miner(template).await else {
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

    /// Runs the miner off the runtime until it finds a block, the tip moves or the node stops.
    async fn run_miner(self: &Arc<Self>, template: pow::Template) -> Option<Block> {
        let control = Arc::new(MineControl::default());
        self.mining
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(control.clone());
        self.mining.active.fetch_add(1, Ordering::Relaxed);
        let mut tip = self.state.subscribe_tip();
        tip.mark_unchanged();
        let threads = self.config.threads;
        let (c2, t2) = (control.clone(), template.clone());
        let mut handle = tokio::task::spawn_blocking(move || pow::mine(&t2, threads, &c2));
        let start = Instant::now();
        let mut last_log = start;
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let result = loop {
            tokio::select! {
                r = &mut handle => break r.ok().flatten(),
                changed = tip.changed() => {
                    if changed.is_ok() {
                        tracing::info!(height = template.index, "new tip: restarting mining on it");
                    }
                    control.cancel.store(true, Ordering::Relaxed);
                }
                _ = self.shutdown.cancelled() => control.cancel.store(true, Ordering::Relaxed),
                _ = ticker.tick() => {
                    let attempts = control.attempts.load(Ordering::Relaxed);
                    let elapsed = start.elapsed();
                    self.mining.set_rate(attempts as f64 / elapsed.as_secs_f64().max(1e-3));
                    if elapsed >= PROGRESS_AFTER && last_log.elapsed() >= PROGRESS_EVERY {
                        last_log = Instant::now();
                        tracing::info!(
                            height = template.index,
                            difficulty = template.difficulty,
                            attempts,
                            hash_rate = format!("{:.2} MH/s", self.mining.hash_rate() / 1e6),
                            elapsed = format!("{:.1} s", elapsed.as_secs_f64()),
                            "mining"
                        );
                    }
                }
            }
        };
        let attempts = control.attempts.load(Ordering::Relaxed);
        self.mining
            .set_rate(attempts as f64 / start.elapsed().as_secs_f64().max(1e-3));
        self.mining.active.fetch_sub(1, Ordering::Relaxed);
        self.mining
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(c, &control));
        result
    }
}
