"""The readable engine's circuit breakers and roll-outs agree with the SimPy reference's.

docs/model.md, "Circuit breakers" (forms ``stay_up`` and ``shared``) and "A roll-out: old instances
replaced by new ones" (``kubernetes`` and ``cloud_run``): ``tests/reference_simpy.py`` has its own
breaker and roll-out controller, written from those sections' sentences, and is compared here with
the readable engine in distribution, as ``tests/test_reference.py`` compares the rest: each
figure's mean over independent replications, a two-sided z test at a family-wise level of 0.001
(Bonferroni over the figures). The hand-computed cases at the end check the reference alone.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference_simpy
from builders import const, scenario
from scipy import stats
from test_reference import MIXED, lognormal, mean_se

from sim.engines import run_one
from sim.records import Outcome, Reason

REPLICATIONS = 200
ALPHA = 0.001
FIGURES = (  # per replication
    "fleet ready = roll-out done (s, never = horizon)",
    "p50 time to ready (s, never = horizon)",
    "p90 time to ready (s, never = horizon)",
    "first instance ready (s)",
    "last first start (s, never = horizon)",
    "tries per instance",
    "rejected attempts",
    "timed-out attempts",
    "error attempts",
    "P(any 53300 per deploy)",
    "peak_db_connections",
    "instances_ready",
    "connection_attempts",
    "time before database init (s, summed over tries)",
    "later tries that waited before database init",
)


def figures(sc, rows: dict[str, list], peak: int, instances_ready: int) -> dict[str, float]:
    """One replication's figures from its attempt rows (columns as sim.records.ATTEMPT_COLUMNS:
    instance, attempt, start_s, db_init_start_s, outcome, reason, connection_attempts, ready_s)."""
    horizon, n = sc.horizon_s, sc.fleet.instances
    instance = np.asarray(rows["instance"], dtype=int)
    outcome = np.asarray(rows["outcome"], dtype=str)
    reason = np.asarray(rows["reason"], dtype=str)
    start = np.asarray(rows["start_s"], dtype=float)
    ready = np.full(n, horizon)  # an instance never ready counts as the horizon
    done = outcome == Outcome.READY
    ready[instance[done]] = np.minimum(np.asarray(rows["ready_s"], dtype=float)[done], horizon)
    first_start = np.full(n, horizon)
    firsts = np.asarray(rows["attempt"], dtype=int) == 1
    first_start[instance[firsts]] = start[firsts]
    waited = np.asarray(rows["db_init_start_s"], dtype=float) - start
    return {
        "fleet ready = roll-out done (s, never = horizon)": ready.max(),
        "p50 time to ready (s, never = horizon)": np.quantile(ready, 0.5),
        "p90 time to ready (s, never = horizon)": np.quantile(ready, 0.9),
        "first instance ready (s)": ready.min(),
        "last first start (s, never = horizon)": first_start.max(),
        "tries per instance": outcome.size / n,
        "rejected attempts": np.sum(outcome == Outcome.REJECTED),
        "timed-out attempts": np.sum(outcome == Outcome.TIMEOUT),
        "error attempts": np.sum(outcome == Outcome.ERROR),
        "P(any 53300 per deploy)": float(np.any(reason == Reason.TOO_MANY_CLIENTS)),
        "peak_db_connections": peak,
        "instances_ready": instances_ready,
        "connection_attempts": np.sum(np.asarray(rows["connection_attempts"], dtype=int)),
        "time before database init (s, summed over tries)": waited.sum(),
        # A restart draws before_db_s; a stay-up try waits only for an open breaker.
        "later tries that waited before database init": np.sum(~firsts & (waited > 0)),
    }


def engine_figures(sc) -> dict[str, np.ndarray]:
    out = {k: [] for k in FIGURES}
    for i in range(REPLICATIONS):
        rep = run_one(sc, 2024, index=i, engine="reference")
        for k, v in figures(sc, rep.attempts, rep.peak_db_connections, rep.instances_ready).items():
            out[k].append(v)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def reference_figures(sc) -> dict[str, np.ndarray]:
    out = {k: [] for k in FIGURES}
    for i in range(REPLICATIONS):
        rep = reference_simpy.run(sc, seed=20_000 + i)
        keys = ("instance", "attempt", "start_s", "db_init_start_s", "outcome", "reason")
        keys += ("connection_attempts", "ready_s")
        rows = {k: [r[k] for r in rep.attempts] for k in keys}
        for k, v in figures(sc, rows, rep.peak_db_connections, rep.instances_ready).items():
            out[k].append(v)
    return {k: np.asarray(v, dtype=float) for k, v in out.items()}


def assert_agree(sc) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Both models' figures over their own replications; fails on one beyond the bound."""
    eng, ref = engine_figures(sc), reference_figures(sc)
    z_crit = stats.norm.ppf(1 - ALPHA / 2 / len(FIGURES))  # ≈ 3.9 for 15 figures
    report, bad = [], []
    for name in FIGURES:
        (m_e, se_e), (m_r, se_r) = mean_se(eng[name]), mean_se(ref[name])
        se = math.hypot(se_e, se_r)
        z = 0.0 if se == 0 and m_e == m_r else (m_e - m_r) / se if se else math.inf
        report.append(f"{name}: engine {m_e:.4g} ± {se_e:.2g}, reference {m_r:.4g} ± {se_r:.2g}")
        if abs(z) > z_crit:
            bad.append(f"{name} (z = {z:.2f})")
    assert not bad, f"disagree beyond |z| > {z_crit:.2f}: {bad}\n" + "\n".join(report)
    return eng, ref


# MIXED with no pool retry, so each failed pool start ends its try: 10 instances over 5 s, 4
# connections each through a connector of 1 × 2 set-ups (scaling out to 3 after 5-25 s) with a
# 3 s connect timeout, into 22 usable slots: tries fail by connect timeouts and 53300 for some
# 40-70 s, and the breaker's open times decide when the next ones begin.
BREAKER = {
    **MIXED,
    "pool.on_failure": "close",
    "pool.retry_backoff_s": 0.0,
    "pool.connect_timeout_s": 3.0,
    "connector.setups_per_instance": 2,
    "breaker.retry_s": 1.0,
}


@pytest.mark.parametrize(
    "variant",
    [
        # Each instance's own breaker: open after 2 failed tries in a row, for 15 s.
        {"breaker.form": "stay_up", "breaker.fail_max": 2, "breaker.reset_timeout_s": 15.0},
        # With MIXED's pool retries every second within a 10 s deadline: tries time out, and
        # each timeout opens the instance's breaker for 15 s.
        {
            "breaker.form": "stay_up",
            "breaker.fail_max": 1,
            "breaker.reset_timeout_s": 15.0,
            "pool.retry_backoff_s": 1.0,
            "pool.connect_timeout_s": 8.0,
            "startup.db_init_timeout_s": 10.0,
        },
        # Set-ups for all at once: tries fail by 53300 within a second of their start, still
        # holding what they opened (on_failure "hold"), which the application's close frees at
        # once (no restart.exit_release_s, 10 s here).
        {
            "breaker.form": "stay_up",
            "breaker.fail_max": 2,
            "breaker.reset_timeout_s": 15.0,
            "connector.setups_per_instance": 10,
            "pool.on_failure": "hold",
            "restart.exit_release_s": 10.0,
        },
        # Direct VPC egress usable after lognormal(6 s, 0.5) from the process's start, kept across
        # its tries (one draw per instance): first tries time out waiting for it, later ones
        # find it usable.
        {
            "breaker.form": "stay_up",
            "breaker.fail_max": 2,
            "breaker.reset_timeout_s": 15.0,
            "egress.kind": "direct",
            "egress.ready_s": lognormal(6.0, 0.5),
        },
        # One breaker for the fleet: the fleet's 3 failed tries in a row open it for 5 s, and
        # every instance waits; without jitter they all try again the instant it turns half-open.
        {"breaker.form": "shared", "breaker.fail_max": 3, "breaker.reset_timeout_s": 5.0},
        {
            "breaker.form": "shared",
            "breaker.fail_max": 3,
            "breaker.reset_timeout_s": 5.0,
            "breaker.open_jitter": 0.5,
        },
        # Every failed try opens it for 20 s: tries that began before it opened often end ready
        # while it is open, which changes nothing (it stays open to its time).
        {"breaker.form": "shared", "breaker.fail_max": 1, "breaker.reset_timeout_s": 20.0},
        # The same, jittered, cut by a 50 s horizon: tries due after it do not begin, and one
        # let in by the breaker after it leaves no record.
        {
            "breaker.form": "shared",
            "breaker.fail_max": 1,
            "breaker.reset_timeout_s": 20.0,
            "breaker.open_jitter": 0.3,
            "horizon_s": 50.0,
        },
        # The Cloud SQL path's 6 refreshes a minute: each try refreshes as a new attempt does.
        {
            "breaker.form": "shared",
            "breaker.fail_max": 3,
            "breaker.reset_timeout_s": 5.0,
            "breaker.open_jitter": 0.5,
            "cloudsql.enabled": True,
            "cloudsql.quota_per_minute": 12,
            "cloudsql.call_s": lognormal(0.3, 0.5),
            "cloudsql.refresh_interval_s": 10.0,
        },
    ],
    ids=[
        "stay_up",
        "stay_up-retry",
        "stay_up-fast-connector",
        "stay_up-egress",
        "shared",
        "shared-jitter",
        "shared-long-open",
        "shared-horizon",
        "shared-cloudsql",
    ],
)
def test_breaker_agrees_with_the_simpy_reference(variant):
    sc = scenario({**BREAKER, **variant})
    eng, ref = assert_agree(sc)
    # The scenario exercises what it is meant to: failed tries, tries again, tries refused by
    # an open breaker (a try after the first waits before its database init only for that).
    failed = (
        ("timed-out attempts",)
        if sc.pool.retry_backoff_s
        else ("rejected attempts", "error attempts")
    )
    for figs in (eng, ref):
        assert sum(figs[name].sum() for name in failed) > 0
        assert figs["tries per instance"].mean() > 1.1
        assert figs["later tries that waited before database init"].sum() > 0


# A roll-out of 8 new instances over 8 old ones holding 2 slots each, 4 connections per pool
# start through MIXED's connector, no pool retry (each 53300 ends its attempt, restarts after 5,
# 10, 20 … s), old instances' slots freed 5 s after they are let go.
ROLLOUT = {
    **MIXED,
    "fleet.instances": 8,
    "fleet.arrival": "burst",
    "pool.on_failure": "close",
    "pool.retry_backoff_s": 0.0,
    "pool.connect_timeout_s": 4.0,
    "rollout.old_linger_s": 5.0,
}


@pytest.mark.parametrize(
    "variant",
    [
        # Kubernetes' defaults, 25 % and 25 % of 8: surge 2, unavailable 2. At t = 0 two old
        # instances go and four new ones start: 16 + 16 connections for 24 usable slots while the
        # two let go linger.
        {"rollout.kind": "kubernetes", "database.max_connections": 26},
        # Surge 1, unavailable 0: one new instance at a time, each as the one before is ready and
        # an old one let go; its 4 connections beside the 2 still lingering (3 s) for 21 slots.
        {
            "rollout.kind": "kubernetes",
            "rollout.max_surge": 1,
            "rollout.max_unavailable": 0,
            "rollout.old_linger_s": 3.0,
            "database.max_connections": 23,
        },
        # 5 old instances, surge 50 % of 8 (4), unavailable 1: four new ones at t = 0, then one
        # more for each ready, while the old go down to 7 − ready.
        {
            "rollout.kind": "kubernetes",
            "rollout.max_surge": "50%",
            "rollout.max_unavailable": 1,
            "rollout.old_instances": 5,
            "database.max_connections": 26,
        },
        # Cloud Run, all traffic at once: 8 new instances over 5 s beside the 8 old ones until
        # every new one is ready: 16 + 32 for 34 slots.
        {
            "rollout.kind": "cloud_run",
            "rollout.steps": [100.0],
            "fleet.arrival": "uniform",
            "database.max_connections": 36,
        },
        # Cloud Run in two steps over 7 old instances: at 4 new ready the old keep ceil(3.5) = 4.
        {
            "rollout.kind": "cloud_run",
            "rollout.steps": [50.0, 100.0],
            "rollout.old_instances": 7,
            "fleet.arrival": "uniform",
            "database.max_connections": 36,
        },
        # Three steps over 40 s of arrivals, into 26 slots: the old keep 6, then 4, until 8 new
        # ones are ready; a later arrival finds them still holding theirs.
        {
            "rollout.kind": "cloud_run",
            "rollout.steps": [25.0, 50.0, 100.0],
            "fleet.arrival": "uniform",
            "fleet.window_s": 40.0,
            "database.max_connections": 28,
        },
    ],
    ids=[
        "kubernetes-25%",
        "kubernetes-surge1",
        "kubernetes-50%-old5",
        "cloud_run-100",
        "cloud_run-50-100",
        "cloud_run-25-50-100-slow",
    ],
)
def test_rollout_agrees_with_the_simpy_reference(variant):
    sc = scenario({**ROLLOUT, **variant})
    eng, ref = assert_agree(sc)
    # The scenario exercises what it is meant to: refused connections in some deploys, and
    # (kubernetes) new instances started by the controller as others become ready.
    for figs in (eng, ref):
        assert 0 < figs["P(any 53300 per deploy)"].mean() < 1
        if sc.rollout.kind == "kubernetes":
            assert figs["last first start (s, never = horizon)"].min() > 0


@pytest.mark.parametrize(
    ("variant", "ready", "tries"),
    [
        # Surge 1, unavailable 0 into 18 usable slots: the old 8 hold 16, the first new
        # instance's 4 connections meet 53300 at every start until its restarts run out (5): it
        # never becomes ready, so no old instance is let go and no other new one is created.
        (
            {
                "rollout.kind": "kubernetes",
                "rollout.max_surge": 1,
                "rollout.max_unavailable": 0,
                "database.max_connections": 20,
            },
            0,
            6,
        ),
        # Cloud Run in three steps into 25 usable slots: at 7 new ready (14 slots) the old keep
        # ceil(8 × 0.5) = 4 (8 slots) until the 8th is ready, whose pool start needs 4 more: 26.
        # Traffic never reaches 100 %, and the 8th instance's restarts run out.
        (
            {
                "rollout.kind": "cloud_run",
                "rollout.steps": [25.0, 50.0, 100.0],
                "fleet.arrival": "uniform",
                "fleet.window_s": 40.0,
                "database.max_connections": 27,
            },
            7,
            None,
        ),
    ],
    ids=["kubernetes", "cloud_run"],
)
def test_a_stalled_rollout_agrees_with_the_simpy_reference(variant, ready, tries):
    sc = scenario({**ROLLOUT, **variant})
    eng, ref = assert_agree(sc)
    for figs in (eng, ref):
        assert figs["instances_ready"].min() == figs["instances_ready"].max() == ready
        assert figs["fleet ready = roll-out done (s, never = horizon)"].min() == sc.horizon_s
        if tries is not None:  # only instance 0 was created: its first start and 5 restarts
            assert figs["tries per instance"].max() == tries / sc.fleet.instances


# -- the reference alone on hand-computed cases (constant durations) ---------------------------


def test_reference_stay_up_breaker_opens_then_one_try_per_open_time():
    # One instance whose every connection times out (a 2 s set-up, a 0.5 s connect timeout);
    # before_db 1 s, retry_s 1 s, fail_max 2, reset 10 s. Try 1 starts at 0, fails at 1.5 (count
    # 1); try 2 due at 2.5 fails at 3 (count 2: open until 13); try 3 due at 4 waits to 13,
    # half-open, fails at 13.5 (open until 23.5); try 4 due at 14.5 waits to 23.5; try 5 due at 25
    # waits to 34; try 6 due at 35.5 would wait to 44.5, past the 40 s horizon: no record.
    sc = scenario(
        {
            "horizon_s": 40.0,
            "startup.before_db_s": const(1.0),
            "startup.db_init_timeout_s": 10.0,
            "connector.setup_s": const(2.0),
            "pool.connect_timeout_s": 0.5,
            "breaker.form": "stay_up",
            "breaker.fail_max": 2,
            "breaker.reset_timeout_s": 10.0,
            "breaker.retry_s": 1.0,
        }
    )
    rows = reference_simpy.run(sc, seed=0).attempts
    assert [r["start_s"] for r in rows] == [0.0, 2.5, 4.0, 14.5, 25.0]
    assert [r["db_init_start_s"] for r in rows] == [1.0, 2.5, 13.0, 23.5, 34.0]
    assert {r["reason"] for r in rows} == {"connect_timeout"}


def test_reference_shared_breaker_holds_the_fleet_and_a_ready_try_closes_it():
    # Two instances, one slot taken by the other connections out of 2: the first ready holds the
    # last slot. Instance 0 arrives at 0, instance 1 at 0 too (burst), before_db 1 s, init queries
    # 2 s: at 1 instance 0 takes the slot, instance 1 meets 53300 (fleet count 1 = fail_max: open
    # until 6). Instance 1's next try is due at 2, waits to 6, half-open, fails again at 6 (open
    # until 11); instance 0 was ready at 3 while the breaker was open: nothing changed.
    sc = scenario(
        {
            "horizon_s": 20.0,
            "fleet.instances": 2,
            "startup.before_db_s": const(1.0),
            "startup.init_queries_s": const(2.0),
            "startup.db_init_timeout_s": 10.0,
            "database.max_connections": 2,
            "database.other_connections": 1,
            "breaker.form": "shared",
            "breaker.fail_max": 1,
            "breaker.reset_timeout_s": 5.0,
            "breaker.retry_s": 1.0,
        }
    )
    rows = reference_simpy.run(sc, seed=0).attempts
    ones = [(r["start_s"], r["db_init_start_s"]) for r in rows if r["instance"] == 1]
    assert ones == [(0.0, 1.0), (2.0, 6.0), (7.0, 11.0), (12.0, 16.0)]
    assert [(r["outcome"], r["ready_s"]) for r in rows if r["instance"] == 0] == [("ready", 3.0)]


def test_reference_kubernetes_surge_one_starts_one_at_a_time():
    # R = 4 over 4 old instances holding 1 slot each, surge 1, unavailable 0, before_db 1 s and
    # after_db 1 s: instance k starts at 2k and is ready at 2k + 2, when an old one goes and the
    # next starts. Peak: 4 old + 1 starting = 5.
    sc = scenario(
        {
            "fleet.instances": 4,
            "startup.before_db_s": const(1.0),
            "startup.after_db_s": const(1.0),
            "rollout.kind": "kubernetes",
            "rollout.max_surge": 1,
            "rollout.max_unavailable": 0,
        }
    )
    rep = reference_simpy.run(sc, seed=0)
    assert [(r["instance"], r["start_s"], r["ready_s"]) for r in rep.attempts] == [
        (0, 0.0, 2.0),
        (1, 2.0, 4.0),
        (2, 4.0, 6.0),
        (3, 6.0, 8.0),
    ]
    assert rep.fleet_ready_s == 8.0 and rep.peak_db_connections == 5


def test_reference_kubernetes_both_rounded_to_zero_lets_one_old_instance_go():
    # R = 3, surge 0, unavailable 25 % of 3 rounded down to 0 pods: u = 1. At t = 0 one old
    # instance goes (keep 3 − 1 − 0 = 2) and one new one starts (up to 3 + 0 − 2 = 1), ready at
    # 2; then the next, ready at 4, and the last, ready at 6.
    sc = scenario(
        {
            "fleet.instances": 3,
            "startup.before_db_s": const(1.0),
            "startup.after_db_s": const(1.0),
            "rollout.kind": "kubernetes",
            "rollout.max_surge": 0,
            "rollout.max_unavailable": "25%",
        }
    )
    rep = reference_simpy.run(sc, seed=0)
    assert [(r["start_s"], r["ready_s"]) for r in rep.attempts] == [(0, 2), (2, 4), (4, 6)]
    assert rep.peak_db_connections == 3  # 2 old + 1 starting, then never more


@pytest.mark.parametrize(
    ("steps", "linger_s", "peak"),
    [([100.0], 0.0, 8), ([50.0, 100.0], 0.0, 6), ([50.0, 100.0], 10.0, 8)],
)
def test_reference_cloud_run_steps_let_old_instances_go_as_new_ones_are_ready(
    steps, linger_s, peak
):
    # R = 4 new instances at t = 0 over 4 old holding 1 slot each; one set-up of 1 s at a time,
    # so new instance k holds its connection and is ready at k + 1. All at once ([100]): the old
    # stay until 4 new are ready, 4 + 4 = 8 held at t = 4. In two steps ([50, 100]): at t = 2 the
    # old keep ceil(4 × 0.5) = 2 (4 + 2 held, then 2 + 2), at t = 3 five, at t = 4 six, then 4;
    # unless those let go linger 10 s: 8 again at t = 4.
    sc = scenario(
        {
            "fleet.instances": 4,
            "connector.setups_per_instance": 1,
            "connector.setup_s": const(1.0),
            "rollout.kind": "cloud_run",
            "rollout.steps": steps,
            "rollout.old_linger_s": linger_s,
        }
    )
    rep = reference_simpy.run(sc, seed=0)
    assert [r["ready_s"] for r in rep.attempts] == [1.0, 2.0, 3.0, 4.0]
    assert rep.peak_db_connections == peak
