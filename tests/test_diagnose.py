"""``startsim diagnose``: the signals and the tests' arithmetic by hand, a data set simulated from
the capacity hypothesis that the capacity hypothesis can produce, a path-fault data set built by
hand that it cannot, the shipped hypotheses' labels, and the command end to end."""

from __future__ import annotations

import json
import math
import tomllib
from importlib import resources
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from builders import set_fields
from cli_helpers import call_main
from doclinks import file_anchors

from sim.calibrate.inputs import read_campaign
from sim.diagnose import (
    SIGNALS,
    UNCLASSIFIED,
    Observed,
    SignalTest,
    diagnose,
    load_hypothesis,
    observed,
    shipped_hypotheses,
    signals,
    simulated_records,
)
from sim.errors import ScenarioError
from sim.output import scenario_toml
from sim.predictive import categorical_p, effective, holm, mean_p, refusal_p, time_bins
from sim.provenance import INCIDENT_FACTS
from sim.records import Outcome, Reason
from sim.runner import simulate
from sim.scenario import Scenario
from sim.stats import wilson
from sim.verdicts import observed_phrase

ROOT = Path(__file__).resolve().parents[1]
FAILURES = 102  # in the path-fault campaigns below: 24, 25, 27 and 26 a deploy


def _records(rows: list[tuple]) -> dict[str, np.ndarray]:
    names = ("deploy", "instance", "attempt", "start_s", "db_init_start_s", "db_init_s")
    names += ("outcome", "reason")
    return {k: np.array(v) for k, v in zip(names, zip(*rows, strict=True), strict=True)}


HAND = [
    # deploy, instance, attempt, start_s, db_init_start_s, db_init_s, outcome, reason
    (0, 0, 1, 0.0, 2.0, 10.0, "error", "hung"),  # given up at 10 s
    (0, 0, 2, 16.0, 18.0, 10.0, "error", "closed"),  # 16 s after the first start
    (0, 1, 1, 0.0, 2.0, 20.0, "timeout", ""),  # a start-up log's timeout: the deadline
    (0, 1, 2, 26.0, 28.0, 1.0, "ready", ""),  # 26 s after the first start
    (1, 0, 1, 0.0, 1.0, 0.5, "rejected", ""),  # a start-up log's rejection: 53300
]


def test_signals_by_hand():
    s = signals(_records(HAND))
    # Failed rows 1, 2, 3 and 5, in order: their db_init_s.
    assert s.failure_time_in_phase_s.tolist() == [10.0, 10.0, 20.0, 0.5]
    assert s.error_kinds == {"53300": 1, "closed": 1, "deadline": 1, "hung": 1}
    assert (s.failures, s.classified, s.refusals) == (4, 4, 1)
    # Deploy 0: instances 0 and 1, three failures; deploy 1: instance 0, one failure.
    assert s.starts_per_deploy.tolist() == [2, 1]
    assert s.failures_per_deploy.tolist() == [3, 1]
    # Instance 0: 16 - 0; instance 1: 26 - 0; deploy 1's instance started once.
    assert sorted(s.restart_cadence_s.tolist()) == [16.0, 26.0]
    # Families, per deploy: deploy 0 has closed, timed out (hung), timed out (deadline);
    # deploy 1 one refusal. Columns: refused, closed by the path, timed out, other.
    assert s.families().tolist() == [[0, 1, 2, 0], [1, 0, 0, 0]]


def test_a_failure_is_timed_from_the_start_of_its_phase_when_the_records_say_it():
    rec = _records(HAND)
    rec["phase_start_s"] = np.array([5.0, np.nan, np.nan, np.nan, np.nan])
    rec["phase"] = np.array(["3", "3", "3", "", "3"])
    s = signals(rec)
    # Row 1 ends at 2 + 10 = 12 s, its phase began at 5 s: 7 s into it; the rest as before.
    assert s.failure_time_in_phase_s.tolist() == [7.0, 10.0, 20.0, 0.5]
    assert s.failing_phases == {"3": 4}
    seen = {"median_s": 8.5, "n": 4, "phases": s.failing_phases}
    phrase = observed_phrase(SignalTest("failure_time_in_phase_s", 1.0, "", seen, {}))
    assert phrase == "failures 8.5 s into phase 3 (median of 4)"


def test_an_exit_code_is_no_reason():
    rec = _records([(0, 0, 1, 0.0, 2.0, 10.2, "timeout", "exit(3)")])
    s = signals(rec)
    assert s.error_kinds == {UNCLASSIFIED: 1} and s.classified == 0 and s.refusals == 0


def test_time_bins_put_a_bin_at_each_bound():
    edges, labels = time_bins([10.0, 20.0], tol=0.5)
    assert edges.tolist() == [9.5, 10.5, 19.5, 20.5]
    assert labels == ["0–9.5 s", "at 10 s", "10.5–19.5 s", "at 20 s", "over 20.5 s"]
    # Bounds closer than twice the tolerance share one bin.
    edges, labels = time_bins([10.0, 10.6], tol=0.5)
    assert edges.tolist() == [9.5, 11.1] and labels[1] == "at 10/10.6 s"


def test_no_refusal_in_ten_failures_by_hand():
    # The simulation refused 50 of 100 failures. Wilson at 99 % (z = 2.5758): low =
    # (0.5 + z²/200 - z·sqrt(0.25/100 + z²/40000)) / (1 + z²/100) = 0.37528. P(0 of 10) at that
    # share = (1 - 0.37528)^10 = 0.00905; two-sided, twice: 0.0181.
    z = 2.5758293035489
    low = (0.5 + z * z / 200 - z * math.sqrt(0.25 / 100 + z * z / 40000)) / (1 + z * z / 100)
    assert low == pytest.approx(0.37528, abs=1e-5)
    assert wilson(50, 100, 0.99)[0] == pytest.approx(low, rel=1e-9)
    assert refusal_p(0, 10, low, 0.6) == pytest.approx(2 * (1 - low) ** 10, rel=1e-9)
    assert refusal_p(0, 10, low, 0.6) == pytest.approx(0.0181, abs=1e-4)
    # A simulation that never refused cannot make a refusal impossible: its share's upper bound
    # is z²/n / (1 + z²/n) = 0.06221 at n = 100, so P(1 or more of 10) = 1 - (1 - 0.06221)^10,
    # twice.
    high = (z * z / 100) / (1 + z * z / 100)
    assert wilson(0, 100, 0.99)[1] == pytest.approx(high, rel=1e-9)
    assert refusal_p(1, 10, 0.0, high) == pytest.approx(2 * (1 - (1 - high) ** 10), rel=1e-9)
    assert refusal_p(0, 10, 0.0, high) == 1.0  # none observed, none predicted


def test_failures_of_one_deploy_count_once_per_design_effect():
    # 48 failures, no refusal, a design effect of 10: 4.8 independent failures, rounded to 5.
    assert effective(0, 48, 10.0) == (0, 5)
    # 1 refusal in 48 stays at least one; 48 in 48 stay all.
    assert effective(1, 48, 10.0) == (1, 5) and effective(48, 48, 10.0) == (5, 5)
    assert effective(3, 30, 0.5) == (3, 30)  # a design effect below 1 counts as 1


def test_holm_by_hand():
    # Sorted: 0.01 × 3 = 0.03; 0.03 × 2 = 0.06; 0.04 × 1 = 0.04, raised to the running 0.06.
    assert holm([0.01, 0.04, 0.03, None]) == pytest.approx([0.03, 0.06, 0.06, None])


def test_predictive_p_values_never_claim_zero():
    rng = np.random.default_rng(0)
    # Every simulated deploy starts 40 instances; observed 3 twice: no draw is as low, so
    # p = 2 × (0 + 1) / (99 + 1); as high: every draw, 1.
    assert mean_p(np.array([3.0, 3.0]), np.full(50, 40.0), rng, draws=99) == pytest.approx(0.02)
    assert mean_p(np.array([40.0]), np.full(50, 40.0), rng, draws=99) == 1.0
    # Every simulated failure in bin 0, all ten observed in bin 1: p = 1 / (99 + 1).
    sim = np.tile([10.0, 0.0], (20, 1))
    p, ll = categorical_p(np.array([0.0, 10.0]), sim, 2, rng, draws=99)
    assert p == pytest.approx(0.01)
    # Jeffreys: bin 1's share is 0.5 / (200 + 1): the log-likelihood of ten there.
    assert ll == pytest.approx(10 * math.log(0.5 / 201))
    assert categorical_p(np.array([10.0, 0.0]), sim, 2, rng, draws=99)[0] == 1.0


def test_a_hypothesis_that_never_fails_is_judged_on_its_failures_per_deploy():
    # Observed: the hand records (2 deploys, 4 failures). The hypothesis: 50 deploys of one
    # instance, ready at once, never restarted. It has no failure time, no refusal share, no
    # error kind and no cadence to compare: those say so; failures per deploy (2 observed, 0
    # always) decides: p = 2 × 1 / 2001 for each compared signal's tail, × 2 by Holm.
    obs = Observed(_records(HAND), ["hand"], 2)
    ready = [(d, 0, 1, 0.0, 1.0, 0.5, "ready", "") for d in range(50)]
    d = diagnose(obs, [("never", "hand", Scenario(), _records(ready), 50)])
    by = {t.signal: t for t in d.hypotheses[0].tests}
    for name in ("failure_time_in_phase_s", "refusals", "error_kinds", "restart_cadence_s"):
        assert by[name].p_value is None and by[name].note, name
    assert by["failures_per_deploy"].p_value == pytest.approx(2 / 2001)
    assert by["failures_per_deploy"].adjusted_p == pytest.approx(4 / 2001)
    assert by["failures_per_deploy"].rejected and not d.hypotheses[0].survives
    assert by["starts_per_deploy"].rejected  # 1.5 a deploy observed, always 1 simulated


# -- data sets: one simulated from the capacity hypothesis, one of a path fault by hand --------


def _campaigns(rows: list[dict], sc: Scenario, folder: Path) -> list[Path]:
    """One campaign folder per deploy (the layout `startsim loadtest` writes)."""
    out = []
    for run in sorted({r["run_id"] for r in rows}):
        d = folder / run
        d.mkdir(parents=True)
        (d / "scenario.toml").write_text(scenario_toml(sc), encoding="utf-8")
        lines = [json.dumps(r) for r in rows if r["run_id"] == run]
        (d / "records.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
        out.append(d)
    return out


def _simulated_campaigns(sc: Scenario, replications: int, seed: int, folder: Path):
    a = simulate(sc, replications, seed, jobs=1).attempts
    rows = []
    for k in range(a["outcome"].size):
        rows.append(
            {
                "run_id": f"deploy-{int(a['replication'][k]):03d}",
                "instance": int(a["instance"][k]),
                "attempt": int(a["attempt"][k]),
                "outcome": str(a["outcome"][k]),
                "reason": str(a["reason"][k]),
                # Deploys an hour apart, as the incident's came (R2: 3-6 an hour).
                "start_unix_s": 1.7e9 + 3600 * int(a["replication"][k]) + float(a["start_s"][k]),
                "before_db_s": float(a["db_init_start_s"][k] - a["start_s"][k]),
                "db_init_s": float(a["db_init_s"][k]),
                "after_db_s": 3.0,
            }
        )
    return _campaigns(rows, sc, folder)


def _path_fault_campaigns(folder: Path) -> list[Path]:
    """Four deploys of three instances, two at once and one 1.327 s later (R2); every start
    fails 10.0-10.2 s into its table check, whose own 10 s bound cut it (R6), no 53300 (R7), and
    is replaced 60-80 s after it started (R3: about 56-68 s; 55.7-75.3 s measured in the raw
    logs), while its database init (56 s after its start) begins within the 600 s the path-fault
    hypothesis watches a deploy (docs/model.md: a later one leaves no record): the gaps are the
    quantiles
    (k + 0.5) / 36 of 50.27 s + lognormal(16.48 s, 0.33), median 66.75 s and sd about 5.7 s (the
    hypothesis gives 66.7 s, sd 5.9 s), in a fixed mixed order."""
    quantile = NormalDist().inv_cdf
    gaps = [50.27 + 16.48 * math.exp(0.33 * quantile((k + 0.5) / 36)) for k in range(36)]
    rows = []
    for deploy in range(4):
        for i, offset in enumerate((0.0, 0.0, 1.327)):
            start, attempt = offset, 1
            while start + 56.0 < 600.0:
                rows.append(
                    {
                        "run_id": f"deploy-{deploy}",
                        "instance": i,
                        "attempt": attempt,
                        "outcome": Outcome.TIMEOUT.value,
                        "reason": Reason.PHASE_DEADLINE.value,
                        "start_unix_s": 1.7e9 + 3600 * deploy + start,
                        "before_db_s": 56.0,
                        "db_init_s": 10.0 + 0.05 * ((deploy + i + attempt) % 5),
                        "after_db_s": 0.0,
                    }
                )
                start += gaps[(7 * (9 * deploy + 3 * i + attempt)) % 36]
                attempt += 1
    return _campaigns(rows, load_hypothesis("capacity")[0], folder)


def _diagnose(folders: list[Path], names: list[str], replications: int = 30):
    obs = observed([read_campaign(f) for f in folders])
    sims = []
    for name in names:
        sc, where = load_hypothesis(name)
        rec = simulated_records(simulate(sc, replications, 0, jobs=1))
        sims.append((sc.name, where, sc, rec, replications))
    return diagnose(obs, sims, seed=0)


def test_data_simulated_from_the_capacity_story_is_what_it_can_produce(tmp_path):
    sc, _ = load_hypothesis("capacity")
    d = _diagnose(
        _simulated_campaigns(sc, 6, 7, tmp_path), ["capacity", "slow-dependency"], replications=30
    )
    capacity, slow = d.hypotheses
    assert capacity.survives, [(t.signal, t.adjusted_p) for t in capacity.tests]
    assert not slow.survives
    assert d.supported is capacity and capacity.rank == 1 and slow.rank is None
    assert {t.signal for t in capacity.tests} == set(SIGNALS)  # every signal measured


def test_a_path_fault_is_what_the_capacity_story_cannot_produce(tmp_path):
    d = _diagnose(_path_fault_campaigns(tmp_path), ["capacity", "slow-dependency"])
    capacity, slow = d.hypotheses
    assert d.signals.starts_per_deploy.tolist() == [3, 3, 3, 3]
    assert d.signals.refusals == 0 and d.signals.failures == FAILURES
    assert not capacity.survives and not slow.survives and d.supported is None
    rejected = {t.signal for t in capacity.deciding}
    # Three instances, not forty; no refusal where the capacity story refuses almost every one.
    assert {"starts_per_deploy", "refusals"} <= rejected
    by = {t.signal: t for t in capacity.tests}
    assert by["refusals"].observed == {
        "refusals": 0,
        "failures": FAILURES,
        "share": 0.0,
        "from": "failures whose reason is known",
    }


def test_a_path_fault_is_what_the_path_fault_hypothesis_can_produce(tmp_path):
    d = _diagnose(_path_fault_campaigns(tmp_path), ["capacity", "path-fault", "slow-dependency"])
    by = {h.name: h for h in d.hypotheses}
    assert by["path-fault"].survives, [(t.signal, t.adjusted_p) for t in by["path-fault"].tests]
    assert not by["capacity"].survives and d.supported is by["path-fault"]


def test_a_log_without_reasons_leaves_refusals_and_error_kinds_unmeasured(tmp_path):
    log = tmp_path / "startup.csv"
    log.write_text(
        "# phases: before=boot;database=db\n"
        "timestamp,instance,attempt,exit_code,phase.boot,phase.db\n"
        "1700000000,a,1,3,48,10.2\n1700000062,a,2,3,48,10.1\n1700000000.5,b,1,0,47,0.3\n",
        encoding="utf-8",
    )
    from sim.calibrate.inputs import read_log

    obs = observed(read_log(log))
    # exit code 3 reads as a timeout, which a start-up log gives as the deadline: classified.
    assert "refusals" not in obs.not_measured
    s = signals(obs.records)
    assert s.starts_per_deploy.tolist() == [2] and s.restart_cadence_s.tolist() == [62.0]
    assert s.failure_time_in_phase_s.tolist() == pytest.approx([10.2, 10.1])


# -- the shipped hypotheses ---------------------------------------------------------------------


def test_the_three_hypotheses_are_shipped():
    assert shipped_hypotheses() == ["capacity", "path-fault", "slow-dependency"]


@pytest.mark.parametrize("name", shipped_hypotheses())
def test_every_field_a_hypothesis_sets_has_a_label_true_to_its_kind(name):
    sc, _ = load_hypothesis(name)
    res = resources.files("sim") / "scenarios" / "hypotheses" / f"{name}.toml"
    data = tomllib.loads(res.read_text(encoding="utf-8"))
    assert [f for f in set_fields(data) if sc.label(f) is None] == []
    anchors = file_anchors(ROOT / "docs" / "sources.md")
    for field, src in sc.sources.items():
        assert not src.problems(), (name, field)
        if src.kind == "fact":
            assert any(INCIDENT_FACTS[f][0] == "fact" for f in src.cite), (name, field)
        if src.kind == "published":
            assert src.anchor in anchors, (name, field)
    # The audit's claimed delay is labelled as the claim it is, never as a fact.
    delay = sc.label("connector.scale_up_delay_s")
    assert delay.kind == "assumed" and "F7" in delay.cite


# -- the command --------------------------------------------------------------------------------


def test_the_command_writes_its_three_files(tmp_path, capsys):
    folders = _path_fault_campaigns(tmp_path / "logs")
    out = tmp_path / "out"
    args = [str(f) for f in folders] + ["--hypothesis", "capacity", "-n", "5", "--out", str(out)]
    assert call_main("diagnose", *args, "--json") == 0
    printed = json.loads(capsys.readouterr().out)
    assert {p.name for p in out.iterdir()} == {"diagnose.md", "diagnose.json", "diagnose.png"}
    written = json.loads((out / "diagnose.json").read_text(encoding="utf-8"))
    assert written == printed
    assert written["supported"] is None and written["hypotheses"][0]["survives"] is False
    assert set(written["observed"]["signals"]) == set(SIGNALS)
    md = (out / "diagnose.md").read_text(encoding="utf-8")
    assert md.startswith("# Which story the logs support\n\n**Verdict.** The capacity hypothesis")
    assert "cannot produce" in md and "## Not measured" in md


def test_a_missing_log_exits_2_naming_it(tmp_path, capsys):
    assert call_main("diagnose", str(tmp_path / "nope.csv"), "--out", str(tmp_path)) == 2
    assert "nope.csv" in capsys.readouterr().err


def test_a_bad_hypothesis_exits_2_naming_the_file_and_the_field(tmp_path, capsys):
    folders = _path_fault_campaigns(tmp_path / "logs")
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[pool]\nmin_size = -1\n', encoding="utf-8")
    code = call_main("diagnose", str(folders[0]), "--hypothesis", str(bad), "--out", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "bad.toml" in err and "min_size" in err
    with pytest.raises(ScenarioError):
        load_hypothesis(str(bad))


def test_a_cloud_logging_export_says_what_it_cannot_measure(tmp_path, capsys):
    # Two deploys as in R2-R3 (tests/cloudlogging_export.py): two instances each, every start
    # failing database init after 20 s with exit(3), replaced about 8 s after its exit. An exit
    # code is no reason: refusals and error kinds are not measured, and no verdict rests on them.
    from cloudlogging_export import PATTERN, SERVICE, crash_loop, export, write

    boots = crash_loop() + crash_loop(f"{SERVICE}-00008-zor", at_s=900.0)
    log = write(tmp_path / "export.json", export(boots))
    out = tmp_path / "out"
    args = ["--phase-pattern", PATTERN, "--phases", "before=config;database=db;after=warm"]
    args += ["--hypothesis", "capacity", "-n", "5", "--out", str(out), "--json"]
    assert call_main("diagnose", str(log), *args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc["not_measured"]) == {"refusals", "error_kinds"}
    assert doc["observed"]["signals"]["refusals"] == {
        "not_measured": doc["not_measured"]["refusals"]
    }
    tested = [t["signal"] for t in doc["hypotheses"][0]["tests"]]
    assert "refusals" not in tested and "error_kinds" not in tested
    seen = doc["observed"]["signals"]
    assert seen["starts_per_deploy"]["values"] == [2.0, 2.0]  # two new instances a deploy
    assert seen["failure_time_in_phase_s"]["median"] == pytest.approx(20.0)
    # Start to the replacement's start: config 0.8 (0.9 the second time) + db 20 + exit 1.5 +
    # 6.5 s: 28.8 s, then 28.9 s.
    assert seen["restart_cadence_s"]["median"] == pytest.approx(28.85, abs=0.01)
    md = (out / "diagnose.md").read_text(encoding="utf-8")
    assert (
        "- `refusals`: no failure's reason is known (exit(3) 8)" in md.split("## Not measured")[1]
    )
    # Without the phase lines, starts are timed whole: no failure time within a phase either.
    assert call_main("diagnose", str(log), *args[4:]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert "failure_time_in_phase_s" in doc["not_measured"]
