//! The blockchain: a `VecDeque` of blocks that is valid by construction, fork choice,
//! locators and reorgs. The rules themselves live in [`crate::rules`].

use std::collections::{HashMap, VecDeque};

use crate::block::{Block, BlockData, BlockHash};
use crate::params::ChainParams;
use crate::pow::Template;
use crate::rules::BlockError;
use crate::rules::{self, Checked, History, check_all, check_one};

/// Why a whole chain, or a replacement, is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    /// There are no blocks at all.
    #[error("the chain is empty")]
    Empty,
    /// The first block is not this network's genesis.
    #[error("genesis {got} is not this network's genesis {expected}")]
    WrongGenesis { expected: BlockHash, got: BlockHash },
    /// A block breaks a rule.
    #[error(transparent)]
    Block(#[from] BlockError),
    /// The offered chain does not have more work than ours.
    #[error("offered chain has work {theirs}, not more than ours ({ours})")]
    NotMoreWork { ours: u128, theirs: u128 },
    /// The blocks offered do not start at or below our height + 1.
    #[error("fork point {fork} is above our height {height}")]
    ForkAboveTip { fork: u64, height: u64 },
}

/// Heights by block hash, keyed by the hash's last 8 bytes (16 bytes a block where a map
/// of whole hashes takes 40; the leading bytes of a proof-of-work hash are mostly zero).
/// Two blocks sharing those bytes (about once in 10^13 chains of a million blocks, and
/// not something a miner can aim at cheaply) keep the later one's whole hash apart.
#[derive(Debug, Clone, Default)]
struct HashIndex {
    by_tail: HashMap<u64, u64>,
    collided: HashMap<BlockHash, u64>,
}

impl HashIndex {
    fn tail(hash: &BlockHash) -> u64 {
        let mut tail = [0u8; 8];
        tail.copy_from_slice(&hash.0[24..]);
        u64::from_le_bytes(tail)
    }

    /// Files `hash` at `height`; `hash_at` tells the hash of the block at a height.
    fn insert(
        &mut self,
        hash: &BlockHash,
        height: u64,
        hash_at: impl Fn(u64) -> Option<BlockHash>,
    ) {
        match self.by_tail.entry(Self::tail(hash)) {
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(height);
            }
            std::collections::hash_map::Entry::Occupied(e) => {
                if hash_at(*e.get()).as_ref() == Some(hash) {
                    return;
                }
                self.collided.insert(*hash, height);
            }
        }
    }

    fn get(&self, hash: &BlockHash, hash_at: impl Fn(u64) -> Option<BlockHash>) -> Option<u64> {
        if let Some(&h) = self.by_tail.get(&Self::tail(hash))
            && hash_at(h).as_ref() == Some(hash)
        {
            return Some(h);
        }
        self.collided.get(hash).copied()
    }

    /// Forgets `hash`, filed at `height`.
    fn remove(&mut self, hash: &BlockHash, height: u64) {
        if self.collided.remove(hash).is_none() {
            let tail = Self::tail(hash);
            if self.by_tail.get(&tail) == Some(&height) {
                self.by_tail.remove(&tail);
            }
        }
    }

    fn reserve(&mut self, n: usize) {
        self.by_tail.reserve(n);
    }
}

/// A chain that is valid by construction: blocks only get in through [`Blockchain::push`].
#[derive(Debug, Clone)]
pub struct Blockchain {
    params: ChainParams,
    blocks: VecDeque<Block>,
    times: Vec<i64>,
    by_hash: HashIndex,
    work: u128,
}

impl History for Blockchain {
    fn params(&self) -> &ChainParams {
        &self.params
    }

    fn tip(&self) -> &Block {
        Blockchain::tip(self)
    }

    fn time_at(&self, height: u64) -> i64 {
        self.times[height as usize]
    }
}

/// What a branch of only equal work does to the chain: the first seen is kept (the rule
/// every node follows), or a miner's own branch is taken (selfish mining in a race).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ties {
    /// Keep our blocks: a branch must have more work.
    Keep,
    /// Take the branch when it has at least our work.
    Take,
}

/// Blocks checked on top of a chain's block, apart from the chain: the fork block and the
/// timestamps the rules look back on are copied out, so that checking a long branch holds
/// no lock on the chain and can run on a blocking thread.
#[derive(Debug, Clone)]
pub(crate) struct Branch {
    params: ChainParams,
    /// The block the branch grows from.
    parent: Block,
    /// Height of `times[0]`.
    base: u64,
    /// Timestamps from `base` up to the branch's tip.
    times: Vec<i64>,
    blocks: Vec<Block>,
    work: u128,
}

impl History for Branch {
    fn params(&self) -> &ChainParams {
        &self.params
    }

    fn tip(&self) -> &Block {
        self.blocks.last().unwrap_or(&self.parent)
    }

    fn time_at(&self, height: u64) -> i64 {
        self.times[(height - self.base) as usize]
    }
}

impl Branch {
    /// Checks `blocks` in order on top of the branch against every rule (hashing on all
    /// cores), judging future timestamps against `now`, and adds them.
    pub fn extend(&mut self, blocks: Vec<Block>, now: i64) -> Result<(), BlockError> {
        let checked = check_all(&blocks);
        self.blocks.reserve(blocks.len());
        self.times.reserve(blocks.len());
        for (block, c) in blocks.into_iter().zip(checked) {
            let time = rules::check_next(self, &block, &c, now)?;
            self.times.push(time);
            self.work += block.work();
            self.blocks.push(block);
        }
        Ok(())
    }

    /// Returns the height of the block the branch grows from.
    pub fn fork(&self) -> u64 {
        self.parent.index
    }

    /// Returns the block the branch grows from.
    pub fn parent(&self) -> &Block {
        &self.parent
    }

    /// Returns the branch's blocks.
    pub fn blocks(&self) -> &[Block] {
        &self.blocks
    }

    /// Returns the height of the branch's tip.
    pub fn height(&self) -> u64 {
        History::tip(self).index
    }

    /// Returns the branch's tip (its fork block while it has no blocks).
    pub fn tip(&self) -> &Block {
        History::tip(self)
    }

    /// Returns what a miner needs to extend the branch's tip with `data`.
    pub fn template(&self, data: BlockData) -> Template {
        Template {
            index: self.height() + 1,
            prev_hash: self.tip().hash.into(),
            difficulty: rules::expected_difficulty(self),
            data,
            min_time: rules::median_time_past(self),
        }
    }
}

impl Blockchain {
    /// Starts a chain holding only the network's genesis.
    pub fn new(params: ChainParams) -> Self {
        let g = params.genesis();
        let mut by_hash = HashIndex::default();
        by_hash.insert(&g.hash, 0, |_| None);
        Blockchain {
            work: g.work(),
            times: vec![g.timestamp.unix().unwrap_or(0)],
            blocks: VecDeque::from([g]),
            by_hash,
            params,
        }
    }

    /// Builds a chain from blocks (genesis first), checking every rule of every block.
    pub fn from_blocks(params: ChainParams, blocks: Vec<Block>) -> Result<Self, ChainError> {
        Self::from_blocks_at(params, blocks, crate::block::unix_now())
    }

    /// As [`Blockchain::from_blocks`], judging future timestamps against `now`.
    pub fn from_blocks_at(
        params: ChainParams,
        blocks: Vec<Block>,
        now: i64,
    ) -> Result<Self, ChainError> {
        Self::build(params, blocks, now, usize::MAX)
    }

    /// Builds a chain from blocks this node validated and stored itself (genesis first),
    /// with the hashing pass already done (as the store does it while reading): every
    /// block's hash, link and proof of work are checked, so damage on disk is found, and
    /// every rule, history included (difficulty, timestamp order, future limit, judged
    /// against `now`), is applied to the newest `recheck` blocks only. `checked` holds the
    /// results of the last `checked.len()` blocks, all of them or all but genesis. With
    /// `recheck` at `usize::MAX` every rule of every block is checked, as
    /// [`Blockchain::from_blocks`] does.
    pub(crate) fn from_stored_checked_at(
        params: ChainParams,
        blocks: Vec<Block>,
        checked: Vec<Checked>,
        recheck: usize,
        now: i64,
    ) -> Result<Self, ChainError> {
        Self::build_checked(params, blocks, checked, now, recheck)
    }

    /// Builds a chain from `blocks` (genesis first), every rule applied to the newest
    /// `recheck` blocks and [`rules::check_stored`] to the others.
    fn build(
        params: ChainParams,
        blocks: Vec<Block>,
        now: i64,
        recheck: usize,
    ) -> Result<Self, ChainError> {
        let checked = check_all(blocks.get(1..).unwrap_or_default());
        Self::build_checked(params, blocks, checked, now, recheck)
    }

    /// As [`Blockchain::build`] with the hashing pass done: `checked` holds the results of
    /// the last `checked.len()` blocks (all, or all but genesis), in order.
    ///
    /// The trusted part is checked in place and its vector becomes the chain's `VecDeque`
    /// as it is (no copy of a long chain); only the newest `recheck` blocks are pushed one by
    /// one through every rule.
    fn build_checked(
        params: ChainParams,
        mut blocks: Vec<Block>,
        mut checked: Vec<Checked>,
        now: i64,
        recheck: usize,
    ) -> Result<Self, ChainError> {
        let genesis = params.genesis();
        let first = blocks.first().ok_or(ChainError::Empty)?;
        if first.hash != genesis.hash || *first != genesis {
            return Err(ChainError::WrongGenesis {
                expected: genesis.hash,
                got: first.hash,
            });
        }
        if checked.len() + 1 < blocks.len() || checked.len() > blocks.len() {
            checked = check_all(&blocks[1..]);
        }
        let skip = blocks.len() - checked.len();
        let total = blocks.len();
        // blocks[..trusted_end] are checked against their parents only; genesis is trusted.
        let trusted_end = total - recheck.min(total - 1);
        let rest = blocks.split_off(trusted_end);
        let mut times = Vec::with_capacity(total);
        times.push(genesis.timestamp.unix().unwrap_or(0));
        let mut work = genesis.work();
        for i in 1..blocks.len() {
            let c = &checked[i - skip];
            times.push(rules::check_stored(&params, &blocks[i - 1], &blocks[i], c)?);
            work += blocks[i].work();
        }
        let mut by_hash = HashIndex::default();
        by_hash.reserve(total);
        for (height, block) in blocks.iter().enumerate() {
            by_hash.insert(&block.hash, height as u64, |h| {
                blocks.get(h as usize).map(|b| b.hash)
            });
        }
        let mut deque = VecDeque::from(blocks);
        deque.reserve(rest.len());
        let mut chain = Blockchain {
            params,
            blocks: deque,
            times,
            by_hash,
            work,
        };
        let rest_checked = checked.into_iter().skip(trusted_end - skip);
        for (block, c) in rest.into_iter().zip(rest_checked) {
            chain.push_checked(block, c, now)?;
        }
        Ok(chain)
    }

    /// Returns the rules this chain follows.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// Returns the genesis block.
    pub fn genesis(&self) -> &Block {
        &self.blocks[0]
    }

    /// Returns the newest block.
    pub fn tip(&self) -> &Block {
        self.blocks.back().unwrap_or(&self.blocks[0])
    }

    /// Returns the tip's index.
    pub fn height(&self) -> u64 {
        self.tip().index
    }

    /// Returns the number of blocks, genesis included.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Always false: a chain holds at least its genesis.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Returns the block at `height`.
    pub fn get(&self, height: u64) -> Option<&Block> {
        self.blocks.get(usize::try_from(height).ok()?)
    }

    /// Iterates over the blocks, genesis first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &Block> + ExactSizeIterator {
        self.blocks.iter()
    }

    /// Returns the total work: the sum of 2^difficulty over all blocks.
    pub fn work(&self) -> u128 {
        self.work
    }

    /// Returns the height of the block with `hash`, if we hold it.
    pub fn height_of(&self, hash: &BlockHash) -> Option<u64> {
        self.by_hash.get(hash, |h| self.get(h).map(|b| b.hash))
    }

    /// Returns the work of the blocks above `height`.
    pub(crate) fn work_above(&self, height: u64) -> u128 {
        self.blocks
            .iter()
            .skip(height as usize + 1)
            .map(Block::work)
            .sum()
    }

    /// Returns the difficulty the rules expect for the block after the tip.
    pub(crate) fn next_difficulty(&self) -> u32 {
        rules::expected_difficulty(self)
    }

    /// Returns the median time of the last blocks, the earliest next timestamp.
    pub(crate) fn median_time_past(&self) -> i64 {
        rules::median_time_past(self)
    }

    /// Returns what a miner needs to extend the tip with `data`.
    pub fn template(&self, data: BlockData) -> Template {
        Template {
            index: self.height() + 1,
            prev_hash: self.tip().hash.into(),
            difficulty: self.next_difficulty(),
            data,
            min_time: self.median_time_past(),
        }
    }

    /// Checks that `block` may extend the tip, without changing anything.
    pub fn check_next(&self, block: &Block) -> Result<(), BlockError> {
        rules::check_next(self, block, &check_one(block), crate::block::unix_now()).map(drop)
    }

    /// Appends `block` if it follows every rule on top of the tip; the only way a block gets in.
    pub fn push(&mut self, block: Block) -> Result<(), BlockError> {
        let c = check_one(&block);
        self.push_checked(block, c, crate::block::unix_now())
    }

    fn push_checked(&mut self, block: Block, c: Checked, now: i64) -> Result<(), BlockError> {
        let time = rules::check_next(self, &block, &c, now)?;
        self.append_unchecked(block, time);
        Ok(())
    }

    fn append_unchecked(&mut self, block: Block, time: i64) {
        self.work += block.work();
        self.times.push(time);
        let blocks = &self.blocks;
        self.by_hash.insert(&block.hash, block.index, |h| {
            blocks.get(h as usize).map(|b| b.hash)
        });
        self.blocks.push_back(block);
    }

    /// Removes and returns every block above `height`.
    fn truncate(&mut self, height: u64) -> Vec<Block> {
        let keep = (height as usize + 1).min(self.blocks.len());
        let removed: Vec<Block> = self.blocks.drain(keep..).collect();
        self.times.truncate(keep);
        for b in &removed {
            self.work -= b.work();
            self.by_hash.remove(&b.hash, b.index);
        }
        removed
    }

    /// Re-checks every block of the chain from genesis, as on load.
    pub fn validate(&self) -> Result<(), ChainError> {
        Blockchain::from_blocks(self.params.clone(), self.blocks.iter().cloned().collect())
            .map(|_| ())
    }

    /// Returns a block locator: hashes newest first, thinning out exponentially, genesis last.
    pub fn locator(&self) -> Vec<BlockHash> {
        let mut out = Vec::new();
        let mut height = self.height() as i64;
        let mut step = 1i64;
        while height > 0 {
            out.push(self.blocks[height as usize].hash);
            if out.len() >= 10 {
                step *= 2;
            }
            height -= step;
        }
        out.push(self.genesis().hash);
        out
    }

    /// Returns up to `limit` blocks after the newest locator hash we hold (empty if none known
    /// or up to date).
    pub fn blocks_after(&self, locator: &[BlockHash], limit: usize) -> Vec<Block> {
        self.blocks_after_within(locator, limit, usize::MAX)
    }

    /// [`Blockchain::blocks_after`], stopping before the block that would take the blocks'
    /// compact JSON past `max_bytes` (the first block is always returned).
    pub(crate) fn blocks_after_within(
        &self,
        locator: &[BlockHash],
        limit: usize,
        max_bytes: usize,
    ) -> Vec<Block> {
        let Some(start) = locator.iter().find_map(|h| self.height_of(h)) else {
            return Vec::new();
        };
        self.range_within(start.saturating_add(1), limit, max_bytes)
    }

    /// Replaces the blocks above `fork` with `blocks` if the result is valid and has more
    /// work; returns the blocks left behind. On error the chain is unchanged.
    pub fn replace_from(
        &mut self,
        fork: u64,
        blocks: Vec<Block>,
    ) -> Result<Vec<Block>, ChainError> {
        let mut branch = self.branch_at(fork)?;
        // The work the blocks claim bounds what they can bring: refuse before hashing.
        let claimed = blocks.iter().map(Block::work).sum::<u128>();
        let ours = self.work_above(fork);
        if claimed <= ours {
            return Err(ChainError::NotMoreWork {
                ours: self.work,
                theirs: self.work - ours + claimed,
            });
        }
        branch.extend(blocks, crate::block::unix_now())?;
        self.adopt(branch)
    }

    /// Starts a branch on top of the block at `fork`, to be checked apart from the chain
    /// (off its lock) and adopted with [`Blockchain::adopt`].
    pub(crate) fn branch_at(&self, fork: u64) -> Result<Branch, ChainError> {
        let parent = self.get(fork).ok_or(ChainError::ForkAboveTip {
            fork,
            height: self.height(),
        })?;
        let base = (fork + 1).saturating_sub(rules::lookback(&self.params));
        Ok(Branch {
            params: self.params.clone(),
            parent: parent.clone(),
            base,
            times: self.times[base as usize..=fork as usize].to_vec(),
            blocks: Vec::new(),
            work: 0,
        })
    }

    /// Swaps in a checked branch if it still grows from our block at its fork and has more
    /// work than ours above it; returns the blocks left behind. On error nothing changes.
    pub(crate) fn adopt(&mut self, branch: Branch) -> Result<Vec<Block>, ChainError> {
        self.adopt_as(branch, Ties::Keep)
    }

    /// Swaps in a checked branch as [`Blockchain::adopt`] does, but with `Ties::Take` also
    /// one of only equal work: how a miner prefers its own blocks in a race.
    pub(crate) fn adopt_as(
        &mut self,
        branch: Branch,
        ties: Ties,
    ) -> Result<Vec<Block>, ChainError> {
        let fork = branch.parent.index;
        if self.get(fork).map(|b| b.hash) != Some(branch.parent.hash) {
            return Err(ChainError::ForkAboveTip {
                fork,
                height: self.height(),
            });
        }
        let ours = self.work_above(fork);
        let short = match ties {
            Ties::Keep => branch.work <= ours,
            Ties::Take => branch.work < ours || branch.blocks.is_empty(),
        };
        if short {
            return Err(ChainError::NotMoreWork {
                ours: self.work,
                theirs: self.work - ours + branch.work,
            });
        }
        let removed = self.truncate(fork);
        let first = (fork + 1 - branch.base) as usize;
        for (block, &time) in branch.blocks.into_iter().zip(&branch.times[first..]) {
            self.append_unchecked(block, time);
        }
        Ok(removed)
    }

    /// Undoes a replacement: drops the blocks above `fork` and puts back `restore`, blocks
    /// that were validated on this very prefix before.
    pub(crate) fn rewind(&mut self, fork: u64, restore: Vec<Block>) {
        self.truncate(fork);
        for b in restore {
            let t = b.timestamp.unix().unwrap_or(0);
            self.append_unchecked(b, t);
        }
    }

    /// Adopts `blocks` (a whole chain, genesis first) if it is valid and has more work;
    /// returns the blocks of ours left behind.
    pub fn replace_with(&mut self, blocks: Vec<Block>) -> Result<Vec<Block>, ChainError> {
        let first = blocks.first().ok_or(ChainError::Empty)?;
        if first != self.genesis() {
            return Err(ChainError::WrongGenesis {
                expected: self.genesis().hash,
                got: first.hash,
            });
        }
        let common = blocks
            .iter()
            .zip(self.blocks.iter())
            .take_while(|(a, b)| a.hash == b.hash && a == b)
            .count();
        let fork = (common - 1) as u64;
        self.replace_from(fork, blocks.into_iter().skip(common).collect())
    }

    /// Returns a copy of every block, genesis first.
    pub fn to_vec(&self) -> Vec<Block> {
        self.blocks.iter().cloned().collect()
    }

    /// Returns a copy of the newest `count` blocks, oldest first.
    pub fn tail(&self, count: usize) -> Vec<Block> {
        self.tail_within(count, usize::MAX)
    }

    /// [`Blockchain::tail`], of only as many of the newest blocks as fit in `max_bytes` of
    /// compact JSON (the tip is always returned).
    pub(crate) fn tail_within(&self, count: usize, max_bytes: usize) -> Vec<Block> {
        let mut tail = take_within(self.blocks.iter().rev(), count, max_bytes);
        tail.reverse();
        tail
    }

    /// Returns a copy of up to `count` blocks from `height` on.
    pub fn range(&self, height: u64, count: usize) -> Vec<Block> {
        self.range_within(height, count, usize::MAX)
    }

    /// [`Blockchain::range`], stopping before the block that would take the blocks' compact
    /// JSON past `max_bytes` (the first block is always returned).
    pub(crate) fn range_within(&self, height: u64, count: usize, max_bytes: usize) -> Vec<Block> {
        let Ok(start) = usize::try_from(height) else {
            return Vec::new();
        };
        take_within(
            self.blocks.range(start.min(self.blocks.len())..),
            count,
            max_bytes,
        )
    }

    /// Returns a copy of the blocks from `height` on.
    #[cfg(test)]
    pub(crate) fn blocks_from(&self, height: u64) -> Vec<Block> {
        self.range(height, usize::MAX)
    }
}

/// Mines one block with `data` on top of `chain`, blocking until it is found: a helper for
/// tests and benches, built only for them (`cfg(test)` or the `testkit` feature, which the
/// `powchain-testkit` crate turns on); a node mines through its cancellable jobs.
#[cfg(any(test, feature = "testkit"))]
pub fn mine_next(chain: &Blockchain, data: BlockData, threads: usize) -> Block {
    let template = chain.template(data);
    loop {
        // Nothing cancels this run, so `mine` returns a block; the loop only spares a
        // sentinel for the cancelled case.
        if let Some(block) =
            crate::pow::mine(&template, threads, &crate::pow::MineControl::default())
        {
            return block;
        }
    }
}

/// Copies up to `limit` of `blocks`, stopping before the one that would take their compact
/// JSON past `max_bytes`; the first is copied whatever its size. Sizes are measured only
/// under a bound.
fn take_within<'a>(
    blocks: impl Iterator<Item = &'a Block>,
    limit: usize,
    max_bytes: usize,
) -> Vec<Block> {
    let mut taken = Vec::new();
    let mut bytes = 0usize;
    let mut scratch = String::new();
    for block in blocks.take(limit) {
        if max_bytes != usize::MAX {
            bytes = bytes.saturating_add(block.json_len(&mut scratch));
            if bytes > max_bytes && !taken.is_empty() {
                break;
            }
        }
        taken.push(block.clone());
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockData;
    use crate::params::Retarget;
    use crate::rules::check_branch;
    use proptest::prelude::*;
    use serde_json::json;

    fn chain_of(params: ChainParams, n: usize) -> Blockchain {
        let mut c = Blockchain::new(params);
        for i in 0..n {
            let b = mine_next(&c, BlockData::new(&json!({ "n": i })), 1);
            c.push(b).unwrap();
        }
        c
    }

    fn reseal(block: &mut Block) {
        block.nonce = 0;
        loop {
            let h = block.compute_hash();
            if h.leading_zero_bits() >= block.difficulty {
                block.hash = h;
                return;
            }
            block.nonce += 1;
        }
    }

    /// A chain built by the miner validates, block by block and as a whole.
    #[test]
    fn mined_chain_validates() {
        let c = chain_of(ChainParams::with_difficulty(4), 20);
        assert_eq!(c.height(), 20);
        c.validate().unwrap();
        assert_eq!(c.work(), 21 * 16);
    }

    /// Blocks after the newest known locator hash are served, capped by the limit.
    #[test]
    fn locator_finds_the_fork_point() {
        let c = chain_of(ChainParams::with_difficulty(0), 100);
        let loc = c.locator();
        assert_eq!(loc[0], c.tip().hash);
        assert_eq!(*loc.last().unwrap(), c.genesis().hash);
        assert!(loc.len() < 25);
        let short =
            Blockchain::from_blocks(c.params().clone(), c.blocks_from(0)[..61].to_vec()).unwrap();
        let after = c.blocks_after(&short.locator(), 10);
        assert_eq!(after.len(), 10);
        assert_eq!(after[0].index, 61);
        assert!(c.blocks_after(&c.locator(), 10).is_empty());
    }

    /// Copies under a byte bound stop before the block that would pass it, whatever the
    /// count asked; the first block (for a tail, the tip) comes whatever its size.
    #[test]
    fn copies_under_a_byte_bound_stop_before_passing_it() {
        let c = chain_of(ChainParams::with_difficulty(0), 10);
        let mut scratch = String::new();
        let size = c.get(1).unwrap().json_len(&mut scratch);
        assert_eq!(size, serde_json::to_vec(c.get(1).unwrap()).unwrap().len());
        // Every block of this chain but genesis is as long as block 1 ({"n":<one digit>}).
        let three = 3 * size + size / 2;
        let range = c.range_within(1, 100, three);
        assert_eq!(range.iter().map(|b| b.index).collect::<Vec<_>>(), [1, 2, 3]);
        let after = c.blocks_after_within(&[c.get(4).unwrap().hash], 2, three);
        assert_eq!(after.iter().map(|b| b.index).collect::<Vec<_>>(), [5, 6]);
        let tail = c.tail_within(100, three);
        assert_eq!(tail.iter().map(|b| b.index).collect::<Vec<_>>(), [8, 9, 10]);
        assert_eq!(c.range_within(1, 100, 1).len(), 1);
        assert_eq!(c.tail_within(100, 1)[0].index, 10);
        assert_eq!(c.range_within(1, 100, usize::MAX), c.range(1, 100));
    }

    /// A replacement with less or equal work changes nothing; one with more work returns
    /// the blocks left behind.
    #[test]
    fn replace_from_requires_more_work_and_returns_left_behind() {
        let params = ChainParams::with_difficulty(0);
        let base = chain_of(params.clone(), 5);
        let mut ours = base.clone();
        ours.push(mine_next(&ours, BlockData::new(&json!("ours")), 1))
            .unwrap();
        let mut theirs = base.clone();
        theirs
            .push(mine_next(&theirs, BlockData::new(&json!("t1")), 1))
            .unwrap();
        let before = ours.to_vec();
        assert!(matches!(
            ours.replace_with(theirs.to_vec()),
            Err(ChainError::NotMoreWork { .. })
        ));
        assert_eq!(ours.to_vec(), before);
        theirs
            .push(mine_next(&theirs, BlockData::new(&json!("t2")), 1))
            .unwrap();
        let left = ours.replace_with(theirs.to_vec()).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].data.as_str(), "\"ours\"");
        assert_eq!(ours.tip().hash, theirs.tip().hash);
    }

    /// A branch is checked apart from the chain (which stays as it was meanwhile) and
    /// adopted only with more work and only while its fork block is still ours.
    #[test]
    fn branch_is_checked_apart_then_adopted() {
        let params = ChainParams::with_difficulty(0);
        let mut ours = chain_of(params.clone(), 5);
        let mut theirs =
            Blockchain::from_blocks(params.clone(), ours.to_vec()[..3].to_vec()).unwrap();
        for i in 0..4 {
            theirs
                .push(mine_next(&theirs, BlockData::new(&json!(["b", i])), 1))
                .unwrap();
        }
        let mut branch = ours.branch_at(2).unwrap();
        branch
            .extend(theirs.blocks_from(3), crate::block::unix_now())
            .unwrap();
        assert_eq!((branch.fork(), branch.blocks().len()), (2, 4));
        assert_eq!(ours.height(), 5);
        let stale = branch.clone();
        let left = ours.adopt(branch).unwrap();
        assert_eq!(left.len(), 3);
        assert_eq!(ours.tip().hash, theirs.tip().hash);
        ours.validate().unwrap();
        // The same branch again has no more work than what we now hold.
        assert!(matches!(
            ours.adopt(stale),
            Err(ChainError::NotMoreWork { .. })
        ));
        // A branch from a block we no longer hold is refused.
        let old = chain_of(params, 3);
        let foreign = old.branch_at(3).unwrap();
        assert!(ours.adopt(foreign).is_err());
        assert_eq!(ours.tip().hash, theirs.tip().hash);
    }

    /// An invalid block in a replacement leaves the chain exactly as it was.
    #[test]
    fn failed_replace_restores_the_chain() {
        let params = ChainParams::with_difficulty(0);
        let ours = chain_of(params.clone(), 3);
        let mut theirs = chain_of(params, 2);
        for _ in 0..3 {
            theirs
                .push(mine_next(&theirs, BlockData::new(&json!("x")), 1))
                .unwrap();
        }
        let mut blocks = theirs.to_vec();
        blocks[4].index = 9;
        let mut c = ours.clone();
        assert!(c.replace_with(blocks).is_err());
        assert_eq!(c.to_vec(), ours.to_vec());
        assert_eq!(c.work(), ours.work());
        c.validate().unwrap();
    }

    /// Retargeting raises the difficulty when blocks come faster than the target, by at most
    /// two bits, and never measures from genesis.
    #[test]
    fn retarget_moves_difficulty_within_clamp() {
        let params = ChainParams {
            difficulty: 2,
            retarget: Some(Retarget {
                interval: 5,
                target_secs: 600,
            }),
            ..ChainParams::default()
        };
        let mut c = Blockchain::new(params);
        for _ in 0..5 {
            c.push(mine_next(&c, BlockData::empty(), 1)).unwrap();
        }
        // Blocks 1..4 came within seconds: 10 minutes each was wanted.
        assert_eq!(c.get(5).unwrap().difficulty, 4);
        c.validate().unwrap();
        let mut wrong = c.blocks_from(0);
        wrong[5].difficulty = 2;
        reseal(&mut wrong[5]);
        assert!(matches!(
            Blockchain::from_blocks(c.params().clone(), wrong),
            Err(ChainError::Block(BlockError::BadDifficulty {
                index: 5,
                expected: 4,
                got: 2
            }))
        ));
    }

    /// Hashes that share their last 8 bytes are all found, each at its own height, and
    /// forgetting one leaves the other.
    #[test]
    fn hash_index_keeps_blocks_whose_tails_collide_apart() {
        let hash = |head: u8| {
            let mut h = [7u8; 32];
            h[0] = head;
            BlockHash(h)
        };
        let held = [hash(1), hash(2), hash(3)];
        let at = |height: u64| held.get(height as usize).copied();
        let mut index = HashIndex::default();
        for (height, h) in held.iter().enumerate() {
            index.insert(h, height as u64, at);
            index.insert(h, height as u64, at);
        }
        for (height, h) in held.iter().enumerate() {
            assert_eq!(index.get(h, at), Some(height as u64));
        }
        assert_eq!(index.get(&hash(4), at), None);
        index.remove(&held[0], 0);
        let at = |height: u64| (height > 0).then(|| held[height as usize]);
        assert_eq!(index.get(&held[0], at), None);
        assert_eq!(index.get(&held[1], at), Some(1));
        assert_eq!(index.get(&held[2], at), Some(2));
        index.remove(&held[2], 2);
        assert_eq!(index.get(&held[1], at), Some(1));
    }

    /// A timestamp more than two hours ahead is refused.
    #[test]
    fn far_future_timestamp_is_refused() {
        let c = Blockchain::new(ChainParams::with_difficulty(0));
        let mut b = mine_next(&c, BlockData::empty(), 1);
        b.timestamp = crate::block::Timestamp::from_unix(crate::block::unix_now() + 3 * 3600);
        reseal(&mut b);
        assert!(matches!(
            c.check_next(&b),
            Err(BlockError::TimestampTooFarAhead { .. })
        ));
    }

    /// A branch of too-easy blocks is refused by its shape alone, before any chain is touched.
    #[test]
    fn check_branch_refuses_too_easy_blocks() {
        let params = ChainParams::with_difficulty(6);
        let chain = chain_of(params.clone(), 3);
        let easy = chain_of(ChainParams::with_difficulty(0), 3);
        let err =
            check_branch(&params, chain.genesis(), &chain.blocks_from(1)).map(|w| w == 3 * 64);
        assert_eq!(err, Ok(true));
        let mut forged = easy.blocks_from(1);
        forged[0].prev_hash = chain.genesis().hash.into();
        reseal(&mut forged[0]);
        assert!(matches!(
            check_branch(&params, chain.genesis(), &forged[..1]),
            Err(BlockError::BadDifficulty {
                index: 1,
                expected: 6,
                got: 0
            })
        ));
    }

    /// A nonce above 2^53 - 1 breaks a rule of its own, even with valid proof of work;
    /// 2^53 - 1 itself is allowed.
    #[test]
    fn nonce_above_two_to_the_53_is_refused() {
        let c = Blockchain::new(ChainParams::with_difficulty(0));
        let mut b = mine_next(&c, BlockData::empty(), 1);
        b.nonce = crate::block::MAX_NONCE;
        b.hash = b.compute_hash();
        assert_eq!(c.check_next(&b), Ok(()));
        b.nonce = crate::block::MAX_NONCE + 1;
        b.hash = b.compute_hash();
        assert_eq!(
            c.check_next(&b),
            Err(BlockError::NonceTooLarge {
                index: 1,
                nonce: 9_007_199_254_740_992
            })
        );
        let err = check_branch(c.params(), c.genesis(), std::slice::from_ref(&b)).unwrap_err();
        assert_eq!(err.code(), "nonce_too_large");
    }

    /// Oversized blocks are refused with their size.
    #[test]
    fn oversized_block_is_refused() {
        let params = ChainParams {
            difficulty: 0,
            max_block_size: 200,
            ..ChainParams::default()
        };
        let c = Blockchain::new(params);
        let b = mine_next(&c, BlockData::new(&json!("x".repeat(300))), 1);
        assert!(matches!(
            c.check_next(&b),
            Err(BlockError::BlockTooLarge { .. })
        ));
        assert_eq!(
            serde_json::to_vec(&b).unwrap().len(),
            b.preimage().len() + 74
        );
    }

    fn chain_with_spacing(params: &ChainParams, n: usize, spacing: i64) -> Blockchain {
        let mut c = Blockchain::new(params.clone());
        for i in 0..n {
            let t = c.template(BlockData::new(&json!(i)));
            let mut b = Block {
                index: t.index,
                timestamp: crate::block::Timestamp::from_unix(946_684_800 + i as i64 * spacing),
                nonce: 0,
                difficulty: t.difficulty,
                prev_hash: t.prev_hash,
                hash: BlockHash::default(),
                data: t.data,
            };
            reseal(&mut b);
            c.push(b).unwrap();
        }
        c
    }

    #[derive(Debug, Clone)]
    enum Tamper {
        Index,
        Timestamp,
        Nonce,
        Difficulty,
        PrevHash,
        Hash,
        Data,
        Swap,
    }

    fn tamper() -> impl Strategy<Value = Tamper> {
        prop_oneof![
            Just(Tamper::Index),
            Just(Tamper::Timestamp),
            Just(Tamper::Nonce),
            Just(Tamper::Difficulty),
            Just(Tamper::PrevHash),
            Just(Tamper::Hash),
            Just(Tamper::Data),
            Just(Tamper::Swap),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// Changing any one field of any block, or swapping two blocks, is caught with the
        /// rule it breaks.
        #[test]
        fn any_single_change_is_caught(n in 3usize..10, at in 1usize..10, how in tamper()) {
            let chain = chain_of(ChainParams::with_difficulty(8), n);
            let at = at.min(n - 1).max(1);
            let mut blocks = chain.to_vec();
            let b = &mut blocks[at];
            let expect: fn(&ChainError) -> bool = match how {
                Tamper::Index => { b.index += 1; |e| matches!(e, ChainError::Block(BlockError::BadIndex { .. })) }
                Tamper::Timestamp => { b.timestamp = "31/12/1999, 23:59:59".into(); |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::Nonce => { b.nonce ^= 1; |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::Difficulty => { b.difficulty += 1; |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::PrevHash => { b.prev_hash = BlockHash([0xff; 32]).into(); |e| matches!(e, ChainError::Block(BlockError::BadPrevHash { .. })) }
                Tamper::Hash => { b.hash.0[31] ^= 1; |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::Data => { b.data = BlockData::new(&json!({"evil": true})); |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::Swap => { blocks.swap(at, at + 1); |e| matches!(e, ChainError::Block(BlockError::BadIndex { .. })) }
            };
            let err = Blockchain::from_blocks(chain.params().clone(), blocks).unwrap_err();
            prop_assert!(expect(&err), "unexpected error {err}");
        }

        /// Re-mined tampering is still caught by the rule behind the hash.
        #[test]
        fn resealed_change_is_caught_by_its_rule(n in 3usize..8, at in 1usize..8, bump in 1u32..3) {
            let chain = chain_of(ChainParams::with_difficulty(4), n);
            let at = at.min(n);
            let mut blocks = chain.to_vec();
            blocks[at].difficulty += bump;
            reseal(&mut blocks[at]);
            let err = Blockchain::from_blocks(chain.params().clone(), blocks).unwrap_err();
            prop_assert!(matches!(err, ChainError::Block(BlockError::BadDifficulty { .. })), "{err}");
        }

        /// A chain built by the miner validates, whatever its length, data and difficulty.
        #[test]
        fn mined_chain_always_validates(
            data in proptest::collection::vec(proptest::arbitrary::any::<(String, i64, bool)>(), 1..12),
            difficulty in 0u32..9,
        ) {
            let mut chain = Blockchain::new(ChainParams::with_difficulty(difficulty));
            for (s, n, b) in data {
                let value = json!({ "s": s, "n": n, "b": b, "nested": { "z": [n], "a": s } });
                let block = mine_next(&chain, BlockData::new(&value), 2);
                prop_assert!(chain.push(block).is_ok());
            }
            prop_assert!(chain.validate().is_ok());
            let again = Blockchain::from_blocks(chain.params().clone(), chain.to_vec());
            prop_assert!(again.is_ok());
        }

        /// Block and chain JSON decoded from mutated bytes never panics validation, and a
        /// chain accepted from it is valid; a refused replacement leaves ours untouched.
        #[test]
        fn mutated_chain_json_never_panics(n in 1usize..5, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6)) {
            let chain = chain_of(ChainParams::with_difficulty(0), n);
            let mut bytes = serde_json::to_vec(&chain.to_vec()).unwrap();
            for (at, byte) in flips {
                let len = bytes.len();
                bytes[at % len] = byte;
            }
            if let Ok(blocks) = serde_json::from_slice::<Vec<Block>>(&bytes) {
                if let Ok(c) = Blockchain::from_blocks(chain.params().clone(), blocks.clone()) {
                    prop_assert!(c.validate().is_ok());
                }
                let mut held = chain.clone();
                if held.replace_with(blocks).is_err() {
                    prop_assert_eq!(held.to_vec(), chain.to_vec());
                }
                prop_assert!(held.validate().is_ok());
            }
            if let Ok(block) = serde_json::from_slice::<Block>(&bytes) {
                let _ = chain.check_next(&block);
            }
        }

        /// Fork choice follows total work, not length.
        #[test]
        fn fork_choice_prefers_work_not_length(heavy_len in 1usize..7, light_len in 1usize..16) {
            let params = ChainParams {
                difficulty: 4,
                retarget: Some(Retarget { interval: 2, target_secs: 1000 }),
                ..ChainParams::default()
            };
            // Fast blocks push difficulty up, slow ones bring it down.
            let heavy = chain_with_spacing(&params, heavy_len, 1);
            let light = chain_with_spacing(&params, light_len, 100_000);
            let mut held = heavy.clone();
            let result = held.replace_with(light.to_vec());
            if light.work() > heavy.work() {
                prop_assert!(result.is_ok());
                prop_assert_eq!(held.tip().hash, light.tip().hash);
            } else {
                prop_assert!(result.is_err());
                prop_assert_eq!(held.tip().hash, heavy.tip().hash);
            }
        }
    }
}
