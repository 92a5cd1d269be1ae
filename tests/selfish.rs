//! `node --strategy selfish` through the real binaries: a selfish node withholds what it
//! mines and publishes by Eyal and Sirer's rules against an honest node.

mod common;

use common::*;
use powchain_testkit::{Options, TestNetwork, wait_for};
use serde_json::json;

#[tokio::test]
async fn a_selfish_node_withholds_and_publishes_by_the_rules() {
    let mut net = TestNetwork::start(NODE, Options::new(1)).await.unwrap();
    let s = net.add_node(&["--strategy", "selfish"]).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let (honest, selfish) = (net.client(0), net.client(s));

    // Two blocks mined and withheld: the public chain (and the status) stays at genesis.
    let a1 = selfish.mine(json!("a1")).await.unwrap();
    let a2 = selfish.mine(json!("a2")).await.unwrap();
    assert_eq!(a2.prev_hash.to_string(), a1.hash.to_string());
    let st = selfish.status().await.unwrap();
    assert_eq!((st.height, st.withheld), (0, Some(2)), "{st:?}");
    assert_eq!(honest.status().await.unwrap().height, 0);
    assert_eq!(honest.status().await.unwrap().withheld, None);

    // An honest block leaves a lead of 1: the selfish node publishes both and wins. The
    // honest node mines its block's data again on the winning branch, as after any reorg.
    let h1 = honest.mine(json!("h1")).await.unwrap();
    let agreed = wait_for(
        DEADLINE,
        "both nodes on the withheld branch and h1 again",
        || async {
            let (a, b) = (honest.status().await.ok()?, selfish.status().await.ok()?);
            (a.height == 3 && a.tip == b.tip).then_some(a.tip)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nhonest:\n{}\nselfish:\n{}", net.log(0), net.log(s)));
    let chain = honest.get_chain().await.unwrap();
    assert_eq!(chain[1].hash, a1.hash);
    assert_eq!(chain[2].hash, a2.hash);
    assert_eq!(chain[3].hash, agreed);
    assert_eq!(chain[3].data.as_str(), r#""h1""#);
    assert!(chain.iter().all(|b| b.hash != h1.hash));
    assert!(net.log(0).contains("reorg to a chain with more work"));
    let st = selfish.status().await.unwrap();
    assert_eq!(st.withheld, Some(0), "{st:?}");

    // One withheld block against an honest one: a race; the selfish node takes its own
    // block, the honest node keeps the block it saw first.
    let a3 = selfish.mine(json!("a3")).await.unwrap();
    assert_eq!(selfish.status().await.unwrap().withheld, Some(1));
    let h3 = honest.mine(json!("h3")).await.unwrap();
    assert_eq!(h3.index, a3.index);
    wait_for(
        DEADLINE,
        "the selfish node racing with its block",
        || async {
            let st = selfish.status().await.ok()?;
            (st.tip == a3.hash && st.withheld == Some(0)).then_some(())
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nhonest:\n{}\nselfish:\n{}", net.log(0), net.log(s)));
    assert_eq!(honest.status().await.unwrap().tip, h3.hash);
    // Its next block is published at once and wins the race.
    let a4 = selfish.mine(json!("a4")).await.unwrap();
    let chain = wait_for(
        DEADLINE,
        "the honest node on the winning branch",
        || async {
            let chain = honest.get_chain().await.ok()?;
            (chain.get(a4.index as usize)?.hash == a4.hash).then_some(chain)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nhonest:\n{}\nselfish:\n{}", net.log(0), net.log(s)));
    assert_eq!(selfish.status().await.unwrap().withheld, Some(0));
    assert_eq!(chain[a3.index as usize].hash, a3.hash);
    // The honest node's h3 lost the race; it mines that data again on top, as after any reorg.
    assert!(chain.iter().all(|b| b.hash != h3.hash));
}

/// Withheld blocks are in memory, their data in the store's queue: a selfish node killed
/// while it withholds mines that data again after the restart, and publishes it.
#[tokio::test]
async fn a_crash_loses_no_withheld_data() {
    let mut net = TestNetwork::start(NODE, Options::new(1)).await.unwrap();
    let s = net.add_node(&["--strategy", "selfish"]).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let selfish = net.client(s);
    selfish.mine(json!("w1")).await.unwrap();
    selfish.mine(json!("w2")).await.unwrap();
    assert_eq!(selfish.status().await.unwrap().withheld, Some(2));
    net.kill(s).await.unwrap();
    net.restart(s).await.unwrap();
    let selfish = net.client(s);
    // The queue is mined again, and withheld again (the node is still selfish).
    wait_for(DEADLINE, "the queued data withheld again", || async {
        (selfish.status().await.ok()?.withheld == Some(2)).then_some(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\nselfish:\n{}", net.log(s)));
    net.wait_peered(DEADLINE).await.unwrap();
    // An honest block: a lead of 2, so both are published and win.
    let honest = net.client(0);
    honest.mine(json!("h")).await.unwrap();
    let chain = wait_for(
        DEADLINE,
        "the honest node on the published blocks",
        || async {
            let chain = honest.get_chain().await.ok()?;
            (chain.len() >= 3).then_some(chain)
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\nhonest:\n{}\nselfish:\n{}", net.log(0), net.log(s)));
    let mut data: Vec<&str> = chain[1..3].iter().map(|b| b.data.as_str()).collect();
    data.sort_unstable();
    assert_eq!(data, [r#""w1""#, r#""w2""#]);
}

/// An unknown strategy is refused at start with the choices named.
#[test]
fn an_unknown_strategy_is_refused() {
    let home = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(NODE)
        .args(["0", "--strategy", "greedy"])
        .env("POWCHAIN_HOME", home.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("greedy") && err.contains("selfish"), "{err}");
}
