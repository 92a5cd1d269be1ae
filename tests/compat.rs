//! A node of the previous release (protocol version 2: blocks in JSON only, no
//! `encoding` field) and a node of this one, in both directions: each syncs the other's
//! chain, and blocks mined on either, small (pushed whole) and big (announced, then
//! fetched with `get_block`), reach the other, every block list in JSON. The previous release's `node` is built by `.ci/run` from its commit and named by
//! `POWCHAIN_PREVIOUS_NODE` when the tests are compiled; without it this test is ignored.

mod common;

use common::*;
use powchain::NodeClient;
use powchain_testkit::{Options, TestNetwork, wait_for};
use serde_json::json;

#[cfg(has_previous_node)]
const PREVIOUS: &str = env!("POWCHAIN_PREVIOUS_NODE");
#[cfg(not(has_previous_node))]
const PREVIOUS: &str = "";

async fn tip_is(client: &NodeClient, hash: powchain::BlockHash, what: &str) {
    wait_for(DEADLINE, what, || async {
        (client.status().await.ok()?.tip == hash).then_some(())
    })
    .await
    .unwrap();
}

#[cfg_attr(
    not(has_previous_node),
    ignore = "needs the previous release's node binary: set POWCHAIN_PREVIOUS_NODE (.ci/run builds it)"
)]
#[tokio::test]
async fn a_node_of_the_previous_release_syncs_and_relays_with_this_one() {
    let old = TestNetwork::start(PREVIOUS, Options::isolated(1))
        .await
        .unwrap();
    let new = TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap();
    let (o, n) = (old.client(0), new.client(0));
    // Its chain first: this node syncs three blocks from the old one.
    for i in 0..3 {
        o.mine(json!({ "old": i })).await.unwrap();
    }
    let old_tip = o.status().await.unwrap().tip;
    n.add_peer(&old.addr(0)).await.unwrap();
    tip_is(&n, old_tip, "this node synced the old one's chain").await;
    // A small block and a big one (announced, its body fetched in JSON) mined here reach
    // the old node.
    let small = n.mine(json!("small, from the new node")).await.unwrap();
    tip_is(&o, small.hash, "the old node took the small block").await;
    let big = n.mine(json!({ "pad": "x".repeat(40_000) })).await.unwrap();
    tip_is(&o, big.hash, "the old node took the big block").await;
    // And a block mined on the old node reaches this one.
    let back = o.mine(json!("from the old node")).await.unwrap();
    tip_is(&n, back.hash, "this node took the old node's block").await;
    let big_back = o.mine(json!({ "pad": "y".repeat(40_000) })).await.unwrap();
    tip_is(
        &n,
        big_back.hash,
        "this node fetched the old node's big block",
    )
    .await;
    assert_eq!(o.validate().await.unwrap(), None);
    assert_eq!(n.validate().await.unwrap(), None);
}

/// A node of the previous release syncs from this one a chain bigger than this node's frame
/// cap (1 MB here; 7 blocks of 300 KB): this node cuts its replies of blocks to fit, and the
/// old node asks again from where each reply ended.
#[cfg_attr(
    not(has_previous_node),
    ignore = "needs the previous release's node binary: set POWCHAIN_PREVIOUS_NODE (.ci/run builds it)"
)]
#[tokio::test]
async fn a_node_of_the_previous_release_syncs_replies_cut_to_the_frame_cap() {
    let old = TestNetwork::start(PREVIOUS, Options::isolated(1))
        .await
        .unwrap();
    let new = TestNetwork::start(NODE, Options::isolated(1).args(["--max-frame", "1000000"]))
        .await
        .unwrap();
    let (o, n) = (old.client(0), new.client(0));
    for i in 0..7 {
        n.mine(json!({ "i": i, "pad": "x".repeat(300_000) }))
            .await
            .unwrap();
    }
    let tip = n.status().await.unwrap().tip;
    o.add_peer(&new.addr(0)).await.unwrap();
    tip_is(&o, tip, "the old node synced 2.1 MB in replies of 1 MB").await;
    assert_eq!(o.validate().await.unwrap(), None);
}
