"""One container instance that runs the team's own start-up command (``--instance-command``).

Each start attempt is a new process: the command, split like a shell line (no shell), in a process
group of its own, with the checked target and the instance's identity in its environment
(:func:`child_env`). It speaks on stdout, one JSON object per line (:func:`apply_line`):

- ``{"phase": "database", "s": 12.3}``: a phase it timed, in seconds. ``database`` is database
  init (the record's ``db_init_s``; the harness takes its start as the line's arrival less ``s``);
  every phase goes into the record's ``phases``.
- ``{"ready": true}``: the instance is ready. It keeps running, holding its connections, until the
  campaign ends; then SIGTERM, and SIGKILL :data:`INSTANCE_STOP_GRACE_S` later. Exit code 0
  counts as ready too (a start-up script that ends when ready).
- ``{"sqlstate": "53300"}`` and counters (``connection_attempts``, ``connections_opened``,
  ``connections_held``, ``pool_starts``): optional, copied into the record.

Any other line is ignored. An exit before ready is a failed attempt: code 3 (the incident's
database-init deadline) is outcome ``timeout``; any other code, or a signal, is ``rejected`` when
the command reported SQLSTATE 53300 and ``error`` otherwise. The last lines of its stderr, scrubbed
of the password, become the record's ``error_message``.

It runs inside Locust's gevent-patched process: ``subprocess`` is gevent's, so a user waiting for
its process blocks only its own greenlet. No Locust import here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from loadtests.children import die_with_parent
from loadtests.container import APPLICATION_NAME, SQLSTATE_REASONS, AttemptResult
from sim.errors import UsageError
from sim.records import Outcome, Reason

EXIT_TIMEOUT = 3  # the incident's service: database init past its deadline
INSTANCE_STOP_GRACE_S = 5.0  # after SIGTERM at the end of a campaign, then SIGKILL
READY_LINE, FAILED_LINE = "ready", "failed"  # what a stdout line may say (apply_line)
STDERR_KEPT = 300  # characters of a failed attempt's stderr kept in its record
COUNTERS = ("connection_attempts", "connections_opened", "connections_held", "pool_starts")
# Where libpq and asyncpg look for another target: the child gets the checked one instead.
TARGET_ENV = ("PGHOST", "PGPORT", "PGHOSTADDR", "PGSERVICE", "PGSERVICEFILE", "STARTSIM_DSN")
TARGET_QUERY = {"host", "port", "hostaddr", "service", "password"}


def parse_command(command: str) -> list[str]:
    """The command's argv (shell-like splitting, no shell); :class:`UsageError` if unusable."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(
            f"cannot be split into words ({exc})", "instance_command", command
        ) from None
    if not argv:
        raise UsageError("is empty: give the start-up command to run", "instance_command", command)
    if shutil.which(argv[0]) is None:
        raise UsageError(
            f"{argv[0]!r} is not an executable file nor found on PATH",
            "instance_command",
            command,
        )
    return argv


def dialled_dsn(dsn: str, host: str, port: int) -> str:
    """The DSN aimed at the checked ``host:port`` only: no password, no other host, port or
    service in it (the password travels in ``PGPASSWORD``)."""
    parts = urlsplit(dsn)
    user = parts.username or ""
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in TARGET_QUERY]
    if host.startswith("/"):  # a Unix socket: the directory goes in ?host=
        query += [("host", host.rpartition("/.s.PGSQL.")[0] or host), ("port", str(port))]
        netloc = f"{user}@" if user else ""
    else:
        shown = f"[{host}]" if ":" in host else host
        netloc = (f"{user}@" if user else "") + f"{shown}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


def child_env(
    base: dict[str, str],
    dsn: str,
    connect: dict,
    identity: dict[str, str],
) -> dict[str, str]:
    """The command's environment: ours less every other target, plus the checked target in
    ``DATABASE_URL`` and ``PGHOST``/``PGPORT``, the password in ``PGPASSWORD`` only, and who it is
    (``STARTSIM_INSTANCE``, ``STARTSIM_ATTEMPT``, ``STARTSIM_WORKER``, ``STARTSIM_RUN_ID``)."""
    host, port = connect["host"][0], connect["port"][0]
    env = {k: v for k, v in base.items() if k not in TARGET_ENV}
    env["DATABASE_URL"] = dialled_dsn(dsn, host, port)
    env["PGHOST"] = host.rpartition("/.s.PGSQL.")[0] if host.startswith("/") else host
    env["PGPORT"] = str(port)
    env["PGAPPNAME"] = APPLICATION_NAME  # so the DBA sees the harness's sessions as such
    if connect.get("password") is not None:
        env["PGPASSWORD"] = connect["password"]
    env.update(identity)
    return env


@dataclass
class CommandResult(AttemptResult):
    """An attempt of the team's command: the record's fields plus what the command said."""

    connection_attempts: int | None = None  # counters: None unless the command reports them
    connections_opened: int | None = None
    connections_held: int | None = None
    pool_starts: int | None = None
    exit_code: int | None = None  # None: still running (ready), or stopped with the campaign
    wall_s: float = 0.0  # from the start of the process to the end of the attempt
    phases: dict[str, float] = field(default_factory=dict)


def apply_line(res: CommandResult, line: str, arrived_unix_s: float) -> str:
    """Take one stdout line into the result; :data:`READY_LINE` when it says the instance is
    ready, :data:`FAILED_LINE` when a start-up that stays up says its try failed (the code it
    would have exited with goes into ``exit_code``), else ``""``."""
    try:
        obj = json.loads(line)
    except ValueError:
        return ""
    if not isinstance(obj, dict):
        return ""
    if isinstance(obj.get("try"), int):  # a stay-up process's next try is due now
        res.start_unix_s = arrived_unix_s
    phase, seconds = obj.get("phase"), obj.get("s")
    if isinstance(phase, str) and isinstance(seconds, int | float) and seconds >= 0:
        res.phases[phase] = round(float(seconds), 3)
        if phase == "database":
            res.db_init_s = float(seconds)
            res.before_db_s = max(0.0, arrived_unix_s - seconds - res.start_unix_s)
    if isinstance(obj.get("sqlstate"), str):
        res.sqlstate = obj["sqlstate"]
    for key in COUNTERS:
        if isinstance(obj.get(key), int):
            setattr(res, key, obj[key])
    if obj.get("ready") is True:
        return READY_LINE
    code = obj.get("try_failed")
    if isinstance(code, int) and not isinstance(code, bool) and code != 0:
        res.exit_code = code
        return FAILED_LINE
    return ""


def classify_exit(res: CommandResult, code: int) -> None:
    """Outcome and reason of an attempt whose process ended before it was ready."""
    res.exit_code = code
    if code == 0:
        res.outcome, res.reason = Outcome.READY, ""
    elif code == EXIT_TIMEOUT:
        res.outcome, res.reason = Outcome.TIMEOUT, Reason.DEADLINE
    elif res.sqlstate == Reason.TOO_MANY_CLIENTS:
        res.outcome, res.reason = Outcome.REJECTED, Reason.TOO_MANY_CLIENTS
    else:
        res.outcome = Outcome.ERROR
        res.reason = SQLSTATE_REASONS.get(res.sqlstate, Reason.OTHER)
        res.error_class = "exit" if code > 0 else f"signal {signal.Signals(-code).name}"


class CommandInstance:
    """One container across its attempts, each a run of the command. :meth:`close` at the end."""

    def __init__(self, argv: list[str], env: dict[str, str], secrets: tuple[str, ...] = ()) -> None:
        self.argv, self.env, self.secrets = argv, env, secrets
        self.procs: list[subprocess.Popen] = []  # ready ones, kept until the campaign ends
        # A start-up that stays up (docs/loadtests.md, "A start-up that stays up"): the process
        # whose next try the next attempt reads, and the horizon in Unix seconds (the campaign's)
        self.live: tuple[subprocess.Popen, object] | None = None
        self.last_unix_s = math.inf

    def stays_up(self) -> bool:
        """Whether its process is still up after a failed try (it said ``try_failed``): its next
        try is its own; one that exited is restarted as ``[restart]`` says."""
        return self.live is not None

    def attempt(self, number: int) -> CommandResult | None:
        """Run the command until it is ready or exits, or (a start-up that stays up) until its
        try fails; the next attempt then reads the same process's next try. Blocks this greenlet
        only. None: a try that began after the horizon (no record)."""
        import gevent

        res = CommandResult(number, time.time())  # a next try's: from its "try" line
        resumed = self.live is not None
        if not resumed:
            env = dict(self.env, STARTSIM_ATTEMPT=str(number))
            proc = subprocess.Popen(
                self.argv,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,  # its own group: SIGTERM reaches a wrapper's children too
                preexec_fn=die_with_parent,
            )
            self.procs.append(proc)
            self.live = (proc, gevent.spawn(_tail, proc.stderr))
        proc, stderr = self.live
        said = ""
        for raw in proc.stdout:
            said = apply_line(res, raw.decode("utf-8", "replace"), time.time())
            if said:
                break
        res.end_unix_s = time.time()
        if said == READY_LINE:
            res.outcome, res.reason = Outcome.READY, ""
            self.live = None
            gevent.spawn(_drain, proc.stdout)  # it may go on printing: never let the pipe fill
        elif said == FAILED_LINE:  # still up: its next try follows on the same stdout
            classify_exit(res, res.exit_code)
            res.exit_code = None
        else:
            self.live = None
            classify_exit(res, proc.wait())
            res.end_unix_s = time.time()
            self.procs.remove(proc)
            if res.outcome != Outcome.READY:
                res.error_message = self._redact(stderr.get())[-STDERR_KEPT:]
        res.wall_s = res.end_unix_s - res.start_unix_s
        if "database" not in res.phases:  # not reported: the whole start-up counts as init
            res.before_db_s, res.db_init_s = 0.0, res.wall_s
        if res.outcome == Outcome.READY:
            res.ready_unix_s = res.end_unix_s
            db_end = res.start_unix_s + res.before_db_s + res.db_init_s
            res.after_db_s = max(0.0, res.end_unix_s - db_end)
        if resumed and res.start_unix_s + res.before_db_s >= self.last_unix_s:
            if self.live is not None:  # it stays up, unread, until the campaign stops it
                self.live = None
                gevent.spawn(_drain, proc.stdout)
            return None  # a stay-up try whose database init began after the horizon
        return res

    def _redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text.strip()

    def close(self) -> None:
        """End of the campaign: SIGTERM every process still running, SIGKILL the stragglers."""
        procs, self.procs = self.procs, []
        for proc in procs:
            _signal_group(proc, signal.SIGTERM)
        end = time.monotonic() + INSTANCE_STOP_GRACE_S
        for proc in procs:
            try:
                proc.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait()


def _signal_group(proc: subprocess.Popen, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)  # the group we made for it (start_new_session)


def _tail(pipe) -> str:
    data = pipe.read()
    return data[-4 * STDERR_KEPT :].decode("utf-8", "replace")


def _drain(pipe) -> None:
    for _ in pipe:
        pass
