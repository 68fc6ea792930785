"""The children startsim starts (the connector emulator, Locust's master, workers and local run)
work from a working directory full of files named like the modules they import: a user's
``platform.py`` or ``asyncio.py`` must not shadow the standard library, a dependency or startsim.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from console import run as startsim
from test_loadtest import assert_clean, no_startsim_env, scenario_file

from loadtests import campaign
from loadtests.records import read_jsonl

# The standard library, dependencies of the emulator and of Locust, and startsim's own packages.
SHADOWED = ("platform", "asyncio", "json", "typing", "numpy", "gevent", "asyncpg", "locust")
SHADOWED += ("sim", "loadtests")


@pytest.fixture
def hostile_dir(tmp_path, monkeypatch) -> Path:
    """A working directory where importing any of :data:`SHADOWED` from it fails loudly."""
    folder = tmp_path / "cwd"
    folder.mkdir()
    for name in SHADOWED:
        (folder / f"{name}.py").write_text(f"raise SystemExit('shadowed by ./{name}.py')\n")
    monkeypatch.chdir(folder)
    return folder


def test_a_plain_python_m_child_is_shadowed_there(hostile_dir):
    # The hazard itself: without -P, ``python -m`` puts the working directory first.
    res = subprocess.run(
        [sys.executable, "-m", "loadtests.emulator"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "shadowed by ./" in res.stderr + res.stdout


def test_the_emulator_child_starts_from_there(hostile_dir, tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    scenario = scenario_file(folder, name="emu")
    proc, port = campaign.start_emulator(folder, scenario, ("127.0.0.1", 1), seed=1)
    try:
        assert port > 0 and proc.poll() is None
    finally:
        campaign._stop([proc])
    assert "shadowed" not in (folder / "emulator.out").read_text()


def test_the_locust_child_loads_our_locustfile_from_there(hostile_dir):
    # Locust puts the working directory on sys.path itself before it imports a locustfile; the
    # locustfile takes it off again. Without --dsn it refuses with our own message.
    res = subprocess.run(
        campaign.locust_cmd("--headless", "-u", "1", "-r", "1", "-t", "2s"),
        capture_output=True,
        text=True,
        timeout=60,
        env=no_startsim_env(),
    )
    assert "shadowed" not in res.stderr, res.stderr
    assert res.returncode == 2, res.stderr
    assert "error: --dsn (or STARTSIM_DSN) is required" in res.stderr


@pytest.mark.postgres
@pytest.mark.slow
def test_a_campaign_runs_from_there(pg_server, hostile_dir, tmp_path):
    # Locust and the emulator, both started in that directory; --out relative to it. (Workers run
    # the same command as the local run: test_the_locust_child_loads_our_locustfile_from_there.)
    sc = scenario_file(tmp_path, name="hostile", instances=2, min_size=1)
    args = ("loadtest", str(sc), "--dsn", pg_server.dsn, "--out", "results")
    res = startsim(*args, "--via-emulator", cwd=hostile_dir)
    assert res.returncode == 0, res.stderr
    (run_dir,) = (hostile_dir / "results").iterdir()
    assert_clean(pg_server, run_dir, res.stdout + res.stderr)
    records = read_jsonl(run_dir / "records.jsonl")
    assert {r["outcome"] for r in records} == {"ready"} and len(records) == 2
    assert json.loads((run_dir / "summary.json").read_text())["attempts"] == 2
    for path in run_dir.glob("*.out"):
        assert "shadowed" not in path.read_text(), path
