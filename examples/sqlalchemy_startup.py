"""Our reconstruction of a SQLAlchemy start-up, for `startsim loadtest --instance-command`: a
SQLAlchemy async engine over asyncpg (pool_size 20, max_overflow 30, the incident's pool, F9), a
warm-up of K checkouts (gathered at once by default), a 20 s deadline on database init and exit
code 3 past it (the incident's deadline, F2).

It is not the incident's code. The incident's start-up had no warm-up: it opened about three
connections one after another, a psycopg2 one for its migrations before database init, then two
asyncpg ones (R5 in docs/sources.md#the-incidents-own-facts). ``--warmup-connections 2
--warmup-start asyncpg`` comes nearest to its database init (the second connection after the
first); nothing here opens the psycopg2 connection.

It speaks the harness's stdout convention (docs/loadtests.md, "Your own start-up"): one JSON object
per line, ``{"phase": "database", "s": 12.3}`` for each phase it times, ``{"ready": true}`` when it
is ready. Then it holds its warmed-up connections, as a serving instance does, until SIGTERM (or for
``HOLD_S`` seconds) and exits 0. Settings, from the environment (or ``--name value`` on the command
line, e.g. ``--warmup-connections 4 --warmup-start asyncpg``):

| variable | default | meaning |
|---|---|---|
| ``DATABASE_URL`` | (required) | where to connect; the password comes from ``PGPASSWORD`` |
| ``WARMUP_CONNECTIONS`` | 5 | K: connections the warm-up checks out |
| ``WARMUP_START`` | concurrent | ``concurrent`` (K at once) or ``asyncpg`` (1, then K − 1) |
| ``DB_INIT_TIMEOUT_S`` | 20 | deadline of database init; past it the process exits 3 |
| ``CONNECT_TIMEOUT_S`` | 10 | asyncpg's limit on one connection |
| ``POOL_SIZE``, ``MAX_OVERFLOW`` | 20, 30 | SQLAlchemy's QueuePool sizes |
| ``BEFORE_DB_S``, ``AFTER_DB_S`` | 0, 0 | other start-up work before and after database init |
| ``HOLD_S`` | (until SIGTERM) | how long a ready process keeps running |
| ``BREAKER_FORM`` | ``STARTSIM_BREAKER_FORM``, else none | ``stay_up``: stay up through a breaker |
| ``BREAKER_FAIL_MAX``, ``BREAKER_RESET_TIMEOUT_S`` | 5, 60 | the breaker's (pybreaker's defaults) |
| ``BREAKER_OPEN_JITTER``, ``BREAKER_RETRY_S`` | 0, 1 | its wait's jitter, the pause between tries |

The ``BREAKER_*`` settings default to the ``STARTSIM_BREAKER_*`` variables, which ``startsim
loadtest`` sets from the scenario's ``[breaker]``. With ``stay_up`` a failed try does not exit:
the process prints ``{"try_failed": 3}`` (the code it would have exited with), closes its pool,
waits ``BREAKER_RETRY_S``, prints ``{"try": 2}`` and asks its breaker (``sim.breaker.BreakerState``,
pybreaker's rules: while open, it waits for the open time's end) before database init again;
its readiness stays false until a try is ready (docs/loadtests.md, "A start-up that stays up").
Stopped (SIGTERM) before then, it exits 143 (an exit 0 would read as ready).
``in_process`` exits as without a breaker: a process makes one try, its breaker dies with it.

Install its dependencies with ``pip install -e ".[examples]"``. Run by hand::

    DATABASE_URL=postgresql://app@127.0.0.1:5432/app PGPASSWORD=... \\
        python examples/sqlalchemy_startup.py --warmup-connections 5
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sys
import time

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

EXIT_TIMEOUT = 3  # database init past its deadline, as the incident's service exits (F2)
EXIT_FAILED = 1  # any other failure of database init (e.g. 53300 with no retry)
EXIT_STOPPED = 128 + signal.SIGTERM  # staying up, told to stop before a try was ready
SETTINGS = {
    "DATABASE_URL": "",
    "WARMUP_CONNECTIONS": "5",
    "WARMUP_START": "concurrent",
    "DB_INIT_TIMEOUT_S": "20",
    "CONNECT_TIMEOUT_S": "10",
    "POOL_SIZE": "20",
    "MAX_OVERFLOW": "30",
    "BEFORE_DB_S": "0",
    "AFTER_DB_S": "0",
    "HOLD_S": "",
    "BREAKER_FORM": "none",
    "BREAKER_FAIL_MAX": "5",
    "BREAKER_RESET_TIMEOUT_S": "60",
    "BREAKER_OPEN_JITTER": "0",
    "BREAKER_RETRY_S": "1",
}


def settings(argv: list[str]) -> dict[str, str]:
    """The environment's settings, overridden by ``--warmup-connections 4``-style arguments."""
    out = {
        name: os.environ.get(name, os.environ.get(f"STARTSIM_{name}", default))
        if name.startswith("BREAKER_")
        else os.environ.get(name, default)
        for name, default in SETTINGS.items()
    }
    for flag, value in zip(argv[::2], argv[1::2], strict=False):
        name = flag.removeprefix("--").replace("-", "_").upper()
        if name not in SETTINGS:
            sys.exit(f"unknown option {flag}; known: {', '.join(SETTINGS)}")
        out[name] = value
    if not out["DATABASE_URL"]:
        sys.exit("DATABASE_URL is required")
    if out["WARMUP_START"] not in ("concurrent", "asyncpg"):
        sys.exit(f"WARMUP_START = {out['WARMUP_START']!r}: concurrent or asyncpg")
    if out["BREAKER_FORM"] not in ("none", "in_process", "stay_up"):
        sys.exit(
            f"BREAKER_FORM = {out['BREAKER_FORM']!r}: none, in_process or stay_up (a shared "
            "breaker would live in Redis, which this example does not use)"
        )
    return out


def report(**fields) -> None:
    print(json.dumps(fields), flush=True)


def make_engine(cfg: dict[str, str]) -> AsyncEngine:
    url = cfg["DATABASE_URL"].replace("postgresql://", "postgresql+asyncpg://", 1)
    app_name = os.environ.get("PGAPPNAME", "sqlalchemy-startup")
    return create_async_engine(
        url,
        pool_size=int(cfg["POOL_SIZE"]),
        max_overflow=int(cfg["MAX_OVERFLOW"]),
        connect_args={
            "timeout": float(cfg["CONNECT_TIMEOUT_S"]),
            "server_settings": {"application_name": app_name},
        },
    )


async def warm_up(
    engine: AsyncEngine, k: int, start: str, counts: dict[str, int], held: list[AsyncConnection]
) -> None:
    """Check out K connections into ``held``: all at once, or the first alone and then the rest
    at once. A failed checkout fails the warm-up at once (``gather``); the others are left to
    the exit (or, staying up, closed with the pool)."""

    async def checkout() -> None:
        counts["connection_attempts"] += 1
        held.append(await engine.connect())
        counts["connections_opened"] += 1

    if start == "asyncpg" and k > 0:
        await checkout()
        k -= 1
    await asyncio.gather(*(checkout() for _ in range(k)))


async def database_init(
    engine: AsyncEngine, cfg: dict[str, str], counts: dict[str, int], held: list
) -> None:
    await warm_up(engine, int(cfg["WARMUP_CONNECTIONS"]), cfg["WARMUP_START"], counts, held)
    if held:
        t0 = time.monotonic()
        await held[0].execute(text("select 1"))  # the init queries
        report(phase="init_queries", s=round(time.monotonic() - t0, 4))
    for conn in held:
        await conn.close()  # back to the pool, which keeps them open (up to pool_size)


async def main(cfg: dict[str, str]) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    await asyncio.sleep(float(cfg["BEFORE_DB_S"]))
    if cfg["BREAKER_FORM"] == "stay_up":
        engine = await stay_up(cfg, stop)
        if engine is None:
            return EXIT_STOPPED  # stopped (SIGTERM) before it was ready: not a ready exit
    else:
        engine = make_engine(cfg)
        code = await one_try(engine, cfg, [])
        if code:
            return code  # exit at once: the kernel closes whatever is still open
    t1 = time.monotonic()
    await asyncio.sleep(float(cfg["AFTER_DB_S"]))
    report(phase="after_db", s=round(time.monotonic() - t1, 3))
    report(ready=True)
    hold_s = float(cfg["HOLD_S"]) if cfg["HOLD_S"] else None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), hold_s)
    await engine.dispose()
    return 0


async def one_try(engine: AsyncEngine, cfg: dict[str, str], held: list) -> int:
    """Database init under its deadline: 0 when it is done, else the code to exit with
    (``EXIT_TIMEOUT`` past the deadline); its ``database`` line either way."""
    counts = {"connection_attempts": 0, "connections_opened": 0, "pool_starts": 1}
    t0 = time.monotonic()
    code = 0
    try:
        async with asyncio.timeout(float(cfg["DB_INIT_TIMEOUT_S"])):
            await database_init(engine, cfg, counts, held)
    except TimeoutError:
        code = EXIT_TIMEOUT
    except Exception as exc:
        report(sqlstate=getattr(getattr(exc, "orig", exc), "sqlstate", "") or "")
        print(f"database init failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        code = EXIT_FAILED
    report(phase="database", s=round(time.monotonic() - t0, 3), **counts)
    return code


async def stay_up(cfg: dict[str, str], stop: asyncio.Event) -> AsyncEngine | None:
    """Tries until one is ready, through a circuit breaker (pybreaker's rules, as
    ``sim.breaker.BreakerState``): after a failed try the pool is closed, and the next try is due
    ``BREAKER_RETRY_S`` later; while the breaker is open it waits for the open time's end (plus
    its jitter). The ready try's engine, or None when stopped first."""
    # startsim's, not a dependency of a team's service: pybreaker's code in docs/loadtests.md
    from sim.breaker import BreakerState, due_again

    breaker = BreakerState(int(cfg["BREAKER_FAIL_MAX"]), float(cfg["BREAKER_RESET_TIMEOUT_S"]))
    jitter, retry_s = float(cfg["BREAKER_OPEN_JITTER"]), float(cfg["BREAKER_RETRY_S"])
    rng = random.Random()
    for number in itertools.count(1):
        if number > 1:
            report(**{"try": number})  # the try is due now (the harness starts its record)
        while (until := due_again(breaker, time.monotonic(), jitter, rng.random)) is not None:
            if await stopped(stop, until - time.monotonic()):  # open: wait for its time's end
                return None
        engine, held = make_engine(cfg), []
        code = await one_try(engine, cfg, held)
        if code == 0:
            breaker.succeeded()
            return engine
        breaker.failed(time.monotonic())
        for conn in held:  # readiness stays false; the pool closes, connections and all
            with contextlib.suppress(Exception):
                await conn.invalidate()
        with contextlib.suppress(Exception):
            await engine.dispose()
        report(try_failed=code)
        if await stopped(stop, retry_s):
            return None
    return None


async def stopped(stop: asyncio.Event, wait_s: float) -> bool:
    """Wait ``wait_s`` seconds, or less if the process is told to stop; True when it is."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), max(0.0, wait_s))
    return stop.is_set()


if __name__ == "__main__":
    sys.exit(asyncio.run(main(settings(sys.argv[1:]))))
