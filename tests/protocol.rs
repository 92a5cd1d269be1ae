//! PROTOCOL.md to the letter, where a second implementation would otherwise have to guess:
//! frame headers, `hello`'s fields and versions, which defects are `bad_request` and which
//! break a rule, numbers JSON readers disagree on, fields a node does not keep.

mod common;

use common::*;
use powchain_testkit::{Options, TestNetwork, Topology};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Starts one node at difficulty 0 outside any registry with `args`.
async fn lone_node(args: &[&str]) -> TestNetwork {
    let options = Options::new(1)
        .difficulty(0)
        .topology(Topology::Isolated)
        .args(args.iter().copied());
    TestNetwork::start(NODE, options).await.unwrap()
}

/// Sends `payload` on a fresh connection; returns the reply's payload as text.
async fn ask(net: &TestNetwork, payload: &[u8]) -> String {
    let reply = exchange(&net.addr(0), payload).await;
    String::from_utf8_lossy(&reply[10..]).into_owned()
}

async fn ask_json(net: &TestNetwork, request: &Value) -> Value {
    let text = ask(net, &serde_json::to_vec(request).unwrap()).await;
    serde_json::from_str(&text).unwrap_or(Value::String(text))
}

/// A frame of exactly `--max-frame` bytes is read and answered; one byte more is refused
/// before it is read, as is a header whose digits come in two runs (`1 7`).
#[tokio::test]
async fn frames_at_the_cap_and_split_digits() {
    let net = lone_node(&["--max-frame", "4096"]).await;
    let at_cap = format!("{:<4096}", r#"{"type":"status"}"#);
    let body: Value = serde_json::from_str(&ask(&net, at_cap.as_bytes()).await).unwrap();
    assert_eq!(body["type"], "status", "{body}");
    let over = format!("{:<4097}", r#"{"type":"status"}"#);
    let body: Value = serde_json::from_str(&ask(&net, over.as_bytes()).await).unwrap();
    assert_eq!(body["code"], "bad_frame", "{body}");
    let mut s = TcpStream::connect(net.addr(0)).await.unwrap();
    s.write_all(b"1 7       {\"type\":\"status\"}")
        .await
        .unwrap();
    let (_, body) = read_frame(&mut s).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["code"], "bad_frame", "{body}");
}

/// `hello`: every field required, `work` a string; a higher `version` is answered with
/// the node's own; a `hello` naming the node's own address is answered and opens no link.
#[tokio::test]
async fn hello_fields_versions_and_the_nodes_own_address() {
    let net = lone_node(&[]).await;
    let status = net.client(0).status().await.unwrap();
    let genesis = status.tip.to_string();
    let hello = |version: Value, listen: &str, work: Value| {
        json!({"type":"hello","version":version,"genesis":genesis,"listen":listen,
               "height":0,"tip":genesis,"work":work})
    };
    let reply = ask_json(&net, &hello(json!(3), "127.0.0.1:9", json!("0"))).await;
    assert_eq!(reply["type"], "hello", "{reply}");
    assert_eq!(
        reply["version"],
        powchain::message::PROTOCOL_VERSION,
        "the node answers with its own version"
    );
    let reply = ask_json(&net, &hello(json!(1), "127.0.0.1:9", json!(0))).await;
    assert_eq!(reply["code"], "bad_request", "work as a number: {reply}");
    for field in ["version", "genesis", "listen", "height", "tip", "work"] {
        let mut h = hello(json!(1), "127.0.0.1:9", json!("0"));
        h.as_object_mut().unwrap().remove(field);
        assert_eq!(ask_json(&net, &h).await["code"], "bad_request", "{field}");
    }
    let reply = ask_json(&net, &hello(json!(1), "127.0.0.1:notaport", json!("0"))).await;
    assert_eq!(reply["code"], "bad_peer", "{reply}");
    let own = hello(json!(1), &status.listen, json!("0"));
    let mut conn = TcpStream::connect(net.addr(0)).await.unwrap();
    conn.write_all(&frame(&serde_json::to_vec(&own).unwrap()))
        .await
        .unwrap();
    let (_, body) = read_frame(&mut conn).await.unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["type"], "hello", "{body}");
    let status = net.client(0).status().await.unwrap();
    assert!(status.inbound.is_empty(), "{status:?}");
}

/// The table of section 7: shape defects are `bad_request`, broken rules `rejected`, and a
/// client's block whose index skips "links to unknown parent".
#[tokio::test]
async fn bad_request_or_rejected_as_the_table_says() {
    let net = lone_node(&[]).await;
    let tip = net.client(0).status().await.unwrap().tip.to_string();
    let block = json!({"index":1,"timestamp":"02/12/2026, 10:00:00","nonce":0,"difficulty":0,
                       "prev_hash":tip,"hash":"0".repeat(64),"data":"x"});
    let with = |field: &str, value: Value| {
        let mut b = block.clone();
        match value {
            Value::Null => b.as_object_mut().unwrap().remove(field),
            v => b.as_object_mut().unwrap().insert(field.to_owned(), v),
        };
        json!({"type":"new_block","block":b})
    };
    for (field, value) in [
        ("nonce", json!(-1)),
        ("index", json!(1.5)),
        ("timestamp", json!(5)),
        ("data", Value::Null),
        ("hash", Value::Null),
        ("hash", json!("A".repeat(64))),
        ("prev_hash", json!("0001")),
    ] {
        let reply = ask_json(&net, &with(field, value.clone())).await;
        assert_eq!(reply["code"], "bad_request", "{field} {value}: {reply}");
    }
    for (field, value, reason) in [
        ("nonce", json!(1u64 << 53), "nonce"),
        ("difficulty", json!(65), "difficulty"),
        (
            "timestamp",
            json!("2/12/2026, 10:00:00"),
            "unparsable timestamp",
        ),
        ("index", json!(5), "unknown parent"),
        ("hash", json!("1".repeat(64)), "claims hash"),
    ] {
        let mut request = with(field, value.clone());
        if field != "hash" {
            request["block"] = sealed(&request["block"]);
        }
        let reply = ask_json(&net, &request).await;
        assert_eq!(reply["result"], "rejected", "{field} {value}: {reply}");
        assert!(
            reply["reason"].as_str().unwrap_or("").contains(reason),
            "{field}: {reply}"
        );
    }
    let reply = ask_json(&net, &json!({"type":"get_tail"})).await;
    assert_eq!(
        reply["code"], "bad_request",
        "get_tail needs count: {reply}"
    );
}

/// Returns `block` (JSON) with the hash its fields hash to, whatever else it carries.
fn sealed(block: &Value) -> Value {
    let mut sealed = block.clone();
    if sealed.get("hash").is_none() {
        sealed["hash"] = json!("0".repeat(64));
    }
    let parsed: powchain::Block = serde_json::from_value(sealed.clone()).unwrap();
    sealed["hash"] = json!(parsed.compute_hash().to_string());
    sealed
}

/// Numbers JSON readers disagree on: `-0` is −0.0 (written `-0.0`), a key twice keeps the
/// last, a number beyond the double range makes the payload not JSON; and a block's
/// unknown fields are not kept.
#[tokio::test]
async fn numbers_readers_disagree_on_and_unknown_fields() {
    let net = lone_node(&[]).await;
    let mined = ask(&net, br#"{"type":"mine","data":[-0,{"a":1,"a":2}]}"#).await;
    let mined: Value = serde_json::from_str(&mined).unwrap();
    let block = mined["block"].clone();
    let tail = ask(&net, br#"{"type":"get_tail","count":1}"#).await;
    assert!(tail.contains(r#""data":[-0.0,{"a":2}]"#), "{tail}");
    assert_eq!(
        ask(&net, br#"{"type":"mine","data":1e400}"#).await,
        "INVALID JSON"
    );

    // A new block with a field of its own is appended, and stored and served without it.
    let mut next = json!({"index":2,"timestamp":block["timestamp"],"nonce":0,"difficulty":0,
                          "prev_hash":block["hash"],"data":"next"});
    next = sealed(&next);
    let mut extra = next.clone();
    extra["memo"] = json!("not kept");
    let reply = ask_json(&net, &json!({"type":"new_block","block":extra})).await;
    assert_eq!(reply["result"], "appended", "{reply}");
    let tail: Value =
        serde_json::from_str(&ask(&net, br#"{"type":"get_tail","count":1}"#).await).unwrap();
    assert_eq!(tail["blocks"][0], next);
    assert!(!ask(&net, br#"{"type":"get_chain"}"#).await.contains("memo"));
}
