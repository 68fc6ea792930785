"""The attempt-share interval (sim.stats.clustered_proportion) against what must hold for any data:
more events never lower the upper bound, clusters of one attempt give the binomial (Wilson)
interval, and swapping the outcomes mirrors the interval; and against what is known for clusters
of unequal size: the cluster-robust variance, and coverage when failures bring restarts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import beta, binomtest

from sim.stats import cluster_proportion, clustered_proportion, design_effect_bound, wilson

CONFIDENCE = (0.8, 0.95, 0.99)


@st.composite
def clustered_data(draw, max_clusters: int = 30, max_size: int = 12):
    """Per-cluster trials and events, of equal or unequal sizes."""
    sizes = draw(st.lists(st.integers(1, max_size), min_size=1, max_size=max_clusters))
    if draw(st.booleans()):
        sizes = [sizes[0]] * len(sizes)
    trials = np.array(sizes)
    events = np.array([draw(st.integers(0, m)) for m in sizes])
    return events, trials


@settings(max_examples=300, deadline=None)
@given(clustered_data(), st.data(), st.sampled_from(CONFIDENCE))
def test_adding_an_event_never_lowers_the_upper_bound(data, pick, confidence):
    events, trials = data
    room = np.flatnonzero(events < trials)
    if room.size == 0:
        return
    # Either a cluster without events yet or one that already has some, whichever is drawn.
    c = pick.draw(st.sampled_from(list(room)))
    more = events.copy()
    more[c] += 1
    before = cluster_proportion(events, trials, confidence)
    after = cluster_proportion(more, trials, confidence)
    assert after.ci_high >= before.ci_high
    assert after.ci_low >= before.ci_low  # the mirror image of the same property


def test_adding_events_to_new_or_to_hit_clusters_in_the_issue_s_design():
    # 1,000 replications of 40 attempts: the case where the old bound fell from 0.383 % to 0.087 %.
    trials = np.full(1000, 40)
    events = np.zeros(1000, dtype=int)
    highs = [cluster_proportion(events, trials).ci_high]
    for c in [*range(8), 0, 0, 1, *range(8, 60), *[3] * 30]:
        events[c] += 1
        highs.append(cluster_proportion(events, trials).ci_high)
    assert np.all(np.diff(highs) >= 0)
    assert highs[0] == pytest.approx(wilson(0, 1000)[1])  # no event: each replication once
    assert highs[-1] > highs[0]


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 400), st.data(), st.sampled_from(CONFIDENCE))
def test_clusters_of_one_attempt_give_the_wilson_interval(n, pick, confidence):
    k = pick.draw(st.integers(0, n))
    hits = np.arange(n) < k
    got = clustered_proportion(hits, np.arange(n), confidence)
    want = binomtest(k, n).proportion_ci(confidence, method="wilson")
    assert got.ci_low == pytest.approx(want.low, abs=1e-12)
    assert got.ci_high == pytest.approx(want.high, abs=1e-12)
    assert (got.events, got.trials, got.effective_trials) == (k, n, n)


@settings(max_examples=300, deadline=None)
@given(clustered_data(), st.sampled_from(CONFIDENCE))
def test_swapping_outcomes_mirrors_the_interval(data, confidence):
    events, trials = data
    a = cluster_proportion(events, trials, confidence)
    b = cluster_proportion(trials - events, trials, confidence)
    assert a.ci_low == pytest.approx(1 - b.ci_high, abs=1e-12)
    assert a.ci_high == pytest.approx(1 - b.ci_low, abs=1e-12)
    assert a.ci_low <= a.estimate <= a.ci_high


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 300), st.integers(1, 60), st.sampled_from(CONFIDENCE))
def test_no_event_counts_each_cluster_once(clusters, size, confidence):
    r = cluster_proportion(np.zeros(clusters, int), np.full(clusters, size), confidence)
    assert r.ci_low == 0.0
    assert r.ci_high == pytest.approx(wilson(0, clusters, confidence)[1], rel=1e-12)
    assert r.effective_trials == pytest.approx(clusters)


def test_whole_clusters_failing_count_as_clusters():
    # Every attempt of 30 of 300 replications failed, none elsewhere: 30 of 300 clusters.
    trials = np.full(300, 40)
    events = np.where(np.arange(300) < 30, 40, 0)
    r = cluster_proportion(events, trials)
    assert (r.ci_low, r.ci_high) == pytest.approx(wilson(30, 300))


def test_independent_attempts_in_many_clusters_come_close_to_the_binomial_interval():
    rng = np.random.default_rng(7)
    trials = np.full(2000, 40)
    events = rng.binomial(40, 0.2, 2000)
    r = cluster_proportion(events, trials)
    low, high = wilson(events.sum(), trials.sum())
    # The width of the design effect's sampling error, not a factor of √40.
    assert 1.0 <= (r.ci_high - r.ci_low) / (high - low) < 1.1


def test_from_attempts_equals_from_counts():
    rng = np.random.default_rng(3)
    rep = rng.integers(0, 50, 2000)
    hits = rng.random(2000) < 0.1
    a = clustered_proportion(hits, rep)
    b = cluster_proportion(np.bincount(rep, weights=hits), np.bincount(rep))
    assert a == b
    assert set(a.as_dict()) == {
        "estimate",
        "ci_low",
        "ci_high",
        "events",
        "trials",
        "effective_trials",
    }


def test_no_attempts_and_bad_counts():
    empty = clustered_proportion(np.array([], bool), np.array([], int))
    assert (empty.ci_low, empty.ci_high, empty.trials) == (0.0, 1.0, 0)
    with pytest.raises(ValueError, match="events per cluster"):
        cluster_proportion([3], [2])


def test_a_single_replication_gets_the_plain_wilson_interval():
    # One load campaign: no spread between replications to measure.
    r = clustered_proportion(np.arange(500) < 40, np.zeros(500, int))
    assert (r.ci_low, r.ci_high) == pytest.approx(wilson(40, 500))
    assert r.effective_trials == 500


def _restarted(rng, clusters: int, a: float, b: float) -> tuple[np.ndarray, np.ndarray]:
    """Failures and attempts per cluster: 40 instances, each failed attempt started again, up to
    4 attempts, at a failure probability drawn per cluster from Beta(a, b)."""
    p = rng.beta(a, b, clusters)
    reached = [np.full(clusters, 40)]
    for _ in range(4):
        reached.append(rng.binomial(reached[-1], p))
    return sum(reached[1:]), sum(reached[:-1])


def test_failing_clusters_with_more_attempts_are_covered():
    # Restarts make failing replications the larger ones, the case the pair count got wrong:
    # its interval held the truth in about 0.6 of samples here (benchmarks/coverage_study.py).
    a, b = 0.1, 0.9  # mean 0.1, intra-cluster correlation 0.5
    moments = [beta(a, b).moment(i) for i in range(5)]
    truth = sum(moments[1:]) / sum(moments[:-1])  # share of all attempts that fail, 0.187
    rng = np.random.default_rng(11)
    samples = 400
    low_ok = high_ok = 0
    for _ in range(samples):
        events, trials = _restarted(rng, 300, a, b)
        r = cluster_proportion(events, trials)
        low_ok += r.ci_low <= truth
        high_ok += truth <= r.ci_high
    # Each bound misses 2.5 %; allow three Monte Carlo standard errors of that share.
    slack = 3 * np.sqrt(0.025 * 0.975 / samples)
    assert low_ok / samples >= 0.975 - slack
    assert high_ok / samples >= 0.975 - slack


def test_the_measured_design_effect_is_the_cluster_robust_variance_ratio():
    # Unequal clusters, failing ones larger: the ratio estimator's sandwich variance over the
    # binomial one, shrunk towards Σ m² / n (one cluster's weight) by the k² / Σ k_c² clusters
    # holding failures (the successes are spread wider here).
    rng = np.random.default_rng(5)
    events, trials = _restarted(rng, 500, 0.3, 2.7)
    n, k = trials.sum(), events.sum()
    p = k / n
    sandwich = np.sum((events - p * trials) ** 2) / n**2
    measured = sandwich / (p * (1 - p) / n)
    informative = k**2 / np.sum(events**2)
    worst = np.sum(trials**2) / n
    assert measured < worst  # the pair count would have given more: (Σ k² − p² Σ m²) / (n p q)
    deff = (worst + informative * measured) / (1 + informative)
    assert cluster_proportion(events, trials).effective_trials == pytest.approx(n / deff, rel=1e-9)


@settings(max_examples=150, deadline=None)
@given(clustered_data(max_clusters=4, max_size=5), st.sampled_from(CONFIDENCE))
def test_the_upper_bound_holds_every_sub_configuration(data, confidence):
    # What makes it monotone: at least the Wilson bound of every configuration with at most as
    # many events in each cluster, each at its own design effect (all of them, enumerated).
    events, trials = data
    if trials.size < 2:
        return
    high = cluster_proportion(events, trials, confidence).ci_high
    n, squares, largest = trials.sum(), float(trials @ trials), trials.max()
    for sub in itertools.product(*(range(e + 1) for e in events)):
        e = np.array(sub, dtype=float)
        deff = design_effect_bound(e.sum(), e @ e, e @ trials, n, squares, largest)
        assert wilson(e.sum() / deff, n / deff, confidence)[1] <= high + 1e-12
