"""Warm instances (``fleet.warm_instances``, docs/model.md "Entities"): instances already running
and ready at t = 0 hold ``pool.held_when_ready`` database slots each for the whole run, make no
start attempt and leave no record. Hand-computed cases on both engines (the ``engine`` fixture),
and the exit-2 refusal of more warm connections than the free slots."""

from __future__ import annotations

import math

import pytest
from builders import const, scenario
from cli_helpers import call_main

from sim.engines import run_one
from sim.errors import ScenarioError
from sim.records import Outcome, Reason
from sim.scenario import loads


def rows(sc, engine: str) -> list[dict]:
    cols = run_one(sc, 0, engine=engine).attempts
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def test_the_warm_instances_slots_are_taken_from_t_0_and_count_in_the_peak(engine):
    # 2 warm instances × held_when_ready 3 = 6 connections held from t = 0. One cold instance
    # opens min_size 3 and keeps 3 (everything takes no time, 10,000 slots): the peak is
    # 6 + 3 = 9 (3 without the warm ones), and the readable engine's timeline starts at 6.
    cold = {"pool.min_size": 3, "pool.held_when_ready": 3}
    sc = scenario({**cold, "fleet.warm_instances": 2})
    assert sc.warm_held == 6
    assert run_one(sc, 0, engine=engine).peak_db_connections == 9
    assert run_one(scenario(cold), 0, engine=engine).peak_db_connections == 3
    timeline = run_one(sc, 0, timeline=True).timeline
    assert (timeline["t"][0], timeline["db_connections"][0]) == (0.0, 6)
    assert timeline["db_connections"][-1] == 9
    assert min(timeline["db_connections"]) == 6  # never released


def test_the_warm_instances_held_slots_cause_a_53300(engine):
    # max_connections 10, nothing reserved: 4 warm instances × 2 held = 8 slots taken at t = 0,
    # 2 left. One cold instance: before_db 1, accept 0.5, pool min_size 3 by asyncpg (the first
    # alone, then the other two at once), no retry, no restart.
    #   t = 1    database init begins; the first connection reaches the server, accepted at 1.5:
    #            slot 9 of 10
    #   t = 1.5  the other two open; both accepted at 2: the first takes slot 10, the second
    #            finds none: 53300, the pool start fails, the container exits: rejected at 2,
    #            db_init_s = 2 − 1 = 1, 3 connections tried.
    # Peak 8 + 2 = 10. Without the warm instances the same instance is ready at 2 (peak 3).
    cold = {
        "database.max_connections": 10,
        "startup.before_db_s": const(1.0),
        "database.accept_s": const(0.5),
        "pool.min_size": 3,
        "pool.held_when_ready": 2,
    }
    sc = scenario({**cold, "fleet.warm_instances": 4})
    (row,) = rows(sc, engine)
    assert (row["outcome"], row["reason"]) == (Outcome.REJECTED, Reason.TOO_MANY_CLIENTS)
    assert (row["db_init_start_s"], row["db_init_s"]) == (1.0, 1.0)
    assert row["connection_attempts"] == 3
    assert run_one(sc, 0, engine=engine).peak_db_connections == 10
    (alone,) = rows(scenario(cold), engine)
    assert alone["outcome"] == Outcome.READY and alone["db_init_s"] == 1.0
    assert run_one(scenario(cold), 0, engine=engine).peak_db_connections == 3


def test_warm_instances_leave_no_record_and_no_start(engine):
    # 5 warm instances beside 2 cold ones, room for all: only the 2 cold ones start, each once,
    # and their records are those of the run without warm instances, value for value; the
    # replication counts 2 instances ready, and only the peak moves (5 × 1 held + 2).
    cold = {"fleet.instances": 2, "startup.before_db_s": const(0.5)}
    warm = run_one(scenario({**cold, "fleet.warm_instances": 5}), 0, engine=engine)
    alone = run_one(scenario(cold), 0, engine=engine)
    assert warm.attempts == alone.attempts
    assert sorted(warm.attempts["instance"]) == [0, 1]
    assert warm.instances_ready == alone.instances_ready == 2
    assert warm.fleet_ready_s == alone.fleet_ready_s == 0.5
    assert warm.connection_attempts == alone.connection_attempts == 2
    assert (warm.peak_db_connections, alone.peak_db_connections) == (7, 2)


def test_warm_instances_filling_every_free_slot_reject_every_cold_connection(engine):
    # 100 − 3 reserved − 7 others = 90 free; 9 warm × 10 held = 90: allowed, and the cold
    # instance's first connection finds no slot: rejected at t = 0. The peak stays 90.
    sc = scenario(
        {
            "database.max_connections": 100,
            "database.reserved_connections": 3,
            "database.other_connections": 7,
            "pool.held_when_ready": 10,
            "fleet.warm_instances": 9,
        }
    )
    (row,) = rows(sc, engine)
    assert (row["outcome"], row["reason"]) == (Outcome.REJECTED, Reason.TOO_MANY_CLIENTS)
    assert math.isnan(row["ready_s"])
    assert run_one(sc, 0, engine=engine).peak_db_connections == 90


def test_more_warm_connections_than_free_slots_is_refused_naming_the_field_and_the_numbers():
    # 91 free slots (100 − 3 − 6); 10 warm × 10 held = 100 > 91.
    over = {
        "database.max_connections": 100,
        "database.reserved_connections": 3,
        "database.other_connections": 6,
        "pool.held_when_ready": 10,
        "fleet.warm_instances": 10,
    }
    with pytest.raises(ScenarioError) as err:
        scenario(over)
    message = str(err.value)
    assert "fleet.warm_instances = 10" in message
    assert "100 connections" in message and "91 free slots" in message
    # A range whose end does not fit is refused at the range.
    text = (
        'name = "w"\n[fleet]\nwarm_instances = { range = [0, 10] }\n'
        "[pool]\nheld_when_ready = 10\n[database]\nmax_connections = 100\n"
    )
    with pytest.raises(ScenarioError, match=r"fleet\.warm_instances\.range"):
        loads(text)
    with pytest.raises(ScenarioError, match=r"fleet\.warm_instances = -1"):
        scenario({"fleet.warm_instances": -1})


def test_the_cli_exits_2_on_too_many_warm_connections(tmp_path, capsys):
    path = tmp_path / "warm.toml"
    path.write_text(
        'name = "warm"\n[fleet]\nwarm_instances = 5\n[pool]\nheld_when_ready = 20\n'
        "[database]\nmax_connections = 100\n",
        encoding="utf-8",
    )
    assert call_main("simulate", str(path), "-n", "1") == 2
    err = capsys.readouterr().err
    assert "fleet.warm_instances" in err and "Traceback" not in err
    assert "100 connections" in err and "97 free slots" in err


def test_a_fitting_range_of_warm_instances_is_an_uncertain_integer():
    sc = loads('name = "w"\n[fleet]\nwarm_instances = { range = [0, 2] }\n')
    assert sc.fleet.warm_instances == 1 and "fleet.warm_instances" in sc.uncertain
