"""Traffic after ready in a load campaign (docs/loadtests.md, "Traffic after ready"): each ready
instance's pool is sim.checkout's PoolState driven from asyncio with real connections, every
request is recorded, and ``startsim validate`` compares the campaign's checkout waits and failed
requests with the model's. Against the throwaway PostgreSQL (17 free slots), through the
connector emulator."""

from __future__ import annotations

import asyncio
import json
import math
import re
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from test_loadtest import campaign

from loadtests.records import read_jsonl
from loadtests.traffic import Clock, ReadyPool
from sim.calibrate.inputs import read_campaign
from sim.engines import run_one
from sim.records import REQUEST_COLUMNS, Reason, RequestOutcome
from sim.scenario import load
from sim.validate import AGREES, validate

# Four instances start at once with one connection each (min_size 1, held_when_ready 1), then
# take 40 requests a second between them for 15 s, each holding its connection for a 50 ms
# median query. Per waiting request a pool opens a connection of its own (per_waiter, up to 5)
# through a connector of 8 set-ups of a 0.2 s median each: while one opens, more requests arrive
# and open theirs, so the pools grow to 4-5 within the first second. 4 × 5 = 20 wanted, 17 free
# slots: the last ones may meet 53300. With the background filler the pools grow one connection
# at a time while requests queue, and freed connections go to the queue first: fewer opened,
# shorter waits. accept_s: the server's fork and SCRAM exchange through the emulator, measured at
# 10-20 ms here.
SCENARIO = """
name = "traffic"
horizon_s = 15.0
[fleet]
instances = 4
arrival = "burst"
[startup]
before_db_s = {{ dist = "constant", value = 0.0 }}
db_init_timeout_s = 10.0
init_queries_s = {{ dist = "constant", value = 0.01 }}
after_db_s = {{ dist = "constant", value = 0.0 }}
[pool]
min_size = 1
max_size = 5
held_when_ready = 1
connect_timeout_s = 3.0
retry_backoff_s = 0.0
timeout_s = 0.5
growth = "{growth}"
[database]
max_connections = 20
reserved_connections = 3
accept_s = {{ dist = "lognormal", median = 0.015, sigma = 0.5 }}
[restart]
policy = "none"
[connector]
min_instances = 1
max_instances = 2
setups_per_instance = 8
setup_s = {{ dist = "lognormal", median = 0.2, sigma = 0.5 }}
scale_up_delay_s = {{ dist = "constant", value = 0.5 }}
[traffic]
rate_per_s = 40.0
query_s = {{ dist = "lognormal", median = 0.05, sigma = 0.5 }}
"""


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("growth", ["per_waiter", "background"])
def test_a_campaign_with_traffic_and_validate_agree_on_checkout_waits(pg_server, tmp_path, growth):
    path = tmp_path / "traffic.toml"
    path.write_text(SCENARIO.format(growth=growth), encoding="utf-8")
    run_dir, records = campaign(pg_server, tmp_path, path, "--via-emulator", "--seed", "5")
    assert [r["outcome"] for r in records] == ["ready"] * 4
    requests = read_jsonl(run_dir / "requests.jsonl")
    # One record per request, the model's columns, on the campaign's clock over [0, horizon_s).
    assert all(set(REQUEST_COLUMNS) <= set(r) for r in requests)
    assert all(0 <= r["arrive_s"] < 15.0 for r in requests)
    assert 400 < len(requests) < 800  # about 40 × 15
    outcomes = Counter(r["outcome"] for r in requests)
    assert set(outcomes) <= {RequestOutcome.SERVED, RequestOutcome.FAILED, RequestOutcome.UNROUTED}
    served = [r for r in requests if r["outcome"] == RequestOutcome.SERVED]
    assert all(
        math.isclose(r["wait_s"], r["checkout_s"] - r["arrive_s"], abs_tol=2e-6) for r in served
    )
    assert all(r["ready_s"] <= r["arrive_s"] for r in served)
    # The pools grew: requests waited for connections of their own, through the emulator.
    waited = [r["wait_s"] for r in served if r["wait_s"] > 0.01]
    assert waited
    log = read_jsonl(run_dir / "emulator.jsonl")
    opened = [e for e in log if e["event"] == "connection"]
    assert len(opened) > 4 + len(waited) // 2
    for r in requests:
        if r["outcome"] == RequestOutcome.FAILED:  # a failed request names its reason
            assert r["reason"] in (Reason.TOO_MANY_CLIENTS, Reason.POOL_TIMEOUT), r
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["traffic"]["requests_per_deploy"] == len(requests)

    # validate: measured and predicted checkout waits (and failed requests), each with its
    # interval and a verdict. At 99 % so that one campaign's real timing noise (the shared
    # 2-core machine) does not fail a right model one run in twenty.
    v = validate([read_campaign(run_dir)], replications=100, seed=1, confidence=0.99)
    traffic = {f.name: f for f in v.figures if "checkout" in f.name or "requests" in f.name}
    assert set(traffic) == {
        "checkout wait p50 in the window (s)",
        "checkout wait p99 in the window (s)",
        "failed requests per deploy",
    }
    report = "\n".join(
        f"{f.name}: measured {f.measured:.4g} {f.measured_interval}, "
        f"predicted {f.predicted:.4g} {f.predicted_interval}, {f.verdict}"
        for f in traffic.values()
    )
    print(report)
    assert all(f.verdict == AGREES for f in traffic.values()), report
    p99 = traffic["checkout wait p99 in the window (s)"]
    assert p99.measured > 0.01 and p99.predicted_interval[0] > 0.01  # a wait for a connection


# -- the asyncio driver without a server: fake connections, real PoolState ----------------------


class FakeConnection:
    def __init__(self, name: str) -> None:
        self.name = name

    async def execute(self, _query: str, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.mark.parametrize("growth", ["per_waiter", "background"])
def test_the_driver_and_the_engine_hand_over_queue_and_time_out_alike(tmp_path, growth):
    # One instance ready at 0.1 s with one connection, max_size 2, a 0.35 s pool timeout,
    # queries of 0.2 s, a new connection in 0.1 s (its set-up). Five requests at once: the first
    # takes the idle connection; a new one opens (the second request's own, or the filler's for
    # the first queued), established 0.1 s later for the second; the others queue; after 0.2 s
    # the first connection goes to the third, after 0.3 s the new one to the fourth; the fifth
    # times out at 0.35 s (both busy again). One connection opened. The same rules (sim.checkout)
    # driven by the readable engine's event loop and by the harness's asyncio, fake connections.
    sc = load_text(
        tmp_path,
        f"""
        horizon_s = 10.0
        [fleet]
        instances = 1
        [startup]
        before_db_s = {{ dist = "constant", value = 0.0 }}
        init_queries_s = {{ dist = "constant", value = 0.0 }}
        after_db_s = {{ dist = "constant", value = 0.0 }}
        db_init_timeout_s = 5.0
        [pool]
        min_size = 1
        max_size = 2
        held_when_ready = 1
        timeout_s = 0.35
        growth = "{growth}"
        [connector]
        setup_s = {{ dist = "constant", value = 0.1 }}
        [database]
        accept_s = {{ dist = "constant", value = 0.0 }}
        [traffic]
        trace_s = [1.0, 1.0, 1.0, 1.0, 1.0]
        query_s = {{ dist = "constant", value = 0.2 }}
        """,
    )
    expected_waits = [0.0, 0.1, 0.2, 0.3]
    rep = run_one(sc, 0, engine="reference")
    outcomes = Counter(rep.requests["outcome"])
    assert outcomes == {RequestOutcome.SERVED: 4, RequestOutcome.FAILED: 1}
    assert rep.traffic_connections == 1
    waits = sorted(w for w in rep.requests["wait_s"] if not math.isnan(w))
    assert np.allclose(waits, expected_waits), waits

    records: list[dict] = []

    async def run() -> None:
        dialled = []

        async def dial():
            await asyncio.sleep(0.1)
            dialled.append(1)
            return FakeConnection(f"new{len(dialled)}")

        clock = Clock()
        pool = ReadyPool(sc, 0, 0.0, [FakeConnection("held")], dial, clock, records.append, rng())
        for _ in range(5):
            pool.arrive()
        await asyncio.sleep(0.7)
        await pool.close()
        assert dialled == [1]

    asyncio.run(run())
    assert Counter(r["outcome"] for r in records) == outcomes
    failed = next(r for r in records if r["outcome"] == RequestOutcome.FAILED)
    assert failed["reason"] == Reason.POOL_TIMEOUT and failed["wait_s"] is None
    waits = sorted(r["wait_s"] for r in records if r["outcome"] == RequestOutcome.SERVED)
    assert np.allclose(waits, expected_waits, atol=0.03), waits  # asyncio's timers: ms late


def rng():
    return np.random.default_rng(0)


def load_text(folder: Path, text: str):
    path = folder / "s.toml"
    path.write_text('name = "driver"\n' + textwrap.dedent(text), encoding="utf-8")
    return load(path)


def test_the_documented_request_record_is_the_real_one():
    """docs/loadtests.md shows a request record: its keys are what the harness writes, in order,
    and it reads back as the model's columns."""

    from loadtests.traffic import request_record
    from sim.measured_requests import checked, request_columns

    doc = (Path(__file__).parent.parent / "docs" / "loadtests.md").read_text(encoding="utf-8")
    section = doc.split("## Traffic after ready", 1)[1]
    example = json.loads(re.search(r"```json\n(.*?)```", section, flags=re.S).group(1))
    real = request_record(0, 1.0, 0.5, RequestOutcome.SERVED, "", 1.25)
    assert list(example) == ["run_id", *real] and list(real) == list(REQUEST_COLUMNS)
    assert real["wait_s"] == 0.25
    cols = request_columns([checked(example, "doc", 1)])
    assert cols["wait_s"][0] == pytest.approx(example["checkout_s"] - example["arrive_s"])


@pytest.mark.parametrize(
    ("traffic", "extra", "says"),
    [
        ("rate_per_s = 5.0", {"workers": 2}, "traffic.rate_per_s: the fleet's stream"),
        ("trace_s = [1.0, 2.0]", {"remote_workers": 1}, "traffic.trace_s: the fleet's stream"),
        (
            "rate_per_instance_per_s = 1.0",
            {"instance_command": f"{sys.executable} -c pass"},  # on PATH or not
            "traffic.rate_per_instance_per_s: traffic after ready goes through the harness's",
        ),
    ],
    ids=["fleet-stream-workers", "trace-remote-workers", "command"],
)
def test_traffic_the_harness_cannot_run_is_refused_before_anything_starts(
    tmp_path, traffic, extra, says
):
    from loadtests.campaign import Options, check
    from sim.errors import UsageError

    sc = load_text(tmp_path, f"[traffic]\n{traffic}\n")
    with pytest.raises(UsageError, match=re.escape(says)):
        check(Options(sc, "postgresql://app@127.0.0.1:5432/app", **extra))
    # Each instance's own stream runs in distributed mode: each worker routes its own.
    ok = load_text(tmp_path, "[traffic]\nrate_per_instance_per_s = 1.0\n")
    check(Options(ok, "postgresql://app@127.0.0.1:5432/app", workers=2))
