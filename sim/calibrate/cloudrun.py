"""Cloud Run's start-up lines joined into start attempts, and counted as monitoring counts them.

Each instance's lines (one ``labels.instanceId``) give one start (docs/formats.md): from its
``Starting new instance`` line to ``Container called exit(N).`` or to ready (the startup probe
passed and, given a phase mapping, the service's last phase ended). Cloud Run does not restart a
failed container in place: it starts a **new instance** (incident-facts R3), so a start that
follows a failed exit of the same revision (within :data:`MAX_RESTART_GAP_S`, the earliest such
exit first) is taken as that instance's restart: ``instance`` names the first instance of such a
chain and ``attempt`` counts its starts, as the engine's records do. An instance whose lines end
before it was ready or exited is **censored** at its last line; one whose start is not in the
export (it began before the window) is dropped and counted.
"""

from __future__ import annotations

import statistics
from collections import Counter, deque
from dataclasses import dataclass, field

from sim.calibrate.inputs import PARTS, Attempt, PhaseMap, Run
from sim.records import Outcome

# No restart schedule of Cloud Run is published (platform-facts.md); the incident's replacements
# came 8–68 s after an exit (R3). A start later than this after an exit is a new scale-out.
MAX_RESTART_GAP_S = 600.0
NS = 1_000_000_000
_ORDER = {"start": 0, "phase": 1, "app": 1, "probe_ok": 2, "probe_failed": 2, "exit": 3}


@dataclass(frozen=True, slots=True)
class Line:
    """One start-up line: a platform message or the service's own phase line."""

    t_ns: int
    kind: str  # start | probe_ok | probe_failed | exit | phase | app
    instance: str
    run: str  # the revision (or job)
    where: str  # ":5" (JSON lines) or "$[4]" (an array's element)
    value: str = ""  # start: the reason; phase: its name
    code: int | None = None  # exit code
    seconds: float | None = None  # a phase's duration, when the line gives one
    edge: str = ""  # "start" | "end", when the line marks a phase's edge


@dataclass
class Tally:
    """What a reader saw besides the lines it used: skipped entries by kind, duplicates, order."""

    entries: int = 0
    used: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    first_ns: int | None = None
    last_ns: int | None = None
    later: int = 0  # entries later than the one before them in the file
    earlier: int = 0
    _prev: int | None = None
    _ids: set = field(default_factory=set)

    def seen(self, t_ns: int) -> None:
        self.first_ns = t_ns if self.first_ns is None else min(self.first_ns, t_ns)
        self.last_ns = t_ns if self.last_ns is None else max(self.last_ns, t_ns)
        if self._prev is not None:
            self.later += t_ns > self._prev
            self.earlier += t_ns < self._prev
        self._prev = t_ns

    def skip(self, why: str) -> None:
        self.skipped[why] = self.skipped.get(why, 0) + 1

    def duplicate(self, insert_id: str, t_ns: int) -> bool:
        """Logging takes entries with the same ``insertId`` and timestamp as one (LogEntry
        reference); exports may still hold both."""
        key = (insert_id, t_ns)
        if key in self._ids:
            self.duplicates += 1
            return True
        self._ids.add(key)
        return False

    @property
    def order(self) -> str:
        return "newest first" if self.earlier > self.later else "oldest first"

    @property
    def out_of_order(self) -> int:
        """Entries against the file's own order (sorted by timestamp before use)."""
        return min(self.earlier, self.later)

    def describe(self) -> str:
        skipped = sum(self.skipped.values())
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.skipped.items()))
        return (
            f"{self.entries} entries, {self.order}, {self.out_of_order} out of that order; "
            f"{skipped} skipped ({kinds or 'none'}); {self.duplicates} duplicate insertIds dropped"
        )


@dataclass
class Start:
    """One instance start, as its lines tell it."""

    instance: str
    run: str
    where: str
    start_ns: int
    reason: str
    outcome: str | None  # ready | timeout | error; None: censored at its last line
    code: int | None
    end_ns: int
    parts: dict[str, float] = field(default_factory=dict)
    cut: str = ""  # censored: the part its lines ended in
    probe_failed: bool = False
    chain: str = ""
    attempt: int = 1
    delay_s: float | None = None  # from the chain's previous exit to this start


def phase_names(lines: list[Line]) -> list[str]:
    return list(dict.fromkeys(ln.value for ln in lines if ln.kind == "phase"))


def start_of(lines: list[Line], pmap: PhaseMap | None) -> Start | None:
    """One instance's start from its lines (any order); None if its start is not among them."""
    lines = sorted(lines, key=lambda ln: (ln.t_ns, _ORDER[ln.kind]))
    first = next((ln for ln in lines if ln.kind == "start"), None)
    if first is None:
        return None
    lines = [ln for ln in lines if ln.t_ns >= first.t_ns and ln is not first]
    ex = next((ln for ln in lines if ln.kind == "exit"), None)
    if ex is not None:
        lines = [ln for ln in lines if ln.t_ns <= ex.t_ns]
    probe = next((ln.t_ns for ln in lines if ln.kind == "probe_ok"), None)
    failed = any(ln.kind == "probe_failed" for ln in lines)
    last = lines[-1].t_ns if lines else first.t_ns
    durations, ends, open_ = _phases(lines)
    ready = _ready_ns(probe, ends, pmap)
    if ex is not None and ready is not None and _ran_after_ready(ex.code, pmap):
        ex = None  # it started; the exit came later, in its life, not in its start-up
    if ex is not None and ex.code != 0:
        outcome, end = (Outcome.TIMEOUT if ex.code == 3 else Outcome.ERROR), ex.t_ns
    elif ex is not None:
        outcome, end = (Outcome.READY, ready) if ready is not None else (Outcome.ERROR, ex.t_ns)
    elif ready is not None:
        outcome, end = Outcome.READY, ready
    elif failed:
        outcome, end = Outcome.ERROR, last
    else:
        outcome, end = None, last
    s = Start(first.instance, first.run, first.where, first.t_ns, first.value, outcome, None, end)
    s.code, s.probe_failed = (ex.code if ex is not None else None), failed
    if pmap is None:
        stop = end if outcome in (Outcome.READY, None) else _fail_end(lines, first.t_ns, end)
        s.parts = {"before": 0.0, "database": (stop - first.t_ns) / NS}
        s.cut = "database" if outcome is None else ""
    else:
        s.parts, s.cut = _parts(first.t_ns, end, lines, durations, ends, open_, pmap, outcome)
    if outcome == Outcome.READY and "after" not in s.parts:
        s.parts["after"] = 0.0
    return s


def _ran_after_ready(code: int | None, pmap: PhaseMap | None) -> bool:
    """An exit after ready ends the instance's life, not its start: when the service logged its
    last phase, always; when only the probe says ready, unless the code is 3 — the default TCP
    probe passes once the port is bound, before a start that then fails (R4), and 3 is the
    start-up failure's code (F2, R12)."""
    return pmap is not None or code != 3


def _phases(lines: list[Line]):
    """Each phase's duration (s), when it last ended (ns), and phases started but not ended."""
    durations: dict[str, float] = {}
    ends: dict[str, int] = {}
    open_: dict[str, int] = {}
    for ln in lines:
        if ln.kind != "phase":
            continue
        if ln.seconds is not None:
            durations[ln.value] = durations.get(ln.value, 0.0) + ln.seconds
            ends[ln.value] = ln.t_ns
        elif ln.edge == "start":
            open_[ln.value] = ln.t_ns
        elif ln.value in open_:
            began = open_.pop(ln.value)
            durations[ln.value] = durations.get(ln.value, 0.0) + (ln.t_ns - began) / NS
            ends[ln.value] = ln.t_ns
    return durations, ends, open_


def _ready_ns(probe: int | None, ends: dict[str, int], pmap: PhaseMap | None) -> int | None:
    """Ready: the startup probe passed (R4: the default TCP probe passes once the port is bound),
    and, given a mapping, the service's last phase (the mapping's last) ended."""
    if pmap is None:
        return probe
    last = (pmap.after or pmap.database)[-1]
    if last not in ends:
        return None
    return max(ends[last], probe or 0)


def _fail_end(lines: list[Line], after_ns: int, end_ns: int) -> int:
    """When a failed start stopped: the service's last line before the exit (R12: the exit is
    logged ≈ 1.5 s after it), else the exit itself."""
    own = [ln.t_ns for ln in lines if ln.kind in ("app", "phase") and after_ns < ln.t_ns <= end_ns]
    return own[-1] if own else end_ns


def _parts(start_ns, end_ns, lines, durations, ends, open_, pmap: PhaseMap, outcome):
    parts = {p: sum(durations.get(n, 0.0) for n in getattr(pmap, p)) for p in PARTS}
    db_start = max([ends[n] for n in pmap.before if n in ends] or [start_ns])
    cut = ""
    if outcome != Outcome.READY:
        stop = _fail_end(lines, db_start, end_ns) if outcome is not None else end_ns
        for name, began in open_.items():  # the phase it was in when it failed or its lines end
            part = pmap.part_of(name) or "after"
            parts[part] += (stop - began) / NS
            cut = part
        db_ends = [ends[n] for n in pmap.database if n in ends]
        if not cut and not db_ends and not any(n in open_ for n in pmap.database):
            before_done = not pmap.before or any(n in ends for n in pmap.before)
            cut = "database" if before_done else "before"
            since = db_start if cut == "database" else start_ns
            parts[cut] += max(0, stop - since) / NS
        if not cut:  # database init done, the after part not: at least this long in it
            cut = "after"
            if outcome is None:  # every line since database init ended is its after part
                parts["after"] = max(parts["after"], (stop - max(db_ends)) / NS)
    if outcome is not None and outcome != Outcome.READY:
        parts.pop("after")  # a failed start has no after part to fit
    return parts, (cut if outcome is None else "")


# -- chains, runs and attempts --------------------------------------------------------------------


def chain(starts: list[Start]) -> None:
    """Number each start within its chain of replacements (same revision, earliest failed exit
    first); sets ``chain``, ``attempt`` and ``delay_s``."""
    events = []
    for s in starts:
        events.append((s.start_ns, 1, s))
        if s.outcome in (Outcome.TIMEOUT, Outcome.ERROR) and s.code is not None:
            events.append((s.end_ns, 0, s))
    pending: dict[str, deque[Start]] = {}
    for t_ns, kind, s in sorted(events, key=lambda e: (e[0], e[1], e[2].start_ns)):
        waiting = pending.setdefault(s.run, deque())
        if kind == 0:
            waiting.append(s)
            continue
        while waiting and (t_ns - waiting[0].end_ns) / NS > MAX_RESTART_GAP_S:
            waiting.popleft()
        if waiting:
            prev = waiting.popleft()
            s.chain, s.attempt, s.delay_s = prev.chain, prev.attempt + 1, (t_ns - prev.end_ns) / NS
        else:
            s.chain, s.attempt = s.instance, 1


def attempt_of(s: Start, path: str) -> Attempt:
    p = s.parts
    reason = f"exit({s.code})" if s.code not in (None, 0) else ""
    if s.probe_failed and s.outcome != Outcome.READY:
        reason = reason or "startup probe failed"
    return Attempt(
        instance=s.chain or s.instance,
        attempt=s.attempt,
        start_unix_s=s.start_ns / NS,
        before_db_s=p.get("before", 0.0),
        db_init_s=p.get("database", 0.0),
        after_db_s=p.get("after") if s.outcome == Outcome.READY or s.cut == "after" else None,
        outcome=s.outcome or Outcome.ERROR,
        reason=reason if s.outcome else f"censored: lines end {s.cut}",
        where=f"{path}{s.where}" if s.where.startswith(":") else f"{path} {s.where}",
        censored=s.cut,
    )


def runs_of(lines: list[Line], path: str, pmap: PhaseMap | None, tally: Tally) -> list[Run]:
    """One :class:`Run` per revision: its complete attempts, its censored ones, and what
    monitoring would have counted."""
    by_instance: dict[tuple[str, str], list[Line]] = {}
    for ln in lines:
        by_instance.setdefault((ln.run, ln.instance), []).append(ln)
    starts, dropped = [], {}
    for (run, _), own in by_instance.items():
        s = start_of(own, pmap)
        if s is None:
            dropped[run] = dropped.get(run, 0) + 1
        else:
            starts.append(s)
    chain(starts)
    runs = []
    for run in dict.fromkeys(s.run for s in sorted(starts, key=lambda s: s.start_ns)):
        mine = [s for s in starts if s.run == run]
        attempts = [attempt_of(s, path) for s in mine]
        done = [a for a in attempts if not a.censored]
        mon = Monitoring.of(run, mine, dropped.get(run, 0))
        r = Run(run, path, "log", done, phase_map=pmap)
        r.censored = [a for a in attempts if a.censored]
        r.monitoring = mon
        runs.append(r)
    lost = sum(n for run, n in dropped.items() if run not in {r.run_id for r in runs})
    if not runs:
        from sim.errors import InputError

        raise InputError(
            path,
            None,
            f"no instance start in it: {sum(dropped.values())} instances have lines but no "
            "'Starting new instance' line (started before the export window, or the export "
            "leaves out run.googleapis.com/varlog/system)",
        )
    runs[0].notes.append(f"{path}: {tally.describe()}" + (f"; {lost} more dropped" if lost else ""))
    if pmap is None:
        runs[0].notes.append(
            f"{path}: no phase lines (give --phase-pattern and --phases): each start's whole "
            "duration, start to ready or exit, is taken as database init"
        )
    return runs


# -- what monitoring would have shown -------------------------------------------------------------


@dataclass
class Monitoring:
    """One window's counts: starts, failures by exit code, starts per instance (chain), and the
    restart delays observed (exit to the next start of the same revision)."""

    window: str
    first_ns: int
    last_ns: int
    starts: int
    ready: int
    censored: int
    dropped: int  # instances whose start came before the export window
    failures: dict[str, int]
    starts_per_instance: list[int]
    delays: list[tuple[int, float]]  # (restart number, seconds)
    reasons: dict[str, int] = field(default_factory=dict)  # starts by the platform's reason
    # What the counts rest on, for the calibrated values' sources (a reader of another platform
    # sets its own: sim.calibrate.crashloop).
    failures_source: str = "Cloud Logging: starts ending in exit(N ≠ 0) or a failed startup probe"
    delays_source: str = "Cloud Logging: exit(N ≠ 0) to the revision's next 'Starting new instance'"
    delay_is: str = "exit to the revision's next start"

    @classmethod
    def of(cls, window: str, starts: list[Start], dropped: int) -> Monitoring:
        failures: dict[str, int] = {}
        for s in starts:
            if s.outcome in (Outcome.TIMEOUT, Outcome.ERROR):
                key = f"exit({s.code})" if s.code is not None else "startup probe failed"
                failures[key] = failures.get(key, 0) + 1
        chains: dict[str, int] = {}
        for s in starts:
            chains[s.chain] = max(chains.get(s.chain, 0), s.attempt)
        delays = [(s.attempt - 1, s.delay_s) for s in starts if s.delay_s is not None]
        return cls(
            window,
            min(s.start_ns for s in starts),
            max(s.end_ns for s in starts),
            len(starts),
            sum(s.outcome == Outcome.READY for s in starts),
            sum(s.outcome is None for s in starts),
            dropped,
            dict(sorted(failures.items())),
            sorted(chains.values()),
            sorted(delays),
            dict(sorted(Counter(s.reason for s in starts).items())),
        )

    @classmethod
    def merged(cls, window: str, parts: list[Monitoring]) -> Monitoring:
        failures: dict[str, int] = {}
        for m in parts:
            for k, n in m.failures.items():
                failures[k] = failures.get(k, 0) + n
        return cls(
            window,
            min(m.first_ns for m in parts),
            max(m.last_ns for m in parts),
            sum(m.starts for m in parts),
            sum(m.ready for m in parts),
            sum(m.censored for m in parts),
            sum(m.dropped for m in parts),
            dict(sorted(failures.items())),
            sorted(n for m in parts for n in m.starts_per_instance),
            sorted(d for m in parts for d in m.delays),
            dict(sorted(sum((Counter(m.reasons) for m in parts), Counter()).items())),
            parts[0].failures_source,
            parts[0].delays_source,
            parts[0].delay_is,
        )

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def span_s(self) -> float:
        return (self.last_ns - self.first_ns) / NS

    def delay_summary(self) -> dict[str, float] | None:
        """Median, quartiles and range of the restart delays (s); None without any."""
        x = [d for _, d in self.delays]
        if not x:
            return None
        q = statistics.quantiles(x, n=4, method="inclusive") if len(x) > 1 else [x[0]] * 3
        return {"n": len(x), "median": q[1], "q1": q[0], "q3": q[2], "min": min(x), "max": max(x)}

    def as_dict(self) -> dict:
        """One window's counts as plain data (``startsim calibrate --json``)."""
        return {
            "window": self.window,
            "span_s": self.span_s,
            "starts": self.starts,
            "ready": self.ready,
            "failed": self.failed,
            "failures": dict(self.failures),
            "censored": self.censored,
            "before_window": self.dropped,
            "starts_by_reason": dict(self.reasons),
            "starts_per_instance": list(self.starts_per_instance),
            "restart_delay_s": self.delay_summary(),
            "restart_delays_by_restart": [
                {"restart": k, "median_s": med, "n": n} for k, med, n in self.by_restart()
            ],
            "failures_source": self.failures_source,
            "delays_source": self.delays_source,
        }

    def by_restart(self, most: int = 5) -> list[tuple[int, float, int]]:
        """(restart number, median delay s, n) for the first ``most`` restart numbers."""
        out = []
        for k in sorted({k for k, _ in self.delays})[:most]:
            x = [d for j, d in self.delays if j == k]
            out.append((k, statistics.median(x), len(x)))
        return out

    def why(self) -> str:
        return ", ".join(f"{r} {n}" for r, n in self.reasons.items())

    def lines(self) -> list[str]:
        """The counts as text, one fact a line (the table, the TOML's comments)."""
        fails = ", ".join(f"{k} {n}" for k, n in self.failures.items()) or "none"
        spi = self.starts_per_instance
        out = [
            f"{self.window}: {self.starts} starts ({self.why()}) over {self.span_s:.1f} s, "
            f"{self.ready} ready, "
            f"{self.failed} failed ({fails}), {self.censored} censored (lines end before ready "
            f"or exit), {self.dropped} started before the window (dropped)",
            f"{self.window}: starts per instance (replacement chain): median "
            f"{statistics.median(spi):g}, max {max(spi)}, over {len(spi)} instances",
        ]
        d = self.delay_summary()
        if d is None:
            out.append(f"{self.window}: restart delays: none (no failed exit followed by a start)")
            return out
        by = self.by_restart()
        ks = "; ".join(f"#{k} {m:.3g} s (n {n})" for k, m, n in by)
        out.append(
            f"{self.window}: restart delays ({self.delay_is}): n {d['n']}, "
            f"median {d['median']:.3g} s, IQR [{d['q1']:.3g}, {d['q3']:.3g}] s, range "
            f"{d['min']:.3g}–{d['max']:.3g} s; by restart number: {ks}; {presets_line(len(by))}"
        )
        return out


def presets_line(restarts: int) -> str:
    """The restart presets' pauses for the first restarts, to set beside the observed ones."""
    from sim.scenario import RESTART_PRESETS, Restart

    shown = []
    for name, fields in RESTART_PRESETS.items():
        if not fields:
            continue
        r = Restart(**fields)
        pauses = ", ".join(f"{r.backoff_s(k):.3g}" for k in range(1, max(restarts, 1) + 1))
        shown.append(f"{name} {pauses} s")
    return "presets: " + "; ".join(shown)
