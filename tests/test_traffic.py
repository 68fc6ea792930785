"""Traffic after ready (docs/model.md, "Traffic after ready"): hand-computed cases with constant
durations on both engines (the readable engine is the truth; the fast twin is held to the same
records), the HikariCP spike-demand anchor for the two growth rules, and bad ``[traffic]`` input.

The base scenario (tests/builders.py) takes no time anywhere: one instance, min_size 1 and
held_when_ready 1, is ready at t = 0 holding one idle connection, unless a case says otherwise.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from builders import const, scenario
from cli_helpers import call_main

from sim import streams
from sim.afterready import quantile_interval, traffic_figures
from sim.engine import replication_key
from sim.engines import run_one, unsupported
from sim.records import REQUEST_COLUMNS, Outcome, Reason, RequestOutcome
from sim.scenario import Scenario

ENGINES = ["reference", "fast"]
SLOW_CONNECTION = {"connector.setup_s": const(0.3), "database.accept_s": const(0.2)}


def requests(rep) -> list[dict]:
    cols = rep.requests
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def attempts(rep) -> list[dict]:
    cols = rep.attempts
    return [dict(zip(cols, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def served(rows) -> list[tuple[float, float]]:
    return [(r["arrive_s"], r["wait_s"]) for r in rows if r["outcome"] == RequestOutcome.SERVED]


def test_without_traffic_nothing_happens():
    sc = scenario()
    assert not sc.traffic.on and not Scenario().traffic.on
    rep = run_one(sc, 0)
    assert all(v == [] for v in rep.requests.values())
    assert rep.traffic_connections == 0
    assert rep.connections_held_end == 1


@pytest.mark.parametrize("engine", ENGINES)
def test_an_idle_connection_is_checked_out_at_once(engine):
    # Ready at 0 with one idle connection; queries take 0.5: the requests at 1 and 2 each find
    # it idle (the first gave it back at 1.5): wait 0, no connection opened.
    sc = scenario({"traffic.trace_s": [1.0, 2.0], "traffic.query_s": const(0.5)})
    rep = run_one(sc, 0, engine=engine)
    rows = requests(rep)
    assert [(r["instance"], r["ready_s"], r["checkout_s"]) for r in rows] == [
        (0, 0.0, 1.0),
        (0, 0.0, 2.0),
    ]
    assert served(rows) == [(1.0, 0.0), (2.0, 0.0)]
    assert [r["reason"] for r in rows] == ["", ""]
    assert (rep.traffic_connections, rep.connections_held_end) == (0, 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_per_waiter_opens_its_own_connection_and_waits_setup_plus_accept(engine):
    # A connection takes set-up 0.3 + accept 0.2: the instance is ready at 0.5. Two requests
    # at 1 (queries 1.0): the first takes the idle one; the second opens its own (total 1 < 10)
    # and gets it at 1.5: wait 0.5. It counts in no attempt's connection_attempts.
    sc = scenario({**SLOW_CONNECTION, "traffic.trace_s": [1.0, 1.0], "traffic.query_s": const(1.0)})
    rep = run_one(sc, 0, engine=engine)
    assert served(requests(rep)) == [(1.0, 0.0), (1.0, 0.5)]
    (start,) = attempts(rep)
    assert (start["ready_s"], start["connection_attempts"]) == (0.5, 1)
    assert (rep.traffic_connections, rep.connections_held_end, rep.peak_db_connections) == (1, 2, 2)


@pytest.mark.parametrize("engine", ENGINES)
def test_at_max_size_a_request_queues_and_fails_after_the_pool_timeout(engine):
    # max_size 1, queries 5, pool.timeout_s 3. Request at 1 takes the connection until 6. The one
    # at 1.5 queues and times out at 4.5 (pool_timeout). The one at 4 queues and gets the
    # connection when it comes back at 6: wait 2 < 3.
    sc = scenario(
        {
            "pool.max_size": 1,
            "pool.timeout_s": 3.0,
            "traffic.trace_s": [1.0, 1.5, 4.0],
            "traffic.query_s": const(5.0),
        }
    )
    rows = requests(run_one(sc, 0, engine=engine))
    assert [(r["outcome"], r["reason"]) for r in rows] == [
        (RequestOutcome.SERVED, ""),
        (RequestOutcome.FAILED, Reason.POOL_TIMEOUT),
        (RequestOutcome.SERVED, ""),
    ]
    assert served(rows) == [(1.0, 0.0), (4.0, 2.0)]
    assert math.isnan(rows[1]["checkout_s"]) and math.isnan(rows[1]["wait_s"])


@pytest.mark.parametrize("engine", ENGINES)
def test_background_filler_hands_its_connection_to_the_first_waiter(engine):
    # background, max_size 3; a connection takes 0.5; ready at 0.5; queries 1.2. Three requests
    # at 1: the first takes the idle one (back at 2.2). The second queues and the filler opens
    # one: established at 1.5, it goes to the second (wait 0.5); the third still queues, so the
    # filler opens the next: at 2.0 to the third (wait 1.0). Then nobody queues and total 3 =
    # max_size: it stops. The per_waiter pool opens two at 1, both ready at 1.5.
    over = {
        **SLOW_CONNECTION,
        "pool.max_size": 3,
        "traffic.trace_s": [1.0, 1.0, 1.0],
        "traffic.query_s": const(1.2),
    }
    rep = run_one(scenario({**over, "pool.growth": "background"}), 0, engine=engine)
    assert served(requests(rep)) == [(1.0, 0.0), (1.0, 0.5), (1.0, 1.0)]
    assert (rep.traffic_connections, rep.connections_held_end) == (2, 3)
    rep = run_one(scenario({**over, "pool.growth": "per_waiter"}), 0, engine=engine)
    assert served(requests(rep)) == [(1.0, 0.0), (1.0, 0.5), (1.0, 0.5)]


@pytest.mark.parametrize("engine", ENGINES)
def test_the_filler_backs_off_after_53300_from_10_ms_doubling(engine):
    # One slot (max_connections 1), taken by the start-up's connection; background growth,
    # queries 1.0. At 1 the first request takes the idle connection; the second queues; the
    # filler's connection meets 53300 at once, then again after 0.01, 0.02, 0.04, 0.08, 0.16,
    # 0.32, 0.64: tries at 1, 1.01, 1.03, 1.07, 1.15, 1.31, 1.63, 2.27. At 2 the first request
    # gives its connection back: to the second (wait 1.0). At 2.27 nobody queues but none is
    # idle (0 < held_when_ready 1), so it tries once more and pauses 1.28, to 3.55: by then the
    # connection is idle again (at 3), and it stops. 8 connections tried.
    sc = scenario(
        {
            "database.max_connections": 1,
            "pool.growth": "background",
            "pool.max_size": 3,
            "traffic.trace_s": [1.0, 1.0],
            "traffic.query_s": const(1.0),
        }
    )
    rep = run_one(sc, 0, engine=engine)
    assert served(requests(rep)) == [(1.0, 0.0), (1.0, 1.0)]
    assert (rep.traffic_connections, rep.connections_held_end) == (8, 1)
    (start,) = attempts(rep)
    assert start["outcome"] == Outcome.READY


@pytest.mark.parametrize("engine", ENGINES)
def test_traffic_connections_cause_a_later_start_53300(engine):
    # Three slots. Instance 0 is ready at 0 holding one; at 1 three requests (queries 10): one
    # takes it, two open their own (slots 2 and 3). Instance 1 starts at 5: its connection finds
    # no slot, 53300, rejected. Without the traffic it is ready at 5.
    over = {
        "database.max_connections": 3,
        "fleet.instances": 2,
        "fleet.arrival": "waves",
        "fleet.waves": [{"at_s": 0.0, "count": 1}, {"at_s": 5.0, "count": 1}],
    }
    traffic = {"traffic.trace_s": [1.0, 1.0, 1.0], "traffic.query_s": const(10.0)}
    rep = run_one(scenario({**over, **traffic}), 0, engine=engine)
    rows = attempts(rep)
    assert [(r["instance"], r["outcome"], r["reason"]) for r in rows] == [
        (0, Outcome.READY, ""),
        (1, Outcome.REJECTED, Reason.TOO_MANY_CLIENTS),
    ]
    assert rep.traffic_connections == 2 and rep.peak_db_connections == 3
    alone = attempts(run_one(scenario(over), 0, engine=engine))
    assert [r["outcome"] for r in alone] == [Outcome.READY, Outcome.READY]


def _picks(sc: Scenario, seed: int, count: int) -> list[float]:
    state = streams.stream_state(replication_key(seed), streams.ROLES.index("traffic_pick"))
    return [streams.unit(state, k) for k in range(count)]


@pytest.mark.parametrize("engine", ENGINES)
def test_warm_instances_come_first_and_the_pick_draws_once_per_routed_request(engine):
    # One warm instance; the cold one is ready at 5 (before_db 5). At 1 the only candidate is the
    # warm one: pick u0, candidate ⌊u0 × 1⌋ = 0: warm. At 6, 7, 8 two candidates (warm, then
    # instance 0): candidate ⌊u_k × 2⌋.
    sc = scenario(
        {
            "fleet.warm_instances": 1,
            "startup.before_db_s": const(5.0),
            "traffic.trace_s": [1.0, 6.0, 7.0, 8.0],
            "traffic.query_s": const(0.1),
        }
    )
    rows = requests(run_one(sc, 3, engine=engine))
    u = _picks(sc, 3, 4)
    expected = [-1] + [-1 if math.floor(v * 2) == 0 else 0 for v in u[1:]]
    assert [r["instance"] for r in rows] == expected
    for r in rows:
        warm = r["instance"] == -1
        assert r["outcome"] == (RequestOutcome.WARM if warm else RequestOutcome.SERVED)
        assert math.isnan(r["ready_s"]) == warm and math.isnan(r["wait_s"]) == warm


@pytest.mark.parametrize("engine", ENGINES)
def test_a_request_before_any_instance_is_ready_is_unrouted(engine):
    # Ready at 5: the request at 1 has no candidate (no draw); the one at 6 goes to instance 0.
    sc = scenario({"startup.before_db_s": const(5.0), "traffic.trace_s": [1.0, 6.0]})
    rows = requests(run_one(sc, 0, engine=engine))
    assert [(r["instance"], r["outcome"]) for r in rows] == [
        (-1, RequestOutcome.UNROUTED),
        (0, RequestOutcome.SERVED),
    ]
    assert math.isnan(rows[0]["ready_s"]) and rows[1]["ready_s"] == 5.0


@pytest.mark.parametrize("engine", ENGINES)
def test_a_rate_per_instance_starts_at_ready_with_gaps_drawn_in_order(engine):
    # One instance ready at 5, rate 2 per instance, horizon 30: arrivals at 5 + g0, 5 + g0 + g1,
    # ... while before 30, the gaps the traffic_arrival stream's first draws.
    sc = scenario(
        {
            "horizon_s": 30.0,
            "startup.db_init_timeout_s": 20.0,
            "startup.before_db_s": const(5.0),
            "traffic.rate_per_instance_per_s": 2.0,
            "traffic.query_s": const(0.001),
        }
    )
    role = streams.ROLES.index("traffic_arrival")
    gaps = streams.Stream(
        streams.role_params(sc)[role], streams.stream_state(replication_key(7), role)
    )
    expected, t = [], 5.0
    while (t := t + gaps()) < 30.0:
        expected.append(t)
    rows = requests(run_one(sc, 7, engine=engine))
    assert [r["arrive_s"] for r in rows] == pytest.approx(expected, rel=1e-12)
    assert 30 < len(rows) < 70  # about 2 × 25
    assert all(r["instance"] == 0 and r["ready_s"] == 5.0 for r in rows)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_trace_is_kept_up_to_the_horizon(engine):
    sc = scenario(
        {
            "horizon_s": 10.0,
            "startup.db_init_timeout_s": 10.0,
            "traffic.trace_s": [0.5, 2.0, 10.0, 11.0],
        }
    )
    rows = requests(run_one(sc, 0, engine=engine))
    assert [r["arrive_s"] for r in rows] == [0.5, 2.0]


@pytest.mark.parametrize("engine", ENGINES)
def test_a_request_still_waiting_when_the_run_ends_is_unfinished(engine):
    # max_size 1; the first request holds the connection past the end of the run (horizon 10 +
    # db_init_timeout 10); the second queues with a pool timeout longer than that.
    sc = scenario(
        {
            "horizon_s": 10.0,
            "startup.db_init_timeout_s": 10.0,
            "pool.max_size": 1,
            "pool.timeout_s": 5000.0,
            "traffic.trace_s": [1.0, 2.0],
            "traffic.query_s": const(3000.0),
        }
    )
    rows = requests(run_one(sc, 0, engine=engine))
    assert [r["outcome"] for r in rows] == [RequestOutcome.SERVED, RequestOutcome.UNFINISHED]
    assert rows[1]["reason"] == ""


# -- the HikariCP spike-demand anchor (docs/sources.md#hikaricp-spike-demand-test) -------------


def spike(growth: str, spread_s: float) -> Scenario:
    """An idle pool of 5 (min_size and held_when_ready 5) with a maximum of 50, ready at 0;
    50 requests from t = 1, one every spread_s / 50; 150 ms per new connection (connector
    set-up 0.15 s, ample capacity, accept 0), 2 ms per query."""
    return scenario(
        {
            "pool.min_size": 5,
            "pool.held_when_ready": 5,
            "pool.max_size": 50,
            "pool.growth": growth,
            "connector.setup_s": const(0.15),
            "traffic.trace_s": [1.0 + spread_s * i / 50 for i in range(50)],
            "traffic.query_s": const(0.002),
        }
    )


@pytest.mark.parametrize("engine", ENGINES)
def test_hikaricp_spike_demand_per_waiter_opens_about_45_background_5_or_6(engine):
    """HikariCP's "Welcome to the Jungle": DBCP2 and Vibur (one connection per waiting request)
    ended with 45 connections, HikariCP with 5, and a sixth once its one background connection
    completed after the spike.

    Exactly at once, per_waiter: 5 requests take the idle connections, 45 open their own: 50.
    The wiki's 50 threads start one after another; spread over 3 ms (one every 60 µs, the case
    assumed here), the first return (at 1.002) comes before the 34th request: requests 6-33
    (29) open their own, 34-38 take the 5 returned connections, and 39-50 (11 more, at 1.00234
    to 1.00294, before any of those come back) open theirs: 5 + 40 = 45. Spread over 5 ms: 40.
    background: the 6th request queues and starts the filler; the 5 connections serve the 45
    queued ones 5 at a time (all served by 1.018); the filler's one connection comes at 1.15,
    when nobody queues and 5 are idle: it is idle too, and it stops: 6."""
    for spread_s, opened in ((0.0, 45), (0.003, 40)):
        rep = run_one(spike("per_waiter", spread_s), 0, engine=engine)
        assert (rep.traffic_connections, rep.connections_held_end) == (opened, 5 + opened)
        assert 40 <= rep.connections_held_end <= 50
        assert all(r["outcome"] == RequestOutcome.SERVED for r in requests(rep))
        rep = run_one(spike("background", spread_s), 0, engine=engine)
        assert (rep.traffic_connections, rep.connections_held_end) == (1, 6)
        assert 5 <= rep.connections_held_end <= 6
        assert max(r["wait_s"] for r in requests(rep)) == pytest.approx(0.018 - spread_s * 0.9)


def test_hikaricp_spike_demand_waits_per_waiter_150_ms_background_at_most_18_ms():
    rep = run_one(spike("per_waiter", 0.0), 0)
    waits = sorted(r["wait_s"] for r in requests(rep))
    assert waits[:5] == [0.0] * 5 and waits[5:] == pytest.approx([0.15] * 45)
    rep = run_one(spike("background", 0.0), 0)
    waits = sorted(r["wait_s"] for r in requests(rep))
    assert waits == pytest.approx([0.002 * (i // 5) for i in range(50)])


# -- figures ------------------------------------------------------------------------------------


def test_figures_over_hand_made_records():
    nan = math.nan
    ok, failed, unrouted = RequestOutcome.SERVED, RequestOutcome.FAILED, RequestOutcome.UNROUTED
    reqs = {
        "replication": np.array([0, 0, 0, 0, 1, 1]),
        "instance": np.array([0, 0, 1, -1, 0, 0]),
        "arrive_s": np.array([1.0, 2.0, 3.0, 0.5, 1.0, 100.0]),
        "ready_s": np.array([0.5, 0.5, 2.0, nan, 0.0, 0.0]),
        "checkout_s": np.array([1.0, 2.5, nan, nan, 1.2, 100.0]),
        "wait_s": np.array([0.0, 0.5, nan, nan, 0.2, 0.0]),
        "outcome": np.array([ok, ok, failed, unrouted, ok, ok], dtype=str),
        "reason": np.array(["", "", Reason.POOL_TIMEOUT, "", "", ""], dtype=str),
    }
    fleet = {"replication": np.array([0, 1, 2]), "connections_held_end": np.array([3, 4, 5])}
    fig = traffic_figures(reqs, fleet, window_s=60.0)
    assert fig.requests_per_deploy == 2.0
    assert fig.requests_failed_per_deploy.mean == pytest.approx(1 / 3)
    assert fig.requests_unrouted_per_deploy == pytest.approx(1 / 3)
    assert fig.failed_by_reason == {Reason.POOL_TIMEOUT: pytest.approx(1 / 3)}
    # waits within 60 s of ready: 0, 0.5, 0.2 (the one at 100 s is outside)
    assert fig.checkout_wait_p50_s.value == pytest.approx(0.2)
    # first served: instance 0 of replication 0 at 1.0 - 0.5, of replication 1 at 1.2 - 0
    assert (fig.first_served_s.median, fig.first_served_s.mean) == pytest.approx((0.85, 0.85))
    assert fig.connections_held_end.mean == 4.0
    assert set(fig.as_dict()) >= {
        "requests_per_deploy",
        "requests_failed_per_deploy",
        "requests_unrouted_per_deploy",
        "checkout_wait_p50_s",
        "checkout_wait_p99_s",
        "first_served_s",
        "connections_held_end",
        "failed_by_reason",
        "window_s",
    }


def test_the_order_statistic_interval_covers_its_quantile():
    # n = 100, median: ranks 40 and 61 (binomial 2.5 % and 97.5 % points, the upper plus one).
    q = quantile_interval(np.arange(1.0, 101.0), 0.5)
    assert (q.ci_low, q.ci_high) == (40.0, 61.0)
    # p99 of 100 values: the upper bound needs rank 101, beyond the sample.
    assert quantile_interval(np.arange(1.0, 101.0), 0.99).ci_high is None


# -- routing and input ----------------------------------------------------------------------------


def test_traffic_runs_on_the_fast_engine_too():
    assert unsupported(scenario({"traffic.rate_per_s": 1.0})) is None
    assert unsupported(scenario({"pool.growth": "background", "pool.timeout_s": 5.0})) is None


@pytest.mark.parametrize(
    ("toml", "field"),
    [
        ("[traffic]\nrate_per_s = 1.0\nrate_per_instance_per_s = 1.0\n", "traffic."),
        ("[traffic]\nrate_per_s = -1.0\n", "traffic.rate_per_s"),
        ("[traffic]\ntrace_s = [2.0, 1.0]\n", "traffic.trace_s"),
        ("[traffic]\nwindow_s = 0.0\n", "traffic.window_s"),
        ("[traffic]\nrate = 1.0\n", "traffic.rate"),
        ('[pool]\ngrowth = "eager"\n', "pool.growth"),
        ("[pool]\ntimeout_s = -1.0\n", "pool.timeout_s"),
    ],
)
def test_bad_traffic_input_exits_2_naming_the_field(tmp_path, capsys, toml, field):
    path = tmp_path / "bad.toml"
    path.write_text(f'name = "bad"\n{toml}', encoding="utf-8")
    out = tmp_path / "out"
    assert call_main("simulate", str(path), "-n", "1", "--out", str(out)) == 2
    err = capsys.readouterr().err
    assert field in err and "Traceback" not in err
    assert not out.exists()


# -- a closed form: a fixed pool is an M/M/c queue ------------------------------------------------


def test_a_fixed_pool_under_poisson_requests_waits_as_erlang_c():
    """max_size = held_when_ready = 2 (no growth), Poisson requests at 1.5/s, exponential queries
    of mean 1 s, no timeout in reach: an M/M/2 queue with a = 1.5. Erlang C: P(wait > 0) =
    (a²/2 · 2/(2 − a)) / (1 + a + a²/2 · 2/(2 − a)) = 4.5/7, mean wait C/(2 − 1.5) = 9/7 s. Each
    replication's share is one value; the tolerance is 4 standard errors of their mean."""
    sc = scenario(
        {
            "horizon_s": 4000.0,
            "pool.min_size": 2,
            "pool.held_when_ready": 2,
            "pool.max_size": 2,
            "pool.growth": "background",
            "pool.timeout_s": 1e6,
            "traffic.rate_per_instance_per_s": 1.5,
            "traffic.query_s": {"dist": "exponential", "mean": 1.0},
        }
    )
    shares, means = [], []
    for seed in range(8):
        rows = requests(run_one(sc, seed))
        waits = np.array([r["wait_s"] for r in rows if r["outcome"] == RequestOutcome.SERVED])
        assert waits.size > 0.95 * len(rows)
        shares.append(np.mean(waits > 0))
        means.append(waits.mean())
    for values, expected in ((shares, 4.5 / 7), (means, 9 / 7)):
        values = np.asarray(values)
        se = values.std(ddof=1) / math.sqrt(values.size)
        assert abs(values.mean() - expected) < 4 * se + 1e-9, (values.mean(), expected, se)


def test_simulate_prints_writes_and_reports_the_traffic_figures(tmp_path, capsys):
    path = tmp_path / "t.toml"
    path.write_text(
        'name = "t"\nhorizon_s = 60.0\n[fleet]\ninstances = 3\n[traffic]\nrate_per_s = 5.0\n',
        encoding="utf-8",
    )
    out = tmp_path / "out"
    args = ("simulate", str(path), "-n", "4", "--jobs", "1", "--seed", "1")
    assert call_main(*args, "--out", str(out)) == 0
    assert "Traffic after ready" in capsys.readouterr().out
    header = (out / "requests.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == ["replication", *REQUEST_COLUMNS]
    rows = (out / "replications.csv").read_text(encoding="utf-8").splitlines()[0].split(",")
    assert rows[-2:] == ["traffic_connections", "connections_held_end"]
    assert call_main(*args, "--json") == 0
    traffic = json.loads(capsys.readouterr().out)["traffic"]
    assert set(traffic) >= {
        "requests_per_deploy",
        "requests_failed_per_deploy",
        "requests_unrouted_per_deploy",
        "checkout_wait_p50_s",
        "checkout_wait_p99_s",
        "first_served_s",
        "connections_held_end",
        "failed_by_reason",
        "window_s",
    }
    assert set(traffic["requests_failed_per_deploy"]) == {"mean", "ci_low", "ci_high"}
    assert set(traffic["checkout_wait_p99_s"]) == {"value", "ci_low", "ci_high"}
    assert 200 < traffic["requests_per_deploy"] < 400  # about 5 × 60


def test_simulate_without_traffic_has_no_traffic_block(tmp_path, capsys):
    path = tmp_path / "t.toml"
    path.write_text('name = "t"\nhorizon_s = 60.0\n[fleet]\ninstances = 2\n', encoding="utf-8")
    assert call_main("simulate", str(path), "-n", "2", "--jobs", "1", "--json") == 0
    assert "traffic" not in json.loads(capsys.readouterr().out)
