"""Input that must be refused before any work (issue 7, item 5): non-finite numbers, draws that
overflow, sizes one machine cannot hold, unbounded work, empty files, misplaced fields, names that
would steer where results go. Each refusal is one line naming the file, the field and the value."""

from __future__ import annotations

import math
import os
import subprocess

import pytest
from builders import const, scenario
from console import STARTSIM

from sim import scenario as scenarios
from sim.engine import Engine
from sim.errors import ScenarioError, StartsimError, UsageError
from sim.output import safe_folder_name
from sim.recommend import Settings, recommend
from sim.scenario import MAX_ATTEMPTS, Restart, Scenario
from sim.sweep import parse_vary

# case: (TOML after `name = "<case>"`, field named, value shown, words of the problem)
BAD = {
    "inf-horizon": ("horizon_s = inf\n", "horizon_s", "inf", "finite"),
    "nan-deadline": (
        "[startup]\ndb_init_timeout_s = nan\n",
        "startup.db_init_timeout_s",
        "nan",
        "finite",
    ),
    "inf-distribution": (
        '[connector]\nsetup_s = { dist = "uniform", low = 0.0, high = inf }\n',
        "connector.setup_s.high",
        "inf",
        "finite",
    ),
    "nan-empirical": (
        '[startup]\nbefore_db_s = { dist = "empirical", values = [1.0, nan] }\n',
        "startup.before_db_s.values.1",
        "nan",
        "finite",
    ),
    "lognormal-overflows": (
        '[startup]\nbefore_db_s = { dist = "lognormal", median = 2.0, sigma = 1000.0 }\n',
        "startup.before_db_s",
        "'sigma': 1000.0",
        "inf",
    ),
    "lognormal-too-wide": (
        '[startup]\nbefore_db_s = { dist = "lognormal", median = 2.0, sigma = 4.0 }\n',
        "startup.before_db_s",
        "'sigma': 4.0",
        "3.32e+12 s",
    ),
    "gamma-huge-scale": (
        '[database]\naccept_s = { dist = "gamma", shape = 2.0, scale = 1e300 }\n',
        "database.accept_s.scale",
        "1e+300",
        "at most 1e+12 s",
    ),
    "gamma-huge-shape": (
        '[database]\naccept_s = { dist = "gamma", shape = 1e11, scale = 100.0 }\n',
        "database.accept_s",
        "'shape': 100000000000.0",
        "1e+13 s",
    ),
    "exponential-huge-mean": (
        '[startup]\nafter_db_s = { dist = "exponential", mean = 1e11 }\n',
        "startup.after_db_s",
        "'mean': 100000000000.0",
        "2.76e+12 s",
    ),
    "too-many-instances": (
        "[fleet]\ninstances = 1000000000\n",
        "fleet.instances",
        "1000000000",
        "at most 100,000",
    ),
    "too-many-attempts": (
        "[fleet]\ninstances = 100000\n[pool]\nmin_size = 1\nheld_when_ready = 1\n"
        "[restart]\nmax_restarts = 20\n",
        "restart.max_restarts",
        "20",
        "2,100,000 attempt records",
    ),
    "too-many-connections-at-once": (
        "[fleet]\ninstances = 100000\n[pool]\nmin_size = 30\n[restart]\nmax_restarts = 1\n",
        "pool.min_size",
        "30",
        "3,000,000 connections",
    ),
    "max-connections": (
        "[database]\nmax_connections = 1000000\n",
        "database.max_connections",
        "1000000",
        "262,143",
    ),
    "deadline-past-horizon": (
        "[startup]\ndb_init_timeout_s = 10000.0\n",
        "startup.db_init_timeout_s",
        "10000.0",
        "horizon_s (600)",
    ),
    "endless-retries": (
        "[pool]\nretry_backoff_s = 0.0001\n",
        "pool.retry_backoff_s",
        "0.0001",
        "200,000 pool starts",
    ),
    "endless-jittered-retries": (
        '[pool]\nretry_backoff_s = 0.003\nretry_jitter = "full"\n',
        "pool.retry_backoff_s",
        "0.003",
        "13,333 pool starts",
    ),
    "jitter-word": (
        '[restart]\njitter = "half"\n',
        "restart.jitter",
        "'half'",
        '"full" or a fraction from 0 to 1',
    ),
    "jitter-too-wide": ("[pool]\nretry_jitter = 1.5\n", "pool.retry_jitter", "1.5", "from 0 to 1"),
    "unknown-preset": (
        '[restart]\npreset = "systemd"\n',
        "restart.preset",
        "'systemd'",
        "'kubernetes-fast'",
    ),
    "unknown-pool-start": ('[pool]\nstart = "lazy"\n', "pool.start", "'lazy'", "'background'"),
    "huge-horizon": ("horizon_s = 1e300\n", "horizon_s", "1e+300", "at most 1e+12 s"),
    "rate-near-zero": (
        '[fleet]\narrival = "poisson"\nrate_per_s = 1e-300\n',
        "fleet.rate_per_s",
        "1e-300",
        "at least 1e-12",
    ),
    "waves-without-waves": (
        "[fleet]\ninstances = 2\nwaves = [{ at_s = 0.0, count = 2 }]\n",
        "fleet.waves",
        "'count': 2",
        "arrival is 'burst'",
    ),
    "empirical-too-long": (
        '[startup]\nbefore_db_s = { dist = "empirical", values = ['
        + ", ".join(["1.0"] * 100_001)
        + "] }\n",
        "startup.before_db_s.values",
        "[1.0, 1.0",
        "at most 100000 items",
    ),
}

BAD_NAMES = {
    "parent": ('"../../etc"', "'../../etc'", "'/'"),
    "slash": ('"a/b"', "'a/b'", "'/'"),
    "backslash": ('"a\\\\b"', "'a\\\\b'", "'\\'"),
    "newline": ('"a\\nb"', "'a\\nb'", "control characters"),
    "long": ('"' + "x" * 101 + '"', "'xxxx", "at most 100 characters"),
}


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text and len(text) < 400, text
    return text


@pytest.mark.parametrize("case", BAD)
def test_each_bad_scenario_is_refused_naming_field_value_and_problem(case):
    body, field, value, problem = BAD[case]
    with pytest.raises(ScenarioError) as err:
        scenarios.loads(f'name = "{case}"\n{body}', f"{case}.toml")
    line = one_line(err.value)
    assert line.startswith(f"{case}.toml: {field} = "), line
    for text in (value, problem):
        assert text in line, (text, line)


@pytest.mark.parametrize("case", BAD_NAMES)
def test_a_name_that_could_leave_the_results_folder_is_refused(case):
    literal, shown, problem = BAD_NAMES[case]
    with pytest.raises(ScenarioError) as err:
        scenarios.loads(f"name = {literal}\n", "n.toml")
    line = one_line(err.value)
    assert line.startswith(f"n.toml: name = {shown}"), line
    assert problem in line, line


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "\ufeff"])
def test_a_file_that_sets_nothing_is_refused(text):
    with pytest.raises(ScenarioError, match=r"^empty\.toml: sets no field"):
        scenarios.loads(text, "empty.toml")


def test_a_name_alone_is_a_whole_scenario_and_a_byte_order_mark_is_skipped():
    assert scenarios.loads('name = "x"\n') == Scenario(name="x")
    assert scenarios.loads('\ufeffname = "x"\n') == Scenario(name="x")


def test_overrides_go_through_the_same_checks():
    sc = Scenario()
    with pytest.raises(ScenarioError, match=r"startup\.db_init_timeout_s = inf: .*finite"):
        sc.with_overrides({"startup.db_init_timeout_s": math.inf})
    with pytest.raises(ScenarioError, match=r"horizon_s = nan: .*finite"):
        sc.with_overrides({"horizon_s": math.nan})
    with pytest.raises(UsageError, match=r"^vary = .*db_init_timeout_s = 1000\.0: .*horizon_s"):
        parse_vary(["startup.db_init_timeout_s=20,1000"], sc)
    with pytest.raises(StartsimError, match=r"startup\.db_init_timeout_s.*inf.*finite"):
        parse_vary(["startup.db_init_timeout_s=inf"], sc)
    with pytest.raises(UsageError, match=r"name = '\.\./x'"):
        parse_vary(["name=a,../x"], sc)


def test_recommend_refuses_a_ceiling_past_the_horizon_before_simulating():
    sc = Scenario(horizon_s=100.0)
    with pytest.raises(UsageError, match=r"^max_timeout_s = 200.0: .*horizon_s \(100\)"):
        recommend(sc, Settings(max_timeout_s=200.0, replications=1000))


def test_the_exponential_backoff_never_overflows_past_a_thousand_restarts():
    r = Restart(initial_backoff_s=10.0, max_backoff_s=300.0, max_restarts=MAX_ATTEMPTS - 1)
    assert [r.backoff_s(k) for k in (1, 2, 6, 1100, 10**6)] == [10.0, 20.0, 300.0, 300.0, 300.0]
    assert Restart(initial_backoff_s=0.0).backoff_s(5000) == 0.0


def test_folder_names_from_input_stay_one_plain_component():
    assert safe_folder_name("staging-incident") == "staging-incident"
    assert safe_folder_name("../../etc/passwd") == "etc-passwd"
    assert safe_folder_name("a b:c\x00d") == "a-b-c-d"
    for name in ("..", ".", "", "/", " \n "):
        assert safe_folder_name(name) == "scenario"
    long = safe_folder_name("é" * 300)
    assert len(long.encode()) <= 100 and set(long) == {"é"}


# -- the engine stops one deadline after the horizon ---------------------------------------------


class Ended(Engine):
    """The engine, noting the time of every event it processes."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.times: list[float] = []

    def at(self, t, handler, *args) -> None:
        super().at(t, self._noted, handler, args)

    def _noted(self, handler, args) -> None:
        self.times.append(self.now)
        handler(*args)


def run_ended(sc, seed: int) -> Ended:
    eng = Ended(sc, seed)
    eng.run()
    return eng


# Slow connections that a "hold" pool keeps after failing, slots freed long after an exit, and a
# start-up phase that often ends past the horizon: plenty of events scheduled after the end.
LATE_WORK = {
    "horizon_s": 60.0,
    "startup.db_init_timeout_s": 20.0,
    "startup.before_db_s": {"dist": "lognormal", "median": 20.0, "sigma": 1.0},
    "fleet.instances": 12,
    "fleet.arrival": "uniform",
    "fleet.window_s": 50.0,
    "pool.min_size": 3,
    "pool.held_when_ready": 3,
    "pool.on_failure": "hold",
    "pool.retry_backoff_s": 2.0,
    "pool.connect_timeout_s": 500.0,
    "connector.setups_per_instance": 2,
    "connector.setup_s": {"dist": "exponential", "mean": 8.0},
    "connector.max_instances": 3,
    "connector.scale_up_delay_s": const(200.0),
    "database.max_connections": 8,
    "restart.policy": "fixed",
    "restart.initial_backoff_s": 1.0,
    "restart.max_restarts": 5,
    "restart.exit_release_s": 1000.0,
}


@pytest.mark.parametrize("seed", range(20))
def test_no_event_after_horizon_plus_one_deadline_is_processed(seed):
    sc = scenario(LATE_WORK)
    end_s = sc.horizon_s + sc.startup.db_init_timeout_s
    eng = run_ended(sc, seed)
    assert eng.times and max(eng.times) <= end_s
    rows = eng.out.attempts
    for start_s, init_s, took_s in zip(
        rows["start_s"], rows["db_init_start_s"], rows["db_init_s"], strict=True
    ):
        assert start_s < sc.horizon_s and init_s <= sc.horizon_s
        assert init_s + took_s <= end_s


def test_the_bound_is_reached_work_after_it_is_left_undone():
    # Seed-independent: one instance whose only connection takes 1,000 s to set up; its deadline
    # (20 s) exits it, and the abandoned set-up's completion at 1,000 s is never processed.
    sc = scenario(
        {
            "horizon_s": 30.0,
            "startup.db_init_timeout_s": 20.0,
            "connector.setup_s": const(1000.0),
            "restart.exit_release_s": 0.0,
        }
    )
    eng = run_ended(sc, 0)
    assert eng.times[-1] == 20.0  # the deadline
    assert [t for t, *_ in eng._heap] == [1000.0]  # left in the heap, never run
    assert eng.out.attempts["outcome"] == ["timeout"]


# -- through the installed console script --------------------------------------------------------


def startsim_all(runs: list[tuple], cwd) -> list[subprocess.CompletedProcess]:
    """Several runs at once (each spends most of its second importing)."""
    env = {**os.environ, "COLUMNS": "200"}
    procs = [
        subprocess.Popen(
            [str(STARTSIM), *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for args in runs
    ]
    out = []
    for p in procs:
        stdout, stderr = p.communicate(timeout=120)
        out.append(subprocess.CompletedProcess(p.args, p.returncode, stdout, stderr))
    return out


def test_the_command_line_refuses_each_before_writing_anything(tmp_path):
    cases = ["inf-horizon", "lognormal-overflows", "too-many-instances", "deadline-past-horizon"]
    runs = []
    for case in cases:
        path = tmp_path / f"{case}.toml"
        path.write_text(f'name = "{case}"\n{BAD[case][0]}', encoding="utf-8")
        runs.append(("simulate", path.name, "-n", "2", "--out", "out"))
    (tmp_path / "empty.toml").write_text("", encoding="utf-8")
    (tmp_path / "bom.toml").write_text('\ufeffname = "bom"\n', encoding="utf-8")
    (tmp_path / "odd.toml").write_text('name = "a b:c"\nhorizon_s = 60.0\n', encoding="utf-8")
    runs += [
        ("recommend", "empty.toml"),
        ("sweep", "staging-incident", "--vary", "startup.db_init_timeout_s=inf"),
        ("sweep", "staging-incident", "--vary", "startup.db_init_timeout_s=20,10000"),
        ("simulate", "bom.toml", "-n", "2", "--jobs", "1", "--json"),
        ("sweep", "odd.toml", "--vary", "fleet.instances=2", "-n", "2", "--jobs", "1"),
    ]
    *refused, bom, odd = startsim_all(runs, tmp_path)
    mentions = [(f"{c}.toml", BAD[c][1], BAD[c][2]) for c in cases] + [
        ("empty.toml", "sets no field"),
        ("--vary startup.db_init_timeout_s=inf", "finite"),
        ("startup.db_init_timeout_s = 10000.0", "horizon_s (600)"),
    ]
    for res, texts in zip(refused, mentions, strict=True):
        assert res.returncode == 2, (res.args, res.returncode, res.stderr)
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
        for text in texts:
            assert text in lines[0], (text, lines[0])
    assert bom.returncode == 0, bom.stderr
    assert odd.returncode == 0, odd.stderr
    (folder,) = (tmp_path / "results").iterdir()
    assert folder.name.endswith("-a-b-c-sweep") and (folder / "sweep.csv").exists()
    assert not (tmp_path / "out").exists()
