"""The ADR's paragraph on the fixes teams weigh beside the model's own numbers: a circuit breaker
of each form, a surge limit and PgBouncer (sim.options), each with its verdict from simulation,
what it costs and how it is applied, and the breaker figure. Reads the typed view of
summary.json (sim.report.view)."""

from __future__ import annotations

from collections.abc import Callable

from sim.options import BREAKER, POOLER, SURGE
from sim.report.view import OptionRow, RecommendationView

KINDS = (BREAKER, SURGE, POOLER)
FIGURE_CAPTION = "Each form of circuit breaker: start-up tries per instance and instances ready"


def _ready_p95(r: OptionRow) -> str:
    s = r.fleet_ready_p95_s
    return "never" if s is None or s == float("inf") else f"{s:.3g} s"


def _line(r: OptionRow, verdict: Callable[[OptionRow], str]) -> str:
    f = r.p_start_failure
    return (
        f"- **{r.name}**: {verdict(r)}; P(start attempt fails) {100 * f.estimate:.2f} % "
        f"(interval {100 * f.ci_low:.2f} – {100 * f.ci_high:.2f} %), fleet ready p95 "
        f"{_ready_p95(r)}, {r.restarts_per_instance:.3g} tries after the first per instance."
    )


def section(
    data: RecommendationView, figures: dict[str, str], verdict: Callable[[OptionRow], str]
) -> list[str]:
    """The lines of the paragraph (empty when no such option was weighed)."""
    rows = [r for r in data.candidates if len(r.kinds) == 1 and r.kinds[0] in KINDS]
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
