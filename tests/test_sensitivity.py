"""Global sensitivity (sim/sensitivity.py): a constructed scenario where one unknown decides
everything is ranked first and named as what to measure first, with its command; a value the
model never reads has indices of exactly 0; the command writes its files; a design too small for
the method is refused naming the option."""

from __future__ import annotations

import json

import numpy as np
import pytest
from cli_helpers import call_main

from sim import scenario as scenarios
from sim.measurement import OTHER_CONNECTIONS_SQL
from sim.sensitivity import (
    SensitivitySettings,
    analyse,
    assess,
    base_points,
    flip_shares,
    saltelli_design,
)

# Ten instances open 2 connections each at start and hold 2 once ready; every duration is
# constant and nothing else is scarce. Free slots = 50 − 3 − other_connections, so the start
# fits, and the ready fleet's 10 × 2 = 20 connections fit, exactly when other ≤ 27: then no
# attempt fails (P = 0, meets); from 28 on the twentieth connection is refused (53300), attempts
# fail and the fleet cannot hold its connections (misses). The verdict is [other ≤ 27], whatever
# the other ranges: the time before the database and after it, and the restart pause, only move
# when failures happen, and cloudsql.quota_per_minute is never read with cloudsql off.
DOMINANT = """name = "dominant"
horizon_s = 60.0
[fleet]
instances = 10
[startup]
before_db_s = { dist = "constant", value = { range = [0.1, 1.0] } }
db_init_timeout_s = 5.0
init_queries_s = { dist = "constant", value = 0.01 }
after_db_s = { dist = "constant", value = { range = [0.5, 2.0] } }
[pool]
min_size = 2
held_when_ready = 2
[connector]
setups_per_instance = 100
setup_s = { dist = "constant", value = 0.01 }
[database]
max_connections = 50
reserved_connections = 3
other_connections = { range = [0, 40] }
accept_s = { dist = "constant", value = 0.001 }
[restart]
policy = "fixed"
initial_backoff_s = { range = [1.0, 4.0] }
max_restarts = 3
[cloudsql]
enabled = false
quota_per_minute = { range = [60, 600] }
"""
SETTINGS = SensitivitySettings(base=16, replications=4, engine="reference", resamples=50)


@pytest.fixture(scope="module")
def result():
    return analyse(scenarios.loads(DOMINANT), SETTINGS)


def test_the_one_unknown_that_decides_is_ranked_first_and_measured_first(result):
    first = result.first
    assert first is not None and first.field == "database.other_connections"
    assert result.effects[0] is first
    # The verdict is [other ≤ 27] alone: no other value ever flips it.
    assert all(e.flips == 0 for e in result.effects[1:])
    # Rows A and AB_other differ exactly when the two draws of other fall on both sides of 27.5.
    other = np.array(result.per_world.of("database.other_connections")).reshape(16, -1)
    sides = other <= 27
    assert first.flips == pytest.approx(np.mean(sides[:, 0] != sides[:, -1]))
    assert first.flips > 0.2
    # Meets below the threshold, which lies near 27.5 (within a bin of the 8 over 0–40).
    assert first.holds_above is False and 22 <= first.threshold <= 33
    m = first.measurement
    assert OTHER_CONNECTIONS_SQL in m.command and "pg_stat_activity" in m.command
    assert m.unit == "readings" and m.runs is not None and m.runs >= 1
    # Its total index on the verdict is 2 × flips ÷ 2 Var(verdict) > 0 (Jansen); every other
    # value's is exactly 0 (its rows A and AB_i agree everywhere).
    assert first.meets.total > 0.3
    assert all(e.meets.total == 0 for e in result.effects[1:])
    # The verdict in each world is exactly the arithmetic.
    meets = np.array(result.per_world.meets)
    other = np.array(result.per_world.of("database.other_connections"))
    assert np.array_equal(meets, other <= 27)


def test_a_value_the_model_never_reads_has_indices_of_zero_within_their_interval(result):
    # Common random numbers: two worlds that differ only in the quota give identical runs, so
    # A and AB_quota agree row for row and both estimators' numerators are exactly 0.
    quota = next(e for e in result.effects if e.field == "cloudsql.quota_per_minute")
    for index in (quota.p_start_failure, quota.meets):
        assert abs(index.first) <= index.first_conf + 1e-12
        assert abs(index.total) <= index.total_conf + 1e-12
        assert index.total == 0.0
    assert quota.flips == 0 and quota.threshold is None and quota.measurement.runs is None


def test_the_design_is_saltellis_and_repeats_with_its_seed():
    sc = scenarios.loads(DOMINANT)
    d = saltelli_design(sc, 8, seed=3)
    k = len(sc.uncertain)
    assert d.units.shape == (8 * (k + 2), k)
    rows = d.units.reshape(8, k + 2, k)
    for i in range(k):  # AB_i is A with column i from B
        others = [j for j in range(k) if j != i]
        assert np.array_equal(rows[:, 1 + i, others], rows[:, 0, others])
        assert np.array_equal(rows[:, 1 + i, i], rows[:, -1, i])
    assert np.array_equal(saltelli_design(sc, 8, seed=3).units, d.units)
    # flip shares read pairs of rows: A = [T, T], AB_0 = [F, T], B = ... for two base points
    meets = np.array([True, False, True, True, True, True, True, False])
    assert flip_shares(meets, 2) == [0.5, 0.0]


def test_the_budget_is_refused_when_too_small_and_rounded_down_otherwise():
    assert base_points(8 * 13, 11) == 8 and base_points(512, 11) == 32
    with pytest.raises(Exception, match="at least 8 × 13 = 104 worlds"):
        base_points(100, 11)


def test_without_a_range_there_is_nothing_to_assess():
    sc = scenarios.loads(DOMINANT)
    fixed = sc.with_overrides({f: sc.uncertain[f].nominal() for f in sc.uncertain})
    assert assess(fixed, SETTINGS, None, "") is None  # no range: nothing to assess


def test_the_command_writes_its_files(tmp_path, capsys):
    path = tmp_path / "dominant.toml"
    path.write_text(DOMINANT, encoding="utf-8")
    out = tmp_path / "out"
    code = call_main(
        "sensitivity", str(path), "--worlds", "80", "-n", "4", "--engine", "reference",
        "--out", str(out),
    )  # fmt: skip
    assert code == 0
    data = json.loads((out / "sensitivity.json").read_text(encoding="utf-8"))
    assert data["effects"][0]["field"] == "database.other_connections"
    assert data["base"] == 8 and data["worlds"] == 8 * 7
    assert (out / "tornado.png").stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "measure first: database.other_connections" in printed


def test_too_few_worlds_for_the_method_exit_2_naming_the_option(tmp_path, capsys):
    path = tmp_path / "dominant.toml"
    path.write_text(DOMINANT, encoding="utf-8")
    assert call_main("sensitivity", str(path), "--worlds", "40") == 2
    err = capsys.readouterr().err
    assert "--worlds 40" in err and "8 × 7 = 56 worlds" in err
    assert "Traceback" not in err


def test_the_adr_section_names_each_assumption_and_what_to_measure_first(result):
    from sim.report.assumptions import parts
    from sim.sensitivity import Assumptions

    def cite(page, anchor="", label=""):
        return f"docs/{page}#{anchor}"

    assert parts(None, {}, cite) == []  # no range: no section, the ADR unchanged
    (text,) = parts(Assumptions(result, None), {"tornado": "tornado.png"}, cite)
    assert text.startswith("## What this decision assumes")
    for e in result.effects:
        assert f"| `{e.field}` | {e.range} |" in text
    assert "| `cloudsql.quota_per_minute` | 60–600 | 330 | no |" in text
    assert "**What to measure first: `database.other_connections`**" in text
    assert "pg_stat_activity" in text and "![" in text and "(tornado.png)" in text


def test_a_decision_that_sets_an_assumed_value_is_assessed_without_its_range():
    # The decision pins other_connections at 0 (say, the other services move off the server):
    # its worlds vary the other four values only, and nothing flips its verdict any more.
    from sim.report.assumptions import section

    sc = scenarios.loads(DOMINANT)
    a = assess(sc, SETTINGS, {"database.other_connections": 0}, "other services moved")
    assert a.decision is not None and a.today.first.field == "database.other_connections"
    assert "database.other_connections" not in a.decision.per_world.fields
    assert a.decision.first is None and a.decision.meets_share == 1.0
    assert a.decision.worlds == 16 * 6 and a.today.worlds == 16 * 7
    # What to measure first falls back to today's: the value the need for a change rests on.
    assert a.measure_first().field == "database.other_connections"
    text = section(a, {}, lambda *args, **kw: "docs")
    assert "| `database.other_connections` | 0–40 | 20 | fixed by this configuration | — |" in text
    assert "other services moved meets it in 100 % of the worlds, today's configuration in" in text
