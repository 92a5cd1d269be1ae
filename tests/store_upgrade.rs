//! A store written by powchain 0.1 (redb 2.6, file format v2; `tests/fixtures/store-redb2`)
//! is upgraded once, in place, by today's node, which then serves the same chain; and what
//! a start checks of a stored chain.

mod common;

use std::path::Path;
use std::process::Stdio;

use common::*;
use powchain::NodeClient;
use powchain::process::{spawn_announced, terminate};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/store-redb2/chain.redb"
);
const FIXTURE_TIP: &str = "004b10c10f4935d2fe6df08b6923f71b8e1568c7a62ba733abfba885785beccb";

/// Runs the node on `dir` until it has served and validated its chain, stops it, and returns
/// the chain and the node's log.
async fn run_node(
    home: &Path,
    dir: &Path,
    log: &Path,
    extra: &[&str],
) -> (Vec<powchain::Block>, String) {
    let mut command = tokio::process::Command::new(NODE);
    command
        .args(["0", "--no-registry", "--difficulty", "8", "--data-dir"])
        .arg(dir)
        .args(extra)
        .env("POWCHAIN_HOME", home)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    let mut node = spawn_announced(&mut command, DEADLINE).await.unwrap();
    let client = NodeClient::new(node.addr.clone());
    let chain = client.get_chain().await.unwrap();
    assert_eq!(
        client.validate().await.unwrap(),
        None,
        "the chain validates"
    );
    terminate(&node.child).unwrap();
    let status = tokio::time::timeout(DEADLINE, node.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
    (chain, std::fs::read_to_string(log).unwrap())
}

/// A home holding a copy of the fixture store in `store/`; returns it, that directory and
/// the path of the node's log.
fn fixture_copy() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let home = tempfile::tempdir().unwrap();
    let dir = home.path().join("store");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(FIXTURE, dir.join(powchain::store::DB_FILE)).unwrap();
    let log = home.path().join("node.log");
    (home, dir, log)
}

#[tokio::test]
async fn a_store_of_powchain_0_1_is_upgraded_once_and_keeps_its_chain() {
    let (home, dir, log) = fixture_copy();

    let (chain, text) = run_node(home.path(), &dir, &log, &[]).await;
    assert_eq!(
        text.matches("store upgraded to the current file format")
            .count(),
        1,
        "{text}"
    );
    assert_eq!(chain.len(), 6, "genesis and the five blocks");
    assert_eq!(chain[5].hash.to_hex(), FIXTURE_TIP);
    assert_eq!(chain[2].data.as_str(), "\"plain text block\"");
    assert!(
        chain[3].data.as_str().contains("héllo ✓"),
        "{}",
        chain[3].data.as_str()
    );

    // Upgraded once: the next start opens it as it is, with the same chain.
    let (again, text) = run_node(home.path(), &dir, &log, &[]).await;
    assert!(!text.contains("store upgraded"), "{text}");
    assert_eq!(again, chain);
}

/// A normal start does not re-validate every block; `--reverify` does, and says so.
#[tokio::test]
async fn reverify_revalidates_every_stored_block_at_start() {
    let (home, dir, log) = fixture_copy();
    let (chain, text) = run_node(home.path(), &dir, &log, &[]).await;
    assert!(!text.contains("re-validated against every rule"), "{text}");
    let (again, text) = run_node(home.path(), &dir, &log, &["--reverify"]).await;
    assert!(
        text.contains("every stored block re-validated against every rule height=5"),
        "{text}"
    );
    assert_eq!(again, chain);
}
