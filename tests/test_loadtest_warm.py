"""Warm instances in a load campaign (``fleet.warm_instances``, docs/loadtests.md "Warm
instances"): their connections open before the first instance starts, stay held for the whole
campaign, close at the end and leave no record; against the throwaway PostgreSQL (17 free slots)
they cause the 53300 the model predicts. Each campaign is one instance for a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_loadtest import campaign

from loadtests.records import read_jsonl
from sim.engines import run_one
from sim.records import Outcome, Reason
from sim.scenario import load

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# One cold instance opening 2 connections the asyncpg way (the first alone, then the second),
# beside 8 warm instances holding 2 each: 16 of the server's 17 free slots (max_connections 20,
# 3 reserved) taken before it starts. Its first connection takes slot 17, its second gets 53300:
# rejected, no retry, no restart; peak 16 + 1 = 17. Without warm instances it is ready with 2.
SCENARIO = """
name = "{name}"
horizon_s = 30.0
[fleet]
instances = 1
warm_instances = {warm}
[startup]
before_db_s = {{ dist = "constant", value = 0.0 }}
db_init_timeout_s = 10.0
init_queries_s = {{ dist = "constant", value = 0.01 }}
after_db_s = {{ dist = "constant", value = 0.0 }}
[pool]
min_size = 2
max_size = 2
held_when_ready = 2
connect_timeout_s = 3.0
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
[restart]
policy = "none"
[connector]
min_instances = 1
max_instances = 2
setups_per_instance = 4
setup_s = {{ dist = "constant", value = 0.05 }}
scale_up_delay_s = {{ dist = "constant", value = 0.5 }}
"""


def scenario_file(tmp_path: Path, name: str, warm: int) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(SCENARIO.format(name=name, warm=warm), encoding="utf-8")
    return path


def test_the_model_predicts_the_rejection_the_warm_connections_cause(engine, tmp_path):
    warm = run_one(load(scenario_file(tmp_path, "w", 8)), 0, engine=engine)
    assert warm.attempts["outcome"] == [Outcome.REJECTED]
    assert warm.attempts["reason"] == [Reason.TOO_MANY_CLIENTS]
    assert warm.peak_db_connections == 17
    cold = run_one(load(scenario_file(tmp_path, "c", 0)), 0, engine=engine)
    assert cold.attempts["outcome"] == [Outcome.READY] and cold.peak_db_connections == 2


@pytest.mark.parametrize(
    "extra",
    [(), ("--via-emulator",), ("--workers", "1")],
    ids=["direct", "emulator", "master-holds-them"],
)
def test_warm_connections_are_held_before_the_first_start_and_cause_53300(
    pg_server, tmp_path, extra
):
    via_emulator = "--via-emulator" in extra
    extra = (*extra, "--seed", "3")
    run_dir, records = campaign(pg_server, tmp_path, scenario_file(tmp_path, "warm", 8), *extra)
    # One record: the cold instance's, rejected by the server as the model says; the warm
    # instances leave none. campaign() has checked that every connection was closed at the end.
    (rec,) = records
    assert (rec["instance"], rec["outcome"], rec["sqlstate"]) == (0, "rejected", "53300")
    assert rec["connection_attempts"] == 2 and rec["connections_opened"] == 1
    warm = json.loads((run_dir / "warm.json").read_text())
    held_from = warm.pop("held_from_unix_s")
    assert warm == {
        "warm_instances": 8,
        "held_when_ready": 2,
        "wanted": 16,
        "held": 16,
        "errors": [],
    }
    assert held_from <= rec["start_unix_s"]  # all 16 open before the instance started
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["peak_db_connections"]["max"] == 17  # 16 warm + the cold instance's 1
    # Held throughout: every connection sample of the process that holds them (a local run's
    # only process, or the master, worker −1) from then to the instance's end counts the 16.
    holder = -1 if "--workers" in extra else 0
    samples = read_jsonl(run_dir / "connections.jsonl")
    during = [s for s in samples if held_from <= s["t_unix_s"] <= rec["end_unix_s"]]
    assert all(s["open"] >= 16 for s in during if s["worker"] == holder)
    if via_emulator:  # through the connector, as an instance's, and before the instance's
        log = read_jsonl(run_dir / "emulator.jsonl")
        ready = [e for e in log if e["event"] == "connection" and e["stage"] == "ready"]
        before = [e for e in ready if e["t_unix_s"] <= rec["start_unix_s"]]
        assert len(before) == 16
        # At most the connector's 4 set-ups at once: none waited, no scale-out.
        assert not [e for e in log if e["event"] == "scale_out"]


def test_without_warm_instances_the_same_instance_is_ready(pg_server, tmp_path):
    run_dir, records = campaign(pg_server, tmp_path, scenario_file(tmp_path, "cold", 0))
    (rec,) = records
    assert rec["outcome"] == "ready"
    assert not (run_dir / "warm.json").exists()
