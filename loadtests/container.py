"""One container instance's start attempts, for real, in asyncio: the same semantics as the model.

An attempt waits ``before_db_s``, then runs database init under the ``db_init_timeout_s`` deadline:
``asyncpg.create_pool(min_size, max_size, timeout=connect_timeout_s)`` (``pool.start = "asyncpg"``;
the other starts open min_size through an empty pool: ``gather`` of K checkouts, at most W at once,
or one awaited and K − 1 in the background) and the init queries, a retry's pause jittered. A
failed pool start either closes what it opened (``on_failure = "close"``) or keeps it until the
container exits (``"hold"``); a retry follows after ``retry_backoff_s`` if it fits before the
deadline. Past the deadline (or with no retry) the attempt exits; its connections go
``exit_release_s`` later. Once ready, the instance holds ``held_when_ready`` connections until
:meth:`Instance.close`. With ``startup.phases`` the attempt runs its phases instead
(:mod:`loadtests.startup_phases`, docs/model.md "Start-up phases").

Nothing here knows about gevent or Locust: the harness runs it through :mod:`loadtests.bridge`.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from dataclasses import dataclass

import asyncpg
import numpy as np

from loadtests.pgbouncer import pooler_reason
from loadtests.startup_phases import PhasedStart
from loadtests.stayup import admitted
from sim.records import Outcome, Reason
from sim.scenario import Restart, Scenario, jittered_s

APPLICATION_NAME = "startsim-loadtest"
# Failures that are not the start-up path's congestion but a misconfigured target: retrying within
# the deadline cannot help, so the attempt ends at once as outcome "error" with one of these.
SQLSTATE_REASONS = {
    "28000": Reason.AUTH,
    "28P01": Reason.AUTH,
    "3D000": Reason.DATABASE,
    "42501": Reason.AUTH,
}


def failure_reason(exc: BaseException) -> tuple[str, bool]:
    """(reason, fatal) of a failed pool start; fatal ones are the target's, not the load's."""
    sqlstate = getattr(exc, "sqlstate", "") or ""
    pooler = pooler_reason(exc)  # PgBouncer's own refusal (--via-pgbouncer)
    if pooler is not None:
        return pooler, False
    if sqlstate == "53300":
        return Reason.TOO_MANY_CLIENTS, False
    if sqlstate in SQLSTATE_REASONS:
        return SQLSTATE_REASONS[sqlstate], True
    if isinstance(exc, TimeoutError):
        # A path that never answers (a "hung" fault) looks the same from here: the emulator's
        # log tells them apart (docs/loadtests.md#path-faults).
        return Reason.CONNECT_TIMEOUT, False
    if isinstance(exc, ConnectionRefusedError | FileNotFoundError):
        return Reason.REFUSED, True  # nothing listens there (TCP port, or Unix socket path)
    # The path closed the connection before the server's answer (docs/model.md, "Path faults").
    # asyncpg raises ConnectionResetError for an RST, or, once it sent its start-up message,
    # ConnectionDoesNotExistError with the reset as its cause; a FIN gives that error with no
    # cause, or ConnectionError("unexpected connection_lost() call") during SSL negotiation.
    if isinstance(exc, ConnectionResetError) or isinstance(exc.__cause__, ConnectionResetError):
        return Reason.RESET, False
    if isinstance(exc, ConnectionError | asyncpg.ConnectionDoesNotExistError):
        return Reason.CLOSED, False
    return Reason.OTHER, False


class Gauge:
    """Connections this process holds open now, and the most since the last :meth:`take_peak`."""

    def __init__(self) -> None:
        self.open_now = 0
        self.peak = 0

    def opened(self) -> None:
        self.open_now += 1
        self.peak = max(self.peak, self.open_now)

    def closed(self) -> None:
        self.open_now -= 1

    def take_peak(self) -> int:
        peak, self.peak = self.peak, self.open_now
        return peak


class TrackedConnection(asyncpg.Connection):
    """A connection the harness can pin open: a failed pool's ``terminate()`` then leaves it be.

    asyncpg (0.30+) terminates a failed pool's connections; ``on_failure = "hold"`` models pools
    that keep them (docs/sources.md#gang-allocation: measured against PostgreSQL 15), so pinned
    ones stay until the container exits.
    """

    pinned = False
    pooled = False  # opened by a pool start (else by a start-up phase's own connect)
    opened_at = 0.0  # monotonic time it was opened: a ready instance keeps the first ones

    def terminate(self) -> None:
        if not self.pinned:
            super().terminate()

    async def close(self, *, timeout: float | None = None) -> None:
        if not self.pinned:
            await super().close(timeout=timeout)

    async def close_for_real(self) -> None:
        self.pinned = False
        try:
            await asyncio.wait_for(super().close(), 2.0)
        except (Exception, asyncio.CancelledError):
            super().terminate()


@dataclass
class AttemptResult:
    """What one start attempt did; :mod:`loadtests.records` adds the run's identifiers."""

    attempt: int
    start_unix_s: float
    end_unix_s: float = 0.0
    before_db_s: float = 0.0
    db_init_s: float = 0.0
    after_db_s: float = 0.0
    ready_unix_s: float | None = None
    outcome: str = Outcome.ERROR
    reason: str = ""
    error_class: str = ""
    sqlstate: str = ""
    error_message: str = ""
    connection_attempts: int = 0
    connections_opened: int = 0
    connections_held: int = 0
    pool_starts: int = 0
    # Start-up phases (docs/model.md): the phase a failed attempt ended in, and when it began in
    # seconds after start_unix_s; "" and before_db_s (database init's start) for a ready attempt.
    phase: str = ""
    phase_start_s: float = 0.0


class Instance(PhasedStart):
    """One container across its attempts. Call :meth:`attempt`, then :meth:`close` at the end."""

    def __init__(
        self,
        sc: Scenario,
        dsn: str,
        rng: np.random.Generator,
        gauge: Gauge,
        secrets: tuple[str, ...] = (),
        connect: dict | None = None,
    ) -> None:
        self.sc, self.dsn, self.rng, self.gauge, self.secrets = sc, dsn, rng, gauge, secrets
        if connect is None:  # loopback only: the harness always passes checked addresses
            from loadtests.safety import resolve_dsn

            connect = resolve_dsn(dsn, []).connect_kwargs()
        # host=[...], port=[...] (what asyncpg dials, and nothing else), and perhaps password
        self.connect = connect
        self.pool: asyncpg.Pool | None = None
        self.checked_out: list[asyncpg.Connection] = []
        self.conns: set[TrackedConnection] = set()  # every live connection, any pool start
        self.releases: set[asyncio.Task] = set()
        self.background: set[asyncio.Task] = set()  # a "background" start's K − 1 connections
        self.generation = 0  # current pool start; stragglers of older ones compare against it
        self.in_init = False  # connections opened during database init count as its attempts
        self.result: AttemptResult | None = None
        # Traffic after ready (loadtests.traffic): called on the loop the moment the instance is
        # ready, with its ready time on time.monotonic's clock; the pool it starts, closed first
        # by close().
        self.on_ready = None
        self.ready_pool = None
        # A start-up that stays up (breaker.form "stay_up" or "shared", loadtests.stayup): its
        # breaker (the campaign's own for "shared"), when its next try is due, and the horizon,
        # all on time.monotonic's clock; the campaign sets breaker and last_s.
        self.breaker = None
        self.next_due = -math.inf
        self.last_s = math.inf

    def draw(self, dist) -> float:
        return float(dist.sample(self.rng, 1)[0])

    def stays_up(self) -> bool:
        """Whether a failed try leaves it up, its next try its own (a breaker that stays up)."""
        return self.breaker is not None

    async def attempt(self, number: int) -> AttemptResult | None:
        """One start attempt: before-db phase, database init, after-db phase (if ready). With a
        breaker that stays up, attempts after the first are the process's next tries (no
        before-db phase): None when the try would begin after the horizon (no record)."""
        stays = self.breaker is not None
        if stays and number > 1:  # the try is due retry_s after the last one failed
            if self.next_due >= self.last_s:
                return None
            await asyncio.sleep(max(0.0, self.next_due - time.monotonic()))
        res = self.result = AttemptResult(number, time.time())
        if not stays or number == 1:
            await asyncio.sleep(self.draw(self.sc.startup.before_db_s))
        if stays:
            cfg = self.sc.breaker
            if not await admitted(self.breaker, cfg.open_jitter, self.rng.random, self.last_s):
                return None
        if self.sc.startup.phases:
            await self._phased_attempt(res)
        else:
            await self._single_init(res)
        res.connections_held = len(self.conns)
        if res.outcome == Outcome.READY:
            if stays:
                self.breaker.succeeded()  # the try ends ready at database init's end
            if self.sc.startup.phases:
                await self._settle_phased()
            else:
                await self._settle_ready()
            after_start = time.time()
            await asyncio.sleep(self.draw(self.sc.startup.after_db_s))
            res.ready_unix_s, ready_mono = time.time(), time.monotonic()
            res.after_db_s = res.ready_unix_s - after_start
            if self.on_ready is not None:
                self.on_ready(self, ready_mono)
        elif stays:
            self._close_try()
        else:
            self._exit()
        res.end_unix_s = time.time()
        return res

    def _close_try(self) -> None:
        """A failed try of a start-up that stays up: its breaker counts it, the application
        closes its pool (every connection goes now, no exit_release_s; those in flight are
        abandoned), and the next try is due ``retry_s`` later."""
        now = time.monotonic()
        self.breaker.failed(now)
        self.next_due = now + self.sc.breaker.retry_s
        self.generation += 1
        for task in list(self.background):
            task.cancel()
        for con in list(self.conns):
            con.pinned = True
            self._spawn(con.close_for_real())
        if self.pool is not None:
            self.pool.terminate()
        self.pool, self.checked_out = None, []

    async def _single_init(self, res: AttemptResult) -> None:
        """Database init without phases: the pool start under the deadline."""
        init_start = time.time()
        res.before_db_s = res.phase_start_s = init_start - res.start_unix_s
        try:
            self.in_init = True
            async with asyncio.timeout(self.sc.startup.db_init_timeout_s):
                await self._db_init(res)
            res.outcome, res.reason = Outcome.READY, ""
        except TimeoutError:
            res.outcome, res.reason = Outcome.TIMEOUT, Reason.DEADLINE
        except _Exit:
            pass
        finally:
            self.in_init = False
        res.db_init_s = time.time() - init_start

    async def _dial(self) -> TrackedConnection:
        """One connection outside a pool (a start-up phase's), as the pool's are made."""
        return await asyncpg.connect(
            self.dsn,
            **self.connect,
            timeout=self.sc.pool.connect_timeout_s,
            connection_class=TrackedConnection,
            server_settings={"application_name": APPLICATION_NAME},
        )

    def _note_failure(self, res: AttemptResult, exc: BaseException) -> tuple[str, bool]:
        """Record a failed connection; (reason, fatal) as :func:`failure_reason`."""
        res.error_class = type(exc).__name__
        res.sqlstate = getattr(exc, "sqlstate", "") or ""
        res.error_message = self._redact(str(exc))[:200]
        return failure_reason(exc)

    async def _db_init(self, res: AttemptResult) -> None:
        pool_cfg = self.sc.pool
        deadline = time.monotonic() + self.sc.startup.db_init_timeout_s
        while True:
            try:
                await self._start_pool(res)
                queries_s = self.draw(self.sc.startup.init_queries_s)
                await self.pool.execute("select pg_sleep($1)", queries_s)
                return
            except Exception as exc:
                fatal = self._pool_failed(res, exc)
            backoff = pool_cfg.retry_backoff_s
            if fatal:
                res.outcome = Outcome.ERROR  # the target is misconfigured: no retry can help
                raise _Exit
            if backoff <= 0:
                res.outcome = (
                    Outcome.REJECTED if res.reason == Reason.TOO_MANY_CLIENTS else Outcome.ERROR
                )
                raise _Exit
            if pool_cfg.retry_jitter:  # one draw per failed pool start, as the model does
                backoff = jittered_s(backoff, pool_cfg.retry_jitter, float(self.rng.random()))
            # No room for the retry before the deadline: the deadline ends the attempt meanwhile.
            await asyncio.sleep(backoff if time.monotonic() + backoff < deadline else 3600.0)

    async def _start_pool(self, res: AttemptResult) -> None:
        self.generation += 1
        res.pool_starts += 1
        generation = self.generation
        pool_cfg = self.sc.pool

        async def connect(*args, **kwargs):
            res.connection_attempts += self.in_init
            con = await asyncpg.connect(*args, **kwargs)
            con.pooled = True
            self._adopt(con, res)
            if generation != self.generation and pool_cfg.on_failure == "close":
                await con.close_for_real()  # a straggler of a pool start already given up
            return con

        eager = pool_cfg.start == "asyncpg"  # create_pool opens min_size itself; else we do
        self.pool = await asyncpg.create_pool(
            self.dsn,
            **self.connect,
            min_size=pool_cfg.min_size if eager else 0,
            max_size=pool_cfg.max_size,
            timeout=pool_cfg.connect_timeout_s,
            connect=connect,
            connection_class=TrackedConnection,
            server_settings={"application_name": APPLICATION_NAME},
        )
        if not eager:
            await self._open(pool_cfg.start, pool_cfg.min_size, pool_cfg.workers)

    async def _open(self, start: str, k: int, workers: int) -> None:
        """K connections the way ``pool.start`` names (docs/model.md, "Pool-start strategies"):
        ``concurrent`` all at once, ``workers`` at most W at once, ``background`` the first
        awaited and the others left to finish (their failures lose only themselves)."""
        pool = self.pool
        held: list = []  # kept checked out until all K are open: an idle one would be reused

        async def checkout(gate: asyncio.Semaphore | None = None) -> None:
            if gate is None:
                held.append(await pool.acquire())
                return
            async with gate:
                held.append(await pool.acquire())

        async def opened_once() -> None:  # a background connection: opened, then idle
            await pool.release(await pool.acquire())

        if start == "concurrent":
            await asyncio.gather(*(checkout() for _ in range(k)))
        elif start == "workers":
            gate = asyncio.Semaphore(workers)
            await asyncio.gather(*(checkout(gate) for _ in range(k)))
        elif k > 0:  # background
            await checkout()
        for con in held:
            await pool.release(con)
        if start == "background" and k > 0:
            for _ in range(k - 1):
                task = asyncio.get_running_loop().create_task(_quietly(opened_once()))
                self.background.add(task)
                task.add_done_callback(self.background.discard)

    def _adopt(self, con: TrackedConnection, res: AttemptResult) -> None:
        con.pinned = self.sc.pool.on_failure == "hold" and con.pooled
        self._track(con)
        res.connections_opened += 1

    def _track(self, con: TrackedConnection) -> None:
        """Count a live connection, and close it with the instance's at the end."""
        con.opened_at = time.monotonic()
        self.conns.add(con)
        self.gauge.opened()
        # asyncpg passes the pool's proxy while checked out, so bind the connection itself.
        con.add_termination_listener(lambda _ref, con=con: self._on_terminated(con))

    def held_connections(self) -> list:
        """What the ready instance holds (its pool after ready starts with them idle): the
        start-up phases' connections it kept, in the order they were opened, then the pool's
        checked out. (A phased start's connections still opening in the background are left
        out: the pool after ready starts without them.)"""
        plain = sorted((c for c in self.conns if not c.pooled), key=lambda c: c.opened_at)
        return [*plain, *self.checked_out]

    async def dial_traffic(self) -> TrackedConnection:
        """One more connection for the pool after ready, through the start-up's path; not
        database-init work (no attempt counts it)."""
        con = await self._dial()
        self._track(con)
        return con

    def _on_terminated(self, con: TrackedConnection) -> None:
        if con in self.conns:
            self.conns.discard(con)
            self.gauge.closed()

    def _pool_failed(self, res: AttemptResult, exc: Exception) -> bool:
        """Record the failure; True when it is the target's (no retry can help)."""
        self.generation += 1  # stragglers of this pool start are now stale
        res.reason, fatal = self._note_failure(res, exc)
        if self.sc.pool.on_failure == "close":
            for con in [c for c in self.conns if c.pooled]:
                self._spawn(con.close_for_real())
        return fatal

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    async def _settle_ready(self, want: int | None = None) -> None:
        """Keep ``held_when_ready`` (or ``want``) connections checked out; close what init opened
        beyond that."""
        want = self.sc.pool.held_when_ready if want is None else want
        # A background start's connections still opening are waited for (each bounded by the
        # connect timeout), then the ready pool keeps held_when_ready of them like the others.
        await asyncio.gather(*self.background, return_exceptions=True)
        for con in [c for c in self.conns if c.pooled]:
            con.pinned = False
        # asyncpg 0.31+ reopens closed connections up to min_size; the model's ready instance
        # keeps held_when_ready (a lazy pool), so lower that floor (a private attribute).
        self.pool._minsize = min(self.pool._minsize, want)
        idle = self.pool.get_idle_size()
        for _ in range(max(want, idle)):
            self.checked_out.append(await self.pool.acquire())
        extra, self.checked_out = self.checked_out[want:], self.checked_out[:want]
        for con in extra:
            await con.close()
            await self.pool.release(con)

    def _exit(self) -> None:
        """The container exits: every connection goes, ``exit_release_s`` later if set."""
        self.generation += 1
        for task in list(self.background):
            task.cancel()
        delay_s = self.sc.restart.exit_release_s
        for con in list(self.conns):
            con.pinned = True  # the pool goes now; its connections go when released below
            self._spawn(self._release_later(con, delay_s))
        if self.pool is not None:
            self.pool.terminate()  # no min-size upkeep reconnecting for a container that exited
        self.pool, self.checked_out = None, []

    async def _release_later(self, con: TrackedConnection, delay_s: float) -> None:
        if delay_s > 0:
            await asyncio.sleep(delay_s)
        await con.close_for_real()

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self.releases.add(task)
        task.add_done_callback(self.releases.discard)

    async def close(self) -> None:
        """End of the run: close every connection this instance still has, now."""
        if self.ready_pool is not None:  # its waiting requests first (recorded unfinished)
            await self.ready_pool.close()
        self.generation += 1
        for task in [*self.releases, *self.background]:
            task.cancel()
        pool, self.pool = self.pool, None
        for con in list(self.conns):
            con.pinned = False
        if pool is not None:
            for con in self.checked_out:
                await pool.release(con)
            try:
                await asyncio.wait_for(pool.close(), 5.0)
            except (Exception, asyncio.CancelledError):
                pool.terminate()
        await asyncio.gather(*(c.close_for_real() for c in list(self.conns)))
        self.checked_out = []


class WarmFleet:
    """The warm instances (``fleet.warm_instances``, docs/model.md "Entities"): their
    ``warm_instances × held_when_ready`` connections, opened before the first instance starts
    (through the connector emulator when the campaign uses it, as an instance's are) and held
    until :meth:`close` at the end of the campaign. They make no start attempt and leave no
    record; the gauge counts them with the instances' connections.

    They open at most the connector's starting capacity at once (``min_instances ×
    setups_per_instance``): none waits at the connector, so none triggers a scale-out the model
    would not make (the model's warm instances never pass the connector at all)."""

    def __init__(
        self,
        sc: Scenario,
        dsn: str,
        gauge: Gauge,
        connect: dict,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.sc, self.dsn, self.gauge, self.connect, self.secrets = sc, dsn, gauge, connect, secrets
        self.conns: list[asyncpg.Connection] = []
        self.errors: list[str] = []  # each failed connection: its class, SQLSTATE and message

    async def open(self) -> None:
        """Open every warm connection; a failure is kept in ``errors``, the others stay held."""
        cx = self.sc.connector
        gate = asyncio.Semaphore(cx.min_instances * cx.setups_per_instance)

        async def one() -> None:
            async with gate:
                try:
                    con = await asyncpg.connect(
                        self.dsn,
                        **self.connect,
                        timeout=self.sc.pool.connect_timeout_s,
                        server_settings={"application_name": APPLICATION_NAME},
                    )
                except Exception as exc:
                    sqlstate = getattr(exc, "sqlstate", "") or ""
                    message = str(exc)
                    for secret in self.secrets:
                        message = message.replace(secret, "***")
                    self.errors.append(f"{type(exc).__name__} {sqlstate} {message[:200]}".strip())
                    return
            self.conns.append(con)
            self.gauge.opened()

        await asyncio.gather(*(one() for _ in range(self.sc.warm_held)))

    async def close(self) -> None:
        """The end of the campaign: every warm connection closes now."""
        conns, self.conns = self.conns, []

        async def one(con: asyncpg.Connection) -> None:
            try:
                await asyncio.wait_for(con.close(), 2.0)
            except (Exception, asyncio.CancelledError):
                con.terminate()
            self.gauge.closed()

        await asyncio.gather(*(one(c) for c in conns))


async def _quietly(coro) -> None:
    """A background connection: its failure loses only that connection."""
    with contextlib.suppress(Exception):
        await coro


def restart_pause_s(restart: Restart, number: int, rng: np.random.Generator) -> float:
    """The pause before restart ``number`` (1-based), jittered as the model does (docs/model.md,
    "Exit and restart"): one uniform draw per restart, and none without a jitter."""
    pause_s = restart.backoff_s(number)
    if restart.jitter:
        pause_s = jittered_s(pause_s, restart.jitter, float(rng.random()))
    return pause_s


class _Exit(Exception):
    """Database init gave up before the deadline (no retry): the container exits now."""
