"""The predictive tests of ``startsim diagnose`` (:mod:`sim.diagnose`): each compares an observed
signal with what a hypothesis's simulated replications give, and returns how often the hypothesis
gives something at least as far from its own prediction as the observation is. A finite simulation
never makes an observation impossible: the smallest p is 1 / (draws + 1), shares carry Jeffreys'
half count or a Wilson bound. docs/diagnose.md has the error rates.
"""

from __future__ import annotations

import numpy as np

# Predictive draws per test: the smallest p a test can give is 1 / (DRAWS + 1), so that even six
# Holm-adjusted signals can reach ALPHA (6 × 2 / 2001 < 0.01).
DRAWS = 2000
# Assumed: a process stops a few ms after its own deadline and its log line lands up to a few
# hundred ms later (R6: "≈ 10.2 s" for a 10 s bound); a failure this close to a bound is "at" it.
# Wider than sim.validate's tolerance (50 ms, for a campaign's own records): logs, not records.
BOUND_TOLERANCE_S = 0.5
# The confidence of the bounds on a simulated refusal share: a finite simulation never claims a
# share of exactly 0 or 1.
BOUND_CONFIDENCE = 0.99


def time_bins(bounds: list[float], tol: float = BOUND_TOLERANCE_S):
    """Edges and labels of the failure-time bins: one bin "at" each bound (± ``tol``: a failure
    cut by a deadline is a censored observation, its exact time says nothing more), and the
    stretches between them."""
    edges: list[float] = []
    labels: list[str] = []
    low = 0.0
    for d in sorted(set(bounds)):
        if edges and d - tol <= edges[-1]:  # bounds closer than 2 × tol share one bin
            edges[-1] = d + tol
            labels[-1] += f"/{d:g}"
            continue
        labels.append(f"{low:g}–{d - tol:g} s")
        labels.append(f"at {d:g}")
        edges += [d - tol, d + tol]
        low = d + tol
    labels = [lab + " s" if lab.startswith("at ") else lab for lab in labels]
    labels.append(f"over {low:g} s")
    return np.array(edges), labels


def binned(times: np.ndarray, deploy: np.ndarray, deploys: int, edges: np.ndarray) -> np.ndarray:
    """Counts of ``times`` in the bins of ``edges``, a row per deploy (``deploy``: each time's)."""
    out = np.zeros((deploys, edges.size + 1))
    np.add.at(out, (deploy, np.digitize(times, edges)), 1)
    return out


def categorical_p(
    obs: np.ndarray,
    sim: np.ndarray,
    deploys: int,
    rng: np.random.Generator,
    draws: int = DRAWS,
    size: int | None = None,
) -> tuple[float | None, float]:
    """(p, log-likelihood) of observed category counts ``obs`` (K) under simulated ones, ``sim``
    (one row of K counts per simulated deploy). The predictive is the pooled simulated shares
    with Jeffreys' half count in every category (a category the simulation never reached is rare,
    not impossible); the discrepancy is the Kullback–Leibler divergence of a sample's shares from
    it; p is the share of ``draws`` samples of ``deploys`` whole simulated deploys (attempts of
    one deploy are not independent) with a divergence at least as large, counting the observation
    itself. Samples without any count are left out; None when every one is empty. ``size``: logs
    that keep only part of each deploy: a sample larger than ``size`` is cut to ``size`` values
    drawn from it without replacement."""
    pooled = sim.sum(axis=0)
    probs = (pooled + 0.5) / (pooled.sum() + 0.5 * pooled.size)
    loglik = float(np.sum(obs * np.log(probs)))
    if obs.sum() == 0:
        return 1.0, loglik
    drawn = sim[rng.integers(0, sim.shape[0], size=(draws, max(deploys, 1)))].sum(axis=1)
    drawn = drawn[drawn.sum(axis=1) > 0]
    if drawn.shape[0] == 0:
        return None, loglik
    if size is not None:
        drawn = np.array([_cut(row, size, rng) for row in drawn.astype(np.int64)], dtype=float)
    kl_obs, kl_sim = _kl(obs[None, :], probs)[0], _kl(drawn, probs)
    return float((1 + np.sum(kl_sim >= kl_obs - 1e-9)) / (drawn.shape[0] + 1)), loglik


def _cut(counts: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` of the values counted in ``counts`` (per category), drawn without replacement."""
    if counts.sum() <= size:
        return counts
    return rng.multivariate_hypergeometric(counts, size)


def _kl(counts: np.ndarray, probs: np.ndarray) -> np.ndarray:
    shares = counts / counts.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, shares * np.log(shares / probs), 0.0)
    return terms.sum(axis=1)


def mean_p(obs: np.ndarray, sim: np.ndarray, rng: np.random.Generator, draws: int = DRAWS):
    """Two-sided predictive p of the observed mean per deploy: ``obs.size`` deploys drawn from the
    simulated ones, ``draws`` times; twice the smaller tail, counting the observation itself."""
    m = obs.size
    means = sim[rng.integers(0, sim.size, size=(draws, m))].mean(axis=1)
    x = obs.mean()
    low = (1 + np.sum(means <= x + 1e-9)) / (draws + 1)
    high = (1 + np.sum(means >= x - 1e-9)) / (draws + 1)
    return float(min(1.0, 2 * min(low, high)))


def ks_p(
    obs: np.ndarray,
    sim: np.ndarray,
    sim_deploy: np.ndarray,
    total: int,
    deploys: int,
    rng: np.random.Generator,
    draws: int = DRAWS,
    size: int | None = None,
) -> tuple[float | None, float]:
    """(p, distance): a Kolmogorov–Smirnov distance from the pooled simulated values with a timing
    slack of :data:`BOUND_TOLERANCE_S` (an ECDF may sit that far left or right of the other:
    clocks and log lines differ by that much); p against ``draws`` samples of ``deploys`` whole
    simulated deploys (``sim_deploy``: each value's deploy, of ``total``), counting the observation
    itself; samples without any value are left out, None when every one is empty. ``size``: as
    in :func:`categorical_p`, a sample cut to that many values."""
    if sim.size == 0:
        return None, 1.0
    pool = np.sort(sim)
    d_obs = float(_ks(np.sort(obs)[None, :], pool)[0])
    order = np.argsort(sim_deploy, kind="stable")
    groups = np.split(sim[order], np.searchsorted(sim_deploy[order], np.arange(1, total)))
    seen = []
    for picks in rng.integers(0, total, size=(draws, max(deploys, 1))):
        x = np.concatenate([groups[k] for k in picks])
        if size is not None and x.size > size:
            x = rng.choice(x, size, replace=False)
        if x.size:
            seen.append(_ks(np.sort(x)[None, :], pool)[0])
    if not seen:
        return None, d_obs
    return float((1 + np.sum(np.array(seen) >= d_obs - 1e-9)) / (len(seen) + 1)), d_obs


def _ks(samples: np.ndarray, pool: np.ndarray, tol: float = BOUND_TOLERANCE_S) -> np.ndarray:
    n = samples.shape[1]
    i = np.arange(1, n + 1)
    above = np.searchsorted(pool, samples + tol, side="right") / pool.size
    below = np.searchsorted(pool, samples - tol, side="left") / pool.size
    return np.maximum((i / n - above).max(axis=1), (below - (i - 1) / n).max(axis=1)).clip(0)


def refusal_p(refusals: int, failures: int, share_low: float, share_high: float) -> float:
    """Two-sided P(a count of refusals at least as extreme as ``refusals`` in ``failures``) when
    each failure is a refusal with the simulated share, taken at its lower bound for the low tail
    and at its upper bound for the high tail (the side that favours the hypothesis), so a finite
    simulation never makes an observation impossible: "no refusal in k failures" is
    2 × (1 − share_low)^k."""
    from scipy.stats import binom

    at_most = float(binom.cdf(refusals, failures, share_low))
    at_least = float(binom.sf(refusals - 1, failures, share_high))
    return min(1.0, 2 * min(at_most, at_least))


def effective(refusals: int, failures: int, design_effect: float) -> tuple[int, int]:
    """The observed count read as ``failures / design_effect`` independent failures (failures of
    one deploy share its cause), with the same share, at least one failure, and a refusal kept
    as at least one."""
    k = max(1, round(failures / max(design_effect, 1.0)))
    r = round(refusals * k / failures) if failures else 0
    return (max(r, 1) if refusals else 0), k


def holm(p_values: list[float | None]) -> list[float | None]:
    """Holm's step-down adjusted p-values (None stays None: a test with nothing to compare).
    Rejecting those at most alpha keeps the family-wise error rate at alpha under any dependence
    between the tests."""
    order = sorted((p, k) for k, p in enumerate(p_values) if p is not None)
    out: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, k) in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p))
        out[k] = running
    return out


def ecdf_band(pool: np.ndarray, n: int, grid: np.ndarray, rng: np.random.Generator, draws=200):
    """The 5–95 % band of the ECDF of ``n`` values drawn from ``pool``, at ``grid``: where an
    observed ECDF of ``n`` values would lie under the hypothesis."""
    if pool.size == 0 or n == 0:
        return None
    drawn = np.sort(pool[rng.integers(0, pool.size, size=(draws, n))], axis=1)
    curves = np.stack([np.searchsorted(row, grid, side="right") / n for row in drawn])
    return np.percentile(curves, 5, axis=0), np.percentile(curves, 95, axis=0)
