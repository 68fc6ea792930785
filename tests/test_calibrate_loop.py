"""The loop end to end on the throwaway PostgreSQL behind the emulator with known settings: two
runs of one campaign, calibrate from them, check the calibrated values against the settings, then
validate the calibrated model on another campaign (another fleet size, same infrastructure), and
write the ADR from the calibrated scenario."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sim.calibrate import calibrate
from sim.calibrate.inputs import read_campaign
from sim.validate import validate

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

STARTSIM = [sys.executable, "-c", "from sim.cli import main; main()"]

# The infrastructure the calibration must find: 2 set-ups of lognormal(0.25 s, 0.2) per
# connector instance, 1 → 3 instances, each scale-out after 1.0 s; the server's 17 free slots.
CAMPAIGN = """
name = "{name}"
horizon_s = 60.0
[fleet]
instances = {instances}
arrival = "burst"
[startup]
before_db_s = {{ dist = "lognormal", median = 0.2, sigma = 0.3 }}
db_init_timeout_s = 4.0
init_queries_s = {{ dist = "constant", value = 0.01 }}
after_db_s = {{ dist = "constant", value = 0.1 }}
[pool]
min_size = 2
max_size = 2
held_when_ready = 2
connect_timeout_s = 3.0
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
[restart]
policy = "fixed"
initial_backoff_s = 0.5
max_restarts = 2
[connector]
min_instances = 1
max_instances = 3
setups_per_instance = 2
setup_s = {{ dist = "lognormal", median = 0.25, sigma = 0.2 }}
scale_up_delay_s = {{ dist = "constant", value = 1.0 }}
"""


def loadtest(server, tmp_path: Path, name: str, instances: int, seed: int) -> Path:
    sc = tmp_path / f"{name}.toml"
    sc.write_text(CAMPAIGN.format(name=name, instances=instances))
    out = tmp_path / name
    res = subprocess.run(
        [
            *STARTSIM,
            "loadtest",
            str(sc),
            "--dsn",
            server.dsn,
            "--via-emulator",
            "--out",
            str(out),
            "--seed",
            str(seed),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    (run_dir,) = out.iterdir()
    return run_dir


def test_calibrate_recovers_the_settings_and_predicts_another_campaign(pg_server, tmp_path):
    # 12 instances × 2 connections: the connector queues and the server rejects (24 > 17 slots).
    # Each run has a seed of its own (the emulator's draws are independent, as a real connector's
    # are) and a fixed one, so that only the machine's timing varies from one test to the next:
    # with a fresh seed each time, two tests in five failed (below).
    runs = [read_campaign(loadtest(pg_server, tmp_path, f"a{i}", 12, 1 + i)) for i in range(2)]
    cal = calibrate(runs, replications=20)
    for field, truth in (
        ("connector.setups_per_instance", 2),
        ("connector.setup_s", 0.25),
        ("connector.scale_up_delay_s", 1.0),
        ("database.max_connections", 17),
    ):
        e = cal.estimate(field)
        high = float("inf") if e.high is None else e.high
        assert e.low is not None and e.low <= truth <= high, (field, e)
    assert cal.estimate("database.max_connections").value == 17
    assert cal.scenario.database.free_slots == 17
    # The server's accept (fork, SCRAM, the proxy's hops) is measured per connection by the
    # emulator, so it is calibrated with an interval instead of absorbed into the set-up.
    accept = cal.estimate("database.accept_s")
    assert accept.identifiable and 0 < accept.low < accept.high < 1.0, accept
    assert cal.estimate("connector.setup_s").source.startswith("emulator.jsonl connection")

    # Another fleet size on the same infrastructure: 6 instances, no rejection. Nine verdicts on
    # one small campaign, from a model calibrated on two runs (whose own error the verdicts do
    # not allow for): at 95 % each, with fresh seeds, one of them disagreed in two tests of five.
    # So they are judged at 99.9 %, and a model with the connector's set-up three times slower
    # must still be told apart at that level.
    other = read_campaign(loadtest(pg_server, tmp_path, "b", 6, 3))
    v = validate([other], cal.scenario, replications=100, confidence=0.999)
    verdicts = {f.name: f.verdict for f in v.figures}
    for name in (
        "P(database init reaches the deadline)",
        "P(first start succeeds)",
        "fleet time-to-ready (s)",
        "rejections per instance",
        "restarts per instance",
        "work amplification",
        "database-init durations (KS D)",
    ):
        assert verdicts[name] == "agrees", (name, v.figures)
    assert all(f.verdict == "agrees" for f in v.conditional), v.conditional
    slow = cal.scenario.with_overrides({"connector.setup_s": {"dist": "constant", "value": 0.75}})
    wrong = validate([other], slow, replications=100, confidence=0.999)
    verdicts = {f.name: f.verdict for f in wrong.figures}
    assert verdicts["database-init durations (KS D)"] == "disagrees", wrong.figures
    assert verdicts["fleet time-to-ready (s)"] == "disagrees", wrong.figures

    # The ADR written from the calibrated scenario names the campaigns.
    from sim.calibrate.toml import render

    path = tmp_path / "calibrated.toml"
    path.write_text(render(cal))
    out = tmp_path / "adr"
    res = subprocess.run(
        [
            *STARTSIM,
            "recommend",
            str(path),
            "--out",
            str(out),
            "--replications",
            "40",
            "--target-success",
            "0.9",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert res.returncode == 0, res.stderr
    adr = next(out.rglob("adr.md")).read_text()
    assert all(r.run_id in adr for r in runs)


def test_the_ks_p_value_keeps_a_runs_attempts_together():
    """Runs whose attempts move together (a late scale-out delays them all): drawn from the model
    itself, the two-sample KS rejects far more often than its level, since it takes the attempts
    as independent; drawing whole campaigns from the model rejects about as often as it should,
    and still rejects a shifted run."""
    from scipy.stats import ks_2samp

    from sim.validate import ks_by_runs

    rng = np.random.default_rng(7)

    def replication():  # one run: a shared delay, then 20 attempts around it
        return rng.normal(10.0 + 2.0 * rng.standard_normal(), 0.3, 20)

    model = [replication() for _ in range(200)]
    pooled = np.concatenate(model)
    mine, naive = [], []
    for _ in range(100):
        run = replication()
        mine.append(ks_by_runs([run], [model], draws=200, seed=1)[1])
        naive.append(ks_2samp(run, pooled).pvalue)
    assert np.mean(np.asarray(mine) < 0.05) < 0.12
    assert np.mean(np.asarray(naive) < 0.05) > 0.5
    assert ks_by_runs([replication() + 8.0], [model], draws=200)[1] < 0.01
