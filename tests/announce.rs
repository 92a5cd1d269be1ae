//! Announce, then fetch (protocol version 2) against a real node: a peer announces a
//! block's header and serves its body to `get_block`. What a lying or flooding announcer
//! can do: a header short of its difficulty, a body never served, a body that is not the
//! announced one, a flood of made-up headers. And the honest path: the body is fetched
//! once, appended, and relayed onward as an announcement to a version-2 peer and whole to
//! a version-1 one.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use powchain::frame::FrameCodec;
use powchain::message::{BlockOutcome, Encoding, Header, Request, Response};
use powchain::{Block, BlockData, BlockHash, Blockchain, ChainParams};
use powchain_testkit::fake::{self, Answer, FakePeer, hello};
use powchain_testkit::{Options, TestNetwork, reseal, wait_for};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

/// A valid next block for a difficulty-8 chain holding only genesis, with `pad` bytes of
/// padding (a block big enough to be announced rather than pushed).
fn next_block(data: &str, pad: usize) -> Block {
    let chain = Blockchain::new(ChainParams::with_difficulty(8));
    let data = BlockData::new(&json!({ "d": data, "pad": "x".repeat(pad) }));
    powchain::chain::mine_next(&chain, data, 1)
}

/// How a fake peer answers `get_block`.
#[derive(Clone, Copy, PartialEq)]
enum Serve {
    /// With the block it was given.
    Honestly,
    /// With no block.
    Nothing,
    /// Never: the request is read and left unanswered.
    Stall,
    /// With another block under the announced hash.
    Another,
}

/// What a fake peer saw.
#[derive(Default)]
struct Seen {
    /// Hashes asked for with `get_block`, in order.
    asked: Vec<BlockHash>,
    /// `announce`s and `new_block`s it was sent.
    announced: Vec<Header>,
    pushed: Vec<Block>,
}

/// A fake peer of protocol `version` listening for the node's link client: answers
/// `hello`, serves `blocks` to `get_block` as `serve` says, and records what it is sent.
async fn fake_peer(version: u32, blocks: Vec<Block>, serve: Serve) -> (String, Arc<Mutex<Seen>>) {
    let peer = FakePeer::bind().await;
    let seen = Arc::new(Mutex::new(Seen::default()));
    let (hello, record) = (hello(version, &peer.addr), seen.clone());
    let addr = peer.serve(move |frame| {
        let reply = match serde_json::from_slice::<Request>(frame) {
            Ok(Request::Hello(_)) => Response::Hello(hello.clone()),
            Ok(Request::GetBlock { hash, .. }) => {
                record.lock().unwrap().asked.push(hash);
                let held = blocks.iter().find(|b| b.hash == hash).cloned();
                match (serve, held) {
                    // Keep the connection open, answer nothing.
                    (Serve::Stall, _) => return Answer::Stall,
                    (Serve::Honestly, Some(b)) => Response::Blocks { blocks: vec![b] },
                    (Serve::Another, Some(mut b)) => {
                        b.data = BlockData::new(&json!("another body"));
                        Response::Blocks { blocks: vec![b] }
                    }
                    _ => Response::Blocks { blocks: vec![] },
                }
            }
            Ok(Request::Announce { header }) => {
                record.lock().unwrap().announced.push(header);
                Response::Ok
            }
            Ok(Request::NewBlock { block }) => {
                record.lock().unwrap().pushed.push(block);
                Response::BlockResult {
                    result: BlockOutcome::Ignored,
                    reason: None,
                }
            }
            Ok(Request::GetPeers) => Response::Peers { peers: vec![] },
            Ok(Request::GetAddr) => Response::Addr { addrs: vec![] },
            _ => Response::Ok,
        };
        Answer::json(&reply)
    });
    (addr, seen)
}

/// A connection to the node that greeted it as the peer at `listen`.
async fn linked(net: &TestNetwork, version: u32, listen: &str) -> Framed<TcpStream, FrameCodec> {
    let stream = TcpStream::connect(net.addr(0)).await.unwrap();
    let mut conn = Framed::new(stream, FrameCodec::default());
    let reply = call(&mut conn, &Request::Hello(hello(version, listen))).await;
    assert!(matches!(reply, Response::Hello(_)), "{reply:?}");
    conn
}

async fn call(conn: &mut Framed<TcpStream, FrameCodec>, request: &Request) -> Response {
    fake::call(conn, request, DEADLINE).await
}

async fn node() -> TestNetwork {
    TestNetwork::start(NODE, Options::isolated(1))
        .await
        .unwrap()
}

/// A header short of its difficulty, or of the wrong difficulty, is rejected before any
/// fetch, with the rule; a client (no `hello` on the connection) may not announce at all.
#[tokio::test]
async fn headers_that_cannot_be_a_block_on_our_tip_are_refused_unfetched() {
    let net = node().await;
    let block = next_block("b", 0);
    let (addr, seen) = fake_peer(2, vec![block.clone()], Serve::Honestly).await;

    let stream = TcpStream::connect(net.addr(0)).await.unwrap();
    let mut client = Framed::new(stream, FrameCodec::default());
    let reply = call(
        &mut client,
        &Request::Announce {
            header: Header::of(&block),
        },
    )
    .await;
    assert!(
        matches!(&reply, Response::BlockResult { result: BlockOutcome::Rejected, reason: Some(r) } if r.contains("linked peer")),
        "{reply:?}"
    );

    let mut conn = linked(&net, 2, &addr).await;
    let mut weak = Header::of(&block);
    weak.hash = BlockHash([0xff; 32]);
    let mut easy = block.clone();
    easy.difficulty = 2;
    reseal(&mut easy);
    for (header, want) in [
        (weak, "does not meet its difficulty"),
        (Header::of(&easy), "difficulty 2 where 8 is due"),
    ] {
        let reply = call(&mut conn, &Request::Announce { header }).await;
        assert!(
            matches!(&reply, Response::BlockResult { result: BlockOutcome::Rejected, reason: Some(r) } if r.contains(want)),
            "{reply:?} should say {want:?}"
        );
    }
    assert!(seen.lock().unwrap().asked.is_empty(), "nothing was fetched");
    assert_eq!(net.client(0).status().await.unwrap().height, 0);
}

/// The honest path: an announced body is fetched from its announcer once, checked,
/// appended, and relayed onward: announced to a version-2 peer, pushed whole to a
/// version-1 one. A second announcer of the same block is not asked.
#[tokio::test]
async fn an_announced_block_is_fetched_once_appended_and_relayed_by_version() {
    let net = node().await;
    let block = next_block("honest", 20_000);
    let (first, seen_first) = fake_peer(2, vec![block.clone()], Serve::Honestly).await;
    let (second, seen_second) = fake_peer(2, vec![block.clone()], Serve::Honestly).await;
    let (old, seen_old) = fake_peer(1, vec![], Serve::Nothing).await;
    let (new, seen_new) = fake_peer(2, vec![], Serve::Nothing).await;
    let mut c_old = linked(&net, 1, &old).await;
    let mut c_new = linked(&net, 2, &new).await;
    let mut c1 = linked(&net, 2, &first).await;
    let mut c2 = linked(&net, 2, &second).await;
    let header = Header::of(&block);
    let r1 = call(
        &mut c1,
        &Request::Announce {
            header: header.clone(),
        },
    )
    .await;
    let r2 = call(&mut c2, &Request::Announce { header }).await;
    assert_eq!(r1, Response::Ok);
    assert!(
        matches!(
            r2,
            Response::Ok
                | Response::BlockResult {
                    result: BlockOutcome::Ignored,
                    ..
                }
        ),
        "{r2:?}"
    );
    let client = net.client(0);
    wait_for(DEADLINE, "the announced block appended", || async {
        let s = client.status().await.ok()?;
        (s.tip == block.hash).then_some(())
    })
    .await
    .unwrap();
    wait_for(DEADLINE, "the block relayed onward", || async {
        let announced = seen_new.lock().unwrap().announced.len();
        let pushed = seen_old.lock().unwrap().pushed.len();
        (announced == 1 && pushed == 1).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(seen_first.lock().unwrap().asked, vec![block.hash]);
    assert!(seen_second.lock().unwrap().asked.is_empty(), "fetched once");
    assert_eq!(seen_old.lock().unwrap().pushed[0], block);
    assert!(seen_old.lock().unwrap().announced.is_empty());
    assert_eq!(seen_new.lock().unwrap().announced[0], Header::of(&block));
    assert!(seen_new.lock().unwrap().pushed.is_empty());
    // The node serves the body it took to whoever asks.
    let reply = call(
        &mut c_new,
        &Request::GetBlock {
            hash: block.hash,
            encoding: Encoding::Json,
        },
    )
    .await;
    assert_eq!(
        reply,
        Response::Blocks {
            blocks: vec![block.clone()]
        }
    );
    let reply = call(
        &mut c_old,
        &Request::GetBlock {
            hash: BlockHash([3; 32]),
            encoding: Encoding::Json,
        },
    )
    .await;
    assert_eq!(reply, Response::Blocks { blocks: vec![] });
}

/// An announcer that never serves the body, one that serves nothing, and one that serves
/// another body under the announced hash: the node asks each in turn, strikes the liar,
/// appends nothing false, and takes the block from an honest announcer.
#[tokio::test]
async fn bodies_never_served_or_not_the_announced_one_change_nothing() {
    let net = node().await;
    let block = next_block("contested", 20_000);
    let (staller, seen_staller) = fake_peer(2, vec![block.clone()], Serve::Stall).await;
    let (empty, seen_empty) = fake_peer(2, vec![block.clone()], Serve::Nothing).await;
    let (liar, seen_liar) = fake_peer(2, vec![block.clone()], Serve::Another).await;
    let (honest, seen_honest) = fake_peer(2, vec![block.clone()], Serve::Honestly).await;
    let header = Header::of(&block);
    let mut conns = Vec::new();
    for addr in [&staller, &empty, &liar, &honest] {
        let mut conn = linked(&net, 2, addr).await;
        let reply = call(
            &mut conn,
            &Request::Announce {
                header: header.clone(),
            },
        )
        .await;
        assert!(
            matches!(
                reply,
                Response::Ok
                    | Response::BlockResult {
                        result: BlockOutcome::Ignored,
                        ..
                    }
            ),
            "{reply:?}"
        );
        conns.push(conn);
    }
    let client = net.client(0);
    wait_for(DEADLINE, "the block from the honest announcer", || async {
        let s = client.status().await.ok()?;
        (s.tip == block.hash).then_some(())
    })
    .await
    .unwrap();
    for seen in [&seen_staller, &seen_empty, &seen_liar, &seen_honest] {
        assert_eq!(
            seen.lock().unwrap().asked,
            vec![block.hash],
            "each asked once, in turn"
        );
    }
    assert_eq!(client.validate().await.unwrap(), None);
    let log = net.log(0);
    assert!(log.contains("does not match its announcement"), "{log}");
}

/// A flood of made-up headers (each linking to our tip, of the right difficulty, its
/// hash meeting it: all a header can show) from a peer that never serves a body: at most
/// 64 are being fetched at once, the rest are ignored with the reason, the node keeps
/// answering, and once the fetches time out (2 s, all at once: they wait on the one link)
/// the marks are gone and a real block is taken.
#[tokio::test]
async fn a_flood_of_announcements_costs_bounded_fetches() {
    let net = node().await;
    let (flooder, seen) = fake_peer(2, vec![], Serve::Stall).await;
    let mut conn = linked(&net, 2, &flooder).await;
    let template = next_block("template", 0);
    let mut ignored = 0;
    for i in 0..300u32 {
        let mut header = Header::of(&template);
        let mut hash = [0u8; 32];
        hash[2..6].copy_from_slice(&i.to_be_bytes());
        hash[31] = 1;
        header.hash = BlockHash(hash);
        match call(&mut conn, &Request::Announce { header }).await {
            Response::Ok => {}
            Response::BlockResult {
                result: BlockOutcome::Ignored,
                reason: Some(r),
            } if r.contains("being fetched already") => ignored += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(ignored, 300 - 64, "64 fetches at once, the rest ignored");
    let client = net.client(0);
    assert_eq!(client.status().await.unwrap().height, 0);
    let asked = seen.lock().unwrap().asked.len();
    assert!((1..=64).contains(&asked), "{asked} fetches asked");
    let block = next_block("after the flood", 20_000);
    let (honest, _) = fake_peer(2, vec![block.clone()], Serve::Honestly).await;
    wait_for(DEADLINE, "the real block taken after the flood", || {
        let (net, honest, header, client) = (&net, &honest, Header::of(&block), &client);
        async move {
            // Ignored while the flood's marks last, fetched once they are gone.
            let mut c = linked(net, 2, honest).await;
            call(&mut c, &Request::Announce { header }).await;
            let s = client.status().await.ok()?;
            (s.tip == block.hash).then_some(())
        }
    })
    .await
    .unwrap();
}

/// A call cancelled halfway (its caller's own timeout) does not leave its reply on the
/// kept connection for the next call to read: the next call gets its own reply.
#[tokio::test]
async fn a_cancelled_call_does_not_poison_the_next_one() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut conn = Framed::new(s, FrameCodec::default());
                while let Some(Ok(frame)) = conn.next().await {
                    let reply = match serde_json::from_slice::<Request>(&frame) {
                        Ok(Request::GetBlock { hash, .. }) => {
                            // Slow: the caller gives up first.
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            Response::Error {
                                code: powchain::message::ErrorCode::Internal,
                                message: format!("late reply for {}", hash.short()),
                            }
                        }
                        _ => Response::Addr {
                            addrs: vec!["10.0.0.1:1".into()],
                        },
                    };
                    let _ = conn.send(serde_json::to_vec(&reply).unwrap()).await;
                }
            });
        }
    });
    let client = powchain::NodeClient::new(addr);
    let cancelled = tokio::time::timeout(
        Duration::from_millis(50),
        client.get_block(BlockHash([1; 32])),
    )
    .await;
    assert!(cancelled.is_err(), "the slow call was cancelled");
    let addrs = client.get_addr().await.unwrap();
    assert_eq!(addrs, vec!["10.0.0.1:1".to_owned()]);
}

/// Malformed `announce` and `get_block` requests (fields missing, of the wrong type, a
/// hash that is no hash, a size beyond any number) get `bad_request`, fetch nothing, and
/// the connection stays usable.
#[tokio::test]
async fn malformed_announcements_and_fetches_are_bad_requests() {
    let net = node().await;
    let block = next_block("b", 0);
    let (addr, seen) = fake_peer(2, vec![block.clone()], Serve::Honestly).await;
    let mut conn = linked(&net, 2, &addr).await;
    let mut header = serde_json::to_value(Header::of(&block)).unwrap();
    let mut cases = Vec::new();
    for field in [
        "index",
        "timestamp",
        "nonce",
        "difficulty",
        "prev_hash",
        "hash",
        "size",
    ] {
        let mut h = header.clone();
        h.as_object_mut().unwrap().remove(field);
        cases.push(json!({"type": "announce", "header": h}));
    }
    header["size"] = json!(-1);
    cases.push(json!({"type": "announce", "header": header.clone()}));
    header["size"] = json!(1e30);
    cases.push(json!({"type": "announce", "header": header.clone()}));
    header["size"] = json!("100");
    cases.push(json!({"type": "announce", "header": header}));
    cases.push(json!({"type": "announce"}));
    cases.push(json!({"type": "get_block"}));
    cases.push(json!({"type": "get_block", "hash": "not a hash"}));
    cases.push(json!({"type": "get_block", "hash": 7}));
    for case in cases {
        conn.send(serde_json::to_vec(&case).unwrap()).await.unwrap();
        let frame = tokio::time::timeout(DEADLINE, conn.next())
            .await
            .expect("a reply in time")
            .expect("the connection stays open")
            .unwrap();
        let reply: serde_json::Value = serde_json::from_slice(&frame).unwrap();
        assert_eq!(reply["code"], "bad_request", "{case} got {reply}");
    }
    let reply = call(
        &mut conn,
        &Request::GetBlock {
            hash: block.hash,
            encoding: Encoding::Json,
        },
    )
    .await;
    assert_eq!(reply, Response::Blocks { blocks: vec![] });
    assert!(seen.lock().unwrap().asked.is_empty(), "nothing was fetched");
    assert_eq!(net.client(0).status().await.unwrap().height, 0);
}
