//! One client connection: read a frame, answer it, repeat, until idle, closed or shut down.

use std::net::SocketAddr;
use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;

use super::Node;
use crate::frame::FrameCodec;
use crate::message::{self, Incoming, Legacy, Response};

/// What a connection has learned of the other side.
#[derive(Debug, Default, Clone)]
pub struct Peer {
    /// Socket address of the other side.
    pub remote: Option<SocketAddr>,
    /// Listen address announced in `hello`, when the other side is a node.
    pub node: Option<String>,
}

/// Serves one connection until the client closes it, idles out, breaks framing or the node
/// shuts down. A failure here ends this connection only.
pub async fn serve(node: Arc<Node>, stream: TcpStream, remote: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let mut framed = Framed::new(stream, FrameCodec::new(node.config.max_frame));
    let mut peer = Peer {
        remote: Some(remote),
        node: None,
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
                let reply = Response::error("bad_frame", e.to_string());
                let _ = framed
                    .send(serde_json::to_vec(&reply).unwrap_or_default())
                    .await;
                return;
            }
            Ok(Some(Ok(p))) => p,
        };
        let (reply, then_exit) = answer(&node, &payload, &mut peer).await;
        if let Err(e) = framed.send(reply).await {
            tracing::debug!(%remote, "reply not sent: {e}");
            return;
        }
        if then_exit {
            node.shutdown.cancel();
            return;
        }
    }
}

/// Answers one payload; the flag asks the caller to shut the node down after replying.
async fn answer(node: &Arc<Node>, payload: &[u8], peer: &mut Peer) -> (Vec<u8>, bool) {
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
                tracing::debug!(request = kind, code, "refused: {message}");
            }
            let exit = matches!(reply, Response::Exiting);
            (serde_json::to_vec(&reply).unwrap_or_default(), exit)
        }
        Incoming::BadRequest(reply) => (serde_json::to_vec(&reply).unwrap_or_default(), false),
        Incoming::InvalidJson => (message::LEGACY_INVALID_JSON.as_bytes().to_vec(), false),
        Incoming::Legacy(Legacy::GetChain) => {
            let blocks = node.chain().to_vec();
            (serde_json::to_vec(&blocks).unwrap_or_default(), false)
        }
        Incoming::Legacy(Legacy::Shutdown) => {
            if node.legacy_shutdown_allowed(peer) {
                tracing::info!(remote = ?peer.remote, "SHUTDOWN received");
                (message::LEGACY_EXITING.as_bytes().to_vec(), true)
            } else {
                let reply = Response::error(
                    "unauthorized",
                    "bare SHUTDOWN is refused here: send {\"type\":\"shutdown\",\"cookie\":..} with the node's .cookie",
                );
                (serde_json::to_vec(&reply).unwrap_or_default(), false)
            }
        }
        Incoming::Legacy(Legacy::PushChain(blocks)) => {
            let accepted = node.adopt_chain(blocks, peer.node.clone()).await;
            let reply = if accepted {
                message::LEGACY_ACCEPTED
            } else {
                message::LEGACY_REJECTED
            };
            (reply.as_bytes().to_vec(), false)
        }
    }
}
