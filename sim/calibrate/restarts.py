"""What a platform's logs say of restarts and failures, as calibrated values.

From the restart delays observed (a failed exit to the revision's next start,
:class:`~sim.calibrate.cloudrun.Monitoring`): ``restart.policy`` and its pauses — ``fixed`` at
the median delay when the delays do not grow with the restart number (Cloud Run's replacements
came about every 8 s over 15 failures, incident-facts R3), else ``exponential`` with the growth
observed. From the failures counted: ``team.observed_failures``, the count the ADR sets against
the model (as the incident's "649 failures in a window", F3).
"""

from __future__ import annotations

import math
import statistics

from sim.calibrate.connector import Estimate

GROWING = 1.5  # by-restart medians rising more than this from the first restart: a backoff
MIN_DELAYS = 2
CAPPED = 1.05  # a restart's median this far below the uncapped growth is at the cap
MAX_RESTART_NUMBERS = 30  # Kubernetes reaches its 300 s cap at the 6th restart


def observed(windows: list, overrides: dict, confidence: float = 0.95) -> list[Estimate]:
    """Estimates (and ``overrides``) from the monitoring counts of every window."""
    if not windows:
        return []
    total = windows[-1]  # the merged window when there are several
    out = [_failures(total, overrides), _at_least(total, overrides)]
    out += _schedule(total, overrides, confidence)
    return out


def _failures(m, overrides: dict) -> Estimate:
    overrides["team.observed_failures"] = m.failed
    kinds = ", ".join(f"{k} {n}" for k, n in m.failures.items()) or "none"
    return Estimate(
        "team.observed_failures",
        m.failed,
        None,
        None,
        m.failures_source,
        m.starts,
        f"{kinds} in {m.span_s:.0f} s; at least: {m.censored} censored and {m.dropped} "
        "started before the window not counted",
    )


def _at_least(m, overrides: dict) -> Estimate:
    """The count is a lower bound when starts were cut off by the window, at either end."""
    cut = m.censored + m.dropped
    overrides["team.observed_failures_at_least"] = cut > 0
    why = f"{m.censored} censored, {m.dropped} started before the window"
    return Estimate(
        "team.observed_failures_at_least", cut > 0, None, None, "the export's window", m.starts, why
    )


def _schedule(m, overrides: dict, confidence: float) -> list[Estimate]:
    delays = sorted(d for _, d in m.delays)
    if len(delays) < MIN_DELAYS:
        why = (
            f"not identifiable from these records: {len(delays)} restart delay(s) observed "
            "(a failed exit followed by a start of the same revision); two or more are needed"
        )
        return [
            Estimate("restart.initial_backoff_s", None, None, None, "—", len(delays), why, False)
        ]
    by = m.by_restart()
    growth = by[-1][1] / by[0][1] if len(by) > 1 and by[0][1] > 0 else 1.0
    source = m.delays_source
    low, high = median_interval(delays, confidence)
    ks = ", ".join(f"#{k} {med:.3g} s" for k, med, _ in by)
    if growth <= GROWING:
        value = statistics.median(delays)
        overrides.update(
            {"restart.preset": "custom", "restart.policy": "fixed", "restart.jitter": 0.0}
        )
        overrides["restart.initial_backoff_s"] = round(value, 3)
        quality = f"no growth with the restart number ({ks}): policy fixed"
        return [
            Estimate("restart.initial_backoff_s", value, low, high, source, len(delays), quality)
        ]
    k_last, first = by[-1][0], by[0][1]
    multiplier = min(max(growth ** (1 / max(k_last - by[0][0], 1)), 1.0), 100.0)
    overrides.update({"restart.preset": "custom", "restart.policy": "exponential"})
    overrides["restart.initial_backoff_s"] = round(first, 3)
    overrides["restart.multiplier"] = round(multiplier, 3)
    quality = f"growing with the restart number ({ks}): exponential × {multiplier:.3g}"
    n1 = [d for k, d in m.delays if k == by[0][0]]
    lo1, hi1 = median_interval(sorted(n1), confidence)
    out = [Estimate("restart.initial_backoff_s", first, lo1, hi1, source, len(n1), quality)]
    return [*out, _cap(m, by[0][0], first, multiplier, overrides, source, confidence)]


def _cap(m, k0: int, first: float, multiplier: float, overrides: dict, source, confidence):
    """``restart.max_backoff_s``: the plateau of the delays, at the restart numbers whose median
    stays below the uncapped growth (Kubernetes: 10 s doubling to 300 s, platform-facts.md)."""
    by = m.by_restart(most=MAX_RESTART_NUMBERS)
    capped = [k for k, med, _ in by if first * multiplier ** (k - k0) > med * CAPPED]
    if not capped:
        shown = f"#{by[-1][0]} {by[-1][1]:.3g} s"
        why = f"not identifiable: the delays grow up to the last restart seen ({shown})"
        return Estimate("restart.max_backoff_s", None, None, None, source, 0, why, False)
    x = sorted(d for k, d in m.delays if k in capped)
    value = statistics.median(x)
    overrides["restart.max_backoff_s"] = round(value, 3)
    low, high = median_interval(x, confidence)
    ks = ", ".join(f"#{k}" for k in capped)
    why = f"the plateau of restarts {ks}, below {first:.3g} s × {multiplier:.3g}^(k − {k0})"
    return Estimate("restart.max_backoff_s", value, low, high, source, len(x), why)


def median_interval(sorted_x: list[float], confidence: float) -> tuple[float | None, float | None]:
    """A distribution-free interval of the median: order statistics whose binomial coverage is
    at least ``confidence`` (None ends when the sample is too small for it)."""
    from scipy.stats import binom

    n = len(sorted_x)
    j = int(binom.ppf((1 - confidence) / 2, n, 0.5))  # the j-th smallest, 1-based
    if j < 1 or not math.isfinite(j):
        return None, None
    return sorted_x[j - 1], sorted_x[n - j]
