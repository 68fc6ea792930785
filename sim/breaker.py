"""``[breaker]``: a circuit breaker around a start's database work (pybreaker, purgatory).

The rule is docs/model.md, "Circuit breakers". A breaker wraps one *try*: what a start does after
``before_db_s`` (database init, or the start-up phases), bounded by its deadline. Three forms:

- ``in_process``: the breaker lives in the process, which still exits with code 3 after a failed
  try. Its state dies with the process, and a process makes one try, so it never reaches
  ``fail_max`` (the records are those of no breaker, drawn for drawn).
- ``stay_up``: the process does not exit. Readiness stays false, its connections are closed, and
  it tries again ``retry_s`` later, through its own breaker: after ``fail_max`` failed tries in a
  row the breaker opens for ``reset_timeout_s``, and the process waits until the open time has
  passed (plus its jitter), then makes one half-open trial.
- ``shared``: as ``stay_up``, but one breaker for the whole fleet (pybreaker's or purgatory's
  Redis storage): the fleet's failures count together, and while it is open no instance of the
  fleet tries, a fleet-wide admission in front of the connector.

:class:`BreakerState` is one breaker as a sans-I/O object (no clock, no I/O, no random draw, as
:mod:`sim.checkout` and :mod:`sim.pooler`): the readable engine, the fast engine's twin and the
example start-up's stay-up mode (``loadtests.startup_phases``) ask it the same questions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from sim.distributions import PositiveSeconds
from sim.errors import FieldProblem

FORMS = ("none", "in_process", "stay_up", "shared")
STAYS_UP = ("stay_up", "shared")
# pybreaker's defaults (CircuitBreaker(fail_max=5, reset_timeout=60)); purgatory's are 5 and 30 s.
FAIL_MAX, RESET_TIMEOUT_S = 5, 60.0
# The stay-up loop's pause after a failed try: an assumption (an application's own sleep).
RETRY_S = 1.0
BREAKER_SETTINGS = ("fail_max", "reset_timeout_s", "open_jitter", "retry_s")

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class Breaker(BaseModel):
    """``[breaker]``: none, or a circuit breaker of one of three forms (docs/scenario.md)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    form: Literal["none", "in_process", "stay_up", "shared"] = "none"
    fail_max: PositiveInt = FAIL_MAX  # failed tries in a row that open it
    reset_timeout_s: PositiveSeconds = RESET_TIMEOUT_S  # how long it stays open
    # Each wait for an open breaker ends up to reset_timeout_s × open_jitter after its open time
    # (one uniform draw per wait): 0, no draw, every waiting instance tries at the same instant.
    open_jitter: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    retry_s: PositiveSeconds = RETRY_S  # stay_up, shared: the pause after a failed try

    @model_validator(mode="after")
    def _only_with_a_form(self) -> Breaker:
        if self.form == "none":
            for name in BREAKER_SETTINGS:
                if getattr(self, name) != Breaker.model_fields[name].default:
                    raise FieldProblem(
                        f"breaker.{name}",
                        getattr(self, name),
                        'only used with a breaker (form is "none"); set breaker.form to '
                        '"in_process", "stay_up" or "shared", or remove it',
                    )
        return self

    @property
    def stays_up(self) -> bool:
        """Whether a failed try leaves the process up (no exit, no restart)."""
        return self.form in STAYS_UP

    @property
    def shared(self) -> bool:
        return self.form == "shared"

    def tries_bound(self, horizon_s: float) -> int:
        """At most this many tries per instance in a run: one per ``retry_s`` (a shared breaker
        is reset by other instances' successes), or ``fail_max`` and then one per open time."""
        if not self.stays_up:
            return 1
        if self.shared:
            return math.ceil(horizon_s / self.retry_s) + 1
        return self.fail_max + math.ceil(horizon_s / self.reset_timeout_s) + 1


class BreakerState:
    """One breaker: pybreaker's states, with its rules for a try that begins and one that ends.

    - closed: a try passes; a failed try counts one, and the ``fail_max``-th in a row opens the
      breaker; a ready try sets the count back to 0.
    - open: a try that would begin before ``open_until`` is refused (``admits`` is False) and
      its instance waits for :meth:`wait_until`; the first try that begins at or after it moves
      the breaker to half-open and passes.
    - half-open: tries pass (pybreaker does not hold back a second caller); the first try to end
      decides: ready closes the breaker, a failure opens it again for ``reset_timeout_s``.
    - A try that ends while the breaker is open (it began before another's failure opened it)
      changes nothing.
    """

    __slots__ = ("fail_max", "fails", "open_until", "opened", "reset_timeout_s", "state")

    def __init__(self, fail_max: int = FAIL_MAX, reset_timeout_s: float = RESET_TIMEOUT_S) -> None:
        self.fail_max = fail_max
        self.reset_timeout_s = reset_timeout_s
        self.state = CLOSED
        self.fails = 0  # failed tries in a row, while closed
        self.open_until = -math.inf
        self.opened = 0  # times it opened (for reports)

    def admits(self, now: float) -> bool:
        """Whether a try may begin at ``now``; an open breaker whose time has passed turns
        half-open and admits it."""
        if self.state == OPEN:
            if now < self.open_until:
                return False
            self.state = HALF_OPEN
        return True

    def wait_until(self, u: float, jitter: float) -> float:
        """When a refused instance tries again: the open time's end, plus ``reset_timeout_s ×
        jitter × u`` (``u`` one uniform draw in [0, 1), not drawn when ``jitter`` is 0)."""
        return self.open_until + self.reset_timeout_s * jitter * u

    def failed(self, now: float) -> bool:
        """A try ended in failure at ``now``; True when that opened the breaker."""
        if self.state == OPEN:
            return False
        if self.state == CLOSED:
            self.fails += 1
            if self.fails < self.fail_max:
                return False
        self.state = OPEN
        self.open_until = now + self.reset_timeout_s
        self.opened += 1
        return True

    def succeeded(self) -> None:
        """A try ended ready: closed, its count back to 0 (nothing while open)."""
        if self.state != OPEN:
            self.state = CLOSED
            self.fails = 0


def due_again(
    state: BreakerState, now: float, jitter: float, draw_u: Callable[[], float]
) -> float | None:
    """A try is due at ``now``: None when ``state`` admits it, else when it is due again (the
    wait's end, with one ``draw_u()`` when ``jitter`` is above 0)."""
    if state.admits(now):
        return None
    return state.wait_until(draw_u() if jitter else 0.0, jitter)
