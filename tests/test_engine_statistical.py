"""The engine against closed forms, where the model reduces to something with a known answer.

Every tolerance is an interval derived from the sample size at a stated level: a test with k
checks gives each 0.001 / k (Bonferroni), so a correct engine fails a test with probability at most
0.001. Seeds are pinned, so a run is reproducible; the intervals say why the pinned result is not
luck. Each test takes well under a few seconds.
"""

from __future__ import annotations

import math

import numpy as np
from builders import (
    FIXED_S,
    HIGH_S,
    LOW_S,
    WAIT_FOR_SCALE_OUT,
    exponential,
    scenario,
)
from scipy import stats

from sim.engine import run_replication
from sim.runner import replication_seed, simulate

ALPHA = 0.001  # family-wise false-alarm rate of each test


def t_interval(values: np.ndarray, alpha: float) -> tuple[float, float]:
    """Two-sided (1 − alpha) Student-t interval for the mean of independent values."""
    values = np.asarray(values, dtype=float)
    n = values.size
    half = stats.t.ppf(1 - alpha / 2, n - 1) * values.std(ddof=1) / math.sqrt(n)
    return values.mean() - half, values.mean() + half


# -- (a) a uniform scale-up delay against the database-init timeout ------------------------------

# Two instances, one connection each, a connector of 1 instance × 1 set-up that may add one more.
# Instance 0's set-up (31 s) holds the only set-up slot for longer than any scale-up delay
# D ~ Uniform(10, 30), so instance 1's connection waits exactly until the new connector instance
# joins at D (the scale-out starts when it queues, at t = 0), then takes 31 + accept 0.5 +
# queries 0.25: db_init_s = D + 31.75 exactly. With timeout T = 49.75:
#   P(instance 1 times out) = P(D + 31.75 > T) = P(D > 18) = (30 − 18) / (30 − 10) = 0.6,
# while instance 0 (31.75 s) never does.
SCALE_OUT = WAIT_FOR_SCALE_OUT


def second_instance(sc, replications: int, seed: int) -> dict[str, np.ndarray]:
    res = simulate(sc, replications, seed, jobs=1, engine="reference")
    first = res.attempts["attempt"] == 1
    late = first & (res.attempts["instance"] == 1)
    early = first & (res.attempts["instance"] == 0)
    assert set(res.attempts["outcome"][early]) == {"ready"}
    return {k: v[late] for k, v in res.attempts.items()}


def test_p_timeout_equals_p_scale_up_delay_exceeds_the_remaining_time():
    timeout_s = 49.75
    p_exact = (HIGH_S - (timeout_s - FIXED_S)) / (HIGH_S - LOW_S)  # 0.6
    n = 4000  # each replication draws one delay: n independent Bernoulli trials
    late = second_instance(
        scenario({**SCALE_OUT, "startup.db_init_timeout_s": timeout_s}), n, seed=11
    )
    timeouts = int(np.sum(late["outcome"] == "timeout"))
    assert set(late["outcome"]) == {"ready", "timeout"}
    ci = stats.binomtest(timeouts, n, p_exact).proportion_ci(1 - ALPHA, method="exact")
    # 99.9 % Clopper–Pearson half-width at n = 4000 is about ±0.026: an engine that lost the
    # 0.75 s after the set-up (P(D > 18.75) = 0.5625) would fall outside it.
    assert ci.low <= p_exact <= ci.high, (timeouts / n, ci)


def test_db_init_is_the_uniform_delay_plus_the_fixed_part():
    # With no deadline in reach, db_init_s − 31.75 is the scale-up delay itself: Uniform(10, 30).
    late = second_instance(scenario(SCALE_OUT), 2000, seed=12)
    delay_s = late["db_init_s"] - FIXED_S
    assert delay_s.min() >= LOW_S and delay_s.max() <= HIGH_S
    ks = stats.kstest(delay_s, stats.uniform(LOW_S, HIGH_S - LOW_S).cdf)
    assert ks.pvalue > ALPHA, ks


# -- (b) the connector as an M/M/c queue against Erlang C -----------------------------------------

# Instances arrive as a Poisson process (rate λ), each opens one connection (min_size 1) at once
# (before_db 0); the connector has one instance and never scales (min = max), so it is c = 3
# servers with one FIFO queue; set-ups are Exponential(mean 1/μ); accept, queries and after-db
# take 0; slots, deadlines and connect timeouts are out of reach. Then db_init_s is the M/M/c
# sojourn time W = Wq + S of each arrival.
LAM, MU, C = 2.1, 1.0, 3  # offered load a = λ/μ = 2.1, utilisation ρ = 0.7
CUSTOMERS, WARM_UP = 1200, 200  # per replication; the first arrivals see an emptier queue


def erlang_c(c: int, a: float) -> float:
    """P(an arrival waits) in M/M/c with offered load a = λ/μ < c (Erlang's C formula)."""
    top = a**c / math.factorial(c) * c / (c - a)
    return top / (sum(a**k / math.factorial(k) for k in range(c)) + top)


def p_sojourn_exceeds(t: float) -> float:
    """P(W > t) for M/M/c FIFO: Wq is 0 w.p. 1 − C, else Exponential(θ = cμ − λ), plus S."""
    p_wait, theta = erlang_c(C, LAM / MU), C * MU - LAM
    hypo = (theta * math.exp(-MU * t) - MU * math.exp(-theta * t)) / (theta - MU)
    return (1 - p_wait) * math.exp(-MU * t) + p_wait * hypo


def test_erlang_c_formula_by_hand():
    # c = 2, a = 1: top = 1/2 · 2/1 = 1; sum = 1 + 1 = 2 → C = 1/3 (the textbook value).
    assert math.isclose(erlang_c(2, 1.0), 1 / 3)
    assert math.isclose(p_sojourn_exceeds(0.0), 1.0)


def test_connector_is_an_mmc_queue():
    sc = scenario(
        {
            "horizon_s": 1e7,
            "fleet.instances": CUSTOMERS,
            "fleet.arrival": "poisson",
            "fleet.rate_per_s": LAM,
            "connector.setups_per_instance": C,
            "connector.setup_s": exponential(1 / MU),
            "startup.db_init_timeout_s": 1e6,
            "pool.connect_timeout_s": 1e6,
        }
    )
    t_s = 2.0
    mean_w, frac_over = [], []
    for i in range(60):  # replications are independent batches: their means are i.i.d.
        rep = run_replication(sc, replication_seed(5, i)).attempts
        order = np.argsort(rep["instance"])  # instance index = arrival order
        w = np.asarray(rep["db_init_s"])[order][WARM_UP:]
        mean_w.append(w.mean())
        frac_over.append(np.mean(w > t_s))
    w_exact = erlang_c(C, LAM / MU) / (C * MU - LAM) + 1 / MU  # E[Wq] + E[S] = 1.547
    low, high = t_interval(mean_w, ALPHA / 2)
    assert low <= w_exact <= high, (np.mean(mean_w), low, high, w_exact)
    low, high = t_interval(frac_over, ALPHA / 2)
    assert low <= p_sojourn_exceeds(t_s) <= high, (np.mean(frac_over), low, high)
