"""An independent check of a chain against every rule PROTOCOL.md states of a block and its
parent: index, link, the recomputed hash (section 3.1), proof of work, nonce bound and the
timestamp's exact form (section 7). The rules that need the chain's history beyond the
parent (difficulty retargeting, the median-time rule) are the node's own check (`validate`).

    from powchain import verify
    tip = verify.check_chain(blocks)      # blocks: the JSON dicts of get_chain, genesis first
"""

import calendar
import datetime
import hashlib
import re
import socket
import sys

from . import binary as binary_list
from . import wire

MAX_NONCE = 2**53 - 1


class Problem(Exception):
    """The chain breaks a rule."""


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
        digest = hashlib.sha256(wire.preimage(block)).digest()
        if digest.hex() != block["hash"]:
            raise Problem("block %d claims hash %s but hashes to %s"
                          % (n, block["hash"], digest.hex()))
        if parent is not None:
            zeros = leading_zero_bits(digest)
            if zeros < block["difficulty"]:
                raise Problem("block %d has insufficient work: %d leading zero bits, %d required"
                              % (n, zeros, block["difficulty"]))
            if parse_timestamp(block["timestamp"]) is None:
                raise Problem("block %d has an unparsable timestamp %r" % (n, block["timestamp"]))
        parent = block
    return parent["hash"]


TIMESTAMP = re.compile(r"([0-9]{2})/([0-9]{2})/([0-9]{4}), ([0-9]{2}):([0-9]{2}):([0-9]{2})")


def parse_timestamp(text):
    """Unix seconds of a timestamp in rule 6's exact form (section 7), else None.

    Exactly 20 ASCII bytes DD/MM/YYYY, HH:MM:SS: zero-padded fields, one space, a real
    date, hours 00-23, minutes and seconds 00-59 (no leap second). time.strptime alone is
    more lenient (unpadded fields, second 60), so the grammar is matched first.
    """
    m = TIMESTAMP.fullmatch(text)
    if m is None:
        return None
    day, month, year, hour, minute, second = (int(g) for g in m.groups())
    # datetime has no year 0; the Gregorian calendar repeats every 400 years (146097 days).
    shift = 400 if year == 0 else 0
    if not 1 <= month <= 12 or not 1 <= day <= calendar.monthrange(year + shift, month)[1]:
        return None
    if hour > 23 or minute > 59 or second > 59:
        return None
    days = (datetime.date(year + shift, month, day).toordinal()
            - datetime.date(1970, 1, 1).toordinal() - (shift // 400) * 146097)
    return days * 86400 + hour * 3600 + minute * 60 + second


def fetch_chain(host, port, timeout=30, binary=False):
    """Asks the node at host:port for its chain over a plain socket; returns the blocks.

    With `binary` the request asks for a binary list (PROTOCOL.md section 4.1, a node of
    version 3); a node that answers in JSON (an older one) is read all the same.
    """
    request = {"type": "get_chain"}
    if binary:
        request["encoding"] = "binary"
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(wire.encode_frame(wire.dumps(request)))
        payload = wire.recv_frame(sock)
    if binary_list.is_list(payload):
        return binary_list.decode_list(payload)
    reply = wire.loads(payload.decode("utf-8"))
    if reply.get("type") == "error":
        raise OSError("node refused: %s (%s)" % (reply.get("message"), reply.get("code")))
    if reply.get("type") != "chain":
        raise OSError("unexpected reply type %r" % reply.get("type"))
    return reply["blocks"]


USAGE = "usage: %s [--binary] [HOST:]PORT"


def main(argv):
    """`verify_chain.py [--binary] [HOST:]PORT`: exit 0 valid, 1 invalid, 2 usage or
    unreachable. `--binary` fetches the chain as a binary list (section 4.1)."""
    args = argv[1:]
    binary = "--binary" in args
    args = [a for a in args if a != "--binary"]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(USAGE % argv[0], file=sys.stderr)
        return 2
    host, _, port = args[0].rpartition(":")
    try:
        port = int(port)
    except ValueError:
        print("bad port in %r" % args[0], file=sys.stderr)
        return 2
    try:
        blocks = fetch_chain(host or "127.0.0.1", port, binary=binary)
    except (OSError, ValueError) as e:
        print("could not fetch the chain from %s: %s" % (args[0], e), file=sys.stderr)
        return 2
    try:
        tip = check_chain(blocks)
    except Problem as p:
        print("invalid: %s" % p)
        return 1
    print("valid (%d blocks, tip %s)" % (len(blocks), tip))
    return 0
