//! Several real nodes: finding each other, gossip, convergence on the most work, partitions,
//! catch-up through locators, and refusal of another network.

mod common;

use std::time::Duration;

use common::*;
use powchain::registry::Registry;
use powchain_testkit::{Options, TestNetwork, Topology, wait_for};
use serde_json::json;

/// A node is in the registry by the time it prints `listening on`: whoever waits for that
/// line (a script, `TestNetwork`, the probe's dashboard right after) finds every node it
/// started, each read of the registry right after a start.
#[tokio::test]
async fn an_announced_node_is_already_in_the_registry() {
    let mut net = network(Options::new(0)).await;
    let registry = Registry::in_home(net.home());
    for n in 1..=4 {
        let i = net.add_node(&[]).await.unwrap();
        let port = net.node(i).port();
        let listed = registry.entries().unwrap();
        assert!(
            listed.iter().any(|(p, _)| *p == port),
            "node {i} ({port}) announced itself but the registry lists {listed:?}"
        );
        assert_eq!(listed.len(), n, "{listed:?}");
    }
}

/// Three nodes started with only a port and a shared home find each other and converge after
/// blocks are mined on each.
#[tokio::test]
async fn registry_nodes_find_each_other_and_converge() {
    let net = network(Options::new(3)).await;
    net.wait_peered(DEADLINE).await.unwrap();
    assert_eq!(Registry::in_home(net.home()).entries().unwrap().len(), 3);
    for i in 0..3 {
        let block = net.client(i).mine(json!({ "miner": i })).await.unwrap();
        wait_for(DEADLINE, "the block to reach every node", || async {
            for j in 0..3 {
                if net.client(j).status().await.ok()?.tip != block.hash {
                    return None;
                }
            }
            Some(())
        })
        .await
        .unwrap();
    }
    let chain = net.client(2).get_chain().await.unwrap();
    assert_eq!(chain.len(), 4);
    for j in 0..3 {
        assert_eq!(net.client(j).validate().await.unwrap(), None);
    }
}

/// Nodes in separate homes joined only with `--peer` learn of each other and agree.
#[tokio::test]
async fn separate_homes_join_with_peer_flag() {
    let first = network(Options::new(1).topology(Topology::Isolated)).await;
    let mut second = network(Options::new(0).topology(Topology::Isolated)).await;
    let a = first.addr(0);
    second.add_node(&["--peer", &a]).await.unwrap();
    let b = second.addr(0);
    second.add_node(&["--peer", &b]).await.unwrap();
    // Node 2 knew only node 1, and learns of node 0 through it.
    wait_for(DEADLINE, "peer sharing", || async {
        let peers = second.client(1).get_peers().await.ok()?;
        peers.contains(&a).then_some(())
    })
    .await
    .unwrap();
    let block = first
        .client(0)
        .mine(json!("from the first home"))
        .await
        .unwrap();
    wait_for(DEADLINE, "the block to cross homes", || async {
        (second.client(1).status().await.ok()?.tip == block.hash).then_some(())
    })
    .await
    .unwrap();
    let peers = first.client(0).get_peers().await.unwrap();
    assert!(peers.contains(&b), "{peers:?}");
    assert!(!peers.contains(&a), "a node never lists itself");
}

/// Two groups mining apart converge, once joined, on the branch with more work, and the
/// losing branch's data is mined again into the final chain.
#[tokio::test]
async fn partition_heals_to_most_work_without_losing_data() {
    let net = network(Options::new(4).topology(Topology::Isolated)).await;
    net.client(0).add_peer(&net.addr(1)).await.unwrap();
    net.client(2).add_peer(&net.addr(3)).await.unwrap();
    for i in 0..2 {
        net.client(0)
            .mine(json!({ "side": "a", "i": i }))
            .await
            .unwrap();
    }
    let mut b_tip = None;
    for i in 0..4 {
        b_tip = Some(
            net.client(3)
                .mine(json!({ "side": "b", "i": i }))
                .await
                .unwrap()
                .hash,
        );
    }
    wait_for(DEADLINE, "each side to agree within itself", || async {
        let (s0, s1) = (
            net.client(0).status().await.ok()?,
            net.client(1).status().await.ok()?,
        );
        let (s2, s3) = (
            net.client(2).status().await.ok()?,
            net.client(3).status().await.ok()?,
        );
        (s0.tip == s1.tip && s2.tip == s3.tip && s0.height == 2 && s3.height == 4).then_some(())
    })
    .await
    .unwrap();
    net.client(1).add_peer(&net.addr(2)).await.unwrap();
    let want: Vec<String> = (0..2)
        .map(|i| json!({ "side": "a", "i": i }).to_string())
        .chain((0..4).map(|i| json!({ "side": "b", "i": i }).to_string()))
        .collect();
    wait_for(
        Duration::from_secs(60),
        "every node to hold all data on one chain",
        || async {
            let tip = net.wait_agree(Duration::from_millis(10)).await.ok()?;
            let chain = net.client(0).get_chain().await.ok()?;
            let data: Vec<String> = chain.iter().map(|b| b.data.as_str().to_owned()).collect();
            (chain.last()?.hash == tip && want.iter().all(|w| data.contains(w))).then_some(())
        },
    )
    .await
    .unwrap();
    let chain = net.client(2).get_chain().await.unwrap();
    assert_eq!(Some(chain[4].hash), b_tip, "the branch with more work won");
    assert!(chain.len() >= 7);
}

/// `status.reorgs` is counted in the step that swaps the blocks: the first status showing
/// the other branch's tip already counts the reorg (PROTOCOL.md section 4).
#[tokio::test]
async fn a_status_showing_the_new_tip_counts_the_reorg() {
    let net = network(Options::new(2).topology(Topology::Isolated)).await;
    let ours = net.client(0).mine(json!("a")).await.unwrap().hash;
    net.client(1).mine(json!("b1")).await.unwrap();
    net.client(1).mine(json!("b2")).await.unwrap();
    let watcher = net.client(0);
    net.client(0).add_peer(&net.addr(1)).await.unwrap();
    // Node 0 changes its tip only by that reorg (then it mines "a" again on top).
    let seen = wait_for(DEADLINE, "node 0 to reorg to node 1's chain", || async {
        let s = watcher.status().await.ok()?;
        (s.tip != ours).then_some(s)
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", net.log(0), net.log(1)));
    assert_eq!(seen.reorgs, 1, "{seen:?}");
}

/// A node restarted after missing 200 blocks catches up through `get_blocks`, not `get_chain`.
#[tokio::test]
async fn restarted_node_catches_up_through_locators() {
    let mut net = network(
        Options::new(2)
            .topology(Topology::Line)
            .log_filter("powchain=debug"),
    )
    .await;
    net.wait_peered(DEADLINE).await.unwrap();
    net.client(0).mine(json!("shared")).await.unwrap();
    net.wait_agree(DEADLINE).await.unwrap();
    net.stop(1).await.unwrap();
    for i in 0..200 {
        net.client(0).mine(json!(i)).await.unwrap();
    }
    net.restart(1).await.unwrap();
    let tip = net.client(0).status().await.unwrap().tip;
    wait_for(DEADLINE, "the restarted node to catch up", || async {
        (net.client(1).status().await.ok()?.tip == tip).then_some(())
    })
    .await
    .unwrap();
    let log = net.log(0);
    assert!(
        log.contains("request=\"get_blocks\"") || log.contains("request=get_blocks"),
        "no get_blocks served"
    );
    assert!(
        !log.contains("get_chain"),
        "catch-up fetched the whole chain"
    );
}

/// A node of another network (other genesis) is refused, with both hashes in the log.
#[tokio::test]
async fn node_of_another_network_is_refused() {
    let net = network(Options::new(1).topology(Topology::Isolated)).await;
    let mut other = TestNetwork::start(
        NODE,
        Options::new(0).topology(Topology::Isolated).difficulty(9),
    )
    .await
    .unwrap();
    let a = net.addr(0);
    other.add_node(&["--peer", &a]).await.unwrap();
    let ours = powchain::ChainParams::with_difficulty(8)
        .genesis()
        .hash
        .to_hex();
    let theirs = powchain::ChainParams::with_difficulty(9)
        .genesis()
        .hash
        .to_hex();
    wait_for(DEADLINE, "the refusal to be logged", || async {
        let log = net.log(0);
        (log.contains(&ours) && log.contains(&theirs)).then_some(())
    })
    .await
    .unwrap();
    // The dialler logs the refusal once the reply reaches it, a moment after the refuser.
    wait_for(DEADLINE, "the dialler to log the refusal", || async {
        let log = other.log(0);
        (log.contains("another network") || log.contains("wrong_network")).then_some(())
    })
    .await
    .unwrap();
    assert!(net.client(0).get_peers().await.unwrap().is_empty());
    assert!(other.client(0).status().await.unwrap().peers.is_empty());
}

/// 64 nodes found through one registry keep bounded links (no full mesh), form one
/// connected graph, stay connected after a quarter of them are killed (lost outbound links
/// are replaced from the address book), and every survivor gets a new block.
#[tokio::test]
async fn sixty_four_nodes_keep_bounded_links_and_survive_losing_a_quarter() {
    let (max_out, max_in) = (4, 8);
    let mut net = network(Options::new(64).args([
        "--max-outbound".to_owned(),
        max_out.to_string(),
        "--max-inbound".to_owned(),
        max_in.to_string(),
    ]))
    .await;
    net.wait_peered(Duration::from_secs(90)).await.unwrap();
    let all: Vec<usize> = (0..64).collect();
    let statuses = net.statuses(&all).await.unwrap();
    for (i, s) in statuses.iter().enumerate() {
        assert!(s.outbound.len() <= max_out, "node {i}: {:?}", s.outbound);
        assert!(s.inbound.len() <= max_in, "node {i}: {:?}", s.inbound);
        assert!(s.peers.len() <= max_out + max_in, "node {i}: {:?}", s.peers);
    }
    // A quarter of the nodes crash.
    for i in 48..64 {
        net.kill(i).await.unwrap();
    }
    net.wait_peered(Duration::from_secs(90)).await.unwrap();
    let block = net.client(7).mine(json!("after the losses")).await.unwrap();
    let tip = net.wait_agree(Duration::from_secs(60)).await.unwrap();
    assert_eq!(tip, block.hash);
    // Links to the dead are noticed (a failed relay, else the next ping) and replaced.
    let alive: Vec<usize> = (0..48).collect();
    let addrs: Vec<String> = alive.iter().map(|&i| net.addr(i)).collect();
    wait_for(
        Duration::from_secs(90),
        "lost outbound links to be replaced",
        || async {
            let statuses = net.statuses(&alive).await?;
            statuses
                .iter()
                .all(|s| {
                    s.outbound.len() == max_out && s.outbound.iter().all(|p| addrs.contains(p))
                })
                .then_some(())
        },
    )
    .await
    .unwrap();
}

/// Stores a chain of `n` blocks at difficulty 0 in the data directory `dir`.
fn store_chain(dir: &std::path::Path, n: usize) {
    let params = powchain::ChainParams::with_difficulty(0);
    let (store, mut chain) = powchain::store::Store::open(dir, &params).unwrap();
    for i in 0..n {
        let data = powchain::BlockData::new(&json!({ "i": i }));
        let block = powchain::chain::mine_next(&chain, data, 1);
        chain.push(block).unwrap();
    }
    store.replace_from(0, &chain.to_vec()[1..]).unwrap();
}

/// A network of no nodes yet, at difficulty 0, whose nodes log at debug level.
async fn empty_debug_network(topology: Topology) -> TestNetwork {
    network(
        Options::new(0)
            .difficulty(0)
            .topology(topology)
            .log_filter("powchain=debug"),
    )
    .await
}

/// Node 0 holding a stored chain of `n` blocks at difficulty 0, and node 1, new, linked
/// to it, with debug logs; the store's directory must live as long as the network.
async fn a_source_and_a_new_node(n: usize) -> (TestNetwork, tempfile::TempDir) {
    let stored = tempfile::tempdir().unwrap();
    store_chain(stored.path(), n);
    let mut net = empty_debug_network(Topology::Line).await;
    net.add_node(&["--data-dir", stored.path().to_str().unwrap()])
        .await
        .unwrap();
    net.add_node(&[]).await.unwrap();
    (net, stored)
}

/// A new node syncs a chain several `get_blocks` batches long from a peer (each next batch
/// asked for while the one before is applied), and ends with the peer's chain exactly.
#[tokio::test]
async fn a_new_node_syncs_a_chain_of_several_batches() {
    let n = powchain::node::SYNC_BATCH * 2 + 1_000;
    let (net, _stored) = a_source_and_a_new_node(n).await;
    let source = net.client(0).status().await.unwrap();
    assert_eq!(source.height, n as u64);
    wait_for(Duration::from_secs(60), "the new node to sync", || async {
        (net.client(1).status().await.ok()?.tip == source.tip).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        net.client(1).get_chain().await.unwrap(),
        net.client(0).get_chain().await.unwrap()
    );
    let log = net.log(0);
    let served =
        log.matches("request=\"get_blocks\"").count() + log.matches("request=get_blocks").count();
    assert!(
        served >= 3,
        "{n} blocks in batches of {}: {served} get_blocks",
        powchain::node::SYNC_BATCH
    );
}

/// Blocks whose batch is bigger than the frame cap: a node whose frame cap is 1 MB cuts its
/// replies of blocks to fit (3 blocks of 300 KB each) instead of refusing them as too large,
/// and a new node syncs the whole chain from it, a reply at a time.
#[tokio::test]
async fn a_chain_bigger_than_a_frame_syncs_in_replies_that_fit() {
    let mut net = empty_debug_network(Topology::Isolated).await;
    net.add_node(&["--max-frame", "1000000"]).await.unwrap();
    net.add_node(&[]).await.unwrap();
    let source = net.client(0);
    for i in 0..7 {
        source
            .mine(json!({ "i": i, "pad": "x".repeat(300_000) }))
            .await
            .unwrap();
    }
    let tip = source.status().await.unwrap().tip;
    net.client(1).add_peer(&net.addr(0)).await.unwrap();
    wait_for(
        DEADLINE,
        "the new node to sync 2.1 MB of blocks",
        || async { (net.client(1).status().await.ok()?.tip == tip).then_some(()) },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}\n{}", net.log(0), net.log(1)));
    let (log, synced) = (net.log(0), net.log(1));
    assert!(!synced.contains("frame cap"), "{synced}");
    let served =
        log.matches("request=\"get_blocks\"").count() + log.matches("request=get_blocks").count();
    assert!(
        served >= 3,
        "7 blocks of 300 KB in replies of 1 MB: {served} get_blocks"
    );
}

/// A sync commits its full batches without an fsync; once the node logs `synced` they are
/// durable, also when the last batch was a full one (nothing durable came after it): a
/// crash then keeps every block.
#[tokio::test]
async fn a_synced_chain_survives_a_crash() {
    let n = powchain::node::SYNC_BATCH * 2;
    let (mut net, _stored) = a_source_and_a_new_node(n).await;
    let source = net.client(0).status().await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "the new node's synced line",
        || async { net.log(1).contains("synced").then_some(()) },
    )
    .await
    .unwrap();
    assert_eq!(net.client(1).status().await.unwrap().tip, source.tip);
    net.kill(1).await.unwrap();
    let params = powchain::ChainParams::with_difficulty(0);
    let (_, kept) = powchain::store::Store::open(&net.node(1).data_dir, &params).unwrap();
    assert_eq!(kept.height(), n as u64, "the synced chain after a crash");
    assert_eq!(kept.tip().hash, source.tip);
}

/// A new node linked to three peers that hold one long chain fetches its parts from more
/// than one of them at once (`get_range`, by heights), and ends with that chain exactly.
#[tokio::test]
async fn a_new_node_fetches_a_long_chain_from_several_peers_at_once() {
    let n = powchain::node::SYNC_BATCH * 6 + 10;
    let stores: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    store_chain(stores[0].path(), n);
    let file = powchain::store::DB_FILE;
    for copy in &stores[1..] {
        std::fs::copy(stores[0].path().join(file), copy.path().join(file)).unwrap();
    }
    let mut net = network(
        Options::new(0)
            .difficulty(0)
            .topology(Topology::Isolated)
            .log_filter("powchain=debug"),
    )
    .await;
    for dir in &stores {
        net.add_node(&["--data-dir", dir.path().to_str().unwrap()])
            .await
            .unwrap();
    }
    let peers: Vec<String> = (0..3).map(|i| net.addr(i)).collect();
    let mut args = Vec::new();
    for p in &peers {
        args.extend(["--peer", p.as_str()]);
    }
    let new = net.add_node(&args).await.unwrap();
    let source = net.client(0).status().await.unwrap();
    assert_eq!(source.height, n as u64);
    wait_for(Duration::from_secs(90), "the new node to sync", || async {
        (net.client(new).status().await.ok()?.tip == source.tip).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(
        net.client(new).get_chain().await.unwrap(),
        net.client(0).get_chain().await.unwrap()
    );
    let served: Vec<usize> = (0..3)
        .map(|i| {
            let log = net.log(i);
            log.matches("request=\"get_range\"").count() + log.matches("request=get_range").count()
        })
        .collect();
    assert!(
        served.iter().filter(|&&s| s > 0).count() >= 2,
        "get_range requests served by each peer: {served:?}"
    );
    let log = net.log(new);
    assert!(
        log.lines()
            .any(|l| l.contains("synced") && !l.contains("sources=1") && l.contains("sources=")),
        "{log}"
    );
}
