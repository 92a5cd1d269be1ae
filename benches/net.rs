//! Network speed: a fresh node syncing 100,000 blocks from one peer, a node catching up the
//! last 1,000, and a block crossing eight nodes in a line.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use powchain::NodeClient;
use powchain_testkit::{Options, TestNetwork, Topology};

async fn wait_height(client: &NodeClient, height: u64) {
    loop {
        if client.status().await.is_ok_and(|s| s.height >= height) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Times how long a node started on `data` (if any) takes to reach height 100,000 once
/// told of `source`.
async fn time_catch_up(home: &Path, source: &str, data: Option<&Path>) -> Duration {
    let dir = tempfile::tempdir_in(home).expect("tempdir");
    if let Some(seed) = data {
        std::fs::copy(
            seed.join(powchain::store::DB_FILE),
            dir.path().join(powchain::store::DB_FILE),
        )
        .expect("copy");
    }
    let mut node = support::start_node(
        home,
        &[
            "--difficulty",
            "0",
            "--no-registry",
            "--data-dir",
            dir.path().to_str().expect("utf-8 path"),
        ],
    )
    .await;
    let cookie = powchain::client::read_cookie(dir.path());
    let client = NodeClient::new(node.addr.clone()).with_cookie(cookie);
    let start = Instant::now();
    client.add_peer(source).await.expect("peer added");
    wait_height(&client, 100_000).await;
    let took = start.elapsed();
    let _ = node.child.kill().await;
    took
}

fn sync_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = tempfile::tempdir().expect("tempdir");
    let blocks = support::long_chain(100_000);
    let full = home.path().join("full");
    let partial = home.path().join("partial");
    support::store_chain(&full, &blocks);
    support::store_chain(&partial, &blocks[..99_001]);
    let source = rt.block_on(support::start_node(
        home.path(),
        &[
            "--difficulty",
            "0",
            "--no-registry",
            "--data-dir",
            full.to_str().expect("utf-8 path"),
        ],
    ));
    let mut g = c.benchmark_group("net");
    g.sample_size(10);
    g.bench_function("sync_100k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += time_catch_up(home.path(), &source.addr, None).await;
                }
                total
            })
        })
    });
    g.bench_function("catchup_1k_of_100k", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += time_catch_up(home.path(), &source.addr, Some(&partial)).await;
                }
                total
            })
        })
    });
    g.finish();
    drop(source);
}

fn propagation_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node = env!("CARGO_BIN_EXE_node");
    let net = rt.block_on(async {
        let net = TestNetwork::start(
            node,
            Options::new(8).topology(Topology::Line).log_filter("warn"),
        )
        .await
        .expect("network");
        net.wait_peered(Duration::from_secs(60))
            .await
            .expect("peered");
        net
    });
    let first = net.client(0);
    let last = net.client(7);
    let mut g = c.benchmark_group("net");
    g.sample_size(30);
    g.bench_function("propagation_8", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for i in 0..iters {
                    let block = first
                        .mine(serde_json::json!({ "bench": i }))
                        .await
                        .expect("mined");
                    let start = Instant::now();
                    loop {
                        if last.status().await.is_ok_and(|s| s.tip == block.hash) {
                            break;
                        }
                        tokio::time::sleep(Duration::from_micros(500)).await;
                    }
                    total += start.elapsed();
                }
                total
            })
        })
    });
    g.finish();
}

criterion_group!(benches, sync_benches, propagation_bench);
criterion_main!(benches);
