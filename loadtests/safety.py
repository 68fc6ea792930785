"""Guards of a load campaign: where it may connect, and keeping the password out of every output.

A campaign opens hundreds of connections at once; pointed at the wrong database it is an outage.
So only loopback (or a Unix socket) is a target by default; anything else must be named with
``--allow-target HOST``. The password comes from the DSN, ``PGPASSWORD`` or ``~/.pgpass`` and is
only ever passed on through the environment, never printed.

The target checked is the target dialled. asyncpg finds its hosts in the DSN's host part, its
``?host=`` / ``?port=`` parameters, a service file, ``PGHOST`` / ``PGPORT`` and multi-host lists;
:func:`resolve_dsn` asks asyncpg's own parser for that list (so it is asyncpg's list, not a
re-implementation), resolves every name to its addresses, checks each address, and returns them.
Every connection the harness opens then passes those addresses to asyncpg explicitly
(``host=[...]``, ``port=[...]``), which makes asyncpg ignore the DSN's hosts, ``PGHOST`` and the
service file: nothing can send it elsewhere later.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

from sim.errors import TargetError, UsageError

UNIX_SOCKET_MARK = ".s.PGSQL."
Resolver = Callable[..., list]


@dataclass(frozen=True)
class Target:
    host: str  # an IP address or a Unix socket path: exactly what is dialled
    port: int

    @property
    def is_unix(self) -> bool:
        return self.host.startswith("/")

    def __str__(self) -> str:
        if self.is_unix:
            return self.host
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Resolved:
    """Where a DSN goes, checked: every address asyncpg would try, and the password it found."""

    targets: tuple[Target, ...]
    password: str | None  # from the DSN, PGPASSWORD, a service file or ~/.pgpass; never print

    def connect_kwargs(self) -> dict:
        """``host`` and ``port`` for asyncpg: explicit, so the DSN and PGHOST no longer count."""
        return {"host": [t.host for t in self.targets], "port": [t.port for t in self.targets]}


def resolve_dsn(dsn: str, allowed: list[str], resolver: Resolver = socket.getaddrinfo) -> Resolved:
    """Every address asyncpg would dial for ``dsn`` (names resolved), each one checked."""
    parse_dsn_scheme(dsn)
    addrs, password = _asyncpg_addresses(dsn)
    what = _host_source(dsn)
    targets: list[Target] = []
    for host, port in addrs:
        for target in check_host(host, port, allowed, what, resolver):
            if target not in targets:
                targets.append(target)
    hostaddr = os.environ.get("PGHOSTADDR", "") or _query(dsn).get("hostaddr", "")
    for host in filter(None, hostaddr.split(",")):
        # asyncpg ignores hostaddr today; should it ever use it, it is a target like any other.
        check_host(host, addrs[0][1], allowed, "PGHOSTADDR/hostaddr", resolver)
    return Resolved(tuple(targets), password)


def parsed_dsn(dsn: str):
    """asyncpg's own reading of the DSN and the environment: its addresses and its parameters
    (user, password …); a DSN it refuses is a usage error naming the DSN, password redacted."""
    from asyncpg import connect_utils, exceptions

    try:
        return connect_utils._parse_connect_dsn_and_args(
            dsn=dsn,
            host=None,
            port=None,
            user=None,
            password=None,
            passfile=None,
            database=None,
            ssl=None,
            service=None,
            servicefile=None,
            direct_tls=None,
            server_settings=None,
            target_session_attrs=None,
            krbsrvname=None,
            gsslib=None,
        )
    except (exceptions.ClientConfigurationError, exceptions.InterfaceError, ValueError) as exc:
        problem = _scrub(str(exc), dsn_password(dsn)).splitlines()[0]
        raise UsageError(f"--dsn = {redact_dsn(dsn)!r}: {problem}") from None


def _asyncpg_addresses(dsn: str) -> tuple[list[tuple[str, int]], str | None]:
    """asyncpg's own host list for the DSN and the environment, as ``(host, port)`` pairs."""
    addrs, params = parsed_dsn(dsn)
    out = []
    for addr in addrs:
        if isinstance(addr, str):  # a Unix socket: asyncpg has joined dir and .s.PGSQL.PORT
            out.append((addr, int(addr.rpartition(UNIX_SOCKET_MARK)[2] or 5432)))
        else:
            out.append((addr[0], int(addr[1])))
    return out, params.password


def check_host(
    host: str,
    port: int,
    allowed: list[str],
    what: str = "--dsn host",
    resolver: Resolver = socket.getaddrinfo,
) -> list[Target]:
    """The addresses ``host`` resolves to, each loopback or allowed; else :class:`TargetError`."""
    if host.startswith("/"):
        return [Target(host, port)]  # a Unix socket is on this machine
    try:
        infos = resolver(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise UsageError(f"{what} = {host!r}: cannot be resolved ({reason})") from None
    addresses = list(dict.fromkeys(info[4][0] for info in infos))
    named = host.strip("[]") in allowed or host in allowed
    allowed_ips = {_normal(a) for a in allowed}
    for address in addresses:
        if not (named or is_loopback(address) or _normal(address) in allowed_ips):
            shown = "" if _normal(address) == _normal(host) else f" ({address})"
            raise TargetError(
                f"{what} = {host!r}{shown}: not loopback; a load test reaches another host only "
                f"when named with --allow-target {host.strip('[]')}"
            )
    return [Target(address, port) for address in addresses]


def check_host_port(
    text: str, option: str, allowed: list[str], resolver: Resolver = socket.getaddrinfo
) -> Target:
    """``HOST:PORT`` of an option, checked like a DSN host; the first address it resolves to."""
    where = parse_host_port(text, option)
    return check_host(where.host, where.port, allowed, f"{option} host", resolver)[0]


def is_loopback(address: str) -> bool:
    """An IP address (as resolved) in 127.0.0.0/8 or ::1, IPv4-mapped forms included."""
    try:
        ip = ipaddress.ip_address(address.split("%")[0].strip("[]"))
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1 (Python 3.11 says not loopback)
    return ip.is_loopback


def _normal(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address.strip("[]")))
    except ValueError:
        return address


def _query(dsn: str) -> dict[str, str]:
    try:
        return {k: v[-1] for k, v in parse_qs(urlsplit(dsn).query).items()}
    except ValueError:
        return {}


def _host_source(dsn: str) -> str:
    """Where asyncpg takes the host from, for messages: the DSN, ?host=, a service or PGHOST."""
    try:
        netloc = urlsplit(dsn).netloc.rpartition("@")[2]
    except ValueError:
        return "--dsn host"
    query = _query(dsn)
    if netloc or not (query.keys() & {"host", "service"} or os.environ.get("PGHOST")):
        return "--dsn host"
    if "host" in query:
        return "--dsn ?host"
    if "service" in query:
        return f"--dsn service {query['service']!r} host"
    return "PGHOST"


def parse_dsn_scheme(dsn: str) -> None:
    # Not urlsplit: some Pythons (Debian's 3.11.2) refuse a multi-host netloc with an IPv6 host
    # there, and that refusal belongs to the parse that decides the targets, with its message.
    scheme, sep, _ = dsn.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        raise UsageError(
            f"--dsn = {redact_dsn(dsn)!r}: must be a postgresql:// URL "
            "(e.g. postgresql://app@127.0.0.1:5432/app)"
        )


def dsn_password(dsn: str) -> str:
    """The password written in the DSN (userinfo, else ``?password=``), or ``""``."""
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return ""
    return unquote(password) if password else _query(dsn).get("password", "")


def _scrub(text: str, *secrets: str | None) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def redact_dsn(dsn: str) -> str:
    """The DSN with its password (userinfo or ``?password=``) replaced by ``***``."""
    try:
        parts = urlsplit(dsn)
        has_password = parts.password is not None
    except ValueError:
        return "(unparseable DSN)"
    if has_password:
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{parts.username or ''}:***@{host}")
    if "password" in _query(dsn):
        kept = [p for p in parts.query.split("&") if not p.startswith("password=")]
        parts = parts._replace(query="&".join([*kept, "password=***"]))
    return urlunsplit(parts)


def with_host_port(dsn: str, host: str, port: int) -> str:
    """The same DSN (user, password, database, options) aimed at ``host:port``."""
    parts = urlsplit(dsn)
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (f"{userinfo}@" if userinfo else "") + f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def check_target(host: str, allowed: list[str], what: str = "--dsn") -> None:
    """Refuse a non-loopback host unless the user named it with ``--allow-target``."""
    check_host(host, 5432, allowed, f"{what} host")


def parse_host_port(text: str, option: str) -> Target:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UsageError(f"{option} = {text!r}: expected HOST:PORT, e.g. 127.0.0.1:6432")
    return Target(host.strip("[]"), int(port))
