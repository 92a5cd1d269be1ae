//! `probe --spawn N`: local node processes that live as long as the probe.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::process::{SpawnError, spawn_announced};

/// A node process started by the probe.
#[derive(Debug)]
pub struct Spawned {
    /// Its address.
    pub addr: String,
    child: Child,
}

/// First argument that makes the probe binary run as a node.
pub const NODE_MODE: &str = "__node";

/// Returns how to start a node: the `node` binary next to the running probe, or else the
/// probe itself in node mode (so `cargo run --bin probe -- --spawn 3` needs nothing else).
pub fn node_command() -> (PathBuf, Vec<String>) {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = if cfg!(windows) { "node.exe" } else { "node" };
    match exe.parent().map(|d| d.join(name)) {
        Some(node) if node.is_file() => (node, Vec::new()),
        _ => (exe, vec![NODE_MODE.to_owned()]),
    }
}

async fn start_one(
    bin: &Path,
    mode: &[String],
    port: u16,
    args: &[String],
) -> std::io::Result<Option<Spawned>> {
    let mut command = Command::new(bin);
    command
        .args(mode)
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    match spawn_announced(&mut command, Duration::from_secs(60)).await {
        Ok(node) => Ok(Some(Spawned {
            addr: node.addr,
            child: node.child,
        })),
        Err(SpawnError::Start { source, .. }) => Err(source),
        Err(e) => {
            tracing::debug!("{e}");
            Ok(None)
        }
    }
}

/// Starts `n` nodes on ports 5001.. (a free port where one is taken), with `args`.
pub async fn spawn_nodes(n: usize, args: &[String]) -> std::io::Result<Vec<Spawned>> {
    let (bin, mode) = node_command();
    let mut nodes = Vec::new();
    for i in 0..n {
        let preferred = 5001 + i as u16;
        let node = match start_one(&bin, &mode, preferred, args).await? {
            Some(node) => node,
            None => {
                tracing::warn!("port {preferred} is taken; starting that node on a free port");
                start_one(&bin, &mode, 0, args).await?.ok_or_else(|| {
                    std::io::Error::other(format!(
                        "node {} did not start; see its log above",
                        bin.display()
                    ))
                })?
            }
        };
        nodes.push(node);
    }
    Ok(nodes)
}

/// Stops the nodes with SIGTERM and waits for them (killing any that hang).
pub async fn stop_nodes(nodes: Vec<Spawned>) {
    for mut node in nodes {
        if let Some(pid) = node.child.id() {
            // SAFETY: kill(2) on a child we spawned and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
        if tokio::time::timeout(Duration::from_secs(10), node.child.wait())
            .await
            .is_err()
        {
            let _ = node.child.kill().await;
        }
    }
}
