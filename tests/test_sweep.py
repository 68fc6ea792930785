"""``startsim sweep``: grids over dotted fields, common random numbers, resume, Dask, bad --vary.

The CLI runs in this process through ``sim.cli.main`` (the console script itself), so exit codes and
messages are the real ones; one test runs the installed ``startsim`` in a subprocess.
"""

from __future__ import annotations

import console
import pytest
import tomli_w
from builders import const, scenario, uniform
from cli_helpers import call_main
from matplotlib.image import imread

from sim.errors import UsageError
from sim.sweep import Grid, parse_vary, run_grid

# Four instances through a one-slot connector that scales out after 2–6 s: small, but the grid's
# fields change the outcome, so a wrong resume or a lost row shows.
SMALL = {
    "horizon_s": 120.0,
    "fleet.instances": 4,
    "pool.min_size": 2,
    "pool.held_when_ready": 2,
    "connector.max_instances": 3,
    "connector.setups_per_instance": 1,
    "connector.setup_s": const(1.0),
    "connector.scale_up_delay_s": uniform(2.0, 6.0),
    "startup.db_init_timeout_s": 5.0,
    "restart.policy": "exponential",
    "restart.max_restarts": 3,
}
VARY = ["--vary", "startup.db_init_timeout_s=3,5,8", "--vary", "fleet.instances=2,4"]


@pytest.fixture(scope="module")
def scenario_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sc") / "small.toml"
    path.write_text(tomli_w.dumps(scenario(SMALL).to_dict()), encoding="utf-8")
    return str(path)


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = call_main(*args)
    out = capsys.readouterr()
    return code, out.out, out.err


def sweep(capsys, scenario_file, out, *extra: str) -> str:
    args = ["sweep", scenario_file, *VARY, "-n", "30", "--seed", "5", "--jobs", "1"]
    code, _, err = run_cli(capsys, *args, "--out", str(out), *extra)
    assert code == 0, err
    return (out / "sweep.csv").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def whole(tmp_path_factory, scenario_file):
    out = tmp_path_factory.mktemp("whole")
    args = ["sweep", scenario_file, *VARY, "-n", "30", "--seed", "5", "--jobs", "1"]
    assert call_main(*args, "--out", str(out)) == 0
    return out


def test_sweep_writes_one_row_per_point_in_grid_order(whole):
    lines = (whole / "sweep.csv").read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["point", "startup.db_init_timeout_s", "fleet.instances"]
    assert [ln.split(",")[0] for ln in lines[1:]] == [str(i) for i in range(6)]
    assert [ln.split(",")[1:3] for ln in lines[1:]] == [
        [t, n] for t in ("3.0", "5.0", "8.0") for n in ("2", "4")
    ]
    # A PNG that decodes and is not one flat colour; what it draws is the table checked above.
    assert imread(whole / "heatmap.png").std() > 0
    assert (whole / "sweep.json").exists()


def test_grid_is_deterministic_under_a_seed(whole, tmp_path, capsys, scenario_file):
    again = sweep(capsys, scenario_file, tmp_path / "again")
    assert again == (whole / "sweep.csv").read_text(encoding="utf-8")


def test_resumed_sweep_gives_the_same_table(whole, tmp_path, capsys, scenario_file):
    full = (whole / "sweep.csv").read_text(encoding="utf-8")
    out = tmp_path / "cut"
    out.mkdir()
    (out / "sweep.json").write_bytes((whole / "sweep.json").read_bytes())
    lines = full.splitlines(keepends=True)
    # Killed while writing point 2: two whole rows and half a line survive.
    (out / "sweep.csv").write_text("".join(lines[:3]) + lines[3][:7], encoding="utf-8")
    assert sweep(capsys, scenario_file, out, "--resume") == full


def test_interrupted_generator_keeps_a_prefix_and_resumes_from_it():
    sc = scenario(SMALL)
    grid = parse_vary(["startup.db_init_timeout_s=3,5,8"], sc)
    rows = run_grid(sc, grid, 20, 1)
    first = [next(rows), next(rows)]  # the consumer stops here (Ctrl-C)
    rest = list(run_grid(sc, grid, 20, 1, skip=2))
    assert [r["point"] for r in first + rest] == [0, 1, 2]
    assert first + rest == list(run_grid(sc, grid, 20, 1))


def test_resume_refuses_a_different_sweep(whole, tmp_path, capsys, scenario_file):
    out = tmp_path / "other"
    out.mkdir()
    for name in ("sweep.json", "sweep.csv"):
        (out / name).write_bytes((whole / name).read_bytes())
    args = ["sweep", scenario_file, *VARY, "-n", "31", "--seed", "5", "--out", str(out)]
    code, _, err = run_cli(capsys, *args, "--resume")
    assert code == 2 and "replications" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, *args[:-2], "--out", str(out))
    assert code == 2 and "--resume" in err


def test_neighbouring_points_share_random_numbers():
    # Common random numbers: a timeout no init reaches changes nothing, to the last digit.
    sc = scenario(SMALL)
    grid = parse_vary(["startup.db_init_timeout_s=50,60"], sc)
    a, b = run_grid(sc, grid, 20, 2)
    keep = [k for k in a if k not in ("point", "startup.db_init_timeout_s")]
    assert {k: a[k] for k in keep} == {k: b[k] for k in keep}


def test_dask_cluster_gives_the_same_table(whole, tmp_path, capsys, scenario_file):
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        table = sweep(capsys, scenario_file, tmp_path / "dask", "--dask", cluster.scheduler_address)
    assert table == (whole / "sweep.csv").read_text(encoding="utf-8")


def test_unreachable_dask_scheduler_is_a_usage_error(monkeypatch, capsys, scenario_file, tmp_path):
    pytest.importorskip("distributed")
    monkeypatch.setattr("sim.runner.DASK_CONNECT_TIMEOUT_S", 1.0)
    args = ["sweep", scenario_file, "--vary", "pool.min_size=1", "--out", str(tmp_path / "x")]
    code, _, err = run_cli(capsys, *args, "--dask", "tcp://127.0.0.1:9")
    assert code == 2 and "--dask" in err and "Traceback" not in err


# -- bad --vary -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("pool.nosuch=1,2", "no scenario field 'pool.nosuch'"),
        ("pool.min_size=1,two", "--vary pool.min_size=two: pool.min_size needs a whole number"),
        ("pool.min_size=1.5", "needs a whole number"),
        ("startup.db_init_timeout_s=fast", "startup.db_init_timeout_s needs a number"),
        ("startup.db_init_timeout_s=inf", "needs a finite number"),
        ("pool.min_size=", "the list of values for pool.min_size is empty"),
        ("pool.min_size=1,,2", "an empty value"),
        ("pool.min_size", "expected FIELD=V1,V2"),
        ("pool.min_size=2,2", "lists '2' twice"),
        ("startup.before_db_s=1", "only number and text fields"),
        ("startup.db_init_timeout_s=-5", "startup.db_init_timeout_s = -5.0"),
        ("pool.min_size=1,60", "pool.min_size = 60: must not exceed pool.max_size"),
        ("fleet.arrival=sideways", "fleet.arrival = 'sideways'"),
    ],
)
def test_bad_vary_exits_2_with_a_clear_message(capsys, tmp_path, spec, says):
    code, _, err = run_cli(capsys, "sweep", "--vary", spec, "-n", "1", "--out", str(tmp_path / "o"))
    flat = " ".join(err.split())
    assert code == 2, err
    assert says in flat and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing simulated, nothing written


def test_no_vary_and_twice_the_same_field_are_usage_errors():
    sc = scenario(SMALL)
    with pytest.raises(UsageError, match="at least one"):
        parse_vary([], sc)
    with pytest.raises(UsageError, match="varied twice"):
        parse_vary(["pool.min_size=1", "pool.min_size=2"], sc)


def test_values_are_parsed_to_the_field_type():
    grid = parse_vary(["startup.db_init_timeout_s=20, 30", "pool.min_size=1"], scenario(SMALL))
    assert grid == Grid(("startup.db_init_timeout_s", "pool.min_size"), ((20.0, 30.0), (1,)))
    assert isinstance(grid.values[0][0], float) and isinstance(grid.values[1][0], int)
    assert len(grid) == 2 and grid.points()[1] == {
        "startup.db_init_timeout_s": 30.0,
        "pool.min_size": 1,
    }


def test_the_installed_command_exits_2_without_traceback(tmp_path):
    proc = console.run("sweep", "--vary", "fleet.nosuch=1", "--out", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "fleet.nosuch" in proc.stderr and "Traceback" not in proc.stderr
