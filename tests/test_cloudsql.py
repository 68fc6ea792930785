"""The Cloud SQL connection path (docs/model.md, "The Cloud SQL path"), hand-computed.

Each start attempt refreshes (``calls_per_refresh`` Admin API calls) before its first connection;
the calls count against a project quota per minute window; a refresh with a call over the quota
fails (429), and the next waits for the connector's limiter: refresh k starts no earlier than
``(k − refresh_burst) × refresh_interval_s`` after database init began.
"""

from __future__ import annotations

from builders import comparable, const, scenario
from test_engine_exact import attempts

from sim.engine import Engine
from sim.engines import run_one
from sim.scenario import resolve

# Refresh 0.5 s, connections instant, deadline 20 s, no pool retry.
CLOUDSQL = {
    "horizon_s": 600.0,
    "startup.db_init_timeout_s": 20.0,
    "cloudsql.enabled": True,
    "cloudsql.calls_per_refresh": 2,
    "cloudsql.quota_per_minute": 4,
    "cloudsql.call_s": const(0.5),
}


def by_instance(rows):
    return sorted(rows, key=lambda r: (r["instance"], r["attempt"]))


def test_off_by_default_changes_nothing(engine):
    sc = resolve("staging-incident")
    assert not sc.cloudsql.enabled
    on = sc.with_overrides({"cloudsql.quota_per_minute": 1})  # still off: no effect
    assert comparable(run_one(sc, 3, engine=engine).attempts) == comparable(
        run_one(on, 3, engine=engine).attempts
    )


def test_the_quota_lets_two_refreshes_a_minute_through_and_the_limiter_holds_the_third(engine):
    # 3 instances at t=0, quota 4 calls a minute, 2 per refresh:
    #   instances 0 and 1 use the 4 calls; their refreshes end at 0.5, connections at once:
    #   db_init_s 0.5.
    #   instance 2: refresh 1 at 0 gets a 429 (ends 0.5); refresh 2 at 0.5 (the bucket's second
    #   token) 429 again (ends 1.0); refresh 3 not before 0 + (3 − 2) × 30 = 30 > deadline 20:
    #   timeout at 20, no connection tried.
    #   Fixed restart 45 s → attempt 2 at 65, in the next minute: refresh ok, db_init_s 0.5.
    sc = scenario(
        {
            **CLOUDSQL,
            "fleet.instances": 3,
            "restart.policy": "fixed",
            "restart.initial_backoff_s": 45.0,
        }
    )
    rows = by_instance(attempts(sc, engine))
    got = [(r["instance"], r["start_s"], r["outcome"], r["db_init_s"]) for r in rows]
    assert got == [
        (0, 0.0, "ready", 0.5),
        (1, 0.0, "ready", 0.5),
        (2, 0.0, "timeout", 20.0),
        (2, 65.0, "ready", 0.5),
    ]
    assert rows[2]["connection_attempts"] == 0


def test_refresh_k_waits_for_the_limiter(engine):
    # Quota 2 a minute, 2 instances, deadline 100 (horizon 600): instance 1's refreshes at 0 and
    # 0.5 fail (the minute's 2 calls went to instance 0); refresh 3 at 30 fails (same minute);
    # refresh 4 at 60 (the next minute) succeeds: ready at 60.5.
    sc = scenario(
        {
            **CLOUDSQL,
            "fleet.instances": 2,
            "cloudsql.quota_per_minute": 2,
            "startup.db_init_timeout_s": 100.0,
        }
    )
    rows = by_instance(attempts(sc, engine))
    assert [(r["outcome"], r["db_init_s"]) for r in rows] == [("ready", 0.5), ("ready", 60.5)]


def test_calls_over_the_quota_are_not_counted():
    # Quota 5, 3 instances: 0 and 1 use 4 calls; instance 2's refresh gets 1 call through (5)
    # and a 429 for the other: it fails. In the next minute the 5 are free again.
    sc = scenario({**CLOUDSQL, "fleet.instances": 3, "cloudsql.quota_per_minute": 5})
    eng = Engine(sc, 0)
    eng.run()
    assert eng.api_used == {0: 5}


def test_a_pool_retry_needs_no_new_refresh():
    # The certificate lasts the attempt: pool retries within the deadline start at once.
    # 1 usable slot, 2 instances, retry every 2 s: instance 1's pool starts are rejected, and
    # only one refresh (2 calls) is made per instance.
    sc = scenario(
        {
            **CLOUDSQL,
            "fleet.instances": 2,
            "database.max_connections": 1,
            "pool.retry_backoff_s": 2.0,
        }
    )
    eng = Engine(sc, 0)
    rows = eng.run().attempts
    assert rows["pool_starts"][-1] > 1
    assert eng.api_used == {0: 4}


def test_the_shipped_storm_exhausts_the_quota():
    # cloudsql-quota-storm: the first minute's requests reach the quota, and attempts time out
    # that never tried a connection (their refreshes got 429s).
    sc = resolve("cloudsql-quota-storm")
    eng = Engine(sc, 1)
    rep = eng.run()
    assert max(eng.api_used.values()) == sc.cloudsql.quota_per_minute
    att = rep.attempts
    starved = [
        o == "timeout" and n == 0
        for o, n in zip(att["outcome"], att["connection_attempts"], strict=True)
    ]
    assert sum(starved) > 0
