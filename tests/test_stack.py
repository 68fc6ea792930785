"""[stack] and [platform]: the pool library and the platform in their own words, mapped onto the
model's fields in one place (sim/stack.py, docs/scenario.md "Stack" and "Platform"), refused when
a file sets a setting and its model field apart, and the changes recommend offers written in
those settings with the line that applies them."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest
from cli_helpers import call_main

from sim import scenario as scenarios
from sim.distributions import MAX_DURATION_S
from sim.errors import ScenarioError
from sim.output import scenario_toml
from sim.recommend import _changes, own_terms
from sim.scenario import field_names, from_dict, loads
from sim.sizing import ConnectorFloor, pool_advice

ROOT = Path(__file__).resolve().parents[1]


def _sc(text: str):
    return loads('name = "x"\n' + text)


def _pool(sc) -> dict:
    p = sc.pool
    return {
        "min_size": p.min_size,
        "max_size": p.max_size,
        "held_when_ready": p.held_when_ready,
        "start": p.start,
        "timeout_s": p.timeout_s,
        "growth": p.growth,
    }


# -- the mapping table, kind by kind -------------------------------------------------------------


@pytest.mark.parametrize(
    ("stack", "pool", "workers"),
    [
        # SQLAlchemy's defaults: 5 + 10, 30 s, no warm-up
        ('kind = "sqlalchemy"',
         dict(min_size=0, max_size=15, held_when_ready=0, start="concurrent", timeout_s=30.0,
              growth="per_waiter"), None),
        ('kind = "sqlalchemy"\npool_size = 20\nmax_overflow = 30\npool_timeout = 10.0\n'
         'warmup_checkouts = 5\nwarmup = "one_then_rest"',
         dict(min_size=5, max_size=50, held_when_ready=5, start="asyncpg", timeout_s=10.0,
              growth="per_waiter"), None),
        # held_when_ready: what was checked out, kept up to pool_size
        ('kind = "sqlalchemy"\npool_size = 3\nwarmup_checkouts = 8\nwarmup = "sequential"',
         dict(min_size=8, max_size=13, held_when_ready=3, start="workers", timeout_s=30.0,
              growth="per_waiter"), 1),
        ('kind = "asyncpg"',
         dict(min_size=10, max_size=10, held_when_ready=10, start="asyncpg",
              timeout_s=MAX_DURATION_S, growth="per_waiter"), None),
        ('kind = "asyncpg"\nmin_size = 1\nmax_size = 20\nacquire_timeout = 5.0',
         dict(min_size=1, max_size=20, held_when_ready=1, start="asyncpg", timeout_s=5.0,
              growth="per_waiter"), None),
        ('kind = "psycopg_pool"',
         dict(min_size=4, max_size=4, held_when_ready=4, start="workers", timeout_s=30.0,
              growth="background"), 3),
        ('kind = "psycopg_pool"\nmin_size = 2\nmax_size = 12\nnum_workers = 2\ntimeout = 7.5',
         dict(min_size=2, max_size=12, held_when_ready=2, start="workers", timeout_s=7.5,
              growth="background"), 2),
        ('kind = "hikari"',
         dict(min_size=10, max_size=10, held_when_ready=10, start="background", timeout_s=30.0,
              growth="background"), None),
        ('kind = "hikari"\nminimumIdle = 0\nmaximumPoolSize = 50\nconnectionTimeout = 250',
         dict(min_size=1, max_size=50, held_when_ready=0, start="background", timeout_s=0.25,
              growth="background"), None),
        ('kind = "hikari"\nminimumIdle = 5\ninitializationFailTimeout = -1',
         dict(min_size=0, max_size=10, held_when_ready=5, start="background", timeout_s=30.0,
              growth="background"), None),
    ],
)  # fmt: skip
def test_each_stack_gives_the_pool_fields_of_the_table(stack, pool, workers):
    sc = _sc(f"[stack]\n{stack}\n")
    assert _pool(sc) == pool
    if workers is not None:
        assert sc.pool.workers == workers


def test_sqlalchemy_keeps_the_connections_its_start_up_phases_keep():
    # The default: no warm-up; the table check and the schema validation keep theirs (R5, R8).
    sc = scenarios.resolve(scenarios.DEFAULT)
    assert sc.stack.kind == "sqlalchemy"
    assert (sc.pool.min_size, sc.pool.max_size, sc.pool.held_when_ready) == (0, 50, 2)
    assert sc.pool.timeout_s == 10.0  # R8's pool_timeout
    assert sc.platform.kind == "cloud_run"
    assert (sc.connector.min_instances, sc.connector.max_instances) == (2, 10)
    assert (sc.fleet.warm_instances, sc.probe.kind) == (0, "tcp")


@pytest.mark.parametrize(
    ("platform", "fields"),
    [
        ('kind = "cloud_run"\nmin_instances = 2',
         {"fleet.warm_instances": 2, "probe.kind": "tcp", "restart.preset": "custom"}),
        ('kind = "cloud_run"\nmin_instances = 2\ndeploy = true\nstartup_probe = "http"',
         {"fleet.warm_instances": 0, "probe.kind": "http"}),
        ('kind = "cloud_run"\n[platform.connector]\nmin_instances = 3\nmax_instances = 7\n'
         'machine_type = "e2-standard-4"',
         {"connector.min_instances": 3, "connector.max_instances": 7}),
        ('kind = "kubernetes"\nmax_surge = 4\nstartup_probe = "tcp"',
         {"fleet.instances": 4, "probe.kind": "tcp"}),
    ],
)  # fmt: skip
def test_each_platform_gives_the_model_fields_of_the_table(platform, fields):
    sc = _sc(f"[platform]\n{platform}\n")
    assert {k: sc.get(k) for k in fields} == fields


# -- conflicts and bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "field", "names"),
    [
        ('[stack]\nkind = "sqlalchemy"\npool_size = 20\n[pool]\nmax_size = 40',
         "pool.max_size", ["stack.pool_size", "stack.max_overflow", "30"]),
        ('[stack]\nkind = "asyncpg"\nmin_size = 2\n'
         '[pool]\nmin_size = 3\nmax_size = 10\nheld_when_ready = 3',
         "pool.min_size", ["stack.min_size"]),
        ('[stack]\nkind = "hikari"\nconnectionTimeout = 5000\n[pool]\ntimeout_s = 30.0',
         "pool.timeout_s", ["stack.connectionTimeout"]),
        ('[stack]\nkind = "psycopg_pool"\n[pool]\ngrowth = "per_waiter"',
         "pool.growth", ["stack.kind"]),
        ('[platform]\nkind = "cloud_run"\nmin_instances = 1\n[fleet]\nwarm_instances = 0',
         "fleet.warm_instances", ["platform.min_instances"]),
        ('[platform]\nkind = "cloud_run"\n[platform.connector]\nmin_instances = 3\n'
         '[connector]\nmin_instances = 2', "connector.min_instances",
         ["platform.connector.min_instances"]),
        ('[platform]\nkind = "cloud_run"\nmax_instances = 5\n[fleet]\ninstances = 6',
         "fleet.instances", ["platform.max_instances"]),
        ('[platform]\nkind = "cloud_run"\n[probe]\nkind = "http"', "probe.kind",
         ["platform.startup_probe"]),
        ('[platform]\nkind = "kubernetes"\nmax_surge = 3\n[fleet]\ninstances = 4',
         "fleet.instances", ["platform.max_surge"]),
        ('[stack]\npool_size = 20', "stack.kind", ["sqlalchemy"]),
        ('[stack]\nkind = "django"', "stack", ["django"]),
        ('[stack]\nkind = "sqlalchemy"\npool_sise = 20', "stack.pool_sise", ["unknown"]),
        ('[stack]\nkind = "sqlalchemy"\npool_size = 0', "stack.pool_size", ["greater than 0"]),
        ('[stack]\nkind = "sqlalchemy"\nwarmup_checkouts = 16', "stack.warmup_checkouts",
         ["15"]),
        ('[stack]\nkind = "hikari"\nminimumIdle = 11', "stack.minimumIdle",
         ["stack.maximumPoolSize"]),
        ('[stack]\nkind = "hikari"\nconnectionTimeout = 100', "stack.connectionTimeout",
         ["250"]),
        ('[platform]\nkind = "cloud_run"\n[platform.connector]\nmin_instances = 10',
         "platform.connector.min_instances", ["9"]),
        ('[platform]\nkind = "cloud_run"\n[platform.connector]\nmachine_type = "n1"',
         "platform.connector.machine_type", ["n1"]),
    ],
)  # fmt: skip
def test_a_conflict_or_a_bad_setting_names_its_fields(text, field, names):
    with pytest.raises(ScenarioError) as err:
        _sc(text)
    assert err.value.field == field
    for name in names:
        assert name in str(err.value)


def test_equal_values_are_no_conflict():
    sc = _sc(
        '[stack]\nkind = "sqlalchemy"\npool_size = 20\nmax_overflow = 30\n'
        "[pool]\nmax_size = 50\nmin_size = 0\ntimeout_s = 30.0\n"
    )
    assert sc.pool.max_size == 50


def test_a_conflict_exits_2_on_the_command_line_naming_both_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(
        'name = "x"\n[stack]\nkind = "sqlalchemy"\npool_size = 20\nmax_overflow = 30\n'
        "[pool]\nmax_size = 40\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    assert call_main("simulate", str(path), "-n", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "pool.max_size" in err and "stack.pool_size" in err and "stack.max_overflow" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_a_bad_setting_exits_2_on_the_command_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[stack]\nkind = "hikari"\nmaximumPoolSize = -1\n')
    assert call_main("simulate", str(path), "-n", "2") == 2
    err = capsys.readouterr().err
    assert "stack.maximumPoolSize" in err and "Traceback" not in err


# -- round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", scenarios.builtin_names())
def test_every_shipped_scenario_round_trips_through_its_written_file(name):
    sc = scenarios.resolve(name)
    assert loads(scenario_toml(sc)) == sc
    assert from_dict(sc.file_dict()) == sc
    # an override of an unrelated field raises no false conflict with the derived ones
    again = sc.with_overrides({"startup.db_init_timeout_s": sc.startup.db_init_timeout_s})
    assert again.pool == sc.pool and again.fleet == sc.fleet


def test_a_scenario_with_every_kind_round_trips():
    for stack, platform in [
        ('kind = "sqlalchemy"\nwarmup_checkouts = 3\nwarmup = "sequential"', 'kind = "custom"'),
        ('kind = "asyncpg"\nmin_size = 2', 'kind = "kubernetes"\nmax_surge = 5'),
        ('kind = "psycopg_pool"\nmax_size = 9', 'kind = "cloud_run"\n[platform.connector]'),
        ('kind = "hikari"\nminimumIdle = 2', 'kind = "cloud_run"\nmin_instances = 1'),
    ]:
        sc = _sc(f"[stack]\n{stack}\n[platform]\n{platform}\n")
        assert loads(scenario_toml(sc)) == sc


def test_a_model_field_is_changed_through_the_settings_that_give_it():
    sc = _sc('[stack]\nkind = "sqlalchemy"\npool_size = 20\nmax_overflow = 30\n')
    smaller = sc.with_overrides({"pool.max_size": 12})
    assert (smaller.stack.pool_size, smaller.stack.max_overflow, smaller.pool.max_size) == (
        12,
        0,
        12,
    )
    warm = sc.with_overrides({"pool.min_size": 4})
    assert (warm.stack.warmup_checkouts, warm.pool.held_when_ready) == (4, 4)
    # and a setting re-derives every field it gives
    moved = sc.with_overrides({"stack.pool_size": 2, "stack.warmup_checkouts": 4})
    assert (moved.pool.max_size, moved.pool.held_when_ready) == (32, 2)


def test_a_model_field_no_setting_gives_on_its_own_is_refused():
    sc = _sc('[stack]\nkind = "sqlalchemy"\n')
    with pytest.raises(ScenarioError) as err:
        sc.with_overrides({"pool.held_when_ready": 3})
    assert err.value.field == "pool.held_when_ready"


def test_sweeps_see_the_settings_as_fields():
    sc = scenarios.resolve(scenarios.DEFAULT)
    names = field_names(sc)
    assert {"stack.pool_size", "platform.max_instances", "platform.connector.min_instances"} <= (
        set(names)
    )
    assert sc.with_overrides({"platform.connector.min_instances": 4}).connector.min_instances == 4


# -- recommend's changes, in the stack's and the platform's terms --------------------------------

STORM = """
[fleet]
instances = 40
[stack]
kind = "sqlalchemy"
pool_size = 20
max_overflow = 30
warmup_checkouts = 5
[platform]
kind = "cloud_run"
max_instances = 100
[platform.connector]
min_instances = 2
max_instances = 10
[database]
max_connections = 100
"""


def _floor(sc, m):
    return ConnectorFloor(sc.connector.min_instances, sc.connector.max_instances, 0, 0, 20.0, m)


def test_candidates_are_settings_with_the_line_that_applies_them():
    sc = _sc(STORM)
    changes = _changes(sc, None, None, pool_advice(sc, None, 1), _floor(sc, 4))
    assert {c.kind for c in changes} >= {"pool", "connector"}
    for c in changes:
        model = [k for k in c.overrides if not k.startswith(("stack.", "platform."))]
        # a capped fleet: --max-instances; Direct VPC egress: --network, --subnet
        assert model in ([], ["fleet.instances"], ["egress.kind"]), c.overrides
        assert "pool.held_when_ready" not in c.overrides
        assert c.apply, c.name
        after = sc.with_overrides(c.overrides)  # re-derives every field consistently
        assert loads(scenario_toml(after)) == after
    by_kind = {c.kind: c for c in changes}
    assert "create_async_engine(url, pool_size=" in by_kind["pool"].apply
    assert by_kind["pool"].name.startswith("SQLAlchemy ")
    connector = by_kind["connector"]
    assert connector.overrides == {"platform.connector.min_instances": 4}
    assert "gcloud compute networks vpc-access connectors update" in connector.apply
    assert "--min-instances=4" in connector.apply


def test_a_warm_up_change_is_written_as_the_start_ups_own_code():
    sc = _sc(STORM)
    change = own_terms(sc, "pool", "pool.min_size 1", {"pool.min_size": 1})
    assert change.overrides == {"stack.warmup_checkouts": 1}
    assert "engine.connect()" in change.apply and "range(1)" in change.apply


def test_a_change_no_setting_expresses_is_not_offered():
    sc = _sc(STORM)
    assert own_terms(sc, "pool", "held 1", {"pool.held_when_ready": 1}) is None


@pytest.mark.parametrize(
    ("stack", "model", "line"),
    [
        ('kind = "asyncpg"', {"pool.min_size": 1},
         "await asyncpg.create_pool(dsn, min_size=1, max_size=10)"),
        ('kind = "hikari"', {"pool.min_size": 2}, "spring.datasource.hikari.minimum-idle=2"),
        ('kind = "psycopg_pool"\nmax_size = 10', {"pool.min_size": 1},
         "AsyncConnectionPool(conninfo, min_size=1, max_size=10"),
    ],
)  # fmt: skip
def test_each_stack_writes_its_own_line(stack, model, line):
    sc = _sc(f'[stack]\n{stack}\n[platform]\nkind = "cloud_run"\n')
    change = own_terms(sc, "pool", "x", model)
    assert line in change.apply


def test_cloud_run_instances_are_a_gcloud_line():
    sc = _sc('[platform]\nkind = "cloud_run"\n[fleet]\ninstances = 40\n')
    change = own_terms(sc, "fleet", "fleet capped", {"fleet.instances": 8})
    assert change.overrides == {"platform.max_instances": 8, "fleet.instances": 8}
    assert "gcloud run services update SERVICE --region REGION --max-instances=8" in change.apply
    assert change.name == "Cloud Run --max-instances 8"


def test_a_custom_stack_keeps_the_model_fields():
    sc = _sc("[fleet]\ninstances = 40\n")
    change = own_terms(sc, "pool", "pool.min_size 1", {"pool.min_size": 1})
    assert change.overrides == {"pool.min_size": 1} and change.apply == ""


def test_the_defaults_adopted_change_is_applied_with_gcloud():
    # results/example is `startsim recommend` on the default (tests/test_report.py checks it is
    # current): its adopted change says how to apply it in the team's own commands.
    summary = json.loads((ROOT / "results" / "example" / "summary.json").read_text())
    changes = summary["decision"]["changes"]
    assert changes
    for c in changes:
        assert c["apply"], c["change"]
        assert "gcloud " in c["apply"] or "create_async_engine" in c["apply"]
    text = (ROOT / "results" / "example" / "adr.md").read_text(encoding="utf-8")
    assert "How to apply" in text and "gcloud run services update SERVICE" in text


def test_the_shipped_default_names_its_stack_and_platform_in_its_file():
    text = (resources.files("sim") / "scenarios" / "staging-incident.toml").read_text()
    assert '[stack]\nkind = "sqlalchemy"' in text and '[platform]\nkind = "cloud_run"' in text


def test_a_change_the_settings_already_make_is_not_offered():
    sc = _sc(STORM)
    assert own_terms(sc, "pool", "same", {"pool.min_size": 5}) is None


def test_a_deploy_starts_beside_the_old_revision_each_with_its_own_maximum():
    sc = _sc(
        '[platform]\nkind = "cloud_run"\nmax_instances = 5\ndeploy = true\n[fleet]\ninstances = 6\n'
    )
    assert sc.fleet.instances == 6
