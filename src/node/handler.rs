//! From a payload to its reply: one `match` over the requests, the legacy commands, and
//! what each exchange means for the connection ([`Effect`]). No sockets here: the
//! connection loop sends what this returns.

use std::net::SocketAddr;
use std::sync::Arc;

use super::addrbook::Source;
use super::admin::Admin;
use super::limits::{
    GREETING_GRACE, MAX_INVALID_PER_CONNECTION, MAX_REPLAYS_PER_CONNECTION, MAX_REPLY_BYTES,
    PARSE_OFF_RUNTIME, REPLY_ENVELOPE, UNLINKED_SYNC_INTERVAL, UNVERIFIED_SYNC_INTERVAL,
};
use super::peers::Accepted;
use super::shared::Node;
use crate::message::{
    self, BlockOutcome, Encoding, ErrorCode, Hello, Incoming, Legacy, MAX_BLOCKS_PER_REPLY, Pong,
    Request, Response, Status,
};
use crate::metrics as m;
use crate::record;

/// What a connection has learned of the other side.
#[derive(Debug, Default, Clone)]
pub struct Peer {
    /// Socket address of the other side.
    pub remote: Option<SocketAddr>,
    /// Listen address announced in `hello`, when the other side is a node (as we would
    /// dial it).
    pub node: Option<String>,
    /// Number of the connection, for the inbound link its `hello` may open.
    pub conn: u64,
    /// Invalid blocks (or pushed chains) received on this connection.
    pub invalid: u32,
    /// Blocks already held received again on this connection.
    pub replays: u32,
    /// The nonce of the last `challenge` on this connection, until an admin request uses it.
    pub challenge: Option<String>,
}

impl Peer {
    /// Names the other side for logs.
    pub fn who(&self) -> String {
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

impl Node {
    /// Answers one request, and says what the connection does next; every request gets
    /// exactly one reply.
    pub async fn handle(self: &Arc<Self>, request: Request, peer: &mut Peer) -> (Response, Effect) {
        let reply = match request {
            Request::Hello(hello) => {
                let reply = self.on_hello(hello, peer);
                if let Response::Error { code, .. } = &reply {
                    metrics::counter!(m::HELLOS_REFUSED, "code" => code.as_str()).increment(1);
                }
                reply
            }
            Request::Status => Response::Status(self.status()),
            Request::GetChain { .. } => Response::Chain {
                blocks: self.chain().to_vec(),
            },
            Request::GetBlocks { locator, limit, .. } => {
                let limit = limit
                    .unwrap_or(MAX_BLOCKS_PER_REPLY)
                    .clamp(1, MAX_BLOCKS_PER_REPLY);
                Response::Blocks {
                    blocks: self
                        .chain()
                        .blocks_after_within(&locator, limit, self.reply_bytes()),
                }
            }
            Request::GetTail { count, .. } => {
                let count = count.min(MAX_BLOCKS_PER_REPLY);
                Response::Blocks {
                    blocks: self.chain().tail_within(count, self.reply_bytes()),
                }
            }
            Request::GetRange { from, count, .. } => {
                let count = count.min(MAX_BLOCKS_PER_REPLY);
                Response::Blocks {
                    blocks: self.chain().range_within(from, count, self.reply_bytes()),
                }
            }
            Request::NewBlock { block } => {
                let (result, reason) = self.sync.offer_block(block, peer.node.clone()).await;
                Response::BlockResult { result, reason }
            }
            Request::Announce { header } => {
                let reply = self.sync.on_announce(header, peer.node.clone()).await;
                let outcome = match &reply {
                    None => "fetching",
                    Some((BlockOutcome::Synced, _)) => "synced",
                    Some((BlockOutcome::Rejected, _)) => "rejected",
                    Some(_) => "ignored",
                };
                metrics::counter!(m::ANNOUNCEMENTS, "outcome" => outcome).increment(1);
                match reply {
                    None => Response::Ok,
                    Some((result, reason)) => Response::BlockResult { result, reason },
                }
            }
            Request::GetBlock { hash, .. } => {
                let chain = self.chain();
                Response::Blocks {
                    blocks: chain
                        .height_of(&hash)
                        .and_then(|h| chain.get(h).cloned())
                        .into_iter()
                        .collect(),
                }
            }
            Request::Mine { data } => match self.mine(data).await {
                Ok(block) => Response::Mined { block },
                Err(e) => Response::error(e.error_code(), e.to_string()),
            },
            Request::GetPeers => Response::Peers {
                peers: self.peers.known(),
            },
            Request::Ping => {
                let chain = self.chain();
                Response::Pong(Pong {
                    height: chain.height(),
                    tip: chain.tip().hash,
                    work: chain.work().to_string(),
                })
            }
            Request::GetAddr => Response::Addr {
                addrs: self
                    .peers
                    .sample(peer.remote.map(|r| r.ip()), peer.node.as_deref()),
            },
            Request::Challenge => {
                let nonce = Admin::challenge();
                peer.challenge = Some(nonce.clone());
                Response::Challenge { nonce }
            }
            Request::AddPeer {
                addr,
                cookie,
                proof,
            } => {
                if !self.admin_ok("add_peer", cookie, proof, peer) {
                    return (unauthorized("add_peer"), Effect::Continue);
                }
                match self.add_peer(&addr) {
                    Ok(()) => Response::Ok,
                    Err(message) => Response::error(ErrorCode::BadPeer, message),
                }
            }
            Request::RemovePeer {
                addr,
                cookie,
                proof,
            } => {
                if !self.admin_ok("remove_peer", cookie, proof, peer) {
                    return (unauthorized("remove_peer"), Effect::Continue);
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
                let replaced = self.sync.sync_all().await;
                let chain = self.chain();
                Response::Synced {
                    height: chain.height(),
                    tip: chain.tip().hash,
                    replaced,
                }
            }
            Request::Validate => self.validate_stored().await,
            Request::Shutdown { cookie, proof } => {
                if !self.admin_ok("shutdown", cookie, proof, peer) {
                    return (unauthorized("shutdown"), Effect::Continue);
                }
                tracing::info!(remote = ?peer.remote, "shutdown requested");
                return (Response::Exiting, Effect::Shutdown);
            }
        };
        (reply, Effect::Continue)
    }

    /// The bytes of blocks one reply carries at most: [`MAX_REPLY_BYTES`], or less under a
    /// lower frame cap.
    fn reply_bytes(&self) -> usize {
        MAX_REPLY_BYTES.min(self.config.max_frame.saturating_sub(REPLY_ENVELOPE))
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
        let Some(addr) = super::links::dial_addr(&hello.listen, peer.remote) else {
            return Response::error(
                ErrorCode::BadPeer,
                format!("listen address {:?} is not host:port", hello.listen),
            );
        };
        // One identity per connection: a connection that named itself may greet again
        // (the same address), never as another node. Otherwise one socket could take every
        // inbound slot, and only the last name would end with it.
        if let Some(named) = &peer.node
            && *named != addr
        {
            return Response::error(
                ErrorCode::BadPeer,
                format!(
                    "this connection is the link of {named}; a hello naming {addr} needs a \
                     connection of its own"
                ),
            );
        }
        if self.peers.is_own(&addr) {
            // Ourselves (or a client borrowing our address): answered, never a link.
            return Response::Hello(ours);
        }
        self.peers.learn(&addr, Source::Hello);
        let new = match self.peers.accept_inbound(&addr, peer.conn, &self.shutdown) {
            Accepted::New => {
                tracing::info!(peer = %addr, height = hello.height, "peer connected (inbound)");
                true
            }
            // A link's client greeting us on a new connection: what follows (a relay, a
            // ping) brings its news, so no sync on its word.
            Accepted::Known => false,
            Accepted::Full => {
                return Response::error(
                    ErrorCode::TooManyPeers,
                    format!(
                        "every one of this node's {} inbound slots is taken; dial another node",
                        self.peers.limits().max_inbound
                    ),
                );
            }
            Accepted::Banned => {
                return Response::error(
                    ErrorCode::BadPeer,
                    format!("{addr} is banned here for a while"),
                );
            }
        };
        self.peers.mark_known(&addr, hello.tip);
        self.peers.set_version(&addr, hello.version);
        peer.node = Some(addr.clone());
        if self.sync.has_less_work_than(&hello.work) {
            // A peer with more work is synced with; after a greeting, only if the relay or
            // ping that follows it on the connection did not bring us up to it.
            let (node, work) = (self.clone(), hello.work);
            self.tasks.spawn(async move {
                if !new {
                    tokio::select! {
                        biased;
                        _ = node.shutdown.cancelled() => return,
                        _ = tokio::time::sleep(GREETING_GRACE) => {}
                    }
                }
                let interval = if node.peers.verified(&addr) {
                    UNLINKED_SYNC_INTERVAL
                } else {
                    UNVERIFIED_SYNC_INTERVAL
                };
                if node.sync.has_less_work_than(&work) && node.sync.allow(&addr, interval) {
                    node.sync.sync_with(&addr).await;
                }
            });
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
            outbound: self.peers.outbound(),
            inbound: self.peers.inbound(),
            mining: self.jobs.miner().is_active(),
            hash_rate: self.jobs.miner().hash_rate(),
            genesis: Some(chain.genesis().hash),
            reorgs: self.state.reorgs(),
            withheld: self.jobs.withheld_now(),
        }
    }

    /// Tells whether an admin request of type `kind` is authorized: it carries the cookie,
    /// or the proof of it for the challenge this connection was given last (used up by
    /// this request, right or wrong).
    fn admin_ok(
        &self,
        kind: &str,
        cookie: Option<String>,
        proof: Option<String>,
        peer: &mut Peer,
    ) -> bool {
        let nonce = peer.challenge.take();
        self.admin
            .authorizes(kind, cookie.as_deref(), proof.as_deref(), nonce.as_deref())
    }

    /// Tells whether the original's bare `SHUTDOWN` is obeyed from this client.
    pub(super) fn legacy_shutdown_allowed(&self, peer: &Peer) -> bool {
        !self.config.strict_admin
            && self.listen.ip().is_loopback()
            && peer.remote.is_some_and(|r| r.ip().is_loopback())
    }

    async fn validate_stored(self: &Arc<Self>) -> Response {
        let node = self.clone();
        let result = self
            .config
            .env
            .blocking
            .run(move || {
                // Hashed while read; every rule of every block checked, as `from_blocks` does.
                let (blocks, checked) = node
                    .state
                    .store()
                    .load_checked()
                    .map_err(|e| e.to_string())?;
                let params = node.config.params.clone();
                let now = (node.config.env.wall_clock)();
                crate::chain::Blockchain::from_stored_checked_at(
                    params,
                    blocks,
                    checked,
                    usize::MAX,
                    now,
                )
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
        format!(
            "{what} needs the node's cookie (see <data-dir>/.cookie): the \"cookie\" field, or \
             a \"proof\" of it for this connection's last \"challenge\""
        ),
    )
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

/// What the connection does after sending a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Keep serving the connection.
    Continue,
    /// Close this connection, for this reason.
    Close(String),
    /// Shut the whole node down.
    Shutdown,
}

/// Answers one payload: the reply's bytes and what to do once it is sent.
pub async fn answer(node: &Arc<Node>, payload: bytes::Bytes, peer: &mut Peer) -> (Vec<u8>, Effect) {
    let payload_len = payload.len();
    let incoming = if payload.len() > PARSE_OFF_RUNTIME {
        node.config
            .env
            .blocking
            .run(move || message::parse_incoming(&payload))
            .await
            .unwrap_or(Incoming::InvalidJson)
    } else {
        message::parse_incoming(&payload)
    };
    let kind = match &incoming {
        Incoming::Request(r) => r.kind(),
        Incoming::Legacy(_) => "legacy",
        Incoming::BadRequest(_) | Incoming::InvalidJson => "invalid",
    };
    metrics::counter!(m::REQUESTS, "type" => kind).increment(1);
    metrics::counter!(m::BYTES_IN, "type" => kind).increment(payload_len as u64);
    let encoding = match &incoming {
        Incoming::Request(r) => r.encoding(),
        _ => Encoding::Json,
    };
    let (reply, exit) = reply_to(node, incoming, peer).await;
    let close = match &reply {
        Reply::Json(r) => peer.judge(r),
        Reply::Rejected => peer.judge(&Response::BlockResult {
            result: BlockOutcome::Rejected,
            reason: Some("pushed chain rejected".into()),
        }),
        Reply::Text(_) | Reply::Raw(_) => None,
    };
    let bytes = match reply {
        Reply::Json(Response::Blocks { blocks } | Response::Chain { blocks })
            if encoding == Encoding::Binary =>
        {
            record::encode_list(&blocks)
        }
        Reply::Json(r) => serde_json::to_vec(&r).unwrap_or_default(),
        Reply::Text(t) => t.as_bytes().to_vec(),
        Reply::Raw(bytes) => bytes,
        Reply::Rejected => message::LEGACY_REJECTED.as_bytes().to_vec(),
    };
    metrics::counter!(m::BYTES_OUT, "type" => kind).increment(bytes.len() as u64);
    let effect = match (exit, close) {
        (true, _) => Effect::Shutdown,
        (false, Some(why)) => Effect::Close(why),
        (false, None) => Effect::Continue,
    };
    (bytes, effect)
}

async fn reply_to(node: &Arc<Node>, incoming: Incoming, peer: &mut Peer) -> (Reply, bool) {
    match incoming {
        Incoming::Request(request) => {
            let kind = request.kind();
            tracing::debug!(
                request = kind,
                peer = peer.node.as_deref().unwrap_or("client"),
                "request"
            );
            let (reply, effect) = node.handle(*request, peer).await;
            if let Response::Error { code, message } = &reply {
                tracing::debug!(request = kind, code = code.as_str(), "refused: {message}");
            }
            (Reply::Json(reply), effect == Effect::Shutdown)
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
            if node.sync.adopt_chain(blocks, peer.node.clone()).await {
                (Reply::Text(message::LEGACY_ACCEPTED), false)
            } else {
                (Reply::Rejected, false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::shared::Config;
    use crate::params::ChainParams;
    use serde_json::json;
    use tokio_util::sync::CancellationToken;

    async fn node() -> (tempfile::TempDir, Arc<Node>) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::new(dir.path().to_path_buf());
        config.params = ChainParams::with_difficulty(0);
        config.threads = 1;
        let listen = "127.0.0.1:1".parse().unwrap();
        let node = Node::open(config, listen, CancellationToken::new())
            .await
            .unwrap();
        (dir, node)
    }

    fn client() -> Peer {
        Peer {
            remote: Some("127.0.0.1:9".parse().unwrap()),
            ..Peer::default()
        }
    }

    /// While a sync fetches from several peers, a peer's block that does not link yet is
    /// ignored, not rejected: it would otherwise count towards closing that peer's connection.
    #[tokio::test]
    async fn an_unlinked_block_during_a_parallel_sync_is_ignored() {
        let (_dir, node) = node().await;
        let peer_addr = "127.0.0.1:9".to_owned();
        let mut admin = client();
        let (added, _) = node
            .handle(
                Request::AddPeer {
                    addr: peer_addr.clone(),
                    cookie: Some(node.admin.cookie().to_owned()),
                    proof: None,
                },
                &mut admin,
            )
            .await;
        assert!(!matches!(added, Response::Error { .. }), "{added:?}");
        let mut block = node.chain().genesis().clone();
        block.index = 5;
        block.prev_hash = crate::block::BlockHash([7; 32]).into();
        block.hash = block.compute_hash();
        let mut peer = Peer {
            remote: Some("127.0.0.1:9".parse().unwrap()),
            node: Some(peer_addr),
            ..Peer::default()
        };
        node.sync.set_fetching(true);
        let (reply, _) = node.handle(Request::NewBlock { block }, &mut peer).await;
        let Response::BlockResult { result, reason } = reply else {
            panic!("{reply:?}")
        };
        assert_eq!(result, crate::message::BlockOutcome::Ignored, "{reason:?}");
        assert!(
            reason
                .unwrap_or_default()
                .contains("sync from several peers")
        );
        assert_eq!(peer.invalid, 0);
    }

    /// Requests are answered in-process: mine, status, get_tail, get_range, validate, peers.
    #[tokio::test]
    async fn requests_are_answered_without_a_socket() {
        let (_dir, node) = node().await;
        let mut peer = client();
        let (mined, effect) = node
            .handle(Request::Mine { data: json!("x") }, &mut peer)
            .await;
        assert_eq!(effect, Effect::Continue);
        let Response::Mined { block } = mined else {
            panic!("{mined:?}")
        };
        let (status, _) = node.handle(Request::Status, &mut peer).await;
        assert!(matches!(status, Response::Status(ref s) if s.height == 1 && s.tip == block.hash));
        let (tail, _) = node
            .handle(
                Request::GetTail {
                    count: 1,
                    encoding: Encoding::Json,
                },
                &mut peer,
            )
            .await;
        assert_eq!(
            tail,
            Response::Blocks {
                blocks: vec![block.clone()]
            }
        );
        let genesis = node.chain().genesis().clone();
        for (from, count, want) in [
            (0, 2, vec![genesis, block.clone()]),
            (1, 5_000_000, vec![block.clone()]),
            (2, 1, vec![]),
            (u64::MAX, 1, vec![]),
        ] {
            let (range, _) = node
                .handle(
                    Request::GetRange {
                        from,
                        count,
                        encoding: Encoding::Json,
                    },
                    &mut peer,
                )
                .await;
            assert_eq!(range, Response::Blocks { blocks: want }, "from {from}");
        }
        let (valid, _) = node.handle(Request::Validate, &mut peer).await;
        assert_eq!(
            valid,
            Response::Validation {
                valid: true,
                error: None
            }
        );
        let (removed, _) = node
            .handle(
                Request::RemovePeer {
                    addr: "127.0.0.1:2".into(),
                    cookie: Some(node.admin.cookie().to_owned()),
                    proof: None,
                },
                &mut peer,
            )
            .await;
        assert!(matches!(
            removed,
            Response::Error {
                code: ErrorCode::UnknownPeer,
                ..
            }
        ));
    }

    /// Shutdown needs the cookie; with it the reply is `exiting` and the effect stops the
    /// node (nothing inspects the reply for that).
    #[tokio::test]
    async fn shutdown_needs_the_cookie_and_is_an_effect() {
        let (_dir, node) = node().await;
        let mut peer = client();
        let (refused, effect) = node
            .handle(
                Request::Shutdown {
                    cookie: None,
                    proof: None,
                },
                &mut peer,
            )
            .await;
        assert!(matches!(
            refused,
            Response::Error {
                code: ErrorCode::Unauthorized,
                ..
            }
        ));
        assert_eq!(effect, Effect::Continue);
        let cookie = Some(node.admin.cookie().to_owned());
        let (reply, effect) = node
            .handle(
                Request::Shutdown {
                    cookie,
                    proof: None,
                },
                &mut peer,
            )
            .await;
        assert_eq!((reply, effect), (Response::Exiting, Effect::Shutdown));
        let (bytes, effect) =
            answer(&node, bytes::Bytes::from_static(b"SHUTDOWN"), &mut peer).await;
        assert_eq!(
            (bytes.as_slice(), effect),
            (&b"EXITING"[..], Effect::Shutdown)
        );
    }

    /// Legacy payloads get their text replies; a connection that keeps pushing what is no
    /// chain is closed after five.
    #[tokio::test]
    async fn legacy_payloads_and_the_close_effect() {
        let (_dir, node) = node().await;
        let mut peer = client();
        let (bytes, _) = answer(&node, bytes::Bytes::from_static(b"GET CHAIN"), &mut peer).await;
        let chain: Vec<crate::Block> = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(chain.len(), 1);
        let (bytes, _) = answer(&node, bytes::Bytes::from_static(b"hello?"), &mut peer).await;
        assert_eq!(bytes, b"INVALID JSON");
        for i in 1..=5 {
            let (bytes, effect) = answer(&node, bytes::Bytes::from_static(b"[1]"), &mut peer).await;
            assert_eq!(bytes, b"BLOCKCHAIN REJECTED");
            assert_eq!(
                matches!(effect, Effect::Close(_)),
                i == 5,
                "push {i}: {effect:?}"
            );
        }
    }
}
