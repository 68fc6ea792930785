"""The ADR's evidence: what is known and what is assumed, start-up success as the team counts it,
and what the team's observed failures imply. Text from the typed view of summary.json
(``sim.report.view``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sim.provenance import Entry
from sim.report.view import Implied, ObservedFailures, SuccessView
from sim.success import DEFINITIONS

Cite = Callable[..., str]

# The lists of the Context, in the order a reviewer trusts them.
GROUPS = (
    ("fact", "The incident's facts", "the incident's audit, the team's configuration and logs"),
    ("published", "Published figures", "vendors' and projects' documentation"),
    ("measured", "Measured", "load campaigns and logs"),
    ("fitted", "Fitted", "chosen so the model reproduces a measured figure"),
    ("assumed", "Assumptions", "nothing backs them; each with why and how far it may be off"),
    ("unlabelled", "Not labelled", "the scenario sets them without saying where they come from: "
     "treat them as assumptions"),
)  # fmt: skip


def known_and_assumed(sources: tuple[Entry, ...], cite: Cite) -> str:
    """The Context's lists: every value of the scenario under the kind of its label."""
    lines = [
        "### What is known and what is assumed",
        "",
        "Every value of the scenario under where it comes from (the scenario's `[sources]`; "
        "values left at startsim's defaults carry the default's label, marked *default*). "
        f"The incident's facts: {cite('sources.md', 'the-incidents-own-facts', 'F1–F14, R1–R12')}.",
    ]
    for kind, title, what in GROUPS:
        rows = [e for e in sources if e.kind == kind]
        if not rows:
            continue
        lines += ["", f"**{title}** ({what}):", ""]
        lines += [f"- {_entry(e, cite)}" for e in rows]
    return "\n".join(lines)


def _entry(e: Entry, cite: Cite) -> str:
    detail = e.detail
    if e.kind == "published" and detail.startswith("docs/sources.md#"):
        anchor = detail.removeprefix("docs/sources.md#")
        detail = cite("sources.md", anchor, anchor.replace("-", " "))
    parts = [p for p in (detail, e.note) if p]
    tail = f": {'; '.join(parts)}" if parts else ""
    default = " *default*" if e.default else ""
    return f"`{e.field}` = {show(e.value)}{default}{tail}"


def show(value: Any) -> str:
    """A scenario value in a sentence: a distribution as its parameters."""
    if isinstance(value, dict) and "dist" in value:
        params = ", ".join(f"{k} {show(v)}" for k, v in value.items() if k != "dist")
        return f"{value['dist']}({params})"
    if isinstance(value, dict) and "name" in value:  # a start-up phase: its name, then the rest
        items = sorted(value.items(), key=lambda kv: kv[0] != "name")  # the name first
        name, *rest = (show(v) if k == "name" else f"{k} {show(v)}" for k, v in items)
        return f"{name} ({', '.join(rest)})"
    if isinstance(value, list):
        if len(value) > 6:
            return f"{len(value)} values"
        return "[" + ", ".join(show(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


NAMES = {
    "starts": "starts",
    "first_starts": "first starts",
    "instances_ready": "instances ready",
    "clean_deploys": "clean deploys",
}


def success_section(success: SuccessView) -> str:
    """Start-up success by the team's definition, judged on its criterion, the others beside."""
    definition, criterion = success.definition, success.criterion
    rates = success.by_definition
    own = success.own
    judged = ""
    if criterion is not None:
        verdict = {
            "met": "**met**",
            "not met": "**not met**",
            "too close to call": "too close to call",
        }
        judged = f"; the criterion > {criterion:.4g}: {verdict[own.criterion]}"
        seq = success.sequential
        if seq is not None:
            judged += (
                f" ({_pct(seq.confidence)} interval after {seq.replications} replications, "
                f"look {seq.look} of {seq.looks} of the sequential rule)"
            )
    lines = [
        "### Start-up success, as the team counts it",
        "",
        f"The team's definition (`team.success_definition` = `{definition}`): "
        f"{DEFINITIONS[definition]}. Today: {_pct(own.estimate)} "
        f"({_pct(own.ci_low)} – {_pct(own.ci_high)}){judged}. A success rate depends on "
        "what it counts; the same runs by the other definitions:",
        "",
        "| definition | what it counts | success | interval | criterion |",
        "|---|---|---|---|---|",
    ]
    for name, r in rates.items():
        mark = " (the team's)" if name == definition else ""
        lines.append(
            f"| `{name}`{mark} | {DEFINITIONS[name]} | {_pct(r.estimate)} | "
            f"{_pct(r.ci_low)} – {_pct(r.ci_high)} | {r.criterion or '—'} |"
        )
    return "\n".join(lines)


def observed_section(obs: ObservedFailures | None, instances: int) -> str:
    """What the team's observed failed starts imply under the model, and whether they fit it."""
    if obs is None:
        return ""
    per = obs.failed_starts_per_deploy
    n, conf = per.deploys_simulated, obs.confidence
    count = f"{'at least ' if obs.at_least else ''}{obs.observed:,}"
    lines = [
        "### The failures the team observed",
        "",
        f"Observed: {count} failed starts in one monitoring window (`team.observed_failures`). "
        f"The model gives {per.mean:.3g} failed starts per deploy of {instances} instances "
        f"({conf:.0%} interval {per.ci_low:.3g} – {per.ci_high:.3g}, {n:,} simulated "
        "deploys). " + _implied(obs),
    ]
    if obs.verdict is None:
        lines.append(
            "The window's number of deploys is not given, so no test: set `team.window_deploys` "
            "(or `team.window_hours` with `team.deploys_per_hour`) to test the count against the "
            "model."
        )
    else:
        w = obs.window_failures
        p = obs.p_at_least_observed
        verdict = {
            "consistent": "**consistent** with the model",
            "too few failures": "**not consistent**: the model fails too rarely to produce it",
            "too many failures": "**not consistent**: the model fails more often than that",
        }[obs.verdict]
        lines.append(
            f"Over the window's {obs.window_deploys:,} deploys the model gives {w.mean:.1f} "
            f"failed starts on average (95 % of windows {w.p2_5:.0f} – {w.p97_5:.0f}); "
            f"P(at least {obs.observed:,}) = {p:.3g}: the observation is {verdict} "
            f"(exact test on the simulated deploys, at {conf:.0%})."
        )
    lines.append(
        "A count of failed starts from logs can mix causes: exit code 3 is also a worker that "
        "fails to boot, e.g. on an import error."
    )
    return lines[0] + "\n\n" + " ".join(lines[2:])


def _implied(obs: ObservedFailures) -> str:
    d, h = obs.deploys_implied, obs.hours_implied
    per = obs.failed_starts_per_deploy
    if d.estimate is None:
        more = f"more than {d.low:,.0f} deploys" if d.low is not None else "no finite count"
        hours = ""
        y = obs.years_implied
        if h is not None and h.low is not None:
            hours = f" ({h.low:,.0f} hours, {y.low:.1f} years, at the deploy rate)"
        return (
            f"No simulated deploy failed a start (at most {per.ci_high:.3g} a deploy): "
            f"{obs.observed:,} failures would take {more}{hours}. **This scenario does not "
            "explain the observed failures**: what failed is not what it models, or an input is "
            "far from its value here."
        )
    return f"{obs.observed:,} failures correspond to {_span(d, 'deploys')}{_hours(h)}."


def _span(x: Implied, unit: str) -> str:
    return f"{_num(x.estimate)} {unit} ({_num(x.low)} – {_num(x.high)})"


def _hours(h: Implied | None) -> str:
    return "" if h is None else f", {_span(h, 'hours')} at the deploy rate"


def _num(x: float | None) -> str:
    return "unbounded" if x is None else f"{x:,.0f}"
