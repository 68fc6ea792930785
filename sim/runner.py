"""Many replications of one scenario, across cores, with results as flat numpy columns.

Replication ``i`` always draws from ``SeedSequence(seed, spawn_key=(i,))``, so the same seed gives
the same numbers whether the replications run in one process or in many.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from sim.engine import run_replication
from sim.engines import choose
from sim.errors import UsageError
from sim.records import ATTEMPT_COLUMNS, FLEET_COLUMNS, Outcome
from sim.scenario import Scenario
from sim.stats import Summary, summarize


@dataclass(frozen=True)
class Results:
    """Every attempt of every replication (``attempts``) and one row per replication (``fleet``)."""

    scenario: Scenario
    seed: int
    attempts: dict[str, np.ndarray]
    fleet: dict[str, np.ndarray]

    @property
    def replications(self) -> int:
        return len(self.fleet["replication"])

    def summary(self, confidence: float = 0.95) -> Summary:
        sc = self.scenario
        return summarize(
            self.attempts,
            self.fleet,
            instances=sc.fleet.instances,
            min_size=sc.pool.min_size,
            seed=self.seed,
            confidence=confidence,
        )


def replication_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(index,))


def run_chunk(
    sc: Scenario, seed: int, indices: range, engine: str = "reference"
) -> tuple[dict, dict]:
    """Replications ``indices`` as column lists; the unit of work sent to a process or a cluster.
    ``engine``: ``"reference"`` (sim.engine) or ``"fast"`` (sim.fast, the same model compiled)."""
    if engine == "fast":
        from sim import fast

        return fast.run_chunk(sc, seed, indices)
    attempts = {k: [] for k in ("replication", *ATTEMPT_COLUMNS)}
    fleet = {k: [] for k in FLEET_COLUMNS}
    for i in indices:
        rep = run_replication(sc, replication_seed(seed, i))
        outcomes = rep.attempts["outcome"]
        attempts["replication"] += [i] * len(outcomes)
        for key in ATTEMPT_COLUMNS:
            attempts[key] += rep.attempts[key]
        for key, value in (
            ("replication", i),
            ("fleet_ready_s", rep.fleet_ready_s),
            ("peak_db_connections", rep.peak_db_connections),
            ("connector_instances_end", rep.connector_instances_end),
            ("connection_attempts", rep.connection_attempts),
            ("instances_ready", rep.instances_ready),
            ("rejected_attempts", outcomes.count(Outcome.REJECTED)),
            ("timed_out_attempts", outcomes.count(Outcome.TIMEOUT)),
            ("attempts", len(outcomes)),
        ):
            fleet[key].append(value)
    return attempts, fleet


def _columns(parts: list[dict]) -> dict[str, np.ndarray]:
    keys = parts[0].keys()
    return {k: np.concatenate([np.asarray(p[k]) for p in parts]) for k in keys}


def chunks(replications: int, pieces: int) -> list[range]:
    size = max(1, -(-replications // pieces))
    return [range(a, min(a + size, replications)) for a in range(0, replications, size)]


def default_jobs() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Executor(Protocol):
    workers: int

    def submit(self, fn: Callable, *args: Any) -> Any: ...


class _Later:
    """A task of :class:`Serial`: it runs when its result is asked for, so progress follows it."""

    __slots__ = ("_args", "_fn")

    def __init__(self, fn: Callable, args: tuple) -> None:
        self._fn, self._args = fn, args

    def result(self) -> Any:
        return self._fn(*self._args)


class Serial:
    """Runs each task in this process, when its result is collected."""

    workers = 1

    def submit(self, fn: Callable, *args: Any) -> _Later:
        return _Later(fn, args)


class Pooled:
    """A ``concurrent.futures`` executor (or anything with ``submit``) as an :class:`Executor`."""

    def __init__(self, pool: Any, workers: int) -> None:
        self.pool, self.workers = pool, max(1, workers)

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.pool.submit(fn, *args)


def run_points(
    scenarios: Iterable[Scenario],
    replications: int,
    seed: int,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    pieces_per_point: int | None = None,
    engine: str = "auto",
) -> Iterator[Results]:
    """Simulate each scenario (same seed: common random numbers) and yield Results in order.

    Each point is split into ``pieces_per_point`` chunks (default: one per worker). ``engine``:
    ``"reference"``, ``"fast"`` or ``"auto"`` (sim.engines.choose: fast for large runs)."""
    executor = executor or Serial()
    per_point = pieces_per_point or executor.workers
    pieces = chunks(replications, max(1, min(replications, per_point)))
    window: deque = deque()
    # Two points in flight keep every worker busy while the oldest point is being collected.
    ahead = 2
    for sc in scenarios:
        chosen = choose(engine, sc, replications)
        window.append((sc, [executor.submit(run_chunk, sc, seed, p, chosen) for p in pieces]))
        if len(window) > ahead:
            yield _collect(*window.popleft(), pieces, seed, progress)
    while window:
        yield _collect(*window.popleft(), pieces, seed, progress)


def _collect(sc, futures, pieces, seed, progress) -> Results:
    parts = []
    for piece, fut in zip(pieces, futures, strict=True):
        parts.append(fut.result())
        if progress:
            progress(len(piece))
    return Results(
        scenario=sc,
        seed=seed,
        attempts=_columns([a for a, _ in parts]),
        fleet=_columns([f for _, f in parts]),
    )


def evaluate(
    sc: Scenario,
    replications: int,
    seed: int,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    pieces_per_point: int | None = None,
    engine: str = "auto",
) -> Results:
    """One scenario's replications, split across the executor's workers."""
    return next(run_points([sc], replications, seed, executor, progress, pieces_per_point, engine))


class DaskExecutor:
    """A Dask client as an executor: tasks are not pure (no key sharing), results come back."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.workers = max(1, sum(client.nthreads().values()))

    def submit(self, fn: Callable, *args: Any) -> Any:
        return self.client.submit(fn, *args, pure=False)


DASK_CONNECT_TIMEOUT_S = 10.0


@contextmanager
def executor(jobs: int | None = None, dask: str | None = None) -> Iterator[Executor]:
    """Where replications run: this process (``jobs=1``), local processes (default: one per
    core) or an existing Dask cluster (``dask="tcp://host:8786"``). Interrupted (Ctrl-C) or
    failed, the chunks not yet started are dropped instead of run; only running ones finish."""
    if dask:
        yield from _dask(dask)
        return
    jobs = default_jobs() if jobs is None else jobs
    if jobs < 1:
        raise UsageError("must be at least 1", "jobs", jobs)
    if jobs == 1:
        yield Serial()
        return
    pool = ProcessPoolExecutor(max_workers=jobs)
    try:
        yield Pooled(pool, jobs)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _dask(address: str) -> Iterator[DaskExecutor]:
    try:
        from distributed import Client
    except ImportError:
        raise UsageError(
            "needs dask.distributed: pip install 'startsim[dask]'", "dask", address
        ) from None
    try:
        client = Client(address, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as exc:
        raise UsageError(f"cannot reach a Dask scheduler there ({exc})", "dask", address) from None
    try:
        yield DaskExecutor(client)
    finally:
        client.close()


def simulate(
    sc: Scenario,
    replications: int = 200,
    seed: int = 0,
    jobs: int | None = None,
    progress: Callable[[int], None] | None = None,
    dask: str | None = None,
    engine: str = "auto",
) -> Results:
    """Run ``replications`` replications on ``jobs`` processes (default: every core) or on a
    Dask cluster, with the ``engine`` of :func:`sim.engines.choose`."""
    choose(engine, sc, replications)  # a wrong engine is refused before any process starts
    with executor(jobs, dask) as ex:
        # Small chunks keep the progress bar moving and the cores evenly loaded.
        return evaluate(sc, replications, seed, ex, progress, ex.workers * 8, engine)
