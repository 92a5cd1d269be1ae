//! Blocks in binary on the wire (protocol version 3) against a real node: the lists it
//! serves read as the blocks its JSON replies carry; it asks a version-3 peer for binary
//! lists and a version-2 one never; a damaged list from a peer changes nothing; an
//! announced body fetched in binary that is damaged is asked of the next announcer.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use powchain::frame::FrameCodec;
use powchain::message::{BlockOutcome, Encoding, ErrorCode, Header, Hello, Request, Response};
use powchain::record;
use powchain::{Block, BlockData, Blockchain, ChainParams, NodeClient};
use powchain_testkit::fake::{self, Answer, FakePeer};
use powchain_testkit::{Options, TestNetwork, wait_for};
use serde_json::json;
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

/// How a fake peer answers a block request.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// As the request asks: a binary list for `"encoding":"binary"`, else JSON.
    AsAsked,
    /// Always JSON, as a node of version 1 or 2 does whatever the request says.
    Json,
    /// A binary list cut short in its last record.
    Damaged,
}

/// A chain of `n` blocks at difficulty 8 on the isolated network's genesis.
fn chain(n: usize) -> Blockchain {
    let mut chain = Blockchain::new(ChainParams::with_difficulty(8));
    for i in 0..n {
        let data = BlockData::new(&json!({ "i": i, "memo": "naïve ☃ \"q\"" }));
        let block = powchain::chain::mine_next(&chain, data, 1);
        chain.push(block).unwrap();
    }
    chain
}

/// A fake peer of protocol `version` holding `chain`: answers `hello` with its tip and
/// work (genesis and no work unless `claim_tip`, so that it is not synced with), serves
/// `get_blocks`, `get_range` and `get_block` as `serve` says, and records the raw text of
/// every block request it is sent.
async fn fake_peer(
    version: u32,
    chain: Blockchain,
    serve: Serve,
    claim_tip: bool,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let peer = FakePeer::bind().await;
    let asked = Arc::new(Mutex::new(Vec::new()));
    let mut hello = fake::hello(version, &peer.addr);
    hello.genesis = chain.genesis().hash;
    hello.tip = chain.genesis().hash;
    if claim_tip {
        hello.height = chain.height();
        hello.tip = chain.tip().hash;
        hello.work = chain.work().to_string();
    }
    let record = asked.clone();
    let addr = peer.serve(move |frame| {
        let request = serde_json::from_slice::<Request>(frame);
        let blocks = match &request {
            Ok(Request::GetBlocks { locator, limit, .. }) => Some(
                chain
                    .blocks_after(locator, limit.unwrap_or(5000).min(5000))
                    .to_vec(),
            ),
            Ok(Request::GetRange { from, count, .. }) => {
                Some(chain.range(*from, (*count).min(5000)))
            }
            Ok(Request::GetBlock { hash, .. }) => Some(
                chain
                    .height_of(hash)
                    .and_then(|h| chain.get(h))
                    .cloned()
                    .into_iter()
                    .collect(),
            ),
            _ => None,
        };
        match (blocks, &request) {
            (Some(blocks), Ok(request)) => {
                record
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(frame).into_owned());
                let binary = request.encoding() == Encoding::Binary;
                match serve {
                    Serve::AsAsked if binary => Answer::Frame(record::encode_list(&blocks)),
                    Serve::Damaged => {
                        let mut list = record::encode_list(&blocks);
                        list.truncate(list.len().saturating_sub(10));
                        Answer::Frame(list)
                    }
                    _ => Answer::json(&Response::Blocks { blocks }),
                }
            }
            (_, Ok(Request::Hello(_))) => Answer::json(&Response::Hello(hello.clone())),
            (_, Ok(Request::GetAddr)) => Answer::json(&Response::Addr { addrs: vec![] }),
            (_, Ok(Request::Ping)) => Answer::json(&Response::Pong(powchain::message::Pong {
                height: hello.height,
                tip: hello.tip,
                work: hello.work.clone(),
            })),
            _ => Answer::json(&Response::Ok),
        }
    });
    (addr, asked)
}

async fn node() -> TestNetwork {
    TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap()
}

/// Sends `payload` as one frame on `conn` and returns the reply frame.
async fn call(conn: &mut Framed<TcpStream, FrameCodec>, payload: Vec<u8>) -> Vec<u8> {
    fake::call_raw(conn, payload, DEADLINE).await
}

/// Sends `payload` as one frame on a fresh connection and returns the reply frame.
async fn raw(net: &TestNetwork, payload: serde_json::Value) -> Vec<u8> {
    let stream = TcpStream::connect(net.addr(0)).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::default());
    call(&mut conn, serde_json::to_vec(&payload).unwrap()).await
}

/// Every request that lists blocks answers `"encoding":"binary"` with a binary list of the
/// very blocks its JSON reply carries; an unknown encoding is a `bad_request` and the node
/// goes on; a client asking binary reads the same chain as one asking JSON.
#[tokio::test]
async fn binary_lists_carry_the_blocks_the_json_replies_do() {
    let net = node().await;
    let client = net.client(0);
    for i in 0..3 {
        client
            .mine(json!({ "n": i, "text": "café \"quoted\"\n" }))
            .await
            .unwrap();
    }
    let chain = client.get_chain().await.unwrap();
    assert_eq!(chain.len(), 4);
    let cases = [
        (json!({"type": "get_chain"}), chain.clone()),
        (
            json!({"type": "get_blocks", "locator": [chain[1].hash.to_hex()]}),
            chain[2..].to_vec(),
        ),
        (json!({"type": "get_tail", "count": 2}), chain[2..].to_vec()),
        (
            json!({"type": "get_range", "from": 1, "count": 2}),
            chain[1..3].to_vec(),
        ),
        (
            json!({"type": "get_block", "hash": chain[3].hash.to_hex()}),
            vec![chain[3].clone()],
        ),
    ];
    for (mut request, want) in cases {
        let json_reply = raw(&net, request.clone()).await;
        assert_eq!(json_reply.first(), Some(&b'{'), "JSON unless asked");
        request["encoding"] = json!("binary");
        let reply = raw(&net, request.clone()).await;
        assert!(
            record::is_list(&reply),
            "{request}: {:?}",
            &reply[..8.min(reply.len())]
        );
        let blocks = record::decode_list(&reply, usize::MAX).unwrap();
        assert_eq!(blocks, want, "{request}");
        // The list is smaller than the JSON reply it stands for.
        assert!(reply.len() < json_reply.len(), "{request}");
    }

    let reply = raw(
        &net,
        json!({"type": "get_tail", "count": 1, "encoding": "xml"}),
    )
    .await;
    match serde_json::from_slice::<Response>(&reply).unwrap() {
        Response::Error { code, .. } => assert_eq!(code, ErrorCode::BadRequest),
        other => panic!("expected bad_request, got {other:?}"),
    }

    let binary = NodeClient::new(net.addr(0)).with_binary_blocks(true);
    assert_eq!(binary.get_chain().await.unwrap(), chain);
    assert_eq!(binary.get_range(2, 10).await.unwrap(), chain[2..]);
    assert_eq!(binary.get_tail(1).await.unwrap(), chain[3..]);
    assert_eq!(
        binary.get_block(chain[2].hash).await.unwrap().as_ref(),
        Some(&chain[2])
    );
    assert_eq!(client.validate().await.unwrap(), None);
}

/// A node syncing from a version-3 peer asks it for binary lists and takes its chain; of a
/// version-2 peer (JSON only) it never asks one, and syncs all the same.
#[tokio::test]
async fn a_node_asks_binary_lists_of_version_3_peers_only() {
    for (version, serve, binary) in [(3, Serve::AsAsked, true), (2, Serve::Json, false)] {
        let net = node().await;
        let client = net.client(0);
        let theirs = chain(12);
        let tip = theirs.tip().hash;
        let (addr, asked) = fake_peer(version, theirs, serve, true).await;
        client.add_peer(&addr).await.unwrap();
        wait_for(DEADLINE, "the node to take the peer's chain", || async {
            let s = client.status().await.ok()?;
            (s.tip == tip).then_some(())
        })
        .await
        .unwrap();
        let asked = asked.lock().unwrap().clone();
        assert!(!asked.is_empty());
        for request in &asked {
            assert_eq!(
                request.contains(r#""encoding":"binary""#),
                binary,
                "version {version}: {request}"
            );
        }
        assert_eq!(client.validate().await.unwrap(), None);
    }
}

/// A version-3 peer whose binary lists are cut short: the node asks it, refuses the list,
/// names the fault in its log, keeps its chain and keeps serving.
#[tokio::test]
async fn a_damaged_binary_list_changes_nothing() {
    let net = node().await;
    let client = net.client(0);
    client.mine(json!("ours")).await.unwrap();
    let before = client.status().await.unwrap();
    let (addr, asked) = fake_peer(3, chain(12), Serve::Damaged, true).await;
    client.add_peer(&addr).await.unwrap();
    if let Err(e) = wait_for(DEADLINE, "the node to read a damaged list", || async {
        let log = net.log(0);
        (log.contains("does not read") && log.contains("truncated")).then_some(())
    })
    .await
    {
        panic!("{e}\n{}", net.log(0));
    }
    assert!(!asked.lock().unwrap().is_empty());
    let after = client.status().await.unwrap();
    assert_eq!((after.height, after.tip), (before.height, before.tip));
    assert_eq!(client.validate().await.unwrap(), None);
    // Still a working node: it mines on its own chain.
    client.mine(json!("still ours")).await.unwrap();
    assert_eq!(client.status().await.unwrap().height, 2);
}

/// An announced body is asked of a version-3 announcer in binary; a damaged list from the
/// first announcer moves the fetch to the next, whose body is appended.
#[tokio::test]
async fn an_announced_body_is_fetched_in_binary_and_a_damaged_one_asked_again() {
    let net = node().await;
    let mut theirs = Blockchain::new(ChainParams::with_difficulty(8));
    let data = BlockData::new(&json!({ "pad": "x".repeat(20_000) }));
    let block: Block = powchain::chain::mine_next(&theirs, data, 1);
    theirs.push(block.clone()).unwrap();
    let (bad, bad_asked) = fake_peer(3, theirs.clone(), Serve::Damaged, false).await;
    let (good, good_asked) = fake_peer(3, theirs, Serve::AsAsked, false).await;
    // The announcers' connections stay open to the end: each is the announcer's link, and
    // a strike counts against a linked peer.
    let mut links = Vec::new();
    for announcer in [&bad, &good] {
        let stream = TcpStream::connect(net.addr(0)).await.unwrap();
        let mut conn = Framed::new(stream, FrameCodec::default());
        let genesis = ChainParams::with_difficulty(8).genesis().hash;
        let hello = Hello {
            version: 3,
            genesis,
            listen: announcer.clone(),
            height: 0,
            tip: genesis,
            work: "0".into(),
        };
        for request in [
            Request::Hello(hello),
            Request::Announce {
                header: Header::of(&block),
            },
        ] {
            let frame = call(&mut conn, serde_json::to_vec(&request).unwrap()).await;
            let reply: Response = serde_json::from_slice(&frame).unwrap();
            assert!(
                !matches!(
                    reply,
                    Response::Error { .. }
                        | Response::BlockResult {
                            result: BlockOutcome::Rejected,
                            ..
                        }
                ),
                "{reply:?}"
            );
        }
        links.push(conn);
    }
    let client = net.client(0);
    wait_for(DEADLINE, "the body from the second announcer", || async {
        let s = client.status().await.ok()?;
        (s.tip == block.hash).then_some(())
    })
    .await
    .unwrap();
    // Each announcer is asked for the body once, in binary.
    for asked in [&bad_asked, &good_asked] {
        let asked = asked.lock().unwrap();
        assert_eq!(asked.len(), 1, "{asked:?}");
        assert!(asked[0].contains(r#""type":"get_block""#), "{asked:?}");
        assert!(asked[0].contains(r#""encoding":"binary""#), "{asked:?}");
    }
    let log = net.log(0);
    assert!(log.contains("does not read"), "{log}");
    assert_eq!(client.validate().await.unwrap(), None);
    drop(links);
}
