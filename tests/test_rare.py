"""Importance sampling over the scale-up delay (sim.rare) against plain Monte Carlo."""

from __future__ import annotations

import math

import pytest
from builders import const, scenario

from sim.errors import UsageError
from sim.rare import estimate_failure, ratio_estimate
from sim.scenario import resolve


def test_tilted_and_plain_estimates_agree_within_their_intervals():
    sc = resolve("staging-incident").with_overrides({"startup.db_init_timeout_s": 27.0})
    plain = estimate_failure(sc, 3000, seed=0, tilt=0.0)
    tilted = estimate_failure(sc, 3000, seed=1, tilt=3.0)
    assert plain.estimator == "plain Monte Carlo"
    assert tilted.estimator == "importance sampling (scale_up θ=3)"
    assert plain.effective_replications == 3000
    assert 1 < tilted.effective_replications < 3000
    se = math.hypot(
        (plain.ci_high - plain.ci_low) / 2 / 1.96, (tilted.ci_high - tilted.ci_low) / 2 / 1.96
    )
    assert abs(plain.estimate - tilted.estimate) < 4.5 * se


def test_a_constant_delay_is_not_tilted():
    sc = scenario({"fleet.instances": 3, "connector.scale_up_delay_s": const(1.0)})
    est = estimate_failure(sc, 10, tilt=5.0)
    assert est.tilt == 0.0
    assert est.estimator == "plain Monte Carlo"


def test_unit_weights_give_the_plain_share():
    import numpy as np

    failed, total = np.array([1.0, 0.0, 3.0]), np.array([10.0, 10.0, 20.0])
    p, se, ess = ratio_estimate(failed, total, np.ones(3), 0.95)
    assert p == 4 / 40
    assert ess == 3
    assert se > 0


def test_too_few_replications_are_refused_by_name():
    with pytest.raises(UsageError) as err:
        estimate_failure(resolve("staging-incident"), 1)
    assert err.value.option == "replications"
