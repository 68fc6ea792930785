"""Circuit breakers (docs/model.md, "Circuit breakers"), hand-computed.

Each test's comment is the computation, following the rules of docs/model.md. Durations are whole
seconds, so times are exact and the checks use ``==``. The base scenario (tests/builders.py) is one
instance, zero durations, room everywhere, no retry and no restart. Failed tries come from a path
that resets every connection opened in a window (``path.fault = "reset"``, ``p_fault = 1``, each
reset ``fail_after_s`` = 1 s after the connection opens), or from a database with one slot. The
hand-computed cases run on both engines.
"""

from __future__ import annotations

import pytest
from builders import const, scenario
from cli_helpers import call_main

from sim import streams
from sim.breaker import CLOSED, HALF_OPEN, OPEN, Breaker, BreakerState
from sim.engine import replication_key
from sim.engines import run_one
from sim.records import Outcome, Reason

ENGINES = ["reference", "fast"]


def rows(sc, engine: str, seed: int = 0) -> list[dict]:
    """The attempt records in the order they ended, one dict each."""
    cols = run_one(sc, seed, engine=engine).attempts
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def of(records: list[dict], instance: int) -> list[tuple]:
    """One instance's records: (attempt, start_s, db_init_start_s, end, outcome)."""
    return [
        (
            r["attempt"],
            r["start_s"],
            r["db_init_start_s"],
            r["db_init_start_s"] + r["db_init_s"],
            r["outcome"],
        )
        for r in records
        if r["instance"] == instance
    ]


def resets_until(until_s: float) -> dict:
    """Every connection opened in [0, until_s) is reset 1 s after it opens."""
    return {
        "path.fault": "reset",
        "path.p_fault": 1.0,
        "path.from_s": 0.0,
        "path.until_s": until_s,
        "path.fail_after_s": const(1.0),
    }


def breaker(form: str, **fields) -> dict:
    return {"breaker.form": form, **{f"breaker.{k}": v for k, v in fields.items()}}


ERR, READY = Outcome.ERROR, Outcome.READY


# -- BreakerState ------------------------------------------------------------------------------


def test_a_closed_breaker_opens_at_the_fail_max_th_failure_in_a_row():
    b = BreakerState(fail_max=3, reset_timeout_s=10.0)
    assert b.admits(0.0) and not b.failed(1.0) and not b.failed(2.0)
    b.succeeded()  # a ready try: the count back to 0
    assert (b.state, b.fails) == (CLOSED, 0)
    assert not b.failed(3.0) and not b.failed(4.0)
    assert b.failed(5.0)  # the third in a row: open until 5 + 10
    assert (b.state, b.open_until, b.opened) == (OPEN, 15.0, 1)


def test_an_open_breaker_refuses_until_its_time_then_turns_half_open():
    b = BreakerState(fail_max=1, reset_timeout_s=10.0)
    assert b.failed(0.0)  # open until 10
    assert not b.admits(9.5) and b.state == OPEN
    assert b.wait_until(0.0, 0.0) == 10.0
    assert b.wait_until(0.5, 0.2) == 10.0 + 10.0 * 0.2 * 0.5  # 11
    assert b.admits(10.0) and b.state == HALF_OPEN
    assert b.admits(10.0)  # half-open lets every caller through


def test_half_open_the_first_try_to_end_decides():
    b = BreakerState(fail_max=2, reset_timeout_s=10.0)
    b.failed(0.0)
    b.failed(1.0)  # open until 11
    b.admits(11.0)
    b.succeeded()  # ready: closed, count 0; one failure does not open it again
    assert (b.state, b.fails) == (CLOSED, 0)
    assert not b.failed(12.0)
    b.failed(13.0)  # open until 23
    b.admits(23.0)
    assert b.failed(24.0)  # a half-open failure opens it at once, until 34
    assert (b.state, b.open_until, b.opened) == (OPEN, 34.0, 3)
    assert not b.failed(25.0)  # a try that ends while open changes nothing
    b.succeeded()
    assert (b.state, b.open_until, b.opened) == (OPEN, 34.0, 3)  # opened at 1, 13, 24


def test_in_process_tries_once_per_process_so_its_tries_bound_is_one():
    assert Breaker(form="in_process", fail_max=1).tries_bound(600.0) == 1
    # stay_up: fail_max, then one per open time; shared: one per retry_s.
    assert Breaker(form="stay_up", fail_max=5, reset_timeout_s=60.0).tries_bound(600.0) == 16
    assert Breaker(form="shared", retry_s=2.0).tries_bound(600.0) == 301


# -- the engines ---------------------------------------------------------------------------------


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("fail_max", [1, 5])
def test_in_process_gives_the_records_of_no_breaker(engine, fail_max):
    # The process exits after each failed try and restarts as before ([restart]): its breaker,
    # new in each process, never counts past 1. Random durations and a jittered restart: the
    # same draws, so the same records, with any fail_max.
    base = {
        **resets_until(20.0),
        "fleet.instances": 3,
        "startup.before_db_s": {"dist": "uniform", "low": 0.0, "high": 2.0},
        "restart.policy": "exponential",
        "restart.initial_backoff_s": 1.0,
        "restart.jitter": 0.5,
    }
    none = run_one(scenario(base), 3, engine=engine)
    with_breaker = run_one(
        scenario({**base, **breaker("in_process", fail_max=fail_max)}), 3, engine=engine
    )
    assert with_breaker.attempts == none.attempts
    assert with_breaker.fleet_ready_s == none.fleet_ready_s


@pytest.mark.parametrize("engine", ENGINES)
def test_stay_up_opens_after_fail_max_failures_then_tries_once_per_reset_timeout(engine):
    # fail_max 3, reset_timeout 10, retry_s 1; connections opened before 30 are reset 1 s later.
    # Tries 1-3 begin at 0, 2, 4 (each 1 s after the last failure, no before_db draw) and fail
    # at 1, 3, 5: the third opens the breaker until 15. Try 4 is due at 6, refused, begins at 15
    # (half-open) and fails at 16: open again until 26. Try 5 (due 17) begins at 26, fails at 27:
    # open until 37. Try 6 (due 28) begins at 37, past the window: ready at 37. No restart, no
    # exit: the process is the same one (no restart policy is set).
    sc = scenario({**resets_until(30.0), **breaker("stay_up", fail_max=3, reset_timeout_s=10.0)})
    assert of(rows(sc, engine), 0) == [
        (1, 0.0, 0.0, 1.0, ERR),
        (2, 2.0, 2.0, 3.0, ERR),
        (3, 4.0, 4.0, 5.0, ERR),
        (4, 6.0, 15.0, 16.0, ERR),
        (5, 17.0, 26.0, 27.0, ERR),
        (6, 28.0, 37.0, 37.0, READY),
    ]
    assert all(r["reason"] in ("", Reason.RESET) for r in rows(sc, engine))
    assert run_one(sc, 0, engine=engine).fleet_ready_s == 37.0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stay_up_try_after_the_first_has_no_before_db(engine):
    # before_db 5, one slot and a 30 s exit_release_s (unused: the process does not exit).
    # Two instances at 0, each min_size 1: instance 0 takes the slot at 5, its queries take 3
    # (ready at 8); instance 1 is refused at 5 (53300). Its next try is at 6, with no before_db:
    # refused again (the slot is held by instance 0 for good), 7, 8 ... With fail_max 2 and
    # reset_timeout 4: failures at 5, 6 open it until 10; due at 7, begins at 10, fails (open
    # until 14); due at 11, begins at 14 ... So its tries begin at 5, 6, 10, 14, 18.
    sc = scenario(
        {
            **breaker("stay_up", fail_max=2, reset_timeout_s=4.0),
            "horizon_s": 20.0,
            "startup.db_init_timeout_s": 10.0,
            "fleet.instances": 2,
            "startup.before_db_s": const(5.0),
            "startup.init_queries_s": const(3.0),
            "database.max_connections": 1,
            "restart.exit_release_s": 30.0,
        }
    )
    records = rows(sc, engine)
    assert of(records, 0) == [(1, 0.0, 5.0, 8.0, READY)]
    rej = Outcome.REJECTED
    assert of(records, 1) == [
        (1, 0.0, 5.0, 5.0, rej),
        (2, 6.0, 6.0, 6.0, rej),
        (3, 7.0, 10.0, 10.0, rej),
        (4, 11.0, 14.0, 14.0, rej),
        (5, 15.0, 18.0, 18.0, rej),
    ]  # try 6 is due at 19 and would begin at 22, after the horizon: no record


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stay_up_process_frees_its_slot_at_once_where_an_exit_frees_it_late(engine):
    # One slot; instance 0 holds it and fails at 0 (its second connection is refused: min_size
    # 2, asyncpg, no retry; on_failure "hold": the pool keeps the first, the record counts the
    # connections held when the try failed). Exiting, its slot stays taken for exit_release_s
    # = 5; staying up, it is freed at once (its next try is 10 s later, after the horizon).
    # Instance 1 arrives at 0.5: its first connection finds the slot free only when staying up.
    base = {
        "fleet.instances": 2,
        "fleet.arrival": "waves",
        "fleet.waves": [{"at_s": 0.0, "count": 1}, {"at_s": 0.5, "count": 1}],
        "pool.min_size": 2,
        "pool.held_when_ready": 1,
        "pool.on_failure": "hold",
        "database.max_connections": 1,
        "restart.exit_release_s": 5.0,
        "horizon_s": 3.0,
        "startup.db_init_timeout_s": 2.0,
    }
    # staying up: instance 1 holds its first connection at 0.5, and its second is refused.
    records = rows(scenario({**base, **breaker("stay_up", retry_s=10.0)}), engine)
    first = next(r for r in records if r["instance"] == 1)
    assert (first["outcome"], first["connections_held"]) == (Outcome.REJECTED, 1)
    # exiting: instance 1's first connection is refused at 0.5, the slot still held.
    records = rows(scenario({**base, **breaker("in_process")}), engine)
    first = next(r for r in records if r["instance"] == 1)
    assert (first["outcome"], first["connections_held"]) == (Outcome.REJECTED, 0)


@pytest.mark.parametrize("engine", ENGINES)
def test_half_open_success_closes_the_breaker_and_sets_its_count_to_zero(engine):
    # shared, fail_max 2, reset 10; one slot; instance A at 0, B at 20. A's connections before 3
    # are reset: A fails at 1 (count 1), tries at 2, fails at 3 (count 2: open until 13), is due
    # at 4, begins at 13 (half-open), takes the slot: ready at 13, which closes the breaker.
    # B arrives at 20: refused (53300, A holds the only slot): count 1, still closed; so its
    # try 2, due at 21, begins at once (with the count not set back to 0 it would have waited
    # until 30). Its failure at 21 opens it until 31: try 3 (due 22) begins at 31.
    sc = scenario(
        {
            **resets_until(3.0),
            **breaker("shared", fail_max=2, reset_timeout_s=10.0),
            "horizon_s": 35.0,
            "startup.db_init_timeout_s": 10.0,
            "fleet.instances": 2,
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": 0.0, "count": 1}, {"at_s": 20.0, "count": 1}],
            "database.max_connections": 1,
        }
    )
    records = rows(sc, engine)
    assert of(records, 0) == [
        (1, 0.0, 0.0, 1.0, ERR),
        (2, 2.0, 2.0, 3.0, ERR),
        (3, 4.0, 13.0, 13.0, READY),
    ]
    rej = Outcome.REJECTED
    assert of(records, 1) == [
        (1, 20.0, 20.0, 20.0, rej),
        (2, 21.0, 21.0, 21.0, rej),
        (3, 22.0, 31.0, 31.0, rej),
    ]  # try 4, due at 32, would begin at 41: after the horizon


@pytest.mark.parametrize("engine", ENGINES)
def test_shared_counts_the_fleets_failures_together_and_blocks_every_instance(engine):
    # fail_max 3, reset 10; connections before 12 are reset. Instances 0 and 1 at 0, 2 at 5.
    # shared: 0 and 1 fail at 1 (count 2), try again at 2 and fail at 3: instance 0's failure
    # opens the breaker until 13 (instance 1's, while open, changes nothing). Both are due at 4
    # and wait until 13; instance 2 arrives at 5 and waits too. At 13 all three begin (half-open
    # passes everyone), past the window: ready at 13.
    # stay_up, each its own breaker: 0 and 1 fail at 1, 3 and 5 (the third opens theirs until
    # 15), and become ready at 15; instance 2 tries at 5 (its breaker is closed): reset at 6, at
    # 8 and at 10 (open until 20), due at 11: ready at 20.
    base = {
        **resets_until(12.0),
        "fleet.instances": 3,
        "fleet.arrival": "waves",
        "fleet.waves": [{"at_s": 0.0, "count": 2}, {"at_s": 5.0, "count": 1}],
    }
    shared = rows(scenario({**base, **breaker("shared", fail_max=3, reset_timeout_s=10.0)}), engine)
    for inst in (0, 1):
        assert of(shared, inst) == [
            (1, 0.0, 0.0, 1.0, ERR),
            (2, 2.0, 2.0, 3.0, ERR),
            (3, 4.0, 13.0, 13.0, READY),
        ]
    assert of(shared, 2) == [(1, 5.0, 13.0, 13.0, READY)]
    own = rows(scenario({**base, **breaker("stay_up", fail_max=3, reset_timeout_s=10.0)}), engine)
    for inst in (0, 1):
        assert [r[2:] for r in of(own, inst)][-1] == (15.0, 15.0, READY)
    assert of(own, 2) == [
        (1, 5.0, 5.0, 6.0, ERR),
        (2, 7.0, 7.0, 8.0, ERR),
        (3, 9.0, 9.0, 10.0, ERR),
        (4, 11.0, 20.0, 20.0, READY),
    ]


@pytest.mark.parametrize("engine", ENGINES)
def test_open_jitter_spreads_the_waits_one_draw_per_wait(engine):
    # Four instances at 0, each its own breaker (stay_up), fail_max 1, reset 10, open_jitter 0.5;
    # connections before 1 are reset. Each fails at 1 (open until 11) and is due at 2, refused:
    # one breaker_jitter draw each, in the order they asked (instance 0 first), so instance i
    # waits until 11 + 10 × 0.5 × u_i and is ready then. Without jitter, all at 11.
    base = {**resets_until(1.0), "fleet.instances": 4}
    sc = scenario({**base, **breaker("stay_up", fail_max=1, reset_timeout_s=10.0, open_jitter=0.5)})
    state = streams.stream_state(replication_key(7), streams.ROLES.index("breaker_jitter"))
    u = [streams.unit(state, k) for k in range(4)]
    records = rows(sc, engine, seed=7)
    for i in range(4):
        assert of(records, i)[-1][2:] == (11.0 + 5.0 * u[i], 11.0 + 5.0 * u[i], READY)
    assert len({of(records, i)[-1][2] for i in range(4)}) == 4
    flat = scenario({**base, **breaker("stay_up", fail_max=1, reset_timeout_s=10.0)})
    assert {of(rows(flat, engine, seed=7), i)[-1][2] for i in range(4)} == {11.0}


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stay_up_process_draws_its_direct_egress_once(engine):
    # Direct VPC egress usable 2 s after the process starts (one draw per instance, not per
    # try); connections before 3 are reset (the path fails them before the egress). Try 1 (0)
    # fails at 1, try 2 (retry_s 1: at 2) at 3; try 3 (at 4) goes straight on, the egress
    # usable since 2: ready at 4. A new egress per try would have made it wait to 6.
    sc = scenario(
        {
            **resets_until(3.0),
            **breaker("stay_up"),
            "egress.kind": "direct",
            "egress.ready_s": const(2.0),
        }
    )
    assert of(rows(sc, engine), 0) == [
        (1, 0.0, 0.0, 1.0, ERR),
        (2, 2.0, 2.0, 3.0, ERR),
        (3, 4.0, 4.0, 4.0, READY),
    ]


# -- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "toml, field, value",
    [
        ('[breaker]\nform = "sometimes"\n', "breaker.form", "sometimes"),
        ('[breaker]\nform = "stay_up"\nfail_max = 0\n', "breaker.fail_max", "0"),
        ('[breaker]\nform = "shared"\nopen_jitter = 1.5\n', "breaker.open_jitter", "1.5"),
        ("[breaker]\nfail_max = 3\n", "breaker.fail_max", "3"),
        (
            '[breaker]\nform = "stay_up"\n[pooler]\nkind = "pgbouncer"\n',
            "breaker.form",
            "stay_up",
        ),
    ],
)
def test_bad_breakers_are_refused_naming_the_field(
    tmp_path, capsys, monkeypatch, toml, field, value
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.toml").write_text(f'name = "bad"\nhorizon_s = 60.0\n{toml}', encoding="utf-8")
    assert call_main("simulate", "bad.toml", "-n", "2", "--out", "out") == 2
    err = capsys.readouterr().err
    assert field in err and value in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()
