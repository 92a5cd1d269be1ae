//! `probe --spawn` when a node cannot start: the reason is reported and the node is not
//! moved to another port with a fresh store. (Its own test binary: it needs port 5001,
//! which the spawn tests of tests/probe.rs would otherwise race it for.)

use std::time::Duration;

use powchain::ChainParams;
use powchain::store::Store;

/// A store of another network in `nodes/5001` makes `probe --spawn 1` fail with the node's
/// reason, instead of starting that node on a free port as if the port were taken.
#[tokio::test]
async fn spawn_reports_a_node_that_cannot_start_instead_of_moving_it() {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("nodes").join("5001");
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
    let entries = std::fs::read_dir(home.path().join("nodes"))
        .unwrap()
        .count();
    assert_eq!(entries, 1, "no second data directory was made");
}
