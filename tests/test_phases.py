"""Start-up phases (docs/model.md, "Start-up phases"), hand-computed on both engines.

The incident's start-up (R5, R6): migrations through psycopg2 whose failure was logged and
ignored, then in phase 3 a table check bounded by its own timeout inside the database-init
deadline, then a schema validation on a second engine. Durations are binary fractions, so times
compare with ``==``. Every connection takes set-up 1 + accept 0.5 = 1.5 s unless said otherwise.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from builders import WAIT_FOR_SCALE_OUT, const, scenario, uniform
from test_engine_exact import attempts, held_at_the_end

from sim.engines import run_one
from sim.errors import ScenarioError
from sim.records import ATTEMPT_COLUMNS
from sim.scenario import loads

MIGRATIONS = {
    "name": "migrations",
    "db_init": False,
    "connections": 1,
    "keep": False,
    "on_failure": "continue",
    "duration_s": const(0.25),
}
TABLE_CHECK = {
    "name": "table_check",
    "connections": 1,
    "deadline_s": 10.0,
    "duration_s": const(0.5),
}
SCHEMA = {"name": "schema", "connections": 1, "duration_s": const(0.25)}
REST = {"name": "rest", "duration_s": const(1.0)}
INCIDENT = [MIGRATIONS, TABLE_CHECK, SCHEMA, REST]

TIMED = {
    "startup.before_db_s": const(2.0),
    "connector.setup_s": const(1.0),
    "database.accept_s": const(0.5),
    "pool.held_when_ready": 2,
}


def test_the_incidents_start_up_reaches_ready_at_the_hand_computed_time(engine):
    # before_db 2 → migrations from 2: its connection open at 3.5, work 0.25 → ends 3.75 and
    # closes it (keep = false). Database init begins at 3.75: table_check's connection open at
    # 5.25, work 0.5 → 5.75; schema's open at 7.25, work 0.25 → 7.5; rest 1.0 → 8.5.
    # db_init_s = 8.5 − 3.75 = 4.75; three connections tried; the two kept stay held.
    sc = scenario({**TIMED, "startup.phases": INCIDENT})
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_start_s"], row["db_init_s"]) == (
        "ready",
        "",
        3.75,
        4.75,
    )
    assert (row["connection_attempts"], row["connections_held"], row["pool_starts"]) == (3, 2, 0)
    assert (row["phase"], row["phase_start_s"]) == ("", 3.75)
    assert held_at_the_end(sc) == 2


def test_a_refusing_database_fails_the_migrations_quietly_and_the_table_check_for_good(engine):
    # One slot. Instance 0 (at 0) goes through as above without schema: migrations 2 → 3.75,
    # table_check 3.75 → 5.75 holding the slot, rest → ready at 6.75, keeping that connection
    # (held_when_ready 1) for the rest of the run. Instance 1 starts at 50: migrations from 52,
    # refused at 53.5 (53300) and ignored; database init begins at once, at 53.5; table_check's
    # connection is refused at 55.0: exit, rejected, db_init_s 1.5.
    sc = scenario(
        {
            **TIMED,
            "pool.held_when_ready": 1,
            "fleet.instances": 2,
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": 0.0, "count": 1}, {"at_s": 50.0, "count": 1}],
            "database.max_connections": 1,
            "startup.phases": [MIGRATIONS, TABLE_CHECK, REST],
        }
    )
    first, second = attempts(sc, engine)
    assert (first["instance"], first["outcome"], first["db_init_s"]) == (0, "ready", 3.0)
    assert (second["instance"], second["outcome"], second["reason"]) == (1, "rejected", "53300")
    assert (second["db_init_start_s"], second["db_init_s"]) == (53.5, 1.5)
    assert (second["phase"], second["phase_start_s"], second["connection_attempts"]) == (
        "table_check",
        53.5,
        2,
    )


def test_the_table_checks_own_deadline_fires_before_its_connect_timeout(engine):
    # A path that never completes a set-up in time: set-up 30 s, connect timeout 20 s. Migrations
    # from 2: connect timeout at 22, ignored. Database init (deadline 25 s) begins at 22;
    # table_check's bound is min(22 + 10, 22 + 25) = 32, before its connection's timeout at 42:
    # timeout by phase_deadline, db_init_s 10.0 (the incident's logs: the failure ≈ 10.2 s after
    # the migration failure, R6).
    sc = scenario(
        {
            **TIMED,
            "connector.setup_s": const(30.0),
            "pool.connect_timeout_s": 20.0,
            "startup.db_init_timeout_s": 25.0,
            "startup.phases": INCIDENT,
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_start_s"], row["db_init_s"]) == (
        "timeout",
        "phase_deadline",
        22.0,
        10.0,
    )
    assert (row["phase"], row["phase_start_s"], row["connection_attempts"]) == (
        "table_check",
        22.0,
        2,
    )


@pytest.mark.parametrize(
    ("deadline_s", "second"),
    [
        # Instance 1's connection is refused at 1.5; the pause ends at 2.5, before the bound 10:
        # opened again at 2.5 (instance 0 closed its connection at 1.75), open at 4.0, work 0.25.
        (10.0, ("ready", "", 4.25, 2)),
        # Bound 2.0: the pause would end at 2.5, not before it: the phase waits for its bound.
        (2.0, ("timeout", "phase_deadline", 2.0, 1)),
    ],
)
def test_a_phase_retries_a_refused_connection_within_its_bound(deadline_s, second, engine):
    # Two instances at once, one slot, no time before the database. Both connections reach the
    # server at 1.5; instance 0's (opened first) takes the slot, works 0.25 and closes it at
    # 1.75 (keep = false): ready, db_init_s 1.75.
    check = {
        "name": "table_check",
        "connections": 1,
        "keep": False,
        "deadline_s": deadline_s,
        "duration_s": const(0.25),
        "retry_backoff_s": 1.0,
    }
    sc = scenario(
        {
            **TIMED,
            "startup.before_db_s": const(0.0),
            "pool.held_when_ready": 0,
            "fleet.instances": 2,
            "database.max_connections": 1,
            "startup.phases": [check],
        }
    )
    rows = attempts(sc, engine)
    first = next(r for r in rows if r["instance"] == 0)
    other = next(r for r in rows if r["instance"] == 1)
    assert (first["outcome"], first["db_init_s"], first["connection_attempts"]) == (
        "ready",
        1.75,
        1,
    )
    got = (other["outcome"], other["reason"], other["db_init_s"], other["connection_attempts"])
    assert got == second


def test_concurrent_connections_open_together_and_sequential_ones_in_turn(engine):
    # Three connections of 1.5 s each: at once, open by 1.5; one after another, by 4.5.
    for order, db_init_s in (("concurrent", 1.5), ("sequential", 4.5)):
        phase = {"name": "engines", "connections": 3, "order": order}
        sc = scenario({**TIMED, "pool.held_when_ready": 3, "startup.phases": [phase]})
        (row,) = attempts(sc, engine)
        assert (row["outcome"], row["db_init_s"], row["connections_held"]) == (
            "ready",
            db_init_s,
            3,
        )


def test_no_phases_keeps_todays_records_with_empty_phase_columns(engine):
    sc = scenario({**WAIT_FOR_SCALE_OUT, "startup.db_init_timeout_s": 40.0})
    rows = attempts(sc, engine, seed=3)
    assert rows and all(r["phase"] == "" for r in rows)
    assert all(r["phase_start_s"] == r["db_init_start_s"] for r in rows)
    assert set(ATTEMPT_COLUMNS[-2:]) == {"phase", "phase_start_s"}


def test_one_pool_phase_is_todays_database_init(engine):
    # A single pool phase whose work is init_queries_s' value runs exactly today's model: same
    # draws in every role, same records but the phase columns of the failed attempts.
    base = {
        **WAIT_FOR_SCALE_OUT,
        "connector.setup_s": uniform(20.0, 40.0),
        "startup.db_init_timeout_s": 40.0,
        "pool.retry_backoff_s": 7.0,
        "restart.policy": "fixed",
        "restart.max_restarts": 3,
    }
    phase = {"name": "pool", "pool": True, "duration_s": const(0.25)}
    for seed in range(6):
        today = run_one(scenario(base), seed, engine=engine).attempts
        phased = run_one(scenario({**base, "startup.phases": [phase]}), seed, engine=engine)
        for key in ATTEMPT_COLUMNS[:-2]:  # as text: a failed attempt's ready_s is NaN
            assert list(map(repr, phased.attempts[key])) == list(map(repr, today[key])), key
        failed = [o != "ready" for o in today["outcome"]]
        assert phased.attempts["phase"] == ["pool" if f else "" for f in failed]


@pytest.mark.parametrize(
    ("phases", "field"),
    [
        ([{"name": "a"}, {"name": "a"}], "startup.phases.1.name"),
        ([{"name": "a", "pool": True}, {"name": "b", "pool": True}], "startup.phases.1.pool"),
        ([{"name": "a"}, {"name": "b", "db_init": False}], "startup.phases.1.db_init"),
        ([{"name": "a", "db_init": False}], "startup.phases"),
        ([{"name": "a", "deadline_s": 0.0}], "startup.phases.0.deadline_s"),
        ([{"name": "a", "on_failure": "ignore"}], "startup.phases.0.on_failure"),
        ([{"name": "a", "pool": True, "connections": 2}], "startup.phases.0.connections"),
        (
            [
                {"name": "m", "db_init": False, "connections": 1, "retry_backoff_s": 1.0},
                {"name": "b"},
            ],
            "startup.phases.0.retry_backoff_s",
        ),
    ],
)
def test_bad_phases_are_refused_naming_the_field(phases, field):
    with pytest.raises(ScenarioError) as err:
        scenario({"startup.phases": phases})
    assert err.value.field == field


def test_the_documented_example_is_a_valid_phase_list(engine):
    doc = (Path(__file__).parent.parent / "docs" / "scenario.md").read_text(encoding="utf-8")
    (example,) = [b for b in re.findall(r"```toml\n(.*?)```", doc, re.S) if "[[startup" in b]
    sc = loads('name = "doc"\n' + example)
    assert [ph.name for ph in sc.startup.phases] == ["migrations", "table_check", "schema", "rest"]
    assert run_one(sc, 0, engine=engine).attempts["outcome"]  # it runs
