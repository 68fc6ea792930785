"""``startsim`` in this process, for tests that need its files but not a subprocess.

Kept apart from ``builders`` so that the model tests never import the CLI (typer, rich, the
report writers)."""

from __future__ import annotations

import sys

from sim.cli import main


def call_main(*args: str) -> int:
    """``startsim ARGS`` through the console script's entry point; returns the exit code."""
    saved, sys.argv = sys.argv, ["startsim", *args]
    try:
        main()
    except SystemExit as exc:
        return exc.code or 0
    finally:
        sys.argv = saved
    return 0
