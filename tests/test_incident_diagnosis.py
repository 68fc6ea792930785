"""The incident's diagnosis from its public logs: the database-phase failure cycles as attempts
(docs/incident/attempts.csv, made by tools/derive_incident.py from the shipped derived logs),
read by the start-up-log reader with their reasons and phases, and `startsim diagnose` on them:
the capacity story rejected, the path fault as logged accepted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from sim.calibrate.inputs import read_log
from sim.diagnose import observed, signals
from sim.errors import InputError

ROOT = Path(__file__).resolve().parents[1]
INCIDENT = ROOT / "docs" / "incident"
ATTEMPTS = INCIDENT / "attempts.csv"


def _tool():
    spec = importlib.util.spec_from_file_location(
        "derive_incident", ROOT / "tools" / "derive_incident.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _entries() -> list[dict]:
    text = (INCIDENT / "derived-logs.jsonl").read_text(encoding="utf-8")
    return [json.loads(x) for x in text.splitlines() if x.strip()]


def test_the_shipped_attempts_are_what_the_tool_makes_from_the_shipped_logs(tmp_path):
    tool = _tool()
    out = tmp_path / "attempts.csv"
    assert tool.main(["attempts", str(INCIDENT / "derived-logs.jsonl"), "-o", str(out)]) == 0
    assert out.read_bytes() == ATTEMPTS.read_bytes()


def test_the_attempts_and_how_each_time_was_derived():
    rows, how = _tool().attempt_rows(_entries())
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
    # One chain a deploy (one instance at a time, R3); start to start 62.9-81.1 s.
    assert s.starts_per_deploy.tolist() == [1, 1]
    assert s.restart_cadence_s.size == 6 and 62 < s.restart_cadence_s.min() < 63


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


def test_a_ready_attempt_has_no_reason(tmp_path):
    path = tmp_path / "log.csv"
    path.write_text(
        "timestamp,instance,outcome,reason,phase.db\n1700000000,a,ready,closed,1.0\n",
        encoding="utf-8",
    )
    with pytest.raises(InputError, match="a ready attempt has no reason"):
        read_log(path, "database=db")
