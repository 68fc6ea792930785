"""Traffic after ready, for real (docs/model.md, "Traffic after ready"; docs/loadtests.md).

Each ready instance's pool is :class:`sim.checkout.PoolState`, the object the readable engine
drives, here driven from asyncio: it says which request takes which connection, when a connection
is to be opened (a request's own with ``per_waiter``, the filler's with ``background``) and when
the filler pauses; this module opens real asyncpg connections through the path the start-up uses
(the connector emulator's port with ``--via-emulator``), runs each request's query on the
connection it was handed (``select pg_sleep(query draw)``), keeps the ``pool.timeout_s`` timers,
and writes one record per request (:data:`sim.records.REQUEST_COLUMNS`) the moment its outcome is
known.

Times are seconds on the campaign's clock (0 when the campaign's first instance may start, the
clock ``horizon_s`` counts on), from ``time.monotonic``, which is also the loop's clock.

Nothing here knows about gevent or Locust: the harness runs it on :mod:`loadtests.bridge`'s loop.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from loadtests.container import failure_reason
from sim.checkout import FillerPause, HandOver, OpenConnection, PoolState
from sim.records import REQUEST_COLUMNS, Reason, RequestOutcome
from sim.scenario import Scenario

QUERY = "select pg_sleep($1)"
# At the end of a campaign, queries still running get this long to finish before they are
# cancelled (they take a query_s draw: milliseconds).
CLOSE_GRACE_S = 2.0
log = logging.getLogger("startsim")

Emit = Callable[[dict], None]


@dataclass(eq=False)  # identity: PoolState keeps requests by it
class Request:
    arrive_s: float
    future: asyncio.Future
    checkout_s: float = math.nan


class Failed(Exception):
    """A request's checkout failed: ``reason`` is a :class:`~sim.records.Reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def request_record(
    instance: int,
    arrive_s: float,
    ready_s: float,
    outcome: str,
    reason: str = "",
    checkout_s: float = math.nan,
) -> dict:
    """One request's record, :data:`REQUEST_COLUMNS` in order (µs precision; null for NaN)."""
    wait_s = checkout_s - arrive_s
    values = (instance, arrive_s, ready_s, checkout_s, wait_s, outcome, reason)
    return {k: _json_number(v) for k, v in zip(REQUEST_COLUMNS, values, strict=True)}


def _json_number(value):
    if isinstance(value, float):
        return None if math.isnan(value) else round(value, 6)
    return value


@dataclass
class Clock:
    """The campaign's clock: seconds since ``t0`` (a ``time.monotonic`` reading)."""

    t0: float = field(default_factory=time.monotonic)

    def now_s(self) -> float:
        return time.monotonic() - self.t0


class ReadyPool:
    """One ready instance's pool after ready: its requests, its connections, their records.

    ``held``: the connections the instance settled on at ready (idle now); ``dial()`` opens one
    more (through the start-up's path) and tracks it with the instance's, so it is counted and
    closed at the end with them."""

    def __init__(
        self,
        sc: Scenario,
        instance: int,
        ready_s: float,
        held: list,
        dial: Callable,
        clock: Clock,
        emit: Emit,
        rng: np.random.Generator,
    ) -> None:
        self.sc, self.instance, self.ready_s = sc, instance, ready_s
        self.dial, self.clock, self.emit, self.rng = dial, clock, emit, rng
        self.state = PoolState(sc.pool, idle=held)
        self.waiting: set[Request] = set()  # queued, or waiting for a connection of its own
        self.tasks: set[asyncio.Task] = set()
        self.closed = False
        self.lost = 0  # connections whose query failed: the model has no such event

    def arrive(self) -> None:
        """A request arrives now (called on the loop)."""
        if not self.closed:
            self._spawn(self._request())

    async def _request(self) -> None:
        # Its arrival is when it asks the pool: the task's own start-up is the harness's, not
        # the pool's, so it is no part of the checkout wait.
        loop = asyncio.get_running_loop()
        arrive_s = self.clock.now_s()
        req = Request(arrive_s, loop.create_future())
        self.waiting.add(req)
        self._apply(self.state.checkout(req))
        timer = None
        if not req.future.done():  # queued (or opening its own, which no pool timeout ends)
            left_s = self.sc.pool.timeout_s - (self.clock.now_s() - arrive_s)
            timer = loop.call_later(max(left_s, 0.0), self._timeout, req)
        try:
            conn = await req.future
        except Failed as failure:
            self._record(req, RequestOutcome.FAILED, failure.reason)
            return
        finally:
            self.waiting.discard(req)
            if timer is not None:
                timer.cancel()
        self._record(req, RequestOutcome.SERVED)
        try:
            await conn.execute(QUERY, float(self.sc.traffic.query_s.sample(self.rng, 1)[0]))
        except Exception as exc:  # the connection is gone: it stays counted, as checked out
            self.lost += 1
            log.warning("startsim: instance %d lost a connection: %s", self.instance, exc)
            return
        if not self.closed:
            self._apply(self.state.release(conn))

    def _timeout(self, req: Request) -> None:
        if self.state.timeout(req) and not req.future.done():
            req.future.set_exception(Failed(Reason.POOL_TIMEOUT))

    def _apply(self, actions: list) -> None:
        for action in actions:
            if isinstance(action, HandOver):
                req = action.request
                req.checkout_s = self.clock.now_s()
                if not req.future.done():
                    req.future.set_result(action.conn)
            elif isinstance(action, OpenConnection):
                self._spawn(self._open(action.owner))
            elif isinstance(action, FillerPause):
                asyncio.get_running_loop().call_later(action.delay_s, self._resume)

    def _resume(self) -> None:
        if not self.closed:
            self._apply(self.state.resume())

    async def _open(self, owner) -> None:
        try:
            conn = await self.dial()
        except Exception as exc:
            if self.closed:
                return
            actions = self.state.failed(owner)
            if isinstance(owner, Request) and not owner.future.done():
                owner.future.set_exception(Failed(failure_reason(exc)[0]))
            self._apply(actions)
            return
        if not self.closed:
            self._apply(self.state.established(conn, owner))

    def _record(self, req: Request, outcome: str, reason: str = "") -> None:
        self.emit(
            request_record(
                self.instance, req.arrive_s, self.ready_s, outcome, reason, req.checkout_s
            )
        )

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """The campaign ends: a request still waiting is recorded ``unfinished``; queries still
        running get :data:`CLOSE_GRACE_S`; nothing more is opened or handed over."""
        if self.closed:
            return
        self.closed = True
        for req in list(self.waiting):
            self._record(req, RequestOutcome.UNFINISHED)
            if not req.future.done():
                req.future.cancel()
        self.waiting.clear()
        if self.tasks:
            _, pending = await asyncio.wait(list(self.tasks), timeout=CLOSE_GRACE_S)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)


class CampaignTraffic:
    """One process's traffic: the ready pools in the order they became ready, the fleet's stream
    (``rate_per_s`` or ``trace_s``) routed over them and the warm instances, or each pool's own
    stream (``rate_per_instance_per_s``). Every method runs on the loop."""

    def __init__(
        self, sc: Scenario, clock: Clock, emit: Emit, limit_s: float, warm_instances: int = 0
    ) -> None:
        self.sc, self.clock, self.emit = sc, clock, emit
        self.cfg = sc.traffic
        self.end_s = min(sc.horizon_s, limit_s)  # arrivals over [0, end_s)
        self.warm_instances = warm_instances  # 0 where this process does not route the fleet's
        self.pools: list[ReadyPool] = []
        self.tasks: set[asyncio.Task] = set()
        self.closed = False

    def ready(self, pool: ReadyPool) -> None:
        """An instance is ready: its pool takes requests from now."""
        if self.closed:
            return
        self.pools.append(pool)
        if self.cfg.rate_per_instance_per_s > 0:
            self._spawn(self._poisson(self.cfg.rate_per_instance_per_s, pool.rng, pool.arrive))

    def start_fleet(self, rng: np.random.Generator) -> None:
        """The fleet's stream, from the campaign's start (``rate_per_s`` or ``trace_s``)."""
        if self.cfg.rate_per_s > 0:
            self._spawn(self._poisson(self.cfg.rate_per_s, rng, lambda: self._route(rng)))
        elif self.cfg.trace_s:
            self._spawn(self._trace(lambda: self._route(rng)))

    async def _poisson(self, rate: float, rng: np.random.Generator, arrive: Callable) -> None:
        at_s = self.clock.now_s()
        while True:
            at_s += float(rng.exponential(1.0 / rate))
            if at_s >= self.end_s:
                return
            await asyncio.sleep(max(at_s - self.clock.now_s(), 0.0))
            if self.closed:
                return
            arrive()

    async def _trace(self, arrive: Callable) -> None:
        for at_s in self.cfg.trace_s:
            if at_s >= self.end_s:
                return
            await asyncio.sleep(max(at_s - self.clock.now_s(), 0.0))
            if self.closed:
                return
            arrive()

    def _route(self, rng: np.random.Generator) -> None:
        """Warm instances first, then the ready ones in the order they became ready; one
        uniform draw picks (none when there is no candidate: the request is unrouted)."""
        now_s = self.clock.now_s()
        n = self.warm_instances + len(self.pools)
        if n == 0:
            self.emit(request_record(-1, now_s, math.nan, RequestOutcome.UNROUTED))
            return
        k = int(rng.random() * n) - self.warm_instances
        if k < 0:
            self.emit(request_record(-1, now_s, math.nan, RequestOutcome.WARM))
            return
        self.pools[k].arrive()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def close(self) -> None:
        """No more arrivals; every pool closes (its waiting requests recorded unfinished)."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.pools), return_exceptions=True)
