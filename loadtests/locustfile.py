"""The Locust side of a campaign: each user is one container instance's life.

Run by ``startsim loadtest`` (and ``startsim loadtest-worker`` on other hosts); settings come from
environment variables (see :class:`Settings`) so that a password never shows on a command line.
Local run: this process runs users and writes records. Distributed: workers run users and send
each record to the master, the single writer of the merged records, progress and Locust's CSVs.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import gevent
import numpy as np
from locust import User, events, task
from locust.runners import MasterRunner, WorkerRunner

from loadtests.arrivals import ArrivalPlan
from loadtests.records import CONNECTIONS_FILE, RECORDS_FILE, JsonlSink, make_record
from loadtests.shapes import ArrivalShape
from sim import scenario as scenarios
from sim.engine import ERROR, READY
from sim.output import write_json

SAMPLE_EVERY_S = 0.1
PROGRESS_FILE = "progress.json"
INSTANCE_STRIDE = 1_000_000  # instance ids: worker index × stride + the worker's own count


@dataclass(frozen=True)
class Settings:
    scenario_path: str
    dsn: str
    targets: dict  # {"host": [...], "port": [...]}: the checked addresses, passed to asyncpg
    run_id: str
    out_dir: Path | None  # only where records are written: the master, or a local run
    seed: int
    limit_s: float
    secrets: tuple[str, ...]

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        from loadtests.safety import dsn_password

        secrets = tuple(s for s in (dsn_password(env["STARTSIM_DSN"]), env.get("PGPASSWORD")) if s)
        out = env.get("STARTSIM_OUT")
        return cls(
            scenario_path=env["STARTSIM_SCENARIO"],
            dsn=env["STARTSIM_DSN"],
            targets=json.loads(env["STARTSIM_TARGETS"]),
            run_id=env.get("STARTSIM_RUN_ID", "run"),
            out_dir=Path(out) if out else None,
            seed=int(env.get("STARTSIM_SEED", "0")),
            limit_s=float(env.get("STARTSIM_LIMIT_S", "600")),
            secrets=secrets,
        )


class StartFailed(Exception):
    """Reported to Locust for a start attempt that did not become ready."""


class Campaign:
    """Per-process state: scenario, the asyncio bridge, counters and where records go."""

    def __init__(self, environment, settings: Settings) -> None:
        self.env, self.settings = environment, settings
        self.sc = scenarios.load(settings.scenario_path)
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
        if not self.is_worker and settings.out_dir is not None:
            self.records = JsonlSink(settings.out_dir / RECORDS_FILE)
            self.samples = JsonlSink(settings.out_dir / CONNECTIONS_FILE)
        if not self.is_master:
            from loadtests.bridge import AsyncioBridge
            from loadtests.container import Gauge

            self.bridge, self.gauge = AsyncioBridge(), Gauge()
        if self.is_master:
            self.runner.register_message("startsim_record", self._on_record_msg)
            self.runner.register_message("startsim_sample", self._on_sample_msg)
            self.runner.register_message("startsim_started", self._on_started_msg)

    # -- counting and writing (the master, or a local run) --------------------------------------
    def _on_record_msg(self, environment, msg, **_kw) -> None:
        self.write_record(msg.data)

    def _on_sample_msg(self, environment, msg, **_kw) -> None:
        if self.samples is not None:
            self.samples.write(msg.data)

    def _on_started_msg(self, environment, msg, **_kw) -> None:
        self.counts["started"] += 1

    def write_record(self, rec: dict) -> None:
        if self.records is not None:
            self.records.write(rec)
        self.counts["ready"] += rec["outcome"] == READY
        self.counts["failed_attempts"] += rec["outcome"] != READY
        self.counts["errors"] += rec["outcome"] == ERROR
        self.counts["finished"] += rec["final"]

    def finished(self) -> bool:
        return self.counts["finished"] >= self.sc.fleet.instances

    def write_progress(self) -> None:
        if self.settings.out_dir is not None:
            write_json(self.settings.out_dir / PROGRESS_FILE, dict(self.counts))

    # -- from users (a local run, or a worker) -------------------------------------------------
    def new_instance(self):
        from loadtests.container import Instance

        number = next(self._numbers)
        seq = np.random.SeedSequence(self.settings.seed, spawn_key=(self.worker, number))
        rng = np.random.default_rng(seq)
        inst = Instance(
            self.sc,
            self.settings.dsn,
            rng,
            self.gauge,
            self.settings.secrets,
            targets=self.settings.targets,
        )
        self.instances.append(inst)
        if self.is_worker:
            self.runner.send_message("startsim_started", None)
        else:
            self.counts["started"] += 1
        return self.worker * INSTANCE_STRIDE + number, inst

    def report(self, rec: dict) -> None:
        if self.is_worker:
            self.runner.send_message("startsim_record", rec)
        else:
            self.write_record(rec)

    def sample(self) -> None:
        rec = {
            "t_unix_s": round(time.time(), 3),
            "worker": self.worker,
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
        """Close every connection of every instance in this process (idempotent)."""
        if self.bridge is None or not self.instances:
            return
        insts, self.instances = self.instances, []

        async def close():
            await asyncio.gather(*(i.close() for i in insts), return_exceptions=True)

        self.bridge.run(close())


CAMPAIGN: Campaign | None = None


@events.init.add_listener
def _on_init(environment, **_kw) -> None:
    global CAMPAIGN
    if "STARTSIM_SCENARIO" not in os.environ:
        return
    CAMPAIGN = camp = Campaign(environment, Settings.from_env())
    ArrivalShape.plan = ArrivalPlan.for_scenario(camp.sc, camp.settings.seed)
    ArrivalShape.limit_s = camp.settings.limit_s
    ArrivalShape.finished = staticmethod(camp.finished)
    gevent.spawn(_housekeeping, camp)


def _housekeeping(camp: Campaign) -> None:
    """Connection samples every 0.1 s (users' processes), progress every second (the writer)."""
    for n in itertools.count():
        if camp.gauge is not None:
            camp.sample()
        if n % 10 == 0:
            camp.write_progress()
        gevent.sleep(SAMPLE_EVERY_S)


@events.test_start.add_listener
def _on_test_start(**_kw) -> None:
    if CAMPAIGN is not None:
        CAMPAIGN.t0 = time.monotonic()  # the horizon counts from the start, not from process start


@events.test_stop.add_listener
def _on_test_stop(**_kw) -> None:
    if CAMPAIGN is not None:
        CAMPAIGN.close_all()
        if CAMPAIGN.gauge is not None:
            CAMPAIGN.sample()
        CAMPAIGN.write_progress()


@events.quitting.add_listener
def _on_quitting(**_kw) -> None:
    _on_test_stop()


class ColdStartUser(User):
    """One container instance: start attempts with restarts, then hold the pool until the end."""

    def on_start(self) -> None:
        self.instance_id, self.inst = CAMPAIGN.new_instance()

    @task
    def life(self) -> None:
        camp, sc = CAMPAIGN, CAMPAIGN.sc
        for attempt in itertools.count(1):
            if camp.elapsed_s() >= sc.horizon_s:
                break  # no new start after the horizon, as in the model
            res = camp.bridge.run(self.inst.attempt(attempt))
            final = res.outcome == READY or attempt > sc.restart.restarts_allowed
            self._fire(res)
            camp.report(
                make_record(
                    res,
                    run_id=camp.settings.run_id,
                    worker=camp.worker,
                    instance=self.instance_id,
                    final=final,
                )
            )
            if final:
                break
            gevent.sleep(sc.restart.backoff_s(attempt))
        while True:
            gevent.sleep(3600)  # ready (or given up): hold until the run ends

    def _fire(self, res) -> None:
        failed = res.outcome != READY
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
        if inst is not None and CAMPAIGN.bridge is not None:
            CAMPAIGN.bridge.run(inst.close())


__all__ = ["ArrivalShape", "ColdStartUser"]
