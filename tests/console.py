"""The installed ``startsim`` console script, found through the interpreter that runs the tests
(its own ``bin/``), never through the caller's ``PATH``: on a fresh machine the venv's ``bin/`` is
not on ``PATH``, and another ``startsim`` there would test the wrong code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# A venv's python may be a symlink to the system interpreter: the script sits beside the link.
STARTSIM = Path(sys.executable).parent / "startsim"
if not STARTSIM.exists():
    pytest.fail(f"the startsim console script is not installed beside {sys.executable}")


def run(*args: str, timeout_s: float = 120, env: dict | None = None, **kw):
    """``startsim ARGS`` as a user types it; a wide terminal so tables do not wrap."""
    env = {**os.environ, "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [str(STARTSIM), *args], capture_output=True, text=True, timeout=timeout_s, env=env, **kw
    )
