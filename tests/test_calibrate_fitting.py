"""Fitting durations: known distributions recovered within their intervals, censoring kept in the
likelihood (dropping it would bias), KS equal to scipy's, and the fallbacks."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from sim.distributions import Weibull
from sim.fitting import LEFT, Sample, fit_duration
from sim.scenario import from_dict


def by_family(fit, family):
    return next(c for c in fit.candidates if c.family == family)


@pytest.mark.parametrize(
    ("family", "draw", "truth"),
    [
        ("lognormal", lambda r, n: r.lognormal(np.log(2.0), 0.4, n), {"median": 2.0, "sigma": 0.4}),
        ("gamma", lambda r, n: r.gamma(3.0, 0.5, n), {"shape": 3.0, "scale": 0.5}),
        ("weibull", lambda r, n: 1.5 * r.weibull(2.5, n), {"shape": 2.5, "scale": 1.5}),
        ("exponential", lambda r, n: r.exponential(0.8, n), {"mean": 0.8}),
    ],
)
def test_each_family_is_recovered_within_its_intervals_with_censoring(family, draw, truth):
    # 40 samples of 300, a fifth cut off at a deadline: each parameter's 95 % Wald interval must
    # hold the truth in most samples (binomial: 34 or more of 40 at 95 % coverage, P ≈ 0.99).
    covered, chosen = dict.fromkeys(truth, 0), []
    for seed in range(40):
        x = draw(np.random.default_rng(seed), 300)
        deadline = np.quantile(x, 0.8)
        fit = fit_duration(Sample.of(np.minimum(x, deadline), right=x > deadline))
        chosen.append(fit.chosen_family)
        c = by_family(fit, family)
        for k, v in truth.items():
            covered[k] += c.intervals[k][0] <= v <= c.intervals[k][1]
    assert min(covered.values()) >= 34, covered
    assert chosen.count(family) >= 20, chosen  # AIC picks the true family most of the time


def test_dropping_censored_attempts_would_bias_the_median_and_keeping_them_does_not():
    rng = np.random.default_rng(7)
    x = rng.lognormal(np.log(10.0), 0.5, 2000)
    cut = x > 12.0  # a deadline below the upper tail: 36 % cut off
    full = by_family(fit_duration(Sample.exact(x)), "lognormal").params["median"]
    censored = fit_duration(Sample.of(np.minimum(x, 12.0), right=cut))
    dropped = fit_duration(Sample.exact(x[~cut]))
    lo, hi = by_family(censored, "lognormal").intervals["median"]
    assert lo <= full <= hi  # what the whole sample says, from the censored one
    assert by_family(dropped, "lognormal").intervals["median"][1] < 0.8 * full


def test_ks_statistic_is_scipys_without_censoring():
    x = np.random.default_rng(3).gamma(2.0, 1.0, 250)
    c = by_family(fit_duration(Sample.exact(x)), "gamma")
    ref = stats.kstest(x, stats.gamma(c.params["shape"], scale=c.params["scale"]).cdf)
    assert c.ks_stat == pytest.approx(ref.statistic, rel=1e-9)
    assert c.ks_p == pytest.approx(ref.pvalue, rel=1e-6)


def test_equal_values_are_a_constant_and_zeros_are_left_censored():
    assert fit_duration(Sample.exact([0.0] * 10)).chosen == {"dist": "constant", "value": 0.0}
    x = np.r_[np.zeros(5), np.random.default_rng(1).exponential(0.01, 100)].round(3)
    s = Sample.exact(x).resolved()
    assert np.sum(s.kinds == LEFT) == np.sum(x == 0) > 0
    assert fit_duration(Sample.exact(x)).best is not None


def test_data_no_family_fits_are_resampled():
    x = np.r_[np.full(100, 1.0), np.full(100, 5.0)] + np.random.default_rng(0).normal(0, 0.01, 200)
    fit = fit_duration(Sample.exact(x))
    assert fit.chosen_family == "empirical" and len(fit.chosen["values"]) == 200
    assert "rejected by KS" in fit.note


def test_a_fitted_weibull_is_a_scenario_distribution():
    d = from_dict({"startup": {"before_db_s": {"dist": "weibull", "shape": 2.0, "scale": 3.0}}})
    w = d.startup.before_db_s
    assert isinstance(w, Weibull)
    draws = w.sample(np.random.default_rng(0), 100_000)
    assert draws.mean() == pytest.approx(w.mean(), rel=0.01)
    assert np.mean(draws <= w.quantile(0.9)) == pytest.approx(0.9, abs=0.005)
    assert w.top_s() == pytest.approx(stats.weibull_min(2.0, scale=3.0).isf(1e-12))
