//! Network speed: a fresh node syncing 100,000 blocks from one peer and from three at once,
//! a node catching up the last 1,000, a block crossing eight nodes in a line, and networks
//! of 16, 64 and 256 node processes in one home (`net/scale_N`: time to a connected graph,
//! degrees, idle CPU, RSS, and a block reaching every node). `POWCHAIN_SCALE=16,64` picks
//! the sizes; `POWCHAIN_BENCH_NODE=path/to/node` measures another build's node binary;
//! `POWCHAIN_SCALE_BLOCK_BYTES=256000` mines blocks with that much data and reports the
//! bytes each node writes per block; `POWCHAIN_BENCH_NODE_ARGS="--metrics 127.0.0.1:0"`
//! gives every node extra flags.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use powchain::NodeClient;
use powchain_testkit::{Options, TestNetwork, Topology, cpu_time, percentile};

async fn wait_height(client: &NodeClient, height: u64) {
    loop {
        if client.status().await.is_ok_and(|s| s.height >= height) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Times how long a node started on `data` (if any) takes to reach height `height` once
/// told of `sources`.
async fn time_catch_up(
    home: &Path,
    sources: &[&str],
    data: Option<&Path>,
    height: u64,
) -> Duration {
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
    for source in sources {
        client.add_peer(source).await.expect("peer added");
    }
    wait_height(&client, height).await;
    let took = start.elapsed();
    let _ = node.child.kill().await;
    took
}

fn sync_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = tempfile::tempdir().expect("tempdir");
    let n = support::chain_blocks();
    let label = support::blocks_label(n);
    let blocks = support::long_chain(n);
    let full = home.path().join("full");
    let partial = home.path().join("partial");
    support::store_chain(&full, &blocks);
    support::store_chain(&partial, &blocks[..n - 999]);
    // Three peers holding the chain, each on its own copy of the store.
    let mut sources = Vec::new();
    for i in 0..3 {
        let dir = home.path().join(format!("full{i}"));
        if i > 0 {
            std::fs::create_dir_all(&dir).expect("dir");
            let file = powchain::store::DB_FILE;
            std::fs::copy(full.join(file), dir.join(file)).expect("copy");
        }
        let dir = if i == 0 { full.clone() } else { dir };
        sources.push(rt.block_on(support::start_node(
            home.path(),
            &[
                "--difficulty",
                "0",
                "--no-registry",
                "--data-dir",
                dir.to_str().expect("utf-8 path"),
            ],
        )));
    }
    let all: Vec<&str> = sources.iter().map(|s| s.addr.as_str()).collect();
    let mut g = c.benchmark_group("net");
    g.sample_size(10);
    let cases: [(String, &[&str], Option<&Path>); 3] = [
        (format!("sync_{label}"), &all[..1], None),
        (format!("sync_{label}_from_3"), &all, None),
        (format!("catchup_1k_of_{label}"), &all[..1], Some(&partial)),
    ];
    for (name, from, data) in cases {
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += time_catch_up(home.path(), from, data, n as u64).await;
                    }
                    total
                })
            })
        });
    }
    g.finish();
    drop(sources);
}

fn propagation_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node = env!("CARGO_BIN_EXE_node");
    let net = rt.block_on(async {
        let net = TestNetwork::start(
            node,
            Options::new(8)
                .topology(Topology::Line)
                .log_filter("warn")
                .args(support::extra_node_args()),
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

/// When node `i` logged that it stored or appended the block `hash` (its log's timestamp).
fn logged_at(net: &TestNetwork, i: usize, short: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    net.log(i)
        .lines()
        .filter(|l| {
            l.contains(short)
                && (l.contains("block appended")
                    || l.contains("mined block stored")
                    || l.contains("synced"))
        })
        .find_map(|l| {
            let stamp = l.split_whitespace().next()?;
            // The log is ANSI-free (not a terminal); the first word is an RFC 3339 time.
            chrono::DateTime::parse_from_rfc3339(stamp)
                .ok()
                .map(|t| t.to_utc())
        })
}

fn scale_bench(c: &mut Criterion) {
    let sizes: Vec<usize> = std::env::var("POWCHAIN_SCALE")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![16, 64, 256]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // Another build's node (say, an older release) can be measured the same way.
    let node =
        std::env::var("POWCHAIN_BENCH_NODE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_node").into());
    let node = node.as_str();
    // Bytes of data in each mined block (POWCHAIN_SCALE_BLOCK_BYTES, e.g. 256000): the
    // relay's cost grows with it, and bytes written per node per block are reported.
    let pad: usize = std::env::var("POWCHAIN_SCALE_BLOCK_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut g = c.benchmark_group("net");
    g.sample_size(10);
    for n in sizes {
        let started = Instant::now();
        let net = rt.block_on(async {
            let net = TestNetwork::start(
                node,
                Options::new(n)
                    .log_filter("info")
                    .args(support::extra_node_args()),
            )
            .await
            .expect("network");
            let listening = started.elapsed();
            net.wait_peered(Duration::from_secs(300))
                .await
                .expect("connected");
            (net, listening)
        });
        let (net, listening) = net;
        let connected = started.elapsed();
        let all: Vec<usize> = (0..n).collect();
        let statuses = rt.block_on(net.statuses(&all)).expect("statuses");
        let mut degrees: Vec<usize> = statuses.iter().map(|s| s.peers.len()).collect();
        degrees.sort_unstable();
        let pids: Vec<u32> = all.iter().filter_map(|&i| net.node(i).pid()).collect();
        let before: Duration = pids.iter().map(|&p| cpu_time(p)).sum();
        let idle_from = Instant::now();
        std::thread::sleep(Duration::from_secs(10));
        let idle_cpu = pids.iter().map(|&p| cpu_time(p)).sum::<Duration>() - before;
        let idle_share = idle_cpu.as_secs_f64() / idle_from.elapsed().as_secs_f64();
        let mut rss_list: Vec<u64> = pids
            .iter()
            .map(|&p| powchain_testkit::rss_kib(p) * 1024)
            .collect();
        rss_list.sort_unstable();
        println!(
            "net/scale_{n}: listening after {:.2} s, connected graph after {:.2} s; degree \
             median {} max {}; idle CPU over 10 s, all nodes: {:.1}% of one core; RSS median \
             {:.1} MiB",
            listening.as_secs_f64(),
            connected.as_secs_f64(),
            percentile(&degrees, 0.5).unwrap_or(0),
            degrees.last().copied().unwrap_or(0),
            idle_share * 100.0,
            rss_list[rss_list.len() / 2] as f64 / (1024.0 * 1024.0),
        );
        // The probe's GET /nodes asks every registry entry at once.
        let app = powchain::probe::app(powchain::probe::ProbeState::new(
            std::net::Ipv4Addr::LOCALHOST.into(),
            net.home().to_path_buf(),
        ));
        let asked = Instant::now();
        let listed = rt.block_on(async {
            use tower::ServiceExt;
            let request = axum::http::Request::get("/nodes")
                .body(axum::body::Body::empty())
                .expect("request");
            let reply = app.oneshot(request).await.expect("reply");
            let body = axum::body::to_bytes(reply.into_body(), usize::MAX)
                .await
                .expect("body");
            let list: Vec<serde_json::Value> = serde_json::from_slice(&body).expect("json");
            list.iter().filter(|n| n["up"] == true).count()
        });
        println!(
            "net/scale_{n}: GET /nodes listed {listed} nodes up in {:.1} ms",
            asked.elapsed().as_secs_f64() * 1e3
        );
        let written_before: u64 = pids.iter().map(|&p| written(p)).sum();
        let loopback_before = loopback_bytes();
        let mut seen: Vec<Duration> = Vec::new();
        let mut round = 0u64;
        let mut incomplete = 0usize;
        g.bench_function(format!("scale_{n}"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        round += 1;
                        let miner = (round as usize * 7919) % n;
                        let block = net
                            .client(miner)
                            .mine(serde_json::json!({ "scale": n, "round": round, "pad": "x".repeat(pad) }))
                            .await
                            .expect("mined");
                        net.wait_agree(Duration::from_secs(120))
                            .await
                            .expect("agreement");
                        let short = block.hash.short();
                        // A node's tip moves just before it logs the block: wait for the lines.
                        let mut at = Vec::new();
                        for _ in 0..100 {
                            at = all
                                .iter()
                                .filter_map(|&i| logged_at(&net, i, &short))
                                .collect();
                            if at.len() == n {
                                break;
                            }
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        // A node that got the block through a sync logs no hash: such a
                        // block is left out of the figures (and counted).
                        let (Some(first), Some(last)) = (at.iter().min(), at.iter().max()) else {
                            continue;
                        };
                        if at.len() < n {
                            incomplete += 1;
                            continue;
                        }
                        let took = (*last - *first).to_std().unwrap_or_default();
                        seen.push(took);
                        total += took;
                    }
                    total
                })
            })
        });
        seen.sort_unstable();
        let written_after: u64 = pids.iter().map(|&p| written(p)).sum();
        let loopback_after = loopback_bytes();
        let per_node_block = |bytes: u64| bytes as f64 / (n as f64 * round.max(1) as f64);
        println!(
            "net/scale_{n}: {pad} bytes of data a block; per node per block over {round} \
             blocks: {:.0} bytes received over loopback (/sys/class/net/lo tx_bytes, every \
             message with its TCP/IP headers), {:.0} bytes written to files (store and logs, \
             /proc/PID/io wchar; socket sends are not counted there)",
            per_node_block(loopback_after.saturating_sub(loopback_before)),
            per_node_block(written_after - written_before),
        );
        println!(
            "net/scale_{n}: a block reached all {n} nodes (from the miner's log line to the last \
             node's, over {} blocks; {} more reached some node by a sync, which logs no hash): p50 {:.1} ms, max {:.1} ms",
            seen.len(),
            incomplete,
            percentile(&seen, 0.5).unwrap_or_default().as_secs_f64() * 1e3,
            seen.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
        );
        drop(net);
    }
    g.finish();
}

/// Bytes sent over the loopback interface since boot, by every process (Linux sysfs; 0
/// where it cannot be read). The scale networks talk over loopback only.
fn loopback_bytes() -> u64 {
    std::fs::read_to_string("/sys/class/net/lo/statistics/tx_bytes")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes a process has written to files through write(2) and the like (Linux
/// `/proc/PID/io` wchar; a socket's send(2) is not counted).
fn written(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .ok()
        .and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("wchar: "))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

criterion_group!(benches, sync_benches, propagation_bench, scale_bench);
criterion_main!(benches);
