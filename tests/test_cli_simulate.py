"""`startsim simulate` and `startsim scenarios` as a user runs them: the installed console script
in a subprocess. Small replication counts keep each run around a second, most of it imports;
independent runs go in parallel."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from console import STARTSIM

from sim import scenario as scenarios

N = "20"  # replications per run


def start(*args: str) -> subprocess.Popen:
    # A wide "terminal", so the table's rows are not wrapped across lines.
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.Popen(
        [str(STARTSIM), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def startsim(*args: str) -> subprocess.CompletedProcess:
    return finish(start(*args))


def startsim_many(*runs: tuple[str, ...]) -> list[subprocess.CompletedProcess]:
    """Several independent runs at once (each spends most of its second importing)."""
    return [finish(p) for p in [start(*args) for args in runs]]


def ok(res: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert res.returncode == 0, res.stderr
    assert "Traceback" not in res.stderr
    return res


# -- normal runs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "title"),
    [
        ((), "staging-incident: 16 worlds (sobol) × 20 replications, seed 0"),  # issue 22
        (("--nominal",), "staging-incident: 20 replications, seed 0"),
    ],
)
def test_default_run_prints_the_summary_table(args, title):
    out = ok(startsim("simulate", "--replications", N, *args)).stdout
    assert title in out
    for row in (
        "P(db init > 20 s timeout) per attempt",
        "P(first start succeeds) per instance",
        "never ready within horizon",
        "fleet ready (all instances) p50",
        "restarts per instance",
        "peak database connections p50",
        "work amplification",
    ):
        assert row in out


@pytest.fixture(scope="module")
def seeded_runs() -> list[subprocess.CompletedProcess]:
    """Seed 7 on one process, seed 7 on two, seed 8 on one."""
    return startsim_many(
        ("simulate", "-n", N, "--seed", "7", "--json", "--jobs", "1"),
        ("simulate", "-n", N, "--seed", "7", "--json", "--jobs", "2"),
        ("simulate", "-n", N, "--seed", "8", "--json", "--jobs", "1"),
    )


def test_json_has_the_documented_keys(seeded_runs):
    summary = json.loads(ok(seeded_runs[0]).stdout)
    t = summary["p_db_init_timeout"]
    assert 0.0 <= t["ci_low"] <= t["estimate"] <= t["ci_high"] <= 1.0
    assert set(summary["fleet_ready_s"]) >= {"p50", "p95", "p99"}
    assert set(summary["peak_db_connections"]) >= {"p50", "max"}
    for key in (
        "p_first_start_success",
        "never_ready_fraction",
        "restarts_per_instance",
        "work_amplification",
    ):
        assert isinstance(summary[key], float), key
    # The default is uncertain (issue 22): 16 worlds of 20 replications, pooled.
    assert (summary["replications"], summary["seed"]) == (16 * 20, 7)
    assert summary["worlds"]["replications_per_world"] == 20
    assert summary["scenario"] == "staging-incident"  # the default


def test_same_seed_same_json_on_one_or_two_processes(seeded_runs):
    one, two, other = seeded_runs
    assert ok(one).stdout == ok(two).stdout
    assert ok(other).stdout != one.stdout  # the seed does matter


def test_out_writes_scenario_summary_and_records(tmp_path):
    source = tmp_path / "in.toml"
    shutil.copy(Path(scenarios.__file__).parent / "scenarios" / "gang-allocation.toml", source)
    out = tmp_path / "run"
    res = ok(startsim("simulate", str(source), "-n", N, "--seed", "1", "--json", "--out", str(out)))
    assert {p.name for p in out.iterdir()} >= {
        "scenario.toml",
        "summary.json",
        "attempts.csv",
        "replications.csv",
    }
    assert scenarios.load(out / "scenario.toml") == scenarios.load(source)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary == json.loads(res.stdout)
    with (out / "attempts.csv").open(encoding="utf-8") as f:
        attempts = list(csv.DictReader(f))
    assert len(attempts) == summary["attempts"]
    assert {"replication", "instance", "attempt", "db_init_s", "outcome"} <= set(attempts[0])
    with (out / "replications.csv").open(encoding="utf-8") as f:
        assert len(list(csv.DictReader(f))) == 20


def test_scenarios_lists_the_shipped_ones_and_each_name_simulates():
    names = scenarios.builtin_names()
    assert "staging-incident" in names and len(names) >= 3
    listing, *runs = startsim_many(
        ("scenarios",), *[("simulate", name, "-n", "2", "--json", "--jobs", "1") for name in names]
    )
    for name in names:
        assert name in ok(listing).stdout
    for name, res in zip(names, runs, strict=True):
        assert json.loads(ok(res).stdout)["scenario"] == name


# -- bad input: exit 2, one line naming the file, the field and the value, no traceback ----------

BAD = {
    "unknown-field": ("[pool]\nmin_sise = 3\n", "pool.min_sise", "3"),
    "wrong-type": ('[fleet]\ninstances = "many"\n', "fleet.instances", "'many'"),
    "negative-time": ("[startup]\ndb_init_timeout_s = -5.0\n", "startup.db_init_timeout_s", "-5.0"),
    "negative-duration-draw": (
        '[startup]\nbefore_db_s = { dist = "constant", value = -1.5 }\n',
        "startup.before_db_s.value",
        "-1.5",
    ),
    "min-over-max": ("[pool]\nmin_size = 60\nmax_size = 50\n", "pool.min_size", "60"),
    "low-over-high": (
        '[connector]\nscale_up_delay_s = { dist = "uniform", low = 30.0, high = 10.0 }\n',
        "connector.scale_up_delay_s",
        "30.0",
    ),
    "not-toml": ("this is = = not toml\n", "not valid TOML", "line 2"),
}


def assert_user_error(res: subprocess.CompletedProcess, *mentions: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    for text in mentions:
        assert text in lines[0], (text, lines[0])
    assert res.stdout == ""


def test_every_bad_scenario_exits_2_naming_file_field_and_value(tmp_path):
    paths = {}
    for case, (body, _, _) in BAD.items():
        paths[case] = tmp_path / f"{case}.toml"
        paths[case].write_text(f'name = "{case}"\n{body}', encoding="utf-8")
    missing = tmp_path / "no-such-scenario.toml"
    runs = [("simulate", str(p), "-n", "2") for p in paths.values()]
    *results, gone = startsim_many(*runs, ("simulate", str(missing), "-n", "2"))
    for (case, (_, field, value)), res in zip(BAD.items(), results, strict=True):
        assert_user_error(res, f"{case}.toml", field, value)
    assert_user_error(gone, str(missing), "no such file")
