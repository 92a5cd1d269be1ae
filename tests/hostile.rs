//! Hostile and broken peers against a real node: invalid blocks of every kind, a long chain
//! of too-easy blocks, huge frame announcements, stalls, replays, and who may command a node.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use powchain::frame::FrameCodec;
use powchain::message::{BlockOutcome, Hello, Request, Response};
use powchain::{Block, BlockData, BlockHash, Blockchain, ChainParams, NodeClient};
use powchain_testkit::fake::{self, Answer, FakePeer};
use powchain_testkit::{Options, TestNetwork, reseal, rss_kib, wait_for};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// A valid next block for a difficulty-8 chain holding only genesis.
fn next_block(data: &str) -> Block {
    let chain = Blockchain::new(ChainParams::with_difficulty(8));
    powchain::chain::mine_next(&chain, BlockData::new(&json!(data)), 1)
}

/// Blocks with bad proof of work, a wrong difficulty, a time-warped timestamp or a forged
/// hash are each rejected with their rule; the fifth closes the connection, the sender is
/// logged once, and the honest node keeps its chain and keeps serving.
#[tokio::test]
async fn invalid_blocks_are_rejected_and_the_sender_cut_off() {
    let net = TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap();
    let stream = TcpStream::connect(net.addr(0)).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::default());

    let mut bad_pow = next_block("bad pow");
    while bad_pow.compute_hash().leading_zero_bits() >= 8 {
        bad_pow.nonce += 1;
    }
    bad_pow.hash = bad_pow.compute_hash();
    let mut easy = next_block("too easy");
    easy.difficulty = 2;
    reseal(&mut easy);
    let mut warped = next_block("from the future");
    warped.timestamp =
        powchain::block::format_timestamp(chrono::Utc::now().timestamp() + 3 * 3600).into();
    reseal(&mut warped);
    let mut forged = next_block("forged hash");
    forged.hash = BlockHash([0u8; 32]);
    let mut unparsable = next_block("bad time");
    unparsable.timestamp = "yesterday".into();
    reseal(&mut unparsable);

    let cases = [
        (bad_pow, "insufficient work"),
        (easy, "difficulty 2"),
        (warped, "in the future"),
        (forged, "claims hash"),
        (unparsable, "unparsable timestamp"),
    ];
    for (block, want) in cases {
        let request = serde_json::to_vec(&Request::NewBlock { block }).unwrap();
        conn.send(request).await.unwrap();
        let reply: Response = serde_json::from_slice(&conn.next().await.unwrap().unwrap()).unwrap();
        match reply {
            Response::BlockResult {
                result: BlockOutcome::Rejected,
                reason: Some(r),
            } => {
                assert!(r.contains(want), "{r:?} should say {want:?}")
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
    assert!(
        conn.next().await.is_none(),
        "the connection is closed after 5 invalid blocks"
    );
    let client = net.client(0);
    assert_eq!(client.status().await.unwrap().height, 0);
    assert_eq!(client.validate().await.unwrap(), None);
    let log = net.log(0);
    assert_eq!(log.matches("rejected a block from").count(), 1, "{log}");
    assert_eq!(log.matches("closing the connection of").count(), 1, "{log}");
}

/// A fake peer: answers `hello` with our network's genesis and the work it claims, serves
/// `blocks` to `get_blocks`, and counts what it served.
async fn fake_peer(blocks: Vec<Block>, claimed_work: &str) -> (String, Arc<AtomicUsize>) {
    let peer = FakePeer::bind().await;
    let served = Arc::new(AtomicUsize::new(0));
    let mut hello = fake::hello(1, &peer.addr);
    hello.height = blocks.len() as u64;
    hello.tip = blocks.last().map_or(hello.genesis, |b| b.hash);
    hello.work = claimed_work.to_owned();
    let count = served.clone();
    let addr = peer.serve(move |frame| {
        Answer::json(&match serde_json::from_slice::<Request>(frame) {
            Ok(Request::Hello(_)) => Response::Hello(hello.clone()),
            Ok(Request::GetPeers) => Response::Peers { peers: vec![] },
            Ok(Request::GetBlocks { locator, limit, .. }) => {
                count.fetch_add(1, Ordering::Relaxed);
                let start = locator
                    .iter()
                    .find_map(|h| blocks.iter().position(|b| b.hash == *h))
                    .map_or(0, |p| p + 1);
                let take = limit.unwrap_or(5000).min(5000);
                Response::Blocks {
                    blocks: blocks.iter().skip(start).take(take).cloned().collect(),
                }
            }
            _ => Response::Ok,
        })
    });
    (addr, served)
}

/// A long chain of too-easy blocks is refused, pushed whole or served by a peer claiming
/// more work; the node fetches one batch per attempt, keeps its chain and drops the peer.
#[tokio::test]
async fn long_chain_of_too_easy_blocks_is_refused() {
    let net = TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap();
    let client = net.client(0);
    client.mine(json!("honest")).await.unwrap();
    // 20,000 blocks at difficulty 0 on the same genesis: far more blocks, each too easy.
    let mut easy = Blockchain::new(ChainParams::with_difficulty(8)).to_vec();
    let mut prev = easy[0].clone();
    for i in 0..20_000u64 {
        let mut b = Block {
            index: i + 1,
            timestamp: powchain::block::format_timestamp(1_700_000_000 + i as i64).into(),
            nonce: 0,
            difficulty: 0,
            prev_hash: prev.hash.into(),
            hash: BlockHash::default(),
            data: BlockData::new(&json!(i)),
        };
        b.hash = b.compute_hash();
        easy.push(b.clone());
        prev = b;
    }
    let pushed = serde_json::to_vec(&easy).unwrap();
    assert_eq!(
        exchange(&net.addr(0), &pushed).await,
        b"19        BLOCKCHAIN REJECTED"
    );

    // The same blocks served by a peer claiming huge work.
    let (fake, served) = fake_peer(
        easy[1..].to_vec(),
        "340282366920938463463374607431768211455",
    )
    .await;
    client.add_peer(&fake).await.unwrap();
    wait_for(
        Duration::from_secs(60),
        "the lying peer to be dropped",
        || async { net.log(0).contains("dropping peer").then_some(()) },
    )
    .await
    .unwrap();
    let status = client.status().await.unwrap();
    assert_eq!(status.height, 1, "the honest chain stays");
    assert!(!status.peers.contains(&fake));
    // One batch per sync attempt, five attempts before the ban: never the whole chain.
    assert!(
        served.load(Ordering::Relaxed) <= 6,
        "served {} batches",
        served.load(Ordering::Relaxed)
    );
    assert_eq!(client.validate().await.unwrap(), None);
}

/// Every timestamp of PROTOCOL.md's refused vectors (texts a lenient reader such as
/// chrono's or Python's `strptime` accepts among them) is refused by rule 6, from a client
/// and from a peer serving a chain with one; the node keeps its chain.
#[tokio::test]
async fn timestamps_outside_the_exact_form_are_refused() {
    let net = TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap();
    let client = net.client(0);
    let lenient = |text: &str| {
        let mut b = next_block("lenient");
        b.timestamp = text.into();
        reseal(&mut b);
        b
    };
    for text in powchain::block::TIMESTAMPS_REFUSED {
        // A fresh client each time: five refusals close a connection.
        let one = NodeClient::new(net.addr(0));
        let (result, reason) = one.new_block(lenient(text)).await.unwrap();
        assert_eq!(result, BlockOutcome::Rejected, "{text:?}");
        let reason = reason.unwrap_or_default();
        assert!(
            reason.contains("unparsable timestamp"),
            "{text:?}: {reason}"
        );
    }
    let (fake, _) = fake_peer(vec![lenient("1/1/2026, 0:00:00")], "1000000").await;
    client.add_peer(&fake).await.unwrap();
    wait_for(DEADLINE, "the peer's block to be refused", || async {
        let log = net.log(0);
        log.lines()
            .any(|l| l.contains("peer sent an invalid block") && l.contains("unparsable timestamp"))
            .then_some(())
    })
    .await
    .unwrap();
    assert_eq!(client.status().await.unwrap().height, 0);
    assert_eq!(client.validate().await.unwrap(), None);
}

/// The size cap is strict and measured on the block's compact JSON: with `--max-block N`
/// a block of N − 1 bytes is appended and one of N bytes refused, the message and the
/// rule saying the same.
#[tokio::test]
async fn a_block_of_exactly_the_size_cap_is_refused() {
    let cap = 600usize;
    let net = TestNetwork::start(
        NODE,
        Options::isolated(1).args(["--max-block", &cap.to_string()]),
    )
    .await
    .unwrap();
    // Nonces searched from 10^6 keep seven digits (difficulty 8 takes a few hundred
    // tries), so the block's length is its data's plus a constant.
    let seal = |b: &mut Block| {
        b.nonce = 1_000_000;
        while b.compute_hash().leading_zero_bits() < b.difficulty {
            b.nonce += 1;
        }
        assert!(b.nonce < 10_000_000);
        b.hash = b.compute_hash();
    };
    let of_size = |size: usize| {
        let mut b = next_block("");
        seal(&mut b);
        let fill = size - serde_json::to_vec(&b).unwrap().len();
        b.data = BlockData::new(&json!("x".repeat(fill)));
        seal(&mut b);
        assert_eq!(serde_json::to_vec(&b).unwrap().len(), size);
        b
    };
    let client = net.client(0);
    let (result, reason) = client.new_block(of_size(cap)).await.unwrap();
    assert_eq!(result, BlockOutcome::Rejected);
    let reason = reason.unwrap_or_default();
    assert!(
        reason.contains(&format!(
            "is {cap} bytes of JSON; a block must be smaller than {cap} bytes"
        )),
        "{reason}"
    );
    let (result, reason) = client.new_block(of_size(cap - 1)).await.unwrap();
    assert_eq!(result, BlockOutcome::Appended, "{reason:?}");
}

/// Peers announcing huge frames and sending nothing, or stalling mid-frame, cost bounded
/// memory, are cut off by the idle timeout, and the node keeps serving.
#[tokio::test]
async fn huge_announcements_and_stalls_cost_bounded_memory() {
    let net = TestNetwork::start(NODE, Options::isolated(1).args(["--idle-timeout", "3"]))
        .await
        .unwrap();
    let pid = net.node(0).pid().unwrap();
    let client = net.client(0);
    client.status().await.unwrap();
    let before = rss_kib(pid);
    let mut stalled = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(net.addr(0)).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"60000000  ").await.unwrap();
        } else {
            s.write_all(b"5000      {\"type\":\"new_block\",\"block\":")
                .await
                .unwrap();
        }
        stalled.push(s);
    }
    // Every stalled connection is accepted and holds its partial frame.
    assert_eq!(client.status().await.unwrap().height, 0);
    client.mine(json!("while others stall")).await.unwrap();
    let grown = rss_kib(pid).saturating_sub(before);
    assert!(
        grown < 64 * 1024,
        "200 stalled frames grew the node by {grown} KiB"
    );
    for s in stalled.iter_mut() {
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut [0u8; 64]))
            .await
            .expect("closed by the idle timeout");
        assert_eq!(n.unwrap_or(0), 0);
    }
    assert_eq!(client.status().await.unwrap().height, 1);
}

/// A peer replaying the same block in a loop gets `ignored`, is cut off after 1,000 replays
/// (logged once), and nothing changes.
#[tokio::test]
async fn replayed_block_loop_is_cut_off() {
    let net = TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap();
    let block = net.client(0).mine(json!("once")).await.unwrap();
    let stream = TcpStream::connect(net.addr(0)).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::default());
    let request = serde_json::to_vec(&Request::NewBlock { block }).unwrap();
    let mut answered = 0;
    for _ in 0..1100 {
        if conn.send(request.clone()).await.is_err() {
            break;
        }
        match conn.next().await {
            Some(Ok(reply)) => {
                let r: Response = serde_json::from_slice(&reply).unwrap();
                assert!(
                    matches!(
                        r,
                        Response::BlockResult {
                            result: BlockOutcome::Ignored,
                            ..
                        }
                    ),
                    "{r:?}"
                );
                answered += 1;
            }
            _ => break,
        }
    }
    assert_eq!(answered, 1000);
    assert_eq!(net.log(0).matches("sent again").count(), 1);
    assert_eq!(net.client(0).status().await.unwrap().height, 1);
}

/// With `--strict-admin` or a non-loopback bind, the bare `SHUTDOWN` is refused even from
/// loopback; the cookie still works; the cookie file is readable by its user only; a
/// non-loopback bind logs what is exposed.
#[tokio::test]
async fn admin_needs_the_cookie_when_strict() {
    let mut net = TestNetwork::start(NODE, Options::isolated(0))
        .await
        .unwrap();
    net.add_node(&["--strict-admin"]).await.unwrap();
    net.add_node(&["--host", "0.0.0.0"]).await.unwrap();
    for i in 0..2 {
        let port = net.node(i).port();
        let addr = format!("127.0.0.1:{port}");
        let reply = String::from_utf8(exchange(&addr, b"SHUTDOWN").await).unwrap();
        assert!(reply.contains("unauthorized"), "{reply}");
        let anon = NodeClient::new(addr.clone());
        assert_eq!(
            anon.shutdown().await.unwrap_err().code(),
            Some("unauthorized")
        );
        assert_eq!(
            anon.remove_peer("127.0.0.1:1").await.unwrap_err().code(),
            Some("unauthorized")
        );
        // Reading and mining stay open.
        anon.status().await.unwrap();
        anon.mine(json!("open to all")).await.unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(net.node(i).data_dir.join(".cookie"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
    assert!(net.log(1).contains("non-loopback"), "{}", net.log(1));
    let cookie = powchain::client::read_cookie(&net.node(1).data_dir);
    NodeClient::new(format!("127.0.0.1:{}", net.node(1).port()))
        .with_cookie(cookie)
        .shutdown()
        .await
        .unwrap();
    assert_eq!(net.stop(0).await.unwrap(), Some(0));
}

/// A client's block that does not link makes the node sync with nobody (otherwise any
/// client could make it flood its peers); a peer's makes it sync with that peer only, at
/// most once a second.
#[tokio::test]
async fn unlinked_blocks_make_the_node_sync_only_with_their_peer_and_rarely() {
    let net = TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap();
    let client = net.client(0);
    // A peer that claims less work than ours: the link alone never makes us sync with it.
    let (fake, served) = fake_peer(vec![], "1").await;
    client.add_peer(&fake).await.unwrap();
    wait_for(DEADLINE, "the fake peer's handshake", || async {
        let status = client.status().await.ok()?;
        status.peers.contains(&fake).then_some(())
    })
    .await
    .unwrap();
    let before = served.load(Ordering::Relaxed);

    let mut orphan = next_block("orphan");
    orphan.index = 5;
    orphan.prev_hash = powchain::BlockHash([0xab; 32]).into();
    reseal(&mut orphan);
    for _ in 0..4 {
        let (outcome, reason) = client.new_block(orphan.clone()).await.unwrap();
        assert_eq!(outcome, BlockOutcome::Rejected);
        assert!(reason.unwrap().contains("only a peer's block"));
    }
    assert_eq!(
        served.load(Ordering::Relaxed),
        before,
        "a client made the node sync"
    );

    // The same block from the peer itself (after its hello on the connection).
    let mut conn = Framed::new(
        TcpStream::connect(net.addr(0)).await.unwrap(),
        FrameCodec::default(),
    );
    let status = client.status().await.unwrap();
    let hello = Request::Hello(Hello {
        version: 1,
        genesis: status.genesis.unwrap(),
        listen: fake.clone(),
        height: 0,
        tip: status.genesis.unwrap(),
        work: "1".into(),
    });
    let mut ask = async |request: &Request| {
        conn.send(serde_json::to_vec(request).unwrap())
            .await
            .unwrap();
        let reply = conn.next().await.unwrap().unwrap();
        serde_json::from_slice::<Response>(&reply).unwrap()
    };
    assert!(matches!(ask(&hello).await, Response::Hello(_)));
    let offer = Request::NewBlock {
        block: orphan.clone(),
    };
    assert!(matches!(
        ask(&offer).await,
        Response::BlockResult {
            result: BlockOutcome::Rejected,
            ..
        }
    ));
    assert_eq!(
        served.load(Ordering::Relaxed),
        before + 1,
        "one sync with the peer"
    );
    match ask(&offer).await {
        Response::BlockResult {
            result: BlockOutcome::Ignored,
            reason: Some(reason),
        } => assert!(reason.contains("ran less than"), "{reason}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(served.load(Ordering::Relaxed), before + 1, "rate limited");
}
