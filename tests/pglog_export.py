"""PostgreSQL server logs, written from connections described here.

The lines follow PostgreSQL's ``log_line_prefix`` escapes (``%m`` a time with milliseconds, ``%p``
the backend's pid, …) and its ``log_connections`` / ``log_disconnections`` messages, with PostgreSQL
18's ``connection ready: setup total=… ms, fork=… ms, authentication=… ms`` and the 53300 refusals
(platform-facts.md, "Telemetry formats a team already has"); Cloud SQL's entries wrap a line in a
``cloudsql_database`` LogEntry's ``textPayload``. Hosts, users, pids and times are our own.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

BASE_S = 1_795_950_000  # 2026-11-29T…Z
HOST = "10.8.0.12"


@dataclass
class Conn:
    """One connection: received at ``at_s`` (after BASE), set up in ``setup_ms`` (None: a
    server before 18, no ready line), held ``hold_s`` (None: still open at the log's end)."""

    pid: int
    at_s: float
    setup_ms: float | None = 12.5
    hold_s: float | None = None
    refused: bool = False
    reserved: bool = False  # refused as "remaining connection slots are reserved"


def pg_time(t_s: float, fmt: str = "%m") -> str:
    t = dt.datetime.fromtimestamp(BASE_S + t_s, dt.UTC)
    whole = t.strftime("%Y-%m-%d %H:%M:%S")
    return f"{whole}.{t.microsecond // 1000:03d} UTC" if fmt == "%m" else f"{whole} UTC"


def messages(c: Conn) -> list[tuple[float, str]]:
    """(time s, 'LEVEL:  message') of one connection, in order."""
    port = 40000 + c.pid % 20000
    out = [(c.at_s, f"LOG:  connection received: host={HOST} port={port}")]
    if c.refused:
        why = (
            "remaining connection slots are reserved for roles with the SUPERUSER attribute"
            if c.reserved
            else "sorry, too many clients already"
        )
        return [*out, (c.at_s + 0.001, f"FATAL:  {why}")]
    done = c.at_s + (c.setup_ms or 10.0) / 1000
    out.append(
        (
            done - 0.0005,
            "LOG:  connection authorized: user=orders database=orders application_name=orders-api",
        )
    )
    if c.setup_ms is not None:
        out.append(
            (
                done,
                f"LOG:  connection ready: setup total={c.setup_ms:.3f} ms, "
                f"fork={c.setup_ms / 10:.3f} ms, authentication={c.setup_ms / 2:.3f} ms",
            )
        )
    if c.hold_s is not None:
        end = done + c.hold_s
        out.append(
            (
                end,
                f"LOG:  disconnection: session time: 0:00:{c.hold_s:06.3f} user=orders "
                f"database=orders host={HOST} port={port}",
            )
        )
    return out


def noise() -> list[tuple[float, int, str]]:
    return [
        (0.05, 31, "LOG:  checkpoint starting: time"),
        (0.06, 31, "DETAIL:  our own words on a checkpoint"),
        (0.07, 77, 'ERROR:  relation "orders_tmp" does not exist at character 15'),
    ]


def lines(conns: list[Conn], prefix: str = "{m} [{p}] ") -> list[str]:
    """Plain log lines, oldest first; ``prefix`` fills ``{m}`` (time) and ``{p}`` (pid)."""
    rows = [(t, c.pid, text) for c in conns for t, text in messages(c)] + noise()
    rows.sort(key=lambda r: r[0])
    out = []
    for t, pid, text in rows:
        out.append(prefix.format(m=pg_time(t), t=pg_time(t, "%t"), p=pid) + text)
        if text.startswith("ERROR"):
            out.append("\tSELECT * FROM orders_tmp")  # a statement's continuation line
    return out


def write_plain(path: Path, conns: list[Conn], prefix: str = "{m} [{p}] ") -> Path:
    Path(path).write_text("\n".join(lines(conns, prefix)) + "\n")
    return Path(path)


def write_cloudsql(path: Path, conns: list[Conn]) -> Path:
    """A ``gcloud logging read --format=json`` array of Cloud SQL entries, newest first."""
    rows = sorted(((t, c.pid, text) for c in conns for t, text in messages(c)), reverse=True)
    entries = []
    for n, (t, pid, text) in enumerate(rows):
        stamp = dt.datetime.fromtimestamp(BASE_S + t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        entries.append(
            {
                "insertId": f"s{n:06d}",
                "logName": "projects/startsim-demo/logs/cloudsql.googleapis.com%2Fpostgres.log",
                "resource": {
                    "type": "cloudsql_database",
                    "labels": {"database_id": "startsim-demo:orders-db", "region": "europe-west1"},
                },
                "severity": "ERROR" if "FATAL" in text else "INFO",
                "timestamp": stamp,
                "textPayload": f"{pg_time(t)} [{pid}]: [1-1] db=orders,user=orders {text}",
            }
        )
    Path(path).write_text(json.dumps(entries, indent=2) + "\n")
    return Path(path)


HELD = 25


def storm() -> list[Conn]:
    """25 connections in 2.5 s, set up in known times (10, 10.5, … ms) and held 5 s; two refusals
    while all 25 are held; then they leave and one more comes in (no refusal then)."""
    conns = [Conn(100 + i, 0.1 * i, 10.0 + 0.5 * i, hold_s=5.0) for i in range(HELD)]
    conns += [Conn(200, 3.0, refused=True), Conn(201, 3.2, refused=True, reserved=True)]
    conns.append(Conn(202, 9.0, 30.0, hold_s=1.0))
    return conns


if __name__ == "__main__":
    import sys

    out = Path(sys.argv[1])
    if out.suffix == ".json":
        write_cloudsql(out, storm())
    else:
        write_plain(out, storm())
