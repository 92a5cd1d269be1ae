"""The framing and the block hash of PROTOCOL.md: frames (section 1), canonical data and the
preimage (section 3.1), the admin proof (section 9)."""

import decimal
import hashlib
import hmac
import json

HEADER_LEN = 10
# The node's default frame cap (--max-frame): a reply announced as larger is refused.
MAX_FRAME = 64 * 1024 * 1024


class FrameError(OSError):
    """The other side broke the framing, or closed the connection mid-frame."""


def encode_frame(payload):
    """Returns one frame: the length in bytes, left-aligned in 10 bytes, then the payload."""
    return str(len(payload)).ljust(HEADER_LEN).encode("ascii") + payload


def recv_exact(sock, n):
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise FrameError("connection closed mid-frame" if chunks or left < n
                             else "connection closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock, max_frame=MAX_FRAME):
    """Reads one frame: spaces, one run of digits, spaces (PROTOCOL.md section 1)."""
    head = recv_exact(sock, HEADER_LEN)
    text = head.decode("ascii", "replace")
    digits = text.strip()
    if not digits or not digits.isdigit() or not digits.isascii():
        raise FrameError("bad frame header %r" % head)
    n = int(digits)
    if n > max_frame:
        raise FrameError("frame of %d bytes is over the %d byte cap" % (n, max_frame))
    return recv_exact(sock, n)


def dumps(value):
    """A request as compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def loads(text):
    """Reads JSON as a node does: `-0` is the double -0.0 (PROTOCOL.md section 3.1)."""
    return json.loads(text, parse_int=lambda s: -0.0 if s == "-0" else int(s))


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
    """The exact bytes a block's hash commits to (`block` a dict of its JSON fields)."""
    return ('{"index":%d,"timestamp":%s,"prev_hash":%s,"difficulty":%d,"data":%s,"nonce":%d}' % (
        block["index"], escape_string(block["timestamp"]), escape_string(block["prev_hash"]),
        block["difficulty"], canonical(block["data"]), block["nonce"])).encode("utf-8")


def block_hash(block):
    """The hash of a block (a dict of its JSON fields), as lowercase hex."""
    return hashlib.sha256(preimage(block)).hexdigest()


def admin_proof(cookie, nonce, kind):
    """The proof of `cookie` for an admin request `kind` answering challenge `nonce`."""
    message = ("%s:%s" % (nonce, kind)).encode("ascii")
    return hmac.new(cookie.encode("ascii"), message, hashlib.sha256).hexdigest()
