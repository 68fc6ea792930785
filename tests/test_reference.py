"""The engine and an independent SimPy implementation of docs/model.md agree in distribution.

Replications are independent, so each figure's mean has a standard error from the spread across
replications; the two models' means must not differ by more than a two-sided z test allows at a
family-wise level of 0.001 (Bonferroni over the figures). Both models draw different random numbers,
so agreement is in distribution, never draw for draw.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_simpy
from builders import scenario, uniform
from scipy import stats

from sim.engines import run_one
from sim.records import Reason, RequestOutcome
from sim.runner import simulate

REPLICATIONS = 300
ALPHA = 0.001
FIGURES = (  # per replication
    "attempts",
    "timeouts",
    "rejected",
    "errors",
    "first_start_ready",
    "instances_ready",
    "fleet_ready_s (never = horizon)",
    "peak_db_connections",
    "connection_attempts",
    "connector_instances_end",
    "path_failures",
)
PATH_REASONS = ("closed", "reset", "hung")
TRAFFIC_FIGURES = (  # per replication, with [traffic] (docs/model.md, "Traffic after ready")
    "requests",
    "served",
    "waited (served after a wait)",
    "failed: pool_timeout",
    "failed: its connection",
    "unrouted",
    "warm",
    "unfinished",
    "p99 checkout wait in the window (s)",
    "first served after ready (s, mean over instances)",
    "traffic_connections",
    "connections_held_end",
)


def lognormal(median: float, sigma: float) -> dict:
    return {"dist": "lognormal", "median": median, "sigma": sigma}


# 10 instances over 5 s, 4 connections each through a connector of 1 × 3 set-ups that scales out to
# 3 after 5-25 s, into 22 usable slots (40 needed at once, 20 kept by ready instances); a 15 s
# deadline, retries every second, exponential restarts with a 3 s late release by the server.
MIXED = {
    "horizon_s": 400.0,
    "fleet.instances": 10,
    "fleet.arrival": "uniform",
    "fleet.window_s": 5.0,
    "startup.before_db_s": lognormal(1.0, 0.3),
    "startup.db_init_timeout_s": 15.0,
    "startup.init_queries_s": lognormal(0.2, 0.5),
    "startup.after_db_s": lognormal(1.0, 0.2),
    "pool.min_size": 4,
    "pool.max_size": 6,
    "pool.held_when_ready": 2,
    "pool.connect_timeout_s": 8.0,
    "pool.retry_backoff_s": 1.0,
    "connector.min_instances": 1,
    "connector.max_instances": 3,
    "connector.setups_per_instance": 3,
    "connector.setup_s": lognormal(1.0, 0.5),
    "connector.scale_up_delay_s": uniform(5.0, 25.0),
    "database.max_connections": 24,
    "database.reserved_connections": 2,
    "database.accept_s": lognormal(0.01, 0.5),
    "restart.policy": "exponential",
    "restart.initial_backoff_s": 5.0,
    "restart.max_backoff_s": 40.0,
    "restart.max_restarts": 5,
    "restart.exit_release_s": 3.0,
}


def engine_figures(sc, reasons: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    res = simulate(sc, REPLICATIONS, seed=2024, jobs=1, engine="reference")
    a, f = res.attempts, res.fleet
    n = REPLICATIONS
    per_rep = np.bincount(a["replication"], minlength=n)
    first_ok = (a["attempt"] == 1) & (a["outcome"] == "ready")
    by_reason = {  # attempts failed for each of these reasons, per replication
        why: np.bincount(a["replication"], weights=a["reason"] == why, minlength=n)
        for why in reasons
    }
    return by_reason | {
        "attempts": per_rep,
        "timeouts": f["timed_out_attempts"],
        "rejected": f["rejected_attempts"],
        "errors": np.bincount(a["replication"], weights=a["outcome"] == "error", minlength=n),
        "first_start_ready": np.bincount(a["replication"], weights=first_ok, minlength=n),
        "instances_ready": f["instances_ready"],
        "fleet_ready_s (never = horizon)": np.minimum(f["fleet_ready_s"], sc.horizon_s),
        "peak_db_connections": f["peak_db_connections"],
        "connection_attempts": f["connection_attempts"],
        "connector_instances_end": f["connector_instances_end"],
        "path_failures": np.bincount(
            a["replication"], weights=np.isin(a["reason"], PATH_REASONS), minlength=n
        ),
    }


def traffic_figures(sc, requests: dict[str, list], traffic_connections: int, held_end: int) -> dict:
    """One replication's traffic figures from its request rows (REQUEST_COLUMNS)."""
    outcome = np.asarray(requests["outcome"], dtype=str)
    reason = np.asarray(requests["reason"], dtype=str)
    wait = np.asarray(requests["wait_s"], dtype=float)
    arrive, ready = (np.asarray(requests[k], dtype=float) for k in ("arrive_s", "ready_s"))
    checkout = np.asarray(requests["checkout_s"], dtype=float)
    instance = np.asarray(requests["instance"], dtype=int)
    served = outcome == RequestOutcome.SERVED
    failed = outcome == RequestOutcome.FAILED
    window = served & (arrive - ready <= sc.traffic.window_s)
    first = {}
    for i, t, r in zip(instance[served], checkout[served], ready[served], strict=True):
        first[i] = min(first.get(i, math.inf), t - r)
    return {
        "requests": outcome.size,
        "served": served.sum(),
        "waited (served after a wait)": np.sum(served & (wait > 0)),
        "failed: pool_timeout": np.sum(failed & (reason == Reason.POOL_TIMEOUT)),
        "failed: its connection": np.sum(failed & (reason != Reason.POOL_TIMEOUT)),
        "unrouted": np.sum(outcome == RequestOutcome.UNROUTED),
        "warm": np.sum(outcome == RequestOutcome.WARM),
        "unfinished": np.sum(outcome == RequestOutcome.UNFINISHED),
        "p99 checkout wait in the window (s)": np.quantile(wait[window], 0.99)
        if window.any()
        else 0.0,
        "first served after ready (s, mean over instances)": np.mean(list(first.values()))
        if first
        else 0.0,
        "traffic_connections": traffic_connections,
        "connections_held_end": held_end,
    }


def engine_traffic_figures(sc) -> dict[str, np.ndarray]:
    rows = {k: [] for k in TRAFFIC_FIGURES}
    for i in range(REPLICATIONS):
        rep = run_one(sc, 2024, index=i, engine="reference")
        figs = traffic_figures(sc, rep.requests, rep.traffic_connections, rep.connections_held_end)
        for k, v in figs.items():
            rows[k].append(v)
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def reference_figures(sc, reasons: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    traffic = TRAFFIC_FIGURES if sc.traffic.on else ()
    rows = {k: [] for k in (*FIGURES, *reasons, *traffic)}
    for i in range(REPLICATIONS):
        rep = reference_simpy.run(sc, seed=10_000 + i)
        if sc.traffic.on:
            columns = {k: [r[k] for r in rep.requests] for k in rep.requests[0]}
            figs = traffic_figures(sc, columns, rep.traffic_connections, rep.connections_held_end)
            for k, v in figs.items():
                rows[k].append(v)
        att = rep.attempts
        for why in reasons:
            rows[why].append(sum(r["reason"] == why for r in att))
        rows["attempts"].append(len(att))
        rows["timeouts"].append(sum(r["outcome"] == "timeout" for r in att))
        rows["rejected"].append(sum(r["outcome"] == "rejected" for r in att))
        rows["errors"].append(sum(r["outcome"] == "error" for r in att))
        rows["first_start_ready"].append(
            sum(r["attempt"] == 1 and r["outcome"] == "ready" for r in att)
        )
        rows["instances_ready"].append(rep.instances_ready)
        rows["fleet_ready_s (never = horizon)"].append(min(rep.fleet_ready_s, sc.horizon_s))
        rows["peak_db_connections"].append(rep.peak_db_connections)
        rows["connection_attempts"].append(sum(r["connection_attempts"] for r in att))
        rows["connector_instances_end"].append(rep.connector_instances_end)
        rows["path_failures"].append(sum(r["reason"] in PATH_REASONS for r in att))
    return {k: np.asarray(v, dtype=float) for k, v in rows.items()}


def ratio(num: np.ndarray, den: np.ndarray) -> tuple[float, float]:
    """Ratio of sums over replications and its standard error (delta method, clusters i.i.d.)."""
    num, den = np.asarray(num, float), np.asarray(den, float)
    r = num.sum() / den.sum()
    n = num.size
    se = math.sqrt(np.sum((num - r * den) ** 2) / (n - 1) / n) / den.mean()
    return r, se


def mean_se(x: np.ndarray) -> tuple[float, float]:
    x = np.asarray(x, float)
    return x.mean(), x.std(ddof=1) / math.sqrt(x.size)


@pytest.mark.parametrize(
    "variant",
    [
        {"pool.on_failure": "hold"},
        {"pool.on_failure": "close"},
        # No retry: failed pool starts end the attempt (rejected / error), fixed restarts.
        {
            "pool.on_failure": "hold",
            "pool.retry_backoff_s": 0.0,
            "pool.connect_timeout_s": 4.0,
            "restart.policy": "fixed",
        },
        # Pool-start strategies (docs/model.md, "Pool-start strategies").
        {"pool.on_failure": "hold", "pool.start": "concurrent"},
        {"pool.on_failure": "close", "pool.start": "background", "pool.held_when_ready": 3},
        {"pool.on_failure": "hold", "pool.start": "workers", "pool.workers": 2},
        # Jittered restarts (full) and jittered retries (±50 %), gRPC-style growth.
        {
            "pool.on_failure": "close",
            "pool.retry_jitter": 0.5,
            "restart.jitter": "full",
            "restart.multiplier": 1.6,
        },
        # The Cloud SQL path: 6 refreshes a minute for 10 instances that restart.
        {
            "pool.on_failure": "close",
            "restart.jitter": 0.2,
            "cloudsql.enabled": True,
            "cloudsql.quota_per_minute": 12,
            "cloudsql.call_s": lognormal(0.3, 0.5),
            "cloudsql.refresh_interval_s": 10.0,
        },
        # Cloud Run's replacement (the cloudrun preset: a new instance 0.27 s after each exit, no
        # growth, no limit seen), no retry: failed starts come back at once.
        {"pool.on_failure": "close", "pool.retry_backoff_s": 0.0, "restart.preset": "cloudrun"},
        # Path faults, no retry (so each failure is an attempt's reason): about 0.3 of the
        # connections opened between 2 s and 60 s are closed after some 0.3 s, or hang until their
        # connect timeout (fixed restarts).
        {
            "pool.on_failure": "close",
            "pool.retry_backoff_s": 0.0,
            "path.fault": "closed",
            "path.p_fault": 0.3,
            "path.from_s": 2.0,
            "path.until_s": 60.0,
            "path.fail_after_s": lognormal(0.3, 0.5),
        },
        {
            "pool.on_failure": "hold",
            "pool.retry_backoff_s": 0.0,
            "pool.connect_timeout_s": 4.0,
            "restart.policy": "fixed",
            "path.fault": "hung",
            "path.p_fault": 0.3,
        },
        # Start-up phases (docs/model.md, "Start-up phases"): the incident's shape around a pool
        # start, with a phase deadline, a phase retry and ignored failures before and inside.
        {
            "pool.on_failure": "close",
            "startup.phases": [
                {
                    "name": "migrations",
                    "db_init": False,
                    "connections": 1,
                    "keep": False,
                    "on_failure": "continue",
                    "deadline_s": 6.0,
                    "duration_s": lognormal(0.3, 0.3),
                },
                {
                    "name": "table_check",
                    "connections": 1,
                    "deadline_s": 8.0,
                    "retry_backoff_s": 1.0,
                    "retry_jitter": 0.5,
                    "duration_s": lognormal(0.1, 0.5),
                },
                {"name": "pool", "pool": True, "duration_s": lognormal(0.2, 0.5)},
                {
                    "name": "schema",
                    "connections": 2,
                    "order": "concurrent",
                    "on_failure": "continue",
                    "duration_s": lognormal(0.1, 0.5),
                },
            ],
        },
    ],
    ids=[
        "hold",
        "close",
        "hold-no-retry",
        "concurrent",
        "background",
        "workers",
        "jitter",
        "cloudsql",
        "cloudrun",
        "path-closed",
        "path-hung",
        "phases",
    ],
)
def test_engine_agrees_with_the_simpy_reference(variant):
    base = MIXED
    if "restart.preset" in variant:  # the preset's schedule, not MIXED's restart fields
        base = {k: v for k, v in MIXED.items() if not k.startswith("restart.")}
    sc = scenario({**base, **variant})
    eng, ref = assert_agree(sc)
    # The scenario exercises what it is meant to: failures, restarts, a full database.
    failures = ("timeouts",) if sc.pool.retry_backoff_s > 0 else ("rejected", "errors")
    for name in failures:
        assert eng[name].sum() > 0 and ref[name].sum() > 0, name
    if sc.path.fault != "none":
        assert eng["path_failures"].sum() > 0 and ref["path_failures"].sum() > 0
    elif not sc.cloudsql.enabled:  # the database fills up
        assert eng["peak_db_connections"].max() == 22


# MIXED with room for every cold start (48 usable slots, 40 opened at once at most; no retry, and
# fixed 5 s restarts after the server's 3 s late release): no 53300 — until 12 warm instances hold
# 2 slots each from t = 0, leaving 24.
WARM = {
    **MIXED,
    "database.max_connections": 50,
    "pool.retry_backoff_s": 0.0,
    "restart.policy": "fixed",
}


def test_warm_instances_held_slots_agree_with_the_simpy_reference():
    cold = scenario(WARM)
    assert engine_figures(cold)["rejected"].sum() == 0
    sc = scenario({**WARM, "fleet.warm_instances": 12})
    eng, ref = assert_agree(sc)
    assert eng["rejected"].sum() > 0 and ref["rejected"].sum() > 0
    assert eng["peak_db_connections"].min() >= 24 and ref["peak_db_connections"].min() >= 24
    assert eng["peak_db_connections"].max() == ref["peak_db_connections"].max() == 48


# MIXED through PgBouncer (docs/model.md, "A pooler in front of the database"), no pool retry
# (each failure is an attempt's reason): 16 client slots for up to 40 connections, a pool of 4
# server connections plus 2 after 2 s of waiting, into 5 usable slots (the sixth server's login
# meets 53300), server logins that time out at 12 ms about a third of the time (accept_s's
# median is 10 ms), pausing logins 5 s, and 6 s of query_wait_timeout; session mode (ready
# instances keep their server) and transaction mode.
POOLED = {
    **MIXED,
    "database.max_connections": 7,
    "pool.retry_backoff_s": 0.0,
    "pooler.kind": "pgbouncer",
    "pooler.max_client_conn": 16,
    "pooler.default_pool_size": 4,
    "pooler.reserve_pool_size": 2,
    "pooler.reserve_pool_timeout": 2.0,
    "pooler.server_connect_timeout": 0.012,
    "pooler.server_login_retry": 5.0,
    "pooler.query_wait_timeout": 6.0,
}
POOLER_REASONS = ("max_client_conn", "query_wait_timeout", "server_login_retry", "53300")


@pytest.mark.parametrize("mode", ["session", "transaction"])
def test_a_pooler_agrees_with_the_simpy_reference(mode):
    sc = scenario({**POOLED, "pooler.pool_mode": mode})
    eng, ref = assert_agree(sc, POOLER_REASONS)
    assert eng["errors"].sum() > 0 and ref["errors"].sum() > 0
    if mode == "session":  # ready instances keep their servers: the database fills up
        assert eng["peak_db_connections"].max() == ref["peak_db_connections"].max() == 5
    assert eng["max_client_conn"].sum() > 0 and ref["max_client_conn"].sum() > 0


# MIXED through Direct VPC egress (docs/model.md, "Direct VPC egress"): no connector; each
# attempt's egress usable after lognormal(6 s, 0.5), so about a fifth of the first connections
# (opened about 1 s in, connect timeout 8 s) time out waiting for it; a subnet of 17 addresses at 2
# each holds 8 instances, one of them warm: 7 of the 10 cold starts, 3 never start. No retry, so
# each failure ends its attempt: a connect timeout, or a 53300 once 12 usable slots (16 less 2
# reserved, 2 warm) fill: 7 ready instances would keep 14.
DIRECT_EGRESS = {
    **MIXED,
    "database.max_connections": 16,
    "pool.retry_backoff_s": 0.0,
    "restart.policy": "fixed",
    "egress.kind": "direct",
    "egress.ready_s": lognormal(6.0, 0.5),
    "egress.subnet_addresses": 17,
    "egress.addresses_per_instance": 2,
    "fleet.warm_instances": 1,
}


def test_direct_egress_agrees_with_the_simpy_reference():
    sc = scenario(DIRECT_EGRESS)
    eng, ref = assert_agree(sc)
    for name in ("errors", "rejected"):
        assert eng[name].sum() > 0 and ref[name].sum() > 0, name
    assert eng["instances_ready"].max() <= 7 and ref["instances_ready"].max() <= 7
    assert eng["connector_instances_end"].max() == ref["connector_instances_end"].max() == 0


def assert_agree(
    sc, reasons: tuple[str, ...] = ()
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both models' figures over their own replications (and the attempts failed for each of
    ``reasons``); fails on one beyond the bound."""
    eng, ref = engine_figures(sc, reasons), reference_figures(sc, reasons)
    names = (*FIGURES, *reasons)
    if sc.traffic.on:
        eng.update(engine_traffic_figures(sc))
        names += TRAFFIC_FIGURES
    comparisons = {name: (mean_se(eng[name]), mean_se(ref[name])) for name in names}
    comparisons["P(db init timeout) per attempt"] = (
        ratio(eng["timeouts"], eng["attempts"]),
        ratio(ref["timeouts"], ref["attempts"]),
    )
    instances = sc.fleet.instances
    comparisons["restarts per instance"] = (
        mean_se((eng["attempts"] - instances) / instances),
        mean_se((ref["attempts"] - instances) / instances),
    )
    z_crit = stats.norm.ppf(1 - ALPHA / 2 / len(comparisons))  # ≈ 3.9 for 12 figures
    report, bad = [], []
    for name, ((m_e, se_e), (m_r, se_r)) in comparisons.items():
        se = math.hypot(se_e, se_r)
        z = 0.0 if se == 0 and m_e == m_r else (m_e - m_r) / se if se else math.inf
        report.append(f"{name}: engine {m_e:.4g} ± {se_e:.2g}, reference {m_r:.4g} ± {se_r:.2g}")
        if abs(z) > z_crit:
            bad.append(f"{name} (z = {z:.2f})")
    assert not bad, f"disagree beyond |z| > {z_crit:.2f}: {bad}\n" + "\n".join(report)
    return eng, ref


# Traffic after ready on MIXED for 120 s, into 38 usable slots (the 10 ready instances hold 20):
# requests of about a second each, so pools grow past their 2 held connections, meet 53300 once
# the slots run out, and queue at max_size 6 for at most 2 s.
TRAFFIC = {
    **MIXED,
    "horizon_s": 120.0,
    "database.max_connections": 40,
    "pool.timeout_s": 2.0,
    "traffic.query_s": lognormal(1.0, 0.5),
    "traffic.window_s": 30.0,
}


@pytest.mark.parametrize(
    "variant",
    [
        # The fleet's stream over one warm instance and the ready ones; one connection opened
        # per waiting request (SQLAlchemy's QueuePool overflow).
        {"traffic.rate_per_s": 10.0, "fleet.warm_instances": 1},
        # Each ready instance's own stream; the background filler (HikariCP).
        {"traffic.rate_per_instance_per_s": 1.0, "pool.growth": "background"},
        # A recorded trace from t = 0.5 s: requests before the first instance is ready are
        # unrouted.
        {"traffic.trace_s": [0.5 + 0.125 * k for k in range(900)], "pool.growth": "background"},
    ],
    ids=["per-waiter", "background", "trace"],
)
def test_traffic_agrees_with_the_simpy_reference(variant):
    sc = scenario({**TRAFFIC, **variant})
    eng, ref = assert_agree(sc)
    # The scenario exercises what it is meant to: waits, pool growth, failed checkouts.
    for name in ("waited (served after a wait)", "traffic_connections", "failed: pool_timeout"):
        assert eng[name].sum() > 0 and ref[name].sum() > 0, name
    if sc.pool.growth == "per_waiter":
        assert eng["failed: its connection"].sum() > 0  # 53300 once the slots run out
    if sc.traffic.trace_s:
        assert eng["unrouted"].sum() > 0 and ref["unrouted"].sum() > 0


def test_reference_model_reproduces_a_hand_computed_case():
    # The reference on docs/model.md's simplest scale-out: 6 connections, 1 × 2 set-ups of 12 s,
    # scale-outs of 5 s up to 3 instances → set-ups end at 12, 12, 17, 17, 22, 22 (see
    # test_engine_exact.test_scale_out_joins_at_exactly_the_delay).
    sc = scenario(
        {
            "fleet.instances": 6,
            "connector.max_instances": 3,
            "connector.setups_per_instance": 2,
            "connector.setup_s": {"dist": "constant", "value": 12.0},
            "connector.scale_up_delay_s": {"dist": "constant", "value": 5.0},
        }
    )
    rep = reference_simpy.run(sc, seed=0)
    assert sorted(r["db_init_s"] for r in rep.attempts) == [12.0, 12.0, 17.0, 17.0, 22.0, 22.0]
    assert rep.connector_instances_end == 3
