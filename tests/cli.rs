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

/// Parses every line of `log` as one JSON event with the fields tracing-subscriber writes.
fn json_events(log: &str) -> Vec<Value> {
    log.lines()
        .map(|line| {
            let event: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"));
            for field in ["timestamp", "level", "target"] {
                assert!(event[field].is_string(), "{field} missing: {line}");
            }
            assert!(event["fields"]["message"].is_string(), "{line}");
            event
        })
        .collect()
}

/// `--log-format json` makes the node and the probe write one JSON object per event on
/// stderr, the event's fields typed (the height a number), up to their shutdown.
#[tokio::test]
async fn log_format_json_writes_one_object_per_event() {
    let mut net = network(
        Options::new(1)
            .topology(Topology::Isolated)
            .args(["--log-format", "json"]),
    )
    .await;
    net.client(0)
        .mine(serde_json::json!("logged"))
        .await
        .unwrap();
    assert_eq!(net.stop(0).await.unwrap(), Some(0));
    let events = json_events(&net.log(0));
    let loaded = events
        .iter()
        .find(|e| e["fields"]["message"] == "chain loaded")
        .expect("the chain loaded event");
    assert_eq!(loaded["fields"]["height"], 0);
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "mined block stored" && e["fields"]["height"] == 1)
    );
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "store closed, bye")
    );

    let home = tempfile::tempdir().unwrap();
    let log = home.path().join("probe.log");
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe"));
    command
        .args(["--port", "0", "--log-format", "json"])
        .env("POWCHAIN_HOME", home.path())
        .stderr(std::fs::File::create(&log).unwrap());
    let started = powchain::process::spawn_announced(&mut command, DEADLINE)
        .await
        .unwrap();
    let mut child = started.child;
    powchain::process::signal(&child, powchain::process::Signal::TERM).unwrap();
    assert!(child.wait().await.unwrap().success());
    let events = json_events(&std::fs::read_to_string(&log).unwrap());
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "SIGTERM received"),
        "{events:?}"
    );
}
