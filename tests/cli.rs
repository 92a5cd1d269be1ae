//! `powchain-cli` through the real binary against a real node: every command, JSON on
//! stdout, the node's error code on stderr, and the exit statuses 0, 1 and 2.

mod common;

use common::*;
use powchain_testkit::{Options, Topology};
use serde_json::Value;

const CLI: &str = env!("CARGO_BIN_EXE_powchain-cli");

/// Runs the CLI with `POWCHAIN_HOME` set to `home`; returns (exit code, stdout, stderr).
async fn cli(home: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(CLI)
        .args(args)
        .env("POWCHAIN_HOME", home)
        .output()
        .await
        .expect("the cli runs");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn json(home: &std::path::Path, args: &[&str]) -> Value {
    let (code, out, err) = cli(home, args).await;
    assert_eq!(code, 0, "{args:?}: {err}");
    assert_eq!(out.lines().count(), 1, "one line when piped: {out}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Every command answers with JSON and exit 0; a refusal exits 1 with the node's code on
/// stderr; bad usage exits 2; the admin commands read the node's cookie.
#[tokio::test]
async fn every_command_through_the_binary() {
    let net = network(Options::new(2).topology(Topology::Isolated)).await;
    let home = net.home();
    let port = net.node(0).port().to_string();
    let p = port.as_str();

    let status = json(home, &[p, "status"]).await;
    assert_eq!(status["height"], 0);
    let mined = json(home, &[p, "mine", r#"{"from":"a","to":"b","amount":5}"#]).await;
    assert_eq!(mined["index"], 1);
    assert_eq!(mined["data"]["amount"], 5);
    let text = json(home, &[p, "mine", "plain words"]).await;
    assert_eq!(text["data"], "plain words");
    assert_eq!(json(home, &[p, "chain"]).await.as_array().unwrap().len(), 3);
    assert_eq!(json(home, &[p, "block"]).await["hash"], text["hash"]);
    assert_eq!(json(home, &[p, "block", "1"]).await["hash"], mined["hash"]);
    assert_eq!(json(home, &[p, "block", "0"]).await["index"], 0);
    assert_eq!(json(home, &[p, "validate"]).await["valid"], true);
    assert_eq!(json(home, &[p, "peers"]).await, serde_json::json!([]));
    let other = net.addr(1);
    json(home, &[p, "add-peer", &other]).await;
    assert_eq!(json(home, &[p, "peers"]).await, serde_json::json!([other]));
    let synced = json(home, &[p, "sync"]).await;
    assert_eq!(synced["height"], 2);
    json(home, &[p, "remove-peer", &other]).await;

    let (code, _, err) = cli(home, &[p, "remove-peer", "127.0.0.1:1"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unknown_peer"), "{err}");
    let (code, _, err) = cli(home, &[p, "block", "99"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("height is 2"), "{err}");
    let (code, _, err) = cli(home, &[p, "frobnicate"]).await;
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = cli(home, &["1", "status"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unreachable"), "{err}");
    // Without the cookie (another home) the node refuses; with it, it stops.
    let elsewhere = tempfile::tempdir().unwrap();
    let (code, _, err) = cli(elsewhere.path(), &[p, "shutdown"]).await;
    assert_eq!(code, 1);
    assert!(err.contains("unauthorized"), "{err}");
    assert_eq!(json(home, &[p, "shutdown"]).await["shutdown"], true);
}
