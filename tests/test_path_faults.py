"""Path faults (docs/model.md, "Path faults"), hand-computed on both engines.

Each test's comment is the computation, following the rules of docs/model.md. Durations are
binary fractions or whole seconds, so times are exact and the checks use ``==``. The base scenario
(tests/builders.py) is one instance, zero durations, room everywhere, no retry and no restart.
"""

from __future__ import annotations

import pytest
from builders import const, scenario

from sim.engines import run_one
from sim.errors import ScenarioError
from sim.records import Outcome, Reason
from sim.scenario import from_dict, loads


def rows(sc, engine: str, seed: int = 0) -> list[dict]:
    """The attempt records in the order they ended, one dict each."""
    cols = run_one(sc, seed, engine=engine).attempts
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def closed(fail_after_s: float, **more) -> dict:
    return {"path.fault": "closed", "path.fail_after_s": const(fail_after_s), **more}


def test_a_closed_path_fails_every_attempt_without_touching_connector_or_database(engine):
    # 4 instances at t = 0, each opens its first connection (asyncpg: the first alone) at 0,
    # p_fault = 1: each is faulted and closed at 0 + 0.2. No retry: exit at once, error/closed,
    # db_init_s 0.2, one connection tried, none held. None reached the connector: with one set-up
    # slot and room to scale to 3, four connections there would have queued and scaled it out.
    sc = scenario(
        {
            **closed(0.2),
            "fleet.instances": 4,
            "pool.min_size": 3,
            "pool.held_when_ready": 3,
            "connector.setups_per_instance": 1,
            "connector.max_instances": 3,
            "connector.scale_up_delay_s": const(0.5),
        }
    )
    rep = run_one(sc, 0, engine=engine)
    for row in rows(sc, engine):
        assert (row["outcome"], row["reason"]) == (Outcome.ERROR, Reason.CLOSED)
        assert row["db_init_s"] == 0.2
        assert (row["connection_attempts"], row["connections_held"]) == (1, 0)
    assert rep.peak_db_connections == 0
    assert rep.connector_instances_end == 1
    assert rep.connection_attempts == 4


def test_a_reset_path_gives_reason_reset(engine):
    # As above with "reset": the same times, the other reason.
    sc = scenario({**closed(0.25), "path.fault": "reset"})
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (Outcome.ERROR, Reason.RESET, 0.25)


def test_a_hung_path_fails_at_the_connect_timeout_with_reason_hung(engine):
    # The connection opened at 0 never answers; its connect timeout (10 s, before the 20 s
    # deadline) gives it up at 10: error/hung, db_init_s 10.
    sc = scenario(
        {
            "path.fault": "hung",
            "pool.connect_timeout_s": 10.0,
            "startup.db_init_timeout_s": 20.0,
        }
    )
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (Outcome.ERROR, Reason.HUNG, 10.0)
    assert run_one(sc, 0, engine=engine).peak_db_connections == 0


def test_a_hung_path_past_the_deadline_times_out(engine):
    # Connect timeout 30 s after the 20 s deadline: the deadline ends the attempt at 20.
    sc = scenario(
        {"path.fault": "hung", "pool.connect_timeout_s": 30.0, "startup.db_init_timeout_s": 20.0}
    )
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (
        Outcome.TIMEOUT,
        Reason.DEADLINE,
        20.0,
    )


@pytest.mark.parametrize(
    ("fail_after_s", "reason", "db_init_s"),
    [
        (1.5, Reason.CLOSED, 1.5),  # the path fails it before its 2 s connect timeout
        (2.0, Reason.HUNG, 2.0),  # a tie: the connect timeout, scheduled first, runs first
        (3.0, Reason.HUNG, 2.0),  # the connect timeout first: nothing came back by then
    ],
)
def test_whichever_of_path_failure_and_connect_timeout_comes_first_wins(
    engine, fail_after_s, reason, db_init_s
):
    sc = scenario({**closed(fail_after_s), "pool.connect_timeout_s": 2.0})
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (Outcome.ERROR, reason, db_init_s)


def test_only_connections_opened_in_the_window_are_faulted(engine):
    # Window [5, 13), closed after 1 s. Outside it a connection never gets through: its set-up
    # takes 100 s, past the 2 s connect timeout (error/connect_timeout after 2 s). A fixed restart
    # pause of 3 s, counted from the exit; the horizon 30 s. Both instances of the burst alike:
    #   attempt 1: starts 0 (out)   → connect_timeout at 2,  restart at 5
    #   attempt 2: starts 5 (in: from_s counts) → closed at 6, restart at 9
    #   attempt 3: starts 9 (in)    → closed at 10,          restart at 13
    #   attempt 4: starts 13 (out: until_s does not count) → connect_timeout at 15, restart at 18
    #   attempt 5: 18 → 20, restart 23; attempt 6: 23 → 25, restart 28; attempt 7: 28 → 30;
    #   a restart at 33 is past the horizon: no attempt 8.
    sc = scenario(
        {
            **closed(1.0, **{"path.from_s": 5.0, "path.until_s": 13.0}),
            "fleet.instances": 2,
            "horizon_s": 30.0,
            "startup.db_init_timeout_s": 20.0,
            "pool.connect_timeout_s": 2.0,
            "connector.setup_s": const(100.0),
            "restart.policy": "fixed",
            "restart.initial_backoff_s": 3.0,
        }
    )
    ct, cl = Reason.CONNECT_TIMEOUT, Reason.CLOSED
    for instance in (0, 1):
        mine = [r for r in rows(sc, engine) if r["instance"] == instance]
        assert [r["start_s"] for r in mine] == [0.0, 5.0, 9.0, 13.0, 18.0, 23.0, 28.0]
        assert [r["reason"] for r in mine] == [ct, cl, cl, ct, ct, ct, ct]
        assert [r["db_init_s"] for r in mine] == [2.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
        assert {r["outcome"] for r in mine} == {Outcome.ERROR}


def test_pool_retries_within_the_deadline_then_time_out(engine):
    # Every connection closed 0.25 s after it opens; a retry 1 s after each failure, within the
    # 20 s deadline. Pool start k (1-based) begins at 1.25 (k − 1) and fails at 1.25 k − 1; the
    # retry at 1.25 k is made only if it is before 20 (strictly): k ≤ 15. So 16 pool starts (the
    # last at 18.75, failed at 19), then the attempt waits for the deadline: timeout/deadline at
    # 20, one connection per pool start.
    sc = scenario(
        {
            **closed(0.25),
            "pool.retry_backoff_s": 1.0,
            "startup.db_init_timeout_s": 20.0,
        }
    )
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (
        Outcome.TIMEOUT,
        Reason.DEADLINE,
        20.0,
    )
    assert (row["pool_starts"], row["connection_attempts"]) == (16, 16)


@pytest.mark.parametrize(("on_failure", "held"), [("close", 0), ("hold", 1)])
def test_a_closed_fault_among_good_connections_follows_on_failure(engine, on_failure, held):
    # asyncpg, min_size 3: the first connection opens at 0, before the window [0.5, ∞), sets up in
    # 1 s and is held at 1. The other two open at 1, inside it: both faulted, closed at 1.25. The
    # first failure fails the pool start: "close" releases the held one before the exit's record
    # (0 held), "hold" keeps it (1 held). No retry: error/closed at 1.25, 3 connections tried;
    # the database held one connection at most.
    sc = scenario(
        {
            **closed(0.25, **{"path.from_s": 0.5}),
            "pool.min_size": 3,
            "pool.held_when_ready": 3,
            "pool.on_failure": on_failure,
            "connector.setup_s": const(1.0),
        }
    )
    [row] = rows(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (Outcome.ERROR, Reason.CLOSED, 1.25)
    assert (row["connection_attempts"], row["connections_held"]) == (3, held)
    assert run_one(sc, 0, engine=engine).peak_db_connections == 1


def test_background_connections_are_lost_without_failing_the_start(engine):
    # "background", min_size 3: the first opens at 0 (before the window [0.5, ∞)), held at 1;
    # the queries (0) end init at 1: ready, one held. The two background ones open at 1, faulted,
    # closed at 1.25: lost, nobody waits for them. The instance holds one connection at the end.
    sc = scenario(
        {
            **closed(0.25, **{"path.from_s": 0.5}),
            "pool.min_size": 3,
            "pool.held_when_ready": 3,
            "pool.start": "background",
            "connector.setup_s": const(1.0),
        }
    )
    [row] = rows(sc, engine)
    assert (row["outcome"], row["db_init_s"], row["connection_attempts"]) == (Outcome.READY, 1.0, 3)
    rep = run_one(sc, 0, engine=engine)
    assert rep.peak_db_connections == 1
    assert rep.fleet_ready_s == 1.0


def test_fault_none_draws_nothing_and_changes_no_record(engine):
    # A [path] section with fault "none" is no rule: the same records as without it, whatever
    # its other fields say.
    base = scenario({"fleet.instances": 5, "database.accept_s": {"dist": "exponential", "mean": 1}})
    off = base.with_overrides({"path.p_fault": 0.3, "path.from_s": 1.0, "path.until_s": 9.0})
    assert run_one(base, 4, engine=engine).attempts == run_one(off, 4, engine=engine).attempts


def test_p_fault_draws_one_uniform_per_connection_in_the_window():
    # With p_fault = 0.5 about half of many independent connections are faulted; each pool start
    # fails alone (asyncpg's first connection, no retry, no restart): 2,000 instances, 2,000
    # draws, the share within 4.5 standard errors (0.011) of 0.5.
    sc = scenario({**closed(0.25), "path.p_fault": 0.5, "fleet.instances": 2000})
    reasons = run_one(sc, 3).attempts["reason"]
    share = sum(r == Reason.CLOSED for r in reasons) / len(reasons)
    assert abs(share - 0.5) < 4.5 * (0.25 / 2000) ** 0.5


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ({"fault": "broken"}, "path.fault"),
        ({"p_fault": 0.0}, "path.p_fault"),
        ({"p_fault": 1.5}, "path.p_fault"),
        ({"from_s": -1.0}, "path.from_s"),
        ({"from_s": 10.0, "until_s": 10.0}, "path.until_s"),
        ({"until_s": 0.0}, "path.until_s"),
        ({"fail_after_s": {"dist": "constant", "value": -1.0}}, "path.fail_after_s"),
        ({"fails": "closed"}, "path.fails"),
    ],
)
def test_bad_path_values_are_refused_by_name(path, field):
    with pytest.raises(ScenarioError) as err:
        from_dict({"name": "bad", "path": path}, "bad.toml")
    assert err.value.field.startswith(field), err.value


def test_path_numbers_take_ranges_until_s_too():
    # p_fault, from_s and fail_after_s's parameters are numbers with defaults; until_s has none
    # (no end) but is a number when set: each may be a range, each end checked as a value.
    sc = loads(
        'name = "r"\n[path]\nfault = "closed"\np_fault = { range = [0.1, 0.5] }\n'
        "from_s = 5\nuntil_s = { range = [10, 20] }\n"
    )
    assert (sc.path.p_fault, sc.path.until_s) == (0.3, 15.0)
    assert set(sc.uncertain) == {"path.p_fault", "path.until_s"}
    with pytest.raises(ScenarioError) as err:
        loads('name = "r"\n[path]\nfrom_s = 5\nuntil_s = { range = [2, 20] }\n')
    assert err.value.field == "path.until_s.range" and "path.from_s" in err.value.problem
