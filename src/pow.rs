//! Proof of work: difficulty and work, and the midstate multi-threaded miner.
//!
//! The preimage is `prefix + nonce digits + "}"`. The miner hashes the prefix's full 64-byte
//! blocks once (the midstate) and arranges the nonce so that each attempt costs exactly one
//! SHA-256 compression, whatever the prefix length:
//!
//! ```text
//!  plan A (tail fits):  | midstate blocks ... | rest of prefix, L, VVVVVV, '}', pad, len |
//!  plan B (tail full):  | midstate blocks ... | rest of prefix, L (completes block)       |
//!                                              | VVVVVV, '}', pad, len                     |
//! ```
//!
//! The nonce is `L * 10^V + v`: the V low digits `v` vary on every attempt, in place, inside
//! the last block; the high digits `L` change once per 10^V attempts. In plan B, L completes
//! the block that holds the end of the prefix, so it joins the midstate.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use sha2::compress256;
use sha2::digest::consts::U64;
use sha2::digest::generic_array::GenericArray;

/// One 64-byte SHA-256 message block, in the type `compress256` takes (no copy per attempt).
type MessageBlock = GenericArray<u8, U64>;

use crate::block::{Block, BlockData, BlockHash};

/// The largest difficulty a block may ask for, in leading zero bits.
pub const MAX_DIFFICULTY: u32 = 64;

/// Returns the work of one block of `difficulty` bits: 2^difficulty.
pub fn work(difficulty: u32) -> u128 {
    1u128 << difficulty.min(MAX_DIFFICULTY)
}

/// Tells whether `hash` has at least `difficulty` leading zero bits.
pub fn meets_difficulty(hash: &BlockHash, difficulty: u32) -> bool {
    hash.leading_zero_bits() >= difficulty
}

const IV: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Nonces stay below 10^19 so that they always fit a `u64`.
const MAX_NONCE_DIGITS: usize = 19;
/// Attempts between two looks at the cancel flag.
const CHUNK: u64 = 4096;

fn compress(state: &mut [u32; 8], block: &MessageBlock) {
    compress256(state, std::slice::from_ref(block));
}

/// Where the nonce digits go for one prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// The whole nonce shares the last block with the end of the prefix.
    Tail {
        high_digits: usize,
        low_digits: usize,
    },
    /// The high digits complete the prefix's last block; the low digits start a new one.
    Split {
        high_digits: usize,
        low_digits: usize,
    },
}

impl Layout {
    /// Chooses the layout for a prefix whose last partial block holds `rem` bytes.
    ///
    /// One block holds 64 bytes, of which `}`, the 0x80 pad byte and the 8-byte length
    /// take 10, so the nonce fits beside the prefix while `rem + digits <= 54`.
    fn for_remainder(rem: usize, fallback: bool) -> Option<Layout> {
        let tail_digits = (54usize.saturating_sub(rem)).min(MAX_NONCE_DIGITS);
        let split_high = 64 - rem;
        let split_low = MAX_NONCE_DIGITS.saturating_sub(split_high).min(9);
        if !fallback && tail_digits >= 7 {
            let low = (tail_digits - 2).min(9);
            Some(Layout::Tail {
                high_digits: tail_digits - low,
                low_digits: low,
            })
        } else if split_low >= 1 && rem > 0 {
            Some(Layout::Split {
                high_digits: split_high,
                low_digits: split_low,
            })
        } else {
            None
        }
    }

    fn digits(self) -> (usize, usize) {
        match self {
            Layout::Tail {
                high_digits,
                low_digits,
            }
            | Layout::Split {
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
    /// Every nonce of this prefix's range was tried: build a new prefix (new timestamp).
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
    /// Prepares a search of `prefix` for `difficulty` bits, as share `thread` of `threads`.
    ///
    /// `fallback` asks for the split layout where the tail layout was used before, to go on
    /// with the same prefix once the tail layout's range ran out. Returns `None` when the
    /// requested layout does not exist for this prefix length.
    pub fn new(
        prefix: &[u8],
        difficulty: u32,
        thread: u64,
        threads: u64,
        fallback: bool,
    ) -> Option<Self> {
        let full = prefix.len() / 64 * 64;
        let rem = prefix.len() - full;
        let layout = Layout::for_remainder(rem, fallback)?;
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

    /// Rebuilds the state and the last block for the current high digits.
    fn load_high(&mut self) {
        let (high_digits, low_digits) = self.layout.digits();
        let high = format!("{:0width$}", self.high, width = high_digits);
        let mut block = MessageBlock::default();
        let mut at;
        match self.layout {
            Layout::Tail { .. } => {
                self.state = self.base;
                let tail = &self.prefix_tail;
                block[..tail.len()].copy_from_slice(tail);
                at = tail.len();
                block[at..at + high_digits].copy_from_slice(high.as_bytes());
                at += high_digits;
            }
            Layout::Split { .. } => {
                let mut first = MessageBlock::default();
                let tail = &self.prefix_tail;
                first[..tail.len()].copy_from_slice(tail);
                first[tail.len()..].copy_from_slice(high.as_bytes());
                self.state = self.base;
                compress(&mut self.state, &first);
                at = 0;
            }
        }
        self.low_at = at;
        block[at..at + low_digits].fill(b'0');
        at += low_digits;
        block[at] = b'}';
        block[at + 1] = 0x80;
        block[56..].copy_from_slice(&((self.total_len as u64) * 8).to_be_bytes());
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

/// What to mine: everything of the block but its timestamp and nonce.
#[derive(Debug, Clone)]
pub struct Template {
    /// Height of the block to mine.
    pub index: u64,
    /// Hash of the tip it extends.
    pub prev_hash: String,
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

/// Formats Unix seconds as a block timestamp.
pub fn format_timestamp(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .unwrap_or_default()
        .format(crate::block::TIMESTAMP_FORMAT)
        .to_string()
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Mines `template` on `threads` threads until a block meets its difficulty or `control`
/// is cancelled (then `None`). The timestamp is refreshed whenever a nonce range runs out.
pub fn mine(template: &Template, threads: usize, control: &MineControl) -> Option<Block> {
    let threads = threads.max(1) as u64;
    let found: Mutex<Option<Block>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    std::thread::scope(|scope| {
        for thread in 0..threads {
            let (found, done) = (&found, &done);
            scope.spawn(move || {
                if let Some(block) = mine_share(template, thread, threads, control, done) {
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
) -> Option<Block> {
    let mut last_timestamp = String::new();
    let mut fallback = false;
    loop {
        let timestamp = format_timestamp(now_secs().max(template.min_time));
        if timestamp == last_timestamp {
            if fallback {
                // Both layouts of this second are spent: wait for the clock to move.
                std::thread::sleep(Duration::from_millis(20));
                if stopped(control, done) {
                    return None;
                }
                continue;
            }
            fallback = true;
        } else {
            fallback = false;
        }
        last_timestamp.clone_from(&timestamp);
        let mut block = Block {
            index: template.index,
            timestamp,
            nonce: 0,
            difficulty: template.difficulty,
            prev_hash: template.prev_hash.clone(),
            hash: BlockHash::default(),
            data: template.data.clone(),
        };
        let prefix = block.preimage_prefix();
        let Some(mut search) = NonceSearch::new(
            prefix.as_bytes(),
            template.difficulty,
            thread,
            threads,
            fallback,
        ) else {
            fallback = true;
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
            for fallback in [false, true] {
                let Some(mut s) = NonceSearch::new(&prefix, 6, 0, 1, fallback) else {
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

    /// Every prefix length has a layout, so the miner never stalls on a data size.
    #[test]
    fn every_remainder_has_a_layout() {
        for rem in 0..64 {
            assert!(Layout::for_remainder(rem, false).is_some(), "rem {rem}");
        }
    }

    /// Difficulty 0 mines at once and the block's hash is the recomputed one.
    #[test]
    fn difficulty_zero_mines_at_once() {
        let t = Template {
            index: 1,
            prev_hash: "00".repeat(32),
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
            prev_hash: "00".repeat(32),
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
            prev_hash: "ab".repeat(32),
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
