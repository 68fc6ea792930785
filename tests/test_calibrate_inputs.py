"""calibrate and validate on files: the shipped sample campaign, production logs with named
phases, and every kind of bad input refused with exit 2, the file and line, and nothing written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from console import run
from matplotlib.image import imread

from sim.calibrate import calibrate
from sim.calibrate.inputs import read_campaign, read_log
from sim.errors import InputError
from sim.scenario import load, resolve

SAMPLE = Path(__file__).parent.parent / "examples" / "campaigns" / "small"


def startsim(*args: str):
    return run(*args, timeout_s=300)


def test_the_sample_campaign_calibrates_to_a_commented_scenario(tmp_path):
    out = tmp_path / "calibrated.toml"
    res = startsim("calibrate", str(SAMPLE), "--out", str(out), "-n", "5")
    assert res.returncode == 0, res.stderr
    sc = load(out)
    text = out.read_text()
    assert read_campaign(SAMPLE).run_id in sc.description  # the ADR's context names it
    for field in ("setups_per_instance", "setup_s", "scale_up_delay_s", "max_connections"):
        line = next(ln for ln in text.splitlines() if ln.startswith(f"{field} ="))
        assert "# " in line and "n = " in line, line  # source, sample size, fit quality
        assert field in res.stdout  # the same as a table
    assert sc.database.max_connections == 20  # 17 free slots + 3 reserved: the test server's
    # Each calibrated value is labelled with the records it came from and how many.
    run_id = read_campaign(SAMPLE).run_id
    for field, kind in (
        ("database.max_connections", "measured"),
        ("connector.scale_up_delay_s", "measured"),
        ("connector.setup_s", "measured"),  # timed by the emulator's connection lines
        ("connector.setups_per_instance", "fitted"),  # by simulation, to the db-init durations
    ):
        label = sc.sources[field]
        assert label.kind == kind, field
        assert run_id in label.source and label.n, field


def test_the_sample_campaign_validates_against_its_calibration(tmp_path):
    """calibrate, then validate through the installed command: the table, validation.md and its
    figure (the figure once raised ImportError after the table was printed)."""
    cal = tmp_path / "calibrated.toml"
    assert startsim("calibrate", str(SAMPLE), "--out", str(cal), "-n", "5").returncode == 0
    out = tmp_path / "validation"
    res = startsim("validate", str(SAMPLE), "--scenario", str(cal), "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr and "figures agree" in res.stderr
    text = (out / "validation.md").read_text(encoding="utf-8")
    assert "database-init durations (KS D)" in text and "campaigns drawn from the model" in text
    assert imread(out / "validation.png").std() > 0
    few = startsim("validate", str(SAMPLE), "-n", "3", "--out", str(tmp_path / "few"))
    assert few.returncode == 2 and "--replications 3: must be at least 10" in few.stderr
    assert not (tmp_path / "few").exists()


HEADER = "timestamp,instance,attempt,outcome,phase.config,phase.secrets,phase.db,phase.warm"


def log_csv(tmp_path: Path, lines: list[str], header: str = HEADER, first: str = "") -> Path:
    path = tmp_path / "startup.csv"
    path.write_text((first + "\n" if first else "") + header + "\n" + "\n".join(lines) + "\n")
    return path


def rows(n: int = 30, timeout_every: int = 5) -> list[str]:
    out = []
    for i in range(n):
        outcome = "timeout" if i % timeout_every == 0 else "ready"
        db = 20.0 if outcome == "timeout" else 3.0 + 0.37 * (i % 11)
        out.append(f"{1795950000 + 0.7 * i},{i},1,{outcome},{0.3 + 0.01 * i},0.2,{db},1.5")
    return out


def test_a_production_log_maps_named_phases_onto_the_three_parts(tmp_path):
    path = log_csv(tmp_path, rows())
    (run_,) = read_log(path, "database=db")
    assert run_.phase_map.before == ("config", "secrets")
    assert run_.phase_map.after == ("warm",)
    a = run_.attempts[1]
    assert a.before_db_s == pytest.approx(0.51) and a.after_db_s == pytest.approx(1.5)
    cal = calibrate([run_], replications=2)
    assert cal.db_init.censored == 6 and cal.db_init.n == 30  # timeouts kept, censored
    out = tmp_path / "cal.toml"
    res = startsim("calibrate", str(path), "--phases", "database=db", "--out", str(out))
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    assert "phases config, secrets (summed)" in text and "phases warm (summed)" in text
    assert "not identifiable" in res.stdout  # a log alone cannot time the connector


def test_init_queries_timed_as_a_phase_calibrate_init_queries_s(tmp_path):
    """A service that times its init queries apart (``db_connect``, then ``db_queries``) gives
    ``startup.init_queries_s``; without ``queries=`` it stays the base scenario's."""
    header = "timestamp,instance,outcome,phase.config,phase.db_connect,phase.db_queries,phase.warm"
    rng = np.random.default_rng(3)
    queries = rng.lognormal(np.log(0.4), 0.3, 60)
    lines = [
        f"{1795950000 + i},{i},{'timeout' if i % 10 == 0 else 'ready'},0.2,{1 + i % 7 / 10},"
        f"{q:.4f},1.0"
        for i, q in enumerate(queries)
    ]
    path = log_csv(tmp_path, lines, header=header)
    spec = "before=config;database=db_connect;queries=db_queries;after=warm"
    (run_,) = read_log(path, spec)
    assert run_.phase_map.database == ("db_connect", "db_queries")
    assert run_.phase_map.queries == ("db_queries",)
    assert run_.attempts[1].db_init_s == pytest.approx(1.1 + queries[1], abs=1e-3)
    assert run_.attempts[1].init_queries_s == pytest.approx(queries[1], abs=1e-4)
    cal = calibrate([run_], replications=2)
    est = cal.estimate("startup.init_queries_s")
    assert est.n == 54 and est.low < 0.4 < est.high  # the ready attempts' queries, median 0.4 s
    assert "phases db_queries (summed) of ready attempts" in est.source
    assert cal.scenario.to_dict()["startup"]["init_queries_s"] == est.value
    (plain,) = read_log(path, "database=db_connect,db_queries")
    base = calibrate([plain], replications=2).scenario.startup.init_queries_s
    assert base == resolve(None).startup.init_queries_s
    with pytest.raises(InputError, match="must be database phases"):
        read_log(path, "before=config;database=db_connect;queries=config")


def test_a_campaigns_init_queries_phase_calibrates_init_queries_s(tmp_path):
    """An --instance-command campaign whose start-up reports its init queries as a phase:
    ``--phases queries=NAME`` fits them (campaigns read only ``queries=``)."""

    def timed(lines):
        out = []
        for i, line in enumerate(lines):
            rec = json.loads(line)
            rec["phases"] = {"database": rec["db_init_s"], "init_queries": 0.05 + 0.01 * (i % 5)}
            out.append(json.dumps(rec))
        return "\n".join(out) + "\n"

    folder = campaign_copy(tmp_path, timed)
    out = tmp_path / "cal.toml"
    res = startsim("calibrate", str(folder), "--phases", "queries=init_queries", "--out", str(out))
    assert res.returncode == 0, res.stderr
    line = next(ln for ln in out.read_text().splitlines() if ln.startswith("init_queries_s ="))
    ready = sum(a.outcome == "ready" for a in read_campaign(folder).attempts)
    assert f"phases init_queries (summed) of ready attempts; n = {ready}" in line, line
    plain = tmp_path / "plain.toml"
    assert startsim("calibrate", str(folder), "--out", str(plain)).returncode == 0
    line = next(ln for ln in plain.read_text().splitlines() if ln.startswith("init_queries_s ="))
    assert "#" not in line  # without queries=: the base scenario's, uncommented


def test_the_mapping_may_live_in_the_file_and_json_lines_work_too(tmp_path):
    first = "# phases: before=config,secrets;database=db;after=warm"
    assert read_log(log_csv(tmp_path, rows(), first=first))[0].phase_map.database == ("db",)
    lines = [{"phase_map": {"before": ["a"], "database": ["b"]}}] + [
        {
            "timestamp": f"2026-11-29T06:15:{i:02d}Z",
            "instance": i,
            "exit_code": 3 if i == 2 else 0,
            "phases": {"a": 1.0 + i / 10, "b": 2.0},
        }
        for i in range(6)
    ]
    jl = tmp_path / "log.jsonl"
    jl.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    (run_,) = read_log(jl)
    assert [a.outcome for a in run_.attempts].count("timeout") == 1


def test_metrics_on_a_minute_grid_are_flagged(tmp_path):
    grid = [f"{1795950000 + 60 * i}," + r.split(",", 1)[1] for i, r in enumerate(rows())]
    out = tmp_path / "cal.toml"
    res = startsim(
        "calibrate", str(log_csv(tmp_path, grid)), "--phases", "database=db", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert "cannot resolve a 20 s" in " ".join(res.stderr.split())
    assert "cannot resolve a 20 s" in out.read_text()


def campaign_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "campaign"
    shutil.copytree(SAMPLE, folder)
    path = folder / "records.jsonl"
    path.write_text(edit(path.read_text().splitlines()))
    return folder


def _replace(i: int, old: str, new: str):
    return lambda ls: "\n".join([*ls[:i], ls[i].replace(old, new, 1), *ls[i + 1 :]]) + "\n"


BAD_CAMPAIGNS = {
    "empty records": (lambda ls: "", "records.jsonl: empty"),
    "truncated": (lambda ls: "\n".join(ls)[:-40], "records.jsonl:20: cut short"),
    "negative duration": (
        _replace(0, '"db_init_s":', '"db_init_s":-'),
        "records.jsonl:1: db_init_s",
    ),
    "non-numeric duration": (
        _replace(2, '"before_db_s":', '"before_db_s":"x","was":'),
        "records.jsonl:3: before_db_s = 'x': not a number",
    ),
    "two runs mixed": (_replace(4, '"run_id":"', '"run_id":"other-'), "records.jsonl:5: run_id"),
    "duplicate attempt": (lambda ls: "\n".join([*ls, ls[0]]) + "\n", "records.jsonl:21"),
}


@pytest.mark.parametrize("case", sorted(BAD_CAMPAIGNS))
def test_bad_campaigns_exit_2_naming_file_and_line_and_write_nothing(tmp_path, case):
    edit, expected = BAD_CAMPAIGNS[case]
    folder = campaign_copy(tmp_path, edit)
    out = tmp_path / "cal.toml"
    res = startsim("calibrate", str(folder), "--out", str(out))
    assert res.returncode == 2, (res.stdout, res.stderr)
    message = " ".join(res.stderr.split())
    assert expected in message and "Traceback" not in res.stderr, res.stderr
    assert message.startswith("error:") and message.count("error:") == 1
    assert not out.exists()
    res = startsim("validate", str(folder), "--out", str(tmp_path / "val"))
    assert res.returncode == 2 and expected in " ".join(res.stderr.split())
    assert not (tmp_path / "val").exists()


def test_a_folder_without_records_is_refused(tmp_path):
    folder = tmp_path / "campaign"
    shutil.copytree(SAMPLE, folder)
    (folder / "records.jsonl").unlink()
    res = startsim("calibrate", str(folder), "--out", str(tmp_path / "c.toml"))
    assert res.returncode == 2 and "no records.jsonl" in res.stderr
    assert not (tmp_path / "c.toml").exists()


@pytest.mark.parametrize(
    ("header", "row", "expected"),
    [
        (HEADER + ",colour", rows()[0] + ",red", "startup.csv:1: unknown column 'colour'"),
        (HEADER, rows()[1].replace(",3.37,", ",-3.37,"), "startup.csv:2: phase.db = '-3.37'"),
        (HEADER, rows()[0].replace(",0.2,", ",abc,"), "startup.csv:2: phase.secrets = 'abc'"),
        (HEADER, rows()[0].rsplit(",", 1)[0], "startup.csv:2: 7 cells for 8 columns"),
    ],
)
def test_bad_logs_exit_2_naming_file_and_line(tmp_path, header, row, expected):
    path = log_csv(tmp_path, [row], header)
    out = tmp_path / "cal.toml"
    res = startsim("calibrate", str(path), "--phases", "database=db", "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert expected in " ".join(res.stderr.split()), res.stderr
    assert not out.exists()


def test_an_empty_log_and_two_runs_mixed_in_a_log_are_refused(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    res = startsim("calibrate", str(empty), "--phases", "database=db")
    assert res.returncode == 2 and "empty.csv: empty" in res.stderr
    path = log_csv(tmp_path, rows(5) + rows(5)[2:3])
    res = startsim("calibrate", str(path), "--phases", "database=db")
    message = " ".join(res.stderr.split())
    assert (
        res.returncode == 2 and "startup.csv:7: instance 2 attempt 1 already on line 4" in message
    )
