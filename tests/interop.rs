//! A second client written from PROTOCOL.md alone (`examples/verify_chain.py`, Python 3)
//! agrees with the real node on every block, and names the broken block of a tampered
//! chain served by a fake node.

mod common;

use std::process::Output;

use common::*;
use powchain::{Block, BlockData, Blockchain, ChainParams};
use powchain_testkit::fake::{Answer, FakePeer};
use powchain_testkit::{Options, Topology};
use serde_json::json;

const VERIFIER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/verify_chain.py");

async fn verify(addr: &str) -> Output {
    let python = std::env::var("PYTHON3").unwrap_or_else(|_| "python3".into());
    tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(python)
            .arg(VERIFIER)
            .arg(addr)
            .output(),
    )
    .await
    .expect("verifier finished in time")
    .expect("python3 runs")
}

/// Serves `blocks` as the reply to every request, like a node would.
async fn fake_node(blocks: Vec<Block>) -> String {
    let reply = serde_json::to_vec(&json!({ "type": "chain", "blocks": blocks })).unwrap();
    FakePeer::bind()
        .await
        .serve(move |_| Answer::Frame(reply.clone()))
}

/// A chain mined by the real node, with data that exercises the canonical form (unsorted
/// nested keys, non-ASCII text, escapes, floats), is valid for the Python client.
#[tokio::test]
#[cfg_attr(not(has_python3), ignore = "needs python3 (apt-get install python3)")]
async fn python_client_verifies_a_real_nodes_chain() {
    let net = network(Options::new(1).topology(Topology::Isolated)).await;
    let c = net.client(0);
    for data in [
        json!({"to": "bob", "from": "alice", "amount": 5}),
        json!({"z": {"y": [3, {"b": 1, "a": 2}]}, "a": "naïve café ☃ \"quoted\"\n\t\u{1}"}),
        json!([
            1.5,
            0.1,
            1e100,
            1e-7,
            1e-5,
            123456789012345680000.0,
            5.0,
            1e16,
            -2.5e-300
        ]),
        json!("plain text"),
        json!(null),
    ] {
        c.mine(data).await.unwrap();
    }
    let out = verify(&net.addr(0)).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("valid (6 blocks, tip "), "{stdout}");
    let tip = c.status().await.unwrap().tip;
    assert!(stdout.contains(&tip.to_hex()), "{stdout}");
}

/// A chain whose block 2 was changed after mining is refused, naming block 2; one whose
/// block 3 links elsewhere names block 3; one with a nonce above 2^53 - 1 names it.
#[tokio::test]
#[cfg_attr(not(has_python3), ignore = "needs python3 (apt-get install python3)")]
async fn python_client_names_the_broken_block_of_a_tampered_chain() {
    let params = ChainParams::with_difficulty(8);
    let mut chain = Blockchain::new(params);
    for i in 0..4 {
        let block = powchain::chain::mine_next(&chain, BlockData::new(&json!({ "i": i })), 1);
        chain.push(block).unwrap();
    }
    let honest = chain.to_vec();
    let addr = fake_node(honest.clone()).await;
    let out = verify(&addr).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    let mut tampered = honest.clone();
    tampered[2].data = BlockData::new(&json!({ "i": 1000 }));
    expect_invalid(tampered, "invalid: block 2 claims hash").await;

    let mut relinked = honest.clone();
    relinked[3].prev_hash = honest[1].hash.into();
    expect_invalid(relinked, "invalid: block 3 links to").await;

    let mut big = honest.clone();
    big[1].nonce = powchain::block::MAX_NONCE + 1;
    expect_invalid(big, "invalid: block 1 has nonce 9007199254740992").await;

    // Rule 6's exact form: what `strptime` alone would read (an unpadded field, a leap
    // second, a missing space) is refused, as the node refuses it.
    for text in powchain::block::TIMESTAMPS_REFUSED {
        let mut odd = honest.clone();
        odd[4].timestamp = text.into();
        odd[4].hash = odd[4].compute_hash();
        while odd[4].hash.leading_zero_bits() < odd[4].difficulty {
            odd[4].nonce += 1;
            odd[4].hash = odd[4].compute_hash();
        }
        expect_invalid(odd, "invalid: block 4 has an unparsable timestamp").await;
    }
}

/// Serves `blocks` from a fake node and checks that the verifier exits 1 with `problem`.
async fn expect_invalid(blocks: Vec<Block>, problem: &str) {
    let out = verify(&fake_node(blocks).await).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.starts_with(problem), "{stdout}");
}
