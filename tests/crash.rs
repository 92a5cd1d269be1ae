//! Crash safety: a node killed with SIGKILL at random moments while it mines and receives
//! blocks always restarts with a store that opens, a chain that validates, and every
//! acknowledged block's data.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use common::*;
use powchain::{BlockData, NodeClient};
use powchain_testkit::{Options, Topology, wait_for};
use serde_json::json;
use tokio::task::JoinHandle;

/// Mines on `client` in a loop until `stop`; returns the data of every acknowledged block.
fn mine_loop(client: NodeClient, tag: String, stop: Arc<AtomicBool>) -> JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut acked = Vec::new();
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            let data = json!({ "by": tag, "i": i });
            match client.mine(data.clone()).await {
                Ok(_) => acked.push(BlockData::new(&data).as_str().to_owned()),
                Err(_) => break,
            }
            i += 1;
        }
        acked
    })
}

/// 24 kills at random moments while blocks are mined on the victim and received from its
/// peer: after each restart the store opens and the chain validates; at the end the victim
/// holds the data of every block either node acknowledged.
#[tokio::test]
async fn random_kill_9_loses_no_acknowledged_data() {
    let seed = std::env::var("POWCHAIN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_c0de_u64);
    // Seeded, so a failing run can be replayed: the seed is in the output.
    eprintln!("crash test seed {seed} (POWCHAIN_CRASH_SEED={seed} replays it)");
    let mut rng = StdRng::seed_from_u64(seed);
    // Node 1 (the victim) dials node 0 (its peer) with --peer.
    let mut net = network(Options::new(2).topology(Topology::Line).difficulty(10)).await;
    net.wait_peered(DEADLINE).await.unwrap();
    let mut acked = Vec::new();
    for round in 0..24 {
        let stop = Arc::new(AtomicBool::new(false));
        let victim = mine_loop(net.client(1), format!("victim-{round}"), stop.clone());
        let peer = mine_loop(net.client(0), format!("peer-{round}"), stop.clone());
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..320))).await;
        net.kill(1).await.unwrap();
        stop.store(true, Ordering::Relaxed);
        acked.extend(victim.await.unwrap());
        acked.extend(peer.await.unwrap());
        net.restart(1)
            .await
            .unwrap_or_else(|e| panic!("round {round}: restart failed: {e}\n{}", net.log(1)));
        assert_eq!(
            net.client(1).validate().await.unwrap(),
            None,
            "round {round}"
        );
    }
    assert!(
        acked.len() > 24,
        "only {} blocks acknowledged over 24 rounds",
        acked.len()
    );
    wait_for(
        Duration::from_secs(90),
        "every acknowledged block's data on both nodes",
        || async {
            let (a, b) = (
                net.client(0).status().await.ok()?,
                net.client(1).status().await.ok()?,
            );
            if a.tip != b.tip && !a.mining && !b.mining {
                // Tips of equal work stay apart until a next block (the design's tie rule).
                let _ = net.client(0).mine(json!("tie breaker")).await;
                return None;
            }
            let tip = net.wait_agree(Duration::from_millis(10)).await.ok()?;
            let chain = net.client(1).get_chain().await.ok()?;
            let held: std::collections::HashSet<&str> =
                chain.iter().map(|b| b.data.as_str()).collect();
            (chain.last()?.hash == tip && acked.iter().all(|d| held.contains(d.as_str())))
                .then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nvictim log:\n{}", net.log(1)));
    // Each piece of data is in the final chain once.
    let chain = net.client(0).get_chain().await.unwrap();
    for d in &acked {
        assert_eq!(
            chain.iter().filter(|b| b.data.as_str() == d).count(),
            1,
            "{d} held more than once"
        );
    }
}
