"""Guards of a load campaign: where it may connect, and keeping the password out of every output.

A campaign opens hundreds of connections at once; pointed at the wrong database it is an outage.
So only loopback (or a Unix socket) is a target by default; anything else must be named with
``--allow-target HOST``. The password comes from the DSN, ``PGPASSWORD`` or ``~/.pgpass`` (asyncpg
reads the last two itself) and is only ever passed on through the environment, never printed.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit, urlunsplit

from sim.errors import TargetError, UsageError

LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


@dataclass(frozen=True)
class Target:
    host: str
    port: int


def parse_dsn(dsn: str) -> Target:
    """Host and port of a ``postgresql://`` DSN (asyncpg's defaults: localhost, 5432)."""
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgresql", "postgres"):
        raise UsageError(
            f"--dsn = {redact_dsn(dsn)!r}: must be a postgresql:// URL "
            "(e.g. postgresql://app@127.0.0.1:5432/app)"
        )
    try:
        port = parts.port or 5432
    except ValueError:
        raise UsageError(f"--dsn = {redact_dsn(dsn)!r}: the port is not a number") from None
    return Target(parts.hostname or "localhost", port)


def dsn_password(dsn: str) -> str:
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return ""
    return unquote(password) if password else ""


def redact_dsn(dsn: str) -> str:
    """The DSN with its password replaced by ``***`` (safe to print and to store)."""
    try:
        parts = urlsplit(dsn)
        if parts.password is None:
            return dsn
    except ValueError:
        return "(unparseable DSN)"
    user = parts.username or ""
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def with_host_port(dsn: str, host: str, port: int) -> str:
    """The same DSN (user, password, database, options) aimed at ``host:port``."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def is_loopback(host: str) -> bool:
    if host.startswith("/") or host.lower() in LOOPBACK_NAMES:
        return True  # a Unix socket or the loopback name
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_target(host: str, allowed: list[str], what: str = "--dsn") -> None:
    """Refuse a non-loopback host unless the user named it with ``--allow-target``."""
    if is_loopback(host) or host in allowed:
        return
    raise TargetError(
        f"{what} host = {host!r}: not loopback; a load test reaches another host only when named "
        f"with --allow-target {host}"
    )


def parse_host_port(text: str, option: str) -> Target:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{option} = {text!r}: expected HOST:PORT, e.g. 127.0.0.1:6432")
    return Target(host.strip("[]"), int(port))
