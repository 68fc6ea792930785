"""The readable engine's handlers of a pooler in front of the database (docs/model.md, "A pooler in
front of the database"): what PgBouncer's rules (sim.pooler.PoolerState) answer, done in their
order. A mixin of :class:`sim.engine.Engine`, whose state and other handlers it uses."""

from __future__ import annotations

from sim.engine_state import HELD, LOGIN, Conn, Container
from sim.pooler import Expire, Grant, Launch, Refuse, Wake
from sim.records import Reason


class PoolerHandlers:
    """PgBouncer's side of the engine: grants, refusals, server logins and the janitor."""

    def _pooler_do(self, actions: list) -> None:
        """Do what PgBouncer's rules say (sim.pooler), in their order."""
        for action in actions:
            if isinstance(action, Grant):
                self._granted(action.client)
            elif isinstance(action, Refuse):
                self._refused(action.client, action.reason)
            elif isinstance(action, Launch):
                self._launch()
            elif isinstance(action, Expire):
                self.at(action.at_s, self._expire, action.client)
            elif isinstance(action, Wake):
                self.at(action.at_s, self._pooler_tick)

    def _granted(self, conn: Conn) -> None:
        inst = conn.inst
        if conn.state == LOGIN:  # logged in to PgBouncer: established, no slot of its own
            conn.state = HELD
            inst.held += 1
            self.pool_conn_ready(inst, conn)
        elif conn.state == HELD and conn in self._work:  # it has a server
            pool, reset = self._work.pop(conn)
            if pool != inst.pool or not inst.in_init or reset:
                # The reset takes no time; or nobody waits for that work any more: the server
                # goes back at once (transaction mode).
                self._pooler_do(self.pooler.work_done(conn, self.now))
                if reset and pool == inst.pool and inst.in_init:
                    self._init_done(inst)
            else:
                self._begin_work(inst, conn)  # the work begins

    def _refused(self, conn: Conn, reason: str) -> None:
        """PgBouncer disconnected the client: its login fails, or the work waiting on it."""
        inst = conn.inst
        logging_in = conn.state == LOGIN
        work = self._work.pop(conn, (None, False))[0]
        self._drop(conn)
        if logging_in:
            if conn.awaited and conn.pool == inst.pool and inst.in_init:
                self.pool_failed(inst, reason)
        elif work == inst.pool and inst.in_init:
            if self.phases and not self.phases[inst.phase_i].pool:
                self.phase_failed(inst, reason)  # the phase's work failed: no connection retry
            else:
                self.pool_failed(inst, reason)

    def _launch(self) -> None:
        """PgBouncer opens a server connection: ``accept_s`` (fork, authentication), then a
        database slot or 53300; given up at ``server_connect_timeout``."""
        accept_s = self.draw_accept()
        timeout_s = self.sc.pooler.server_connect_timeout
        if accept_s >= timeout_s:
            self.at(self.now + timeout_s, self._server_failed, Reason.CONNECT_TIMEOUT, False)
        else:
            self.at(self.now + accept_s, self._server_login)

    def _server_login(self) -> None:
        if self.db_free == 0:
            self.out.refused_connections += 1
            self._server_failed(Reason.TOO_MANY_CLIENTS, True)
            return
        self.db_free -= 1
        held = self.sc.database.free_slots - self.db_free
        if held > self.out.peak_db_connections:
            self.out.peak_db_connections = held
        self._sample()
        self._pooler_do(self.pooler.server_up(self.now))

    def _server_failed(self, reason: str, kill: bool) -> None:
        self._pooler_do(self.pooler.server_failed(self.now, reason, kill))

    def _work_done(self, inst: Container) -> Conn | None:
        """The work on ``inst``'s connection ended: its server goes back (transaction mode).
        Returns the connection, if still held."""
        conn = self._busy.pop(inst, None)
        if conn is None or conn.state != HELD:
            return None
        self._pooler_do(self.pooler.work_done(conn, self.now))
        return conn

    def _expire(self, conn: Conn) -> None:
        self._pooler_do(self.pooler.expire(conn, self.now))

    def _pooler_tick(self) -> None:
        self._pooler_do(self.pooler.tick(self.now))

    def _pooler_leave(self, conn: Conn) -> None:
        self._pooler_do(self.pooler.leave([conn], self.now))
