"""Binary block lists of PROTOCOL.md section 4.1 (protocol version 3): what a node answers to
a block request with `"encoding":"binary"`. `decode_list` turns one into the JSON form's
block dicts (as `get_chain` gives them), so every other check reads them unchanged.

    from powchain import binary
    if binary.is_list(payload):
        blocks = binary.decode_list(payload)
"""

import datetime
import struct

from . import wire

MAGIC = b"\x00BLK"
RECORD_V1 = 1
# Bytes of a record besides its data and a text timestamp (section 4.1's table).
RECORD_FIXED = 1 + 1 + 8 + 8 + 4 + 1 + 32 + 32


class ListError(ValueError):
    """The payload is not a well-formed binary block list; the message names the fault."""


def is_list(payload):
    """True when a reply is a binary list rather than JSON (JSON never starts with NUL)."""
    return payload[:4] == MAGIC


def format_timestamp(secs):
    """The exact form `DD/MM/YYYY, HH:MM:SS` of Unix seconds (years 0000-9999), else None."""
    # datetime has no year 0; the Gregorian calendar repeats every 400 years (146097 days),
    # so a day of year 0 is read as the same day of year 400.
    days, rest = divmod(secs, 86400)
    ordinal = datetime.date(1970, 1, 1).toordinal() + days
    shift = 400 if ordinal < 1 else 0
    try:
        date = datetime.date.fromordinal(ordinal + shift // 400 * 146097)
    except (OverflowError, ValueError):
        return None
    year = date.year - shift
    if not 0 <= year <= 9999:
        return None
    return "%02d/%02d/%04d, %02d:%02d:%02d" % (date.day, date.month, year, rest // 3600,
                                               rest // 60 % 60, rest % 60)


class _Reader:
    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n, what):
        if self.at + n > len(self.data):
            raise ListError("%s is cut short" % what)
        chunk = self.data[self.at:self.at + n]
        self.at += n
        return chunk

    def left(self):
        return len(self.data) - self.at


def decode_record(index, record):
    """One record (section 4.1's second table) as a block dict."""
    r = _Reader(record)
    version = r.take(1, "the record version")[0]
    if version != RECORD_V1:
        raise ListError("unknown record version %d" % version)
    tag = r.take(1, "the timestamp tag")[0]
    if tag == 0:
        (secs,) = struct.unpack("<q", r.take(8, "the timestamp"))
        timestamp = format_timestamp(secs)
        if timestamp is None:
            raise ListError("timestamp %d s has no text in the exact form" % secs)
    elif tag == 1:
        (n,) = struct.unpack("<I", r.take(4, "the timestamp's length"))
        try:
            timestamp = r.take(n, "the timestamp text").decode("utf-8")
        except UnicodeDecodeError:
            raise ListError("the timestamp text is not UTF-8") from None
    else:
        raise ListError("unknown timestamp tag %d" % tag)
    nonce, difficulty = struct.unpack("<QI", r.take(12, "the nonce and difficulty"))
    tag = r.take(1, "the prev_hash tag")[0]
    if tag == 0:
        prev_hash = "0000"
    elif tag == 1:
        prev_hash = r.take(32, "the prev_hash").hex()
    else:
        raise ListError("unknown prev_hash tag %d" % tag)
    block_hash = r.take(32, "the hash").hex()
    try:
        data = wire.loads(r.data[r.at:].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ListError("the data is not JSON: %s" % e) from None
    return {"index": index, "timestamp": timestamp, "nonce": nonce, "difficulty": difficulty,
            "prev_hash": prev_hash, "hash": block_hash, "data": data}


def decode_list(payload, max_blocks=None):
    """The blocks of a binary list, in order, as dicts of the JSON form; raises ListError."""
    if not is_list(payload):
        raise ListError("not a binary block list")
    r = _Reader(payload)
    r.take(4, "the magic")
    (count,) = struct.unpack("<I", r.take(4, "the count"))
    if max_blocks is not None and count > max_blocks:
        raise ListError("a list of %d blocks is over the %d asked for" % (count, max_blocks))
    if count > r.left() // (12 + RECORD_FIXED - 32):
        raise ListError("a list of %d blocks cannot fit in %d bytes" % (count, r.left()))
    blocks = []
    for i in range(count):
        try:
            index, n = struct.unpack("<QI", r.take(12, "the index and length"))
            blocks.append(decode_record(index, r.take(n, "the record")))
        except ListError as e:
            raise ListError("block %d of the list: %s" % (i, e)) from None
    if r.left():
        raise ListError("%d bytes after the last of %d blocks" % (r.left(), count))
    return blocks
