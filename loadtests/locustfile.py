"""The Locust side of a campaign: each user is one container instance's life.

Run by ``startsim loadtest`` (and ``startsim loadtest-worker`` on other hosts), or by hand::

    PGPASSWORD=... locust -f loadtests/locustfile.py --headless \\
        --dsn postgresql://app@127.0.0.1:5432/app --scenario gang-allocation

Its options (``--dsn``, ``--scenario``, ``--allow-target``, ``--seed``, ...) are Locust options,
declared in :mod:`loadtests.settings`, each with an environment variable. Every process reads them
once at start-up and keeps its :class:`Campaign` on the environment (``environment.startsim``);
without them it refuses to start. Local run: this process runs users and writes records.
Distributed: workers run users and send each record to the master, the single writer of the merged
records, progress and Locust's CSVs.
"""

from __future__ import annotations

import os
import sys

# Locust puts the working directory on sys.path before it imports a locustfile: ours is named by
# path and imports nothing from there, and a platform.py or asyncio.py where the user runs it must
# not shadow a module (startsim starts Locust with ``python -P`` for the same reason).
if os.getcwd() in sys.path:
    sys.path.remove(os.getcwd())

import asyncio
import collections
import itertools
import logging
import time
from typing import NoReturn

import gevent
import gevent.event
import numpy as np
from locust import User, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests import safety, settings
from loadtests.arrivals import ArrivalPlan
from loadtests.records import (
    CONNECTIONS_FILE,
    RECORDS_FILE,
    TRAFFIC_FILE,
    JsonlSink,
    make_record,
    read_jsonl,
    summarize_records,
)
from loadtests.settings import HarnessSettings
from loadtests.shapes import ArrivalShape
from sim.errors import StartsimError
from sim.measured_requests import REQUESTS_FILE
from sim.output import write_json
from sim.records import Outcome

SAMPLE_EVERY_S = 0.1
# A Locust worker connects to its master before its init event has run, so users may be spawned
# before the campaign exists (seen: 'Environment' object has no attribute 'startsim'). A user waits
# for the init hook this long, then fails with a message that says so.
INIT_WAIT_S = 60.0
_initialised = gevent.event.Event()
PROGRESS_FILE = "progress.json"
WARM_FILE = "warm.json"  # what the warm instances' connections did (fleet.warm_instances)
MASTER_WORKER = -1  # the master's connection samples: the warm connections it holds
INSTANCE_STRIDE = 1_000_000  # instance ids: worker index × stride + the worker's own count
# Traffic after ready draws from generators of its own: each instance's (its queries and, with
# rate_per_instance_per_s, its arrivals) and the fleet's stream (arrivals and picks).
TRAFFIC_KEY = 1
FLEET_TRAFFIC_KEY = (0x7472_6166,)  # "traf": no instance's key, no child's of spawn()
log = logging.getLogger("startsim")


class StartFailed(Exception):
    """Reported to Locust for a start attempt that did not become ready."""


class Campaign:
    """Per-process state: scenario, the asyncio bridge, counters and where records go."""

    def __init__(self, environment, settings: HarnessSettings) -> None:
        self.env, self.settings = environment, settings
        self.sc = settings.sc
        self.runner = environment.runner
        self.is_master = isinstance(self.runner, MasterRunner)
        self.is_worker = isinstance(self.runner, WorkerRunner)
        self.worker = getattr(self.runner, "worker_index", 0) if self.is_worker else 0
        self.t0 = time.monotonic()
        self.counts = {"started": 0, "ready": 0, "failed_attempts": 0, "errors": 0, "finished": 0}
        self.instances: list = []
        self._numbers = itertools.count()
        self.records = self.samples = None
        self.bridge = self.gauge = None
        self.warm = None  # the warm instances' connections (fleet.warm_instances), the writer's
        # Traffic after ready (loadtests.traffic): one per process that runs instances, made at
        # the campaign's start; its records pass from the loop thread through this queue.
        self.traffic = None
        self.held_end = 0  # the writer's: the starting instances' connections when it stopped
        self.request_queue: collections.deque = collections.deque()
        self.request_records = None
        self.shared_breaker = None  # breaker.form = "shared": the fleet's one (loadtests.stayup)
        if settings.run_dir is not None:
            self.records = JsonlSink(settings.run_dir / RECORDS_FILE)
            self.samples = JsonlSink(settings.run_dir / CONNECTIONS_FILE)
            if self.sc.traffic.on:
                self.request_records = JsonlSink(settings.run_dir / REQUESTS_FILE)
        if not self.is_master:
            from loadtests.bridge import AsyncioBridge
            from loadtests.container import Gauge

            self.bridge, self.gauge = AsyncioBridge(), Gauge()
        if self.is_master:
            self.runner.register_message("startsim_record", self._on_record_msg)
            self.runner.register_message("startsim_sample", self._on_sample_msg)
            self.runner.register_message("startsim_started", self._on_started_msg)
            self.runner.register_message("startsim_request", self._on_request_msg)
            self.runner.register_message("startsim_held_end", self._on_held_end_msg)

    # -- counting and writing (the master, or a local run) --------------------------------------
    def _on_record_msg(self, environment, msg, **_kw) -> None:
        self.write_record(msg.data)

    def _on_sample_msg(self, environment, msg, **_kw) -> None:
        if self.samples is not None:
            self.samples.write(msg.data)

    def _on_started_msg(self, environment, msg, **_kw) -> None:
        self.counts["started"] += 1

    def _on_request_msg(self, environment, msg, **_kw) -> None:
        for rec in msg.data:
            self.write_request(rec)

    def _on_held_end_msg(self, environment, msg, **_kw) -> None:
        self.note_held_end(msg.data)

    def note_held_end(self, held: int) -> None:
        """The connections a process's starting instances held when its traffic stopped, added
        up over the processes (the writer's)."""
        self.held_end += held
        if self.settings.run_dir is not None:
            write_json(
                self.settings.run_dir / TRAFFIC_FILE, {"connections_held_end": self.held_end}
            )

    def write_request(self, rec: dict) -> None:
        if self.request_records is not None:
            self.request_records.write({"run_id": self.settings.run_dir.name, **rec})

    def write_record(self, rec: dict) -> None:
        if self.records is not None:
            rec["run_id"] = self.settings.run_dir.name  # a worker knows no folder: stamped here
            self.records.write(rec)
        self.counts["ready"] += rec["outcome"] == Outcome.READY
        self.counts["failed_attempts"] += rec["outcome"] != Outcome.READY
        self.counts["errors"] += rec["outcome"] == Outcome.ERROR
        self.counts["finished"] += rec["final"]

    def finished(self) -> bool:
        """Every instance ready or out of restarts; with traffic the run goes on to its limit,
        as the model's requests arrive over the whole horizon."""
        if self.sc.traffic.on:
            return False
        return self.counts["finished"] >= self.sc.fleet.instances

    def write_progress(self) -> None:
        if self.settings.run_dir is not None:
            write_json(self.settings.run_dir / PROGRESS_FILE, dict(self.counts))

    def write_summary(self) -> None:
        """A plain ``locust -f`` run's summary.json (``startsim loadtest`` writes its own)."""
        folder = self.settings.run_dir
        if folder is None or not self.settings.fresh_run_dir:
            return
        records = read_jsonl(folder / RECORDS_FILE)
        samples = read_jsonl(folder / CONNECTIONS_FILE)
        summary = summarize_records(self.sc, records, samples, self.settings.seed, folder)
        write_json(folder / "summary.json", {**summary, "run_id": folder.name})

    # -- from users (a local run, or a worker) -------------------------------------------------
    def new_instance(self):
        """(instance id, instance, its generator): the built-in asyncpg life, or the command."""
        from loadtests.container import Instance

        number = next(self._numbers)
        instance_id = self.worker * INSTANCE_STRIDE + number
        seq = np.random.SeedSequence(self.settings.seed, spawn_key=(self.worker, number))
        rng = np.random.default_rng(seq)
        if self.settings.command:
            inst = self._command_instance(instance_id)
        else:
            inst = Instance(
                self.sc,
                self.settings.dsn,
                rng,
                self.gauge,
                self.settings.secrets,
                connect=self.settings.connect,
            )
            inst.breaker = self._breaker()
            if self.sc.traffic.on:
                key = (self.worker, number, TRAFFIC_KEY)
                traffic_rng = np.random.default_rng(
                    np.random.SeedSequence(self.settings.seed, spawn_key=key)
                )
                inst.on_ready = self._ready_pool(instance_id, traffic_rng)
        self.instances.append(inst)
        if self.is_worker:
            self.runner.send_message("startsim_started", None)
        else:
            self.counts["started"] += 1
        return instance_id, inst, rng

    def _breaker(self):
        """The instance's breaker (loadtests.stayup): its own under ``stay_up``, the campaign's
        one under ``shared`` (every instance runs in this process: settings.check_breaker)."""
        from loadtests.stayup import breaker_state

        if not self.sc.breaker.shared:
            return breaker_state(self.sc.breaker)
        if self.shared_breaker is None:
            self.shared_breaker = breaker_state(self.sc.breaker)
        return self.shared_breaker

    def _command_instance(self, instance_id: int):
        import os

        from loadtests.command import CommandInstance, child_env
        from loadtests.stayup import breaker_env

        identity = {
            "STARTSIM_INSTANCE": str(instance_id),
            "STARTSIM_WORKER": str(self.worker),
            "STARTSIM_RUN_ID": self.settings.run_dir.name if self.settings.run_dir else "",
            **breaker_env(self.sc.breaker),  # the example's stay-up mode reads them
        }
        env = child_env(dict(os.environ), self.settings.dsn, self.settings.connect, identity)
        return CommandInstance(list(self.settings.command), env, self.settings.secrets)

    def _ready_pool(self, instance_id: int, rng: np.random.Generator):
        """The instance's ``on_ready``: on the loop, its pool after ready starts taking requests."""

        def on_ready(inst, ready_mono: float) -> None:
            from loadtests.traffic import ReadyPool

            traffic = self.traffic
            if traffic is None or traffic.closed:
                return
            ready_s = ready_mono - traffic.clock.t0
            pool = ReadyPool(
                self.sc,
                instance_id,
                ready_s,
                inst.held_connections(),
                inst.dial_traffic,
                traffic.clock,
                self.request_queue.append,
                rng,
            )
            inst.ready_pool = pool
            traffic.ready(pool)

        return on_ready

    def start_traffic(self) -> None:
        """At the campaign's start (its clock's 0): the process's traffic; the fleet's stream in
        a local run (a distributed campaign with one is refused: no process sees every pool)."""
        if not self.sc.traffic.on or self.bridge is None or self.settings.command:
            return
        from loadtests.traffic import CampaignTraffic, Clock

        warm = 0 if self.is_worker else self.sc.fleet.warm_instances
        traffic = CampaignTraffic(
            self.sc, Clock(self.t0), self.request_queue.append, self.settings.limit_s, warm
        )
        self.traffic = traffic
        if not self.is_worker:
            seq = np.random.SeedSequence(self.settings.seed, spawn_key=FLEET_TRAFFIC_KEY)
            rng = np.random.default_rng(seq)

            async def start() -> None:
                traffic.start_fleet(rng)

            self.bridge.run(start())

    def stop_traffic(self) -> None:
        """No more requests: those still waiting are recorded unfinished, then written; the
        connections the starting instances hold now (the warm instances' aside) are counted."""
        traffic, self.traffic = self.traffic, None
        if traffic is not None:
            warm = len(self.warm.conns) if self.warm is not None else 0
            held = self.gauge.open_now - warm
            self.bridge.run(traffic.close())
            if self.is_worker:
                self.runner.send_message("startsim_held_end", held)
            else:
                self.note_held_end(held)
        self.drain_requests()

    def drain_requests(self) -> None:
        """The request records the loop produced since the last call: written, or sent."""
        batch = []
        while self.request_queue:
            batch.append(self.request_queue.popleft())
        if not batch:
            return
        if self.is_worker:
            self.runner.send_message("startsim_request", batch)
        else:
            for rec in batch:
                self.write_request(rec)

    def run_attempt(self, inst, number: int):
        """One start attempt: the command's process (this greenlet waits), or the asyncpg life
        on the asyncio bridge."""
        if self.settings.command:
            inst.last_unix_s = time.time() + self.sc.horizon_s - self.elapsed_s()
            return inst.attempt(number)
        inst.last_s = self.t0 + self.sc.horizon_s  # a stay-up try begins before it, or never
        return self.bridge.run(inst.attempt(number))

    def report(self, rec: dict) -> None:
        if self.is_worker:
            self.runner.send_message("startsim_record", rec)
        else:
            self.write_record(rec)

    def open_warm(self) -> None:
        """The warm instances' connections (``fleet.warm_instances``, docs/model.md
        "Entities"): opened by the writer (a local run, or the master) before the first instance
        starts, held to the end of the campaign, no record. Failures are logged and listed in
        ``warm.json``; the connections that opened stay held."""
        if self.sc.warm_held == 0 or self.warm is not None or self.is_worker:
            return
        from loadtests.container import Gauge, WarmFleet

        if self.bridge is None:  # the master: a loop and a gauge for these connections alone
            from loadtests.bridge import AsyncioBridge

            self.bridge, self.gauge = AsyncioBridge(), Gauge()
        s = self.settings
        self.warm = WarmFleet(self.sc, s.dsn, self.gauge, s.connect, s.secrets)
        self.bridge.run(self.warm.open())
        held, wanted = len(self.warm.conns), self.sc.warm_held
        log.info("startsim: %d warm instances hold %d of %d connections", *(
            self.sc.fleet.warm_instances, held, wanted))  # fmt: skip
        for error in self.warm.errors:
            log.error("startsim: a warm connection failed: %s", error)
        if s.run_dir is not None:
            write_json(
                s.run_dir / WARM_FILE,
                {
                    "warm_instances": self.sc.fleet.warm_instances,
                    "held_when_ready": self.sc.pool.held_when_ready,
                    "wanted": wanted,
                    "held": held,
                    "held_from_unix_s": round(time.time(), 3),  # all open (or failed) by then
                    "errors": self.warm.errors,
                },
            )

    def sample(self) -> None:
        rec = {
            "t_unix_s": round(time.time(), 3),
            # The master samples only the warm connections it holds: a worker id of its own.
            "worker": MASTER_WORKER if self.is_master else self.worker,
            "open": self.gauge.open_now,
            "peak": self.gauge.take_peak(),
        }
        if self.is_worker:
            self.runner.send_message("startsim_sample", rec)
        elif self.samples is not None:
            self.samples.write(rec)

    def elapsed_s(self) -> float:
        return time.monotonic() - self.t0

    def close_all(self) -> None:
        """Close every connection of every instance in this process, then the warm instances'
        (idempotent)."""
        if self.bridge is None:
            return
        insts, self.instances = self.instances, []
        self.stop_traffic()
        if insts and self.settings.command:  # SIGTERM every ready process, then wait for them
            gevent.joinall([gevent.spawn(i.close) for i in insts])
        elif insts:

            async def close():
                await asyncio.gather(*(i.close() for i in insts), return_exceptions=True)

            self.bridge.run(close())
        warm, self.warm = self.warm, None
        if warm is not None:
            self.bridge.run(warm.close())
        self.drain_requests()


@events.init_command_line_parser.add_listener
def _declare_options(parser, **_kw) -> None:
    settings.add_arguments(parser)


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    writer = not isinstance(environment.runner, WorkerRunner)
    try:
        options = environment.parsed_options
        if options is None:  # Locust as a library: set environment.parsed_options first
            raise StartsimError("no startsim settings: environment.parsed_options is None")
        found = settings.from_options(options, writer)
    except StartsimError as exc:
        _refuse(exc)
    # Read once: the master sends its options to workers with every spawn, so keep the password
    # out of them (the workers have their own --dsn, read at their start).
    options.dsn = safety.redact_dsn(found.dsn)
    try:
        distributed = isinstance(environment.runner, MasterRunner | WorkerRunner)
        settings.check_traffic(found.sc, bool(found.command), distributed)
        settings.check_breaker(found.sc, bool(found.command), distributed)
    except StartsimError as exc:
        _refuse(exc)
    environment.startsim = camp = Campaign(environment, found)
    _initialised.set()
    if writer:
        how = "given" if found.seed_given else f"fresh; --seed {found.seed} repeats it"
        log.info("startsim: seed %d (%s), records in %s", found.seed, how, found.run_dir)
    shape = environment.shape_class
    if shape is not None:  # the shape instance is this environment's: no class-wide state
        shape.plan = ArrivalPlan.for_scenario(camp.sc, found.seed)
        shape.limit_s = found.limit_s
        shape.finished = camp.finished
    gevent.spawn(_housekeeping, camp)


def _refuse(exc: StartsimError) -> NoReturn:
    """Locust's command line is the edge here: one line on stderr and exit 2, no traceback, as
    at startsim's own edge (Locust would log an exception in an init hook and go on to exit 1)."""
    sys.stderr.write(f"error: {settings.describe(exc)}\n")
    sys.stderr.flush()
    raise SystemExit(2)


def _housekeeping(camp: Campaign) -> None:
    """Connection samples every 0.1 s (users' processes), progress every second (the writer)."""
    for n in itertools.count():
        if camp.gauge is not None:
            camp.sample()
        camp.drain_requests()
        if n % 10 == 0:
            camp.write_progress()
        gevent.sleep(SAMPLE_EVERY_S)


@events.test_start.add_listener
def _on_test_start(environment, **_kw) -> None:
    # The warm instances' connections open before any instance is spawned (Locust spawns after
    # test_start, the master sends its spawn messages after it too); then the horizon, and the
    # arrival plan, count from here, not from process start.
    environment.startsim.open_warm()
    environment.startsim.t0 = time.monotonic()
    if environment.startsim.warm is not None and environment.shape_class is not None:
        environment.shape_class.reset_time()
    environment.startsim.start_traffic()


@events.test_stopping.add_listener
def _on_test_stopping(environment, **_kw) -> None:
    # Before the users stop (and close their instances): no request arrives after this.
    camp = getattr(environment, "startsim", None)
    if camp is not None:
        camp.stop_traffic()


@events.test_stop.add_listener
def _on_test_stop(environment, **_kw) -> None:
    camp = environment.startsim
    camp.close_all()
    if camp.gauge is not None:
        camp.sample()
    camp.write_progress()


@events.quitting.add_listener
def _on_quitting(environment, **_kw) -> None:
    _on_test_stop(environment)
    environment.startsim.write_summary()


class ColdStartUser(User):
    """One container instance: start attempts with restarts, then hold the pool until the end."""

    def on_start(self) -> None:
        if not hasattr(self.environment, "startsim") and not _initialised.wait(INIT_WAIT_S):
            raise StartsimError(f"startsim's init hook did not run within {INIT_WAIT_S:g} s")
        self.camp = self.environment.startsim
        self.instance_id, self.inst, self.rng = self.camp.new_instance()

    @task
    def life(self) -> None:
        camp, sc = self.camp, self.camp.sc
        for attempt in itertools.count(1):
            if camp.elapsed_s() >= sc.horizon_s:
                break  # no new start after the horizon, as in the model
            res = camp.run_attempt(self.inst, attempt)
            if res is None:
                break  # its next try would begin after the horizon: no record
            # A start-up that stays up behind its breaker makes its next try itself, retry_s
            # after a failed one (no exit, no restart): the instance times it (loadtests.stayup).
            # A start-up command that exited anyway is restarted as [restart] says.
            stays = self.inst.stays_up()
            ready = res.outcome == Outcome.READY
            final = ready or (not stays and attempt > sc.restart.restarts_allowed)
            self._fire(res)
            camp.report(
                make_record(
                    res,
                    run_id="",  # the writer's folder name, stamped where it is written
                    worker=camp.worker,
                    instance=self.instance_id,
                    final=final,
                )
            )
            if final:
                break
            if stays:
                continue
            from loadtests.container import restart_pause_s

            gevent.sleep(restart_pause_s(sc.restart, attempt, self.rng))
        while True:
            gevent.sleep(3600)  # ready (or given up): hold until the run ends

    def _fire(self, res) -> None:
        failed = res.outcome != Outcome.READY
        self.environment.events.request.fire(
            request_type="start",
            name="db_init" if res.attempt == 1 else "db_init (restart)",
            response_time=res.db_init_s * 1000.0,  # Locust wants milliseconds
            response_length=res.connections_opened,
            exception=StartFailed(f"{res.outcome} {res.reason} {res.sqlstate}".strip())
            if failed
            else None,
            context={"instance": self.instance_id, "attempt": res.attempt},
        )

    def on_stop(self) -> None:
        inst = getattr(self, "inst", None)
        if inst is not None and self.camp.settings.command:
            inst.close()
        elif inst is not None and self.camp.bridge is not None:
            self.camp.bridge.run(inst.close())


__all__ = ["ArrivalShape", "ColdStartUser"]
