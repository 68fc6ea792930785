"""Startup probes and the requests they let in (sim/probes.py, docs/model.md "Startup probes and
the requests they let in"): expected failed requests and waits computed by hand, on both engines'
records, and through ``startsim simulate --json``."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from builders import const, scenario
from cli_helpers import call_main

from sim import probes
from sim.engines import run_one
from sim.errors import ScenarioError
from sim.records import Outcome
from sim.scenario import loads

RATE = 2.0

# One instance whose first attempt times out and whose second becomes ready. Database init opens
# two connections at once through a connector of one instance with one set-up place (4 s each)
# and a 6 s deadline: at t = 3 (3 s before the database) the first takes the place (3–7), the
# second waits, and a scale-out starts that joins at 3 + 10 = 13; the second's set-up would end
# at 11, past the deadline at 9: timeout at 9. The restart 2 s later (t = 11) reaches the
# database at 14 with two connector instances: both set-ups 14–18, ready at 18 + 1 = 19.
ONE = {
    "horizon_s": 30.0,
    "startup.before_db_s": const(3.0),
    "startup.db_init_timeout_s": 6.0,
    "startup.after_db_s": const(1.0),
    "pool.min_size": 2,
    "pool.held_when_ready": 2,
    "pool.start": "concurrent",
    "connector.max_instances": 2,
    "connector.setups_per_instance": 1,
    "connector.setup_s": const(4.0),
    "connector.scale_up_delay_s": const(10.0),
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 2.0,
}

# Two instances, one free slot: both reach the database at 3, the server accepts after 1 s,
# instance 0 takes the slot (ready at 4 + 1 = 5), instance 1 is refused (53300, no retry) at 4
# and again, 2 s after each exit, at 10 and 16 (starts 6 and 12), then has no restart left.
TWO = {
    "horizon_s": 20.0,
    "fleet.instances": 2,
    "startup.before_db_s": const(3.0),
    "startup.db_init_timeout_s": 10.0,
    "startup.after_db_s": const(1.0),
    "database.max_connections": 1,
    "database.accept_s": const(1.0),
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 2.0,
    "restart.max_restarts": 2,
}


def requests(overrides: dict, engine: str, **probe) -> probes.Requests:
    sc = scenario({**overrides, **{f"probe.{k}": v for k, v in probe.items()}})
    a = run_one(sc, 0, 0, engine).attempts
    cols = {k: np.asarray(v) for k, v in a.items()}
    cols["replication"] = np.zeros(len(a["instance"]), dtype=int)
    warm = sc.fleet.warm_instances
    (one,) = probes.per_deploy(cols, np.asarray([0]), sc.probe, sc.horizon_s, warm=warm)
    return one


def test_the_records_carry_each_ready_time(engine):
    sc = scenario(TWO)
    a = run_one(sc, 0, 0, engine).attempts
    ready = [r for r, o in zip(a["ready_s"], a["outcome"], strict=True) if o == Outcome.READY]
    assert ready == [5.0]  # end of init (4) + after-db (1)
    failed = [r for r, o in zip(a["ready_s"], a["outcome"], strict=True) if o != Outcome.READY]
    assert len(failed) == 3 and all(math.isnan(r) for r in failed)


def test_tcp_lets_requests_into_an_attempt_that_dies(engine):
    # TCP, port bound 1 s after each start: attempt 1 is routable over [1, 9) and dies at 9,
    # attempt 2 over [12, ∞), ready at 19. Requests at 2/s over [0, 30] (60 expected):
    #   [0, 1)   none routable: wait for the port at 1, go to attempt 1, fail      2 × 1 = 2
    #   [1, 9)   routed to attempt 1, which exits at 9: 503                         2 × 8 = 16
    #   [9, 12)  wait at the platform, then at attempt 2 until 19: served, 19 − t   2 × 3 = 6
    #   [12, 19) at attempt 2 until 19: served, wait 19 − t                         2 × 7 = 14
    #   [19, 30] served at once                                                     2 × 11 = 22
    # failed 18; the waits add up to 2 × (∫_9^12 (19 − t) dt + ∫_12^19 (19 − t) dt)
    # = 2 × (25.5 + 24.5) = 100 over 42 served.
    q = requests(ONE, engine, kind="tcp", port_bound_s=1.0, request_rate_per_s=RATE)
    assert q.arrived == pytest.approx(60.0)
    assert q.failed == pytest.approx(18.0)
    assert q.served == pytest.approx(42.0)
    assert q.wait_s == pytest.approx(100.0)


def test_http_holds_requests_at_the_platform_until_ready(engine):
    # HTTP: routable only from 19 on. Every request waits at the platform until 19 (within the
    # 300 s timeout): none fails, the waits add up to 2 × ∫_0^19 (19 − t) dt = 2 × 180.5 = 361.
    q = requests(ONE, engine, kind="http", request_rate_per_s=RATE)
    assert (q.failed, q.served) == (pytest.approx(0.0), pytest.approx(60.0))
    assert q.wait_s == pytest.approx(361.0)
    # With a 5 s request timeout, only those arriving from 14 on see 19 in time: the 2 × 14 = 28
    # before fail; the others wait 2 × ∫_14^19 (19 − t) dt = 25 in all.
    q = requests(ONE, engine, kind="http", request_rate_per_s=RATE, request_timeout_s=5.0)
    assert (q.failed, q.served, q.wait_s) == pytest.approx((28.0, 32.0, 25.0))


def test_one_ready_and_one_dying_instance_share_the_requests_half_and_half(engine):
    # TCP, port bound 1 s in: instance 0 routable [1, ∞), ready at 5; instance 1 [1, 4), [7, 10),
    # [13, 16), dying each time. Requests at 2/s over [0, 20] (40 expected):
    #   [0, 1)   wait for both ports at 1; half to instance 0 (served at 5, wait 5 − t), half
    #            fail: failed 2 × 1 × ½ = 1, waits 2 × ½ × ∫_0^1 (5 − t) dt = 4.5
    #   [1, 4)   half to instance 0 (wait 5 − t), half fail: failed 3, waits ∫_1^4 (5 − t) = 7.5
    #   [4, 5)   instance 0 alone: waits 2 × ∫_4^5 (5 − t) dt = 1
    #   [7, 10), [13, 16)   half to the dying instance: failed 3 + 3
    # failed 1 + 3 + 3 + 3 = 10, served 30, waits 4.5 + 7.5 + 1 = 13.
    q = requests(TWO, engine, kind="tcp", port_bound_s=1.0, request_rate_per_s=RATE)
    assert (q.arrived, q.failed, q.served, q.wait_s) == pytest.approx((40.0, 10.0, 30.0, 13.0))
    # HTTP: instance 0 alone from 5 on; before that every request waits for it: no failure,
    # waits 2 × ∫_0^5 (5 − t) dt = 25.
    q = requests(TWO, engine, kind="http", request_rate_per_s=RATE)
    assert (q.failed, q.served, q.wait_s) == pytest.approx((0.0, 40.0, 25.0))


def test_a_warm_instance_takes_requests_from_the_start_beside_the_starting_ones(engine):
    # ONE beside one warm instance W (fleet.warm_instances = 1: routable and ready from t = 0 to
    # the end; its 2 held slots of 97 change nothing at the database, so the attempts are ONE's).
    # TCP, port bound 1 s in: attempt 1 routable [1, 9), dies at 9; attempt 2 [12, ∞), ready at
    # 19. Requests at 2/s over [0, 30] (60 expected):
    #   [0, 1)   W alone: served at once
    #   [1, 9)   half to W (served at once), half to attempt 1, which dies: failed 2 × 8 × ½ = 8
    #   [9, 12)  W alone: served at once
    #   [12, 19) half to W, half to attempt 2 until 19: waits 2 × ½ × ∫_12^19 (19 − t) dt = 24.5
    #   [19, 30] served at once
    # failed 8 (18 without W), served 52, waits 24.5.
    warm = {**ONE, "fleet.warm_instances": 1}
    q = requests(warm, engine, kind="tcp", port_bound_s=1.0, request_rate_per_s=RATE)
    assert (q.arrived, q.failed, q.served, q.wait_s) == pytest.approx((60.0, 8.0, 52.0, 24.5))
    # HTTP: W takes every request at once until attempt 2 is ready at 19, then they share: none
    # fails, none waits (361 s of waits without W).
    q = requests(warm, engine, kind="http", request_rate_per_s=RATE)
    assert (q.failed, q.served, q.wait_s) == pytest.approx((0.0, 60.0, 0.0))


def test_no_attempt_ever_routable_fails_every_request():
    # No attempt at all (one replication without records): every request waits in vain.
    empty = np.zeros(0)
    q = probes.expected_requests(empty, empty, empty, probes.Probe(request_rate_per_s=3.0), 10.0)
    assert (q.arrived, q.failed, q.served, q.wait_s) == (30.0, 30.0, 0.0, 0.0)
    # Two warm instances and no attempt: every request is served at once.
    q = probes.expected_requests(
        empty, empty, empty, probes.Probe(request_rate_per_s=3.0), 10.0, warm=2
    )
    assert (q.arrived, q.failed, q.served, q.wait_s) == (30.0, 0.0, 30.0, 0.0)


def test_summary_over_deploys_by_hand():
    per = [probes.Requests(10.0, f, 10.0 - f, 2.0) for f in (1.0, 3.0)]
    s = probes.summary(per)
    failed = s["requests_failed_per_deploy"]
    # mean 2, sd √2, half-width 1.96 × √2 / √2 = 1.96; waits 4 over 16 served.
    assert failed["mean"] == 2.0
    assert (failed["ci_low"], failed["ci_high"]) == pytest.approx((0.04, 3.96), abs=1e-3)
    assert s["request_wait_mean_s"] == pytest.approx(4.0 / 16.0)


def test_simulate_json_reports_the_requests(tmp_path, capsys):
    text = """
name = "probe-hand"
horizon_s = 20.0
[fleet]
instances = 2
[startup]
before_db_s = { dist = "constant", value = 3.0 }
db_init_timeout_s = 10.0
init_queries_s = { dist = "constant", value = 0.0 }
after_db_s = { dist = "constant", value = 1.0 }
[pool]
min_size = 1
max_size = 1
held_when_ready = 1
retry_backoff_s = 0.0
[connector]
setup_s = { dist = "constant", value = 0.0 }
[database]
max_connections = 1
reserved_connections = 0
accept_s = { dist = "constant", value = 1.0 }
[restart]
policy = "fixed"
initial_backoff_s = 2.0
max_restarts = 2
[probe]
kind = "tcp"
port_bound_s = 1.0
request_rate_per_s = 2.0
"""
    path = tmp_path / "probe.toml"
    path.write_text(text)
    assert call_main("simulate", str(path), "-n", "3", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    # Every replication is the deterministic TWO case above: 10 failed requests each.
    assert data["requests_per_deploy"] == pytest.approx(40.0)
    assert data["requests_failed_per_deploy"]["mean"] == pytest.approx(10.0)
    assert data["request_wait_mean_s"] == pytest.approx(13.0 / 30.0)
    without = tmp_path / "none.toml"
    without.write_text(text.replace("request_rate_per_s = 2.0", ""))
    assert call_main("simulate", str(without), "-n", "2", "--json") == 0
    assert "requests_failed_per_deploy" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("line", "field"),
    [
        ('kind = "grpc"', "probe.kind"),
        ("port_bound_s = -1.0", "probe.port_bound_s"),
        ("request_rate_per_s = -2.0", "probe.request_rate_per_s"),
        ("request_timeout_s = 0.0", "probe.request_timeout_s"),
    ],
)
def test_a_bad_probe_names_its_field(line, field):
    with pytest.raises(ScenarioError) as err:
        loads(f"[probe]\n{line}\n", "bad.toml")
    assert field in str(err.value)
