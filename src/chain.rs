//! The blockchain: consensus rules, full validation, fork choice, locators and reorgs.

use std::collections::{HashMap, VecDeque};

use chrono::NaiveDateTime;
use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockHash, TIMESTAMP_FORMAT, genesis};
use crate::pow::{self, MAX_DIFFICULTY, Template};

/// How many previous blocks the median-time rule looks at.
pub const MEDIAN_SPAN: usize = 11;
/// How far ahead of the validating clock a timestamp may be.
pub const MAX_FUTURE_SECS: i64 = 2 * 60 * 60;
/// Default cap on a block's serialized size.
pub const DEFAULT_MAX_BLOCK_SIZE: usize = 1024 * 1024;
/// Largest difficulty change at one retarget, in bits.
pub const MAX_RETARGET_BITS: i64 = 2;

/// The difficulty retarget rule: every `interval` blocks aim for `target_secs` per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retarget {
    /// Blocks between two adjustments (at least 2).
    pub interval: u64,
    /// Wished-for seconds between blocks.
    pub target_secs: u64,
}

/// The rules of a network; the genesis built from them is the network's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainParams {
    /// Difficulty of genesis and, without retargeting, of every block.
    pub difficulty: u32,
    /// Optional retargeting.
    pub retarget: Option<Retarget>,
    /// Cap on a block's serialized size in bytes.
    pub max_block_size: usize,
}

impl Default for ChainParams {
    fn default() -> Self {
        ChainParams {
            difficulty: 16,
            retarget: None,
            max_block_size: DEFAULT_MAX_BLOCK_SIZE,
        }
    }
}

impl ChainParams {
    /// Returns the params at `difficulty` bits, other settings default.
    pub fn with_difficulty(difficulty: u32) -> Self {
        ChainParams {
            difficulty,
            ..Self::default()
        }
    }

    /// Builds the network's fixed genesis block.
    pub fn genesis(&self) -> Block {
        genesis(self.difficulty, self.retarget)
    }
}

/// Why a block cannot extend a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The index is not the parent's plus one.
    #[error("block {got} has the wrong index: expected {expected}")]
    BadIndex { expected: u64, got: u64 },
    /// `prev_hash` is not the parent's hash.
    #[error("block {index} links to unknown parent {got} (expected {expected})")]
    BadPrevHash {
        index: u64,
        expected: String,
        got: String,
    },
    /// The stored `hash` field is not the hash of the block.
    #[error("block {index} claims hash {claimed} but hashes to {computed}")]
    BadHash {
        index: u64,
        claimed: BlockHash,
        computed: BlockHash,
    },
    /// The hash has fewer leading zero bits than the difficulty asks.
    #[error(
        "block {index} has insufficient work: {zeros} leading zero bits, {difficulty} required"
    )]
    BadProofOfWork {
        index: u64,
        difficulty: u32,
        zeros: u32,
    },
    /// The difficulty is not what the rules expect at this height.
    #[error("block {index} has difficulty {got}, the rules expect {expected}")]
    BadDifficulty { index: u64, expected: u32, got: u32 },
    /// The timestamp is not `"%d/%m/%Y, %H:%M:%S"`.
    #[error(
        "block {index} has an unparsable timestamp {timestamp:?} (want \"dd/mm/YYYY, HH:MM:SS\" UTC)"
    )]
    BadTimestamp { index: u64, timestamp: String },
    /// The timestamp is before the median of the previous blocks.
    #[error(
        "block {index} timestamp {timestamp:?} is earlier than the median of the previous {MEDIAN_SPAN} blocks"
    )]
    TimestampTooOld { index: u64, timestamp: String },
    /// The timestamp is more than two hours ahead of this node's clock.
    #[error("block {index} timestamp {timestamp:?} is more than 2 hours in the future")]
    TimestampTooFarAhead { index: u64, timestamp: String },
    /// The block is over the size cap.
    #[error("block {index} is {size} bytes, over the {max} byte cap")]
    BlockTooLarge { index: u64, size: usize, max: usize },
    /// The nonce is above 2^53 − 1, which JSON readers cannot all read exactly.
    #[error(
        "block {index} has nonce {nonce}, above the largest allowed nonce {} (2^53 - 1)",
        pow::MAX_NONCE
    )]
    NonceTooLarge { index: u64, nonce: u64 },
}

impl BlockError {
    /// Returns a short machine-readable name for the rule broken.
    pub fn code(&self) -> &'static str {
        match self {
            BlockError::BadIndex { .. } => "bad_index",
            BlockError::BadPrevHash { .. } => "bad_prev_hash",
            BlockError::BadHash { .. } => "bad_hash",
            BlockError::BadProofOfWork { .. } => "bad_proof_of_work",
            BlockError::BadDifficulty { .. } => "bad_difficulty",
            BlockError::BadTimestamp { .. } => "bad_timestamp",
            BlockError::TimestampTooOld { .. } => "timestamp_too_old",
            BlockError::TimestampTooFarAhead { .. } => "timestamp_too_far_ahead",
            BlockError::BlockTooLarge { .. } => "block_too_large",
            BlockError::NonceTooLarge { .. } => "nonce_too_large",
        }
    }
}

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

/// A chain that is valid by construction: blocks only get in through [`Blockchain::push`].
#[derive(Debug, Clone)]
pub struct Blockchain {
    params: ChainParams,
    blocks: VecDeque<Block>,
    times: Vec<i64>,
    by_hash: HashMap<BlockHash, u64>,
    work: u128,
}

/// Parses a block timestamp into Unix seconds.
pub fn parse_timestamp(ts: &str) -> Option<i64> {
    NaiveDateTime::parse_from_str(ts, TIMESTAMP_FORMAT)
        .ok()
        .map(|t| t.and_utc().timestamp())
}

/// Returns round(log2(expected / actual)) clamped to ±[`MAX_RETARGET_BITS`], in integers
/// only: consensus must not depend on floating point.
///
/// The ratio is never exactly 2^(n + 1/2) (irrational), so rounding has no ties, and
/// round(log2 r) >= n exactly when r^2 >= 2^(2n - 1): shift >= 1 iff E^2 >= 2 A^2,
/// shift >= 2 iff E^2 >= 8 A^2, and symmetrically downwards.
pub fn retarget_shift(expected: u128, actual: u128) -> i64 {
    let (mut e, mut a) = (expected.max(1), actual.max(1));
    // Ratios beyond 3 are past the clamp either way (2^1.5 < 3).
    if e >= a.saturating_mul(3) {
        return MAX_RETARGET_BITS;
    }
    if a >= e.saturating_mul(3) {
        return -MAX_RETARGET_BITS;
    }
    // Within a factor of 3: scale both down (deterministically) so the squares fit.
    while e.max(a) >= 1 << 62 {
        e >>= 1;
        a >>= 1;
    }
    let (e2, a2) = (e * e, a * a);
    if e2 >= 8 * a2 {
        2
    } else if e2 >= 2 * a2 {
        1
    } else if 8 * e2 < a2 {
        -2
    } else if 2 * e2 < a2 {
        -1
    } else {
        0
    }
}

/// Tells whether `prev_hash` is exactly the lowercase hex of `parent` (no allocation).
fn links_to(prev_hash: &str, parent: &BlockHash) -> bool {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let p = prev_hash.as_bytes();
    p.len() == 64
        && parent.0.iter().enumerate().all(|(i, b)| {
            p[2 * i] == HEX[usize::from(b >> 4)] && p[2 * i + 1] == HEX[usize::from(b & 0xf)]
        })
}

/// What the hashing pass learns of a block, computed in parallel for long chains.
struct Checked {
    hash: BlockHash,
    time: Option<i64>,
    size: usize,
}

fn check_one(block: &Block) -> Checked {
    let preimage = block.preimage();
    let hash = BlockHash(sha2::Sha256::digest(preimage.as_bytes()).into());
    // The JSON form holds the preimage's fields plus `,"hash":"<64 hex>"`.
    let size = preimage.len() + 74;
    Checked {
        hash,
        time: parse_timestamp(&block.timestamp),
        size,
    }
}

use sha2::Digest as _;

fn check_all(blocks: &[Block]) -> Vec<Checked> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_all_with(blocks, threads, check_one)
}

/// Runs `check` over `blocks` on up to `threads` threads, results in block order. A panic
/// in any thread is propagated: a missing result would misalign the rest.
fn check_all_with<T: Send>(
    blocks: &[Block],
    threads: usize,
    check: impl Fn(&Block) -> T + Sync,
) -> Vec<T> {
    if blocks.len() < 2048 || threads < 2 {
        return blocks.iter().map(check).collect();
    }
    let per = blocks.len().div_ceil(threads);
    let check = &check;
    std::thread::scope(|s| {
        let handles: Vec<_> = blocks
            .chunks(per)
            .map(|part| s.spawn(move || part.iter().map(check).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

impl Blockchain {
    /// Starts a chain holding only the network's genesis.
    pub fn new(params: ChainParams) -> Self {
        let g = params.genesis();
        let mut by_hash = HashMap::new();
        by_hash.insert(g.hash, 0);
        Blockchain {
            work: g.work(),
            times: vec![parse_timestamp(&g.timestamp).unwrap_or(0)],
            blocks: VecDeque::from([g]),
            by_hash,
            params,
        }
    }

    /// Builds a chain from blocks (genesis first), checking every rule of every block.
    pub fn from_blocks(params: ChainParams, blocks: Vec<Block>) -> Result<Self, ChainError> {
        Self::from_blocks_at(params, blocks, chrono::Utc::now().timestamp())
    }

    /// As [`Blockchain::from_blocks`], judging future timestamps against `now`.
    pub fn from_blocks_at(
        params: ChainParams,
        blocks: Vec<Block>,
        now: i64,
    ) -> Result<Self, ChainError> {
        let mut chain = Blockchain::new(params);
        let first = blocks.first().ok_or(ChainError::Empty)?;
        let genesis_hash = chain.genesis().hash;
        if first.hash != genesis_hash || first != chain.genesis() {
            return Err(ChainError::WrongGenesis {
                expected: genesis_hash,
                got: first.hash,
            });
        }
        let checked = check_all(&blocks[1..]);
        chain.blocks.reserve(blocks.len());
        chain.times.reserve(blocks.len());
        chain.by_hash.reserve(blocks.len());
        for (block, c) in blocks.into_iter().skip(1).zip(checked) {
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
        self.by_hash.get(hash).copied()
    }

    /// Returns the work of the blocks above `height`.
    pub fn work_above(&self, height: u64) -> u128 {
        self.blocks
            .iter()
            .skip(height as usize + 1)
            .map(Block::work)
            .sum()
    }

    /// Returns the difficulty the rules expect for the block after the tip.
    pub fn next_difficulty(&self) -> u32 {
        self.expected_difficulty(self.blocks.len() as u64)
    }

    /// Returns the difficulty the rules expect at `height` (which must be at most len).
    fn expected_difficulty(&self, height: u64) -> u32 {
        let parent = &self.blocks[height as usize - 1];
        let Some(rule) = self.params.retarget else {
            return self.params.difficulty;
        };
        if rule.interval < 2 || !height.is_multiple_of(rule.interval) {
            return parent.difficulty;
        }
        // The span runs between the interval's own blocks, never from genesis.
        let first = (height - rule.interval).max(1) as usize;
        let last = height as usize - 1;
        if last <= first {
            return parent.difficulty;
        }
        let actual = (self.times[last] - self.times[first]).max(1) as u128;
        let expected = ((last - first) as u128 * u128::from(rule.target_secs)).max(1);
        let shift = retarget_shift(expected, actual);
        (i64::from(parent.difficulty) + shift).clamp(0, i64::from(MAX_DIFFICULTY)) as u32
    }

    /// Returns the median time of the last [`MEDIAN_SPAN`] blocks, the earliest next timestamp.
    pub fn median_time_past(&self) -> i64 {
        let start = self.times.len().saturating_sub(MEDIAN_SPAN);
        let mut recent = [0i64; MEDIAN_SPAN];
        let recent = &mut recent[..self.times.len() - start];
        recent.copy_from_slice(&self.times[start..]);
        recent.sort_unstable();
        recent[recent.len() / 2]
    }

    /// Returns what a miner needs to extend the tip with `data`.
    pub fn template(&self, data: crate::block::BlockData) -> Template {
        Template {
            index: self.height() + 1,
            prev_hash: self.tip().hash.to_hex(),
            difficulty: self.next_difficulty(),
            data,
            min_time: self.median_time_past(),
        }
    }

    /// Checks that `block` may extend the tip, without changing anything.
    pub fn check_next(&self, block: &Block) -> Result<(), BlockError> {
        self.check_next_at(block, &check_one(block), chrono::Utc::now().timestamp())
    }

    fn check_next_at(&self, block: &Block, c: &Checked, now: i64) -> Result<(), BlockError> {
        let index = block.index;
        check_link(&self.params, self.tip(), block, c)?;
        let expected = self.expected_difficulty(index);
        if block.difficulty != expected {
            return Err(BlockError::BadDifficulty {
                index,
                expected,
                got: block.difficulty,
            });
        }
        let time = check_work_and_time(block, c)?;
        let timestamp = || block.timestamp.chars().take(40).collect::<String>();
        if time < self.median_time_past() {
            return Err(BlockError::TimestampTooOld {
                index,
                timestamp: timestamp(),
            });
        }
        if time > now + MAX_FUTURE_SECS {
            return Err(BlockError::TimestampTooFarAhead {
                index,
                timestamp: timestamp(),
            });
        }
        Ok(())
    }

    /// Appends `block` if it follows every rule on top of the tip; the only way a block gets in.
    pub fn push(&mut self, block: Block) -> Result<(), BlockError> {
        let c = check_one(&block);
        self.push_checked(block, c, chrono::Utc::now().timestamp())
    }

    fn push_checked(&mut self, block: Block, c: Checked, now: i64) -> Result<(), BlockError> {
        self.check_next_at(&block, &c, now)?;
        self.append_unchecked(block, c.time.unwrap_or(0));
        Ok(())
    }

    fn append_unchecked(&mut self, block: Block, time: i64) {
        self.work += block.work();
        self.times.push(time);
        self.by_hash.insert(block.hash, block.index);
        self.blocks.push_back(block);
    }

    /// Removes and returns every block above `height`.
    fn truncate(&mut self, height: u64) -> Vec<Block> {
        let keep = (height as usize + 1).min(self.blocks.len());
        let removed: Vec<Block> = self.blocks.drain(keep..).collect();
        self.times.truncate(keep);
        for b in &removed {
            self.work -= b.work();
            self.by_hash.remove(&b.hash);
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
        let Some(start) = locator.iter().find_map(|h| self.height_of(h)) else {
            return Vec::new();
        };
        self.blocks
            .iter()
            .skip(start as usize + 1)
            .take(limit)
            .cloned()
            .collect()
    }

    /// Replaces the blocks above `fork` with `blocks` if the result is valid and has more
    /// work; returns the blocks left behind. On error the chain is unchanged.
    pub fn replace_from(
        &mut self,
        fork: u64,
        blocks: Vec<Block>,
    ) -> Result<Vec<Block>, ChainError> {
        if fork > self.height() {
            return Err(ChainError::ForkAboveTip {
                fork,
                height: self.height(),
            });
        }
        let theirs =
            self.work - self.work_above(fork) + blocks.iter().map(Block::work).sum::<u128>();
        if theirs <= self.work {
            return Err(ChainError::NotMoreWork {
                ours: self.work,
                theirs,
            });
        }
        let removed = self.truncate(fork);
        let checked = check_all(&blocks);
        let now = chrono::Utc::now().timestamp();
        for (block, c) in blocks.into_iter().zip(checked) {
            if let Err(e) = self.push_checked(block, c, now) {
                self.rewind(fork, removed);
                return Err(e.into());
            }
        }
        Ok(removed)
    }

    /// Undoes a replacement: drops the blocks above `fork` and puts back `restore`, blocks
    /// that were validated on this very prefix before.
    pub(crate) fn rewind(&mut self, fork: u64, restore: Vec<Block>) {
        self.truncate(fork);
        for b in restore {
            let t = parse_timestamp(&b.timestamp).unwrap_or(0);
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

    /// Returns a copy of the blocks from `height` on.
    pub fn blocks_from(&self, height: u64) -> Vec<Block> {
        self.blocks.iter().skip(height as usize).cloned().collect()
    }
}

/// Checks what can be checked of `blocks`, a branch on top of `parent`, without the chain
/// below it: links, indices, hashes, proof of work, sizes, timestamps that parse, and
/// difficulties that follow the rule's shape (the network's difficulty without retargeting;
/// with it, the parent's except at interval boundaries, where it moves by at most 2 bits).
/// Returns the branch's work. Used to refuse a bad branch while it is still being fetched.
pub fn check_branch(
    params: &ChainParams,
    parent: &Block,
    blocks: &[Block],
) -> Result<u128, BlockError> {
    let checked = check_all(blocks);
    let mut prev = parent;
    let mut work = 0u128;
    for (block, c) in blocks.iter().zip(checked) {
        let index = block.index;
        check_link(params, prev, block, &c)?;
        let allowed = match params.retarget {
            None => block.difficulty == params.difficulty,
            Some(r) if r.interval >= 2 && index.is_multiple_of(r.interval) => {
                (i64::from(block.difficulty) - i64::from(prev.difficulty)).abs()
                    <= MAX_RETARGET_BITS
            }
            Some(_) => block.difficulty == prev.difficulty,
        };
        if !allowed {
            let expected = if params.retarget.is_none() {
                params.difficulty
            } else {
                prev.difficulty
            };
            return Err(BlockError::BadDifficulty {
                index,
                expected,
                got: block.difficulty,
            });
        }
        check_work_and_time(block, &c)?;
        work += block.work();
        prev = block;
    }
    Ok(work)
}

/// Checks what a block owes its parent alone: index, size, link, and its claimed hash.
fn check_link(
    params: &ChainParams,
    parent: &Block,
    block: &Block,
    c: &Checked,
) -> Result<(), BlockError> {
    let index = block.index;
    if index != parent.index + 1 {
        return Err(BlockError::BadIndex {
            expected: parent.index + 1,
            got: index,
        });
    }
    if block.nonce > pow::MAX_NONCE {
        return Err(BlockError::NonceTooLarge {
            index,
            nonce: block.nonce,
        });
    }
    if c.size >= params.max_block_size {
        return Err(BlockError::BlockTooLarge {
            index,
            size: c.size,
            max: params.max_block_size,
        });
    }
    if !links_to(&block.prev_hash, &parent.hash) {
        return Err(BlockError::BadPrevHash {
            index,
            expected: parent.hash.to_hex(),
            got: block.prev_hash.chars().take(64).collect(),
        });
    }
    if block.hash != c.hash {
        return Err(BlockError::BadHash {
            index,
            claimed: block.hash,
            computed: c.hash,
        });
    }
    Ok(())
}

/// Checks that the hash meets the block's own difficulty and that its timestamp parses;
/// returns the time.
fn check_work_and_time(block: &Block, c: &Checked) -> Result<i64, BlockError> {
    let index = block.index;
    let zeros = c.hash.leading_zero_bits();
    if zeros < block.difficulty {
        return Err(BlockError::BadProofOfWork {
            index,
            difficulty: block.difficulty,
            zeros,
        });
    }
    c.time.ok_or_else(|| BlockError::BadTimestamp {
        index,
        timestamp: block.timestamp.chars().take(40).collect(),
    })
}

/// Mines one block with `data` on top of `chain` (a helper for tests, tools and benches).
pub fn mine_next(chain: &Blockchain, data: crate::block::BlockData, threads: usize) -> Block {
    let control = pow::MineControl::default();
    pow::mine(&chain.template(data), threads, &control).unwrap_or_else(|| chain.tip().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockData;
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

    fn remine(block: &mut Block) {
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
        remine(&mut wrong[5]);
        assert!(matches!(
            Blockchain::from_blocks(c.params().clone(), wrong),
            Err(ChainError::Block(BlockError::BadDifficulty {
                index: 5,
                expected: 4,
                got: 2
            }))
        ));
    }

    /// The retarget shift is computed in integers and pins the boundaries: sqrt(2) and
    /// sqrt(8) up, 1/sqrt(2) and 1/sqrt(8) down, the clamp, and enormous spans.
    #[test]
    fn retarget_shift_pins_its_boundaries() {
        assert_eq!(retarget_shift(1000, 1000), 0);
        assert_eq!(retarget_shift(1414, 1000), 0); // 1.414 < sqrt(2)
        assert_eq!(retarget_shift(1415, 1000), 1);
        assert_eq!(retarget_shift(2828, 1000), 1); // 2.828 < sqrt(8)
        assert_eq!(retarget_shift(2829, 1000), 2);
        assert_eq!(retarget_shift(1_000_000, 1), 2);
        assert_eq!(retarget_shift(1000, 1414), 0); // 1/1.414 > 1/sqrt(2)
        assert_eq!(retarget_shift(1000, 1415), -1);
        assert_eq!(retarget_shift(1000, 2828), -1);
        assert_eq!(retarget_shift(1000, 2829), -2);
        assert_eq!(retarget_shift(1, u128::from(u64::MAX)), -2);
        assert_eq!(retarget_shift(0, 0), 0);
        // Pell convergents of sqrt(2): 3363/2378 is just above it, 8119/5741 just below.
        assert_eq!(retarget_shift(3363, 2378), 1);
        assert_eq!(retarget_shift(8119, 5741), 0);
        let huge = u128::from(u64::MAX) * u128::from(u64::MAX);
        assert_eq!(retarget_shift(huge, huge / 2), 1);
        assert_eq!(retarget_shift(huge / 2, huge), -1);
    }

    proptest! {
        /// For everyday spans the integer rule agrees with round(log2(E / A)) clamped.
        #[test]
        fn retarget_shift_matches_the_real_logarithm(e in 1u64..10_000_000, a in 1u64..10_000_000) {
            let float = ((e as f64 / a as f64).log2().round() as i64).clamp(-2, 2);
            prop_assert_eq!(retarget_shift(u128::from(e), u128::from(a)), float);
        }
    }

    /// A panic while hashing one share of a long chain reaches the caller instead of
    /// leaving the results short and misaligned.
    #[test]
    fn a_panic_in_a_validation_thread_is_propagated() {
        let blocks = vec![
            Blockchain::new(ChainParams::with_difficulty(0))
                .tip()
                .clone();
            4096
        ];
        let ok = check_all_with(&blocks, 2, |b| b.index);
        assert_eq!(ok.len(), 4096);
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_all_with(&blocks, 2, |_| {
                // One call panics, in whichever thread makes it.
                if counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 3000 {
                    panic!("hashing failed");
                }
            })
        }));
        assert!(result.is_err());
    }

    /// A timestamp more than two hours ahead is refused.
    #[test]
    fn far_future_timestamp_is_refused() {
        let c = Blockchain::new(ChainParams::with_difficulty(0));
        let mut b = mine_next(&c, BlockData::empty(), 1);
        b.timestamp = pow::format_timestamp(chrono::Utc::now().timestamp() + 3 * 3600);
        remine(&mut b);
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
        forged[0].prev_hash = chain.genesis().hash.to_hex();
        remine(&mut forged[0]);
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
        b.nonce = pow::MAX_NONCE;
        b.hash = b.compute_hash();
        assert_eq!(c.check_next(&b), Ok(()));
        b.nonce = pow::MAX_NONCE + 1;
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
        assert_eq!(b.serialized_size(), b.preimage().len() + 74);
    }

    fn chain_with_spacing(params: &ChainParams, n: usize, spacing: i64) -> Blockchain {
        let mut c = Blockchain::new(params.clone());
        for i in 0..n {
            let t = c.template(BlockData::new(&json!(i)));
            let mut b = Block {
                index: t.index,
                timestamp: pow::format_timestamp(946_684_800 + i as i64 * spacing),
                nonce: 0,
                difficulty: t.difficulty,
                prev_hash: t.prev_hash,
                hash: BlockHash::default(),
                data: t.data,
            };
            remine(&mut b);
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
                Tamper::PrevHash => { b.prev_hash = "ff".repeat(32); |e| matches!(e, ChainError::Block(BlockError::BadPrevHash { .. })) }
                Tamper::Hash => { b.hash.0[31] ^= 1; |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::Data => { b.data = BlockData::new(&json!({"evil": true})); |e| matches!(e, ChainError::Block(BlockError::BadHash { .. })) }
                Tamper::Swap => { blocks.swap(at, at + 1); |e| matches!(e, ChainError::Block(BlockError::BadIndex { .. })) }
            };
            let err = Blockchain::from_blocks(chain.params().clone(), blocks).unwrap_err();
            prop_assert!(expect(&err), "unexpected error {err}");
        }

        /// Re-mined tampering is still caught by the rule behind the hash.
        #[test]
        fn remined_change_is_caught_by_its_rule(n in 3usize..8, at in 1usize..8, bump in 1u32..3) {
            let chain = chain_of(ChainParams::with_difficulty(4), n);
            let at = at.min(n);
            let mut blocks = chain.to_vec();
            blocks[at].difficulty += bump;
            remine(&mut blocks[at]);
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
