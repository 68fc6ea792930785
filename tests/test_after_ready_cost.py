"""The cost after ready counts in the decision (issue 23, item 6; docs/recommend.md).

A configuration whose start-ups all succeed but whose first minute after ready fails more requests
than the target allows is not adopted, and the ADR says why; with the requests served, it states
the first minute's figures beside today's. Hand-made: instances ready at once, one pooled
connection each, requests that queue behind it longer than the pool timeout.
"""

from __future__ import annotations

from builders import const, scenario

from sim.afterready import NONE_SERVED, after_ready
from sim.recommend import Settings, recommend
from sim.report.adr import render
from sim.report.view import RecommendationView
from sim.runner import simulate
from sim.sequential import MET, NOT_MET

# Two instances ready at t = 0 holding one connection each, which they can never grow (max 1):
# 20 requests a second each, holding it 0.1 s, so two requests want it at once and the queue
# grows without end; a checkout waits at most 0.5 s. Start-ups never fail.
STARVED = {
    "horizon_s": 30.0,
    "startup.db_init_timeout_s": 20.0,
    "fleet.instances": 2,
    "pool.max_size": 1,
    "pool.timeout_s": 0.5,
    "traffic.rate_per_instance_per_s": 20.0,
    "traffic.query_s": const(0.1),
    "traffic.window_s": 30.0,
}


def test_a_starved_pool_breaks_the_first_minute():
    sc = scenario(STARVED)
    res = simulate(sc, 5, seed=1)
    cost = after_ready(res.requests, res.fleet, sc.traffic, alpha=0.1)
    assert cost.verdict == NOT_MET and cost.breaks
    assert cost.failed_share.estimate > 0.4  # half the load cannot be served at all
    roomy = scenario({**STARVED, "pool.max_size": 10})
    # No failure at all; the interval is clustered by deploy, so 40 deploys bound it below 10 %.
    res = simulate(roomy, 40, seed=1)
    assert after_ready(res.requests, res.fleet, roomy.traffic, alpha=0.1).verdict == MET


def test_nothing_ready_is_nothing_to_judge():
    sc = scenario({**STARVED, "startup.db_init_timeout_s": 1.0, "startup.init_queries_s": const(2)})
    res = simulate(sc, 3, seed=1)
    cost = after_ready(res.requests, res.fleet, sc.traffic, alpha=0.1)
    assert cost.verdict == NONE_SERVED and not cost.breaks and cost.requests_per_deploy == 0


def test_recommend_does_not_keep_a_configuration_that_fails_after_ready():
    sc = scenario(STARVED)
    rec = recommend(sc, Settings(target_success=0.9, replications=40, seed=2))
    data = rec.as_dict()
    today = next(c for c in data["candidates"] if not c["overrides"])
    assert today["sequential"]["verdict"] == MET  # its start-ups meet the target …
    assert today["after_ready"]["verdict"] == NOT_MET  # … its first minute does not
    assert not today["meets_target"]
    adr = render(RecommendationView.from_dict(data), sc, {}, "startsim recommend", "today")
    assert "no: fails the first minute's requests after ready" in adr
    assert "### The first minute after ready" in adr
    assert "After ready, under the scenario's traffic (20 requests/s to each ready instance" in adr
