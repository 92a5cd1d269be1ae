#!/usr/bin/env python3
"""Round trip of `status`, 1,000 requests one after the other: the Python Client on one
connection, and powchain-cli (one process per request, so fewer are run). Prints the mean
time per request of each, and their ratio.

Usage: python3 python/bench_roundtrip.py [TARGET_DIR]   (default target/release)
Compare with `cargo bench --bench probe -- status_sequential` (the Rust NodeClient).
"""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from powchain import Client, Network  # noqa: E402

REQUESTS = 1000
CLI_REQUESTS = 200


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join("target", "release")
    with Network(1, node=os.path.join(target, "node"), topology="isolated",
                 log_filter="warn") as net:
        client = Client(net[0].port)
        client.status()
        start = time.perf_counter()
        for _ in range(REQUESTS):
            client.status()
        python = (time.perf_counter() - start) / REQUESTS
        cli = [os.path.join(target, "powchain-cli"), str(net[0].port), "status"]
        env = dict(os.environ, POWCHAIN_HOME=net.home)
        start = time.perf_counter()
        for _ in range(CLI_REQUESTS):
            subprocess.run(cli, check=True, stdout=subprocess.DEVNULL, env=env)
        per_cli = (time.perf_counter() - start) / CLI_REQUESTS
    print("python Client: %.1f us per status (%d on one connection)" % (python * 1e6, REQUESTS))
    print("powchain-cli:  %.1f us per status (%d processes)" % (per_cli * 1e6, CLI_REQUESTS))
    print("powchain-cli / python: %.1fx" % (per_cli / python))


if __name__ == "__main__":
    main()
