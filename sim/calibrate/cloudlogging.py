"""Google Cloud Logging exports of a Cloud Run service, read as start-up lines (docs/formats.md).

``gcloud logging read … --format=json`` writes a JSON array of ``LogEntry`` objects, newest first;
a sink or ``--format=json`` piped through ``jq -c '.[]'`` gives JSON lines. Both are read here,
streaming (one entry in memory at a time, however large the file): each entry becomes one
:class:`~sim.calibrate.cloudrun.Line` (Cloud Run's platform messages, the service's own phase
lines) or is skipped and counted (audit entries, request logs, lines about no one instance).
:mod:`sim.calibrate.cloudrun` then joins an instance's lines into its start.

Every problem is an :class:`~sim.errors.InputError` naming the file, the line (JSON lines) or the
JSON path (``$[12]``, an array's element) and the field.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sim.calibrate import cloudrun
from sim.calibrate.cloudrun import Line, Tally
from sim.calibrate.inputs import Run, parse_phases
from sim.errors import InputError, UsageError

FORMAT = "cloud-logging"
RESOURCES = ("cloud_run_revision", "cloud_run_job")
CHUNK_CHARS = 1 << 20
# Of the service's own lines (not phases) an instance needs only its last before the exit (R12)
# and its last at all (censoring): its latest few are kept, so memory grows with instances only.
APP_LINES_KEPT = 8  # a JSON array is decoded from 1 MiB pieces: memory stays bounded

# Cloud Run's platform messages (run.googleapis.com/varlog/system; platform-facts.md, "Telemetry
# formats a team already has"). Matched anywhere in the text, so a prefix does not hide them.
START = re.compile(r"Starting new instance\. Reason: ([A-Z_]+)")
PROBE_OK = re.compile(r"STARTUP (?:TCP|HTTP|GRPC) probe succeeded", re.IGNORECASE)
PROBE_FAILED = re.compile(r"STARTUP (?:TCP|HTTP|GRPC) probe failed", re.IGNORECASE)
EXIT = re.compile(r"Container called exit\((-?\d+)\)\.")
PLATFORM = (
    (START, "start"),
    (PROBE_OK, "probe_ok"),
    (PROBE_FAILED, "probe_failed"),
    (EXIT, "exit"),
)
CUT = "cut short (a truncated file?)"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_time_ns(text: object) -> int:
    """RFC 3339 with up to nine fractional digits, exactly, as Unix nanoseconds (a float would
    keep only about 0.2 µs at today's epoch). Raises ValueError."""
    m = _RFC3339.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(text)
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    zone = m.group(8).upper()
    offset = timedelta(0) if zone == "Z" else _offset(zone)
    whole = datetime(y, mo, d, h, mi, min(s, 59), tzinfo=UTC) - offset  # a leap second: :59
    fraction = int((m.group(7) or "").ljust(9, "0"))
    return ((whole - _EPOCH) // timedelta(seconds=1)) * 1_000_000_000 + fraction


def _offset(zone: str) -> timedelta:
    sign = -1 if zone[0] == "-" else 1
    return sign * timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))


# -- the service's own phase lines ----------------------------------------------------------------

EDGES = {"start": "start", "begin": "start", "started": "start", "end": "end", "done": "end"}
EDGES |= {"ended": "end", "finished": "end"}


@dataclass(frozen=True)
class PhasePattern:
    """A regular expression for the service's phase messages, with named groups: ``phase`` and
    either ``seconds`` / ``ms`` (the phase's duration, logged when it ends) or ``edge`` (``start``
    or ``end``, also ``begin``, ``done``, …: the phase's start and end, each on its own line)."""

    regex: re.Pattern

    @classmethod
    def of(cls, text: str) -> PhasePattern:
        try:
            regex = re.compile(text)
        except re.error as exc:
            raise UsageError(f"not a regular expression ({exc})", "phase_pattern", text) from None
        groups = set(regex.groupindex)
        if "phase" not in groups or not groups & {"seconds", "ms", "edge"}:
            raise UsageError(
                "needs the named groups (?P<phase>…) and one of (?P<seconds>…), (?P<ms>…) or "
                "(?P<edge>start|end), e.g. 'phase (?P<phase>\\w+) took (?P<seconds>[0-9.]+) s'",
                "phase_pattern",
                text,
            )
        return cls(regex)

    def match(self, message: str) -> tuple[str, float | None, str] | None:
        """(phase, seconds or None, edge or "") of a matching message, else None; ValueError
        when the duration or edge matched is not one."""
        m = self.regex.search(message)
        if m is None:
            return None
        got = m.groupdict()
        if got.get("seconds") is not None:
            return got["phase"], _seconds(got["seconds"], 1.0), ""
        if got.get("ms") is not None:
            return got["phase"], _seconds(got["ms"], 1e-3), ""
        edge = EDGES.get((got.get("edge") or "").lower())
        if edge is None:
            raise ValueError(f"edge {got.get('edge')!r}: expected one of {', '.join(EDGES)}")
        return got["phase"], None, edge


def _seconds(text: str, unit: float) -> float:
    x = float(text) * unit
    if not x >= 0 or x == float("inf"):
        raise ValueError(f"duration {text!r}: not a non-negative number")
    return x


# -- files: detection and streaming ---------------------------------------------------------------


def detect(path: Path) -> bool:
    """Whether a file is a Cloud Logging export: its first entry (a JSON array's element or the
    first JSON line) is an object with a ``resource`` or a ``logName``."""
    try:
        first = next(_entries(Path(path)), None)
    except (InputError, OSError, UnicodeDecodeError):
        return False
    return first is not None and _is_entry(first[1])


def refuse_unknown(path: Path) -> None:
    """A JSON array that is not a Cloud Logging export is no format startsim reads: say so
    (our own logs are CSV or JSON lines, never an array)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(4096).lstrip()[:1]
    except (OSError, UnicodeDecodeError):
        return
    if head == "[":
        raise InputError(
            str(path),
            None,
            "not a known format: a JSON array whose first element is not a Cloud Logging "
            "LogEntry (no resource or logName); startsim reads campaign folders, CSV / JSON-lines "
            "start-up logs, Cloud Logging exports, Kubernetes events and pod status, OTLP/JSON "
            "traces and PostgreSQL server logs (docs/formats.md)",
        )


def _is_entry(obj: object) -> bool:
    return isinstance(obj, dict) and ("logName" in obj or isinstance(obj.get("resource"), dict))


def _entries(path: Path, progress=None) -> Iterator[tuple[str, object]]:
    """Each entry with where it was: ``(":5", obj)`` for JSON lines, ``("$[4]", obj)`` for an
    array's elements. ``progress(bytes_read)`` is called every :data:`PROGRESS_EVERY` entries."""
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(1)
        while head.isspace():
            head = f.read(1)
        if head == "[":
            items = _array(f, str(path))
        else:
            f.seek(0)
            items = (
                (f":{n}", _json(line, str(path), n))
                for n, line in enumerate(f, start=1)
                if line.strip()
            )
        for i, item in enumerate(items, start=1):
            if progress is not None and i % PROGRESS_EVERY == 0:
                progress(f.buffer.tell())
            yield item


PROGRESS_EVERY = 10_000
entries = _entries  # public: Cloud SQL's entries (sim.calibrate.pglog) stream the same way


def _json(line: str, path: str, number: int) -> object:
    try:
        return json.loads(line)
    except json.JSONDecodeError as exc:
        why = CUT if not line.endswith("\n") else f"not JSON ({exc.msg})"
        raise InputError(path, number, why) from None


_SPACE = re.compile(r"\s*")


def _array(f, path: str) -> Iterator[tuple[str, object]]:
    """The elements of a JSON array whose ``[`` was read, decoded piece by piece."""
    decoder, buf, pos, index, eof = json.JSONDecoder(), "", 0, 0, False

    def more() -> bool:
        nonlocal buf, pos, eof
        piece = f.read(CHUNK_CHARS)
        buf, pos, eof = buf[pos:] + piece, 0, not piece
        return bool(piece)

    def skip_space() -> str:
        nonlocal pos
        while True:
            pos = _SPACE.match(buf, pos).end()
            if pos < len(buf) or not more():
                return buf[pos : pos + 1]

    if skip_space() == "]":
        return
    while True:
        if not skip_space():
            raise InputError(path, None, f"$[{index}]: cut short (a truncated file?)")
        try:
            obj, end = decoder.raw_decode(buf, pos)
        except json.JSONDecodeError as exc:
            if not eof and more():
                continue
            why = "cut short (a truncated file?)" if eof else f"not JSON ({exc.msg})"
            raise InputError(path, None, f"$[{index}]: {why}") from None
        # A number at the buffer's end may continue in the next piece: decode it again then.
        if end == len(buf) and not eof and more():
            continue
        yield f"$[{index}]", obj
        index, pos = index + 1, end
        sep = skip_space()
        if sep == "]":
            return
        if sep != ",":
            why = CUT if not sep else f"expected ',' or ']', not {sep!r}"
            raise InputError(path, None, f"after $[{index - 1}]: {why}")
        pos += 1


# -- entries into lines ---------------------------------------------------------------------------


def _fail(path: str, where: str, field: str, problem: str) -> InputError:
    """``file:5: timestamp = 'x': …`` (JSON lines) or ``file: $[4].timestamp = 'x': …``."""
    text = f"{field}{problem}" if field else problem.removeprefix(": ")
    if where.startswith(":"):
        return InputError(path, int(where[1:]), text)
    return InputError(path, None, f"{where}.{text}" if field else f"{where}: {text}")


fail_at = _fail  # public: other readers of LogEntry files name the place the same way


def entry_line(obj: object, where: str, path: str, pattern: PhasePattern | None, tally: Tally):
    """The :class:`Line` an entry gives, or None (skipped, and counted in ``tally``)."""
    tally.entries += 1
    if not isinstance(obj, dict):
        raise _fail(path, where, "", ": not a JSON object (a LogEntry)")
    t_ns = _time(obj, where, path)
    if t_ns is not None:
        tally.seen(t_ns)
    resource = obj.get("resource") if isinstance(obj.get("resource"), dict) else {}
    if resource.get("type") not in RESOURCES:
        return tally.skip(f"resource.type {resource.get('type') or '(none)'}")
    if "httpRequest" in obj:
        return tally.skip("request logs (httpRequest)")
    if "protoPayload" in obj:
        return tally.skip("audit and other protoPayload entries")
    kind, value, code, seconds, edge = _what(_message(obj), pattern, where, path)
    labels = obj.get("labels") if isinstance(obj.get("labels"), dict) else {}
    instance = labels.get("instanceId")
    if not instance:
        if kind != "app":
            raise _fail(path, where, "labels.instanceId", f": missing on a start-up line ({kind})")
        return tally.skip("lines about no one instance (no labels.instanceId)")
    if t_ns is None:
        raise _fail(path, where, "timestamp", ": missing")
    rl = resource.get("labels") if isinstance(resource.get("labels"), dict) else {}
    run = rl.get("revision_name") or rl.get("job_name") or rl.get("service_name") or "cloud-run"
    insert = obj.get("insertId")
    tally.used += 1
    # The service's other lines count only by their latest times, which a repeat cannot change:
    # remembering their ids would make memory grow with the export.
    if kind != "app" and insert is not None and tally.duplicate(str(insert), t_ns):
        return None
    return Line(t_ns, kind, str(instance), str(run), where, value, code, seconds, edge)


def _time(obj: dict, where: str, path: str) -> int | None:
    if "timestamp" not in obj:
        return None
    try:
        return parse_time_ns(obj["timestamp"])
    except (ValueError, OverflowError):
        raise _fail(
            path,
            where,
            "timestamp",
            f" = {obj['timestamp']!r}: not an RFC 3339 time (e.g. 2026-11-29T06:15:02.123456789Z)",
        ) from None


def _message(obj: dict) -> str:
    if isinstance(obj.get("textPayload"), str):
        return obj["textPayload"]
    payload = obj.get("jsonPayload")
    if isinstance(payload, dict):
        for key in ("message", "msg"):
            if isinstance(payload.get(key), str):
                return payload[key]
    return ""


def _what(text: str, pattern: PhasePattern | None, where: str, path: str):
    """(kind, value, exit code, seconds, edge) of a message."""
    for regex, kind in PLATFORM:
        m = regex.search(text)
        if m is None:
            continue
        if kind == "start":
            return kind, m.group(1), None, None, ""
        if kind == "exit":
            return kind, "", int(m.group(1)), None, ""
        return kind, "", None, None, ""
    if pattern is not None:
        try:
            got = pattern.match(text)
        except ValueError as exc:
            raise _fail(path, where, "textPayload", f" (or jsonPayload.message): {exc}") from None
        if got is not None:
            return "phase", got[0], None, got[1], got[2]
    return "app", "", None, None, ""


# -- the reader -----------------------------------------------------------------------------------


def _absent(pmap, names: list[str]) -> str:
    """A hint when the database phase never appears (every start failed before logging it):
    the phases before it cannot be told from the file's order then."""
    missing = [p for p in pmap.database if p not in names]
    if not missing:
        return ""
    return (
        f"; {', '.join(missing)} never appears in the file, so name every part "
        "(e.g. before=config;database=db)"
    )


def read_cloud_logging(
    path: Path, phases: str | None = None, phase_pattern: str | None = None, progress=None
) -> list[Run]:
    """A Cloud Logging export of a Cloud Run service: one :class:`Run` per revision.
    ``progress(bytes_read)``, if given, is told how far the reading is (the CLI's bar)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "no such file or campaign folder")
    pattern = PhasePattern.of(phase_pattern) if phase_pattern else None
    tally, lines, latest = Tally(), [], {}
    try:
        for where, obj in _entries(path, progress):
            line = entry_line(obj, where, str(path), pattern, tally)
            if line is None:
                continue
            if line.kind != "app":
                lines.append(line)
                continue
            kept = latest.setdefault((line.run, line.instance), [])
            (heapq.heappush if len(kept) < APP_LINES_KEPT else heapq.heappushpop)(kept, line.t_ns)
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, f"cannot read it ({exc})") from None
    lines += [Line(t, "app", inst, run, "") for (run, inst), ts in latest.items() for t in ts]
    if tally.entries == 0:
        raise InputError(str(path), None, "empty: no log entry in it")
    if not lines:
        raise InputError(
            str(path),
            None,
            f"no Cloud Run start-up lines among {tally.entries} entries ({tally.describe()}): "
            "export the service's logs with resource.type cloud_run_revision",
        )
    lines.sort(key=lambda ln: ln.t_ns)  # newest-first exports are normal; phases in their order
    names = cloudrun.phase_names(lines)
    if names and phases is None:
        raise InputError(
            str(path),
            None,
            f"which phases are database init? give --phases database=NAME "
            f"(phases in the file: {', '.join(names)})",
        )
    pmap = parse_phases(phases, names) if phases else None
    if pmap is not None and (unknown := [p for p in names if pmap.part_of(p) is None]):
        raise InputError(
            str(path),
            None,
            f"phases {', '.join(unknown)} are in no part of the mapping ({pmap.describe()})"
            + _absent(pmap, names),
        )
    return cloudrun.runs_of(lines, str(path), pmap, tally)
