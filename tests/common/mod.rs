//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use powchain::harness::{Options, TestNetwork};
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
