"""The ADR's paragraph on the fixes teams weigh beside the model's own numbers: a circuit breaker
of each form, a surge limit and PgBouncer (sim.options), each with its verdict from simulation,
what it costs and how it is applied, and the breaker figure. Reads the typed view of
summary.json (sim.report.view)."""

from __future__ import annotations

from collections.abc import Callable

from sim.options import FIX_KINDS
from sim.report.view import OptionRow, RecommendationView

FIGURE_CAPTION = "Each form of circuit breaker: start-up tries per instance and instances ready"


def _pct(x: float) -> str:  # as the options table writes them, so each is summary.json's
    return f"{100 * x:.2f} %"


def _line(r: OptionRow, verdict: Callable[[OptionRow], str]) -> str:
    f = r.p_start_failure
    ready = r.fleet_ready_p95_s
    ready_s = "never (some instance not ready)" if ready is None else f"{ready:.1f} s"
    return (
        f"- **{r.name}**: {verdict(r)}; P(start attempt fails) {_pct(f.estimate)} (interval "
        f"{_pct(f.ci_low)} – {_pct(f.ci_high)}), fleet ready p95 {ready_s}, "
        f"{r.restarts_per_instance:.3f} tries after the first per instance."
    )


def section(
    data: RecommendationView, figures: dict[str, str], verdict: Callable[[OptionRow], str]
) -> list[str]:
    """The lines of the paragraph (empty when no such option was weighed)."""
    rows = [r for r in data.candidates if len(r.kinds) == 1 and r.kinds[0] in FIX_KINDS]
    if not rows:
        return []
    lines = [
        "",
        "Circuit breakers, a surge limit and a pooler, each simulated as the others (its verdict, "
        "its figures beside today's, and how it is applied with what it costs). A breaker inside "
        "a process that still exits with code 3 loses its state at the exit and each process "
        "makes one try, so it cannot change a restart loop; one that stays up turns the loop "
        "into a poll, one try per open time; one shared by the fleet holds every instance back "
        "while it is open.",
        "",
    ]
    for r in rows:
        lines.append(_line(r, verdict))
        if r.apply:
            lines += ["", r.apply, ""]
    if "breakers" in figures:
        lines += ["", f"![{FIGURE_CAPTION}]({figures['breakers']})"]
    return lines
