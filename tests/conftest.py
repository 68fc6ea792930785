"""Fixtures shared by the test modules: one throwaway PostgreSQL for the whole session. And the
session's order: the load campaigns first, while another process compiles the fast engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from throwaway_pg import running_server

# Modules that wait on real processes, connections and clocks, and never need the fast engine:
# they run first, while the fast engine compiles in another process (about two minutes on two
# cores when its cache is cold, as on a fresh machine), so the compile costs the session no time.
CAMPAIGNS = ("test_loadtest", "test_children", "test_connector", "test_calibrate_inputs")
WARM_UP = (
    "from sim.fast import run_chunk; from sim.scenario import resolve; "
    "run_chunk(resolve('capacity-storm'), 0, range(1))"
)
_warming: list[subprocess.Popen] = []


def pytest_sessionstart(session):
    """Compile (or load) the fast engine's cache in a process of its own; the tests that need it
    load it from the cache, or compile it themselves if they come first."""
    root = Path(__file__).resolve().parent.parent
    _warming.append(
        subprocess.Popen(
            [sys.executable, "-c", WARM_UP],
            cwd=root,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )


def pytest_sessionfinish(session, exitstatus):
    for proc in _warming:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def pytest_collection_modifyitems(session, config, items):
    """The campaign modules first, in their own order; every other test after, as collected."""
    first = [i for i in items if i.module.__name__.startswith(CAMPAIGNS)]
    rest = [i for i in items if not i.module.__name__.startswith(CAMPAIGNS)]
    items[:] = first + rest


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway server with max_connections 20: 17 slots for the test role.

    One for the session: every test that uses it checks that the harness left no connection
    behind (``wait_no_harness_connections``), so the next one starts from an empty server.
    """
    yield from running_server(max_connections=20)


@pytest.fixture(params=["reference", "fast"])
def engine(request) -> str:
    """The engine a model test runs on: a test that takes this fixture runs on both, as CPython
    runs the pure-Python suite on its C accelerators (PEP 399)."""
    return request.param
