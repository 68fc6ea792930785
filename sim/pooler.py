"""``[pooler]``: a connection pooler between the instances and the database (PgBouncer).

With ``kind = "pgbouncer"`` the instances' connections end at PgBouncer, which opens at most
``default_pool_size`` (plus ``reserve_pool_size``) server connections per user and database and
queues the clients beyond them: a refusal (53300) becomes a wait at the pooler, bounded by
``query_wait_timeout``. The settings carry PgBouncer's own names, units (seconds) and published
defaults (docs/sources.md#pgbouncer-settings). Off by default: ``kind = "none"``.

The model's rule (docs/model.md, "A pooler in front of the database") is :class:`PoolerState`:
PgBouncer's client slots, its FIFO of waiting clients and its one pool of server connections,
as a sans-I/O object like :mod:`sim.connector` and :mod:`sim.checkout` (no clock, no I/O, no
random draw): the caller says what happened and when, and gets back what follows. ``startsim
loadtest --via-pgbouncer`` measures the same thing through a real PgBouncer
(:mod:`loadtests.pgbouncer`). What the rule does not cover yet (traffic after ready, warm
instances) is refused (:func:`refuse_unmodelled`) rather than simulated as if there were none.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from sim.distributions import PositiveSeconds, Seconds
from sim.errors import FieldProblem, UsageError
from sim.records import Reason

# PgBouncer's own fields, in the order its documentation gives them (doc/config.md).
PGBOUNCER_SETTINGS = (
    "pool_mode",
    "max_client_conn",
    "default_pool_size",
    "reserve_pool_size",
    "reserve_pool_timeout",
    "max_db_connections",
    "server_connect_timeout",
    "server_login_retry",
    "query_wait_timeout",
)
MAX_POOLER_CONNECTIONS = 262_143  # no PostgreSQL server takes more (MAX_BACKENDS, 2^18 − 1)
UNMODELLED = (
    'pooler.kind = "pgbouncer" with {what}: the model has no pooler rule for it yet; '
    "`startsim loadtest --via-pgbouncer` measures it (docs/loadtests.md#through-a-real-pgbouncer)"
)
# PgBouncer's janitor runs every third of a second (janitor.c, full_maint_period = USEC / 3): it
# is what disconnects a client past query_wait_timeout, so the disconnect comes at its next run.
JANITOR_S = 1.0 / 3.0

PoolSize = Annotated[int, Field(ge=1, le=MAX_POOLER_CONNECTIONS)]


class Pooler(BaseModel):
    """``[pooler]``: none, or PgBouncer with its own settings (docs/scenario.md#pooler)."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, populate_by_name=True, allow_inf_nan=False
    )

    kind: Literal["none", "pgbouncer"] = "none"
    # When a server connection goes back to the pool: at the client's disconnect, at the end of
    # each transaction, or of each statement.
    pool_mode: Literal["session", "transaction", "statement"] = "session"
    max_client_conn: PositiveInt = 100  # clients PgBouncer accepts; beyond, it refuses them
    default_pool_size: PoolSize = 20  # server connections per user/database pair
    reserve_pool_size: Annotated[int, Field(ge=0, le=MAX_POOLER_CONNECTIONS)] = 0  # 0: none
    reserve_pool_timeout: Seconds = 5.0  # a client waiting this long may use the reserve
    max_db_connections: Annotated[int, Field(ge=0, le=MAX_POOLER_CONNECTIONS)] = 0  # 0: no cap
    server_connect_timeout: PositiveSeconds = 15.0  # connect and login to the server
    server_login_retry: Seconds = 15.0  # after a failed server login: wait, refuse new clients
    query_wait_timeout: Seconds = 120.0  # a client's wait for a server; 0: no limit

    @model_validator(mode="after")
    def _only_with_pgbouncer(self) -> Pooler:
        if self.kind == "none":
            for name in PGBOUNCER_SETTINGS:
                if getattr(self, name) != Pooler.model_fields[name].default:
                    raise FieldProblem(
                        f"pooler.{name}",
                        getattr(self, name),
                        'only used with kind = "pgbouncer" (kind is "none"); '
                        'set kind = "pgbouncer" or remove it',
                    )
        return self

    @property
    def on(self) -> bool:
        """Whether the instances connect through a pooler."""
        return self.kind != "none"

    def settings(self) -> dict[str, str | int | float]:
        """PgBouncer's settings by their own names, as a campaign records them."""
        return {name: getattr(self, name) for name in PGBOUNCER_SETTINGS}


def refuse_unmodelled(
    pooler: Pooler, warm_instances: int, traffic_on: bool, direct_egress: bool = False
) -> None:
    """Refuse to simulate what the pooler rule does not cover yet (exit 2, nothing written):
    traffic after ready, warm instances and Direct VPC egress through PgBouncer."""
    if not pooler.on:
        return
    if direct_egress:  # the egress rule leads straight to the database, past the pooler
        raise UsageError(UNMODELLED.format(what='egress.kind = "direct"'))
    if traffic_on:
        raise UsageError(UNMODELLED.format(what="[traffic]"))
    if warm_instances:
        raise UsageError(UNMODELLED.format(what="fleet.warm_instances"))


# -- the rule: PgBouncer's clients and its pool of server connections -----------------------------


@dataclass(frozen=True, slots=True)
class Launch:
    """Open one server connection now: the caller takes a database slot or meets 53300 after
    its ``accept_s``, then calls :meth:`PoolerState.server_up` or ``server_failed``."""


@dataclass(frozen=True, slots=True)
class Grant:
    """``client``'s wait ends: it is logged in (login), or it has a server for its work."""

    client: Hashable


@dataclass(frozen=True, slots=True)
class Refuse:
    """PgBouncer disconnects ``client`` with ``reason``; it is no longer a client."""

    client: Hashable
    reason: str


@dataclass(frozen=True, slots=True)
class Expire:
    """Call :meth:`PoolerState.expire` for ``client`` at ``at_s`` (the janitor's run after its
    query_wait_timeout): it is refused then if it still waits."""

    client: Hashable
    at_s: float


@dataclass(frozen=True, slots=True)
class Wake:
    """Call :meth:`PoolerState.tick` at ``at_s``: the reserve pool or the login retry may let
    a server connection be opened then."""

    at_s: float


WAITS_TO_LOG_IN, WAITS_FOR_SERVER = "login", "work"  # what a waiting client waits for


class PoolerState:
    """One PgBouncer pool (one user and database): client slots, waiting clients first in first
    out, server connections opened one at a time, kept open, idle ones handed to the first waiter.

    >>> pb = PoolerState(Pooler(kind="pgbouncer", default_pool_size=1, query_wait_timeout=0))
    >>> pb.arrive("a", 0.0), pb.arrive("b", 0.0)
    ([Launch()], [])
    >>> pb.server_up(0.01)
    [Grant(client='a'), Grant(client='b')]
    >>> pb.need_server("a", 0.02), pb.need_server("b", 0.02), pb.leave(["a"], 1.0)
    ([Grant(client='a')], [], [Grant(client='b')])
    """

    __slots__ = (
        "_clients",
        "_linked",
        "_retry_wake_s",
        "_waiting",
        "idle",
        "janitor_phase_s",
        "last_launch_s",
        "login_failed",
        "opening",
        "servers",
        "spec",
        "welcome",
    )

    def __init__(self, spec: Pooler, janitor_phase_s: float = 0.0) -> None:
        self.spec = spec
        # The janitor runs at janitor_phase_s + k × JANITOR_S of the caller's clock (k ≥ 0).
        self.janitor_phase_s = janitor_phase_s
        self._clients: set[Hashable] = set()  # client connections (max_client_conn bounds them)
        self.servers = 0  # server connections open or opening
        self.idle = 0  # open server connections no client holds
        self.opening = False  # a server connection is being opened (one at a time)
        self.welcome = False  # a server login has succeeded: clients log in without waiting
        self.login_failed = False  # the last server login failed
        self.last_launch_s = -math.inf
        self._retry_wake_s = -math.inf  # the login retry's end already announced by a Wake
        self._waiting: OrderedDict[Hashable, tuple[str, float]] = OrderedDict()
        self._linked: set[Hashable] = set()  # clients holding a server

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def holds_server(self, client: Hashable) -> bool:
        return client in self._linked

    # -- what the caller reports ---------------------------------------------------------------
    def arrive(self, client: Hashable, now: float) -> list:
        """A client connection reaches PgBouncer: refused over ``max_client_conn``; logged in at
        once once a server login has succeeded, else it waits for one."""
        if client in self._clients:
            raise ValueError(f"client {client!r} is already at the pooler")
        if self.clients >= self.spec.max_client_conn:
            return [Refuse(client, Reason.MAX_CLIENT_CONN)]
        self._clients.add(client)
        if self.welcome:
            return [Grant(client)]
        return self._wait(client, WAITS_TO_LOG_IN, now)

    def need_server(self, client: Hashable, now: float) -> list:
        """A logged-in client sends its work's first query: it needs a server connection."""
        if client in self._linked:
            return [Grant(client)]
        if self.idle:
            return self._link(client)
        if self.login_failed and self.servers == int(self.opening):
            # check_fast_fail: logins have been failing and no server is open: refused at once.
            self._clients.discard(client)
            return [Refuse(client, Reason.SERVER_LOGIN_RETRY), *self._activate(now)]
        return self._wait(client, WAITS_FOR_SERVER, now)

    def work_done(self, client: Hashable, now: float) -> list:
        """The client's work ended: in transaction (or statement) mode its server goes back to the
        pool; in session mode it stays with the client until the client leaves."""
        if self.spec.pool_mode == "session" or client not in self._linked:
            return []
        self._linked.remove(client)
        self.idle += 1
        return self._serve(now)

    def leave(self, clients: Iterable[Hashable], now: float) -> list:
        """These clients disconnect, all at once (one PgBouncer no longer holds is ignored): each
        frees its client slot and, if it holds one, its server; then the waiters are served."""
        for client in clients:
            if client not in self._clients:
                continue
            self._clients.remove(client)
            self._waiting.pop(client, None)
            if client in self._linked:
                self._linked.remove(client)
                self.idle += 1
        return self._serve(now)

    def server_up(self, now: float) -> list:
        """The server connection being opened logged in: every client waiting to log in is
        logged in, and the new server goes to the first client waiting for one."""
        self.opening = False
        self.idle += 1
        self.welcome = True
        self.login_failed = False
        grants = [Grant(c) for c, (kind, _) in self._waiting.items() if kind == WAITS_TO_LOG_IN]
        for grant in grants:
            del self._waiting[grant.client]
        return [*grants, *self._serve(now)]

    def server_failed(self, now: float, reason: str, kill: bool) -> list:
        """The server connection being opened failed. With the server's own error (``kill``:
        53300) and no server open, every waiting client is refused with it (kill_pool_logins).
        No new server connection before ``server_login_retry`` from this one's launch."""
        self.opening = False
        self.servers -= 1
        self.login_failed = True
        out: list = []
        if kill and (self.servers == 0 or not self.welcome):
            out = [Refuse(c, reason) for c in self._waiting]
            self._clients.difference_update(self._waiting)
            self._waiting.clear()
        return [*out, *self._activate(now)]

    def expire(self, client: Hashable, now: float) -> list:
        """The janitor's run at ``now``: ``client`` is refused if it still waits and has waited
        longer than ``query_wait_timeout``."""
        entry = self._waiting.get(client)
        if entry is None or now - entry[1] <= self.spec.query_wait_timeout:
            return []
        del self._waiting[client]
        self._clients.remove(client)
        return [Refuse(client, Reason.QUERY_WAIT_TIMEOUT)]

    def janitor_after(self, t: float) -> float:
        """The janitor's first run strictly after ``t``."""
        phase = self.janitor_phase_s
        return phase + (math.floor((t - phase) / JANITOR_S) + 1) * JANITOR_S

    def tick(self, now: float) -> list:
        """A moment at which a server connection may be opened (reserve pool, login retry)."""
        return self._activate(now)

    # -- the rules -----------------------------------------------------------------------------
    def _wait(self, client: Hashable, kind: str, now: float) -> list:
        self._waiting[client] = (kind, now)
        out: list = []
        qwt = self.spec.query_wait_timeout
        if qwt > 0:
            out.append(Expire(client, self.janitor_after(now + qwt)))
        if self._reserve_on():
            out.append(Wake(now + self.spec.reserve_pool_timeout))
        return [*out, *self._activate(now)]

    def _link(self, client: Hashable) -> list:
        self.idle -= 1
        self._linked.add(client)
        return [Grant(client)]

    def _serve(self, now: float) -> list:
        """Idle servers go to the clients waiting for one, first in first out; then, if clients
        still wait, a server connection is opened if the rules allow."""
        out: list = []
        while self.idle:
            waiters = (c for c, (kind, _) in self._waiting.items() if kind == WAITS_FOR_SERVER)
            first = next(waiters, None)
            if first is None:
                break
            del self._waiting[first]
            out += self._link(first)
        return [*out, *self._activate(now)]

    def _reserve_on(self) -> bool:
        return self.spec.reserve_pool_size > 0 and self.spec.reserve_pool_timeout > 0

    def _activate(self, now: float) -> list:
        """launch_new_connection: one at a time, not within server_login_retry of a failed
        launch, up to default_pool_size (plus reserve_pool_size once the first waiter has
        waited reserve_pool_timeout) and max_db_connections."""
        if not self._waiting or self.opening or self.idle:
            return []
        spec = self.spec
        retry_at = self.last_launch_s + spec.server_login_retry
        if self.login_failed and now < retry_at:
            if retry_at == self._retry_wake_s:
                return []
            self._retry_wake_s = retry_at
            return [Wake(retry_at)]
        limit = spec.default_pool_size
        if self.servers >= limit and self._reserve_on():
            _, since = next(iter(self._waiting.values()))
            if now - since >= spec.reserve_pool_timeout:
                limit += spec.reserve_pool_size
        if self.servers >= limit:
            return []
        if spec.max_db_connections and self.servers >= spec.max_db_connections:
            return []
        self.opening = True
        self.servers += 1
        self.last_launch_s = now
        return [Launch()]
