"""Load campaigns against a real, throwaway PostgreSQL (no mocks): outcomes, gang allocation,
distributed mode, clean stops, safety. Each campaign is a few instances for a few seconds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
from throwaway_pg import PASSWORD

from loadtests.records import read_jsonl
from sim.records import SUMMARY_KEYS

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


STARTSIM = [sys.executable, "-c", "from sim.cli import main; main()"]

BASE = """
name = "{name}"
horizon_s = {horizon_s}
[fleet]
instances = {instances}
arrival = "burst"
[startup]
before_db_s = {{ dist = "constant", value = 0.0 }}
db_init_timeout_s = {timeout_s}
init_queries_s = {{ dist = "constant", value = {queries_s} }}
after_db_s = {{ dist = "constant", value = 0.0 }}
[pool]
min_size = {min_size}
max_size = {min_size}
held_when_ready = {min_size}
connect_timeout_s = 3.0
on_failure = "{on_failure}"
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
[restart]
policy = "{policy}"
initial_backoff_s = 0.2
max_restarts = {max_restarts}
exit_release_s = {exit_release_s}
[connector]
min_instances = 1
max_instances = 2
setups_per_instance = 2
setup_s = {{ dist = "constant", value = 1.0 }}
scale_up_delay_s = {{ dist = "constant", value = 0.5 }}
"""


def scenario_file(tmp_path: Path, **fields) -> Path:
    values = dict(
        name="t",
        horizon_s=60.0,
        instances=5,
        timeout_s=10.0,
        queries_s=0.01,
        min_size=2,
        on_failure="close",
        policy="none",
        max_restarts=0,
        exit_release_s=0.0,
    )
    values.update(fields)
    path = tmp_path / f"{values['name']}.toml"
    path.write_text(BASE.format(**values), encoding="utf-8")
    return path


def startsim(*args: str, timeout_s: float = 120, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*STARTSIM, *args], capture_output=True, text=True, timeout=timeout_s, check=False, env=env
    )


def campaign(
    server, tmp_path: Path, scenario: Path, *extra: str, dsn: str | None = None, env=None
) -> tuple[Path, list[dict]]:
    """Run ``startsim loadtest``; check the run left nothing behind and leaked no password."""
    out = tmp_path / "results"
    dsn = dsn or server.dsn
    res = startsim("loadtest", str(scenario), "--dsn", dsn, "--out", str(out), *extra, env=env)
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.iterdir()
    assert_clean(server, run_dir, res.stdout + res.stderr)
    return run_dir, read_jsonl(run_dir / "records.jsonl")


def assert_clean(server, run_dir: Path, terminal: str) -> None:
    assert server.wait_no_harness_connections() == 0, "the harness left connections open"
    assert PASSWORD not in terminal
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert PASSWORD not in path.read_text(encoding="utf-8", errors="replace"), path


def test_a_burst_that_fits_starts_every_instance(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="fits", instances=5, min_size=2)  # 10 of 17 slots
    run_dir, records = campaign(pg_server, tmp_path, sc)
    assert sorted(r["instance"] for r in records) == list(range(5))
    assert {r["outcome"] for r in records} == {"ready"}
    assert all(r["connections_opened"] == 2 and r["run_id"] == run_dir.name for r in records)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(SUMMARY_KEYS) <= set(summary)
    assert summary["p_first_start_success"] == 1.0
    assert summary["peak_db_connections"]["max"] == 10
    stats = (run_dir / "locust_stats.csv").read_text()
    assert "db_init" in stats  # every attempt was also a Locust request event
    for name in ("scenario.toml", "campaign.json", "connections.jsonl"):
        assert (run_dir / name).exists()
    # A fresh seed by default, recorded: --seed repeats it.
    seed = json.loads((run_dir / "campaign.json").read_text())["seed"]
    assert summary["seed"] == seed and isinstance(seed, int)


def test_campaigns_draw_a_fresh_seed_unless_given_one(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="seeds", instances=1, min_size=1)
    seeds = []
    for n, extra in enumerate([(), (), ("--seed", "12345")]):
        out = tmp_path / f"r{n}"
        res = startsim("loadtest", str(sc), "--dsn", pg_server.dsn, "--out", str(out), *extra)
        assert res.returncode == 0, res.stderr
        (run_dir,) = out.iterdir()
        seed = json.loads((run_dir / "summary.json").read_text())["seed"]
        assert f"seed {seed} (--seed {seed} repeats" in res.stderr
        seeds.append(seed)
    assert seeds[0] != seeds[1] and seeds[2] == 12345


@pytest.mark.parametrize(
    ("change", "cause"),
    [
        ("password", "28P01 password authentication failed"),
        ("database", '3D000 database "nosuchdb" does not exist'),
        ("port", "Connection refused"),
    ],
)
def test_a_misconfigured_target_is_an_error_before_anything_starts(
    pg_server, tmp_path, change, cause
):
    dsn = {
        "password": pg_server.dsn.replace(PASSWORD, "wrong-password"),
        "database": pg_server.dsn.rpartition("/")[0] + "/nosuchdb",
        "port": f"postgresql://loadtest:{PASSWORD}@127.0.0.1:1/postgres",
    }[change]
    out = tmp_path / "results"
    sc = scenario_file(tmp_path, name="bad", instances=2, min_size=1)
    res = startsim("loadtest", str(sc), "--dsn", dsn, "--out", str(out), timeout_s=60)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and cause in lines[0] and "cannot connect to" in lines[0], res.stderr
    assert "Traceback" not in res.stderr and PASSWORD not in res.stderr
    assert not out.exists()  # no summary, no run folder


def test_the_password_may_come_from_the_environment(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="env", instances=2, min_size=1)
    env = dict(os.environ, PGPASSWORD=PASSWORD)
    run_dir, records = campaign(
        pg_server, tmp_path, sc, dsn=pg_server.dsn_without_password, env=env
    )
    assert {r["outcome"] for r in records} == {"ready"}
    assert json.loads((run_dir / "campaign.json").read_text())["target"] == (
        pg_server.dsn_without_password
    )


def test_a_burst_over_the_free_slots_is_rejected_with_53300(pg_server, tmp_path):
    # 12 instances × 3 connections = 36 against 17 free slots; failed pools close.
    sc = scenario_file(tmp_path, name="over", instances=12, min_size=3)
    _, records = campaign(pg_server, tmp_path, sc)
    rejected = [r for r in records if r["outcome"] == "rejected"]
    assert rejected
    assert {r["sqlstate"] for r in rejected} == {"53300"}
    assert {r["error_class"] for r in rejected} == {"TooManyConnectionsError"}


def test_failed_pools_that_hold_fail_more_than_slot_arithmetic(pg_server, tmp_path):
    # Slot arithmetic: 17 // 3 = 5 instances fit, so 7 of 12 should fail. Failed pools that keep
    # their connections (until the run ends) take slots the others needed: gang allocation.
    sc = scenario_file(
        tmp_path, name="hold", instances=12, min_size=3, on_failure="hold", exit_release_s=600.0
    )
    _, records = campaign(pg_server, tmp_path, sc)
    failed = sum(r["outcome"] != "ready" for r in records)
    assert len(records) == 12
    assert failed > 12 - 17 // 3


def test_distributed_run_through_the_emulator_merges_records(pg_server, tmp_path):
    # Master and two workers on loopback; the emulator carries 2 set-ups of 1 s at once and
    # scales out once after 0.5 s, so the 6 set-ups finish in three pairs.
    sc = scenario_file(tmp_path, name="dist", instances=6, min_size=1)
    run_dir, records = campaign(pg_server, tmp_path, sc, "--workers", "2", "--via-emulator")
    assert len(records) == 6
    assert len({r["instance"] for r in records}) == 6
    assert {r["worker"] for r in records} == {0, 1}
    assert {r["outcome"] for r in records} == {"ready"}
    log = read_jsonl(run_dir / "emulator.jsonl")
    assert [e["instances"] for e in log if e["event"] == "scale_out"] == [2]
    # Pairs end at 1.0, 1.5 and 2.0 s; without the scale-out the last pair would end at 3.0 s.
    assert 1.8 <= max(r["db_init_s"] for r in records) < 3.0  # spawns differ by a few ms


@pytest.mark.parametrize("fault", ["closed", "reset"])
def test_path_faults_through_the_emulator_are_recorded_as_the_model_names_them(
    pg_server, tmp_path, fault
):
    # Every connection the emulator accepts is failed 0.3 s later without reaching the server
    # (p_fault 1, no retry, no restart): 3 instances, 3 attempts, each error/<fault> after about
    # 0.3 s, no 53300; the emulator logs each as a connection of that stage and never set one up.
    sc = scenario_file(tmp_path, name=fault, instances=3, min_size=1)
    sc.write_text(
        sc.read_text(encoding="utf-8")
        + f'[path]\nfault = "{fault}"\nfail_after_s = {{ dist = "constant", value = 0.3 }}\n',
        encoding="utf-8",
    )
    run_dir, records = campaign(pg_server, tmp_path, sc, "--via-emulator")
    assert len(records) == 3
    assert {(r["outcome"], r["reason"]) for r in records} == {("error", fault)}
    assert not any(r["sqlstate"] == "53300" for r in records)
    assert all(0.3 <= r["db_init_s"] < 1.5 for r in records)
    assert {r["connections_opened"] for r in records} == {0}
    log = read_jsonl(run_dir / "emulator.jsonl")
    conns = [e for e in log if e["event"] == "connection"]
    assert [c["stage"] for c in conns] == [fault] * 3
    assert all(c["setup_s"] is None and 0.3 <= c["fault_s"] < 1.0 for c in conns)
    assert max(e["setups"] for e in log if e["event"] != "connection") == 0


def test_path_faults_need_the_emulator(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="nofault", instances=1, min_size=1)
    sc.write_text(sc.read_text(encoding="utf-8") + '[path]\nfault = "hung"\n', encoding="utf-8")
    res = startsim("loadtest", str(sc), "--dsn", pg_server.dsn, "--out", str(tmp_path / "r"))
    assert res.returncode == 2
    assert "path.fault = 'hung'" in res.stderr and "--via-emulator" in res.stderr


def _ctrl_c_as_in_a_terminal() -> None:
    # A shell without job control starts background commands with SIGINT ignored, and Python then
    # never raises KeyboardInterrupt (CI may run the suite so); a terminal's Ctrl-C is not ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def endless_run(pg_server, tmp_path: Path, instances: int, records: int):
    """A campaign in which every attempt times out (queries take 5 s, the deadline is 0.5 s) and
    restarts, a run that would go on for minutes; yields once ``records`` are written. Whatever
    happens in the test, nothing of the run outlives it (a run left holding connections would
    skew every later test on the shared server)."""
    sc = scenario_file(
        tmp_path,
        name="endless",
        instances=instances,
        timeout_s=0.5,
        queries_s=5.0,
        policy="fixed",
        max_restarts=1000,
        horizon_s=600.0,
    )
    out = tmp_path / "results"
    args = ["loadtest", str(sc), "--dsn", pg_server.dsn, "--out", str(out)]
    proc = subprocess.Popen(
        [*STARTSIM, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_ctrl_c_as_in_a_terminal,
    )
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            files = list(out.glob("*/records.jsonl"))
            if files and len(files[0].read_text().splitlines()) >= records:
                break
            time.sleep(0.2)
        (run_dir,) = out.iterdir()
        yield proc, run_dir
    finally:
        proc.kill()
        proc.communicate()
        for pid in children_of_run(out):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_interrupting_a_run_keeps_its_records(pg_server, tmp_path):
    with endless_run(pg_server, tmp_path, instances=3, records=4) as (proc, run_dir):
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=STOP_S)
    assert proc.returncode == 130, stderr
    records = read_jsonl(run_dir / "records.jsonl")
    assert len(records) >= 4
    assert {r["outcome"] for r in records} == {"timeout"}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True
    assert summary["attempts"] == len(records)
    assert_clean(pg_server, run_dir, stdout + stderr)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_a_run_as_ctrl_c_does(pg_server, tmp_path, sig):
    with endless_run(pg_server, tmp_path, instances=2, records=2) as (proc, run_dir):
        assert children_of_run(run_dir), "Locust should be running"
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=STOP_S)
        left = children_of_run(run_dir)
    assert proc.returncode == 128 + sig, stderr
    assert f"interrupted ({sig.name})" in stderr
    assert left == []  # no orphan runs on
    records = read_jsonl(run_dir / "records.jsonl")
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["interrupted"] is True and summary["stop_signal"] == sig.name
    assert summary["attempts"] == len(records) >= 2
    assert_clean(pg_server, run_dir, stdout + stderr)


# A stop takes seconds; the bound only keeps a hung run from hanging the suite (shared machine).
STOP_S = 180


def children_of_run(run_dir: Path) -> list[int]:
    """Processes whose command line names the run folder (Locust's --csv, --logfile)."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(run_dir).encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:
            continue
    return pids


def test_a_non_loopback_target_needs_allow_target(tmp_path):
    dsn = f"postgresql://app:{PASSWORD}@10.11.12.13:5432/app"
    out = tmp_path / "results"
    res = startsim("loadtest", "--dsn", dsn, "--out", str(out), timeout_s=60)
    assert res.returncode == 2
    assert "10.11.12.13" in res.stderr and "--allow-target" in res.stderr
    assert "Traceback" not in res.stderr
    assert PASSWORD not in res.stdout + res.stderr
    assert not out.exists()
    worker = startsim("loadtest-worker", "--dsn", dsn, "--master", "127.0.0.1:5557", timeout_s=60)
    assert worker.returncode == 2 and "--allow-target 10.11.12.13" in worker.stderr
    emulator = startsim(
        "connector-emulator", "--listen", "127.0.0.1:0", "--upstream", "10.11.12.13:5432"
    )
    assert emulator.returncode == 2 and "--upstream host = '10.11.12.13'" in emulator.stderr


def test_more_instances_than_the_hard_limit_exits_2(tmp_path):
    sc = scenario_file(tmp_path, name="big", instances=50)
    dsn = "postgresql://app@127.0.0.1:1/app"
    res = startsim("loadtest", str(sc), "--dsn", dsn, "--max-instances", "10", timeout_s=60)
    assert res.returncode == 2
    assert "fleet.instances = 50" in res.stderr and "--max-instances" in res.stderr
    assert "Traceback" not in res.stderr


def test_waves_start_on_their_times(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="waves", instances=4, min_size=1)
    text = sc.read_text().replace(
        'arrival = "burst"',
        'arrival = "waves"\nwaves = [{ at_s = 0.0, count = 2 }, { at_s = 2.0, count = 2 }]',
    )
    sc.write_text(text)
    _, records = campaign(pg_server, tmp_path, sc)
    t0 = min(r["start_unix_s"] for r in records)
    starts = sorted(r["start_unix_s"] - t0 for r in records)
    # Locust ticks shapes once a second: never early, late by less than a tick.
    assert starts[1] < 0.5 and 1.9 <= starts[2] <= starts[3] < 3.0  # t0: the first spawn


# -- the locustfile run by hand, as Locust users do ----------------------------------------------
LOCUSTFILE = Path(__file__).parent.parent / "loadtests" / "locustfile.py"
PLAIN_LOCUST = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]


def no_startsim_env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STARTSIM_", "PG"))}
    return {**env, **extra}


def test_plain_locust_without_settings_refuses_loudly(tmp_path):
    args = [*PLAIN_LOCUST, "-u", "1", "-r", "1", "-t", "2s"]
    res = subprocess.run(
        args, capture_output=True, text=True, timeout=60, env=no_startsim_env(), cwd=tmp_path
    )
    assert res.returncode == 2, res.stderr
    assert "error: --dsn (or STARTSIM_DSN) is required" in res.stderr
    assert "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []  # no results folder, nothing started


def test_plain_locust_with_the_documented_options_writes_records(pg_server, tmp_path):
    sc = scenario_file(tmp_path, name="plain", instances=3, min_size=2)
    out = tmp_path / "results"
    options = ["--dsn", pg_server.dsn_without_password, "--scenario", str(sc)]
    options += ["--seed", "7", "--out", str(out)]
    doc = (Path(__file__).parent.parent / "docs" / "loadtests.md").read_text(encoding="utf-8")
    assert "locust -f loadtests/locustfile.py --headless" in doc
    for name in options[::2]:
        assert f"`{name}" in doc, name  # each option used here is documented
    env = no_startsim_env(PGPASSWORD=PASSWORD)
    res = subprocess.run(
        [*PLAIN_LOCUST, *options], capture_output=True, text=True, timeout=120, env=env
    )
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.iterdir()
    assert_clean(pg_server, run_dir, res.stdout + res.stderr)
    records = read_jsonl(run_dir / "records.jsonl")
    assert sorted(r["instance"] for r in records) == [0, 1, 2]
    assert {r["outcome"] for r in records} == {"ready"}
    assert {r["run_id"] for r in records} == {run_dir.name}
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["seed"] == 7 and summary["attempts"] == 3
    assert (run_dir / "scenario.toml").exists()
