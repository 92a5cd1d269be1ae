"""Binary block lists (PROTOCOL.md section 4.1) read from Python: the section's test vector,
a real node's chain fetched in binary equal to its JSON form and valid, and damaged lists
refused with the fault named."""

import os
import subprocess
import sys

import pytest

from powchain import binary, verify, wire

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
EXAMPLE = os.path.join(ROOT, "examples", "verify_chain.py")


def protocol_vector():
    """The hex bytes of section 4.1's test vector, comments dropped."""
    with open(os.path.join(ROOT, "PROTOCOL.md"), encoding="utf-8") as f:
        doc = f.read()
    body = doc[doc.index("**Test vector**: genesis at difficulty 16 and block 1"):]
    start = body.index("```\n") + 4
    end = start + body[start:].index("```")
    return bytes.fromhex("".join(line.split("  ")[0].replace(" ", "")
                                 for line in body[start:end].splitlines()))


def test_the_protocol_vector_reads_as_genesis_and_block_1():
    blocks = binary.decode_list(protocol_vector())
    assert [b["index"] for b in blocks] == [0, 1]
    assert blocks[0]["prev_hash"] == "0000" and blocks[0]["data"] == {}
    assert blocks[1]["timestamp"] == "22/11/2026, 10:00:00"
    assert blocks[1]["data"]["memo"]["a"] == 'naïve café ☃ "quoted"\n'
    # The hash recomputed over the preimage of what was read is the one the list carries.
    assert verify.check_chain(blocks) == \
        "0000f38fc86f3997334e7256ea03d53e69489d697ee0c0614ae47cbfac0c1c00"


@pytest.mark.parametrize("damage, fault", [
    (lambda v: v[:-1], "is cut short"),
    (lambda v: v + b"\x00", "1 bytes after the last of 2 blocks"),
    (lambda v: b"{" + v[1:], "not a binary block list"),
    (lambda v: v[:4] + b"\xff\xff\xff\x00" + v[8:], "cannot fit"),
    (lambda v: v[:20] + b"\x02" + v[21:], "unknown record version 2"),
    (lambda v: v[:21] + b"\x07" + v[22:], "unknown timestamp tag 7"),
])
def test_damaged_lists_are_refused_with_the_fault_named(damage, fault):
    with pytest.raises(binary.ListError, match=fault):
        binary.decode_list(damage(protocol_vector()))


def test_every_truncation_is_refused():
    vector = protocol_vector()
    for n in range(len(vector)):
        with pytest.raises(binary.ListError):
            binary.decode_list(vector[:n])


def test_a_nodes_chain_in_binary_is_its_json_chain_and_valid(powchain_network):
    net = powchain_network(1, topology="isolated")
    c = net.client(0)
    for i in range(3):
        c.mine({"i": i, "text": "naïve ☃ \"q\"\n", "big": 2**63})
    as_json = [b.to_json() for b in c.chain()]
    as_binary = verify.fetch_chain("127.0.0.1", net[0].port, binary=True)
    assert [wire.preimage(b) for b in as_binary] == [wire.preimage(b) for b in as_json]
    assert [b["hash"] for b in as_binary] == [b["hash"] for b in as_json]
    out = subprocess.run([sys.executable, EXAMPLE, "--binary", str(net[0].port)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("valid (4 blocks"), out
