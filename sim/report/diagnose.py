"""``startsim diagnose``'s outputs: ``diagnose.json`` (every number), ``diagnose.md`` (for an ADR:
the verdict first, then each hypothesis's signals, then what was not measured) and
``diagnose.png`` (the observed signals against each hypothesis's predictive band)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sim.diagnose import ALPHA, DEPLOY_GAP_S, SIGNALS, Diagnosis, Signals
from sim.predictive import BOUND_TOLERANCE_S, DRAWS, ecdf_band
from sim.verdicts import observed_phrase, predicted_phrase, sentence, verdict

RULE = (
    f"per hypothesis, Holm's step-down rule over its measured signals at alpha = {ALPHA:g}: a "
    "hypothesis with any signal rejected cannot produce what was observed; those that can are "
    "ranked by the log-likelihood of the observed failure-time bins and error families"
)


def as_json(d: Diagnosis, command: str) -> dict:
    """Every number ``diagnose.md`` states."""
    s = d.signals
    best = d.supported
    return {
        "verdict": verdict(d),
        "supported": None if best is None else best.name,
        "rule": RULE,
        "alpha": d.alpha,
        "draws": DRAWS,
        "bound_tolerance_s": BOUND_TOLERANCE_S,
        "deploy_gap_s": DEPLOY_GAP_S,
        "failure_time_bins": d.bin_labels,
        "seed": d.seed,
        "command": command,
        "inputs": d.observed.sources,
        "observed": {
            "attempts": len(d.observed.records["outcome"]),
            "deploys": d.observed.deploys,
            "failures": s.failures,
            "signals": observed_signals(s, d.observed.not_measured, d.observed.server_refusals),
        },
        "not_measured": d.observed.not_measured,
        "hypotheses": [
            {
                "name": h.name,
                "source": h.source,
                "replications": h.replications,
                "verdict": h.verdict,
                "survives": h.survives,
                "rank": h.rank,
                "log_likelihood": h.log_likelihood,
                "min_adjusted_p": h.min_adjusted_p,
                "deciding": [t.signal for t in h.deciding],
                "sentence": sentence(h),
                "tests": [
                    {
                        "signal": t.signal,
                        "p_value": t.p_value,
                        "adjusted_p": t.adjusted_p,
                        "rejected": t.rejected,
                        "method": t.method,
                        "observed": t.observed,
                        "predicted": t.predicted,
                        "note": t.note,
                    }
                    for t in h.tests
                ],
            }
            for h in d.hypotheses
        ],
    }


def observed_signals(s: Signals, not_measured: dict, server_refusals) -> dict:
    """Each signal as observed, or why it was not measured."""
    t, c = s.failure_time_in_phase_s, s.restart_cadence_s
    out = {
        "failure_time_in_phase_s": _summary(t) | {"failing_phases": s.failing_phases},
        "refusals": {
            "refusals": s.refusals,
            "failures_classified": s.classified,
            "failures": s.failures,
            "server_log_refusals": server_refusals,
        },
        "error_kinds": s.error_kinds,
        "starts_per_deploy": _summary(s.starts_per_deploy) | {"values": _few(s.starts_per_deploy)},
        "failures_per_deploy": _summary(s.failures_per_deploy)
        | {"values": _few(s.failures_per_deploy)},
        "restart_cadence_s": _summary(c),
    }
    return {k: {"not_measured": not_measured[k]} if k in not_measured else out[k] for k in SIGNALS}


def _summary(x: np.ndarray) -> dict:
    if x.size == 0:
        return {"n": 0}
    q = np.percentile(x, [5, 50, 95])
    return {"n": int(x.size), "mean": float(x.mean()), "p5": q[0], "median": q[1], "p95": q[2]}


def _few(x: np.ndarray, most: int = 50) -> list[float]:
    return [float(v) for v in x[:most]]


def markdown(d: Diagnosis, doc: dict) -> str:
    lines = ["# Which story the logs support", "", f"**Verdict.** {doc['verdict']}", ""]
    lines += [f"Rule: {RULE}. Command: `{doc['command']}`.", ""]
    lines += ["## Observed", ""]
    o = doc["observed"]
    lines += [
        f"{o['attempts']} start attempts in {o['deploys']} deploys, {o['failures']} failed, from "
        f"{', '.join(f'`{s}`' for s in doc['inputs'])}. A deploy: new instances starting within "
        f"{DEPLOY_GAP_S:g} s of one another (replacements joined to their instance by the "
        f"readers); a failure within {BOUND_TOLERANCE_S:g} s of a bound counts as at it.",
        "",
    ]
    for h in d.hypotheses:
        rank = f", rank {h.rank}" if h.rank is not None else ""
        said = sentence(h)
        lines += [f"## `{h.name}`: {h.verdict}{rank}", "", said[:1].upper() + said[1:] + "."]
        ll = "—" if h.log_likelihood is None else f"{h.log_likelihood:.4g}"
        lines += [
            "",
            f"From {h.source}, {h.replications} replications (one deploy each); log-likelihood "
            f"of the observed failure bins and error families: {ll}.",
            "",
            "| signal | observed | the hypothesis gives | p | p after Holm | test |",
            "|---|---|---|---|---|---|",
        ]
        for t in h.tests:
            p = "—" if t.p_value is None else f"{t.p_value:.3g}"
            adj = "—" if t.adjusted_p is None else f"{t.adjusted_p:.3g}"
            adj += " **rejects**" if t.rejected else ""
            row = (t.signal, observed_phrase(t), predicted_phrase(t), p, adj, t.method)
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["## Not measured", ""]
    if not d.observed.not_measured:
        lines += ["Every signal was measured.", ""]
    for name, why in d.observed.not_measured.items():
        lines.append(f"- `{name}`: {why}; no verdict rests on it.")
    lines += ["", "![the observed signals against each hypothesis](diagnose.png)", ""]
    return "\n".join(lines)


def figure(d: Diagnosis, folder: Path) -> str:
    from sim.report.figures import save, subplots

    fig, axes = subplots(2, 2, figsize=(10, 7.5))
    rng = np.random.default_rng(d.seed)
    o = d.signals
    _ecdf_panel(axes[0][0], d, o.failure_time_in_phase_s, "failure_time_in_phase_s", rng)
    axes[0][0].set_xlabel("failure: time since its phase began (s)")
    for edge in d.edges[::2] + BOUND_TOLERANCE_S:  # each bound
        axes[0][0].axvline(edge, color="grey", ls=":", lw=1)
    axes[0][0].set_title("failure times within the phase", fontsize=10)
    _ecdf_panel(axes[1][0], d, o.restart_cadence_s, "restart_cadence_s", rng)
    axes[1][0].set_xlabel("start to the same instance's next start (s)")
    axes[1][0].set_title("restart cadence", fontsize=10)
    _bar_panel(axes[0][1], d, o.starts_per_deploy, "starts_per_deploy", "instances starting")
    axes[0][1].set_title("starts per deploy (5–95 % of simulated deploys)", fontsize=10)
    _refusal_panel(axes[1][1], d)
    axes[1][1].set_title("refusals (99 % clustered Wilson bounds)", fontsize=10)
    fig.suptitle("observed (black) against each hypothesis's 5–95 % predictive band")
    fig.tight_layout()
    return save(fig, folder, "diagnose")[0]


def _ecdf_panel(ax, d: Diagnosis, x: np.ndarray, name: str, rng) -> None:
    ax.set_ylabel("share at or below")
    ax.grid(alpha=0.3)
    pools = [getattr(h.simulated, name) for h in d.hypotheses]
    every = np.concatenate([x, *pools]) if pools else x
    if every.size == 0:
        ax.text(0.5, 0.5, "not measured", ha="center", transform=ax.transAxes)
        return
    grid = np.linspace(0, float(every.max()) * 1.05 + 1e-9, 300)
    for h, pool in zip(d.hypotheses, pools, strict=True):
        band = ecdf_band(pool, max(x.size, 1), grid, rng)
        if band is not None:
            ax.fill_between(grid, *band, alpha=0.25, step="post", label=h.name)
    if x.size and name not in d.observed.not_measured:
        xs = np.sort(x)
        ax.step(xs, np.arange(1, xs.size + 1) / xs.size, "k-", where="post", lw=2, label="observed")
    ax.legend(fontsize=7)


def _bar_panel(ax, d: Diagnosis, x: np.ndarray, name: str, ylabel: str) -> None:
    for k, h in enumerate(d.hypotheses):
        y = getattr(h.simulated, name)
        if y.size:
            lo, mid, hi = np.percentile(y, [5, 50, 95])
            ax.errorbar([k], [mid], yerr=[[mid - lo], [hi - mid]], fmt="o", capsize=4)
    if x.size:
        ax.axhline(float(x.mean()), color="k", lw=2, label=f"observed mean {x.mean():.3g}")
    ax.set_xticks(range(len(d.hypotheses)), [h.name for h in d.hypotheses], fontsize=8)
    ax.set_xlim(-0.5, len(d.hypotheses) - 0.5)
    ax.set_ylabel(f"{ylabel} per deploy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)


def _refusal_panel(ax, d: Diagnosis) -> None:
    for k, h in enumerate(d.hypotheses):
        test = next((t for t in h.tests if t.signal == "refusals" and t.p_value is not None), None)
        if test is not None:
            p = test.predicted
            err = [[p["share"] - p["share_low"]], [p["share_high"] - p["share"]]]
            ax.errorbar([k], [p["share"]], yerr=err, fmt="o", capsize=4)
    o = d.signals
    if "refusals" not in d.observed.not_measured and o.classified:
        share = o.refusals / o.classified
        ax.axhline(share, color="k", lw=2, label=f"observed {o.refusals} of {o.classified}")
        ax.legend(fontsize=7)
    ax.set_xticks(range(len(d.hypotheses)), [h.name for h in d.hypotheses], fontsize=8)
    ax.set_xlim(-0.5, len(d.hypotheses) - 0.5)
    ax.set_ylabel("share of failures refused (53300)")
    ax.set_ylim(-0.05, 1.05)
    ax.grid(alpha=0.3)
