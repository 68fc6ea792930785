"""Terminal tables of the commands' results (rich), kept to an 80-column terminal."""

from __future__ import annotations

from rich.table import Table

from sim import scenario as scenarios
from sim.sweep import Grid


def pct(x) -> str:
    return "—" if x is None else f"{100 * x:.2f} %"


def summary_table(sc: scenarios.Scenario, s: dict) -> Table:
    def sec(x):
        return "never" if x is None else f"{x:.1f} s"

    table = Table(
        title=f"{sc.name}: {s['replications']} replications, seed {s['seed']}",
        show_header=True,
        header_style="bold",
    )
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("95 % interval / detail", justify="right")
    t = s["p_db_init_timeout"]
    table.add_row(
        f"P(db init > {sc.startup.db_init_timeout_s:g} s timeout) per attempt",
        pct(t["estimate"]),
        f"{pct(t['ci_low'])} – {pct(t['ci_high'])}",
    )
    f = s["p_start_failure"]
    table.add_row(
        "P(start attempt fails) per attempt",
        pct(f["estimate"]),
        f"{pct(f['ci_low'])} – {pct(f['ci_high'])}",
    )
    table.add_row("P(first start succeeds) per instance", pct(s["p_first_start_success"]), "")
    table.add_row(
        "never ready within horizon", pct(s["never_ready_fraction"]), f"horizon {sc.horizon_s:g} s"
    )
    r = s["fleet_ready_s"]
    table.add_row(
        "fleet ready (all instances) p50",
        sec(r["p50"]),
        f"p95 {sec(r['p95'])}, p99 {sec(r['p99'])}",
    )
    table.add_row("restarts per instance", f"{s['restarts_per_instance']:.2f}", "")
    pk = s["peak_db_connections"]
    table.add_row(
        "peak database connections p50",
        f"{pk['p50']:.0f}",
        f"max {pk['max']} of {sc.database.free_slots} usable",
    )
    wa = s["work_amplification"]
    table.add_row(
        "work amplification",
        "—" if wa is None else f"{wa:.2f}×",
        "connection attempts ÷ connections needed",
    )
    return table


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


def recommend_table(sc, data: dict) -> Table:
    d, v = data["decision"], data["verdict"]
    table = Table(
        title=f"{sc.name}: target {data['target_success']:g} at {data['confidence']:.0%} "
        f"confidence, {data['replications']} replications",
        header_style="bold",
    )
    table.add_column("recommendation")
    table.add_column("value", justify="right")
    table.add_column("detail", overflow="fold")

    def sec(x):
        return "—" if x is None else f"{x:g} s"

    table.add_row(
        "configuration to adopt",
        d["configuration"] or "none met the target",
        "\n".join(f"{k} = {val}" for k, val in (d["overrides"] or {}).items()),
    )
    table.add_row(
        "db init timeout",
        sec(d["db_init_timeout_s"]),
        f"smallest verified {sec(d['smallest_timeout_s'])}; "
        f"today {sec(data['timeout']['current_s'])}",
    )
    for row in data["timeout"]["by_target"]:
        table.add_row(f"  timeout for {row['target_success']:g}", sec(row["timeout_s"]), "")
    table.add_row("  AWS p99.9 rule", sec(data["timeout"]["aws_timeout_s"]), "p99.9 of db init")
    if not v["timeout_helps"]:
        table.add_row("no timeout helps", "", v["reason"])
    table.add_row(
        "pool min_size / max_size",
        f"{d['pool_min_size']} / {d['pool_max_size']}",
        f"largest fleet {d['largest_fleet']}",
    )
    table.add_row("connector min_instances", str(d["connector_min_instances"] or "—"), "")
    return table


def candidates_table(data: dict) -> Table:
    alpha = 1 - data["target_success"]
    table = Table(
        title=f"candidates, ranked (meets: upper bound ≤ {alpha:.2%})", header_style="bold"
    )
    for col in (
        "#",
        "option",
        "P(start fails)",
        "interval",
        "meets",
        "ready p95",
        "peak/free",
        "work ampl.",
        "restarts/inst",
    ):
        table.add_column(col, justify="left" if col == "option" else "right")
    for i, r in enumerate(data["candidates"], 1):
        f = r["p_start_failure"]
        table.add_row(
            str(i),
            r["name"],
            pct(f["estimate"]),
            f"{pct(f['ci_low'])} – {pct(f['ci_high'])}",
            "yes" if r["meets_target"] else "no",
            "never" if r["fleet_ready_p95_s"] is None else f"{r['fleet_ready_p95_s']:.1f} s",
            f"{r['peak_db_connections_max']}/{r['free_slots']}",
            "—" if r["work_amplification"] is None else f"{r['work_amplification']:.2f}",
            f"{r['restarts_per_instance']:.3f}",
        )
    return table


def sweep_table(sc, grid: Grid, rows: list[dict]) -> Table:
    table = Table(title=f"sweep of {sc.name}: {len(rows)} points", header_style="bold")
    for f in grid.fields:
        table.add_column(f, justify="right")
    for col in ("P(start fails)", "interval", "fleet ready p95", "restarts/inst", "peak conns"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            *(f"{r[f]}" for f in grid.fields),
            pct(r["p_start_failure"]),
            f"{pct(r['p_start_failure_low'])} – {pct(r['p_start_failure_high'])}",
            "never" if r["fleet_ready_p95_s"] is None else f"{r['fleet_ready_p95_s']:.1f} s",
            f"{r['restarts_per_instance']:.3f}",
            f"{r['peak_db_connections_max']} / {r['free_slots']}",
        )
    return table
