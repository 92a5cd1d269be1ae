//! Mining strategies: what a node does with the blocks it mines.
//!
//! `honest` (the default) publishes each block at once. `selfish` is selfish mining as
//! Eyal and Sirer define it ("Majority is not Enough", 2014, Algorithm 1): the node keeps
//! the blocks it mines in a private branch and publishes them by the rules below, so that
//! honest miners waste work on blocks the private branch will overtake. With `lead` the
//! private branch's height above the public chain's before a public block arrives:
//!
//! | event | lead | the pool |
//! |---|---|---|
//! | the pool finds a block | any | keeps it private (lead + 1), unless in a race |
//! | the pool finds a block | race | publishes it: its branch wins |
//! | a public block | 0 | takes it and mines on it |
//! | a public block | 1 | publishes its block: a race of two equal branches |
//! | a public block | 2 | publishes its whole branch, which has more work |
//! | a public block | > 2 | publishes its blocks up to the public height |
//!
//! In a race the pool mines on its own block (it takes its branch in the tie); honest
//! nodes mine on whichever block reached them first, and the next block decides.

use std::fmt;
use std::str::FromStr;

use crate::block::BlockHash;
use crate::chain::Branch;

/// How a node publishes the blocks it mines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Strategy {
    /// Every block at once.
    #[default]
    Honest,
    /// Withhold and release by Eyal and Sirer's rules.
    Selfish,
}

impl FromStr for Strategy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "honest" => Ok(Strategy::Honest),
            "selfish" => Ok(Strategy::Selfish),
            other => Err(format!(
                "unknown strategy {other:?}: expected \"honest\" or \"selfish\""
            )),
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Strategy::Honest => "honest",
            Strategy::Selfish => "selfish",
        })
    }
}

/// What the private branch does when the public chain has grown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Move {
    /// Nothing (more) to publish.
    Nothing,
    /// Publish the branch's first `count` blocks (those not published yet); `race` when
    /// they only tie the public chain.
    Publish { count: usize, race: bool },
    /// The public chain is longer: give the private branch up.
    Abandon,
}

/// Decides, for a private branch of `len` blocks on the block at height `fork`, the first
/// `published` of them published already, what to do now that the public chain has grown
/// to `public`.
pub(super) fn on_public(fork: u64, len: usize, published: usize, public: u64) -> Move {
    if len == 0 {
        return Move::Nothing;
    }
    let private = fork + len as u64;
    if private < public {
        Move::Abandon
    } else if private == public {
        Move::Publish {
            count: len,
            race: true,
        }
    } else if private == public + 1 {
        Move::Publish {
            count: len,
            race: false,
        }
    } else {
        match public.saturating_sub(fork) as usize {
            count if count <= published => Move::Nothing,
            count => Move::Publish { count, race: false },
        }
    }
}

/// How a selfish miner's races (its block published against a public one of the same
/// height) ended: its own next block won it, or an honest miner's next block did, mined on
/// the pool's block or on the other. `honest_on_pool` over both honest outcomes estimates
/// Eyal and Sirer's γ, the share of honest hash power that mines on the pool's block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Races {
    /// Won by the pool's next block.
    pub pool_won: u64,
    /// Ended by an honest block on the pool's block (the pool's block stays).
    pub honest_on_pool: u64,
    /// Ended by an honest block on the other block (the pool's block is stale).
    pub honest_on_honest: u64,
}

/// A selfish miner's state: its withheld blocks and the public tip it last answered.
#[derive(Debug, Default)]
pub(super) struct Private {
    /// The withheld blocks, checked on top of the last block they share with the public
    /// chain; the first `published` of them are published (each ties a public block).
    pub(super) branch: Option<Branch>,
    pub(super) published: usize,
    /// The remine queue's entry holding each withheld block's data, by position in the
    /// branch, so that a restart mines it again; dropped once the block is published.
    pub(super) remine_ids: Vec<Option<u64>>,
    /// Set (height, hash) while the node's tip is its own block, published against a
    /// public one of equal work: its next block is published at once.
    pub(super) racing: Option<(u64, BlockHash)>,
    /// How the races ended.
    pub(super) races: Races,
    /// The public tip (height, hash) last answered.
    pub(super) seen: (u64, BlockHash),
}

impl Private {
    /// Returns how many blocks are withheld (not published yet).
    pub(super) fn len(&self) -> usize {
        self.branch
            .as_ref()
            .map_or(0, |b| b.blocks().len() - self.published)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Eyal and Sirer's transitions, by lead before the public block.
    #[test]
    fn moves_follow_the_state_machine() {
        // Nothing withheld: take the public block.
        assert_eq!(on_public(10, 0, 0, 11), Move::Nothing);
        // Lead 1 (a block on 10, public reaches 11): race.
        assert_eq!(
            on_public(10, 1, 0, 11),
            Move::Publish {
                count: 1,
                race: true
            }
        );
        // Lead 2: publish both, the branch wins.
        assert_eq!(
            on_public(10, 2, 0, 11),
            Move::Publish {
                count: 2,
                race: false
            }
        );
        // Lead 3: publish up to the public height, keep the rest.
        assert_eq!(
            on_public(10, 3, 0, 11),
            Move::Publish {
                count: 1,
                race: false
            }
        );
        assert_eq!(
            on_public(10, 5, 1, 13),
            Move::Publish {
                count: 3,
                race: false
            }
        );
        // Published up to there already (the public chain moved at the same height).
        assert_eq!(on_public(10, 5, 3, 13), Move::Nothing);
        // The lead fell to 1 with some published: all of it goes, and wins.
        assert_eq!(
            on_public(10, 4, 2, 13),
            Move::Publish {
                count: 4,
                race: false
            }
        );
        // The public chain ran ahead (it found two while the pool had one).
        assert_eq!(on_public(10, 1, 0, 12), Move::Abandon);
        // A public height at or below the fork leaves a long branch alone.
        assert_eq!(on_public(10, 3, 0, 10), Move::Nothing);
    }

    #[test]
    fn strategies_parse_and_print() {
        for s in [Strategy::Honest, Strategy::Selfish] {
            assert_eq!(s.to_string().parse::<Strategy>(), Ok(s));
        }
        let err = "greedy".parse::<Strategy>().unwrap_err();
        assert!(err.contains("\"greedy\""), "{err}");
    }
}
