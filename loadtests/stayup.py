"""A start-up that stays up behind a circuit breaker, for real (docs/model.md, "Circuit breakers",
forms ``stay_up`` and ``shared``; docs/loadtests.md, "A start-up that stays up").

The breaker is :class:`sim.breaker.BreakerState`, the engines' own sans-I/O object, driven here on
``time.monotonic``'s clock: the built-in instance (:class:`loadtests.container.Instance`) and the
example start-up's stay-up mode (``examples/sqlalchemy_startup.py``) ask it the same questions the
engines do. ``stay_up``: one breaker per instance; ``shared``: one for every instance of the
campaign (as Redis-backed storage would be), possible only where they all run in one process.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable

from sim.breaker import Breaker, BreakerState, due_again

# What the harness tells a start-up command about the scenario's breaker (the example reads them).
BREAKER_ENV = {
    "form": "STARTSIM_BREAKER_FORM",
    "fail_max": "STARTSIM_BREAKER_FAIL_MAX",
    "reset_timeout_s": "STARTSIM_BREAKER_RESET_TIMEOUT_S",
    "open_jitter": "STARTSIM_BREAKER_OPEN_JITTER",
    "retry_s": "STARTSIM_BREAKER_RETRY_S",
}


def breaker_state(cfg: Breaker) -> BreakerState | None:
    """A fresh breaker for a form that stays up; None for ``none`` and ``in_process`` (whose
    state dies with a process that makes one try: the records are those of no breaker)."""
    return BreakerState(cfg.fail_max, cfg.reset_timeout_s) if cfg.stays_up else None


def breaker_env(cfg: Breaker) -> dict[str, str]:
    """The scenario's ``[breaker]`` for a start-up command's environment ({} without one)."""
    if cfg.form == "none":
        return {}
    values = {
        "form": cfg.form,
        "fail_max": cfg.fail_max,
        "reset_timeout_s": cfg.reset_timeout_s,
        "open_jitter": cfg.open_jitter,
        "retry_s": cfg.retry_s,
    }
    return {BREAKER_ENV[name]: str(value) for name, value in values.items()}


async def admitted(
    state: BreakerState,
    jitter: float,
    draw: Callable[[], float],
    last_s: float = math.inf,
    clock: Callable[[], float] = time.monotonic,
) -> bool:
    """Wait until ``state`` admits a try: while it is open, until its open time's end plus
    ``reset_timeout_s × jitter × u`` (``u = draw()``, one per wait, none without jitter), then
    ask again (a shared breaker may have opened again meanwhile). False when the try would begin
    at or after ``last_s`` (the horizon on ``clock``): it does not begin."""
    while True:
        now = clock()
        if now >= last_s:
            return False
        again = due_again(state, now, jitter, draw)  # the engines' own question
        if again is None:
            return True
        if again >= last_s:
            return False
        await asyncio.sleep(again - now)
