//! One `match` from a request to its reply.

use std::sync::Arc;

use super::Node;
use super::connection::Peer;
use crate::message::{
    ErrorCode, Hello, MAX_BLOCKS_PER_REPLY, PROTOCOL_VERSION, Request, Response, Status,
};

impl Node {
    /// Answers one request; every request gets exactly one reply.
    pub async fn handle(self: &Arc<Self>, request: Request, peer: &mut Peer) -> Response {
        match request {
            Request::Hello(hello) => self.on_hello(hello, peer),
            Request::Status => Response::Status(self.status()),
            Request::GetChain => Response::Chain {
                blocks: self.chain().to_vec(),
            },
            Request::GetBlocks { locator, limit } => {
                let limit = limit
                    .unwrap_or(MAX_BLOCKS_PER_REPLY)
                    .clamp(1, MAX_BLOCKS_PER_REPLY);
                Response::Blocks {
                    blocks: self.chain().blocks_after(&locator, limit),
                }
            }
            Request::GetTail { count } => {
                let count = count.min(MAX_BLOCKS_PER_REPLY);
                Response::Blocks {
                    blocks: self.chain().tail(count),
                }
            }
            Request::NewBlock { block } => {
                let (result, reason) = self.offer_block(block, peer.node.clone()).await;
                Response::BlockResult { result, reason }
            }
            Request::Mine { data } => match self.mine(data).await {
                Ok(block) => Response::Mined { block },
                Err(e) => Response::error(e.code(), e.to_string()),
            },
            Request::GetPeers => Response::Peers {
                peers: self.peers.known(),
            },
            Request::AddPeer { addr, cookie } => {
                if !self.cookie_ok(cookie.as_deref()) {
                    return unauthorized("add_peer");
                }
                match self.add_peer(&addr) {
                    Ok(()) => Response::Ok,
                    Err(message) => Response::error(ErrorCode::BadPeer, message),
                }
            }
            Request::RemovePeer { addr, cookie } => {
                if !self.cookie_ok(cookie.as_deref()) {
                    return unauthorized("remove_peer");
                }
                if self.peers.remove(&addr) {
                    tracing::info!(peer = %addr, "peer removed");
                    Response::Ok
                } else {
                    Response::error(
                        ErrorCode::UnknownPeer,
                        format!("{addr} is not a peer of this node"),
                    )
                }
            }
            Request::Sync => {
                let replaced = self.sync_all().await;
                let chain = self.chain();
                Response::Synced {
                    height: chain.height(),
                    tip: chain.tip().hash,
                    replaced,
                }
            }
            Request::Validate => self.validate_stored().await,
            Request::Shutdown { cookie } => {
                if !self.cookie_ok(cookie.as_deref()) {
                    return unauthorized("shutdown");
                }
                tracing::info!(remote = ?peer.remote, "shutdown requested");
                Response::Exiting
            }
        }
    }

    /// Returns this node's handshake values.
    pub fn hello(&self) -> Hello {
        let chain = self.chain();
        Hello {
            version: PROTOCOL_VERSION,
            genesis: chain.genesis().hash,
            listen: self.listen_addr(),
            height: chain.height(),
            tip: chain.tip().hash,
            work: chain.work().to_string(),
        }
    }

    fn on_hello(self: &Arc<Self>, hello: Hello, peer: &mut Peer) -> Response {
        let ours = self.hello();
        if hello.genesis != ours.genesis {
            tracing::warn!(
                peer = %hello.listen,
                "refusing peer of another network: its genesis is {}, ours is {}",
                hello.genesis,
                ours.genesis
            );
            return Response::error(
                ErrorCode::WrongNetwork,
                format!(
                    "genesis {} is not this network's genesis {}",
                    hello.genesis, ours.genesis
                ),
            );
        }
        peer.node = Some(hello.listen.clone());
        if hello.listen != ours.listen {
            self.peers.learn(self, &hello.listen);
        }
        Response::Hello(ours)
    }

    /// Returns the node's status.
    pub fn status(&self) -> Status {
        let chain = self.chain();
        Status {
            listen: self.listen_addr(),
            height: chain.height(),
            tip: chain.tip().hash,
            work: chain.work().to_string(),
            difficulty: chain.next_difficulty(),
            peers: self.peers.connected(),
            mining: self.mining.is_active(),
            hash_rate: self.mining.hash_rate(),
            genesis: Some(chain.genesis().hash),
        }
    }

    fn cookie_ok(&self, cookie: Option<&str>) -> bool {
        cookie.is_some_and(|c| constant_time_eq(c.as_bytes(), self.cookie.as_bytes()))
    }

    /// Tells whether the original's bare `SHUTDOWN` is obeyed from this client.
    pub(super) fn legacy_shutdown_allowed(&self, peer: &Peer) -> bool {
        !self.config.strict_admin
            && self.listen.ip().is_loopback()
            && peer.remote.is_some_and(|r| r.ip().is_loopback())
    }

    async fn validate_stored(self: &Arc<Self>) -> Response {
        let node = self.clone();
        let result = tokio::task::spawn_blocking(move || {
            let blocks = node.state.store().load().map_err(|e| e.to_string())?;
            crate::chain::Blockchain::from_blocks(node.config.params.clone(), blocks)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| Err(format!("validation task failed: {e}")));
        match result {
            Ok(()) => Response::Validation {
                valid: true,
                error: None,
            },
            Err(error) => Response::Validation {
                valid: false,
                error: Some(error),
            },
        }
    }
}

fn unauthorized(what: &str) -> Response {
    Response::error(
        ErrorCode::Unauthorized,
        format!("{what} needs the node's cookie (the \"cookie\" field; see <data-dir>/.cookie)"),
    )
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
