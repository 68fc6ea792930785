"""The incident's diagnosis from its public logs: the database-phase failure cycles as attempts
(docs/incident/attempts.csv, made by tools/derive_incident.py from the shipped derived logs),
read by the start-up-log reader with their reasons and phases, and `startsim diagnose` on them:
the capacity story rejected, the path fault as logged accepted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from builders import derive_incident_tool
from cli_helpers import call_main

from sim.calibrate.inputs import read_log
from sim.diagnose import load_hypothesis, observed, signals
from sim.errors import InputError
from sim.scenario import resolve

ROOT = Path(__file__).resolve().parents[1]
INCIDENT = ROOT / "docs" / "incident"
ATTEMPTS = INCIDENT / "attempts.csv"
STARTSIM = [sys.executable, "-c", "from sim.cli import main; main()"]


def _entries() -> list[dict]:
    text = (INCIDENT / "derived-logs.jsonl").read_text(encoding="utf-8")
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def test_the_shipped_attempts_are_what_the_tool_makes_from_the_shipped_logs(tmp_path):
    tool = derive_incident_tool()
    out = tmp_path / "attempts.csv"
    assert tool.main(["attempts", str(INCIDENT / "derived-logs.jsonl"), "-o", str(out)]) == 0
    assert out.read_bytes() == ATTEMPTS.read_bytes()


def test_the_attempts_and_how_each_time_was_derived():
    rows, how = derive_incident_tool().attempt_rows(_entries())
    # 00709-bg5: seven instances one at a time, the first without a row (its start was cut);
    # 00711-d6z: three, the last without a row (its lines end before its failure). 00704-ds8 ran
    # two or three instances at once: no chain. The import-error revisions are not database
    # failures (R12).
    assert [(r["run"], r["attempt"]) for r in rows] == [
        *(("00709-bg5", k) for k in range(2, 8)),
        ("00711-d6z", 1),
        ("00711-d6z", 2),
    ]
    assert sum("no row" in line for line in how) == 2
    into = [float(r["phase.table_check"]) for r in rows]
    # Four failures logged (10.14-10.33 s after the migration failure, R6) and four derived from
    # exit(3) less the measured 1.44 s.
    assert min(into) > 10.1 and max(into) < 10.4
    assert {r["reason"] for r in rows} == {"phase_deadline"}


def test_the_reader_carries_reasons_and_phases():
    (bg5, d6z) = read_log(ATTEMPTS)
    assert [a.reason for a in bg5.attempts] == ["phase_deadline"] * 6
    assert {a.phase for a in d6z.attempts} == {"table_check"}
    obs = observed([bg5, d6z])
    s = signals(obs.records)
    assert s.error_kinds == {"phase_deadline": 8} and s.failing_phases == {"table_check": 8}
    # The failure's time within its phase is the table check's duration: the first database part.
    assert sorted(s.failure_time_in_phase_s.round(3).tolist())[:2] == [10.14, 10.161]
    # One chain a deploy (one instance at a time, R3); start to start 62.9-81.1 s. The file says
    # that it keeps only part of each deploy.
    assert s.starts_per_deploy.tolist() == [1, 1]
    assert s.restart_cadence_s.size == 6 and 62 < s.restart_cadence_s.min() < 63
    assert bg5.partial_deploys and d6z.partial_deploys


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("phase_deadline,table_check", None),
        ("too_many,table_check", "reason = 'too_many': expected one of deadline, 53300"),
        ("phase_deadline,migrations", "phase = 'migrations': the row has no phase.migrations"),
    ],
)
def test_a_bad_reason_or_phase_names_the_line(tmp_path, change, message):
    path = tmp_path / "log.csv"
    path.write_text(
        "# phases: before=boot;database=table_check\n"
        "timestamp,instance,attempt,outcome,reason,phase,phase.boot,phase.table_check\n"
        f"1700000000,a,1,timeout,{change},50,10.2\n",
        encoding="utf-8",
    )
    if message is None:
        (run,) = read_log(path)
        assert run.attempts[0].reason == "phase_deadline"
        return
    with pytest.raises(InputError) as err:
        read_log(path)
    assert f"{path}:3" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize(
    ("head", "partial"),
    [("", False), ("# deploys: whole\n", False), ("# deploys: partial\n", True)],
)
def test_a_log_may_say_it_keeps_only_part_of_each_deploy(tmp_path, head, partial):
    path = tmp_path / "log.csv"
    path.write_text(
        f"# phases: database=db\n{head}timestamp,instance,outcome,phase.db\n1700000000,a,ready,1\n",
        encoding="utf-8",
    )
    (run,) = read_log(path)
    assert run.partial_deploys is partial
    obs = observed([run])
    assert ("starts_per_deploy" in obs.not_measured) is partial is obs.partial
    bad = tmp_path / "bad.csv"
    bad.write_text("# deploys: some\ntimestamp,instance,outcome\n1,a,ready\n", encoding="utf-8")
    with pytest.raises(InputError, match="deploys = 'some': expected whole or partial"):
        read_log(bad, "database=db")


def test_a_ready_attempt_has_no_reason(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "timestamp,instance,outcome,reason,phase.db\n1700000000,a,ready,closed,1.0\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="a ready attempt has no reason"):
        read_log(path, "database=db")


# -- diagnose on the incident's attempts ------------------------------------------------------


@pytest.fixture(scope="module")
def incident(tmp_path_factory):
    """`startsim diagnose docs/incident/attempts.csv` with the shipped hypotheses, 100 deploys
    each (the verdict's figures: docs/case-study.md, "The diagnosis")."""
    out = tmp_path_factory.mktemp("diagnose")
    code = call_main("diagnose", str(ATTEMPTS), "-n", "100", "--out", str(out), "--json")
    assert code == 0
    return json.loads((out / "diagnose.json").read_text(encoding="utf-8")), out


def test_the_incident_rejects_capacity_and_supports_the_path_fault(incident):
    doc, out = incident
    assert doc["supported"] == "path-fault"
    by = {h["name"]: h for h in doc["hypotheses"]}
    assert by["path-fault"]["survives"] and by["path-fault"]["rank"] == 1
    assert not by["capacity"]["survives"] and not by["slow-dependency"]["survives"]
    # Reasons and phases are measured; the counts per deploy are not: the exports kept only part
    # of each deploy (`# deploys: partial`).
    assert set(doc["not_measured"]) == {"starts_per_deploy", "failures_per_deploy"}
    assert "part of each deploy" in doc["not_measured"]["starts_per_deploy"]
    capacity = {t["signal"]: t for t in by["capacity"]["tests"]}
    assert {t["signal"] for t in by["capacity"]["tests"] if t["rejected"]} == {
        "failure_time_in_phase_s",
        "refusals",
        "error_kinds",
        "restart_cadence_s",
    }
    # 8 failures 10.1-10.4 s into the table check, in the bin at its 10 s bound; none refused.
    seen = capacity["failure_time_in_phase_s"]["observed"]
    assert seen["n"] == 8 and seen["bins"]["at 10 s"] == 8 and seen["phases"] == {"table_check": 8}
    assert capacity["refusals"]["observed"]["refusals"] == 0
    slow = {t["signal"]: t for t in by["slow-dependency"]["tests"]}
    assert slow["failure_time_in_phase_s"]["rejected"]  # at 20 s, not 10
    md = (out / "diagnose.md").read_text(encoding="utf-8")
    assert "The evidence supports the path-fault hypothesis." in md


# -- the opposite case: a real capacity limit -------------------------------------------------

CAPACITY_CAMPAIGN = """
name = "capacity-campaign"
description = "Twelve instances of three connections each into 17 free slots"
horizon_s = 4.0
[fleet]
instances = 12
arrival = "burst"
[startup]
before_db_s = { dist = "constant", value = 0.0 }
db_init_timeout_s = 3.0
init_queries_s = { dist = "constant", value = 0.01 }
after_db_s = { dist = "constant", value = 0.0 }
[pool]
min_size = 3
max_size = 3
held_when_ready = 3
connect_timeout_s = 2.0
on_failure = "close"
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
[restart]
policy = "fixed"
initial_backoff_s = 0.5
jitter = 0.5
max_restarts = 20
[connector]
min_instances = 1
max_instances = 2
setups_per_instance = 10
setup_s = { dist = "lognormal", median = 0.05, sigma = 0.5 }
scale_up_delay_s = { dist = "constant", value = 0.5 }
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_a_real_capacity_limit_is_what_capacity_explains_and_a_path_fault_cannot(
    pg_server, tmp_path
):
    # A campaign through the connector emulator against the throwaway server (max_connections
    # 20, 17 free): 12 instances of 3 connections want 36 slots. Five pools fit (15 slots) and
    # stay held; the other seven are refused (53300) at once and restart every 0.25-0.75 s
    # (jittered) until the 4 s horizon: 46-49 failures in five runs (44-54 simulated), every one
    # a refusal about 0.1 s into database init. The capacity story stated at the campaign's own
    # fleet (its scenario) can produce that; the path fault (one instance, failures at the 10 s
    # bound, no refusal) cannot, nor the shipped capacity hypothesis, whose 40 instances are not
    # the 12 started. About 7 s of campaign.
    scenario = tmp_path / "capacity-campaign.toml"
    scenario.write_text(CAPACITY_CAMPAIGN, encoding="utf-8")
    runs = tmp_path / "runs"
    command = [*STARTSIM, "loadtest", str(scenario), "--dsn", pg_server.dsn, "--out", str(runs)]
    res = subprocess.run(
        [*command, "--via-emulator", "--seed", "1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    assert pg_server.wait_no_harness_connections() == 0
    (folder,) = runs.iterdir()
    out = tmp_path / "diagnose"
    args = ["--hypothesis", str(scenario), "--hypothesis", "path-fault"]
    args += ["--hypothesis", "capacity", "-n", "100", "--out", str(out), "--json"]
    assert call_main("diagnose", str(folder), *args) == 0
    doc = json.loads((out / "diagnose.json").read_text(encoding="utf-8"))
    seen = doc["observed"]["signals"]
    assert seen["refusals"]["refusals"] == seen["refusals"]["failures"] > 0
    assert seen["starts_per_deploy"]["values"] == [12.0]
    by = {h["name"]: h for h in doc["hypotheses"]}
    assert doc["supported"] == "capacity-campaign", doc["verdict"]
    assert by["capacity-campaign"]["survives"]
    path = {t["signal"] for t in by["path-fault"]["tests"] if t["rejected"]}
    assert not by["path-fault"]["survives"]
    assert {"failure_time_in_phase_s", "error_kinds", "starts_per_deploy"} <= path
    shipped = {t["signal"] for t in by["capacity"]["tests"] if t["rejected"]}
    assert "starts_per_deploy" in shipped and not by["capacity"]["survives"]


# -- one model of the incident -----------------------------------------------------------------

# Not the model: what the scenario is called, the team's figures, the labels, the probe (what
# `recommend` judges readiness by; diagnose does not look at it) and the uncertain values' ranges
# (each field's value, the range's middle, is compared).
NOT_THE_MODEL = ("name", "description", "team", "sources", "probe", "uncertain")


def _model(sc) -> dict:
    return {k: v for k, v in sc.model_dump().items() if k not in NOT_THE_MODEL}


def _differences(a: dict, b: dict, at: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = sorted(set(a) | set(b))
        return [d for k in keys for d in _differences(a.get(k), b.get(k), f"{at}{k}.")]
    return [] if a == b else [f"{at.rstrip('.')}: {a!r} != {b!r}"]


def test_the_path_fault_hypothesis_is_the_default_scenario_as_logged():
    # The incident as logged is one model: the shipped path-fault hypothesis and the default
    # scenario, staging-incident, carry the same model sections field by field.
    hypothesis, _ = load_hypothesis("path-fault")
    default = resolve("staging-incident")
    assert _differences(_model(hypothesis), _model(default)) == []
