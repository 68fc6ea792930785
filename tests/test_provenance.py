"""Provenance as data: every value a shipped scenario sets carries a label that is true to its
kind (a fact cites one of the incident's facts, a published figure lands on its entry in
docs/sources.md, the default's assumptions sit at the middle of their ranges), bad labels exit 2
naming the label, and no shipped text calls a figure the incident's that the incident does not
give."""

from __future__ import annotations

import json
import re
import tomllib
from importlib import resources
from pathlib import Path

import pytest
from builders import set_fields
from cli_helpers import call_main
from doclinks import file_anchors

from sim import scenario as scenarios
from sim.errors import ScenarioError
from sim.output import scenario_toml
from sim.provenance import DEFAULT_SOURCES, INCIDENT_FACTS, UNLABELLED, Source
from sim.report.evidence import known_and_assumed
from sim.scenario import Scenario, field_names, loads

ROOT = Path(__file__).resolve().parents[1]
SOURCES_MD = ROOT / "docs" / "sources.md"
SHIPPED = scenarios.builtin_names()


def _text(name: str) -> str:
    return (resources.files("sim") / "scenarios" / f"{name}.toml").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", SHIPPED)
def test_every_field_a_shipped_scenario_sets_has_a_label(name):
    sc = scenarios.resolve(name)
    unlabelled = [f for f in set_fields(tomllib.loads(_text(name))) if sc.label(f) is None]
    assert unlabelled == [], f"{name} sets these without a label in [sources]"


@pytest.mark.parametrize("name", SHIPPED)
def test_labels_are_true_to_their_kind(name):
    anchors = file_anchors(SOURCES_MD)
    for field, src in scenarios.resolve(name).sources.items():
        assert set(src.cite) <= set(INCIDENT_FACTS), (name, field)
        if src.kind == "fact":  # a fact rests on a fact of the incident, never on a claim
            assert any(INCIDENT_FACTS[f][0] == "fact" for f in src.cite), (name, field)
        if src.kind == "published":
            assert src.anchor in anchors, (name, field, src.anchor)


def test_every_default_label_lands_in_the_docs_and_covers_every_field():
    anchors = file_anchors(SOURCES_MD)
    fields = [f for f in field_names() if f not in ("name", "description")]
    assert set(DEFAULT_SOURCES) >= set(fields)
    for field, src in DEFAULT_SOURCES.items():
        assert not src.problems(), field
        if src.kind == "published":
            assert src.anchor in anchors, (field, src.anchor)
    assert all(e.kind != UNLABELLED and e.default for e in Scenario().provenance())


def test_docs_state_every_incident_fact_by_its_id():
    text = SOURCES_MD.read_text(encoding="utf-8")
    assert "the-incidents-own-facts" in file_anchors(SOURCES_MD)
    section = text.split("## The incident's own facts", 1)[1].split("\n## ", 1)[0]
    missing = [f for f in INCIDENT_FACTS if not re.search(rf"\b{f}\b", section)]
    assert missing == []


def test_the_defaults_assumptions_are_uncertain_and_sit_at_the_middle_of_their_ranges():
    # Issue 22: each assumption of the default with a plausible range gives it in the field, and
    # its nominal value (what single-world commands run) is the range's middle, as Source.middle.
    sc = scenarios.resolve(scenarios.DEFAULT)
    # (startup.before_db_s.median is fitted to the raw logs' cadence, not assumed.)
    assert {
        "connector.setups_per_instance",
        "connector.setup_s.median",
        "database.other_connections",
        "path.fail_after_s.median",
    } <= set(sc.uncertain)
    data = sc.to_dict()
    for key, spread in sc.uncertain.items():
        assert sc.label(key).kind == "assumed", key
        value = data
        for part in key.split("."):
            value = value[part]
        src = Source(kind="assumed", note="n", range=list(spread.range), scale=spread.scale)
        mid = src.middle(integer=isinstance(value, int))
        assert value == pytest.approx(mid, rel=1e-9), (key, value, mid)
    assert not [k for k, s in sc.sources.items() if s.kind == "assumed" and s.range]


def test_middle_of_a_range_by_hand():
    assert Source(kind="assumed", note="n", range=[3, 40]).middle(integer=True) == 22
    assert Source(kind="assumed", note="n", range=[2, 8]).middle() == 5
    assert Source(kind="assumed", note="n", range=[0.05, 0.8], scale="log").middle() == (
        pytest.approx(0.2)
    )


def test_the_default_cites_the_incidents_own_figures():
    sc = scenarios.resolve(scenarios.DEFAULT)
    cited = {f for s in sc.sources.values() if s.kind == "fact" for f in s.cite}
    assert {"F2", "F3", "F9", "F11", "F13"} <= cited
    assert sc.team.observed_failures == 649 and sc.team.success_criterion == 0.95
    assert sc.label("team.observed_failures").cite == ["F3"]


BASE = 'name = "x"\n[fleet]\ninstances = 12\n[sources]\n'


@pytest.mark.parametrize(
    ("label", "field", "shown"),
    [
        ('"fleet.instancez" = { kind = "assumed", note = "n" }', "sources.fleet.instancez", ""),
        ('"fleet.instances" = { kind = "guess" }', "sources.fleet.instances.kind", "guess"),
        ('"fleet.instances" = { kind = "fact", cite = ["F99"] }', "sources.fleet.instances.cite",
         "F99"),
        ('"fleet.instances" = { kind = "fact", cite = ["F7"] }', "sources.fleet.instances.cite",
         "F7"),
        ('"fleet.instances" = { kind = "published" }', "sources.fleet.instances.anchor", ""),
        ('"fleet.instances" = { kind = "measured", source = "run 3" }',
         "sources.fleet.instances.n", ""),
        ('"fleet.instances" = { kind = "assumed" }', "sources.fleet.instances.note", ""),
        ('"fleet.instances" = { kind = "assumed", note = "n", range = [20, 30] }',
         "sources.fleet.instances", "12"),
        ('"fleet.instances" = { kind = "assumed", note = "n", range = [30, 20] }',
         "sources.fleet.instances.range", "30"),
        ('"connector.setup_s.mu" = { kind = "assumed", note = "n" }',
         "sources.connector.setup_s.mu", ""),
        ('"team.observed_failures" = { kind = "fact", cite = ["F3"] }',
         "sources.team.observed_failures", ""),
        ('"fleet.instances" = { kind = "assumed", note = "n", colour = "red" }',
         "sources.fleet.instances.colour", ""),
    ],
)  # fmt: skip
def test_a_bad_label_names_itself(label, field, shown):
    with pytest.raises(ScenarioError) as err:
        loads(BASE + label)
    assert err.value.field == field
    assert shown in str(err.value)


def test_a_bad_label_exits_2_on_the_command_line_and_writes_nothing(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text(BASE + '"fleet.instances" = { kind = "rumour" }\n', encoding="utf-8")
    out = tmp_path / "out"
    assert call_main("simulate", str(path), "-n", "2", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert "sources.fleet.instances.kind" in err and "rumour" in err
    assert "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_toml_nesting_and_quoted_dotted_keys_are_the_same_label():
    quoted = loads(BASE + '"fleet.instances" = { kind = "fact", cite = ["R2"] }')
    nested = loads(BASE + 'fleet.instances = { kind = "fact", cite = ["R2"] }')
    assert quoted.sources == nested.sources


def test_an_override_drops_the_label_of_the_value_it_replaces():
    sc = scenarios.resolve(scenarios.DEFAULT)
    moved = sc.with_overrides({"connector.setup_s": {"dist": "constant", "value": 1.0}})
    assert "connector.setup_s" not in moved.sources
    assert "connector.setup_s.median" not in moved.sources
    assert moved.sources["fleet.instances"] == sc.sources["fleet.instances"]
    entry = {e.field: e for e in moved.provenance()}["connector.setup_s"]
    assert entry.kind == UNLABELLED


def test_labels_survive_the_scenario_file_written_with_results():
    sc = scenarios.resolve(scenarios.DEFAULT)
    again = loads(scenario_toml(sc))
    assert again.sources == sc.sources
    assert again.provenance() == sc.provenance()


@pytest.mark.parametrize("name", SHIPPED)
def test_every_assumption_of_a_shipped_scenario_is_listed_in_its_adr_context(name):
    entries = tuple(scenarios.resolve(name).provenance())
    text = known_and_assumed(entries, lambda page, anchor="", label="": label or page)
    assumed = [e for e in entries if e.kind == "assumed"]
    assert assumed and "**Assumptions**" in text
    for e in assumed:
        assert f"`{e.field}` = " in text, e.field
    assert "**Not labelled**" not in text


def test_simulate_reports_where_its_inputs_come_from(capsys):
    assert call_main("simulate", "-n", "4", "--engine", "reference", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    kinds = {e["field"]: e["kind"] for e in data["sources"]}
    assert kinds["startup.db_init_timeout_s"] == "fact"
    assert kinds["fleet.instances"] == "fact"  # three starts a deploy, R2
    assert kinds["database.other_connections"] == "assumed"
    assert data["success"]["definition"] == "starts"
    assert set(data["success"]["by_definition"]) == {
        "starts",
        "first_starts",
        "instances_ready",
        "clean_deploys",
    }
    assert call_main("simulate", "-n", "4", "--engine", "reference") == 0
    table = capsys.readouterr().out
    assert "inputs:" in table and "assumed, with a plausible range" in table


# Figures the incident does not give, which earlier text called the incident's.
NOT_THE_INCIDENTS = re.compile(
    r"40[- ]instances?|a fifth|7\.5.15 ?GB|20\.2 s|fitted to the incident|field measurement.{0,40}"
    r"team|team's own observation",
    re.IGNORECASE,
)
HEDGES = re.compile(r"assum|hypothe|not given|not the incident|what-if|capacity-storm|claim|"
                    r"unknown|nobody measured|reconstruction", re.IGNORECASE)  # fmt: skip


def _shipped_texts():
    for pattern in ("README.md", "docs/*.md", "sim/scenarios/*.toml", "notebooks/*.ipynb",
                    "sim/scenarios/hypotheses/*.toml",
                    "results/example/*.md", "examples/*.py"):  # fmt: skip
        yield from sorted(ROOT.glob(pattern))


def test_no_shipped_sentence_calls_a_non_fact_the_incidents():
    found = []
    for path in _shipped_texts():
        text = path.read_text(encoding="utf-8")
        for sentence in re.split(r"(?<=[.!?])\s+|\n\s*\n", text):
            claims = "incident" in sentence.lower() and NOT_THE_INCIDENTS.search(sentence)
            if claims and not HEDGES.search(sentence):
                found.append(f"{path.relative_to(ROOT)}: {' '.join(sentence.split())[:160]}")
    assert found == []
