//! One client connection: read a frame, answer it, repeat, until idle, closed or shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::Node;
use crate::frame::FrameCodec;
use crate::message::{self, BlockOutcome, ErrorCode, Incoming, Legacy, Response};

/// Invalid blocks one connection may send before it is closed.
const MAX_INVALID_PER_CONNECTION: u32 = 5;
/// Blocks already held that one connection may send again before it is closed.
const MAX_REPLAYS_PER_CONNECTION: u32 = 1000;

/// What a connection has learned of the other side.
#[derive(Debug, Default, Clone)]
pub struct Peer {
    /// Socket address of the other side.
    pub remote: Option<SocketAddr>,
    /// Listen address announced in `hello`, when the other side is a node.
    pub node: Option<String>,
    /// Invalid blocks (or pushed chains) received on this connection.
    pub invalid: u32,
    /// Blocks already held received again on this connection.
    pub replays: u32,
}

impl Peer {
    fn who(&self) -> String {
        match (&self.node, self.remote) {
            (Some(n), _) => format!("peer {n}"),
            (None, Some(r)) => format!("client {r}"),
            (None, None) => "client".into(),
        }
    }

    /// Counts what a reply says of the sender; returns why to close the connection, if so.
    fn judge(&mut self, reply: &Response) -> Option<String> {
        match reply {
            Response::BlockResult {
                result: BlockOutcome::Rejected,
                reason,
            } => {
                self.invalid += 1;
                let reason = reason.as_deref().unwrap_or("invalid block");
                if self.invalid == 1 {
                    tracing::info!("rejected a block from {}: {reason}", self.who());
                }
                (self.invalid >= MAX_INVALID_PER_CONNECTION)
                    .then(|| format!("{} invalid blocks (last: {reason})", self.invalid))
            }
            Response::BlockResult {
                result: BlockOutcome::Ignored,
                ..
            } => {
                self.replays += 1;
                (self.replays >= MAX_REPLAYS_PER_CONNECTION)
                    .then(|| format!("{} blocks we already held, sent again", self.replays))
            }
            _ => None,
        }
    }
}

/// Serves one connection until the client closes it, idles out, breaks framing, misbehaves
/// or the node shuts down. A failure here ends this connection only.
pub async fn serve(node: Arc<Node>, stream: TcpStream, remote: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new(node.config.max_frame));
    let mut peer = Peer {
        remote: Some(remote),
        ..Peer::default()
    };
    loop {
        let next = tokio::select! {
            _ = node.shutdown.cancelled() => return,
            r = tokio::time::timeout(node.config.idle_timeout, framed.next()) => r,
        };
        let payload = match next {
            Err(_) => {
                tracing::debug!(%remote, "closing idle connection");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                tracing::info!(%remote, "closing connection: {e}");
                // Best effort: tell the client why before hanging up.
                let reply = Response::error(ErrorCode::BadFrame, e.to_string());
                let _ = framed
                    .send(serde_json::to_vec(&reply).unwrap_or_default())
                    .await;
                return;
            }
            Ok(Some(Ok(p))) => p,
        };
        let (reply, then_exit, close) = answer(&node, &payload, &mut peer).await;
        let reply = fit_frame(reply, node.config.max_frame);
        // A client that stops reading must not hold the task and its permit forever.
        match tokio::time::timeout(node.config.idle_timeout, framed.send(reply)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(%remote, "reply not sent: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(%remote, "closing connection: the client stopped reading");
                return;
            }
        }
        if then_exit {
            node.shutdown.cancel();
            return;
        }
        if let Some(why) = close {
            tracing::warn!("closing the connection of {}: {why}", peer.who());
            return;
        }
    }
}

/// Returns `reply`, or in its place an error reply when it is over the frame cap (which the
/// peer's decoder would refuse, and our encoder refuses too).
fn fit_frame(reply: Vec<u8>, max_frame: usize) -> Vec<u8> {
    if reply.len() <= max_frame {
        return reply;
    }
    let error = Response::error(
        ErrorCode::TooLarge,
        format!(
            "the reply of {} bytes is over the {max_frame} byte frame cap; ask for less \
             (get_blocks with a locator and a limit)",
            reply.len()
        ),
    );
    serde_json::to_vec(&error).unwrap_or_default()
}

/// A reply before encoding.
enum Reply {
    Json(Response),
    Text(&'static str),
    /// The chain as a bare JSON array (`GET CHAIN`).
    Raw(Vec<u8>),
    /// `BLOCKCHAIN REJECTED`, counted as an invalid block.
    Rejected,
}

/// Answers one payload. The flag asks the caller to shut the node down after replying; the
/// reason, to close this connection after replying.
async fn answer(
    node: &Arc<Node>,
    payload: &[u8],
    peer: &mut Peer,
) -> (Vec<u8>, bool, Option<String>) {
    let (reply, exit) = reply_to(node, payload, peer).await;
    let close = match &reply {
        Reply::Json(r) => peer.judge(r),
        Reply::Rejected => peer.judge(&Response::BlockResult {
            result: BlockOutcome::Rejected,
            reason: Some("pushed chain rejected".into()),
        }),
        Reply::Text(_) | Reply::Raw(_) => None,
    };
    let bytes = match reply {
        Reply::Json(r) => serde_json::to_vec(&r).unwrap_or_default(),
        Reply::Text(t) => t.as_bytes().to_vec(),
        Reply::Raw(bytes) => bytes,
        Reply::Rejected => message::LEGACY_REJECTED.as_bytes().to_vec(),
    };
    (bytes, exit, close)
}

async fn reply_to(node: &Arc<Node>, payload: &[u8], peer: &mut Peer) -> (Reply, bool) {
    match message::parse_incoming(payload) {
        Incoming::Request(request) => {
            let kind = request.kind();
            tracing::debug!(
                request = kind,
                peer = peer.node.as_deref().unwrap_or("client"),
                "request"
            );
            let reply = node.handle(*request, peer).await;
            if let Response::Error { code, message } = &reply {
                tracing::debug!(request = kind, code = code.as_str(), "refused: {message}");
            }
            let exit = matches!(reply, Response::Exiting);
            (Reply::Json(reply), exit)
        }
        Incoming::BadRequest(reply) => (Reply::Json(reply), false),
        Incoming::InvalidJson => (Reply::Text(message::LEGACY_INVALID_JSON), false),
        Incoming::Legacy(Legacy::GetChain) => {
            let blocks = node.chain().to_vec();
            (
                Reply::Raw(serde_json::to_vec(&blocks).unwrap_or_default()),
                false,
            )
        }
        Incoming::Legacy(Legacy::Shutdown) => {
            if node.legacy_shutdown_allowed(peer) {
                tracing::info!(remote = ?peer.remote, "SHUTDOWN received");
                (Reply::Text(message::LEGACY_EXITING), true)
            } else {
                let reply = Response::error(
                    ErrorCode::Unauthorized,
                    "bare SHUTDOWN is refused here: send {\"type\":\"shutdown\",\"cookie\":..} with the node's .cookie",
                );
                (Reply::Json(reply), false)
            }
        }
        Incoming::Legacy(Legacy::NotAChain(why)) => {
            tracing::debug!(remote = ?peer.remote, "pushed array is not a chain: {why}");
            (Reply::Rejected, false)
        }
        Incoming::Legacy(Legacy::PushChain(blocks)) => {
            if node.adopt_chain(blocks, peer.node.clone()).await {
                (Reply::Text(message::LEGACY_ACCEPTED), false)
            } else {
                (Reply::Rejected, false)
            }
        }
    }
}
