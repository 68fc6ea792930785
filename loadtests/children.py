"""How startsim starts its own Python children (the emulator, Locust): one place, two rules.

- ``python -P``: the working directory is not put on ``sys.path``, so a ``platform.py`` (or any
  file named like a module a dependency imports) where the user runs ``startsim`` cannot shadow
  it. The children keep the user's working directory: relative paths and an
  ``--instance-command`` mean what the user typed.
- :func:`die_with_parent`: a child gets SIGTERM from the kernel if startsim dies (``kill -9``).

Nothing here imports Locust or asyncpg.
"""

from __future__ import annotations

import signal
import sys

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def python_module(module: str, *args: str) -> list[str]:
    """The argv that runs ``module`` as ``python -m`` would, without the working directory on
    ``sys.path`` (``-P``, Python 3.11+: the same as ``PYTHONSAFEPATH``)."""
    return [sys.executable, "-P", "-m", module, *args]


def die_with_parent() -> None:
    """In a child, before exec: SIGTERM from the kernel if startsim dies (Linux prctl)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
