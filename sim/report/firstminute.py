"""The ADR's after-ready cost: what each option costs the first minute after an instance is ready,
under the scenario's ``[traffic]`` (sim.afterready), beside today's. Only with traffic; reads the
typed view of summary.json (sim.report.view)."""

from __future__ import annotations

from sim.afterready import AfterReady, QuantileInterval
from sim.report.view import OptionRow, RecommendationView


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def _s(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g} s"


def _wait(q: QuantileInterval) -> str:
    if q.value is None:
        return "—"
    if q.ci_low is None or q.ci_high is None:
        return _s(q.value)
    return f"{_s(q.value)} ({_s(q.ci_low)} – {_s(q.ci_high)})"


def _cost(a: AfterReady) -> str:
    """One option's first minute in a sentence."""
    if a.requests_per_deploy == 0:
        return (
            "no instance becomes ready, so no request is served: "
            f"{a.unrouted_per_deploy:.3g} a deploy find no ready instance"
        )
    f = a.failed_share
    return (
        f"{a.requests_per_deploy:.3g} requests a deploy reach instances in their first "
        f"{a.window_s:g} s after ready; {_pct(f.estimate)} of them fail (interval "
        f"{_pct(f.ci_low)} – {_pct(f.ci_high)}, {a.verdict}); checkout wait p50 "
        f"{_wait(a.checkout_wait_p50_s)}, p99 {_wait(a.checkout_wait_p99_s)}; first request "
        f"served {_s(a.first_served_median_s)} after ready (median); "
        f"{a.connections_held_end:.3g} connections held by the fleet at the end of the run"
    )


def consequence_lines(data: RecommendationView) -> list[str]:
    """Consequences: the adopted option's first minute after ready, and today's."""
    today = data.today
    adopted = next((r for r in data.candidates if r.name == data.decision.configuration), None)
    if today.after_ready is None:
        return []
    rate, allowed = today.after_ready.rate, _pct(1 - data.target_success)
    head = f"- After ready, under the scenario's traffic ({rate}; failed share allowed {allowed}):"
    if adopted is None or adopted is today:
        return [f"{head} {_cost(today.after_ready)}."]
    return [
        f"{head} with **{adopted.name}**, {_cost(adopted.after_ready)}.",
        f"  Today, {_cost(today.after_ready)}.",
    ]


def _row(r: OptionRow) -> str:
    a = r.after_ready
    f = a.failed_share
    if not f.trials:
        return f"| {r.name} | 0 | — | — | {a.verdict} | — | — | — | {a.connections_held_end:.3g} |"
    return (
        f"| {r.name} | {a.requests_per_deploy:.3g} | {_pct(f.estimate)} | "
        f"{_pct(f.ci_low)} – {_pct(f.ci_high)} | {a.verdict} | "
        f"{_wait(a.checkout_wait_p50_s)} | {_wait(a.checkout_wait_p99_s)} | "
        f"{_s(a.first_served_median_s)} | {a.connections_held_end:.3g} |"
    )


def table(data: RecommendationView) -> str:
    """Options considered: each option's first minute after ready; "" without traffic."""
    rows = [r for r in data.candidates if r.after_ready is not None]
    if not rows:
        return ""
    a = rows[0].after_ready
    return "\n".join(
        [
            "### The first minute after ready",
            "",
            f"Under the scenario's traffic ({a.rate}), each option's requests that arrive within "
            f"{a.window_s:g} s of their instance's ready time (docs/model.md, traffic after "
            "ready), on the option's own replications: an option whose failed share lies above "
            f"{_pct(1 - data.target_success)} beyond its interval is not adopted, whatever its "
            "start-ups. Checkout waits with their 95 % order-statistic intervals.",
            "",
            "| option | requests / deploy | failed | interval | verdict | wait p50 | wait p99 "
            "| first served | conns at end |",
            "|---|---|---|---|---|---|---|---|---|",
            *(_row(r) for r in rows),
        ]
    )
