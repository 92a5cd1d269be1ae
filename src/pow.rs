//! Proof of work: difficulty and work, and the midstate multi-threaded miner.
//!
//! The preimage is `prefix + nonce digits + "}"`. The miner hashes the prefix's full 64-byte
//! blocks once (the midstate) and arranges the nonce so that an attempt costs one SHA-256
//! compression wherever the digits allow it:
//!
//! ```text
//!  tail:   | midstate blocks ... | rest of prefix, H, VVVVVV, '}', pad, len         |
//!  split:  | midstate blocks ... | rest of prefix, H (completes block)              |
//!                                | VVVVVV, '}', pad, len                            |
//!  spill:  | midstate blocks ... | rest of prefix, H, VVVVVV, '}'?  | pad, len      |
//! ```
//!
//! The nonce is `H * 10^V + v`: the V low digits `v` vary on every attempt, in place, inside
//! the last block; the high digits `H` change once per 10^V attempts. In the split layout, H
//! completes the block that holds the end of the prefix, so it joins the midstate.
//!
//! A nonce is at most [`MAX_NONCE`] (2^53 − 1, exact in every JSON reader), so it has at
//! most 15 digits. Where the prefix leaves 5 to 14 bytes in its last block, the tail holds
//! fewer digits than that (a smaller range per timestamp) and no split fits; when that range
//! is spent within one second, the miner goes on with the spill layout, whose padding
//! spills into a constant second block: two compressions per attempt.
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::compress256;
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

/// One 64-byte SHA-256 message block, in the type `compress256` takes (no copy per attempt).
type MessageBlock = GenericArray<u8, U64>;

use crate::block::{Block, BlockData, BlockHash, PrevHash, Timestamp};

use crate::block::{MAX_DIFFICULTY, MAX_NONCE};

/// Tells whether `hash` has at least `difficulty` leading zero bits.
pub(crate) fn meets_difficulty(hash: &BlockHash, difficulty: u32) -> bool {
    hash.leading_zero_bits() >= difficulty
}

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Every 15-digit number is below [`MAX_NONCE`]; 16 digits may not be.
const MAX_NONCE_DIGITS: usize = 15;
/// Fewest digits the tail layout is used with (a range of 90,000 nonces).
const MIN_TAIL_DIGITS: usize = 5;
/// Most layouts one prefix length has (tail, split, spill).
pub const MAX_STAGES: usize = 3;
/// Attempts between two looks at the cancel flag.
const CHUNK: u64 = 4096;

fn compress(state: &mut [u32; 8], block: &MessageBlock) {
    compress256(state, std::slice::from_ref(block));
}

/// Where the nonce digits go for one prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The whole nonce shares the last block with the end of the prefix.
    Tail {
        /// Digits changed once per range of low digits.
        high_digits: usize,
        /// Digits changed on every attempt.
        low_digits: usize,
    },
    /// The high digits complete the prefix's last block; the low digits start a new one.
    Split {
        /// Digits that complete the prefix's block.
        high_digits: usize,
        /// Digits changed on every attempt.
        low_digits: usize,
    },
    /// The nonce shares the prefix's last block; `}` or the padding spills into a second,
    /// constant block, so an attempt costs two compressions.
    Spill {
        /// Digits changed once per range of low digits.
        high_digits: usize,
        /// Digits changed on every attempt.
        low_digits: usize,
    },
}

impl Layout {
    /// Returns layout number `stage` for a prefix whose last partial block holds `rem`
    /// bytes, in the order the miner uses them within one timestamp: one compression per
    /// attempt first, two only when the one-compression ranges are spent.
    ///
    /// One block holds 64 bytes, of which `}`, the 0x80 pad byte and the 8-byte length
    /// take 10, so the nonce fits beside the prefix while `rem + digits <= 54`.
    pub(crate) fn for_remainder(rem: usize, stage: usize) -> Option<Layout> {
        let mut layouts = [None; MAX_STAGES];
        let mut n = 0;
        let tail_digits = 54usize.saturating_sub(rem).min(MAX_NONCE_DIGITS);
        if tail_digits >= MIN_TAIL_DIGITS {
            let low = (tail_digits - 2).min(9);
            layouts[n] = Some(Layout::Tail {
                high_digits: tail_digits - low,
                low_digits: low,
            });
            n += 1;
        }
        let split_high = 64 - rem;
        if rem > 0 && split_high < MAX_NONCE_DIGITS {
            layouts[n] = Some(Layout::Split {
                high_digits: split_high,
                low_digits: (MAX_NONCE_DIGITS - split_high).min(9),
            });
            n += 1;
        }
        if tail_digits < MAX_NONCE_DIGITS && rem + MAX_NONCE_DIGITS <= 64 {
            layouts[n] = Some(Layout::Spill {
                high_digits: MAX_NONCE_DIGITS - 9,
                low_digits: 9,
            });
        }
        layouts.get(stage).copied().flatten()
    }

    /// Returns the number of (high, low) digits.
    pub fn digits(self) -> (usize, usize) {
        match self {
            Layout::Tail {
                high_digits,
                low_digits,
            }
            | Layout::Split {
                high_digits,
                low_digits,
            }
            | Layout::Spill {
                high_digits,
                low_digits,
            } => (high_digits, low_digits),
        }
    }
}

/// What one call to [`NonceSearch::run`] ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchStep {
    /// This nonce meets the difficulty.
    Found(u64),
    /// The budget was spent without success; call again.
    Continue,
    /// Every nonce of this layout's range was tried: go on with the next stage, or a new
    /// prefix (new timestamp).
    Exhausted,
}

/// A nonce search over one preimage prefix, one share of the nonce space of `threads`.
#[derive(Debug, Clone)]
pub struct NonceSearch {
    layout: Layout,
    base: [u32; 8],
    prefix_tail: Vec<u8>,
    state: [u32; 8],
    /// Two last blocks whose low digits differ by one, hashed in turn and each stepped by
    /// two: a block is written a whole compression before it is read again, which spares
    /// the store-to-load stall of reading just-written digits.
    blocks: [MessageBlock; 2],
    /// The constant block after the digits in the spill layout.
    spill: MessageBlock,
    /// A second hit found in the same pair, returned by the next call.
    held: Option<u64>,
    low_at: usize,
    low_pow: u64,
    low: u64,
    high: u64,
    high_end: u64,
    high_step: u64,
    zero_bits: u32,
    total_len: usize,
    started: bool,
}

impl NonceSearch {
    /// Prepares a search of `prefix` for `difficulty` bits, as share `thread` of `threads`,
    /// with layout number `stage` of this prefix length (see [`Layout::for_remainder`]).
    /// Returns `None` when there is no such layout, or it leaves this thread no share.
    pub fn new(
        prefix: &[u8],
        difficulty: u32,
        thread: u64,
        threads: u64,
        stage: usize,
    ) -> Option<Self> {
        let full = prefix.len() / 64 * 64;
        let rem = prefix.len() - full;
        let layout = Layout::for_remainder(rem, stage)?;
        let mut base = IV;
        for chunk in prefix[..full].chunks_exact(64) {
            compress(&mut base, MessageBlock::from_slice(chunk));
        }
        let (high_digits, low_digits) = layout.digits();
        let high_start = 10u64.pow(high_digits as u32 - 1);
        let mut search = NonceSearch {
            layout,
            base,
            prefix_tail: prefix[full..].to_vec(),
            state: base,
            blocks: [MessageBlock::default(), MessageBlock::default()],
            spill: MessageBlock::default(),
            held: None,
            low_at: 0,
            low_pow: 10u64.pow(low_digits as u32),
            low: 0,
            high: high_start + thread,
            high_end: high_start * 10,
            high_step: threads.max(1),
            zero_bits: difficulty.min(MAX_DIFFICULTY),
            total_len: prefix.len() + high_digits + low_digits + 1,
            started: false,
        };
        if search.high >= search.high_end {
            return None;
        }
        search.load_high();
        Some(search)
    }

    /// Returns the layout this search uses.
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Rebuilds the state and the last block(s) for the current high digits.
    fn load_high(&mut self) {
        let (high_digits, low_digits) = self.layout.digits();
        // The message from the end of the midstate on: up to two blocks.
        let mut buf = [0u8; 128];
        let tail = &self.prefix_tail;
        let mut at = tail.len();
        buf[..at].copy_from_slice(tail);
        write_digits(&mut buf[at..at + high_digits], self.high);
        at += high_digits;
        self.state = self.base;
        if let Layout::Split { .. } = self.layout {
            compress(&mut self.state, MessageBlock::from_slice(&buf[..64]));
            buf.copy_within(64..128, 0);
            at -= 64;
        }
        self.low_at = at;
        buf[at..at + low_digits].fill(b'0');
        at += low_digits;
        buf[at] = b'}';
        buf[at + 1] = 0x80;
        let end = if let Layout::Spill { .. } = self.layout {
            128
        } else {
            64
        };
        buf[end - 8..end].copy_from_slice(&((self.total_len as u64) * 8).to_be_bytes());
        let block = *MessageBlock::from_slice(&buf[..64]);
        self.spill = *MessageBlock::from_slice(&buf[64..]);
        self.blocks = [block, block];
        step(
            &mut self.blocks[1],
            self.low_at,
            self.low_at + low_digits,
            1,
        );
        self.low = 0;
    }

    /// Returns the nonce the next attempt will try.
    pub fn nonce(&self) -> u64 {
        self.high * self.low_pow + self.low
    }

    /// Tries about `budget` nonces (pairs at a time); `tried` is increased by the attempts
    /// made.
    #[inline]
    pub fn run(&mut self, budget: u64, tried: &mut u64) -> SearchStep {
        match self.layout {
            Layout::Spill { .. } => self.run_with::<true>(budget, tried),
            _ => self.run_with::<false>(budget, tried),
        }
    }

    /// The search loop; `SPILL` adds the constant second block to every attempt, and is a
    /// constant so that the one-compression layouts pay nothing for it.
    #[inline]
    fn run_with<const SPILL: bool>(&mut self, budget: u64, tried: &mut u64) -> SearchStep {
        if let Some(nonce) = self.held.take() {
            return SearchStep::Found(nonce);
        }
        let (_, low_digits) = self.layout.digits();
        let (lo, hi) = (self.low_at, self.low_at + low_digits);
        let mut left = budget.max(2);
        loop {
            if self.started && self.low == 0 {
                // The low digits wrapped: move to the next share of high digits.
                self.high += self.high_step;
                if self.high >= self.high_end {
                    return SearchStep::Exhausted;
                }
                self.load_high();
            }
            self.started = true;
            while left >= 2 {
                left -= 2;
                *tried += 2;
                let mut s0 = self.state;
                compress(&mut s0, &self.blocks[0]);
                let mut s1 = self.state;
                compress(&mut s1, &self.blocks[1]);
                if SPILL {
                    compress(&mut s0, &self.spill);
                    compress(&mut s1, &self.spill);
                }
                let top0 = (u64::from(s0[0]) << 32) | u64::from(s0[1]);
                let top1 = (u64::from(s1[0]) << 32) | u64::from(s1[1]);
                let hit0 = top0.leading_zeros() >= self.zero_bits;
                let hit1 = top1.leading_zeros() >= self.zero_bits;
                let nonce = self.nonce();
                let wrapped = self.advance(lo, hi);
                if hit0 || hit1 {
                    if hit0 && hit1 {
                        self.held = Some(nonce + 1);
                    }
                    return SearchStep::Found(if hit0 { nonce } else { nonce + 1 });
                }
                if wrapped {
                    break;
                }
            }
            if left < 2 {
                return SearchStep::Continue;
            }
        }
    }

    /// Steps both blocks' low digits by two, in place; returns true when they wrap to zero.
    #[inline]
    fn advance(&mut self, lo: usize, hi: usize) -> bool {
        self.low += 2;
        if self.low >= self.low_pow {
            self.low = 0;
            return true;
        }
        step(&mut self.blocks[0], lo, hi, 2);
        step(&mut self.blocks[1], lo, hi, 2);
        false
    }
}

/// Adds `by` (at most 9) to the decimal digits `block[lo..hi]`, carrying leftwards.
#[inline]
fn step(block: &mut MessageBlock, lo: usize, hi: usize, by: u8) {
    let mut i = hi - 1;
    block[i] += by;
    while block[i] > b'9' {
        block[i] -= 10;
        if i == lo {
            return;
        }
        i -= 1;
        block[i] += 1;
    }
}

/// Writes `value` as decimal digits filling `out` (zero-padded on the left).
fn write_digits(out: &mut [u8], mut value: u64) {
    for d in out.iter_mut().rev() {
        *d = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// What to mine: everything of the block but its timestamp and nonce.
#[derive(Debug, Clone)]
pub struct Template {
    /// Height of the block to mine.
    pub index: u64,
    /// Hash of the tip it extends.
    pub prev_hash: PrevHash,
    /// Difficulty the chain expects at this height.
    pub difficulty: u32,
    /// The user data.
    pub data: BlockData,
    /// Earliest allowed timestamp (Unix seconds): the median time of the previous blocks.
    pub min_time: i64,
}

/// Shared handles of a mining run: its cancel flag and attempt counter.
#[derive(Debug, Default)]
pub struct MineControl {
    /// Set to stop every mining thread soon (checked every few thousand attempts).
    pub cancel: AtomicBool,
    /// Attempts made so far, for a hash rate.
    pub attempts: AtomicU64,
}

/// Mines `template` on `threads` threads until a block meets its difficulty or `control`
/// is cancelled (then `None`). The timestamp is refreshed whenever a nonce range runs out.
pub fn mine(template: &Template, threads: usize, control: &MineControl) -> Option<Block> {
    mine_with_clock(template, threads, control, crate::block::unix_now)
}

/// [`mine`] with timestamps from `clock` (Unix seconds). One thread searches on the
/// calling thread; more run on threads of their own.
pub fn mine_with_clock(
    template: &Template,
    threads: usize,
    control: &MineControl,
    clock: fn() -> i64,
) -> Option<Block> {
    let threads = threads.max(1) as u64;
    if threads == 1 {
        return mine_share(template, 0, 1, control, &AtomicBool::new(false), clock);
    }
    let found: Mutex<Option<Block>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (found, done) = (&found, &done);
            scope.spawn(move || {
                if let Some(block) = mine_share(template, thread, threads, control, done, clock) {
                    done.store(true, Ordering::Relaxed);
                    let mut slot = found.lock().unwrap_or_else(|e| e.into_inner());
                    slot.get_or_insert(block);
                }
            });
        }
    });
    found.into_inner().unwrap_or_else(|e| e.into_inner())
}

fn mine_share(
    template: &Template,
    thread: u64,
    threads: u64,
    control: &MineControl,
    done: &AtomicBool,
    clock: fn() -> i64,
) -> Option<Block> {
    let mut last_second = None;
    let mut stage = 0;
    loop {
        if stopped(control, done) {
            return None;
        }
        let second = clock().max(template.min_time);
        if last_second != Some(second) {
            stage = 0;
            last_second = Some(second);
        }
        if stage >= MAX_STAGES {
            // Every layout of this second is spent: wait for the clock to move.
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let mut block = Block {
            index: template.index,
            timestamp: Timestamp::from_unix(second),
            nonce: 0,
            difficulty: template.difficulty,
            prev_hash: template.prev_hash,
            hash: BlockHash::default(),
            data: template.data.clone(),
        };
        let prefix = block.preimage_prefix();
        let search = NonceSearch::new(
            prefix.as_bytes(),
            template.difficulty,
            thread,
            threads,
            stage,
        );
        stage += 1;
        let Some(mut search) = search else {
            continue;
        };
        loop {
            if stopped(control, done) {
                return None;
            }
            let mut tried = 0;
            let step = search.run(CHUNK, &mut tried);
            control.attempts.fetch_add(tried, Ordering::Relaxed);
            match step {
                SearchStep::Found(nonce) => {
                    block.nonce = nonce;
                    block.hash = block.compute_hash();
                    debug_assert!(meets_difficulty(&block.hash, block.difficulty));
                    debug_assert!(nonce <= MAX_NONCE);
                    return Some(block);
                }
                SearchStep::Continue => {}
                SearchStep::Exhausted => break,
            }
        }
    }
}

fn stopped(control: &MineControl, done: &AtomicBool) -> bool {
    control.cancel.load(Ordering::Relaxed) || done.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    fn prefix_of_len(len: usize) -> Vec<u8> {
        let mut p = b"{\"data\":\"".to_vec();
        while p.len() + 10 < len {
            p.push(b'x');
        }
        p.extend_from_slice(b"\",\"nonce\":");
        p.truncate(len.max(10));
        p
    }

    /// At every prefix offset the search hashes exactly what SHA-256 of the full preimage is.
    #[test]
    fn search_matches_plain_sha256_at_every_offset() {
        for len in 64..64 * 3 {
            let prefix = prefix_of_len(len);
            for stage in 0..MAX_STAGES {
                let Some(mut s) = NonceSearch::new(&prefix, 6, 0, 1, stage) else {
                    continue;
                };
                let mut tried = 0;
                let nonce = loop {
                    match s.run(1 << 20, &mut tried) {
                        SearchStep::Found(n) => break n,
                        SearchStep::Continue => {}
                        SearchStep::Exhausted => panic!("exhausted at len {len}"),
                    }
                };
                let mut full = prefix.clone();
                full.extend_from_slice(format!("{nonce}}}").as_bytes());
                let digest: [u8; 32] = Sha256::digest(&full).into();
                assert!(
                    BlockHash(digest).leading_zero_bits() >= 6,
                    "len {len} nonce {nonce}"
                );
            }
        }
    }

    /// Every prefix length has layouts whose nonces stay at most 2^53 − 1 and which
    /// together offer at least 9 * 10^9 nonces per timestamp, so the miner never waits for
    /// the clock below 9 GH/s.
    #[test]
    fn every_remainder_has_layouts_within_the_nonce_bound() {
        for rem in 0..64 {
            assert!(Layout::for_remainder(rem, 0).is_some(), "rem {rem}");
            let mut range = 0u64;
            for stage in 0..MAX_STAGES {
                let Some(layout) = Layout::for_remainder(rem, stage) else {
                    continue;
                };
                let (high, low) = layout.digits();
                assert!(10u64.pow((high + low) as u32) - 1 <= MAX_NONCE, "rem {rem}");
                range += 9 * 10u64.pow((high + low - 1) as u32);
            }
            assert!(range >= 9 * 10u64.pow(9), "rem {rem}: {range}");
        }
    }

    /// One compression per attempt wherever the digits allow it: the first layout of all
    /// but ten prefix remainders (40..=49, whose short tail range is followed by spill).
    #[test]
    fn spill_is_needed_only_after_short_tails() {
        for rem in 0..64 {
            let first = Layout::for_remainder(rem, 0).unwrap();
            assert!(!matches!(first, Layout::Spill { .. }), "rem {rem}");
            let spills = (0..MAX_STAGES)
                .any(|s| matches!(Layout::for_remainder(rem, s), Some(Layout::Spill { .. })));
            assert_eq!(spills, (40..=49).contains(&rem), "rem {rem}");
        }
    }

    /// A short tail range is searched exactly once, nonce by nonce, then reports exhausted.
    #[test]
    fn short_tail_range_is_searched_once() {
        let prefix = prefix_of_len(64 + 49);
        let mut s = NonceSearch::new(&prefix, 64, 0, 1, 0).unwrap();
        assert_eq!(
            s.layout(),
            Layout::Tail {
                high_digits: 2,
                low_digits: 3
            }
        );
        assert_eq!(s.nonce(), 10_000);
        let mut tried = 0;
        while s.run(4096, &mut tried) != SearchStep::Exhausted {}
        assert_eq!(tried, 90_000);
    }

    /// Difficulty 0 mines at once and the block's hash is the recomputed one.
    #[test]
    fn difficulty_zero_mines_at_once() {
        let t = Template {
            index: 1,
            prev_hash: BlockHash([0; 32]).into(),
            difficulty: 0,
            data: BlockData::empty(),
            min_time: 0,
        };
        let b = mine(&t, 2, &MineControl::default()).unwrap();
        assert_eq!(b.hash, b.compute_hash());
    }

    /// A cancelled run returns nothing.
    #[test]
    fn cancelled_run_returns_none() {
        let t = Template {
            index: 1,
            prev_hash: BlockHash([0; 32]).into(),
            difficulty: 64,
            data: BlockData::empty(),
            min_time: 0,
        };
        let c = MineControl::default();
        c.cancel.store(true, Ordering::Relaxed);
        assert!(mine(&t, 2, &c).is_none());
    }

    /// Mined blocks at a real difficulty meet it.
    #[test]
    fn mined_block_meets_difficulty() {
        let t = Template {
            index: 3,
            prev_hash: BlockHash([0xab; 32]).into(),
            difficulty: 12,
            data: BlockData::new(&serde_json::json!({"k": "v"})),
            min_time: 0,
        };
        let c = MineControl::default();
        let b = mine(&t, 2, &c).unwrap();
        assert!(meets_difficulty(&b.compute_hash(), 12));
        assert!(c.attempts.load(Ordering::Relaxed) > 0);
    }
}
