//! `NodeClient`: one typed async call per request, each under a timeout, over one connection.

use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Mutex;
use tokio_util::codec::Framed;
// tokio's clock: the real one in the binary, the simulated one under simulation.
use tokio::time::Instant;

use crate::block::{Block, BlockHash};
use crate::env::{Conn, Net, TcpNet};
use crate::frame::{FrameCodec, FrameError};
use crate::message::{
    BlockOutcome, Encoding, ErrorCode, Hello, MAX_BLOCKS_PER_REPLY, Pong, Request, Response, Status,
};

/// Most bytes of an unexpected reply that [`ClientError::Unexpected`] quotes.
const UNEXPECTED_TEXT: usize = 240;

/// Default time allowed for connecting and for one ordinary request: a request fails when
/// this long passes in which its connection moved fewer than [`MIN_PROGRESS`] bytes.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a request's connection must move (either way) in each span of its timeout for the
/// request to go on: a reply of 8 MiB over a 2 Mbit/s link takes 34 s, and fails only if
/// it stalls, not for its size. 4 KiB per 10 s is 3.3 kbit/s.
const MIN_PROGRESS: u64 = 4096;
/// Spans of its timeout a request may take in all, however its connection moves (a peer
/// trickling a reply cannot hold a request longer): 300 s at the 10 s timeout.
const MAX_SPANS: u32 = 30;
/// Default time allowed for a `mine` request (mining may take long at high difficulty).
pub(crate) const DEFAULT_MINE_TIMEOUT: Duration = Duration::from_secs(3600);
/// File holding a node's admin cookie, inside its data directory.
pub const COOKIE_FILE: &str = ".cookie";

/// Why a call to a node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the address.
    #[error("node {addr} is unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    /// The node did not answer in time.
    #[error("node {addr} did not answer within {secs:.1} s")]
    Timeout { addr: String, secs: f64 },
    /// The connection broke or sent a bad frame.
    #[error("connection to node {addr} failed: {source}")]
    Frame { addr: String, source: FrameError },
    /// The node closed the connection without replying.
    #[error("node {addr} closed the connection")]
    Closed { addr: String },
    /// The node replied with an error.
    #[error("node {addr} refused: {message} ({code})")]
    Node {
        addr: String,
        code: ErrorCode,
        message: String,
    },
    /// The node replied with something else than the request calls for.
    #[error("node {addr} sent an unexpected reply: {reply}")]
    Unexpected { addr: String, reply: String },
}

impl ClientError {
    /// Returns the node's error code, as on the wire, when the node itself refused.
    pub fn code(&self) -> Option<&'static str> {
        self.error_code().map(ErrorCode::as_str)
    }

    /// Whether the node closed the connection under the request: a clean close before
    /// any reply, or a reset (a node closing a socket with our unread request on it resets
    /// it instead of closing it cleanly, which is what its idle timeout racing our reuse
    /// of a kept connection looks like).
    pub fn closed_by_node(&self) -> bool {
        use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset};
        match self {
            ClientError::Closed { .. } => true,
            ClientError::Frame {
                source: FrameError::Io(e),
                ..
            } => matches!(e.kind(), ConnectionReset | BrokenPipe | ConnectionAborted),
            _ => false,
        }
    }

    /// Returns the node's error code when the node itself refused.
    pub(crate) fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ClientError::Node { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// Makes the request a client sends first on every connection it opens: a node's `hello`,
/// so that the peer knows which node speaks on any connection of a link.
pub(crate) type Greeting = Arc<dyn Fn() -> Request + Send + Sync>;

struct GreetingSlot(Option<Greeting>);

impl std::fmt::Debug for GreetingSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(..)" } else { "None" })
    }
}

/// A kept connection idle at least this long is checked for closure before use.
const CHECK_AFTER_IDLE_MS: u64 = 500;

/// Records, when dropped, that the client's connection was just used.
struct MarkUsed<'a>(&'a NodeClient);

impl Drop for MarkUsed<'_> {
    fn drop(&mut self) {
        let now_ms = self.0.born.elapsed().as_millis() as u64;
        self.0.last_used_ms.store(now_ms, Ordering::Relaxed);
    }
}

/// Most cookies [`with_cookies`] tries before giving up.
const MAX_COOKIES_TRIED: usize = 16;

/// Reads, off the runtime, the cookie of each data directory `dirs` finds (those that may
/// be the node's, likeliest first; finding them reads the file system too).
pub(crate) async fn read_cookies<D>(dirs: D) -> Vec<Option<String>>
where
    D: FnOnce() -> Vec<std::path::PathBuf> + Send + 'static,
{
    tokio::task::spawn_blocking(move || dirs().iter().map(|d| read_cookie(d)).collect())
        .await
        .unwrap_or_default()
}

/// Runs the call `f` with a client that `client` makes for each of `cookies` in turn (then
/// for no cookie), until the node does not refuse it as `unauthorized`: for admin calls by a
/// tool that does not know which data directory, so which network, the node's is.
pub(crate) async fn with_cookies<T, M, F, Fut>(
    cookies: Vec<Option<String>>,
    client: M,
    f: F,
) -> Result<T, ClientError>
where
    M: Fn(Option<String>) -> NodeClient,
    F: Fn(NodeClient) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut tries = cookies
        .into_iter()
        .chain(std::iter::once(None))
        .take(MAX_COOKIES_TRIED);
    let mut result = f(client(tries.next().flatten())).await;
    for cookie in tries {
        match &result {
            Err(e) if e.error_code() == Some(ErrorCode::Unauthorized) => {
                result = f(client(cookie)).await;
            }
            _ => break,
        }
    }
    result
}

/// Reads the admin cookie a node wrote into its data directory.
pub fn read_cookie(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(data_dir.join(COOKIE_FILE))
        .ok()
        .map(|s| s.trim().to_owned())
}

/// A client of one node. Calls are sent one at a time over a kept-open connection, which is
/// re-opened after any failure.
#[derive(Debug)]
pub struct NodeClient {
    addr: String,
    timeout: Duration,
    mine_timeout: Duration,
    cookie: Option<String>,
    max_frame: usize,
    greeting: GreetingSlot,
    conn: Mutex<Option<Framed<Metered, FrameCodec>>>,
    /// Bytes moved on this client's connections, both ways, ever.
    moved: Arc<AtomicU64>,
    /// Held through an admin call's challenge and request.
    admin: Mutex<()>,
    /// How connections are opened.
    net: Arc<dyn Net>,
    /// When the kept connection was last used, in ms since `born`.
    last_used_ms: AtomicU64,
    born: Instant,
    /// Whether block requests ask for binary lists (the node said version 3 or more).
    binary: AtomicBool,
}

impl NodeClient {
    /// Returns a client of the node at `addr` (`host:port`); nothing is connected yet.
    pub fn new(addr: impl Into<String>) -> Self {
        NodeClient {
            addr: addr.into(),
            timeout: DEFAULT_TIMEOUT,
            mine_timeout: DEFAULT_MINE_TIMEOUT,
            cookie: None,
            max_frame: crate::frame::DEFAULT_MAX_FRAME,
            greeting: GreetingSlot(None),
            conn: Mutex::new(None),
            admin: Mutex::new(()),
            net: Arc::new(TcpNet),
            last_used_ms: AtomicU64::new(0),
            moved: Arc::new(AtomicU64::new(0)),
            born: Instant::now(),
            binary: AtomicBool::new(false),
        }
    }

    /// Sets the admin cookie that `shutdown`, `add_peer` and `remove_peer` prove.
    pub fn with_cookie(mut self, cookie: Option<String>) -> Self {
        self.cookie = cookie;
        self
    }

    /// Opens every new connection with `greeting`'s request (its reply is checked for an
    /// error and otherwise dropped), unless the call itself is a `hello`.
    pub(crate) fn with_greeting(mut self, greeting: Greeting) -> Self {
        self.greeting = GreetingSlot(Some(greeting));
        self
    }

    /// Dials through `net` instead of the OS's TCP (a simulated network).
    pub(crate) fn with_net(mut self, net: Arc<dyn Net>) -> Self {
        self.net = net;
        self
    }

    /// Asks for blocks as binary lists (`"encoding":"binary"`, protocol version 3), or as
    /// JSON. Either reply is read: a node older than version 3 answers in JSON.
    pub fn with_binary_blocks(self, on: bool) -> Self {
        self.set_binary_blocks(on);
        self
    }

    /// Switches binary block lists on or off for the requests from now on (a link does, on
    /// learning the version its peer speaks).
    pub(crate) fn set_binary_blocks(&self, on: bool) {
        self.binary.store(on, Ordering::Relaxed);
    }

    /// The encoding block requests ask for.
    fn encoding(&self) -> Encoding {
        if self.binary.load(Ordering::Relaxed) {
            Encoding::Binary
        } else {
            Encoding::Json
        }
    }

    /// Sets the timeout of ordinary requests.
    pub(crate) fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Caps the replies this client reads at `bytes` (default
    /// [`crate::frame::DEFAULT_MAX_FRAME`]); a larger one fails the call.
    pub(crate) fn with_max_frame(mut self, bytes: usize) -> Self {
        self.max_frame = bytes;
        self
    }

    /// Sets the timeout of `mine` requests.
    pub fn with_mine_timeout(mut self, timeout: Duration) -> Self {
        self.mine_timeout = timeout;
        self
    }

    /// Returns the node's address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Sends one raw payload and returns the raw reply (for the legacy text commands).
    pub async fn raw(&self, payload: &[u8]) -> Result<String, ClientError> {
        let reply = self.exchange(payload, self.timeout, true).await?;
        Ok(String::from_utf8_lossy(&reply).into_owned())
    }

    /// Sends `request` and returns the node's reply, errors included as `Response::Error`.
    pub async fn call(&self, request: &Request) -> Result<Response, ClientError> {
        let reply = self.call_bytes(request).await?;
        self.parse(&reply)
    }

    /// Sends `request` and returns the reply's bytes.
    async fn call_bytes(&self, request: &Request) -> Result<bytes::Bytes, ClientError> {
        let timeout = match request {
            Request::Mine { .. } => self.mine_timeout,
            _ => self.timeout,
        };
        let payload = serde_json::to_vec(request).map_err(|e| self.unexpected(e))?;
        let greet = !matches!(request, Request::Hello(_));
        match self.exchange(&payload, timeout, greet).await {
            // The node closed the connection as the request went out (its idle timeout
            // racing our reuse): a request that is safe to repeat is sent once more.
            Err(e) if e.closed_by_node() && request.is_safe_to_repeat() => {
                self.exchange(&payload, timeout, greet).await
            }
            other => other,
        }
    }

    fn parse(&self, reply: &[u8]) -> Result<Response, ClientError> {
        serde_json::from_slice(reply).map_err(|_| ClientError::Unexpected {
            addr: self.addr.clone(),
            reply: String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned(),
        })
    }

    /// Sends a request answered with blocks (`blocks` or `chain`) and returns them.
    ///
    /// The reply is read straight into blocks: [`Response`] is tagged by a field, which
    /// makes serde buffer the whole reply as generic content first, most of the cost of
    /// reading 5,000 blocks. Anything else (an error) is read as a `Response`.
    async fn fetch_blocks(&self, request: Request) -> Result<Vec<Block>, ClientError> {
        /// The two replies that carry blocks.
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        enum Kind {
            Blocks,
            Chain,
        }
        #[derive(serde::Deserialize)]
        struct BlockList {
            #[serde(rename = "type")]
            _kind: Kind,
            blocks: Vec<Block>,
        }
        let reply = self.call_bytes(&request).await?;
        if crate::record::is_list(&reply) {
            // `get_chain`'s whole chain may be longer than a reply of blocks.
            let most = match request {
                Request::GetChain { .. } => usize::MAX,
                _ => MAX_BLOCKS_PER_REPLY,
            };
            return crate::record::decode_list(&reply, most).map_err(|e| self.unexpected(e));
        }
        if let Ok(list) = serde_json::from_slice::<BlockList>(&reply) {
            return Ok(list.blocks);
        }
        let other = self.node_error(self.parse(&reply)?)?;
        Err(self.unexpected(format!("{other:?}")))
    }

    /// Turns the node's error reply into [`ClientError::Node`]; other replies pass.
    fn node_error(&self, reply: Response) -> Result<Response, ClientError> {
        match reply {
            Response::Error { code, message } => Err(ClientError::Node {
                addr: self.addr.clone(),
                code,
                message,
            }),
            other => Ok(other),
        }
    }

    async fn exchange(
        &self,
        payload: &[u8],
        timeout: Duration,
        greet: bool,
    ) -> Result<bytes::Bytes, ClientError> {
        let mut guard = self.conn.lock().await;
        let _mark = MarkUsed(self);
        let work = async {
            // A kept connection the node has closed meanwhile (idle timeout, restart) is
            // re-opened before use instead of failing the request: on an idle connection
            // anything ready to read (end of stream, an error, stray bytes) means it is dead.
            // Only a connection idle for a while is checked: a busy one costs no extra read.
            let now_ms = self.born.elapsed().as_millis() as u64;
            let idle = now_ms.saturating_sub(self.last_used_ms.load(Ordering::Relaxed));
            if idle >= CHECK_AFTER_IDLE_MS
                && let Some(conn) = guard.as_mut()
                && conn.next().now_or_never().is_some()
            {
                *guard = None;
            }
            let mut conn = match guard.take() {
                Some(conn) => conn,
                None => {
                    let stream = self.net.connect(&self.addr).await.map_err(|e| {
                        ClientError::Unreachable {
                            addr: self.addr.clone(),
                            reason: e.to_string(),
                        }
                    })?;
                    let stream = Metered {
                        inner: stream,
                        moved: self.moved.clone(),
                    };
                    let mut conn = Framed::new(stream, FrameCodec::new(self.max_frame));
                    if let (true, Some(greeting)) = (greet, &self.greeting.0) {
                        let hello =
                            serde_json::to_vec(&greeting()).map_err(|e| self.unexpected(e))?;
                        let reply = self.send_on(&mut conn, &hello).await?;
                        if let Ok(Response::Error { code, message }) =
                            serde_json::from_slice(&reply)
                        {
                            return Err(ClientError::Node {
                                addr: self.addr.clone(),
                                code,
                                message,
                            });
                        }
                    }
                    conn
                }
            };
            // Out of the slot while in use: a call cancelled halfway (its caller's own
            // timeout) drops the connection with it, instead of leaving half a reply on a
            // connection the next call would read.
            let reply = self.send_on(&mut conn, payload).await?;
            *guard = Some(conn);
            Ok(reply)
        };
        let result = self.while_moving(timeout, work).await;
        if result.is_err() {
            // The stream may hold half a reply: never reuse it.
            *guard = None;
        }
        result
    }

    /// Runs `work` (connecting, sending, reading the reply) for as long as the connection
    /// moves: it fails with [`ClientError::Timeout`] once a span of `timeout` passes in which
    /// fewer than [`MIN_PROGRESS`] bytes moved (so a request with nothing back yet fails
    /// after one span, as a plain timeout), or after [`MAX_SPANS`] spans.
    async fn while_moving<T>(
        &self,
        timeout: Duration,
        work: impl Future<Output = Result<T, ClientError>>,
    ) -> Result<T, ClientError> {
        let started = Instant::now();
        let mut work = std::pin::pin!(work);
        let mut seen = self.moved.load(Ordering::Relaxed);
        for _ in 0..MAX_SPANS {
            match tokio::time::timeout(timeout, work.as_mut()).await {
                Ok(result) => return result,
                Err(_) => {
                    let moved = self.moved.load(Ordering::Relaxed);
                    if moved.saturating_sub(seen) < MIN_PROGRESS {
                        break;
                    }
                    seen = moved;
                }
            }
        }
        Err(ClientError::Timeout {
            addr: self.addr.clone(),
            secs: started.elapsed().as_secs_f64(),
        })
    }

    /// Sends one payload on `conn` and reads its reply.
    async fn send_on(
        &self,
        conn: &mut Framed<Metered, FrameCodec>,
        payload: &[u8],
    ) -> Result<bytes::Bytes, ClientError> {
        conn.send(payload)
            .await
            .map_err(|source| ClientError::Frame {
                addr: self.addr.clone(),
                source,
            })?;
        match conn.next().await {
            Some(Ok(reply)) => {
                crate::frame::release_big_buffers(conn);
                Ok(reply)
            }
            Some(Err(source)) => Err(ClientError::Frame {
                addr: self.addr.clone(),
                source,
            }),
            None => Err(ClientError::Closed {
                addr: self.addr.clone(),
            }),
        }
    }

    /// The error for a reply that is not what the request calls for; its text is cut to
    /// [`UNEXPECTED_TEXT`] bytes, as it may be a peer's whole reply and end up in a log.
    fn unexpected(&self, reply: impl std::fmt::Display) -> ClientError {
        let mut reply = reply.to_string();
        if reply.len() > UNEXPECTED_TEXT {
            let mut end = UNEXPECTED_TEXT;
            while !reply.is_char_boundary(end) {
                end -= 1;
            }
            reply.truncate(end);
            reply.push('…');
        }
        ClientError::Unexpected {
            addr: self.addr.clone(),
            reply,
        }
    }

    async fn expect(&self, request: Request) -> Result<Response, ClientError> {
        let reply = self.call(&request).await?;
        self.node_error(reply)
    }

    /// Performs the handshake.
    pub async fn hello(&self, hello: Hello) -> Result<Hello, ClientError> {
        match self.expect(Request::Hello(hello)).await? {
            Response::Hello(h) => Ok(h),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Checks that the link is alive; returns the peer's tip as the pong tells it, or
    /// `None` from a node that answers `ping` with something else (an older version).
    pub async fn ping(&self) -> Result<Option<Pong>, ClientError> {
        match self.call(&Request::Ping).await? {
            Response::Pong(p) => Ok(Some(p)),
            Response::Error {
                code: ErrorCode::UnknownType,
                ..
            } => Ok(None),
            Response::Error { code, message } => Err(ClientError::Node {
                addr: self.addr.clone(),
                code,
                message,
            }),
            _ => Ok(None),
        }
    }

    /// Returns a sample of the addresses the node knows, for gossip (empty from a node
    /// that does not answer `get_addr`).
    pub async fn get_addr(&self) -> Result<Vec<String>, ClientError> {
        match self.call(&Request::GetAddr).await? {
            Response::Addr { addrs } => Ok(addrs),
            _ => Ok(Vec::new()),
        }
    }

    /// Returns the node's status.
    pub async fn status(&self) -> Result<Status, ClientError> {
        match self.expect(Request::Status).await? {
            Response::Status(s) => Ok(s),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Returns the node's whole chain.
    pub async fn get_chain(&self) -> Result<Vec<Block>, ClientError> {
        self.fetch_blocks(Request::GetChain {
            encoding: self.encoding(),
        })
        .await
    }

    /// Returns up to `limit` blocks after the newest locator hash the node knows.
    pub async fn get_blocks(
        &self,
        locator: Vec<BlockHash>,
        limit: usize,
    ) -> Result<Vec<Block>, ClientError> {
        self.fetch_blocks(Request::GetBlocks {
            locator,
            limit: Some(limit),
            encoding: self.encoding(),
        })
        .await
    }

    /// Returns the newest `count` blocks (at most 5,000), oldest first.
    pub async fn get_tail(&self, count: usize) -> Result<Vec<Block>, ClientError> {
        self.fetch_blocks(Request::GetTail {
            count,
            encoding: self.encoding(),
        })
        .await
    }

    /// Returns the node's blocks at heights `from` to `from + count - 1` (at most 5,000;
    /// fewer where its chain is shorter).
    pub async fn get_range(&self, from: u64, count: usize) -> Result<Vec<Block>, ClientError> {
        self.fetch_blocks(Request::GetRange {
            from,
            count,
            encoding: self.encoding(),
        })
        .await
    }

    /// Offers a block; returns the outcome and the node's reason.
    pub async fn new_block(
        &self,
        block: Block,
    ) -> Result<(BlockOutcome, Option<String>), ClientError> {
        match self.expect(Request::NewBlock { block }).await? {
            Response::BlockResult { result, reason } => Ok((result, reason)),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Announces a block by its header; `None` when the node will fetch it, else what it
    /// made of the header (ignored or rejected) and why.
    pub async fn announce(
        &self,
        header: crate::message::Header,
    ) -> Result<Option<(BlockOutcome, Option<String>)>, ClientError> {
        match self.expect(Request::Announce { header }).await? {
            Response::Ok => Ok(None),
            Response::BlockResult { result, reason } => Ok(Some((result, reason))),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Fetches one block of the node's chain by its hash; `None` when it does not hold it.
    pub async fn get_block(&self, hash: BlockHash) -> Result<Option<Block>, ClientError> {
        let mut blocks = self
            .fetch_blocks(Request::GetBlock {
                hash,
                encoding: self.encoding(),
            })
            .await?;
        if blocks.len() > 1 {
            return Err(self.unexpected(format!("{} blocks for one hash", blocks.len())));
        }
        Ok(blocks.pop())
    }

    /// Mines a block with `data`; returns it once the node has stored it.
    pub async fn mine(&self, data: Value) -> Result<Block, ClientError> {
        match self.expect(Request::Mine { data }).await? {
            Response::Mined { block } => Ok(block),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Returns the node's peers.
    pub async fn get_peers(&self) -> Result<Vec<String>, ClientError> {
        match self.expect(Request::GetPeers).await? {
            Response::Peers { peers } => Ok(peers),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Sends the admin request of type `kind` that `make` builds from a proof of the
    /// cookie: with a cookie set, the node is asked for a challenge first and given a
    /// proof for it (`message::admin_proof`), never the cookie itself, so that whatever
    /// listens at the address learns nothing it could use.
    async fn admin(
        &self,
        kind: &str,
        make: impl FnOnce(Option<String>) -> Request,
    ) -> Result<Response, ClientError> {
        // One admin exchange at a time: a second challenge would replace the first's nonce.
        let _one = self.admin.lock().await;
        let proof = match &self.cookie {
            None => None,
            Some(cookie) => {
                let nonce = match self.expect(Request::Challenge).await {
                    Ok(Response::Challenge { nonce }) => nonce,
                    Ok(other) => return Err(self.unexpected(format!("{other:?}"))),
                    Err(e) if e.error_code() == Some(ErrorCode::UnknownType) => {
                        return Err(ClientError::Node {
                            addr: self.addr.clone(),
                            code: ErrorCode::Unauthorized,
                            message: "the node does not answer \"challenge\" (a version before \
                                      it), so its cookie was not sent; send {\"type\":..,\
                                      \"cookie\":..} yourself to such a node"
                                .into(),
                        });
                    }
                    Err(e) => return Err(e),
                };
                Some(crate::message::admin_proof(cookie, &nonce, kind))
            }
        };
        self.expect(make(proof)).await
    }

    /// Adds a peer (proves the cookie).
    pub async fn add_peer(&self, addr: &str) -> Result<(), ClientError> {
        self.admin("add_peer", |proof| Request::AddPeer {
            addr: addr.to_owned(),
            cookie: None,
            proof,
        })
        .await
        .map(drop)
    }

    /// Removes a peer (proves the cookie).
    pub async fn remove_peer(&self, addr: &str) -> Result<(), ClientError> {
        self.admin("remove_peer", |proof| Request::RemovePeer {
            addr: addr.to_owned(),
            cookie: None,
            proof,
        })
        .await
        .map(drop)
    }

    /// Syncs the node with all its peers now; returns (height, tip, replaced).
    pub async fn sync(&self) -> Result<(u64, BlockHash, bool), ClientError> {
        match self.expect(Request::Sync).await? {
            Response::Synced {
                height,
                tip,
                replaced,
            } => Ok((height, tip, replaced)),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Has the node re-check its stored chain; returns the error if it is invalid.
    pub async fn validate(&self) -> Result<Option<String>, ClientError> {
        match self.expect(Request::Validate).await? {
            Response::Validation { valid: true, .. } => Ok(None),
            Response::Validation { error, .. } => Ok(Some(error.unwrap_or_default())),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }

    /// Asks the node to shut down (proves the cookie).
    pub async fn shutdown(&self) -> Result<(), ClientError> {
        match self
            .admin("shutdown", |proof| Request::Shutdown {
                cookie: None,
                proof,
            })
            .await?
        {
            Response::Exiting => Ok(()),
            other => Err(self.unexpected(format!("{other:?}"))),
        }
    }
}
/// A client's connection, counting the bytes it moves both ways into the client's
/// counter: what tells a slow reply from a stalled one.
#[derive(Debug)]
pub(crate) struct Metered {
    inner: Conn,
    moved: Arc<AtomicU64>,
}

impl AsyncRead for Metered {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.moved.fetch_add(read as u64, Ordering::Relaxed);
        polled
    }
}

impl AsyncWrite for Metered {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = &polled {
            self.moved.fetch_add(*written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server that reads one request and answers with a frame of `len` bytes: its header
    /// and the bytes of `chunks` (each `chunk` bytes long), one every `every`, then holds
    /// the connection open.
    async fn paced_server(len: usize, chunk: usize, chunks: usize, every: Duration) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 64];
            let _ = stream.read(&mut request).await;
            let header = format!("{:<width$}", len, width = crate::frame::HEADER_LEN);
            stream.write_all(header.as_bytes()).await.unwrap();
            for _ in 0..chunks {
                tokio::time::sleep(every).await;
                if stream.write_all(&vec![b'x'; chunk]).await.is_err() {
                    return;
                }
            }
            std::future::pending::<()>().await;
        });
        addr
    }

    /// A reply that keeps moving is read whole however long it takes: 240 KB in 3 s
    /// under a 1 s timeout.
    #[tokio::test]
    async fn a_reply_that_keeps_moving_outlives_the_timeout() {
        let addr = paced_server(240_000, 4_000, 60, Duration::from_millis(50)).await;
        let client = NodeClient::new(addr).with_timeout(Duration::from_secs(1));
        let started = Instant::now();
        let reply = client.raw(b"get").await.unwrap();
        assert_eq!(reply.len(), 240_000);
        assert!(
            started.elapsed() >= Duration::from_secs(2),
            "paced over 3 s"
        );
    }

    /// A reply that stops moving fails one timeout after it stopped.
    #[tokio::test]
    async fn a_reply_that_stalls_times_out() {
        let addr = paced_server(240_000, 40_000, 1, Duration::from_millis(10)).await;
        let client = NodeClient::new(addr).with_timeout(Duration::from_millis(300));
        match client.raw(b"get").await {
            Err(ClientError::Timeout { secs, .. }) => assert!(secs < 30.0 * 0.3, "{secs}"),
            other => panic!("{other:?}"),
        }
    }

    /// A peer trickling a reply forever holds a request at most `MAX_SPANS` timeouts.
    #[tokio::test]
    async fn a_trickled_reply_is_cut_off_after_the_most_spans() {
        let addr = paced_server(50_000_000, 8_192, usize::MAX, Duration::from_millis(5)).await;
        let client = NodeClient::new(addr).with_timeout(Duration::from_millis(50));
        let call = tokio::time::timeout(Duration::from_secs(60), client.raw(b"get"));
        match call.await.expect("the request ended") {
            Err(ClientError::Timeout { secs, .. }) => {
                assert!(secs < f64::from(MAX_SPANS + 1) * 0.05 + 1.0, "{secs}")
            }
            other => panic!("{other:?}"),
        }
    }
}
