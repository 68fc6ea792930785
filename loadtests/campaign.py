"""A load campaign end to end: checks, the emulator, Locust (local or master + workers), summary.

Locust and the emulator run as child processes, each in its own session, so that Ctrl-C reaches only
this process, which then stops them in order: Locust first (its users close every connection and
the last records are written), then the emulator (its log is closed), then the summary is written
from whatever records exist. The password travels to children in the environment only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from loadtests import safety
from loadtests.records import CONNECTIONS_FILE, RECORDS_FILE, read_jsonl, summarize_records
from sim.errors import UsageError
from sim.output import atomic_write, safe_folder_name, scenario_toml, write_json
from sim.scenario import Scenario

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
EMULATOR_LOG = "emulator.jsonl"
STOP_GRACE_S = 20.0  # Locust's own shutdown, closing every connection, after SIGTERM
LIMIT_GRACE_S = 60.0  # past --max-duration, the watchdog stops the run itself
STARTSIM = [sys.executable, "-c", "from sim.cli import main; main()"]


@dataclass
class Options:
    sc: Scenario
    dsn: str
    via_emulator: bool = False
    workers: int = 0
    remote_workers: int = 0
    master_bind: str = "127.0.0.1:0"
    out: Path = Path("results")
    allow_targets: list[str] = field(default_factory=list)
    max_instances: int = 500
    max_duration_s: float = 900.0
    seed: int = 0


@dataclass
class Outcome:
    run_dir: Path
    summary: dict
    interrupted: bool = False
    locust_exit_code: int | None = 0


def check(opts: Options) -> safety.Target:
    """Every refusal happens here, before anything starts."""
    target = safety.parse_dsn(opts.dsn)
    safety.check_target(target.host, opts.allow_targets)
    n = opts.sc.fleet.instances
    if n > opts.max_instances:
        raise UsageError(
            f"fleet.instances = {n}: exceeds the hard limit --max-instances {opts.max_instances}; "
            "raise --max-instances to run it"
        )
    if opts.via_emulator and target.host.startswith("/"):
        raise UsageError(
            f"--dsn host = {target.host!r}: --via-emulator needs a TCP host, not a Unix socket"
        )
    if opts.remote_workers:
        bind = safety.parse_host_port(opts.master_bind, "--master-bind")
        safety.check_target(bind.host, opts.allow_targets, "--master-bind")
        if bind.port == 0:
            raise UsageError(
                f"--master-bind = {opts.master_bind!r}: remote workers need a fixed port "
                "(e.g. 10.0.0.5:5557) to pass to `startsim loadtest-worker --master`"
            )
    return target


def new_run_dir(out: Path, name: str) -> tuple[str, Path]:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(100):
        run_id = f"{stamp}-{safe_folder_name(name)}" + (f"-{n}" if n else "")
        run_dir = out / run_id
        try:
            run_dir.mkdir(parents=True)
            return run_id, run_dir
        except FileExistsError:
            continue
    raise UsageError(f"--out = {str(out)!r}: cannot create a fresh run folder")


def run(opts: Options, progress: Callable[[dict], None] | None = None) -> Outcome:
    """Run the campaign; on KeyboardInterrupt stop cleanly and return ``interrupted=True``."""
    target = check(opts)
    run_id, run_dir = new_run_dir(opts.out, opts.sc.name)
    atomic_write(run_dir / "scenario.toml", scenario_toml(opts.sc))
    limit_s = min(opts.sc.horizon_s, opts.max_duration_s)
    write_json(run_dir / "campaign.json", _describe(opts, run_id, limit_s))
    children: list[subprocess.Popen] = []
    emulator = None
    interrupted = False
    try:
        dsn = opts.dsn
        if opts.via_emulator:
            emulator, port = _start_emulator(run_dir, target, opts)
            dsn = safety.with_host_port(opts.dsn, "127.0.0.1", port)
        env = _child_env(opts, dsn, run_id, run_dir, limit_s)
        children = _start_locust(run_dir, env, opts)
        _watch(children[0], run_dir, limit_s, progress)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        _stop(children[:1])  # the master (or the local run) first: it tells its workers to quit
        _stop(children[1:])
        if emulator is not None:
            _stop([emulator])
    summary = summarize_records(
        opts.sc,
        read_jsonl(run_dir / RECORDS_FILE),
        read_jsonl(run_dir / CONNECTIONS_FILE),
        opts.seed,
    )
    summary["run_id"] = run_id
    summary["interrupted"] = interrupted
    write_json(run_dir / "summary.json", summary)
    code = children[0].returncode if children else None
    return Outcome(run_dir, summary, interrupted, code)


def _describe(opts: Options, run_id: str, limit_s: float) -> dict:
    from importlib.metadata import version

    return {
        "run_id": run_id,
        "scenario": opts.sc.name,
        "target": safety.redact_dsn(opts.dsn),
        "via_emulator": opts.via_emulator,
        "workers": opts.workers,
        "remote_workers": opts.remote_workers,
        "max_instances": opts.max_instances,
        "limit_s": limit_s,
        "seed": opts.seed,
        "started_unix_s": round(time.time(), 3),
        "locust_version": version("locust"),  # not imported here: it patches for gevent
    }


def _child_env(opts: Options, dsn: str, run_id: str, run_dir: Path, limit_s: float) -> dict:
    env = dict(os.environ)
    env.update(
        STARTSIM_SCENARIO=str(run_dir / "scenario.toml"),
        STARTSIM_DSN=dsn,
        STARTSIM_RUN_ID=run_id,
        STARTSIM_OUT=str(run_dir),
        STARTSIM_SEED=str(opts.seed),
        STARTSIM_LIMIT_S=str(limit_s),
        PYTHONUNBUFFERED="1",
    )
    return env


def _spawn(cmd: list[str], env: dict, out_path: Path) -> subprocess.Popen:
    with open(out_path, "ab") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
        )


def locust_cmd(*extra: str) -> list[str]:
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), *extra]


def _start_locust(run_dir: Path, env: dict, opts: Options) -> list[subprocess.Popen]:
    common = ["--headless", "--exit-code-on-error", "0", "--loglevel", "INFO"]
    stats = ["--csv", str(run_dir / "locust"), "--only-summary"]
    expected = opts.workers + opts.remote_workers
    if expected == 0:
        logfile = ["--logfile", str(run_dir / "locust.log")]
        return [_spawn(locust_cmd(*common, *stats, *logfile), env, run_dir / "locust.out")]
    bind = safety.parse_host_port(opts.master_bind, "--master-bind")
    port = bind.port or _free_port(bind.host)
    master = [
        "--master",
        "--expect-workers",
        str(expected),
        "--master-bind-host",
        bind.host,
        "--master-bind-port",
        str(port),
    ]
    logfile = ["--logfile", str(run_dir / "locust-master.log")]
    procs = [_spawn(locust_cmd(*common, *stats, *master, *logfile), env, run_dir / "locust.out")]
    worker_env = {k: v for k, v in env.items() if k != "STARTSIM_OUT"}
    for i in range(opts.workers):
        args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        args += ["--loglevel", "INFO", "--logfile", str(run_dir / f"locust-worker{i}.log")]
        procs.append(_spawn(locust_cmd(*args), worker_env, run_dir / f"locust-worker{i}.out"))
    return procs


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _start_emulator(run_dir: Path, target: safety.Target, opts: Options):
    cmd = [
        *STARTSIM,
        "connector-emulator",
        str(run_dir / "scenario.toml"),
        "--listen",
        "127.0.0.1:0",
        "--upstream",
        f"{target.host}:{target.port}",
        "--log",
        str(run_dir / EMULATOR_LOG),
        "--seed",
        str(opts.seed),
    ]
    for host in opts.allow_targets:
        cmd += ["--allow-target", host]
    errors = run_dir / "emulator.out"
    with open(errors, "ab") as err:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True
        )
    line = proc.stdout.readline()  # "listening on 127.0.0.1:PORT"
    if not line.startswith("listening on "):
        proc.kill()
        proc.wait()
        raise UsageError(f"the connector emulator did not start: {errors.read_text()[-500:]}")
    return proc, int(line.strip().rpartition(":")[2])


def _watch(master: subprocess.Popen, run_dir: Path, limit_s: float, progress) -> None:
    end = time.monotonic() + limit_s + LIMIT_GRACE_S
    last = None
    while master.poll() is None and time.monotonic() < end:
        time.sleep(0.5)
        counts = _read_progress(run_dir)
        if progress is not None and counts and counts != last:
            progress(counts)
            last = counts


def _read_progress(run_dir: Path) -> dict | None:
    try:
        return json.loads((run_dir / "progress.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM (each stops gracefully), wait, then kill whatever is left.

    A second Ctrl-C kills them at once: the kernel closes their sockets, so the server still
    gets every connection back; only records in flight are lost.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + STOP_GRACE_S
    try:
        for proc in procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    except KeyboardInterrupt:
        for proc in procs:
            proc.kill()
        raise
