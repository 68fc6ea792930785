"""The readable engine's state objects (sim/engine.py): one connection attempt, one container across
its restarts, one request after ready; and the states a connection attempt goes through. Plain
slotted objects, no behaviour: the engine's handlers change them."""

from __future__ import annotations

import math

from sim.breaker import BreakerState
from sim.checkout import PoolState
from sim.records import Reason

# States of one connection attempt; FAULTED: the path fails it (docs/model.md, "Path faults");
# LOGIN: at the pooler, waiting to log in (docs/model.md, "A pooler in front of the database").
QUEUED, SETUP, ACCEPT, HELD, GONE, FAULTED, LOGIN = range(7)
# The reason a path failure gives, by path.fault.
PATH_REASONS = {"closed": Reason.CLOSED, "reset": Reason.RESET}

WINDOW_S = 60.0  # the Admin API quota counts requests per minute: windows [60k, 60k + 60)


class Conn:
    __slots__ = ("after", "awaited", "inst", "owner", "pool", "run", "state")

    def __init__(self, inst: Container, pool: int, awaited: bool) -> None:
        self.inst, self.pool, self.state = inst, pool, QUEUED
        self.awaited = awaited  # database init waits for it: its failure fails the pool start
        self.run = inst.phase_run  # the start-up phase's run that opened it (0 without phases)
        # Traffic after ready: whether it belongs to the ready instance's pool (sim.checkout),
        # and for whom it is opening: a request, the filler, or None (the settled pool's).
        self.after = False
        self.owner = None


class SimRequest:
    """One request after ready (docs/model.md, "Traffic after ready"): one row of requests.csv."""

    __slots__ = ("arrive_s", "checkout_s", "instance", "outcome", "own", "ready_s", "reason")

    def __init__(self, instance: int, arrive_s: float, ready_s: float) -> None:
        self.instance, self.arrive_s, self.ready_s = instance, arrive_s, ready_s
        self.checkout_s = math.nan
        self.outcome: str | None = None  # None while it waits: unfinished if the run ends so
        self.reason = ""
        self.own = False  # per_waiter: it waits for a connection of its own, not in the queue


class Container:
    """One container instance across its restarts."""

    __slots__ = (
        "attempt",
        "attempt_start",
        "bound",
        "breaker",
        "conn_attempts",
        "conns",
        "db_started",
        "deadline_at",
        "egress_at",
        "held",
        "idx",
        "in_init",
        "init_start",
        "pending",
        "phase_i",
        "phase_run",
        "phase_start",
        "pool",
        "pool_starts",
        "pool_state",
        "ready_at",
        "refreshes",
        "to_open",
    )

    def __init__(self, idx: int) -> None:
        self.idx = idx
        self.attempt = 0  # 1-based number of the current start attempt
        self.pool = 0  # generation of the current pool start; stale events compare against it
        self.in_init = False
        self.conns: dict[Conn, None] = {}  # every live connection, in flight or held, in order
        self.held = 0
        self.pending = 0  # connections the current pool start still waits for
        self.to_open = 0  # "workers": connections of the pool start not opened yet
        self.refreshes = 0  # Cloud SQL refreshes made by the current attempt
        self.ready_at = math.inf
        self.attempt_start = self.init_start = self.deadline_at = 0.0
        self.egress_at = 0.0  # Direct VPC egress: when the current attempt's egress is usable
        self.conn_attempts = self.pool_starts = 0
        # Start-up phases (docs/model.md): the current one, its run (stale events compare
        # against it), when it began, its bound; whether database init has begun.
        self.phase_i, self.phase_run, self.phase_start, self.bound = -1, 0, 0.0, 0.0
        self.db_started = True
        self.pool_state: PoolState | None = None  # its pool after ready, with traffic
        self.breaker: BreakerState | None = None  # stay_up, shared: the breaker it asks
