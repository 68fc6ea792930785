"""The incident's public Cloud Logging exports, reduced to the lines startsim reads, and measured.

The service's repository (github.com/netra-systems/zen) holds five raw exports of its staging
backend's logs, ``reports/gcp_backend_logs_*.json`` at commit :data:`COMMIT`. They are not
LogEntry arrays: each wraps at most 50 entries per severity (``raw_logs`` or
``logs_by_severity``), some with snake_case fields (``json_payload``, ``insert_id``). This script
turns them into one JSON-lines file of minimal LogEntry objects that
``startsim calibrate --format cloud-logging`` reads (docs/incident/README.md), keeping only:

- Cloud Run's own lines (``Starting new instance. Reason: …``, ``Default STARTUP TCP probe
  succeeded …``, ``Container called exit(3).``) and the deploys' audit entries (method, gcloud
  command);
- the service's start-up markers and error kinds, each reduced to the words that carry the fact
  (the phase's number, "server closed the connection unexpectedly", "initialization timeout after
  25.0s", "ModuleNotFoundError"): no stack trace, no URL, no secret.

The project id becomes ``<project>``, instance ids keep their last 16 hex digits, and a
timestamp, a severity, a revision and the insertId (for de-duplication) are all else an entry has.

    python tools/derive_incident.py derive /path/to/netra-systems/zen \
        -o docs/incident/derived-logs.jsonl
    python tools/derive_incident.py measure docs/incident/derived-logs.jsonl

``derive`` takes a git directory (a mirror or a clone: read with ``git show COMMIT:PATH``).
``measure`` prints the figures docs/incident/README.md quotes, from the derived file alone.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import subprocess
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

REPOSITORY = "github.com/netra-systems/zen"
COMMIT = "fd63852434bd28b334a9358163cbe191e723b0f7"  # 2025-09-17, the exports moved to reports/
EXPORTS = tuple(
    f"reports/gcp_backend_logs_{name}.json"
    for name in (
        "1hour_20250915_130325",
        "last_1hour_20250915_143654",
        "last_1hour_20250915_143747",
        "last_1hour_20250915_154858",
        "last_1hour_20250915_183212",
    )
)
# Each export's hour (its time_range; the first gives only its fetch time, 13:03:25 PDT): the
# second and third cover the same hour, a minute apart.
WINDOWS = (
    ("2025-09-15T19:03:25Z", "2025-09-15T20:03:25Z"),
    ("2025-09-15T20:37:44Z", "2025-09-15T21:37:44Z"),
    ("2025-09-15T21:48:55Z", "2025-09-15T22:48:55Z"),
    ("2025-09-16T00:32:09Z", "2025-09-16T01:32:09Z"),
)
PROJECT = "<project>"
ID_CHARS = 16

# (regex on the raw message, the derived message: a template of the match's groups). First match
# wins; a message that matches none is dropped (and counted).
KEEP: tuple[tuple[re.Pattern, str], ...] = tuple(
    (re.compile(p, re.DOTALL), out)
    for p, out in (
        (r"^Starting new instance\. Reason: ([A-Z_]+)", "Starting new instance. Reason: {0}"),
        (r"^Default STARTUP (TCP|HTTP|GRPC) probe succeeded after (\d+) attempt", "{m}"),
        (r"^Container called exit\((-?\d+)\)\.", "Container called exit({0})."),
        (
            r"^Failed to run migrations: \((psycopg2\.\w+)\).*?(server closed the connection "
            r"unexpectedly|too many clients|remaining connection slots|Connection refused|"
            r"timeout expired)",
            "phase 1 migrations failed: {0}: {1}",
        ),
        (r"^Continuing without migrations", "phase 1 continuing without migrations"),
        (
            r"^ FAIL:  PHASE FAILED: (\w+) - Database initialization timeout after ([0-9.]+)s",
            "PHASE FAILED: {0}: initialization_timeout after {1}s",
        ),
        (r"^Application startup failed\. Exiting\.", "Application startup failed. Exiting."),
        (
            r"^CRITICAL: Enhanced middleware setup failed: No module named",
            "middleware setup failed: ModuleNotFoundError",
        ),
        (r"^PHASE (\d+): (\w+)", "PHASE {0}: {1}"),
        (r"^DETERMINISTIC STARTUP SEQUENCE INITIATED", "{m}"),
        (r"^Started server process", "Started server process"),
        (r"^Waiting for application startup\.", "{m}"),
        # Module-import time warnings: the earliest line a start logs at WARNING.
        (r"^SSOT WARNING: Found other WebSocket Manager classes", "import-time warning"),
    )
)
REFUSED = re.compile(r"too many clients|remaining connection slots|53300|connection refused", re.I)
CLOSED = "server closed the connection unexpectedly"


# -- reading the raw exports ----------------------------------------------------------------------


def raw_entries(repo: Path, path: str, commit: str = COMMIT) -> list[dict]:
    """One export's entries, whichever of its two wrappings it has."""
    text = subprocess.run(
        ["git", "-C", str(repo), "show", f"{commit}:{path}"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    doc = json.loads(text)
    if "raw_logs" in doc:
        return list(doc["raw_logs"])
    return [e for entries in doc["logs_by_severity"].values() for e in entries]


def message(e: dict) -> str:
    for key in ("textPayload", "text_payload"):
        if isinstance(e.get(key), str):
            return e[key]
    for key in ("jsonPayload", "json_payload"):
        p = e.get(key)
        if isinstance(p, dict) and isinstance(p.get("message"), str):
            return p["message"]
    return ""


def has_payload(e: dict) -> bool:
    keys = ("textPayload", "text_payload", "jsonPayload", "json_payload")
    return any(e.get(k) for k in keys) or bool(e.get("httpRequest") or e.get("http_request"))


def audit(e: dict) -> dict | None:
    """A deploy's audit entry, reduced to its method and gcloud command (or, for a revision's
    status, that it became ready)."""
    for key in ("jsonPayload", "json_payload"):
        p = e.get(key)
        if isinstance(p, dict) and str(p.get("@type", "")).endswith("AuditLog"):
            out = {"methodName": p.get("methodName", "")}
            agent = (p.get("requestMetadata") or {}).get("callerSuppliedUserAgent", "")
            command = re.search(r"command/(\S+)", agent)
            if command:  # gcloud.run.deploy or gcloud.run.services.update-traffic
                out["requestMetadata"] = {"callerSuppliedUserAgent": command.group(0)}
            status = (p.get("status") or {}).get("message", "")
            if "Ready condition status changed to True" in status:
                out["status"] = {"message": "Ready condition status changed to True"}
            return out
    return None


def reduce(e: dict) -> tuple[dict | None, str]:
    """The derived entry (or None) and what it is (kept: its kind; dropped: why)."""
    rl = e.get("resource", {}).get("labels", {})
    entry = {
        "timestamp": e["timestamp"],
        "severity": e.get("severity", "DEFAULT"),
        "insertId": e.get("insertId") or e.get("insert_id"),
        "resource": {
            "type": e["resource"]["type"],
            "labels": {
                "project_id": PROJECT,
                "service_name": rl.get("service_name", ""),
                "revision_name": rl.get("revision_name", ""),
            },
        },
    }
    if e.get("httpRequest") or e.get("http_request"):
        return None, "request log (httpRequest)"
    proto = audit(e)
    if proto is not None:
        return {**entry, "protoPayload": proto}, "audit"
    text = message(e)
    if not text:
        return None, "no payload (the export kept none)"
    for regex, out in KEEP:
        m = regex.search(text)
        if m is not None:
            derived = out.format(*m.groups(), m=m.group(0))
            break
    else:
        return None, "another line of the service (not a start-up marker or error kind)"
    instance = (e.get("labels") or {}).get("instanceId", "")
    if instance:
        entry["labels"] = {"instanceId": instance[-ID_CHARS:]}
    return {**entry, "textPayload": derived}, "kept"


def derive(repo: Path) -> tuple[list[dict], dict]:
    """The derived entries (oldest first, one per insertId and timestamp) and what was dropped.
    Exports overlap (143654 and 143747 cover the same hour, the first without payloads): of an
    entry found twice, the copy with a message is kept."""
    unique: dict[tuple, dict] = {}
    dropped = Counter()
    for path in EXPORTS:
        for e in raw_entries(repo, path):
            key = (e.get("insertId") or e.get("insert_id"), e["timestamp"])
            if key in unique:
                dropped["the same entry in another export"] += 1
                if not has_payload(unique[key]) and has_payload(e):
                    unique[key] = e
                continue
            unique[key] = e
    kept, ids = [], {}
    texts = [message(e) for e in unique.values()]
    for e in unique.values():
        out, why = reduce(e)
        if out is None:
            dropped[why] += 1
            continue
        full = (e.get("labels") or {}).get("instanceId", "")
        short = full[-ID_CHARS:]
        if full and ids.setdefault(short, full) != full:
            raise SystemExit(f"two instance ids end in {short}: keep more digits")
        kept.append(out)
    kept.sort(key=lambda x: (x["timestamp"], x["insertId"]))
    requests = [e.get("httpRequest") or e.get("http_request") for e in unique.values()]
    requests = [r for r in requests if r]
    report = {
        "raw entries, distinct": len(unique),
        "request logs by status": dict(sorted(Counter(r.get("status") for r in requests).items())),
        "request logs, longest latency (s)": max(
            (float(str(r.get("latency") or "0s").rstrip("s")) for r in requests), default=0.0
        ),
        "dropped": dict(sorted(dropped.items())),
        "refused (too many clients, remaining connection slots, 53300, connection refused)": sum(
            bool(REFUSED.search(t)) for t in texts
        ),
        "closed (server closed the connection unexpectedly)": sum(CLOSED in t for t in texts),
    }
    return kept, report


# -- measuring the derived set --------------------------------------------------------------------


def t_s(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def instances(entries: list[dict]) -> dict[str, dict]:
    """Each instance's times (s): first line, platform start, probe, failure markers, exit."""
    out: dict[str, dict] = {}
    for e in entries:
        inst = e.get("labels", {}).get("instanceId")
        if not inst:
            continue
        t, text = t_s(e["timestamp"]), e["textPayload"]
        i = out.setdefault(inst, {"revision": e["resource"]["labels"]["revision_name"], "first": t})
        i["first"], i["last"] = min(i["first"], t), max(i.get("last", t), t)
        for key, marker in MARKERS:
            if text.startswith(marker):
                i.setdefault(key, t)
    return out


MARKERS = (
    ("start", "Starting new instance"),
    ("probe", "Default STARTUP"),
    ("exit", "Container called exit(3)"),
    ("migration_failed", "phase 1 migrations failed"),
    ("continuing", "phase 1 continuing without migrations"),
    ("db_timeout", "PHASE FAILED: DATABASE"),
    ("startup_failed", "Application startup failed"),
    ("import_error", "middleware setup failed"),
    ("import_warning", "import-time warning"),
)


def kind(i: dict) -> str:
    """How a start failed, by its own lines: phase 1 passed or the database phase failed, or the
    middleware's import failed; "unknown" when the export kept none of them (its exit only)."""
    if any(k in i for k in ("migration_failed", "continuing", "db_timeout")):
        return "database"
    if "import_error" in i:
        return "import"
    return "unknown"


def revision_kinds(insts: dict[str, dict]) -> dict[str, str]:
    """A revision's one failure kind, when its instances show only one (its other exits are
    taken to be the same: the exports keep 50 lines a severity, so many exits lost their
    error lines)."""
    seen: dict[str, set] = defaultdict(set)
    for i in insts.values():
        if kind(i) != "unknown":
            seen[i["revision"]].add(kind(i))
    return {rev: next(iter(k)) for rev, k in seen.items() if len(k) == 1}


def summary(x: list[float]) -> str:
    if not x:
        return "n 0"
    x = sorted(x)
    return f"n {len(x)}, median {statistics.median(x):.2f} s, range {x[0]:.2f}–{x[-1]:.2f} s" + (
        f", sd {statistics.stdev(x):.2f} s" if len(x) > 1 else ""
    )


def cadence(
    insts: dict[str, dict], key: str, failure: str, only: set[str] | None = None
) -> tuple[list[float], list[float]]:
    """Within each revision whose failures are all of one kind: start-to-start, ``key`` line to
    the next instance's ``key`` line, one at a time (the previous one failed, its lines ending
    before the next one's first line); and, for every instance with a ``key`` line, the
    revision's latest exit(3) before it to that line, when no other instance's ``key`` line
    lies between (the exit this instance replaced)."""
    kinds = revision_kinds(insts)
    by_rev: dict[str, list[dict]] = defaultdict(list)
    exits: dict[str, list[float]] = defaultdict(list)
    for i in insts.values():
        if kinds.get(i["revision"]) != failure or (only and i["revision"] not in only):
            continue
        if key in i:
            by_rev[i["revision"]].append(i)
        if "exit" in i:
            exits[i["revision"]].append(i["exit"])
    to_next, exit_to_next = [], []
    for rev, chain in by_rev.items():
        chain.sort(key=lambda i: i[key])
        for a, b in itertools.pairwise(chain):
            ended = any(k in a for k in ("exit", "startup_failed", "import_error"))
            if ended and b["first"] >= a["last"]:  # else censored, or two at a time
                to_next.append(b[key] - a[key])
        marks = [i[key] for i in chain]
        for b in chain:
            before = [x for x in exits[rev] if x < b[key]]
            if before and not any(max(before) < m < b[key] for m in marks):
                exit_to_next.append(b[key] - max(before))
    return to_next, exit_to_next


def exit_gaps(insts: dict[str, dict], revision: str) -> list[float]:
    """exit(3) to the next exit(3) of one revision, in order."""
    x = sorted(i["exit"] for i in insts.values() if i["revision"] == revision and "exit" in i)
    return [b - a for a, b in itertools.pairwise(x)]


def steady(gaps: list[float]) -> tuple[list[float], int]:
    """The gaps below 1.8 × their median (one cycle each), and how many spanned a lost exit."""
    if not gaps:
        return [], 0
    med = statistics.median(gaps)
    return [g for g in gaps if g < 1.8 * med], sum(g >= 1.8 * med for g in gaps)


def together(insts: dict[str, dict], within_s: float = 3.0) -> list[str]:
    """Instances of different revisions whose first lines fall within ``within_s`` of each
    other: a deploy's new instances beside the old revision's."""
    order = sorted(insts.items(), key=lambda kv: kv[1]["first"])
    groups, group = [], []
    for name, i in order:
        if group and i["first"] - group[0][1]["first"] > within_s:
            groups.append(group)
            group = []
        group.append((name, i))
    groups.append(group)
    out = []
    for g in groups:
        if len({i["revision"] for _, i in g}) < 2:
            continue
        at = datetime.fromtimestamp(g[0][1]["first"], tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        who = ", ".join(
            f"{n} ({i['revision']}) +{i['first'] - g[0][1]['first']:.3f} s" for n, i in g
        )
        out.append(f"{len(g)} instances from {at}: {who}")
    return out


def figures(entries: list[dict]) -> dict:
    """The figures docs/incident/README.md quotes, by name."""
    insts = instances(entries)
    texts = [e.get("textPayload", "") for e in entries]
    kinds = revision_kinds(insts)
    f: dict = {
        "entries": len(entries),
        "instances": len(insts),
        "exit3_lines": sum(t.startswith("Container called exit(3)") for t in texts),
        "platform_starts": sum(t.startswith("Starting new instance") for t in texts),
        "probes_passed": sum(t.startswith("Default STARTUP") for t in texts),
        "closed": sum(CLOSED in t for t in texts),
        "refused": sum(bool(REFUSED.search(t)) for t in texts),
        "deploys": [e["timestamp"] for e in entries if _command(e) == "gcloud.run.deploy"],
        "traffic_updates": sum(_command(e).endswith("update-traffic") for e in entries),
        "revision_kinds": kinds,
        "message_kinds": dict(
            sorted(Counter(re.sub(r"\d+(\.\d+)?", "N", t) for t in texts if t).items())
        ),
    }
    per: dict[str, Counter] = defaultdict(Counter)
    for i in insts.values():
        c = per[i["revision"]]
        c["instances"] += 1
        c["exit(3)"] += "exit" in i
        c["database failure lines"] += kind(i) == "database"
        c["import failure lines"] += kind(i) == "import"
    f["per_revision"] = {r: dict(c) for r, c in sorted(per.items())}
    f["first_warning_to_phase1_end_s"] = _between(insts, "import_warning", "continuing")
    f["migration_to_db_timeout_s"] = _between(insts, "migration_failed", "db_timeout")
    f["app_end_to_exit_s"] = {
        "database": _between(insts, "startup_failed", "exit"),
        "import": _between(insts, "import_error", "exit"),
    }
    f["exit_gaps_s"] = {r: exit_gaps(insts, r) for r in sorted(kinds)}
    for failure, key in (("database", "import_warning"), ("import", "import_error")):
        s2s, e2n = cadence(insts, key, failure)
        f[f"{failure}_start_to_start_s"] = s2s
        f[f"{failure}_exit_to_next_{key}_s"] = e2n
    f["platform_starts_detail"] = {
        n: {k: round(i[k] - i["start"], 3) for k, _ in MARKERS[1:] if k in i}
        for n, i in insts.items()
        if "start" in i
    }
    # The pause: exit to the replacement's import error, less the start-to-error offset, in the
    # revision(s) whose platform start line gives that offset (the code, so its import time,
    # differs between revisions).
    offsets = _between(insts, "start", "import_error")
    f["start_to_import_error_s"] = offsets
    if offsets:
        off = statistics.median(offsets)
        measured = {i["revision"] for i in insts.values() if {"start", "import_error"} <= i.keys()}
        f["pause_revisions"] = sorted(measured)
        _, e2n = cadence(insts, "import_error", "import", only=measured)
        f["pause_s"] = sorted(d - off for d in e2n)
    f["together"] = together(insts)
    return f


def _command(e: dict) -> str:
    agent = e.get("protoPayload", {}).get("requestMetadata", {}).get("callerSuppliedUserAgent", "")
    return agent.removeprefix("command/")


def _iqr(x: list[float]) -> str:
    q = statistics.quantiles(x, n=4, method="inclusive")
    return f"{q[0]:.2f}–{q[2]:.2f} s"


def _between(insts: dict[str, dict], a: str, b: str) -> list[float]:
    return sorted(i[b] - i[a] for i in insts.values() if a in i and b in i)


def measure(entries: list[dict]) -> list[str]:
    f = figures(entries)
    lines = [
        f"entries {f['entries']}; instances {f['instances']}; exit(3) lines {f['exit3_lines']}; "
        f"platform starts {f['platform_starts']}; startup probes passed {f['probes_passed']}; "
        f"'{CLOSED}' {f['closed']}; refusals (53300 and kin) {f['refused']}; deploys "
        f"(gcloud.run.deploy) {len(f['deploys'])}, traffic updates {f['traffic_updates']}",
        "deploys in each export's hour: "
        + ", ".join(
            f"{a[11:16]}–{b[11:16]} {sum(t_s(a) <= t_s(t) < t_s(b) for t in f['deploys'])}"
            for a, b in WINDOWS
        ),
        "message kinds: " + "; ".join(f"{k} ×{n}" for k, n in f["message_kinds"].items()),
    ]
    for r, c in f["per_revision"].items():
        failure = f["revision_kinds"].get(r, "no failure line")
        lines.append(f"{r} ({failure}): " + ", ".join(f"{k} {n}" for k, n in c.items()))
    lines.append(
        "first warning to phase 1's end (migrations failed or skipped): "
        + summary(f["first_warning_to_phase1_end_s"])
    )
    lines.append(
        "migration failure to database-init failure: " + summary(f["migration_to_db_timeout_s"])
    )
    for k, x in f["app_end_to_exit_s"].items():
        lines.append(f"last service line to exit(3), {k} failures: {summary(x)}")
    for r, gaps in f["exit_gaps_s"].items():
        kept, lost = steady(gaps)
        shown = ", ".join(f"{g:.2f}" for g in gaps)
        lines.append(
            f"exit(3) to exit(3), {r}: [{shown}] s; one cycle each: {summary(kept)}; "
            f"{lost} span a lost exit"
        )
    for failure, key in (("database", "import_warning"), ("import", "import_error")):
        lines.append(
            f"{failure} failures, start-to-start ({key} to {key}, one at a time): "
            + summary(f[f"{failure}_start_to_start_s"])
        )
        lines.append(
            f"{failure} failures, exit(3) to the replacement's {key}: "
            + summary(f[f"{failure}_exit_to_next_{key}_s"])
        )
    for n, d in f["platform_starts_detail"].items():
        got = ", ".join(f"{k} +{v:.3f} s" for k, v in d.items()) or "no later line"
        lines.append(f"platform start of {n}: {got}")
    if "pause_s" in f:
        off = statistics.median(f["start_to_import_error_s"])
        lines.append(
            f"pause, exit(3) to the replacement's start, {', '.join(f['pause_revisions'])} (exit "
            f"to its import error, less the start-to-error {off:.3f} s): {summary(f['pause_s'])}"
            f", IQR {_iqr(f['pause_s'])}; values " + ", ".join(f"{p:.3f}" for p in f["pause_s"])
        )
    lines += [f"starts together: {g}" for g in f["together"]]
    return lines


# -- the database-phase failure cycles as attempts ------------------------------------------------

# Measured in this set (docs/incident/README.md): the database failure's last line to exit(3)
# (1.44 s, n 1), exit(3) to the replacement's first warning in the database loop (10.08 s
# median, n 6); fitted: the pause from exit(3) to the replacement's start (0.27 s, the
# ``cloudrun`` restart preset).
FAILURE_TO_EXIT_S = 1.44
EXIT_TO_FIRST_WARNING_S = 10.08
PAUSE_S = 0.27
ATTEMPT_PHASES = ("before_table_check", "table_check")
ATTEMPT_COLUMNS = ("timestamp", "run", "instance", "attempt", "outcome", "reason", "phase")


def chains(insts: dict[str, dict]) -> list[list[tuple[str, dict]]]:
    """The database-phase failure cycles that ran one instance at a time: within each revision
    whose failures are all database failures, instances in the order of their first line; an
    instance whose first line comes after the previous one's last line replaced it (the same
    chain, as ``cadence`` takes them); a revision where they overlap (two or three at once: the
    replacement of each is not identifiable) gives no chain."""
    kinds = revision_kinds(insts)
    by_rev: dict[str, list[tuple[str, dict]]] = defaultdict(list)
    for name, i in insts.items():
        if kinds.get(i["revision"]) == "database":
            by_rev[i["revision"]].append((name, i))
    out = []
    for _rev, chain in sorted(by_rev.items()):
        chain.sort(key=lambda kv: kv[1]["first"])
        if all(b["first"] >= a["last"] for (_, a), (_, b) in itertools.pairwise(chain)):
            out.append(chain)
    return out


def attempt_rows(entries: list[dict]) -> tuple[list[dict], list[str]]:
    """One row per start attempt of the one-at-a-time database-phase failure cycles, in our
    start-up-log format, and one line per attempt saying how each of its times was derived (or
    why it has no row)."""
    rows, how = [], []
    for chain in chains(instances(entries)):
        end: tuple[float, str] | None = None  # the previous attempt's exit, and how it is known
        for k, (name, i) in enumerate(chain, start=1):
            start = _start(i, end)
            failure = _failure(i)
            table_check = i.get("migration_failed", i.get("continuing"))
            end = None
            if failure is not None:
                exit_from = "exit(3)" if "exit" in i else f"failure + {FAILURE_TO_EXIT_S} s"
                end = (i.get("exit", failure[0] + FAILURE_TO_EXIT_S), f"{name}'s {exit_from}")
            where = f"{i['revision'][-9:]} attempt {k} {name}"
            if start is None:
                how.append(f"{where}: no row: its start is not known (its first lines were cut)")
                continue
            if failure is None or table_check is None:
                how.append(f"{where}: no row: its lines end before its failure (cut)")
                continue
            rows.append(
                {
                    "timestamp": _iso(start[0]),
                    "run": i["revision"].removeprefix("netra-backend-staging-"),
                    "instance": chain[0][0],
                    "attempt": k,
                    "outcome": "timeout",
                    "reason": "phase_deadline",
                    "phase": "table_check",
                    "phase.before_table_check": f"{table_check - start[0]:.3f}",
                    "phase.table_check": f"{failure[0] - table_check:.3f}",
                }
            )
            began = "the migration failure" if "migration_failed" in i else "phase 1's end"
            how.append(
                f"{where}: start = {start[1]}; table check from {began}; failure = "
                f"{failure[1]}; {failure[0] - table_check:.3f} s into it"
            )
    return rows, how


def _start(i: dict, end: tuple[float, str] | None) -> tuple[float, str] | None:
    """When the attempt started: the previous attempt's exit plus the fitted pause, else (a
    chain's first) its own first warning less the measured exit-to-first-warning time, net of
    the pause; None when neither is logged."""
    if end is not None:
        return end[0] + PAUSE_S, f"{end[1]} + {PAUSE_S} s"
    if "import_warning" in i:
        lead_s = EXIT_TO_FIRST_WARNING_S - PAUSE_S
        return i["import_warning"] - lead_s, f"own first warning - {lead_s:.2f} s"
    return None


def _failure(i: dict) -> tuple[float, str] | None:
    """When the attempt's table check failed: its own failure line, else its exit(3) less the
    measured 1.44 s from the failure's last line to exit(3)."""
    if "db_timeout" in i:
        return i["db_timeout"], "its PHASE FAILED line"
    if "exit" in i:
        return i["exit"] - FAILURE_TO_EXIT_S, f"exit(3) - {FAILURE_TO_EXIT_S} s"
    return None


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="milliseconds")


def attempts_csv(rows: list[dict]) -> str:
    """The rows as a start-up log (docs/calibration.md): the phase map on its first line."""
    columns = [*ATTEMPT_COLUMNS, *(f"phase.{p}" for p in ATTEMPT_PHASES)]
    mapping = f"before={ATTEMPT_PHASES[0]};database={ATTEMPT_PHASES[1]}"
    # The exports kept 50 lines a severity: each deploy only in part (docs/calibration.md).
    lines = [f"# phases: {mapping}", "# deploys: partial", ",".join(columns)]
    lines += [",".join(str(r[c]) for c in columns) for r in rows]
    return "\n".join(lines) + "\n"


# -- the command line -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("derive", help="raw exports (a git directory) → derived JSON lines")
    d.add_argument("repo", type=Path, help="a mirror or clone of " + REPOSITORY)
    d.add_argument("-o", "--out", type=Path, default=Path("docs/incident/derived-logs.jsonl"))
    m = sub.add_parser("measure", help="the figures of docs/incident/README.md")
    m.add_argument("derived", type=Path)
    a = sub.add_parser("attempts", help="derived JSON lines → the database cycles' attempts (CSV)")
    a.add_argument("derived", type=Path)
    a.add_argument("-o", "--out", type=Path, default=Path("docs/incident/attempts.csv"))
    args = ap.parse_args(argv)
    if args.cmd == "derive":
        entries, report = derive(args.repo)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in entries))
        tmp.replace(args.out)
        print(f"{args.out}: {len(entries)} entries; {json.dumps(report, sort_keys=True)}")
        return 0
    entries = [json.loads(x) for x in args.derived.read_text().splitlines() if x.strip()]
    if args.cmd == "attempts":
        rows, how = attempt_rows(entries)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(attempts_csv(rows), encoding="utf-8")
        tmp.replace(args.out)
        print("\n".join([f"{args.out}: {len(rows)} attempts", *how]))
        return 0
    print("\n".join(measure(entries)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
