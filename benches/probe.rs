//! Probe overhead: 64 concurrent clients sending 10,000 `GET /status/{port}` through the
//! real probe, against the same `status` requests sent straight to the node.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use powchain::NodeClient;
use powchain::process::spawn_announced;

const CLIENTS: usize = 64;
const REQUESTS: usize = 10_000;

/// Runs REQUESTS calls of `call` over CLIENTS concurrent workers; returns the wall time and
/// every latency. Panics if any request fails.
async fn load<F, Fut>(call: Arc<F>) -> (Duration, Vec<Duration>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..CLIENTS)
        .map(|w| {
            let (next, call) = (next.clone(), call.clone());
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while next.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                    let t = Instant::now();
                    assert!(call(w).await, "a request failed");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::with_capacity(REQUESTS);
    for w in workers {
        all.extend(w.await.expect("worker"));
    }
    (start.elapsed(), all)
}

fn report(name: &str, runs: &mut [Duration]) {
    runs.sort();
    let p = |q: f64| runs[((runs.len() - 1) as f64 * q) as usize];
    eprintln!(
        "{name}: {} requests, p50 {:?}, p99 {:?}",
        runs.len(),
        p(0.5),
        p(0.99)
    );
}

/// Requests of `probe/status_sequential`, one after the other on one connection.
const SEQUENTIAL: usize = 1000;

fn status_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let home = tempfile::tempdir().expect("tempdir");
    let node = rt.block_on(support::start_node(home.path(), &["--difficulty", "8"]));
    let port: u16 = node
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port");
    let (mut probe, url) = rt.block_on(async {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe"));
        command
            .args(["--port", "0"])
            .env("POWCHAIN_HOME", home.path())
            .env("RUST_LOG", "warn");
        let started = spawn_announced(&mut command, Duration::from_secs(60))
            .await
            .expect("the probe listens");
        (started.child, started.addr)
    });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let direct: Arc<Vec<NodeClient>> = Arc::new(
        (0..CLIENTS)
            .map(|_| NodeClient::new(node.addr.clone()))
            .collect(),
    );
    let mut probe_lat = Vec::new();
    let mut direct_lat = Vec::new();
    let mut g = c.benchmark_group("probe");
    g.sample_size(10);
    g.throughput(Throughput::Elements(REQUESTS as u64));
    g.bench_function("status_roundtrip", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (http, u) = (http.clone(), format!("{url}/status/{port}"));
                    let call = Arc::new(move |_| {
                        let (http, u) = (http.clone(), u.clone());
                        async move {
                            http.get(&u)
                                .send()
                                .await
                                .is_ok_and(|r| r.status().is_success())
                        }
                    });
                    let (took, lat) = load(call).await;
                    probe_lat.extend(lat);
                    total += took;
                }
                total
            })
        })
    });
    g.bench_function("status_direct", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let direct = direct.clone();
                    let call = Arc::new(move |w: usize| {
                        let direct = direct.clone();
                        async move { direct[w].status().await.is_ok() }
                    });
                    let (took, lat) = load(call).await;
                    direct_lat.extend(lat);
                    total += took;
                }
                total
            })
        })
    });
    // One client, one connection, one request at a time: what a script's loop costs
    // (python/bench_roundtrip.py measures the Python client the same way).
    let one = NodeClient::new(node.addr.clone());
    g.throughput(Throughput::Elements(SEQUENTIAL as u64));
    g.bench_function("status_sequential", |b| {
        b.iter(|| {
            rt.block_on(async {
                for _ in 0..SEQUENTIAL {
                    one.status().await.expect("status");
                }
            })
        })
    });
    g.finish();
    report("probe/status_roundtrip latency", &mut probe_lat);
    report("probe/status_direct latency", &mut direct_lat);
    let _ = rt.block_on(probe.kill());
}

criterion_group!(benches, status_bench);
criterion_main!(benches);
