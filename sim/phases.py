"""Start-up phases (docs/model.md, "Start-up phases"): the start-up as named phases that open
connections of their own, each with its own bound, nested inside database init.

``Phase`` is one ``[[startup.phases]]`` table; ``check_order`` and ``check_bounds`` are the rules
a list of them must keep (sim/scenario.py calls them). ``duration_s`` draws a phase's work from
the ``phase`` stream so that both engines compute the same double.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, NonNegativeInt

from sim import streams
from sim.distributions import Constant, Distribution, PositiveSeconds, Seconds
from sim.errors import FieldProblem

MAX_PHASE_RETRIES = 10_000  # a phase's bound ÷ its retry pause, as sim.scenario.MAX_POOL_STARTS


def _jitter(value: float | str) -> float | str:
    if isinstance(value, str):
        if value != "full":
            raise ValueError('must be "full" or a fraction from 0 to 1 (0 = no jitter)')
        return value
    if not 0 <= value <= 1:
        raise ValueError('must be "full" or a fraction from 0 to 1 (0 = no jitter)')
    return value


# A pause's jitter: 0 (none), a fraction f (the pause times a uniform draw in [1 − f, 1 + f], as
# gRPC's ±20 %) or "full" (a uniform draw in [0, pause], AWS's "full jitter").
Jitter = Annotated[float | str, AfterValidator(_jitter)]


class Phase(BaseModel):
    """One start-up phase."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    name: Annotated[str, Field(min_length=1, max_length=100)]
    db_init: bool = True
    connections: NonNegativeInt = 0
    order: Literal["sequential", "concurrent"] = "sequential"
    pool: bool = False
    keep: bool = True
    duration_s: Distribution = Constant(dist="constant", value=0.0)
    deadline_s: PositiveSeconds | None = None
    on_failure: Literal["exit", "continue"] = "exit"
    retry_backoff_s: Seconds = 0.0
    retry_jitter: Jitter = 0.0


def check_order(phases: list[Phase]) -> None:
    """Unique names, one pool phase at most, the phases outside database init first."""
    if not phases:
        return
    seen: set[str] = set()
    pools = 0
    in_init = False
    for i, ph in enumerate(phases):
        at = f"startup.phases.{i}"
        if ph.name in seen:
            raise FieldProblem(
                f"{at}.name", ph.name, "another phase has this name: names are unique"
            )
        seen.add(ph.name)
        if ph.pool:
            pools += 1
            if pools > 1:
                raise FieldProblem(f"{at}.pool", True, "only one phase may be the pool start")
            if ph.connections:
                raise FieldProblem(
                    f"{at}.connections",
                    ph.connections,
                    "must be 0 with pool = true: the pool start opens pool.min_size connections",
                )
        if ph.db_init:
            in_init = True
        elif in_init:
            raise FieldProblem(
                f"{at}.db_init",
                False,
                "a phase outside database init must come before every db_init = true phase "
                "(after database init, startup.after_db_s stands for the rest)",
            )
    if not in_init:
        raise FieldProblem(
            "startup.phases",
            [p.name for p in phases],
            "needs at least one phase with db_init = true",
        )


def check_bounds(
    phases: list[Phase], db_init_timeout_s: float, pool_backoff_s: float, pool_jitter
) -> None:
    """A phase that retries needs a bound, and at most MAX_PHASE_RETRIES pauses within it."""
    for i, ph in enumerate(phases):
        backoff_s, jitter, field = ph.retry_backoff_s, ph.retry_jitter, "retry_backoff_s"
        if ph.pool:
            backoff_s, jitter = pool_backoff_s, pool_jitter
        if backoff_s <= 0:
            continue
        bound_s = bound_of(ph, db_init_timeout_s)
        if math.isinf(bound_s):
            where = "pool.retry_backoff_s" if ph.pool else f"startup.phases.{i}.{field}"
            raise FieldProblem(
                where,
                backoff_s,
                f"phase {ph.name!r} is before database init and has no deadline_s: its retries "
                "would have no end; give it a deadline_s or use 0 (no retry)",
            )
        full = 2 if jitter == "full" else 1
        if full * bound_s / backoff_s > MAX_PHASE_RETRIES:
            raise FieldProblem(
                f"startup.phases.{i}.{field}" if not ph.pool else "pool.retry_backoff_s",
                backoff_s,
                f"allows up to {full * bound_s / backoff_s:,.0f} retries within phase "
                f"{ph.name!r}'s bound ({bound_s:g} s); at most {MAX_PHASE_RETRIES:,}",
            )


def bound_of(ph: Phase, db_init_timeout_s: float) -> float:
    """How long the phase may last at most from its start (inf: no bound of its own)."""
    own = math.inf if ph.deadline_s is None else ph.deadline_s
    return min(own, db_init_timeout_s) if ph.db_init else own


def connections_of(phases: list[Phase], min_size: int) -> int:
    """Connections one attempt's phases open, retries aside."""
    return sum(min_size if ph.pool else ph.connections for ph in phases)


def duration_s(spec: tuple, state: int, k: int) -> float:
    """Draw ``k`` of the ``phase`` stream (state ``state``) as this phase's duration: its own
    quantile of the stream's uniform ``k`` (gamma: its sampler over draw ``k``'s sub-stream)."""
    kind, a, b, x = spec
    return streams.draw(kind, a, b, x, 0, len(x), state, k)
