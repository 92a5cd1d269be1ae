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
    /// Its data directory.
    pub data_dir: PathBuf,
    /// The port it was meant to take, when another program held it.
    pub moved_from: Option<u16>,
    child: Child,
}

/// First argument that makes the probe binary run as a node.
pub const NODE_MODE: &str = "__node";

/// Returns how to start a node: the `node` binary next to the running probe when it is
/// ours (`node --version` names this version), or else the probe itself in node mode (so
/// `cargo run --bin probe -- --spawn 3` needs nothing else, and a Node.js `node` beside
/// the probe is never run as a powchain node).
pub(crate) async fn node_command() -> (PathBuf, Vec<String>) {
    let exe = std::env::current_exe().unwrap_or_default();
    let name = if cfg!(windows) { "node.exe" } else { "node" };
    if let Some(node) = exe.parent().map(|d| d.join(name))
        && node.is_file()
    {
        let version = Command::new(&node)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output();
        let ours = format!("node {}", env!("CARGO_PKG_VERSION"));
        match tokio::time::timeout(Duration::from_secs(5), version).await {
            Ok(Ok(out)) if String::from_utf8_lossy(&out.stdout).trim() == ours => {
                return (node, Vec::new());
            }
            _ => tracing::warn!(
                "{} is not powchain's node {}; running the probe itself as the node",
                node.display(),
                env!("CARGO_PKG_VERSION")
            ),
        }
    }
    (exe, vec![NODE_MODE.to_owned()])
}

/// Tells whether another program listens on loopback `port` (binding it fails as in use).
fn port_taken(port: u16) -> bool {
    matches!(
        std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse
    )
}

async fn start_one(
    bin: &Path,
    mode: &[String],
    port: u16,
    args: &[String],
) -> std::io::Result<(String, Child)> {
    let mut command = Command::new(bin);
    command
        .args(mode)
        .arg(port.to_string())
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    match spawn_announced(&mut command, Duration::from_secs(60)).await {
        Ok(node) => Ok((node.addr, node.child)),
        Err(SpawnError::Start { source, .. }) => Err(source),
        Err(e) => Err(std::io::Error::other(format!(
            "the node for port {port} did not start ({e}); its error is above"
        ))),
    }
}

/// Starts `n` nodes on ports 5001.. with `args`, their data under `home`. A port that
/// another program holds is replaced by a free one (and said so); a node that fails for
/// any other reason (a store of another network, say) is an error, never moved elsewhere.
pub async fn spawn_nodes(
    n: usize,
    args: &[String],
    home: &Path,
    params: &crate::params::ChainParams,
) -> std::io::Result<Vec<Spawned>> {
    let (bin, mode) = node_command().await;
    let mut nodes = Vec::new();
    for i in 0..n {
        let preferred = 5001 + i as u16;
        let moved_from = port_taken(preferred).then_some(preferred);
        if moved_from.is_some() {
            tracing::warn!("port {preferred} is taken; starting that node on a free port");
        }
        let (addr, child) = start_one(
            &bin,
            &mode,
            if moved_from.is_some() { 0 } else { preferred },
            args,
        )
        .await?;
        let port = addr
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(preferred);
        nodes.push(Spawned {
            addr,
            data_dir: crate::home::node_dir_for(home, params, port),
            moved_from,
            child,
        });
    }
    Ok(nodes)
}

/// Stops the nodes with SIGTERM and waits for them (killing any that hang).
pub async fn stop_nodes(nodes: Vec<Spawned>) {
    for mut node in nodes {
        if let Err(e) = crate::process::terminate(&node.child) {
            tracing::debug!("could not signal the node on {}: {e}", node.addr);
        }
        if tokio::time::timeout(Duration::from_secs(10), node.child.wait())
            .await
            .is_err()
        {
            let _ = node.child.kill().await;
        }
    }
}
