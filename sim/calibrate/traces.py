"""OTLP start-up spans joined into chains of restarts, and counted as monitoring counts them.

A start-up span says when one start began and ended and how it ended (:mod:`sim.calibrate.otlp`);
its resource says which instance ran it (``service.instance.id``, else ``host.name``, else the
trace). Successive start-up spans of one instance are its restarts in place (a pod's container,
a process restarted under the same ``service.instance.id``); an instance's **first** span that
follows a failed span whose instance never started again — of the same ``service.name``, within
:data:`~sim.calibrate.cloudrun.MAX_RESTART_GAP_S`, the earliest such end first — is that
instance's **replacement** (Cloud Run starts a new instance, incident-facts R3; an SDK gives the
new process a new ``service.instance.id``). ``chain`` names the first instance of such a chain and
``attempt`` counts its starts, as the engine's records do. The restart delay is from the failed
span's end (the application's failure, as the model's pause runs) to the next span's start.

What the spans cannot say is in docs/formats.md ("What traces cannot count").
"""

from __future__ import annotations

import itertools
from collections import Counter, deque
from dataclasses import dataclass

from sim.calibrate.cloudrun import MAX_RESTART_GAP_S, NS, Monitoring
from sim.records import Outcome

OTLP_SOURCE = "OTLP"


@dataclass
class SpanStart:
    """One start-up span, as a start: its instance, times, outcome and what failed it."""

    instance: str
    run: str  # service.name
    start_ns: int
    end_ns: int
    outcome: str
    failure: str = ""  # "exit(3)", "status ERROR (deadline)", …; "" when ready
    chain: str = ""
    attempt: int = 1
    delay_s: float | None = None  # from the chain's previous failed end to this start

    @property
    def failed(self) -> bool:
        return self.outcome != Outcome.READY


def chain(starts: list[SpanStart]) -> None:
    """Number each span within its chain (module docstring); sets ``chain``, ``attempt`` and
    ``delay_s``."""
    by_instance: dict[str, list[SpanStart]] = {}
    for s in sorted(starts, key=lambda s: s.start_ns):
        by_instance.setdefault(s.instance, []).append(s)
    previous = {id(b): a for own in by_instance.values() for a, b in itertools.pairwise(own)}
    events = [(s.start_ns, 1, s) for s in starts]
    events += [(own[-1].end_ns, 0, own[-1]) for own in by_instance.values() if own[-1].failed]
    pending: dict[str, deque[SpanStart]] = {}
    for t_ns, kind, s in sorted(events, key=lambda e: (e[0], e[1], e[2].start_ns)):
        waiting = pending.setdefault(s.run, deque())
        if kind == 0:
            waiting.append(s)
            continue
        prev = previous.get(id(s))
        if prev is None:
            while waiting and (t_ns - waiting[0].end_ns) / NS > MAX_RESTART_GAP_S:
                waiting.popleft()
            prev = waiting.popleft() if waiting else None
        if prev is None:
            s.chain, s.attempt = s.instance, 1
            continue
        s.chain, s.attempt = prev.chain, prev.attempt + 1
        s.delay_s = (t_ns - prev.end_ns) / NS if prev.failed else None


def monitoring(window: str, starts: list[SpanStart]) -> Monitoring:
    """One service's counts: starts (first, restart), ready, failed by exit code or status,
    starts per chain, and the restart delays. No span is censored or before the window: a
    start-up span is exported when it ends (docs/formats.md, "What traces cannot count")."""
    per: dict[str, int] = {}
    for s in starts:
        per[s.chain] = max(per.get(s.chain, 0), s.attempt)
    m = Monitoring(
        window,
        min(s.start_ns for s in starts),
        max(s.end_ns for s in starts),
        len(starts),
        sum(not s.failed for s in starts),
        0,
        0,
        dict(sorted(Counter(s.failure for s in starts if s.failed).items())),
        sorted(per.values()),
        sorted((s.attempt - 1, s.delay_s) for s in starts if s.delay_s is not None),
        dict(sorted(Counter("first" if s.attempt == 1 else "restart" for s in starts).items())),
    )
    m.failures_source = (
        f"{OTLP_SOURCE}: start-up spans ending in exit(N ≠ 0), status ERROR or 53300 (spans "
        "of processes killed mid-start are never exported)"
    )
    m.delays_source = f"{OTLP_SOURCE}: a failed start-up span's end to the chain's next one"
    m.delay_is = "failed span's end to the instance's (or its replacement's) next start-up span"
    return m
