"""The verifier: a real node's chain is valid; tampered chains served by a fake node are
refused naming the broken block, as the example script reports them."""

import os
import socket
import subprocess
import sys
import threading

import powchain
from powchain import verify, wire

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "verify_chain.py")


def serve_chain(blocks):
    """A fake node that answers every get_chain with `blocks`; returns its port."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()

    def run():
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                wire.recv_frame(conn)
                conn.sendall(wire.encode_frame(wire.dumps({"type": "chain", "blocks": blocks})))

    threading.Thread(target=run, daemon=True).start()
    return server.getsockname()[1]


def run_example(port):
    return subprocess.run([sys.executable, EXAMPLE, str(port)], capture_output=True,
                          text=True, timeout=60)


def reseal(block):
    """Gives `block` a hash that meets its difficulty again, so one rule alone breaks."""
    block["nonce"] = 0
    while True:
        digest = powchain.wire.block_hash(block)
        if verify.leading_zero_bits(bytes.fromhex(digest)) >= block["difficulty"]:
            block["hash"] = digest
            return block
        block["nonce"] += 1


def test_a_real_chain_is_valid_and_tampering_is_named(powchain_network):
    net = powchain_network(1, topology="isolated")
    c = net.client(0)
    for i in range(3):
        c.mine({"i": i, "-0": -0.0, "text": "naïve ☃"})
    blocks = [b.to_json() for b in c.chain()]
    assert verify.check_chain(blocks) == blocks[-1]["hash"]
    out = run_example(net[0].port)
    assert out.returncode == 0 and out.stdout.startswith("valid (4 blocks"), out

    tampered = [dict(b) for b in blocks]
    tampered[2]["data"] = {"i": 1000}
    out = run_example(serve_chain(tampered))
    assert out.returncode == 1 and out.stdout.startswith("invalid: block 2 claims hash"), out

    lenient = [dict(b) for b in blocks]
    lenient[3]["timestamp"] = "1/1/2026, 0:00:00"
    reseal(lenient[3])
    try:
        verify.check_chain(lenient)
        raise AssertionError("a lenient timestamp passed")
    except verify.Problem as p:
        assert "block 3 has an unparsable timestamp" in str(p)
    # The node agrees: the same timestamp on a block that extends its tip is refused.
    on_tip = reseal(dict(blocks[3], index=4, prev_hash=blocks[3]["hash"],
                         timestamp="1/1/2026, 0:00:00"))
    result = c.new_block(on_tip)
    assert result.result == "rejected" and "unparsable timestamp" in result.reason
