"""A load campaign end to end: checks, the emulator, Locust (local or master + workers), summary.

Locust and the emulator run as child processes, each in its own session, so that Ctrl-C reaches only
this process, which then stops them in order: Locust first (its users close every connection and
the last records are written), then the emulator (its log is closed), then the summary is written
from whatever records exist. SIGTERM and SIGHUP stop a campaign the same way, and a child whose
parent dies anyway (``kill -9``) gets SIGTERM from the kernel, so none runs on alone. The password
travels to children in the environment only.

Before anything starts, the target is resolved and checked (:mod:`loadtests.safety`) and connected
to once (:mod:`loadtests.preflight`): a misconfigured target is an error, not a measurement.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from loadtests import preflight, safety, settings
from loadtests.children import die_with_parent, python_module
from loadtests.records import CONNECTIONS_FILE, RECORDS_FILE, read_jsonl, summarize_records
from sim.errors import UsageError
from sim.output import atomic_write, scenario_toml, write_json
from sim.scenario import Scenario

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
EMULATOR_LOG = "emulator.jsonl"
CHILD_STOP_GRACE_S = 20.0  # Locust's own shutdown, closing every connection, after SIGTERM
LIMIT_GRACE_S = 60.0  # past --max-duration, the watchdog stops the run itself
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)  # stop a campaign as Ctrl-C (SIGINT) does


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
    seed: int | None = None  # None: a fresh seed, recorded in campaign.json and summary.json
    instance_command: str | None = None  # the team's start-up, run as each instance (command.py)
    via_pgbouncer: bool = False  # through a real PgBouncer started here (loadtests/pgbouncer.py)


@dataclass
class CampaignResult:
    """What a campaign left: its folder, summary and records, and how it ended."""

    run_dir: Path
    summary: dict
    interrupted: bool = False
    locust_exit_code: int | None = 0
    stop_signal: int | None = None  # SIGINT, SIGTERM or SIGHUP when interrupted
    records: list[dict] = field(default_factory=list)


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP: handled exactly as Ctrl-C."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def become_worker(
    sc: Scenario,
    dsn: str,
    master: str,
    allowed: list[str],
    seed: int | None,
    announce,
    instance_command: str | None = None,
) -> None:
    """Check the target and the master, then replace this process with a Locust worker of a
    campaign whose master runs elsewhere (exec: a signal meant for it reaches it, and nothing is
    left orphaned). ``announce(seed)`` is told the seed before."""
    import tempfile

    resolved = safety.resolve_dsn(dsn, allowed)
    where = safety.check_host_port(master, "--master", allowed)
    _check_command(instance_command)
    secrets_ = (safety.dsn_password(dsn), resolved.password or "")
    preflight.check_connection(dsn, resolved, sc.pool.connect_timeout_s, secrets_)
    seed = fresh_seed() if seed is None else seed
    announce(seed)
    folder = Path(tempfile.mkdtemp(prefix="startsim-worker-"))
    atomic_write(folder / "scenario.toml", scenario_toml(sc))
    env = dict(os.environ, **settings.secret_env(dsn, resolved.password))
    # The master enforces --max-instances and the duration; a worker runs what it is sent.
    limits = (sc.horizon_s, sc.fleet.instances)
    args = settings.child_args(
        folder / "scenario.toml",
        seed,
        resolved.targets,
        allowed,
        *limits,
        instance_command=instance_command,
    )
    cmd = locust_cmd(
        "--worker", "--master-host", where.host, "--master-port", str(where.port), *args
    )
    sys.stderr.flush()
    os.execve(cmd[0], cmd, env)


def fresh_seed() -> int:
    """A new seed for a campaign: repeated campaigns draw afresh unless --seed is given."""
    return secrets.randbits(32)


def check(opts: Options) -> safety.Resolved:
    """Every refusal happens here, before anything starts."""
    resolved = safety.resolve_dsn(opts.dsn, opts.allow_targets)
    _check_command(opts.instance_command)
    n = opts.sc.fleet.instances
    if n > opts.max_instances:
        raise UsageError(
            f"fleet.instances = {n}: exceeds the hard limit --max-instances {opts.max_instances}; "
            "raise --max-instances to run it"
        )
    if opts.via_emulator and all(t.is_unix for t in resolved.targets):
        raise UsageError(
            f"--dsn host = {resolved.targets[0].host!r}: --via-emulator needs a TCP host, "
            "not a Unix socket"
        )
    fault = opts.sc.path.fault
    if fault != "none" and not opts.via_emulator:
        raise UsageError(
            f"path.fault = {fault!r}: only the connector emulator injects path faults; "
            'add --via-emulator, or set path.fault = "none"'
        )
    distributed = bool(opts.workers + opts.remote_workers)
    settings.check_traffic(opts.sc, opts.instance_command is not None, distributed)
    settings.check_breaker(opts.sc, opts.instance_command is not None, distributed)
    _check_pooler(opts)
    bind = safety.check_host_port(opts.master_bind, "--master-bind", opts.allow_targets)
    if opts.remote_workers and bind.port == 0:
        raise UsageError(
            f"--master-bind = {opts.master_bind!r}: remote workers need a fixed port "
            "(e.g. 10.0.0.5:5557) to pass to `startsim loadtest-worker --master`"
        )
    return resolved


def _check_pooler(opts: Options) -> None:
    """``--via-pgbouncer`` and ``[pooler]`` go together; PgBouncer must be installed."""
    kind = opts.sc.pooler.kind
    if opts.via_pgbouncer and kind != "pgbouncer":
        raise UsageError(
            f"pooler.kind = {kind!r}: --via-pgbouncer configures PgBouncer from the scenario's "
            '[pooler]; set kind = "pgbouncer" there (with its settings), or drop --via-pgbouncer'
        )
    if kind == "pgbouncer" and not opts.via_pgbouncer:
        raise UsageError(
            'pooler.kind = "pgbouncer": a campaign measures a pooler only through a real one; '
            'add --via-pgbouncer, or set kind = "none"'
        )
    if opts.via_pgbouncer and opts.remote_workers:
        raise UsageError(
            f"--remote-workers = {opts.remote_workers}: PgBouncer listens on loopback only, "
            "so only local workers (--workers) can go through it"
        )
    if opts.via_pgbouncer:
        from loadtests.pgbouncer import find_binary

        find_binary()


def _check_command(command: str | None) -> None:
    if command is not None:
        from loadtests.command import parse_command

        parse_command(command)


def run(
    opts: Options,
    progress: Callable[[dict], None] | None = None,
    started: Callable[[int, Path], None] | None = None,
) -> CampaignResult:
    """Run the campaign; on Ctrl-C, SIGTERM or SIGHUP stop cleanly, ``interrupted=True``.

    ``started(seed, run_dir)`` is called once every check has passed and the run begins.
    """
    with _signals_stop():
        return _run(opts, progress, started)


def _run(opts: Options, progress, started) -> CampaignResult:
    resolved = check(opts)
    if opts.seed is None:
        opts.seed = fresh_seed()
    secrets_ = tuple(s for s in (safety.dsn_password(opts.dsn), resolved.password) if s)
    reached = preflight.check_connection(
        opts.dsn, resolved, opts.sc.pool.connect_timeout_s, secrets_
    )
    run_id, run_dir = settings.new_run_dir(opts.out, opts.sc.name)
    atomic_write(run_dir / "scenario.toml", scenario_toml(opts.sc))
    limit_s = min(opts.sc.horizon_s, opts.max_duration_s)
    described = _describe(opts, run_id, limit_s, resolved)
    write_json(run_dir / "campaign.json", described)
    if started is not None:
        started(opts.seed, run_dir)
    children: list[subprocess.Popen] = []
    emulator = pgbouncer = None
    stop_signal = None
    try:
        addresses = resolved.targets
        if opts.via_pgbouncer:  # the instances (or the emulator) reach PgBouncer, it the server
            pgbouncer = _start_pgbouncer(opts, resolved, reached, run_dir, secrets_)
            write_json(run_dir / "campaign.json", {**described, "pooler": pgbouncer.describe()})
            addresses = (pgbouncer.target,)
            reached = pgbouncer.target
        if opts.via_emulator:
            if reached.is_unix:  # the emulator relays TCP: the first TCP address checked
                reached = next(t for t in resolved.targets if not t.is_unix)
            emulator, port = _start_emulator(run_dir, reached, opts)
            addresses = (safety.Target("127.0.0.1", port),)
        args = settings.child_args(
            run_dir / "scenario.toml",
            opts.seed,
            addresses,
            opts.allow_targets,
            limit_s,
            opts.max_instances,
            instance_command=opts.instance_command,
        )
        children = _start_locust(run_dir, _child_env(opts, resolved), args, opts)
        _watch(children[0], run_dir, limit_s, progress)
    except KeyboardInterrupt as exc:
        stop_signal = getattr(exc, "signum", signal.SIGINT)
    finally:
        _stop(children[:1])  # the master (or the local run) first: it tells its workers to quit
        _stop(children[1:])
        if emulator is not None:
            _stop([emulator])
        if pgbouncer is not None:
            pgbouncer.stop()  # after every client: it closes its server connections
    records = read_jsonl(run_dir / RECORDS_FILE)
    samples = read_jsonl(run_dir / CONNECTIONS_FILE)
    summary = summarize_records(opts.sc, records, samples, opts.seed, run_dir)
    summary["run_id"] = run_id
    summary["interrupted"] = stop_signal is not None
    summary["stop_signal"] = None if stop_signal is None else signal.Signals(stop_signal).name
    write_json(run_dir / "summary.json", summary)
    code = children[0].returncode if children else None
    return CampaignResult(run_dir, summary, stop_signal is not None, code, stop_signal, records)


@contextmanager
def _signals_stop() -> Iterator[None]:
    """SIGTERM and SIGHUP raise :class:`Stopped` (a KeyboardInterrupt) while a campaign runs."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers; a library caller keeps its own
        return

    def stop(signum, _frame):
        raise Stopped(signum)

    saved = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)


def _describe(opts: Options, run_id: str, limit_s: float, resolved: safety.Resolved) -> dict:
    from importlib.metadata import version

    return {
        "run_id": run_id,
        "scenario": opts.sc.name,
        "target": safety.redact_dsn(opts.dsn),
        "addresses": [str(t) for t in resolved.targets],  # what was checked, and dialled
        "via_emulator": opts.via_emulator,
        "workers": opts.workers,
        "remote_workers": opts.remote_workers,
        "max_instances": opts.max_instances,
        "limit_s": limit_s,
        "seed": opts.seed,
        "instance_command": opts.instance_command,
        # PgBouncer's settings (and, once started, its version and address), or None: direct.
        "pooler": opts.sc.pooler.settings() if opts.via_pgbouncer else None,
        "started_unix_s": round(time.time(), 3),
        "locust_version": version("locust"),  # not imported here: it patches for gevent
    }


def _start_pgbouncer(
    opts: Options,
    resolved: safety.Resolved,
    reached: safety.Target,
    run_dir: Path,
    secrets_: tuple[str, ...],
):
    """A real PgBouncer in front of the address the preflight reached, then one connection
    through it (as the preflight's): a misconfigured pooler is an error, not a measurement."""
    from loadtests import pgbouncer

    user = pgbouncer.dsn_user(opts.dsn)
    running = pgbouncer.start(opts.sc.pooler, reached, user, resolved.password, run_dir, secrets_)
    try:
        through = safety.Resolved((running.target,), resolved.password)
        preflight.check_connection(opts.dsn, through, opts.sc.pool.connect_timeout_s, secrets_)
    except BaseException as exc:
        running.stop()
        if isinstance(exc, UsageError):
            cause = exc.problem.removeprefix("--dsn: ")
            raise UsageError(f"--via-pgbouncer: through PgBouncer, {cause}") from None
        raise
    return running


def _child_env(opts: Options, resolved: safety.Resolved) -> dict:
    """The DSN and the password travel in the environment only, never on a command line."""
    return dict(
        os.environ, **settings.secret_env(opts.dsn, resolved.password), PYTHONUNBUFFERED="1"
    )


def _spawn(cmd: list[str], env: dict, out_path: Path) -> subprocess.Popen:
    with open(out_path, "ab") as out:
        return subprocess.Popen(
            cmd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C reaches us only; we stop children in order
            preexec_fn=die_with_parent,
        )


def locust_cmd(*extra: str) -> list[str]:
    return python_module("locust", "-f", str(LOCUSTFILE), *extra)


def _start_locust(
    run_dir: Path, env: dict, settings_args: list[str], opts: Options
) -> list[subprocess.Popen]:
    common = ["--headless", "--exit-code-on-error", "0", "--loglevel", "INFO", *settings_args]
    stats = ["--csv", str(run_dir / "locust"), "--only-summary", "--run-dir", str(run_dir)]
    expected = opts.workers + opts.remote_workers
    if expected == 0:
        logfile = ["--logfile", str(run_dir / "locust.log")]
        return [_spawn(locust_cmd(*common, *stats, *logfile), env, run_dir / "locust.out")]
    fault = opts.sc.path.fault
    if fault != "none" and not opts.via_emulator:
        raise UsageError(
            f"path.fault = {fault!r}: only the connector emulator injects path faults; "
            'add --via-emulator, or set path.fault = "none"'
        )
    bind = safety.check_host_port(opts.master_bind, "--master-bind", opts.allow_targets)
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
    for i in range(opts.workers):
        args = ["--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
        args += ["--loglevel", "INFO", "--logfile", str(run_dir / f"locust-worker{i}.log")]
        procs.append(
            _spawn(locust_cmd(*args, *settings_args), env, run_dir / f"locust-worker{i}.out")
        )
    return procs


def _free_port(host: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _start_emulator(run_dir: Path, target: safety.Target, opts: Options):
    return start_emulator(run_dir, run_dir / "scenario.toml", (target.host, target.port), opts.seed)


def start_emulator(
    folder: Path, scenario: Path, upstream: tuple[str, int], seed: int
) -> tuple[subprocess.Popen, int]:
    """The emulator as ``python -P -m loadtests.emulator``, on a free loopback port, its log and
    output in ``folder``; it reports the port on a pipe of its own (``loadtests.emulator._main``).
    The caller has checked ``upstream``."""
    config = folder / "emulator.json"
    write_json(
        config,
        {
            "scenario": str(scenario),
            "listen": ["127.0.0.1", 0],
            "upstream": list(upstream),
            "log": str(folder / EMULATOR_LOG),
            "seed": seed,
        },
    )
    read_fd, write_fd = os.pipe()
    errors = folder / "emulator.out"
    cmd = python_module("loadtests.emulator", str(config), str(write_fd))
    with open(errors, "ab") as err:
        proc = subprocess.Popen(
            cmd,
            stdout=err,
            stderr=err,
            pass_fds=(write_fd,),
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
    os.close(write_fd)
    with os.fdopen(read_fd, encoding="utf-8") as pipe:
        text = pipe.read()  # EOF: ready, or the emulator died
    try:
        return proc, int(json.loads(text)["port"])
    except (ValueError, KeyError, TypeError):
        proc.kill()
        proc.wait()
        raise UsageError(
            f"the connector emulator did not start: {errors.read_text()[-500:]}"
        ) from None


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

    A second Ctrl-C (or SIGTERM) kills them at once: the kernel closes their sockets, so the
    server still gets every connection back; only records in flight are lost. The summary of
    the records finished so far is still written.
    """
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    end = time.monotonic() + CHILD_STOP_GRACE_S
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
        for proc in procs:
            proc.wait()
