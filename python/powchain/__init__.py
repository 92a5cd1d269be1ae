"""powchain from Python: a client of nodes (`Client`), an independent chain verifier
(`verify`), and a harness of real node processes for tests (`Network`; the pytest plugin
`powchain.pytest_plugin` gives it as the `powchain_network` fixture)."""

from . import binary, verify, wire
from .client import (ERRORS, BadFrame, BadPeer, BadRequest, Block, BlockResult, Client,
                     Internal, NodeError, Pong, PowchainError, ShuttingDown, Status, Synced,
                     Timeout, TooLarge, TooManyPeers, Unauthorized, UnknownPeer, UnknownType,
                     Unreachable, WrongNetwork)
from .network import HarnessError, Network, find_node, wait_for

__all__ = ["Client", "Network", "Block", "Status", "Pong", "Synced", "BlockResult",
           "PowchainError", "NodeError", "Unreachable", "Timeout", "HarnessError", "ERRORS",
           "BadFrame", "BadRequest", "UnknownType", "WrongNetwork", "UnknownPeer", "BadPeer",
           "Unauthorized", "TooLarge", "ShuttingDown", "Internal", "TooManyPeers",
           "find_node", "wait_for", "binary", "verify", "wire"]
