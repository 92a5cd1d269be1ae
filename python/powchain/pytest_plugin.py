"""The pytest plugin: `--powchain-node PATH` and the `powchain_network` fixture, a factory
of networks of real nodes that are all closed at the end of the test (their logs kept,
and their home printed, when the test failed)."""

import pytest

from .network import Network


def pytest_addoption(parser):
    parser.addoption("--powchain-node", action="store", default=None,
                     help="the powchain node binary (default: $POWCHAIN_NODE, else "
                          "target/release/node of the nearest powchain checkout)")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed:
        item.powchain_failed = True


@pytest.fixture
def powchain_network(request):
    """`powchain_network(n, **options)` starts a `powchain.Network` of `n` nodes."""
    started = []

    def start(n, **options):
        options.setdefault("node", request.config.getoption("--powchain-node"))
        net = Network(n, **options)
        started.append(net)
        return net

    yield start
    failed = getattr(request.node, "powchain_failed", False)
    for net in started:
        net.keep_logs = net.keep_logs or failed
        net.close()
