"""The timeout search: the smallest database-init timeout whose simulated failure bound meets a
target, found by galloping from a guess to a bracket and bisecting, every step a simulation.

Why a search and not a quantile: a timeout changes the dynamics (an exit frees slots, a restart adds
load later), so the share of inits that exceed ``T`` in a run without a deadline is only a guess of
what happens with the deadline ``T``. The guess starts the search; every value reported was
simulated at exactly that value, with the same seed (common random numbers) at every step.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from sim.plain import build
from sim.records import Outcome
from sim.runner import Executor, Results, Serial, evaluate
from sim.scenario import Scenario
from sim.stats import Proportion, Summary, clustered_proportion

TIMEOUT = "startup.db_init_timeout_s"
RESOLUTION_S = 0.5  # timeouts are searched on a half-second grid: values an ADR can quote as is
BASE_REPLICATIONS = 1000


def zero_failure_replications(alpha: float, confidence: float) -> int:
    """Replications whose Wilson upper bound with no failure at all reaches ``alpha``.

    With no failure seen, stats.clustered_proportion counts each replication once, and the Wilson
    bound for 0 of n is z² / (n + z²), so n ≥ z² (1 − alpha) / alpha.
    """
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return math.ceil(z * z * (1 - alpha) / alpha)


def replications_for(alpha: float, confidence: float, floor: int = BASE_REPLICATIONS) -> int:
    """A quarter more than the zero-failure minimum, so a few failures can still pass."""
    return max(floor, math.ceil(1.25 * zero_failure_replications(alpha, confidence)))


# -- simulating, with a cache --------------------------------------------------------------------


class Lab:
    """Runs scenarios at one seed; the same scenario and replication count is simulated once."""

    def __init__(
        self,
        executor: Executor | None = None,
        seed: int = 0,
        confidence: float = 0.95,
        progress: Callable[[int], None] | None = None,
        on_point: Callable[[int, int], None] | None = None,
        engine: str = "reference",
    ) -> None:
        """``progress(n)`` after every n replications; ``on_point(k, replications)`` before the
        k-th new simulation, so a progress bar can show each one's total and ETA."""
        self.executor = executor or Serial()
        self.seed, self.confidence, self.progress = seed, confidence, progress
        self.on_point = on_point
        self.engine = engine  # sim.engines.choose: "auto", "fast" or "reference"
        self.points = 0  # simulations run (cached repeats not counted)
        self._cache: dict[str, Results] = {}
        self.instance_starts = 0  # simulated instance starts, for throughput figures
        self.engines: dict[str, int] = {}  # simulations run per engine

    def run(self, sc: Scenario, replications: int, records: bool = True) -> Results:
        """Simulate (or recall); ``records=False`` when only the summary is needed."""
        key = json.dumps([sc.to_dict(), replications], sort_keys=True, default=str)
        cached = self._cache.get(key)
        if cached is None or (records and cached.attempts is None):
            self.points += 1
            if self.on_point:
                self.on_point(self.points, replications)
            cached = evaluate(
                sc,
                replications,
                self.seed,
                self.executor,
                self.progress,
                engine=self.engine,
                records=records,
            )
            self.instance_starts += sc.fleet.instances * replications
            self.engines[cached.engine] = self.engines.get(cached.engine, 0) + 1
            self._cache[key] = cached
        return cached

    def tally(self, engine: str, simulations: int, instance_starts: int) -> None:
        """Count simulations run outside :meth:`run` (a candidate's worlds: sim.robust)."""
        self.engines[engine] = self.engines.get(engine, 0) + simulations
        self.instance_starts += instance_starts

    def summary(self, sc: Scenario, replications: int) -> Summary:
        return self.run(sc, replications, records=False).summary(self.confidence)


def at_timeout(sc: Scenario, timeout_s: float) -> Scenario:
    return sc.with_overrides({TIMEOUT: float(timeout_s)})


# -- the timeout search --------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One simulated value of a search: the value, the interval there, and whether it meets."""

    value: float
    p: Proportion
    meets: bool

    def as_dict(self, key: str = "timeout_s") -> dict:
        return {key: self.value, **self.p.as_dict(), "meets": self.meets}

    @classmethod
    def from_dict(cls, data: dict, key: str = "timeout_s") -> Step:
        """The inverse of ``as_dict`` (summary.json's data back to a step)."""
        return cls(data[key], build(Proportion, data), data["meets"])


@dataclass
class TimeoutSearch:
    """The smallest verified timeout on the grid, with every step the search simulated."""

    target_success: float
    replications: int
    timeout_s: float | None = None
    steps: list[Step] = field(default_factory=list)

    @property
    def at_timeout(self) -> Step | None:
        """The step at the answer (its interval is the one the answer is shown with)."""
        return next((s for s in self.steps if s.value == self.timeout_s), None)

    def as_dict(self) -> dict:
        at = self.at_timeout
        return {
            "target_success": self.target_success,
            "replications": self.replications,
            "timeout_s": self.timeout_s,
            "p_db_init_timeout": None if at is None else at.as_dict(),
            "steps": [s.as_dict() for s in sorted(self.steps, key=lambda s: s.value)],
        }

    @classmethod
    def from_dict(cls, data: dict) -> TimeoutSearch:
        """The inverse of ``as_dict`` (its ``p_db_init_timeout`` is the step at the answer)."""
        steps = [Step.from_dict(s) for s in data["steps"]]
        return cls(data["target_success"], data["replications"], data["timeout_s"], steps)


def failure_hits(res: Results, timeout_s: float) -> np.ndarray:
    """Attempts of a run at a long deadline that a deadline ``timeout_s`` would have failed."""
    a = res.attempts
    return (a["outcome"] != Outcome.READY) | (a["db_init_s"] > timeout_s)


def guess_timeout(probe: Results, alpha: float, confidence: float, ceiling_s: float) -> float:
    """First guess from a run at a long deadline, as if the deadline changed nothing else: the
    smallest grid value whose bound meets ``alpha``; when the probe has too few replications to
    show ``alpha`` at all, the smallest whose estimate is ``alpha / 2``; the ceiling if none."""
    rep = probe.attempts["replication"]
    top = int(ceiling_s / RESOLUTION_S)

    def bound_ok(k: int) -> bool:
        hits = failure_hits(probe, k * RESOLUTION_S)
        return clustered_proportion(hits, rep, confidence).ci_high <= alpha

    def estimate_ok(k: int) -> bool:
        return float(np.mean(failure_hits(probe, k * RESOLUTION_S))) <= alpha / 2

    ok = bound_ok if bound_ok(top) else estimate_ok
    if not ok(top):
        return top * RESOLUTION_S
    lo, hi = 1, top
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid + 1, hi)
    return hi * RESOLUTION_S


def search_timeout(
    lab: Lab,
    sc: Scenario,
    target_success: float,
    replications: int,
    guess_s: float,
    ceiling_s: float,
) -> TimeoutSearch:
    """Gallop from the guess to a bracket, then bisect; each step is a simulation at that value."""
    alpha = 1 - target_success
    out = TimeoutSearch(target_success, replications)
    top = max(1, int(ceiling_s / RESOLUTION_S))

    def ok(k: int) -> bool:
        p = lab.summary(at_timeout(sc, k * RESOLUTION_S), replications).p_db_init_timeout
        out.steps.append(Step(k * RESOLUTION_S, p, p.ci_high <= alpha))
        return p.ci_high <= alpha

    k = min(top, max(1, math.ceil(guess_s / RESOLUTION_S)))
    if ok(k):
        lo, hi = _gallop_down(ok, k)
    else:
        lo, hi = _gallop_up(ok, k, top)
        if hi is None:
            return out
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    out.timeout_s = hi * RESOLUTION_S
    return out


def _gallop_down(ok: Callable[[int], bool], k: int) -> tuple[int, int]:
    hi, step = k, 1
    while hi - step >= 1:
        if not ok(hi - step):
            return hi - step, hi
        hi, step = hi - step, step * 2
    return 0, hi  # grid value 0 (no deadline at all) is never a candidate


def _gallop_up(ok: Callable[[int], bool], k: int, top: int) -> tuple[int, int | None]:
    lo, step = k, 1
    while lo < top:
        hi = min(top, lo + step)
        if ok(hi):
            return lo, hi
        lo, step = hi, step * 2
    return lo, None
