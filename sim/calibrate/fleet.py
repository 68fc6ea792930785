"""How many instances a deploy started, from the logs: ``fleet.instances`` and its arrival.

A production log's starts (not a campaign's: its fleet is the harness's own) are grouped into
deploys: one per run where the format names one (Cloud Run's revision, a Kubernetes ReplicaSet,
our own log's ``run`` column), else by a gap — first starts more than :data:`SCALE_OUT_GAP_S` after
the previous one begin a new deploy (OTLP traces, whose ``service.name`` spans every deploy). Of a
run, the first such group is the deploy; instances started later are scale-outs (counted). A
deploy's size is its instances that started in the window: each chain's first start (a restart or
a replacement is the same instance again, as in the simulator's records). ``fleet.instances`` is
the median size over the deploys, with a distribution-free interval of the median; the arrival is
``burst`` when the median deploy's instances all started within :data:`BURST_S`, else
``uniform`` over the median deploy's spread (``fleet.window_s``).
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from sim.calibrate.connector import Estimate
from sim.calibrate.inputs import Run
from sim.calibrate.restarts import median_interval

# Assumed: deploys of one service are minutes apart, one deploy's instances seconds apart (the
# incident's deploys came 3–6 an hour, each starting about three instances within 3 s, R2).
SCALE_OUT_GAP_S = 60.0
# Assumed: instances started within this of each other start "together" (the engine's burst);
# Kubernetes times have one-second resolution and a ReplicaSet creates its pods a few at a time.
BURST_S = 10.0


@dataclass(frozen=True)
class Deploy:
    """One deploy: the first start (Unix s) of each instance it started, sorted."""

    name: str
    starts_s: tuple[float, ...]
    later: int = 0  # instances the run started more than SCALE_OUT_GAP_S after: scale-outs

    @property
    def size(self) -> int:
        return len(self.starts_s)

    @property
    def spread_s(self) -> float:
        return self.starts_s[-1] - self.starts_s[0]

    def as_dict(self) -> dict:
        return {
            "deploy": self.name,
            "instances": self.size,
            "spread_s": self.spread_s,
            "started_later": self.later,
        }


def deploys(runs: list[Run]) -> list[Deploy]:
    """The deploys of the production logs among ``runs`` (module docstring)."""
    out = []
    for r in runs:
        if r.kind != "log" or r.server is not None:
            continue
        firsts: dict[str, float] = {}
        for a in [*r.attempts, *r.censored]:
            if a.attempt == 1:
                firsts[a.instance] = min(firsts.get(a.instance, a.start_unix_s), a.start_unix_s)
        groups = _by_gap(sorted(firsts.values()))
        if not groups:
            continue
        if r.deploys_by_run:  # the run's first group is its deploy; later ones scaled it out
            later = sum(len(g) for g in groups[1:])
            out.append(Deploy(r.run_id, tuple(groups[0]), later))
            continue
        out += [Deploy(f"{r.run_id} #{k}", tuple(g)) for k, g in enumerate(groups, start=1)]
    return out


def _by_gap(starts: list[float]) -> list[list[float]]:
    groups: list[list[float]] = []
    for t in starts:
        if not groups or t - groups[-1][-1] > SCALE_OUT_GAP_S:
            groups.append([])
        groups[-1].append(t)
    return groups


def observed_fleet(runs: list[Run], overrides: dict, confidence: float = 0.95) -> list[Estimate]:
    """``fleet.instances`` and ``fleet.arrival`` (with ``fleet.window_s``) from the deploys, into
    ``overrides``; nothing when no production log has starts (campaigns keep their own fleet)."""
    if any(r.kind == "campaign" for r in runs):
        return []
    found = deploys(runs)
    if not found:
        return []
    sizes = sorted(d.size for d in found)
    value = max(1, round(statistics.median(sizes)))
    low, high = median_interval([float(s) for s in sizes], confidence)
    grouped = (
        f"one per run (revision, ReplicaSet, run column), its instances started more than "
        f"{SCALE_OUT_GAP_S:g} s after the one before them left out as scale-outs "
        f"({sum(d.later for d in found)})"
        if all(r.deploys_by_run for r in runs if r.kind == "log")
        else f"first starts more than {SCALE_OUT_GAP_S:g} s apart begin a new deploy"
    )
    before = sum(r.monitoring.dropped for r in runs if r.monitoring is not None)
    shown = ", ".join(f"{d.name} {d.size}" for d in found[:6]) + (", …" if len(found) > 6 else "")
    quality = (
        f"median instances started per deploy over {len(found)} deploys ({shown}); deploys "
        f"{grouped}; a restart or replacement is the same instance"
        + (f"; {before} instances started before the window not counted" if before else "")
    )
    source = "production log: each instance's first start, per deploy"
    overrides["fleet.instances"] = value
    out = [Estimate("fleet.instances", value, low, high, source, len(found), quality)]
    return [*out, *_arrival(found, value, overrides)]


def _arrival(found: list[Deploy], instances: int, overrides: dict) -> list[Estimate]:
    """Burst when the median deploy's instances started within BURST_S, else uniform over its
    spread; the median is over the deploys of more than one instance (one alone has none)."""
    spreads = sorted(d.spread_s for d in found if d.size > 1)
    spread = statistics.median(spreads) if spreads else 0.0
    source = "production log: first starts' spread within each deploy"
    overrides["fleet.waves"] = []
    if spread <= BURST_S:
        overrides.update({"fleet.arrival": "burst", "fleet.window_s": 0.0})
        why = (
            f"the median deploy's {instances} instances started within {spread:.3g} s "
            f"(≤ {BURST_S:g} s: together)"
        )
        return [Estimate("fleet.arrival", "burst", None, None, source, len(found), why)]
    overrides.update({"fleet.arrival": "uniform", "fleet.window_s": round(spread, 3)})
    shown = ", ".join(f"{s:.3g}" for s in spreads[:6]) + (", …" if len(spreads) > 6 else "")
    why = (
        f"the median deploy's instances started over {spread:.3g} s (> {BURST_S:g} s): uniform "
        f"over fleet.window_s; spreads {shown} s"
    )
    return [
        Estimate("fleet.arrival", "uniform", None, None, source, len(spreads), why),
        Estimate("fleet.window_s", spread, spreads[0], spreads[-1], source, len(spreads), why),
    ]
