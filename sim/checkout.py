"""A ready instance's pool after ready (docs/model.md, "Traffic after ready", rules 3 and 4) as
one sans-I/O object: no clock, no I/O, no random draw, like :mod:`sim.connector`. The readable
engine (``sim/engine.py``) drives it from its event loop; an emulator may drive it from asyncio.

The caller owns time, randomness and the connections themselves. It says what happened (a
request wants a connection, a connection was established or failed, a request gave one back, a
queued request's ``pool.timeout_s`` passed, the filler's pause ended) and gets back what follows
from the rules, in order:

- :class:`OpenConnection`: open one connection (connector, path, database) for ``owner``: the
  request that waits for its own (``per_waiter``) or :data:`FILLER` (``background``);
- :class:`HandOver`: request ``request`` gets connection ``conn`` now (its checkout);
- :class:`FillerPause`: the filler's connection failed; call :meth:`PoolState.resume` after
  ``delay_s``.

A connection and a request are any hashable objects the caller chooses. The pool counts the
connections it holds or is opening (``total``); it keeps the idle ones (first in, first out) and
the queued requests (first in, first out) by identity.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Hashable, Iterable
from dataclasses import dataclass

from sim.scenario import Pool
from sim.traffic import ADDER_BACKOFF_FIRST_S, ADDER_BACKOFF_MAX_S


class Filler:
    """The ``background`` pool's one filler (HikariCP's ``PoolEntryCreator``), as the owner of
    the connection it opens."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "FILLER"


FILLER = Filler()


@dataclass(frozen=True, slots=True)
class OpenConnection:
    """Open one connection for ``owner``: a request waiting for its own, or :data:`FILLER`."""

    owner: Hashable


@dataclass(frozen=True, slots=True)
class HandOver:
    """``request`` checks ``conn`` out now."""

    conn: Hashable
    request: Hashable


@dataclass(frozen=True, slots=True)
class FillerPause:
    """The filler pauses ``delay_s``, then the caller calls :meth:`PoolState.resume`."""

    delay_s: float


class PoolState:
    """One ready instance's pool: idle connections, queued requests, connections opening, and
    the growth rule ``pool.growth`` up to ``pool.max_size``.

    ``idle``: the connections it holds when it becomes ready (idle longest first); ``opening``:
    how many it is still opening then, which nobody owns (:meth:`established` with owner None).

    >>> spec = Pool(min_size=1, max_size=2, held_when_ready=1, growth="per_waiter")
    >>> p = PoolState(spec, idle=["c1"])
    >>> p.checkout("r1"), p.checkout("r2"), p.checkout("r3"), p.total
    ([HandOver(conn='c1', request='r1')], [OpenConnection(owner='r2')], [], 2)
    >>> p.release("c1"), p.established("c2", "r2"), p.queued
    ([HandOver(conn='c1', request='r3')], [HandOver(conn='c2', request='r2')], 0)
    """

    __slots__ = ("_backoff_s", "_filling", "_idle", "_queue", "busy", "opening", "spec")

    def __init__(self, spec: Pool, idle: Iterable[Hashable] = (), opening: int = 0) -> None:
        self.spec = spec
        self._idle: deque[Hashable] = deque(idle)
        self._queue: OrderedDict[Hashable, None] = OrderedDict()  # waiting, first in first out
        self.opening = opening  # connections being opened, whoever they are for
        self.busy = 0  # connections checked out
        self._filling = False  # the filler has a connection opening, or pauses after a failure
        self._backoff_s = ADDER_BACKOFF_FIRST_S

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def total(self) -> int:
        """Connections held (idle or checked out) or opening."""
        return len(self._idle) + self.busy + self.opening

    @property
    def waiting(self) -> list:
        """The queued requests, first in first out."""
        return list(self._queue)

    def checkout(self, request: Hashable) -> list:
        """A request wants a connection: the one idle longest, else by ``pool.growth``."""
        if request in self._queue:
            raise ValueError(f"request {request!r} is already queued")
        if self._idle:
            self.busy += 1
            return [HandOver(self._idle.popleft(), request)]
        if self.spec.growth == "per_waiter":
            if self.total < self.spec.max_size:
                self.opening += 1
                return [OpenConnection(request)]  # SQLAlchemy's overflow: its own connection
            self._queue[request] = None
            return []
        self._queue[request] = None
        return self._fill()

    def established(self, conn: Hashable, owner: Hashable | None) -> list:
        """A connection opening for ``owner`` (a request, :data:`FILLER`, or None: one the pool
        had when it became ready) is established: its request takes it; else the first queued
        request, else it is idle. The filler then looks again, its pause reset."""
        self._opened()
        if owner is not None and owner is not FILLER:
            self.busy += 1
            return [HandOver(conn, owner)]
        actions = self._give(conn)
        if owner is FILLER:
            self._filling = False
            self._backoff_s = ADDER_BACKOFF_FIRST_S
            actions += self._fill()
        return actions

    def failed(self, owner: Hashable | None) -> list:
        """A connection opening for ``owner`` failed (53300, a connect timeout, a path fault).
        The caller fails a request that waited for its own; the filler pauses, 10 ms doubling
        at each failure in a row to 5 s (HikariCP's ``PoolEntryCreator``)."""
        self._opened()
        if owner is not FILLER:
            return []
        pause_s = self._backoff_s
        self._backoff_s = min(2 * pause_s, ADDER_BACKOFF_MAX_S)
        return [FillerPause(pause_s)]

    def resume(self) -> list:
        """The filler's pause is over: it looks again."""
        if not self._filling:
            raise ValueError("the filler resumed without a pause")
        self._filling = False
        return self._fill()

    def release(self, conn: Hashable) -> list:
        """A request gives ``conn`` back: to the first queued request, else idle (a request
        waiting for its own connection is not queued, so never gets it)."""
        if self.busy == 0:
            raise ValueError(f"connection {conn!r} given back with none checked out")
        self.busy -= 1
        return self._give(conn)

    def timeout(self, request: Hashable) -> bool:
        """``request``'s ``pool.timeout_s`` passed: True if it was still queued (it fails now and
        leaves the queue), False if it had its connection or was never queued."""
        if request in self._queue:
            del self._queue[request]
            return True
        return False

    def _opened(self) -> None:
        if self.opening == 0:
            raise ValueError("no connection is opening")
        self.opening -= 1

    def _give(self, conn: Hashable) -> list:
        if self._queue:
            request, _ = self._queue.popitem(last=False)
            self.busy += 1
            return [HandOver(conn, request)]
        self._idle.append(conn)
        return []

    def _fill(self) -> list:
        """HikariCP's ``shouldContinueCreating``: one connection at a time while total <
        max_size and (a request is queued or fewer than held_when_ready are idle)."""
        spec = self.spec
        if self._filling or self.total >= spec.max_size:
            return []
        if not self._queue and len(self._idle) >= spec.held_when_ready:
            return []
        self._filling = True
        self.opening += 1
        return [OpenConnection(FILLER)]
