"""Many replications of one scenario, across cores, with results as flat numpy columns.

Replication ``i`` always draws from the streams keyed by ``(seed, i)`` (:mod:`sim.streams`;
``replication_seed(seed, i)`` names it for the readable engine), so the same seed gives the same
numbers whether the replications run in one process or in many, and on either engine.

Every replication row carries its attempt counts (attempts, failed, timed out, rejected, first
attempts, first attempts ready): all the summary and its clustered intervals need. So a run asked
for without records (``records=False``) keeps one small row per replication and no attempt
record at all: a million replications fit in tens of megabytes. With traffic after ready
(``[traffic]``), the requests' records come back beside the attempts' (when records are kept) and
each replication row carries TRAFFIC_FLEET_COLUMNS.
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
from sim.phases import connections_of
from sim.records import (
    ATTEMPT_COLUMNS,
    FLEET_COLUMNS,
    REQUEST_COLUMNS,
    TILT_COLUMNS,
    TRAFFIC_FLEET_COLUMNS,
    Outcome,
)
from sim.scenario import Scenario
from sim.stats import Summary, cluster_proportion, percentiles, summarize
from sim.streams import Tilt

# Attempt counts per replication, beyond FLEET_COLUMNS: with them a summary needs no record.
COUNT_COLUMNS = ("failed_attempts", "first_attempts", "first_ready", "refused_connections")


@dataclass(frozen=True)
class Results:
    """Every attempt of every replication (``attempts``; None when the run kept no records) and
    one row per replication (``fleet``, with its attempt counts), and the engine that ran. With
    traffic, every request of every replication (``requests``: ``replication`` and
    REQUEST_COLUMNS; None without traffic or records)."""

    scenario: Scenario
    seed: int
    attempts: dict[str, np.ndarray] | None
    fleet: dict[str, np.ndarray]
    engine: str = "reference"
    requests: dict[str, np.ndarray] | None = None

    @property
    def replications(self) -> int:
        return len(self.fleet["replication"])

    def summary(self, confidence: float = 0.95) -> Summary:
        sc = self.scenario
        how = summarize if self.attempts is not None else summarize_counts
        args = (self.attempts, self.fleet) if self.attempts is not None else (self.fleet,)
        return how(
            *args,
            instances=sc.fleet.instances,
            min_size=connections_per_start(sc),
            seed=self.seed,
            confidence=confidence,
        )


def connections_per_start(sc: Scenario) -> int:
    """The connections one start opens once, work amplification's unit (docs/model.md): the pool
    start's ``min_size``, or with start-up phases every phase's own (the pool phase's min_size)."""
    phases = sc.startup.phases
    return connections_of(phases, sc.pool.min_size) if phases else sc.pool.min_size


def summarize_counts(
    fleet: dict[str, np.ndarray],
    *,
    instances: int | np.ndarray,
    min_size: int | np.ndarray,
    seed: int | None,
    confidence: float = 0.95,
) -> Summary:
    """:func:`sim.stats.summarize` from the replication rows' counts alone: the same Summary.
    ``instances`` and ``min_size`` may be given per row (rows of several worlds pooled)."""
    attempts, failed = fleet["attempts"], fleet["failed_attempts"]
    timed_out, rejected = fleet["timed_out_attempts"], fleet["rejected_attempts"]
    some = attempts > 0  # a replication without attempts is no cluster
    replications = len(fleet["replication"])
    total_instances = int(np.sum(np.broadcast_to(instances, replications)))
    needed = int(np.sum(np.broadcast_to(np.multiply(instances, min_size), replications)))
    n, k_failed, k_timeout = int(attempts.sum()), int(failed.sum()), int(timed_out.sum())
    k_rejected = int(rejected.sum())
    ready = int(np.sum(fleet["instances_ready"]))
    peaks = fleet["peak_db_connections"]
    return Summary(
        p_db_init_timeout=cluster_proportion(timed_out[some], attempts[some], confidence),
        p_start_failure=cluster_proportion(failed[some], attempts[some], confidence),
        p_first_start_success=_ratio(int(fleet["first_ready"].sum()), total_instances),
        never_ready_fraction=_ratio(total_instances - ready, total_instances),
        fleet_ready_s=percentiles(fleet["fleet_ready_s"]),
        restarts_per_instance=_ratio(n - int(fleet["first_attempts"].sum()), total_instances),
        peak_db_connections_p50=float(np.percentile(peaks, 50)) if replications else None,
        peak_db_connections_max=int(np.max(peaks)) if replications else None,
        work_amplification=_ratio(int(np.sum(fleet["connection_attempts"])), needed),
        attempts=n,
        outcomes={
            Outcome.READY.value: n - k_failed,
            Outcome.TIMEOUT.value: k_timeout,
            Outcome.REJECTED.value: k_rejected,
            Outcome.ERROR.value: k_failed - k_timeout - k_rejected,
        },
        confidence=confidence,
        replications=replications,
        seed=seed,
    )


def _ratio(a: float, b: float) -> float | None:
    return None if b == 0 else a / b


def replication_seed(seed: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(index,))


def run_chunk(
    sc: Scenario,
    seed: int,
    indices: range,
    engine: str = "reference",
    records: bool = True,
    tilt: Tilt | None = None,
    requests: bool = False,
) -> tuple:
    """Replications ``indices`` as column lists; the unit of work sent to a process or a cluster.
    ``engine``: ``"reference"`` (sim.engine) or ``"fast"`` (sim.fast, the same model compiled).
    Without ``records`` the attempts come back as None (their counts are in the fleet rows).
    With a ``tilt`` (importance sampling, sim.rare) the fleet rows carry ``TILT_COLUMNS``; with
    traffic on, TRAFFIC_FLEET_COLUMNS. ``(attempts, fleet)``, or with ``requests``
    ``(attempts, fleet, requests)``: the requests' columns (None without records)."""
    if engine == "fast":
        from sim import fast

        if requests:  # the fast engine's traffic (sim.engines routes traffic away until then)
            return fast.run_chunk(sc, seed, indices, tilt, records, requests=True)
        return fast.run_chunk(sc, seed, indices, tilt, records)
    attempts = {k: [] for k in ("replication", *ATTEMPT_COLUMNS)}
    tilt_columns = TILT_COLUMNS if tilt is not None else ()
    traffic_columns = TRAFFIC_FLEET_COLUMNS if sc.traffic.on else ()
    fleet = {k: [] for k in (*FLEET_COLUMNS, *COUNT_COLUMNS, *tilt_columns, *traffic_columns)}
    reqs = {k: [] for k in ("replication", *REQUEST_COLUMNS)}
    for i in indices:
        rep = run_replication(sc, replication_seed(seed, i), tilt=tilt)
        for key in (*tilt_columns, *traffic_columns):
            fleet[key].append(getattr(rep, key))
        if requests and records:
            reqs["replication"] += [i] * len(rep.requests["outcome"])
            for key in REQUEST_COLUMNS:
                reqs[key] += rep.requests[key]
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
            ("refused_connections", rep.refused_connections),
            ("rejected_attempts", outcomes.count(Outcome.REJECTED)),
            ("timed_out_attempts", outcomes.count(Outcome.TIMEOUT)),
            ("attempts", len(outcomes)),
            ("failed_attempts", len(outcomes) - outcomes.count(Outcome.READY)),
            ("first_attempts", rep.attempts["attempt"].count(1)),
            (
                "first_ready",
                sum(
                    a == 1 and o == Outcome.READY
                    for a, o in zip(rep.attempts["attempt"], outcomes, strict=True)
                ),
            ),
        ):
            fleet[key].append(value)
    if requests:
        return (attempts if records else None), fleet, (reqs if records else None)
    return (attempts if records else None), fleet


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
    engine: str = "reference",
    records: bool = True,
) -> Iterator[Results]:
    """Simulate each scenario (same seed: common random numbers) and yield Results in order.

    Each point is split into ``pieces_per_point`` chunks (default: one per worker). ``engine``:
    ``"reference"`` (the default), ``"fast"`` or ``"auto"`` (sim.engines.choose: fast for large
    runs).
    ``records=False``: no attempt records, only the replication rows (bounded memory)."""
    executor = executor or Serial()
    per_point = pieces_per_point or executor.workers
    pieces = chunks(replications, max(1, min(replications, per_point)))
    window: deque = deque()
    # Two points in flight keep every worker busy while the oldest point is being collected.
    ahead = 2
    for sc in scenarios:
        chosen = choose(engine, sc, replications)
        if chosen == "fast" and not isinstance(executor, Serial):
            from sim import fast

            fast.warm()  # before the pool forks its workers: they inherit the loaded kernel
        futures = [
            executor.submit(run_chunk, sc, seed, p, chosen, records, None, sc.traffic.on)
            for p in pieces
        ]
        window.append((sc, chosen, futures))
        if len(window) > ahead:
            yield _collect(*window.popleft(), pieces, seed, progress)
    while window:
        yield _collect(*window.popleft(), pieces, seed, progress)


def _collect(sc, engine, futures, pieces, seed, progress) -> Results:
    attempts, fleet, requests = [], [], []
    for piece, fut in zip(pieces, futures, strict=True):
        a, f, *r = fut.result()
        if a is not None:
            attempts.append(a)
        if r and r[0] is not None:
            requests.append(r[0])
        fleet.append(f)
        if progress:
            progress(len(piece))
    return Results(
        scenario=sc,
        seed=seed,
        attempts=_columns(attempts) if attempts else None,
        fleet=_columns(fleet),
        engine=engine,
        requests=_columns(requests) if requests else None,
    )


def evaluate(
    sc: Scenario,
    replications: int,
    seed: int,
    executor: Executor | None = None,
    progress: Callable[[int], None] | None = None,
    pieces_per_point: int | None = None,
    engine: str = "reference",
    records: bool = True,
) -> Results:
    """One scenario's replications, split across the executor's workers."""
    return next(
        run_points([sc], replications, seed, executor, progress, pieces_per_point, engine, records)
    )


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
    engine: str = "reference",
    records: bool = True,
) -> Results:
    """Run ``replications`` replications on ``jobs`` processes (default: every core) or on a
    Dask cluster, with the ``engine`` of :func:`sim.engines.choose`. ``records=False`` keeps no
    attempt record (``Results.attempts`` is None), only a small row per replication."""
    choose(engine, sc, replications)  # a wrong engine is refused before any process starts
    with executor(jobs, dask) as ex:
        # Small chunks keep the progress bar moving and the cores evenly loaded; at least one
        # chunk per 20,000 replications keeps each chunk's records (when kept) small.
        pieces = max(ex.workers * 8, -(-replications // 20_000))
        return evaluate(sc, replications, seed, ex, progress, pieces, engine, records)
