//! `CompetingBranch`: a branch that forks below our tip, held while a sync fetches it,
//! bounded in blocks, bytes and by the work it could still gain.

use super::limits::{MAX_BRANCH_BLOCKS, MAX_BRANCH_BYTES};
use crate::block::Block;

/// Why a competing branch being fetched was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(super) enum BranchError {
    /// It holds too many blocks or bytes without outweighing our chain.
    #[error("competing branch of {blocks} blocks ({bytes} bytes) does not outweigh ours")]
    TooLarge { blocks: usize, bytes: usize },
    /// At its current difficulty it cannot outweigh ours within the caps.
    #[error(
        "competing branch cannot outweigh ours: it needs {needed} more work at {per_block} per \
         block, but only {room} more blocks fit"
    )]
    TooLight {
        needed: u128,
        per_block: u128,
        room: u128,
    },
}

/// A competing branch held while it is fetched, bounded in blocks, bytes and by work.
#[derive(Debug, Default)]
pub(super) struct CompetingBranch {
    blocks: Vec<Block>,
    bytes: usize,
    work: u128,
}

impl CompetingBranch {
    /// Adds a checked batch of `work`; fails when the branch outgrows the caps, or when at
    /// the batch's difficulty it could not gain `ours` (our work above the fork) within them.
    pub(super) fn push(
        &mut self,
        batch: Vec<Block>,
        work: u128,
        ours: u128,
    ) -> Result<(), BranchError> {
        let last_work = batch.last().map_or(1, Block::work).max(1);
        self.bytes += batch
            .iter()
            .map(|b| b.data.as_str().len() + 240)
            .sum::<usize>();
        self.blocks.extend(batch);
        self.work += work;
        if self.work > ours {
            return Ok(());
        }
        if self.blocks.len() > MAX_BRANCH_BLOCKS || self.bytes > MAX_BRANCH_BYTES {
            return Err(BranchError::TooLarge {
                blocks: self.blocks.len(),
                bytes: self.bytes,
            });
        }
        let per = self.bytes / self.blocks.len().max(1);
        let room = (MAX_BRANCH_BLOCKS - self.blocks.len())
            .min((MAX_BRANCH_BYTES - self.bytes) / per.max(1)) as u128;
        let needed = ours - self.work + 1;
        if needed.div_ceil(last_work) > room {
            return Err(BranchError::TooLight {
                needed,
                per_block: last_work,
                room,
            });
        }
        Ok(())
    }

    /// Tells whether the branch outweighs `ours`.
    pub(super) fn outweighs(&self, ours: u128) -> bool {
        self.work > ours
    }

    /// Returns the newest block held.
    pub(super) fn last(&self) -> Option<&Block> {
        self.blocks.last()
    }

    /// Takes the blocks out, leaving the branch empty.
    pub(super) fn take(&mut self) -> Vec<Block> {
        self.bytes = 0;
        self.work = 0;
        std::mem::take(&mut self.blocks)
    }

    /// Returns how many blocks and bytes are held.
    pub(super) fn size(&self) -> (usize, usize) {
        (self.blocks.len(), self.bytes)
    }

    /// Tells whether nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block::BlockData;
    use crate::chain::{Blockchain, mine_next};
    use crate::params::ChainParams;
    use serde_json::json;

    fn blocks(difficulty: u32, n: usize, pad: usize) -> Vec<Block> {
        let mut c = Blockchain::new(ChainParams::with_difficulty(difficulty));
        for i in 0..n {
            let data = BlockData::new(&json!({ "i": i, "pad": "x".repeat(pad) }));
            c.push(mine_next(&c, data, 1)).unwrap();
        }
        c.blocks_from(1)
    }

    /// A branch that outweighs ours is accepted whatever its size.
    #[test]
    fn competing_branch_that_outweighs_ours_is_kept() {
        let mut p = CompetingBranch::default();
        let batch = blocks(0, 10, 0);
        assert_eq!(p.push(batch, 10, 9), Ok(()));
        assert!(p.outweighs(9));
        assert_eq!(p.take().len(), 10);
        assert!(p.is_empty());
    }

    /// A branch of big blocks is given up by bytes long before the block cap.
    #[test]
    fn competing_branch_is_bounded_in_bytes() {
        let mut p = CompetingBranch::default();
        let batch = blocks(0, 40, 1_000_000);
        let mut result = Ok(());
        for _ in 0..10 {
            result = p.push(batch.clone(), 40, u128::MAX - 1);
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(
                result,
                Err(BranchError::TooLarge { .. } | BranchError::TooLight { .. })
            ),
            "{result:?}"
        );
        assert!(p.bytes <= MAX_BRANCH_BYTES + 40 * 1_000_300);
    }

    /// A branch whose difficulty walked down (as retargeting allows) is given up as soon as
    /// it could not outweigh ours within the caps, not after filling them.
    #[test]
    fn competing_branch_too_light_to_ever_win_is_given_up_early() {
        let mut p = CompetingBranch::default();
        // Ours above the fork: 2^40 of work; theirs: difficulty-0 blocks (work 1 each).
        let err = p.push(blocks(0, 100, 0), 100, 1 << 40).unwrap_err();
        assert!(
            matches!(err, BranchError::TooLight { per_block: 1, .. }),
            "{err}"
        );
        // The same branch against a chain it can still overtake within the caps is kept.
        let mut q = CompetingBranch::default();
        assert_eq!(q.push(blocks(0, 100, 0), 100, 10_000), Ok(()));
    }
}
