"""Arrival plans: when each instance starts, for the arrivals a scenario names.

Arrival times come from the model's own :meth:`sim.scenario.Fleet.arrival_times` (burst, uniform
over a window, Poisson, waves of ``{at_s, count}``), so a campaign and a simulation start instances
on the same plan. Locust ticks a load shape about once a second (locust's shape.py); each tick
starts, at once, every user due by then.
No Locust import here: importing Locust monkey-patches the process for gevent.
"""

from __future__ import annotations

import bisect

import numpy as np

from sim.scenario import Scenario

BURST_RATE_PER_S = 10_000.0


class ArrivalPlan:
    """Sorted start times; ``due(t)`` users should have started by ``t``."""

    def __init__(self, times_s: list[float]) -> None:
        self.times_s = sorted(times_s)

    @classmethod
    def for_scenario(cls, sc: Scenario, seed: int) -> ArrivalPlan:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed)))
        return cls(sc.fleet.arrival_times(rng))

    def due(self, t_s: float) -> int:
        return bisect.bisect_right(self.times_s, t_s)

    def tick(self, t_s: float, have: int) -> tuple[int, float]:
        """(users to have, spawn rate per s): every user due by ``t_s``, started at once.

        Never early: an instance due at 2.0 s starts at the first tick at or after 2.0 s, so
        arrivals are late by less than one tick (the records hold the real start times).
        """
        return max(self.due(t_s), have), BURST_RATE_PER_S
