"""The terminal table of ``startsim rollout``: roll-out plans side by side, in 80 columns."""

from __future__ import annotations

from rich import box
from rich.table import Table

from sim.rolloutplans import PlanRow
from sim.stats import Proportion

COLUMNS = ("plan", "s/u", "pods", "budget", "53300 %", "full %", "fail %", "ready s", "conns")


def _pct(x: float) -> str:
    return f"{100 * x:.1f}".replace(".0", "") if x in (0.0, 1.0) else f"{100 * x:.1f}"


def _bounded(p: Proportion) -> str:
    return f"{_pct(p.estimate)} ≤{_pct(p.ci_high)}"


def _sec(x: float | None) -> str:
    return "never" if x is None else f"{x:.0f}"


def plans_table(title: str, rows: list[PlanRow]) -> Table:
    """One row per plan, in the order given; ``✓`` after a plan whose budget fits and whose
    P(53300) upper bound is below the target."""
    table = Table(
        title=title,
        header_style="bold",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        padding=(0, 0, 0, 1),
    )
    for i, name in enumerate(COLUMNS):
        table.add_column(name, justify="left" if i == 0 else "right", no_wrap=True)
    for r in rows:
        b, f = r.budget, r.figures
        su = "—" if b.surge_pods is None else f"{b.surge_pods}/{b.unavailable_pods}"
        table.add_row(
            r.plan.label + (" ✓" if r.meets_target else ""),
            su,
            f"{b.peak_pods}",
            f"{b.connections}/{b.free_slots}" + ("" if b.fits else "✗"),
            _bounded(f.p_53300),
            _pct(f.p_db_full.estimate),
            _pct(f.p_start_failure.estimate),
            f"{_sec(f.fleet_ready_p50_s)}/{_sec(f.fleet_ready_p95_s)}",
            f"{_sec(f.peak_db_connections_p50)}/{f.peak_db_connections_max}",
        )
    return table


def legend(target: float) -> str:
    """What the columns mean, printed under the table."""
    return (
        "s/u: surge/unavailable pods; pods: old and new at once, at most; budget: their "
        "connections at the plan's worst moment / free slots (✗: more); 53300: deploys with a "
        "connection refused, ≤ its 95 % upper bound; full: deploys that filled the free slots; "
        "fail: start attempts failed; ready: the roll-out's p50/p95; conns: peak p50/max; "
        f"✓: the budget fits and 53300's bound is below {100 * target:g} %"
    )
