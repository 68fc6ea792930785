"""``startsim loadtest --instance-command``: the team's own start-up as each instance, against the
throwaway PostgreSQL; and the check that the SQLAlchemy example, run as real processes through
the emulator, times out as often as the model says, for the ``concurrent`` and ``asyncpg`` starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from test_loadtest import STARTSIM, assert_clean, children_of_run, scenario_file, startsim
from throwaway_pg import PASSWORD

from loadtests.command import CommandResult, apply_line, child_env, classify_exit, dialled_dsn
from loadtests.container import restart_pause_s
from loadtests.records import read_jsonl
from sim import scenario as scenarios
from sim.records import SUMMARY_KEYS
from sim.runner import simulate
from sim.scenario import Restart
from sim.stats import cluster_proportion

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "sqlalchemy_startup.py"

# A stand-in start-up: even instances get ready and hold; odd ones time out (exit 3) on their
# first attempt and get ready on the next; instance 1 with HANG set never says anything. Each run
# leaves its environment and pid in $PROBE_DIR for the test to check.
FAKE = """
import json, os, sys, time
probe = os.path.join(os.environ["PROBE_DIR"], os.environ["STARTSIM_INSTANCE"] + "-"
                     + os.environ["STARTSIM_ATTEMPT"] + ".json")
with open(probe, "w") as f:
    json.dump({"pid": os.getpid(), "env": dict(os.environ)}, f)
instance, attempt = int(os.environ["STARTSIM_INSTANCE"]), int(os.environ["STARTSIM_ATTEMPT"])
if os.environ.get("HANG") and instance == 1:
    time.sleep(3600)
print("not json, ignored", flush=True)
print(json.dumps({"phase": "config", "s": 0.01}), flush=True)
time.sleep(0.2)
if instance % 2 and attempt == 1:
    print(json.dumps({"phase": "database", "s": 0.2, "connection_attempts": 2}), flush=True)
    print("deadline passed", file=sys.stderr)
    sys.exit(3)
print(json.dumps({"phase": "database", "s": 0.2, "connection_attempts": 2}), flush=True)
print(json.dumps({"ready": True}), flush=True)
time.sleep(3600)
"""


def fake_command(tmp_path: Path) -> str:
    script = tmp_path / "fake_startup.py"
    script.write_text(FAKE, encoding="utf-8")
    return f"{sys.executable} {script}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not reaped it yet.
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat.rpartition(")")[2].split()[0] != "Z"


def probes(folder: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in folder.glob("*.json")}


# -- the stdout convention and the environment, without a server ---------------------------------


def test_phase_lines_ready_and_exit_codes_make_the_record():
    res = CommandResult(1, start_unix_s=100.0)
    assert not apply_line(res, "plain text\n", 100.5)
    assert not apply_line(res, "[1, 2]", 100.5)
    assert not apply_line(res, '{"phase": "database", "s": -1}', 100.5)
    assert not apply_line(res, '{"phase": "database", "s": 2.5, "connection_attempts": 5}', 104.0)
    assert res.db_init_s == 2.5 and res.before_db_s == pytest.approx(1.5)
    assert res.phases == {"database": 2.5} and res.connection_attempts == 5
    assert apply_line(res, '{"ready": true}', 104.1)
    for code, outcome, reason in [
        (0, "ready", ""),
        (3, "timeout", "deadline"),
        (1, "error", "error"),
    ]:
        res = CommandResult(1, start_unix_s=0.0)
        classify_exit(res, code)
        assert (res.outcome, res.reason, res.exit_code) == (outcome, reason, code)
    res = CommandResult(1, start_unix_s=0.0)
    apply_line(res, '{"sqlstate": "53300"}', 1.0)
    classify_exit(res, 1)
    assert (res.outcome, res.reason) == ("rejected", "53300")
    classify_exit(res := CommandResult(1, start_unix_s=0.0), -signal.SIGKILL)
    assert res.outcome == "error" and res.error_class == "signal SIGKILL"


def test_the_command_gets_the_checked_target_and_the_password_in_pgpassword_only():
    dsn = f"postgresql://app:{PASSWORD}@db.example:5432/app?host=10.0.0.5&sslmode=disable"
    assert (
        dialled_dsn(dsn, "127.0.0.1", 6432) == "postgresql://app@127.0.0.1:6432/app?sslmode=disable"
    )
    assert dialled_dsn(dsn, "::1", 5432).startswith("postgresql://app@[::1]:5432/app")
    unix = dialled_dsn("postgresql://app@/app", "/run/pg/.s.PGSQL.5433", 5433)
    assert unix == "postgresql://app@/app?host=%2Frun%2Fpg&port=5433"
    base = {"PGHOST": "10.0.0.5", "PGSERVICE": "prod", "STARTSIM_DSN": dsn, "KEEP": "1"}
    connect = {"host": ["127.0.0.1"], "port": [6432], "password": PASSWORD}
    env = child_env(base, dsn, connect, {"STARTSIM_INSTANCE": "7"})
    assert env["PGHOST"] == "127.0.0.1" and env["PGPORT"] == "6432" and env["KEEP"] == "1"
    assert "PGSERVICE" not in env and "STARTSIM_DSN" not in env
    assert env["PGPASSWORD"] == PASSWORD and env["STARTSIM_INSTANCE"] == "7"
    assert PASSWORD not in env["DATABASE_URL"] and "10.0.0.5" not in env["DATABASE_URL"]
    assert "PGPASSWORD" not in child_env({}, dsn, {"host": ["127.0.0.1"], "port": [1]}, {})


def test_restart_pauses_follow_the_scenarios_rule_and_jitter():
    rng = np.random.default_rng(0)
    grpc = Restart(preset="grpc")
    pauses = np.array([restart_pause_s(grpc, 3, rng) for _ in range(2000)])
    nominal = 1.0 * 1.6**2
    assert pauses.min() >= 0.8 * nominal and pauses.max() <= 1.2 * nominal
    # Uniform on ±20 %: the mean within 4 standard errors (sd = 0.4 p / sqrt(12)) of the pause.
    assert abs(pauses.mean() - nominal) < 4 * 0.4 * nominal / np.sqrt(12 * len(pauses))
    plain = Restart(policy="exponential", initial_backoff_s=10.0, max_backoff_s=300.0)
    assert [restart_pause_s(plain, k, rng) for k in (1, 2, 6)] == [10.0, 20.0, 300.0]


@pytest.mark.parametrize(
    ("command", "problem"),
    [("", "is empty"), ("'unclosed", "cannot be split"), ("/no/such/startup", "not an executable")],
)
def test_an_unusable_command_is_refused_before_anything_starts(tmp_path, command, problem):
    out = tmp_path / "results"
    dsn = "postgresql://app@127.0.0.1:1/app"
    res = startsim("loadtest", "--dsn", dsn, "--out", str(out), "--instance-command", command)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert (
        len(lines) == 1 and lines[0].startswith("error: --instance-command") and problem in lines[0]
    )
    assert not out.exists()


# -- campaigns against the throwaway server ------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.slow
def test_a_command_campaign_records_restarts_and_stops_its_processes(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="cmd", instances=4, policy="fixed", max_restarts=2)
    probe_dir = tmp_path / "probes"
    probe_dir.mkdir()
    out = tmp_path / "results"
    env = {**os.environ, "PROBE_DIR": str(probe_dir)}
    args = ["loadtest", str(sc), "--dsn", pg_server.dsn, "--out", str(out)]
    res = startsim(*args, "--instance-command", fake_command(tmp_path), env=env)
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.iterdir()
    assert_clean(pg_server, run_dir, res.stdout + res.stderr)
    records = sorted(
        read_jsonl(run_dir / "records.jsonl"), key=lambda r: (r["instance"], r["attempt"])
    )
    got = [(r["instance"], r["attempt"], r["outcome"], r["exit_code"]) for r in records]
    assert got == [
        (0, 1, "ready", None),
        (1, 1, "timeout", 3),
        (1, 2, "ready", None),
        (2, 1, "ready", None),
        (3, 1, "timeout", 3),
        (3, 2, "ready", None),
    ]
    for r in records:
        assert r["phases"]["config"] == 0.01 and r["phases"]["database"] == 0.2
        assert r["db_init_s"] == 0.2 and r["connection_attempts"] == 2
        assert r["wall_s"] == pytest.approx(r["end_unix_s"] - r["start_unix_s"], abs=0.002)
        assert r["final"] is (r["outcome"] == "ready")
    assert records[1]["reason"] == "deadline" and records[1]["error_message"] == "deadline passed"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["outcomes"]["timeout"] == 2 and summary["p_first_start_success"] == 0.5
    seen = probes(probe_dir)
    assert sorted(seen) == ["0-1", "1-1", "1-2", "2-1", "3-1", "3-2"]
    for name, probe in seen.items():
        child = probe["env"]
        assert child["DATABASE_URL"] == pg_server.dsn_without_password
        assert child["PGPASSWORD"] == PASSWORD and child["STARTSIM_RUN_ID"] == run_dir.name
        assert name == f"{child['STARTSIM_INSTANCE']}-{child['STARTSIM_ATTEMPT']}"
        assert child["PGAPPNAME"] == "startsim-loadtest" and "STARTSIM_DSN" not in child
    # Ready processes held on until the campaign ended, then were stopped: none runs on.
    assert not [p["pid"] for p in seen.values() if alive(p["pid"])]


@pytest.mark.postgres
@pytest.mark.slow
def test_sigterm_stops_a_command_campaign_and_every_process_it_started(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="cmdterm", instances=3, horizon_s=600.0)
    probe_dir = tmp_path / "probes"
    probe_dir.mkdir()
    out = tmp_path / "results"
    args = ["loadtest", str(sc), "--dsn", pg_server.dsn, "--out", str(out)]
    args += ["--instance-command", fake_command(tmp_path)]
    env = {**os.environ, "PROBE_DIR": str(probe_dir), "HANG": "1"}
    proc = subprocess.Popen(
        [*STARTSIM, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    end = time.monotonic() + 60
    while time.monotonic() < end:  # instances 0 and 2 ready, instance 1 hanging
        files = list(out.glob("*/records.jsonl"))
        if files and len(files[0].read_text().splitlines()) >= 2 and len(probes(probe_dir)) == 3:
            break
        time.sleep(0.2)
    pids = [p["pid"] for p in probes(probe_dir).values()]
    assert len(pids) == 3 and all(alive(pid) for pid in pids)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    (run_dir,) = out.iterdir()
    assert children_of_run(run_dir) == [] and not [pid for pid in pids if alive(pid)]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["outcomes"]["ready"] == 2
    assert_clean(pg_server, run_dir, stdout + stderr)


# -- the check: the SQLAlchemy example, measured and simulated -----------------------------------

# 8 instances × K = 2 connections (16 of the server's 17 free slots) through a connector of 2
# set-ups at a time, 1 s each, with one scale-out after 3–8 s: `concurrent` serves instance by
# instance, `asyncpg` serves every first connection before any second one, so more instances pass
# a 5.5 s deadline (simulated: about 0.32 against 0.65).
CHECK = """
name = "check-{start}"
horizon_s = 60
[fleet]
instances = 8
[startup]
before_db_s = {{ dist = "constant", value = 0.0 }}
db_init_timeout_s = 5.5
init_queries_s = {{ dist = "constant", value = 0.001 }}
after_db_s = {{ dist = "constant", value = 0.0 }}
[pool]
start = "{start}"
min_size = 2
max_size = 2
held_when_ready = 2
connect_timeout_s = 10.0
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
[restart]
policy = "none"
[connector]
min_instances = 1
max_instances = 2
setups_per_instance = 2
setup_s = {{ dist = "constant", value = 1.0 }}
scale_up_delay_s = {{ dist = "uniform", low = 3.0, high = 8.0 }}
"""
CHECK_RUNS = 4


def first_attempt_timeouts(runs: list[list[dict]]) -> tuple[np.ndarray, np.ndarray]:
    firsts = [[r for r in run if r["attempt"] == 1] for run in runs]
    events = np.array([sum(r["outcome"] == "timeout" for r in run) for run in firsts])
    return events, np.array([len(run) for run in firsts])


def db_init_offsets_s(runs: list[list[dict]]) -> list[float]:
    """When each instance's database init began, from its campaign's first process start: the
    example's own start-up (interpreter, imports) is what it is, so the model is given it."""
    out = []
    for run in runs:
        t0 = min(r["start_unix_s"] for r in run)
        out += [round(r["start_unix_s"] + r["before_db_s"] - t0, 3) for r in run]
    return out


def check_start(pg_server, tmp_path: Path, start: str) -> tuple[np.ndarray, list, object]:
    """CHECK_RUNS campaigns of the example with one start; (timeouts per run, runs, simulated)."""
    sc_path = tmp_path / f"check-{start}.toml"
    sc_path.write_text(CHECK.format(start=start), encoding="utf-8")
    env = {**os.environ, "WARMUP_CONNECTIONS": "2", "WARMUP_START": start}
    env["DB_INIT_TIMEOUT_S"] = "5.5"
    command = f"{sys.executable} {EXAMPLE}"
    runs = []
    for seed in range(1, CHECK_RUNS + 1):  # the same seeds for both starts: the same scale-outs
        out = tmp_path / f"{start}{seed}"
        args = ["loadtest", str(sc_path), "--dsn", pg_server.dsn, "--out", str(out)]
        args += ["--via-emulator", "--seed", str(seed), "--instance-command", command]
        res = startsim(*args, env=env)
        assert res.returncode == 0, res.stderr
        (run_dir,) = out.iterdir()
        assert_clean(pg_server, run_dir, res.stdout + res.stderr)
        records = read_jsonl(run_dir / "records.jsonl")
        assert len(records) == 8 and {r["outcome"] for r in records} <= {"ready", "timeout"}
        assert all(r["exit_code"] == 3 for r in records if r["outcome"] == "timeout")
        runs.append(records)
    sc = scenarios.load(sc_path).with_overrides(
        {"startup.before_db_s": {"dist": "empirical", "values": db_init_offsets_s(runs)}}
    )
    simulated = simulate(sc, replications=400, seed=7, jobs=1, engine="reference").summary()
    return first_attempt_timeouts(runs)[0], runs, simulated.p_db_init_timeout


@pytest.mark.postgres
@pytest.mark.slow
def test_the_example_times_out_as_the_model_says(pg_server, tmp_path):
    """First-attempt timeout share, measured (each run one cluster) and simulated, per start."""
    figures = {}
    for start in ("concurrent", "asyncpg"):
        events, runs, sim_p = check_start(pg_server, tmp_path, start)
        measured = cluster_proportion(events, [len(run) for run in runs])
        figures[start] = (measured, sim_p, events)
        print(
            f"{start}: timeouts per run {events.tolist()}; measured {measured}; simulated {sim_p}"
        )
        # Agreement within the intervals: the simulated share lies in the measured interval (the
        # wide one: few runs), and the two intervals overlap.
        assert measured.ci_low <= sim_p.estimate <= measured.ci_high, (start, measured, sim_p)
        assert sim_p.ci_low <= measured.ci_high and measured.ci_low <= sim_p.ci_high
    (_, sim_c, ev_c), (_, sim_a, ev_a) = figures["concurrent"], figures["asyncpg"]
    assert sim_c.ci_high < sim_a.ci_low, "the scenario should tell the two starts apart"
    # The same seeds, so the same scale-out delays: asyncpg's start times out more, measured too.
    assert ev_a.sum() > ev_c.sum(), (ev_a, ev_c)


# -- the built-in instance follows pool.start ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.parametrize("start", ["asyncpg", "concurrent", "workers", "background"])
def test_the_built_in_instance_opens_its_pool_the_way_pool_start_says(pg_server, start):
    """Every start opens min_size connections as database-init work and ends ready holding
    held_when_ready; ``workers`` never has more than W opening at once."""
    import asyncio

    from loadtests.container import Gauge, Instance

    sc = scenarios.resolve("gang-allocation").in_model_terms()  # the model's pool fields
    sc = sc.with_overrides(
        {
            "pool.start": start,
            "pool.workers": 2,
            "pool.min_size": 5,
            "pool.max_size": 6,
            "pool.held_when_ready": 3,
        }
    )

    async def main():
        gauge = Gauge()
        inst = Instance(sc, pg_server.dsn, np.random.default_rng(0), gauge, (PASSWORD,))
        res = await inst.attempt(1)
        await asyncio.sleep(0.3)  # background connections and asyncpg's upkeep settle
        on_server = pg_server.harness_connections()
        await inst.close()
        return res, on_server

    res, on_server = asyncio.run(main())
    assert res.outcome == "ready" and res.connection_attempts == 5, res
    assert on_server == 3
    assert pg_server.wait_no_harness_connections() == 0
