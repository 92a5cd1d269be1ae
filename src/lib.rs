//! powchain: a proof-of-work blockchain toolkit: blocks, chain rules and a midstate miner.

pub mod block;
pub mod chain;
pub mod params;
pub mod pow;
pub mod rules;

pub use block::{Block, BlockData, BlockHash};
pub use chain::{Blockchain, ChainError};
pub use params::{ChainParams, Retarget, genesis};
pub use pow::{MineControl, Template, mine};
pub use rules::BlockError;
pub mod cli;
pub mod client;
pub mod frame;
pub mod harness;
pub mod home;
pub mod message;
pub mod node;
pub mod probe;
pub mod registry;
pub mod store;

pub use client::NodeClient;
