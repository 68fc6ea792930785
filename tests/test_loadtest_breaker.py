"""A start-up that stays up behind a circuit breaker, in a load campaign (docs/loadtests.md, "A
start-up that stays up"; docs/model.md, "Circuit breakers"): the built-in instance and the
example start-up (a real process, real asyncpg connections) try again through a
``sim.breaker.BreakerState`` instead of exiting. Against the throwaway PostgreSQL, whose 17 free
slots the test holds all but one of until a few tries have failed with 53300 (each try wants
two connections; the campaign's preflight connection needs the one): the measured tries, their
starts and their waits for the open breaker are the rule's, hand-computed with constant
durations."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import os
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pytest
from test_loadtest import campaign, startsim

from loadtests.command import FAILED_LINE, READY_LINE, CommandResult, apply_line, child_env
from loadtests.records import read_jsonl
from loadtests.settings import check_breaker
from loadtests.stayup import admitted, breaker_env
from sim.breaker import Breaker, BreakerState
from sim.calibrate.inputs import read_campaign
from sim.engines import run_one
from sim.errors import UsageError
from sim.records import Outcome, Reason
from sim.scenario import load
from sim.validate import AGREES, validate

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "examples" / "sqlalchemy_startup.py"
HELD_SLOTS = 16  # of the pg_server fixture's 17 free (max_connections 20, 3 reserved)
TOLERANCE_S = 0.25  # the harness's own timing on a shared 2-core machine

# Instances that start at once, two connections each, no retry within a try (a refused
# connection fails the try at once: 53300), no restart; a breaker that opens after fail_max
# failed tries for reset_timeout_s, and a try retry_s after each failed one.
SCENARIO = """
name = "breaker"
horizon_s = {horizon_s}
[fleet]
instances = {instances}
arrival = "burst"
warm_instances = {warm}
[startup]
before_db_s = {{ dist = "constant", value = 0.0 }}
db_init_timeout_s = 2.0
init_queries_s = {{ dist = "constant", value = 0.01 }}
after_db_s = {{ dist = "constant", value = 0.0 }}
[pool]
min_size = 2
max_size = 2
held_when_ready = 2
connect_timeout_s = 3.0
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
[restart]
policy = "none"
[breaker]
form = "{form}"
fail_max = 2
reset_timeout_s = 2.0
retry_s = 0.5
"""
# The same try as start-up phases: a connection of its own before database init (closed when
# that phase ends), then the pool start as database init's phase.
PHASES = """
[[startup.phases]]
name = "migrations"
db_init = false
connections = 1
keep = false
[[startup.phases]]
name = "pool"
pool = true
"""


def scenario_file(
    tmp_path: Path,
    form: str,
    instances: int = 1,
    phases: bool = False,
    horizon_s: float = 20.0,
    warm: int = 0,
) -> Path:
    path = tmp_path / f"breaker-{form}.toml"
    text = SCENARIO.format(form=form, instances=instances, horizon_s=horizon_s, warm=warm)
    text += PHASES if phases else ""
    path.write_text(text, encoding="utf-8")
    return path


class SlotHolder:
    """Holds all but one free slot of the server from a thread of its own until ``release_after``
    attempt records exist in the campaign's results (or the campaign ended, or ``limit_s``
    passed)."""

    def __init__(self, dsn: str, out: Path, release_after: int, limit_s: float = 60.0) -> None:
        self.dsn, self.out, self.release_after, self.limit_s = dsn, out, release_after, limit_s
        self.opened = threading.Event()
        self.done = threading.Event()  # the campaign is over: release now
        self.released_at: float | None = None  # Unix seconds
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> SlotHolder:
        self.thread.start()
        assert self.opened.wait(30), "could not fill the server's free slots"
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(30)

    def _records(self) -> int:
        return sum(len(read_jsonl(p)) for p in self.out.glob("*/records.jsonl"))

    async def _run(self) -> None:
        conns = [
            await asyncpg.connect(self.dsn, server_settings={"application_name": "slot-holder"})
            for _ in range(HELD_SLOTS)
        ]
        self.opened.set()
        end = time.monotonic() + self.limit_s
        while (
            self._records() < self.release_after
            and time.monotonic() < end
            and not self.done.is_set()
            and not any(self.out.glob("*/summary.json"))  # the campaign is over
        ):
            await asyncio.sleep(0.02)
        for con in conns:
            await con.close()
        self.released_at = time.time()


def by_instance(records: list[dict]) -> dict[int, list[dict]]:
    out: dict[int, list[dict]] = {}
    for r in sorted(records, key=lambda r: (r["instance"], r["attempt"])):
        out.setdefault(r["instance"], []).append(r)
    return out


def init_start(r: dict) -> float:
    return r["start_unix_s"] + r["before_db_s"]


def try_end(r: dict) -> float:
    return init_start(r) + r["db_init_s"]


def replay(tries: list[dict], fail_max: int = 2, reset_s: float = 2.0, retry_s: float = 0.5):
    """The rule replayed over the measured tries (all of one breaker), in time order: each try
    after its instance's first is due ``retry_s`` after that instance's last try ended, and asks
    the breaker then (again at the open time's end while it is open); each try ends when it was
    measured to end, ready or failed. Returns (try, due, admitted) for the tries after the
    first of each instance."""
    state = BreakerState(fail_max, reset_s)
    tries = sorted(tries, key=lambda r: (r["instance"], r["attempt"]))
    nxt = {id(a): b for a, b in itertools.pairwise(tries) if a["instance"] == b["instance"]}
    events = [(init_start(r), 1, i, r) for i, r in enumerate(tries) if r["attempt"] == 1]
    heapq.heapify(events)
    due: dict[int, float] = {}
    out = []
    while events:
        t, kind, i, r = heapq.heappop(events)
        if kind == 0:  # it ends (before an ask at the same instant)
            if r["outcome"] == Outcome.READY:
                state.succeeded()
                continue
            state.failed(t)
            if id(r) in nxt:
                b = nxt[id(r)]
                due[id(b)] = t + retry_s
                heapq.heappush(events, (t + retry_s, 1, i + 1, b))
        elif state.admits(t):
            if id(r) in due:
                out.append((r, due[id(r)], t))
            heapq.heappush(events, (max(try_end(r), t), 0, i, r))
        else:
            heapq.heappush(events, (state.wait_until(0.0, 0.0), 1, i, r))
    return out


def assert_tries(tries: list[dict], waits_s: list[float], retry_s: float = 0.5) -> None:
    """By hand: each try after the first due ``retry_s`` after the last one ended, and its wait
    for the breaker ``waits_s`` (the first's: its before-db phase, 0 here)."""
    for r, wait_s in zip(tries, waits_s, strict=True):
        assert abs(r["before_db_s"] - wait_s) < TOLERANCE_S, r
    for a, b in itertools.pairwise(tries):
        assert abs(b["start_unix_s"] - try_end(a) - retry_s) < TOLERANCE_S, b


def assert_follows_the_rule(tries: list[dict], **rule) -> None:
    t0 = min(r["start_unix_s"] for r in tries)
    for r in sorted(tries, key=lambda r: (r["instance"], r["attempt"])):
        print(  # the figures docs/loadtests.md quotes
            f"instance {r['instance']} try {r['attempt']}: due {r['start_unix_s'] - t0:.3f} s, "
            f"waited {r['before_db_s']:.3f} s, {r['outcome']} after {r['db_init_s']:.3f} s"
        )
    for r, due, at in replay(tries, **rule):
        assert abs(r["start_unix_s"] - due) < TOLERANCE_S, (r, due)
        assert abs(init_start(r) - at) < TOLERANCE_S, (r, at)


@pytest.mark.postgres
@pytest.mark.slow
@pytest.mark.parametrize("phases", [False, True], ids=["pool", "phases"])
def test_a_start_up_that_stays_up_tries_through_its_breaker(pg_server, tmp_path, phases):
    """One instance: 53300, 53300 (the breaker opens for 2 s), a try due 0.5 s later (at about
    1.0 s) waits 1.5 s for the open time's end, fails half-open (open again for 2 s), the try due
    0.5 s later waits 1.5 s again and is ready (the slots were freed after the third try). Four
    tries, one process; with start-up phases, each try runs them all again from the first."""
    path = scenario_file(tmp_path, "stay_up", phases=phases)
    with SlotHolder(pg_server.dsn, tmp_path / "results", release_after=3) as holder:
        _, records = campaign(pg_server, tmp_path, path, "--seed", "1")
    tries = by_instance(records)[0]
    assert [r["attempt"] for r in tries] == [1, 2, 3, 4]
    outcomes = [(r["outcome"], r["reason"]) for r in tries]
    assert outcomes == [(Outcome.REJECTED, Reason.TOO_MANY_CLIENTS)] * 3 + [(Outcome.READY, "")]
    assert [r["final"] for r in tries] == [False, False, False, True]
    assert_tries(tries, [0.0, 0.0, 1.5, 1.5])
    assert holder.released_at < init_start(tries[3]) - 1.0
    assert_follows_the_rule(tries)
    if phases:  # refused in the pool's phase, after the migrations' connection came and went
        assert [r["phase"] for r in tries] == ["pool"] * 3 + [""]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_try_due_after_the_horizon_does_not_begin(pg_server, tmp_path):
    """Eight warm instances hold 16 slots for the whole run (the model's way of slots that never
    come back), so within a 2.9 s horizon: tries at about 0 and 0.5 s, the third waits until
    about 2.5 s (before the horizon) and fails; the fourth, due about 3.0 s, does not begin:
    three records, none ready, none final. The model says the same."""
    path = scenario_file(tmp_path, "stay_up", horizon_s=2.9, warm=8)
    run_dir, records = campaign(pg_server, tmp_path, path, "--seed", "1")
    assert [(r["attempt"], r["outcome"], r["final"]) for r in records] == [
        (k, Outcome.REJECTED, False) for k in (1, 2, 3)
    ]
    assert_tries(records, [0.0, 0.0, 1.5])
    model = run_one(load(path), 1).attempts
    assert sorted(int(a) for a in model["attempt"]) == [1, 2, 3]
    assert json.loads((run_dir / "summary.json").read_text())["never_ready_fraction"] == 1.0


@pytest.mark.postgres
@pytest.mark.slow
def test_in_process_exits_as_without_a_breaker(pg_server, tmp_path):
    """in_process: the breaker dies with the process, which makes one try and exits (no
    restart here): one record, rejected, final."""
    path = scenario_file(tmp_path, "in_process")
    with SlotHolder(pg_server.dsn, tmp_path / "results", release_after=1):
        _, records = campaign(pg_server, tmp_path, path, "--seed", "1")
    assert [(r["attempt"], r["outcome"], r["final"]) for r in records] == [
        (1, Outcome.REJECTED, True)
    ]


@pytest.mark.postgres
@pytest.mark.slow
def test_a_shared_breaker_holds_the_whole_fleet(pg_server, tmp_path):
    """Two instances, one breaker: their first failures (t ≈ 0) open it until 2.0 s; both tries
    due at 0.5 s wait 1.5 s, both fail half-open (the first to end opens it for 2 s, the second
    changes nothing), both tries due 0.5 s later wait 1.5 s again and are ready."""
    path = scenario_file(tmp_path, "shared", instances=2)
    with SlotHolder(pg_server.dsn, tmp_path / "results", release_after=4):
        _, records = campaign(pg_server, tmp_path, path, "--seed", "1")
    fleet = by_instance(records)
    assert len(fleet) == 2
    for tries in fleet.values():
        assert [r["outcome"] for r in tries] == [Outcome.REJECTED] * 2 + [Outcome.READY]
        assert_tries(tries, [0.0, 1.5, 1.5])
    # One breaker: both instances' tries began together, the second when it closed again.
    a, b = fleet.values()
    for ra, rb in zip(a[1:], b[1:], strict=True):
        assert abs(init_start(ra) - init_start(rb)) < TOLERANCE_S
    assert_follows_the_rule(records)


@pytest.mark.postgres
@pytest.mark.slow
def test_a_shared_breaker_is_refused_where_it_cannot_be_shared(pg_server, tmp_path):
    path = scenario_file(tmp_path, "shared", instances=2)
    out = tmp_path / "results"
    for extra, words in (
        (["--workers", "1"], "workers"),
        (["--instance-command", f"{sys.executable} {EXAMPLE}"], "--instance-command"),
    ):
        res = startsim("loadtest", str(path), "--dsn", pg_server.dsn, "--out", str(out), *extra)
        assert res.returncode == 2, res.stderr
        (line,) = res.stderr.strip().splitlines()
        assert line.startswith('error: breaker.form = "shared"') and words in line, line
        assert not out.exists() or not any(out.iterdir())


@pytest.mark.postgres
@pytest.mark.slow
def test_the_example_stays_up_as_a_real_process(pg_server, tmp_path):
    """examples/sqlalchemy_startup.py in its stay-up mode (the scenario's [breaker], passed in
    STARTSIM_BREAKER_*): one process, its tries recorded as attempts, the breaker's waits
    the rule's (its first try starts after the interpreter's own start-up)."""
    pytest.importorskip("sqlalchemy")
    path = scenario_file(tmp_path, "stay_up")
    command = f"{sys.executable} {EXAMPLE} --warmup-connections 2 --db-init-timeout-s 2"
    with SlotHolder(pg_server.dsn, tmp_path / "results", release_after=3):
        _, records = campaign(
            pg_server, tmp_path, path, "--seed", "1", "--instance-command", command
        )
    tries = by_instance(records)[0]
    assert [r["attempt"] for r in tries] == [1, 2, 3, 4]
    assert [r["outcome"] for r in tries] == [Outcome.REJECTED] * 3 + [Outcome.READY]
    assert all(r["sqlstate"] == Reason.TOO_MANY_CLIENTS for r in tries[:3])
    assert [r["exit_code"] for r in tries] == [None] * 4  # one process, never exited
    assert_tries(tries[1:], [0.0, 1.5, 1.5])  # the first waited for its interpreter
    assert_follows_the_rule(tries)


# Six instances of four connections each, in two waves: the first four fill 16 of the 17 free
# slots and hold them through 3 s of init queries (then keep one each); the two of the second
# wave (at 1 s) are refused (53300), again 0.5 s later, and their breakers open for 4 s; at
# about 5.5 s both try half-open, find 13 free slots, and are ready about 3 s later. Tries per
# instance 1, 1, 1, 1, 3, 3; fleet ready at about 8.5 s. No slot holder: the fleet's own
# contention, which the model reproduces, so `validate` compares the two.
VALIDATED = """
name = "breaker-validate"
horizon_s = 20.0
[fleet]
instances = 6
arrival = "waves"
waves = [{ at_s = 0.0, count = 4 }, { at_s = 1.0, count = 2 }]
[startup]
before_db_s = { dist = "constant", value = 0.0 }
db_init_timeout_s = 10.0
init_queries_s = { dist = "lognormal", median = 3.0, sigma = 0.1 }
after_db_s = { dist = "constant", value = 0.0 }
[pool]
min_size = 4
max_size = 4
held_when_ready = 1
start = "concurrent"
connect_timeout_s = 3.0
retry_backoff_s = 0.0
[database]
max_connections = 20
reserved_connections = 3
accept_s = { dist = "lognormal", median = 0.035, sigma = 0.3 }
[restart]
policy = "none"
[connector]
min_instances = 1
max_instances = 1
setups_per_instance = 64
setup_s = { dist = "constant", value = 0.002 }
[breaker]
form = "stay_up"
fail_max = 2
reset_timeout_s = 4.0
retry_s = 0.5
"""


@pytest.mark.postgres
@pytest.mark.slow
def test_validate_compares_a_stay_up_campaign_with_the_model(pg_server, tmp_path):
    path = tmp_path / "breaker-validate.toml"
    path.write_text(VALIDATED, encoding="utf-8")
    run_dir, records = campaign(pg_server, tmp_path, path, "--seed", "3")
    tries = sorted(len(t) for t in by_instance(records).values())
    assert tries == [1, 1, 1, 1, 3, 3], tries
    v = validate([read_campaign(run_dir)], replications=100, seed=1)
    figures = {f.name: f for f in v.figures}
    report = "\n".join(
        f"{f.name}: measured {f.measured:.4g}, predicted {f.predicted:.4g} "
        f"{f.predicted_interval}, {f.verdict}"
        for f in v.figures
    )
    print(report)
    print("refused tries' db_init_s:", [r["db_init_s"] for r in records if not r["final"]])
    for name in ("restarts per instance", "rejections per instance", "fleet time-to-ready (s)"):
        assert figures[name].verdict == AGREES, report
    assert 7.5 < figures["fleet time-to-ready (s)"].measured < 9.5
    assert figures["restarts per instance"].measured == pytest.approx(4 / 6)


# -- the parts, without a server -------------------------------------------------------------


def test_a_stay_up_process_says_its_try_failed_and_when_the_next_is_due():
    res = CommandResult(2, start_unix_s=100.0)
    assert apply_line(res, '{"try": 2}', 101.0) == ""
    assert res.start_unix_s == 101.0  # the try was due when the line came
    assert apply_line(res, '{"phase": "database", "s": 0.5}', 103.0) == ""
    assert res.before_db_s == pytest.approx(1.5)  # its wait for the breaker
    assert apply_line(res, '{"sqlstate": "53300"}', 103.0) == ""
    assert apply_line(res, '{"try_failed": 1}', 103.0) == FAILED_LINE
    assert res.exit_code == 1
    for line in ('{"try_failed": 0}', '{"try_failed": true}', '{"try_failed": "3"}'):
        assert apply_line(CommandResult(1, start_unix_s=0.0), line, 1.0) == ""
    assert apply_line(res, '{"ready": true}', 104.0) == READY_LINE


def test_the_scenario_breaker_reaches_the_command(tmp_path):
    path = scenario_file(tmp_path, "stay_up")
    env = breaker_env(load(path).breaker)
    assert env == {
        "STARTSIM_BREAKER_FORM": "stay_up",
        "STARTSIM_BREAKER_FAIL_MAX": "2",
        "STARTSIM_BREAKER_RESET_TIMEOUT_S": "2.0",
        "STARTSIM_BREAKER_OPEN_JITTER": "0.0",
        "STARTSIM_BREAKER_RETRY_S": "0.5",
    }
    connect = {"host": ["127.0.0.1"], "port": [5432]}
    child = child_env({}, "postgresql://app@127.0.0.1:5432/app", connect, env)
    assert child["STARTSIM_BREAKER_FORM"] == "stay_up"
    assert breaker_env(Breaker()) == {}  # no [breaker]: nothing for the command


def test_shared_is_refused_with_workers_or_a_command_only(tmp_path):
    shared = load(scenario_file(tmp_path, "shared"))
    check_breaker(shared, command=False, distributed=False)
    for command, distributed in ((True, False), (False, True)):
        with pytest.raises(UsageError, match=r'breaker\.form = "shared"'):
            check_breaker(shared, command, distributed)
    check_breaker(load(scenario_file(tmp_path, "stay_up")), command=True, distributed=True)


def test_a_wait_for_the_open_breaker_ends_at_its_open_time_plus_its_jitter():
    """admitted() on a fake clock: refused while open, one draw per wait, no try past the
    horizon."""
    now = [0.0]
    draws = iter([0.5, 0.25])

    async def run(last_s: float) -> tuple[bool, list[float]]:
        state = BreakerState(1, 2.0)
        state.failed(0.0)  # open until 2.0
        sleeps = []

        async def fake_sleep(s):
            sleeps.append(s)
            now[0] += s

        real, asyncio.sleep = asyncio.sleep, fake_sleep
        try:
            ok = await admitted(state, 0.5, lambda: next(draws), last_s, clock=lambda: now[0])
        finally:
            asyncio.sleep = real
        return ok, sleeps

    ok, sleeps = asyncio.run(run(10.0))
    assert ok and sleeps == [2.0 + 2.0 * 0.5 * 0.5]  # open_until + reset × jitter × u
    now[0] = 0.0
    ok, sleeps = asyncio.run(run(2.2))  # 2.0 + 2.0 × 0.5 × 0.25 = 2.25: past the horizon
    assert not ok and sleeps == []


@pytest.mark.postgres
@pytest.mark.slow
def test_a_command_without_a_stay_up_mode_is_restarted_as_restart_says(pg_server, tmp_path):
    """The scenario stays up, the command exits all the same (the example with its own
    BREAKER_FORM=none): its exit is a restart as [restart] says (none here), not a try."""
    pytest.importorskip("sqlalchemy")
    path = scenario_file(tmp_path, "stay_up")
    command = f"{sys.executable} {EXAMPLE} --warmup-connections 2 --db-init-timeout-s 2"
    env = dict(os.environ, BREAKER_FORM="none")
    with SlotHolder(pg_server.dsn, tmp_path / "results", release_after=99):
        _, records = campaign(
            pg_server, tmp_path, path, "--seed", "1", "--instance-command", command, env=env
        )
    assert [(r["attempt"], r["outcome"], r["exit_code"], r["final"]) for r in records] == [
        (1, Outcome.REJECTED, 1, True)
    ]
