//! One node through its real binary: the legacy commands byte for byte, every JSON request,
//! persistence across restarts and crashes, and hostile connections.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use powchain::message::{BlockOutcome, Request, Response};
use powchain::{Block, Blockchain, ChainParams, NodeClient};
use powchain_testkit::{Options, wait_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET CHAIN`, bad text, a pushed chain and `SHUTDOWN` get the original's exact replies.
#[tokio::test]
async fn legacy_commands_round_trip_exact_bytes() {
    let mut net = network(Options::isolated(2)).await;
    let addr = net.addr(0);
    let genesis = ChainParams::with_difficulty(8).genesis();
    let chain_json = serde_json::to_string(&vec![genesis.clone()]).unwrap();
    let mut want = format!("{:<10}", chain_json.len()).into_bytes();
    want.extend_from_slice(chain_json.as_bytes());
    assert_eq!(exchange(&addr, b"GET CHAIN").await, want);
    assert_eq!(exchange(&addr, b"get chain").await, want);
    assert_eq!(exchange(&addr, b"hello?").await, b"12        INVALID JSON");

    // A longer valid chain, mined on another node, is accepted; the same again is not.
    for i in 0..2 {
        net.client(1).mine(json!({ "i": i })).await.unwrap();
    }
    let longer = serde_json::to_vec(&net.client(1).get_chain().await.unwrap()).unwrap();
    assert_eq!(
        exchange(&addr, &longer).await,
        b"19        BLOCKCHAIN ACCEPTED"
    );
    assert_eq!(
        exchange(&addr, &longer).await,
        b"19        BLOCKCHAIN REJECTED"
    );
    let mut forged: Vec<Block> = serde_json::from_slice(&longer).unwrap();
    forged.push(forged[2].clone());
    assert_eq!(
        exchange(&addr, &serde_json::to_vec(&forged).unwrap()).await,
        b"19        BLOCKCHAIN REJECTED"
    );
    assert_eq!(net.client(0).status().await.unwrap().height, 2);

    assert_eq!(exchange(&addr, b"SHUTDOWN").await, b"7         EXITING");
    let code = tokio::time::timeout(DEADLINE, async { net.stop(0).await })
        .await
        .unwrap();
    // The node may already have exited on its own; either way it is gone and exited cleanly.
    assert!(matches!(code, Ok(Some(0)) | Err(_)), "{code:?}");
    assert!(TcpStream::connect(&addr).await.is_err());
}

/// Every JSON request of the protocol gets its documented reply.
#[tokio::test]
async fn every_json_request_gets_its_reply() {
    let net = network(Options::isolated(2)).await;
    let c = net.client(0);
    let status = c.status().await.unwrap();
    assert_eq!(
        (status.height, status.difficulty, status.mining),
        (0, 8, false)
    );
    assert_eq!(status.listen, net.addr(0));

    // A hello announcing the node's own address is answered but not taken as a peer.
    let ours = powchain::message::Hello {
        version: 1,
        genesis: status.tip,
        listen: status.listen.clone(),
        height: 0,
        tip: status.tip,
        work: "256".into(),
    };
    let hello = c.hello(ours).await.unwrap();
    assert_eq!(
        (hello.genesis, hello.height, hello.work.as_str()),
        (status.tip, 0, "256")
    );

    let block = c
        .mine(json!({"from": "a", "to": "b", "amount": 5}))
        .await
        .unwrap();
    assert_eq!(block.index, 1);
    assert!(c.status().await.unwrap().hash_rate > 0.0);
    let chain = c.get_chain().await.unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], block);
    let loc = Blockchain::new(ChainParams::with_difficulty(8)).locator();
    assert_eq!(
        c.get_blocks(loc.clone(), 10).await.unwrap(),
        vec![block.clone()]
    );
    assert_eq!(c.get_blocks(vec![block.hash], 10).await.unwrap(), vec![]);

    // new_block: the same block is ignored; node 1 appends it and then ignores a replay.
    assert_eq!(
        c.new_block(block.clone()).await.unwrap().0,
        BlockOutcome::Ignored
    );
    let c1 = net.client(1);
    assert_eq!(
        c1.new_block(block.clone()).await.unwrap().0,
        BlockOutcome::Appended
    );
    assert_eq!(
        c1.new_block(block.clone()).await.unwrap().0,
        BlockOutcome::Ignored
    );
    let mut bad = c.mine(json!("next")).await.unwrap();
    bad.nonce += 1;
    let (outcome, reason) = c1.new_block(bad).await.unwrap();
    assert_eq!(outcome, BlockOutcome::Rejected);
    assert!(reason.unwrap().contains("hash"));

    // Peers: admin needs the cookie; unknown peers are reported.
    assert_eq!(c.get_peers().await.unwrap(), Vec::<String>::new());
    let anon = NodeClient::new(net.addr(0));
    assert_eq!(
        anon.add_peer(&net.addr(1)).await.unwrap_err().code(),
        Some("unauthorized")
    );
    assert_eq!(
        anon.shutdown().await.unwrap_err().code(),
        Some("unauthorized")
    );
    c.add_peer(&net.addr(1)).await.unwrap();
    assert_eq!(c.get_peers().await.unwrap(), vec![net.addr(1)]);
    assert_eq!(
        c.remove_peer("127.0.0.1:1").await.unwrap_err().code(),
        Some("unknown_peer")
    );
    wait_for(DEADLINE, "node 1 to catch up", || async {
        (c1.status().await.ok()?.height == 2).then_some(())
    })
    .await
    .unwrap();
    let (height, tip, replaced) = c.sync().await.unwrap();
    assert_eq!((height, replaced), (2, false));
    assert_eq!(tip, c1.status().await.unwrap().tip);
    c.remove_peer(&net.addr(1)).await.unwrap();
    assert_eq!(c.validate().await.unwrap(), None);

    // Errors keep the connection usable.
    let reply = c
        .call(&Request::Mine {
            data: json!("x".repeat(2 << 20)),
        })
        .await
        .unwrap();
    assert!(
        matches!(reply, Response::Error { ref code, .. } if code == "too_large"),
        "{reply:?}"
    );
    assert!(
        c.raw(br#"{"type":"teleport"}"#)
            .await
            .unwrap()
            .contains("unknown_type")
    );
    assert_eq!(c.status().await.unwrap().height, 2);
    c.shutdown().await.unwrap();
}

/// Three mined blocks survive SIGTERM and a restart on the same data directory.
#[tokio::test]
async fn chain_survives_sigterm_and_restart() {
    let mut net = network(Options::isolated(1)).await;
    for i in 0..3 {
        net.client(0).mine(json!(i)).await.unwrap();
    }
    let before = net.client(0).get_chain().await.unwrap();
    assert_eq!(net.stop(0).await.unwrap(), Some(0));
    net.restart(0).await.unwrap();
    assert_eq!(net.client(0).get_chain().await.unwrap(), before);
    assert_eq!(net.client(0).validate().await.unwrap(), None);
}

/// A node killed with SIGKILL while a client mines in a loop restarts with a valid chain
/// holding every block whose `mined` reply arrived.
#[tokio::test]
async fn kill_9_loses_no_acknowledged_block() {
    let mut net = network(Options::isolated(1)).await;
    let client = Arc::new(net.client(0));
    let stop = Arc::new(AtomicBool::new(false));
    let miner = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                match client.mine(json!({ "i": i })).await {
                    Ok(b) => acked.push(b),
                    Err(_) => break,
                }
                i += 1;
            }
            acked
        })
    };
    wait_for(DEADLINE, "a few acknowledged blocks", || async {
        (client.status().await.ok()?.height >= 5).then_some(())
    })
    .await
    .unwrap();
    net.kill(0).await.unwrap();
    stop.store(true, Ordering::Relaxed);
    let acked = miner.await.unwrap();
    assert!(acked.len() >= 4, "only {} blocks acknowledged", acked.len());
    net.restart(0).await.unwrap();
    let chain = net.client(0).get_chain().await.unwrap();
    Blockchain::from_blocks(ChainParams::with_difficulty(8), chain.clone())
        .expect("valid after crash");
    for b in &acked {
        assert_eq!(
            chain.get(b.index as usize),
            Some(b),
            "acknowledged block {} lost",
            b.index
        );
    }
}

/// Garbage headers, an oversized header, a client stalled mid-frame and 500 simultaneous
/// connections leave the node serving other clients.
#[tokio::test]
async fn hostile_connections_leave_the_node_serving() {
    let net = network(Options::isolated(1).args(["--max-frame", "1000000"])).await;
    let addr = net.addr(0);
    let healthy = net.client(0);

    let mut garbage = TcpStream::connect(&addr).await.unwrap();
    garbage.write_all(b"GARBAGE!!!and more").await.unwrap();
    let (_, body) = read_frame(&mut garbage).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("bad frame header"));
    assert_eq!(
        garbage.read(&mut [0u8; 16]).await.unwrap(),
        0,
        "connection closed after a bad header"
    );

    let mut huge = TcpStream::connect(&addr).await.unwrap();
    huge.write_all(b"9999999999").await.unwrap();
    let (_, body) = read_frame(&mut huge).await.unwrap();
    assert!(String::from_utf8_lossy(&body).contains("over the 1000000 byte cap"));

    let mut stalled = TcpStream::connect(&addr).await.unwrap();
    stalled.write_all(b"500       {\"type\":").await.unwrap();

    let mut crowd = Vec::new();
    for _ in 0..500 {
        crowd.push(TcpStream::connect(&addr).await.unwrap());
    }
    assert_eq!(healthy.status().await.unwrap().height, 0);
    // Every crowd connection is served too.
    for s in crowd.iter_mut().step_by(50) {
        s.write_all(&frame(b"{\"type\":\"status\"}")).await.unwrap();
        let (_, body) = read_frame(s).await.unwrap();
        assert!(String::from_utf8_lossy(&body).contains("\"type\":\"status\""));
    }
    healthy.mine(json!("still mining")).await.unwrap();
    assert_eq!(healthy.status().await.unwrap().height, 1);
    drop(stalled);
}

/// Idle connections are closed after the idle timeout.
#[tokio::test]
async fn idle_connections_are_closed() {
    let net = network(Options::isolated(1).args(["--idle-timeout", "1"])).await;
    let mut s = TcpStream::connect(net.addr(0)).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(20), s.read(&mut [0u8; 8]))
        .await
        .expect("closed in time");
    assert_eq!(n.unwrap(), 0);
}

/// A store of another network stops the node with a message naming both genesis hashes.
#[tokio::test]
async fn store_of_another_network_is_refused() {
    let mut net = network(Options::isolated(1)).await;
    net.stop(0).await.unwrap();
    let out = node_output(net.home(), &net.node(0).data_dir, &["--difficulty", "9"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&ChainParams::with_difficulty(8).genesis().hash.to_hex()),
        "{err}"
    );
    assert!(
        err.contains(&ChainParams::with_difficulty(9).genesis().hash.to_hex()),
        "{err}"
    );
}

/// Any bare JSON array gets one of the two legacy text replies, even one that is no chain
/// of blocks, and changes nothing.
#[tokio::test]
async fn pushed_array_that_is_no_chain_gets_blockchain_rejected() {
    let net = network(Options::isolated(1)).await;
    let addr = net.addr(0);
    for payload in [
        &br#"[{"prev_hash":"x"}]"#[..],
        b"[]",
        b"[1,2,3]",
        br#"[{"index":0}, "text"]"#,
    ] {
        assert_eq!(
            exchange(&addr, payload).await,
            b"19        BLOCKCHAIN REJECTED",
            "{}",
            String::from_utf8_lossy(payload)
        );
    }
    assert_eq!(net.client(0).status().await.unwrap().height, 0);
}

/// Mined nonces stay at most 2^53 - 1; a block with a larger nonce is rejected by its own
/// rule; a store holding one (from an older miner) stops the node at start, naming the
/// block and what to do, and is left as it was.
#[tokio::test]
async fn nonces_above_two_to_the_53_are_refused_and_reported_at_start() {
    let mut net = network(Options::isolated(1).difficulty(0)).await;
    let c = net.client(0);
    for i in 0..20 {
        let block = c.mine(json!({ "i": i })).await.unwrap();
        assert!(block.nonce <= powchain::block::MAX_NONCE, "{}", block.nonce);
    }
    let chain = Blockchain::from_blocks(
        ChainParams::with_difficulty(0),
        c.get_chain().await.unwrap(),
    )
    .unwrap();
    let mut big = powchain::chain::mine_next(&chain, powchain::BlockData::new(&json!("big")), 1);
    big.nonce = 1_000_000_000_000_059_757;
    big.hash = big.compute_hash();
    match c
        .call(&Request::NewBlock { block: big.clone() })
        .await
        .unwrap()
    {
        Response::BlockResult {
            result: BlockOutcome::Rejected,
            reason: Some(reason),
        } => assert!(
            reason.contains("above the largest allowed nonce"),
            "{reason}"
        ),
        other => panic!("{other:?}"),
    }
    net.stop(0).await.unwrap();

    // Write the block as an older version would have stored it.
    let dir = net.node(0).data_dir.clone();
    {
        let (store, _) =
            powchain::store::Store::open(&dir, &ChainParams::with_difficulty(0)).unwrap();
        store.append(&big).unwrap();
    }
    let file = dir.join(powchain::store::DB_FILE);
    let before = std::fs::read(&file).unwrap();
    let out = node_output(net.home(), &dir, &["--difficulty", "0"]).await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("block 21 has nonce 1000000000000059757"),
        "{err}"
    );
    assert!(err.contains("Move the data directory aside"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), before);
}

/// A reply over the frame cap is replaced by a `too_large` error and the connection stays
/// usable; a client that sends requests and never reads is cut off after the time limit
/// instead of holding its task forever.
#[tokio::test]
async fn oversized_replies_get_an_error_and_stalled_readers_are_cut_off() {
    let net = network(Options::isolated(1).difficulty(0).log_filter("info").args([
        "--max-frame",
        "4096",
        "--idle-timeout",
        "2",
    ]))
    .await;
    let c = net.client(0);
    for i in 0..3 {
        c.mine(json!({ "i": i, "pad": "x".repeat(1500) }))
            .await
            .unwrap();
    }
    let addr = net.addr(0);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&frame(br#"{"type":"get_chain"}"#))
        .await
        .unwrap();
    let (_, body) = read_frame(&mut s).await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["code"], "too_large", "{reply}");
    assert!(
        reply["message"]
            .as_str()
            .unwrap()
            .contains("4096 byte frame cap"),
        "{reply}"
    );
    s.write_all(&frame(br#"{"type":"status"}"#)).await.unwrap();
    let (_, body) = read_frame(&mut s).await.unwrap();
    let reply: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(reply["height"], 3, "{reply}");

    // Pipeline status requests and never read: once the socket buffers are full the node's
    // write blocks, and it must give up on this client.
    let stalled = TcpStream::connect(&addr).await.unwrap();
    let (_reader, mut writer) = stalled.into_split();
    let request = frame(br#"{"type":"status"}"#);
    let flood = tokio::spawn(async move {
        for _ in 0..200_000 {
            if writer.write_all(&request).await.is_err() {
                return;
            }
        }
    });
    wait_for(
        DEADLINE,
        "the node to cut off the stalled reader",
        || async {
            net.log(0)
                .contains("the client stopped reading")
                .then_some(())
        },
    )
    .await
    .unwrap();
    flood.abort();
    assert_eq!(c.status().await.unwrap().height, 3);
}

/// `get_tail` returns the newest blocks, oldest first, capped at 5,000: what the probe's
/// `GET /block` and `GET /blocks?last=N` ask for instead of the whole chain.
#[tokio::test]
async fn get_tail_returns_the_newest_blocks() {
    let net = network(Options::isolated(1).difficulty(0)).await;
    let c = net.client(0);
    for i in 0..5 {
        c.mine(json!(i)).await.unwrap();
    }
    let chain = c.get_chain().await.unwrap();
    assert_eq!(c.get_tail(2).await.unwrap(), chain[4..].to_vec());
    assert_eq!(c.get_tail(1).await.unwrap(), vec![chain[5].clone()]);
    assert_eq!(c.get_tail(1_000_000).await.unwrap(), chain);
    assert!(c.get_tail(0).await.unwrap().is_empty());
}

/// A kept connection the node resets under a request (its idle timeout closing the socket
/// with the request unread) costs a repeatable request nothing: the client opens a new
/// connection and asks again. A request that is not safe to repeat (`mine`) reports the
/// broken connection instead of being sent twice.
#[tokio::test]
async fn a_reset_kept_connection_is_reopened_for_repeatable_requests() {
    use std::sync::atomic::AtomicUsize;
    let net = network(Options::isolated(1)).await;
    let node = net.addr(0);
    // A proxy to the node that resets every connection at its second request.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let node = node.clone();
            tokio::spawn(async move {
                let mut upstream = TcpStream::connect(&node).await.unwrap();
                let mut frame = [0u8; 10];
                let mut requests = 0;
                loop {
                    if inbound.read_exact(&mut frame).await.is_err() {
                        return;
                    }
                    requests += 1;
                    if requests == 2 {
                        inbound.set_zero_linger().unwrap();
                        return; // dropped with the request unread: a reset
                    }
                    let len: usize = std::str::from_utf8(&frame).unwrap().trim().parse().unwrap();
                    let mut body = vec![0u8; len];
                    inbound.read_exact(&mut body).await.unwrap();
                    upstream.write_all(&frame).await.unwrap();
                    upstream.write_all(&body).await.unwrap();
                    let mut head = [0u8; 10];
                    upstream.read_exact(&mut head).await.unwrap();
                    let len: usize = std::str::from_utf8(&head).unwrap().trim().parse().unwrap();
                    let mut reply = vec![0u8; len];
                    upstream.read_exact(&mut reply).await.unwrap();
                    inbound.write_all(&head).await.unwrap();
                    inbound.write_all(&reply).await.unwrap();
                }
            });
        }
    });
    let client = NodeClient::new(proxy);
    assert_eq!(client.status().await.unwrap().height, 0);
    assert_eq!(client.status().await.unwrap().height, 0);
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "the status was asked again on a new connection"
    );
    let err = client.mine(json!("never twice")).await.unwrap_err();
    assert!(err.closed_by_node(), "{err}");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "mine was not sent again"
    );
    assert_eq!(net.client(0).status().await.unwrap().height, 0);
}
