"""OpenTelemetry OTLP/JSON traces of a service's start-up, read as start attempts (docs/formats.md).

A file holds one ``{"resourceSpans": …}`` object (the OTLP/JSON encoding; ``examples/trace.json``
in open-telemetry/opentelemetry-proto) or JSON lines of them (the Collector's file exporter). Each
start-up span (``--startup-span``, default :data:`STARTUP_SPAN`) is one attempt; its children
named in ``--phases`` are its phases. An instance is the resource's ``service.instance.id``, else
``host.name``, else the trace; its start-up spans in time order are its attempts 1, 2, ….
Times are kept as integer nanoseconds: durations are exact differences of them.

The outcome of a start-up span (the rule, in order):

1. an ``exit.code`` or ``process.exit.code`` attribute: 0 ready, 3 timeout, else error — the
   same rule as our own log's ``exit_code`` (3 is the start-up deadline's exit, incident R12);
2. a ``db.response.status_code`` of ``53300`` on it or a phase child: rejected (too many clients);
3. status ``STATUS_CODE_ERROR`` (``2``): timeout when an event or an ``error.type`` names a
   deadline or timeout, else error;
4. otherwise ready.

``resourceMetrics`` with the pool metrics ``db.client.connection.create_time`` / ``wait_time``
(histograms) and ``timeouts`` (a sum) are summed and reported as measured figures (notes).
Spans of other names are skipped and counted. JSON lines are read one line at a time, one
document a span at a time (:mod:`sim.calibrate.jsonstream`); only start-up and phase spans are
kept. :mod:`sim.calibrate.traces` chains the start-up spans into restarts and counts them as
monitoring would. Every problem is an :class:`~sim.errors.InputError` naming
the file, the line and the JSON path of the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from sim.calibrate import jsonstream, traces
from sim.calibrate.inputs import PARTS, Attempt, PhaseMap, Run, parse_phases
from sim.errors import InputError
from sim.records import Outcome, Reason

STARTUP_SPAN = "startup"
INSTANCE_KEYS = ("service.instance.id", "host.name")
EXIT_KEYS = ("exit.code", "process.exit.code")
POOL_METRICS = ("create_time", "wait_time", "timeouts")
_STATUS_ERROR = (2, "STATUS_CODE_ERROR")
_DEADLINE_WORDS = ("deadline", "timeout", "timed out")
_NS = 1_000_000_000
# What the model calls the same stretch of time: a pool's create_time is a whole connection set-up
# as the client sees it; its wait_time is the wait for a connection of the pool.
_COUNTERPART = {
    "create_time": " (measured; the model's counterpart: connector.setup_s + database.accept_s)",
    "wait_time": " (measured; not a scenario field: the pool's queue, simulated)",
}


@dataclass(frozen=True, slots=True)
class Span:
    """What is kept of one span: times in ns, its links, and what decides an outcome."""

    trace: str
    span_id: str
    parent: str
    name: str
    start_ns: int
    end_ns: int
    instance: str
    run: str
    where: str
    exit_code: int | None = None
    error: bool = False
    deadline: bool = False
    refused: bool = False


@dataclass
class PoolFigures:
    """The pool metrics summed over data points: count and sum (s) per histogram, timeouts."""

    count: dict[str, int] = field(default_factory=dict)
    sum_s: dict[str, float] = field(default_factory=dict)
    timeouts: int = 0
    seen: bool = False

    def lines(self, path: str) -> list[str]:
        out = []
        for key in ("create_time", "wait_time"):
            n = self.count.get(key, 0)
            if n:
                mean = self.sum_s[key] / n
                line = f"{path}: db.client.connection.{key}: n {n}, mean {mean:.4g} s"
                out.append(line + _COUNTERPART[key])
        if self.seen:
            out.append(f"{path}: db.client.connection.timeouts: {self.timeouts}")
        return out


@dataclass
class _Tally:
    spans: int = 0
    skipped: dict[str, int] = field(default_factory=dict)

    def skip(self, why: str, n: int = 1) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + n

    def describe(self) -> str:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items())) or "none"
        return f"{self.spans} spans; skipped: {kinds}"


# -- files ----------------------------------------------------------------------------------------


def detect(path: Path) -> bool:
    """Whether a file is OTLP/JSON: its first 64 KiB name ``resourceSpans`` or
    ``resourceMetrics`` as a key before anything else."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(65536)
    except (OSError, UnicodeDecodeError):
        return False
    text = head.lstrip()
    return text.startswith("{") and any(
        text[1:].lstrip().startswith(f'"{k}"') for k in ("resourceSpans", "resourceMetrics")
    )


def _objects(path: Path, progress=None) -> Iterator[tuple[int, dict]]:
    """(line, object) of JSON lines, one line at a time; nothing when the first line is not a
    whole object (one document spread over the file: :func:`_document`)."""
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline()
        try:
            obj = json.loads(first) if first.strip() else None
        except json.JSONDecodeError:
            obj = None
        if obj is None:
            return
        yield 1, _object(obj, str(path), 1)
        for number, line in enumerate(f, start=2):
            if progress is not None and number % 1000 == 0:
                progress(f.buffer.tell())
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                why = "cut short (a truncated file?)" if not line.endswith("\n") else exc.msg
                raise InputError(str(path), number, f"not JSON ({why})") from None
            yield number, _object(obj, str(path), number)


def _one_line(path: Path) -> bool:
    """Whether the file is JSON lines (its first line a whole object, within
    :data:`LINE_LOOKAHEAD_CHARS`) rather than one document, or lines too long to take whole
    (both are read by :func:`_document`, a span at a time)."""
    with open(path, encoding="utf-8-sig") as f:
        first = f.readline(LINE_LOOKAHEAD_CHARS)
    if not first.endswith("\n"):
        return False
    try:
        return isinstance(json.loads(first), dict)
    except json.JSONDecodeError:
        return False


LINE_LOOKAHEAD_CHARS = 1 << 22  # a Collector batch of a few thousand spans fits


def _object(obj: object, path: str, line: int | None) -> dict:
    if not isinstance(obj, dict) or not ({"resourceSpans", "resourceMetrics"} & set(obj)):
        raise InputError(path, line, "$: not an OTLP/JSON object (no resourceSpans)")
    return obj


# The paths of one document read element by element: each span, each resourceMetrics.
SPANS_PATH = ("resourceSpans", "*", "scopeSpans", "*", "spans", "*")
STREAMED_PATHS = (SPANS_PATH, ("resourceMetrics", "*"))


def _items(path: Path, progress=None) -> Iterator[tuple]:
    """The spans and the metrics of a file, one at a time, whatever its layout:
    ``("span", line, json_path, raw, resource_attributes)`` and ``("metrics", line, json_path,
    resourceMetrics)``. JSON lines are read a line at a time; one document a span at a time."""
    if not _one_line(path):
        yield from _document(path, progress)
        return
    for line, obj in _objects(path, progress):
        for i, rs in enumerate(_list(obj, "resourceSpans", str(path), line, "$")):
            at = f"$.resourceSpans[{i}]"
            if not isinstance(rs, dict):
                raise _fail(str(path), line, at, "not an object")
            res = _resource(rs)
            for j, ss in enumerate(_list(rs, "scopeSpans", str(path), line, at)):
                at_s = f"{at}.scopeSpans[{j}]"
                for k, raw in enumerate(_list(ss, "spans", str(path), line, at_s)):
                    yield "span", line, f"{at_s}.spans[{k}]", raw, res
        for i, rm in enumerate(_list(obj, "resourceMetrics", str(path), line, "$")):
            yield "metrics", line, f"$.resourceMetrics[{i}]", rm


def _resource(rs: dict) -> dict:
    resource = rs.get("resource")
    return attributes(resource.get("attributes") if isinstance(resource, dict) else None)


_TOP = re.compile(r"\$(?:\[\d+\])?")
_RESOURCE_SPANS = re.compile(r"\$(?:\[\d+\])?\.resourceSpans\[\d+\]")
_RESOURCE_METRICS = re.compile(r"\$(?:\[\d+\])?\.resourceMetrics\[\d+\]")


def _document(path: Path, progress=None) -> Iterator[tuple]:
    """One document (pretty-printed, or an exporter's request body) read a span at a time
    (:mod:`sim.calibrate.jsonstream`). A resource is known once its ``resource`` member is read:
    spans before it (a writer that puts ``scopeSpans`` first) wait for it."""
    res, known, waiting = {}, False, []
    with open(path, encoding="utf-8-sig") as f:
        for event in jsonstream.walk(f, str(path), STREAMED_PATHS, progress):
            kind, where = event[0], event[1]
            if kind == "member" and event[2] == "resource" and _RESOURCE_SPANS.fullmatch(where):
                res, known = _resource({"resource": event[3]}), True
                yield from (("span", None, w, raw, res) for w, raw in waiting)
                waiting = []
            elif kind == "item" and _RESOURCE_METRICS.fullmatch(where):
                yield "metrics", None, where, event[2]
            elif kind == "item" and ".spans[" in where:
                if known:
                    yield "span", None, where, event[2], res
                else:
                    waiting.append((where, event[2]))
            elif kind == "end" and _RESOURCE_SPANS.fullmatch(where):
                yield from (("span", None, w, raw, {}) for w, raw in waiting)  # no resource
                res, known, waiting = {}, False, []
            elif kind == "value" or (kind == "end" and _TOP.fullmatch(where)):
                _object(event[2], str(path), None)  # refused unless an OTLP object


# -- values ---------------------------------------------------------------------------------------


def _fail(path: str, line: int | None, json_path: str, problem: str) -> InputError:
    return InputError(path, line, f"{json_path}: {problem}")


def _list(obj: object, key: str, path: str, line: int | None, at: str) -> list:
    if not isinstance(obj, dict):
        raise _fail(path, line, at, "expected an object")
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise _fail(path, line, f"{at}.{key}", "expected a list")
    return value


def attributes(items: object) -> dict[str, object]:
    """OTLP ``KeyValue`` list → {key: value} (``intValue`` is a string in OTLP/JSON)."""
    out: dict[str, object] = {}
    for kv in items if isinstance(items, list) else []:
        if not isinstance(kv, dict) or not isinstance(kv.get("value"), dict):
            continue
        v = kv["value"]
        for kind in ("stringValue", "intValue", "doubleValue", "boolValue"):
            if kind in v:
                out[str(kv.get("key"))] = _int(v[kind]) if kind == "intValue" else v[kind]
    return out


def _int(text: object) -> object:
    try:
        return int(text)
    except (TypeError, ValueError):
        return text  # kept as it came: a field that needs a number says so where it is read


def _ns(span: dict, key: str, path: str, line: int | None, at: str) -> int:
    value = span.get(key)
    try:
        ns = int(value) if isinstance(value, int | str) and not isinstance(value, bool) else None
    except ValueError:
        ns = None
    if ns is None or ns <= 0:
        raise _fail(path, line, f"{at}.{key}", f"{value!r}: expected Unix nanoseconds (> 0)")
    return ns


# -- spans ----------------------------------------------------------------------------------------


def _span(raw: object, res: dict, path: str, line: int | None, at: str) -> Span:
    if not isinstance(raw, dict):
        raise _fail(path, line, at, "not a span object")
    for key in ("traceId", "spanId"):
        if not isinstance(raw.get(key), str) or not raw[key]:
            raise _fail(path, line, f"{at}.{key}", f"{raw.get(key)!r}: missing")
    start, end = (
        _ns(raw, "startTimeUnixNano", path, line, at),
        _ns(raw, "endTimeUnixNano", path, line, at),
    )
    if end < start:
        raise _fail(path, line, f"{at}.endTimeUnixNano", f"{end} is before the start {start}")
    attrs = attributes(raw.get("attributes"))
    instance = next((str(res[k]) for k in INSTANCE_KEYS if res.get(k)), raw["traceId"])
    key = next((k for k in EXIT_KEYS if k in attrs), None)
    code = attrs.get(key) if key else None
    if code is not None and (not isinstance(code, int | float) or code != int(code)):
        raise _fail(path, line, f"{at}.attributes.{key}", f"{code!r}: not a whole number")
    status = raw.get("status") if isinstance(raw.get("status"), dict) else {}
    words = [str(e.get("name", "")) for e in raw.get("events") or [] if isinstance(e, dict)]
    words += [str(attrs.get("error.type", "")), str(status.get("message", ""))]
    return Span(
        trace=raw["traceId"],
        span_id=raw["spanId"],
        parent=str(raw.get("parentSpanId") or ""),
        name=str(raw.get("name", "")),
        start_ns=start,
        end_ns=end,
        instance=instance,
        run=str(res.get("service.name") or "otlp"),
        where=f"{path}:{line} {at}" if line else f"{path} {at}",
        exit_code=None if code is None else int(code),
        error=status.get("code") in _STATUS_ERROR,
        deadline=any(w in s.lower() for s in words for w in _DEADLINE_WORDS),
        refused=str(attrs.get("db.response.status_code", "")) == Reason.TOO_MANY_CLIENTS,
    )


def _spans(items, path: str, keep, tally: _Tally, figures: PoolFigures) -> Iterator[Span]:
    """The spans named in ``keep`` (the others counted and dropped); the pool metrics summed
    into ``figures`` on the way."""
    for item in items:
        if item[0] == "metrics":
            _pool(item[3], path, item[1], item[2], figures)
            continue
        _, line, at, raw, res = item
        tally.spans += 1
        name = raw.get("name") if isinstance(raw, dict) else None
        if name not in keep:
            tally.skip("spans of other names")
            continue
        yield _span(raw, res, path, line, at)


def _pool(rm: object, path: str, line: int | None, at_rm: str, figures: PoolFigures) -> None:
    for j, sm in enumerate(_list(rm, "scopeMetrics", path, line, at_rm)):
        at = f"{at_rm}.scopeMetrics[{j}]"
        for k, m in enumerate(_list(sm, "metrics", path, line, at)):
            name = str(m.get("name", "")) if isinstance(m, dict) else ""
            name = name.removeprefix("db.client.connection.")
            if name in POOL_METRICS and name != m.get("name"):
                _metric(m, name, path, line, f"{at}.metrics[{k}]", figures)


def _metric(m: dict, name: str, path: str, line, at: str, figures: PoolFigures) -> None:
    kind = "sum" if name == "timeouts" else "histogram"
    points = _list(m.get(kind) or {}, "dataPoints", path, line, f"{at}.{kind}")
    scale = 1e-3 if m.get("unit") == "ms" else 1.0  # semantic conventions: s; older: ms
    for n, p in enumerate(points):
        here = f"{at}.{kind}.dataPoints[{n}]"
        if kind == "sum":
            key = "asInt" if "asInt" in (p or {}) else "asDouble"
            figures.timeouts += int(_point(p, key, path, line, here))
            figures.seen = True
            continue
        count = int(_point(p, "count", path, line, here))
        figures.count[name] = figures.count.get(name, 0) + count
        figures.sum_s[name] = (
            figures.sum_s.get(name, 0.0) + _point(p, "sum", path, line, here) * scale
        )


def _point(p: object, key: str, path: str, line, at: str) -> float:
    value = p.get(key, 0) if isinstance(p, dict) else None
    try:
        x = float(value)
    except (TypeError, ValueError):
        x = float("nan")
    if not x >= 0 or x == float("inf"):
        raise _fail(path, line, f"{at}.{key}", f"{value!r}: not a number ≥ 0")
    return x


# -- spans into attempts --------------------------------------------------------------------------


def outcome_of(span: Span, children: list[Span]) -> tuple[str, str]:
    """(outcome, reason) by the rule in the module's docstring."""
    if span.exit_code is not None:
        code = span.exit_code
        out = {0: Outcome.READY, 3: Outcome.TIMEOUT}.get(code, Outcome.ERROR)
        return out, "" if code == 0 else f"exit({code})"
    if span.refused or any(c.refused for c in children):
        return Outcome.REJECTED, Reason.TOO_MANY_CLIENTS
    if span.error or any(c.error for c in children):
        if span.deadline or any(c.deadline for c in children):
            return Outcome.TIMEOUT, Reason.DEADLINE
        return Outcome.ERROR, Reason.OTHER
    return Outcome.READY, ""


def attempt_of(span: Span, children: list[Span], pmap: PhaseMap | None, number: int) -> Attempt:
    outcome, reason = outcome_of(span, children)
    ns = dict.fromkeys(PARTS, 0)
    queries = None
    for c in children:
        part = pmap.part_of(c.name) if pmap else None
        if part is not None:
            ns[part] += c.end_ns - c.start_ns
        if pmap and c.name in pmap.queries:
            queries = (queries or 0) + (c.end_ns - c.start_ns)
    if pmap is None:  # no phases: the whole start-up is taken as database init (a note says so)
        ns["database"] = span.end_ns - span.start_ns
    ready = outcome == Outcome.READY
    return Attempt(
        instance=span.instance,
        attempt=number,
        start_unix_s=span.start_ns / _NS,
        before_db_s=ns["before"] / _NS,
        db_init_s=ns["database"] / _NS,
        after_db_s=ns["after"] / _NS if ready else None,
        outcome=outcome,
        reason=reason,
        where=span.where,
        init_queries_s=None if queries is None or not ready else queries / _NS,
    )


def read_otlp(
    path: Path, phases: str | None = None, startup_span: str | None = None, progress=None
) -> list[Run]:
    """An OTLP/JSON trace file: one :class:`Run` per ``service.name``. Only the start-up spans
    and the phase spans named in ``phases`` are kept, whatever the file's size."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "no such file or campaign folder")
    name = startup_span or STARTUP_SPAN
    pmap = parse_phases(phases) if phases else None
    keep = {name, *(n for p in (*PARTS, "queries") for n in getattr(pmap, p, ()))}
    tally, figures = _Tally(), PoolFigures()
    starts: list[Span] = []
    children: dict[tuple[str, str], list[Span]] = {}
    try:
        for s in _spans(_items(path, progress), str(path), keep, tally, figures):
            if s.name == name:
                starts.append(s)
            else:
                children.setdefault((s.trace, s.parent), []).append(s)
        if pmap is None and starts and (named := _child_names(path, starts)):
            raise InputError(
                str(path),
                None,
                "which child spans are database init? give --phases database=NAME "
                f"(children of {name!r}: {', '.join(named)})",
            )
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, f"cannot read it ({exc})") from None
    return _runs(path, name, starts, children, pmap, tally, figures)


def _child_names(path: Path, starts: list[Span]) -> list[str]:
    """The names of the start-up spans' children, in the file's order: without ``--phases``
    the file is read a second time for them (children usually come before their parent, and
    keeping every span to name them would hold the whole file)."""
    own = {(s.trace, s.span_id) for s in starts}
    names: dict[str, None] = {}
    for item in _items(path):
        raw = item[3] if item[0] == "span" else None
        if isinstance(raw, dict) and (raw.get("traceId"), raw.get("parentSpanId")) in own:
            names.setdefault(str(raw.get("name", "")), None)
    return list(names)


def _failure(span: Span, outcome: str, reason: str) -> str:
    """What monitoring would call a failed start: its exit code, else its status."""
    if outcome == Outcome.READY:
        return ""
    if span.exit_code is not None:
        return f"exit({span.exit_code})"
    if outcome == Outcome.REJECTED:
        return f"{Reason.TOO_MANY_CLIENTS} (too many clients)"
    return "status ERROR (deadline)" if reason == Reason.DEADLINE else "status ERROR"


def _runs(path, name, starts, children, pmap, tally, figures) -> list[Run]:
    if not starts:
        raise InputError(
            str(path),
            None,
            f"no start-up span named {name!r} among {tally.spans} spans: name it with "
            "--startup-span NAME",
        )
    own = {(s.trace, s.span_id) for s in starts}
    mine = {k: v for k, v in children.items() if k in own}
    orphans = sum(len(v) for k, v in children.items() if k not in own)
    if orphans:
        tally.skip("phase-named spans whose parent is no start-up span", orphans)
    spans = sorted(starts, key=lambda s: s.start_ns)
    got = [outcome_of(s, mine.get((s.trace, s.span_id), [])) for s in spans]
    chained = [
        traces.SpanStart(s.instance, s.run, s.start_ns, s.end_ns, out, _failure(s, out, why))
        for s, (out, why) in zip(spans, got, strict=True)
    ]
    traces.chain(chained)
    by_run: dict[str, list[Attempt]] = {}
    for s, c in zip(spans, chained, strict=True):
        a = attempt_of(s, mine.get((s.trace, s.span_id), []), pmap, c.attempt)
        by_run.setdefault(s.run, []).append(replace(a, instance=c.chain))
    runs = []
    for run, attempts in by_run.items():
        r = Run(run, str(path), "log", attempts, phase_map=pmap, deploys_by_run=False)
        r.monitoring = traces.monitoring(run, [c for c in chained if c.run == run])
        runs.append(r)
    runs[0].notes.append(f"{path}: {tally.describe()}")
    runs[0].notes += figures.lines(str(path))
    if pmap is None:
        runs[0].notes.append(
            f"{path}: no child spans mapped (give --phases): each {name!r} span's whole "
            "duration is taken as database init"
        )
    return runs
