"""A campaign's request records (traffic after ready, ``requests.jsonl``) as the model's columns.

A campaign with ``[traffic]`` writes one JSON line per request (docs/loadtests.md): the run's id
and :data:`sim.records.REQUEST_COLUMNS` (``null`` for a time that does not apply). Read here, line
by line, into the columns a replication's ``requests`` has, so that :mod:`sim.afterready`'s
figures and ``startsim validate`` read a campaign as they read a simulation. A campaign is one
deploy: replication 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from sim.errors import InputError
from sim.records import REQUEST_COLUMNS, RequestOutcome

REQUESTS_FILE = "requests.jsonl"
_TIMES = ("arrive_s", "ready_s", "checkout_s", "wait_s")
_OUTCOMES = tuple(o.value for o in RequestOutcome)


def request_columns(rows: list[dict], replication: int = 0) -> dict[str, np.ndarray]:
    """Rows (checked) as columns: ``replication`` and REQUEST_COLUMNS, NaN for ``null``."""
    cols: dict[str, np.ndarray] = {"replication": np.full(len(rows), replication, dtype=int)}
    cols["instance"] = np.asarray([r["instance"] for r in rows], dtype=int)
    for key in _TIMES:
        cols[key] = np.asarray([math.nan if r[key] is None else r[key] for r in rows], dtype=float)
    cols["outcome"] = np.asarray([r["outcome"] for r in rows], dtype=str)
    cols["reason"] = np.asarray([r["reason"] for r in rows], dtype=str)
    return cols


def read_requests(folder: Path) -> dict[str, np.ndarray] | None:
    """The campaign's request records as columns, or None without the file (no traffic)."""
    path = Path(folder) / REQUESTS_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), None, f"cannot read it ({exc})") from None
    lines = text.splitlines()
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            if number == len(lines) and not text.endswith("\n"):
                continue  # a last line cut short by a kill: the campaign's own rule
            raise InputError(str(path), number, f"not JSON ({exc.msg})") from None
        rows.append(checked(row, str(path), number))
    return request_columns(rows)


def checked(row: object, path: str, number: int) -> dict:
    """One request record, or an InputError naming the line and the field."""
    if not isinstance(row, dict):
        raise InputError(path, number, "not a JSON object")
    for key in REQUEST_COLUMNS:
        if key not in row:
            raise InputError(path, number, f"{key}: missing")
    if row["outcome"] not in _OUTCOMES:
        raise InputError(
            path, number, f"outcome = {row['outcome']!r}: expected one of {', '.join(_OUTCOMES)}"
        )
    if not isinstance(row["instance"], int) or isinstance(row["instance"], bool):
        raise InputError(path, number, f"instance = {row['instance']!r}: expected an integer")
    for key in _TIMES:
        value = row[key]
        ok = value is None or (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
        if not ok:
            raise InputError(path, number, f"{key} = {value!r}: expected seconds or null")
    if not isinstance(row["reason"], str):
        raise InputError(path, number, f"reason = {row['reason']!r}: expected a string")
    return row
