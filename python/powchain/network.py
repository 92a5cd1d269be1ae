"""`Network`: real `node` processes on free ports in a temporary home, for tests. The same
options as the Rust testkit (difficulty, topology, extra flags), waits on conditions with
deadlines, kill/stop/restart, and partitions made and healed by removing and re-adding
links. Every process is stopped when the network is closed, and its log kept on failure.
"""

import atexit
import os
import shutil
import signal
import subprocess
import tempfile
import time
from typing import List, Optional

from .client import Client, PowchainError, UnknownPeer, node_dirs, read_cookie

LISTENING = "listening on "
TOPOLOGIES = ("registry", "line", "isolated")


class HarnessError(Exception):
    """A node did not start, or a condition was not met in time."""


def find_node(node=None):
    """The node binary: `node`, else `$POWCHAIN_NODE`, else `target/release/node` (then
    `target/debug/node`) in this directory or the nearest one above that has it."""
    for candidate in (node, os.environ.get("POWCHAIN_NODE")):
        if candidate:
            if not os.access(candidate, os.X_OK):
                raise HarnessError("node binary %r is not an executable file" % candidate)
            return os.path.abspath(candidate)
    here = os.getcwd()
    while True:
        for profile in ("release", "debug"):
            path = os.path.join(here, "target", profile, "node")
            if os.access(path, os.X_OK):
                return path
        parent = os.path.dirname(here)
        if parent == here:
            raise HarnessError("no node binary: pass node=..., set POWCHAIN_NODE, or run "
                               "`cargo build --release` in the powchain repository")
        here = parent


def wait_for(check, timeout, what, every=0.025):
    """Calls `check` until it returns something other than None or False; returns it, or
    raises HarnessError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        try:
            value = check()
            if value is not None and value is not False:
                return value
        except PowchainError as e:
            last = e
        if time.monotonic() >= deadline:
            raise HarnessError("timed out after %.1f s waiting for %s%s"
                               % (timeout, what, "; last error: %s" % last if last else ""))
        time.sleep(every)


class Node:
    """One node process of a network."""

    def __init__(self, index, args, log_path):
        self.index, self.args, self.log_path = index, list(args), log_path
        self.port = 0
        self.process = None  # type: Optional[subprocess.Popen]

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    @property
    def pid(self):
        return self.process.pid if self.process else None

    def is_running(self):
        return self.process is not None and self.process.poll() is None

    def log(self):
        """What the node has logged so far."""
        try:
            with open(self.log_path, "r", encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""


class Network:
    """`n` nodes of the binary `node` (see `find_node`) in a temporary `POWCHAIN_HOME`:

    - `topology="registry"`: they find each other through the home's registry, as
      `node 5001` users' nodes do;
    - `"line"`: each gets `--peer` of the one before it, no registry;
    - `"isolated"`: no registry and `--max-outbound 0`: a node dials only the links a test
      makes (`connect`, `mesh`), which is what lets `partition` hold.

    `args` are extra flags for every node. Use it as a context manager, or call `close`.
    """

    def __init__(self, n, node=None, difficulty=8, topology="registry", args=(),
                 threads=1, log_filter="info", start_timeout=60.0):
        if topology not in TOPOLOGIES:
            raise ValueError("topology must be one of %s, not %r" % (TOPOLOGIES, topology))
        self.binary = find_node(node)
        self.difficulty, self.topology, self.threads = difficulty, topology, threads
        self.args, self.log_filter, self.start_timeout = list(args), log_filter, start_timeout
        self.home = tempfile.mkdtemp(prefix="powchain-py-")
        self.nodes = []  # type: List[Node]
        self.keep_logs = False
        self._closed = False
        self._cut = []  # links removed by partition, as (i, j)
        # A script that ends without closing the network still stops its nodes.
        atexit.register(self.close)
        try:
            for _ in range(n):
                self.add_node()
        except BaseException:
            self.close()
            raise

    # Processes.

    def _flags(self, index):
        flags = ["--difficulty", str(self.difficulty), "--threads", str(self.threads)]
        if self.topology != "registry":
            flags.append("--no-registry")
        if self.topology == "line" and index > 0:
            flags += ["--peer", self.nodes[index - 1].addr]
        if self.topology == "isolated":
            flags += ["--max-outbound", "0"]
        return flags + self.args

    def add_node(self, args=()):
        """Starts one more node with `args` as extra flags; returns its index."""
        index = len(self.nodes)
        node = Node(index, self._flags(index) + list(args),
                    os.path.join(self.home, "node%d.log" % index))
        self.nodes.append(node)
        self._launch(node, 0)
        return index

    def _launch(self, node, port):
        env = dict(os.environ, POWCHAIN_HOME=self.home, RUST_LOG=self.log_filter)
        log = open(node.log_path, "ab")
        try:
            node.process = subprocess.Popen([self.binary, str(port)] + node.args, env=env,
                                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                            stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout
        line = b""
        # The node prints its address once its chain is loaded and its socket bound.
        while time.monotonic() < deadline:
            line = node.process.stdout.readline()
            if not line:
                break
            text = line.decode("utf-8", "replace").strip()
            if text.startswith(LISTENING):
                node.port = int(text[len(LISTENING):].rsplit(":", 1)[1])
                node.process.stdout.close()
                return
        code = node.process.poll()
        if code is None:
            node.process.kill()
            node.process.wait()
        self.keep_logs = True
        raise HarnessError("node %d did not announce its address (exit %s); its log (%s):\n%s"
                           % (node.index, code, node.log_path, node.log()))

    def __len__(self):
        return len(self.nodes)

    def __getitem__(self, i):
        return self.nodes[i]

    def __enter__(self):
        return self

    def __exit__(self, kind, value, tb):
        if kind is not None:
            self.keep_logs = True
        self.close()

    def data_dir(self, i):
        """Node `i`'s data directory (where its store and cookie are)."""
        port = self.nodes[i].port
        dirs = [d for d in node_dirs(self.home, port) if read_cookie(d)]
        return dirs[0] if dirs else os.path.join(self.home, "nodes", str(port))

    def client(self, i, **kwargs):
        """A client of node `i` that holds its cookie."""
        return Client(self.nodes[i].port, home=self.home, data_dir=self.data_dir(i), **kwargs)

    def running(self):
        """The indices of the nodes still running."""
        return [n.index for n in self.nodes if n.is_running()]

    def stop(self, i, timeout=30.0):
        """Stops node `i` with SIGTERM and waits for it; returns its exit code."""
        node = self.nodes[i]
        if not node.is_running():
            return node.process.returncode if node.process else None
        node.process.send_signal(signal.SIGTERM)
        try:
            return node.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.keep_logs = True
            raise HarnessError("node %d did not exit within %.0f s of SIGTERM" % (i, timeout))

    def kill(self, i):
        """Kills node `i` with SIGKILL (a crash) and reaps it."""
        node = self.nodes[i]
        if node.is_running():
            node.process.kill()
            node.process.wait()

    def restart(self, i):
        """Starts node `i` again on the same port and data directory."""
        if self.nodes[i].is_running():
            self.stop(i)
        self._launch(self.nodes[i], self.nodes[i].port)

    def close(self):
        """Stops every node (SIGTERM, then SIGKILL after 5 s) and removes the home, unless
        a failure asked to keep the logs (then it says where they are). Closing twice does
        nothing more."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.close)
        for node in self.nodes:
            if node.is_running():
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.process is not None:
                try:
                    node.process.wait(5)
                except subprocess.TimeoutExpired:
                    node.process.kill()
                    node.process.wait()
        if self.keep_logs:
            print("powchain: the nodes' logs are kept in %s" % self.home)
        else:
            shutil.rmtree(self.home, ignore_errors=True)

    # Links.

    def connect(self, i, j):
        """Makes a manual link from node `i` to node `j`."""
        self.client(i).add_peer(self.nodes[j].addr)

    def mesh(self, nodes=None):
        """Links every pair of `nodes` (all by default)."""
        nodes = list(range(len(self.nodes)) if nodes is None else nodes)
        for a, i in enumerate(nodes):
            for j in nodes[a + 1:]:
                self.connect(i, j)

    def partition(self, groups):
        """Cuts every link between nodes of different `groups` (lists of indices): both
        sides forget each other. Holds in an `isolated` network, where nodes dial only the
        links a test made; `heal` puts the cut links back."""
        if self.topology != "isolated":
            raise HarnessError("partition needs topology=\"isolated\": nodes found through "
                               "the registry or gossip dial each other again")
        side = {i: g for g, group in enumerate(groups) for i in group}
        for i, g in side.items():
            if not self.nodes[i].is_running():
                continue
            for j, h in side.items():
                if h == g:
                    continue
                try:
                    self.client(i).remove_peer(self.nodes[j].addr)
                except UnknownPeer:
                    continue
                self._cut.append((i, j))

    def heal(self):
        """Puts back every link `partition` cut."""
        for i, j in self._cut:
            if self.nodes[i].is_running() and self.nodes[j].is_running():
                self.connect(i, j)
        self._cut = []

    def _index_of(self, addr):
        for n in self.nodes:
            if n.addr == addr:
                return n.index
        return None

    # Conditions.

    def statuses(self, nodes=None):
        """The status of each of `nodes` (the running ones by default)."""
        return [self.client(i).status() for i in (self.running() if nodes is None else nodes)]

    def wait_peered(self, timeout=30.0):
        """Waits until the running nodes form one connected graph in which every node has
        at least 2 peers (registry; 1 in a line). An isolated network is only checked to
        answer, or, once links were made, to be connected through them."""
        running = self.running()
        addrs = [self.nodes[i].addr for i in running]
        want = {"registry": min(2, len(running) - 1), "line": int(len(running) > 1),
                "isolated": 0}[self.topology]

        def check():
            statuses = self.statuses(running)
            live = [[p for p in s.peers if p in addrs] for s in statuses]
            if any(len(peers) < want for peers in live):
                return None
            if self.topology == "isolated" and not any(live):
                return True
            return connected(addrs, live) or None
        return wait_for(check, timeout, "nodes to be peered")

    def wait_agree(self, nodes=None, timeout=30.0):
        """Waits until `nodes` (the running ones by default) have the same tip; returns it."""
        def check():
            tips = {s.tip for s in self.statuses(nodes)}
            return tips.pop() if len(tips) == 1 else None
        return wait_for(check, timeout, "the nodes to agree on the tip")


def connected(addrs, peers):
    """Tells whether the nodes at `addrs`, whose peers are `peers`, form one connected
    graph (links count in both directions)."""
    if not addrs:
        return True
    reached, stack = set(), [0]
    while stack:
        i = stack.pop()
        if i in reached:
            continue
        reached.add(i)
        out = [addrs.index(p) for p in peers[i] if p in addrs]
        back = [j for j in range(len(addrs)) if addrs[i] in peers[j]]
        stack.extend(j for j in out + back if j not in reached)
    return len(reached) == len(addrs)


__all__ = ["Network", "Node", "HarnessError", "find_node", "wait_for", "connected"]
