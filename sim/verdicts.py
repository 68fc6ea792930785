"""``startsim diagnose``'s verdicts in plain sentences, from :mod:`sim.diagnose`'s tests:
"the capacity hypothesis cannot produce failures 10.2 s into the phase that failed, 3 instances
starting per deploy and no refusal (53300) in 30 failures (…); the path-fault hypothesis can …".
"""

from __future__ import annotations

from sim.diagnose import Diagnosis, Hypothesis, SignalTest


def observed_phrase(t: SignalTest) -> str:
    """What was observed, as the end of "the … hypothesis can(not) produce …"."""
    o = t.observed
    if t.signal == "failure_time_in_phase_s":
        named = [name for name in o.get("phases", {}) if name]
        where = f"phase {named[0]}" if len(named) == 1 else "the phase that failed"
        return f"failures {o['median_s']:.3g} s into {where} (median of {o['n']})"
    if t.signal == "refusals":
        count = "no refusal" if o["refusals"] == 0 else f"{o['refusals']} refusals"
        return f"{count} (53300) in {o['failures']} failures"
    if t.signal == "error_kinds":
        fam = o["families"]
        top = max(fam, key=fam.get)
        return f"{fam[top] / sum(fam.values()):.0%} of failures {top}"
    if t.signal == "starts_per_deploy":
        mean, n = o["mean"], o["deploys"]
        noun = "instance" if mean == 1 else "instances"
        return f"{mean:.2g} {noun} starting per deploy ({n} deploy{'s' if n != 1 else ''})"
    if t.signal == "failures_per_deploy":
        return f"{o['mean']:.3g} failed starts per deploy"
    return f"a new start of the same instance every {o['median_s']:.3g} s (median)"


def predicted_phrase(t: SignalTest) -> str:
    """What the hypothesis gives instead, in the same terms."""
    p = t.predicted
    if t.note:
        return t.note
    if t.signal == "failure_time_in_phase_s":
        return f"failures {p['median_s']:.3g} s into the phase (median of {p['n']} simulated)"
    if t.signal == "refusals":
        return (
            f"{p['share']:.1%} of failures refused ({p['refusals']} of {p['failures']}; "
            f"{p['share_low']:.2g}–{p['share_high']:.2g} at the bounds)"
        )
    if t.signal == "error_kinds":
        shares = p["shares"]
        return ", ".join(f"{s:.0%} {f}" for f, s in shares.items() if s >= 0.005)
    if t.signal == "restart_cadence_s":
        return f"every {p['p50']:.3g} s (median; 5–95 %: {p['p5']:.3g}–{p['p95']:.3g} s)"
    return f"{p['mean']:.3g} per deploy (5–95 %: {p['p5']:.3g}–{p['p95']:.3g})"


# The short verdict names at most this many deciding signals (the smallest adjusted p first);
# the detailed one names them all.
SHORT = 3


def sentence(h: Hypothesis, detail: bool = True) -> str:
    """The verdict on one hypothesis: what it cannot produce (its deciding signals, with the
    observed numbers and, in ``detail``, what it gives instead and the adjusted p), or that it
    can produce every signal compared."""
    if h.survives:
        compared = [t for t in h.tests if t.p_value is not None]
        return f"the {h.name} hypothesis can produce {_and(compared)}"
    deciding = h.deciding
    if not detail:
        ranked = sorted(deciding, key=lambda t: t.adjusted_p)[:SHORT]
        kept = [t for t in deciding if t in ranked]
        more = len(deciding) - len(kept)
        tail = f" (and {more} more signal{'s' if more > 1 else ''})" if more else ""
        return f"the {h.name} hypothesis cannot produce {_and(kept)}{tail}"
    why = "; ".join(
        f"{t.signal}: Holm-adjusted p = {t.adjusted_p:.2g}, it gives {predicted_phrase(t)}"
        for t in deciding
    )
    return f"the {h.name} hypothesis cannot produce {_and(deciding)} ({why})"


def _and(tests: list[SignalTest]) -> str:
    parts = [observed_phrase(t) for t in tests]
    if len(parts) < 2:
        return "".join(parts) or "what was observed"
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def verdict(d: Diagnosis) -> str:
    """The whole verdict: each hypothesis that cannot produce the observation, then those that
    can, and which one the evidence supports."""
    order = [h for h in d.hypotheses if not h.survives]
    order += sorted((h for h in d.hypotheses if h.survives), key=lambda h: h.rank)
    text = "; ".join(
        sentence(h, detail=False) if not h.survives else f"the {h.name} hypothesis can"
        for h in order
    )
    best = d.supported
    if best is None:
        return f"{_cap(text)}. No hypothesis given can produce what was observed."
    others = [h.name for h in d.hypotheses if h.survives and h is not best]
    also = f" ({', '.join(others)} also can, less likely)" if others else ""
    return f"{_cap(text)}. The evidence supports the {best.name} hypothesis{also}."


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]
