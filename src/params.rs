//! Network parameters: the settings of the rules, the fixed genesis built from them (the
//! network's identity), work, and limits.

use serde::{Deserialize, Serialize};

use crate::block::{Block, BlockData, BlockHash, GENESIS_TIMESTAMP, PrevHash, Timestamp};

/// How many previous blocks the median-time rule looks at.
pub(crate) const MEDIAN_SPAN: usize = 11;
/// How far ahead of the validating clock a timestamp may be.
pub(crate) const MAX_FUTURE_SECS: i64 = 2 * 60 * 60;
/// Default cap on a block's serialized size.
pub(crate) const DEFAULT_MAX_BLOCK_SIZE: usize = 1024 * 1024;
/// Difficulty of the default network (the original's `0000` prefix).
pub const DEFAULT_DIFFICULTY: u32 = 16;
/// Largest difficulty change at one retarget, in bits.
pub(crate) const MAX_RETARGET_BITS: i64 = 2;

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
            difficulty: DEFAULT_DIFFICULTY,
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

/// Builds the fixed genesis block of a network.
///
/// With retargeting its data records the rule, so networks with different rules have
/// different genesis hashes and refuse to peer.
pub fn genesis(difficulty: u32, retarget: Option<Retarget>) -> Block {
    let data = match retarget {
        None => BlockData::empty(),
        Some(r) => BlockData::new(&serde_json::json!({
            "retarget": {"interval": r.interval, "target_secs": r.target_secs}
        })),
    };
    let mut block = Block {
        index: 0,
        timestamp: Timestamp::from(GENESIS_TIMESTAMP),
        nonce: 0,
        difficulty,
        prev_hash: PrevHash::Genesis,
        hash: BlockHash::default(),
        data,
    };
    block.hash = block.compute_hash();
    block
}
