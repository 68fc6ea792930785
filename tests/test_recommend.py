"""The recommender against answers known in advance, and its verdict when no timeout can work.

Scenarios are tiny (2 to 6 instances, constant durations) and run in this process, so the whole
file takes seconds. Seeds are pinned; the brackets say why a pinned result is not luck.
"""

from __future__ import annotations

import math

import pytest
from builders import FIXED_S, HIGH_S, LOW_S, STORM, WAIT_FOR_SCALE_OUT, const, scenario

from sim.errors import UsageError
from sim.recommend import Settings, recommend
from sim.runner import simulate
from sim.search import RESOLUTION_S, Lab, guess_timeout, zero_failure_replications
from sim.sizing import PgBouncer, pool_advice
from sim.stats import wilson

# -- known answer: a uniform scale-up delay the second instance must wait for ------------------

# As in test_engine_statistical: instance 0's 31 s set-up holds the connector's only slot, so
# instance 1 waits for the scale-out, D ~ Uniform(10, 30), then takes 31 + 0.5 + 0.25 s:
# its db init is D + 31.75 exactly, instance 0's is 31.75. No restarts: two attempts per
# replication, so P(an attempt reaches timeout T) = ½ · P(D > T − 31.75) = ½ (61.75 − T) / 20,
# and the timeout whose true failure share is alpha is T(alpha) = 61.75 − 40 · alpha.
WAIT_FOR_SCALE_OUT = {**WAIT_FOR_SCALE_OUT, "startup.db_init_timeout_s": 45.0}


def analytic_timeout(alpha: float) -> float:
    return FIXED_S + HIGH_S - 2 * alpha * (HIGH_S - LOW_S)


def p_true(timeout_s: float) -> float:
    return min(0.5, max(0.0, 0.5 * (FIXED_S + HIGH_S - timeout_s) / (HIGH_S - LOW_S)))


@pytest.fixture(scope="module")
def known():
    sc = scenario(WAIT_FOR_SCALE_OUT)
    return recommend(sc, Settings(target_success=0.95, replications=1000, seed=3))


def test_recommended_timeout_brackets_the_analytic_value(known):
    alpha = 0.05
    got = known.decision.smallest_timeout_s
    # The bound is an upper confidence bound, so the answer sits above T(alpha) = 59.75 s. With
    # 2,000 attempts the Wilson bound lies within about 0.01 of the estimate, so the search stops
    # before the true share falls to alpha / 2 (T = 60.75 s): one grid step is the only slack.
    assert analytic_timeout(alpha) <= got <= analytic_timeout(alpha / 2) + RESOLUTION_S, got
    assert p_true(got) <= alpha < p_true(got - RESOLUTION_S) + 0.02


def test_each_reported_timeout_was_simulated_at_that_value(known):
    search = known.timeout.search
    assert search.timeout_s == known.timeout.recommended_s
    steps = {s.value: s for s in search.steps}
    assert steps[search.timeout_s].meets
    below = search.timeout_s - RESOLUTION_S
    assert below in steps and not steps[below].meets  # the next value down was tried and failed
    # Re-simulating at the answer reproduces the search's figure: common random numbers.
    sc = scenario({**WAIT_FOR_SCALE_OUT, "startup.db_init_timeout_s": search.timeout_s})
    again = simulate(sc, 1000, 3, jobs=1).summary(0.95).p_db_init_timeout
    assert again.ci_high == pytest.approx(steps[search.timeout_s].p.ci_high)


def test_common_targets_are_ordered_and_the_unshowable_one_is_said_so(known):
    rows = {r.target_success: r for r in known.timeout.by_target}
    assert rows[0.95].timeout_s <= rows[0.99].timeout_s
    # 1,000 replications cannot show 0.999 (it needs 3,838 with no failure at all).
    assert zero_failure_replications(0.001, 0.95) > 1000
    assert rows[0.999].timeout_s is None and rows[0.999].replications is None
    assert analytic_timeout(0.01) <= rows[0.99].timeout_s


def test_aws_p999_is_the_db_init_p999(known):
    # The untimed db init is 31.75 s (instance 0) or D + 31.75: its p99.9 is near 61.75 − 0.04.
    t = known.timeout
    assert FIXED_S + HIGH_S - 0.1 <= t.aws_p999_s <= FIXED_S + HIGH_S
    assert t.aws_timeout_s == math.ceil(t.aws_p999_s / RESOLUTION_S) * RESOLUTION_S


def test_recommendation_is_deterministic_under_a_seed(known):
    again = recommend(scenario(WAIT_FOR_SCALE_OUT), Settings(0.95, replications=1000, seed=3))
    assert again.as_dict() == known.as_dict()


# -- no timeout helps: held connections cannot fit ------------------------------------------------


@pytest.fixture(scope="module")
def storm():
    return recommend(scenario(STORM), Settings(target_success=0.99, replications=400, seed=1))


def test_no_timeout_helps_when_held_connections_cannot_fit(storm):
    v = storm.verdict
    assert v.timeout_helps is False
    assert "6 × 5 = 30" in v.reason and "12 free slots" in v.reason
    assert "53300" in v.reason and "restart loop" in v.reason
    assert storm.timeout.recommended_s is None
    assert v.at_max_timeout["never_ready_fraction"] == pytest.approx(4 / 6)


def test_the_pool_fix_recommended_instead_meets_the_target_when_simulated(storm):
    assert storm.pool.max_size == 2 and storm.pool.min_size == 1
    d = storm.decision.as_dict()
    # The pool fix sets min_size 1, max_size 2 and held_when_ready 2; max_size is checked like
    # every field, by simulating the decision without it: the rest still meets the target, so it
    # is dropped (the least change that holds), and said so.
    assert d["overrides"] == {"pool.min_size": 1, "pool.held_when_ready": 2}
    assert [(c["field"], c["needed"]) for c in d["dropped"]] == [("pool.max_size", "not needed")]
    assert all(c["needed"] == "needed" for c in d["changes"])
    # Simulate the decision independently, with another seed: it meets the target.
    fixed = scenario(STORM).with_overrides(d["overrides"])
    s = simulate(fixed, 400, 99, jobs=1).summary(0.95)
    assert s.p_start_failure.ci_high <= 0.01
    assert s.never_ready_fraction == 0


def test_candidates_are_ranked_meeting_first(storm):
    meets = [c.meets_target for c in storm.candidates]
    assert meets == sorted(meets, reverse=True)
    current = next(c for c in storm.candidates if not c.overrides)
    assert not current.meets_target and current.summary.peak_db_connections_max == 12


def test_fleet_cap_and_pgbouncer_when_no_pool_setting_fits():
    # Tasks needing 2 connections at once: the pool-locking bound 5 × (2 − 1) + 1 = 6 per instance
    # is more than the 2 per instance that fit, so the fleet must shrink or a pooler must queue.
    advice = pool_advice(scenario(STORM), tasks=5, connections_per_task=2)
    assert advice.pool_locking_bound == 6
    assert advice.pool_setting_fits is False and advice.max_size is None
    assert advice.largest_fleet == 12 // 6
    assert advice.pgbouncer == PgBouncer(
        max_client_conn=60, default_pool_size=12, query_wait_timeout_s=120
    )
    assert list(advice.as_dict()["pgbouncer"].items()) == [  # summary.json's keys, in order
        ("max_client_conn", 60),
        ("default_pool_size", 12),
        ("query_wait_timeout_s", 120),
    ]


# -- targets that cannot be shown -----------------------------------------------------------------


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.1])
def test_target_outside_zero_one_is_a_usage_error(target):
    with pytest.raises(UsageError, match=r"^target_success = "):  # no CLI flag in the library
        Settings(target_success=target).check()


def test_target_too_fine_for_the_replications_says_how_many_are_needed():
    need = zero_failure_replications(0.0001, 0.95)
    with pytest.raises(UsageError, match=f"use {need} replications"):
        Settings(target_success=0.9999, replications=500).check()
    # The bound for no failure in `need` replications really reaches the target.
    assert wilson(0, need, 0.95)[1] <= 0.0001 < wilson(0, need - 1, 0.95)[1]


def test_lab_simulates_each_point_once():
    lab = Lab()
    sc = scenario(WAIT_FOR_SCALE_OUT)
    first = lab.run(sc, 50)
    assert lab.run(sc, 50) is first and lab.instance_starts == 100


def test_guess_falls_back_to_the_estimate_when_the_probe_cannot_show_the_target():
    # 200 replications cannot show 0.999 by their bound; the guess must still land near the
    # longest init (61.75 s), not at the ceiling, or the search would crawl down from 120 s.
    sc = scenario({**WAIT_FOR_SCALE_OUT, "startup.db_init_timeout_s": 120.0})
    guess = guess_timeout(simulate(sc, 200, 0, jobs=1), 0.001, 0.95, 120.0)
    assert FIXED_S + LOW_S < guess <= FIXED_S + HIGH_S + RESOLUTION_S


# -- the least change ------------------------------------------------------------------------------


def test_decision_is_the_least_change_timeout_before_paid_connector_instances(known):
    # Both a longer timeout and a second connector instance from the start meet the target on
    # their own; the timeout comes first in the cost order, so it alone is adopted.
    d = known.decision
    assert [c.kind for c in d.adopted.changes] == ["timeout"]
    assert d.value("startup.db_init_timeout_s") == d.smallest_timeout_s
    assert d.value("connector.min_instances") == 1  # unchanged
    assert "connector.min_instances 2" in [c.name for c in d.alternatives]
    (check,) = d.needed
    assert check.without.name == "today's configuration" and not check.without.meets_target
    assert check.status == "needed" and check.without.settled.verdict == "not met"
    data = d.as_dict()
    assert data["changes"][0]["field"] == "startup.db_init_timeout_s"
    assert data["changes"][0]["from"] == 45.0 and data["changes"][0]["to"] == d.smallest_timeout_s


def _fake(meeting: set[frozenset[str]]):
    """A ``run`` that says a set meets when its change names are one of ``meeting``."""
    from sim.decision import Candidate

    calls = []

    def run(combo):
        calls.append(frozenset(c.name for c in combo))
        s = simulate(scenario(WAIT_FOR_SCALE_OUT), 1, 0, jobs=1).summary()
        return Candidate("+".join(c.name for c in combo), combo, 1, s, 1, 1, calls[-1] in meeting)

    return run, calls


def test_least_change_prefers_fewer_changes_then_cheaper_kinds():
    from sim.decision import Change, least_change

    pool = Change("pool", "p", {"pool.min_size": 1})
    timeout = Change("timeout", "t", {"startup.db_init_timeout_s": 30.0})
    connector = Change("connector", "c", {"connector.min_instances": 3})
    changes = [pool, timeout, connector]
    # No single change meets; two pairs do: pool + timeout is cheaper than pool + connector.
    run, calls = _fake({frozenset("pt"), frozenset("pc"), frozenset("ptc")})
    adopted, alternatives = least_change(changes, run)
    assert adopted.name == "p+t" and [a.name for a in alternatives] == ["p+c"]
    assert frozenset("ptc") not in calls  # a bigger set is never tried once a pair meets
    # The connector alone meets: one change beats any pair, however cheap.
    run, _ = _fake({frozenset("c"), frozenset("pt")})
    assert least_change(changes, run)[0].name == "c"
    # Nothing meets: no decision.
    run, _ = _fake(set())
    assert least_change(changes, run) == (None, [])


def test_history_is_judged_against_the_teams_criterion():
    sc = scenario(WAIT_FOR_SCALE_OUT)
    rec = recommend(
        sc, Settings(0.95, replications=1000, seed=3, history=(40.0, 61.0), criterion=0.9)
    )
    rows = {h.timeout_s: h.as_dict() for h in rec.history}
    # At 40 s instance 1 always times out (its init takes D + 31.75 > 41.75 s): about half the
    # attempts fail; at 61 s only D > 29.25 s fails, 1.9 % of instance 1's first attempts.
    assert rows[40.0]["criterion"] == "not met" and rows[40.0]["start_success"] < 0.6
    assert rows[61.0]["criterion"] == "met" and rows[61.0]["start_success_low"] >= 0.9
    assert rec.as_dict()["criterion"] == 0.9


def test_monitoring_counts_failed_starts_and_exit_code_3_per_deploy(storm):
    m = storm.as_dict()["monitoring"]
    a = storm.today.attempts
    failed = (a["outcome"] != "ready").sum() / storm.today.replications
    assert m["startup_failures_per_deploy"]["mean"] == pytest.approx(failed)
    timeouts = (a["outcome"] == "timeout").sum() / storm.today.replications
    assert m["exit_code_3_per_deploy"]["mean"] == pytest.approx(timeouts)
    assert m["deploys"] == storm.today.replications and m["instances_per_deploy"] == 6


def test_an_option_whose_ready_fleet_cannot_hold_its_connections_does_not_meet(storm):
    # min_size 1 alone lets every start succeed (one connection each), but 6 ready instances
    # keeping 5 each need 30 of 12 slots: the fleet would starve, so it is no answer.
    by_name = {c.name: c for c in storm.candidates}
    alone = by_name["pool.min_size 1"]
    assert not alone.held_fits and not alone.meets_target
    assert storm.decision.adopted.name == "pool.min_size 1 + pool.held_when_ready 2"


RARE_CHECK = """
import json, sys
from builders import WAIT_FOR_SCALE_OUT, scenario
from sim.plain import plain
from sim.rare import estimate_failure
from sim.recommend import RARE_REPLICATIONS, _rare_checks
from sim.search import Lab, TimeoutSearch, at_timeout

sc = scenario(WAIT_FOR_SCALE_OUT)
lab = Lab(seed=2, engine="reference")
rare = _rare_checks(lab, sc, {0.999: TimeoutSearch(0.999, 100, timeout_s=61.0)})[0.999]
alone = estimate_failure(
    at_timeout(sc, 61.0), RARE_REPLICATIONS, 2, lab.confidence, event="timeout", engine="reference"
)
fast = "sim.fast" in sys.modules
print(json.dumps({"rare": plain(rare), "alone": alone.as_dict(), "fast": fast}))
"""


def test_the_rare_check_runs_on_the_engine_the_command_chose():
    # A lab on the readable engine checks its rarest row by importance sampling on the readable
    # engine: the same estimate as estimate_failure's there, and the fast engine never loaded
    # (in a process of its own, so that no other test has loaded it).
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    out = subprocess.run(
        [sys.executable, "-c", RARE_CHECK],
        capture_output=True,
        text=True,
        check=True,
        cwd=tests.parent,
        env={**os.environ, "PYTHONPATH": str(tests)},
        timeout=300,
    ).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["fast"] is False
    assert got["alone"]["event_replications"] > 0
    assert {k: v for k, v in got["rare"].items() if k != "meets"} == got["alone"]
    assert got["rare"]["meets"] == (got["alone"]["reliable"] and got["alone"]["ci_high"] <= 0.001)


def test_the_connector_floor_stays_within_what_serverless_vpc_access_allows():
    # Ten instances each open one connection at t = 0 through connectors carrying one 15 s
    # set-up each, under a 20 s deadline: every connection must start at once, so only a floor
    # of 10 would meet, and Serverless VPC Access allows at most 9 minimum instances.
    from sim.sizing import MAX_CONNECTOR_FLOOR, connector_floor

    sc = scenario(
        {
            "fleet.instances": 10,
            "pool.min_size": 1,
            "pool.held_when_ready": 1,
            "connector.min_instances": 1,
            "connector.max_instances": 10,
            "connector.setups_per_instance": 1,
            "connector.setup_s": const(15.0),
            "startup.db_init_timeout_s": 20.0,
            "restart.policy": "none",
        }
    )
    floor = connector_floor(Lab(seed=1), sc, 0.9, 40)
    assert floor.min_instances is None
    assert max(s.value for s in floor.steps) == MAX_CONNECTOR_FLOOR
    # With one instance fewer the floor of 9 is the answer, judged on P(start attempt fails).
    nine = connector_floor(Lab(seed=1), sc.with_overrides({"fleet.instances": 9}), 0.9, 40)
    assert nine.min_instances == 9
    assert all(s.meets == (s.value >= 9) for s in nine.steps)
