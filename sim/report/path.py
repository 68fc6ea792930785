"""The ADR's "What the evidence supports": a path that fails connections, what no timeout, pool or
connector value does about it, what the route back leaves of today's deadlines, and what the
startup probe lets requests in to (sim.remedies)."""

from __future__ import annotations

from sim.remedies import PathEvidence, ProbeAdvice
from sim.report.evidence import Cite
from sim.stats import Proportion


def section(path: PathEvidence | None, probe: ProbeAdvice | None, conf: float, cite: Cite) -> str:
    """The section, or "" when the path is sound and the probe waits for the application."""
    if path is None and probe is None:
        return ""
    lines = ["## What the evidence supports", ""]
    if path is not None:
        lines += [*_path(path, conf, cite), ""]
    if probe is not None:
        lines += _probe(probe)
    return "\n".join(lines)


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _interval(p: Proportion, conf: float) -> str:
    return f"{_pct(p.estimate)} ({conf:.0%} interval {_pct(p.ci_low)} – {_pct(p.ci_high)})"


def _path(e: PathEvidence, conf: float, cite: Cite) -> list[str]:
    until = "the end of the run" if e.until_s is None else f"{e.until_s:g} s"
    failed = sum(e.failures_by_reason.values())
    reasons = ", ".join(f"`{k}` {n}" for k, n in sorted(e.failures_by_reason.items()))
    out = [
        f"**The path fails connections, not capacity.** In this scenario the path fails "
        f"{e.p_fault:.0%} of the connections opened from {e.from_s:g} s to {until} "
        f"(`{e.fault}`: {cite('model.md', 'path-faults', 'path faults')}); a faulted connection "
        "never reaches the connector or the database. Today's failed start attempts by reason: "
        f"{reasons or 'none'} ({failed} in all). A longer deadline, a smaller pool or more "
        "connector instances leaves the path as it is: each is simulated under Options "
        "considered.",
        "",
        f"With the route restored ({e.restored_replications} replications): P(start attempt "
        f"fails) {_interval(e.restored_p_start_failure, conf)}.",
    ]
    if e.restored_db_init_p99_s is not None:
        margins = "; ".join(
            f"{name} {bound:g} s: {bound - e.restored_db_init_p99_s:+.1f} s"
            for name, bound in e.bounds_s.items()
        )
        out.append(
            f"Database init then takes {e.restored_db_init_p50_s:.2f} s at the median and "
            f"{e.restored_db_init_p99_s:.2f} s at p99: today's bounds leave this margin over "
            f"that p99 ({margins})."
        )
    return out


def _probe(p: ProbeAdvice) -> list[str]:
    tcp, http = p.today["requests_failed_per_deploy"], p.http["requests_failed_per_deploy"]
    arrived = p.today["requests_per_deploy"]

    def failed(x: dict) -> str:
        if x["mean"] is None:
            return "—"
        spread = f"central deploys {x['deploys_low']:.0f}–{x['deploys_high']:.0f}"
        return f"{x['mean']:.1f} ({spread})"

    return [
        f"**The startup probe.** At {p.rate_per_s:g} requests per second ({arrived:.0f} per "
        "deploy), a TCP startup probe lets requests in once the port is bound, before the "
        "application is ready; a request that reaches a start which then fails gets an error. "
        f"Requests failed per deploy: {failed(tcp)} with today's TCP probe, {failed(http)} with "
        "an HTTP probe on a readiness path (the same simulated starts). " + p.how,
    ]
