"""``startsim sweep`` and ``startsim recommend``: what the two commands share (options, executors,
folder names) and ``register(app)``, which adds them to the typer app. The commands themselves live
in ``sweep_cmd.py`` and ``recommend_cmd.py``: edges that run the library and write files."""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from sim.errors import UsageError
from sim.runner import Pooled, Serial, default_jobs

RESULTS = Path("results")
DASK_CONNECT_TIMEOUT_S = 10.0


def register(app: typer.Typer) -> None:
    """Add ``sweep`` and ``recommend`` (one line in sim/cli.py calls this)."""
    from sim.report.recommend_cmd import recommend_cmd
    from sim.report.sweep_cmd import sweep

    app.command("sweep")(sweep)
    app.command("recommend")(recommend_cmd)


# -- shared options -------------------------------------------------------------------------------

ScenarioArg = Annotated[
    str | None,
    typer.Argument(
        help="A built-in scenario's name (see `startsim scenarios`) or a TOML file. "
        "Default: the built-in staging-incident."
    ),
]
Seed = Annotated[int, typer.Option("--seed", min=0, help="Master seed; same seed, same output.")]
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
Svg = Annotated[bool, typer.Option("--svg", help="Write each figure as SVG too.")]


def progress_bar(total: int | None, desc: str):
    """A tqdm bar on stderr, shown only on a terminal so pipes and CI logs stay clean."""
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rep", file=sys.stderr, disable=None, leave=False)


def progress(desc: str, total: int | None = None):
    return progress_bar(total, desc)


class DaskExecutor:
    """A Dask client as an executor: tasks are not pure (no key sharing), results come back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, sum(client.nthreads().values()))

    def submit(self, fn, *args):
        return self.client.submit(fn, *args, pure=False)


@contextmanager
def executor(jobs: int | None, dask: str | None) -> Iterator[Any]:
    """Local processes (default), this process (``--jobs 1``) or a Dask cluster (``--dask``)."""
    if dask:
        yield from _dask(dask)
        return
    jobs = default_jobs() if jobs is None else jobs
    if jobs <= 1:
        yield Serial()
        return
    pool = ProcessPoolExecutor(max_workers=jobs)
    try:
        yield Pooled(pool, jobs)
    except BaseException:
        # Interrupted (Ctrl-C) or failed: drop the queued chunks instead of finishing them; only
        # the chunks already running are waited for. Rows written so far stay for --resume.
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _dask(address: str) -> Iterator[DaskExecutor]:
    try:
        from distributed import Client
    except ImportError:
        raise UsageError("--dask needs dask.distributed: pip install 'startsim[dask]'") from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(
            f"--dask {address!r}: cannot reach a Dask scheduler there ({exc})"
        ) from None
    try:
        yield DaskExecutor(client)
    finally:
        client.close()


def check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise UsageError(f"--confidence {confidence}: must be between 0 and 1 exclusive")


def prepare_out(folder: Path, option: str = "--out") -> Path:
    """Create the output folder before any work, so a folder that cannot be written is refused
    at once, not after minutes of simulation. Call it once every other input is checked."""
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{option} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {folder}: cannot create it ({exc.strerror})") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {folder}: not writable")
    return folder


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def command_line() -> str:
    return "startsim " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"
