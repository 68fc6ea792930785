"""The timeout advice and what monitoring would show, as typed records: what ``startsim
recommend`` found about the database-init timeout (today's, the verified one, each common target's,
AWS's p99.9 rule) and the failed starts a dashboard would count per deploy.

Each record's ``as_dict()`` is its part of summary.json (a contract: keys never renamed or
dropped); ``from_dict`` reads it back (``sim.plain``). Nothing here touches files or terminals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.plain import build, plain
from sim.records import Outcome
from sim.runner import Results
from sim.scenario import Scenario
from sim.search import RESOLUTION_S, Step, TimeoutSearch

TIMEOUT_CRITERION = "upper bound of P(db init reaches the timeout) per attempt <= 1 - target"


@dataclass(frozen=True)
class RareCheck:
    """P(db init reaches a row's timeout) by importance sampling (``sim.rare``), and whether its
    upper bound meets the row's target."""

    estimator: str
    event: str
    tilt: float
    tilted_draws: int
    mixture: float
    estimate: float
    ci_low: float
    ci_high: float
    replications: int
    effective_replications: float
    event_replications: int
    reliable: bool
    relative_half_width: float | None
    confidence: float
    meets: bool


@dataclass(frozen=True)
class TargetRow:
    """The smallest verified timeout for one common target, with today's pool and connector."""

    target_success: float
    timeout_s: float | None
    replications: int | None  # None: the user's count cannot show this target
    p_db_init_timeout: Step | None  # the search's step at the answer
    rare: RareCheck | None  # the importance-sampling check, when it ran


@dataclass(frozen=True)
class TimeoutAdvice:
    """Today's database-init timeout, the verified one, each common target's, and AWS's rule."""

    current_s: float
    search: TimeoutSearch | None  # the search for the user's target
    by_target: tuple[TargetRow, ...]
    aws_p999_s: float | None  # p99.9 of db init without a binding deadline (the probe)
    db_init_p50_s: float | None
    probe_timeout_s: float
    probe_replications: int

    @property
    def recommended_s(self) -> float | None:
        return None if self.search is None else self.search.timeout_s

    @property
    def aws_timeout_s(self) -> float | None:
        # AWS Builders' Library: a timeout at the downstream's p99.9 (0.1 % false timeouts),
        # padded when p99.9 is close to p50 (docs/sources.md#aws-p999-timeout-rule).
        return None if self.aws_p999_s is None else on_grid(self.aws_p999_s)

    @property
    def db_init_p999_over_p50(self) -> float | None:
        return self.aws_p999_s / self.db_init_p50_s if self.db_init_p50_s else None

    def as_dict(self) -> dict:
        return {
            "current_s": self.current_s,
            "recommended_s": self.recommended_s,
            "criterion": TIMEOUT_CRITERION,
            "search": plain(self.search),
            "by_target": plain(self.by_target),
            "aws_p999_s": self.aws_p999_s,
            "aws_timeout_s": self.aws_timeout_s,
            "db_init_p50_s": self.db_init_p50_s,
            "db_init_p999_over_p50": self.db_init_p999_over_p50,
            "probe_timeout_s": self.probe_timeout_s,
            "probe_replications": self.probe_replications,
        }

    @classmethod
    def from_dict(cls, data: dict) -> TimeoutAdvice:
        """summary.json's ``timeout`` back (its derived keys follow from the rest)."""
        return build(cls, data)


def timeout_advice(
    sc: Scenario,
    target_success: float,
    probe: Results,
    searches: dict[float, TimeoutSearch],
    plan: dict[float, int | None],
    rare: dict[float, RareCheck] | None = None,
) -> TimeoutAdvice:
    ok = probe.attempts["outcome"] == Outcome.READY
    durations = probe.attempts["db_init_s"][ok]
    p50 = p999 = None
    if ok.any():
        p50, p999 = (float(np.percentile(durations, q)) for q in (50, 99.9))
    rows = tuple(
        TargetRow(
            t,
            searches[t].timeout_s if t in searches else None,
            plan[t],
            searches[t].at_timeout if t in searches else None,
            (rare or {}).get(t),
        )
        for t in plan
    )
    return TimeoutAdvice(
        sc.startup.db_init_timeout_s,
        searches.get(target_success),
        rows,
        p999,
        p50,
        probe.scenario.startup.db_init_timeout_s,
        probe.replications,
    )


def on_grid(seconds: float) -> float:
    return max(RESOLUTION_S, math.ceil(seconds / RESOLUTION_S - 1e-9) * RESOLUTION_S)


@dataclass(frozen=True)
class PerDeploy:
    """One count per simulated deploy, as a dashboard sums it."""

    mean: float | None
    p50: float | None
    p95: float | None
    max: int | None
    deploys_with_any: float | None  # share of deploys with at least one

    @classmethod
    def of(cls, x: np.ndarray) -> PerDeploy:
        if not x.size:
            return cls(None, None, None, None, None)
        p50, p95 = (float(np.percentile(x, q)) for q in (50, 95))
        return cls(float(np.mean(x)), p50, p95, int(np.max(x)), float(np.mean(x > 0)))


@dataclass(frozen=True)
class DeployMonitoring:
    """What a deploy of today's configuration shows on a dashboard (one replication = one deploy
    of the fleet): failed starts, exit-code-3 exits (database-init timeouts) and restarts."""

    deploys: int
    instances_per_deploy: int
    horizon_s: float
    startup_failures_per_deploy: PerDeploy
    exit_code_3_per_deploy: PerDeploy
    restarts_per_deploy: PerDeploy


def monitoring(res: Results) -> DeployMonitoring:
    """Today's run (with its records) as monitoring would count it, per deploy."""
    a = res.attempts
    reps = res.replications
    failed = np.bincount(a["replication"], weights=a["outcome"] != Outcome.READY, minlength=reps)
    exit3 = np.bincount(a["replication"], weights=a["outcome"] == Outcome.TIMEOUT, minlength=reps)
    restarts = np.bincount(a["replication"], weights=a["attempt"] > 1, minlength=reps)
    return DeployMonitoring(
        reps,
        res.scenario.fleet.instances,
        res.scenario.horizon_s,
        PerDeploy.of(failed),
        PerDeploy.of(exit3),
        PerDeploy.of(restarts),
    )
