"""Importance sampling over the first scale-up delays (sim.rare) against plain Monte Carlo."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import const, scenario

from sim import fast
from sim.errors import UsageError
from sim.rare import MIX, estimate_failure, ratio_estimate, weights
from sim.scenario import resolve


def _se(est) -> float:
    return (est.ci_high - est.ci_low) / 2 / 1.96


def test_tilted_and_plain_estimates_agree_within_their_intervals():
    sc = resolve("capacity-storm").with_overrides({"startup.db_init_timeout_s": 27.0})
    plain = estimate_failure(sc, 3000, seed=0, tilt=0.0, engine="fast")
    tilted = estimate_failure(sc, 3000, seed=1, tilt=6.0, engine="fast")
    assert plain.estimator == "plain Monte Carlo"
    assert tilted.estimator == "importance sampling (defensive mixture 0.5, first 1 scale_up θ=6)"
    assert plain.effective_replications == 3000
    # The defensive mixture keeps most of the sample: weights are at most 1 / (1 − MIX).
    assert 1500 < tilted.effective_replications < 3000
    assert tilted.reliable and plain.reliable
    assert abs(plain.estimate - tilted.estimate) < 4.5 * math.hypot(_se(plain), _se(tilted))


def test_timeouts_are_estimated_too_and_never_exceed_failures():
    sc = resolve("capacity-storm").with_overrides({"startup.db_init_timeout_s": 27.0})
    failed = estimate_failure(sc, 2000, seed=2, tilt=6.0, engine="fast")
    timeout = estimate_failure(sc, 2000, seed=2, tilt=6.0, event="timeout", engine="fast")
    assert timeout.event == "timeout"
    assert 0 < timeout.estimate <= failed.estimate


def test_weights_are_bounded_and_one_on_average_under_the_proposal():
    sc = resolve("capacity-storm")
    _, fleet = fast.run_chunk(sc, 3, range(4000), fast.Tilt("scale_up", 10.0, 1, MIX), False)
    w = weights(fleet["tilt_draws"], fleet["tilt_sum"], 10.0, MIX)
    assert w.max() <= 1 / (1 - MIX)
    assert 0.3 < fleet["tilted"].mean() < 0.7
    # E_q[w] = 1: the mean weight is within 4.5 standard errors of 1.
    assert abs(w.mean() - 1) < 4.5 * w.std(ddof=1) / math.sqrt(w.size)


def test_untilted_replications_are_the_plain_ones():
    # A mixture with no tilted share draws exactly what the plain engine draws.
    sc = resolve("capacity-storm")
    _, plain = fast.run_chunk(sc, 5, range(50), None, False)
    _, mixed = fast.run_chunk(sc, 5, range(50), fast.Tilt("scale_up", 10.0, 1, 0.0), False)
    for key, values in plain.items():
        assert values.tolist() == mixed[key].tolist(), key
    assert set(mixed["tilted"].tolist()) == {0}


def test_a_constant_delay_is_not_tilted():
    sc = scenario({"fleet.instances": 3, "connector.scale_up_delay_s": const(1.0)})
    est = estimate_failure(sc, 10, tilt=5.0)
    assert est.tilt == 0.0
    assert est.estimator == "plain Monte Carlo"


def test_unit_weights_give_the_plain_share():
    failed, total = np.array([1.0, 0.0, 3.0]), np.array([10.0, 10.0, 20.0])
    p, se, ess = ratio_estimate(failed, total, np.ones(3), 0.95)
    assert p == 4 / 40
    assert ess == 3
    assert se > 0


def test_too_few_replications_and_unknown_events_are_refused_by_name():
    with pytest.raises(UsageError) as err:
        estimate_failure(resolve("capacity-storm"), 1)
    assert err.value.option == "replications"
    with pytest.raises(UsageError) as err:
        estimate_failure(resolve("capacity-storm"), 10, event="slow")
    assert err.value.option == "event"
    with pytest.raises(UsageError) as err:
        estimate_failure(resolve("capacity-storm"), 10, engine="quick")
    assert err.value.option == "engine"


@pytest.mark.parametrize("tilt", [0.0, 6.0])
def test_the_readable_engine_gives_the_same_estimate(tilt):
    # Both engines draw the same numbers, tilted ones included: the estimator is checked against
    # the readable engine, the truth, and not only against plain Monte Carlo.
    sc = resolve("capacity-storm").with_overrides({"startup.db_init_timeout_s": 24.0})
    ref = estimate_failure(sc, 300, seed=4, tilt=tilt, engine="reference")
    fst = estimate_failure(sc, 300, seed=4, tilt=tilt, engine="fast")
    assert ref.event_replications > 0
    assert ref.as_dict() == fst.as_dict()


def test_the_readable_engine_is_the_default_and_auto_takes_the_fast_one_for_large_runs():
    # Like the rest of the library: a caller that wants the fast engine says so ("fast", or
    # "auto" for a run of 4,000 instance starts or more); the numbers are the same.
    sc = resolve("capacity-storm").with_overrides({"startup.db_init_timeout_s": 24.0})
    default = estimate_failure(sc, 200, seed=4, tilt=6.0)
    auto = estimate_failure(sc, 200, seed=4, tilt=6.0, engine="auto")
    assert default.as_dict() == auto.as_dict()
