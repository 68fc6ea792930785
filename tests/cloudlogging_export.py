"""Cloud Logging exports of a Cloud Run service, written from start-ups described here.

The entries follow the LogEntry reference's field names (``timestamp`` RFC 3339 with nanoseconds,
``insertId``, ``logName``, ``resource{type, labels}``, ``labels.instanceId``, ``textPayload`` /
``jsonPayload``) and Cloud Run's platform messages as a team sees them (platform-facts.md,
"Telemetry formats a team already has"); the values (project, service, revisions, ids, times) are
our own. Nothing here is copied from a real export.

As a script it writes a demo export: ``python tests/cloudlogging_export.py export.json``.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

PROJECT = "startsim-demo"
SERVICE = "orders-api"
SYSTEM = f"projects/{PROJECT}/logs/run.googleapis.com%2Fvarlog%2Fsystem"
STDOUT = f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout"
REQUESTS = f"projects/{PROJECT}/logs/run.googleapis.com%2Frequests"
AUDIT = f"projects/{PROJECT}/logs/cloudaudit.googleapis.com%2Factivity"
EXIT_LAG_S = 1.5  # "Container called exit(3)." ≈ 1.5 s after the app's last line (R12)
PROBE_S = 3.5  # the default TCP probe passed ≈ 3.5 s after the start (R4)
PATTERN = r"phase (?P<phase>\w+) took (?P<seconds>[0-9.]+) s"
BASE_NS = 1_795_950_000 * 1_000_000_000  # 2026-11-29T…Z


@dataclass
class Boot:
    """One instance start: when (s after BASE), its phases in order, and how it ended:
    ``exit_code`` None is ready (unless ``cut``: its lines end after ``cut`` s)."""

    instance: str
    start_s: float
    phases: list[tuple[str, float]] = field(default_factory=list)
    exit_code: int | None = None
    revision: str = f"{SERVICE}-00007-kip"
    reason: str = "AUTOSCALING"
    cut: float | None = None


def stamp(ns: int) -> str:
    """RFC 3339 with nanoseconds, UTC, as Cloud Logging writes it."""
    import datetime as dt

    whole, frac = divmod(ns, 1_000_000_000)
    day = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{day}.{frac:09d}Z"


class Ids:
    def __init__(self) -> None:
        self.n = 0

    def __call__(self) -> str:
        self.n += 1
        return f"ins{self.n:08x}"


def entry(t_ns: int, text, boot: Boot | None, log: str, ids: Ids, **extra) -> dict:
    e = {
        "insertId": ids(),
        "logName": log,
        "receiveTimestamp": stamp(t_ns + 40_000_000),
        "resource": {
            "type": "cloud_run_revision",
            "labels": {
                "configuration_name": SERVICE,
                "location": "europe-west1",
                "project_id": PROJECT,
                "revision_name": boot.revision if boot else f"{SERVICE}-00007-kip",
                "service_name": SERVICE,
            },
        },
        "severity": "INFO",
        "timestamp": stamp(t_ns),
    }
    if boot is not None:
        e["labels"] = {"instanceId": boot.instance}
    if isinstance(text, dict):
        e["jsonPayload"] = text
    elif text is not None:
        e["textPayload"] = text
    e.update(extra)
    return e


def boot_entries(b: Boot, ids: Ids) -> list[dict]:
    """A start's lines, oldest first."""
    t0 = BASE_NS + round(b.start_s * 1e9)
    out = [
        (
            t0,
            f"Starting new instance. Reason: {b.reason} - our own words on why it started.",
            SYSTEM,
        )
    ]
    at = t0
    for name, seconds in b.phases:
        at += round(seconds * 1e9)
        out.append((at, {"message": f"phase {name} took {seconds:.9f} s", "level": "info"}, STDOUT))
    probe = t0 + round(PROBE_S * 1e9)
    if b.exit_code is None or probe <= at:
        out.append(
            (
                probe,
                "Default STARTUP TCP probe succeeded after 1 attempt for container "
                '"orders-api-1" on port 8080.',
                SYSTEM,
            )
        )
    if b.exit_code is not None:
        out.append((at, {"message": "start-up failed: database init gave up"}, STDOUT))
        out.append((at + round(EXIT_LAG_S * 1e9), f"Container called exit({b.exit_code}).", SYSTEM))
    if b.cut is not None:
        end = t0 + round(b.cut * 1e9)
        out = [o for o in out if o[0] <= end]
    return [entry(t, text, b, log, ids, severity=_severity(text)) for t, text, log in out]


def _severity(text) -> str:
    return "ERROR" if isinstance(text, str) and "exit(" in text else "INFO"


def noise(t_s: float, ids: Ids) -> list[dict]:
    """Entries an export is full of that are about no one instance: a request log, an audit
    entry, a revision-level status line."""
    t = BASE_NS + round(t_s * 1e9)
    request = entry(t, None, None, REQUESTS, ids)
    request["httpRequest"] = {"requestMethod": "GET", "status": 503, "latency": "0.002s"}
    audit = entry(t, None, None, AUDIT, ids)
    audit["protoPayload"] = {
        "@type": "type.googleapis.com/google.cloud.audit.AuditLog",
        "methodName": "google.cloud.run.v1.Services.ReplaceService",
    }
    status = entry(
        t,
        "Ready condition status changed to True for Revision orders-api-00007-kip.",
        None,
        SYSTEM,
        ids,
    )
    return [request, audit, status]


def export(boots: list[Boot], noise_at: list[float] = (), newest_first: bool = True) -> list[dict]:
    ids = Ids()
    entries = [e for b in boots for e in boot_entries(b, ids)]
    entries += [e for t in noise_at for e in noise(t, ids)]
    entries.sort(key=lambda e: e["timestamp"], reverse=newest_first)
    return entries


def write(path: Path, entries: list[dict], lines: bool = False) -> Path:
    """A JSON array (``gcloud logging read --format=json``) or JSON lines."""
    path = Path(path)
    if lines:
        path.write_text("".join(json.dumps(e) + "\n" for e in entries))
    else:
        path.write_text(json.dumps(entries, indent=2) + "\n")
    return path


def crash_loop(revision: str = f"{SERVICE}-00007-kip", at_s: float = 0.0) -> list[Boot]:
    """A deploy as in R2–R3: two new instances at once, each failing database init after 20 s
    (exit 3), each replaced about 8 s later by a new instance, the third start of each ready."""
    boots = []
    for slot in range(2):
        t = at_s + 0.4 * slot
        for k in range(3):
            ok = k == 2
            db = 2.0 + 0.3 * slot if ok else 20.0
            phases = [("config", 0.8 + 0.1 * k), ("db", db)] + ([("warm", 1.2)] * ok)
            name = f"00{revision[-3:]}{slot}{k}f3a9c"
            reason = "DEPLOYMENT_ROLLOUT" if k == 0 else "AUTOSCALING"
            boots.append(Boot(name, t, phases, None if ok else 3, revision, reason))
            t += 0.8 + 0.1 * k + db + (EXIT_LAG_S + 6.5 if not ok else 0)
    return boots


if __name__ == "__main__":
    boots = crash_loop() + crash_loop(f"{SERVICE}-00008-zor", at_s=900.0)
    boots.append(Boot("00zz0late01", 1700.0, [("config", 0.9)], cut=2.0))  # cut by the window
    write(Path(sys.argv[1]), export(boots, noise_at=[5.0, 905.0]))
