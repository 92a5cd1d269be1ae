//! The consensus rules: what every block after genesis must satisfy, checked against the
//! chain below it (any [`History`]), or for a branch still being fetched, against its
//! parent alone ([`check_branch`]).

use crate::block::{Block, BlockHash, MAX_DIFFICULTY, MAX_NONCE, hash_preimage};
use crate::params::{ChainParams, MAX_FUTURE_SECS, MAX_RETARGET_BITS, MEDIAN_SPAN};

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
    /// The block is not smaller than the size cap.
    #[error(
        "block {index} is {size} bytes of JSON; a block must be smaller than {max} bytes (the size cap)"
    )]
    BlockTooLarge { index: u64, size: usize, max: usize },
    /// The nonce is above 2^53 − 1, which JSON readers cannot all read exactly.
    #[error(
        "block {index} has nonce {nonce}, above the largest allowed nonce {} (2^53 - 1)",
        MAX_NONCE
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

/// What the rules need of the chain below the next block: its tip and recent timestamps.
///
/// Implemented by the whole chain and by a short window over a chain with a branch on top,
/// so that a branch is checked off the chain's lock with the very same rules.
pub trait History {
    /// The rules.
    fn params(&self) -> &ChainParams;
    /// The block the next one extends.
    fn tip(&self) -> &Block;
    /// The timestamp (Unix seconds) of the block at `height`; asked only for the last
    /// [`MEDIAN_SPAN`] blocks and the current retarget interval.
    fn time_at(&self, height: u64) -> i64;
}

/// Returns how many blocks back of the tip the rules look: what a [`History`] must hold.
pub(crate) fn lookback(params: &ChainParams) -> u64 {
    let interval = params.retarget.map_or(0, |r| r.interval);
    (MEDIAN_SPAN as u64).max(interval + 1)
}

/// Returns the difficulty the rules expect for the block after the tip of `h`.
pub(crate) fn expected_difficulty(h: &impl History) -> u32 {
    let params = h.params();
    let parent = h.tip();
    let height = parent.index + 1;
    let Some(rule) = params.retarget else {
        return params.difficulty;
    };
    if rule.interval < 2 || !height.is_multiple_of(rule.interval) {
        return parent.difficulty;
    }
    // The span runs between the interval's own blocks, never from genesis.
    let first = (height - rule.interval).max(1);
    let last = height - 1;
    if last <= first {
        return parent.difficulty;
    }
    let actual = (h.time_at(last) - h.time_at(first)).max(1) as u128;
    let expected = (u128::from(last - first) * u128::from(rule.target_secs)).max(1);
    let shift = retarget_shift(expected, actual);
    (i64::from(parent.difficulty) + shift).clamp(0, i64::from(MAX_DIFFICULTY)) as u32
}

/// Returns the median time of the last [`MEDIAN_SPAN`] blocks of `h` (genesis counts; the
/// upper middle of an even count), the earliest timestamp the next block may have.
pub(crate) fn median_time_past(h: &impl History) -> i64 {
    let top = h.tip().index;
    let count = (top + 1).min(MEDIAN_SPAN as u64) as usize;
    let mut recent = [0i64; MEDIAN_SPAN];
    let recent = &mut recent[..count];
    for (i, t) in recent.iter_mut().enumerate() {
        *t = h.time_at(top + 1 - count as u64 + i as u64);
    }
    recent.sort_unstable();
    recent[recent.len() / 2]
}

/// Checks that `block` (hashed into `c`) may extend the tip of `h`, judging future
/// timestamps against `now`; returns its time.
pub fn check_next(
    h: &impl History,
    block: &Block,
    c: &Checked,
    now: i64,
) -> Result<i64, BlockError> {
    let index = block.index;
    check_link(h.params(), h.tip(), block, c)?;
    let expected = expected_difficulty(h);
    if block.difficulty != expected {
        return Err(BlockError::BadDifficulty {
            index,
            expected,
            got: block.difficulty,
        });
    }
    let time = check_work_and_time(block, c)?;
    let timestamp = || {
        block
            .timestamp
            .to_string()
            .chars()
            .take(40)
            .collect::<String>()
    };
    if time < median_time_past(h) {
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
    Ok(time)
}

/// Returns round(log2(expected / actual)) clamped to ±[`MAX_RETARGET_BITS`], in integers
/// only: consensus must not depend on floating point.
///
/// The ratio is never exactly 2^(n + 1/2) (irrational), so rounding has no ties, and
/// round(log2 r) >= n exactly when r^2 >= 2^(2n - 1): shift >= 1 iff E^2 >= 2 A^2,
/// shift >= 2 iff E^2 >= 8 A^2, and symmetrically downwards.
pub(crate) fn retarget_shift(expected: u128, actual: u128) -> i64 {
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

/// What the hashing pass learns of a block, computed in parallel for long chains.
#[derive(Default)]
pub struct Checked {
    /// The recomputed hash.
    pub hash: BlockHash,
    /// The timestamp in Unix seconds, if it parses.
    pub time: Option<i64>,
    /// The length of the block's compact JSON form.
    pub size: usize,
}

pub(crate) fn check_one(block: &Block) -> Checked {
    check_with(block, &mut String::new())
}

/// [`check_one`] writing the preimage into `buf`, so a long run allocates it once.
pub(crate) fn check_with(block: &Block, buf: &mut String) -> Checked {
    let size = block.json_len(buf);
    let hash = hash_preimage(buf.as_bytes());
    Checked {
        hash,
        time: block.timestamp.unix(),
        size,
    }
}

pub(crate) fn check_all(blocks: &[Block]) -> Vec<Checked> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    check_all_with(blocks, threads, check_with)
}

/// Runs `check` over `blocks` on up to `threads` threads, results in block order; each
/// thread lends `check` one scratch buffer. A panic in any thread is propagated: a missing
/// result would misalign the rest.
fn check_all_with<T: Send>(
    blocks: &[Block],
    threads: usize,
    check: impl Fn(&Block, &mut String) -> T + Sync,
) -> Vec<T> {
    let run = |part: &[Block]| {
        let mut buf = String::with_capacity(512);
        part.iter().map(|b| check(b, &mut buf)).collect::<Vec<_>>()
    };
    if blocks.len() < 2048 || threads < 2 {
        return run(blocks);
    }
    let per = blocks.len().div_ceil(threads);
    let run = &run;
    std::thread::scope(|s| {
        let handles: Vec<_> = blocks
            .chunks(per)
            .map(|part| s.spawn(move || run(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// Checks what can be checked of `blocks`, a branch on top of `parent`, without the chain
/// below it: links, indices, hashes, proof of work, sizes, timestamps that parse, and
/// difficulties that follow the rule's shape (the network's difficulty without retargeting;
/// with it, the parent's except at interval boundaries, where it moves by at most 2 bits).
/// Returns the branch's work. Used to refuse a bad branch while it is still being fetched.
pub(crate) fn check_branch(
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

/// Checks a block read back from the node's own store against its parent: index, size,
/// link, its hash recomputed (`c`) against the stored one, and its proof of work; returns its
/// time. The rules that need the chain's history (difficulty, timestamp order) were checked
/// when the block was stored, and are checked again only by a full re-validation.
pub(crate) fn check_stored(
    params: &ChainParams,
    parent: &Block,
    block: &Block,
    c: &Checked,
) -> Result<i64, BlockError> {
    check_link(params, parent, block, c)?;
    check_work_and_time(block, c)
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
    if block.nonce > MAX_NONCE {
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
    if !block.prev_hash.is(&parent.hash) {
        return Err(BlockError::BadPrevHash {
            index,
            expected: parent.hash.to_hex(),
            got: block.prev_hash.to_string(),
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
        timestamp: block.timestamp.to_string().chars().take(40).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
        let blocks = vec![ChainParams::with_difficulty(0).genesis(); 4096];
        let ok = check_all_with(&blocks, 2, |b, _| b.index);
        assert_eq!(ok.len(), 4096);
        let counter = std::sync::atomic::AtomicUsize::new(0);
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_all_with(&blocks, 2, |_, _| {
                // One call panics, in whichever thread makes it.
                if counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) == 3000 {
                    panic!("hashing failed");
                }
            })
        }));
        assert!(result.is_err());
    }
}
