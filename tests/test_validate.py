"""``validate`` on measured sets built from the model itself, with what a real start-up adds: its
timeouts end a few milliseconds past the deadline, and its counters may be missing. A right model
must still agree, a figure nobody measured must get no verdict, and a wrong model must still be
told apart."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
from builders import const, scenario

from loadtests.records import summarize_records
from sim import scenario as scenarios
from sim.calibrate.inputs import Attempt, Run
from sim.engine import run_replication
from sim.records import Outcome, reported_total
from sim.report.validation import figure, markdown
from sim.validate import (
    AGREES,
    DISAGREES,
    NOT_MEASURED,
    cut_at_deadline,
    deadline_tolerance_s,
    ks_by_runs,
    validate,
    verdict_line,
)

T0_UNIX_S = 1.8e9
DEADLINE_S = 20.0
AFTER_S = 1.0

# Six instances, one connection each through a connector with room for all: database init is
# one lognormal set-up (median 15 s, σ 0.4) plus 15 ms, so P(init reaches the 20 s deadline) =
# P(Z > ln(19.985 / 15) / 0.4) ≈ 0.24; a timed-out instance restarts 2 s later, three times at
# most.
CENSORED = {
    "horizon_s": 120.0,
    "fleet.instances": 6,
    "startup.before_db_s": const(1.0),
    "startup.db_init_timeout_s": DEADLINE_S,
    "startup.init_queries_s": const(0.01),
    "startup.after_db_s": const(AFTER_S),
    "pool.connect_timeout_s": 60.0,
    "connector.setup_s": {"dist": "lognormal", "median": 15.0, "sigma": 0.4},
    "database.accept_s": const(0.005),
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 2.0,
    "restart.max_restarts": 3,
}


def measured_run(sc, index: int, rng: np.random.Generator, counters: bool = True) -> Run:
    """Replication ``index`` of seed 99 (not the seeds validate simulates with) as a real process
    would record it: each timeout 0–20 ms past the deadline, every later attempt of that instance
    starting as much later, every figure rounded to the millisecond."""
    rec = run_replication(sc, np.random.SeedSequence(99, spawn_key=(index,))).attempts
    late: dict[int, float] = {}  # records come in the order attempts end: an instance's in order
    attempts = []
    for k in range(len(rec["instance"])):
        inst, outcome = rec["instance"][k], rec["outcome"][k]
        shift = late.get(inst, 0.0)
        db_init_s = rec["db_init_s"][k]
        if outcome == Outcome.TIMEOUT:
            db_init_s = DEADLINE_S + rng.uniform(0.0, 0.02)
            late[inst] = shift + db_init_s - DEADLINE_S
        attempts.append(
            Attempt(
                instance=f"i{inst}",
                attempt=rec["attempt"][k],
                start_unix_s=round(T0_UNIX_S + rec["start_s"][k] + shift, 3),
                before_db_s=round(rec["db_init_start_s"][k] - rec["start_s"][k], 3),
                db_init_s=round(db_init_s, 3),
                after_db_s=AFTER_S if outcome == Outcome.READY else None,
                outcome=outcome,
                connection_attempts=rec["connection_attempts"][k] if counters else None,
            )
        )
    return Run(f"run{index}", "tests", "campaign", attempts, scenario=sc)


@pytest.fixture(scope="module")
def censored():
    sc = scenario(CENSORED)
    rng = np.random.default_rng(5)
    return sc, [measured_run(sc, i, rng) for i in range(8)]


def test_a_timeout_near_the_deadline_is_cut_there_and_nothing_else():
    # At 20 s the tolerance is max(50 ms, 0.5 % of 20 s) = 100 ms; at 4 s it is 50 ms.
    assert deadline_tolerance_s(20.0) == pytest.approx(0.1)
    assert deadline_tolerance_s(4.0) == pytest.approx(0.05)
    T, R = Outcome.TIMEOUT, Outcome.READY
    cut = cut_at_deadline(
        [20.02, 19.95, 20.2, 20.01, 12.0], [T, T, T, R, Outcome.ERROR], DEADLINE_S
    )
    # Both timeouts within 100 ms sit on the deadline; one 200 ms past it is a process that
    # did not stop at its deadline, and a ready attempt past it a deadline not enforced: kept.
    assert cut.tolist() == [20.0, 20.0, 20.2, 20.01, 12.0]


def test_timeouts_a_few_ms_past_the_deadline_agree_with_the_models(censored):
    sc, runs = censored
    timeouts = [a.db_init_s for r in runs for a in r.attempts if a.outcome == Outcome.TIMEOUT]
    assert len(timeouts) >= 10 and min(timeouts) >= 20.0 and max(timeouts) <= 20.02
    v = validate(runs, replications=60, seed=0)
    verdicts = {f.name: f.verdict for f in v.figures}
    assert verdicts["database-init durations (KS D)"] == AGREES, v.figures
    assert all(x == AGREES for x in verdicts.values()), v.figures
    # Uncut, the same durations disagree: every measured timeout lies above every simulated one,
    # so the KS distance is about the timeouts' share (the false disagreement this fixes).
    raw = [np.asarray([a.db_init_s for a in r.attempts]) for r in runs]
    model = [
        np.asarray(
            run_replication(sc, np.random.SeedSequence(0, spawn_key=(j,))).attempts["db_init_s"]
        )
        for j in range(60)
    ]
    sims = [model] * len(runs)  # every run has the same scenario
    d, p = ks_by_runs(raw, sims, seed=0)
    assert d > 0.15 and p < 0.01, (d, p)


def test_the_fleet_time_to_ready_loses_the_overshoot_of_earlier_timeouts():
    # One instance: a timeout of 20.02 s (1 s before it), a restart 2 s after that exit, 1 s
    # before the database, 5 s of init, 1 s after: ready 0 + 1 + 20.02 + 2 + 1 + 5 + 1 = 30.02 s
    # after its start as recorded; the model's deadline ends at 20 s exactly, so 30.00 s.
    sc = scenario({**CENSORED, "fleet.instances": 1})
    attempts = [
        Attempt("a", 1, T0_UNIX_S, 1.0, 20.02, None, Outcome.TIMEOUT, connection_attempts=1),
        Attempt("a", 2, T0_UNIX_S + 23.02, 1.0, 5.0, 1.0, Outcome.READY, connection_attempts=1),
    ]
    v = validate([Run("one", "tests", "campaign", attempts, scenario=sc)], replications=10)
    fleet = next(f for f in v.figures if f.name == "fleet time-to-ready (s)")
    assert fleet.measured == pytest.approx(30.0)


def test_a_counter_never_reported_is_not_measured_and_spoils_no_verdict(censored):
    sc, runs = censored
    rng = np.random.default_rng(5)
    silent = [measured_run(sc, i, rng, counters=False) for i in range(len(runs))]
    v = validate(silent, replications=60, seed=0)
    amp = next(f for f in v.figures if f.name == "work amplification")
    assert amp.verdict == NOT_MEASURED and math.isnan(amp.measured)
    assert amp.predicted == pytest.approx(1.0, abs=0.6)  # the model's is still shown
    judged = [f for f in v.figures if f.verdict != NOT_MEASURED]
    assert len(judged) == len(v.figures) - 1 and all(f.verdict == AGREES for f in judged)
    line = verdict_line(v)
    assert line.startswith(f"all {len(judged)} figures agree") and "work amplification" in line
    row = next(
        r
        for r in markdown(v, "model", "startsim validate").splitlines()
        if r.startswith("| work ampl")
    )
    assert "| not measured |" in row and "nan" not in row  # validation.md says so too
    # Measured in some runs only: those runs are compared, and the figure says so.
    mixed = validate([*runs[:3], *silent[3:]], replications=60, seed=0)
    amp = next(f for f in mixed.figures if f.name == "work amplification")
    assert amp.verdict == AGREES and "mean of 3 runs (of 8" in amp.method


def test_a_campaign_summary_without_the_counter_has_no_work_amplification():
    sc = scenarios.resolve("gang-allocation").with_overrides({"fleet.instances": 1})
    record = {
        "instance": 0,
        "attempt": 1,
        "outcome": Outcome.READY.value,
        "start_unix_s": 100.0,
        "ready_unix_s": 101.0,
    }
    assert summarize_records(sc, [record], [], seed=0)["work_amplification"] is None
    record["connection_attempts"] = None  # an --instance-command record: null, not reported
    assert summarize_records(sc, [record], [], seed=0)["work_amplification"] is None
    assert reported_total([2, 3]) == 5 and math.isnan(reported_total([2, None]))


def test_a_model_with_other_durations_still_disagrees(censored):
    # Set-ups of median 8 s instead of 15: database init is about half as long and rarely
    # reaches the deadline, which the censored comparison must still see.
    sc, runs = censored
    fast = sc.with_overrides(
        {"connector.setup_s": {"dist": "lognormal", "median": 8.0, "sigma": 0.4}}
    )
    v = validate(runs, fast, replications=60, seed=0)
    verdicts = {f.name: f.verdict for f in v.figures}
    assert verdicts["database-init durations (KS D)"] == DISAGREES, v.figures
    assert verdicts["P(database init reaches the deadline)"] == DISAGREES, v.figures


# Traffic after ready (docs/model.md): four instances, 40 requests a second between them for
# 15 s, 50 ms queries; a pool opens a connection per waiting request (0.2 s median set-ups) up to
# 5, into 17 free slots.
TRAFFIC = {
    "horizon_s": 15.0,
    "fleet.instances": 4,
    "startup.before_db_s": const(0.0),
    "startup.db_init_timeout_s": 10.0,
    "startup.init_queries_s": const(0.01),
    "startup.after_db_s": const(0.0),
    "pool.min_size": 1,
    "pool.max_size": 5,
    "pool.held_when_ready": 1,
    "pool.timeout_s": 0.5,
    "database.max_connections": 20,
    "database.reserved_connections": 3,
    "database.accept_s": {"dist": "lognormal", "median": 0.015, "sigma": 0.5},
    "connector.setups_per_instance": 8,
    "connector.setup_s": {"dist": "lognormal", "median": 0.2, "sigma": 0.5},
    "traffic.rate_per_s": 40.0,
    "traffic.query_s": {"dist": "lognormal", "median": 0.05, "sigma": 0.5},
}


def traffic_campaign(sc, index: int, folder, rng: np.random.Generator) -> Run:
    """Replication ``index`` of seed 99 written as a campaign folder's requests.jsonl, with what
    the harness adds: every served checkout 5-100 µs late (asyncio's own scheduling)."""
    import json

    rep = run_replication(sc, np.random.SeedSequence(99, spawn_key=(index,)))
    folder.mkdir()
    lines = []
    req = rep.requests
    for k in range(len(req["outcome"])):
        row = {key: req[key][k] for key in req}
        if row["outcome"] == "served":
            row["checkout_s"] += rng.uniform(5e-6, 1e-4)
            row["wait_s"] = row["checkout_s"] - row["arrive_s"]
        row = {key: None if isinstance(v, float) and math.isnan(v) else v for key, v in row.items()}
        lines.append(json.dumps({"run_id": f"run{index}", **row}))
    (folder / "requests.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    attempts = [
        Attempt(f"i{i}", 1, T0_UNIX_S, 0.0, d, 0.0, Outcome.READY, connection_attempts=1)
        for i, d in zip(rep.attempts["instance"], rep.attempts["db_init_s"], strict=True)
    ]
    return Run(f"run{index}", str(folder), "campaign", attempts, scenario=sc)


def test_checkout_waits_a_few_microseconds_late_agree_and_a_slower_path_does_not(tmp_path):
    sc = scenario(TRAFFIC)
    rng = np.random.default_rng(3)
    runs = [traffic_campaign(sc, i, tmp_path / f"run{i}", rng) for i in range(2)]
    v = validate(runs, replications=60, seed=0)
    figs = {f.name: f for f in v.figures}
    p50, p99 = (
        figs["checkout wait p50 in the window (s)"],
        figs["checkout wait p99 in the window (s)"],
    )
    failed = figs["failed requests per deploy"]
    for f in (p50, p99, failed):
        assert f.verdict == AGREES, f
        assert f.predicted_interval is not None
    assert p50.measured == 0.0  # the harness's microseconds are not the pool's wait
    assert p99.measured_interval is not None and p99.measured > 0.1  # a new connection's wait
    assert "order statistics" in p99.method
    # validation.png gains the waits' CDFs, measured and simulated; validation.md says what.
    assert v.measured_waits.size > 100 and v.simulated_waits.size > v.measured_waits.size
    assert figure(v, tmp_path) == "validation.png" and (tmp_path / "validation.png").exists()
    assert "Traffic after ready" in markdown(v, "model", "startsim validate")
    # A model whose connector sets up in a third of the time predicts p99 waits far shorter.
    quick = sc.with_overrides(
        {"connector.setup_s": {"dist": "lognormal", "median": 0.067, "sigma": 0.5}}
    )
    v = validate(runs, quick, replications=60, seed=0)
    p99 = next(f for f in v.figures if f.name == "checkout wait p99 in the window (s)")
    assert p99.verdict == DISAGREES, p99
    rows = markdown(v, "model", "startsim validate").splitlines()
    row = next(r for r in rows if r.startswith("| checkout wait p99"))
    assert "disagrees" in row


def test_a_campaign_without_requests_has_no_traffic_figure(censored):
    _, runs = censored
    v = validate(runs[:2], replications=10, seed=0)
    assert not [f for f in v.figures if "checkout" in f.name or "requests" in f.name]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ('{"instance": 0}', "arrive_s: missing"),
        (
            '{"instance": 0, "arrive_s": 1.0, "ready_s": 0.5, "checkout_s": null, "wait_s": null, '
            '"outcome": "lost", "reason": ""}',
            "outcome = 'lost': expected one of served, failed",
        ),
        (
            '{"instance": 0, "arrive_s": "soon", "ready_s": 0.5, "checkout_s": null, '
            '"wait_s": null, "outcome": "failed", "reason": "pool_timeout"}',
            "arrive_s = 'soon': expected seconds or null",
        ),
        ("[1, 2]", "not a JSON object"),
    ],
    ids=["missing", "outcome", "time", "not-object"],
)
def test_a_bad_request_record_names_its_line_and_field(tmp_path, line, says):
    from sim.errors import InputError
    from sim.measured_requests import read_requests

    good = (
        '{"instance": -1, "arrive_s": 0.1, "ready_s": null, "checkout_s": null, "wait_s": null, '
        '"outcome": "unrouted", "reason": ""}'
    )
    (tmp_path / "requests.jsonl").write_text(f"{good}\n{line}\n", encoding="utf-8")
    with pytest.raises(InputError, match=re.escape(f"requests.jsonl:2: {says}")):
        read_requests(tmp_path)
    # A last line cut short by a kill is skipped, as the campaign's other records' is.
    (tmp_path / "requests.jsonl").write_text(f"{good}\n{good[:30]}", encoding="utf-8")
    assert read_requests(tmp_path)["outcome"].tolist() == ["unrouted"]
