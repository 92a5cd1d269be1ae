//! The dashboard's cost with a network of node processes (256 by default,
//! `POWCHAIN_DASHBOARD_NODES=64` for another size): `GET /nodes` on the probe (every status
//! gathered at once, one response) and a whole page refresh in headless Chromium (requests,
//! the graph, the table, the chains and the history drawn), and a probe with an empty
//! registry crawling the network from one seed (`--crawl`): the time until its `/nodes`
//! lists every node up, and its CPU while it keeps crawling. Needs Chromium for the page;
//! without it the bench says so and measures the probe side only.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use powchain_testkit::browser::Browser;
use powchain_testkit::{Options, TestNetwork, cpu_time};

fn has_chromium() -> bool {
    std::process::Command::new(powchain_testkit::browser::chromium())
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Starts the probe binary on a free port with `home` as its powchain home and `extra`
/// flags; returns once it listens.
fn start_probe(
    rt: &tokio::runtime::Runtime,
    home: &std::path::Path,
    extra: &[&str],
) -> powchain::process::Announced {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe"));
    command
        .args(["--port", "0"])
        .args(extra)
        .env("POWCHAIN_HOME", home)
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::null());
    rt.block_on(powchain::process::spawn_announced(
        &mut command,
        Duration::from_secs(30),
    ))
    .expect("the probe listens")
}

fn dashboard_bench(c: &mut Criterion) {
    let n: usize = std::env::var("POWCHAIN_DASHBOARD_NODES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let node =
        std::env::var("POWCHAIN_BENCH_NODE").unwrap_or_else(|_| env!("CARGO_BIN_EXE_node").into());
    let net = rt.block_on(async {
        let net = TestNetwork::start(node.as_str(), Options::new(n).log_filter("warn"))
            .await
            .expect("network");
        net.wait_peered(Duration::from_secs(300))
            .await
            .expect("connected");
        // A few blocks (on one node: equal-work blocks from two would stay apart until the
        // next), so the page has chains and history to draw.
        for i in 0..3 {
            net.client(0)
                .mine(serde_json::json!(i))
                .await
                .expect("mined");
        }
        net.wait_agree(Duration::from_secs(60))
            .await
            .expect("agree");
        net
    });
    let probe = start_probe(&rt, net.home(), &[]);
    let url = probe.addr.clone();
    let http = reqwest::Client::new();
    let body = rt.block_on(async {
        http.get(format!("{url}/nodes"))
            .send()
            .await
            .expect("GET /nodes")
            .bytes()
            .await
            .expect("body")
    });
    println!(
        "dashboard/{n}: GET /nodes answers {:.0} KiB",
        body.len() as f64 / 1024.0
    );
    let mut g = c.benchmark_group("dashboard");
    g.sample_size(10);
    g.bench_function(format!("nodes_{n}"), |b| {
        b.to_async(&rt).iter(|| async {
            let reply = http
                .get(format!("{url}/nodes"))
                .send()
                .await
                .expect("reply");
            assert!(reply.status().is_success());
            reply.bytes().await.expect("body").len()
        })
    });
    // The crawl: a probe of another home (no registry, no cookie) from node 0 alone.
    let seed = net.addr(0);
    let crawler = || {
        let home = tempfile::tempdir().expect("home");
        let probe = start_probe(&rt, home.path(), &["--sample-every", "0", "--crawl", &seed]);
        (probe, home)
    };
    let all_up = |url: &str| {
        let http = http.clone();
        let url = format!("{url}/nodes");
        async move {
            loop {
                let nodes: serde_json::Value = match http.get(&url).send().await {
                    Ok(r) => r.json().await.unwrap_or_default(),
                    Err(_) => serde_json::Value::Null,
                };
                let up = nodes.as_array().map_or(0, |a| {
                    a.iter()
                        .filter(|n| n["up"] == serde_json::json!(true))
                        .count()
                });
                if up >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    g.bench_function(format!("crawl_{n}"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                let (probe, _home) = crawler();
                rt.block_on(all_up(&probe.addr));
                total += started.elapsed();
            }
            total
        })
    });
    let (probe_c, _home) = crawler();
    rt.block_on(all_up(&probe_c.addr));
    let pid = probe_c.child.id().unwrap_or(0);
    let (cpu0, t0) = (cpu_time(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let share = (cpu_time(pid) - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
    println!(
        "dashboard/{n}: a crawling probe, every node found, uses {:.1}% of one core (10 s, \
         /proc/{pid}/stat)",
        share * 100.0
    );
    drop(probe_c);
    if !has_chromium() {
        println!(
            "dashboard/{n}: no Chromium on this machine (apt-get install chromium); page refresh not measured"
        );
        return;
    }
    let mut page = rt
        .block_on(Browser::open_sized(&format!("{url}/"), 1400, 1200))
        .expect("Chromium opens the page");
    rt.block_on(page.wait_js(
        "the page to draw every node",
        &format!("window.powchain?.topology().nodes.length >= {n} && window.powchain.settled()"),
    ))
    .expect("drawn");
    let mut render = Vec::new();
    g.bench_function(format!("page_refresh_{n}"), |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let t = Instant::now();
                    let drawn = page
                        .eval(
                            "window.powchain.refresh().then(() => window.powchain.stats.renderMs)",
                        )
                        .await
                        .expect("refresh");
                    total += t.elapsed();
                    render.push(drawn.as_f64().unwrap_or(0.0));
                }
                total
            })
        })
    });
    g.finish();
    render.sort_by(f64::total_cmp);
    let heap = rt
        .block_on(page.eval("performance.memory ? performance.memory.usedJSHeapSize : 0"))
        .expect("heap");
    println!(
        "dashboard/{n}: drawing (graph, table, chains, charts) median {:.1} ms of a refresh; JS heap {:.1} MiB",
        render.get(render.len() / 2).copied().unwrap_or(0.0),
        heap.as_f64().unwrap_or(0.0) / (1024.0 * 1024.0)
    );
}

criterion_group!(benches, dashboard_bench);
criterion_main!(benches);
