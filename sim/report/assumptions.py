"""What a decision assumes: the sensitivity analysis (sim/sensitivity.py) as the ADR's section
"What this decision assumes", as ``startsim sensitivity``'s table, and as the figures' jobs (the
tornado, and P(start attempt fails) against the most important unknown). Text and plain data from
the typed records; writing is the caller's job."""

from __future__ import annotations

from rich.table import Table

from sim.report.evidence import Cite
from sim.sensitivity import Assumptions, FieldEffect, Sensitivity


def _pct(x: float | None, digits: int = 0) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _index(e: FieldEffect) -> str:
    i = e.p_start_failure
    if i is None:
        return "— (the same in every world)"
    return f"{i.total:.2f} ± {i.total_conf:.2f} (S1 {i.first:.2f} ± {i.first_conf:.2f})"


def _where(e: FieldEffect | None) -> str:
    """Whether the verdict changes inside the range, and where."""
    if e is None:
        return "fixed by this configuration"
    if e.flips == 0:
        return "no"
    if e.threshold is None:
        return f"yes, in {_pct(e.flips)} of the pairs, only together with other values"
    side = "above" if e.holds_above else "below"
    return f"yes, in {_pct(e.flips)} of the pairs; the target is met {side} about {e.threshold:.3g}"


def parts(a: Assumptions | None, figures: dict[str, str], cite: Cite, after: str = "") -> list[str]:
    """The ADR's section as a list: empty when the scenario gives no value as a range;
    ``after``: a paragraph closing it (how to decide across the ranges, sim.report.robust)."""
    if a is None:
        return []
    return [section(a, figures, cite) + (f"\n\n{after}" if after else "")]


def section(a: Assumptions, figures: dict[str, str], cite: Cite) -> str:
    """The ADR's "## What this decision assumes"."""
    s, today = a.chosen, a.today
    mine = {e.field: e for e in s.effects}
    lines = [
        "## What this decision assumes",
        "",
        f"The scenario gives {len(today.effects)} values as ranges. Each configuration was "
        f"simulated across them in Saltelli's design ({s.base} base points: {s.worlds} worlds"
        + (f", {today.worlds} for today's" if today.worlds != s.worlds else "")
        + f", {s.replications} replications each, one seed for all; method: "
        f"{cite('uncertainty.md', 'sensitivity-what-to-measure-first', 'docs/uncertainty.md')}). "
        f"A world meets the target when its P(start attempt fails), estimated from its "
        f"replications, is at most {_pct(1 - s.target_success, 2)} (the world's value, not "
        f"the upper bound the decision is shown with): {s.configuration} meets it in "
        f"{_pct(s.meets_share)} of the worlds"
        + (
            f", today's configuration in {_pct(today.meets_share)}."
            if a.decision is not None
            else "."
        ),
        "",
        _spread_of(s),
        "",
        "| assumption | range | assumed | changes the decision inside it | "
        "total index on P(start fails) |",
        "|---|---|---|---|---|",
    ]
    fixed = [e for e in today.effects if e.field not in mine]  # set by the decision itself
    for e in (*s.effects, *fixed):
        chosen = mine.get(e.field)
        shown = "—" if chosen is None else _index(chosen)
        lines.append(f"| `{e.field}` | {e.range} | {e.nominal:g} | {_where(chosen)} | {shown} |")
    lines += ["", _first(a)]
    top = key_unknown(a)
    for role, caption in (
        ("tornado", "Sobol' indices on P(start attempt fails) and flips of the verdict"),
        ("unknown", f"P(start attempt fails) per world against {top.field if top else ''}"),
    ):
        if role in figures:
            lines += ["", f"![{caption}]({figures[role]})"]
    return "\n".join(lines)


def _spread_of(s: Sensitivity) -> str:
    """How often the configuration fails at all across the worlds: an index shares out a
    variance, and a variance of one failing world in hundreds says little."""
    p = s.per_world.p_start_failure
    failing = [x for x in p if x > 0]
    if not failing:
        return f"P(start attempt fails) is 0 in every world of {s.configuration}."
    return (
        f"P(start attempt fails) of {s.configuration} is above 0 in {len(failing)} of the "
        f"{len(p)} worlds (at most {_pct(max(failing), 2)}); the indices share out its "
        "variance across the values, with their bootstrap intervals."
    )


def _first(a: Assumptions) -> str:
    first = a.measure_first()
    if first is None:
        top = a.chosen.moves_most
        text = (
            "**What to measure first:** nothing inside these ranges changes the decision. "
            "Ranges are assumptions too: a value outside its range needs a new run."
        )
        if top is not None and top.p_start_failure.total > 0:
            text += (
                f" What moves P(start attempt fails) most is `{top.field}`" + _command(top) + "."
            )
        return text
    source = a.chosen if a.chosen.first is not None else a.today
    m = first.measurement
    runs = f" It needs about {m.runs:,} {m.unit}: {m.how}." if m.runs is not None else f" {m.how}."
    return (
        f"**What to measure first: `{first.field}`**, which alone flips the verdict of "
        f"{source.configuration} in {_pct(first.flips)} of the design's pairs: {m.what}"
        + (
            f", measured by `{m.command}`."
            if m.command
            else ", which no startsim command measures yet."
        )
        + runs
    )


def _command(e: FieldEffect) -> str:
    m = e.measurement
    return f" ({m.what}: `{m.command}`)" if m.command else ""


def sensitivity_table(s: Sensitivity, scenario: str) -> Table:
    """``startsim sensitivity``'s table: each value's indices, flips and threshold, ranked."""
    table = Table(
        title=f"{scenario}, {s.configuration}: {s.worlds} worlds ({s.base} base points × "
        f"{len(s.effects) + 2}) × {s.replications} replications, seed {s.seed}, {s.engine} engine",
        header_style="bold",
    )
    table.add_column("uncertain value (range)", no_wrap=True)
    for col in ("ST P(fail)", "S1 P(fail)", "flips", "threshold"):
        table.add_column(col, justify="right", no_wrap=True)
    for e in s.effects:
        p = e.p_start_failure
        table.add_row(
            f"{e.field}\n  {e.range}",
            "—" if p is None else f"{p.total:.2f}±{p.total_conf:.2f}",
            "—" if p is None else f"{p.first:.2f}±{p.first_conf:.2f}",
            _pct(e.flips),
            "—" if e.threshold is None else f"{e.threshold:.3g}",
        )
    first = s.first
    if first is None:
        what = "measure first: nothing inside these ranges changes the verdict"
    else:
        m = first.measurement
        runs = f"{m.runs:,} {m.unit}" if m.runs is not None else m.how
        what = f"measure first: {first.field} — {m.command or m.what}; {runs}"
    table.caption = (
        f"meets the target (P(start attempt fails) ≤ {_pct(1 - s.target_success, 2)}) in "
        f"{_pct(s.meets_share)} of the worlds. ST, S1: total and first-order Sobol' indices "
        "(± the bootstrap interval's half-width); flips: base points where the value alone "
        f"flips the verdict.\n{what}"
    )
    table.caption_justify = "left"
    return table


def tornado_rows(s: Sensitivity) -> list[tuple[str, float, float, float, float, float]]:
    """The tornado's bars, in the ranking's order (0 where the output does not vary)."""
    rows = []
    for e in s.effects:
        p = e.p_start_failure
        idx = (p.first, p.first_conf, p.total, p.total_conf) if p else (0.0, 0.0, 0.0, 0.0)
        rows.append((e.field, *idx, e.flips))
    return rows


def key_unknown(a: Assumptions | Sensitivity) -> FieldEffect | None:
    """The unknown the figures plot against: what to measure first, else what moves P(start
    attempt fails) most."""
    if isinstance(a, Assumptions):
        return a.measure_first() or a.chosen.moves_most or a.chosen.effects[0]
    return a.first or a.moves_most or (a.effects[0] if a.effects else None)


def figure_jobs(a: Assumptions, scenario: str) -> dict[str, tuple[str, str, tuple]]:
    """The two figures as role → (file stem, builder in sim.report.figures, arguments)."""
    s = a.chosen
    subtitle = f"{scenario}, {s.configuration}: {s.worlds} worlds × {s.replications} replications"
    jobs = {"tornado": ("tornado", "tornado", (tornado_rows(s), subtitle))}
    top = key_unknown(a)
    if top is not None:
        jobs["unknown"] = ("p-fail-vs-unknown", "p_fail_against", _against(a, top.field))
    return jobs


def _against(a: Assumptions, field: str) -> tuple:
    series = []
    for s in (a.today, a.decision):
        if s is not None and field in s.per_world.fields:
            w = s.per_world
            series.append((s.configuration, w.of(field), w.p_start_failure))
    log = "(log)" in next(e.range for e in a.chosen.effects + a.today.effects if e.field == field)
    return (series, field, log, 1 - a.chosen.target_success)
