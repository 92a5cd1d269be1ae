//! A full disk under a mining node: the node stays up, refuses cleanly with `internal`,
//! keeps every acknowledged block, and stores again once there is room, without a restart
//! (the store reopens its database after an I/O error: redb refuses every later
//! transaction of a handle that saw one).
//! Needs root and `mount` (a small tmpfs); compiled as ignored without them (see build.rs).

mod common;

use std::process::Command;

use common::*;
use powchain_testkit::{Options, TestNetwork, Topology};
use serde_json::json;

/// A tmpfs of a few megabytes mounted on a temporary directory, unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "mount tmpfs");
        SmallDisk { dir }
    }

    fn resize(&self, size: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(self.dir.path())
            .status()
            .unwrap();
        assert!(ok.success(), "remount tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a node killed on drop may still hold its files for a moment.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Mining 20 KB blocks onto a 3 MiB disk until it is full: the failing `mine` is an
/// `internal` error naming the disk, the node keeps serving with every acknowledged block,
/// and once the disk has room again the next block is stored by the same process; after a
/// restart the chain holds every acknowledged block and validates.
#[tokio::test]
#[cfg_attr(not(has_mount), ignore = "needs root and mount(8) for a tmpfs")]
async fn a_full_disk_refuses_cleanly_and_recovers_without_a_restart() {
    let disk = SmallDisk::mount("3M");
    let data_dir = disk.dir.path().join("node");
    let mut net = TestNetwork::start(
        NODE,
        Options::new(1)
            .difficulty(0)
            .topology(Topology::Isolated)
            .args(["--data-dir", data_dir.to_str().unwrap()]),
    )
    .await
    .unwrap();
    let client = net.client(0);
    let pad = "x".repeat(20_000);
    let mut acked = Vec::new();
    let refusal = loop {
        match client.mine(json!({ "i": acked.len(), "pad": pad })).await {
            Ok(block) => acked.push(block),
            Err(e) => break e,
        }
        assert!(acked.len() < 1000, "a 3 MiB disk never filled");
    };
    assert_eq!(refusal.code(), Some("internal"), "{refusal}");
    assert!(refusal.to_string().contains("No space left"), "{refusal}");
    assert!(acked.len() > 10, "only {} blocks fit", acked.len());
    let status = client.status().await.unwrap();
    assert_eq!(status.height, acked.len() as u64);
    let chain = client.get_chain().await.unwrap();
    assert_eq!(
        &chain[1..],
        &acked[..],
        "every acknowledged block, nothing else"
    );

    disk.resize("64M");
    let more = client.mine(json!("after room was made")).await.unwrap();
    assert_eq!(
        more.index,
        acked.len() as u64 + 1,
        "stored by the same process"
    );
    acked.push(more);
    assert_eq!(client.validate().await.unwrap(), None);

    assert_eq!(net.stop(0).await.unwrap(), Some(0), "{}", net.log(0));
    net.restart(0).await.unwrap();
    let chain = net.client(0).get_chain().await.unwrap();
    assert_eq!(&chain[1..], &acked[..], "{}", net.log(0));
    assert_eq!(net.client(0).validate().await.unwrap(), None);
    net.stop(0).await.unwrap();
}
