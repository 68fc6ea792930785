"""One connection before a campaign, with the campaign's own settings.

A wrong password, a port with nothing listening or a missing database would otherwise run a whole
campaign whose every attempt fails for a reason that has nothing to do with the start-up path, and
report it as a measurement. So the campaign first connects once, exactly as its instances will
(the checked addresses, the DSN's user, database and options, the connect timeout), and refuses to
start when that fails, naming the cause (SQLSTATE and message).
"""

from __future__ import annotations

import asyncio
import os

from loadtests.safety import Resolved, Target
from sim.errors import UsageError


def describe(exc: BaseException, timeout_s: float) -> str:
    """One line for a failed connection: SQLSTATE and message, or the socket error."""
    sqlstate = getattr(exc, "sqlstate", "") or ""
    if sqlstate:
        return f"{sqlstate} {exc}".splitlines()[0]
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s (connect_timeout_s)"
    if isinstance(exc, OSError) and exc.errno:
        return f"{os.strerror(exc.errno)} (errno {exc.errno})"
    return f"{type(exc).__name__}: {exc}".splitlines()[0]


async def _probe(dsn: str, resolved: Resolved, timeout_s: float) -> Target:
    import asyncpg

    from loadtests.container import APPLICATION_NAME

    password = {} if resolved.password is None else {"password": resolved.password}
    con = await asyncpg.connect(
        dsn,
        **resolved.connect_kwargs(),
        **password,
        timeout=timeout_s,
        server_settings={"application_name": APPLICATION_NAME},
    )
    try:
        await con.fetchval("select 1")
        addr = getattr(con, "_addr", None)  # which of the addresses answered (asyncpg's record)
    finally:
        await con.close(timeout=timeout_s)
    if isinstance(addr, str):
        return next((t for t in resolved.targets if t.host == addr), resolved.targets[0])
    if isinstance(addr, tuple):
        return Target(addr[0], int(addr[1]))
    return resolved.targets[0]


def check_connection(
    dsn: str, resolved: Resolved, timeout_s: float, secrets: tuple[str, ...] = ()
) -> Target:
    """Connect once; the address that answered, or :class:`UsageError` naming the cause."""
    try:
        return asyncio.run(_probe(dsn, resolved, timeout_s))
    except (Exception, TimeoutError) as exc:
        cause = describe(exc, timeout_s)
        for secret in secrets:
            if secret:
                cause = cause.replace(secret, "***")
        where = ", ".join(str(t) for t in resolved.targets)
        raise UsageError(f"--dsn: cannot connect to {where}: {cause}; nothing started") from None
