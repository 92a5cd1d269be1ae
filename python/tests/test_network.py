"""The harness: topologies peer, a partition holds and heals, a killed node restarts with
its chain, and logs are kept for a failed test."""

import os

import pytest

import powchain


@pytest.mark.parametrize("topology", ["registry", "line"])
def test_topologies_peer(powchain_network, topology):
    net = powchain_network(4, topology=topology)
    net.wait_peered()
    block = net.client(0).mine("hello")
    assert net.wait_agree() == block.hash


def test_a_partition_holds_until_healed(powchain_network):
    net = powchain_network(4, topology="isolated")
    net.mesh()
    net.wait_peered()
    net.partition([[0, 1], [2, 3]])
    a = net.client(0).mine("a")
    b1 = net.client(2).mine("b1")
    # b2 must build on b1: node 3 mines only once b1 has reached it (mined at once, b2
    # would be a rival at the same height and each side would keep the one it saw first).
    assert net.wait_agree(nodes=[2, 3]) == b1.hash
    b2 = net.client(3).mine("b2")
    assert net.wait_agree(nodes=[0, 1]) == a.hash
    assert net.wait_agree(nodes=[2, 3]) == b2.hash
    assert b2.prev_hash == b1.hash
    assert net.client(1).peers() == [net[0].addr]
    net.heal()
    net.wait_peered()
    net.wait_agree()
    chain = net.client(0).chain()
    assert [b.hash for b in chain[1:3]] == [b1.hash, b2.hash], "the side with more work won"
    powchain.wait_for(lambda: "a" in [b.data for b in net.client(2).chain()], 30,
                      "the losing side's data to be mined again")


def test_kill_and_restart_keep_the_chain(powchain_network):
    net = powchain_network(1, topology="isolated")
    mined = [net.client(0).mine({"i": i}) for i in range(3)]
    net.kill(0)
    assert not net[0].is_running()
    net.restart(0)
    assert net.client(0).chain()[1:] == mined
    assert net.stop(0) == 0
    net.restart(0)
    assert net.client(0).status().height == 3


def test_a_failed_test_keeps_the_logs(powchain_network):
    net = powchain.Network(1, node=os.environ.get("POWCHAIN_NODE"), topology="isolated")
    home = net.home
    with pytest.raises(ZeroDivisionError):
        with net:
            1 / 0
    assert os.path.isfile(os.path.join(home, "node0.log"))
    assert not net[0].is_running()
    ok = powchain.Network(1, node=os.environ.get("POWCHAIN_NODE"), topology="isolated")
    with ok:
        pass
    assert not os.path.exists(ok.home)


def test_a_partition_needs_an_isolated_network(powchain_network):
    net = powchain_network(2)
    with pytest.raises(powchain.HarnessError):
        net.partition([[0], [1]])
