"""Fixtures shared by the test modules: one throwaway PostgreSQL for the whole session."""

from __future__ import annotations

import pytest
from throwaway_pg import running_server


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
