"""The decision record: Markdown that reads well pasted into a repository's ``docs/adr/``.

``render`` takes the recommendation's typed view (``sim.report.view.RecommendationView``, built
from summary.json's data), the scenario and the figures' file names and returns text; writing it
is the caller's job. Vendor figures link to their entry
in startsim's ``docs/sources.md`` (figure, confidence, public source).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sim.advice import DeployMonitoring, TimeoutAdvice
from sim.provenance import Entry
from sim.report import assumptions, firstminute, fixes, path, robust
from sim.report.evidence import Cite, known_and_assumed, observed_section, success_section
from sim.report.view import (
    AdoptedChange,
    HistoryView,
    OptionRow,
    PoolView,
    RecommendationView,
)
from sim.scenario import Scenario
from sim.sequential import TOO_CLOSE, Settled
from sim.stats import Proportion
from sim.success import DEFINITIONS

# startsim's docs folder in a source checkout; absent when startsim is installed from a wheel.
DOCS = Path(__file__).resolve().parents[2] / "docs"


def docs_href(folder: Path) -> str | None:
    """startsim's ``docs/`` as a relative link from ``folder`` (where the ADR is written), so the
    citations resolve; None when the docs are not on this machine."""
    if not (DOCS / "sources.md").is_file():
        return None
    return Path(os.path.relpath(DOCS, Path(folder).resolve())).as_posix()


def render(
    data: RecommendationView,
    sc: Scenario,
    figures: dict[str, str],
    command: str,
    created: str,
    docs: str | None = None,
) -> str:
    """The whole ADR. ``figures`` maps a role (cdf, heatmap, timeline, restarts) to a file name;
    ``docs`` is startsim's docs folder seen from the ADR (``docs_href``); None cites by name."""
    cite = _citer(docs)
    parts = [
        _title(data, sc),
        _context(data, sc, figures, cite),
        path.section(data.path, data.startup_probe, data.confidence, cite),
        _decision(data, sc, cite),
        _options(data, sc, figures, cite),
        _consequences(data, sc, figures, cite),
        *assumptions.parts(data.assumptions, figures, cite, robust.how_to_run(data)),
        _method(data, command, created, cite),
    ]
    return "\n\n".join(p.strip() for p in parts if p.strip()) + "\n"


def _citer(docs: str | None) -> Cite:
    """``cite(page, anchor, label)``: a link into startsim's docs, or its name when there is no
    link to make."""

    def cite(page: str, anchor: str = "", label: str = "") -> str:
        target = f"{page}#{anchor}" if anchor else page
        if docs is None:
            return f"startsim's `docs/{target}`"
        return f"[{label or 'docs/' + page}]({docs}/{target})"

    return cite


def _pct(x: float | None, digits: int = 2) -> str:
    return "—" if x is None else f"{100 * x:.{digits}f} %"


def _share(x: float | None) -> str:
    """A share in whole percent, never rounded to 0 % or 100 % unless it is exactly that: 99.7 %
    of deploys is not "100 %"."""
    if x is None or x in (0.0, 1.0) or 0.005 <= x < 0.995:
        return _pct(x, 0)
    if 0.0005 <= x < 0.9995:
        return _pct(x, 1)
    return "< 0.1 %" if x < 0.5 else "> 99.9 %"


def _sec(x: float | None) -> str:
    return "never (some instance not ready)" if x is None else f"{x:.1f} s"


def _interval(p: Proportion, conf: float) -> str:
    return f"{_pct(p.estimate)} ({_pct(conf)} interval {_pct(p.ci_low)} – {_pct(p.ci_high)})"


def _title(data: RecommendationView, sc: Scenario) -> str:
    return (
        f"# ADR: database-init timeout and connection pool for {sc.name}\n\n"
        f"- **Status:** proposed\n"
        f"- **Target:** at least {data.target_success:.4g} of start attempts finish database "
        f"init within the timeout, shown at {data.confidence:.0%} confidence\n"
        f"- **Evidence:** simulated with startsim; every value below was verified by simulating "
        f"it, not read off a single run"
    )


def _context(data: RecommendationView, sc: Scenario, figures: dict[str, str], cite: Cite) -> str:
    cur, t, demand = data.today, data.timeout, data.pool.demand
    # Today's intervals are those of the look that settled its verdict (sim.sequential).
    conf = cur.sequential.confidence if cur.sequential else data.confidence
    lines = [
        "## Context",
        "",
        f"{sc.description or sc.name}.",
        "",
        f"- Fleet: {sc.fleet.instances} instances, arrival `{sc.fleet.arrival}`; each "
        f"{_opens(sc)} and holds {sc.pool.held_when_ready} once ready (`pool.max_size` = "
        f"{sc.pool.max_size}).",
        f"- Database: `max_connections` = {sc.database.max_connections}, of which "
        f"{demand.free_slots} are free for the application.",
        f"- Connector: {sc.connector.min_instances}–{sc.connector.max_instances} instances, "
        f"{sc.connector.setups_per_instance} connection set-ups at once per instance; a "
        f"scale-out takes {_dist(sc.connector.scale_up_delay_s)} (Serverless VPC Access does "
        f"not publish this figure: {cite('sources.md', 'connector-scale-out-delay', 'sources')}).",
        f"- Database-init timeout today: {t.current_s:g} s; the container exits with code 3 "
        f"past it and restarts with backoff ({sc.restart.policy}, first "
        f"{sc.restart.initial_backoff_s:g} s).",
        "",
        f"Simulated today ({cur.replications} replications): P(start attempt fails) "
        f"{_interval(cur.p_start_failure, conf)}; P(db init reaches a deadline) "
        f"{_interval(cur.p_db_init_timeout, conf)}; fleet ready p95 "
        f"{_sec(cur.fleet_ready_p95_s)}; {cur.restarts_per_instance:.2f} restarts per "
        f"instance; work amplification {_num(cur.work_amplification)}×.",
    ]
    if t.db_init_p50_s is not None:
        lines += [
            "",
            f"Without a binding deadline ({t.probe_timeout_s:g} s, {t.probe_replications} "
            f"replications) database init takes {t.db_init_p50_s:.1f} s at the median and "
            f"{t.aws_p999_s:.1f} s at p99.9.",
        ]
    lines += [
        "",
        f"Connection demand: instances × min_size = {demand.instances_x_min_size}, "
        f"instances × held = {demand.instances_x_held_when_ready}, instances × max_size = "
        f"{demand.instances_x_max_size}, against {demand.free_slots} free slots.",
    ]
    if not data.verdict.timeout_helps:
        lines += ["", f"**No timeout helps:** {data.verdict.reason}."]
    lines += ["", _monitoring(data.monitoring)]
    lines += ["", success_section(data.success)]
    observed = observed_section(data.observed_failures, sc.fleet.instances)
    if observed:
        lines += ["", observed]
    lines += ["", known_and_assumed(data.sources, cite)]
    for role, caption in (
        ("cdf", "Database-init duration with the current timeout and the timeouts considered"),
        ("timeline", "One replication: connections held vs the limit, connector, instances ready"),
    ):
        if role in figures:
            lines += ["", f"![{caption}]({figures[role]})"]
    return "\n".join(lines)


def _opens(sc: Scenario) -> str:
    """What one start opens: the pool's connections, or each start-up phase's with its bound."""
    if not sc.startup.phases:
        return f"opens `pool.min_size` = {sc.pool.min_size} connections during database init"
    parts = []
    for p in sc.startup.phases:
        n = p.connections
        order = f" ({p.order})" if n > 1 else ""
        what = "the pool start" if p.pool else f"{n} connection{'s' if n != 1 else ''}{order}"
        where = "in database init" if p.db_init else "before database init"
        bound = f", its own bound {p.deadline_s:g} s" if p.deadline_s else ""
        fails = ", a failure ignored" if p.on_failure == "continue" else ""
        parts.append(f"`{p.name}` ({what}, {where}{bound}{fails})")
    return "runs its start-up phases " + ", then ".join(parts)


def _monitoring(m: DeployMonitoring) -> str:
    """What the team's dashboards would show per deploy of today's configuration."""
    f, x = m.startup_failures_per_deploy, m.exit_code_3_per_deploy
    return (
        f"What monitoring shows per deploy of {m.instances_per_deploy} instances today "
        f"({m.deploys} simulated deploys, {m.horizon_s:g} s each): failed start attempts "
        f"{f.mean:.1f} on average (median {f.p50:.0f}, p95 {f.p95:.0f}, at most "
        f"{f.max}), of which exits with code 3 (database-init timeout) {x.mean:.1f} "
        f"(p95 {x.p95:.0f}); {_share(f.deploys_with_any)} of deploys see at least one "
        "failed start."
    )


def _dist(d: Any) -> str:
    kind = d.dist
    if kind == "uniform":
        return f"{d.low:g}–{d.high:g} s (uniform)"
    if kind == "constant":
        return f"{d.value:g} s"
    if kind == "lognormal":
        return f"a median {d.median:g} s (lognormal)"
    return f"a mean {d.mean():.3g} s ({kind})"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.2f}"


def _decision(data: RecommendationView, sc: Scenario, cite: Cite) -> str:
    d, v = data.decision, data.verdict
    allowed = _pct(1 - data.target_success, 3)
    lines = ["## Decision", ""]
    worlds = robust.decision_lines(data) if robust.judged(data) else []
    if d.configuration is None:
        lines.append(
            "No configuration startsim tried met the target in simulation (see Options "
            "considered). " + _pool_line(data.pool, sc, cite)
        )
        return "\n\n".join(["\n".join(lines), *worlds])
    if not d.changes:
        lines.append(
            "**Keep today's configuration**: it already meets the target in simulation "
            "(see Options considered)."
        )
        return "\n\n".join(["\n".join(lines), *worlds])
    lines += [
        f"Adopt **{d.configuration}**: the least change that "
        + ("holds across the worlds" if worlds else "meets the target")
        + ". Changes are "
        "preferred by cost and risk: fewest first, then "
        + ", then ".join(_order_words(d.cost_order))
        + ".",
        "",
    ]
    for w in worlds:
        lines += [w, ""]
    rows = {r.name: r for r in data.candidates}
    shown: dict[str, str] = {}  # changes worded by their name: how each is applied
    for c in d.changes:
        if c.apply and c.change in shown:
            continue  # one line per change the team applies, not per model field it sets
        if c.apply:
            shown[c.change] = c.apply
            lines.append(f"- **{c.change}** ({c.why}). {_needed(c, allowed, rows)}")
        else:
            why = _needed(c, allowed, rows)
            lines.append(
                f"- `{c.field}` {c.was} → **{c.to}** ({c.why}; {_model_field(c.field)}). {why}"
            )
    for name, how in shown.items():
        lines += ["", f"How to apply **{name}**: {how}"]
    for c in d.dropped:
        lines.append(
            f"- Not adopted: `{c.field}` {c.was} → {c.to}. {_needed(c, allowed, rows)} The least "
            "change that holds is kept."
        )
    if d.alternatives:
        lines += [
            "",
            "Also meet the target with as few changes, at a higher cost or risk: "
            + ", ".join(f"**{a}**" for a in d.alternatives)
            + ".",
        ]
    timeout = d.db_init_timeout_s
    lines.append("")
    if timeout == sc.startup.db_init_timeout_s:
        lines.append(f"The database-init timeout stays at {timeout:g} s.")
    if not v.timeout_helps:
        lines.append(f"Do not raise the timeout: {v.reason}.")
    elif d.smallest_timeout_s is not None:
        lines.append(
            f"For reference, without the other changes the smallest timeout that meets the "
            f"target is {d.smallest_timeout_s:g} s (verified by simulation at that value)."
        )
    return "\n".join(lines)


@dataclass(frozen=True)
class _Moved:
    was: Any
    to: Any


# The model fields whose change the Consequences speak of.
_CONSEQUENTIAL = (
    "pool.min_size",
    "pool.max_size",
    "startup.db_init_timeout_s",
    "fleet.instances",
    "connector.min_instances",
)


def _model_changes(data: RecommendationView, sc: Scenario) -> dict[str, _Moved]:
    """What the adopted set does to the model's fields, whether it names them or a stack's or a
    platform's settings that give them (SQLAlchemy's pool_size and max_overflow: pool.max_size)."""
    over = data.decision.overrides or {}
    if not over:
        return {}
    after = sc.with_overrides(over)
    return {f: _Moved(sc.get(f), after.get(f)) for f in _CONSEQUENTIAL if after.get(f) != sc.get(f)}


def _model_field(field: str) -> str:
    """The marker of a change the report can only word as a model field."""
    if field.startswith(("stack.", "platform.")):
        return "a setting of the scenario's [stack] or [platform]"
    return (
        "a model field: the scenario names no [stack] or [platform] whose setting applies it "
        "(docs/scenario.md#stack)"
    )


def _needed(c: AdoptedChange, allowed: str, rows: dict[str, OptionRow]) -> str:
    """The checked claim about one adopted field: the decision simulated without it alone (and,
    with worlds, judged in each: ``rows`` holds every option by name)."""
    f, seq = c.without_it_p_start_failure, c.without_it_sequential
    if c.without_it_invalid is not None:
        return f"Needed: the other changes need it ({c.without_it_invalid})."
    if seq is None:  # the ready fleet's connections do not fit without it: arithmetic
        return (
            f"Needed: without it ({c.without_it}) the ready fleet's connections exceed the free "
            "slots."
        )
    evidence = (
        f"P(start attempt fails) {_pct(f.estimate)}, {_pct(seq.confidence)} interval "
        f"{_pct(f.ci_low)} – {_pct(f.ci_high)} against {allowed}, {seq.replications} "
        f"replications"
    )
    without = rows.get(c.without_it or "")
    if c.needed == "needed" and without is not None and without.met_nominally and without.robust:
        r = without.robust
        return (
            f"Needed: without it ({c.without_it}) the target is met at the assumed values "
            f"({evidence}) but holds in only {r.met} of {r.worlds} worlds; "
            f"{robust.boundary(r.boundary)}."
        )
    if c.needed == "needed":
        return f"Needed: without it ({c.without_it}) the target is missed: {evidence}."
    if c.needed == "not needed":
        return f"Not needed: without it ({c.without_it}) the target is still met: {evidence}."
    return (
        f"Not shown to be needed: without it ({c.without_it}) the verdict is too close to call "
        f"at the cap: {evidence}; kept, because only with it is the target shown to be met."
    )


COST_WORDS = {
    "pool": "pool settings",
    "retry": "a retry in the start-up code",
    "egress": "the egress route",
    "direct_egress": "Direct VPC egress",
    "timeout": "the database-init timeout",
    "fleet": "a smaller fleet",
    "connector": "connector instances",
    "lazy_refresh": "the Cloud SQL connector's lazy refresh",
    "jitter": "restart jitter",
    "quota": "an Admin API quota increase",
    "surge": "a smaller surge",
    "tier": "a bigger Cloud SQL tier or connector instances, the cheaper a month first",
}


def _order_words(order: tuple[str, ...]) -> list[str]:
    """COST_ORDER in words; the paid kinds (a tier, connector instances) share one place."""
    paid = "tier" in order
    return [COST_WORDS[k] for k in order if k in COST_WORDS and not (paid and k == "connector")]


def _opt_s(x: float | None) -> str:
    return "none up to the longest timeout tried" if x is None else f"{x:g} s"


def _pool_line(pool: PoolView, sc: Scenario, cite: Cite) -> str:
    d = pool.demand
    lock = ""
    if pool.pool_locking_bound > 1:  # a bound of 1 says nothing
        lock = (
            f"; it respects the pool-locking bound T × (C − 1) + 1 = "
            f"{pool.pool_locking_bound} (HikariCP: "
            f"{cite('sources.md', 'pool-locking-bound', 'sources')})"
        )
    if pool.pool_setting_fits:
        return (
            f"Pool arithmetic: `max_size` (pool_size + max_overflow) = {pool.max_size} keeps "
            f"{sc.fleet.instances} instances × {pool.max_size} within "
            f"{d.free_slots} free slots{lock}. The largest fleet at that size is "
            f"{pool.largest_fleet} instances (today's max_size {sc.pool.max_size} fits "
            f"{pool.largest_fleet_current_max_size})."
        )
    pgb = pool.pgbouncer
    return (
        f"No `max_size` fits: {sc.fleet.instances} instances need at least "
        f"{pool.largest_fleet_max_size} each, but only {pool.fit_max_size} each fit in "
        f"{d.free_slots} free slots{lock}. Cap the fleet at **{pool.largest_fleet}** "
        f"instances, or put PgBouncer in front: `default_pool_size` ≤ {pgb.default_pool_size}, "
        f"`max_client_conn` ≥ {pgb.max_client_conn}; it turns rejections into waiting, "
        f"bounded by `query_wait_timeout` ({pgb.query_wait_timeout_s} s by default: "
        f"{cite('sources.md', 'pgbouncer-waiting', 'sources')})."
    )


def _options(data: RecommendationView, sc: Scenario, figures: dict[str, str], cite: Cite) -> str:
    conf = data.confidence
    across = robust.judged(data)
    lines = [
        "## Options considered",
        "",
        f"Each simulated with the same seed; meets = upper bound of P(start attempt fails) ≤ "
        f"{_pct(1 - data.target_success, 3)}, and the ready fleet's connections (instances × "
        f"held_when_ready) fit the free slots; an interval that straddles it is too close to "
        "call, and replications are added by the sequential rule (How this was computed). "
        "Intervals are cluster-aware, at the confidence of the look that stopped (column "
        f"replications; {conf:.0%} overall). Listed: meeting options first, cheapest first.",
        "",
        "| option | P(start fails) | interval | meets | fleet ready p95 | peak conns / free "
        "| work ampl. | restarts / instance | replications |"
        + (" meets in worlds | worst world | misses where |" if across else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|---|---|" if across else ""),
    ]
    if across:  # P(start fails) and meets are at the assumed values; the worlds beside them
        lines[2] += (
            " Meets: at the assumed values and, with worlds, in at least "
            f"{_pct(data.robust.robustness, 0)} of them (the last three columns: the share of "
            "worlds it meets in, its worst world, and the value whose one cut best sorts the "
            "worlds where it misses from those where it meets)."
        )
    for r in data.candidates:
        f = r.p_start_failure
        lines.append(
            f"| {r.name} | {_pct(f.estimate)} | {_pct(f.ci_low)} – "
            f"{_pct(f.ci_high)} | {_meets(r)} | "
            f"{_sec(r.fleet_ready_p95_s)} | {r.peak_db_connections_max} / "
            f"{r.free_slots} | {_num(r.work_amplification)} | "
            f"{r.restarts_per_instance:.3f} | {_spent(r.sequential, r.replications)} |"
            + (robust.columns(r) if across else "")
        )
    after = firstminute.table(data)
    if after:
        lines += ["", after]
    lines += _paid_and_remedies(data, cite)
    lines += fixes.section(data, figures, _verdict_word)
    lines += ["", _history_table(data), "", _targets_table(data.timeout, cite)]
    if data.pool.pool_setting_fits:
        lines += ["", _pool_line(data.pool, sc, cite)]
    return "\n".join(lines)


# The kinds of change the section below lists with their cost and command (sim.decision).
PRICED_KINDS = ("tier", "connector")
QUOTA_KINDS = ("quota", "jitter", "surge", "lazy_refresh")


def _paid_and_remedies(data: RecommendationView, cite: Cite) -> list[str]:
    """Each option with a paid change or an Admin API quota remedy: its verdict, its monthly
    cost where a published price gives one, and the command or code that applies it; and, with
    [cloudsql] on, the quota, the 429s counted in simulation and the remedy adopted."""
    rows = [r for r in data.candidates if set(r.kinds) & {*PRICED_KINDS, *QUOTA_KINDS}]
    lines: list[str] = []
    quota = data.cloudsql_quota
    if quota is not None:
        lines += ["", _quota_paragraph(data, cite)]
    if not rows:
        return lines
    lines += [
        "",
        "Paid options and the Admin API quota's remedies, each with its verdict, what it adds to "
        "the monthly bill (published prices per hour, billed around the clock: "
        f"{cite('sources.md', 'connector-prices', 'connector prices')} and "
        f"{cite('sources.md', 'cloud-sql-prices', 'Cloud SQL prices')}; unknown where no "
        "published price was found) and how it is applied. Among paid options that meet, the "
        "cheapest by monthly cost is preferred.",
        "",
    ]
    for r in rows:
        paid = set(r.kinds) & set(PRICED_KINDS)
        cost = f"; adds {_usd(r.monthly_usd)}" if paid else ""
        lines.append(f"- **{r.name}**: {_verdict_word(r)}{cost}.")
        if r.apply:
            lines += ["", r.apply, ""]
    return lines


def _usd(x: float | None) -> str:
    if x is None:
        return "an unknown amount a month (no published price found)"
    return f"${x:,.2f} a month"


def _verdict_word(r: OptionRow) -> str:
    m = _meets(r)
    if m == "yes":
        return "meets the target"
    return "does not meet the target" if m == "no" else f"does not meet the target ({m})"


def _quota_paragraph(data: RecommendationView, cite: Cite) -> str:
    q = data.cloudsql_quota
    link = cite("sources.md", "cloud-sql-admin-api-quota", "published")
    text = (
        f"**The Admin API quota.** Each start refreshes its certificate first: "
        f"{q.calls_per_refresh} calls against the {q.quota} ({q.quota_per_minute} a minute by "
        f"default, {link}). In simulation, today's configuration has "
        f"{q.throttled_today:,.0f} calls a run answered 429 (mean of {q.replications} runs)"
    )
    if q.adopted is None:
        text += "; no change meets the target."
    else:
        kinds = next((r.kinds for r in data.candidates if r.name == q.adopted), ())
        what = "the quota's remedy" if set(kinds) & set(QUOTA_KINDS) else "the change"
        text += f"; {what} adopted, {q.adopted}, leaves {q.throttled_adopted:,.0f} (same runs)."
    rows = {r.name: r for r in data.candidates}
    own = [
        f"{name}: {n:,.0f} 429s, "
        + (_verdict_word(rows[name]) if name in rows else "not simulated as an option")
        for name, n in q.throttled_by_remedy.items()
    ]
    if own:
        text += " The quota's own remedies, the same way: " + "; ".join(own) + "."
    return text


def _meets(row: OptionRow) -> str:
    if row.meets_target:
        return "yes"
    if row.not_judged:
        return f"not adopted: {row.not_judged}"
    if row.met_nominally and row.after_ready is not None and row.after_ready.breaks:
        return "no: fails the first minute's requests after ready"
    if row.robust is not None and row.met_nominally:
        return "no: does not hold across the worlds"
    if not row.held_fits:
        return "no: held connections exceed the free slots"
    return "too close to call" if row.sequential.verdict == TOO_CLOSE else "no"


def _history_table(data: RecommendationView) -> str:
    rows, criterion = data.history, data.criterion
    if not rows:
        return ""
    judged = f"> {criterion:.4g}" if criterion is not None else "—"
    definition = rows[0].success.definition
    others = [d for d in DEFINITIONS if d != definition]
    lines = [
        "### The timeouts tried so far",
        "",
        f"The team's own criterion: start-up success {judged}, counted as "
        f"{DEFINITIONS[definition]} (`{definition}`); this ADR's target: "
        f"{data.target_success:.4g} at {data.confidence:.0%} confidence. Each timeout "
        "simulated in today's configuration otherwise, with the other definitions beside:",
        "",
        f"| timeout | `{definition}` | interval | criterion | replications | "
        + " | ".join(f"`{d}`" for d in others)
        + " | restarts / instance | fleet ready p95 |",
        "|---|---|---|---|---|" + "---|" * len(others) + "---|---|",
    ]
    verdict = {"met": "met", "not met": "**not met**", "too close to call": "too close to call"}
    for h in rows:
        lines.append(_history_row(h, definition, others, verdict))
    return "\n".join(lines)


def _history_row(h: HistoryView, definition: str, others: list[str], verdict: dict) -> str:
    rates = h.success.by_definition
    own = rates[definition]
    return (
        f"| {h.timeout_s:g} s | {_pct(own.estimate)} | "
        f"{_pct(own.ci_low)} – {_pct(own.ci_high)} | "
        f"{verdict.get(h.criterion, '—')} | {_spent(h.success.sequential)} | "
        + " | ".join(_pct(rates[d].estimate) for d in others)
        + f" | {_num(h.restarts_per_instance)} | {_sec(h.fleet_ready_p95_s)} |"
    )


def _spent(seq: Settled | None, replications: int | None = None) -> str:
    """Replications a verdict took, and at which look of the sequential rule it stopped."""
    if seq is None:
        return "—" if replications is None else str(replications)
    return f"{seq.replications} (look {seq.look} of {seq.looks}, {_pct(seq.confidence)})"


def _targets_table(t: TimeoutAdvice, cite: Cite) -> str:
    lines = [
        "Timeouts for common targets with today's pool and connector (smallest verified value "
        "on a 0.5 s grid), and the value AWS's guidance gives: the downstream's p99.9, i.e. "
        f"0.1 % false timeouts (AWS Builders' Library: "
        f"{cite('sources.md', 'aws-p999-timeout-rule', 'sources')}):",
        "",
        "| target | timeout | P(db init reaches it), upper bound | replications |",
        "|---|---|---|---|",
    ]
    for row in t.by_target:
        p = row.p_db_init_timeout
        reps = row.replications
        shown = _opt_s(row.timeout_s) if reps else "—"
        lines.append(
            f"| {row.target_success:.4g} | {shown} | "
            f"{_pct(p.p.ci_high, 3) if p else '—'} | "
            f"{reps if reps else 'too few to show it'} |"
        )
    rare = [row for row in t.by_target if row.rare]
    if rare:
        lines.append("")
    for row in rare:
        r = row.rare
        lines.append(
            f"At the {row.target_success:.4g} row's {_opt_s(row.timeout_s)}, "
            f"{r.estimator} over {r.replications} replications (effective sample size "
            f"{r.effective_replications:,.0f}) gives P(db init reaches it) "
            f"{_pct(r.estimate, 3)} [{_pct(r.ci_low, 3)}, {_pct(r.ci_high, 3)}]"
            + ("." if r.reliable else ": too few failing replications for that interval.")
        )
    if t.aws_timeout_s is not None:
        ratio = t.db_init_p999_over_p50
        lines.append(
            f"| AWS p99.9 | {t.aws_timeout_s:g} s (p99.9 = {t.aws_p999_s:.2f} s, "
            f"{_num(ratio)}× the median) | simulated: see the options | "
            f"{t.probe_replications} |"
        )
    return "\n".join(lines)


def _consequences(
    data: RecommendationView, sc: Scenario, figures: dict[str, str], cite: Cite
) -> str:
    changed = _model_changes(data, sc)
    lines = ["## Consequences", ""]
    if "pool.min_size" in changed:
        lines.append(
            f"- Database init opens {changed['pool.min_size'].to} connection(s); the pool "
            "opens the others on first use, so the first requests after a start pay the "
            "connection set-up (through the connector) instead of the start-up path."
        )
    if "pool.max_size" in changed:
        c = changed["pool.max_size"]
        lines.append(
            f"- With `max_size` {c.to} (today {c.was}) an instance runs at most {c.to} "
            "queries at once"
            + (
                "; what that costs a burst of requests is below."
                if data.today.after_ready is not None
                else "; give the scenario its `[traffic]` to see what that costs a burst of "
                "requests (docs/model.md, traffic after ready)."
            )
        )
    if TIMEOUT_FIELD in changed and changed[TIMEOUT_FIELD].to > changed[TIMEOUT_FIELD].was:
        c = changed[TIMEOUT_FIELD]
        lines.append(
            f"- A database that is really down is noticed after {c.to:g} s instead of "
            f"{c.was:g} s; the restart backoff follows."
        )
    if "fleet.instances" in changed:
        c = changed["fleet.instances"]
        lines.append(f"- The fleet is capped at {c.to} instances (today {c.was}).")
    if "connector.min_instances" in changed:
        lines.append(
            "- Connector instances above the minimum are billed while idle, and the connector "
            f"never scales in ({cite('sources.md', 'connector-never-scales-in', 'sources')})."
        )
    lines += firstminute.consequence_lines(data)
    if not data.verdict.timeout_helps:
        lines.append(
            "- Raising the timeout is not an option: waiting longer keeps rejected instances in "
            "a longer restart loop and multiplies connection attempts"
            + (" (see the restarts figure)." if "restarts" in figures else ".")
        )
    lines += [
        "- The decision holds for this fleet and this connector: a larger deploy wave or a "
        "slower scale-out needs a new run"
        + (" (see the heatmap)." if "heatmap" in figures else "."),
        _assumptions_line(data.sources, cite),
        "",
        _figure_links(figures),
    ]
    return "\n".join(lines)


TIMEOUT_FIELD = "startup.db_init_timeout_s"


def _assumptions_line(sources: tuple[Entry, ...], cite: Cite) -> str:
    assumed = [e.field for e in sources if e.kind in ("assumed", "unlabelled")]
    if not assumed:
        return "- Every value of the scenario is a fact, published, measured or fitted."
    shown = ", ".join(f"`{f}`" for f in assumed[:8]) + (" …" if len(assumed) > 8 else "")
    return (
        f"- The decision rests on {len(assumed)} assumed or unlabelled values ({shown}; all in "
        "Context). The connector's set-up capacity and scale-out delay are not published "
        f"({cite('sources.md', 'connector-set-up-capacity', 'sources')}): measure them with a "
        "load campaign (`startsim loadtest`, then `startsim calibrate`) and re-run `startsim "
        "recommend`."
    )


def _figure_links(figs: dict[str, str]) -> str:
    lines = []
    for role, caption in (
        ("heatmap", "P(start attempt fails) over timeout and fleet size"),
        ("restarts", "Restarts and work amplification against fleet size"),
    ):
        if role in figs:
            lines.append(f"![{caption}]({figs[role]})")
    return "\n\n".join(lines)


def _method(data: RecommendationView, command: str, created: str, cite: Cite) -> str:
    return (
        "## How this was computed\n\n"
        f"`{command}` on {created}: seed {data.seed}, {data.replications} replications per "
        f"decision point, confidence {data.confidence:.0%}. Method: {cite('recommend.md')}. "
        "Figures and numbers: `summary.json` in this folder.\n\n" + _verdicts(data, cite)
    )


def judged(data: RecommendationView) -> list[tuple[str, Settled]]:
    """Every verdict the sequential rule judged: the options, the team's past timeouts and today's
    start-up success against its criterion, each with where the rule stopped."""
    out = [(f"option {r.name}", r.sequential) for r in data.candidates if r.sequential]
    out += [
        (f"past timeout {h.timeout_s:g} s", h.success.sequential)
        for h in data.history
        if h.success.sequential
    ]
    if data.success.sequential:
        out.append(("start-up success today", data.success.sequential))
    return out


def _verdicts(data: RecommendationView, cite: Cite) -> str:
    """The sequential rule, and which verdicts it settled and which stayed too close to call."""
    rule = data.sequential
    looks = ", ".join(str(n) for n in rule.looks)
    alphas = ", ".join(f"{a:.4g}" for a in rule.alpha_spent)
    rows = judged(data)
    settled = [f"{name} ({s.verdict}, {s.replications})" for name, s in rows if s.settled]
    close = [f"{name} ({s.replications})" for name, s in rows if s.verdict == TOO_CLOSE]
    text = (
        "Verdicts do not rest on one draw of the seed: an interval that straddles its threshold "
        "is *too close to call*, and replications are added in looks of "
        f"{looks} (the cap) while it does. The error rate {rule.alpha:.2g} is spent "
        f"over the looks ({alphas}: {rule.name}, "
        f"{cite('sources.md', 'group-sequential-alpha-spending', 'sources')}), so a settled "
        f"verdict is wrong with probability at most {rule.alpha:.2g}. "
        f"Settled ({len(settled)}; verdict, replications spent): "
        + (", ".join(settled) or "none")
        + f". Too close to call at the cap ({len(close)}; replications spent): "
        + (", ".join(close) or "none")
        + "."
    )
    return text
