"""What recommend does when the path fails connections (sim.remedies, docs/recommend.md "When the
path fails connections"): the changes it weighs, which one it adopts, what the evidence section
says, and the startup probe's figures, on the default scenario and on small hand-built ones."""

from __future__ import annotations

import json

import pytest
from builders import const, scenario

from sim import scenario as scenarios
from sim.decision import Change
from sim.recommend import Settings, recommend
from sim.records import Reason
from sim.remedies import EGRESS, RETRY, RETRY_JITTER, RETRY_S, path_changes, retry_change
from sim.report.adr import render
from sim.report.view import RecommendationView
from sim.search import Lab

# Three instances at once; the start-up as the incident's phases (docs/scenario.md): migrations
# whose failure is ignored, a table check bounded by its own 10 s, a schema check. Constant
# durations, so what a start does is known: migrations 0.5 s of work, table check 0.05 s, schema
# 0.1 s; each connection's set-up 0.01 s and accept 0.01 s.
PHASES = [
    {
        "name": "migrations",
        "db_init": False,
        "connections": 1,
        "keep": False,
        "on_failure": "continue",
        "duration_s": const(0.5),
    },
    {"name": "table_check", "connections": 1, "deadline_s": 10.0, "duration_s": const(0.05)},
    {"name": "schema", "connections": 1, "duration_s": const(0.1)},
]
PHASED = {
    "fleet.instances": 3,
    "startup.phases": PHASES,
    "startup.before_db_s": const(1.0),
    "startup.after_db_s": const(1.0),
    "connector.setup_s": const(0.01),
    "database.accept_s": const(0.01),
    "pool.min_size": 1,
    "pool.held_when_ready": 2,
    "pool.retry_backoff_s": 0.0,
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 1.0,
    "horizon_s": 300.0,
    "startup.db_init_timeout_s": 20.0,
}


def test_no_fault_no_path_change():
    assert path_changes(scenario(PHASED)) == []


def test_a_faulted_path_offers_the_route_back_and_a_retry_of_the_first_connecting_phase():
    sc = scenario({**PHASED, "path.fault": "closed"})
    egress, retry = path_changes(sc)
    assert (egress.kind, egress.overrides) == (EGRESS, {"path.fault": "none"})
    assert "--vpc-egress=private-ranges-only" in egress.apply and "nats create" in egress.apply
    assert retry.kind == RETRY and retry.name.startswith("retry table_check, schema")
    rows = retry.overrides["startup.phases"]
    # migrations are not database init and continue on failure: the other two are retried
    assert [r.get("retry_backoff_s", 0) for r in rows] == [0, RETRY_S, RETRY_S]
    assert rows[1]["retry_jitter"] == rows[2]["retry_jitter"] == RETRY_JITTER
    assert "stop_after_delay(10)" in retry.apply and "wait_random(0.5, 1.5)" in retry.apply
    sc.with_overrides(retry.overrides)  # a valid scenario


def test_without_phases_the_pools_retry_is_offered_unless_it_already_retries():
    bare = scenario({"path.fault": "hung", "pool.retry_backoff_s": 0.0})
    assert retry_change(bare).overrides == {
        "pool.retry_backoff_s": RETRY_S,
        "pool.retry_jitter": RETRY_JITTER,
    }
    assert retry_change(bare.with_overrides({"pool.retry_backoff_s": 2.0})) is None


@pytest.fixture(scope="module")
def default_recommendation():
    sc = scenarios.resolve(scenarios.DEFAULT)
    return sc, recommend(sc, Settings(replications=400, seed=0), Lab(seed=0, engine="fast"))


def test_the_default_adopts_the_route_back_and_no_timeout(default_recommendation):
    sc, rec = default_recommendation
    assert sc.path.fault == "closed" and sc.path.p_fault == 1.0
    assert not rec.verdict.timeout_helps and "the path fails connections" in rec.verdict.reason
    d = rec.as_dict()
    assert [c["change"] for c in d["decision"]["changes"]] == [
        "VPC egress private-ranges-only + Cloud NAT"
    ]
    assert d["decision"]["changes"][0]["needed"] == "needed"
    by_name = {c["name"]: c for c in d["candidates"]}
    # the retry cannot help while every connection fails; every past timeout fails every start
    retry = next(c for n, c in by_name.items() if n.startswith("retry table_check, schema"))
    assert not retry["meets_target"] and retry["p_start_failure"]["estimate"] == 1.0
    assert all(h["start_success"] == 0.0 for h in d["history"])
    # today: every failure at the table check's own bound; restored: none, well inside it
    path = d["path"]
    assert set(path["failures_by_reason"]) == {Reason.PHASE_DEADLINE}
    assert path["restored_p_start_failure"]["events"] == 0
    assert path["restored_db_init_p99_s"] < path["bounds_s"]["table_check"] == 10.0


def test_the_default_adr_says_what_the_evidence_supports_and_how_to_apply_it(
    default_recommendation,
):
    sc, rec = default_recommendation
    view = RecommendationView.from_dict(json.loads(json.dumps(rec.as_dict())))
    adr = render(view, sc, {}, "startsim recommend", "now")
    evidence = adr.split("## What the evidence supports", 1)[1].split("## Decision", 1)[0]
    assert "The path fails connections, not capacity" in evidence
    assert "`phase_deadline`" in evidence and "table_check 10 s: +" in evidence
    assert "The startup probe" in evidence and "startupProbe:" in evidence
    decision = adr.split("## Decision", 1)[1].split("## Options considered", 1)[0]
    assert "- **VPC egress private-ranges-only + Cloud NAT** (the egress route" in decision
    assert "How to apply **VPC egress private-ranges-only + Cloud NAT**" in decision
    assert "`path.fault`" not in decision  # a model field is no change a team can apply
    assert "Do not raise the timeout: the path fails connections" in decision


def test_an_intermittent_path_is_cured_by_the_cheaper_retry():
    # A third of the connections fail (closed after 0.2 s). Without a retry, a start fails when
    # its table check's or schema's connection does: 1 − (2/3)² ≈ 56 % of starts (the migrations'
    # failure is ignored). A retry every 0.5–1.5 s within the table check's 10 s bound (the
    # schema's, the 20 s deadline) fails only after several failures in a row, (1/3)^7 ≈ 5e-4 at
    # most: the retry meets the target, and it is cheaper than the egress route in the order of
    # cost.
    sc = scenario(
        {**PHASED, "path.fault": "closed", "path.p_fault": 1 / 3, "path.fail_after_s": const(0.2)}
    )
    rec = recommend(sc, Settings(target_success=0.95, replications=400, seed=1), Lab(seed=1))
    d = rec.as_dict()
    today = next(c for c in d["candidates"] if c["name"] == "today's configuration")
    assert 0.45 < today["p_start_failure"]["estimate"] < 0.65
    assert {c["kind"] for c in d["decision"]["changes"]} == {RETRY}
    assert d["decision"]["configuration"].startswith("retry table_check, schema")
    assert "VPC egress private-ranges-only + Cloud NAT" in d["decision"]["alternatives"]


def test_the_probe_figures_compare_tcp_and_http_on_the_same_starts():
    # One in three connections fails; the TCP probe lets requests in 0.5 s after each start,
    # so requests reach starts that then fail; an HTTP probe sends them only to ready ones.
    sc = scenario(
        {
            **PHASED,
            "path.fault": "closed",
            "path.p_fault": 1 / 3,
            "path.fail_after_s": const(0.2),
            "probe.kind": "tcp",
            "probe.port_bound_s": 0.5,
            "probe.request_rate_per_s": 2.0,
        }
    )
    rec = recommend(sc, Settings(target_success=0.95, replications=200, seed=1), Lab(seed=1))
    p = rec.startup_probe
    assert p is not None and p.rate_per_s == 2.0
    tcp, http = p.today["requests_failed_per_deploy"], p.http["requests_failed_per_deploy"]
    assert tcp["mean"] > 0 and http["mean"] < tcp["mean"]
    assert "failureThreshold:" in p.how
    assert (
        recommend(
            sc.with_overrides({"probe.kind": "http"}), Settings(0.95, replications=200, seed=1)
        ).startup_probe
        is None
    )  # an HTTP probe already: nothing to advise


def test_a_change_carries_how_to_apply_it_into_summary_json():
    c = Change(EGRESS, "x", {"path.fault": "none"}, "run this")
    assert c.apply == "run this" and Change("pool", "y", {}).apply == ""
