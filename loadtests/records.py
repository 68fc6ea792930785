"""Raw attempt records: one JSON line per start attempt, appended and flushed one by one, so a run
that is interrupted keeps every attempt it finished. Summaries are pure functions over them.

A record (times are Unix seconds and durations seconds, both rounded to the millisecond)::

    {"run_id": "20261129T061500Z-gang-allocation", "worker": 0, "instance": 7, "attempt": 1,
     "start_unix_s": 1764396900.123, "end_unix_s": 1764396900.456, "before_db_s": 0.0,
     "db_init_s": 0.333, "after_db_s": 0.0, "ready_unix_s": null, "outcome": "rejected",
     "reason": "53300", "error_class": "TooManyConnectionsError", "sqlstate": "53300",
     "error_message": "sorry, too many clients already", "connection_attempts": 3,
     "connections_opened": 2, "connections_held": 2, "pool_starts": 1, "phase": "",
     "phase_start_s": 0.0, "final": true}

Locust rounds response times of 10 s and more to whole seconds
(docs/sources.md#locust-response-time-rounding), so threshold probabilities come from these
records, never from Locust's statistics.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import numpy as np

from sim.records import Outcome, reported_total
from sim.scenario import Scenario
from sim.stats import summarize

RECORDS_FILE = "records.jsonl"
CONNECTIONS_FILE = "connections.jsonl"
# Traffic after ready: the connections the starting instances held when the campaign ended
TRAFFIC_FILE = "traffic.json"


def make_record(res, *, run_id: str, worker: int, instance: int, final: bool) -> dict[str, Any]:
    """A flat record from an :class:`~loadtests.container.AttemptResult`, ms precision."""
    rec: dict[str, Any] = {"run_id": run_id, "worker": worker, "instance": instance}
    for key, value in asdict(res).items():
        rec[key] = round(value, 3) if isinstance(value, float) else value
    rec["final"] = final
    return rec


class JsonlSink:
    """Appends one JSON object per line and flushes after each: finished lines survive a kill."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115 (lives with sink)

    def write(self, obj: dict[str, Any]) -> None:
        self._file.write(json.dumps(obj, separators=(",", ":")) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def error_causes(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """Attempts of outcome ``error`` grouped by cause, most frequent first: ``(count, cause)``."""
    causes = Counter(
        f"{r['reason']}: {r.get('sqlstate') or r.get('error_class', '')} "
        f"{r.get('error_message', '')}"
        for r in records
        if r["outcome"] == Outcome.ERROR
    )
    return [(n, cause.strip()) for cause, n in causes.most_common()]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every complete line; a last line cut short by a kill is skipped."""
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def peak_connections(samples: list[dict[str, Any]], bin_s: float = 0.1) -> int:
    """Fleet-wide peak from per-worker samples ``{t_unix_s, worker, open, peak}``.

    Each sample carries the worker's peak since its previous sample; summing per-worker peaks in
    the same time bin is exact with one worker and an upper bound with several.
    """
    bins: dict[int, dict[int, int]] = {}
    for s in samples:
        per_worker = bins.setdefault(int(s["t_unix_s"] / bin_s), {})
        per_worker[s["worker"]] = max(per_worker.get(s["worker"], 0), s["peak"])
    return max((sum(w.values()) for w in bins.values()), default=0)


def attempt_columns(records: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """The columns :func:`sim.stats.summarize` reads; a campaign is one replication."""
    return {
        "replication": np.zeros(len(records), dtype=int),
        "attempt": np.asarray([r["attempt"] for r in records], dtype=int),
        "outcome": np.asarray([r["outcome"] for r in records], dtype=str),
    }


def fleet_columns(
    records: list[dict[str, Any]], samples: list[dict[str, Any]], instances: int
) -> dict[str, np.ndarray]:
    firsts = [r["start_unix_s"] for r in records if r["attempt"] == 1]
    t0 = min(firsts, default=0.0)
    ready = {r["instance"]: r["ready_unix_s"] for r in records if r["ready_unix_s"] is not None}
    fleet_ready_s = max(ready.values()) - t0 if len(ready) >= instances else math.inf
    return {
        "replication": np.asarray([0]),
        "fleet_ready_s": np.asarray([fleet_ready_s]),
        "peak_db_connections": np.asarray([peak_connections(samples)]),
        # A start-up command reports its counters or not (None): NaN, not measured, unless
        # every attempt reported it (summarize then gives no work amplification).
        "connection_attempts": np.asarray(
            [reported_total(r.get("connection_attempts") for r in records)]
        ),
        "instances_ready": np.asarray([len(ready)]),
    }


def summarize_records(
    sc: Scenario,
    records: list[dict[str, Any]],
    samples: list[dict[str, Any]],
    seed: int | None = None,
    folder: Path | None = None,
) -> dict[str, Any]:
    """The summary in the ``startsim simulate --json`` shape, from one campaign's raw records;
    with traffic after ready, its ``traffic`` block from ``folder``'s request records."""
    instances = sc.fleet.instances
    summary = {
        "scenario": sc.name,
        **summarize(
            attempt_columns(records),
            fleet_columns(records, samples, instances),
            instances=instances,
            min_size=sc.pool.min_size,
            seed=seed,
        ).as_dict(),
    }
    if sc.traffic.on and folder is not None:
        summary["traffic"] = traffic_summary(sc, folder)
    return summary


def traffic_summary(sc: Scenario, folder: Path) -> dict[str, Any]:
    """``startsim simulate --json``'s ``traffic`` block (sim.afterready) over the campaign's
    request records, one deploy; the connections held at the end as the harness counted them
    (``traffic.json``), when it did."""
    from sim.afterready import traffic_figures  # scipy: only for a campaign with traffic
    from sim.measured_requests import read_requests, request_columns

    requests = read_requests(folder)
    if requests is None:
        requests = request_columns([])
    end = read_json(folder / TRAFFIC_FILE).get("connections_held_end")
    fleet = {
        "replication": np.asarray([0]),
        "connections_held_end": np.asarray([] if end is None else [end], dtype=float),
    }
    return traffic_figures(requests, fleet, sc.traffic.window_s, 0.95).as_dict()


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object written by the campaign, or {} if there is none (or it was cut short)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
