//! powchain: a proof-of-work blockchain toolkit: blocks, chain rules and a midstate miner,
//! a TCP node and an HTTP probe.
//!
//! Modules, from the leaves up (each imports only modules above it in this list):
//!
//! | module | owns |
//! |---|---|
//! | [`block`] | `Block`, `BlockHash`, `PrevHash`, `Timestamp`, canonical `BlockData`, the preimage, work |
//! | [`params`] | `ChainParams`, `Retarget`, the fixed genesis, limits |
//! | [`pow`] | the midstate multi-threaded miner (`NonceSearch`, `mine`) |
//! | [`rules`] | the consensus rules over any `History`, `BlockError`, `check_branch` |
//! | [`chain`] | `Blockchain` over a `VecDeque<Block>`: fork choice, locator, `Branch`, reorgs |
//! | [`frame`] | the 10-byte length-header codec (tokio-util `Decoder`/`Encoder`) |
//! | [`message`] | `Request`, `Response`, `ErrorCode`, the legacy text commands |
//! | [`record`] | the binary block record: the store's values, and binary block lists on the wire |
//! | [`store`] | the chain on disk (redb, binary block records), read and hashed on all cores at start |
//! | [`registry`] | `nodes.json`, the shared list of running nodes |
//! | [`home`] | `POWCHAIN_HOME` and default data directories |
//! | [`env`] | what a node takes from its environment (dialling, clocks, blocking work, mining), real or simulated |
//! | [`client`] | `NodeClient`: one typed call per request, with timeouts |
//! | [`metrics`] | the Prometheus metrics' names, their recorder and `GET /metrics` |
//! | [`process`] | spawning our binaries and waiting for their `listening on` line |
//! | [`node`] | the node: `ChainState`, handler, connection loop, peers, sync, mining |
//! | [`probe`] | the HTTP API and dashboard |
//! | [`cli`] | the command lines of the binaries |
//! | [`control`] | `powchain-cli`: one command to a node, printed as JSON |
//!
//! Networks of real node processes for integration tests, and the deterministic network
//! simulation (`powchain_testkit::sim`, on turmoil), live in the `powchain-testkit` crate
//! (`testkit/`), so the library does not depend on test-only crates.

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
pub mod control;
pub mod env;
pub mod frame;
pub mod home;
pub mod message;
pub mod metrics;
pub mod node;
pub mod probe;
pub mod process;
pub mod record;
pub mod registry;
pub mod store;

pub use client::NodeClient;
