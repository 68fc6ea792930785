"""The attempt-share interval (sim.stats.clustered_proportion) against what must hold for any data:
more events never lower the upper bound, clusters of one attempt give the binomial (Wilson)
interval, and swapping the outcomes mirrors the interval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from sim.stats import cluster_proportion, clustered_proportion, wilson

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
