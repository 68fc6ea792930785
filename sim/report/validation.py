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
