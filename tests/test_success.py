"""Start-up success by each definition, and an observed failure count against the model: hand
computed on replication rows small enough to count by eye, then through ``recommend``."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import const, scenario

from sim import scenario as scenarios
from sim import success
from sim.recommend import Settings, recommend
from sim.stats import wilson
from sim.success import judge, observe, success_rates


def rows(**columns):
    return {k: np.asarray(v) for k, v in columns.items()}


# Three deploys of 2 instances: deploy 0 had one instance fail once then succeed (3 attempts),
# deploy 1 was clean (2 attempts), deploy 2 had one instance never get ready (5 attempts, 4
# failed, its other instance ready at once).
FLEET = rows(
    attempts=[3, 2, 5],
    failed_attempts=[1, 0, 4],
    first_ready=[1, 2, 1],
    instances_ready=[2, 2, 1],
)


def test_four_definitions_by_hand():
    r = success_rates(FLEET, instances=2, confidence=0.95)
    assert r["starts"].estimate == pytest.approx(5 / 10)  # ready attempts ÷ attempts
    assert r["first_starts"].estimate == pytest.approx(4 / 6)
    assert r["instances_ready"].estimate == pytest.approx(5 / 6)
    assert r["clean_deploys"].estimate == pytest.approx(1 / 3)
    assert (r["clean_deploys"].ci_low, r["clean_deploys"].ci_high) == pytest.approx(wilson(1, 3))
    for p in r.values():
        assert p.ci_low <= p.estimate <= p.ci_high


def test_a_verdict_needs_the_whole_interval_on_one_side():
    r = success_rates(FLEET, instances=2, confidence=0.95)["starts"]
    assert judge(r, None) is None
    assert judge(r, r.ci_low) == "met"
    assert judge(r, r.ci_high + 1e-9) == "not met"
    assert judge(r, (r.ci_low + r.ci_high) / 2) == "too close to call"


# Failed starts per simulated deploy 0, 1, 2, 1: the distribution ¼, ½, ¼; two deploys sum to
# 0..4 with 1, 4, 6, 4, 1 sixteenths.
PER_DEPLOY = np.array([0, 1, 2, 1])


def test_the_windows_total_is_the_convolution_by_hand():
    o = observe(PER_DEPLOY, 3, window_deploys=2)
    assert o.p_at_least == pytest.approx(5 / 16)
    assert o.p_at_most == pytest.approx(15 / 16)
    assert o.verdict == "consistent"
    assert o.per_deploy == 1.0
    assert o.deploys_implied()[0] == 3.0


def test_at_least_tests_one_tail_and_an_exact_count_both():
    # P(total ≥ 4) = 1/16 = 0.0625: consistent at 95 %, too few failures at 90 %.
    assert observe(PER_DEPLOY, 4, window_deploys=2).verdict == "consistent"
    assert observe(PER_DEPLOY, 4, window_deploys=2, confidence=0.9).verdict == "too few failures"
    # An exact 0 out of a window of 2: P(total ≤ 0) = 1/16; two-sided at 80 % that is too many.
    exact = observe(PER_DEPLOY, 0, window_deploys=2, at_least=False, confidence=0.8)
    assert exact.p_at_most == pytest.approx(1 / 16)
    assert exact.verdict == "too many failures"
    # "at least 0" can never be too many.
    assert observe(PER_DEPLOY, 0, window_deploys=2, confidence=0.8).verdict == "consistent"
    # More than the window can hold at all.
    assert observe(PER_DEPLOY, 9, window_deploys=2).p_at_least == 0.0


def test_a_window_given_as_hours_and_rate():
    sc = scenario({"team.window_hours": 2.0, "team.deploys_per_hour": 1.5})
    assert sc.team.deploys_in_window() == 3.0
    assert scenario({"team.window_deploys": 7}).team.deploys_in_window() == 7.0
    assert scenario({"team.window_hours": 2.0}).team.deploys_in_window() is None


def test_no_simulated_failure_bounds_the_mean_by_the_rule_of_three():
    o = observe(np.zeros(1000, dtype=int), 649, deploys_per_hour=4.5)
    assert o.per_deploy == 0.0
    assert o.per_deploy_high == pytest.approx(-math.log(0.05) / 1000)
    d = o.as_dict()
    assert d["deploys_implied"]["estimate"] is None  # never
    assert d["deploys_implied"]["low"] == pytest.approx(649 / o.per_deploy_high)
    assert d["hours_implied"]["low"] == pytest.approx(649 / o.per_deploy_high / 4.5)
    assert o.verdict is None  # no window: nothing to test


def test_the_normal_approximation_agrees_with_the_exact_sum(monkeypatch):
    x = np.random.default_rng(5).poisson(3.0, 2000)
    exact = observe(x, 640, window_deploys=200)
    monkeypatch.setattr(success, "MAX_CONVOLUTION", 10)
    approx = observe(x, 640, window_deploys=200)
    assert approx.p_at_least == pytest.approx(exact.p_at_least, abs=0.01)
    assert approx.window_p975 == pytest.approx(exact.window_p975, abs=3)


def test_exact_sum_matches_resampling():
    x = np.random.default_rng(1).poisson(3.0, 1000)
    o = observe(x, 160, window_deploys=50)
    sums = np.random.default_rng(2).choice(x, (100_000, 50)).sum(axis=1)
    assert o.p_at_least == pytest.approx(np.mean(sums >= 160), abs=0.005)


# Two instances, one connector slot held 31 s by the first set-up: the second always waits past a
# 10 s deadline and fails, once per start, with no restart. Every deploy: 2 attempts, 1 failed.
ONE_FAILS = {
    "fleet.instances": 2,
    "pool.min_size": 1,
    "pool.held_when_ready": 1,
    "connector.min_instances": 1,
    "connector.max_instances": 1,
    "connector.setups_per_instance": 1,
    "connector.setup_s": const(9.0),
    "startup.before_db_s": const(0.0),
    "startup.db_init_timeout_s": 10.0,
    "restart.policy": "none",
    "team.success_criterion": 0.3,
    "team.timeout_history_s": [10.0],
    "team.observed_failures": 12,
    "team.window_deploys": 10,
}


def test_recommend_judges_the_criterion_on_the_teams_definition():
    sc = scenario({**ONE_FAILS, "team.success_definition": "clean_deploys"})
    data = recommend(sc, Settings(0.9, replications=40, history=(10.0,))).as_dict()
    s = data["success"]
    assert s["definition"] == "clean_deploys" == next(iter(s["by_definition"]))
    assert s["by_definition"]["starts"]["estimate"] == 0.5
    assert s["by_definition"]["clean_deploys"]["estimate"] == 0.0
    assert s["by_definition"]["starts"]["criterion"] == "met"  # half the starts > 0.3
    assert s["by_definition"]["clean_deploys"]["criterion"] == "not met"
    (h,) = data["history"]
    assert h["criterion"] == "not met"  # judged on clean deploys, not on starts
    assert h["success"]["by_definition"]["starts"]["criterion"] == "met"
    obs = data["observed_failures"]
    # One failed start per deploy, exactly: 12 in 10 deploys cannot happen, 10 would.
    assert obs["failed_starts_per_deploy"]["mean"] == 1.0
    assert obs["deploys_implied"]["estimate"] == 12.0
    assert obs["verdict"] == "too few failures"
    assert obs["p_at_least_observed"] == 0.0


def test_the_default_reports_what_649_failures_imply():
    sc = scenarios.resolve(scenarios.DEFAULT)
    data = recommend(sc, Settings(0.9, replications=40)).as_dict()
    assert data["success"]["definition"] == "starts"
    assert data["success"]["criterion"] == 0.95
    obs = data["observed_failures"]
    assert obs["observed"] == 649 and obs["at_least"]
    assert obs["hours_implied"] is not None  # R2's deploy rate turns deploys into hours
    assert obs["verdict"] is None  # the window's deploys are not given (F3)
    assert {e["field"] for e in data["sources"]} >= {"fleet.instances", "team.observed_failures"}
