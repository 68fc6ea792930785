"""Kubernetes events and pod status, read as what happened to each pod's containers
(docs/formats.md, "Kubernetes events and pod status").

Inputs, each exported directly or through Cloud Logging:

- ``kubectl get events -o json``: a ``v1/List`` of core/v1 ``Event`` objects (``reason``
  ``Started`` / ``Killing`` / ``BackOff`` / …, ``involvedObject``, ``count``, ``firstTimestamp``,
  ``lastTimestamp``, ``metadata.uid``); ``--watch`` streams of them; Cloud Logging entries
  (``resource.type`` ``k8s_pod`` / ``k8s_cluster``) whose ``jsonPayload`` is the Event;
- ``kubectl get pods -o json`` (or several snapshots, ``--watch``): each container's
  ``restartCount``, ``state``, ``lastState.terminated{exitCode, reason, startedAt, finishedAt}``
  and ``state.waiting.message`` (``back-off 5m0s restarting failed container=…``).

An Event with ``count`` n stands for n occurrences from ``firstTimestamp`` to ``lastTimestamp``.
Copies of one Event (its ``metadata.uid``) at several counts, as Cloud Logging and watches record
each update, time each occurrence: the copy at count k was updated by occurrence k, at its
``lastTimestamp``. Occurrences no copy times are counted, untimed. :mod:`sim.calibrate.crashloop`
joins all this into start attempts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from sim.calibrate import jsonstream
from sim.calibrate.cloudlogging import _entries, parse_time_ns
from sim.calibrate.cloudrun import Tally
from sim.errors import InputError

OBJECT_KINDS = ("Event", "Pod")
USED_REASONS = ("Started", "Killing", "BackOff")
# The kubelet's waiting message and, in some versions, the BackOff Event's (platform-facts.md).
BACK_OFF = re.compile(r"[Bb]ack-off (?:(\d[0-9a-zµ.]*) )?restarting failed container")
GO_PART = re.compile(r"(\d+(?:\.\d+)?)(h|ms|m|s|us|µs|ns)")
GO_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
CONTAINER_PATH = re.compile(r"spec\.(?:initContainers|containers)\{([^}]+)\}")
_HEAD = re.compile(r'"kind"\s*:\s*"(Event|Pod|List|EventList|PodList)"')
HEAD_CHARS = 1 << 16


@dataclass(frozen=True, slots=True)
class Occurrence:
    """One occurrence of an Event about a pod: ``t_ns`` None when an aggregated Event holds it
    between its first and last time without saying when (``after_ns`` is its first time)."""

    t_ns: int | None
    reason: str
    pod: str  # namespace/name
    container: str  # from involvedObject.fieldPath, "" for the pod itself
    where: str
    message: str = ""
    after_ns: int = 0
    before_ns: int = 0  # an untimed occurrence's Event's last time


@dataclass(frozen=True, slots=True)
class Life:
    """A container's run that ended, from pod status ``lastState.terminated`` or
    ``state.terminated``."""

    pod: str
    container: str
    started_ns: int
    finished_ns: int
    code: int | None
    reason: str
    where: str


@dataclass
class Now:
    """A container's latest status: restarts so far, what it is doing, the back-off in force."""

    pod: str
    container: str
    owner: str
    restarts: int
    running_ns: int | None  # state.running.startedAt
    ready_ns: int | None  # the pod's Ready condition turned True, when ready
    waiting: str  # state.waiting.message
    where: str


@dataclass
class Facts:
    """Everything the files say about the pods' containers."""

    occurrences: list[Occurrence] = field(default_factory=list)
    lives: dict[tuple[str, str, int], Life] = field(default_factory=dict)
    now: dict[tuple[str, str], Now] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)  # pod → its ReplicaSet
    tally: Tally = field(default_factory=Tally)
    events: dict[str, dict] = field(default_factory=dict)  # uid → {"count": {k: t}, …}


def go_duration_s(text: str) -> float:
    """``5m0s``, ``2m40s``, ``20s``, ``1h0m0s``, ``500ms`` as seconds; ValueError otherwise."""
    parts = GO_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(text)
    return sum(float(n) * GO_UNIT_S[u] for n, u in parts)


def back_off_s(message: str) -> float | None:
    """The back-off in force a kubelet message states (``back-off 20s restarting failed …``)."""
    m = BACK_OFF.search(message or "")
    if m is None or m.group(1) is None:
        return None
    try:
        return go_duration_s(m.group(1))
    except ValueError:
        return None


# -- files ----------------------------------------------------------------------------------------


def detect(path: Path) -> bool:
    """Kubernetes objects (a List of Events or Pods, or a stream of them), or Cloud Logging
    entries of a ``k8s_*`` resource whose payload is an Event."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            head = f.read(HEAD_CHARS)
    except (OSError, UnicodeDecodeError):
        return False
    if head.lstrip()[:1] == "{" and _HEAD.search(head) and '"resource"' not in head[:4096]:
        return True
    try:
        first = next(_entries(Path(path)), None)
    except (InputError, OSError, UnicodeDecodeError):
        return False
    return first is not None and _k8s_entry(first[1])


def _k8s_entry(obj: object) -> bool:
    if not isinstance(obj, dict) or not isinstance(obj.get("resource"), dict):
        return False
    return str(obj["resource"].get("type", "")).startswith("k8s_")


def objects(path: Path, progress=None) -> Iterator[tuple[str, object]]:
    """Each Kubernetes object with its JSON path: ``$.items[3]`` of a List, ``$[2]`` of a
    stream, ``$[4].jsonPayload`` / ``:5 jsonPayload`` of a Cloud Logging export. Every form is
    streamed: a List's items one at a time, a stream's objects one at a time."""
    with open(path, encoding="utf-8-sig") as f:
        head = f.read(HEAD_CHARS)
    first = _skip(head, 0)
    # Cloud Logging entries or an array are streamed as for Cloud Run; kubectl's output (one List,
    # or a --watch stream of objects) a List's item at a time (sim.calibrate.jsonstream).
    if head[first : first + 1] == "[" or _is_log(head, first):
        yield from _logged(path, progress)
        return
    with open(path, encoding="utf-8-sig") as f:
        for event in jsonstream.walk(f, str(path), (("items", "*"),), progress):
            if event[0] == "item" or event[0] == "value":
                yield event[1], event[2]
            elif event[0] == "end" and "." not in event[1] and "items" not in event[2]:
                yield from _unwrap(event[2], event[1])  # a whole object: a Pod, a watch event


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _is_log(text: str, pos: int) -> bool:
    """JSON lines of Cloud Logging entries (the first line decides)."""
    end = text.find("\n", pos)
    try:
        first = json.loads(text[pos : end if end > 0 else len(text)])
    except json.JSONDecodeError:
        return False
    return _k8s_entry(first) or (isinstance(first, dict) and "logName" in first)


def _unwrap(obj: object, where: str) -> Iterator[tuple[str, object]]:
    """A List's items, a watch event's object, or the object itself."""
    if isinstance(obj, dict) and isinstance(obj.get("items"), list):
        for i, item in enumerate(obj["items"]):
            yield f"{where}.items[{i}]", item
    elif isinstance(obj, dict) and isinstance(obj.get("object"), dict) and "type" in obj:
        yield f"{where}.object", obj["object"]
    else:
        yield where, obj


def _logged(path: Path, progress=None) -> Iterator[tuple[str, object]]:
    for where, entry in _entries(path, progress):
        if _k8s_object(entry):
            yield from _unwrap(entry, where)  # an array of the objects themselves (jq '.items')
            continue
        if not isinstance(entry, dict):
            shown = "" if where.startswith(":") else f"{where}: "
            raise InputError(str(path), _line(where), f"{shown}not a JSON object (a LogEntry)")
        payload = entry.get("jsonPayload")
        if not _k8s_entry(entry):
            yield where, {"_skip": f"resource.type {_type(entry)}"}
        elif not _k8s_object(payload):  # a container's own log line, an audit entry, …
            yield where, {"_skip": f"{_type(entry)} entries that are no Event (container logs, …)"}
        else:
            yield f"{where}.jsonPayload", payload


def _k8s_object(obj: object) -> bool:
    return isinstance(obj, dict) and ("involvedObject" in obj or obj.get("kind") in OBJECT_KINDS)


def _type(entry: dict) -> str:
    resource = entry.get("resource") if isinstance(entry.get("resource"), dict) else {}
    return str(resource.get("type") or "(none)")


def _line(where: str) -> int | None:
    return int(where[1:].split(".")[0]) if where.startswith(":") else None


# -- objects into facts ---------------------------------------------------------------------------


class _Where:
    """Names a field of one object: ``file:5: jsonPayload.count …``, ``file: $.items[3].count``."""

    def __init__(self, path: Path, where: str) -> None:
        self.path, self.where = str(path), where

    def fail(self, field_: str, problem: str) -> InputError:
        if self.where.startswith(":"):
            line, _, rest = self.where[1:].partition(".")
            head = f"{rest}." if rest else ""
            return InputError(self.path, int(line), f"{head}{field_}{problem}")
        return InputError(self.path, None, f"{self.where}.{field_}{problem}")

    def time(self, obj: dict, key: str, field_: str) -> int | None:
        value = obj.get(key)
        if value in (None, ""):
            return None
        try:
            return parse_time_ns(value)
        except (ValueError, OverflowError):
            raise self.fail(
                field_, f" = {value!r}: not an RFC 3339 time (e.g. 2026-11-29T06:15:02Z)"
            ) from None


def read_facts(paths: list[Path], progress=None) -> Facts:
    """What the files say; ``progress(path, bytes_read)``, if given, is told how far the reading
    of each file is (the CLI's bar)."""
    facts = Facts()
    for path in paths:
        if not Path(path).is_file():
            raise InputError(str(path), None, "no such file or campaign folder")
        told = None if progress is None else (lambda at, path=path: progress(path, at))
        try:
            for where, obj in objects(Path(path), told):
                _take(facts, obj, _Where(Path(path), where))
        except UnicodeDecodeError as exc:
            raise InputError(str(path), None, f"cannot read it ({exc})") from None
    return facts


def _take(facts: Facts, obj: object, at: _Where) -> None:
    t = facts.tally
    t.entries += 1
    if not isinstance(obj, dict):
        raise at.fail("kind", ": not a JSON object (a Kubernetes Event or Pod)")
    if "_skip" in obj:
        return t.skip(obj["_skip"])
    kind = obj.get("kind") or ("Event" if "involvedObject" in obj else None)
    if kind not in OBJECT_KINDS:
        return t.skip(f"kind {kind or '(none)'}")
    if kind == "Pod":
        return _pod(facts, obj, at)
    return _event(facts, obj, at)


def _event(facts: Facts, ev: dict, at: _Where) -> None:
    t = facts.tally
    inv = ev.get("involvedObject") if isinstance(ev.get("involvedObject"), dict) else None
    if inv is None:
        raise at.fail("involvedObject", ": missing (an Event names what it is about)")
    if inv.get("kind") != "Pod":
        return t.skip(f"events about a {inv.get('kind') or '(no kind)'}")
    reason = ev.get("reason")
    if reason not in USED_REASONS:
        return t.skip(f"pod events not used ({'Scheduled, Pulled, Created, Unhealthy, …'})")
    if not inv.get("name"):
        raise at.fail("involvedObject.name", f": missing on a {reason} event")
    pod = f"{inv.get('namespace') or 'default'}/{inv['name']}"
    m = CONTAINER_PATH.search(str(inv.get("fieldPath") or ""))
    if m is None:  # the kubelet names the container of these: the key that joins a start
        raise at.fail(
            "involvedObject.fieldPath",
            f" = {inv.get('fieldPath')!r}: expected spec.containers{{NAME}} on a {reason} event",
        )
    container = m.group(1)
    series = ev.get("series") if isinstance(ev.get("series"), dict) else {}
    first = at.time(ev, "firstTimestamp", "firstTimestamp")
    first = first if first is not None else at.time(ev, "eventTime", "eventTime")
    last = at.time(ev, "lastTimestamp", "lastTimestamp")
    if last is None:
        last = at.time(series, "lastObservedTime", "series.lastObservedTime")
    if first is None and last is None:
        raise at.fail("firstTimestamp", f": missing on a {reason} event (and no eventTime)")
    first, last = first if first is not None else last, last if last is not None else first
    count = ev.get("count") or series.get("count") or 1  # a series' Event may say count 0
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise at.fail("count", f" = {count!r}: expected a whole number ≥ 1")
    t.seen(last)
    meta = ev.get("metadata") if isinstance(ev.get("metadata"), dict) else {}
    uid = str(meta.get("uid") or (pod, container, reason, first, ev.get("message")))
    one = facts.events.setdefault(uid, {"times": {}, "count": 0, "at": at.where, "proto": None})
    if one["times"].get(count) == last:
        t.duplicates += 1
        return
    t.used += 1
    one["times"].setdefault(1, first)
    one["times"][count] = last
    one["count"] = max(one["count"], count)
    one["proto"] = (reason, pod, container, str(ev.get("message") or ""))


def occurrences(facts: Facts) -> list[Occurrence]:
    """Every Event's occurrences: timed where a copy says when, else between its first and last."""
    out = []
    for one in facts.events.values():
        reason, pod, container, message = one["proto"]
        times, first = one["times"], one["times"][1]
        last = max(times.values())
        for k in range(1, one["count"] + 1):
            t = times.get(k)
            out.append(Occurrence(t, reason, pod, container, one["at"], message, first, last))
    return out


def _pod(facts: Facts, pod: dict, at: _Where) -> None:
    meta = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    if not meta.get("name"):
        raise at.fail("metadata.name", ": missing on a Pod")
    key = f"{meta.get('namespace') or 'default'}/{meta['name']}"
    owners = [o for o in meta.get("ownerReferences") or [] if isinstance(o, dict)]
    owner = next((str(o.get("name")) for o in owners if o.get("name")), "")
    facts.owners[key] = owner or facts.owners.get(key, "")
    status = pod.get("status") if isinstance(pod.get("status"), dict) else {}
    ready = _ready_ns(status, at)
    facts.tally.used += 1
    for i, cs in enumerate(status.get("containerStatuses") or []):
        _container(facts, key, owner, cs, ready, at, f"status.containerStatuses[{i}]")


def _ready_ns(status: dict, at: _Where) -> int | None:
    for i, c in enumerate(status.get("conditions") or []):
        if isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True":
            return at.time(c, "lastTransitionTime", f"status.conditions[{i}].lastTransitionTime")
    return None


def _container(facts: Facts, pod: str, owner: str, cs: dict, ready, at: _Where, path: str):
    if not isinstance(cs, dict) or not cs.get("name"):
        raise at.fail(f"{path}.name", ": missing")
    name = str(cs["name"])
    restarts = cs.get("restartCount", 0)
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        raise at.fail(f"{path}.restartCount", f" = {restarts!r}: expected a whole number ≥ 0")
    state = cs.get("state") if isinstance(cs.get("state"), dict) else {}
    last = cs.get("lastState") if isinstance(cs.get("lastState"), dict) else {}
    for where, term in ((f"{path}.lastState", last), (f"{path}.state", state)):
        if isinstance(term.get("terminated"), dict):
            _life(facts, pod, name, term["terminated"], at, f"{where}.terminated")
    running = state.get("running") if isinstance(state.get("running"), dict) else {}
    waiting = state.get("waiting") if isinstance(state.get("waiting"), dict) else {}
    started = at.time(running, "startedAt", f"{path}.state.running.startedAt")
    now = Now(
        pod,
        name,
        owner,
        restarts,
        started,
        ready if cs.get("ready") else None,
        str(waiting.get("message") or ""),
        at.where,
    )
    old = facts.now.get((pod, name))
    if old is None or (now.restarts, now.running_ns or 0) >= (old.restarts, old.running_ns or 0):
        facts.now[(pod, name)] = now


def _life(facts: Facts, pod: str, name: str, term: dict, at: _Where, path: str) -> None:
    started = at.time(term, "startedAt", f"{path}.startedAt")
    finished = at.time(term, "finishedAt", f"{path}.finishedAt")
    if started is None or finished is None:
        missing = "startedAt" if started is None else "finishedAt"
        raise at.fail(f"{path}.{missing}", ": missing on a terminated container")
    code = term.get("exitCode")
    if code is not None and (isinstance(code, bool) or not isinstance(code, int)):
        raise at.fail(f"{path}.exitCode", f" = {code!r}: expected a whole number")
    facts.tally.seen(finished)
    life = Life(pod, name, started, finished, code, str(term.get("reason") or ""), at.where)
    facts.lives[(pod, name, started)] = life
