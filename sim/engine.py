"""The discrete-event engine: one replication of a fleet cold-starting through a connector into a
connection-limited PostgreSQL, with pool starts, retries and restart loops.

``run_replication(scenario, seed)`` returns a :class:`Replication`: flat per-attempt records and the
fleet's figures. The semantics are written out in ``docs/model.md``; this module follows it line by
line. The kernel is a heap of ``(time, seq, handler, args)`` entries: each handler is a short method
that changes the state and schedules what follows. Nothing here touches files, network or terminal.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from heapq import heappop, heappush

import numpy as np

from sim import phases, streams
from sim.breaker import BreakerState, due_again
from sim.checkout import PoolState
from sim.connector import ConnectorState
from sim.engine_pooler import PoolerHandlers
from sim.engine_state import (
    ACCEPT,
    FAULTED,
    GONE,
    HELD,
    LOGIN,
    PATH_REASONS,
    QUEUED,
    SETUP,
    WINDOW_S,
    Conn,
    Container,
    SimRequest,
)
from sim.engine_traffic import TrafficHandlers
from sim.pooler import JANITOR_S, PoolerState
from sim.records import ATTEMPT_COLUMNS, REQUEST_COLUMNS, Outcome, Reason
from sim.rollout import Moves
from sim.scenario import Scenario, jittered_s


@dataclass
class Replication:
    """What one replication produced: per-attempt columns and fleet-level figures."""

    attempts: dict[str, list] = field(default_factory=lambda: {k: [] for k in ATTEMPT_COLUMNS})
    fleet_ready_s: float = math.inf  # when the last instance became ready; inf if one never did
    peak_db_connections: int = 0
    connector_instances_end: int = 0
    connection_attempts: int = 0  # connections opened by database init, all attempts
    instances_ready: int = 0
    # Connections the database refused with 53300 (PgBouncer's server logins included), every
    # one: with a pool that retries, a refusal need not end its attempt as rejected.
    refused_connections: int = 0
    timeline: dict[str, list] | None = None
    # Importance sampling (sim.rare): whether this replication ran the tilted component, how
    # many draws the tilt applied to, and the sum of their uniforms.
    tilted: bool = False
    tilt_draws: int = 0
    tilt_sum: float = 0.0
    # Traffic after ready (docs/model.md): one row per request (REQUEST_COLUMNS; empty without
    # traffic), the connections traffic opened, and the starting instances' connections held
    # when the run ends.
    requests: dict[str, list] = field(default_factory=lambda: {k: [] for k in REQUEST_COLUMNS})
    traffic_connections: int = 0
    connections_held_end: int = 0


class Engine(PoolerHandlers, TrafficHandlers):
    """State and event handlers of one replication. Use :func:`run_replication`."""

    def __init__(
        self,
        sc: Scenario,
        seed: np.random.SeedSequence | int = 0,
        timeline: bool = False,
        index: int = 0,
        tilt: streams.Tilt | None = None,
    ) -> None:
        self.sc = sc
        # One counter-based stream per role (sim.streams, the fast engine's too), so that changing
        # one parameter (a timeout, a pool size) leaves the other roles' draws where they were:
        # common random numbers. A role draws only when its step happens (a jitter or the Cloud
        # SQL path switched off draws nothing).
        key = replication_key(seed, index)
        on = tilt is not None and streams.unit(streams.stream_state(key, MIXTURE), 0) < tilt.mix
        draws = [
            streams.Stream(
                spec,
                streams.stream_state(key, role),
                (tilt.theta, tilt.draws, on) if tilt and streams.ROLES[role] == tilt.role else None,
            )
            for role, spec in enumerate(streams.role_params(sc))
        ]
        (
            self.draw_arrival,
            self.draw_before,
            self.draw_setup,
            self.draw_accept,
            self.draw_queries,
            self.draw_after,
            self.draw_scale,
            self.draw_restart_u,
            self.draw_retry_u,
            self.draw_api,
            _,  # the mixture's: drawn above
            self.draw_path_fault,
            self.draw_path_delay,
            self.draw_phase,
            self.draw_traffic_gap,
            self.draw_traffic_pick,
            self.draw_traffic_query,
            self.draw_janitor,
            self.draw_egress,
            self.draw_breaker_u,
        ) = draws
        self.tilted = on
        self.tilted_stream = draws[streams.ROLES.index(tilt.role)] if tilt else None
        self.api_used: dict[int, int] = {}  # Admin API requests accepted, per quota window
        self.now = 0.0
        # The run ends one deadline after the horizon: every attempt's outcome is decided by then
        # (no database init begins after the horizon); later events (stragglers, slot releases)
        # would only be work, so they are never processed.
        self.end_s = sc.horizon_s + sc.startup.db_init_timeout_s
        self._heap: list = []
        self._seq = itertools.count()
        self.connector = ConnectorState(sc.connector)  # its rules; the timers are the engine's
        # PgBouncer between the connector and the database (docs/model.md, "A pooler in front of
        # the database"): its rules (sim.pooler); the connection whose work waits for a server,
        # by the pool generation that asked, and the one each instance's work runs on.
        self.pooler = None
        if sc.pooler.on:  # the janitor's phase is drawn only when its runs matter
            phase_s = JANITOR_S * self.draw_janitor() if sc.pooler.query_wait_timeout > 0 else 0.0
            self.pooler = PoolerState(sc.pooler, phase_s)
        self._work: dict[Conn, tuple[int, bool]] = {}  # (generation, for the pool's reset)
        self._busy: dict[Container, Conn] = {}
        # database: the warm instances' connections (docs/model.md, "Entities") hold their slots
        # from t = 0 to the end, and count in the peak; a roll-out's old instances hold theirs
        # from t = 0 until they are let go (docs/model.md, "A roll-out").
        self.rollout = sc.rollout.state(sc.fleet.instances) if sc.rollout.on else None
        self.held_at_start = sc.warm_held + sc.rollout_held
        self.db_free = sc.database.free_slots - self.held_at_start
        # With "hold" and retries, a failed pool start's stragglers may outlive the deadline (the
        # instance retries and becomes ready): their connect timeouts still matter then.
        # So may the connections a "background" pool start opens after its first one.
        self.stragglers_outlive = (
            sc.pool.on_failure == "hold" and sc.pool.retry_backoff_s > 0
        ) or sc.pool.start == "background"
        self.phases = sc.startup.phases
        self.phase_specs = [streams.params(ph.duration_s) for ph in self.phases]
        # Path faults: which connections the path fails, in [from_s, until_s) of the run.
        self.path_on = sc.path.fault != "none"
        self.path_end_s = sc.path.window_end_s()
        self.out = Replication(peak_db_connections=self.held_at_start)
        # Direct VPC egress (docs/model.md): no connector; the subnet's addresses bound the fleet,
        # warm instances first, then the cold starts in index order; the others never start.
        self.direct = sc.egress.direct
        self.addressed = (
            sc.egress.instance_bound - sc.fleet.warm_instances
            if self.direct
            else sc.fleet.instances
        )
        self.instances = [Container(i) for i in range(sc.fleet.instances)]
        # Circuit breakers (docs/model.md): under stay_up and shared a failed try leaves the
        # process up; each instance asks its own breaker, or all of them the fleet's one.
        # in_process changes nothing (its breaker never reaches fail_max).
        self.stays_up = sc.breaker.stays_up
        if self.stays_up:
            fleet_breaker = BreakerState(sc.breaker.fail_max, sc.breaker.reset_timeout_s)
            for inst in self.instances:
                inst.breaker = (
                    fleet_breaker
                    if sc.breaker.shared
                    else BreakerState(sc.breaker.fail_max, sc.breaker.reset_timeout_s)
                )
        # Traffic after ready: the requests in arrival order, the instances in the order they
        # became ready (the routing's candidates after the warm ones).
        self.traffic_on = sc.traffic.on
        self.requests: list[SimRequest] = []
        self.ready_order: list[Container] = []
        self.timeline = (
            {"t": [], "db_connections": [], "connector_instances": [], "instances_ready": []}
            if timeline
            else None
        )

    # -- kernel --------------------------------------------------------------------------------
    def at(self, t: float, handler, *args) -> None:
        # The sequence number keeps simultaneous events in the order they were scheduled.
        heappush(self._heap, (t, next(self._seq), handler, args))

    def run(self) -> Replication:
        if self.held_at_start:
            self._sample()  # the warm (or old) instances' connections, held from t = 0
        # A roll-out's controller acts at t = 0, before any arrival; a Kubernetes one creates
        # (starts) the new instances itself, in index order.
        moves = self.rollout.moves() if self.rollout else Moves(0, 0)
        gated = self.sc.rollout.kind == "kubernetes"
        times = [0.0] * moves.start if gated else self.arrival_times()
        for inst, t in zip(self.instances, times, strict=False):
            if inst.idx < self.addressed:  # else no subnet address: it never starts
                self.at(t, self.start_attempt, inst)
        self._let_go(moves.release)
        if self.traffic_on:
            self.start_traffic()
        heap = self._heap
        while heap and heap[0][0] <= self.end_s:
            self.now, _, handler, args = heappop(heap)
            handler(*args)
        return self._finish()

    def arrival_times(self) -> list[float]:
        """When each instance starts (docs/model.md, "Randomness"): uniform arrivals are one draw
        over the window per instance, sorted; Poisson ones add up exponential gaps; bursts and
        waves draw nothing."""
        fleet = self.sc.fleet
        if fleet.arrival == "uniform":
            return sorted(self.draw_arrival() for _ in range(fleet.instances))
        if fleet.arrival == "poisson":
            return list(itertools.accumulate(self.draw_arrival() for _ in range(fleet.instances)))
        return [0.0] * fleet.instances if fleet.arrival == "burst" else fleet.arrival_times(None)

    def _finish(self) -> Replication:
        out = self.out
        out.connector_instances_end = self._connector_instances()
        ready = [i.ready_at for i in self.instances]
        out.instances_ready = sum(r <= self.sc.horizon_s for r in ready)
        out.fleet_ready_s = max(ready) if out.instances_ready == len(ready) else math.inf
        out.timeline = self.timeline
        out.connections_held_end = sum(i.held for i in self.instances)
        if self.requests:
            self._request_rows()
        if self.tilted_stream is not None:
            out.tilted = self.tilted
            out.tilt_draws = self.tilted_stream.tilted_draws
            out.tilt_sum = self.tilted_stream.uniform_sum
        return out

    def _sample(self) -> None:
        if self.timeline is not None:
            tl = self.timeline
            tl["t"].append(self.now)
            tl["db_connections"].append(self.sc.database.free_slots - self.db_free)
            tl["connector_instances"].append(self._connector_instances())
            tl["instances_ready"].append(sum(i.ready_at <= self.now for i in self.instances))

    def _connector_instances(self) -> int:
        return 0 if self.direct else self.connector.instances

    # -- a container's life --------------------------------------------------------------------
    def start_attempt(self, inst: Container) -> None:
        if self.now >= self.sc.horizon_s:
            return  # no new start after the horizon: that instance counts as never ready
        inst.attempt += 1
        inst.attempt_start = self.now
        # One draw per attempt, when it starts; a process that stays up keeps its egress.
        if self.direct and (inst.attempt == 1 or not self.stays_up):
            inst.egress_at = self.now + self.draw_egress()
        inst.conn_attempts = inst.pool_starts = 0
        if self.stays_up:  # a try: the first after before_db_s, the next ones at once
            if inst.attempt == 1:
                self.at(self.now + self.draw_before(), self.try_due, inst)
            else:
                self.try_due(inst)
            return
        after = self.begin_phases if self.phases else self.begin_db_init
        self.at(self.now + self.draw_before(), after, inst)

    def try_due(self, inst: Container) -> None:
        """Stay-up (docs/model.md, "Circuit breakers"): a try is due; it begins if the breaker
        admits it, else it is due again when the wait for the open breaker ends."""
        if self.now > self.sc.horizon_s:
            return  # like a database init after the horizon: no record
        b = self.sc.breaker
        again = due_again(inst.breaker, self.now, b.open_jitter, self.draw_breaker_u)
        if again is not None:
            self.at(again, self.try_due, inst)
        elif self.phases:
            self.begin_phases(inst)
        else:
            self.begin_db_init(inst)

    def begin_db_init(self, inst: Container) -> None:
        if self.now > self.sc.horizon_s:
            # like a start after the horizon: never ready, and no record
            if self.phases:  # what the phases before it opened is given up
                inst.in_init = False
                inst.pool += 1
                self._cancel_all(list(inst.conns))
            return
        inst.in_init = True
        inst.db_started = True
        inst.init_start = self.now
        inst.deadline_at = inst.bound = self.now + self.sc.startup.db_init_timeout_s
        self.at(inst.deadline_at, self.deadline, inst, inst.attempt)
        if self.phases:
            self._enter_phase(inst)
        if self.sc.cloudsql.enabled:
            inst.refreshes = 0
            self.refresh(inst, inst.attempt, inst.phase_run)
        else:
            self._begin_init_work(inst)

    def _begin_init_work(self, inst: Container) -> None:
        """Database init's first connections: the pool start, or the current phase's."""
        if self.phases:
            self._phase_work(inst)
        else:
            self.start_pool(inst)

    # -- start-up phases (docs/model.md, "Start-up phases") -------------------------------------
    def begin_phases(self, inst: Container) -> None:
        """After before_db_s: the phases before database init, if any, then database init."""
        if self.now > self.sc.horizon_s:
            return  # still before its database init at the horizon: no record
        inst.phase_i = -1
        inst.db_started = False
        inst.deadline_at = math.inf
        self.next_phase(inst)

    def next_phase(self, inst: Container) -> None:
        inst.phase_i += 1
        if inst.phase_i == len(self.phases):
            self._init_done(inst)
        elif self.phases[inst.phase_i].db_init and not inst.db_started:
            self.begin_db_init(inst)
        else:
            inst.in_init = True
            self._enter_phase(inst)
            self._phase_work(inst)

    def _enter_phase(self, inst: Container) -> None:
        """The current phase begins: its start, its bound, and its own deadline if that comes
        strictly before the bound it is nested in."""
        ph = self.phases[inst.phase_i]
        inst.phase_run += 1
        inst.phase_start = self.now
        if ph.deadline_s is not None and self.now + ph.deadline_s < inst.deadline_at:
            inst.bound = self.now + ph.deadline_s
            self.at(inst.bound, self.phase_deadline, inst, inst.phase_run)
        else:
            inst.bound = inst.deadline_at

    def _phase_work(self, inst: Container) -> None:
        ph = self.phases[inst.phase_i]
        if ph.pool:
            self.start_pool(inst)
            return
        inst.pool += 1  # a new generation: events of earlier phases are stale
        inst.pending = ph.connections
        if ph.connections == 0:
            self.run_queries(inst)
            return
        first = ph.connections if ph.order == "concurrent" else 1
        inst.to_open = ph.connections - first
        for _ in range(first):
            self.open_conn(inst, inst.pool)

    def phase_conn_ready(self, inst: Container) -> None:
        inst.pending -= 1
        if inst.to_open:  # sequential: the next one
            inst.to_open -= 1
            self.open_conn(inst, inst.pool)
        if inst.pending == 0:
            self.run_queries(inst)

    def phase_conn_failed(self, inst: Container, reason: str) -> None:
        ph = self.phases[inst.phase_i]
        pause = ph.retry_backoff_s
        if pause > 0:
            if ph.retry_jitter:
                pause = jittered_s(pause, ph.retry_jitter, self.draw_retry_u())
            if self.now + pause < inst.bound:
                self.at(self.now + pause, self.phase_retry, inst, inst.pool)
            return  # otherwise the phase waits for its bound
        self.phase_failed(inst, reason)

    def phase_retry(self, inst: Container, pool: int) -> None:
        if pool == inst.pool and inst.in_init:
            self.open_conn(inst, inst.pool)

    def phase_deadline(self, inst: Container, run: int) -> None:
        if run == inst.phase_run and inst.in_init:
            self.phase_failed(inst, Reason.PHASE_DEADLINE)

    def phase_failed(self, inst: Container, reason: str) -> None:
        if self.phases[inst.phase_i].on_failure == "continue":
            inst.pool += 1
            self._cancel_all([c for c in inst.conns if c.run == inst.phase_run])
            self.next_phase(inst)
            return
        outcome = {
            Reason.TOO_MANY_CLIENTS: Outcome.REJECTED,
            Reason.PHASE_DEADLINE: Outcome.TIMEOUT,
        }.get(reason, Outcome.ERROR)
        self.exit(inst, outcome, reason)

    def phase_done(self, inst: Container, pool: int) -> None:
        if pool != inst.pool or not inst.in_init:
            return
        if self.pooler is not None:
            self._work_done(inst)
        inst.pool += 1
        if not self.phases[inst.phase_i].keep:
            self._cancel_all([c for c in inst.conns if c.run == inst.phase_run])
        self.next_phase(inst)

    def phase_duration_s(self, inst: Container) -> float:
        """The current phase's work: the next draw of the phase stream, by its distribution."""
        stream = self.draw_phase
        k = stream.k
        stream.k = k + 1
        return phases.duration_s(self.phase_specs[inst.phase_i], stream.state, k)

    # -- Cloud SQL: Admin API calls before the first connection ---------------------------------
    def refresh(self, inst: Container, attempt: int, run: int) -> None:
        """One refresh: its calls count against the project's per-minute quota; any over it 429."""
        if inst.attempt != attempt or not inst.in_init or inst.phase_run != run:
            return
        cs = self.sc.cloudsql
        inst.refreshes += 1
        window = math.floor(self.now / WINDOW_S)
        used = self.api_used.get(window, 0)
        accepted = min(cs.calls_per_refresh, cs.quota_per_minute - used)
        self.api_used[window] = used + accepted
        ok = accepted == cs.calls_per_refresh
        self.at(self.now + self.draw_api(), self.refresh_done, inst, attempt, run, ok)

    def refresh_done(self, inst: Container, attempt: int, run: int, ok: bool) -> None:
        if inst.attempt != attempt or not inst.in_init or inst.phase_run != run:
            return
        if ok:
            self._begin_init_work(inst)
            return
        # The connector's limiter: a bucket of refresh_burst refilled one per refresh_interval_s
        # from the attempt's start, so refresh k starts no earlier than (k − burst) intervals in.
        cs = self.sc.cloudsql
        not_before = (
            inst.init_start + (inst.refreshes + 1 - cs.refresh_burst) * cs.refresh_interval_s
        )
        self.at(max(self.now, not_before), self.refresh, inst, attempt, run)

    # -- database init: pool starts -------------------------------------------------------------
    def start_pool(self, inst: Container) -> None:
        """Open ``min_size`` connections the way ``pool.start`` says (docs/model.md)."""
        inst.pool += 1
        inst.pool_starts += 1
        pool = self.sc.pool
        size = pool.min_size
        if size == 0:
            self.run_queries(inst)
            return
        # asyncpg and background: the first alone; concurrent: all; workers: a few at a time.
        first = {"asyncpg": 1, "background": 1, "concurrent": size}.get(pool.start)
        first = min(pool.workers, size) if first is None else first
        inst.pending = 1 if pool.start == "background" else size
        inst.to_open = size - first if pool.start == "workers" else 0
        for _ in range(first):
            self.open_conn(inst, inst.pool)

    def pool_conn_ready(self, inst: Container, conn: Conn) -> None:
        if not conn.awaited or conn.pool != inst.pool or not inst.in_init:
            return  # a straggler ("hold"), a background connection: it simply stays held
        if self.phases and not self.phases[inst.phase_i].pool:
            self.phase_conn_ready(inst)
            return
        inst.pending -= 1
        start, size = self.sc.pool.start, self.sc.pool.min_size
        if start == "asyncpg" and inst.pending == size - 1:
            for _ in range(inst.pending):
                self.open_conn(inst, inst.pool)
        elif start == "workers" and inst.to_open:
            inst.to_open -= 1
            self.open_conn(inst, inst.pool)
        if inst.pending == 0:
            self.run_queries(inst)
            if start == "background":  # init goes on; nobody waits for these
                for _ in range(size - 1):
                    self.open_conn(inst, inst.pool, awaited=False)

    def run_queries(self, inst: Container) -> None:
        if self.pooler is not None:  # through PgBouncer the work first needs a server
            first = next((c for c in inst.conns if c.pool == inst.pool and c.state == HELD), None)
            if first is not None:
                self._work[first] = (inst.pool, False)
                self._pooler_do(self.pooler.need_server(first, self.now))
                return
        self._begin_work(inst)

    def _begin_work(self, inst: Container, conn: Conn | None = None) -> None:
        """The init queries (or the phase's work) begin, on ``conn`` through a pooler."""
        if self.pooler is not None:
            self._busy.pop(inst, None)
            if conn is not None:
                self._busy[inst] = conn
        if self.phases:  # the phase's own work instead of init_queries_s
            self.at(self.now + self.phase_duration_s(inst), self.phase_done, inst, inst.pool)
            return
        self.at(self.now + self.draw_queries(), self.db_init_done, inst, inst.pool)

    def db_init_done(self, inst: Container, pool: int) -> None:
        if pool != inst.pool or not inst.in_init:
            return
        if self.pooler is not None:
            conn = self._work_done(inst)
            if conn is not None and self.sc.pooler.pool_mode != "session":
                # The connection's return to its pool (asyncpg's reset, SQLAlchemy's rollback)
                # is a transaction of its own: it asks for a server again; init is done then.
                self._work[conn] = (inst.pool, True)
                self._pooler_do(self.pooler.need_server(conn, self.now))
                return
        self._init_done(inst)

    def _init_done(self, inst: Container) -> None:
        inst.in_init = False
        if inst.breaker is not None:
            inst.breaker.succeeded()
        # The after-db draw is taken first, for the record's ready time: each role draws from its
        # own stream, so the values drawn are the same whatever the order.
        ready_s = self.now + self.draw_after()
        self._record(inst, Outcome.READY, "", ready_s)
        self._settle_ready_pool(inst)
        self.at(ready_s, self.became_ready, inst)

    def _settle_ready_pool(self, inst: Container) -> None:
        """A ready instance keeps its pool's first ``held_when_ready`` connections, held or still
        opening in the background; it gives up the rest at once and opens the missing ones."""
        want = self.sc.pool.held_when_ready
        if self.phases:  # every connection the phases kept, in the order they were opened
            pool_conns = list(inst.conns)
        else:
            pool_conns = [c for c in inst.conns if c.pool == inst.pool]
        self._cancel_all(pool_conns[want:])
        inst.pool += 1  # later connections belong to no pool start
        kept = pool_conns[:want]
        for _ in range(want - len(pool_conns)):
            kept.append(self.open_conn(inst, inst.pool, counted=False, awaited=False))
        if self.traffic_on:  # its pool after ready: these connections, held or opening
            for conn in kept:
                conn.after = True
            inst.pool_state = PoolState(
                self.sc.pool,
                idle=[c for c in kept if c.state == HELD],
                opening=sum(c.state != HELD for c in kept),
            )

    def became_ready(self, inst: Container) -> None:
        inst.ready_at = self.now
        self._sample()
        if self.traffic_on:
            self.ready_order.append(inst)
            if self.sc.traffic.rate_per_instance_per_s > 0:
                self._next_arrival(self.instance_arrival, inst)
        if self.rollout is not None:  # an instance becomes ready once: its first time
            self._rollout_acts(self.rollout.became_ready())

    # -- a roll-out (docs/model.md, "A roll-out: old instances replaced by new ones") ----------
    def _rollout_acts(self, moves: Moves) -> None:
        """Let old instances go, and (Kubernetes) start the new ones created, in index order."""
        self._let_go(moves.release)
        if self.sc.rollout.kind == "kubernetes":
            created = self.rollout.created
            for inst in self.instances[created - moves.start : created]:
                if inst.idx < self.addressed:
                    self.start_attempt(inst)

    def _let_go(self, old: int) -> None:
        """``old`` old instances let go: their slots free ``old_linger_s`` later."""
        slots = old * self.sc.pool.held_when_ready
        if not slots:
            return
        linger_s = self.sc.rollout.old_linger_s
        if linger_s > 0:
            self.at(self.now + linger_s, self._free_slots, slots)
        else:
            self._free_slots(slots)

    def _free_slots(self, slots: int) -> None:
        self.db_free += slots
        self._sample()

    def pool_failed(self, inst: Container, reason: str) -> None:
        if self.phases and not self.phases[inst.phase_i].pool:
            self.phase_conn_failed(inst, reason)
            return
        inst.pool += 1  # events of the failed pool start are now stale
        if self.sc.pool.on_failure == "close":  # this phase's (every one without phases)
            self._cancel_all([c for c in inst.conns if c.run == inst.phase_run])
        pool = self.sc.pool
        backoff = pool.retry_backoff_s
        if backoff > 0:
            if pool.retry_jitter:
                backoff = jittered_s(backoff, pool.retry_jitter, self.draw_retry_u())
            if self.now + backoff < inst.bound:
                self.at(self.now + backoff, self.retry, inst, inst.attempt, inst.phase_run)
            return  # otherwise the deadline (the phase's bound) ends it while it waits
        if self.phases:
            self.phase_failed(inst, reason)
            return
        outcome = Outcome.REJECTED if reason == Reason.TOO_MANY_CLIENTS else Outcome.ERROR
        self.exit(inst, outcome, reason)

    def retry(self, inst: Container, attempt: int, run: int) -> None:
        if inst.attempt == attempt and inst.in_init and inst.phase_run == run:
            self.start_pool(inst)

    def deadline(self, inst: Container, attempt: int) -> None:
        if inst.attempt == attempt and inst.in_init:
            self.exit(inst, Outcome.TIMEOUT, Reason.DEADLINE)

    def exit(self, inst: Container, outcome: str, reason: str) -> None:
        """Exit code 3: record, drop every connection, and schedule the restart."""
        inst.in_init = False
        inst.pool += 1
        if inst.db_started or self.now <= self.sc.horizon_s:  # see begin_phases
            self._record(inst, outcome, reason)
        if self.stays_up:  # the process stays up: its pool closed at once, the next try later
            inst.breaker.failed(self.now)
            self._cancel_all(list(inst.conns))
            self.at(self.now + self.sc.breaker.retry_s, self.start_attempt, inst)
            return
        release_s = self.sc.restart.exit_release_s
        if release_s > 0:  # the server notices the dead client late: its slots stay taken a while
            for conn in [c for c in inst.conns if c.state == HELD]:
                self._drop(conn)
                if self.pooler is None:
                    self.at(self.now + release_s, self._free_slot)
                else:  # PgBouncer notices late: its client slot (and server) stay taken
                    self.at(self.now + release_s, self._pooler_leave, conn)
        self._cancel_all(list(inst.conns))
        restart = self.sc.restart
        if inst.attempt <= restart.restarts_allowed:
            pause = restart.backoff_s(inst.attempt)
            if restart.jitter:
                pause = jittered_s(pause, restart.jitter, self.draw_restart_u())
            self.at(self.now + pause, self.start_attempt, inst)

    def _record(
        self, inst: Container, outcome: str, reason: str, ready_s: float = math.nan
    ) -> None:
        cols = self.out.attempts
        init_start = inst.init_start if inst.db_started else self.now  # it never began
        phase, phase_start = "", init_start
        if self.phases and outcome != Outcome.READY:
            phase, phase_start = self.phases[inst.phase_i].name, inst.phase_start
        for key, value in (
            ("instance", inst.idx),
            ("attempt", inst.attempt),
            ("start_s", inst.attempt_start),
            ("db_init_start_s", init_start),
            ("db_init_s", self.now - init_start),
            ("outcome", outcome),
            ("reason", reason),
            ("connections_held", inst.held),
            ("connection_attempts", inst.conn_attempts),
            ("pool_starts", inst.pool_starts),
            ("ready_s", ready_s),
            ("phase", phase),
            ("phase_start_s", phase_start),
        ):
            cols[key].append(value)
        self.out.connection_attempts += inst.conn_attempts

    # -- one connection: connector, then database --------------------------------------------
    def open_conn(
        self, inst: Container, pool: int, counted: bool = True, awaited: bool = True
    ) -> Conn:
        conn = Conn(inst, pool, awaited)
        inst.conns[conn] = None
        if counted:
            inst.conn_attempts += 1
        timeout_at = self.now + self.sc.pool.connect_timeout_s
        if not (counted and timeout_at >= inst.deadline_at and not self.stragglers_outlive):
            # A connect timeout at or after the deadline changes nothing: the deadline comes first
            # and abandons the connection. Skipping it saves a quarter of the events.
            self.at(timeout_at, self.conn_timeout, conn)
        if self._path_faults():
            self._fault(conn)
            return conn  # it never reaches the connector nor the database
        if self.direct:
            self.direct_egress(conn)
            return conn
        self._begin_setups(self.connector.request(conn))  # now, or it waits in the queue
        self._maybe_scale()
        return conn

    def _path_faults(self) -> bool:
        """Whether the path fails the connection opened now: one draw, in the window only."""
        path = self.sc.path
        if not self.path_on or not path.from_s <= self.now < self.path_end_s:
            return False
        return self.draw_path_fault() < path.p_fault

    def _fault(self, conn: Conn) -> None:
        """A faulted connection: closed or reset after a fail_after_s draw; hung, never."""
        conn.state = FAULTED
        if self.sc.path.fault in PATH_REASONS:
            self.at(self.now + self.draw_path_delay(), self.path_failed, conn)

    def path_failed(self, conn: Conn) -> None:
        if conn.state != FAULTED:
            return  # given up before the path failed it
        inst = conn.inst
        self._drop(conn)
        if conn.after:
            self.pool_conn_failed(conn, PATH_REASONS[self.sc.path.fault])
        elif conn.awaited and conn.pool == inst.pool and inst.in_init:
            self.pool_failed(inst, PATH_REASONS[self.sc.path.fault])

    def direct_egress(self, conn: Conn) -> None:
        """Direct VPC egress: the connection waits (QUEUED) until its attempt's egress is usable,
        then goes straight to the database."""
        if self.now < conn.inst.egress_at:
            self.at(conn.inst.egress_at, self.direct_egress, conn)
        elif conn.state == QUEUED:  # not given up while it waited
            conn.state = ACCEPT
            self.at(self.now + self.draw_accept(), self.accept_done, conn)

    def _begin_setups(self, conns: list[Conn]) -> None:
        """The connections the connector lets through begin their set-ups, in its order."""
        for conn in conns:
            conn.state = SETUP
            self.at(self.now + self.draw_setup(), self.setup_done, conn)

    def _maybe_scale(self) -> None:
        if self.connector.begin_scale_out():
            self.at(self.now + self.draw_scale(), self.scaled_up)

    def scaled_up(self) -> None:
        self._begin_setups(self.connector.instance_joined())
        self._maybe_scale()
        self._sample()

    def setup_done(self, conn: Conn) -> None:
        if conn.state != SETUP:
            return  # cancelled during set-up; its capacity was returned then
        self._begin_setups(self.connector.setup_done(conn))
        if self.pooler is not None:  # it reaches PgBouncer, not the database
            conn.state = LOGIN
            self._pooler_do(self.pooler.arrive(conn, self.now))
            return
        conn.state = ACCEPT
        self.at(self.now + self.draw_accept(), self.accept_done, conn)

    def accept_done(self, conn: Conn) -> None:
        if conn.state != ACCEPT:
            return
        inst = conn.inst
        if self.db_free == 0:
            self.out.refused_connections += 1
            self._drop(conn)
            if conn.after:
                self.pool_conn_failed(conn, Reason.TOO_MANY_CLIENTS)
            elif conn.awaited and conn.pool == inst.pool and inst.in_init:
                self.pool_failed(inst, Reason.TOO_MANY_CLIENTS)  # SQLSTATE 53300: too many clients
            return
        self.db_free -= 1
        conn.state = HELD
        inst.held += 1
        held = self.sc.database.free_slots - self.db_free
        if held > self.out.peak_db_connections:
            self.out.peak_db_connections = held
        self._sample()
        if conn.after:
            self._apply(inst, inst.pool_state.established(conn, conn.owner))
        else:
            self.pool_conn_ready(inst, conn)

    def conn_timeout(self, conn: Conn) -> None:
        if conn.state in (HELD, GONE):
            return
        inst = conn.inst
        # A faulted connection's timeout: nothing came back from the path before it.
        reason = Reason.HUNG if conn.state == FAULTED else Reason.CONNECT_TIMEOUT
        self.cancel(conn)
        if conn.after:
            self.pool_conn_failed(conn, reason)
        elif conn.awaited and conn.pool == inst.pool and inst.in_init:
            self.pool_failed(inst, reason)

    def cancel(self, conn: Conn) -> None:
        """The client gives the connection up, wherever it is."""
        self._cancel_all([conn])

    def _cancel_all(self, conns: list[Conn]) -> None:
        """Give these connections up at once; places they free at the connector are served after
        all of them left."""
        at_connector = [c for c in conns if c.state in (QUEUED, SETUP)]
        at_pooler = []
        for conn in conns:
            if self.pooler is not None and conn.state in (HELD, LOGIN):
                at_pooler.append(conn)  # a client of PgBouncer: no database slot of its own
                self._drop(conn)
            elif conn.state == HELD:
                self.release(conn)
            else:
                self._drop(conn)
        if at_connector:
            self._begin_setups(self.connector.give_up(at_connector))
        if at_pooler:
            self._pooler_do(self.pooler.leave(at_pooler, self.now))

    def release(self, conn: Conn) -> None:
        self._drop(conn)
        self._free_slot()

    def _free_slot(self) -> None:
        self.db_free += 1
        self._sample()

    def _drop(self, conn: Conn) -> None:
        if conn.state == HELD:
            conn.inst.held -= 1
        conn.state = GONE
        conn.inst.conns.pop(conn, None)


MIXTURE = streams.ROLES.index("mixture")


def replication_key(seed: np.random.SeedSequence | int, index: int = 0) -> int:
    """The key of replication ``index`` of ``seed``. ``SeedSequence(seed, spawn_key=(i,))``, how
    sim.runner names replication ``i``, is replication ``i`` of ``seed``."""
    if isinstance(seed, np.random.SeedSequence):
        if len(seed.spawn_key) > 1 or (seed.spawn_key and index):
            raise ValueError(f"a replication is (seed, index); got spawn key {seed.spawn_key}")
        index = seed.spawn_key[0] if seed.spawn_key else index
        seed = seed.entropy
    return streams.replication_key(streams.seed_base(seed), index)


def run_replication(
    sc: Scenario,
    seed: np.random.SeedSequence | int,
    timeline: bool = False,
    index: int = 0,
    tilt: streams.Tilt | None = None,
) -> Replication:
    """Simulate replication ``index`` of ``seed``. The same seed gives the same records, on any
    machine, and the fast engine's (sim.fast) records for that replication."""
    return Engine(sc, seed, timeline, index, tilt).run()
