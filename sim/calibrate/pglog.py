"""PostgreSQL server logs read as the server's side of a start-up storm (docs/formats.md).

A plain log (``log_destination = stderr``, each line begun by ``log_line_prefix``) or Cloud SQL's
Cloud Logging entries (``resource.type`` ``cloudsql_database``, the line in ``textPayload``). With
``log_connections`` (and ``log_disconnections``) the server logs each connection (PostgreSQL's
message formats; platform-facts.md, "Telemetry formats a team already has"):

- ``connection received: host=… port=…`` and ``connection authorized: user=… database=…``,
  counted per second;
- PostgreSQL 18's ``connection ready: setup total=… ms, fork=… ms, authentication=… ms``: from
  the server's ``accept()`` to ready for query — a measured ``database.accept_s`` per connection;
- refusals ``FATAL:  sorry, too many clients already`` and ``remaining connection slots are
  reserved for …`` (SQLSTATE 53300);
- ``disconnection: session time: …``: with the authorisations, the connections held at any time.

A server log holds no start attempts: its :class:`~sim.calibrate.inputs.Run` has none, and
carries a :class:`ServerLog` (``run.server``). Lines are read one at a time; only the connection
events (a few numbers each) are kept, to be put in time order (a Cloud Logging export is newest
first). Every problem is an :class:`~sim.errors.InputError` naming the file, the line (or JSON
path) and the field.
"""

from __future__ import annotations

import math
import re
from array import array
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from sim.calibrate import cloudlogging
from sim.calibrate.inputs import Run
from sim.errors import InputError

DEFAULT_PREFIX = "%m [%p] "  # PostgreSQL's default log_line_prefix (since 10)
CLOUDSQL = "cloudsql_database"
LEVELS = r"(?:LOG|FATAL|ERROR|WARNING|NOTICE|INFO|PANIC|DEBUG[1-5]?|DETAIL|HINT|CONTEXT|STATEMENT)"
_TIME = r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}(?:\.\d+)?(?: ?(?:[A-Za-z]+|[+-]\d{2}(?::?\d{2})?))?"
_ESCAPES = {
    "m": f"(?P<time>{_TIME})",
    "t": f"(?P<time>{_TIME})",
    "n": r"(?P<epoch>\d+(?:\.\d+)?)",
    "p": r"(?P<pid>\d+)",
    "h": r"(?P<host>\S*?)",
    "u": r"(?P<user>.*?)",
    "d": r"(?P<database>.*?)",
    "a": r"(?P<application>.*?)",
}
CONNECTION_MESSAGES = (
    ("received", re.compile(r"^connection received: host=(\S+)")),
    ("authorized", re.compile(r"^connection authorized: ")),
    ("ready", re.compile(r"^connection ready: setup total=([0-9.]+) ms")),
    (
        "refused",
        re.compile(r"^(?:sorry, too many clients already|remaining connection slots are reserved)"),
    ),
    ("disconnected", re.compile(r"^disconnection: session time: ")),
)


def prefix_regex(prefix: str) -> re.Pattern:
    """A ``log_line_prefix`` as a regular expression for the start of a line: ``%m %t %n %p %h
    %u %d %a`` captured, any other escape matched as any text (``%q`` as nothing), then the
    level and the message."""
    out, used, i = [], set(), 0
    while i < len(prefix):
        if prefix[i] != "%" or i + 1 == len(prefix):
            out.append(re.escape(prefix[i]))
            i += 1
            continue
        m = re.match(r"%(-?\d*)(.)", prefix[i:])
        code, i = m.group(2), i + m.end()
        group = _ESCAPES.get(code, "")[4:].partition(">")[0]
        if code == "%":
            out.append("%")
        elif code == "q":
            continue
        elif group and group not in used:  # a second %m (or %t) is matched, not captured
            used.add(group)
            out.append(r"\s*" + _ESCAPES[code] + r"\s*" if m.group(1) else _ESCAPES[code])
        else:
            out.append(r".*?")
    return re.compile("^" + "".join(out) + rf"(?P<level>{LEVELS}):\s+(?P<message>.*)$")


# -- times ----------------------------------------------------------------------------------------


def parse_pg_time_ns(text: str) -> int:
    """``2026-11-29 06:15:02.123 UTC`` (``%m``; ``%t`` without the fraction) as Unix ns; a zone
    is ``UTC``/``GMT``/``Z`` or a numeric offset (``+01``, ``-05:30``). Raises ValueError."""
    m = re.fullmatch(
        r"(\d{4})-(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))? ?(\S*)", text.strip()
    )
    if m is None:
        raise ValueError(text)
    zone = m.group(8).upper()
    if zone in ("", "UTC", "GMT", "Z"):
        offset = timedelta(0)
    elif re.fullmatch(r"[+-]\d{2}(?::?\d{2})?", zone):
        digits = zone[1:].replace(":", "")
        sign = -1 if zone[0] == "-" else 1
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
    else:
        raise ValueError(f"time zone {zone!r}")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    whole = datetime(y, mo, d, h, mi, s, tzinfo=UTC) - offset
    epoch = int(whole.timestamp())
    return epoch * 1_000_000_000 + int((m.group(7) or "").ljust(9, "0"))


# -- what is measured -----------------------------------------------------------------------------


@dataclass
class ServerLog:
    """What a server log measured: per-connection set-up times (s), refusals, and the most
    connections authorised and not yet disconnected when a refusal happened."""

    source: str
    first_ns: int = 0
    last_ns: int = 0
    received: int = 0
    authorized: int = 0
    peak_received_per_s: int = 0
    peak_authorized_per_s: int = 0
    setup_s: list[float] = field(default_factory=list)
    refusals: int = 0
    held_at_refusal: int | None = None  # the most held at any refusal
    peak_held: int = 0
    before_log: int = 0  # disconnections of sessions the log did not see open
    by_pid: bool = True
    lines: int = 0
    skipped: int = 0

    @property
    def span_s(self) -> float:
        return (self.last_ns - self.first_ns) / 1e9

    def describe(self) -> list[str]:
        span = max(self.span_s, 1.0)
        out = [
            f"{self.source}: {self.lines} lines, {self.skipped} skipped (not connection lines); "
            f"connections received {self.received} (peak {self.peak_received_per_s}/s, mean "
            f"{self.received / span:.3g}/s), authorised {self.authorized} (peak "
            f"{self.peak_authorized_per_s}/s, mean {self.authorized / span:.3g}/s) over "
            f"{self.span_s:.1f} s",
            f"{self.source}: {len(self.setup_s)} 'connection ready: setup total' lines "
            f"(PostgreSQL 18), {self.refusals} refusals (53300), at most {self.peak_held} "
            f"connections held"
            + ("" if self.by_pid else " (no %p in the prefix: counted, not joined by pid)"),
        ]
        if self.before_log:
            out.append(
                f"{self.source}: {self.before_log} disconnections of sessions opened before the "
                "log began: the connections held are undercounted by up to that many"
            )
        return out


class _Tracker:
    """Connections held: authorised and not yet disconnected (by pid, else by count)."""

    def __init__(self, log: ServerLog) -> None:
        self.log, self.pids, self.count = log, set(), 0
        self.per_s: dict[str, dict[int, int]] = {"received": {}, "authorized": {}}

    def event(self, t_ns: int, kind: str, pid: str | None, value: float | None) -> None:
        log = self.log
        log.first_ns = t_ns if not log.first_ns else min(log.first_ns, t_ns)
        log.last_ns = max(log.last_ns, t_ns)
        if kind in self.per_s:
            bins = self.per_s[kind]
            bins[t_ns // 1_000_000_000] = bins.get(t_ns // 1_000_000_000, 0) + 1
        if kind == "received":
            log.received += 1
        elif kind == "authorized":
            log.authorized += 1
            self._open(pid)
        elif kind == "ready":
            log.setup_s.append(value / 1000.0)
        elif kind == "disconnected":
            self._close(pid)
        elif kind == "refused":
            log.refusals += 1
            log.held_at_refusal = max(log.held_at_refusal or 0, self.held)
        log.peak_held = max(log.peak_held, self.held)

    @property
    def held(self) -> int:
        return len(self.pids) + self.count

    def _open(self, pid: str | None) -> None:
        if pid is not None:
            self.pids.add(pid)
        else:
            self.count += 1
            self.log.by_pid = False

    def _close(self, pid: str | None) -> None:
        if pid is not None and pid in self.pids:
            self.pids.discard(pid)
        elif pid is None and self.count:
            self.count -= 1
        else:
            self.log.before_log += 1

    def finish(self) -> None:
        self.log.peak_received_per_s = max(self.per_s["received"].values(), default=0)
        self.log.peak_authorized_per_s = max(self.per_s["authorized"].values(), default=0)


# -- lines ----------------------------------------------------------------------------------------


def classify(message: str) -> tuple[str, float | None] | None:
    for kind, regex in CONNECTION_MESSAGES:
        m = regex.search(message)
        if m is not None:
            return kind, (float(m.group(1)) if kind == "ready" else None)
    return None


def _line_time(m: re.Match, fail) -> int:
    got = m.groupdict()
    if got.get("time") is not None:
        try:
            return parse_pg_time_ns(got["time"])
        except (ValueError, OverflowError) as exc:
            raise fail(
                "%m",
                f"timestamp {got['time']!r} does not parse ({exc}): expected "
                "YYYY-MM-DD HH:MM:SS[.mmm] with UTC or a numeric offset (log_timezone = 'UTC')",
            ) from None
    if got.get("epoch") is not None:
        return round(float(got["epoch"]) * 1e9)
    raise fail("log_line_prefix", "has no %m, %t or %n: the lines carry no time")


def detect(path: Path, prefix: str | None = None) -> bool:
    """A plain log whose first non-empty lines begin with the prefix and a level, or a Cloud
    Logging export whose first entry is a ``cloudsql_database`` one."""
    regex = prefix_regex(prefix or DEFAULT_PREFIX)
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = [ln for ln in (f.readline() for _ in range(20)) if ln.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    if head and head[0].lstrip().startswith(("{", "[")):
        try:
            first = next(cloudlogging.entries(Path(path)), None)
        except (InputError, OSError, UnicodeDecodeError):
            return False
        res = first[1].get("resource") if first and isinstance(first[1], dict) else None
        return isinstance(res, dict) and res.get("type") == CLOUDSQL
    return bool(head) and regex.match(head[0].rstrip("\n")) is not None


def read_pg_log(path: Path, prefix: str | None = None, progress=None) -> list[Run]:
    """A PostgreSQL server log, plain or as Cloud SQL entries: one :class:`Run` with no attempts
    and its :class:`ServerLog` in ``run.server``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(str(path), None, "no such file or campaign folder")
    regex = prefix_regex(prefix or DEFAULT_PREFIX)
    log = ServerLog(str(path), by_pid="(?P<pid>" in regex.pattern)
    events = _Events()
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(1)
            while head.isspace():
                head = f.read(1)
        source = (
            _entries(path, regex, log, progress)
            if head in "{["
            else _plain(path, regex, log, progress)
        )
        for item in source:
            events.add(*item)
    except UnicodeDecodeError as exc:
        raise InputError(str(path), None, f"cannot read it ({exc})") from None
    if not len(events):
        raise InputError(
            str(path),
            None,
            f"no connection lines among {log.lines} lines (set log_connections = on, and "
            f"check --log-line-prefix {prefix or DEFAULT_PREFIX!r} against the server's)",
        )
    tracker = _Tracker(log)
    for t_ns, kind, pid, value in events.in_time_order():
        tracker.event(t_ns, kind, pid, value)
    tracker.finish()
    run = Run(f"postgres-{path.stem}", str(path), "server-log", [])
    run.server = log
    run.notes += log.describe()
    return [run]


CONNECTION_KINDS = tuple(kind for kind, _ in CONNECTION_MESSAGES)


class _Events:
    """The connection events, to be put in time order (a Cloud SQL export is newest first): a few
    numbers each in typed arrays (time, kind, pid, value: 25 bytes), not Python objects, so a
    log of millions of connections fits in tens of MB."""

    def __init__(self) -> None:
        self.t_ns, self.kind = array("q"), array("B")
        self.pid, self.value = array("q"), array("d")

    def __len__(self) -> int:
        return len(self.t_ns)

    def add(self, t_ns: int, kind: str, pid: str | None, value: float | None) -> None:
        self.t_ns.append(t_ns)
        self.kind.append(CONNECTION_KINDS.index(kind))
        self.pid.append(-1 if pid is None else int(pid))
        self.value.append(math.nan if value is None else value)

    def in_time_order(self):
        """(t_ns, kind, pid or None, value or None), by time, ties in the file's order; the order
        taken as Python ints a block at a time (a list of millions would double the memory)."""
        order = np.argsort(np.frombuffer(self.t_ns, dtype=np.int64), kind="stable")
        for at in range(0, len(order), ORDER_BLOCK):
            for i in order[at : at + ORDER_BLOCK].tolist():
                pid, value = self.pid[i], self.value[i]
                yield (
                    self.t_ns[i],
                    CONNECTION_KINDS[self.kind[i]],
                    None if pid < 0 else pid,
                    None if math.isnan(value) else value,
                )


ORDER_BLOCK = 1 << 16


def _plain(path: Path, regex: re.Pattern, log: ServerLog, progress=None):
    with open(path, "rb") as raw:
        for number, data in enumerate(raw, start=1):
            if progress is not None and number % cloudlogging.PROGRESS_EVERY == 0:
                progress(raw.tell())
            # A statement logged may carry any client encoding: only the connection lines matter.
            line = data.decode("utf-8", "replace").rstrip("\r\n")
            line = line.removeprefix("\ufeff") if number == 1 else line
            if not line.strip():
                continue
            log.lines += 1
            m = regex.match(line)
            got = classify(m.group("message")) if m else None
            if got is None:  # continuation lines, other messages, a prefix that does not match
                log.skipped += 1
                continue

            def fail(fld, problem, number=number):
                return InputError(str(path), number, f"{fld}: {problem}")

            yield _line_time(m, fail), got[0], m.groupdict().get("pid"), got[1]


def _entries(path: Path, regex: re.Pattern, log: ServerLog, progress):
    for where, obj in cloudlogging.entries(path, progress):
        log.lines += 1
        res = obj.get("resource") if isinstance(obj, dict) else None
        text = obj.get("textPayload") if isinstance(obj, dict) else None
        if not isinstance(res, dict) or res.get("type") != CLOUDSQL or not isinstance(text, str):
            log.skipped += 1
            continue
        m = regex.match(text.rstrip("\n"))
        message = m.group("message") if m else _after_level(text)
        got = classify(message) if message is not None else None
        if got is None:
            log.skipped += 1
            continue

        def fail(fld, problem, where=where):
            return cloudlogging.fail_at(str(path), where, fld, f": {problem}")

        if m is not None and (m.groupdict().get("time") or m.groupdict().get("epoch")):
            t_ns = _line_time(m, fail)
        else:
            try:
                t_ns = cloudlogging.parse_time_ns(obj.get("timestamp"))
            except (ValueError, OverflowError):
                raise fail("timestamp", f"{obj.get('timestamp')!r}: not an RFC 3339 time") from None
        yield t_ns, got[0], (m.groupdict().get("pid") if m else None), got[1]


_LEVEL = re.compile(rf"\b{LEVELS}:\s+(.*)$")


def _after_level(text: str) -> str | None:
    m = _LEVEL.search(text)
    return m.group(1) if m else None
