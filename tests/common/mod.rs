//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use powchain_testkit::{Options, TestNetwork};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The node binary under test.
pub const NODE: &str = env!("CARGO_BIN_EXE_node");
/// Generous deadline for conditions in tests (a loaded CI machine is slow).
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Starts `n` nodes with `options`.
pub async fn network(options: Options) -> TestNetwork {
    TestNetwork::start(NODE, options)
        .await
        .expect("nodes start")
}

/// Frames `payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    powchain::frame::encode_frame(payload)
}

/// Reads one frame: returns (raw 10-byte header, payload).
pub async fn read_frame(stream: &mut TcpStream) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let mut head = [0u8; 10];
    stream.read_exact(&mut head).await?;
    let len: usize = std::str::from_utf8(&head)
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok((head.to_vec(), body))
}

/// Sends one framed payload on a fresh connection and returns the reply's exact bytes.
pub async fn exchange(addr: &str, payload: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.write_all(&frame(payload)).await.expect("write");
    let (mut head, body) = tokio::time::timeout(DEADLINE, read_frame(&mut s))
        .await
        .expect("reply in time")
        .expect("reply");
    head.extend_from_slice(&body);
    head
}

/// A probe process started by a test.
pub struct Probe {
    /// The process (killed on drop).
    pub child: tokio::process::Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// What it printed after its address (with `--spawn`: nodes, dashboard, curl lines).
    pub lines: Vec<String>,
}

/// Starts the probe under test on a free port with `home` as `POWCHAIN_HOME`.
pub async fn start_probe(home: &std::path::Path, extra: &[&str]) -> Probe {
    start_probe_bin(
        std::path::Path::new(env!("CARGO_BIN_EXE_probe")),
        home,
        extra,
    )
    .await
}

/// Starts the probe binary `bin`; waits until it prints its address.
pub async fn start_probe_bin(
    bin: &std::path::Path,
    home: &std::path::Path,
    extra: &[&str],
) -> Probe {
    let mut command = tokio::process::Command::new(bin);
    command
        .args(["--port", "0"])
        .args(extra)
        .env("POWCHAIN_HOME", home)
        .stderr(std::process::Stdio::null());
    let started = powchain::process::spawn_announced(&mut command, DEADLINE)
        .await
        .expect("the probe announces its address");
    let (child, url, mut out) = (started.child, started.addr, started.lines);
    let mut lines = Vec::new();
    if extra.contains(&"--spawn") {
        while let Ok(Ok(Some(l))) =
            tokio::time::timeout(Duration::from_secs(2), out.next_line()).await
        {
            lines.push(l);
        }
    }
    Probe { child, url, lines }
}

/// Runs the node binary once on a free port with `--data-dir dir` and `args` (outside any
/// registry) and returns what it printed; for nodes expected to refuse to start.
pub async fn node_output(
    home: &std::path::Path,
    dir: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    tokio::process::Command::new(NODE)
        .args(["0", "--no-registry"])
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("POWCHAIN_HOME", home)
        .output()
        .await
        .expect("the node binary runs")
}
