//! powchain: a proof-of-work blockchain toolkit: blocks, chain rules and a midstate miner.

pub mod block;
pub mod chain;
pub mod pow;

pub use block::{Block, BlockData, BlockHash, genesis};
pub use chain::{BlockError, Blockchain, ChainError, ChainParams, Retarget};
pub use pow::{MineControl, Template, mine};
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
