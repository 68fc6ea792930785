"""Terminal tables of the commands' results (rich), kept to an 80-column terminal."""

from __future__ import annotations

from rich.table import Table

from sim import scenario as scenarios
from sim.provenance import KINDS, UNLABELLED, Entry
from sim.report.evidence import show
from sim.report.view import RecommendationView
from sim.stats import Summary
from sim.sweep import Grid


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def summary_table(sc: scenarios.Scenario, s: Summary) -> Table:
    def sec(x):
        return "never" if x is None else f"{x:.1f} s"

    table = Table(
        title=f"{sc.name}: {s.replications} replications, seed {s.seed}",
        show_header=True,
        header_style="bold",
    )
    table.add_column("figure")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("95 % interval / detail", justify="right")
    t, f = s.p_db_init_timeout, s.p_start_failure
    table.add_row(
        f"P(db init > {sc.startup.db_init_timeout_s:g} s timeout) per attempt",
        pct(t.estimate),
        f"{pct(t.ci_low)} – {pct(t.ci_high)}",
    )
    table.add_row(
        "P(start attempt fails) per attempt", pct(f.estimate), f"{pct(f.ci_low)} – {pct(f.ci_high)}"
    )
    table.add_row("P(first start succeeds) per instance", pct(s.p_first_start_success), "")
    table.add_row(
        "never ready within horizon", pct(s.never_ready_fraction), f"horizon {sc.horizon_s:g} s"
    )
    r = s.fleet_ready_s
    table.add_row(
        "fleet ready (all instances) p50",
        sec(r["p50"]),
        f"p95 {sec(r['p95'])}, p99 {sec(r['p99'])}",
    )
    rpi = s.restarts_per_instance
    table.add_row("restarts per instance", "—" if rpi is None else f"{rpi:.2f}", "")
    table.add_row(
        "peak database connections p50",
        "—" if s.peak_db_connections_p50 is None else f"{s.peak_db_connections_p50:.0f}",
        f"max {s.peak_db_connections_max} of {sc.database.free_slots} usable",
    )
    wa = s.work_amplification
    table.add_row(
        "work amplification",
        "—" if wa is None else f"{wa:.2f}×",
        "connection attempts ÷ connections needed",
    )
    table.caption = provenance_footer(sc.provenance())
    table.caption_justify = "left"
    return table


# Rows of the table across worlds: (figure key of sim.worlds.FIGURES, label, format).
WORLD_ROWS = (
    ("p_db_init_timeout", "P(db init > {timeout} s timeout) per attempt", "pct"),
    ("p_start_failure", "P(start attempt fails) per attempt", "pct"),
    ("p_first_start_success", "P(first start succeeds) per instance", "pct"),
    ("never_ready_fraction", "never ready within horizon", "pct"),
    ("fleet_ready_p50_s", "fleet ready (all instances) p50", "sec"),
    ("fleet_ready_p95_s", "fleet ready (all instances) p95", "sec"),
    ("restarts_per_instance", "restarts per instance", "num"),
    ("peak_db_connections_p50", "peak database connections p50", "int"),
    ("peak_db_connections_max", "peak database connections max", "int"),
    ("work_amplification", "work amplification", "times"),
)


def _shown(x, how: str) -> str:
    if how == "pct":
        return pct(x)
    if how == "sec":
        return "never" if x is None else f"{x:.1f} s"
    if x is None:
        return "—"
    return {"num": f"{x:.2f}", "int": f"{x:.0f}", "times": f"{x:.2f}×"}[how]


def worlds_table(sc: scenarios.Scenario, worlds: dict, figures: dict) -> Table:
    """Each figure across the worlds of a design (``worlds``: sim.worlds.Design.as_dict() and
    the run's settings): median and 10–90 % band of the worlds' own figures, and all worlds'
    replications pooled (with its 95 % interval for the two probabilities)."""
    table = Table(
        title=f"{sc.name}: {worlds['worlds']} worlds ({worlds['method']}) × "
        f"{worlds['replications_per_world']} replications, seed {worlds['seed']}",
        header_style="bold",
    )
    table.add_column("figure")
    for col in ("median", "10–90 % of worlds", "pooled"):
        table.add_column(col, justify="right", no_wrap=True)
    for key, label, how in WORLD_ROWS:
        f = figures[key]
        pooled = _shown(f["pooled"], how)
        if "pooled_high" in f:
            pooled += f" ({_shown(f['pooled_low'], how)} – {_shown(f['pooled_high'], how)})"
        table.add_row(
            label.format(timeout=f"{sc.startup.db_init_timeout_s:g}"),
            _shown(f["median"], how),
            f"{_shown(f['p10'], how)} – {_shown(f['p90'], how)}",
            pooled,
        )
    ranges = ", ".join(f"{f['field']} {_spread(f)}" for f in worlds["fields"])
    table.caption = (
        f"uncertain ({len(worlds['fields'])}): {ranges}\n"
        "median and band: over worlds, each a world's own figure; pooled: every world's "
        "replications together, 95 % interval\n" + provenance_footer(sc.provenance())
    )
    table.caption_justify = "left"
    return table


def _spread(f: dict) -> str:
    if "choices" in f:
        return "{" + ", ".join(f"{c:g}" for c in f["choices"]) + "}"
    low, high = f["range"]
    return f"{low:g}–{high:g}" + (" (log)" if f["scale"] == "log" else "")


def provenance_footer(entries: list[Entry]) -> str:
    """Where the inputs come from, in a few lines: counts per kind, the assumptions that carry a
    plausible range, and every value set without a label (all of it: ``--json``'s ``sources``)."""
    counts = {k: sum(e.kind == k for e in entries) for k in (*KINDS, UNLABELLED)}
    lines = ["inputs: " + ", ".join(f"{n} {k}" for k, n in counts.items() if n)]
    ranged = [e for e in entries if e.kind == "assumed" and "range" in e.detail]
    if ranged:
        lines.append(
            "assumed, with a plausible range: "
            + ", ".join(f"{e.field} = {show(e.value)}" for e in ranged)
        )
    bare = [e.field for e in entries if e.kind == UNLABELLED]
    if bare:
        lines.append("set without a label: " + ", ".join(bare))
    return "\n".join(lines)


def scenarios_table() -> Table:
    """The shipped scenarios, one row each."""
    table = Table(show_header=True, header_style="bold")
    table.add_column("name", no_wrap=True)
    for col in ("fleet", "pool", "timeout", "max conn"):
        table.add_column(col, justify="right", no_wrap=True)
    table.add_column("what it shows", ratio=1)
    for name in scenarios.builtin_names():
        sc = scenarios.resolve(name)
        table.add_row(
            name,
            str(sc.fleet.instances),
            f"{sc.pool.min_size}/{sc.pool.max_size}",
            f"{sc.startup.db_init_timeout_s:g} s",
            str(sc.database.max_connections),
            sc.description,
        )
    return table


def recommend_table(sc, data: RecommendationView) -> Table:
    d, v, t = data.decision, data.verdict, data.timeout
    table = Table(
        title=f"{sc.name}: target {data.target_success:g} at {data.confidence:.0%} "
        f"confidence, {data.replications} replications",
        header_style="bold",
    )
    table.add_column("recommendation")
    table.add_column("value", justify="right")
    table.add_column("detail", ratio=1)

    def sec(x):
        return "—" if x is None else f"{x:g} s"

    adopt = d.configuration or "none met the target"
    table.add_row("adopt", adopt, "the least change that meets the target")
    for c in d.changes:
        without = c.without_it or "today's configuration"
        table.add_row(f"  {c.field}", f"{c.was} → {c.to}", f"{c.needed}: without it {without}")
    for c in d.dropped:
        table.add_row(f"  not {c.field}", f"{c.was} → {c.to}", f"not needed: {c.without_it} meets")
    for name in d.alternatives:
        table.add_row("  also meets", name, "")
    table.add_row(
        "db init timeout",
        sec(d.db_init_timeout_s),
        f"today {sec(t.current_s)}; without other changes {sec(d.smallest_timeout_s)}",
    )
    for row in t.by_target:
        table.add_row(f"  for {row.target_success:g}", sec(row.timeout_s), "today's pool")
    table.add_row("  AWS p99.9 rule", sec(t.aws_timeout_s), "p99.9 of db init")
    if not v.timeout_helps:
        table.add_row("no timeout helps", "", v.reason)
    for h in data.history:
        own = h.success.own
        success = f"{pct(own.ci_low)} – {pct(own.ci_high)} {h.success.definition}"
        judged = f", criterion {h.criterion}" if h.criterion else ""
        table.add_row(f"  tried {sec(h.timeout_s)}", pct(own.estimate), success + judged)
    own = data.success.own
    verdict = f", criterion {own.criterion}" if own.criterion else ""
    table.add_row(
        "start-up success",
        pct(own.estimate),
        f"{pct(own.ci_low)} – {pct(own.ci_high)} {data.success.definition}{verdict}",
    )
    obs = data.observed_failures
    if obs is not None:
        per = obs.failed_starts_per_deploy
        fit = f"; {obs.verdict}" if obs.verdict else ""
        if per.mean == 0:
            fit += "; the model does not explain them"
        table.add_row(
            "observed failures",
            f"{obs.observed:,}",
            f"model: {per.mean:.3g} per deploy (≤ {per.ci_high:.3g}){fit}",
        )
    return table


def candidates_table(data: RecommendationView) -> Table:
    alpha = 1 - data.target_success
    table = Table(title=f"options (meets: upper bound ≤ {alpha:.2%})", header_style="bold")
    table.add_column("option", ratio=1)
    for col in ("P(start fails)", "upper", "meets", "ready p95", "restarts"):
        table.add_column(col, justify="right", no_wrap=True)
    across = data.robust is not None
    if across:  # judged in every world (sim.robust): the share of worlds each meets in
        table.add_column(f"worlds (≥ {data.robust.robustness:.0%})", justify="right")
    for r in data.candidates:
        f = r.p_start_failure
        worlds = () if not across else (f"{r.robust.met}/{r.robust.worlds}",)
        table.add_row(
            r.name,
            pct(f.estimate),
            pct(f.ci_high),
            "yes" if r.meets_target else "no" if r.held_fits else "no: held",
            "never" if r.fleet_ready_p95_s is None else f"{r.fleet_ready_p95_s:.1f} s",
            f"{r.restarts_per_instance:.3f}",
            *worlds,
        )
    return table


def sweep_table(sc, grid: Grid, rows: list[dict]) -> Table:
    table = Table(title=f"sweep of {sc.name}: {len(rows)} points", header_style="bold")
    for f in grid.fields:
        table.add_column(f.rpartition(".")[2], justify="right")
    for col in ("P(start fails)", "upper", "ready p95", "restarts", "peak/free"):
        table.add_column(col, justify="right", no_wrap=True)
    for r in rows:
        table.add_row(
            *(f"{r[f]}" for f in grid.fields),
            pct(r["p_start_failure"]),
            pct(r["p_start_failure_high"]),
            "never" if r["fleet_ready_p95_s"] is None else f"{r['fleet_ready_p95_s']:.1f} s",
            f"{r['restarts_per_instance']:.3f}",
            f"{r['peak_db_connections_max']}/{r['free_slots']}",
        )
    return table
