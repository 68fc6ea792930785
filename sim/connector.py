"""The connector's state and rules (docs/model.md, "One connection", rules 1, 2 and 4) as one
sans-I/O object: no clock, no I/O, no random draw. The readable engine (``sim/engine.py``) drives
it from its event loop; the connector emulator (``loadtests/emulator.py``) from asyncio. As h11 is
an HTTP state machine that sync and async code drive alike, the rules live here once.

The caller owns time and randomness. It says what happened (a connection asks for a set-up, a
set-up ended, clients gave up, an instance joined) and gets back what follows from the rules: the
connections whose set-up begins now, in the order they begin. After any event it may ask
:meth:`ConnectorState.begin_scale_out` whether a scale-out starts now. Then it draws the set-up
times or the scale-up delay itself and sets its own timers, so draws are made exactly when the rules
call for them, in that order, from the caller's own random source (the engines' common random
numbers, the emulator's generator).

A connection is any hashable object the caller chooses (the engine's connection, the emulator's
future); the object only keeps it in the queue or among the set-ups until it leaves.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable

from sim.scenario import Connector


class ConnectorState:
    """Capacity ``setups_per_instance × instances``, one FIFO queue, one scale-out at a time up to
    ``max_instances``, never a scale-in.

    >>> cx = ConnectorState(Connector(min_instances=1, max_instances=2, setups_per_instance=1))
    >>> cx.request("a"), cx.request("b"), cx.begin_scale_out(), cx.begin_scale_out()
    (['a'], [], True, False)
    >>> cx.instance_joined(), cx.capacity, cx.setup_done("a"), cx.in_setup
    (['b'], 2, [], 1)
    """

    __slots__ = ("_queue", "_setting_up", "instances", "scaling", "spec")

    def __init__(self, spec: Connector) -> None:
        self.spec = spec
        self.instances = spec.min_instances
        self.scaling = False  # a scale-out is pending: its instance has not joined yet
        self._queue: OrderedDict[Hashable, None] = OrderedDict()  # waiting, first in first out
        self._setting_up: set[Hashable] = set()

    @property
    def capacity(self) -> int:
        """Set-ups the connector carries at once."""
        return self.spec.setups_per_instance * self.instances

    @property
    def in_setup(self) -> int:
        return len(self._setting_up)

    @property
    def queued(self) -> int:
        return len(self._queue)

    def request(self, conn: Hashable) -> list:
        """A connection reaches the connector: ``[conn]`` if its set-up begins now (a place is
        free), ``[]`` if it waits in the queue."""
        if conn in self._setting_up or conn in self._queue:
            raise ValueError(f"connection {conn!r} is already at the connector")
        if not self._queue and len(self._setting_up) < self.capacity:
            self._setting_up.add(conn)
            return [conn]
        self._queue[conn] = None
        return []

    def setup_done(self, conn: Hashable) -> list:
        """``conn``'s set-up ended: its place goes to the connections waiting first."""
        try:
            self._setting_up.remove(conn)
        except KeyError:
            raise ValueError(f"connection {conn!r} is not in a set-up") from None
        return self._serve()

    def give_up(self, conns: Iterable[Hashable]) -> list:
        """Clients give these connections up, all at once: each leaves the queue or frees its
        set-up's place, wherever it is (one the connector no longer holds is ignored); then the
        freed places are served, once."""
        for conn in conns:
            if conn in self._queue:
                del self._queue[conn]
            else:
                self._setting_up.discard(conn)
        return self._serve()

    def begin_scale_out(self) -> bool:
        """Start a scale-out if the rule says so now: connections are waiting, none is pending,
        and ``instances < max_instances``. True if one started: the caller draws its delay and
        calls :meth:`instance_joined` after it. Safe to ask after any event."""
        if self._queue and not self.scaling and self.instances < self.spec.max_instances:
            self.scaling = True
            return True
        return False

    def instance_joined(self) -> list:
        """The pending scale-out's instance joins and serves the queue at once."""
        if not self.scaling:
            raise ValueError(f"an instance joined with no scale-out pending ({self.instances})")
        self.instances += 1
        self.scaling = False
        return self._serve()

    def _serve(self) -> list:
        admitted = []
        while self._queue and len(self._setting_up) < self.capacity:
            conn, _ = self._queue.popitem(last=False)
            self._setting_up.add(conn)
            admitted.append(conn)
        return admitted
