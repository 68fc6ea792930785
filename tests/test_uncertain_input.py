"""Uncertain inputs (issue 22, item 1): a numeric field or a distribution's parameter written as a
range or choices holds its nominal value, composes with its [sources] label, reads back from
``scenario.toml``, and every bad range exits 2 naming the field and the value."""

from __future__ import annotations

import math
import tomllib

import pytest
from cli_helpers import call_main

from sim import scenario as scenarios
from sim.errors import ScenarioError
from sim.output import scenario_toml

TIERS = "[25, 50, 100, 200, 400, 500, 600, 800, 1000]"  # Cloud SQL's max_connections by tier

UNCERTAIN = f"""name = "uncertain"
[fleet]
instances = {{ range = [3, 40] }}
[connector]
setup_s = {{ dist = "lognormal", median = {{ range = [0.05, 0.8], scale = "log" }}, sigma = 0.5 }}
[database]
max_connections = {{ choices = {TIERS} }}
[sources]
"fleet.instances" = {{ kind = "assumed", note = "how many start at once is not given" }}
"""


def test_a_range_holds_its_middle_and_choices_their_middle_one():
    sc = scenarios.loads(UNCERTAIN)
    assert sc.fleet.instances == 22  # (3 + 40) / 2 = 21.5, rounded half up, as Source.middle
    assert isinstance(sc.fleet.instances, int)
    assert sc.connector.setup_s.median == pytest.approx(math.sqrt(0.05 * 0.8))  # 0.2
    assert sc.database.max_connections == 400  # the 5th of 9 tiers
    assert set(sc.uncertain) == {
        "fleet.instances",
        "connector.setup_s.median",
        "database.max_connections",
    }
    even = scenarios.loads('name = "x"\n[pool]\nworkers = { choices = [4, 1, 2, 8] }\n')
    assert even.pool.workers == 2  # sorted 1, 2, 4, 8: the lower of the two middle ones


def test_a_scenario_without_ranges_has_no_uncertain_value():
    for name in scenarios.builtin_names():
        if name != scenarios.DEFAULT:
            assert scenarios.resolve(name).uncertain == {}, name


def test_the_label_keeps_kind_and_note_and_shows_the_fields_range():
    entries = {e.field: e for e in scenarios.loads(UNCERTAIN).provenance()}
    e = entries["fleet.instances"]
    assert (e.kind, e.note, e.value) == ("assumed", "how many start at once is not given", 22)
    assert e.detail == "range 3–40"
    assert entries["connector.setup_s.median"].kind == "unlabelled"
    assert entries["connector.setup_s.median"].detail == "uncertain, 0.05–0.8 (log)"
    assert "one of 25, 50" in entries["database.max_connections"].detail


def test_the_written_scenario_reads_back_with_its_ranges():
    sc = scenarios.loads(UNCERTAIN)
    text = scenario_toml(sc)
    assert tomllib.loads(text)["fleet"]["instances"] == {"range": [3, 40]}
    assert scenarios.loads(text) == sc


def test_an_override_fixes_the_value_and_drops_its_range():
    sc = scenarios.loads(UNCERTAIN)
    constant = {"dist": "constant", "value": 0.1}
    fixed = sc.with_overrides({"fleet.instances": 5, "connector.setup_s": constant})
    assert fixed.fleet.instances == 5
    assert set(fixed.uncertain) == {"database.max_connections"}
    assert "fleet.instances" not in fixed.sources
    assert fixed.with_overrides({"database.max_connections": 100}).uncertain == {}
    # A preset brings its own schedule: the range of a restart field it replaces goes too.
    backoff = scenarios.loads('name = "x"\n[restart]\ninitial_backoff_s = { range = [1, 15] }\n')
    assert backoff.restart.initial_backoff_s == 8.0
    kubernetes = backoff.with_overrides({"restart.preset": "kubernetes"})
    assert (kubernetes.restart.initial_backoff_s, kubernetes.uncertain) == (10.0, {})


def _error(body: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as info:
        scenarios.loads(f'name = "x"\n{body}\n', "bad.toml")
    return info.value


BAD = [
    # (file body, field named, value shown, problem)
    ("[fleet]\ninstances = { range = [40, 3] }", "fleet.instances.range", "[40, 3]", "low (40)"),
    (
        '[connector]\nsetup_s = { dist = "lognormal", median = { range = [0, 0.8], scale = "log" }'
        ", sigma = 0.5 }",
        "connector.setup_s.median.range",
        "[0, 0.8]",
        '"log" range must be above 0',
    ),
    (
        "[database]\nmax_connections = { choices = [25, 300000] }",
        "database.max_connections.choices",
        "300000",
        "at most 262,143",
    ),
    ("[fleet]\ninstances = { choices = [0, 5] }", "fleet.instances.choices", "0", "greater than 0"),
    (
        "[database]\nother_connections = { range = [0, 200] }\nmax_connections = 150",
        "database.other_connections.range",
        "200",
        "at this end database.max_connections = 150",
    ),
    ("[fleet]\ninstances = { range = [3.5, 40] }", "fleet.instances.range", "3.5", "whole number"),
    ("[fleet]\narrival = { choices = [1, 2] }", "fleet.arrival", "{'choices'", "it is text"),
    ("[cloudsql]\nenabled = { range = [0, 1] }", "cloudsql.enabled", "{'range'", "true or false"),
    ("[fleet]\nwaves = { range = [1, 2] }", "fleet.waves", "{'range'", "a list"),
    (
        "[startup]\nbefore_db_s = { dist = { choices = [1] }, median = 1.0, sigma = 0.3 }",
        "startup.before_db_s.dist",
        "{'choices'",
        "names the distribution",
    ),
    (
        "[startup]\nbefore_db_s = { range = [1, 4] }",
        "startup.before_db_s",
        "{'range'",
        "cannot take a range itself",
    ),
    (
        '[startup]\nbefore_db_s = { dist = "empirical", values = { range = [1, 2] } }',
        "startup.before_db_s.values",
        "{'range'",
        "measurements",
    ),
    (
        "[team]\ndeploys_per_hour = { range = [3, 6] }",
        "team.deploys_per_hour",
        "{'range'",
        "[team]",
    ),
    (
        "[fleet]\ninstances = { range = [3, 40], choices = [3] }",
        "fleet.instances",
        "{'range'",
        "not both",
    ),
    ("[fleet]\ninstances = { rnage = [3, 40] }", "fleet.instances.rnage", "[3, 40]", "unknown"),
    ("[fleet]\ninstances = { choices = [3, 3] }", "fleet.instances.choices", "[3, 3]", "twice"),
    (
        '[fleet]\ninstances = { choices = [3, 4], scale = "log" }',
        "fleet.instances.scale",
        "'log'",
        "not to choices",
    ),
    (
        '[fleet]\ninstances = { range = [3, 40] }\n[sources]\n"fleet.instances" = '
        '{ kind = "assumed", note = "n", range = [3, 40] }',
        "sources.fleet.instances.range",
        "[3.0, 40.0]",
        "gives its range itself",
    ),
    ("[uncertain]\n'fleet.instances' = 1", "uncertain", "{'fleet.instances'", "in the field"),
]


@pytest.mark.parametrize(("body", "field", "shown", "problem"), BAD, ids=[b[1] for b in BAD])
def test_a_bad_range_names_the_field_and_the_value(body, field, shown, problem):
    exc = _error(body)
    assert exc.field == field, str(exc)
    assert str(exc).startswith(f"bad.toml: {field} = {shown}"), str(exc)
    assert problem in exc.problem, str(exc)


def test_a_bad_range_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[fleet]\ninstances = { range = [40, 3] }\n', encoding="utf-8")
    assert call_main("simulate", str(path), "-n", "2") == 2
    err = capsys.readouterr().err
    assert "fleet.instances.range = [40, 3]: low (40) must not exceed high (3)" in err
    assert "Traceback" not in err
