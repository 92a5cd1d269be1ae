//! One client connection: read a frame, answer it, repeat, until idle, closed or shut down.
//! The answering is [`handler::answer`](super::handler::answer); this is the framing loop,
//! with its time limits in both directions.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures::{SinkExt, StreamExt};
use tokio_util::codec::Framed;

use super::handler::{self, Effect, Peer};
use super::limits::INBOUND_SILENCE;
use super::shared::Node;
use crate::env::Stream;
use crate::frame::FrameCodec;
use crate::message::{ErrorCode, Response};

/// Serves one connection until the client closes it, idles out, breaks framing, misbehaves
/// or the node shuts down. A failure here ends this connection only.
pub async fn serve<S: Stream>(node: Arc<Node>, stream: S, remote: SocketAddr) {
    let mut framed = Framed::new(stream, FrameCodec::new(node.config.max_frame));
    let mut peer = Peer {
        remote: Some(remote),
        conn: node.next_conn.fetch_add(1, Ordering::Relaxed),
        ..Peer::default()
    };
    metrics::counter!(crate::metrics::CONNECTIONS).increment(1);
    metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).increment(1.0);
    serve_frames(&node, &mut framed, &mut peer).await;
    metrics::gauge!(crate::metrics::CONNECTIONS_OPEN).decrement(1.0);
    // The inbound link this connection's `hello` opened, if any, ends with it.
    if let Some(addr) = &peer.node
        && node.peers.inbound_closed(addr, peer.conn)
    {
        tracing::info!(peer = %addr, "peer disconnected (inbound)");
    }
}

async fn serve_frames<S: Stream>(
    node: &Arc<Node>,
    framed: &mut Framed<S, FrameCodec>,
    peer: &mut Peer,
) {
    let remote = peer.remote;
    loop {
        // The node behind an inbound link pings at least every PING_INTERVAL: silence
        // well beyond it means the link is dead (a host gone without closing).
        let limit = match peer.node {
            Some(_) => node.config.idle_timeout.min(INBOUND_SILENCE),
            None => node.config.idle_timeout,
        };
        let next = tokio::select! {
            biased;
            _ = node.shutdown.cancelled() => return,
            r = tokio::time::timeout(limit, framed.next()) => r,
        };
        let payload = match next {
            Err(_) => {
                tracing::debug!(?remote, "closing idle connection");
                return;
            }
            Ok(None) => return,
            Ok(Some(Err(e))) => {
                tracing::info!(?remote, "closing connection: {e}");
                // Best effort: tell the client why before hanging up.
                let reply = Response::error(ErrorCode::BadFrame, e.to_string());
                let _ = framed
                    .send(serde_json::to_vec(&reply).unwrap_or_default())
                    .await;
                return;
            }
            Ok(Some(Ok(p))) => p,
        };
        let (reply, effect) = handler::answer(node, payload, peer).await;
        let reply = fit_frame(reply, node.config.max_frame);
        // A client that stops reading must not hold the task and its permit forever.
        match tokio::time::timeout(node.config.idle_timeout, framed.send(reply)).await {
            Ok(Ok(())) => crate::frame::release_big_buffers(framed),
            Ok(Err(e)) => {
                tracing::debug!(?remote, "reply not sent: {e}");
                return;
            }
            Err(_) => {
                tracing::info!(?remote, "closing connection: the client stopped reading");
                return;
            }
        }
        match effect {
            Effect::Continue => {}
            Effect::Shutdown => {
                node.shutdown.cancel();
                return;
            }
            Effect::Close(why) => {
                tracing::warn!("closing the connection of {}: {why}", peer.who());
                return;
            }
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
