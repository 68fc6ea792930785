"""The fixes recommend weighs beside its own numbers (sim/options.py; docs/recommend.md, "Breakers,
surge and a pooler"): a circuit breaker of each form, a surge limit and PgBouncer, each a change
in the team's own terms with its cost; and the shipped default's ADR weighs every option issue 24
names, each with its verdict from simulation."""

from __future__ import annotations

import json
from pathlib import Path

from builders import const, scenario

from sim.options import (
    BREAKER,
    OPEN_JITTER,
    POOLER,
    SURGE,
    breaker_changes,
    pooler_change,
    surge_change,
)
from sim.scenario import resolve

EXAMPLE = Path(__file__).parent.parent / "results" / "example"
# 100 slots less 3 reserved; a start's phases before the database take 2 s, its deadline 20 s.
SLOTS_97 = {
    "database.max_connections": 100,
    "database.reserved_connections": 3,
    "startup.before_db_s": const(2.0),
    "startup.db_init_timeout_s": 20.0,
}


def test_a_breaker_of_each_form_with_pybreakers_defaults():
    forms = breaker_changes(scenario({}))
    assert [c.kind for c in forms] == [BREAKER] * 3
    assert [c.overrides for c in forms] == [
        {"breaker.form": "in_process"},
        {"breaker.form": "stay_up", "breaker.open_jitter": OPEN_JITTER},
        {"breaker.form": "shared", "breaker.open_jitter": OPEN_JITTER},
    ]
    assert all("fail_max 5, reset_timeout 60 s" in c.name for c in forms)
    assert "sys.exit(3)" in forms[0].apply and "CircuitRedisStorage" in forms[2].apply


def test_the_forms_that_stay_up_are_not_offered_with_a_pooler():
    sc = scenario({"pooler.kind": "pgbouncer"})
    assert [c.overrides["breaker.form"] for c in breaker_changes(sc)] == ["in_process"]


def test_a_surge_limit_is_waves_of_a_quarter_a_starts_length_apart():
    # 40 instances of min_size 5 into 97 free slots: a quarter is 10, the free slots hold
    # 97 // 5 = 19 at start: waves of 10. A start's length: the median before_db_s, 2 s, + the
    # 20 s deadline = 22 s.
    sc = scenario({**SLOTS_97, "fleet.instances": 40, "pool.min_size": 5, "pool.max_size": 5})
    c = surge_change(sc)
    assert c.kind == SURGE
    assert c.overrides == {
        "fleet.arrival": "waves",
        "fleet.waves": [{"at_s": 22.0 * i, "count": 10} for i in range(4)],
    }
    assert c.name == "deploy in waves of 10, 22 s apart (4 waves)"
    sc.with_overrides(c.overrides)  # a valid scenario


def test_the_free_slots_bound_a_wave():
    # 40 instances of min_size 10 into 97 free slots: 9 at a time, the last wave 4.
    sc = scenario({**SLOTS_97, "fleet.instances": 40, "pool.min_size": 10, "pool.max_size": 10})
    waves = surge_change(sc).overrides["fleet.waves"]
    assert [w["count"] for w in waves] == [9, 9, 9, 9, 4]


def test_the_default_scenario_deploys_one_at_a_time():
    # staging-incident: 3 instances, a quarter rounds up to 1; before_db_s median 11.4 s + 20 s.
    c = surge_change(resolve("staging-incident"))
    assert c.name == "deploy in waves of 1, 31.4 s apart (3 waves)"


def test_a_rolling_update_is_limited_by_its_own_settings():
    sc = scenario({"fleet.instances": 8, "pool.held_when_ready": 1, "rollout.kind": "kubernetes"})
    c = surge_change(sc)
    assert c.overrides == {"rollout.max_surge": 1, "rollout.max_unavailable": 0}
    assert '"maxSurge":1,"maxUnavailable":0' in c.apply
    assert surge_change(sc.with_overrides(c.overrides)) is None  # already there


def test_pgbouncer_in_transaction_mode_with_room_for_every_client():
    sc = scenario({**SLOTS_97, "fleet.instances": 40, "pool.min_size": 5, "pool.max_size": 5})
    c = pooler_change(sc)
    assert c.kind == POOLER
    assert c.overrides == {
        "pooler.kind": "pgbouncer",
        "pooler.pool_mode": "transaction",
        "pooler.default_pool_size": 20,
        "pooler.max_client_conn": 200,  # 40 instances × 5
    }
    assert "default_pool_size = 20" in c.apply and "statement_cache_size" in c.apply
    sc.with_overrides(c.overrides)


def test_pgbouncer_with_traffic_is_weighed_on_its_start_ups_and_says_so():
    c = pooler_change(resolve("staging-incident"))
    assert c.overrides["traffic.rate_per_s"] == 0.0
    assert c.name.endswith("(start-ups only: traffic after ready through a pooler is not modelled)")


def test_no_pooler_where_the_model_refuses_one():
    assert pooler_change(scenario({"fleet.warm_instances": 1, "pool.held_when_ready": 1})) is None
    assert pooler_change(scenario({"egress.kind": "direct"})) is None
    assert pooler_change(scenario({"breaker.form": "stay_up"})) is None


def test_the_default_adr_weighs_every_option_with_its_verdict():
    """Issue 24's "done means": breakers of each form, a surge limit, PgBouncer, Direct VPC
    egress, a connector floor and a machine type with cost, a bigger tier with cost."""
    summary = json.loads((EXAMPLE / "summary.json").read_text(encoding="utf-8"))
    adr = (EXAMPLE / "adr.md").read_text(encoding="utf-8")
    single = {}
    for c in summary["candidates"]:
        if len(c["kinds"]) == 1:
            single.setdefault(c["kinds"][0], []).append(c)
    forms = {c["overrides"]["breaker.form"] for c in single[BREAKER]}
    assert forms == {"in_process", "stay_up", "shared"}
    for kind in (SURGE, POOLER, "direct_egress", "tier", "connector"):
        assert kind in single, kind
    floors = [c for c in single["connector"] if "machine_type" not in json.dumps(c["overrides"])]
    types = [c for c in single["connector"] if "machine_type" in json.dumps(c["overrides"])]
    assert floors and types
    for c in (*single["tier"], *single["connector"]):
        assert "monthly_usd" in c
    for cands in single.values():
        for c in cands:  # each in the options table with its verdict
            assert f"| {c['name']} |" in adr
    assert "breaker-forms.png" in adr and (EXAMPLE / "breaker-forms.png").exists()
