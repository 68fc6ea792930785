"""``validation.md`` and ``validation.png``: measured and predicted side by side, with verdicts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from sim.validate import Comparison, Validation, verdict_line


def markdown(v: Validation, scenario_label: str, command: str) -> str:
    lines = [
        "# Validation: measured vs predicted",
        "",
        f"`{command}`",
        "",
        f"Campaigns: {', '.join(v.runs)}. Model: {scenario_label}; {v.replications} simulated "
        f"replications per campaign; {v.confidence:.0%} confidence.",
        "",
        f"**Verdict: {verdict_line(v)}.**",
        "",
        "## Pooled figures",
        "",
        *_table(v.figures),
    ]
    if v.conditional:
        lines += [
            "",
            "## Conditional on each run's scale-out times",
            "",
            "Each run simulated again with its connector's scale-outs at the times its emulator "
            "log shows: the scale-out delay dominates run-to-run spread, so this is the sharper "
            "test.",
            "",
            *_table(v.conditional),
        ]
    if v.measured_waits.size or v.simulated_waits.size:
        lines += [
            "",
            "Traffic after ready: the checkout waits of the requests served within the "
            "scenario's `traffic.window_s` of their instance's ready time (a campaign's "
            "`requests.jsonl`); a wait under 1 ms counts as 0, the harness's own scheduling.",
        ]
    lines += ["", "![measured and simulated CDFs of database-init durations](validation.png)", ""]
    return "\n".join(lines)


def _table(figs: list[Comparison]) -> list[str]:
    rows = ["| figure | measured | predicted | verdict | how |", "|---|---|---|---|---|"]
    for f in figs:
        rows.append(
            f"| {f.name} | {_num(f.measured)}{_iv(f.measured_interval)} | "
            f"{_num(f.predicted)}{_iv(f.predicted_interval)} | {f.verdict} | {f.method} |"
        )
    return rows


def _num(x: float) -> str:
    if math.isnan(x):  # a counter no record reported: sim.validate gives it no verdict
        return "not measured"
    return "never" if math.isinf(x) else f"{x:.4g}"


def _iv(iv) -> str:
    return "" if iv is None else f" [{_num(iv[0])}, {_num(iv[1])}]"


def figure(v: Validation, folder: Path) -> str:
    from sim.report.figures import save, subplots

    traffic = v.measured_waits.size > 0
    if traffic:  # a second panel: the checkout waits after ready
        fig, (ax, waits) = subplots(1, 2, figsize=(12, 4.2))
        _waits_panel(waits, v)
    else:
        fig, ax = subplots(figsize=(7, 4.2))
    for values, label, style in (
        (v.measured_inits, "measured", "-"),
        (v.simulated_inits, "simulated", "--"),
    ):
        x = np.sort(values)
        ax.step(x, np.arange(1, x.size + 1) / x.size, style, where="post", label=label, lw=2)
    for run_id, values in v.conditional_inits.items():
        x = np.sort(values)
        ax.step(
            x,
            np.arange(1, x.size + 1) / x.size,
            ":",
            where="post",
            lw=1,
            label=f"simulated at {run_id}'s scale-outs",
        )
    ax.set_xlabel("database init (s)")
    ax.set_ylabel("share of attempts at or below")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save(fig, folder, "validation")[0]


def _waits_panel(ax, v: Validation) -> None:
    """Measured and simulated CDFs of the checkout waits in the window (traffic after ready)."""
    for values, label, style in (
        (v.measured_waits, "measured", "-"),
        (v.simulated_waits, "simulated", "--"),
    ):
        x = np.sort(values)
        if x.size:
            ax.step(x, np.arange(1, x.size + 1) / x.size, style, where="post", label=label, lw=2)
    # Most checkouts find an idle connection (wait 0): show the waits above that step.
    at_zero = [np.mean(w == 0) for w in (v.measured_waits, v.simulated_waits) if w.size]
    ax.set_ylim(max(min(at_zero) - 0.02, 0.0), 1.005)
    ax.set_xlabel("checkout wait in the window after ready (s)")
    ax.set_ylabel("share of requests served at or below")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
