//! Helpers shared by the benchmarks: long chains, stored chains and node processes.
#![allow(dead_code)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use powchain::process::spawn_announced;
use powchain::store::Store;
use powchain::{Block, BlockData, Blockchain, ChainParams};
use tokio::process::{Child, Command};

/// Blocks in the long chains of the startup, sync and chain benches: 100,000, or
/// `POWCHAIN_CHAIN_BLOCKS` (say 1000000 for the million-block figures).
pub fn chain_blocks() -> usize {
    std::env::var("POWCHAIN_CHAIN_BLOCKS")
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .filter(|&n| n > 1_000)
        .unwrap_or(100_000)
}

/// `100k`, `1m`: the chain length in a benchmark's name.
pub fn blocks_label(n: usize) -> String {
    if n.is_multiple_of(1_000_000) {
        format!("{}m", n / 1_000_000)
    } else if n.is_multiple_of(1_000) {
        format!("{}k", n / 1_000)
    } else {
        n.to_string()
    }
}

/// Builds a chain of `n` blocks at difficulty 0 with about 100 bytes of data each.
pub fn long_chain(n: usize) -> Vec<Block> {
    let mut chain = Blockchain::new(ChainParams::with_difficulty(0));
    for i in 0..n {
        let data =
            serde_json::json!({"from": "alice", "to": "bob", "amount": i, "memo": "x".repeat(50)});
        let block = powchain::chain::mine_next(&chain, BlockData::new(&data), 1);
        chain.push(block).expect("mined block is valid");
    }
    chain.to_vec()
}

/// Writes `blocks` (genesis first, difficulty 0) as the store of a data directory.
pub fn store_chain(dir: &Path, blocks: &[Block]) {
    let (store, _) = Store::open(dir, &ChainParams::with_difficulty(0)).expect("store opens");
    for chunk in blocks[1..].chunks(10_000) {
        store
            .replace_from(chunk[0].index - 1, chunk)
            .expect("stored");
    }
}

/// A node process started for a benchmark.
pub struct BenchNode {
    pub child: Child,
    pub addr: String,
}

/// Extra flags for every node a bench starts: `$POWCHAIN_BENCH_NODE_ARGS`, split at
/// spaces (e.g. `--metrics 127.0.0.1:0`, to measure what serving metrics costs).
pub fn extra_node_args() -> Vec<String> {
    std::env::var("POWCHAIN_BENCH_NODE_ARGS")
        .map(|v| v.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// Starts the node binary (or `$POWCHAIN_BENCH_NODE`, another build's, to compare) on a
/// free port with `args` and [`extra_node_args`]; returns once it listens.
pub async fn start_node(home: &Path, args: &[&str]) -> BenchNode {
    let bin = std::env::var("POWCHAIN_BENCH_NODE")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_node").to_owned());
    let mut command = Command::new(bin);
    command
        .arg("0")
        .args(args)
        .args(extra_node_args())
        .env("POWCHAIN_HOME", home)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null());
    let started = spawn_announced(&mut command, Duration::from_secs(120))
        .await
        .expect("the node listens in time");
    BenchNode {
        child: started.child,
        addr: started.addr,
    }
}
