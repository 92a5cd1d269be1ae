//! The probe: every route and error mapping through `oneshot` against real nodes, and the
//! real `probe` binary end to end, following the README's walkthrough.

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::*;
use powchain::probe::{ProbeState, app};
use powchain_testkit::{Options, TestNetwork, Topology, wait_for};
use serde_json::{Value, json};
use tower::ServiceExt;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

async fn send(
    router: &axum::Router,
    method: Method,
    uri: &str,
    body: impl Into<Body>,
) -> (StatusCode, Value) {
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(body.into())
        .unwrap();
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value)
}

fn tx(from: &str, to: &str, amount: Value) -> Value {
    json!({"transaction": {"from": from, "to": to, "amount": amount}})
}

/// Every route answers with its documented body and status through the router.
#[tokio::test]
async fn every_route_through_the_router() {
    let net = TestNetwork::start(NODE, Options::new(2).topology(Topology::Isolated))
        .await
        .unwrap();
    let r = app(ProbeState::new(LOOPBACK, net.home().to_path_buf()));
    let (p0, p1) = (net.node(0).port(), net.node(1).port());

    let (code, body) = send(&r, Method::GET, "/", Body::empty()).await;
    assert_eq!(code, StatusCode::OK);
    assert!(body.as_str().unwrap().contains("<html"));

    let (code, body) = send(
        &r,
        Method::POST,
        &format!("/mine_block/{p0}"),
        json!([tx("alice", "bob", json!(5))]).to_string(),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{body}");
    assert_eq!(body["message"], "block inserted into blockchain");
    assert_eq!(body["index"], 1);
    for f in ["hash", "prev_hash", "nonce", "timestamp"] {
        assert!(!body[f].is_null(), "{f} missing");
    }

    // Blocks keep the design's field order inside probe replies.
    let raw = {
        let req = Request::builder()
            .uri(format!("/get_chain/{p0}"))
            .body(Body::empty())
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        String::from_utf8(
            axum::body::to_bytes(resp.into_body(), usize::MAX)
                .await
                .unwrap()
                .to_vec(),
        )
        .unwrap()
    };
    assert!(raw.starts_with(r#"{"chain":[{"index":0,"timestamp":"01/01/1970, 00:00:00","nonce":0,"difficulty":8,"prev_hash":"0000","hash":"#), "{raw}");
    let (code, body) = send(&r, Method::GET, &format!("/get_chain/{p0}"), Body::empty()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(body["length"], 2);
    assert_eq!(body["chain"][1]["data"][0]["transaction"]["to"], "bob");

    let (code, body) = send(&r, Method::GET, &format!("/validate/{p0}"), Body::empty()).await;
    assert_eq!(
        (code, body),
        (
            StatusCode::OK,
            json!({"message": "is valid.", "valid": true})
        )
    );

    let (code, body) = send(&r, Method::POST, &format!("/append/{p0}"), "some text").await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(body["data"], "some text");
    let (_, last) = send(&r, Method::GET, &format!("/block/{p0}"), Body::empty()).await;
    assert_eq!(last, body);
    let (code, blocks) = send(&r, Method::GET, &format!("/blocks/{p0}"), Body::empty()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(blocks.as_array().unwrap().len(), 3);
    let (_, recent) = send(
        &r,
        Method::GET,
        &format!("/blocks/{p0}?last=2"),
        Body::empty(),
    )
    .await;
    assert_eq!(
        recent.as_array().unwrap()[..],
        blocks.as_array().unwrap()[1..]
    );

    // POST /block: node 1 takes node 0's blocks one by one; a tampered block is a 422.
    for b in &blocks.as_array().unwrap()[1..2] {
        let (code, out) = send(&r, Method::POST, &format!("/block/{p1}"), b.to_string()).await;
        assert_eq!(
            (code, out["result"].clone()),
            (StatusCode::OK, json!("appended"))
        );
    }
    let (code, out) = send(
        &r,
        Method::POST,
        &format!("/block/{p1}"),
        blocks[1].to_string(),
    )
    .await;
    assert_eq!(
        (code, out["result"].clone()),
        (StatusCode::OK, json!("ignored"))
    );
    let mut bad = blocks[2].clone();
    bad["nonce"] = json!(bad["nonce"].as_u64().unwrap() + 1);
    let (code, out) = send(&r, Method::POST, &format!("/block/{p1}"), bad.to_string()).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(out["message"].as_str().unwrap().contains("hash"), "{out}");
    let (code, _) = send(&r, Method::POST, &format!("/block/{p1}"), "{\"index\":1}").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // Peers with text bodies; an http:// prefix is tolerated.
    let (code, peers) = send(&r, Method::GET, &format!("/peers/{p1}"), Body::empty()).await;
    assert_eq!((code, peers), (StatusCode::OK, json!([])));
    let (code, _) = send(
        &r,
        Method::POST,
        &format!("/peers/{p1}"),
        format!("http://{}", net.addr(0)),
    )
    .await;
    assert_eq!(code, StatusCode::OK);
    let (_, peers) = send(&r, Method::GET, &format!("/peers/{p1}"), Body::empty()).await;
    assert_eq!(peers, json!([net.addr(0)]));
    let (code, _) = send(&r, Method::POST, &format!("/peers/{p1}"), "not an address").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, body) = send(&r, Method::DELETE, &format!("/peers/{p1}"), "127.0.0.1:9").await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{body}");

    let (code, synced) = send(&r, Method::POST, &format!("/sync/{p1}"), Body::empty()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(synced["height"], 2);
    assert_eq!(synced["tip"], blocks[2]["hash"]);
    let (code, _) = send(&r, Method::DELETE, &format!("/peers/{p1}"), net.addr(0)).await;
    assert_eq!(code, StatusCode::OK);

    let (code, st) = send(&r, Method::GET, &format!("/status/{p1}"), Body::empty()).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (st["height"].clone(), st["difficulty"].clone()),
        (json!(2), json!(8))
    );
    for f in ["tip", "work", "peers", "mining", "hash_rate"] {
        assert!(!st[f].is_null(), "{f} missing");
    }

    let (code, nodes) = send(&r, Method::GET, "/nodes", Body::empty()).await;
    assert_eq!(code, StatusCode::OK);
    // Isolated nodes stay out of the registry.
    assert_eq!(nodes, json!([]));

    let (code, body) = send(&r, Method::GET, &format!("/shutdown/{p1}"), Body::empty()).await;
    assert_eq!(
        (code, body),
        (StatusCode::OK, json!({"message": "server is shutdown"}))
    );
    wait_for(DEADLINE, "node 1 to stop", || async {
        let (code, _) = send(&r, Method::GET, &format!("/status/{p1}"), Body::empty()).await;
        (code == StatusCode::BAD_GATEWAY).then_some(())
    })
    .await
    .unwrap();
}

/// Bad input and failures map to 400, 404, 405, 413, 502 and 504 with a JSON message.
#[tokio::test]
async fn errors_map_to_real_status_codes() {
    let net = TestNetwork::start(NODE, Options::new(1).topology(Topology::Isolated))
        .await
        .unwrap();
    let p = net.node(0).port();
    // A "node" that accepts and never answers, for the timeout.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sp = silent.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let state = ProbeState::with_timeouts(
        LOOPBACK,
        net.home().to_path_buf(),
        Duration::from_millis(500),
        Duration::from_secs(60),
    );
    let r = app(state);
    let mine = format!("/mine_block/{p}");
    let cases: Vec<(Value, &str)> = vec![
        (json!([]), "empty"),
        (json!({"transaction": {}}), "list"),
        (json!([tx("", "bob", json!(1))]), "item 0: \"from\""),
        (
            json!([tx("a", "b", json!(1)), tx("a", "b", json!(-2))]),
            "item 1: \"amount\"",
        ),
        (json!([tx("a", "b", json!("5"))]), "amount"),
        (json!([{"tx": 1}]), "item 0"),
    ];
    for (body, want) in cases {
        let (code, out) = send(&r, Method::POST, &mine, body.to_string()).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
        assert!(
            out["message"].as_str().unwrap().contains(want),
            "{out} should mention {want}"
        );
    }
    let (code, out) = send(&r, Method::POST, &mine, "{not json").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(out["message"].as_str().unwrap().contains("not JSON"));
    assert_eq!(
        send(&r, Method::GET, &format!("/status/{p}"), Body::empty())
            .await
            .1["height"],
        0,
        "bad input changed nothing"
    );

    let (code, out) = send(&r, Method::GET, "/status/notaport", Body::empty()).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(out["message"].is_string());
    let (code, out) = send(&r, Method::GET, "/no/such/route", Body::empty()).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert!(out["message"].is_string());
    let (code, out) = send(&r, Method::DELETE, &format!("/status/{p}"), Body::empty()).await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    assert!(out["message"].is_string());
    let (code, out) = send(
        &r,
        Method::POST,
        &format!("/append/{p}"),
        "x".repeat(2 << 20),
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(out["message"].is_string());

    // Port 1: nothing listens there.
    let (code, out) = send(&r, Method::GET, "/status/1", Body::empty()).await;
    assert_eq!(code, StatusCode::BAD_GATEWAY);
    assert!(out["message"].as_str().unwrap().contains("port 1"), "{out}");
    let (code, out) = send(&r, Method::GET, &format!("/status/{sp}"), Body::empty()).await;
    assert_eq!(code, StatusCode::GATEWAY_TIMEOUT);
    assert!(out["message"].as_str().unwrap().contains(&sp.to_string()));
}

/// The probe binary alone (no `node` next to it, as after `cargo run --bin probe`) still
/// brings up a network with `--spawn`, running nodes from its own binary.
#[tokio::test]
async fn spawn_works_with_the_probe_binary_alone() {
    let dir = tempfile::tempdir().unwrap();
    let lonely = dir.path().join("probe");
    std::fs::copy(env!("CARGO_BIN_EXE_probe"), &lonely).unwrap();
    let home = dir.path().join("home");
    let mut probe = start_probe_bin(&lonely, &home, &["--spawn", "2", "--difficulty", "8"]).await;
    let url = probe.url.clone();
    let http = reqwest::Client::new();
    wait_for(DEADLINE, "two spawned nodes peered", || async {
        let nodes: Value = http
            .get(format!("{url}/nodes"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let list = nodes.as_array()?;
        (list.len() == 2
            && list
                .iter()
                .all(|n| n["status"]["peers"].as_array().map(Vec::len) == Some(1)))
        .then_some(())
    })
    .await
    .unwrap();
    let port = {
        let nodes: Value = http
            .get(format!("{url}/nodes"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        nodes[0]["port"].as_u64().unwrap()
    };
    let resp = http
        .post(format!("{url}/append/{port}"))
        .body("from a lone probe")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    powchain::process::terminate(&probe.child).unwrap();
    assert!(
        tokio::time::timeout(DEADLINE, probe.child.wait())
            .await
            .unwrap()
            .unwrap()
            .success()
    );
    assert!(
        powchain::registry::Registry::in_home(&home)
            .entries()
            .unwrap()
            .is_empty()
    );
}

/// The README's walkthrough, step by step, against the real probe and nodes.
#[tokio::test]
async fn readme_walkthrough_works_end_to_end() {
    let net = TestNetwork::start(NODE, Options::new(3)).await.unwrap();
    net.wait_peered(DEADLINE).await.unwrap();
    let probe = start_probe(net.home(), &[]).await;
    let (u, port) = (probe.url.clone(), net.node(0).port());
    let http = reqwest::Client::new();

    let nodes: Value = http
        .get(format!("{u}/nodes"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(nodes.as_array().unwrap().len(), 3);
    assert!(nodes.as_array().unwrap().iter().all(|n| n["up"] == true));

    let resp = http
        .post(format!("{u}/mine_block/{port}"))
        .header("Content-Type", "application/json")
        .body(r#"[{"transaction":{"from":"alice","to":"bob","amount":5}}]"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let mined: Value = resp.json().await.unwrap();
    let hash = mined["hash"].as_str().unwrap().to_owned();

    let chain: Value = http
        .get(format!("{u}/get_chain/{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(chain["length"], 2);
    let valid: Value = http
        .get(format!("{u}/validate/{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(valid["valid"], true);

    // The block reaches the other nodes.
    let other = net.node(2).port();
    wait_for(DEADLINE, "the block on node 2", || async {
        let st: Value = http
            .get(format!("{u}/status/{other}"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (st["tip"] == hash.as_str()).then_some(())
    })
    .await
    .unwrap();

    let resp = http
        .post(format!("{u}/append/{other}"))
        .body("hello from curl")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    let peers: Value = http
        .get(format!("{u}/peers/{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(peers.as_array().unwrap().len(), 2);
    let synced: Value = http
        .post(format!("{u}/sync/{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(synced["height"], 2);

    let bye: Value = http
        .get(format!("{u}/shutdown/{port}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(bye["message"], "server is shutdown");
    wait_for(DEADLINE, "the registry to drop the node", || async {
        let nodes: Value = http
            .get(format!("{u}/nodes"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (nodes.as_array()?.len() == 2).then_some(())
    })
    .await
    .unwrap();
    let resp = http.get(format!("{u}/status/{port}")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    drop(probe);
}

/// `probe --spawn 2` brings up a network, prints what a newcomer needs, and stops the nodes
/// when it gets SIGTERM.
#[tokio::test]
async fn spawn_brings_up_and_tears_down_a_network() {
    let home = tempfile::tempdir().unwrap();
    let mut probe = start_probe(home.path(), &["--spawn", "2", "--difficulty", "8"]).await;
    let text = probe.lines.join("\n");
    assert!(text.contains("dashboard: http://"), "{text}");
    assert_eq!(text.matches("curl").count(), 3, "{text}");
    let http = reqwest::Client::new();
    let u = probe.url.clone();
    wait_for(DEADLINE, "both spawned nodes up and peered", || async {
        let nodes: Value = http
            .get(format!("{u}/nodes"))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let list = nodes.as_array()?;
        (list.len() == 2
            && list.iter().all(|n| {
                n["up"] == true && n["status"]["peers"].as_array().map(Vec::len) == Some(1)
            }))
        .then_some(())
    })
    .await
    .unwrap();
    powchain::process::terminate(&probe.child).unwrap();
    let status = tokio::time::timeout(DEADLINE, probe.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success());
    let registry = powchain::registry::Registry::in_home(home.path());
    assert!(
        registry.entries().unwrap().is_empty(),
        "spawned nodes left the registry"
    );
}

/// A stopping probe lets requests in flight finish for a few seconds only: a `mine` that
/// cannot finish (difficulty 40) does not hold it for the 600 s mining timeout.
#[tokio::test]
async fn probe_stops_promptly_with_a_mine_request_in_flight() {
    let net = TestNetwork::start(
        NODE,
        Options::new(1).topology(Topology::Isolated).difficulty(40),
    )
    .await
    .unwrap();
    let mut probe = start_probe(net.home(), &[]).await;
    let url = format!("{}/append/{}", probe.url, net.node(0).port());
    let pending =
        tokio::spawn(async move { reqwest::Client::new().post(url).body("never").send().await });
    let client = net.client(0);
    wait_for(DEADLINE, "the node to be mining", || async {
        client.status().await.ok()?.mining.then_some(())
    })
    .await
    .unwrap();
    powchain::process::terminate(&probe.child).unwrap();
    let status = tokio::time::timeout(DEADLINE, probe.child.wait())
        .await
        .expect("the probe stopped within the deadline")
        .unwrap();
    assert!(status.success());
    assert!(pending.await.unwrap().is_err(), "the request was cut off");
}
