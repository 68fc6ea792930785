"""The fleet size from the logs (docs/formats.md, "The fleet a deploy started"): each instance's
first start grouped into deploys — by revision / ReplicaSet where the format has one, else by the
gap rule — gives ``fleet.instances`` (the median per deploy) and its arrival (burst within
BURST_S, else uniform over the spread), labelled measured with n. On the export builders' files."""

from __future__ import annotations

import cloudlogging_export as cl
import kubernetes_export as k8s
import otlp_export as ot
import pytest

from sim.calibrate import calibrate, fleet
from sim.calibrate.cloudlogging import read_cloud_logging
from sim.calibrate.crashloop import read_kubernetes
from sim.calibrate.otlp import read_otlp

PHASES = "before=config;database=db;after=warm"


def fleet_of(cal):
    est = {e.field: e for e in cal.estimates if e.field.startswith("fleet.")}
    return est, cal.scenario.fleet, cal.scenario.sources


def test_cloud_run_deploys_are_revisions_and_a_late_start_is_a_scale_out(tmp_path):
    # cloudlogging_export's demo: each revision starts two instances 0.4 s apart (slots 0 and 1
    # of crash_loop), each replaced twice (the same instance); revision 7 starts one more 1700 s
    # later (> SCALE_OUT_GAP_S after the one before: a scale-out, not the deploy's fleet).
    boots = cl.crash_loop() + cl.crash_loop(f"{cl.SERVICE}-00008-zor", at_s=900.0)
    boots.append(cl.Boot("00zz0late01", 1700.0, [("config", 0.9)], cut=2.0))
    path = cl.write(tmp_path / "export.json", cl.export(boots))
    cal = calibrate(read_cloud_logging(path, "database=db", cl.PATTERN), replications=1)
    est, sc, sources = fleet_of(cal)
    assert est["fleet.instances"].value == 2 and est["fleet.instances"].n == 2  # median of 2, 2
    assert est["fleet.arrival"].value == sc.arrival == "burst"
    assert sc.instances == 2 and sc.window_s == 0.0
    assert sources["fleet.instances"].kind == "measured" and sources["fleet.instances"].n == 2
    deploys = cal.as_dict()["deploys"]
    assert [(d["deploy"], d["instances"], d["started_later"]) for d in deploys] == [
        ("orders-api-00007-kip", 2, 1),
        ("orders-api-00008-zor", 2, 0),
    ]
    assert deploys[0]["spread_s"] == pytest.approx(0.4)


def test_a_replicaset_is_a_deploy(tmp_path):
    # kubernetes_export's demo: pods started at 0 s and 1 s (crash_loop) and 5 s (the waiting
    # one): 3 instances of one ReplicaSet within 5 s ≤ BURST_S: a burst of 3.
    demo = k8s.crash_loop()
    demo.append(
        k8s.PodRuns(f"{k8s.DEPLOYMENT}-7d4b9c5f6-000ff", [k8s.Run(5.0, 25.0, 3)], waiting_s=10.0)
    )
    ev = k8s.write(tmp_path / "events.json", k8s.as_list(k8s.events(demo)))
    pods = k8s.write(tmp_path / "pods.json", k8s.watch(demo), stream=True)
    cal = calibrate(read_kubernetes([ev, pods]), replications=1)
    est, sc, _ = fleet_of(cal)
    assert (est["fleet.instances"].value, est["fleet.instances"].n) == (3, 1)
    assert (sc.instances, sc.arrival) == (3, "burst")
    assert cal.deploys[0].spread_s == 5.0


def _otlp_deploys(tmp_path, second_at_s: float, spread_s: float = 0.0):
    """Two deploys of three instances each (orders-0 … orders-5), the second ``second_at_s``
    after the first; within a deploy instance k starts k × ``spread_s`` after the first."""
    objs, n = [], 0
    for d, at in enumerate((0.0, second_at_s)):
        for k in range(3):
            n += 1
            boot = ot.Boot(f"orders-{3 * d + k}", at + k * spread_s, [("config", 0.5), ("db", 1.0)])
            objs.append(ot.boot_object(boot, n))
    return read_otlp(ot.write(tmp_path / "t.jsonl", objs), "before=config;database=db")


def test_traces_are_grouped_into_deploys_by_the_gap_rule(tmp_path):
    # OTLP names no revision: first starts 0, 0, 0 and 900, 900, 900 s are two deploys (900 s >
    # SCALE_OUT_GAP_S), each of 3 started together.
    cal = calibrate(_otlp_deploys(tmp_path, 900.0), replications=1)
    est, sc, _ = fleet_of(cal)
    assert (est["fleet.instances"].value, est["fleet.instances"].n) == (3, 2)
    assert [d.name for d in cal.deploys] == ["orders-api #1", "orders-api #2"]
    assert sc.arrival == "burst" and "more than 60 s apart" in est["fleet.instances"].quality


def test_instances_started_over_half_a_minute_arrive_uniformly(tmp_path):
    # instances 20 s apart (< SCALE_OUT_GAP_S: one deploy each time), 3 per deploy: each deploy's
    # first starts span 40 s > BURST_S, so uniform over the median spread, 40 s.
    cal = calibrate(_otlp_deploys(tmp_path, 900.0, spread_s=20.0), replications=1)
    est, sc, sources = fleet_of(cal)
    assert (sc.instances, sc.arrival, sc.window_s) == (3, "uniform", 40.0)
    assert est["fleet.window_s"].value == 40.0 and est["fleet.window_s"].n == 2
    assert sources["fleet.window_s"].kind == "measured"
    assert fleet.BURST_S < 40.0 < fleet.SCALE_OUT_GAP_S
