"""Pool-start strategies (``pool.start``), hand-computed with constant durations.

docs/model.md, "Pool-start strategies": asyncpg opens the first connection alone and then the rest,
concurrent all at once, workers at most ``pool.workers`` at a time, background the first alone and
the rest while init goes on. Durations are binary fractions, so times compare with ``==``.
"""

from __future__ import annotations

import pytest
from builders import const, scenario
from test_engine_exact import attempts, held_at_the_end

from sim.engines import run_one

# One instance, ample connector and slots; each connection takes set-up 1 + accept 0.5 = 1.5 s.
ONE = {
    "pool.min_size": 5,
    "pool.held_when_ready": 5,
    "connector.setup_s": const(1.0),
    "database.accept_s": const(0.5),
    "startup.init_queries_s": const(0.25),
}


@pytest.mark.parametrize(
    ("start", "workers", "db_init_s"),
    [
        # asyncpg: the first at 1.5, the other 4 together by 3.0, queries 0.25 → 3.25.
        ("asyncpg", 3, 3.25),
        # concurrent: all 5 open together by 1.5 → 1.75.
        ("concurrent", 3, 1.75),
        # workers 2: 2 by 1.5, each freed worker opens the next: 2 more by 3.0, the last by 4.5.
        ("workers", 2, 4.75),
        # workers 3: 3 by 1.5, the other 2 by 3.0 → 3.25 (the same time as asyncpg here).
        ("workers", 3, 3.25),
        # workers ≥ min_size is concurrent.
        ("workers", 8, 1.75),
        # background: the first by 1.5, then the queries at once → 1.75; the rest opens meanwhile.
        ("background", 3, 1.75),
    ],
)
def test_each_strategy_opens_its_connections_in_its_order(start, workers, db_init_s, engine):
    sc = scenario({**ONE, "pool.start": start, "pool.workers": workers})
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["db_init_s"], row["connection_attempts"]) == (
        "ready",
        db_init_s,
        5,
    )
    # At the outcome a background start holds its first connection only; the others hold all 5.
    assert row["connections_held"] == (1 if start == "background" else 5)
    assert held_at_the_end(sc) == 5  # all 5 held in the end, whatever the order


def test_concurrent_does_not_wait_for_a_first_connection_in_the_connector_queue(engine):
    # Connector 1 instance × 2 set-ups of 1 s, min_size 4, accept 0.5, no scale-out.
    # concurrent: 4 queue at once; set-ups [0,1), [0,1), [1,2), [1,2) → open by 1.5, 1.5, 2.5, 2.5.
    # asyncpg: first [0,1) → open 1.5; then 3 at 1.5: [1.5,2.5) ×2, [2.5,3.5) → last open by 4.0.
    base = {**ONE, "pool.min_size": 4, "connector.setups_per_instance": 2}
    (row,) = attempts(scenario({**base, "pool.start": "concurrent"}), engine)
    assert row["db_init_s"] == 2.5 + 0.25
    (row,) = attempts(scenario({**base, "pool.start": "asyncpg"}), engine)
    assert row["db_init_s"] == 4.0 + 0.25


@pytest.mark.parametrize(("held_when_ready", "final"), [(2, 2), (5, 5), (7, 7)])
def test_background_connections_count_towards_held_when_ready(held_when_ready, final, engine):
    # background, min_size 5: at init's end (1.75) the pool has its first connection held and 4
    # still opening. It keeps its first held_when_ready in opening order: with 2, the held one and
    # the first in flight (the other 3 are given up); with 7, all 5 and 2 more (not init's work).
    sc = scenario(
        {
            **ONE,
            "pool.start": "background",
            "pool.held_when_ready": held_when_ready,
            "pool.max_size": 10,
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert held_at_the_end(sc) == final
    assert rep.peak_db_connections == final
    assert rep.connection_attempts == 5


def test_background_failures_do_not_fail_the_start_and_are_not_retried(engine):
    # background, min_size 5, 3 usable slots: the first connection is held at 1.5, init is done at
    # 1.75 (ready); at 3.0 the 4 background connections reach the server: 2 take the last slots,
    # 2 are rejected. No failure, no retry: the instance is ready holding 3.
    sc = scenario({**ONE, "pool.start": "background", "database.max_connections": 3})
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["db_init_s"], row["pool_starts"]) == ("ready", 1.75, 1)
    rep = run_one(sc, 0, engine=engine)
    assert held_at_the_end(sc) == 3
    assert rep.connection_attempts == 5


@pytest.mark.parametrize(
    ("start", "outcome", "db_init_s"),
    [
        # concurrent into 3 slots: at 1.5 three connections are held, the fourth is rejected.
        ("concurrent", "rejected", 1.5),
        # asyncpg: the first at 1.5, then at 3.0 two take the slots and the third is rejected.
        ("asyncpg", "rejected", 3.0),
        # workers 2: 2 by 1.5, the next at 3.0 takes the last slot, the fourth (started at 1.5
        # too) is rejected at 3.0.
        ("workers", "rejected", 3.0),
    ],
)
def test_a_rejection_fails_any_start_that_waits_for_its_connections(
    start, outcome, db_init_s, engine
):
    sc = scenario(
        {
            **ONE,
            "pool.min_size": 4,
            "pool.start": start,
            "pool.workers": 2,
            "database.max_connections": 3,
        }
    )
    (row,) = attempts(sc, engine)
    assert (row["outcome"], row["reason"], row["db_init_s"]) == (outcome, "53300", db_init_s)
    assert row["connections_held"] == 0  # on_failure "close"


def test_background_first_connection_failing_fails_the_start(engine):
    # The one connection a background start waits for is rejected (no slot): rejected at 1.5.
    sc = scenario(
        {**ONE, "pool.start": "background", "database.max_connections": 1, "fleet.instances": 2}
    )
    rows = sorted(attempts(sc, engine), key=lambda r: r["instance"])
    # Instance 0 takes the only slot at 1.5 (ready); instance 1's first is rejected at 1.5.
    assert [(r["outcome"], r["db_init_s"]) for r in rows] == [("ready", 1.75), ("rejected", 1.5)]
