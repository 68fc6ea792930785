"""The fast engine (sim.fast) against the readable one (sim.engine), which stays the truth.

Both engines draw the same numbers (sim.streams), so they write the same records for every
scenario: tests/test_engines_agree.py checks that on random scenarios over every field. Here, the
hand-picked constant cases (no draw at all: the strongest check of the order of simultaneous
events), and a slower backstop in distribution with different seeds per engine: each figure's
difference against its standard error, cluster-robust over replications, at a tolerance of 4.5
standard errors (about 1 in 150,000 per comparison by chance); and every kind of draw against
numpy's own sampler."""

from __future__ import annotations

import math

import numpy as np
import pytest
from builders import const, scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import fast
from sim.engine import run_replication
from sim.engines import choose, unsupported
from sim.errors import UsageError
from sim.records import ATTEMPT_COLUMNS
from sim.runner import evaluate, replication_seed, run_chunk
from sim.scenario import builtin_names, resolve

Z = 4.5


def reference_columns(sc, seed: int, indices: range) -> tuple[dict, dict]:
    attempts, fleet = run_chunk(sc, seed, indices, "reference")
    return {k: np.asarray(v) for k, v in attempts.items()}, {
        k: np.asarray(v) for k, v in fleet.items()
    }


def assert_same_records(sc, replications: int = 2) -> None:
    ref_a, ref_f = reference_columns(sc, 0, range(replications))
    fast_a, fast_f = fast.run_chunk(sc, 0, range(replications))
    assert len(ref_a["outcome"]) == len(fast_a["outcome"])
    for key in ("replication", *ATTEMPT_COLUMNS):
        np.testing.assert_array_equal(ref_a[key], fast_a[key], err_msg=key)  # NaN == NaN
    for key, values in ref_f.items():
        assert values.tolist() == fast_f[key].tolist(), key


# -- record for record, constant durations -------------------------------------------------------

CASES = {
    "queue and scale-out": {
        "fleet.instances": 12,
        "pool.min_size": 3,
        "pool.held_when_ready": 2,
        "startup.before_db_s": const(1.0),
        "connector.setups_per_instance": 4,
        "connector.max_instances": 3,
        "connector.setup_s": const(2.0),
        "connector.scale_up_delay_s": const(5.0),
        "database.accept_s": const(0.5),
        "startup.init_queries_s": const(0.25),
        "startup.after_db_s": const(1.0),
    },
    "rejections, retries, restarts": {
        "fleet.instances": 8,
        "pool.min_size": 4,
        "pool.held_when_ready": 4,
        "pool.retry_backoff_s": 1.5,
        "startup.db_init_timeout_s": 6.0,
        "database.max_connections": 13,
        "database.accept_s": const(0.5),
        "connector.setup_s": const(0.25),
        "restart.policy": "exponential",
        "restart.initial_backoff_s": 2.0,
        "restart.max_restarts": 4,
        "startup.after_db_s": const(100.0),
    },
    "gang allocation (hold)": {
        "fleet.instances": 10,
        "pool.min_size": 3,
        "pool.held_when_ready": 3,
        "pool.on_failure": "hold",
        "pool.retry_backoff_s": 2.0,
        "pool.connect_timeout_s": 3.0,
        "startup.db_init_timeout_s": 9.0,
        "database.max_connections": 17,
        "connector.setups_per_instance": 5,
        "connector.setup_s": const(1.0),
        "database.accept_s": const(0.5),
        "restart.policy": "fixed",
        "restart.initial_backoff_s": 4.0,
        "restart.max_restarts": 3,
        "restart.exit_release_s": 1.5,
    },
    "no retry: errors and rejections": {
        "fleet.instances": 6,
        "pool.min_size": 2,
        "pool.connect_timeout_s": 1.0,
        "connector.setups_per_instance": 3,
        "connector.setup_s": const(0.75),
        "database.max_connections": 7,
        "restart.policy": "fixed",
        "restart.initial_backoff_s": 0.5,
        "restart.max_restarts": 6,
    },
    "waves and the horizon": {
        "horizon_s": 40.0,
        "startup.db_init_timeout_s": 5.0,
        "fleet.instances": 9,
        "fleet.arrival": "waves",
        "fleet.waves": [{"at_s": 0.0, "count": 4}, {"at_s": 12.5, "count": 5}],
        "pool.min_size": 2,
        "connector.setups_per_instance": 2,
        "connector.setup_s": const(3.0),
        "restart.policy": "exponential",
        "restart.initial_backoff_s": 8.0,
    },
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_constant_scenarios_give_the_same_records(case):
    assert_same_records(scenario(CASES[case]))


@pytest.mark.parametrize("start", fast.POOL_STARTS)
def test_every_pool_start_gives_the_same_records(start):
    sc = scenario(
        {
            **CASES["rejections, retries, restarts"],
            "pool.start": start,
            "pool.workers": 3,
            "pool.min_size": 5,
            "pool.held_when_ready": 3,
        }
    )
    assert_same_records(sc)


def test_cloud_sql_quota_gives_the_same_records():
    sc = scenario(
        {
            "fleet.instances": 30,
            "pool.min_size": 2,
            "cloudsql.enabled": True,
            "cloudsql.quota_per_minute": 25,
            "cloudsql.call_s": const(0.5),
            "startup.db_init_timeout_s": 70.0,
            "restart.policy": "fixed",
            "restart.initial_backoff_s": 5.0,
            "restart.max_restarts": 2,
        }
    )
    assert_same_records(sc)


HALVES = st.integers(0, 12).map(lambda k: k / 2)  # binary fractions: exact float sums


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    instances=st.integers(1, 12),
    min_size=st.integers(0, 4),
    held=st.integers(0, 4),
    start=st.sampled_from(fast.POOL_STARTS),
    on_failure=st.sampled_from(["close", "hold"]),
    retry=st.sampled_from([0.0, 0.5, 2.0]),
    connect=st.sampled_from([0.5, 2.0, 1000.0]),
    timeout=st.sampled_from([1.0, 4.0, 9.5]),
    setups=st.integers(1, 6),
    cx_max=st.integers(1, 3),
    slots=st.integers(1, 30),
    setup=HALVES,
    accept=HALVES,
    before=HALVES,
    scale=HALVES,
    policy=st.sampled_from(["none", "fixed", "exponential"]),
    release=st.sampled_from([0.0, 1.5]),
)
def test_random_constant_scenarios_give_the_same_records(
    instances,
    min_size,
    held,
    start,
    on_failure,
    retry,
    connect,
    timeout,
    setups,
    cx_max,
    slots,
    setup,
    accept,
    before,
    scale,
    policy,
    release,
):
    sc = scenario(
        {
            "horizon_s": 60.0,
            "fleet.instances": instances,
            "pool.min_size": min_size,
            "pool.held_when_ready": held,
            "pool.start": start,
            "pool.on_failure": on_failure,
            "pool.retry_backoff_s": retry,
            "pool.connect_timeout_s": connect,
            "startup.db_init_timeout_s": timeout,
            "startup.before_db_s": const(before),
            "connector.setups_per_instance": setups,
            "connector.max_instances": cx_max,
            "connector.setup_s": const(setup),
            "connector.scale_up_delay_s": const(scale),
            "database.max_connections": slots,
            "database.accept_s": const(accept),
            "restart.policy": policy,
            "restart.initial_backoff_s": 2.0,
            "restart.max_restarts": 3,
            "restart.exit_release_s": release,
        }
    )
    assert_same_records(sc, replications=1)


# -- in distribution, random durations -------------------------------------------------------------


def _ratio_z(a1, n1, a2, n2) -> float:
    """z of the difference of two ratios of per-replication sums (events ÷ trials), with the
    cluster-robust (delta-method) variance of each."""

    def est(a, n):
        r = a.sum() / n.sum()
        resid = a - r * n
        var = len(a) / (len(a) - 1) * np.sum(resid**2) / n.sum() ** 2
        return r, var

    (r1, v1), (r2, v2) = est(a1, n1), est(a2, n2)
    return 0.0 if v1 + v2 == 0 else abs(r1 - r2) / math.sqrt(v1 + v2)


def _per_replication(res, outcome_is: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    rep = res.attempts["replication"]
    index = np.searchsorted(res.fleet["replication"], rep)
    size = len(res.fleet["replication"])
    trials = np.bincount(index, minlength=size).astype(float)
    if outcome_is is None:
        return np.bincount(index, res.attempts["attempt"] == 1, minlength=size), trials
    hits = res.attempts["outcome"] == outcome_is
    return np.bincount(index, hits, minlength=size), trials


def _mean_z(x1, x2) -> float:
    diff = abs(np.mean(x1) - np.mean(x2))
    if np.ptp(x1) == 0 and np.ptp(x2) == 0:  # both constant (e.g. the peak pinned at the limit)
        return 0.0 if diff <= 1e-12 * max(1.0, abs(np.mean(x1))) else math.inf
    se = math.sqrt(np.var(x1, ddof=1) / len(x1) + np.var(x2, ddof=1) / len(x2))
    return diff / se


DISTRIBUTIONS = [
    {"dist": "uniform", "low": 1.0, "high": 3.0},
    {"dist": "exponential", "mean": 0.5},
    {"dist": "lognormal", "median": 0.05, "sigma": 0.8},
    {"dist": "gamma", "shape": 0.6, "scale": 2.0},
    {"dist": "gamma", "shape": 3.0, "scale": 0.2},
    {"dist": "weibull", "shape": 0.7, "scale": 1.5},
    {"dist": "weibull", "shape": 2.5, "scale": 0.3},
    {"dist": "empirical", "values": [0.1, 0.1, 0.4, 2.0, 7.5]},
]


@pytest.mark.parametrize("spec", DISTRIBUTIONS, ids=lambda d: f"{d['dist']}-{list(d.values())[1]}")
def test_every_distribution_draws_as_numpy_does(spec):
    """Each kind `startsim calibrate` can write draws, in the kernel, what numpy's sampler of that
    distribution draws (a Weibull fit once made the fast engine refuse the scenario with a
    traceback); the kernel's blocks of draws (``fill``) are the one-at-a-time draws."""
    from pydantic import TypeAdapter
    from scipy.stats import ks_2samp

    from sim.distributions import Distribution
    from sim.fast.draws import draw, fill, pack, stream_state

    dist = TypeAdapter(Distribution).validate_python(spec)
    kinds, params, offsets, values = pack([dist])
    state = stream_state(np.uint64(12345), 0)
    n, block = 20_000, 32
    room = np.zeros(values.size + 2 * block)
    room[: values.size] = values
    mine = np.empty(n)
    for k in range(0, n, block):
        fill(kinds[0], *params[0], room, *offsets[0], state, k, values.size, block)
        mine[k : k + block] = room[values.size : values.size + block]
    one = np.array([draw(kinds[0], *params[0], values, *offsets[0], state, k) for k in range(n)])
    np.testing.assert_allclose(mine, one, rtol=1e-14, atol=0)
    numpy = dist.sample(np.random.default_rng(1), n)
    assert ks_2samp(mine, numpy).pvalue > 1e-5


def test_the_kernels_exp_is_the_librarys_to_the_last_place():
    """Lognormal draws use an exp of plain arithmetic (so a block of them is computed several at
    a time): within one unit in the last place of numpy's over the whole range, inf past the
    largest float, 0 below the smallest."""
    from sim.fast import draws

    rng = np.random.default_rng(0)
    ys = np.concatenate([rng.uniform(-30, 30, 200_000), rng.uniform(-745, 709.78, 200_000)])
    ys = np.concatenate([ys, [0.0, -0.0, 1e-300, -1e-300, 709.78, -708.4, 1.0, -1.0]])
    mine = np.array([draws.exp(y) for y in ys])
    assert np.all(np.abs(mine - np.exp(ys)) <= 1.01 * np.spacing(np.exp(ys)))
    assert [draws.exp(y) for y in (709.79, 800.0, np.inf)] == [np.inf] * 3
    assert [draws.exp(y) for y in (-745.2, -1000.0, -np.inf)] == [0.0] * 3


def test_a_weibull_scenario_runs_on_both_engines():
    sc = scenario(
        {
            "fleet.instances": 10,
            "startup.before_db_s": {"dist": "weibull", "shape": 1.5, "scale": 2.0},
            "database.accept_s": {"dist": "weibull", "shape": 0.9, "scale": 0.01},
        }
    )
    assert unsupported(sc) is None
    ref = evaluate(sc, 300, 1, engine="reference")
    fst = evaluate(sc, 300, 2, engine="fast")
    a1, n1 = _per_replication(ref, "ready")
    a2, n2 = _per_replication(fst, "ready")
    assert _ratio_z(a1, n1, a2, n2) < Z


REPLICATIONS = {"eager-pool-storm": 200, "gang-allocation": 200}


def assert_agree_in_distribution(sc, n: int) -> None:
    """The readable engine at ``n`` replications and the fast one at 4n: P(timeout), P(ready),
    first-start success, instances ready, attempts (restarts), peak connections, never-ready share
    and the fleet's time to ready, each within Z standard errors."""
    ref = evaluate(sc, n, 1, engine="reference")
    fst = evaluate(sc, 4 * n, 2, engine="fast")
    for outcome in ("timeout", "ready"):
        a1, n1 = _per_replication(ref, outcome)
        a2, n2 = _per_replication(fst, outcome)
        assert _ratio_z(a1, n1, a2, n2) < Z, outcome
    instances = sc.fleet.instances
    for res in (ref, fst):  # first start succeeded, per replication
        first_ok = (res.attempts["attempt"] == 1) & (res.attempts["outcome"] == "ready")
        index = np.searchsorted(res.fleet["replication"], res.attempts["replication"])
        res.fleet["first_ok"] = np.bincount(index, first_ok, len(res.fleet["replication"]))
    for key in ("first_ok", "instances_ready", "attempts", "peak_db_connections"):
        assert _mean_z(ref.fleet[key] / instances, fst.fleet[key] / instances) < Z, key
    ready1, ready2 = ref.fleet["fleet_ready_s"], fst.fleet["fleet_ready_s"]
    assert _ratio_z(np.isinf(ready1), np.ones(n), np.isinf(ready2), np.ones(4 * n)) < Z
    finite1, finite2 = ready1[np.isfinite(ready1)], ready2[np.isfinite(ready2)]
    if len(finite1) > 20 and len(finite2) > 20:
        from scipy.stats import ks_2samp

        assert ks_2samp(finite1, finite2).pvalue > 1e-5  # quantiles of fleet time-to-ready


@pytest.mark.slow
@pytest.mark.parametrize("name", builtin_names())
def test_shipped_scenarios_agree_in_distribution(name):
    assert_agree_in_distribution(resolve(name), REPLICATIONS.get(name, 400))


def random_scenario(k: int):
    """Scenario ``k`` of a fixed random set: every pool start, arrival pattern, failure policy,
    jitter and distribution kind turns up, at sizes where timeouts, rejections and restarts all
    happen."""
    rng = np.random.default_rng(20261204 + k)

    def pick(options):
        return options[int(rng.integers(len(options)))]

    def duration(median: float) -> dict:
        kind = pick(["uniform", "exponential", "lognormal", "gamma", "weibull", "empirical"])
        if kind == "uniform":
            return {"dist": kind, "low": 0.5 * median, "high": 1.5 * median}
        if kind == "exponential":
            return {"dist": kind, "mean": median}
        if kind == "lognormal":
            return {"dist": kind, "median": median, "sigma": float(rng.uniform(0.2, 0.9))}
        if kind == "gamma":
            return {"dist": kind, "shape": float(rng.uniform(0.5, 4.0)), "scale": median / 2}
        if kind == "weibull":
            return {"dist": kind, "shape": float(rng.uniform(0.7, 3.0)), "scale": median}
        return {"dist": kind, "values": [round(median * v, 4) for v in rng.uniform(0.2, 3, 5)]}

    instances, min_size = int(rng.integers(5, 25)), int(rng.integers(1, 5))
    arrival = pick(["burst", "uniform", "poisson"])
    return scenario(
        {
            "horizon_s": 240.0,
            "fleet.instances": instances,
            "fleet.arrival": arrival,
            "fleet.window_s": 10.0,
            "fleet.rate_per_s": 2.0,
            "pool.min_size": min_size,
            "pool.held_when_ready": int(rng.integers(1, min_size + 1)),
            "pool.start": pick(list(fast.POOL_STARTS)),
            "pool.workers": 2,
            "pool.on_failure": pick(["close", "hold"]),
            "pool.retry_backoff_s": pick([0.0, 1.0]),
            "pool.retry_jitter": pick([0.0, 0.5]),
            "pool.connect_timeout_s": pick([3.0, 60.0]),
            "startup.db_init_timeout_s": float(rng.uniform(3.0, 10.0)),
            "startup.before_db_s": duration(1.0),
            "startup.init_queries_s": duration(0.1),
            "connector.setups_per_instance": int(rng.integers(1, 4)),
            "connector.max_instances": int(rng.integers(1, 4)),
            "connector.setup_s": duration(float(rng.uniform(0.2, 1.0))),
            "connector.scale_up_delay_s": duration(8.0),
            "database.max_connections": int(instances * min_size * rng.uniform(0.3, 1.2)) + 1,
            "database.accept_s": duration(0.02),
            "restart.policy": pick(["fixed", "exponential"]),
            "restart.initial_backoff_s": float(rng.uniform(1.0, 8.0)),
            "restart.max_restarts": 3,
            "restart.jitter": pick([0.0, 0.3, "full"]),
        }
    )


@pytest.mark.slow
@pytest.mark.parametrize("k", range(8))
def test_random_scenarios_agree_in_distribution(k):
    assert_agree_in_distribution(random_scenario(k), 300)


# -- choosing ------------------------------------------------------------------------------------


def test_auto_takes_the_fast_engine_for_large_runs_only():
    sc = resolve("staging-incident")
    assert choose("auto", sc, 1000) == "fast"
    assert choose("auto", sc, 2) == "reference"
    assert choose("reference", sc, 10**6) == "reference"
    assert unsupported(sc) is None


def test_traffic_after_ready_takes_the_fast_engine_too():
    # capacity-storm: no [stack] or [platform], which would give pool.growth themselves.
    sc = resolve("capacity-storm").with_overrides(
        {"traffic.rate_per_s": 5.0, "pool.growth": "background", "pool.timeout_s": 2.0}
    )
    assert unsupported(sc) is None
    assert choose("auto", sc, 1000) == "fast"
    trace = sc.with_overrides({"traffic.rate_per_s": 0.0, "traffic.trace_s": [1.0, 2.0]})
    assert unsupported(trace) is None


def test_an_unknown_engine_is_refused_by_name():
    with pytest.raises(UsageError) as err:
        choose("quick", resolve("staging-incident"), 10)
    assert err.value.option == "engine"
    assert err.value.value == "quick"


def test_same_seed_same_numbers_whatever_the_chunks():
    sc = resolve("capacity-storm")
    whole_a, whole_f = fast.run_chunk(sc, 7, range(0, 6))
    parts = [fast.run_chunk(sc, 7, r) for r in (range(0, 2), range(2, 6))]
    for key, values in whole_a.items():
        joined = np.concatenate([p[0][key] for p in parts])
        np.testing.assert_array_equal(values, joined, err_msg=key)
    assert (
        whole_f["fleet_ready_s"].tolist()
        == np.concatenate([p[1]["fleet_ready_s"] for p in parts]).tolist()
    )


def test_buffers_grow_and_the_replication_runs_again():
    # A first guess far too small for this replication: every buffer overflows and grows, the
    # requests' records too (traffic after ready).
    sc = scenario({**CASES["gang allocation (hold)"], "traffic.rate_per_s": 2.0})
    small = {"conns": 1, "heap": 1, "rings": 1, "queue": 1, "records": 1, "requests": 1}
    buf = fast.Buffers(sc, 0, None, small)
    from sim.fast import layout
    from sim.fast.kernel import run_block

    fleet = np.zeros((len(layout.FLEET), 1))
    first, grown = 0, 0
    while first < 1:
        first, code = run_block(buf.m, buf.x, buf.base, 0, 1, fleet, 0)
        if code:
            buf, grown = buf.grown(code), grown + 1
    assert grown >= 6
    ref = run_replication(sc, replication_seed(0, 0))
    assert buf.records()[0][:, layout.R_ATTEMPT].tolist() == ref.attempts["attempt"]
    arrive_s = buf.requests()[1][:, layout.Q_ARRIVE].tolist()
    assert len(arrive_s) > 100
    assert arrive_s == ref.requests["arrive_s"]


@pytest.mark.parametrize("reach", [2.0**-10, 1.0, 2.0**10])
def test_the_event_queue_gives_events_back_by_time_then_scheduling_order(reach):
    """The kernel's queue (a calendar of buckets for events due soon, a heap for the rest) against
    a sorted list: times on a grid (many ties, some due at once, several in a bucket), a tenth far
    beyond the calendar's reach, and the bucket ring going round many times over."""
    import heapq

    from sim.fast import layout as L
    from sim.fast import queue as Q
    from sim.fast.kernel import reset

    sc = resolve("capacity-storm")
    buf = fast.Buffers(sc, 0, None, {**fast.first_sizes(sc, 1), "heap": 10_000})
    m, x = buf.m, buf.x
    reset(m, x, buf.base, 0)
    m[L.S_ARRIVED] = m[L.I_INSTANCES]  # no first starts waiting
    x[L.F_END] = np.inf
    x[L.F_INV_W] = m[L.L_NB] / reach
    width = reach / m[L.L_NB]
    rng = np.random.default_rng(5)
    pending, scheduled, calendar, heap = [], 0, 0, 0
    for step in range(10_000):
        for _ in range(rng.integers(0, 4) if step < 3000 else 0):
            far = 100 if rng.random() < 0.1 else 1
            t = x[L.T_NOW] + int(rng.integers(0, 12)) * reach / 8 * far
            t += int(rng.integers(0, 8)) * width / 4  # a bucket holds several times
            typ, key = int(rng.integers(0, 12)), m[L.S_SEQ] * L.E_SPAN
            Q.at(m, x, t, typ, scheduled, 0)
            heapq.heappush(pending, (t, key + typ, scheduled))
            scheduled += 1
        if not pending:
            if step >= 3000:
                break
            continue
        src, t, key, bucket = Q.earliest(m, x)
        calendar, heap = calendar + (src == 4), heap + (src == 5)
        typ, a, _ = Q.remove(m, x, src, bucket)
        x[L.T_NOW] = t
        assert (t, key, a) == heapq.heappop(pending)
        assert typ == key % L.E_SPAN
    assert not pending and m[L.S_CAL_N] == m[L.S_HEAP_N] == m[L.S_OVERFLOW] == 0
    assert calendar > 2000 and heap > 300  # both were used
    assert x[L.T_NOW] * x[L.F_INV_W] > 10 * m[L.L_NB]  # the buckets went round ten times


def test_every_model_field_is_known_to_the_fast_engine():
    # A field added to the model must be ported (and listed in sim.engines.FAST_FIELDS) or
    # scenarios that set it fall back to the readable engine; the shipped ones must all run fast.
    for name in builtin_names():
        assert unsupported(resolve(name)) is None, name


# -- without records: the counts carry the statistics ---------------------------------------------


@pytest.mark.parametrize(
    "name", ["staging-incident", "capacity-storm", "gang-allocation", "eager-pool-storm"]
)
@pytest.mark.parametrize("engine", ["fast", "reference"])
def test_a_run_without_records_gives_the_same_summary(name, engine):
    sc = resolve(name)
    full = evaluate(sc, 40, 3, engine=engine)
    light = evaluate(sc, 40, 3, engine=engine, records=False)
    assert light.attempts is None and light.engine == engine
    assert light.summary() == full.summary()
    for key, values in full.fleet.items():
        assert values.tolist() == light.fleet[key].tolist(), key


def test_without_records_the_record_room_holds_one_replication():
    sc = resolve("capacity-storm")
    buf, _ = fast.run_raw(sc, 0, range(500), keep=False)
    most = sc.fleet.instances * (sc.restart.restarts_allowed + 1)  # every attempt it can make
    assert buf.sizes["records"] == most  # never grown: a grown room reruns the replication
    assert buf.records()[0].shape[0] < 3 * sc.fleet.instances  # the last replication's only


def test_a_run_that_takes_over_the_last_runs_buffers_gives_what_fresh_ones_give(monkeypatch):
    sc = resolve("capacity-storm")
    shelf = fast.Shelf()
    monkeypatch.setattr(fast, "_shelf", shelf)
    fresh = fast.run_chunk(sc, 2, range(3, 9), records=False)[1]
    fast.run_chunk(sc, 1, range(20), records=False)  # leaves its buffers behind
    spare = shelf.spare
    again = fast.run_chunk(sc, 2, range(3, 9), records=False)[1]
    assert shelf.spare is spare  # taken over, not allocated
    for key, values in fresh.items():
        assert values.tolist() == again[key].tolist(), key
    other = sc.with_overrides({"fleet.instances": sc.fleet.instances + 1})
    fast.run_chunk(other, 2, range(1), records=False)
    assert shelf.spare is not spare  # another scenario: buffers of its own


def test_the_shelf_never_lends_one_buffer_to_two_threads():
    # Threads of a Dask worker take and put back at once; with a switch every microsecond a
    # check-then-take without the lock hands the same buffers to two of them within a few rounds.
    import sys
    import threading

    sc = resolve("staging-incident")
    sizes = fast.first_sizes(sc, 1, keep=False)
    shelf = fast.Shelf()
    shelf.put(fast.Buffers(sc, 0, None, sizes, keep=False))
    lent: set[int] = set()
    twice: list[int] = []
    start = threading.Barrier(8)

    def borrow() -> None:
        start.wait()
        for _ in range(2000):
            buf = shelf.take(sc, None, sizes) or fast.Buffers(sc, 0, None, sizes, keep=False)
            if id(buf) in lent:
                twice.append(id(buf))
            lent.add(id(buf))
            lent.discard(id(buf))
            shelf.put(buf)

    saved = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=borrow) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(saved)
    assert twice == []


def test_runs_in_threads_give_what_runs_one_after_another_give(monkeypatch):
    # The kernel runs without the GIL: runs in threads at once, each on buffers of its own or
    # taken off the shelf, give the numbers of the same runs made one after another.
    from concurrent.futures import ThreadPoolExecutor

    monkeypatch.setattr(fast, "_shelf", fast.Shelf())
    sc = resolve("staging-incident")
    jobs = [(seed, range(seed, seed + 3)) for seed in range(48)]

    def one(job):
        return fast.run_chunk(sc, job[0], job[1], records=False)[1]

    alone = [one(job) for job in jobs]
    with ThreadPoolExecutor(4) as ex:
        together = list(ex.map(one, jobs))
    for a, b in zip(alone, together, strict=True):
        for key, values in a.items():
            assert values.tolist() == b[key].tolist(), key


def test_the_kernel_lets_other_threads_run():
    # nogil: while one thread runs a long block of replications, this one keeps running.
    import threading
    import time

    sc = resolve("capacity-storm")  # a storm: each replication has a restart loop to run
    fast.run_chunk(sc, 0, range(1), records=False)  # compiled and loaded
    done = threading.Event()
    ticks = []

    def long_run():
        fast.run_chunk(sc, 0, range(20_000), records=False)
        done.set()

    worker = threading.Thread(target=long_run)
    began = time.perf_counter()
    worker.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    worker.join()
    took = time.perf_counter() - began
    gaps = np.diff([began, *ticks, time.perf_counter()])
    assert took > 0.2, took  # long enough to tell
    assert gaps.max() < took / 4, (gaps.max(), took)


def test_a_later_run_starts_with_the_room_an_earlier_one_needed(monkeypatch):
    """A 100,000-instance replication that outgrew its first room ran two or three times over;
    the next run of that fleet size in the process starts with the room that was needed."""
    sc = scenario({**CASES["gang allocation (hold)"], "fleet.instances": 9})
    fast._NEEDED.pop(9, None)
    tiny = {"conns": 1, "heap": 1, "rings": 1, "queue": 1, "records": 1, "requests": 0}
    with monkeypatch.context() as mp:
        mp.setattr(fast, "first_sizes", lambda *args, **kwargs: dict(tiny))
        grown, _ = fast.run_raw(sc, 0, range(3), keep=False)
    regions = ("conns", "heap", "rings", "queue")
    assert all(grown.sizes[k] > 1 for k in regions)
    again = fast.first_sizes(sc, 3, keep=False)
    assert all(again[k] >= grown.sizes[k] for k in regions)


def test_a_first_run_without_a_compiled_kernel_says_why_it_waits(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(fast.numba.config, "CACHE_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(fast, "_checked", False)
    fast._say_if_compiling()
    fast._say_if_compiling()  # once per process
    err = capsys.readouterr().err
    assert err.count("compiling the fast engine") == 1 and str(tmp_path / "empty") in err
    (tmp_path / "cached" / "sub").mkdir(parents=True)
    (tmp_path / "cached" / "sub" / "kernel.run_block-1.py311.nbi").write_bytes(b"")
    monkeypatch.setattr(fast.numba.config, "CACHE_DIR", str(tmp_path / "cached"))
    monkeypatch.setattr(fast, "_checked", False)
    fast._say_if_compiling()
    assert capsys.readouterr().err == ""


def test_the_cache_folder_is_keyed_by_every_module_the_kernel_is_compiled_from():
    # numba's cache notices a change of a function's own file only: a module of the kernel left
    # out of the key would let a kernel compiled from its old version load.
    import sys
    from pathlib import Path

    from sim.fast import kernel  # noqa: F401  (loads every module the kernel imports)

    sources = set(fast.kernel_sources())
    modules = [m for name, m in sys.modules.items() if name.startswith("sim.fast.")]
    assert {"sim.fast.layout", "sim.fast.queue", "sim.fast.handlers"} <= {
        m.__name__ for m in modules
    }
    assert {Path(m.__file__) for m in modules} <= sources
    assert Path(sys.modules["sim.streams"].__file__) in sources


def test_the_kernels_codes_name_the_vocabulary_once_each():
    # Outcomes and reasons by kernel code come from sim.records; pool starts from the scenario's
    # Literal, each the kernel constant of its name.
    from typing import get_args

    from sim.fast import layout as L
    from sim.records import OUTCOMES, Outcome, Reason
    from sim.scenario import Pool

    assert fast.OUTCOME_NAMES.tolist() == [str(o) for o in OUTCOMES]
    assert fast.OUTCOME_NAMES[L.READY] == Outcome.READY
    assert set(fast.REASON_NAMES.tolist()) <= {"", *Reason}
    assert get_args(Pool.model_fields["start"].annotation) == fast.POOL_STARTS
    codes = [fast._STARTS[name] for name in fast.POOL_STARTS]
    assert sorted(codes) == list(range(len(codes)))
    assert fast._STARTS["background"] == L.BACKGROUND
