#!/usr/bin/env python3
"""Fetch a powchain node's chain and check every block, from PROTOCOL.md alone.

Usage: python3 examples/verify_chain.py [--binary] [HOST:]PORT

Connects over the framing of PROTOCOL.md section 1, sends {"type":"get_chain"} (with
"encoding":"binary" under --binary: the chain comes as a binary list of section 4.1, read
by powchain.binary; a node older than protocol version 3 answers in JSON), and checks
each block's index, link to its parent, recomputed hash (section 3.1), proof of work,
nonce bound and timestamp format (section 7). Prints the first problem and exits 1, or
prints "valid" and exits 0. Exit 2: usage, or the node could not be asked.
Python 3 standard library only; the checks are the `powchain` package's (python/), which
this script uses from the repository without installing it.
"""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))

from powchain.verify import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv))
