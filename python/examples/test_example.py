"""Five real nodes; one is cut off and both sides mine; once healed, every node ends on
the chain with more work and the lone node's block is mined again into it."""

import powchain


def test_a_cut_off_node_rejoins_the_chain_with_more_work(powchain_network):
    net = powchain_network(5, topology="isolated")
    net.mesh()
    net.wait_peered()
    net.partition([[0, 1, 2, 3], [4]])

    many, alone = net.client(0), net.client(4)
    for i in range(3):
        many.mine({"side": "many", "i": i})
    alone.mine({"side": "alone"})
    net.wait_agree(nodes=[0, 1, 2, 3])
    assert alone.status().height == 1

    net.heal()
    net.wait_agree()
    assert alone.status().reorgs == 1
    chain = alone.chain()
    assert [b.data for b in chain[1:4]] == [{"side": "many", "i": i} for i in range(3)]
    # The lone node mines its left-behind data again, on top of the winning chain.
    powchain.wait_for(
        lambda: {"side": "alone"} in [b.data for b in net.client(1).chain()],
        timeout=30, what="the lone block's data to be mined again")
