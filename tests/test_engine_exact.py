"""Hand-computed cases with exact answers: constant durations, so every time is known in advance.

Each test's comment is the hand computation, following the rules of ``docs/model.md``. Durations
are sums of binary fractions (0.5, 0.25, …), so the engine's floating-point times are exact and the
checks use ``==``. Simultaneous events run in the order they were scheduled (a burst's instances in
index order); where a case depends on that order, its comment says so.
"""

from __future__ import annotations

import math

import pytest
from builders import const, scenario

from sim.engine import Engine
from sim.engines import run_one


def attempts(sc, engine: str, seed: int = 0) -> list[dict]:
    """The replication's attempt records on ``engine`` (the ``engine`` fixture: every test that
    takes it runs on both), one dict per attempt, in the order they ended."""
    cols = run_one(sc, seed, engine=engine).attempts
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def held_at_the_end(sc) -> int:
    """Connections held when the run ends, from the readable engine's timeline (the fast engine
    keeps none; its records and peak are checked beside it)."""
    return run_one(sc, 0, timeline=True).timeline["db_connections"][-1]


def by_instance(rows: list[dict], key: str) -> list:
    """``key`` of each instance's attempts, instance by instance, attempts in order."""
    ordered = sorted(rows, key=lambda r: (r["instance"], r["attempt"]))
    return [r[key] for r in ordered]


# -- the connector ------------------------------------------------------------------------------


def test_fixed_capacity_connector_serves_a_burst_in_waves(engine):
    # 10 instances at t=0, before_db 1 → all 10 connections reach the connector at t=1.
    # Capacity 1 instance × 3 set-ups, set-up 2 s, FIFO in instance order:
    #   instances 0-2 set up in [1, 3), 3-5 in [3, 5), 6-8 in [5, 7), 9 in [7, 9).
    # db_init_s = queue wait + set-up 2 + accept 0.5 + queries 0.25 = 2k + 2.75 for wave k = i // 3.
    # Ready at 1 + db_init_s + after_db 1: the last (instance 9) at 1 + 8.75 + 1 = 10.75.
    sc = scenario(
        {
            "fleet.instances": 10,
            "startup.before_db_s": const(1.0),
            "startup.init_queries_s": const(0.25),
            "startup.after_db_s": const(1.0),
            "connector.setups_per_instance": 3,
            "connector.setup_s": const(2.0),
            "database.accept_s": const(0.5),
        }
    )
    rep = run_one(sc, 0, engine=engine)
    rows = attempts(sc, engine)
    assert by_instance(rows, "db_init_s") == [2 * (i // 3) + 2.75 for i in range(10)]
    assert by_instance(rows, "db_init_start_s") == [1.0] * 10
    assert by_instance(rows, "outcome") == ["ready"] * 10
    assert rep.fleet_ready_s == 10.75
    assert rep.connector_instances_end == 1
    assert rep.peak_db_connections == 10
    assert rep.connection_attempts == 10


@pytest.mark.parametrize(
    ("max_instances", "expected_db_init_s", "instances_end"),
    [
        # Capacity 2 per instance, set-up 12 s, scale-out 5 s, 6 connections at t=0:
        # 0,1 set up in [0, 12). 2-5 wait; the first waiting one starts a scale-out at t=0.
        # t=5: instance 2 joins, 2,3 set up in [5, 17); 4,5 still wait → next scale-out, t=10.
        # t=10: instance 3 joins, 4,5 set up in [10, 22).
        (3, [12.0, 12.0, 17.0, 17.0, 22.0, 22.0], 3),
        # max_instances 2: no second scale-out; 4,5 wait for 0,1 to finish at 12 → [12, 24).
        (2, [12.0, 12.0, 17.0, 17.0, 24.0, 24.0], 2),
    ],
)
def test_scale_out_joins_at_exactly_the_delay(
    max_instances, expected_db_init_s, instances_end, engine
):
    sc = scenario(
        {
            "fleet.instances": 6,
            "connector.max_instances": max_instances,
            "connector.setups_per_instance": 2,
            "connector.setup_s": const(12.0),
            "connector.scale_up_delay_s": const(5.0),
        }
    )
    assert by_instance(attempts(sc, engine), "db_init_s") == expected_db_init_s
    assert run_one(sc, 0, engine=engine).connector_instances_end == instances_end


def test_no_scale_out_while_nothing_waits(engine):
    # 4 connections, capacity 1 × 4: none waits, so the connector stays at 1 instance although
    # max_instances is 10 (a scale-out starts only when a connection waits).
    sc = scenario(
        {
            "fleet.instances": 4,
            "connector.max_instances": 10,
            "connector.setups_per_instance": 4,
            "connector.setup_s": const(3.0),
            "connector.scale_up_delay_s": const(1.0),
        }
    )
    assert run_one(sc, 0, engine=engine).connector_instances_end == 1
    assert by_instance(attempts(sc, engine), "db_init_s") == [3.0] * 4


# -- the database limit -------------------------------------------------------------------------


def test_database_limit_lets_exactly_k_instances_in(engine):
    # max_connections 10 − reserved 2 − other 1 = 7 usable slots. 10 instances × 1 connection,
    # all arriving at the server at t = set-up 0.5 + accept 0.25 = 0.75, in instance order:
    # instances 0-6 take a slot; 7-9 are rejected at once (53300). retry_backoff_s = 0 → they
    # exit at t = 0.75 with outcome "rejected", holding nothing; restart policy none → never ready.
    sc = scenario(
        {
            "fleet.instances": 10,
            "connector.setup_s": const(0.5),
            "database.accept_s": const(0.25),
            "database.max_connections": 10,
            "database.reserved_connections": 2,
            "database.other_connections": 1,
        }
    )
    rows = attempts(sc, engine)
    rep = run_one(sc, 0, engine=engine)
    assert by_instance(rows, "outcome") == ["ready"] * 7 + ["rejected"] * 3
    assert by_instance(rows, "reason") == [""] * 7 + ["53300"] * 3
    assert by_instance(rows, "db_init_s") == [0.75] * 10
    assert by_instance(rows, "connections_held") == [1] * 7 + [0] * 3
    assert rep.instances_ready == 7
    assert rep.peak_db_connections == 7
    assert math.isinf(rep.fleet_ready_s)


# -- gang allocation ----------------------------------------------------------------------------

# 6 instances × min_size 3 into 10 usable slots, set-up 1 s, accept 0. free_slots // min_size
# predicts 3 instances fit and 3 fail. Common to both policies:
#   t=1: the 6 first connections take 6 slots (4 left).
#   t=2: the 12 second and third connections reach the server in instance order.
#        Instance 0 takes 2 (2 left), instance 1 takes 2 (0 left): both ready.
#        Instance 2's second connection is rejected: its pool start fails.
GANG = {
    "fleet.instances": 6,
    "pool.min_size": 3,
    "pool.held_when_ready": 3,
    "connector.setup_s": const(1.0),
    "database.max_connections": 10,
    "restart.exit_release_s": 30.0,
}


def test_gang_allocation_hold_fails_more_instances_than_slots_predict(engine):
    # on_failure = "hold", no retry: instance 2 exits at t=2 still holding its first connection,
    # which the server frees only at 2 + exit_release_s = 32; its third connection, in flight, is
    # abandoned. 0 slots left, so instances 3, 4, 5 are rejected the same way, each holding 1.
    # Slots at t=2: 2 × 3 (ready) + 4 × 1 (dead pools) = 10. Ready 2, failed 4 > 6 − 3.
    rows = attempts(scenario({**GANG, "pool.on_failure": "hold"}), engine)
    assert by_instance(rows, "outcome") == ["ready"] * 2 + ["rejected"] * 4
    assert by_instance(rows, "connections_held") == [3, 3, 1, 1, 1, 1]
    assert by_instance(rows, "connection_attempts") == [3] * 6


def test_gang_allocation_close_fails_what_slots_predict(engine):
    # on_failure = "close": a failed pool start frees its slots at once. Slots left r, at t=2:
    #   instance 2: second rejected → closes its first                r = 0 + 1 = 1
    #   instance 3: second takes it, third rejected → closes both    r = 0 + 2 = 2
    #   instance 4: takes 2 → ready                                   r = 0
    #   instance 5: second rejected → closes its first                r = 1
    # Ready 0, 1, 4: 3 = 10 // 3, failed 3.
    rows = attempts(scenario({**GANG, "pool.on_failure": "close"}), engine)
    outcomes = ["ready", "ready", "rejected", "rejected", "ready", "rejected"]
    assert by_instance(rows, "outcome") == outcomes
    assert by_instance(rows, "connections_held") == [3, 3, 0, 0, 3, 0]


@pytest.mark.parametrize(
    ("on_failure", "ready", "held_at_timeout"),
    [
        # hold: after t=2 the 4 failed instances keep 1 slot each, the 2 ready ones 3 each: 10 of
        # 10. Every retry's first connection is rejected until the deadline at t=20: 4 time out,
        # each holding its 1 connection.
        ("hold", [0, 1], 1),
        # close: after t=2 instances 0, 1, 4 hold 9 slots, 1 is free. Whoever takes it opens two
        # more, is rejected and gives it back: no instance can hold 3 before t=20. 3 time out.
        ("close", [0, 1, 4], 0),
    ],
)
def test_gang_allocation_with_retries_until_the_deadline(
    on_failure, ready, held_at_timeout, engine
):
    sc = scenario(
        {
            **GANG,
            "pool.on_failure": on_failure,
            "pool.retry_backoff_s": 2.5,
            "startup.db_init_timeout_s": 20.0,
        }
    )
    rows = attempts(sc, engine)
    assert [r["instance"] for r in rows if r["outcome"] == "ready"] == ready
    failed = [r for r in rows if r["outcome"] != "ready"]
    assert len(failed) == 6 - len(ready)
    for r in failed:
        assert (r["outcome"], r["reason"], r["db_init_s"]) == ("timeout", "deadline", 20.0)
        assert r["connections_held"] == held_at_timeout
        assert r["pool_starts"] > 1  # it did retry within the deadline


def test_hold_with_retries_exact_schedule(engine):
    # hold, one failed instance alone: 2 instances × min_size 3 into 4 slots, set-up 1, retry 2.5.
    #   t=1: both first connections held (2 left). t=2: instance 0 takes 2 → ready;
    #   instance 1's second is rejected (pool start 1 fails; it keeps its first connection),
    #   its third, reaching the server just after, is rejected too.
    #   Retries at 4.5, 8, 11.5, 15, 18.5 each open one connection, rejected 1 s later
    #   (5.5, 9, 12.5, 16, 19.5); 19.5 + 2.5 = 22 is past the deadline 20, so it waits for it.
    #   Pool starts 1 + 5 = 6; connections tried 3 + 5 = 8; still holding 1 at the deadline.
    sc = scenario(
        {
            "fleet.instances": 2,
            "pool.min_size": 3,
            "pool.held_when_ready": 3,
            "pool.on_failure": "hold",
            "pool.retry_backoff_s": 2.5,
            "startup.db_init_timeout_s": 20.0,
            "connector.setup_s": const(1.0),
            "database.max_connections": 4,
        }
    )
    ready, failed = sorted(attempts(sc, engine), key=lambda r: r["instance"])
    assert ready["outcome"] == "ready" and ready["db_init_s"] == 2.0
    assert (failed["outcome"], failed["db_init_s"]) == ("timeout", 20.0)
    assert (failed["pool_starts"], failed["connection_attempts"]) == (6, 8)
    assert failed["connections_held"] == 1


# -- deadline, connect timeout, retry -----------------------------------------------------------


def test_deadline_ends_database_init_at_exactly_the_timeout(engine):
    # Set-up 30 s, deadline 20 s after db init starts at before_db = 0.5: timeout at 20.5,
    # db_init_s = 20 exactly, holding nothing.
    sc = scenario(
        {
            "startup.before_db_s": const(0.5),
            "startup.db_init_timeout_s": 20.0,
            "connector.setup_s": const(30.0),
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"]) == ("timeout", "deadline")
    assert (row["db_init_start_s"], row["db_init_s"]) == (0.5, 20.0)
    assert row["connections_held"] == 0


def test_init_queries_count_towards_the_deadline(engine):
    # Set-up 10 + accept 0.5 + queries 9.25 = 19.75 < 20: ready. Queries 10: 20.5 > 20: timeout.
    base = {
        "startup.db_init_timeout_s": 20.0,
        "connector.setup_s": const(10.0),
        "database.accept_s": const(0.5),
    }
    (row,) = attempts(scenario({**base, "startup.init_queries_s": const(9.25)}), engine)
    assert (row["outcome"], row["db_init_s"]) == ("ready", 19.75)
    (row,) = attempts(scenario({**base, "startup.init_queries_s": const(10.0)}), engine)
    assert (row["outcome"], row["db_init_s"], row["connections_held"]) == ("timeout", 20.0, 1)


def test_connect_timeout_without_retry_is_an_error(engine):
    # Set-up 30 s, connect_timeout 5 s, no retry: the connection is given up at t=5 and the
    # container exits at once: outcome "error", reason connect_timeout, db_init_s 5.
    sc = scenario({"connector.setup_s": const(30.0), "pool.connect_timeout_s": 5.0})
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == ("error", "connect_timeout", 5.0)


def test_connect_timeouts_with_retry_until_the_deadline(engine):
    # Set-up 30, connect_timeout 5, retry 1, deadline 20: pool starts at 0, 6, 12, 18 each time
    # out 5 s later (5, 11, 17); the fourth would time out at 23, the deadline comes first.
    sc = scenario(
        {
            "startup.db_init_timeout_s": 20.0,
            "connector.setup_s": const(30.0),
            "pool.connect_timeout_s": 5.0,
            "pool.retry_backoff_s": 1.0,
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == ("timeout", "deadline", 20.0)
    assert (row["pool_starts"], row["connection_attempts"]) == (4, 4)


def test_retry_within_the_deadline_succeeds(engine):
    # Connector capacity 1, set-up 4, connect_timeout 6, retry 1, 2 instances at t=0.
    #   Instance 0 sets up in [0, 4): ready at 4. Instance 1 waits, sets up from 4; its connect
    #   timeout (6 s after it started, queue included) fires at 6 and frees the capacity.
    #   Retry at 7: set-up [7, 11), within 7 + 6 = 13 → ready, db_init_s 11, 2 pool starts.
    sc = scenario(
        {
            "fleet.instances": 2,
            "startup.db_init_timeout_s": 20.0,
            "connector.setups_per_instance": 1,
            "connector.setup_s": const(4.0),
            "pool.connect_timeout_s": 6.0,
            "pool.retry_backoff_s": 1.0,
        }
    )
    first, second = sorted(attempts(sc, engine), key=lambda r: r["instance"])
    assert (first["outcome"], first["db_init_s"], first["pool_starts"]) == ("ready", 4.0, 1)
    assert (second["outcome"], second["db_init_s"], second["pool_starts"]) == ("ready", 11.0, 2)
    assert second["connection_attempts"] == 2


def test_retry_that_would_end_past_the_deadline_is_not_started(engine):
    # Set-up 30, connect_timeout 5, retry 15, deadline 20: the pool start fails at 5;
    # 5 + 15 = 20 is not before the deadline, so no second pool start: timeout at 20.
    sc = scenario(
        {
            "startup.db_init_timeout_s": 20.0,
            "connector.setup_s": const(30.0),
            "pool.connect_timeout_s": 5.0,
            "pool.retry_backoff_s": 15.0,
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["db_init_s"], row["pool_starts"]) == ("timeout", 20.0, 1)


def test_min_size_zero_goes_straight_to_the_queries(engine):
    sc = scenario({"pool.min_size": 0, "startup.init_queries_s": const(0.5)})
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["db_init_s"], row["connection_attempts"]) == ("ready", 0.5, 0)


def test_first_connection_alone_then_the_rest_concurrently(engine):
    # min_size 4, set-up 1, accept 0.5: the first connection is open at 1.5, the other 3 open
    # together at 3.0 (capacity is ample): db_init_s = 2 × 1.5 = 3.
    sc = scenario(
        {
            "pool.min_size": 4,
            "pool.held_when_ready": 4,
            "connector.setup_s": const(1.0),
            "database.accept_s": const(0.5),
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["db_init_s"], row["connections_held"]) == (3.0, 4)


# -- restarts -----------------------------------------------------------------------------------

# One instance that always times out: set-up 30 > deadline 20, db init starts at once.
ALWAYS_TIMES_OUT = {"startup.db_init_timeout_s": 20.0, "connector.setup_s": const(30.0)}


@pytest.mark.parametrize(
    ("restart", "starts"),
    [
        # exponential 10, 20, 40, 40, 40 (capped at 40), 5 restarts; each attempt lasts 20:
        # 0 →20 +10→ 30 →50 +20→ 70 →90 +40→ 130 →150 +40→ 190 →210 +40→ 250.
        (
            {"policy": "exponential", "initial_backoff_s": 10.0, "max_backoff_s": 40.0},
            [0.0, 30.0, 70.0, 130.0, 190.0, 250.0],
        ),
        # exponential uncapped within 5 restarts: backoffs 10, 20, 40, 80, 160:
        # 0, 30, 70, 130, 230, 410.
        (
            {"policy": "exponential", "initial_backoff_s": 10.0, "max_backoff_s": 300.0},
            [0.0, 30.0, 70.0, 130.0, 230.0, 410.0],
        ),
        # fixed 10: every attempt starts 20 + 10 = 30 after the previous one.
        ({"policy": "fixed", "initial_backoff_s": 10.0}, [0.0, 30.0, 60.0, 90.0, 120.0, 150.0]),
        # none: a single attempt.
        ({"policy": "none"}, [0.0]),
    ],
)
def test_restart_backoff_schedule(restart, starts, engine):
    overrides = {**ALWAYS_TIMES_OUT, "restart.max_restarts": 5}
    overrides.update({f"restart.{k}": v for k, v in restart.items()})
    rows = attempts(scenario(overrides), engine)
    assert [r["start_s"] for r in rows] == starts
    assert [r["attempt"] for r in rows] == list(range(1, len(starts) + 1))
    assert {r["outcome"] for r in rows} == {"timeout"}


@pytest.mark.parametrize("max_restarts", [0, 1, 3])
def test_max_restarts_bounds_the_attempts(max_restarts, engine):
    rows = attempts(
        scenario(
            {**ALWAYS_TIMES_OUT, "restart.policy": "fixed", "restart.max_restarts": max_restarts}
        ),
        engine,
    )
    assert len(rows) == max_restarts + 1


@pytest.mark.parametrize(
    ("horizon_s", "starts"),
    [
        # exponential 10, 20, 40: attempts start at 0, 30, 70; the next would start at
        # 90 + 40 = 130. Horizon 130: "no attempt starts at or after horizon_s" → 3 attempts.
        (130.0, [0.0, 30.0, 70.0]),
        (130.5, [0.0, 30.0, 70.0, 130.0]),
        # Horizon 80: the attempt started at 70 runs to its deadline at 90 and is recorded.
        (80.0, [0.0, 30.0, 70.0]),
    ],
)
def test_no_attempt_starts_at_or_after_the_horizon(horizon_s, starts, engine):
    sc = scenario({**ALWAYS_TIMES_OUT, "horizon_s": horizon_s, "restart.policy": "exponential"})
    rows = attempts(sc, engine)
    assert [r["start_s"] for r in rows] == starts
    assert rows[-1]["db_init_s"] == 20.0  # the last attempt ran to its deadline
    rep = run_one(sc, 0, engine=engine)
    assert rep.instances_ready == 0 and math.isinf(rep.fleet_ready_s)


def test_arrival_at_or_after_the_horizon_never_starts(engine):
    # Waves at 0 and at the horizon (10): the second instance never starts an attempt.
    sc = scenario(
        {
            "horizon_s": 10.0,
            "startup.db_init_timeout_s": 10.0,
            "fleet.instances": 2,
            "fleet.arrival": "waves",
            "fleet.waves": [{"at_s": 0.0, "count": 1}, {"at_s": 10.0, "count": 1}],
        }
    )
    rows = attempts(sc, engine)
    assert [r["instance"] for r in rows] == [0]
    rep = run_one(sc, 0, engine=engine)
    assert rep.instances_ready == 1 and math.isinf(rep.fleet_ready_s)


def test_ready_after_the_horizon_counts_as_never_ready(engine):
    # Horizon 10; db init 8 s, then 3 s to healthy: the attempt (started at 0) finishes its db init
    # and is recorded as ready, but the instance was not ready by the horizon.
    sc = scenario(
        {
            "horizon_s": 10.0,
            "startup.db_init_timeout_s": 10.0,
            "connector.setup_s": const(8.0),
            "startup.after_db_s": const(3.0),
        }
    )
    (row,) = attempts(sc, engine)
    assert row["outcome"] == "ready"
    rep = run_one(sc, 0, engine=engine)
    assert rep.instances_ready == 0 and math.isinf(rep.fleet_ready_s)


# -- exit release and held_when_ready -----------------------------------------------------------

# One instance, min_size 2, 1 usable slot: every pool start gets its first connection (if the slot
# is free) and has its second rejected. Set-up 1, no retry, fixed restarts after 1.5 s, 2 restarts.
ONE_SLOT = {
    "pool.min_size": 2,
    "pool.held_when_ready": 2,
    "connector.setup_s": const(1.0),
    "database.max_connections": 1,
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 1.5,
    "restart.max_restarts": 2,
}


def test_exit_release_keeps_a_dead_pool_slot_taken(engine):
    # hold, exit_release_s 4.5:
    #   attempt 1 starts 0: first connection held at 1, second rejected at 2 → exit holding 1;
    #     the server frees that slot at 2 + 4.5 = 6.5.
    #   attempt 2 starts 3.5: its first connection reaches the server at 4.5: slot still taken →
    #     rejected, exit at 4.5 holding 0 (db_init_s 1).
    #   attempt 3 starts 6: first connection at 7 (slot freed at 6.5) → held; second rejected at 8.
    rows = attempts(
        scenario({**ONE_SLOT, "pool.on_failure": "hold", "restart.exit_release_s": 4.5}), engine
    )
    assert [r["start_s"] for r in rows] == [0.0, 3.5, 6.0]
    assert [r["connections_held"] for r in rows] == [1, 0, 1]
    assert [r["db_init_s"] for r in rows] == [2.0, 1.0, 2.0]
    assert {(r["outcome"], r["reason"]) for r in rows} == {("rejected", "53300")}


def test_exit_release_zero_frees_at_once(engine):
    # Same with exit_release_s 0: the slot is free again at each exit, every attempt gets its
    # first connection: starts 0, 3.5, 7; each db_init_s 2 and holding 1 at the exit.
    rows = attempts(scenario({**ONE_SLOT, "pool.on_failure": "hold"}), engine)
    assert [r["start_s"] for r in rows] == [0.0, 3.5, 7.0]
    assert [r["connections_held"] for r in rows] == [1, 1, 1]


def test_close_frees_before_the_exit_so_exit_release_does_not_apply(engine):
    # close: the pool closes its first connection at the rejection, before the exit, so
    # exit_release_s (4.5) has nothing to hold: as with release 0, but holding 0 at each exit.
    rows = attempts(
        scenario({**ONE_SLOT, "pool.on_failure": "close", "restart.exit_release_s": 4.5}), engine
    )
    assert [r["start_s"] for r in rows] == [0.0, 3.5, 7.0]
    assert [r["connections_held"] for r in rows] == [0, 0, 0]


@pytest.mark.parametrize(
    ("held_when_ready", "slots", "final"),
    [
        (2, 100, 2),  # min_size 4, keep 2: closes 2 extras at once
        (4, 100, 4),  # keeps exactly what it opened
        (6, 100, 6),  # opens 2 more in the background
        (6, 5, 5),  # opens 2 more, 1 rejected: no failure, no retry
    ],
)
def test_held_when_ready(held_when_ready, slots, final, engine):
    sc = scenario(
        {
            "pool.min_size": 4,
            "pool.held_when_ready": held_when_ready,
            "database.max_connections": slots,
            "connector.setup_s": const(1.0),
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert held_at_the_end(sc) == final
    assert rep.peak_db_connections == max(4, final)
    (row,) = attempts(sc, engine)
    assert row["outcome"] == "ready"
    assert rep.connection_attempts == 4  # background connections are not database-init work


# -- events at the same instant (docs/model.md, "Events at the same instant") ---------------------


def test_init_ending_exactly_at_the_deadline_times_out(engine):
    # Set-up 10 + accept 0.5 + queries 9.5 = 20 = the deadline, scheduled first: timeout.
    sc = scenario(
        {
            "startup.db_init_timeout_s": 20.0,
            "connector.setup_s": const(10.0),
            "database.accept_s": const(0.5),
            "startup.init_queries_s": const(9.5),
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["db_init_s"]) == ("timeout", 20.0)


def test_connection_ending_exactly_at_its_connect_timeout_is_given_up(engine):
    # Set-up 4.5 + accept 0.5 = 5 = connect_timeout_s: the timeout was scheduled first.
    sc = scenario(
        {
            "connector.setup_s": const(4.5),
            "database.accept_s": const(0.5),
            "pool.connect_timeout_s": 5.0,
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == ("error", "connect_timeout", 5.0)


def setup_draws(sc, engine: str) -> int:
    """How many set-up durations replication 0 of seed 0 drew."""
    if engine == "reference":
        eng = Engine(sc, 0)
        eng.run()
        return eng.draw_setup.k
    from sim import fast
    from sim.fast import layout

    buf, _ = fast.run_raw(sc, 0, range(1))
    return int(buf.m[layout.M_KC + layout.SETUP_S])


def test_a_ready_pool_gives_its_extra_connections_up_at_once(engine):
    # docs/model.md, step 6: the extras leave together, then the connector serves its queue once.
    # A background start with one set-up place: at the end of init (1.25 s) the second
    # connection is in its set-up and the third waits behind it. Given up one by one, the third
    # would begin a set-up (a draw) when the second left, and be given up in the same instant.
    sc = scenario(
        {
            "pool.start": "background",
            "pool.min_size": 3,
            "pool.held_when_ready": 1,
            "connector.setups_per_instance": 1,
            "connector.setup_s": const(1.0),
            "startup.init_queries_s": const(0.25),
        }
    )
    (row,) = attempts(sc, engine)
    assert row["outcome"] == "ready" and row["db_init_s"] == 1.25
    assert held_at_the_end(sc) == 1
    assert setup_draws(sc, engine) == 2  # the first connection's and the second's
