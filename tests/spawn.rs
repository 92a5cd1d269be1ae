//! `probe --spawn` on its default ports: a node that cannot start is reported, not moved to
//! another port with a fresh store; networks of other difficulties share one home. (Its own
//! test binary: these need port 5001, which the spawn tests of tests/probe.rs would
//! otherwise race them for.)

use std::time::Duration;

use powchain::ChainParams;
use powchain::store::Store;

/// Both tests need port 5001: one at a time.
static PORT_5001: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A store of another network in the data directory of port 5001 (say, copied there by
/// hand) makes `probe --spawn 1` fail with the node's reason, instead of starting that node
/// on a free port as if the port were taken.
#[tokio::test]
async fn spawn_reports_a_node_that_cannot_start_instead_of_moving_it() {
    let _port = PORT_5001.lock().await;
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("networks/d8/nodes/5001");
    std::fs::create_dir_all(&dir).unwrap();
    drop(Store::open(&dir, &ChainParams::with_difficulty(16)).unwrap());
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_probe"))
            .args(["--port", "0", "--spawn", "1", "--difficulty", "8"])
            .env("POWCHAIN_HOME", home.path())
            .output(),
    )
    .await
    .expect("the probe gives up in time")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("could not start nodes"), "{stderr}");
    assert!(
        stderr.contains("genesis"),
        "the node's own reason: {stderr}"
    );
    assert!(!stderr.contains("free port"), "{stderr}");
    let entries = std::fs::read_dir(home.path().join("networks/d8/nodes"))
        .unwrap()
        .count();
    assert_eq!(entries, 1, "no second data directory was made");
    assert!(!home.path().join("nodes").exists());
}

/// Two networks of different difficulty run from one home on the same default port, one
/// after the other: each finds its own store, neither refuses to start.
#[tokio::test]
async fn networks_of_other_difficulties_share_a_home_and_a_port() {
    let _port = PORT_5001.lock().await;
    let home = tempfile::tempdir().unwrap();
    for (difficulty, dir) in [
        ("16", "nodes/5001"),
        ("8", "networks/d8/nodes/5001"),
        ("16", "nodes/5001"),
    ] {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_probe"));
        command
            .args(["--port", "0", "--spawn", "1", "--difficulty", difficulty])
            .env("POWCHAIN_HOME", home.path());
        let mut probe = powchain::process::spawn_announced(&mut command, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("difficulty {difficulty}: {e}"));
        let banner = probe.lines.next_line().await.unwrap().unwrap_or_default();
        let data = home.path().join(dir);
        assert!(banner.contains("127.0.0.1:5001"), "{banner}");
        assert!(banner.contains(&data.display().to_string()), "{banner}");
        let status = powchain::NodeClient::new("127.0.0.1:5001")
            .status()
            .await
            .unwrap();
        assert_eq!(status.difficulty.to_string(), difficulty);
        powchain::process::terminate(&probe.child).unwrap();
        let exit = tokio::time::timeout(Duration::from_secs(30), probe.child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(exit.success(), "difficulty {difficulty}: {exit}");
    }
}
