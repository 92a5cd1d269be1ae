"""`Client`: one method per request of PROTOCOL.md section 4, typed results, the node's
error codes as exceptions, a kept-open connection with timeouts, and the admin cookie found
and proved as `powchain-cli` does (never sent: a challenge's nonce is answered with an HMAC).
"""

import glob
import os
import socket
from dataclasses import dataclass, field
from typing import Any, List, Optional

from . import wire

DEFAULT_TIMEOUT = 10.0
# Mining at a high difficulty takes long: `mine` waits this long by default.
DEFAULT_MINE_TIMEOUT = 3600.0
COOKIE_FILE = ".cookie"
# As many cookies as powchain-cli tries before giving up.
MAX_COOKIES_TRIED = 16


class PowchainError(Exception):
    """Any failure of a call to a node."""


class Unreachable(PowchainError):
    """Nothing answers at the address (or the connection broke)."""


class Timeout(PowchainError):
    """The node did not answer in time."""


class NodeError(PowchainError):
    """The node refused the request: `code` is its error code (PROTOCOL.md section 5)."""

    code = "internal"

    def __init__(self, message, code=None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self):
        return "%s: %s" % (self.code, self.message)


def _error_class(code, doc):
    name = "".join(part.capitalize() for part in code.split("_"))
    return type(name, (NodeError,), {"code": code, "__doc__": doc})


BadFrame = _error_class("bad_frame", "The header was not digits and spaces, or over the cap.")
BadRequest = _error_class("bad_request", "JSON that is not a valid request.")
UnknownType = _error_class("unknown_type", "A request type the node does not know.")
WrongNetwork = _error_class("wrong_network", "A hello with another genesis.")
UnknownPeer = _error_class("unknown_peer", "remove_peer of an address that is not a peer.")
BadPeer = _error_class("bad_peer", "A peer address the node will not take.")
Unauthorized = _error_class("unauthorized", "An admin request without the node's cookie.")
TooLarge = _error_class("too_large", "A block or a reply over its cap.")
ShuttingDown = _error_class("shutting_down", "The node is stopping.")
Internal = _error_class("internal", "The node could not do it (a disk failure).")
TooManyPeers = _error_class("too_many_peers", "Every inbound slot of the node is taken.")

ERRORS = {cls.code: cls for cls in (BadFrame, BadRequest, UnknownType, WrongNetwork,
                                    UnknownPeer, BadPeer, Unauthorized, TooLarge,
                                    ShuttingDown, Internal, TooManyPeers)}


def error_for(code, message):
    """The exception for a node's error reply."""
    cls = ERRORS.get(code)
    return cls(message) if cls else NodeError(message, code)


@dataclass
class Block:
    """A block, as PROTOCOL.md section 3 has it; `data` is any JSON value."""

    index: int
    timestamp: str
    nonce: int
    difficulty: int
    prev_hash: str
    hash: str
    data: Any

    @classmethod
    def from_json(cls, d):
        return cls(d["index"], d["timestamp"], d["nonce"], d["difficulty"], d["prev_hash"],
                   d["hash"], d["data"])

    def to_json(self):
        return {"index": self.index, "timestamp": self.timestamp, "nonce": self.nonce,
                "difficulty": self.difficulty, "prev_hash": self.prev_hash,
                "hash": self.hash, "data": self.data}

    def compute_hash(self):
        """The hash this block's fields hash to (the carried `hash` is never trusted)."""
        return wire.block_hash(self.to_json())


@dataclass
class Status:
    """A node's `status` reply; `work` is an int (it travels as a decimal string)."""

    listen: str
    height: int
    tip: str
    work: int
    difficulty: int
    peers: List[str]
    outbound: List[str] = field(default_factory=list)
    inbound: List[str] = field(default_factory=list)
    mining: bool = False
    hash_rate: float = 0.0
    genesis: Optional[str] = None
    reorgs: int = 0

    @classmethod
    def from_json(cls, d):
        return cls(d["listen"], d["height"], d["tip"], int(d["work"]), d["difficulty"],
                   list(d["peers"]), list(d.get("outbound", [])), list(d.get("inbound", [])),
                   bool(d["mining"]), float(d["hash_rate"]), d.get("genesis"),
                   int(d.get("reorgs", 0)))


@dataclass
class Pong:
    """A `ping` reply: the node's tip."""

    height: int
    tip: str
    work: int


@dataclass
class Synced:
    """A `sync` reply."""

    height: int
    tip: str
    replaced: bool


@dataclass
class BlockResult:
    """What became of an offered block: appended, ignored, synced or rejected."""

    result: str
    reason: Optional[str] = None


def default_home():
    """`$POWCHAIN_HOME`, else `~/.powchain`, as the binaries have it."""
    return os.environ.get("POWCHAIN_HOME") or os.path.join(os.path.expanduser("~"), ".powchain")


def node_dirs(home, port):
    """The data directories a node on `port` may have under `home`, likeliest first."""
    dirs = [os.path.join(home, "nodes", str(port))]
    dirs += sorted(glob.glob(os.path.join(home, "networks", "*", "nodes", str(port))))
    return [d for d in dirs if os.path.isdir(d)]


def read_cookie(data_dir):
    """The admin cookie a node wrote into `data_dir`, or None."""
    try:
        with open(os.path.join(data_dir, COOKIE_FILE), "r", encoding="ascii") as f:
            return f.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


class Client:
    """A client of the node at `host:port`. Calls go one at a time over one kept-open
    connection, re-opened after a failure; each waits at most `timeout` seconds (`mine`:
    `mine_timeout`). Admin calls prove the cookie of `cookie`, else of `data_dir`, else of
    each data directory the node may have under `home` (`$POWCHAIN_HOME` by default)."""

    def __init__(self, port, host="127.0.0.1", home=None, data_dir=None, cookie=None,
                 timeout=DEFAULT_TIMEOUT, mine_timeout=DEFAULT_MINE_TIMEOUT):
        self.host, self.port = host, int(port)
        self.home, self.data_dir, self.cookie = home, data_dir, cookie
        self.timeout, self.mine_timeout = timeout, mine_timeout
        self._sock = None

    @property
    def addr(self):
        return "%s:%d" % (self.host, self.port)

    def close(self):
        """Closes the kept connection (the next call opens another)."""
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    # The exchange.

    def raw(self, payload, timeout=None):
        """Sends one payload (bytes) and returns the reply's bytes: the legacy commands."""
        return self._exchange(payload, timeout or self.timeout, retry=False)

    def call(self, request, timeout=None):
        """Sends `request` (a dict) and returns the reply (a dict); an error reply raises
        its exception. A payload that is not JSON is answered in text: returned as str."""
        safe = request.get("type") not in ("mine", "add_peer", "remove_peer", "shutdown")
        reply = self._exchange(wire.dumps(request), timeout or self.timeout, retry=safe)
        try:
            value = wire.loads(reply.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return reply.decode("utf-8", "replace")
        if isinstance(value, dict) and value.get("type") == "error":
            raise error_for(value.get("code", "internal"), value.get("message", ""))
        return value

    def _exchange(self, payload, timeout, retry):
        for attempt in (1, 2):
            fresh = self._sock is None
            try:
                if fresh:
                    self._sock = socket.create_connection((self.host, self.port),
                                                          timeout=timeout)
                self._sock.settimeout(timeout)
                self._sock.sendall(wire.encode_frame(payload))
                return wire.recv_frame(self._sock)
            except socket.timeout as e:
                self.close()
                raise Timeout("node %s did not answer within %.1f s" % (self.addr, timeout)) \
                    from e
            except wire.FrameError as e:
                self.close()
                # A kept connection the node closed meanwhile (its idle timeout): once more.
                if retry and not fresh and attempt == 1:
                    continue
                raise Unreachable("connection to node %s failed: %s" % (self.addr, e)) from e
            except OSError as e:
                self.close()
                if retry and not fresh and attempt == 1:
                    continue
                raise Unreachable("node %s is unreachable: %s" % (self.addr, e)) from e
        raise Unreachable("node %s is unreachable" % self.addr)

    def _expect(self, request, kind, timeout=None):
        reply = self.call(request, timeout)
        if not isinstance(reply, dict) or reply.get("type") != kind:
            raise PowchainError("node %s sent an unexpected reply: %r" % (self.addr, reply))
        return reply

    # Requests anyone may send.

    def status(self):
        """The node's state."""
        return Status.from_json(self._expect({"type": "status"}, "status"))

    def chain(self):
        """The whole chain, genesis first."""
        return [Block.from_json(b) for b in self._expect({"type": "get_chain"}, "chain")["blocks"]]

    def tail(self, count=1):
        """The newest `count` blocks (at most 5,000), oldest first."""
        reply = self._expect({"type": "get_tail", "count": count}, "blocks")
        return [Block.from_json(b) for b in reply["blocks"]]

    def block(self, height=None):
        """The block at `height`, or the tip; None where the chain is shorter."""
        if height is None:
            blocks = self.tail(1)
        else:
            blocks = self.range(height, 1)
        return blocks[0] if blocks else None

    def range(self, start, count):
        """The blocks at heights `start` .. `start + count - 1` the node holds (at most 5,000)."""
        reply = self._expect({"type": "get_range", "from": start, "count": count}, "blocks")
        return [Block.from_json(b) for b in reply["blocks"]]

    def blocks(self, locator, limit=None):
        """The blocks after the newest hash of `locator` (newest first) the node holds."""
        request = {"type": "get_blocks", "locator": list(locator)}
        if limit is not None:
            request["limit"] = limit
        return [Block.from_json(b) for b in self._expect(request, "blocks")["blocks"]]

    def mine(self, data):
        """Mines a block carrying `data` (any JSON value); returns it once stored."""
        reply = self._expect({"type": "mine", "data": data}, "mined", self.mine_timeout)
        return Block.from_json(reply["block"])

    def append(self, text):
        """Mines a block whose data is the string `text` (the probe's `/append`)."""
        return self.mine(str(text))

    def new_block(self, block):
        """Offers a block (a `Block` or its dict), as a peer or user would."""
        body = block.to_json() if isinstance(block, Block) else block
        reply = self._expect({"type": "new_block", "block": body}, "block_result")
        return BlockResult(reply["result"], reply.get("reason"))

    def validate(self):
        """Has the node re-check its stored chain: None when valid, else what is wrong."""
        reply = self._expect({"type": "validate"}, "validation", self.mine_timeout)
        return None if reply["valid"] else reply.get("error", "")

    def sync(self):
        """Syncs the node with all its peers now."""
        reply = self._expect({"type": "sync"}, "synced", self.mine_timeout)
        return Synced(reply["height"], reply["tip"], reply["replaced"])

    def peers(self):
        """The links the node keeps, connected or being dialled."""
        return list(self._expect({"type": "get_peers"}, "peers")["peers"])

    def ping(self):
        """The node's tip, as a peer's regular check sees it."""
        reply = self._expect({"type": "ping"}, "pong")
        return Pong(reply["height"], reply["tip"], int(reply["work"]))

    def get_addr(self):
        """A sample of the addresses the node knows (at most 32)."""
        return list(self._expect({"type": "get_addr"}, "addr")["addrs"])

    # Admin requests: the cookie is proved, never sent.

    def add_peer(self, addr):
        """Adds a manual peer (`host:port`), kept and re-dialled until removed."""
        self._admin({"type": "add_peer", "addr": addr}, "ok")

    def remove_peer(self, addr):
        """Removes a peer: its link ends and its address leaves the node's book."""
        self._admin({"type": "remove_peer", "addr": addr}, "ok")

    def shutdown(self):
        """Stops the node (it finishes what it was doing and exits)."""
        self._admin({"type": "shutdown"}, "exiting")

    def cookies(self):
        """The cookies an admin call tries, in order."""
        if self.cookie:
            return [self.cookie]
        dirs = [self.data_dir] if self.data_dir else node_dirs(self.home or default_home(),
                                                               self.port)
        found = [c for c in (read_cookie(d) for d in dirs) if c]
        return found[:MAX_COOKIES_TRIED]

    def _admin(self, request, kind):
        cookies = self.cookies()
        if not cookies:
            raise Unauthorized("no cookie found for node %s (looked in %s)"
                               % (self.addr, self.data_dir or os.path.join(
                                   self.home or default_home(), "nodes", str(self.port))))
        last = None
        for cookie in cookies:
            try:
                nonce = self._expect({"type": "challenge"}, "challenge")["nonce"]
            except UnknownType:
                raise Unauthorized("node %s does not answer \"challenge\" (a version before it): "
                                   "its cookie was not sent" % self.addr) from None
            proved = dict(request, proof=wire.admin_proof(cookie, nonce, request["type"]))
            try:
                return self._expect(proved, kind)
            except Unauthorized as e:
                last = e
        raise last


__all__ = ["Client", "Block", "Status", "Pong", "Synced", "BlockResult", "PowchainError",
           "Unreachable", "Timeout", "NodeError", "ERRORS", "error_for", "read_cookie",
           "node_dirs", "default_home"] + [cls.__name__ for cls in ERRORS.values()]
