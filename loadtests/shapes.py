"""The Locust load shape of a campaign: follows an :class:`~loadtests.arrivals.ArrivalPlan`."""

from __future__ import annotations

from collections.abc import Callable

from locust import LoadTestShape

from loadtests.arrivals import ArrivalPlan


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
