//! `Miner`: mining runs on all mining threads, off the runtime, one job at a time, each
//! restarted when the tip moves.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
// tokio's clock: the real one in the binary, the simulated one under simulation.
use tokio::time::Instant;

use super::limits::{MINED_MEMORY, PROGRESS_AFTER, PROGRESS_EVERY};
use super::state::ApplyError;
use crate::block::{Block, BlockHash};
use crate::env::Env;
use crate::message::ErrorCode;
use crate::pow::{self, MineControl};

/// The node's miner: one job at a time on all mining threads, its cancel handles, and the
/// state `status` reports. It knows nothing of the node: callers hand it templates and
/// commit what it finds.
#[derive(Debug, Default)]
pub struct Miner {
    active: AtomicUsize,
    rate_bits: AtomicU64,
    runs: Mutex<Vec<Arc<MineControl>>>,
    turn: tokio::sync::Mutex<()>,
    /// Blocks this node mined since it started (bounded), to tell whose data to re-mine.
    mined: Mutex<HashSet<BlockHash>>,
}

impl Miner {
    /// Tells whether a run is in progress.
    pub(crate) fn is_active(&self) -> bool {
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
    pub(crate) fn is_mined_here(&self, hash: &BlockHash) -> bool {
        self.mined
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(hash)
    }

    /// Waits for this node's turn to mine: jobs run one at a time.
    pub async fn turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.turn.lock().await
    }

    /// Remembers that this node mined the block `hash` (bounded).
    pub(crate) fn record_mined(&self, hash: BlockHash) {
        let mut mined = self.mined.lock().unwrap_or_else(|e| e.into_inner());
        if mined.len() >= MINED_MEMORY {
            mined.clear();
        }
        mined.insert(hash);
    }

    /// Cancels every run in progress.
    pub(crate) fn cancel_all(&self) {
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
    /// The data would make a block not smaller than the size cap.
    #[error(
        "data of {size} bytes leaves no room in a block: a block must be smaller than {max} \
         bytes of JSON (the size cap), and its other fields take up to 400"
    )]
    TooLarge { size: usize, max: usize },
    /// The block could not be stored.
    #[error(transparent)]
    Failed(#[from] ApplyError),
}

impl MineError {
    /// Returns the protocol error code (`code()` elsewhere is always the code's text).
    pub fn error_code(&self) -> ErrorCode {
        match self {
            MineError::ShuttingDown => ErrorCode::ShuttingDown,
            MineError::TooLarge { .. } => ErrorCode::TooLarge,
            MineError::Failed(_) => ErrorCode::Internal,
        }
    }
}

impl Miner {
    /// Runs `template` on `threads` mining threads (through `env`'s solver), until a block
    /// is found (`Some`), the tip moves (a new value on `tip`) or `stop` is cancelled
    /// (`None`).
    pub async fn run(
        &self,
        template: pow::Template,
        threads: usize,
        mut tip: watch::Receiver<BlockHash>,
        stop: &CancellationToken,
        env: &Env,
    ) -> Option<Block> {
        let control = Arc::new(MineControl::default());
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(control.clone());
        self.active.fetch_add(1, Ordering::Relaxed);
        tip.mark_unchanged();
        let mut handle =
            env.solver
                .solve(template.clone(), threads, control.clone(), env.wall_clock);
        let start = Instant::now();
        let mut last_log = start;
        let mut ticker = tokio::time::interval(Duration::from_millis(500));
        let result = loop {
            tokio::select! {
                biased;
                r = &mut handle => break r,
                // A cancelled search stops on its own (threads see the flag within a few
                // thousand attempts); its result, if any, would not extend the new tip.
                changed = tip.changed() => {
                    if changed.is_ok() {
                        tracing::info!(height = template.index, "new tip: restarting mining on it");
                    }
                    control.cancel.store(true, Ordering::Relaxed);
                    break None;
                }
                _ = stop.cancelled() => {
                    control.cancel.store(true, Ordering::Relaxed);
                    break None;
                }
                _ = ticker.tick() => {
                    let attempts = control.attempts.load(Ordering::Relaxed);
                    let elapsed = start.elapsed();
                    self.set_rate(attempts as f64 / elapsed.as_secs_f64().max(1e-3));
                    if elapsed >= PROGRESS_AFTER && last_log.elapsed() >= PROGRESS_EVERY {
                        last_log = Instant::now();
                        tracing::info!(
                            height = template.index,
                            difficulty = template.difficulty,
                            attempts,
                            hash_rate = format!("{:.2} MH/s", self.hash_rate() / 1e6),
                            elapsed = format!("{:.1} s", elapsed.as_secs_f64()),
                            "mining"
                        );
                    }
                }
            }
        };
        let attempts = control.attempts.load(Ordering::Relaxed);
        self.set_rate(attempts as f64 / start.elapsed().as_secs_f64().max(1e-3));
        self.active.fetch_sub(1, Ordering::Relaxed);
        self.runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|c| !Arc::ptr_eq(c, &control));
        result
    }
}
