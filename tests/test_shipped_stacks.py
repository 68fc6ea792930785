"""The shipped scenarios in their own words: each names the pool library and the platform it
runs on ([stack], [platform]: sim/stack.py), those settings give exactly the model's fields the
scenario always had, and what `recommend` offers for them is a setting of that stack or platform
with the line that applies it, never a model-only field (issue 23)."""

from __future__ import annotations

import tomllib
from importlib import resources

import pytest

from sim import scenario as scenarios
from sim.decision import Change
from sim.diagnose import load_hypothesis, shipped_hypotheses
from sim.options import FIX_KINDS
from sim.recommend import Settings, _changes, own_terms, recommend
from sim.robust import RobustSettings
from sim.sizing import ConnectorFloor, pool_advice
from sim.stack import DEADLINE_FIELD, derive, unexpressed

# Scenarios that may still name neither (the model's own fields, marked as such in the ADR).
CUSTOM: set[str] = set()

# The model's fields each scenario had before it named its stack and platform; the settings must
# give them unchanged (so `startsim simulate` gives the same figures).
MODEL = {
    "capacity-storm": dict(
        min_size=5, max_size=50, held_when_ready=5, start="concurrent", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(2, 10), warm=0, probe="http",
    ),
    "cloudsql-quota-storm": dict(
        min_size=5, max_size=50, held_when_ready=5, start="concurrent", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(2, 10), warm=0, probe="http",
    ),
    "rolling-deploy": dict(
        min_size=5, max_size=50, held_when_ready=5, start="concurrent", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(2, 10), warm=0, probe="http",
    ),
    "warm-connector": dict(
        min_size=5, max_size=50, held_when_ready=5, start="concurrent", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(8, 10), warm=0, probe="http",
    ),
    "eager-pool-storm": dict(
        min_size=20, max_size=50, held_when_ready=20, start="asyncpg", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(2, 10), warm=0, probe="http",
    ),
    "gang-allocation": dict(
        min_size=3, max_size=3, held_when_ready=3, start="asyncpg", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(10, 10), warm=0, probe="http",
    ),
    "hypotheses/capacity": dict(
        min_size=5, max_size=50, held_when_ready=5, start="concurrent", workers=3,
        timeout_s=30.0, growth="per_waiter", connector=(2, 10), warm=0, probe="http",
    ),
    "hypotheses/slow-dependency": dict(
        min_size=2, max_size=50, held_when_ready=2, start="workers", workers=1,
        timeout_s=30.0, growth="per_waiter", connector=(2, 10), warm=0, probe="http",
    ),
}  # fmt: skip


def _load(name: str):
    if name.startswith("hypotheses/"):
        return load_hypothesis(name.split("/", 1)[1])[0]
    return scenarios.resolve(name)


def _shipped() -> list[str]:
    return [*scenarios.builtin_names(), *(f"hypotheses/{h}" for h in shipped_hypotheses())]


def test_every_shipped_scenario_names_its_stack():
    custom = {n for n in _shipped() if _load(n).stack.kind == "custom"}
    assert custom <= CUSTOM


@pytest.mark.parametrize("name", sorted(MODEL))
def test_the_settings_give_the_model_fields_the_scenario_had(name):
    sc = _load(name)
    want = MODEL[name]
    p = sc.pool
    got = dict(
        min_size=p.min_size, max_size=p.max_size, held_when_ready=p.held_when_ready,
        start=p.start, workers=p.workers, timeout_s=p.timeout_s, growth=p.growth,
        connector=(sc.connector.min_instances, sc.connector.max_instances),
        warm=sc.fleet.warm_instances, probe=sc.probe.kind,
    )  # fmt: skip
    assert got == want
    # derive is the one mapping: each field it gives is the scenario's value, and the file sets
    # none of them in [pool] or [connector] (the stack and the platform say them).
    data = tomllib.loads(_text(name))
    for d in derive(sc.stack, sc.platform, sc.startup.phases):
        assert sc.get(d.field) == d.value, d.field
        section, field = d.field.split(".")
        if section in ("pool", "connector"):
            assert field not in data.get(section, {}), d.field


def _text(name: str) -> str:
    folder = resources.files("sim") / "scenarios"
    return (folder / f"{name}.toml").read_text(encoding="utf-8")


def _floor(sc, m: int) -> ConnectorFloor:
    cx = sc.connector
    return ConnectorFloor(cx.min_instances, cx.max_instances, 0, 0, 20.0, m)


def _assert_own_terms(sc, changes: list[Change]) -> None:
    """Each change is a setting of the named stack or platform, or the start-up's own deadline,
    with the line that applies it; a model field only where its section names nothing (custom),
    and then worded by the report from its field. A breaker, a surge limit or a pooler (the
    team's own code, a deploy plan, a process to run) always comes with its code or command."""
    for c in changes:
        if c.kind in FIX_KINDS:  # the team's own code or a rollout plan (sim.options)
            assert c.apply, c.name
            continue
        assert unexpressed(sc.stack, sc.platform, c.overrides) == [], c.overrides
        assert not any(k.startswith("pool.") for k in c.overrides), c.overrides
        own = [k for k in c.overrides if k.startswith(("stack.", "platform."))]
        if own or DEADLINE_FIELD in c.overrides:
            assert c.apply, c.name
        else:  # a model field of a custom section: no line, the ADR names the field
            assert sc.platform.kind == "custom" and c.apply == "", c


@pytest.mark.parametrize("name", sorted(MODEL))
def test_each_change_offered_is_a_setting_with_its_line(name):
    sc = _load(name)
    changes = _changes(sc, None, None, pool_advice(sc, None, 1), _floor(sc, 9))
    _assert_own_terms(sc, changes)


def test_capacity_storms_changes_are_sqlalchemy_and_gcloud():
    sc = scenarios.resolve("capacity-storm")
    changes = _changes(sc, None, None, pool_advice(sc, None, 1), _floor(sc, 3))
    by_kind = {c.kind: c for c in changes}
    warmup = changes[0]  # pool.min_size 1: the warm-up's own code
    assert warmup.overrides == {"stack.warmup_checkouts": 1}
    assert warmup.name == "SQLAlchemy warmup_checkouts 1"
    assert "range(1)" in warmup.apply
    assert "create_async_engine(url, pool_size=20, max_overflow=30" in warmup.apply
    assert by_kind["connector"].overrides == {"platform.connector.min_instances": 3}
    assert "--min-instances=3" in by_kind["connector"].apply
    timeout = own_terms(sc, "timeout", "timeout 27.5 s", {DEADLINE_FIELD: 27.5})
    assert "asyncio.wait_for(init_database(), timeout=27.5)" in timeout.apply


@pytest.mark.parametrize(
    "model",
    [
        {"pool.held_when_ready": 1},  # SQLAlchemy keeps what was checked out: no setting
        {"pool.on_failure": "hold"},  # what a start does with what it opened: no setting
        {"pool.retry_backoff_s": 2.0},  # a retry is code (sim.remedies), not a pool setting
        {"connector.setups_per_instance": 8},  # not published, no setting
    ],
)
def test_a_model_only_change_is_not_offered_under_a_named_stack(model):
    assert own_terms(scenarios.resolve("capacity-storm"), "pool", "x", model) is None


def test_a_custom_scenario_keeps_its_model_fields():
    sc = scenarios.loads('name = "x"\n[fleet]\ninstances = 40\n')
    change = own_terms(sc, "pool", "pool.min_size 1", {"pool.min_size": 1})
    assert change.overrides == {"pool.min_size": 1} and change.apply == ""


@pytest.mark.slow
def test_recommend_on_capacity_storm_offers_only_settings_with_their_lines():
    # A light target and few replications: enough to build and judge every candidate.
    sc = scenarios.resolve("capacity-storm").with_overrides({"fleet.instances": 12})
    settings = Settings(
        target_success=0.9,
        confidence=0.8,
        replications=30,
        history=(),
        robust=RobustSettings(worlds=0),
    )
    rec = recommend(sc, settings)
    changes = [c for cand in rec.candidates for c in cand.changes]
    assert changes
    _assert_own_terms(sc, changes)
    if rec.decision.adopted is not None:
        _assert_own_terms(sc, list(rec.decision.adopted.changes))


@pytest.mark.parametrize("name", ["capacity-storm", "gang-allocation", "staging-incident"])
def test_in_model_terms_is_the_same_model_with_its_fields_free(name):
    sc = scenarios.resolve(name)
    model = sc.in_model_terms()
    assert model.stack.kind == model.platform.kind == "custom"
    mine, theirs = sc.to_dict(), model.to_dict()
    for key in ("sources", "stack", "platform"):
        mine.pop(key), theirs.pop(key)
    assert mine == theirs
    assert not [k for k in model.sources if k.startswith(("stack.", "platform."))]
    assert all(model.label(d.field) for d in derive(sc.stack, sc.platform, sc.startup.phases))
    # a what-if no setting gives: held apart from min_size, a connector of one instance
    what_if = model.with_overrides({"pool.held_when_ready": 1, "connector.min_instances": 1})
    assert (what_if.pool.held_when_ready, what_if.connector.min_instances) == (1, 1)
