"""Sizing by arithmetic and by simulation: the fleet's connection demand against the free slots,
the pool's min_size / max_size and largest fleet, and the connector floor that keeps the scale-out
off the start-up path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sim.plain import plain
from sim.scenario import Scenario
from sim.search import Lab, Step


@dataclass(frozen=True)
class Demand:
    """The fleet's connections against the free slots, by arithmetic alone."""

    instances: int
    min_size: int
    max_size: int
    held_when_ready: int
    free_slots: int
    max_connections: int

    @classmethod
    def of(cls, sc: Scenario) -> Demand:
        p, db = sc.pool, sc.database
        return cls(
            sc.fleet.instances,
            p.min_size,
            p.max_size,
            p.held_when_ready,
            db.free_slots,
            db.max_connections,
        )

    @property
    def at_start(self) -> int:
        return self.instances * self.min_size

    @property
    def held(self) -> int:
        return self.instances * self.held_when_ready

    @property
    def at_most(self) -> int:
        return self.instances * self.max_size

    @property
    def held_fits(self) -> bool:
        return self.held <= self.free_slots

    @property
    def start_fits(self) -> bool:
        return self.at_start <= self.free_slots

    def as_dict(self) -> dict:
        return {
            "instances_x_min_size": self.at_start,
            "instances_x_held_when_ready": self.held,
            "instances_x_max_size": self.at_most,
            "free_slots": self.free_slots,
            "max_connections": self.max_connections,
            "start_fits": self.start_fits,
            "held_fits": self.held_fits,
        }


@dataclass(frozen=True)
class PgBouncer:
    """PgBouncer in front of the database when no pool setting fits: its settings."""

    max_client_conn: int
    default_pool_size: int
    query_wait_timeout_s: float


@dataclass(frozen=True)
class PoolAdvice:
    """min_size, max_size and the largest fleet by arithmetic; or, when no pool setting fits, the
    fleet cap and a pooler."""

    min_size: int
    max_size: int | None  # None: no max_size fits the free slots
    held_when_ready: int | None
    pool_locking_bound: int
    tasks: int
    connections_per_task: int
    fit_max_size: int  # free slots ÷ instances
    largest_fleet_current_max_size: int
    largest_fleet: int
    largest_fleet_max_size: int
    pgbouncer: PgBouncer | None
    demand: Demand

    @property
    def pool_setting_fits(self) -> bool:
        return self.max_size is not None

    def as_dict(self) -> dict:
        out = {k: plain(getattr(self, k)) for k in self.__dataclass_fields__ if k != "demand"}
        return {**out, "pool_setting_fits": self.pool_setting_fits, "demand": self.demand.as_dict()}


def pool_advice(sc: Scenario, tasks: int | None, connections_per_task: int) -> PoolAdvice:
    """min_size, max_size and the largest fleet; or the fleet cap and a pooler when none fits."""
    d = Demand.of(sc)
    tasks = sc.pool.held_when_ready if tasks is None else tasks
    # HikariCP's pool-locking rule: T tasks each needing C connections at once deadlock below
    # T × (C − 1) + 1 (docs/sources.md#pool-locking-bound).
    locking = tasks * (connections_per_task - 1) + 1  # ≥ 1: the floor of any pool
    fit = d.free_slots // d.instances
    fits = fit >= locking
    max_size = max(locking, min(d.max_size, fit)) if fits else None
    per_instance = max_size if fits else max(locking, min(d.max_size, d.held_when_ready) or 1)
    return PoolAdvice(
        min_size=min(d.min_size, 1),
        max_size=max_size,
        held_when_ready=None if max_size is None else min(d.held_when_ready, max_size),
        pool_locking_bound=locking,
        tasks=tasks,
        connections_per_task=connections_per_task,
        fit_max_size=fit,
        largest_fleet_current_max_size=d.free_slots // d.max_size,
        largest_fleet=d.free_slots // per_instance,
        largest_fleet_max_size=per_instance,
        pgbouncer=None if fits else _pgbouncer(d, locking),
        demand=d,
    )


def _pgbouncer(d: Demand, need: int) -> PgBouncer:
    # PgBouncer queues clients instead of rejecting them (53300), waiting at most query_wait_timeout
    # (default 120 s): docs/sources.md#pgbouncer-waiting.
    return PgBouncer(d.instances * max(need, d.max_size), d.free_slots, 120)


def pool_fix(sc: Scenario, advice: PoolAdvice) -> tuple[str, dict] | None:
    """The overrides that make the pool fit, or the fleet cap when no pool setting does."""
    if advice.pool_setting_fits:
        over = {
            "pool.min_size": advice.min_size,
            "pool.max_size": advice.max_size,
            "pool.held_when_ready": advice.held_when_ready,
        }
        changed = {k: v for k, v in over.items() if sc.get(k) != v}
        return ("pool sized to fit", changed) if changed else None
    if sc.fleet.arrival == "waves" or advice.largest_fleet < 1:
        return None  # a wave schedule names its counts; capping it is the user's call
    return "fleet capped", {"fleet.instances": advice.largest_fleet, "pool.min_size": 1}


# -- the connector -------------------------------------------------------------------------------


@dataclass
class ConnectorFloor:
    """The smallest ``min_instances`` that meets the target with no scale-out at all."""

    current_min_instances: int
    max_instances: int
    setups_at_start: int
    instances_for_all_at_once: int
    timeout_s: float
    min_instances: int | None = None
    steps: list[Step] = field(default_factory=list)
    skipped: str | None = None

    def as_dict(self) -> dict:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "steps"}
        out["steps"] = [s.as_dict("min_instances") for s in self.steps]
        return out


# Serverless VPC Access allows a connector 2 to 9 minimum instances (docs/sources.md#connector-
# instance-range): a floor above 9 is no setting a team can apply.
MAX_CONNECTOR_FLOOR = 9


def connector_floor(
    lab: Lab, sc: Scenario, target_success: float, replications: int
) -> ConnectorFloor:
    """The smallest ``min_instances`` (at most ``MAX_CONNECTOR_FLOOR``) with which the start-up
    meets the target without any scale-out, judged as every decision is, on P(start attempt
    fails): simulated with ``max_instances`` pinned to it, so no scale-out can ever arrive.
    Skipped (``skipped`` says why) when the fleet's connections cannot fit the free slots."""
    cx = sc.connector
    alpha = 1 - target_success
    setups = sc.fleet.instances * max(sc.pool.min_size, 1)
    out = ConnectorFloor(
        current_min_instances=cx.min_instances,
        max_instances=cx.max_instances,
        setups_at_start=setups,
        instances_for_all_at_once=math.ceil(setups / cx.setups_per_instance),
        timeout_s=sc.startup.db_init_timeout_s,
    )
    if not Demand.of(sc).start_fits:
        out.skipped = "connection demand does not fit the free slots"
        return out

    def ok(m: int) -> bool:
        over = {"connector.min_instances": m, "connector.max_instances": m}
        p = lab.summary(sc.with_overrides(over), replications).p_start_failure
        out.steps.append(Step(m, p, p.ci_high <= alpha))
        return p.ci_high <= alpha

    lo, hi = cx.min_instances - 1, min(cx.max_instances, max(MAX_CONNECTOR_FLOOR, cx.min_instances))
    if not ok(hi):
        return out
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    out.min_instances = hi
    return out
