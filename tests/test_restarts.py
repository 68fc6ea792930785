"""Restart schedules and jitter (docs/model.md, "Exit and restart" and "Jitter").

The presets' schedules are checked exactly; a jittered pause is random, so its draws are checked
against their uniform distribution with a tolerance from the sample size (Kolmogorov–Smirnov at
0.001), and against the promise that switching jitter on changes no other draw.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from builders import const, scenario
from scipy import stats
from test_engine_exact import attempts

from sim.errors import ScenarioError
from sim.records import Outcome
from sim.scenario import (
    CLOUDRUN_MAX_RESTARTS,
    MAX_ATTEMPTS,
    Restart,
    from_dict,
    jittered_s,
)

ALPHA = 0.001
# One instance that always times out after 20 s of database init, which begins at once.
ALWAYS_TIMES_OUT = {
    "horizon_s": 5000.0,
    "startup.db_init_timeout_s": 20.0,
    "connector.setup_s": const(30.0),
    "restart.policy": "exponential",
    "restart.max_restarts": 8,
}


def pauses(rows: list[dict]) -> list[float]:
    """The pause before each restart: the next start less the previous attempt's exit."""
    return [b["start_s"] - (a["start_s"] + 20.0) for a, b in itertools.pairwise(rows)]


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        # Kubernetes CrashLoopBackOff: 10 s doubling, capped at 300 s.
        ("kubernetes", [10.0, 20.0, 40.0, 80.0, 160.0, 300.0, 300.0, 300.0]),
        # KEP-4603's faster option: 1 s doubling, capped at 60 s.
        ("kubernetes-fast", [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]),
    ],
)
def test_preset_schedules(preset, expected, engine):
    rows = attempts(scenario({**ALWAYS_TIMES_OUT, "restart.preset": preset}), engine)
    assert pauses(rows) == expected


def test_grpc_preset_without_its_jitter_is_1_times_1_6_to_120(engine):
    # A field written beside the preset wins over the preset's: jitter 0 leaves the bare schedule.
    sc = scenario({**ALWAYS_TIMES_OUT, "restart.preset": "grpc", "restart.jitter": 0.0})
    assert (sc.restart.multiplier, sc.restart.max_backoff_s) == (1.6, 120.0)
    expected = [min(1.6**k, 120.0) for k in range(8)]
    assert np.allclose(pauses(attempts(sc, engine)), expected, rtol=1e-12, atol=1e-9)


def test_a_preset_fills_only_the_fields_a_file_leaves_out():
    r = from_dict({"restart": {"preset": "grpc", "max_backoff_s": 30.0}}).restart
    assert (r.policy, r.initial_backoff_s, r.multiplier, r.jitter) == ("exponential", 1.0, 1.6, 0.2)
    assert r.max_backoff_s == 30.0
    # custom (the default) changes nothing: the Scenario() defaults of before.
    assert Restart() == from_dict({"restart": {"preset": "custom"}}).restart


# Cloud Run's replacement, fitted: one fixed pause of 0.27 s, no growth (docs/sources.md).
CLOUDRUN_TIMES_OUT = {
    "horizon_s": 200.0,
    "startup.db_init_timeout_s": 20.0,
    "connector.setup_s": const(30.0),
    "restart.preset": "cloudrun",
}


def test_cloudrun_preset_fills_a_fixed_pause_without_limit():
    r = from_dict({"restart": {"preset": "cloudrun"}}).restart
    assert (r.policy, r.initial_backoff_s, r.jitter) == ("fixed", 0.27, 0.0)
    # No limit was seen over 15 failures in a row: the most a fleet of 1,000 instances allows.
    assert r.max_restarts == CLOUDRUN_MAX_RESTARTS == MAX_ATTEMPTS // 1000 - 1 == 999
    assert [r.backoff_s(k) for k in (1, 2, 15, 999)] == [0.27] * 4
    from_dict({"restart": {"preset": "cloudrun"}, "fleet": {"instances": 1000}})
    with pytest.raises(ScenarioError, match=r"restart\.max_restarts"):
        from_dict({"restart": {"preset": "cloudrun"}, "fleet": {"instances": 1001}})


def test_cloudrun_schedule_by_hand(engine):
    # Database init begins at once and its one connection's 30 s set-up outlasts the 20 s
    # deadline: every attempt times out at start + 20, exits, and the next starts 0.27 s later.
    # Starts at k × 20.27 s: 0, 20.27, …, 182.43 (k = 9); k = 10 would start at 202.7, past the
    # 200 s horizon. So 10 attempts, all timeouts, each pause 0.27 s.
    rows = attempts(scenario(CLOUDRUN_TIMES_OUT), engine)
    assert [r["attempt"] for r in rows] == list(range(1, 11))
    assert {r["outcome"] for r in rows} == {Outcome.TIMEOUT}
    assert np.allclose([r["start_s"] for r in rows], [20.27 * k for k in range(10)], atol=1e-9)
    assert np.allclose(pauses(rows), [0.27] * 9, atol=1e-9)


def test_cloudrun_preset_yields_to_fields_written_beside_it(engine):
    # A pause of 5 s and at most 3 restarts written in the file: 4 attempts at 0, 25, 50, 75.
    sc = scenario(
        {**CLOUDRUN_TIMES_OUT, "restart.initial_backoff_s": 5.0, "restart.max_restarts": 3}
    )
    assert (sc.restart.policy, sc.restart.jitter) == ("fixed", 0.0)  # still the preset's
    rows = attempts(sc, engine)
    assert [r["start_s"] for r in rows] == [0.0, 25.0, 50.0, 75.0]
    assert pauses(rows) == [5.0, 5.0, 5.0]


def test_multiplier_schedule_exactly(engine):
    # initial 4, multiplier 1.5, cap 20: 4, 6, 9, 13.5, 20 (20.25 capped), 20 …
    sc = scenario(
        {
            **ALWAYS_TIMES_OUT,
            "restart.initial_backoff_s": 4.0,
            "restart.multiplier": 1.5,
            "restart.max_backoff_s": 20.0,
        }
    )
    assert pauses(attempts(sc, engine))[:6] == [4.0, 6.0, 9.0, 13.5, 20.0, 20.0]


def test_jitter_formula():
    assert jittered_s(10.0, 0.2, 0.0) == 8.0
    assert jittered_s(10.0, 0.2, 0.5) == 10.0
    assert jittered_s(10.0, "full", 0.25) == 2.5
    assert jittered_s(10.0, 0.0, 0.9) == 10.0


def restart_pauses(jitter, replications: int, engine) -> tuple[np.ndarray, np.ndarray]:
    """Every pause and its un-jittered base over ``replications`` single-instance runs."""
    sc = scenario({**ALWAYS_TIMES_OUT, "restart.jitter": jitter})
    got, base = [], []
    for seed in range(replications):
        p = pauses(attempts(sc, engine, seed))
        got += p
        base += [sc.restart.backoff_s(k) for k in range(1, len(p) + 1)]
    return np.asarray(got), np.asarray(base)


@pytest.mark.parametrize(
    ("jitter", "low", "width"), [(0.2, 0.8, 0.4), ("full", 0.0, 1.0), (1.0, 0.0, 2.0)]
)
def test_jittered_pauses_are_uniform_around_the_schedule(jitter, low, width, engine):
    # 250 runs × 8 pauses: the pause ÷ its base must be Uniform(low, low + width).
    got, base = restart_pauses(jitter, 250, engine)
    ratio = got / base
    assert ratio.min() >= low and ratio.max() <= low + width
    ks = stats.kstest(ratio, stats.uniform(low, width).cdf)
    assert ks.pvalue > ALPHA, ks


def test_jitter_changes_no_other_draw(engine):
    # Restarts jittered or not, the k-th attempt to start gets the same before-db draw: the jitter
    # has its own random stream (docs/model.md, "Randomness"); only the start times move.
    base = {
        **ALWAYS_TIMES_OUT,
        "fleet.instances": 5,
        "startup.before_db_s": {"dist": "uniform", "low": 0.0, "high": 3.0},
    }

    def before_db_in_start_order(rows):
        rows = sorted(rows, key=lambda r: (r["start_s"], r["instance"]))
        return [r["db_init_start_s"] - r["start_s"] for r in rows], [r["start_s"] for r in rows]

    plain, plain_starts = before_db_in_start_order(attempts(scenario(base), engine, 7))
    jittered, jittered_starts = before_db_in_start_order(
        attempts(scenario({**base, "restart.jitter": "full"}), engine, 7)
    )
    assert len(plain) == len(jittered) == 5 * 9
    assert np.allclose(plain, jittered, rtol=0, atol=1e-9)
    assert plain_starts != jittered_starts


def test_retry_jitter_keeps_retries_within_the_deadline(engine):
    # Connect timeouts every 5 s, retries after 1 s ± 100 %: each pause in [0, 2]; every pool start
    # but the last ends in a connect timeout, and the gaps between pool starts are 5 + pause.
    sc = scenario(
        {
            "startup.db_init_timeout_s": 60.0,
            "connector.setup_s": const(100.0),
            "pool.connect_timeout_s": 5.0,
            "pool.retry_backoff_s": 1.0,
            "pool.retry_jitter": 1.0,
        }
    )
    starts = [attempts(sc, engine, seed)[0]["pool_starts"] for seed in range(200)]
    # Without jitter: pool starts at 0, 6, …, 54: 10. With pauses in [0, 2]: between 9 (every
    # pause near 2: gaps of 7) and 12 (every pause near 0: gaps of 5), and both sides occur.
    assert min(starts) >= 9 and max(starts) <= 12
    assert len(set(starts)) > 1
