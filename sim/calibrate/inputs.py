"""Measurements in, checked line by line: campaign folders and production start-up logs.

Both become :class:`Run` objects — one fleet start each, its attempts as :class:`Attempt` rows with
the start-up split into the scenario's three parts (before the database, database init, after) —
so a built-in campaign, an ``--instance-command`` campaign (records carrying ``phases``) and a log
exported from production go through the same fitting. Every problem is an
:class:`~sim.errors.InputError` naming the file and the line.

A production log is CSV or JSON lines, one start attempt per row (docs/calibration.md):
``timestamp`` (Unix seconds or ISO 8601, when the attempt started), ``instance``, ``attempt``,
optional ``run`` (one fleet start: a deploy, a scale-out), ``outcome`` (ready | timeout | rejected
| error) and/or ``exit_code`` (0 ready, 3 timeout, else error), optional ``reason`` (a failed
attempt's, in sim.records.Reason's words) and ``phase`` (the phase it failed in), and one duration
in seconds per phase: CSV columns ``phase.<name>``, or in JSON ``"phases": {"<name>": s, …}``.
Which phases form each part comes from ``--phases`` or from the file (a ``# phases: …`` first
line in CSV, a ``{"phase_map": …}`` first line in JSON lines).
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from sim.errors import InputError
from sim.records import OUTCOMES, Outcome, Reason
from sim.scenario import Scenario
from sim.scenario import load as load_scenario

PARTS = ("before", "database", "after")
REASONS = tuple(r.value for r in Reason)
MINUTE_S = 60.0


@dataclass(frozen=True)
class PhaseMap:
    """Named phases of a service's start-up, assigned to the scenario's three parts; ``queries``
    names those of the database part that are its init queries, run once the pool is ready (the
    scenario's ``startup.init_queries_s``)."""

    before: tuple[str, ...] = ()
    database: tuple[str, ...] = ()
    after: tuple[str, ...] = ()
    queries: tuple[str, ...] = ()

    def part_of(self, phase: str) -> str | None:
        for part in PARTS:
            if phase in getattr(self, part):
                return part
        return None

    def describe(self) -> str:
        named = (*PARTS, "queries")
        return "; ".join(f"{p}={','.join(getattr(self, p))}" for p in named if getattr(self, p))


def parse_phases(text: str, known: list[str] | None = None, source: str = "phases") -> PhaseMap:
    """``"before=config,secrets;database=db;after=warm"``. Given only ``database=…`` and the
    phases in their order (``known``), those listed before it are ``before``, those after ``after``.
    ``queries=…`` marks database phases that are the init queries (added to ``database`` if not
    listed there).
    """
    parts: dict[str, list[str]] = {}
    for item, key, sep, names in _phase_items(text):
        if not sep or key not in (*PARTS, "queries"):
            raise InputError(
                source,
                None,
                f"{item!r}: expected PART=phase,… with PART one of "
                "before, database, after, queries (e.g. before=a,b;database=c,q;queries=q;after=d)",
            )
        parts[key] = names
    if not parts.get("database"):
        raise InputError(source, None, f"{text!r}: name the database phase(s): database=NAME")
    queries = parts.pop("queries", [])
    parts["database"] += [q for q in queries if q not in parts["database"]]
    elsewhere = [q for q in queries for p in ("before", "after") if q in parts.get(p, ())]
    if elsewhere:
        raise InputError(
            source, None, f"{text!r}: queries {', '.join(elsewhere)} must be database phases"
        )
    if known is not None and set(parts) == {"database"}:
        idx = [known.index(p) for p in parts["database"] if p in known]
        if idx:
            parts["before"] = [p for p in known[: min(idx)] if p not in parts["database"]]
            parts["after"] = [p for p in known[max(idx) + 1 :] if p not in parts["database"]]
    return PhaseMap(*(tuple(parts.get(p, ())) for p in PARTS), queries=tuple(queries))


def queries_phases(text: str | None) -> tuple[str, ...]:
    """The ``queries=`` names of a ``--phases`` spec. A campaign folder reads only these: its
    records' ``database`` phase is always database init."""
    return tuple(
        n for _, key, _, names in _phase_items(text or "") if key == "queries" for n in names
    )


def _phase_items(text: str):
    """Each ``KEY=a,b`` item of a ``--phases`` spec: (item, key, "=" or "", names)."""
    for item in filter(None, (s.strip() for s in text.split(";"))):
        key, sep, names = item.partition("=")
        yield item, key.strip(), sep, [n.strip() for n in names.split(",") if n.strip()]


@dataclass(frozen=True)
class Attempt:
    """One start attempt: its three parts' durations (s), outcome, and where it was read."""

    instance: str
    attempt: int
    start_unix_s: float
    before_db_s: float
    db_init_s: float
    after_db_s: float | None  # None: the attempt did not become ready
    outcome: str
    reason: str = ""
    connection_attempts: int | None = None
    where: str = ""
    init_queries_s: float | None = None  # the phases mapped to queries, when the row has them
    censored: str = ""  # lines end before ready or exit: the part they ended in ("at least")
    phase: str = ""  # the named phase a failed attempt ended in, when the record says it


@dataclass
class Run:
    """One fleet start: a campaign folder or one ``run`` of a production log."""

    run_id: str
    source: str
    kind: str  # "campaign" | "log"
    attempts: list[Attempt]
    scenario: Scenario | None = None
    emulator: list[dict[str, Any]] = field(default_factory=list)
    connections: list[dict[str, Any]] = field(default_factory=list)
    harness_drawn: bool = False  # durations drawn by the harness from its scenario, not measured
    phase_map: PhaseMap | None = None
    minute_grid: bool = False  # timestamps on a one-minute grid: platform metrics, not records
    # A log run is one deploy (a revision, a ReplicaSet, a `run` value): its first starts are the
    # fleet it started. False: starts are grouped into deploys by a gap (sim.calibrate.fleet).
    deploys_by_run: bool = True
    censored: list[Attempt] = field(default_factory=list)  # cut off by the end of the export
    monitoring: Any = None  # what monitoring would have counted (cloudrun.Monitoring)
    notes: list[str] = field(default_factory=list)  # what the reader skipped, dropped, assumed
    server: Any = None  # a server log's measurements (pglog.ServerLog), beside no attempts
    partial_deploys: bool = False  # the log keeps only part of each deploy (an export cut short)

    @property
    def t0_unix_s(self) -> float:
        return min(a.start_unix_s for a in self.attempts)


# -- campaign folders ---------------------------------------------------------------------------

_NUMBERS = ("start_unix_s", "before_db_s", "db_init_s", "after_db_s")


def read_campaign(folder: Path, phases: str | None = None) -> Run:
    """A campaign folder (``startsim loadtest``): records, scenario, emulator and connections.
    ``phases``: a ``--phases`` spec whose ``queries=`` names the records' init-queries phases."""
    folder = Path(folder)
    records_path = folder / "records.jsonl"
    if not folder.is_dir():
        raise InputError(str(folder), None, "no such campaign folder")
    if not records_path.is_file():
        raise InputError(
            str(folder),
            None,
            "no records.jsonl: not a campaign folder (or the "
            "campaign was stopped before any attempt finished)",
        )
    if not (folder / "scenario.toml").is_file():
        raise InputError(str(folder), None, "no scenario.toml: not a campaign folder")
    scenario = load_scenario(folder / "scenario.toml")
    lines = _json_lines(records_path)
    if not lines:
        raise InputError(str(records_path), None, "empty: no attempt was recorded")
    run_id = lines[0][1].get("run_id")
    attempts, phase_seen, names = [], False, queries_phases(phases)
    for number, rec in lines:
        where = f"{records_path}:{number}"
        if rec.get("run_id") != run_id:
            raise InputError(
                str(records_path),
                number,
                f"run_id {rec.get('run_id')!r} differs "
                f"from line 1's {run_id!r}: records of two runs mixed",
            )
        phase_seen |= bool(rec.get("phases"))
        attempt = _campaign_attempt(rec, where, str(records_path), number)
        attempts.append(_with_queries(attempt, rec, names, str(records_path), number))
    _no_duplicates(attempts, str(records_path))
    return Run(
        run_id=str(run_id),
        source=str(folder),
        kind="campaign",
        attempts=attempts,
        scenario=scenario,
        emulator=[obj for _, obj in _json_lines(folder / "emulator.jsonl", optional=True)],
        connections=[obj for _, obj in _json_lines(folder / "connections.jsonl", optional=True)],
        harness_drawn=not phase_seen,
        phase_map=PhaseMap(database=("database",), queries=names) if names else None,
    )


def _campaign_attempt(rec: dict, where: str, path: str, number: int) -> Attempt:
    for key in ("instance", "attempt", "outcome", *_NUMBERS):
        if key not in rec:
            raise InputError(path, number, f"{key}: missing")
    values = {k: _duration(rec[k], k, path, number) for k in _NUMBERS if k != "start_unix_s"}
    start = _number(rec["start_unix_s"], "start_unix_s", path, number)
    outcome = _outcome(rec["outcome"], path, number)
    attempt = _count(rec["attempt"], "attempt", path, number, least=1)
    conns = rec.get("connection_attempts")
    return Attempt(
        instance=str(rec["instance"]),
        attempt=attempt,
        start_unix_s=start,
        before_db_s=values["before_db_s"],
        db_init_s=values["db_init_s"],
        after_db_s=values["after_db_s"] if outcome == Outcome.READY else None,
        outcome=outcome,
        reason=str(rec.get("reason") or ""),
        phase=str(rec.get("phase") or ""),
        connection_attempts=None
        if conns is None
        else _count(conns, "connection_attempts", path, number, least=0),
        where=where,
    )


def _with_queries(a: Attempt, rec: dict, names: tuple[str, ...], path: str, number: int) -> Attempt:
    """The attempt with its init queries' time: the record's phases named ``names``, summed."""
    phases = rec.get("phases")
    if not isinstance(phases, dict) or not any(n in phases for n in names):
        return a
    seconds = sum(_duration(phases[n], f"phases.{n}", path, number) for n in names if n in phases)
    return replace(a, init_queries_s=seconds)


def _json_lines(path: Path, optional: bool = False) -> list[tuple[int, dict]]:
    if not path.exists():
        if optional:
            return []
        raise InputError(str(path), None, "no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), None, f"cannot read it ({exc})") from None
    out = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            cut = number == len(text.splitlines()) and not text.endswith("\n")
            why = "cut short (a truncated file?)" if cut else f"not JSON ({exc.msg})"
            raise InputError(str(path), number, why) from None
        if not isinstance(obj, dict):
            raise InputError(str(path), number, "not a JSON object")
        out.append((number, obj))
    return out


# -- production logs ----------------------------------------------------------------------------


def read_log(path: Path, phases: str | None = None) -> list[Run]:
    """A production start-up log (CSV or JSON lines): one run per distinct ``run`` value."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "no such file or campaign folder")
    try:
        text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(str(path), None, f"cannot read it ({exc})") from None
    if not text.strip():
        raise InputError(str(path), None, "empty: no attempt in it")
    first = text.lstrip()[:1]
    rows, in_file, partial = _json_rows(path) if first == "{" else _csv_rows(path, text)
    if not rows:
        raise InputError(str(path), None, "no attempt rows in it")
    order = _phase_order(rows)
    spec = phases or in_file
    if spec is None:
        raise InputError(
            str(path),
            None,
            "which phases are database init? give --phases "
            f"database=NAME (phases in the file: {', '.join(order)})",
        )
    pmap = parse_phases(spec, order, source="phases" if phases else str(path))
    unknown = [p for p in order if pmap.part_of(p) is None]
    if unknown:
        raise InputError(
            str(path),
            None,
            f"phases {', '.join(unknown)} are in no part of the mapping ({pmap.describe()})",
        )
    by_run: dict[str, list[Attempt]] = {}
    has_runs = any(row.get("run") for _, row in rows)
    for number, row in rows:
        run = str(row.get("run") or "run")
        by_run.setdefault(run, []).append(_log_attempt(row, pmap, str(path), number))
    runs = []
    for run_id, attempts in by_run.items():
        _no_duplicates(attempts, str(path))
        starts = [a.start_unix_s for a in attempts]
        on_grid = len(starts) >= 5 and all(
            abs(t / MINUTE_S - round(t / MINUTE_S)) < 1e-4 for t in starts
        )
        run = Run(run_id, str(path), "log", attempts, phase_map=pmap, minute_grid=on_grid)
        run.deploys_by_run, run.partial_deploys = has_runs, partial
        runs.append(run)
    return runs


def _json_rows(path: Path) -> tuple[list[tuple[int, dict]], str | None, bool]:
    lines = _json_lines(path)
    in_file, partial = None, False
    if lines and ("phase_map" in lines[0][1] or "deploys" in lines[0][1]):
        head = lines[0][1]
        pm = head.get("phase_map", {})
        if not isinstance(pm, dict):
            raise InputError(str(path), lines[0][0], "phase_map: expected {part: [phases]}")
        if pm:
            in_file = ";".join(f"{k}={','.join(map(str, v))}" for k, v in pm.items())
        partial = _deploys(head.get("deploys", ""), str(path), lines[0][0])
        lines = lines[1:]
    rows = []
    for number, obj in lines:
        flat = {k: v for k, v in obj.items() if k != "phases"}
        phases = obj.get("phases", {})
        if not isinstance(phases, dict):
            raise InputError(str(path), number, "phases: expected an object {name: seconds}")
        flat.update({f"phase.{k}": v for k, v in phases.items()})
        rows.append((number, flat))
    return rows, in_file, partial


def _deploys(value: object, path: str, number: int) -> bool:
    """A log's ``deploys`` directive: ``partial`` when it keeps only part of each deploy (an
    export cut by a line limit): its starts and failures per deploy are not whole."""
    if value not in ("", "whole", "partial"):
        raise InputError(path, number, f"deploys = {value!r}: expected whole or partial")
    return value == "partial"


LOG_COLUMNS = ("timestamp", "instance", "attempt", "run", "outcome", "exit_code", "reason", "phase")


def _csv_rows(path: Path, text: str) -> tuple[list[tuple[int, dict]], str | None, bool]:
    lines = text.splitlines()
    in_file, skip, partial = None, 0, False
    while skip < len(lines) and lines[skip].startswith("#"):  # `# phases: …`, `# deploys: …`
        head = lines[skip].lstrip("#").strip()
        if head.startswith("phases:"):
            in_file = head.removeprefix("phases:").strip()
        if head.startswith("deploys:"):
            partial = _deploys(head.removeprefix("deploys:").strip(), str(path), skip + 1)
        skip += 1
    reader = csv.reader(io.StringIO("\n".join(lines[skip:])))
    header = next(reader, None)
    if not header:
        raise InputError(str(path), skip + 1, "no header row")
    header = [h.strip() for h in header]
    for h in header:
        if h not in LOG_COLUMNS and not h.startswith("phase."):
            raise InputError(
                str(path),
                skip + 1,
                f"unknown column {h!r}; columns are "
                f"{', '.join(LOG_COLUMNS)} and phase.<name> (seconds)",
            )
    rows = []
    for i, cells in enumerate(reader, start=skip + 2):
        if not cells:
            continue
        if len(cells) != len(header):
            raise InputError(
                str(path),
                i,
                f"{len(cells)} cells for {len(header)} columns (a truncated or malformed line)",
            )
        rows.append((i, {h: c.strip() for h, c in zip(header, cells, strict=True) if c.strip()}))
    return rows, in_file, partial


def _phase_order(rows: list[tuple[int, dict]]) -> list[str]:
    order: list[str] = []
    for _, row in rows:
        for key in row:
            if key.startswith("phase.") and key[6:] not in order:
                order.append(key[6:])
    return order


def _log_attempt(row: dict, pmap: PhaseMap, path: str, number: int) -> Attempt:
    for key in row:
        if key not in LOG_COLUMNS and not key.startswith("phase."):
            raise InputError(
                path,
                number,
                f"unknown field {key!r}; fields are {', '.join(LOG_COLUMNS)} and phases",
            )
    for key in ("timestamp", "instance"):
        if key not in row:
            raise InputError(path, number, f"{key}: missing")
    outcome = _log_outcome(row, path, number)
    reason, phase = _log_reason(row, outcome, path, number), str(row.get("phase") or "")
    if phase and f"phase.{phase}" not in row:
        raise InputError(
            path, number, f"phase = {phase!r}: the row has no phase.{phase} (its duration)"
        )
    sums = dict.fromkeys(PARTS, 0.0)
    queries = None
    for key, value in row.items():
        if key.startswith("phase."):
            seconds = _duration(value, key, path, number)
            sums[pmap.part_of(key[6:]) or "after"] += seconds
            if key[6:] in pmap.queries:
                queries = (queries or 0.0) + seconds
    return Attempt(
        instance=str(row["instance"]),
        attempt=_count(row.get("attempt", 1), "attempt", path, number, least=1),
        start_unix_s=_timestamp(row["timestamp"], path, number),
        before_db_s=sums["before"],
        db_init_s=sums["database"],
        after_db_s=sums["after"] if outcome == Outcome.READY else None,
        outcome=outcome,
        reason=reason,
        where=f"{path}:{number}",
        init_queries_s=queries,
        phase=phase,
    )


def _log_reason(row: dict, outcome: str, path: str, number: int) -> str:
    """The optional ``reason`` of a failed attempt, in the model's words (sim.records.Reason)."""
    reason = str(row.get("reason") or "")
    if not reason:
        return ""
    if outcome == Outcome.READY:
        raise InputError(path, number, f"reason = {reason!r}: a ready attempt has no reason")
    if reason not in REASONS:
        raise InputError(path, number, f"reason = {reason!r}: expected one of {', '.join(REASONS)}")
    return reason


def _log_outcome(row: dict, path: str, number: int) -> str:
    if "outcome" in row:
        return _outcome(row["outcome"], path, number)
    if "exit_code" not in row:
        raise InputError(path, number, "outcome: missing (give outcome or exit_code)")
    code = _count(row["exit_code"], "exit_code", path, number, least=0)
    return {0: Outcome.READY, 3: Outcome.TIMEOUT}.get(code, Outcome.ERROR)  # 3: the deadline


# -- values -------------------------------------------------------------------------------------


def _number(value: Any, key: str, path: str, number: int) -> float:
    if isinstance(value, bool):
        value = None
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise InputError(path, number, f"{key} = {value!r}: not a number") from None
    if not math.isfinite(x):
        raise InputError(path, number, f"{key} = {value!r}: not a finite number")
    return x


def _duration(value: Any, key: str, path: str, number: int) -> float:
    x = _number(value, key, path, number)
    if x < 0:
        raise InputError(path, number, f"{key} = {value!r}: a duration cannot be negative")
    return x


def _count(value: Any, key: str, path: str, number: int, least: int) -> int:
    x = _number(value, key, path, number)
    if x != int(x) or x < least:
        raise InputError(path, number, f"{key} = {value!r}: expected a whole number ≥ {least}")
    return int(x)


def _outcome(value: Any, path: str, number: int) -> str:
    if value not in OUTCOMES:
        raise InputError(
            path, number, f"outcome = {value!r}: expected one of {', '.join(OUTCOMES)}"
        )
    return str(value)


def _timestamp(value: Any, path: str, number: int) -> float:
    try:
        return _number(value, "timestamp", path, number)
    except InputError:
        pass
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise InputError(
            path, number, f"timestamp = {value!r}: expected Unix seconds or ISO 8601"
        ) from None


def _no_duplicates(attempts: list[Attempt], path: str) -> None:
    seen: dict[tuple[str, int], str] = {}
    for a in attempts:
        key = (a.instance, a.attempt)
        if key in seen:
            line = int(a.where.rpartition(":")[2])
            raise InputError(
                path,
                line,
                f"instance {a.instance} attempt {a.attempt} already on "
                f"line {seen[key]}: records of two runs mixed (give each run its own "
                "`run` value or file)",
            )
        seen[key] = a.where.rpartition(":")[2]
