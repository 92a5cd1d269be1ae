"""Every Client call against real nodes, and each error a node or the network gives
mapped to its exception."""

import socket
import threading

import pytest

import powchain
from powchain import Client


def test_every_call_against_a_real_node(powchain_network):
    net = powchain_network(2, topology="isolated")
    c = net.client(0)
    status = c.status()
    assert status.height == 0 and status.tip == status.genesis and status.peers == []
    assert isinstance(status.work, int) and status.work > 0

    block = c.mine({"from": "alice", "to": "bob", "amount": 5})
    assert block.index == 1 and block.data == {"amount": 5, "from": "alice", "to": "bob"}
    assert block.compute_hash() == block.hash
    text = c.append("any text")
    assert text.data == "any text" and text.prev_hash == block.hash

    chain = c.chain()
    assert [b.index for b in chain] == [0, 1, 2] and chain[2] == text
    assert c.tail(2) == chain[1:]
    assert c.block() == text and c.block(0) == chain[0] and c.block(9) is None
    assert c.range(1, 5) == chain[1:]
    assert c.blocks([chain[0].hash]) == chain[1:]
    assert c.blocks([chain[0].hash], limit=1) == [block]
    pong = c.ping()
    assert (pong.height, pong.tip, pong.work) == (2, text.hash, c.status().work)
    assert c.validate() is None
    assert c.get_addr() == []

    # Known again: ignored; a changed copy: rejected with the rule.
    assert c.new_block(text).result == "ignored"
    forged = powchain.Block.from_json(dict(text.to_json(), index=3, prev_hash=text.hash,
                                           hash="00" * 32))
    result = c.new_block(forged)
    assert result.result == "rejected" and "claims hash" in result.reason

    c.add_peer(net[1].addr)
    assert c.peers() == [net[1].addr]
    powchain.wait_for(lambda: net.client(1).status().height == 2, 30, "node 1 to sync")
    synced = net.client(1).sync()
    assert (synced.height, synced.tip, synced.replaced) == (2, text.hash, False)
    c.remove_peer(net[1].addr)
    assert c.peers() == []

    assert c.raw(b"GET CHAIN").startswith(b"[")
    assert c.call({"type": "status"})["height"] == 2
    c.shutdown()
    assert net[0].process.wait(30) == 0


def test_errors_map_to_their_exceptions(powchain_network):
    net = powchain_network(1, topology="isolated")
    c = net.client(0)
    with pytest.raises(powchain.UnknownPeer) as e:
        c.remove_peer("127.0.0.1:9")
    assert e.value.code == "unknown_peer" and "not a peer" in e.value.message
    with pytest.raises(powchain.BadPeer):
        c.add_peer("not an address")
    with pytest.raises(powchain.UnknownType):
        c.call({"type": "fly"})
    with pytest.raises(powchain.BadRequest):
        c.call({"type": "get_tail"})
    with pytest.raises(powchain.Unauthorized):
        Client(net[0].port, cookie="00" * 32).shutdown()
    with pytest.raises(powchain.Unauthorized):
        Client(net[0].port, home=net.home + "-nowhere").shutdown()
    assert c.raw(b"not json") == b"INVALID JSON"
    assert c.call({"type": "status"})["height"] == 0, "the connection stays usable"

    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    port = dead.getsockname()[1]
    dead.close()
    with pytest.raises(powchain.Unreachable):
        Client(port).status()


def test_a_node_that_never_answers_is_a_timeout():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    held = []
    threading.Thread(target=lambda: held.append(server.accept()), daemon=True).start()
    try:
        with pytest.raises(powchain.Timeout):
            Client(server.getsockname()[1], timeout=0.3).status()
    finally:
        server.close()


def test_the_cookie_is_proved_never_sent():
    """A listener posing as a node gets a challenge request and a proof, not the cookie."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    heard = []

    def serve():
        conn, _ = server.accept()
        with conn:
            for reply in (b'{"type":"challenge","nonce":"' + b"ab" * 32 + b'"}',
                          b'{"type":"error","code":"unauthorized","message":"no"}'):
                heard.append(powchain.wire.recv_frame(conn))
                conn.sendall(powchain.wire.encode_frame(reply))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    cookie = "cd" * 32
    with pytest.raises(powchain.Unauthorized):
        Client(server.getsockname()[1], cookie=cookie).shutdown()
    thread.join(10)
    server.close()
    assert cookie.encode() not in b"".join(heard)
    proof = powchain.wire.loads(heard[1].decode())["proof"]
    assert proof == powchain.wire.admin_proof(cookie, "ab" * 32, "shutdown")


def test_the_admin_proof_matches_the_protocols_vector():
    assert powchain.wire.admin_proof("0" * 64, "1" * 64, "shutdown") == \
        "5bbcf719c058c5a6fee56f77e5c60e32c284b95b1f19e540e026318f2fdef2bc"
