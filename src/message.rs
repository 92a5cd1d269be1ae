//! The protocol's messages: typed JSON requests and replies, and the original's text commands.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::block::{Block, BlockHash};

/// Most blocks one `get_blocks`, `get_tail` or `get_range` reply carries.
pub(crate) const MAX_BLOCKS_PER_REPLY: usize = 5000;
/// Protocol version sent in `hello`: 2 adds `announce` and `get_block` (a peer that says
/// 2 or more is sent big blocks as announcements; one that says 1 gets them pushed whole);
/// 3 adds binary block lists (a peer that says 3 or more is asked for them).
pub const PROTOCOL_VERSION: u32 = 3;

/// The first protocol version that answers `"encoding":"binary"` with a binary block list.
pub(crate) const BINARY_VERSION: u32 = 3;

/// The first protocol version that takes `announce` and answers `get_block`.
pub(crate) const ANNOUNCE_VERSION: u32 = 2;
/// The legacy reply to a chain push that was adopted.
pub(crate) const LEGACY_ACCEPTED: &str = "BLOCKCHAIN ACCEPTED";
/// The legacy reply to a chain push that was refused.
pub(crate) const LEGACY_REJECTED: &str = "BLOCKCHAIN REJECTED";
/// The legacy reply to text that is not JSON.
pub(crate) const LEGACY_INVALID_JSON: &str = "INVALID JSON";
/// The legacy reply to `SHUTDOWN`.
pub(crate) const LEGACY_EXITING: &str = "EXITING";

/// Why a request failed: the machine-readable `code` of an error reply, shared by the
/// node, [`crate::NodeClient`] and the probe. Nothing branches on the text of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame header is not digits and spaces, or the frame is over the cap.
    BadFrame,
    /// JSON that is not a valid request.
    BadRequest,
    /// A `"type"` the node does not know.
    UnknownType,
    /// `hello` from a node of another network (another genesis).
    WrongNetwork,
    /// `remove_peer` of an address that is not a peer.
    UnknownPeer,
    /// `add_peer` of an address that is not `host:port`, or the node itself.
    BadPeer,
    /// An admin request without the node's cookie.
    Unauthorized,
    /// A block, or a reply, over its size cap.
    TooLarge,
    /// The node is stopping; the request was not carried out.
    ShuttingDown,
    /// The node could not do it (a disk failure).
    Internal,
    /// `hello` from a node when every inbound slot is taken: dial another node.
    TooManyPeers,
    /// A code this version does not know (from a newer node).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code a node sends.
    pub const ALL: [ErrorCode; 11] = [
        ErrorCode::BadFrame,
        ErrorCode::BadRequest,
        ErrorCode::UnknownType,
        ErrorCode::WrongNetwork,
        ErrorCode::UnknownPeer,
        ErrorCode::BadPeer,
        ErrorCode::Unauthorized,
        ErrorCode::TooLarge,
        ErrorCode::ShuttingDown,
        ErrorCode::Internal,
        ErrorCode::TooManyPeers,
    ];

    /// Returns the code as it travels on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadFrame => "bad_frame",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::WrongNetwork => "wrong_network",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::BadPeer => "bad_peer",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::ShuttingDown => "shutting_down",
            ErrorCode::Internal => "internal",
            ErrorCode::TooManyPeers => "too_many_peers",
            ErrorCode::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// What a node says of itself in a handshake.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version.
    pub version: u32,
    /// Genesis hash: the network's identity.
    pub genesis: BlockHash,
    /// Address the node listens on, `host:port`.
    pub listen: String,
    /// Height of its tip.
    pub height: u64,
    /// Hash of its tip.
    pub tip: BlockHash,
    /// Total work of its chain, decimal.
    pub work: String,
}

/// A block without its data: what `announce` sends. The data's hash is part of the
/// block's, so `hash` can be checked only once the body is fetched; what can be checked
/// before (the link to our tip, the difficulty, that `hash` meets it, the time) is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// Height in the chain.
    pub index: u64,
    /// UTC time the block was mined.
    pub timestamp: crate::block::Timestamp,
    /// The nonce.
    pub nonce: u64,
    /// Leading zero bits the hash must have.
    pub difficulty: u32,
    /// Hash of the parent block.
    pub prev_hash: crate::block::PrevHash,
    /// The block's hash.
    pub hash: BlockHash,
    /// Bytes of the block's canonical data.
    pub size: usize,
}

impl Header {
    /// Returns the header of `block`.
    pub fn of(block: &Block) -> Self {
        Header {
            index: block.index,
            timestamp: block.timestamp.clone(),
            nonce: block.nonce,
            difficulty: block.difficulty,
            prev_hash: block.prev_hash,
            hash: block.hash,
            size: block.data.as_str().len(),
        }
    }

    /// Tells whether `block` is the one announced: every field the same, and its data of
    /// the announced size.
    pub fn matches(&self, block: &Block) -> bool {
        *self == Header::of(block)
    }
}

/// A peer's tip, as a `pong` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pong {
    /// Height of its tip.
    pub height: u64,
    /// Hash of its tip.
    pub tip: BlockHash,
    /// Total work of its chain, decimal.
    pub work: String,
}

/// How a node writes the blocks of a `blocks` or `chain` reply.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// The JSON reply, as every version writes it.
    #[default]
    Json,
    /// A binary block list ([`crate::record::encode_list`]), from version 3 on; a node of
    /// an earlier version ignores the field and answers in JSON.
    Binary,
}

impl Encoding {
    /// Tells whether this is the default, JSON (the field is left out then).
    pub(crate) fn is_json(&self) -> bool {
        *self == Encoding::Json
    }
}

/// A request, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Handshake between peers.
    Hello(Hello),
    /// The node's state.
    Status,
    /// The whole chain.
    GetChain {
        /// How to write the reply's blocks (JSON unless asked otherwise).
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
    },
    /// Blocks after the newest locator hash the node knows.
    GetBlocks {
        /// Hashes newest first, thinning out, genesis last.
        locator: Vec<BlockHash>,
        /// At most this many blocks.
        #[serde(default)]
        limit: Option<usize>,
        /// How to write the reply's blocks (JSON unless asked otherwise).
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
    },
    /// The newest `count` blocks, oldest first.
    GetTail {
        /// How many (at most 5,000 are sent).
        count: usize,
        /// How to write the reply's blocks (JSON unless asked otherwise).
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
    },
    /// The blocks at heights `from` to `from + count - 1` of the node's chain (as many of
    /// them as it holds, at most 5,000): how a syncing node fetches the parts of one chain
    /// from several peers at once.
    GetRange {
        /// The first height.
        from: u64,
        /// How many (at most 5,000 are sent).
        count: usize,
        /// How to write the reply's blocks (JSON unless asked otherwise).
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
    },
    /// A block offered by a peer or a user.
    NewBlock {
        /// The block.
        block: Block,
    },
    /// A new block's header, from a peer that holds its body (`get_block` fetches it).
    Announce {
        /// The header.
        header: Header,
    },
    /// One block by its hash, if the node holds it in its chain: `blocks` with it, or
    /// with none.
    GetBlock {
        /// Its hash.
        hash: BlockHash,
        /// How to write the reply's blocks (JSON unless asked otherwise).
        #[serde(default, skip_serializing_if = "Encoding::is_json")]
        encoding: Encoding,
    },
    /// Mine a block with this data.
    Mine {
        /// Any JSON value.
        data: Value,
    },
    /// The node's peers.
    GetPeers,
    /// Is the link alive? (a peer's small, regular check)
    Ping,
    /// A sample of the addresses the node knows, for gossip.
    GetAddr,
    /// Add a peer (admin).
    AddPeer {
        /// `host:port`.
        addr: String,
        /// The node's cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cookie: Option<String>,
        /// Proof of the cookie for this connection's challenge, instead of the cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// Remove a peer (admin).
    RemovePeer {
        /// `host:port`.
        addr: String,
        /// The node's cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cookie: Option<String>,
        /// Proof of the cookie for this connection's challenge, instead of the cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// Sync with every peer now.
    Sync,
    /// Re-check the whole stored chain.
    Validate,
    /// Stop the node (admin).
    Shutdown {
        /// The node's cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cookie: Option<String>,
        /// Proof of the cookie for this connection's challenge, instead of the cookie.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        proof: Option<String>,
    },
    /// A nonce for the next admin request on this connection to prove the cookie with
    /// (`proof`), so that whoever listens on a node's port never learns the cookie.
    Challenge,
}

impl Request {
    /// Tells whether sending the request twice does no more than sending it once (not
    /// `mine`, which would mine twice, nor the admin requests).
    pub(crate) fn is_safe_to_repeat(&self) -> bool {
        !matches!(
            self,
            Request::Mine { .. }
                | Request::AddPeer { .. }
                | Request::RemovePeer { .. }
                | Request::Shutdown { .. }
        )
    }

    /// How the request asks for the blocks of its reply (JSON for every request but the
    /// five answered with blocks, when they ask otherwise).
    pub fn encoding(&self) -> Encoding {
        match self {
            Request::GetChain { encoding }
            | Request::GetBlocks { encoding, .. }
            | Request::GetTail { encoding, .. }
            | Request::GetRange { encoding, .. }
            | Request::GetBlock { encoding, .. } => *encoding,
            _ => Encoding::Json,
        }
    }

    /// Every request `type` tag, as [`Request::kind`] returns them.
    pub(crate) const TYPES: [&'static str; 19] = [
        "hello",
        "status",
        "get_chain",
        "get_blocks",
        "get_tail",
        "get_range",
        "new_block",
        "announce",
        "get_block",
        "mine",
        "get_peers",
        "ping",
        "get_addr",
        "add_peer",
        "remove_peer",
        "sync",
        "validate",
        "shutdown",
        "challenge",
    ];

    /// Returns the request's `type` tag, for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Hello(_) => "hello",
            Request::Status => "status",
            Request::GetChain { .. } => "get_chain",
            Request::GetBlocks { .. } => "get_blocks",
            Request::GetTail { .. } => "get_tail",
            Request::GetRange { .. } => "get_range",
            Request::NewBlock { .. } => "new_block",
            Request::Announce { .. } => "announce",
            Request::GetBlock { .. } => "get_block",
            Request::Mine { .. } => "mine",
            Request::GetPeers => "get_peers",
            Request::Ping => "ping",
            Request::GetAddr => "get_addr",
            Request::AddPeer { .. } => "add_peer",
            Request::RemovePeer { .. } => "remove_peer",
            Request::Sync => "sync",
            Request::Validate => "validate",
            Request::Shutdown { .. } => "shutdown",
            Request::Challenge => "challenge",
        }
    }
}

/// What became of an offered block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockOutcome {
    /// It extended the tip and was stored.
    Appended,
    /// It was not above our height (or already known).
    Ignored,
    /// It did not link, and syncing with its sender changed our chain.
    Synced,
    /// It broke a rule, or did not link and syncing did not help.
    Rejected,
}

/// The node's state, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// Address the node listens on.
    pub listen: String,
    /// Height of the tip.
    pub height: u64,
    /// Hash of the tip.
    pub tip: BlockHash,
    /// Total work, decimal.
    pub work: String,
    /// Difficulty of the next block.
    pub difficulty: u32,
    /// Connected peers.
    pub peers: Vec<String>,
    /// Connected peers this node dialled (outbound and manual links).
    #[serde(default)]
    pub outbound: Vec<String>,
    /// Connected peers that dialled this node.
    #[serde(default)]
    pub inbound: Vec<String>,
    /// Whether a mining run is in progress.
    pub mining: bool,
    /// Attempts per second of the current or last mining run.
    pub hash_rate: f64,
    /// Genesis hash of the node's network.
    #[serde(default)]
    pub genesis: Option<BlockHash>,
    /// Reorgs since the node started: times a chain with more work replaced blocks it held.
    #[serde(default)]
    pub reorgs: u64,
    /// Blocks a selfish miner (`--strategy selfish`) mined and withholds; absent for an
    /// honest node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub withheld: Option<u32>,
}

/// A reply, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    /// Handshake reply.
    Hello(Hello),
    /// The node's state.
    Status(Status),
    /// The whole chain.
    Chain {
        /// Blocks, genesis first.
        blocks: Vec<Block>,
    },
    /// Blocks answering `get_blocks`.
    Blocks {
        /// Blocks in order; empty when up to date.
        blocks: Vec<Block>,
    },
    /// What became of an offered block.
    BlockResult {
        /// The outcome.
        result: BlockOutcome,
        /// Why, when rejected or ignored.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// A block mined and stored.
    Mined {
        /// The block.
        block: Block,
    },
    /// The node's peers.
    Peers {
        /// `host:port` each.
        peers: Vec<String>,
    },
    /// The link is alive; the peer's tip.
    Pong(Pong),
    /// A sample of addresses the node knows.
    Addr {
        /// `host:port` each, at most 32.
        addrs: Vec<String>,
    },
    /// Done.
    Ok,
    /// The outcome of a sync.
    Synced {
        /// Height after the sync.
        height: u64,
        /// Tip after the sync.
        tip: BlockHash,
        /// Whether our chain changed.
        replaced: bool,
    },
    /// The outcome of a validation.
    Validation {
        /// Whether the stored chain is valid.
        valid: bool,
        /// What is wrong, if not.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// The node is shutting down.
    Exiting,
    /// A nonce for the next admin request on this connection (see [`admin_proof`]).
    Challenge {
        /// 64 lowercase hex digits, fresh for each `challenge`.
        nonce: String,
    },
    /// The request failed; the connection stays usable.
    Error {
        /// Machine-readable code.
        code: ErrorCode,
        /// What went wrong and what to do.
        message: String,
    },
}

impl Response {
    /// Builds an error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

/// Returns the proof of `cookie` for an admin request of type `kind` (`shutdown`,
/// `add_peer`, `remove_peer`) answering a connection's challenge `nonce`: lowercase hex
/// of HMAC-SHA256 keyed by the cookie's text, over `nonce ":" kind`. A listener that is
/// not the node learns a proof for its own nonce only, which no node will ask again.
pub fn admin_proof(cookie: &str, nonce: &str, kind: &str) -> String {
    use hmac::Mac;
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(cookie.as_bytes()) else {
        return String::new();
    };
    mac.update(nonce.as_bytes());
    mac.update(b":");
    mac.update(kind.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// One of the original's plain-text commands.
#[derive(Debug, Clone, PartialEq)]
pub enum Legacy {
    /// `GET CHAIN`: reply with the chain as a bare JSON array.
    GetChain,
    /// `SHUTDOWN`: reply `EXITING` and stop.
    Shutdown,
    /// A bare JSON array of blocks: adopt it if valid and with more work.
    PushChain(Vec<Block>),
    /// A bare JSON array that is no chain of blocks (why): reply `BLOCKCHAIN REJECTED`.
    NotAChain(String),
}

/// A decoded payload.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A JSON request.
    Request(Box<Request>),
    /// A legacy text command.
    Legacy(Legacy),
    /// Not JSON and no known command: reply `INVALID JSON`.
    InvalidJson,
    /// JSON that is not a valid request: reply with this error.
    BadRequest(Response),
}

/// Parses one frame's payload.
pub fn parse_incoming(payload: &[u8]) -> Incoming {
    let Ok(text) = std::str::from_utf8(payload) else {
        return Incoming::InvalidJson;
    };
    let command = text.trim();
    if command.eq_ignore_ascii_case("GET CHAIN") {
        return Incoming::Legacy(Legacy::GetChain);
    }
    if command == "SHUTDOWN" {
        return Incoming::Legacy(Legacy::Shutdown);
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => return Incoming::InvalidJson,
    };
    match value {
        // Old text clients expect one of the two legacy replies to any pushed array.
        Value::Array(_) => match serde_json::from_value::<Vec<Block>>(value) {
            Ok(blocks) => Incoming::Legacy(Legacy::PushChain(blocks)),
            Err(e) => Incoming::Legacy(Legacy::NotAChain(e.to_string())),
        },
        Value::Object(ref map) => {
            let Some(kind) = map.get("type").and_then(Value::as_str).map(str::to_owned) else {
                return Incoming::BadRequest(Response::error(
                    ErrorCode::BadRequest,
                    "a request is a JSON object with a \"type\" field",
                ));
            };
            if !Request::TYPES.contains(&kind.as_str()) {
                return Incoming::BadRequest(Response::error(
                    ErrorCode::UnknownType,
                    format!("unknown request type {kind:?}"),
                ));
            }
            match serde_json::from_value::<Request>(value) {
                Ok(r) => Incoming::Request(Box::new(r)),
                Err(e) => Incoming::BadRequest(Response::error(
                    ErrorCode::BadRequest,
                    format!("bad {kind:?} request: {e}"),
                )),
            }
        }
        _ => Incoming::BadRequest(Response::error(
            ErrorCode::BadRequest,
            "a request is a JSON object with a \"type\" field",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Every request of the design's table parses from its documented JSON.
    #[test]
    fn requests_parse_from_documented_json() {
        let g = crate::genesis(16, None).hash.to_hex();
        let cases = [
            json!({"type":"hello","version":1,"genesis":g,"listen":"127.0.0.1:5001","height":0,"tip":g,"work":"65536"}),
            json!({"type":"status"}),
            json!({"type":"get_chain"}),
            json!({"type":"get_blocks","locator":[g],"limit":10}),
            json!({"type":"new_block","block":crate::genesis(16, None)}),
            json!({"type":"mine","data":{"a":1}}),
            json!({"type":"get_peers"}),
            json!({"type":"add_peer","addr":"127.0.0.1:5002","cookie":"c"}),
            json!({"type":"remove_peer","addr":"127.0.0.1:5002"}),
            json!({"type":"sync"}),
            json!({"type":"validate"}),
            json!({"type":"shutdown"}),
        ];
        for case in cases {
            let text = case.to_string();
            match parse_incoming(text.as_bytes()) {
                Incoming::Request(r) => assert_eq!(case["type"], r.kind()),
                other => panic!("{text} parsed as {other:?}"),
            }
        }
    }

    /// The original's text commands and replies are recognised exactly.
    #[test]
    fn legacy_commands_are_recognised() {
        assert_eq!(
            parse_incoming(b"GET CHAIN"),
            Incoming::Legacy(Legacy::GetChain)
        );
        assert_eq!(
            parse_incoming(b"get chain\n"),
            Incoming::Legacy(Legacy::GetChain)
        );
        assert_eq!(
            parse_incoming(b"SHUTDOWN"),
            Incoming::Legacy(Legacy::Shutdown)
        );
        assert_eq!(parse_incoming(b"hello there"), Incoming::InvalidJson);
        assert_eq!(parse_incoming(&[0xff, 0xfe]), Incoming::InvalidJson);
        let chain = serde_json::to_string(&vec![crate::genesis(16, None)]).unwrap();
        assert!(
            matches!(parse_incoming(chain.as_bytes()), Incoming::Legacy(Legacy::PushChain(b)) if b.len() == 1)
        );
    }

    /// JSON that is not a request gets an error naming the problem.
    #[test]
    fn bad_requests_get_clear_errors() {
        let code = |p: &str| match parse_incoming(p.as_bytes()) {
            Incoming::BadRequest(Response::Error { code, .. }) => code,
            other => panic!("{p}: {other:?}"),
        };
        assert_eq!(code(r#"{"type":"fly"}"#), "unknown_type");
        assert_eq!(code(r#"{"nope":1}"#), "bad_request");
        assert_eq!(code(r#"{"type":"mine"}"#), "bad_request");
        assert_eq!(code("42"), "bad_request");
        // An array is always a pushed chain, answered in legacy text.
        assert!(matches!(
            parse_incoming(br#"[{"index":"x"}]"#),
            Incoming::Legacy(Legacy::NotAChain(_))
        ));
    }

    /// Every error code travels as its `as_str` form and reads back as itself; a code from
    /// a newer node reads as `Unknown` instead of failing the whole reply.
    #[test]
    fn error_codes_round_trip_on_the_wire() {
        use ErrorCode::*;
        for code in ErrorCode::ALL {
            let text = serde_json::to_string(&code).unwrap();
            assert_eq!(text, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<ErrorCode>(&text).unwrap(), code);
        }
        let reply: Response =
            serde_json::from_str(r#"{"type":"error","code":"from_the_future","message":"m"}"#)
                .unwrap();
        assert!(matches!(reply, Response::Error { code: Unknown, .. }));
    }

    /// `Request::TYPES` lists exactly the tags requests serialize with.
    #[test]
    fn request_types_match_the_serialized_tags() {
        let g = crate::genesis(16, None);
        let requests = [
            Request::Status,
            Request::GetChain {
                encoding: Encoding::Json,
            },
            Request::GetBlocks {
                locator: vec![],
                limit: None,
                encoding: Encoding::Binary,
            },
            Request::GetTail {
                count: 3,
                encoding: Encoding::Json,
            },
            Request::GetRange {
                from: 7,
                count: 3,
                encoding: Encoding::Binary,
            },
            Request::Announce {
                header: Header::of(&g),
            },
            Request::GetBlock {
                hash: g.hash,
                encoding: Encoding::Json,
            },
            Request::NewBlock { block: g },
            Request::Mine { data: json!(1) },
            Request::GetPeers,
            Request::Ping,
            Request::GetAddr,
            Request::AddPeer {
                addr: "a:1".into(),
                cookie: None,
                proof: None,
            },
            Request::RemovePeer {
                addr: "a:1".into(),
                cookie: None,
                proof: None,
            },
            Request::Sync,
            Request::Validate,
            Request::Shutdown {
                cookie: None,
                proof: None,
            },
            Request::Challenge,
        ];
        for r in &requests {
            let tag = serde_json::to_value(r).unwrap()["type"].clone();
            assert_eq!(tag, r.kind());
            assert!(Request::TYPES.contains(&r.kind()));
        }
        assert_eq!(Request::TYPES.len(), requests.len() + 1); // and hello
    }

    /// The admin proof is PROTOCOL.md's vector, and depends on the nonce and the type.
    #[test]
    fn admin_proof_matches_the_protocols_vector() {
        let (cookie, nonce) = ("0".repeat(64), "1".repeat(64));
        assert_eq!(
            admin_proof(&cookie, &nonce, "shutdown"),
            "5bbcf719c058c5a6fee56f77e5c60e32c284b95b1f19e540e026318f2fdef2bc"
        );
        assert_ne!(
            admin_proof(&cookie, &nonce, "shutdown"),
            admin_proof(&cookie, &nonce, "add_peer")
        );
        assert_ne!(
            admin_proof(&cookie, &nonce, "shutdown"),
            admin_proof(&cookie, &"2".repeat(64), "shutdown")
        );
    }

    /// Replies serialize with the design's tags and field names.
    #[test]
    fn replies_use_documented_tags() {
        let r = Response::BlockResult {
            result: BlockOutcome::Appended,
            reason: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"type":"block_result","result":"appended"})
        );
        assert_eq!(
            serde_json::to_value(Response::Ok).unwrap(),
            json!({"type":"ok"})
        );
        assert_eq!(
            serde_json::to_value(Response::Exiting).unwrap(),
            json!({"type":"exiting"})
        );
        let e = Response::error(ErrorCode::UnknownPeer, "no such peer");
        assert_eq!(
            serde_json::to_value(e).unwrap(),
            json!({"type":"error","code":"unknown_peer","message":"no such peer"})
        );
    }

    proptest! {
        /// Random payloads never panic the parser.
        #[test]
        fn parser_survives_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = parse_incoming(&data);
        }

        /// Random JSON-ish text never panics the parser.
        #[test]
        fn parser_survives_random_json(s in r#"[\[\]{}":,a-z0-9 ]{0,80}"#) {
            let _ = parse_incoming(s.as_bytes());
        }
    }
}
