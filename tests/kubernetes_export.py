"""Kubernetes events and pod status, written from container starts described here.

The objects follow the core/v1 field names (Event: ``reason``, ``message``, ``involvedObject{kind,
name, namespace, uid, fieldPath}``, ``count``, ``firstTimestamp``, ``lastTimestamp``,
``metadata.uid``; Pod status: ``containerStatuses[].restartCount``, ``state``,
``lastState.terminated{exitCode, reason, startedAt, finishedAt}``, ``state.waiting{reason:
CrashLoopBackOff, message: "back-off 5m0s restarting failed container=…"}``, the ``Ready``
condition) as platform-facts.md lists them; the values (names, uids, times) are our own.

As a script it writes a demo: ``python tests/kubernetes_export.py events.json pods.json``.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

NS = "shop"
DEPLOYMENT = "orders-api"
BASE_NS = 1_795_950_000 * 1_000_000_000  # 2026-11-29T…Z
CONTAINER = "app"


@dataclass
class Run:
    """One container run: started ``start_s`` after BASE; ready at ``ready_s``, or exited with
    ``code`` at ``end_s``; neither: still starting when the export was taken."""

    start_s: float
    end_s: float | None = None
    code: int | None = None
    ready_s: float | None = None


@dataclass
class PodRuns:
    name: str
    runs: list[Run] = field(default_factory=list)
    replicaset: str = f"{DEPLOYMENT}-7d4b9c5f6"
    waiting_s: float | None = None  # after a last failed run: the back-off in force


def stamp(ns: int) -> str:
    """RFC 3339: whole seconds as Kubernetes writes them, else with microseconds."""
    whole, frac = divmod(ns, 1_000_000_000)
    day = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{day}Z" if frac == 0 else f"{day}.{round(frac / 1000):06d}Z"


def at(seconds: float) -> str:
    return stamp(BASE_NS + round(seconds * 1e9))


def go(seconds: float) -> str:
    """A Go duration as the kubelet prints it: 10s, 2m40s, 5m0s."""
    m, s = divmod(round(seconds), 60)
    return f"{m}m{s}s" if m else f"{s}s"


def _involved(pod: PodRuns, kind: str = "Pod", container: bool = True) -> dict:
    obj = {"apiVersion": "v1", "kind": kind, "name": pod.name, "namespace": NS}
    obj["uid"] = f"uid-{pod.name}"
    if container:
        obj["fieldPath"] = f"spec.containers{{{CONTAINER}}}"
    return obj


def event(uid, involved, reason, message, times_s, count=None, type_="Normal") -> dict:
    """A core/v1 Event for occurrences at ``times_s``; ``count`` (default all of them)."""
    n = count or len(times_s)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{involved['name']}.{uid}", "namespace": NS, "uid": uid},
        "involvedObject": involved,
        "reason": reason,
        "message": message,
        "source": {"component": "kubelet", "host": "gke-pool-1-node-a"},
        "firstTimestamp": at(times_s[0]),
        "lastTimestamp": at(times_s[n - 1]),
        "count": n,
        "type": type_,
        "eventTime": None,
        "reportingComponent": "kubelet",
    }


def events(pods: list[PodRuns], copies: bool = False, noise: bool = True) -> list[dict]:
    """Each pod's Scheduled, Started (one Event per container, ``count`` its starts) and BackOff
    Events. ``copies``: one copy per occurrence, at its count, as Cloud Logging and watches
    record each update; else one per Event, as ``kubectl get events`` shows it."""
    out = []
    for p in pods:
        pod = _involved(p, container=False)
        out.append(
            event(
                f"s-{p.name}",
                pod,
                "Scheduled",
                f"Successfully assigned {NS}/{p.name}",
                [p.runs[0].start_s - 1.0],
            )
        )
        c = _involved(p)
        started = [r.start_s for r in p.runs]
        failed = [r.end_s for r in p.runs if r.code not in (None, 0)]
        for uid, reason, msg, times in (
            (f"st-{p.name}", "Started", f"Started container {CONTAINER}", started),
            (
                f"bo-{p.name}",
                "BackOff",
                f"Back-off restarting failed container {CONTAINER} in pod {p.name}",
                failed,
            ),
        ):
            if not times:
                continue
            counts = range(1, len(times) + 1) if copies else [len(times)]
            out += [event(uid, c, reason, msg, times, count=k) for k in counts]
    if noise:
        node = {"kind": "Node", "name": "gke-pool-1-node-a", "uid": "uid-node-a"}
        out.append(event("n-1", node, "NodeReady", "Node status is now: NodeReady", [0.0]))
        rs = {"kind": "ReplicaSet", "name": pods[0].replicaset, "namespace": NS, "uid": "u-rs"}
        out.append(event("rs-1", rs, "SuccessfulCreate", "Created pod", [0.0]))
        dep = {"kind": "Deployment", "name": DEPLOYMENT, "namespace": NS, "uid": "u-dep"}
        out.append(event("d-1", dep, "ScalingReplicaSet", "Scaled up replica set", [0.0]))
    return out


def pod_object(p: PodRuns, upto: int | None = None) -> dict:
    """The pod as ``kubectl get pods -o json`` shows it after its run ``upto`` (default: the
    last) started or ended."""
    runs = p.runs if upto is None else p.runs[: upto + 1]
    last, prev = runs[-1], (runs[-2] if len(runs) > 1 else None)
    status = {"restartCount": len(runs) - 1, "name": CONTAINER, "image": "orders-api:1.4"}
    status["ready"] = last.ready_s is not None
    status["started"] = last.end_s is None
    conditions = []
    if last.ready_s is not None:
        status["state"] = {"running": {"startedAt": at(last.start_s)}}
        conditions.append(
            {"type": "Ready", "status": "True", "lastTransitionTime": at(last.ready_s)}
        )
    elif last.end_s is None:
        status["state"] = {"running": {"startedAt": at(last.start_s)}}
    elif upto is None and p.waiting_s is not None:
        status["state"] = {
            "waiting": {
                "reason": "CrashLoopBackOff",
                "message": f"back-off {go(p.waiting_s)} restarting failed container={CONTAINER} "
                f"pod={p.name}_{NS}(uid-{p.name})",
            }
        }
        prev = last
    else:
        status["state"] = {"terminated": _terminated(last)}
    if prev is not None and prev.end_s is not None:
        status["lastState"] = {"terminated": _terminated(prev)}
    else:
        status["lastState"] = {}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": p.name,
            "namespace": NS,
            "uid": f"uid-{p.name}",
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": p.replicaset,
                    "uid": "u-rs",
                    "controller": True,
                }
            ],
        },
        "spec": {"containers": [{"name": CONTAINER, "image": "orders-api:1.4"}]},
        "status": {"phase": "Running", "conditions": conditions, "containerStatuses": [status]},
    }


def _terminated(r: Run) -> dict:
    return {
        "exitCode": r.code,
        "reason": "Completed" if r.code == 0 else "Error",
        "startedAt": at(r.start_s),
        "finishedAt": at(r.end_s),
    }


def watch(pods: list[PodRuns]) -> list[dict]:
    """Pod snapshots after each run, as ``kubectl get pods -o json --watch`` prints them."""
    return [
        pod_object(p, k if k < len(p.runs) - 1 else None) for p in pods for k in range(len(p.runs))
    ]


def as_list(items: list[dict]) -> dict:
    return {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}


def logged(objects: list[dict]) -> list[dict]:
    """Events through Cloud Logging (GKE's event export): ``k8s_pod`` entries, newest first."""
    out = []
    for i, ev in enumerate(objects):
        kind = ev["involvedObject"]["kind"]
        resource = {
            "type": "k8s_pod" if kind == "Pod" else "k8s_cluster",
            "labels": {
                "project_id": "startsim-demo",
                "location": "europe-west1",
                "cluster_name": "shop-1",
                "namespace_name": NS,
                "pod_name": ev["involvedObject"]["name"],
            },
        }
        out.append(
            {
                "insertId": f"k8s{i:06x}",
                "logName": "projects/startsim-demo/logs/events",
                "resource": resource,
                "severity": "INFO",
                "timestamp": ev["lastTimestamp"],
                "jsonPayload": ev,
            }
        )
    return sorted(out, key=lambda e: e["timestamp"], reverse=True)


def write(path: Path, obj, stream: bool = False) -> Path:
    """One JSON value (a List, an array) or, ``stream``, the values one after another."""
    path = Path(path)
    if stream:
        path.write_text("".join(json.dumps(o, indent=2) + "\n" for o in obj))
    else:
        path.write_text(json.dumps(obj, indent=2) + "\n")
    return path


def crash_loop(pods: int = 2, failures: int = 7, db_s: float = 20.0) -> list[PodRuns]:
    """A deploy whose pods fail database init with exit 3 after ``db_s`` under CrashLoopBackOff
    (10 s doubling to 300 s), the run after the last failure ready in 2 s."""
    out = []
    for i in range(pods):
        p, t = PodRuns(f"{DEPLOYMENT}-7d4b9c5f6-{i:05x}"), float(i)
        for k in range(failures):
            p.runs.append(Run(t, t + db_s, 3))
            t += db_s + min(10.0 * 2**k, 300.0)
        p.runs.append(Run(t, ready_s=t + 2.0))
        out.append(p)
    return out


if __name__ == "__main__":
    demo = crash_loop()
    waiting = PodRuns(f"{DEPLOYMENT}-7d4b9c5f6-000ff", [Run(5.0, 25.0, 3)], waiting_s=10.0)
    demo.append(waiting)
    write(Path(sys.argv[1]), as_list(events(demo)))
    write(Path(sys.argv[2]), watch(demo), stream=True)
