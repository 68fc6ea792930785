"""OpenTelemetry OTLP/JSON trace files, written from start-ups described here.

The objects follow the OTLP/JSON encoding's field names (``resourceSpans`` → ``scopeSpans`` →
``spans`` with ``traceId``, ``spanId``, ``parentSpanId``, ``name``, ``startTimeUnixNano`` /
``endTimeUnixNano`` as decimal strings, ``attributes`` as ``KeyValue`` lists, ``status.code``;
the shape of ``examples/trace.json`` in open-telemetry/opentelemetry-proto) and the pool metrics
of the database-client semantic conventions; the values are our own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

BASE_NS = 1_795_950_000 * 1_000_000_000
SERVICE = "orders-api"


@dataclass
class Boot:
    """One start attempt of ``instance``: when (s after BASE), phases in order, exit code
    (None: no attribute, ready unless ``status_error``)."""

    instance: str
    start_s: float
    phases: list[tuple[str, float]] = field(default_factory=list)
    exit_code: int | None = None
    status_error: bool = False
    deadline_event: bool = False


def kv(key: str, value) -> dict:
    if isinstance(value, bool):
        return {"key": key, "value": {"boolValue": value}}
    if isinstance(value, int):
        return {"key": key, "value": {"intValue": str(value)}}
    return {"key": key, "value": {"stringValue": str(value)}}


def span(trace, sid, parent, name, start_ns, end_ns, attrs=(), **extra) -> dict:
    s = {
        "traceId": trace,
        "spanId": sid,
        "parentSpanId": parent,
        "name": name,
        "kind": 1,
        "startTimeUnixNano": str(start_ns),
        "endTimeUnixNano": str(end_ns),
        "attributes": [kv(k, v) for k, v in attrs],
    }
    s.update(extra)
    return s


def boot_object(b: Boot, n: int, startup: str = "startup") -> dict:
    """One ``{"resourceSpans": …}`` object: the start-up span, its phases, a noise span."""
    trace = f"{n:032x}"
    root = f"{n:08x}00000000"
    t0 = BASE_NS + round(b.start_s * 1e9)
    spans, at = [], t0
    for i, (name, seconds) in enumerate(b.phases, start=1):
        end = at + round(seconds * 1e9)
        spans.append(span(trace, f"{n:08x}{i:08x}", root, name, at, end))
        at = end
    spans.append(span(trace, f"{n:08x}ffffffff", root, "GET /config", t0, t0 + 1000))
    attrs = [("exit.code", b.exit_code)] if b.exit_code is not None else []
    extra = {}
    if b.status_error:
        extra["status"] = {"code": 2, "message": "start-up failed"}
    if b.deadline_event:
        extra["events"] = [{"timeUnixNano": str(at), "name": "deadline exceeded"}]
    spans.insert(0, span(trace, root, "", startup, t0, at, attrs, **extra))
    return {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        kv("service.name", SERVICE),
                        kv("service.instance.id", b.instance),
                        kv("host.name", f"host-{b.instance}"),
                    ]
                },
                "scopeSpans": [
                    {"scope": {"name": "orders.startup", "version": "1.0.0"}, "spans": spans}
                ],
            }
        ]
    }


def pool_metrics(create_s: list[float], waits_s: list[float], timeouts: int) -> dict:
    def hist(name, values):
        return {
            "name": f"db.client.connection.{name}",
            "unit": "s",
            "histogram": {
                "aggregationTemporality": 2,
                "dataPoints": [
                    {
                        "startTimeUnixNano": str(BASE_NS),
                        "timeUnixNano": str(BASE_NS + 60 * 10**9),
                        "count": str(len(values)),
                        "sum": sum(values),
                        "bucketCounts": [str(len(values))],
                        "explicitBounds": [],
                    }
                ],
            },
        }

    timeouts_metric = {
        "name": "db.client.connection.timeouts",
        "unit": "{timeout}",
        "sum": {
            "aggregationTemporality": 2,
            "isMonotonic": True,
            "dataPoints": [{"timeUnixNano": str(BASE_NS + 60 * 10**9), "asInt": str(timeouts)}],
        },
    }
    metrics = [hist("create_time", create_s), hist("wait_time", waits_s), timeouts_metric]
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": [kv("service.name", SERVICE)]},
                "scopeMetrics": [{"scope": {"name": "pool"}, "metrics": metrics}],
            }
        ]
    }


def write(path: Path, objects: list[dict], lines: bool = True) -> Path:
    """JSON lines (the Collector's file exporter), or all spans merged into one object."""
    path = Path(path)
    if lines:
        path.write_text("".join(json.dumps(o) + "\n" for o in objects))
    else:
        merged = {
            "resourceSpans": [r for o in objects for r in o.get("resourceSpans", [])],
            "resourceMetrics": [r for o in objects for r in o.get("resourceMetrics", [])],
        }
        path.write_text(json.dumps(merged, indent=2) + "\n")
    return path


def demo() -> list[dict]:
    """Two instances at a deploy: each times out in database init at 20 s (exit 3), restarts 8 s
    later and is ready on its third attempt; one more ready at once; the pool's metrics."""
    out, n = [], 0
    for slot, inst in enumerate(("orders-0", "orders-1")):
        t = 0.4 * slot
        for k in range(3):
            ok = k == 2
            db = 2.0 + 0.3 * slot if ok else 20.0
            phases = [("config", 0.8 + 0.1 * k), ("db", db)] + [("warm", 1.2)] * ok
            n += 1
            out.append(boot_object(Boot(inst, t, phases, 0 if ok else 3), n))
            t += 0.8 + 0.1 * k + db + 8.0
    out.append(boot_object(Boot("orders-2", 0.2, [("config", 0.7), ("db", 1.6), ("warm", 1.1)]), 9))
    out.append(pool_metrics([0.031, 0.044, 0.052, 0.120, 0.038], [0.0, 0.0, 4.5, 0.2, 0.0], 3))
    return out


if __name__ == "__main__":
    import sys

    write(Path(sys.argv[1]), demo())
