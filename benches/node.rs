//! Node speed: frame decoding, startup on a stored 100,000-block chain, and the cost the
//! node adds to a `mine` request over the miner alone.

mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use powchain::frame::{FrameCodec, encode_frame};
use powchain::pow::{MineControl, Template, mine};
use powchain::{BlockData, NodeClient};
use tokio_util::codec::Decoder;

fn frame_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("frame");
    for (name, size, count) in [
        ("decode_100B", 100usize, 10_000usize),
        ("decode_10MB", 10 << 20, 4),
    ] {
        let one = encode_frame(&vec![b'x'; size]);
        let stream: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * count)
            .collect();
        g.throughput(Throughput::Bytes(stream.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut codec = FrameCodec::default();
                let mut buf = BytesMut::from(&stream[..]);
                let mut n = 0;
                while let Some(f) = codec.decode(&mut buf).expect("valid frames") {
                    n += black_box(f).len();
                }
                n
            })
        });
    }
    g.finish();
}

fn startup_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = tempfile::tempdir().expect("tempdir");
    let data = home.path().join("stored");
    let n = support::chain_blocks();
    support::store_chain(&data, &support::long_chain(n));
    let label = support::blocks_label(n);
    let mut g = c.benchmark_group("node");
    g.sample_size(10);
    // A normal start (the store trusted, its newest blocks re-checked), then a full
    // re-validation (`--reverify`); each node is stopped gracefully, outside the timing, so
    // the next start finds a cleanly closed store.
    let mut reported_rss = false;
    for (name, extra) in [
        (format!("startup_{label}"), None),
        (format!("startup_{label}_reverify"), Some("--reverify")),
    ] {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        let data = data.to_str().expect("utf-8 path");
                        let mut args =
                            vec!["--difficulty", "0", "--no-registry", "--data-dir", data];
                        args.extend(extra);
                        let mut node = support::start_node(home.path(), &args).await;
                        total += start.elapsed();
                        if !reported_rss {
                            reported_rss = true;
                            eprintln!(
                                "node/startup_{label}: the node holds {:.1} MB resident once listening",
                                powchain_testkit::rss_kib(node.child.id().unwrap_or(0)) as f64 / 1024.0
                            );
                        }
                        let _ = powchain::process::terminate(&node.child);
                        let _ = node.child.wait().await;
                    }
                    total
                })
            })
        });
    }
    g.finish();
}

fn mine_request_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(support::start_node(
        home.path(),
        &["--difficulty", "16", "--no-registry", "--threads", "2"],
    ));
    let client = NodeClient::new(node.addr.clone());
    let mut g = c.benchmark_group("node");
    g.sample_size(60);
    g.measurement_time(Duration::from_secs(20));
    let data = serde_json::json!([{"transaction": {"from": "alice", "to": "bob", "amount": 5}}]);
    g.bench_function("mine_request", |b| {
        b.iter(|| rt.block_on(client.mine(data.clone())).expect("mined"))
    });
    // A different parent each time, as the node mines on a new tip each time.
    let mut parent = 0u64;
    g.bench_function("miner_alone", |b| {
        b.iter(|| {
            parent += 1;
            let template = Template {
                index: parent,
                prev_hash: format!("{parent:064x}").parse().expect("64 hex digits"),
                difficulty: 16,
                data: BlockData::new(&data),
                min_time: 0,
            };
            mine(&template, 2, &MineControl::default()).expect("found")
        })
    });
    g.finish();
    drop(node);
}

criterion_group!(benches, frame_benches, startup_bench, mine_request_bench);
criterion_main!(benches);
