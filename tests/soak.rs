//! Load and soak, loopback only and bounded in time: 8 nodes, 4 clients mining in a loop,
//! one node restarted every few seconds. `POWCHAIN_SOAK_SECS` sets the duration (10 s by
//! default; `.ci/run` runs 60 s).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use powchain::{BlockData, NodeClient};
use powchain_testkit::{Options, wait_for};
use serde_json::json;

/// Under load and restarts every node ends in agreement, none crashed, and the data of every
/// acknowledged block is in the final chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_eight_nodes_four_miners_with_restarts() {
    let secs: u64 = std::env::var("POWCHAIN_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let mut net = network(Options::new(8).difficulty(12)).await;
    net.wait_peered(Duration::from_secs(60)).await.unwrap();
    let addrs: Vec<String> = (0..8).map(|i| net.addr(i)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let miners: Vec<_> = (0..4)
        .map(|m| {
            let (addrs, stop) = (addrs.clone(), stop.clone());
            tokio::spawn(async move {
                let clients: Vec<NodeClient> =
                    addrs.iter().map(|a| NodeClient::new(a.clone())).collect();
                let (mut acked, mut failed, mut i) = (Vec::new(), 0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let data = json!({ "miner": m, "i": i });
                    match clients[(m * 2 + i as usize) % clients.len()]
                        .mine(data.clone())
                        .await
                    {
                        Ok(_) => acked.push(BlockData::new(&data).as_str().to_owned()),
                        // The node was restarting: not acknowledged, so nothing is owed.
                        Err(_) => failed += 1,
                    }
                    i += 1;
                }
                (acked, failed)
            })
        })
        .collect();
    let start = Instant::now();
    let mut restarts = 0usize;
    while start.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let i = restarts % 8;
        net.restart(i).await.unwrap();
        restarts += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    let mut failed = 0;
    for m in miners {
        let (a, f) = m.await.unwrap();
        acked.extend(a);
        failed += f;
    }
    let load = start.elapsed();
    for i in 0..8 {
        assert!(net.exited(i).is_none(), "node {i} crashed: {}", net.log(i));
    }
    let settle = Instant::now();
    let ties = std::cell::Cell::new(0usize);
    let agreed = wait_for(
        Duration::from_secs(120),
        "all nodes to agree on a chain holding every acknowledged block",
        || {
            let (net, acked) = (&net, &acked);
            let tie_breaker = NodeClient::new(net.addr(ties.get() % 8));
            ties.set(ties.get() + 1);
            async move {
                let mut tips = std::collections::HashSet::new();
                let mut busy = false;
                for i in 0..8 {
                    let s = net.client(i).status().await.ok()?;
                    tips.insert(s.tip);
                    busy |= s.mining;
                }
                if tips.len() > 1 {
                    if !busy {
                        // Equal-work tips: each node keeps its own until a next block, as the
                        // design says. Mine one, as a user would.
                        let _ = tie_breaker
                            .mine(json!({ "tie_breaker": settle.elapsed().as_millis() as u64 }))
                            .await;
                    }
                    return None;
                }
                let chain = net.client(0).get_chain().await.ok()?;
                let held: std::collections::HashSet<&str> =
                    chain.iter().map(|b| b.data.as_str()).collect();
                acked
                    .iter()
                    .all(|d| held.contains(d.as_str()))
                    .then_some(())
            }
        },
    )
    .await;
    if let Err(e) = agreed {
        let mut report = String::new();
        let chain = net.client(0).get_chain().await.unwrap_or_default();
        let held: std::collections::HashSet<&str> = chain.iter().map(|b| b.data.as_str()).collect();
        let missing: Vec<&String> = acked
            .iter()
            .filter(|d| !held.contains(d.as_str()))
            .collect();
        for i in 0..8 {
            let s = net.client(i).status().await;
            report.push_str(&format!(
                "node {i}: {:?}\n",
                s.map(|s| (s.height, s.tip.short(), s.peers.len(), s.mining))
            ));
        }
        panic!(
            "{e}\n{report}{} acknowledged data missing on node 0, e.g. {:?}\nnode 0 log tail:\n{}",
            missing.len(),
            missing.first(),
            net.log(0)
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let chain = net.client(3).get_chain().await.unwrap();
    eprintln!(
        "soak: {secs} s, {restarts} restarts, {} blocks acknowledged ({:.1}/s), {failed} requests failed during restarts, \
         final height {}, agreement {:.2} s after the load stopped",
        acked.len(),
        acked.len() as f64 / load.as_secs_f64(),
        chain.len() - 1,
        settle.elapsed().as_secs_f64()
    );
    for i in 0..8 {
        assert_eq!(net.client(i).validate().await.unwrap(), None);
    }
}
