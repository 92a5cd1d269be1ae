//! `ChainState`: the node's chain in memory and on disk, changed only in whole validated
//! steps (an extension or a reorg), each committed to the store before it is acknowledged.
//!
//! A change is checked as a [`Branch`](crate::chain::Branch) apart from the chain, so the chain's lock is held only
//! to copy out what the rules look back on and to swap the blocks in; a long branch is
//! checked on a blocking thread. One writer at a time (an async lock), readers never wait
//! for a validation.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::limits::CHECK_OFF_RUNTIME;
use crate::block::{Block, BlockData, BlockHash};
use crate::chain::{Blockchain, ChainError, Ties};
use crate::env::{Env, Event};
use crate::params::ChainParams;
use crate::store::{Store, StoreError, Verify};

/// Why a change to the chain was not made; the chain and the store are as they were.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The blocks break a rule, do not have more work, or no longer fit our chain.
    #[error(transparent)]
    Invalid(#[from] ChainError),
    /// The store could not commit the change.
    #[error("could not store the blocks: {0}")]
    Store(#[from] StoreError),
    /// A validation or storage task failed.
    #[error("{0}")]
    Task(String),
}

/// What a change did.
#[derive(Debug, Default)]
pub(crate) struct Applied {
    /// Height of the block the change grows from.
    pub fork: u64,
    /// Blocks of ours left behind (empty for an extension).
    pub left: Vec<Block>,
    /// Data of blocks left behind that the new chain does not hold, queued in the store to
    /// be mined again, with its queue id.
    pub(crate) remine: Vec<(u64, Block)>,
}

/// A sync's batch being committed without an fsync while the next one is checked: the
/// height it grows from, and the commit.
struct InFlight {
    fork: u64,
    commit: futures::future::BoxFuture<'static, Result<Result<(), StoreError>, String>>,
}

impl std::fmt::Debug for InFlight {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InFlight")
            .field("fork", &self.fork)
            .finish()
    }
}

/// Proof that the caller holds the writer lock.
pub(crate) type WriterGuard<'a> = tokio::sync::MutexGuard<'a, ()>;

/// The node's chain and store.
#[derive(Debug)]
pub(crate) struct ChainState {
    chain: Mutex<Blockchain>,
    store: Arc<Store>,
    writer: tokio::sync::Mutex<()>,
    tip: watch::Sender<BlockHash>,
    /// Reorgs since the node started (a chain with more work replaced blocks of ours),
    /// counted under the chain's lock as the blocks are swapped, so that whoever sees the
    /// new tip sees the count too.
    reorgs: std::sync::atomic::AtomicU64,
    /// The clock, the blocking work and the observer.
    env: Env,
    /// The deferred commit still running, if any ([`ChainState::extend_deferred`]): every
    /// change waits for it before it touches the chain, so at most one batch is in memory
    /// and not yet in the store.
    in_flight: Mutex<Option<InFlight>>,
    /// Set while a branch is being checked: lets tests see that readers are not blocked.
    #[cfg(test)]
    checking: std::sync::atomic::AtomicBool,
}

impl ChainState {
    /// Opens the store in `dir` and loads its chain. Blocking: call it off the runtime.
    pub fn open(
        dir: &Path,
        params: &ChainParams,
        verify: Verify,
        cache_bytes: usize,
        env: Env,
    ) -> Result<Self, StoreError> {
        let (store, chain) = Store::open_at(dir, params, verify, (env.wall_clock)(), cache_bytes)?;
        let (tip, _) = watch::channel(chain.tip().hash);
        Ok(ChainState {
            chain: Mutex::new(chain),
            store: Arc::new(store),
            writer: tokio::sync::Mutex::new(()),
            tip,
            reorgs: std::sync::atomic::AtomicU64::new(0),
            env,
            in_flight: Mutex::new(None),
            #[cfg(test)]
            checking: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Locks the in-memory chain; never held across an `.await`.
    pub fn chain(&self) -> MutexGuard<'_, Blockchain> {
        self.chain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Returns the store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Returns the number of reorgs since the node started. Read it while holding the
    /// chain's lock to see it agree with the chain.
    pub fn reorgs(&self) -> u64 {
        self.reorgs.load(Ordering::Relaxed)
    }

    /// Returns a receiver told of every new tip.
    pub(crate) fn subscribe_tip(&self) -> watch::Receiver<BlockHash> {
        self.tip.subscribe()
    }

    /// Takes the writer lock: changes to the chain happen one at a time.
    pub async fn writer(&self) -> WriterGuard<'_> {
        self.writer.lock().await
    }

    /// Replaces the blocks above `fork` with `blocks` (an extension when `fork` is our
    /// height) if they are valid and have more work, in memory and in one store
    /// transaction, which also queues the data of blocks left behind and drops the queue
    /// entry `job` whose data these blocks carry.
    pub(crate) async fn apply(
        &self,
        writer: &WriterGuard<'_>,
        fork: u64,
        blocks: Vec<Block>,
        job: Option<u64>,
    ) -> Result<Applied, ApplyError> {
        self.apply_as(writer, fork, blocks, job, Ties::Keep, true)
            .await
    }

    /// Extends the tip (at `fork`) with a sync's `blocks` as [`ChainState::apply`] does,
    /// committed without waiting for the disk ([`Store::commit_deferred`]): a crash may
    /// lose them, and the node then fetches them again. [`ChainState::flush`] makes them
    /// durable; any later durable commit does too. The commit runs behind: this returns
    /// once the blocks are checked and in the chain, and the next change waits for the
    /// commit (a failed one takes the blocks out of the chain again and fails that change).
    pub(crate) async fn extend_deferred(
        &self,
        writer: &WriterGuard<'_>,
        fork: u64,
        blocks: Vec<Block>,
    ) -> Result<Applied, ApplyError> {
        self.apply_as(writer, fork, blocks, None, Ties::Keep, false)
            .await
    }

    /// Waits for the deferred commit still running, if any; when it failed, takes its
    /// blocks (and any the store lost with it) out of the chain again.
    async fn settle(&self) -> Result<(), ApplyError> {
        let in_flight = self
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        let Some(InFlight { fork, commit }) = in_flight else {
            return Ok(());
        };
        let error = match commit.await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => ApplyError::Store(e),
            Err(e) => ApplyError::Task(format!("store task failed: {e}")),
        };
        tracing::error!("a synced batch could not be stored, it leaves the chain: {error}");
        {
            let mut chain = self.chain();
            if chain.height() > fork {
                chain.rewind(fork, Vec::new());
            }
        }
        self.drop_lost();
        self.tip.send_replace(self.chain().tip().hash);
        Err(error)
    }

    /// Makes every deferred commit durable. Takes the writer lock (call it without): the
    /// commit running behind is waited for by one change at a time.
    pub(crate) async fn flush(&self) -> Result<(), ApplyError> {
        let _writer = self.writer().await;
        self.settle().await?;
        if !self.store.has_deferred() {
            return Ok(());
        }
        let store = self.store.clone();
        let flushed = self
            .env
            .blocking
            .run(move || store.flush())
            .await
            .map_err(|e| ApplyError::Task(format!("store task failed: {e}")))?;
        if let Err(e) = flushed {
            self.drop_lost();
            return Err(e.into());
        }
        Ok(())
    }

    /// After a failed commit: blocks committed without an fsync that the store lost with
    /// the I/O error leave the chain in memory too.
    fn drop_lost(&self) {
        if let Some(height) = self.store.take_lost() {
            let mut chain = self.chain();
            if chain.height() > height {
                tracing::error!(
                    height,
                    "blocks above this height, committed without an fsync, were lost with \
                     the store's I/O error; the chain goes back to it and fetches them again"
                );
                chain.rewind(height, Vec::new());
                drop(chain);
                self.tip.send_replace(self.chain().tip().hash);
            }
        }
    }

    /// Publishes blocks this node mined and withheld: replaces the blocks above `fork`
    /// with them if they are valid and have at least the work of ours (a selfish miner
    /// takes its own branch in a tie), as [`ChainState::apply`] does otherwise.
    pub(crate) async fn publish(
        &self,
        writer: &WriterGuard<'_>,
        fork: u64,
        blocks: Vec<Block>,
    ) -> Result<Applied, ApplyError> {
        self.apply_as(writer, fork, blocks, None, Ties::Take, true)
            .await
    }

    async fn apply_as(
        &self,
        _writer: &WriterGuard<'_>,
        fork: u64,
        blocks: Vec<Block>,
        job: Option<u64>,
        ties: Ties,
        durable: bool,
    ) -> Result<Applied, ApplyError> {
        let mut branch = self.chain().branch_at(fork)?;
        let to_store = blocks.clone();
        let now = (self.env.wall_clock)();
        #[cfg(test)]
        self.checking
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let checked = if blocks.len() >= CHECK_OFF_RUNTIME {
            self.env
                .blocking
                .run(move || branch.extend(blocks, now).map(|()| branch))
                .await
                .map_err(|e| ApplyError::Task(format!("block validation failed: {e}")))?
        } else {
            branch.extend(blocks, now).map(|()| branch)
        };
        #[cfg(test)]
        self.checking
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let branch = checked.map_err(ChainError::from)?;
        // The batch committed behind, if any, first: this change grows on it.
        self.settle().await?;
        let (left, remine) = {
            let mut chain = self.chain();
            let left = chain.adopt_as(branch, ties)?;
            if !left.is_empty() {
                self.reorgs.fetch_add(1, Ordering::Relaxed);
            }
            let remine = to_remine(&chain, fork, &left);
            (left, remine)
        };
        let remine_data: Vec<BlockData> = remine.iter().map(|b| b.data.clone()).collect();
        // Only blocks others hold skip the fsync: a reorg's remine queue never does.
        let durable = durable || !remine_data.is_empty() || job.is_some();
        if !durable {
            // Committed behind: the next change (or a flush) waits for it.
            self.tip.send_replace(self.chain().tip().hash);
            self.env.tell(Event::Committed {
                fork,
                blocks: &to_store,
                left: left.len(),
            });
            let store = self.store.clone();
            let commit = self.env.blocking.start(move || {
                let started = std::time::Instant::now();
                let committed = store.commit_deferred(fork, &to_store);
                metrics::histogram!(crate::metrics::STORE_COMMIT)
                    .record(started.elapsed().as_secs_f64());
                committed
            });
            *self.in_flight.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(InFlight { fork, commit });
            return Ok(Applied {
                fork,
                left,
                remine: Vec::new(),
            });
        }
        let store = self.store.clone();
        let committed = self
            .env
            .blocking
            .run(move || {
                let started = std::time::Instant::now();
                let committed = store.commit(fork, &to_store, &remine_data, job);
                metrics::histogram!(crate::metrics::STORE_COMMIT)
                    .record(started.elapsed().as_secs_f64());
                (committed, to_store)
            })
            .await
            .map_err(|e| ApplyError::Task(format!("store task failed: {e}")))
            .and_then(|(r, stored)| r.map(|ids| (ids, stored)).map_err(ApplyError::from));
        let (ids, stored) = match committed {
            Ok(done) => done,
            Err(e) => {
                tracing::error!("store commit failed, chain change undone: {e}");
                let mut chain = self.chain();
                if !left.is_empty() {
                    self.reorgs.fetch_sub(1, Ordering::Relaxed);
                }
                chain.rewind(fork, left);
                drop(chain);
                self.drop_lost();
                return Err(e);
            }
        };
        self.tip.send_replace(self.chain().tip().hash);
        self.env.tell(Event::Committed {
            fork,
            blocks: &stored,
            left: left.len(),
        });
        Ok(Applied {
            fork,
            left,
            remine: ids.into_iter().zip(remine).collect(),
        })
    }

    /// Extends the tip with `block` if it links to it: `None` when it does not.
    pub async fn extend(
        &self,
        block: &Block,
        job: Option<u64>,
    ) -> Option<Result<Applied, ApplyError>> {
        let writer = self.writer().await;
        let height = {
            let chain = self.chain();
            if block.index != chain.height() + 1 || !block.prev_hash.is(&chain.tip().hash) {
                return None;
            }
            chain.height()
        };
        Some(self.apply(&writer, height, vec![block.clone()], job).await)
    }

    /// Adopts a whole pushed chain (genesis first) if it is valid and has more work.
    pub(crate) async fn adopt_chain(&self, blocks: Vec<Block>) -> Result<Applied, ApplyError> {
        let writer = self.writer().await;
        let common = {
            let chain = self.chain();
            blocks
                .iter()
                .zip(chain.iter())
                .take_while(|(a, b)| a == b)
                .count()
        };
        if common == 0 {
            let genesis = self.chain().genesis().hash;
            return Err(ChainError::WrongGenesis {
                expected: genesis,
                got: blocks.first().map_or_else(BlockHash::default, |b| b.hash),
            }
            .into());
        }
        let fork = (common - 1) as u64;
        let rest: Vec<Block> = blocks.into_iter().skip(common).collect();
        self.apply(&writer, fork, rest, None).await
    }
}

/// Returns the blocks of `left` whose data the chain above `fork` does not hold again and
/// that carry user data: what must be mined again.
fn to_remine(chain: &Blockchain, fork: u64, left: &[Block]) -> Vec<Block> {
    if left.is_empty() {
        return Vec::new();
    }
    let kept: HashSet<&str> = chain
        .iter()
        .skip(fork as usize + 1)
        .map(|b| b.data.as_str())
        .collect();
    left.iter()
        .filter(|b| !b.data.is_empty() && !kept.contains(b.data.as_str()))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::mine_next;
    use serde_json::json;

    fn state(dir: &Path) -> ChainState {
        ChainState::open(
            dir,
            &ChainParams::with_difficulty(0),
            Verify::Recent,
            crate::store::CACHE_BYTES,
            Env::default(),
        )
        .unwrap()
    }

    fn branch_of(base: &Blockchain, from: u64, n: usize, tag: &str) -> Vec<Block> {
        let mut c = Blockchain::from_blocks(
            base.params().clone(),
            base.to_vec()[..=from as usize].to_vec(),
        )
        .unwrap();
        for i in 0..n {
            c.push(mine_next(&c, BlockData::new(&json!([tag, i])), 1))
                .unwrap();
        }
        c.blocks_from(from + 1)
    }

    /// An extension is stored before it returns and moves the tip watch.
    #[tokio::test]
    async fn extend_stores_and_announces_the_block() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let mut tip = s.subscribe_tip();
        let block = mine_next(&s.chain(), BlockData::new(&json!("a")), 1);
        s.extend(&block, None).await.unwrap().unwrap();
        assert!(tip.has_changed().unwrap());
        assert_eq!(*tip.borrow_and_update(), block.hash);
        assert_eq!(s.store().load().unwrap().len(), 2);
        let stale = mine_next(
            &Blockchain::new(ChainParams::with_difficulty(0)),
            BlockData::empty(),
            1,
        );
        assert!(s.extend(&stale, None).await.is_none());
    }

    /// A reorg returns the blocks left behind and queues the data the new chain lacks,
    /// in the same transaction as the blocks.
    #[tokio::test]
    async fn reorg_queues_data_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        for i in 0..3 {
            let b = mine_next(&s.chain(), BlockData::new(&json!(["ours", i])), 1);
            s.extend(&b, None).await.unwrap().unwrap();
        }
        let theirs = branch_of(&s.chain(), 1, 4, "theirs");
        let w = s.writer().await;
        let applied = s.apply(&w, 1, theirs.clone(), None).await.unwrap();
        drop(w);
        assert_eq!(applied.left.len(), 2);
        assert_eq!(applied.remine.len(), 2);
        assert_eq!(s.chain().tip().hash, theirs[3].hash);
        let queue = s.store().remine_queue().unwrap();
        assert_eq!(queue.len(), 2);
        assert_eq!(queue[0].1, applied.left[0].data);
        assert_eq!(s.store().load().unwrap(), s.chain().to_vec());
    }

    /// A long branch is checked while the chain's lock is free: readers are never blocked
    /// by a validation, only by the swap.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_are_not_blocked_while_a_branch_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        let s = Arc::new(state(dir.path()));
        let branch = branch_of(&s.chain(), 0, 20_000, "long");
        let s2 = s.clone();
        let apply = tokio::spawn(async move {
            let w = s2.writer().await;
            s2.apply(&w, 0, branch, None).await.map(|a| a.left.len())
        });
        let mut saw_checking = false;
        while !apply.is_finished() {
            if s.checking.load(std::sync::atomic::Ordering::SeqCst) {
                // Validation in progress: the chain must be free for readers (unless the
                // check ended between the two loads and the swap holds it).
                let free = s.chain.try_lock().is_ok();
                let still = s.checking.load(std::sync::atomic::Ordering::SeqCst);
                assert!(free || !still, "the chain was locked during validation");
                saw_checking = true;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(apply.await.unwrap().unwrap(), 0);
        assert!(saw_checking, "never observed the validation");
        assert_eq!(s.chain().height(), 20_000);
    }

    /// A refused branch changes neither the chain nor the store.
    #[tokio::test]
    async fn refused_branch_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let s = state(dir.path());
        let b = mine_next(&s.chain(), BlockData::new(&json!("a")), 1);
        s.extend(&b, None).await.unwrap().unwrap();
        let mut bad = branch_of(&s.chain(), 0, 3, "bad");
        bad[1].nonce += 1;
        let w = s.writer().await;
        let err = s.apply(&w, 0, bad, None).await.unwrap_err();
        assert!(
            matches!(err, ApplyError::Invalid(ChainError::Block(_))),
            "{err}"
        );
        assert_eq!(s.chain().height(), 1);
        assert_eq!(s.store().load().unwrap(), s.chain().to_vec());
    }
}
