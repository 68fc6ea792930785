"""The ADR's words for a decision judged across worlds (sim/robust.py): the Decision's sentences
(where the adopted change holds, and why a cheaper one that meets at the assumed values does not),
the Options table's two columns, and how to run it when it was not. Text from the typed view."""

from __future__ import annotations

from sim.report.view import OptionRow, RecommendationView
from sim.robust import Boundary, Robust, WorldVerdict


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def judged(data: RecommendationView) -> bool:
    """Every option was judged across worlds."""
    return data.robust is not None


def in_worlds(r: Robust) -> str:
    """The share of worlds an option meets in, as a cell."""
    close = f"; {r.too_close} too close to call" if r.too_close else ""
    return f"{_pct(r.share_meeting, 0)} ({r.met} of {r.worlds}{close})"


def worst_cell(r: Robust) -> str:
    """The worst world, as a cell: its P(start attempt fails) and the value that sorts best."""
    w = r.worst_world
    if not w.held_fits:
        p = "held connections exceed the free slots"
    else:
        p = f"P(start fails) {_pct(w.p_start_failure)}"
    b = r.boundary
    return p if b is None else f"{p} at `{b.field}` = {value(w.values[b.field])}"


def where_cell(r: Robust) -> str:
    """Where an option stops meeting, as a cell."""
    b = r.boundary
    if b is None:
        if r.met in (0, r.worlds):
            return "everywhere" if r.met == 0 else "nowhere"
        return "no single value"
    return f"`{b.field}` {'>' if b.meets_below else '<'} {b.value:.3g}"


def columns(row: OptionRow) -> str:
    """The cells the Options table gains when options were judged across worlds."""
    r = row.robust
    if r is None:
        return " — | — | — |"
    return f" {in_worlds(r)} | {worst_cell(r)} | {where_cell(r)} |"


def boundary(b: Boundary | None) -> str:
    """Where an option stops meeting, in words."""
    if b is None:
        return "no single value sorts the worlds where it misses from those where it meets"
    side = ">" if b.meets_below else "<"
    return (
        f"it misses where `{b.field}` {side} {b.value:.3g} (a cut that sorts "
        f"{_pct(b.sorted_right, 0)} of the worlds right; {b.misses_beyond} of them miss beyond "
        "it)"
    )


def value(v: float) -> str:
    """A world's value: a whole number as it is, else three significant digits."""
    return str(v) if isinstance(v, int) else f"{v:.3g}"


def world(w: WorldVerdict) -> str:
    values = ", ".join(f"`{k}` = {value(v)}" for k, v in w.values.items())
    if not w.held_fits:
        return f"{values}, where the ready fleet's connections exceed the free slots"
    return f"{values}, with P(start attempt fails) {_pct(w.p_start_failure)}"


def decision_lines(data: RecommendationView) -> list[str]:
    """The Decision's account of the worlds: where the adopted option holds, and each cheaper
    option that meets at the assumed values but does not hold."""
    plan = data.robust
    need = _pct(plan.robustness, 0)
    how = (
        f"Every option was judged in each of {plan.worlds} worlds ({plan.design} design "
        "over the scenario's ranges, one seed for all), each world's verdict by the sequential "
        "rule; a world still too close to call at the cap counts as not meeting. An option "
        f"holds when it meets the target in at least {need} of the worlds."
    )
    lines = [how]
    adopted = next((r for r in data.candidates if r.name == data.decision.configuration), None)
    if adopted is not None and adopted.robust is not None:
        r = adopted.robust
        lines.append(
            f"**{adopted.name}** holds: it meets the target in {r.met} of {r.worlds} worlds "
            f"({_pct(r.share_meeting, 0)}); its worst world: {world(r.worst_world)}."
        )
    cost = _rank(data, adopted)
    missed = [
        row
        for row in sorted(data.candidates, key=lambda row: _rank(data, row))
        if row.robust is not None
        and not row.robust.holds
        and row.met_nominally
        and _rank(data, row) < cost
    ]
    if missed:  # the nominal answer first: the cheapest option that meets at the assumed values
        row, r = missed[0], missed[0].robust
        which = (
            "which already meets the target at the assumed values"
            if not row.kinds
            else "the least change that meets the target at the assumed values"
        )
        lines.append(
            f"**Not {row.name}**, {which}: "
            f"it holds in only {_pct(r.share_meeting, 0)} of the worlds ({r.met} of {r.worlds}), "
            f"below the {need} required; {boundary(r.boundary)}. Its worst world: "
            f"{world(r.worst_world)}."
        )
    if len(missed) > 1:
        lines.append(
            "Nor do the other options that meet the target at the assumed values hold: "
            + ", ".join(
                f"{row.name} ({_pct(row.robust.share_meeting, 0)} of the worlds)"
                for row in missed[1:]
            )
            + "."
        )
    return lines


def _rank(data: RecommendationView, row: OptionRow | None) -> tuple:
    """An option's place in the order of cost (sim.decision.Candidate.cost)."""
    if row is None:
        return (len(data.decision.cost_order) + 1,)
    order = data.decision.cost_order
    return (len(row.kinds), *sorted(order.index(k) for k in row.kinds))


def how_to_run(data: RecommendationView) -> str:
    """For "What this decision assumes" when the options were judged at the assumed values."""
    if judged(data):
        return ""
    return (
        "This decision was taken at the assumed values. To adopt instead the least change that "
        "holds across these ranges (meets the target in at least 90 % of a design of worlds), "
        "run `startsim recommend --worlds 64`: each option is then simulated in each world, more "
        "replications only where a world's verdict is close."
    )
