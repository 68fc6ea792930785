"""What the commands share: their options, the progress bar, and the output folder."""

from __future__ import annotations

import os
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from sim.errors import UsageError

RESULTS = Path("results")

ScenarioArg = Annotated[
    str | None,
    typer.Argument(
        help="A built-in scenario's name (see `startsim scenarios`) or a TOML file. "
        "Default: the built-in staging-incident."
    ),
]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Master seed; same seed, same output.")]
Replications = Annotated[
    int, typer.Option("--replications", "-n", min=1, help="Independent replications to simulate.")
]
Jobs = Annotated[
    int | None, typer.Option("--jobs", "-j", min=1, help="Processes to use (default: every core).")
]
Dask = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="ADDRESS",
        help="Run on an existing Dask cluster (e.g. tcp://10.0.0.5:8786) instead of local cores.",
    ),
]
Confidence = Annotated[
    float, typer.Option("--confidence", help="Confidence level of the intervals (0–1).")
]
EngineOption = Annotated[
    str,
    typer.Option(
        "--engine",
        metavar="auto|fast|reference",
        help="fast: the compiled engine; reference: the readable one; auto: fast for large runs.",
    ),
]
Svg = Annotated[bool, typer.Option("--svg", help="Write each figure as SVG too.")]
Json = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]

# The library names a setting by its parameter (UsageError.option); the CLI shows the flag.
FLAGS = {"max_timeout_s": "--max-timeout"}


def flag(option: str) -> str:
    return FLAGS.get(option, "--" + option.replace("_", "-"))


def progress(desc: str, total: int | None = None):
    """A tqdm bar on stderr, shown only on a terminal so pipes and CI logs stay clean."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rep", file=sys.stderr, disable=None, leave=False)


def prepare_out(folder: Path) -> Path:
    """Create the output folder before any work, so a folder that cannot be written is refused
    at once, not after minutes of simulation. Call it once every other input is checked."""
    if folder.exists() and not folder.is_dir():
        raise UsageError("exists and is not a folder", "out", str(folder))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create it ({exc.strerror})", "out", str(folder)) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError("not writable", "out", str(folder))
    return folder


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def command_line() -> str:
    return "startsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])
