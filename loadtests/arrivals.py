"""Arrival plans: when each instance starts, for the arrivals a scenario names.

Arrival times come from the model's own :func:`sim.engine.arrival_times` (burst, uniform over a
window, Poisson, waves of ``{at_s, count}``), so a campaign and a simulation start instances on the
same plan. Locust ticks a load shape about once a second (facts: locust shape.py), so each tick
asks for the users due in the coming second, spawned at the rate that spreads them over it.
No Locust import here: importing Locust monkey-patches the process for gevent.
"""

from __future__ import annotations

import bisect

import numpy as np

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
