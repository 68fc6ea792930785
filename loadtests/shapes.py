"""Load shapes: when each instance (Locust user) starts, for the arrivals a scenario names.

Arrival times come from the model's own :func:`sim.engine.arrival_times` (burst, uniform over a
window, Poisson, waves of ``{at_s, count}``), so a campaign and a simulation start instances on the
same plan. Locust ticks a shape about once a second (facts: locust shape.py), so the users due in
the coming second are spawned at the rate that spreads them over it.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable

import numpy as np
from locust import LoadTestShape

from sim.engine import arrival_times
from sim.scenario import Scenario

TICK_S = 1.0
BURST_RATE_PER_S = 10_000.0


class ArrivalPlan:
    """Sorted start times; ``due(t)`` users should have started by ``t``."""

    def __init__(self, times_s: list[float]) -> None:
        self.times_s = sorted(times_s)

    @classmethod
    def for_scenario(cls, sc: Scenario, seed: int) -> ArrivalPlan:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
        return cls(arrival_times(sc, rng))

    def due(self, t_s: float) -> int:
        return bisect.bisect_right(self.times_s, t_s)

    def tick(self, t_s: float, have: int) -> tuple[int, float]:
        """(users to have, spawn rate per s) given ``have`` started: the next tick's arrivals."""
        want = self.due(t_s + TICK_S)
        if want <= have:
            return have, BURST_RATE_PER_S
        if self.due(t_s) >= want:
            return want, BURST_RATE_PER_S  # all of them are due already: start them at once
        return want, max((want - have) / TICK_S, 1.0)


class ArrivalShape(LoadTestShape):
    """Follows an :class:`ArrivalPlan`; stops at ``limit_s`` or once ``finished()`` says so."""

    plan: ArrivalPlan | None = None
    limit_s: float = 600.0
    finished: Callable[[], bool] = staticmethod(lambda: False)

    def tick(self):
        t_s = self.get_run_time()
        if self.plan is None or t_s >= self.limit_s or self.finished():
            return None
        self._have, rate = self.plan.tick(t_s, getattr(self, "_have", 0))
        return self._have, rate
