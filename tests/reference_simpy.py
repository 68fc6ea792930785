"""A second, independent implementation of ``docs/model.md`` in SimPy, for the tests only.

Written from the document, not from ``sim/engine.py``: every container attempt, database init and
connection is a SimPy process, and giving a connection up is an ``Interrupt`` to its process. It is
slower than the engine and meant to be read next to the document, rule by rule.

It covers what ``tests/test_reference.py`` uses (every ``pool.start`` strategy, restart and retry
jitter, the restart multiplier, the Cloud SQL path, path faults, start-up phases, traffic after
ready with both growth rules, Direct VPC egress, the ``stay_up`` and ``shared`` circuit breakers
and both roll-outs) and leaves out the rest:

- arrivals ``burst`` and ``uniform`` only (not ``poisson`` or ``waves``);
- no timeline, and the attempt records carry only what the comparison needs;
- a breaker with start-up phases (a stay-up try through phases);
- the breaker's and the roll-out's controllers are its own small classes written from the
  document's sentences (:class:`CircuitBreaker`, :class:`RollOut`), not
  ``sim.breaker.BreakerState`` or ``sim.rollout.RolloutState``;
- its random draws come from one generator in its own order, so it agrees with the engine in
  distribution, never draw for draw.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np
import simpy

from sim.scenario import Scenario

# Where a connection is (docs/model.md, "One connection"); FAULTED: the path fails it ("Path
# faults"), it never reaches the connector.
QUEUED, SETUP, ACCEPT, HELD, GONE = "queued", "setup", "accept", "held", "gone"
FAULTED = "faulted"
IN_FLIGHT = (QUEUED, SETUP, ACCEPT, FAULTED)


@dataclass
class Conn:
    """One connection attempt; ``pool`` is the pool start it belongs to (None: opened once ready).
    ``awaited`` is False for a "background" start's connections after its first."""

    pool: int | None
    awaited: bool = True
    tag: int | None = None  # the start-up phase's run that opened it
    stage: str = QUEUED
    grant: simpy.Event | None = None
    proc: simpy.Process | None = None


@dataclass
class Instance:
    idx: int
    attempt: int = 0
    pool: int = 0  # number of the current pool start
    tried: int = 0  # connections database init asked for in this attempt
    conns: list[Conn] = field(default_factory=list)  # in flight or held
    ready_at: float = math.inf
    egress_at: float = 0.0  # Direct VPC egress: when the current attempt's egress is usable


@dataclass
class Result:
    attempts: list[dict]
    fleet_ready_s: float
    instances_ready: int
    peak_db_connections: int
    connector_instances_end: int
    # Traffic after ready: one dict per request (sim.records.REQUEST_COLUMNS), the connections
    # traffic opened, and the starting instances' slots held when the run ends.
    requests: list[dict] = field(default_factory=list)
    traffic_connections: int = 0
    connections_held_end: int = 0


class Connector:
    """``setups_per_instance × instances`` concurrent set-ups, one FIFO queue, scale-outs."""

    def __init__(self, env: simpy.Environment, sc: Scenario, draw) -> None:
        self.env, self.cfg, self.draw = env, sc.connector, draw
        self.instances = sc.connector.min_instances
        self.busy = 0
        self.queue: list[simpy.Event] = []
        self.scaling = False

    def request(self) -> simpy.Event:
        grant = self.env.event()
        self.queue.append(grant)
        self._serve()
        if self.queue and not self.scaling and self.instances < self.cfg.max_instances:
            self.scaling = True
            self.env.process(self._scale_out())
        return grant

    def give_up(self, grant: simpy.Event) -> None:
        """A queued connection leaves the queue; one already granted frees its set-up."""
        if grant in self.queue:
            self.queue.remove(grant)
        else:
            self.release()

    def release(self) -> None:
        self.busy -= 1
        self._serve()

    def _serve(self) -> None:
        while self.queue and self.busy < self.cfg.setups_per_instance * self.instances:
            self.busy += 1
            self.queue.pop(0).succeed()

    def _scale_out(self):
        # One scale-out at a time; it keeps going while connections wait, up to max_instances.
        while True:
            yield self.env.timeout(self.draw(self.cfg.scale_up_delay_s))
            self.instances += 1
            self._serve()
            if not (self.queue and self.instances < self.cfg.max_instances):
                self.scaling = False
                return


class Database:
    def __init__(self, sc: Scenario) -> None:
        db = sc.database
        self.usable = db.max_connections - db.reserved_connections - db.other_connections
        # Warm instances (docs/model.md, "Entities"): running before t = 0, each holding
        # held_when_ready slots for the whole run; they never start, so nothing else of theirs.
        warm = sc.fleet.warm_instances * sc.pool.held_when_ready
        self.free = self.usable - warm
        self.peak = warm

    def take(self) -> bool:
        if self.free == 0:
            return False  # 53300: too many clients
        self.free -= 1
        self.peak = max(self.peak, self.usable - self.free)
        return True

    def give_back(self, slots: int = 1) -> None:
        self.free += slots


class AdminApi:
    """The Cloud SQL Admin API's per-minute quota: requests counted per window [60k, 60k + 60);
    the ones over the quota get a 429 and are not counted."""

    def __init__(self, sc: Scenario) -> None:
        self.quota = sc.cloudsql.quota_per_minute
        self.used: dict[int, int] = {}

    def call(self, now: float, calls: int) -> bool:
        minute = int(now // 60.0)
        granted = min(calls, self.quota - self.used.get(minute, 0))
        self.used[minute] = self.used.get(minute, 0) + granted
        return granted == calls


def jitter(pause_s: float, how: float | str, rng: np.random.Generator) -> float:
    """A fraction f: uniform in [(1 − f)·pause, (1 + f)·pause]; "full": uniform in [0, pause]."""
    if how == "full":
        return float(rng.uniform(0.0, pause_s))
    if how:
        return float(rng.uniform((1 - how) * pause_s, (1 + how) * pause_s))
    return pause_s


class CircuitBreaker:
    """One breaker, from docs/model.md's words: closed (counting failed tries in a row), open
    until ``open_until``, half-open (every try passes; the first to end decides)."""

    def __init__(self, cfg) -> None:
        self.fail_max, self.reset_s = cfg.fail_max, cfg.reset_timeout_s
        self.jitter = cfg.open_jitter
        self.state, self.fails, self.open_until = "closed", 0, -math.inf

    def admits(self, now: float) -> bool:
        if self.state == "open":
            if now < self.open_until:
                return False
            self.state = "half-open"  # the first try due at or after open_until passes
        return True

    def reopens_at(self, u: float) -> float:
        """When a refused try is due again: the open time's end plus its jitter."""
        return self.open_until + self.reset_s * self.jitter * u

    def failed(self, now: float) -> None:
        if self.state == "open":
            return  # a try that ends while the breaker is open changes nothing
        if self.state == "closed":
            self.fails += 1
            if self.fails < self.fail_max:
                return
        self.state, self.open_until = "open", now + self.reset_s

    def ready(self) -> None:
        if self.state != "open":
            self.state, self.fails = "closed", 0


class RollOut:
    """The roll-out's controller, from docs/model.md's words: old instances left, new ones
    created and ready; it acts at t = 0 and after each new instance's first ready, returning
    (new instances to start now, old instances to let go now)."""

    def __init__(self, sc: Scenario) -> None:
        ro = sc.rollout
        self.kind, self.r = ro.kind, sc.fleet.instances
        self.o = self.r if ro.old_instances is None else ro.old_instances
        self.old, self.created, self.ready = self.o, 0, 0
        self.surge = as_pods(ro.max_surge, self.r, up=True)
        self.unavailable = as_pods(ro.max_unavailable, self.r, up=False)
        if self.surge == self.unavailable == 0:  # both rounded to 0 pods gives u = 1
            self.unavailable = 1
        self.steps = [Fraction(step) for step in ro.steps]

    def act(self) -> tuple[int, int]:
        r = self.r
        if self.kind == "kubernetes":
            keep = min(self.old, max(0, r - self.unavailable - self.ready))
            start = max(0, min(r, r + self.surge - keep) - self.created)
        else:  # cloud_run: the new ones start as [fleet] says
            reached = [s for s in self.steps if self.ready >= math.ceil(s * r / 100)]
            share = reached[-1] if reached else Fraction(0)
            keep = min(self.old, math.ceil(self.o * (1 - share / 100)))
            start = 0
        let_go, self.old = self.old - keep, keep
        self.created += start
        return start, let_go


def as_pods(amount: int | str, replicas: int, up: bool) -> int:
    """A number of pods, or "p%" of replicas rounded up (the surge) or down (the unavailable)."""
    if isinstance(amount, int):
        return amount
    share = Fraction(int(amount.rstrip("%")) * replicas, 100)
    return math.ceil(share) if up else math.floor(share)


class Model:
    def __init__(self, sc: Scenario, seed: int) -> None:
        if sc.fleet.arrival not in ("burst", "uniform"):
            raise NotImplementedError(f"arrival {sc.fleet.arrival!r}: not in the reference model")
        self.sc = sc
        self.rng = np.random.default_rng(seed)
        self.env = simpy.Environment()
        self.connector = Connector(self.env, sc, self.draw)
        self.db = Database(sc)
        self.api = AdminApi(sc)
        self.records: list[dict] = []
        self.traffic = Traffic(self) if sc.traffic.on else None
        self.fleet_breaker = CircuitBreaker(sc.breaker)  # the shared form's, one for the fleet
        self.instances: list[Instance] = []
        self.deploy = RollOut(sc) if sc.rollout.kind != "none" else None
        if self.deploy is not None:  # the old revision's instances hold their slots from t = 0
            held = self.deploy.old * sc.pool.held_when_ready
            self.db.free -= held
            self.db.peak += held

    def draw(self, dist) -> float:
        return float(dist.sample(self.rng, 1)[0])

    def run(self) -> Result:
        fleet = self.sc.fleet
        if fleet.arrival == "burst":
            starts = [0.0] * fleet.instances
        else:
            starts = sorted(self.rng.uniform(0.0, fleet.window_s, fleet.instances))
        instances = self.instances = [Instance(i) for i in range(fleet.instances)]
        # Direct VPC egress: the subnet holds instance_bound instances, the warm ones first; the
        # cold starts beyond it, in the order they start, never do.
        egress = self.sc.egress
        addressed = egress.instance_bound - fleet.warm_instances if egress.direct else math.inf
        if self.deploy is not None:
            self.roll()  # at t = 0, before any arrival
        if self.deploy is None or self.deploy.kind == "cloud_run":
            for inst, t in zip(instances, starts, strict=True):
                if inst.idx < addressed:
                    self.env.process(self.life(inst, t))
        if self.traffic is None:
            self.env.run()
        else:  # the run ends one deadline after the horizon ("Order of events")
            self.traffic.start()
            self.env.run(until=self.sc.horizon_s + self.sc.startup.db_init_timeout_s)
        horizon = self.sc.horizon_s
        ready = sum(i.ready_at <= horizon for i in instances)
        result = Result(
            attempts=self.records,
            fleet_ready_s=max(i.ready_at for i in instances)
            if ready == len(instances)
            else math.inf,
            instances_ready=ready,
            peak_db_connections=self.db.peak,
            connector_instances_end=0 if self.sc.egress.direct else self.connector.instances,
        )
        if self.traffic is not None:
            self.traffic.finish(result, instances)
        return result

    def became_ready(self, inst: Instance, kept: list[Conn]) -> None:
        """The instance is ready now; ``kept`` is the pool it settled on (held or opening)."""
        inst.ready_at = self.env.now
        if self.traffic is not None:
            self.traffic.ready(inst, kept)
        if self.deploy is not None:  # an instance becomes ready once: its first time
            self.deploy.ready += 1
            self.roll()

    def roll(self) -> None:
        """The roll-out's controller acts now: old instances let go free their slots
        old_linger_s later; (kubernetes) the next new instances, in index order, start now."""
        start, let_go = self.deploy.act()
        slots = let_go * self.sc.pool.held_when_ready
        linger_s = self.sc.rollout.old_linger_s
        if slots and linger_s > 0:
            self.env.timeout(linger_s).callbacks.append(lambda _: self.db.give_back(slots))
        elif slots:
            self.db.give_back(slots)
        first = self.deploy.created - start
        for inst in self.instances[first : first + start]:
            self.env.process(self.life(inst, 0.0))

    # -- a container: attempts, exits, restarts -----------------------------------------------
    def life(self, inst: Instance, arrival_s: float):
        env, sc = self.env, self.sc
        yield env.timeout(arrival_s)
        if sc.breaker.form in ("stay_up", "shared"):
            yield from self.stay_up_life(inst)
            return
        while env.now < sc.horizon_s:  # no attempt starts at or after the horizon
            inst.attempt += 1
            record = {"instance": inst.idx, "attempt": inst.attempt, "start_s": env.now}
            record["pool_starts"] = inst.tried = 0
            if sc.egress.direct:  # a new instance, a new network interface: its own delay
                inst.egress_at = env.now + self.draw(sc.egress.ready_s)
            yield env.timeout(self.draw(sc.startup.before_db_s))
            if sc.startup.phases:
                done = yield from self.phased_attempt(inst, record)
                if done is None:
                    return  # no record: past the horizon before its database init
                if done:
                    return
                backoff_s = restart_backoff_s(sc, inst.attempt)
                if backoff_s is None:
                    return
                yield env.timeout(jitter(backoff_s, sc.restart.jitter, self.rng))
                continue
            outcome = yield from self.database_init(inst, record)
            if outcome == "ready":
                yield from self.settle_and_ready(inst, record)
                return
            self.exit(inst)
            backoff_s = restart_backoff_s(sc, inst.attempt)
            if backoff_s is None:
                return
            yield env.timeout(jitter(backoff_s, sc.restart.jitter, self.rng))

    def database_init(self, inst: Instance, record: dict):
        """Database init from now, bounded by its deadline; writes the attempt's record and
        returns its outcome."""
        env, sc = self.env, self.sc
        t0 = env.now
        init = env.process(self.db_init(inst, t0 + sc.startup.db_init_timeout_s, record))
        deadline = env.timeout(sc.startup.db_init_timeout_s)
        yield init | deadline
        if init.triggered:
            outcome, reason = init.value
        else:
            init.interrupt()  # database init is cut short wherever it is
            outcome, reason = "timeout", "deadline"
        record.update(outcome=outcome, reason=reason, db_init_start_s=t0, db_init_s=env.now - t0)
        record["connection_attempts"] = inst.tried
        record["ready_s"] = math.nan
        self.records.append(record)
        return outcome

    def settle_and_ready(self, inst: Instance, record: dict):
        """Database init is done: settle on held_when_ready, then after_db_s to ready."""
        kept = self.keep_when_ready(inst)
        yield self.env.timeout(self.draw(self.sc.startup.after_db_s))
        record["ready_s"] = self.env.now
        self.became_ready(inst, kept)

    # -- circuit breakers (docs/model.md, "Circuit breakers"): stay_up and shared --------------
    def stay_up_life(self, inst: Instance):
        """A process that does not exit: tries, each asking its breaker (the instance's own, or
        the fleet's), ``retry_s`` apart after a failure, until one is ready."""
        env, sc = self.env, self.sc
        cfg = sc.breaker
        breaker = self.fleet_breaker if cfg.form == "shared" else CircuitBreaker(cfg)
        if sc.startup.phases:
            raise NotImplementedError("a breaker with start-up phases: not in the reference")
        if sc.egress.direct:  # one process, one network interface: one delay for all its tries
            inst.egress_at = env.now + self.draw(sc.egress.ready_s)
        first = True
        while env.now < sc.horizon_s:  # a try due after the horizon does not begin
            inst.attempt += 1
            record = {"instance": inst.idx, "attempt": inst.attempt, "start_s": env.now}
            record["pool_starts"] = inst.tried = 0
            if first:  # the process's first attempt; later tries find the process up
                yield env.timeout(self.draw(sc.startup.before_db_s))
                first = False
            while not breaker.admits(env.now):  # open: wait, then the try is due again
                u = float(self.rng.uniform()) if cfg.open_jitter else 0.0
                yield env.timeout(breaker.reopens_at(u) - env.now)
            if env.now > sc.horizon_s:
                return  # its database init would begin after the horizon: no record
            outcome = yield from self.database_init(inst, record)
            if outcome == "ready":
                breaker.ready()
                yield from self.settle_and_ready(inst, record)
                return
            # The application closes its pool: held slots free at once, in flight abandoned.
            for conn in list(inst.conns):
                self.abandon(conn)
            inst.conns = []
            breaker.failed(env.now)
            yield env.timeout(cfg.retry_s)

    # -- start-up phases (docs/model.md, "Start-up phases") ----------------------------------
    def phased_attempt(self, inst: Instance, record: dict):
        """One attempt through the phases. Returns True once ready, False after an exit, None
        when it leaves no record."""
        env, sc = self.env, self.sc
        phases = sc.startup.phases
        before = [ph for ph in phases if not ph.db_init]
        inside = [ph for ph in phases if ph.db_init]
        for ph in before:
            start = env.now
            bound = start + ph.deadline_s if ph.deadline_s is not None else math.inf
            failure = yield from self.bounded_phase(inst, ph, bound, math.inf, record)
            if failure is None or ph.on_failure == "continue":
                continue
            self.exit(inst)
            if env.now > sc.horizon_s:
                return None
            record.update(
                outcome=failure_outcome(failure),
                reason=failure,
                db_init_s=0.0,
                connection_attempts=inst.tried,
                phase=ph.name,
            )
            self.records.append(record)
            return False
        if env.now > sc.horizon_s:
            self.exit(inst)
            return None
        t0 = env.now
        deadline_s = t0 + sc.startup.db_init_timeout_s
        where = {"phase": inside[0].name}
        init = env.process(self.phased_init(inst, inside, deadline_s, record, where))
        yield init | env.timeout(sc.startup.db_init_timeout_s)
        if init.triggered:
            outcome, reason = init.value
        else:
            init.interrupt()
            outcome, reason = "timeout", "deadline"
        record.update(outcome=outcome, reason=reason, db_init_s=env.now - t0)
        record["connection_attempts"] = inst.tried
        record["phase"] = "" if outcome == "ready" else where["phase"]
        self.records.append(record)
        if outcome != "ready":
            self.exit(inst)
            return False
        want = sc.pool.held_when_ready
        mine = [c for c in inst.conns if c.stage != GONE]
        for conn in mine[want:]:
            self.abandon(conn)
        kept = mine[:want] + [self.open(inst, None) for _ in range(want - len(mine))]
        inst.pool += 1
        yield env.timeout(self.draw(sc.startup.after_db_s))
        self.became_ready(inst, kept)
        return True

    def phased_init(self, inst, inside, deadline_s, record, where):
        env = self.env
        current = None
        try:
            for i, ph in enumerate(inside):
                where["phase"] = ph.name
                start = env.now
                own = start + ph.deadline_s if ph.deadline_s is not None else math.inf
                bound = min(own, deadline_s)
                current = env.process(
                    self.bounded_phase(inst, ph, bound, deadline_s, record, refresh=i == 0)
                )
                failure = yield current
                if failure is not None and ph.on_failure == "exit":
                    return failure_outcome(failure), failure
            return "ready", ""
        except simpy.Interrupt:
            if current is not None and current.is_alive:
                current.interrupt()
            return "timeout", "deadline"

    def bounded_phase(self, inst, ph, bound, deadline_s, record, refresh=False):
        """One phase within its bound (its own deadline, if before the outer one). Returns None
        or the failure's reason; a failed or closing phase's connections are given up."""
        env = self.env
        inst.pool += 1
        tag = inst.pool
        work = env.process(self.phase_work(inst, ph, bound, tag, record, refresh))
        try:
            if bound < deadline_s:
                yield work | env.timeout(bound - env.now)
                if work.triggered:
                    failure = work.value
                else:
                    work.interrupt()
                    failure = "phase_deadline"
            else:
                failure = yield work
        except simpy.Interrupt:  # the database-init deadline: the caller records it
            if work.is_alive:
                work.interrupt()
            return "interrupted"
        if failure is not None or not ph.keep:
            for conn in [c for c in inst.conns if c.tag == tag]:
                self.abandon(conn)
        return failure

    def phase_work(self, inst, ph, bound, tag, record, refresh):
        env = self.env
        children = []
        try:
            if refresh and self.sc.cloudsql.enabled:
                yield from self.refresh(env.now)
            if ph.pool:
                failure = yield from self.pool_phase(inst, bound, tag, record)
                if failure is not None:
                    return failure
            else:
                n = ph.connections
                at_once = n if ph.order == "concurrent" else 1
                left, pending = n, []
                while left or pending:
                    while left and len(pending) < at_once:
                        pending.append(env.process(self.one_connection(inst, ph, bound, tag)))
                        left -= 1
                    children[:] = pending
                    yield env.any_of(pending)
                    for proc in [p for p in pending if p.triggered]:
                        if proc.value != HELD:
                            for other in pending:
                                if other.is_alive:
                                    other.interrupt()
                            return proc.value
                        pending.remove(proc)
            yield env.timeout(self.draw(ph.duration_s))
            return None
        except simpy.Interrupt:
            for child in children:
                if child.is_alive:
                    child.interrupt()
            return "interrupted"

    def one_connection(self, inst, ph, bound, tag):
        """A phase's connection, opened again after a failure while a retry fits in the bound."""
        env = self.env
        try:
            while True:
                conn = self.open(inst, tag)
                result = yield conn.proc
                if result == HELD or ph.retry_backoff_s == 0:
                    return result
                pause_s = jitter(ph.retry_backoff_s, ph.retry_jitter, self.rng)
                if env.now + pause_s < bound:
                    yield env.timeout(pause_s)
                else:
                    yield env.event()  # wait for the bound
        except simpy.Interrupt:
            return "interrupted"

    def pool_phase(self, inst, bound, tag, record):
        env, pool = self.env, self.sc.pool
        while True:
            failure = yield from self.pool_start(inst, record, tag)
            if failure is None:
                return None
            if pool.on_failure == "close":
                for conn in [c for c in inst.conns if c.pool == inst.pool]:
                    self.abandon(conn)
            if pool.retry_backoff_s == 0:
                return failure
            pause_s = jitter(pool.retry_backoff_s, pool.retry_jitter, self.rng)
            if env.now + pause_s < bound:
                yield env.timeout(pause_s)
            else:
                yield env.event()

    def exit(self, inst: Instance) -> None:
        """Close what it holds (freed by the server after exit_release_s); abandon the rest."""
        release_s = self.sc.restart.exit_release_s
        for conn in inst.conns:
            if conn.stage == HELD and release_s > 0:
                conn.stage = GONE
                self.env.timeout(release_s).callbacks.append(lambda _: self.db.give_back())
            else:
                self.abandon(conn)
        inst.conns = []

    def keep_when_ready(self, inst: Instance) -> list[Conn]:
        # The first held_when_ready of this pool start's connections, held or still opening.
        want = self.sc.pool.held_when_ready
        mine = [c for c in inst.conns if c.pool == inst.pool and c.stage != GONE]
        for conn in mine[want:]:
            self.abandon(conn)
        # background: nobody waits for those opened here
        kept = mine[:want] + [self.open(inst, None) for _ in range(want - len(mine))]
        inst.pool += 1
        return kept

    # -- database init: pool starts and retries -----------------------------------------------
    def db_init(self, inst: Instance, deadline_s: float, record: dict):
        env, pool = self.env, self.sc.pool
        try:
            if self.sc.cloudsql.enabled:
                yield from self.refresh(env.now)
            while True:
                failure = yield from self.pool_start(inst, record)
                if failure is None:
                    yield env.timeout(self.draw(self.sc.startup.init_queries_s))
                    return "ready", ""
                if pool.on_failure == "close":
                    for conn in [c for c in inst.conns if c.pool == inst.pool]:
                        self.abandon(conn)
                if pool.retry_backoff_s == 0:
                    return ("rejected" if failure == "53300" else "error"), failure
                pause_s = jitter(pool.retry_backoff_s, pool.retry_jitter, self.rng)
                if env.now + pause_s < deadline_s:
                    yield env.timeout(pause_s)
                else:
                    yield env.event()  # nothing more to try: wait for the deadline
        except simpy.Interrupt:
            return "timeout", "deadline"

    def refresh(self, t0: float):
        """Cloud SQL: refresh until one gets all its Admin API calls through. Refresh k waits for
        the connector's limiter: no earlier than t0 + (k − burst) × interval."""
        cs = self.sc.cloudsql
        k = 0
        while True:
            k += 1
            wait_s = t0 + (k - cs.refresh_burst) * cs.refresh_interval_s - self.env.now
            if wait_s > 0:
                yield self.env.timeout(wait_s)
            granted = self.api.call(self.env.now, cs.calls_per_refresh)
            yield self.env.timeout(self.draw(cs.call_s))
            if granted:
                return

    def pool_start(self, inst: Instance, record: dict, tag: int | None = None):
        """Open min_size connections as pool.start says; the first failure of one it waits for
        fails it. Returns None or the failure's reason.

        asyncpg: one, then min_size − 1 at once. concurrent: min_size at once. workers: at most
        pool.workers at a time. background: one, then min_size − 1 that nobody waits for."""
        inst.pool += 1
        record["pool_starts"] += 1
        cfg = self.sc.pool
        size = cfg.min_size
        if size == 0:
            return None
        if cfg.start in ("asyncpg", "background"):
            result = yield self.open(inst, inst.pool, tag=tag).proc
            if result != HELD:
                return result
            if cfg.start == "background":
                for _ in range(size - 1):
                    self.open(inst, inst.pool, awaited=False, tag=tag)
                return None
            left, at_once = size - 1, size - 1
        else:
            left, at_once = size, size if cfg.start == "concurrent" else cfg.workers
        pending = []
        while left or pending:
            while left and len(pending) < at_once:
                pending.append(self.open(inst, inst.pool, tag=tag).proc)
                left -= 1
            yield self.env.any_of(pending)
            for proc in [p for p in pending if p.triggered]:
                if proc.value != HELD:
                    return proc.value
                pending.remove(proc)
        return None

    # -- one connection -----------------------------------------------------------------------
    def open(
        self, inst: Instance, pool: int | None, awaited: bool = True, tag: int | None = None
    ) -> Conn:
        conn = Conn(pool, awaited, tag=pool if tag is None else tag)
        inst.conns.append(conn)
        if pool is not None:  # background connections are not database-init work
            inst.tried += 1
        if self.path_faults():
            conn.stage = FAULTED
        conn.proc = self.env.process(self.connect(inst, conn))
        # The client gives up connect_timeout_s after it started, wherever the connection is; a
        # faulted connection's path gave nothing back by then: "hung".
        watchdog = self.env.timeout(self.sc.pool.connect_timeout_s)
        watchdog.callbacks.append(
            lambda _: self.interrupt(conn, "hung" if conn.stage == FAULTED else "connect_timeout")
        )
        return conn

    def path_faults(self) -> bool:
        """A connection opened now in [from_s, until_s) is faulted with probability p_fault."""
        path = self.sc.path
        until_s = math.inf if path.until_s is None else path.until_s
        if path.fault == "none" or not path.from_s <= self.env.now < until_s:
            return False
        return self.rng.uniform() < path.p_fault

    def faulted(self, inst: Instance, conn: Conn):
        """The path closes or resets it after fail_after_s, or (hung) never answers."""
        if self.sc.path.fault == "hung":
            yield self.env.event()
        yield self.env.timeout(self.draw(self.sc.path.fail_after_s))
        conn.stage = GONE
        if conn in inst.conns:
            inst.conns.remove(conn)
        return self.sc.path.fault

    def connect(self, inst: Instance, conn: Conn):
        env = self.env
        try:
            if conn.stage == FAULTED:  # never at the connector nor the database
                return (yield from self.faulted(inst, conn))
            if self.sc.egress.direct:  # no connector: wait for the egress, then the database
                if env.now < inst.egress_at:
                    yield env.timeout(inst.egress_at - env.now)
                return (yield from self.to_database(inst, conn))
            conn.grant = self.connector.request()
            yield conn.grant
            conn.stage = SETUP
            yield env.timeout(self.draw(self.sc.connector.setup_s))
            self.connector.release()
            return (yield from self.to_database(inst, conn))
        except simpy.Interrupt as stop:
            if conn.stage == QUEUED and conn.grant is not None:
                self.connector.give_up(conn.grant)
            elif conn.stage == SETUP:
                self.connector.release()
            conn.stage = GONE
            if conn in inst.conns:
                inst.conns.remove(conn)
            return stop.cause

    def to_database(self, inst: Instance, conn: Conn):
        conn.stage = ACCEPT
        yield self.env.timeout(self.draw(self.sc.database.accept_s))
        if not self.db.take():
            conn.stage = GONE
            if conn in inst.conns:
                inst.conns.remove(conn)
            return "53300"
        conn.stage = HELD
        return HELD

    def interrupt(self, conn: Conn, cause: str) -> None:
        if conn.stage in IN_FLIGHT and conn.proc.is_alive:
            conn.proc.interrupt(cause)

    def abandon(self, conn: Conn) -> None:
        if conn.stage == HELD:
            conn.stage = GONE
            self.db.give_back()
        else:
            self.interrupt(conn, "abandoned")


# -- traffic after ready (docs/model.md, "Traffic after ready") ---------------------------------

FILLER_PAUSE_FIRST_S, FILLER_PAUSE_MAX_S = 0.01, 5.0  # HikariCP's PoolEntryCreator


@dataclass(eq=False)  # identity: two requests alike are still two
class Request:
    instance: int
    arrive_s: float
    ready_s: float = math.nan
    checkout_s: float = math.nan
    wait_s: float = math.nan
    outcome: str = ""  # "" while it waits: "unfinished" if the run ends first
    reason: str = ""

    def row(self) -> dict:
        return {
            "instance": self.instance,
            "arrive_s": self.arrive_s,
            "ready_s": self.ready_s,
            "checkout_s": self.checkout_s,
            "wait_s": self.wait_s,
            "outcome": self.outcome or "unfinished",
            "reason": self.reason,
        }


@dataclass(eq=False)
class Pool:
    """A ready instance's pool: its idle connections (longest idle first), how many it holds or
    is opening, its FIFO queue of requests, and (``background``) its filler's wake-up."""

    inst: Instance
    idle: deque = field(default_factory=deque)
    total: int = 0
    queue: list[Request] = field(default_factory=list)
    poke: simpy.Event | None = None


class Traffic:
    """Requests after ready: arrivals, routing, checkouts, the two growth rules."""

    def __init__(self, model: Model) -> None:
        self.m, self.env, self.sc = model, model.env, model.sc
        self.cfg = model.sc.traffic
        self.ready_order: list[Pool] = []  # the ready instances, in the order they became ready
        self.requests: list[Request] = []
        self.opened = 0

    def start(self) -> None:
        if self.cfg.rate_per_s > 0:
            self.env.process(self.poisson(self.cfg.rate_per_s, None))
        elif self.cfg.trace_s:
            self.env.process(self.trace())

    def finish(self, result: Result, instances: list[Instance]) -> None:
        result.requests = [r.row() for r in self.requests]
        result.traffic_connections = self.opened
        result.connections_held_end = sum(c.stage == HELD for i in instances for c in i.conns)

    # -- arrivals and routing -------------------------------------------------------------
    def poisson(self, rate: float, pool: Pool | None):
        while True:
            gap = float(self.m.rng.exponential(1.0 / rate))
            if self.env.now + gap >= self.sc.horizon_s:
                return
            yield self.env.timeout(gap)
            self.arrive(pool)

    def trace(self):
        for t in self.cfg.trace_s:
            if t >= self.sc.horizon_s:
                return
            yield self.env.timeout(t - self.env.now)
            self.arrive(None)

    def arrive(self, pool: Pool | None) -> None:
        now = self.env.now
        if pool is None:  # the fleet's stream: warm instances first, then the ready ones
            n = self.sc.fleet.warm_instances + len(self.ready_order)
            if n == 0:
                self.requests.append(Request(-1, now, outcome="unrouted"))
                return
            k = int(self.m.rng.uniform() * n) - self.sc.fleet.warm_instances
            if k < 0:
                self.requests.append(Request(-1, now, outcome="warm"))
                return
            pool = self.ready_order[k]
        req = Request(pool.inst.idx, now, ready_s=pool.inst.ready_at)
        self.requests.append(req)
        self.checkout(pool, req)

    def ready(self, inst: Instance, kept: list[Conn]) -> None:
        pool = Pool(inst)
        for conn in kept:
            if conn.stage == HELD:
                pool.idle.append(conn)
            elif conn.proc is not None and conn.proc.is_alive:  # still opening
                pool.total += 1
                conn.proc.callbacks.append(lambda ev, c=conn: self.opened_for_pool(pool, c, ev))
        pool.total += len(pool.idle)
        self.ready_order.append(pool)
        if self.sc.pool.growth == "background":
            self.env.process(self.filler(pool))
        if self.cfg.rate_per_instance_per_s > 0:
            self.env.process(self.poisson(self.cfg.rate_per_instance_per_s, pool))

    # -- the pool ---------------------------------------------------------------------------
    def checkout(self, pool: Pool, req: Request) -> None:
        if pool.idle:
            self.serve(pool, req, pool.idle.popleft())
        elif self.sc.pool.growth == "per_waiter" and pool.total < self.sc.pool.max_size:
            pool.total += 1
            conn = self.open(pool)
            conn.proc.callbacks.append(lambda ev: self.own_connection(pool, req, conn, ev))
        else:
            pool.queue.append(req)
            timer = self.env.timeout(self.sc.pool.timeout_s)
            timer.callbacks.append(lambda _: self.give_up(pool, req))
            self.wake(pool)  # a request joining the queue sets the filler going

    def open(self, pool: Pool) -> Conn:
        self.opened += 1
        return self.m.open(pool.inst, None)

    def own_connection(self, pool: Pool, req: Request, conn: Conn, ev) -> None:
        if ev.value == HELD:
            self.serve(pool, req, conn)
        else:
            pool.total -= 1
            req.outcome, req.reason = "failed", ev.value

    def opened_for_pool(self, pool: Pool, conn: Conn, ev) -> None:
        """A connection the pool was opening (not for one request): to the first queued request,
        else idle."""
        if ev.value == HELD:
            self.hand_over(pool, conn)
        else:
            pool.total -= 1

    def give_up(self, pool: Pool, req: Request) -> None:
        if req in pool.queue:
            pool.queue.remove(req)
            req.outcome, req.reason = "failed", "pool_timeout"

    def serve(self, pool: Pool, req: Request, conn: Conn) -> None:
        now = self.env.now
        req.checkout_s, req.wait_s, req.outcome = now, now - req.arrive_s, "served"
        done = self.env.timeout(self.m.draw(self.cfg.query_s))
        done.callbacks.append(lambda _: self.hand_over(pool, conn))

    def hand_over(self, pool: Pool, conn: Conn) -> None:
        if pool.queue:
            self.serve(pool, pool.queue.pop(0), conn)
        else:
            pool.idle.append(conn)

    # -- background growth: the filler -----------------------------------------------------
    def wake(self, pool: Pool) -> None:
        """The filler (``background``) looks: it keeps opening while :meth:`wanted` says so."""
        if pool.poke is not None and not pool.poke.triggered:
            pool.poke.succeed()

    def wanted(self, pool: Pool) -> bool:
        cfg = self.sc.pool
        return pool.total < cfg.max_size and (
            bool(pool.queue) or len(pool.idle) < cfg.held_when_ready
        )

    def filler(self, pool: Pool):
        pause = 0.0
        while True:
            while not self.wanted(pool):
                pool.poke = self.env.event()
                yield pool.poke
            pool.total += 1
            conn = self.open(pool)
            result = yield conn.proc
            if result == HELD:
                pause = 0.0
                self.hand_over(pool, conn)
            else:
                pool.total -= 1
                pause = min(2 * pause, FILLER_PAUSE_MAX_S) if pause else FILLER_PAUSE_FIRST_S
                yield self.env.timeout(pause)


def failure_outcome(reason: str) -> str:
    return {"53300": "rejected", "phase_deadline": "timeout"}.get(reason, "error")


def restart_backoff_s(sc: Scenario, k: int) -> float | None:
    """Pause before restart k (1-based), or None when no restart k is allowed."""
    restart = sc.restart
    if restart.policy == "none" or k > restart.max_restarts:
        return None
    if restart.policy == "fixed":
        return restart.initial_backoff_s
    return min(restart.initial_backoff_s * restart.multiplier ** (k - 1), restart.max_backoff_s)


def run(sc: Scenario, seed: int) -> Result:
    return (PooledModel if sc.pooler.on else Model)(sc, seed).run()


# -- a pooler in front of the database (docs/model.md, "A pooler in front of the database") ----
# Written from that section's rules 1-8, for start-ups without phases or the Cloud SQL path.
# Connections are kept by identity (id()): the dataclasses compare by value.

LOGIN = "login"  # at PgBouncer, waiting to log in
JANITOR_S = 1.0 / 3.0  # PgBouncer's janitor runs every third of a second


class PgBouncer:
    """One pool: client slots, one FIFO of waiting clients, server connections opened one at a
    time and kept open, the janitor."""

    def __init__(self, env: simpy.Environment, sc: Scenario, db: Database, draw, rng) -> None:
        self.env, self.cfg, self.db, self.draw = env, sc.pooler, db, draw
        self.accept_s = sc.database.accept_s
        self.clients: dict[int, Conn] = {}
        self.linked: dict[int, Conn] = {}  # clients holding a server
        self.waiting: list[list] = []  # [conn, kind, since, event], first in first out
        self.servers = self.idle = 0
        self.opening = self.welcome = self.login_failed = False
        self.last_launch_s = -math.inf
        self.retry_wake_s = -math.inf
        if self.cfg.query_wait_timeout > 0:
            end_s = sc.horizon_s + sc.startup.db_init_timeout_s
            env.process(self.janitor(rng.uniform(0.0, JANITOR_S), end_s))

    # rule 1 and 2: a client arrives and logs in
    def arrive(self, conn: Conn):
        if len(self.clients) >= self.cfg.max_client_conn:
            return "max_client_conn"
        self.clients[id(conn)] = conn
        if self.welcome:
            return HELD
        return (yield self.wait(conn, LOGIN))

    # rules 3 and 4: a client asks for a server for its work
    def need_server(self, conn: Conn) -> simpy.Event:
        if id(conn) in self.linked:
            return self.env.event().succeed("ok")
        if self.idle:
            self.idle -= 1
            self.linked[id(conn)] = conn
            return self.env.event().succeed("ok")
        if self.login_failed and self.servers == int(self.opening):
            del self.clients[id(conn)]
            return self.env.event().succeed("server_login_retry")
        return self.wait(conn, "work")

    def wait(self, conn: Conn, kind: str) -> simpy.Event:
        event = self.env.event()
        self.waiting.append([conn, kind, self.env.now, event])
        if self.cfg.reserve_pool_size > 0 and self.cfg.reserve_pool_timeout > 0:
            self.env.process(self.launch_at(self.env.now + self.cfg.reserve_pool_timeout))
        self.launch()
        return event

    # rule 8: the work ends; a client leaves
    def work_done(self, conn: Conn) -> None:
        if self.cfg.pool_mode != "session" and self.linked.pop(id(conn), None) is not None:
            self.idle += 1
            self.serve()

    def leave(self, conn: Conn) -> None:
        if self.clients.pop(id(conn), None) is None:
            return
        self.waiting = [w for w in self.waiting if w[0] is not conn]
        if self.linked.pop(id(conn), None) is not None:
            self.idle += 1
        self.serve()

    def serve(self) -> None:
        while self.idle:
            first = next((w for w in self.waiting if w[1] == "work"), None)
            if first is None:
                break
            self.waiting.remove(first)
            self.idle -= 1
            self.linked[id(first[0])] = first[0]
            first[3].succeed("ok")
        self.launch()

    # rule 5: server connections, one at a time, within the limits
    def launch(self) -> None:
        if not self.waiting or self.opening or self.idle:
            return
        cfg, now = self.cfg, self.env.now
        retry_at = self.last_launch_s + cfg.server_login_retry
        if self.login_failed and now < retry_at:
            if self.retry_wake_s != retry_at:
                self.retry_wake_s = retry_at
                self.env.process(self.launch_at(retry_at))
            return
        limit = cfg.default_pool_size
        reserve = cfg.reserve_pool_size > 0 and cfg.reserve_pool_timeout > 0
        if reserve and now - self.waiting[0][2] >= cfg.reserve_pool_timeout:
            limit += cfg.reserve_pool_size
        if self.servers >= limit or (
            cfg.max_db_connections and self.servers >= cfg.max_db_connections
        ):
            return
        self.opening, self.last_launch_s = True, now
        self.servers += 1
        self.env.process(self.login())

    def launch_at(self, t: float):
        yield self.env.timeout(t - self.env.now)
        self.launch()

    def login(self):
        accept_s = self.draw(self.accept_s)
        if accept_s >= self.cfg.server_connect_timeout:
            yield self.env.timeout(self.cfg.server_connect_timeout)
            self.failed("connect_timeout", kill=False)
            return
        yield self.env.timeout(accept_s)
        if not self.db.take():
            self.failed("53300", kill=True)
            return
        self.opening, self.welcome, self.login_failed = False, True, False
        self.idle += 1
        for w in [w for w in self.waiting if w[1] == LOGIN]:  # every waiting login, in order
            self.waiting.remove(w)
            w[3].succeed(HELD)
        self.serve()

    # rule 6: a failed server login
    def failed(self, reason: str, kill: bool) -> None:
        self.opening, self.login_failed = False, True
        self.servers -= 1
        if kill and (self.servers == 0 or not self.welcome):
            for conn, _, _, event in self.waiting:
                del self.clients[id(conn)]
                event.succeed(reason)
            self.waiting = []
        self.launch()

    # rule 7: the janitor, every third of a second from its phase
    def janitor(self, phase_s: float, end_s: float):
        yield self.env.timeout(phase_s)
        while self.env.now <= end_s:
            for w in list(self.waiting):
                if self.env.now - w[2] > self.cfg.query_wait_timeout:
                    self.waiting.remove(w)
                    del self.clients[id(w[0])]
                    w[3].succeed("query_wait_timeout")
            yield self.env.timeout(JANITOR_S)


class PooledModel(Model):
    """The model with PgBouncer between the connector and the database."""

    def __init__(self, sc: Scenario, seed: int) -> None:
        super().__init__(sc, seed)
        if sc.startup.phases or sc.cloudsql.enabled:
            raise NotImplementedError("a pooler with phases or Cloud SQL: not in the reference")
        self.pgb = PgBouncer(self.env, sc, self.db, self.draw, self.rng)

    def connect(self, inst: Instance, conn: Conn):
        try:
            if conn.stage == FAULTED:
                return (yield from self.faulted(inst, conn))
            conn.grant = self.connector.request()
            yield conn.grant
            conn.stage = SETUP
            yield self.env.timeout(self.draw(self.sc.connector.setup_s))
            self.connector.release()
            conn.stage = LOGIN  # at PgBouncer: no accept_s, no database slot
            result = yield from self.pgb.arrive(conn)
            if result != HELD:
                self.gone(inst, conn)
                return result
            conn.stage = HELD
            return HELD
        except simpy.Interrupt as stop:
            if conn.stage == QUEUED:
                self.connector.give_up(conn.grant)
            elif conn.stage == SETUP:
                self.connector.release()
            elif conn.stage == LOGIN:
                self.pgb.leave(conn)
            self.gone(inst, conn)
            return stop.cause

    @staticmethod
    def gone(inst: Instance, conn: Conn) -> None:
        conn.stage = GONE
        inst.conns = [c for c in inst.conns if c is not conn]

    def db_init(self, inst: Instance, deadline_s: float, record: dict):
        env, pool = self.env, self.sc.pool
        try:
            while True:
                failure = yield from self.pool_start(inst, record)
                if failure is None:
                    failure = yield from self.work(inst)
                    if failure is None:
                        return "ready", ""
                if pool.on_failure == "close":
                    for conn in [c for c in inst.conns if c.pool == inst.pool]:
                        self.abandon(conn)
                if pool.retry_backoff_s == 0:
                    return failure_outcome(failure), failure
                pause_s = jitter(pool.retry_backoff_s, pool.retry_jitter, self.rng)
                if env.now + pause_s < deadline_s:
                    yield env.timeout(pause_s)
                else:
                    yield env.event()
        except simpy.Interrupt:
            return "timeout", "deadline"

    def work(self, inst: Instance):
        """The init queries, on the start's first held connection, once it has a server."""
        first = next((c for c in inst.conns if c.pool == inst.pool and c.stage == HELD), None)
        if first is not None:
            result = yield self.pgb.need_server(first)
            if result != "ok":  # PgBouncer disconnected it
                self.gone(inst, first)
                return result
        yield self.env.timeout(self.draw(self.sc.startup.init_queries_s))
        if first is not None and first.stage == HELD and self.sc.pooler.pool_mode != "session":
            # The server goes back; the connection's return to its pool (its reset) is a
            # transaction of its own, which asks for one again.
            self.pgb.work_done(first)
            result = yield self.pgb.need_server(first)
            if result != "ok":
                self.gone(inst, first)
                return result
            self.pgb.work_done(first)
        return None

    def interrupt(self, conn: Conn, cause: str) -> None:
        if conn.stage in (*IN_FLIGHT, LOGIN) and conn.proc.is_alive:
            conn.proc.interrupt(cause)

    def abandon(self, conn: Conn) -> None:
        if conn.stage == HELD:
            conn.stage = GONE
            self.pgb.leave(conn)
        else:
            self.interrupt(conn, "abandoned")

    def exit(self, inst: Instance) -> None:
        release_s = self.sc.restart.exit_release_s
        for conn in inst.conns:
            if conn.stage == HELD and release_s > 0:
                conn.stage = GONE
                later = self.env.timeout(release_s)
                later.callbacks.append(lambda _, c=conn: self.pgb.leave(c))
            else:
                self.abandon(conn)
        inst.conns = []
