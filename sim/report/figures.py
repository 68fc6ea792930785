"""The report's matplotlib figures. Each takes plain data and returns a Figure; ``save`` writes it.

Every axis carries its unit and every figure a title that says what it shows, so a figure pasted
alone into a review still reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from sim.output import atomic_write

FIGSIZE = (7.5, 4.8)


def subplots(*grid, figsize, **kwargs):
    """A Figure of its own, not pyplot's: no backend, no window, nothing global to close, and a
    notebook shows the returned Figure inline."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid, **kwargs)


def save(fig: Figure, folder: Path, stem: str, svg: bool = False) -> list[str]:
    """Write ``stem.png`` (and ``stem.svg``) atomically; return the file names written."""
    import io

    names = []
    for ext in ("png", "svg") if svg else ("png",):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, dpi=100, bbox_inches="tight", metadata=_metadata(ext))
        atomic_write(folder / f"{stem}.{ext}", buf.getvalue())
        names.append(f"{stem}.{ext}")
    return names


def _metadata(ext: str) -> dict:
    # No creation date or software version in the files: the same run gives the same bytes.
    return {"Software": None} if ext == "png" else {"Date": None, "Creator": None}


def db_init_cdf(
    durations_s: np.ndarray,
    marks: Sequence[tuple[str, float]],
    target_success: float,
    subtitle: str,
) -> Figure:
    """CDF of database-init duration and, below, its tail on a log scale with the target line."""
    x = np.sort(np.asarray(durations_s, dtype=float))
    n = x.size
    fig, (top, bottom) = subplots(2, 1, figsize=(7.5, 6.4), sharex=True)
    if n == 0:  # a hopeless scenario: say so instead of drawing an empty curve
        top.text(0.5, 0.5, "no database init finished", ha="center", va="center")
        x, n = np.zeros(1), 1
        cdf = np.zeros(1)
    else:
        cdf = np.arange(1, n + 1) / n
    top.step(x, cdf, where="post", color="C0", label="simulated db init")
    top.set_ylabel("P(db init ≤ t)")
    top.set_ylim(0, 1.02)
    tail = 1 - cdf + 1 / n  # P(db init ≥ t) as counted, never 0 on a log axis
    bottom.step(x, tail, where="post", color="C0")
    bottom.set_yscale("log")
    bottom.set_ylabel("P(db init ≥ t), log scale")
    bottom.set_xlabel("database-init duration t (s)")
    bottom.axhline(1 - target_success, color="grey", ls=":", lw=1)
    bottom.annotate(
        f"target: {100 * (1 - target_success):g} % may exceed the timeout",
        (x[0] if n else 0, 1 - target_success),
        xytext=(2, 3),
        textcoords="offset points",
        fontsize=8,
        color="grey",
    )
    for i, (label, seconds) in enumerate(marks):
        for ax in (top, bottom):
            ax.axvline(seconds, color=f"C{i + 1}", ls="--", lw=1.2, label=f"{label}: {seconds:g} s")
    top.legend(loc="lower right", fontsize=8)
    top.set_title(f"Database-init duration, without a binding deadline\n{subtitle}", fontsize=10)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def heatmap(
    rows: list[dict],
    x_field: str,
    y_field: str,
    value: str = "p_start_failure",
    subtitle: str = "",
) -> Figure:
    """P(start fails) (or another row figure) over two swept fields, each cell labelled."""
    xs = sorted({r[x_field] for r in rows})
    ys = sorted({r[y_field] for r in rows})
    grid = np.full((len(ys), len(xs)), np.nan)
    for r in rows:
        v = r[value]
        grid[ys.index(r[y_field]), xs.index(r[x_field])] = np.nan if v is None else float(v)
    fig, ax = subplots(figsize=FIGSIZE)
    im = ax.imshow(grid * 100, origin="lower", aspect="auto", cmap="magma_r", vmin=0, vmax=100)
    ax.set_xticks(range(len(xs)), [f"{v:g}" for v in xs], fontsize=10)
    ax.set_yticks(range(len(ys)), [f"{v:g}" for v in ys], fontsize=10)
    ax.set_xlabel(_axis_label(x_field))
    ax.set_ylabel(_axis_label(y_field))
    for (j, i), v in np.ndenumerate(grid):
        if not math.isnan(v):
            txt = "0" if v == 0 else f"{100 * v:.2g}"
            ax.text(i, j, txt, ha="center", va="center", fontsize=9, color=_ink(v))
    bar = fig.colorbar(im, ax=ax)
    bar.set_label(f"{_value_label(value)} (%)")
    ax.set_title(f"{_value_label(value)} (%)\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def _ink(v: float) -> str:
    return "white" if v > 0.5 else "black"


def _axis_label(field: str) -> str:
    labels = {
        "startup.db_init_timeout_s": "database-init timeout (s)",
        "fleet.instances": "fleet size (instances starting at once)",
        "pool.min_size": "pool min_size (connections opened at start)",
        "pool.max_size": "pool max_size (connections per instance)",
        "connector.min_instances": "connector min_instances",
    }
    if field in labels:
        return labels[field]
    # A duration's parameter (connector.setup_s.median) is in seconds as the duration is.
    seconds = field.endswith("_s") or field.rsplit(".", 1)[0].endswith("_s")
    return f"{field} (s)" if seconds and not field.endswith("sigma") else field


def _value_label(value: str) -> str:
    return {
        "p_start_failure": "P(start attempt fails)",
        "p_db_init_timeout": "P(db init reaches the timeout)",
    }.get(value, value)


def timeline(panels: Sequence[tuple[str, dict]], free_slots: int, max_connections: int) -> Figure:
    """One replication per column: connections held vs the limit, connector instances, ready."""
    # One time axis for every panel (and one y axis per row), so the columns compare at a glance.
    fig, axes = subplots(
        3, len(panels), figsize=(5.2 * len(panels), 7.2), squeeze=False, sharex=True, sharey="row"
    )
    fig.subplots_adjust(hspace=0.15)
    for col, (title, tl) in enumerate(panels):
        conns, cx, ready = axes[0][col], axes[1][col], axes[2][col]
        t = [0.0, *tl["t"]]
        conns.step(t, [0, *tl["db_connections"]], where="post", label="held by the fleet")
        conns.axhline(
            max_connections,
            color="black",
            ls=":",
            lw=1.2,
            label=f"max_connections ({max_connections})",
        )
        conns.axhline(free_slots, color="C3", ls="--", lw=1.2, label=f"usable slots ({free_slots})")
        top = max(max_connections, max(tl["db_connections"], default=0))
        conns.set_ylim(0, 1.15 * top)
        # Labelled where they are drawn: with few reserved slots the two lines nearly touch.
        for y, text, va in (
            (max_connections, f"max_connections {max_connections}", "bottom"),
            (free_slots, f"usable {free_slots}", "top"),
        ):
            conns.annotate(
                text,
                (0, y),
                xytext=(3, 2 if va == "bottom" else -2),
                textcoords="offset points",
                va=va,
                fontsize=7,
                color="black" if va == "bottom" else "C3",
            )
        conns.set_ylabel("connections")
        conns.set_title(title, fontsize=10)
        conns.legend(fontsize=7, loc="lower right")
        first_cx = tl["connector_instances"][0] if tl["connector_instances"] else 0
        cx.step(t, [first_cx, *tl["connector_instances"]], where="post", color="C1")
        cx.set_ylabel("connector instances")
        cx.yaxis.set_major_locator(MaxNLocator(integer=True))
        ready.step(t, [0, *tl["instances_ready"]], where="post", color="C2")
        ready.set_ylabel("instances ready")
        ready.set_xlabel("time since the deploy (s)")
        for ax in (conns, cx, ready):
            ax.grid(alpha=0.3)
            ax.set_xlim(left=0)
            ax.label_outer()
    fig.suptitle("One replication's timeline (same random draws in each column)", fontsize=11)
    return fig


def restarts_vs_fleet(
    series: Sequence[tuple[str, list[dict]]], fleet_field: str = "fleet.instances"
) -> Figure:
    """Restarts per instance and work amplification against fleet size, one line per timeout."""
    fig, (left, right) = subplots(1, 2, figsize=(10, 4.2))
    for label, rows in series:
        rows = sorted(rows, key=lambda r: r[fleet_field])
        x = [r[fleet_field] for r in rows]
        left.plot(x, [r["restarts_per_instance"] for r in rows], marker="o", label=label)
        right.plot(x, [r["work_amplification"] for r in rows], marker="o", label=label)
    left.set_ylabel("restarts per instance")
    right.set_ylabel("work amplification (attempts ÷ needed, ×)")
    right.axhline(1.0, color="grey", ls=":", lw=1)
    for ax in (left, right):
        ax.set_xlabel(_axis_label(fleet_field))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(
        "The restart loop's feedback: more instances, more retries per instance", fontsize=11
    )
    fig.tight_layout()
    return fig


def tornado(rows: Sequence[tuple[str, float, float, float, float, float]], subtitle: str) -> Figure:
    """Per uncertain value (first row on top): its total and first-order Sobol' indices on
    P(start attempt fails), each with its bootstrap interval, and how often it alone flips the
    verdict. ``rows``: (field, S1, S1 half-width, ST, ST half-width, flip share)."""
    names = [r[0] for r in rows][::-1]
    y = np.arange(len(rows))
    first, first_conf, total, total_conf, flips = (
        np.array([r[k] for r in rows][::-1], dtype=float) for k in range(1, 6)
    )
    height = max(2.5, 0.45 * len(rows) + 1.4)
    fig, (left, right) = subplots(1, 2, figsize=(10, height), sharey=True)
    left.barh(y, total, xerr=total_conf, color="C0", alpha=0.45, label="total (ST)", capsize=2)
    left.barh(y, first, xerr=first_conf, height=0.4, color="C0", label="first order (S1)")
    left.set_xlabel("Sobol' index on P(start attempt fails)")
    left.axvline(0, color="black", lw=0.8)
    if not np.any(total):
        left.set_xlim(-0.05, 1.05)
    left.legend(fontsize=8, loc="lower right")
    right.barh(y, 100 * flips, color="C3")
    right.set_xlabel("base points where the value alone flips the verdict (%)")
    right.set_xlim(0, max(5.0, 110 * float(flips.max(initial=0))))
    left.set_yticks(y, names, fontsize=9)
    for ax, empty, text in (
        (left, not np.any(first) and not np.any(total), "every index is 0: P(start attempt\n"
         "fails) hardly varies across the worlds"),
        (right, not np.any(flips), "no value alone flips the verdict\ninside its range"),
    ):  # fmt: skip
        ax.grid(alpha=0.3, axis="x")
        if empty:  # say so, rather than leave an empty panel to be read as a drawing error
            ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9)
    fig.suptitle(f"What the answer depends on\n{subtitle}", fontsize=10)
    fig.tight_layout()
    return fig


def p_fail_against(
    series: Sequence[tuple[str, Sequence[float], Sequence[float]]],
    field: str,
    log: bool,
    allowed: float,
) -> Figure:
    """P(start attempt fails) in each world against one uncertain value, one colour per
    configuration, with the target's allowed share as a line."""
    fig, ax = subplots(figsize=FIGSIZE)
    for i, (label, x, p) in enumerate(series):
        ax.scatter(x, 100 * np.asarray(p, dtype=float), s=14, alpha=0.6, color=f"C{i}", label=label)
    ax.axhline(100 * allowed, color="grey", ls=":", lw=1)
    ax.annotate(
        f"target: at most {100 * allowed:g} %",
        (0, 100 * allowed),
        xycoords=("axes fraction", "data"),
        xytext=(3, 3),
        textcoords="offset points",
        fontsize=8,
        color="grey",
    )
    if log:
        ax.set_xscale("log")
    ax.set_xlabel(_axis_label(field))
    ax.set_ylabel("P(start attempt fails) in the world (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(
        f"P(start attempt fails) against {field}, one point per world\n(the other unknowns "
        "drawn across their ranges)",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


BREAKER_LABELS = {
    "none": "no breaker (today)",
    "in_process": "(a) in the process, exit 3",
    "stay_up": "(b) stay up, own breaker",
    "shared": "(c) stay up, fleet-shared breaker",
}


def breaker_forms(
    times_s: Sequence[float],
    tries: dict[str, Sequence[float]],
    ready: dict[str, Sequence[float]],
    recovers_at_s: float | None,
    subtitle: str,
) -> Figure:
    """What each form of circuit breaker does: start-up tries begun per instance (the restart
    loop's work), and the share of instances ready, over time; (a) lies on today's curve."""
    fig, (left, right) = subplots(1, 2, figsize=(11.0, 4.2))
    for i, form in enumerate(tries):
        style = {"color": f"C{i}", "lw": 2.6 if form == "none" else 1.5}
        if form == "in_process":
            style |= {"ls": "--"}  # drawn over today's: it is the same curve
        left.step(times_s, tries[form], where="post", label=BREAKER_LABELS[form], **style)
        right.step(times_s, ready[form], where="post", label=BREAKER_LABELS[form], **style)
    left.set_ylabel("start-up tries begun per instance")
    right.set_ylabel("share of instances ready")
    right.set_ylim(0, 1.05)
    for ax in (left, right):
        ax.set_xlabel("time since the deploy (s)")
        ax.grid(alpha=0.3)
        ax.set_xlim(left=0)
        if recovers_at_s is not None:
            ax.axvline(recovers_at_s, color="black", ls=":", lw=1.2)
            ax.annotate(
                "path recovers",
                (recovers_at_s, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
                fontsize=7,
            )
    left.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"Circuit breakers at start-up: {subtitle}", fontsize=11)
    return fig
