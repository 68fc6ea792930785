"""Every command line mistake, through the installed console script as a user types it: exit code
2, one line on stderr naming the option and the value, no traceback, nothing on stdout. All runs
start at once (each spends most of its second importing)."""

from __future__ import annotations

import subprocess

import pytest
from console import STARTSIM

# (arguments, what the one line must mention)
CASES: list[tuple[tuple[str, ...], tuple[str, ...]]] = [
    (("simulate", "--replications", "0"), ("--replications 0", "greater than or equal to 1")),
    (("simulate", "-n", "abc"), ("-n abc", "valid integer")),
    (("simulate", "--jobs", "0"), ("--jobs 0",)),
    (("simulate", "--jobs=0"), ("--jobs 0",)),
    (("simulate", "--seed", "-1"), ("--seed -1",)),
    (("simulate", "--bogus"), ("--bogus", "startsim simulate --help")),
    (("simulate", "--json=yes"), ("--json", "does not take a value")),
    (("simulate", "a", "b"), ("unexpected extra argument",)),
    (("nosuch",), ("No such command", "nosuch")),
    (("scenarios", "extra"), ("unexpected extra argument",)),
    (("sweep",), ("--vary",)),
    (("sweep", "--vary", "pool.min_size"), ("pool.min_size",)),
    (("sweep", "--vary", "pool.min_size=1", "--replications", "0"), ("--replications 0",)),
    (("sweep", "--vary", "pool.min_size=1", "--confidence", "1.5"), ("--confidence 1.5",)),
    (("recommend", "--target-success", "abc"), ("--target-success abc",)),
    (("recommend", "--confidence", "2"), ("--confidence 2",)),
    (("recommend", "--jobs", "-3"), ("--jobs -3",)),
    (("loadtest",), ("Missing option", "--dsn")),
    (("loadtest", "--dsn", "postgresql://a@127.0.0.1/db", "--workers", "x"), ("--workers x",)),
    (("loadtest-worker",), ("Missing option", "--dsn")),
    (("connector-emulator", "--listen", "127.0.0.1:0"), ("Missing option", "--upstream")),
    (
        ("connector-emulator", "--upstream", "127.0.0.1:1", "--listen", "1", "--seed", "q"),
        ("--seed q",),
    ),
]


@pytest.fixture(scope="module")
def results() -> list[subprocess.CompletedProcess]:
    procs = [
        subprocess.Popen(
            [str(STARTSIM), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for args, _ in CASES
    ]
    done = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        done.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
    return done


@pytest.mark.parametrize("i", range(len(CASES)), ids=[" ".join(a) for a, _ in CASES])
def test_usage_error_is_one_line_and_exit_2(results, i):
    res, (_, mentions) = results[i], CASES[i]
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: ")
    for text in mentions:
        assert text in lines[0], (text, lines[0])
    assert res.stdout == ""


def test_bare_startsim_prints_its_help_as_a_usage_error():
    res = subprocess.run([str(STARTSIM)], capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "Usage: startsim" in res.stderr
    for command in ("simulate", "sweep", "recommend", "loadtest", "scenarios"):
        assert command in res.stderr


def test_help_renders_flags_as_flags():
    res = subprocess.run(
        [str(STARTSIM), "recommend", "--help"], capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0, res.stderr
    assert "--json" in res.stdout and "--svg" in res.stdout
    assert "<bool>" not in res.stdout


@pytest.mark.parametrize("mode", [(), ("--nominal",)])  # across worlds, and one world
def test_simulate_out_writes_summary_last(tmp_path, monkeypatch, mode):
    """Interrupted while writing records: no summary.json, so no complete-looking folder."""
    from cli_helpers import call_main

    import sim.cli.simulate
    import sim.cli.worlds

    def interrupted(*_):
        raise KeyboardInterrupt

    monkeypatch.setattr(sim.cli.simulate, "write_csv", interrupted)
    monkeypatch.setattr(sim.cli.worlds, "write_csv", interrupted)
    out = tmp_path / "o"
    assert call_main("simulate", "-n", "2", "--jobs", "1", "--out", str(out), *mode) == 130
    assert not (out / "summary.json").exists()


def test_out_that_cannot_be_written_is_refused_before_any_work(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x", encoding="utf-8")
    runs = [
        ("simulate", "--out", str(afile)),
        ("simulate", "--out", str(afile / "sub")),
        ("sweep", "--vary", "pool.min_size=1", "--out", str(afile / "sub")),
        ("recommend", "--out", str(afile / "sub")),
    ]
    procs = [
        subprocess.Popen([str(STARTSIM), *a], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for a in runs
    ]
    for args, p in zip(runs, procs, strict=True):
        _, err = p.communicate(timeout=60)
        assert p.returncode == 2, (args, err)
        line = err.decode().strip()
        assert line.startswith(f"error: --out {args[-1]}") and "\n" not in line, line
    assert afile.read_text(encoding="utf-8") == "x"
