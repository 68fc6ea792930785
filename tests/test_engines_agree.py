"""Both engines draw the same random numbers (sim.streams), so they must write the same records for
every scenario: random durations of every kind, jitter, arrivals, the Cloud SQL path, path faults,
restarts, traffic after ready (its requests' records too), Direct VPC egress.

The property test draws scenarios over every field of the model and compares the readable engine
(the truth) with the fast one, record for record, value for value. A difference is a bug in one of
them: docs/model.md says which.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import get_args

import numpy as np
import pytest
from builders import scenario
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sim import streams
from sim.engines import FAST_FIELDS, NOT_MODEL, run_one
from sim.fast import draws
from sim.records import REQUEST_COLUMNS
from sim.scenario import Restart, Scenario, builtin_names, resolve
from sim.streams import Tilt


def _fields(rep) -> tuple:
    return (
        rep.fleet_ready_s,
        rep.peak_db_connections,
        rep.connector_instances_end,
        rep.connection_attempts,
        rep.instances_ready,
        rep.traffic_connections,
        rep.connections_held_end,
    )


def assert_same_replication(sc: Scenario, seed: int, index: int = 0, tilt=None) -> None:
    ref = run_one(sc, seed, index, "reference", tilt=tilt)
    fst = run_one(sc, seed, index, "fast", tilt=tilt)
    for key, values in ref.attempts.items():
        # assert_array_equal: a failed attempt's ready_s is NaN in both, and NaN != NaN.
        np.testing.assert_array_equal(values, fst.attempts[key], err_msg=key)
    assert list(ref.requests) == list(fst.requests) == list(REQUEST_COLUMNS)
    for key, values in ref.requests.items():
        np.testing.assert_array_equal(values, fst.requests[key], err_msg=f"requests: {key}")
    assert _fields(ref) == _fields(fst)
    assert (ref.tilted, ref.tilt_draws, ref.tilt_sum) == (fst.tilted, fst.tilt_draws, fst.tilt_sum)


# -- the streams: Python and compiled, the same numbers ----------------------------------------


def test_the_compiled_hashing_is_the_pythons():
    rng = np.random.default_rng(0)
    for seed in (0, 1, 2**63 + 5):
        base = streams.seed_base(seed)
        for index in rng.integers(0, 2**40, 20).tolist():
            key = streams.replication_key(base, index)
            assert key == int(draws.replication_key(np.uint64(base), index))
            for role in range(len(streams.ROLES)):
                state = streams.stream_state(key, role)
                assert state == int(draws.stream_state(np.uint64(key), role))
                for k in (0, 1, 31, 32, 10**9):
                    assert streams.unit(state, k) == draws.unit(np.uint64(state), k)
    # The readable engine hashes its uniforms a block at a time: the same function over numpy words.
    for k0 in (0, 64, 2**40, 2**63 - 32):
        block = np.arange(k0, k0 + 64, dtype=np.uint64)
        assert streams.unit(state, block).tolist() == [
            streams.unit(state, k) for k in range(k0, k0 + 64)
        ]
    assert [streams.pow2(n) for n in (-1022, -538, 0, 1, 1023)] == [
        draws.pow2(n) for n in (-1022, -538, 0, 1, 1023)
    ]


@pytest.mark.parametrize(
    "spec",
    [
        (streams.UNIFORM, 1.0, 3.0),
        (streams.EXPONENTIAL, 0.5, 0.0),
        (streams.LOGNORMAL, 0.05, 0.8),
        (streams.LOGNORMAL, 3.0, 4.0),
        (streams.GAMMA, 0.3, 2.0),
        (streams.GAMMA, 3.0, 0.2),
        (streams.WEIBULL, 0.7, 1.5),
        (streams.WEIBULL, 2.5, 0.3),
        (streams.EMPIRICAL, 0.0, 0.0),
    ],
)
def test_every_kind_draws_the_same_doubles_in_both(spec):
    kind, a, b = spec
    values = (0.1, 0.1, 0.4, 2.0, 7.5)
    x = np.zeros(len(values) + 64)
    x[: len(values)] = values
    state = streams.stream_state(12345, 2)
    python = [streams.draw(kind, a, b, values, 0, 5, state, k) for k in range(4000)]
    one = [draws.draw(kind, a, b, x, 0, 5, np.uint64(state), k) for k in range(4000)]
    assert python == one
    for k in range(0, 4000, 32):  # the kernel's blocks of draws
        draws.fill(kind, a, b, x, 0, 5, np.uint64(state), k, 5, 32)
        assert x[5:37].tolist() == python[k : k + 32]


def test_the_shared_exp_and_normal_quantile_are_the_same_doubles():
    rng = np.random.default_rng(1)
    ys = [*rng.uniform(-750, 715, 50000).tolist(), 0.0, -0.0, 709.78, -745.1, math.inf]
    assert [streams.exp(y) for y in ys] == [draws.exp(y) for y in ys]
    us = [*rng.uniform(0, 1, 50000).tolist(), 1e-300, 0.02425, 1 - 1e-16]
    assert [streams.ndtri(u) for u in us] == [draws.ndtri(u) for u in us]


# -- whole replications --------------------------------------------------------------------------


@pytest.mark.parametrize("name", builtin_names())
def test_shipped_scenarios_give_the_same_records(name):
    for index in range(3):
        assert_same_replication(resolve(name), 11, index)


def _positive(low: float, high: float):
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def durations(median: float):
    """Every kind of distribution, around ``median`` seconds."""
    m = median
    return st.one_of(
        _positive(0.0, 3 * m).map(lambda v: {"dist": "constant", "value": v}),
        st.tuples(_positive(0.0, m), _positive(0.0, 2 * m)).map(
            lambda t: {"dist": "uniform", "low": t[0], "high": t[0] + t[1]}
        ),
        _positive(m / 10, 2 * m).map(lambda v: {"dist": "exponential", "mean": v}),
        st.tuples(_positive(m / 10, 2 * m), _positive(0.0, 1.5)).map(
            lambda t: {"dist": "lognormal", "median": t[0], "sigma": t[1]}
        ),
        st.tuples(_positive(0.2, 5.0), _positive(m / 10, m)).map(
            lambda t: {"dist": "gamma", "shape": t[0], "scale": t[1]}
        ),
        st.tuples(_positive(0.5, 4.0), _positive(m / 10, 2 * m)).map(
            lambda t: {"dist": "weibull", "shape": t[0], "scale": t[1]}
        ),
        st.lists(_positive(0.0, 3 * m), min_size=1, max_size=6).map(
            lambda v: {"dist": "empirical", "values": v}
        ),
    )


JITTER = st.one_of(st.just(0.0), _positive(0.01, 1.0), st.just("full"))


@st.composite
def phase_lists(draw) -> list[dict]:
    """Start-up phases (docs/model.md): some before database init, at least one in it, at most
    one of them the pool start; every kind of connection order, bound, failure and retry."""
    before, inside = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    pool_at = draw(st.one_of(st.none(), st.integers(before, before + inside - 1)))
    phases = []
    for i in range(before + inside):
        deadline = draw(st.one_of(st.none(), _positive(0.1, 20.0)))
        retry = draw(st.one_of(st.just(0.0), _positive(0.1, 3.0)))
        phase = {
            "name": f"p{i}",
            "db_init": i >= before,
            "connections": 0 if i == pool_at else draw(st.integers(0, 3)),
            "order": draw(st.sampled_from(["sequential", "concurrent"])),
            "pool": i == pool_at,
            "keep": draw(st.booleans()),
            "duration_s": draw(durations(0.3)),
            "on_failure": draw(st.sampled_from(["exit", "continue"])),
            # Before database init a retry needs a bound of the phase's own.
            "retry_backoff_s": retry if i >= before or deadline is not None else 0.0,
            "retry_jitter": draw(JITTER),
        }
        if deadline is not None:
            phase["deadline_s"] = deadline
        phases.append(phase)
    return phases


@st.composite
def traffic(draw, horizon_s: float) -> dict:
    """Traffic after ready (docs/model.md): off, or requests by the fleet's rate, each ready
    instance's or a recorded trace (some of it past the horizon), at rates where pools grow,
    queue, time out and meet 53300s."""
    source = draw(st.sampled_from(["off", "rate_per_s", "rate_per_instance_per_s", "trace_s"]))
    fields = {
        "traffic.rate_per_s": 0.0,
        "traffic.rate_per_instance_per_s": 0.0,
        "traffic.trace_s": [],
        "traffic.query_s": draw(durations(0.2)),
        "traffic.window_s": draw(_positive(0.1, 120.0)),
    }
    if source == "rate_per_s":
        fields["traffic.rate_per_s"] = draw(_positive(0.05, 40.0))
    elif source == "rate_per_instance_per_s":
        fields["traffic.rate_per_instance_per_s"] = draw(_positive(0.05, 10.0))
    elif source == "trace_s":
        times = draw(st.lists(_positive(0.0, 1.2 * horizon_s), min_size=1, max_size=300))
        # Bursts: several requests at the same instant, as a trace rounded to the millisecond has.
        fields["traffic.trace_s"] = sorted(times + times[: draw(st.integers(0, len(times)))])
    return fields


AMOUNTS = st.one_of(st.integers(0, 4), st.integers(0, 100).map(lambda p: f"{p}%"))


@st.composite
def rollout(draw, instances: int, arrival: str, held: int, free: int) -> dict:
    """A roll-out (docs/model.md): none (most often), Kubernetes' (on a burst) or Cloud Run's,
    with old instances whose slots fit the free ones (often filling most of them)."""
    kinds = ["none", "none", "cloud_run"] + (["kubernetes"] * 2 if arrival == "burst" else [])
    kind = draw(st.sampled_from(kinds))
    surge, unavailable = draw(AMOUNTS), draw(AMOUNTS)
    fields = {
        "rollout.kind": kind,
        "rollout.old_instances": draw(
            st.one_of(st.none(), st.integers(0, min(free // held, 16) if held else 16))
        ),
        "rollout.max_surge": surge,
        "rollout.max_unavailable": unavailable,
        "rollout.steps": draw(
            st.lists(_positive(1.0, 99.0), max_size=3).map(lambda s: [*sorted(set(s)), 100.0])
        ),
        "rollout.old_linger_s": draw(st.one_of(st.just(0.0), _positive(0.1, 10.0))),
    }
    if fields["rollout.old_instances"] is None and instances * held > free:
        fields["rollout.old_instances"] = free // held  # R old ones would not fit
    if kind == "kubernetes" and surge in (0, "0%") and unavailable in (0, "0%"):
        fields["rollout.max_surge"] = 1  # both given as 0: refused, as Kubernetes refuses it
    return fields


@st.composite
def scenarios(draw) -> Scenario:
    """A scenario over every field the model reads, at sizes where queues, rejections, timeouts,
    retries and restarts all happen."""
    instances = draw(st.integers(1, 14))
    arrival = draw(st.sampled_from(["burst", "uniform", "poisson", "waves"]))
    waves = []
    if arrival == "waves":
        cut = draw(st.integers(0, instances))
        at_s = draw(_positive(0.0, 30.0))
        waves = [{"at_s": 0.0, "count": cut}, {"at_s": at_s, "count": instances - cut}]
        waves = [w for w in waves if w["count"]]
    min_size = draw(st.integers(0, 4))
    max_size = draw(st.integers(max(min_size, 1), 6))
    cx_min = draw(st.integers(1, 3))
    other = draw(st.integers(0, 3))
    reserved = draw(st.integers(0, 3))
    held = draw(st.integers(0, max_size))
    free = draw(st.integers(1, 40))
    # Warm instances' held slots at t = 0 fit the free slots (more is refused), often filling
    # most of them so that the cold starts meet 53300s they would not meet without them.
    warm = draw(st.integers(0, min(free // held, 6) if held else 3))
    path_from = draw(st.one_of(st.just(0.0), _positive(0.0, 60.0)))
    path_until = draw(st.one_of(st.none(), _positive(0.1, 100.0).map(lambda d: path_from + d)))
    horizon_s = draw(_positive(30.0, 200.0))
    # Direct VPC egress: a subnet that holds the warm instances, and from none to all the others.
    per_instance = draw(st.integers(1, 3))
    subnet = per_instance * draw(st.integers(warm, warm + instances + 1)) + draw(st.integers(0, 2))
    roll = draw(rollout(instances, arrival, held, free))
    if roll["rollout.kind"] != "none":  # not modelled with warm instances nor traffic yet
        warm = 0
    fields = {
        "horizon_s": horizon_s,
        "fleet.instances": instances,
        "fleet.arrival": arrival,
        "fleet.window_s": draw(_positive(0.0, 30.0)),
        "fleet.rate_per_s": draw(_positive(0.1, 5.0)),
        "fleet.waves": waves,
        "fleet.warm_instances": warm,
        "startup.before_db_s": draw(durations(1.0)),
        "startup.db_init_timeout_s": draw(_positive(0.5, 30.0)),
        "startup.init_queries_s": draw(durations(0.1)),
        "startup.after_db_s": draw(durations(1.0)),
        "startup.phases": draw(st.one_of(st.just([]), phase_lists())),
        "pool.min_size": min_size,
        "pool.max_size": max_size,
        "pool.held_when_ready": held,
        "pool.connect_timeout_s": draw(_positive(0.1, 20.0)),
        "pool.on_failure": draw(st.sampled_from(["close", "hold"])),
        "pool.retry_backoff_s": draw(st.one_of(st.just(0.0), _positive(0.1, 3.0))),
        "pool.retry_jitter": draw(JITTER),
        "pool.start": draw(st.sampled_from(["asyncpg", "concurrent", "background", "workers"])),
        "pool.workers": draw(st.integers(1, 4)),
        "pool.timeout_s": draw(_positive(0.01, 10.0)),
        "pool.growth": draw(st.sampled_from(["per_waiter", "background"])),
        "connector.min_instances": cx_min,
        "connector.max_instances": draw(st.integers(cx_min, 4)),
        "connector.setups_per_instance": draw(st.integers(1, 5)),
        "connector.setup_s": draw(durations(0.5)),
        "connector.scale_up_delay_s": draw(durations(5.0)),
        "database.max_connections": other + reserved + free,
        "database.reserved_connections": reserved,
        "database.other_connections": other,
        "database.accept_s": draw(durations(0.05)),
        "restart.preset": draw(
            st.sampled_from(get_args(Restart.model_fields["preset"].annotation))
        ),
        "restart.policy": draw(st.sampled_from(["none", "fixed", "exponential"])),
        "restart.initial_backoff_s": draw(_positive(0.0, 10.0)),
        "restart.max_backoff_s": draw(_positive(0.0, 60.0)),
        "restart.multiplier": draw(_positive(1.0, 3.0)),
        "restart.jitter": draw(JITTER),
        "restart.max_restarts": draw(st.integers(0, 4)),
        "restart.exit_release_s": draw(st.one_of(st.just(0.0), _positive(0.1, 5.0))),
        "cloudsql.enabled": draw(st.booleans()),
        "cloudsql.calls_per_refresh": draw(st.integers(1, 3)),
        "cloudsql.quota_per_minute": draw(st.integers(1, 30)),
        "cloudsql.call_s": draw(durations(0.3)),
        "cloudsql.refresh_burst": draw(st.integers(1, 3)),
        "cloudsql.refresh_interval_s": draw(_positive(0.5, 40.0)),
        "path.fault": draw(st.sampled_from(["none", "closed", "reset", "hung"])),
        "path.p_fault": draw(st.one_of(st.just(1.0), _positive(0.01, 1.0))),
        "path.from_s": path_from,
        "path.until_s": path_until,
        "path.fail_after_s": draw(durations(0.5)),
        "egress.kind": draw(st.sampled_from(["connector", "direct"])),
        "egress.ready_s": draw(durations(2.0)),
        "egress.subnet_addresses": max(subnet, 1),
        "egress.addresses_per_instance": per_instance,
        **draw(traffic(horizon_s)),
        **roll,
    }
    if roll["rollout.kind"] != "none":
        fields.update(
            {
                "traffic.rate_per_s": 0.0,
                "traffic.rate_per_instance_per_s": 0.0,
                "traffic.trace_s": [],
            }
        )
    return scenario(fields)


# Sections of the model the fast engine does not have yet: a scenario that sets one runs on the
# readable engine (sim.engines), so there is nothing to compare.
NOT_FAST_YET = {"pooler", "breaker"}


def test_the_property_test_draws_every_field_the_model_reads():
    source = Path(__file__).read_text()
    sections = Scenario().to_dict().items()
    model = {s for s, fields in sections if isinstance(fields, dict) and s not in NOT_MODEL}
    assert model - set(FAST_FIELDS) == NOT_FAST_YET
    for section, fields in sections:
        if section in model - NOT_FAST_YET:
            for name in fields:
                assert f'"{section}.{name}"' in source, f"{section}.{name} is never drawn"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sc=scenarios(), seed=st.integers(0, 2**32 - 1), index=st.integers(0, 1000))
def test_random_scenarios_give_the_same_records_in_both_engines(sc, seed, index):
    assert_same_replication(sc, seed, index)


@pytest.mark.parametrize("traffic", [{}, {"traffic.rate_per_s": 20.0, "pool.held_when_ready": 1}])
@pytest.mark.parametrize("mix", [0.0, 0.5, 1.0])
def test_tilted_replications_give_the_same_records_and_weights(mix, traffic):
    # A connector of one instance: no Serverless VPC Access setting, so the model's own fields.
    sc = resolve("capacity-storm").in_model_terms()
    sc = sc.with_overrides({"connector.min_instances": 1, **traffic})
    for index in range(6):
        assert_same_replication(sc, 2, index, Tilt("scale_up", 8.0, 2, mix))


@pytest.mark.parametrize("arrival", ["burst", "uniform", "poisson"])
def test_a_large_fleet_gives_the_same_records(arrival):
    # Thousands of instances: the kernel's calendar wraps round many times, its buffers grow and
    # its heap holds the restarts; the records must still be the readable engine's.
    sc = resolve("eager-pool-storm").in_model_terms()  # a connector of 40: a model field
    sc = sc.with_overrides(
        {
            "fleet.instances": 1500,
            "fleet.arrival": arrival,
            "fleet.window_s": 120.0,
            "fleet.rate_per_s": 20.0,
            "pool.min_size": 4,
            "pool.held_when_ready": 4,
            "database.max_connections": 5000,  # room for 1,249 ready instances: the rest time out
            "connector.max_instances": 40,
            "restart.jitter": 0.3,
            "pool.retry_jitter": "full",
        }
    )
    assert_same_replication(sc, 5, 1)


@pytest.mark.parametrize("growth", ["per_waiter", "background"])
def test_a_large_fleet_with_traffic_gives_the_same_records(growth):
    # Traffic after ready on a thousand instances: each ready pool grows through the connector
    # that instances still starting need, requests queue and time out, and the requests' room
    # grows; the records, the requests' included, must still be the readable engine's.
    sc = (
        resolve("eager-pool-storm")
        .in_model_terms()
        .with_overrides(
            {
                "fleet.instances": 1000,
                "fleet.arrival": "uniform",
                "fleet.window_s": 60.0,
                "pool.min_size": 2,
                "pool.held_when_ready": 1,
                "pool.max_size": 6,
                "pool.timeout_s": 1.0,
                "pool.growth": growth,
                "database.max_connections": 3000,
                "connector.max_instances": 20,
                "traffic.rate_per_instance_per_s": 0.2,
                "traffic.query_s": {"dist": "lognormal", "median": 0.5, "sigma": 1.0},
            }
        )
    )
    rep = run_one(sc, 7, 2, "reference")
    outcomes = set(rep.requests["outcome"])
    assert {"served", "failed"} <= outcomes and rep.traffic_connections > 100
    assert_same_replication(sc, 7, 2)
