#!/usr/bin/env python3
"""Fetch a powchain node's chain and check every block, from PROTOCOL.md alone.

Usage: python3 examples/verify_chain.py [HOST:]PORT

Connects over the framing of PROTOCOL.md section 1, sends {"type":"get_chain"}, and checks
each block's index, link to its parent, recomputed hash (section 3.1), proof of work,
nonce bound and timestamp format (section 7). Prints the first problem and exits 1, or
prints "valid" and exits 0. Exit 2: usage, or the node could not be asked.
Python 3 standard library only.
"""

import decimal
import hashlib
import json
import socket
import sys
import time

HEADER_LEN = 10
MAX_FRAME = 64 * 1024 * 1024
MAX_NONCE = 2**53 - 1
TIMEOUT_SECS = 30


class Problem(Exception):
    """The chain breaks a rule."""


def send_frame(sock, payload):
    """Sends one frame: the length in bytes, left-aligned in 10 bytes, then the payload."""
    sock.sendall(str(len(payload)).ljust(HEADER_LEN).encode("ascii") + payload)


def recv_exact(sock, n):
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise OSError("connection closed mid-frame")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    """Reads one frame; the header is digits and spaces, aligned either way."""
    head = recv_exact(sock, HEADER_LEN)
    text = head.decode("ascii", "replace")
    if not text.strip() or any(c not in "0123456789 " for c in text):
        raise OSError("bad frame header %r" % head)
    n = int(text.strip())
    if n > MAX_FRAME:
        raise OSError("frame of %d bytes is over the %d byte cap" % (n, MAX_FRAME))
    return recv_exact(sock, n)


def escape_string(s):
    """A JSON string as serde_json's compact writer escapes it (PROTOCOL.md 3.1)."""
    named = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t",
             "\n": "\\n", "\f": "\\f", "\r": "\\r"}
    out = ['"']
    for c in s:
        if c in named:
            out.append(named[c])
        elif ord(c) < 0x20:
            out.append("\\u%04x" % ord(c))
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def format_float(x):
    """The shortest round-trip form of a double, written as serde_json (ryu) writes it."""
    if x == 0:
        return "-0.0" if str(x).startswith("-") else "0.0"
    sign, digits, exp = decimal.Decimal(repr(x)).normalize().as_tuple()
    d = "".join(map(str, digits))
    kk = len(d) + exp  # position of the decimal point
    if 0 <= exp and kk <= 16:
        body = d + "0" * exp + ".0"
    elif 0 < kk <= 16:
        body = d[:kk] + "." + d[kk:]
    elif -5 < kk <= 0:
        body = "0." + "0" * (-kk) + d
    else:
        e = kk - 1
        body = d[0] + ("." + d[1:] if len(d) > 1 else "") + ("e+%d" % e if e > 0 else "e%d" % e)
    return ("-" if sign else "") + body


def canonical(value):
    """Compact JSON with the keys of every object sorted (PROTOCOL.md 3.1)."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: kv[0].encode("utf-8"))
        return "{" + ",".join(escape_string(k) + ":" + canonical(v) for k, v in items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(canonical(v) for v in value) + "]"
    if isinstance(value, str):
        return escape_string(value)
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        if -(2**63) <= value < 2**64:
            return str(value)
        return format_float(float(value))  # beyond 64 bits a number is a double
    return format_float(value)


def preimage(block):
    """The exact bytes the block hash commits to."""
    return ('{"index":%d,"timestamp":%s,"prev_hash":%s,"difficulty":%d,"data":%s,"nonce":%d}' % (
        block["index"], escape_string(block["timestamp"]), escape_string(block["prev_hash"]),
        block["difficulty"], canonical(block["data"]), block["nonce"])).encode("utf-8")


def leading_zero_bits(digest):
    bits = 0
    for byte in digest:
        if byte:
            return bits + 8 - byte.bit_length()
        bits += 8
    return bits


def check_fields(i, block):
    for field, kind in (("index", int), ("timestamp", str), ("nonce", int),
                        ("difficulty", int), ("prev_hash", str), ("hash", str)):
        if not isinstance(block.get(field), kind) or isinstance(block.get(field), bool):
            raise Problem("block at position %d: field %r missing or not a %s"
                          % (i, field, kind.__name__))
    if "data" not in block:
        raise Problem("block at position %d: field 'data' missing" % i)


def check_chain(blocks):
    """Raises Problem at the first broken rule; returns the tip's hash."""
    if not isinstance(blocks, list) or not blocks:
        raise Problem("the chain is empty")
    parent = None
    for i, block in enumerate(blocks):
        if not isinstance(block, dict):
            raise Problem("block at position %d is not a JSON object" % i)
        check_fields(i, block)
        n = block["index"]
        if parent is None:
            if n != 0 or block["prev_hash"] != "0000" or block["nonce"] != 0:
                raise Problem("block %d: the first block is not a genesis block" % n)
        else:
            if n != parent["index"] + 1:
                raise Problem("block %d has the wrong index: expected %d"
                              % (n, parent["index"] + 1))
            if block["prev_hash"] != parent["hash"]:
                raise Problem("block %d links to %s, not to its parent %s"
                              % (n, block["prev_hash"][:16], parent["hash"][:16]))
        if not 0 <= block["nonce"] <= MAX_NONCE:
            raise Problem("block %d has nonce %d, above 2^53 - 1" % (n, block["nonce"]))
        if not 0 <= block["difficulty"] <= 64:
            raise Problem("block %d has difficulty %d, outside 0..64" % (n, block["difficulty"]))
        digest = hashlib.sha256(preimage(block)).digest()
        if digest.hex() != block["hash"]:
            raise Problem("block %d claims hash %s but hashes to %s"
                          % (n, block["hash"], digest.hex()))
        if parent is not None:
            zeros = leading_zero_bits(digest)
            if zeros < block["difficulty"]:
                raise Problem("block %d has insufficient work: %d leading zero bits, %d required"
                              % (n, zeros, block["difficulty"]))
            try:
                time.strptime(block["timestamp"], "%d/%m/%Y, %H:%M:%S")
            except ValueError:
                raise Problem("block %d has an unparsable timestamp %r" % (n, block["timestamp"]))
        parent = block
    return parent["hash"]


def fetch_chain(host, port):
    with socket.create_connection((host, port), timeout=TIMEOUT_SECS) as sock:
        send_frame(sock, b'{"type":"get_chain"}')
        reply = json.loads(recv_frame(sock).decode("utf-8"))
    if reply.get("type") == "error":
        raise OSError("node refused: %s (%s)" % (reply.get("message"), reply.get("code")))
    if reply.get("type") != "chain":
        raise OSError("unexpected reply type %r" % reply.get("type"))
    return reply["blocks"]


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    host, _, port = argv[1].rpartition(":")
    try:
        port = int(port)
    except ValueError:
        print("bad port in %r" % argv[1], file=sys.stderr)
        return 2
    try:
        blocks = fetch_chain(host or "127.0.0.1", port)
    except (OSError, ValueError) as e:
        print("could not fetch the chain from %s: %s" % (argv[1], e), file=sys.stderr)
        return 2
    try:
        tip = check_chain(blocks)
    except Problem as p:
        print("invalid: %s" % p)
        return 1
    print("valid (%d blocks, tip %s)" % (len(blocks), tip))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
