"""The readable engine's handlers of traffic after ready (docs/model.md, "Traffic after ready"):
requests arriving, routed to ready instances and checked out of their pools (sim.checkout's
PoolState says what follows). A mixin of :class:`sim.engine.Engine`, whose state and other
handlers it uses."""

from __future__ import annotations

import math

from sim.checkout import FILLER, FillerPause, HandOver, OpenConnection
from sim.engine_state import Conn, Container, SimRequest
from sim.records import Reason, RequestOutcome


class TrafficHandlers:
    """Requests after ready: their arrivals, routing, checkouts, and the pools' answers."""

    def start_traffic(self) -> None:
        """When the run starts, after the first starts: the fleet's first gap, or the trace."""
        traffic = self.sc.traffic
        if traffic.rate_per_s > 0:
            self._next_arrival(self.fleet_arrival)
        for t in traffic.trace_s:
            if t >= self.sc.horizon_s:
                break
            self.at(t, self.route)

    def _next_arrival(self, handler, *args) -> None:
        """One gap drawn; the arrival scheduled if it falls before the horizon."""
        t = self.now + self.draw_traffic_gap()
        if t < self.sc.horizon_s:
            self.at(t, handler, *args)

    def fleet_arrival(self) -> None:
        self._next_arrival(self.fleet_arrival)
        self.route()

    def instance_arrival(self, inst: Container) -> None:
        self._next_arrival(self.instance_arrival, inst)
        self.checkout(inst)

    def route(self) -> None:
        """The warm instances first, then the ready ones in the order they became ready; one
        pick among them, none when there is no candidate."""
        warm = self.sc.fleet.warm_instances
        n = warm + len(self.ready_order)
        if n == 0:
            self._new_request(-1, math.nan, RequestOutcome.UNROUTED)
            return
        k = min(int(self.draw_traffic_pick() * n), n - 1)
        if k < warm:
            self._new_request(-1, math.nan, RequestOutcome.WARM)  # its pool is settled
            return
        self.checkout(self.ready_order[k - warm])

    def _new_request(self, instance: int, ready_s: float, outcome: str | None = None) -> SimRequest:
        req = SimRequest(instance, self.now, ready_s)
        req.outcome = outcome
        self.requests.append(req)
        return req

    def checkout(self, inst: Container) -> None:
        req = self._new_request(inst.idx, inst.ready_at)
        self._apply(inst, inst.pool_state.checkout(req))
        if req.outcome is None and not req.own:  # queued: it waits at most pool.timeout_s
            self.at(self.now + self.sc.pool.timeout_s, self.checkout_timeout, inst, req)

    def _apply(self, inst: Container, actions: list) -> None:
        """Do what the pool's rules say (sim.checkout), in their order."""
        for action in actions:
            if isinstance(action, HandOver):
                self._served(inst, action.conn, action.request)
            elif isinstance(action, OpenConnection):
                self.out.traffic_connections += 1
                conn = self.open_conn(inst, inst.pool, counted=False, awaited=False)
                conn.after, conn.owner = True, action.owner
                if action.owner is not FILLER:
                    action.owner.own = True
            elif isinstance(action, FillerPause):
                self.at(self.now + action.delay_s, self.filler_resume, inst)

    def _served(self, inst: Container, conn: Conn, req: SimRequest) -> None:
        req.outcome, req.checkout_s = RequestOutcome.SERVED, self.now
        self.at(self.now + self.draw_traffic_query(), self.query_done, inst, conn)

    def query_done(self, inst: Container, conn: Conn) -> None:
        self._apply(inst, inst.pool_state.release(conn))

    def filler_resume(self, inst: Container) -> None:
        self._apply(inst, inst.pool_state.resume())

    def checkout_timeout(self, inst: Container, req: SimRequest) -> None:
        if inst.pool_state.timeout(req):
            req.outcome, req.reason = RequestOutcome.FAILED, Reason.POOL_TIMEOUT

    def pool_conn_failed(self, conn: Conn, reason: str) -> None:
        """A connection of a ready instance's pool failed while opening: the request that waited
        for it fails with its reason; the filler pauses."""
        owner = conn.owner
        if owner is not None and owner is not FILLER:
            owner.outcome, owner.reason = RequestOutcome.FAILED, reason
        self._apply(conn.inst, conn.inst.pool_state.failed(owner))

    def _request_rows(self) -> None:
        cols = self.out.requests
        for req in self.requests:
            outcome = req.outcome or RequestOutcome.UNFINISHED
            for key, value in (
                ("instance", req.instance),
                ("arrive_s", req.arrive_s),
                ("ready_s", req.ready_s),
                ("checkout_s", req.checkout_s),
                ("wait_s", req.checkout_s - req.arrive_s),
                ("outcome", str(outcome)),
                ("reason", str(req.reason)),
            ):
                cols[key].append(value)
