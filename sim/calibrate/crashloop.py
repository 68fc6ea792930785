"""Kubernetes containers' starts joined into attempts, and counted as monitoring counts them.

A container restarts in place (``restartCount``): each start of one pod's container is one
attempt of one instance, numbered as the engine numbers them. A start is timed by its ``Started``
Event or by the pod status's ``startedAt`` (the same start when within :data:`SAME_START_NS`); it
ended as ``lastState.terminated`` says (exit code 3 → timeout, 0 → ready, else error), or as a
``Killing`` Event before the next start says (error), or it is ready (running, pod Ready), or it
failed without a recorded end (a later start or a ``BackOff`` follows it: counted, not timed), or
it is censored at the last time the files hold. The restart delay is from a run's ``finishedAt``
(or its ``Killing``) to the next ``Started``; a waiting container's back-off in force
(``back-off 5m0s restarting failed container=…``) is the pause of its pending restart.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from sim.calibrate import kubernetes
from sim.calibrate.cloudrun import NS, Monitoring
from sim.calibrate.inputs import Attempt, Run
from sim.calibrate.kubernetes import Facts, Life, Now, Occurrence
from sim.errors import InputError
from sim.records import Outcome

# Kubernetes times (metav1.Time) have one-second resolution: a Started Event and the status's
# startedAt of the same start may differ by a second.
SAME_START_NS = 2 * NS
K8S_SOURCE = "Kubernetes"


@dataclass
class ContainerStart:
    """One start of one pod's container, as the events and the pod status tell it."""

    container: str  # namespace/pod/container
    run: str
    attempt: int
    t_ns: int | None  # None: an aggregated Event's occurrence, counted but not timed
    outcome: str | None  # None: censored at the files' last time
    end_ns: int | None
    code: int | None = None
    reason: str = ""
    where: str = ""
    delay_s: float | None = None

    @property
    def failed(self) -> bool:
        return self.outcome in (Outcome.TIMEOUT, Outcome.ERROR)


def read_kubernetes(paths: list[Path], progress=None) -> list[Run]:
    """Kubernetes events and pod status files, read together: one :class:`Run` per ReplicaSet
    (a deploy's pods), its attempts, censored ones, and what monitoring would have counted.
    ``progress(path, bytes_read)``, if given, is told how far each file's reading is."""
    paths = [Path(p) for p in paths]
    facts = kubernetes.read_facts(paths, progress)
    names = ", ".join(map(str, paths))
    starts, in_force, dropped = _starts(facts)
    if not starts:
        raise InputError(
            names,
            None,
            f"no container start in it ({_describe(facts)}): export the pods' events "
            "(kubectl get events -o json) and/or their status (kubectl get pods -o json)",
        )
    runs = []
    for run in dict.fromkeys(s.run for s in sorted(starts, key=_order)):
        mine = [s for s in starts if s.run == run]
        attempts = [_attempt(s, facts) for s in mine if s.t_ns is not None]
        attempts = [a for a in attempts if a is not None]
        r = Run(run, names, "log", [a for a in attempts if not a.censored])
        r.censored = [a for a in attempts if a.censored]
        r.monitoring = _monitoring(run, mine, in_force.get(run, []), dropped.get(run, 0))
        runs.append(r)
    runs[0].notes.append(f"{names}: {_describe(facts)}; {_untimed(starts)}")
    if any(in_force.values()):
        shown = ", ".join(f"#{k} {s:g} s" for v in in_force.values() for k, s in v)
        runs[0].notes.append(
            f"{names}: back-off in force on waiting containers ({shown}) counted as the delays "
            "of their pending restarts"
        )
    runs[0].notes.append(
        f"{names}: Kubernetes times no phase: each start's whole duration (start to the pod's "
        "Ready, or to the container's finishedAt) is taken as database init"
    )
    return runs


def _order(s: ContainerStart) -> int:
    return s.t_ns if s.t_ns is not None else 0


def _describe(facts: Facts) -> str:
    t = facts.tally
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(t.skipped.items()))
    return (
        f"{t.entries} objects, {t.out_of_order} out of time order (sorted), "
        f"{sum(t.skipped.values())} skipped ({kinds or 'none'}), "
        f"{t.duplicates} repeated Event copies dropped"
    )


def _untimed(starts: list[ContainerStart]) -> str:
    untimed = sum(s.t_ns is None for s in starts)
    unknown = sum(s.t_ns is not None and s.failed and s.end_ns is None for s in starts)
    return (
        f"{untimed} starts counted from aggregated Events (count > 1) without a time of their "
        f"own; {unknown} failed starts without a recorded end (counted, not timed)"
    )


# -- one container's starts -----------------------------------------------------------------------


def _starts(facts: Facts):
    by: dict[tuple[str, str], list[Occurrence]] = {}
    for o in kubernetes.occurrences(facts):
        by.setdefault((o.pod, o.container), []).append(o)
    lives: dict[tuple[str, str], list[Life]] = {}
    for life in facts.lives.values():
        lives.setdefault((life.pod, life.container), []).append(life)
    keys = dict.fromkeys([*by, *lives, *facts.now])
    starts, in_force, dropped = [], {}, {}
    for pod, container in keys:
        if not container:
            continue  # pod-level events (Killing of a whole pod at deletion) start nothing
        now = facts.now.get((pod, container))
        run = _run(pod, now, facts)
        own = sorted(lives.get((pod, container), []), key=lambda x: x.started_ns)
        mine, before = _one(pod, container, run, by.get((pod, container), []), own, now, facts)
        starts += mine
        dropped[run] = dropped.get(run, 0) + before
        pause = kubernetes.back_off_s(now.waiting) if now is not None else None
        if pause is not None:
            in_force.setdefault(run, []).append((now.restarts + 1, pause))
    return starts, in_force, dropped


def _run(pod: str, now: Now | None, facts: Facts) -> str:
    """``namespace.replicaset``: the pod's ReplicaSet (a deploy), from its owner or its name
    (``web-7d4b9c-x2x5q``)."""
    ns, _, name = pod.partition("/")
    owner = (now.owner if now is not None else "") or facts.owners.get(pod, "")
    return f"{ns}.{owner or name.rpartition('-')[0] or name}"


def _one(pod, container, run, occurrences, lives, now, facts):
    """(starts, how many started before the files' window) of one container."""
    started = [o for o in occurrences if o.reason == "Started"]
    points = sorted({o.t_ns for o in started if o.t_ns is not None})
    untimed = [o for o in started if o.t_ns is None]
    for t in [life.started_ns for life in lives] + [now.running_ns if now else None]:
        if t is not None and not any(abs(t - p) <= SAME_START_NS for p in points):
            points = sorted([*points, t])
            # the status times a start an aggregated Event counted without its time
            inside = next((o for o in untimed if o.after_ns < t < o.before_ns), None)
            if inside is not None:
                untimed.remove(inside)
    seq = [(t, 0, t) for t in points] + [(o.after_ns, 1, None) for o in untimed]
    seq = [t for _, _, t in sorted(seq, key=lambda x: (x[0], x[1]))]
    total = now.restarts + 1 if now is not None else len(seq)
    before = max(0, total - len(seq))
    kills = sorted(o.t_ns for o in occurrences if o.reason == "Killing" and o.t_ns is not None)
    backoffs = [o.t_ns for o in occurrences if o.reason == "BackOff" and o.t_ns is not None]
    kill_msg = {o.t_ns: o.message for o in occurrences if o.reason == "Killing"}
    name, out = f"{pod}/{container}", []
    for i, t in enumerate(seq):
        s = ContainerStart(name, run, before + i + 1, t, Outcome.ERROR, None, where=pod)
        if t is None:
            s.reason = "exit not recorded"
            out.append(s)
            continue
        nxt = next((u for u in seq[i + 1 :] if u is not None), None)
        later = i + 1 < len(seq) or any(b > t for b in backoffs)
        _end(s, t, nxt, later, lives, kills, kill_msg, now, facts)
        out.append(s)
    for prev, s in itertools.pairwise(out):
        if s.t_ns is not None and prev.failed and prev.end_ns is not None:
            s.delay_s = (s.t_ns - prev.end_ns) / NS
    return out, before


def _end(s, t, nxt, later, lives, kills, kill_msg, now, facts) -> None:
    life = next((x for x in lives if abs(x.started_ns - t) <= SAME_START_NS), None)
    kill = next((k for k in kills if k >= t and (nxt is None or k < nxt)), None)
    current = now is not None and _same(now.running_ns, t)
    if current and now.ready_ns is not None and now.ready_ns >= t:
        s.outcome, s.end_ns = Outcome.READY, now.ready_ns  # a later Killing ends its life
    elif life is not None:
        s.end_ns, s.code, s.where = life.finished_ns, life.code, life.where
        if life.code == 0:
            s.outcome = Outcome.READY
        else:
            s.outcome = Outcome.TIMEOUT if life.code == 3 else Outcome.ERROR
            s.reason = f"exit({life.code})" if life.code is not None else life.reason
    elif kill is not None and "probe" in kill_msg.get(kill, ""):
        # "Container app failed startup probe, will be restarted" (or liveness): a failed start
        msg = kill_msg[kill]
        s.end_ns, s.reason = kill, ("startup probe failed" if "startup probe" in msg else "killed")
    elif kill is not None:  # "Stopping container app": the pod deleted, its start cut short
        s.outcome, s.end_ns = None, kill
    elif current or not later:
        s.outcome, s.end_ns = None, facts.tally.last_ns
    else:
        s.reason = "exit not recorded"


def _same(a: int | None, b: int) -> bool:
    return a is not None and abs(a - b) <= SAME_START_NS


def _attempt(s: ContainerStart, facts: Facts) -> Attempt | None:
    if s.end_ns is None:
        return None  # failed, its end not recorded: counted only
    ready = s.outcome == Outcome.READY
    return Attempt(
        instance=s.container,
        attempt=s.attempt,
        start_unix_s=s.t_ns / NS,
        before_db_s=0.0,
        db_init_s=max(0, s.end_ns - s.t_ns) / NS,
        after_db_s=0.0 if ready else None,
        outcome=s.outcome or Outcome.ERROR,
        reason=s.reason if s.outcome is not None else "censored: no end in the files",
        where=s.where,
        censored="database" if s.outcome is None else "",
    )


# -- what monitoring would have shown -------------------------------------------------------------


def _monitoring(run: str, starts: list[ContainerStart], in_force, dropped: int) -> Monitoring:
    failures = Counter(_failure(s) for s in starts if s.failed)
    per: dict[str, int] = {}
    for s in starts:
        per[s.container] = max(per.get(s.container, 0), s.attempt)
    delays = [(s.attempt - 1, s.delay_s) for s in starts if s.delay_s is not None]
    timed = [s.t_ns for s in starts if s.t_ns is not None]
    ends = [s.end_ns for s in starts if s.end_ns is not None]
    m = Monitoring(
        run,
        min(timed),
        max(timed + ends),
        len(starts),
        sum(s.outcome == Outcome.READY for s in starts),
        sum(s.outcome is None for s in starts),
        dropped,
        dict(sorted(failures.items())),
        sorted(per.values()),
        sorted(delays + list(in_force)),
        dict(sorted(Counter("first" if s.attempt == 1 else "restart" for s in starts).items())),
    )
    m.failures_source = f"{K8S_SOURCE}: starts ending in exit(N ≠ 0), a Killing, or a restart"
    m.delays_source = f"{K8S_SOURCE}: terminated.finishedAt (or Killing) to the next Started"
    m.delay_is = "finishedAt to the container's next Started; back-off in force"
    return m


def _failure(s: ContainerStart) -> str:
    return f"exit({s.code})" if s.code is not None else s.reason or "exit not recorded"
